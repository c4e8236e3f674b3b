"""Does the latency gate catch a real 20 % slowdown, and stay quiet on unchanged code?

    python benchmarks/gate_power.py [--trials 20] [--slowdown 1.2] [--background-load N] [-- overrides, e.g. gate.repeats=9]

Records a fresh reference with ``experiment=ci_latency`` (``method.busy.slowdown=1.0``), then runs the gate as CI
would — a separate ``python run_eval.py experiment=ci_latency`` process per trial — ``--trials`` times with the
busy method slowed down by config (``method.busy.slowdown=1.2``: exactly 20 % more matrix products per frame) and
``--trials`` times unchanged, alternating the two so that drifting machine load hits both equally. A caught trial
is one where the gate exits 1 naming ``busy``; a false alarm is an unchanged trial where it exits non-zero.
``--background-load N`` runs N neighbour processes for the whole benchmark (reference included), each alternating
at random between bursts of matrix products and of memory streaming (64 MiB copies, which evict the caches) and
short idle gaps: a reproducible noisy neighbour on top of whatever else the machine runs.
Writes ``benchmarks/results/gate_power.json`` and ``.md`` (rates, per-trial changes, machine, commands).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from eval.provenance import device_info  # noqa: E402

# A noisy neighbour: random bursts (50-500 ms) of compute, of cache-evicting memory traffic, or of nothing.
NEIGHBOUR = """
import random, time, torch
torch.set_num_threads(1)
rng = random.Random({seed})
a = torch.randn(384, 384); big = torch.empty(16 * 2**20); dst = torch.empty_like(big)
while True:
    kind, until = rng.choice(("compute", "memory", "memory", "idle")), time.perf_counter() + rng.uniform(0.05, 0.5)
    while time.perf_counter() < until:
        if kind == "compute":
            a = (a @ a).clamp_(-1, 1)
        elif kind == "memory":
            dst.copy_(big)
        else:
            time.sleep(0.01)
"""


def start_neighbours(n: int) -> list[subprocess.Popen]:
    return [
        subprocess.Popen([sys.executable, "-c", NEIGHBOUR.format(seed=i)], stdout=subprocess.DEVNULL)
        for i in range(n)
    ]


def gate_run(results_root: Path, reference: Path, overrides: list[str], update: bool = False) -> dict:
    cmd = [
        sys.executable,
        str(ROOT / "run_eval.py"),
        "experiment=ci_latency",
        f"results_root={results_root}",
        f"gate.reference={reference}",
        "hydra.job_logging.root.level=WARNING",
        *overrides,
    ]
    if update:
        cmd.append("--update-reference")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    runs = sorted((results_root / "ci_latency").glob("*/gate.json"), key=lambda p: p.stat().st_mtime)
    gate = json.loads(runs[-1].read_text()) if runs else {}
    for p in runs:  # one folder per trial; keep only the newest so the next lookup is unambiguous
        p.rename(p.with_name("gate.seen.json"))
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"gate run failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    verdicts = {v["method"]: v for v in gate.get("verdicts", [])}
    return {
        "exit": proc.returncode,
        "seconds": round(seconds, 2),
        "flagged": sorted(m for m, v in verdicts.items() if v["status"] == "regression"),
        "change": {m: v["change"] for m, v in verdicts.items()},
        "spread": {m: v["spread"] for m, v in verdicts.items()},
        "cmd": " ".join(shlex.quote(c) for c in cmd[1:]),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--slowdown", type=float, default=1.2)
    p.add_argument("--method", default="busy", help="the method whose config knob injects the slowdown")
    p.add_argument(
        "--methods",
        default="identity,busy",
        help="methods each gate run measures (the experiment's others only add run time)",
    )
    p.add_argument(
        "--background-load", type=int, default=0, help="noisy neighbour processes running throughout"
    )
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gate_power")
    p.add_argument(
        "overrides", nargs="*", help="extra Hydra overrides for every gate run (e.g. gate.repeats=9)"
    )
    args = p.parse_args()
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    load_before = os.getloadavg()
    overrides = [f"method=[{args.methods}]", *args.overrides]
    neighbours = start_neighbours(args.background_load)
    try:
        base, trials = measure_power(args, overrides)
    finally:
        for proc in neighbours:
            proc.kill()
            proc.wait()
    slowed = [r for r in trials if r["kind"] == "slowed"]
    unchanged = [r for r in trials if r["kind"] == "unchanged"]
    caught = sum(r["exit"] == 1 and args.method in r["flagged"] for r in slowed)
    alarms = sum(r["exit"] != 0 for r in unchanged)
    result = {
        "started": started,
        "machine": device_info(),
        "platform": platform.platform(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "background_load": args.background_load,
        "slowdown": args.slowdown,
        "method": args.method,
        "overrides": overrides,
        "trials": args.trials,
        "catch_rate": caught / len(slowed),
        "caught": caught,
        "false_alarm_rate": alarms / len(unchanged),
        "false_alarms": alarms,
        "pass": caught / len(slowed) >= 0.95 and alarms / len(unchanged) <= 0.05,
        "reference_run": base["cmd"],
        "runs": trials,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    md = markdown(args, result, slowed, unchanged, base)
    args.out.with_suffix(".md").write_text(md)
    print(md)
    return 0 if result["pass"] else 1


def measure_power(args: argparse.Namespace, overrides: list[str]) -> tuple[dict, list[dict]]:
    """The reference, then ``trials`` pairs of gate runs (unchanged, slowed), alternating."""
    with tempfile.TemporaryDirectory(prefix="gate_power_") as tmp:
        tmp = Path(tmp)
        ref = tmp / "reference.json"
        knob = f"method.{args.method}.slowdown"
        base = gate_run(tmp, ref, [*overrides, f"{knob}=1.0"], update=True)
        trials = []
        for t in range(args.trials):
            for kind, s in (("unchanged", 1.0), ("slowed", args.slowdown)):
                r = gate_run(tmp, ref, [*overrides, f"{knob}={s}"])
                r.update(kind=kind, trial=t)
                trials.append(r)
                print(
                    f"{kind:9s} trial {t:2d}: exit {r['exit']} change {args.method} "
                    f"{r['change'].get(args.method, float('nan')):+.1%} flagged {r['flagged']}",
                    flush=True,
                )
    return base, trials


def markdown(args: argparse.Namespace, result: dict, slowed: list, unchanged: list, base: dict) -> str:
    def changes(rs: list[dict]) -> str:
        return ", ".join(f"{r['change'].get(args.method, float('nan')):+.1%}" for r in rs)

    caught, alarms = result["caught"], result["false_alarms"]
    load = f"; {args.background_load} noisy neighbour process(es) running" if args.background_load else ""
    cmd = f"python benchmarks/gate_power.py --trials {args.trials} --slowdown {args.slowdown}"
    if args.background_load:
        cmd += f" --background-load {args.background_load}"
    if args.overrides:
        cmd += " " + " ".join(args.overrides)
    return "\n".join(
        [
            "# Latency gate power",
            "",
            f"Measured {result['started']} on {result['machine']['cpu']} ({result['machine']['cpu_count']} CPUs, "
            f"shared; load average {result['load_average_before'][0]:.2f} before, "
            f"{result['load_average_after'][0]:.2f} after{load}).",
            "",
            f"Command: `{cmd}`",
            "",
            "| injected slowdown | trials | gate failed | rate | requirement |",
            "|---|---|---|---|---|",
            f"| {args.slowdown - 1:+.0%} (`{args.method}.slowdown={args.slowdown}`) | {len(slowed)} | {caught} | "
            f"catch rate **{caught / len(slowed):.0%}** | ≥ 95 % |",
            f"| none | {len(unchanged)} | {alarms} | false-alarm rate **{alarms / len(unchanged):.0%}** | ≤ 5 % |",
            "",
            f"Measured change of `{args.method}`'s ratio vs the reference, slowed trials: {changes(slowed)}",
            "",
            f"Unchanged trials: {changes(unchanged)}",
            "",
            f"Reference: `python {base['cmd']}`; each trial is one `python run_eval.py experiment=ci_latency ...` "
            "process (see the .json beside this file for every command, exit code and change).",
            "",
        ]
    )


if __name__ == "__main__":
    raise SystemExit(main())
