"""Which yardstick tracks each gated method when neighbours load the machine? (the latency gate's calibration)

    python benchmarks/yardsticks.py [--rounds 6]

One process: the ``ci_latency`` methods ``busy`` and tiny ``live2diff`` are measured exactly as the gate measures
them (``eval.gate.measure``, thread CPU clock, paired per-frame ratios), once against each yardstick of
``eval/gate/calibration.py`` (``matmul``: 10 calls per block, ``unet``: 2), in rounds that alternate between no
neighbour and two noisy neighbour processes (``benchmarks/gate_power.py``'s: random bursts of matrix products, of
64 MiB memory streaming, of idling). A good yardstick keeps the method's ratio where it was when the neighbours
come: the change of the median ratio from quiet to loaded rounds is the false alarm (or the missed regression) a
gate with that yardstick would see. Writes ``benchmarks/results/yardsticks.{json,md}``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _smoke import add_smoke_flag, apply_smoke  # noqa: E402
from gate_power import NEIGHBOUR  # noqa: E402

from eval.gate.calibration import CALIBRATIONS  # noqa: E402
from eval.gate.measure import measure  # noqa: E402
from eval.timing import warm_up  # noqa: E402

CALLS = {"matmul": 10, "unet": 2, "products": 10}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=6, help="alternating quiet / loaded rounds")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "yardsticks")
    add_smoke_flag(p)
    args = apply_smoke(p, p.parse_args(), dict(rounds=2))
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    torch.set_num_threads(1)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        cfg = compose("config", overrides=["experiment=ci_latency", "method=[busy,live2diff]"])
    streams = [(v.prompt, v.load()) for v in instantiate(cfg.dataset, _convert_="all").videos()]
    methods = {
        n: instantiate(OmegaConf.to_container(m, resolve=True), _convert_="all")
        for n, m in cfg.method.items()
    }
    for m in methods.values():
        warm_up(m, streams[0][1], 4, prompt=streams[0][0], seed=0)
    yardsticks = {name: CALIBRATIONS[name]("cpu") for name in CALLS}
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    rounds = []
    for r in range(args.rounds):
        loaded = r % 2 == 1
        neighbours = [
            subprocess.Popen([sys.executable, "-c", NEIGHBOUR.format(seed=i + 10 * r)])
            for i in range(2 * loaded)
        ]
        time.sleep(0.5 * loaded)
        row = {"round": r, "loaded": loaded, "load_1m": os.getloadavg()[0]}
        try:
            for yname, stick in yardsticks.items():
                out = measure(
                    methods,
                    streams,
                    repeats=1,
                    warmup_frames=4,
                    calibration_calls=CALLS[yname],
                    calibrate=stick,
                    clock=time.thread_time,
                )
                for n, t in out.items():
                    row[f"{n}/{yname}"] = {
                        "ratio": t.ratio,
                        "frame_ms": t.frame_ms_median,
                        "calib_ms": t.calib_ms_median,
                    }
        finally:
            for proc in neighbours:
                proc.kill()
                proc.wait()
        print(json.dumps(row), flush=True)
        rounds.append(row)
    med = statistics.median
    summary = {}
    for key in [k for k in rounds[0] if "/" in k]:
        q = [x[key] for x in rounds if not x["loaded"]]
        lo = [x[key] for x in rounds if x["loaded"]]
        summary[key] = {
            f: {"quiet": med(v[f] for v in q), "loaded": med(v[f] for v in lo)}
            for f in ("ratio", "frame_ms", "calib_ms")
        }
        for f in summary[key]:
            summary[key][f]["change"] = summary[key][f]["loaded"] / summary[key][f]["quiet"] - 1
    result = {"started": started, "calls": CALLS, "rounds": rounds, "summary": summary}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    loads = [x["load_1m"] for x in rounds]
    md = [
        "# Gate yardsticks under a noisy neighbour",
        "",
        f"Run of {started}, one process, {args.rounds} rounds alternating quiet / 2 noisy neighbours (1-min load "
        f"{min(loads):.1f}–{max(loads):.1f} on {os.cpu_count()} shared cores); each method measured as the gate does "
        "(thread CPU clock, paired per-frame ratios, median) against each yardstick. Medians over the rounds of each "
        "kind.",
        "",
        "| method / yardstick | ratio quiet | ratio loaded | ratio change | frame ms change | yardstick ms change |",
        "|---|---|---|---|---|---|",
        *[
            f"| {k} | {v['ratio']['quiet']:.3f} | {v['ratio']['loaded']:.3f} | **{v['ratio']['change']:+.1%}** "
            f"| {v['frame_ms']['change']:+.1%} | {v['calib_ms']['change']:+.1%} |"
            for k, v in summary.items()
        ],
        "",
        "A ratio change is what a gate with that yardstick would read as a regression (positive) or a speed-up "
        "(negative) of unchanged code when the neighbours arrive; the gate's tolerance is 15 %.",
        "",
        f"Command: `python benchmarks/yardsticks.py --rounds {args.rounds}`",
        "",
    ]
    args.out.with_suffix(".md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
