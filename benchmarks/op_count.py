"""Operators per frame: one steady Live2Diff push against a plain one-frame UNet call of the same model.

On a GPU an eager stream call is launch-bound (every operator is at least one kernel launch), so the number of
operators a push dispatches is a device-independent measure of its overhead; counted here on the CPU with
``torch.profiler`` (no timing involved, so a loaded machine does not change the figures):

* **push**: one steady-state ``push`` of Live2Diff (frame to the device, VAE encode, depth net + mapping network,
  the stream-batched UNet call over ``n_steps`` rows with the KV-cache, scheduler, VAE decode of the emitted frame);
* **stream UNet call**: the UNet call of that push alone (temporal attention reading and writing the cache);
* **plain UNet call**: the same UNet on one frame, every temporal attention over that frame alone (no cache) —
  the floor a cache-reading call is compared with.

Counts: *dispatched* = ``aten::`` operators called from Python (the top of each operator tree: what the code
asks for), *leaf* = operators that call no other ``aten::`` operator (about what becomes a kernel on a device),
*all* = every ``aten::`` event. ``--before FILE`` shows an earlier run (same script) beside this one.

    python benchmarks/op_count.py [--model mid] [--size 64] [--t-index-list 30 36 42]
    python benchmarks/op_count.py --smoke          # tiny model, seconds (writes benchmarks/results/smoke/)

Writes benchmarks/results/op_count.{json,md}.
"""

from __future__ import annotations

import argparse
import collections
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's code, not an installed copy

sys.path.insert(0, str(ROOT / "benchmarks"))
from _smoke import add_smoke_flag, apply_smoke  # noqa: E402

from live2diff.method import Live2DiffMethod  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
# operators that only make a new view of the same memory (or return their input: dropout in inference, a no-op
# contiguous): no kernel on a device
METADATA = {"aten::" + n for n in (
    "view", "reshape", "_reshape_alias", "_unsafe_view", "select", "slice", "unsqueeze", "squeeze", "permute",
    "transpose", "t", "expand", "as_strided", "narrow", "alias", "detach", "unflatten", "flatten", "split",
    "chunk", "unbind", "dropout", "contiguous", "empty", "empty_strided", "empty_like", "lift_fresh", "view_as",
    "expand_as", "movedim", "numpy_T", "split_with_sizes", "broadcast_to", "resolve_conj", "resolve_neg",
)}  # fmt: skip


def clip(n: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(3, max(size // 8, 1), max(size // 8, 1), generator=g)
    base = torch.nn.functional.interpolate(base[None], size=(size, size), mode="bilinear")[0]
    return torch.stack([torch.roll(base, shifts=(i, 2 * i), dims=(1, 2)) for i in range(n)]).clamp(0, 1)


def count_ops(fn) -> dict:
    """``fn()`` under the profiler: operator counts (see the module docstring) and the most frequent names."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = [e for e in prof.events() if e.name.startswith("aten::")]
    has_aten_child = {id(e.cpu_parent) for e in events if e.cpu_parent is not None}
    dispatched = [e for e in events if not _under_aten(e)]
    leaf = [e for e in events if id(e) not in has_aten_child]
    compute = [e for e in leaf if e.name not in METADATA]
    return {
        "dispatched": len(dispatched),
        "leaf": len(leaf),
        "compute": len(compute),
        "all": len(events),
        "top_dispatched": collections.Counter(e.name for e in dispatched).most_common(12),
        "top_compute": collections.Counter(e.name for e in compute).most_common(12),
    }


KINDS = ("dispatched", "compute", "leaf", "all")


def _under_aten(e) -> bool:
    p = e.cpu_parent
    while p is not None:
        if p.name.startswith("aten::"):
            return True
        p = p.cpu_parent
    return False


def measure(args) -> dict:
    m = Live2DiffMethod(
        model={"size": args.model}, t_index_list=args.t_index_list, window=args.window, warmup=args.warmup
    )
    s, unet = m.stream, m.components.unet
    # past the warmup and the batch fill, then twice round the ring: every ring state has been seen (the
    # first visit of one builds its index tensors, a cost that a long stream does not pay per frame)
    n_warm = m.steady_state_frames + 2 * (args.window - args.warmup) + 1
    frames = clip(n_warm + 2, args.size)
    m.prepare("a watercolor painting", height=args.size, width=args.size, seed=0)
    seen: dict = {}

    def capture(_module, a, kw):
        seen.update(args=a, kwargs=kw, feat=s.depth_injector.feat)

    with torch.inference_mode():
        for i in range(n_warm):
            m.push(i, frames[i])
        handle = unet.register_forward_pre_hook(capture, with_kwargs=True)
        push = count_ops(lambda: m.push(n_warm, frames[n_warm]))
        handle.remove()
        x, t, emb = seen["args"]
        steps = list(range(s.n_steps))

        def unet_call(stream: bool):
            def run():
                s.depth_injector.feat = seen["feat"] if stream else seen["feat"][:1]
                with s.ctl.stream(steps) if stream else s.ctl.full():
                    if stream:
                        unet(x, t, emb, return_dict=False)
                    else:
                        unet(x[:1], t[:1], emb[:1], return_dict=False)
                s.depth_injector.feat = None

            return run

        stream_call = count_ops(unet_call(True))
        plain_call = count_ops(unet_call(False))
    n_temporal = len(s.ctl.processors)
    return {
        "push": push,
        "stream_unet_call": stream_call,
        "plain_unet_call": plain_call,
        "temporal_attention_layers": n_temporal,
        "ratio_push_over_plain": {k: push[k] / plain_call[k] for k in KINDS},
        "ratio_stream_over_plain": {k: stream_call[k] / plain_call[k] for k in KINDS},
        "extra_per_temporal_layer": {
            k: (stream_call[k] - plain_call[k]) / n_temporal for k in KINDS
        },
    }


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "live2diff"], cwd=ROOT, capture_output=True,
                               text=True).stdout.strip()  # fmt: skip
        return out.stdout.strip() + (" (live2diff/ modified)" if dirty else "")
    except OSError:
        return "unknown"


HEAD = "| what | dispatched ops | compute ops | leaf ops | all aten ops |"


def markdown(result: dict, before: dict | None) -> str:
    a = result["args"]
    r = result["counts"]
    rows = [("push", "one steady push"), ("stream_unet_call", "stream UNet call"),
            ("plain_unet_call", "plain one-frame UNet call")]  # fmt: skip
    md = [
        "# Operators per frame: a steady Live2Diff push vs a plain one-frame UNet call",
        "",
        f"Run of {result['measured']} at {result['commit']}. `{a['model']}` model, {a['size']}x{a['size']}, "
        f"t_index_list {a['t_index_list']}, window {a['window']}, warmup {a['warmup']}, CPU, torch "
        f"{result['torch']}; {r['temporal_attention_layers']} temporal-attention layers. Counted with "
        "`torch.profiler` (counts, not times: the machine's load does not change them).",
        "",
        HEAD,
        "|---|---|---|---|---|",
        *[f"| {label} | " + " | ".join(str(r[k][c]) for c in KINDS) + " |" for k, label in rows],
        "| **push / plain call** | " + " | ".join(f"**{r['ratio_push_over_plain'][c]:.2f}**" for c in KINDS) + " |",
        "| stream call / plain call | " + " | ".join(f"{r['ratio_stream_over_plain'][c]:.2f}" for c in KINDS) + " |",
        "| extra per temporal layer (stream - plain) | "
        + " | ".join(f"{r['extra_per_temporal_layer'][c]:.1f}" for c in KINDS) + " |",
        "",
        "Dispatched: `aten::` operators called from Python (the top of each operator tree); compute: leaf operators "
        "(calling no other) that are not views or no-ops (about the kernels a device would launch in eager mode); "
        "leaf: every leaf operator; all: every `aten::` event. The push also encodes, runs the depth net and "
        "mapping network, and decodes the emitted frame.",
        "",
        "Most dispatched in the push: "
        + ", ".join(f"`{n}` {c}" for n, c in r["push"]["top_dispatched"]),
        "",
        "Most frequent compute operators in the push: "
        + ", ".join(f"`{n}` {c}" for n, c in r["push"]["top_compute"]),
        "",
    ]
    if before is not None:
        b = before["counts"]
        md += [
            f"## Before: {before['commit']} (run {before['measured']}, same script and arguments)",
            "",
            HEAD,
            "|---|---|---|---|---|",
            *[f"| {label} | " + " | ".join(str(b[k][c]) for c in KINDS) + " |" for k, label in rows],
            "| push / plain call | " + " | ".join(f"{b['ratio_push_over_plain'][c]:.2f}" for c in KINDS) + " |",
            "",
            "Change of the push (" + " / ".join(KINDS) + "): "
            + " / ".join(f"{r['push'][c] - b['push'][c]:+d}" for c in KINDS),
            "",
        ]
    md += [f"Command: `{result['command']}`", ""]
    return "\n".join(md)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="mid")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--window", type=int, default=16)
    ap.add_argument("--warmup", type=int, default=8)
    ap.add_argument("--t-index-list", type=int, nargs="+", default=[30, 36, 42])
    ap.add_argument("--out", type=Path, default=RESULTS, help="folder")
    ap.add_argument("--before", type=Path, default=None, help="op_count.json of an earlier run, shown beside")
    add_smoke_flag(ap)
    args = ap.parse_args()
    args = apply_smoke(ap, args, {"model": "tiny_random", "size": 32, "window": 8, "warmup": 4})
    out = args.out
    torch.set_num_threads(1)
    counts = measure(args)
    result = {
        "benchmark": "op_count",
        "measured": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "smoke": args.smoke,
        "args": {k: v for k, v in vars(args).items() if k not in ("out", "before")},
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "load_average_1m": os.getloadavg()[0],
        "command": "python benchmarks/op_count.py " + " ".join(sys.argv[1:]),
        "counts": counts,
    }
    before = json.loads(args.before.read_text()) if args.before else None
    out.mkdir(parents=True, exist_ok=True)
    (out / "op_count.json").write_text(json.dumps(result, indent=2) + "\n")
    md = markdown(result, before)
    (out / "op_count.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
