"""A slowdown injected into the Live2Diff UNet itself, for validating the latency gate (benchmarks/gate_power.py).

``SlowedLive2Diff`` is Live2Diff with ``unet_repeats``: every UNet forward also re-runs the UNet's first down-block
ResNet on the activations it just processed, ``unet_repeats`` times — real UNet work (convolutions, GroupNorm, SiLU
at the model's own sizes), inside the UNet call, not a sleep and not work in the driver. The count is a fixed
number, as a code change adds a fixed amount of work: it is not re-sized in every process (the earlier injection
sized itself during each process's warm-up, and its size drifted with the machine's load: at a nominal 16 % one
batch's frames were slowed 12.6 %, another's 34 %). ``unet_repeats=0`` is plain Live2Diff.

Sizing, once, on a quiet machine (writes ``benchmarks/results/gate_inject_sizing.json``, which gate_power.py reads)::

    python benchmarks/gate_inject.py --target 1.2

builds live2diff exactly as ``experiment=ci_latency`` does and times it with the gate's own measurement
(:meth:`eval.gate.run._Gate.measure`: the same streams, yardstick blocks, clock and repetitions), plain and
with ``k`` repetitions interleaved stream by stream in one process; it searches ``k`` until the slowed median frame
time is ``--target`` times the plain one, then measures the chosen ``k`` again, in a fresh process, to report what
the gate will see. Selected from the command line (``PYTHONPATH`` = the checkout):
``method.live2diff._target_=benchmarks.gate_inject.SlowedLive2Diff +method.live2diff.unet_repeats=K``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

try:  # run as a script (benchmarks/ on sys.path) or imported as benchmarks.<name> by the tests
    from _smoke import add_smoke_flag, apply_smoke
except ImportError:
    from benchmarks._smoke import add_smoke_flag, apply_smoke

from live2diff.method import Live2DiffMethod  # noqa: E402

SIZING = ROOT / "benchmarks" / "results" / "gate_inject_sizing.json"
TARGET = "benchmarks.gate_inject.SlowedLive2Diff"


class SlowedLive2Diff(Live2DiffMethod):
    def __init__(self, unet_repeats: int = 0, **kwargs):
        super().__init__(**kwargs)
        if int(unet_repeats) != unet_repeats or unet_repeats < 0:
            raise ValueError(f"unet_repeats must be an integer >= 0, got {unet_repeats!r}")
        self.repeats = int(unet_repeats)
        unet = self.components.unet
        self._block = unet.down_blocks[0].resnets[0]
        self._seen: tuple | None = None
        self._block.register_forward_pre_hook(self._capture, with_kwargs=True)
        unet.register_forward_hook(self._inject)

    def _capture(self, _module, args, kwargs) -> None:
        self._seen = (args, kwargs)

    def _inject(self, *_):
        if self.repeats and self._seen is not None:
            args, kwargs = self._seen
            with torch.inference_mode():
                for _ in range(self.repeats):
                    out = self._block(*args, **kwargs)
            float(out.flatten()[0])  # consumed


class _WithRepeats:
    """One SlowedLive2Diff seen as a method with a given repetition count (the gate's measure() interleaves its
    methods stream by stream: the plain and the slowed views share one model, one cache, one process)."""

    def __init__(self, method: SlowedLive2Diff, repeats: int):
        self._m, self._r = method, repeats

    def prepare(self, *a, **kw):
        self._m.repeats = self._r
        return self._m.prepare(*a, **kw)

    def __getattr__(self, name):
        return getattr(self._m, name)


def gate_overrides(repeats: int) -> list[str]:
    return [f"method.live2diff._target_={TARGET}", f"+method.live2diff.unet_repeats={int(repeats)}"]


def _measure(gate, method: SlowedLive2Diff, k: int) -> dict:
    t = gate.measure({"plain": _WithRepeats(method, 0), "slowed": _WithRepeats(method, k)})
    plain, slowed = t["plain"], t["slowed"]
    return {
        "repeats": k,
        "frame_ms_plain": plain.frame_ms_median,
        "frame_ms_slowed": slowed.frame_ms_median,
        "frame_ratio": slowed.frame_ms_median / plain.frame_ms_median,
        "gate_ratio": slowed.ratio / plain.ratio,  # what the gate's change would read
    }


def size(target: float, overrides: list[str], rounds: int) -> dict:
    """Search the repetition count whose slowed/plain median frame time is ``target``: a first guess from one
    repetition, then each step takes the least-squares slope (frame-time ratio - 1 per repetition, through the
    origin) over every count measured so far."""
    from eval.gate.run import _build

    gate = _build(_gate_cfg(overrides))
    method = gate.methods["live2diff"]
    steps = [_measure(gate, method, 1)]
    k = max(1, round((target - 1) / max(steps[0]["frame_ratio"] - 1, 1e-4)))
    for _ in range(rounds):
        r = _measure(gate, method, k)
        steps.append(r)
        print(
            f"  repeats {k:3d}: frame time x{r['frame_ratio']:.3f}, gate ratio x{r['gate_ratio']:.3f}",
            flush=True,
        )
        slope = sum(s["repeats"] * (s["frame_ratio"] - 1) for s in steps) / sum(
            s["repeats"] ** 2 for s in steps
        )
        nxt = max(1, round((target - 1) / slope)) if slope > 0 else k
        if nxt == k:
            break
        k = nxt
    return {"repeats": k, "steps": steps}


def _gate_cfg(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(
            "config", ["experiment=ci_latency", "method=[live2diff]", *gate_overrides(0), *overrides]
        )


def main() -> int:
    p = argparse.ArgumentParser(description="Size the live2diff UNet injection for the gate's power check.")
    p.add_argument("--target", type=float, default=1.2, help="slowed / plain median frame time (default 1.2)")
    p.add_argument("--rounds", type=int, default=4, help="search steps at most")
    p.add_argument("--verify", type=int, default=3, help="fresh processes that measure the chosen count")
    p.add_argument("--out", type=Path, default=SIZING)
    p.add_argument("--verify-only", type=int, default=None, metavar="K", help=argparse.SUPPRESS)
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides (as the gate runs get them)")
    add_smoke_flag(p)
    args = apply_smoke(p, p.parse_args(), dict(rounds=1, verify=1))
    if args.smoke:  # a short gate run: one short video, one repetition
        args.overrides = [*["dataset.num_videos=1", "dataset.num_frames=12", "gate.repeats=1", "gate.retries=0", "gate.reference_passes=1"], *args.overrides]
    torch.manual_seed(0)
    if args.verify_only is not None:  # the fresh-process check of a chosen count (JSON on stdout)
        from eval.gate.run import _build

        gate = _build(_gate_cfg(args.overrides))
        print(json.dumps(_measure(gate, gate.methods["live2diff"], args.verify_only)))
        return 0
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    load = os.getloadavg()
    found = size(args.target, args.overrides, args.rounds)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    checks = []
    for _ in range(args.verify):
        proc = subprocess.run(
            [sys.executable, __file__, "--verify-only", str(found["repeats"]), *args.overrides],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        checks.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(
            f"  fresh process, repeats {found['repeats']}: frame time x{checks[-1]['frame_ratio']:.3f}",
            flush=True,
        )
    ratios = sorted(c["frame_ratio"] for c in checks)
    result = {
        "target": args.target,
        "repeats": found["repeats"],
        "verify": checks,
        "verified_frame_ratio_median": ratios[len(ratios) // 2] if ratios else None,
        "search": found["steps"],
        "started": started,
        "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "load_average_before": load,
        "load_average_after": os.getloadavg(),
        "overrides": args.overrides,
        "command": "python benchmarks/gate_inject.py --target "
        + f"{args.target:g}"
        + "".join(f" {o}" for o in args.overrides),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"unet_repeats={found['repeats']}: frame time x{', x'.join(f'{r:.3f}' for r in ratios)} in {len(ratios)} "
        f"fresh processes -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
