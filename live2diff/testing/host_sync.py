"""Counting the calls that make the host wait for the device, on any device (the CPU included).

On a GPU, ``tensor.item()``, ``.tolist()``, ``.cpu()``, ``bool(tensor)`` and friends block the host until the
device has computed the value, which both stalls the launch queue and makes a stream call impossible to capture as
one CUDA graph. On the CPU nothing waits, but the calls are the same: :class:`HostSyncCounter` records each one
made on a tensor while it is active (a ``TorchFunctionMode``, so calls inside library code count too), with the
line that made it, so a test can require a steady-state ``push`` to make none.
"""

from __future__ import annotations

import collections
import traceback

from torch.overrides import TorchFunctionMode

# Tensor methods / functions that read device data on the host (or have a data-dependent output shape, which
# needs the same read): each is a device synchronisation on CUDA.
SYNC_CALLS = frozenset(
    {
        "item",
        "tolist",
        "cpu",
        "numpy",
        "__bool__",
        "__int__",
        "__float__",
        "__index__",
        "__complex__",
        "nonzero",
        "argwhere",
        "masked_select",
        "unique",
        "unique_consecutive",
        "is_nonzero",
        "equal",
        "allclose",
    }
)


class HostSyncCounter(TorchFunctionMode):
    """``with HostSyncCounter() as c: ...`` then ``c.calls`` (``Counter`` of call names) and ``c.where`` (the
    innermost project frames of each call, for the failure message)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: collections.Counter[str] = collections.Counter()
        self.where: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in SYNC_CALLS:
            self.calls[name] += 1
            frames = [f for f in traceback.extract_stack()[:-1] if "/torch/" not in f.filename]
            self.where.append(
                f"{name}: " + " <- ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno}" for f in frames[::-1][:3])
            )
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    def report(self) -> str:
        return "\n".join(f"{n} x {w}" for w, n in collections.Counter(self.where).most_common(10))
