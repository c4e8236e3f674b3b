"""Does the latency gate catch a real 20 % slowdown of every gated method, and stay quiet on unchanged code?

    python benchmarks/gate_power.py [--trials 10] [--slowdown 1.2] [--background-load N] [--reference-load N]
        [--methods identity,busy,live2diff] [-- overrides, e.g. gate.repeats=9]

One invocation is one *batch* of the validation campaign: it records a fresh reference with ``experiment=ci_latency``
(``--reference-load`` neighbours running, default: as many as the trials get), then runs the gate as CI would — a
separate ``python run_eval.py experiment=ci_latency`` process per trial — ``--trials`` times unchanged and
``--trials`` times with every injectable method slowed down, alternating the two so that drifting machine load hits
both equally:

* ``busy``: ``method.busy.slowdown=1.2`` (exactly 20 % more matrix products per frame);
* ``live2diff``: ``benchmarks.gate_inject.SlowedLive2Diff`` with ``unet_repeats=K`` (every UNet forward re-runs one
  of the UNet's own ResNet blocks K more times: real UNet work inside the UNet call). K is fixed for the whole
  campaign, as a code change's extra work is: ``python benchmarks/gate_inject.py --target 1.2`` sizes it once with
  the gate's own measurement (``benchmarks/results/gate_inject_sizing.json``; ``--live2diff-repeats`` overrides).
  Every run of the batch (reference, unchanged) uses the same class with 0; each batch reports the frame-time ratio
  the slowed runs actually had.
* ``identity``: nothing to inject (a 20 % slower 0.02 ms method is below ``gate.min_change_ms`` by design): its
  false alarms are counted.

A method is caught in a slowed trial when the gate exits 1 naming it; a false alarm is a method flagged in an
unchanged trial. ``--background-load N`` runs N neighbour processes during the trials, each alternating at random
between bursts of matrix products, of memory streaming (64 MiB copies, which evict the caches) and short idle gaps.
Each batch is appended, with its time and the load averages, to ``benchmarks/results/gate_power_campaign.json``;
``benchmarks/results/gate_power.md`` summarises every batch of the campaign (totals per condition and method).
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

try:  # run as a script (benchmarks/ on sys.path) or imported as benchmarks.<name> by the tests
    from _smoke import add_smoke_flag, apply_smoke
except ImportError:
    from benchmarks._smoke import add_smoke_flag, apply_smoke

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


SLOWED_TARGET = "benchmarks.gate_inject.SlowedLive2Diff"  # (not imported here: that would import live2diff)
SIZING = ROOT / "benchmarks" / "results" / "gate_inject_sizing.json"
INJECTION = "fixed-repeats"  # how the live2diff slowdown is made (older batches: sized in every process)


def knobs(methods: list[str], slowdown: float, live2diff_repeats: int = 0) -> list[str]:
    """The overrides that slow every injectable selected method (``slowdown`` 1.0 and ``live2diff_repeats`` 0:
    unchanged, same classes)."""
    out = []
    if "busy" in methods:
        out.append(f"method.busy.slowdown={slowdown}")
    if "live2diff" in methods:
        out += [
            f"method.live2diff._target_={SLOWED_TARGET}",
            f"+method.live2diff.unet_repeats={live2diff_repeats}",
        ]
    return out


def sized_repeats(path: Path = SIZING) -> dict:
    """The committed sizing of the live2diff injection (benchmarks/gate_inject.py)."""
    if not path.is_file():
        raise SystemExit(
            f"{path} is missing: size the live2diff injection first (python benchmarks/gate_inject.py --target 1.2, "
            "on a quiet machine) or pass --live2diff-repeats K"
        )
    return json.loads(path.read_text())


def injectable(methods: list[str]) -> list[str]:
    return [m for m in methods if m in ("busy", "live2diff")]


def yardsticks() -> dict:
    """Each gated method's yardstick as the gate's defaults set it (``gate.calibrations``; others: ``matmul``)."""
    from omegaconf import OmegaConf

    g = OmegaConf.load(ROOT / "conf" / "gate" / "default.yaml")
    return {str(k): str(v) for k, v in (g.get("calibrations") or {}).items()}


def measured_yardsticks(base: dict, trials: list[dict]) -> dict:
    """The yardsticks the batch's gate runs actually used (from their gate.json; ``matmul`` left implicit, as in
    ``gate.calibrations``); a batch whose runs differ is refused rather than totalled under one condition."""
    seen = {json.dumps(r["yardsticks"], sort_keys=True) for r in [base, *trials] if r.get("yardsticks")}
    if len(seen) > 1:
        raise RuntimeError(f"the batch's gate runs used different yardsticks: {sorted(seen)}")
    used = json.loads(seen.pop()) if seen else {}
    return {m: c for m, c in sorted(used.items()) if c and c != "matmul"}


#: batches recorded before the field existed gated the first trained tiny model (8×8 latents; its decoder was
#: retrained during the campaign, the UNet and architecture stayed)
OLD_MODEL = "tiny /8 (8x8 latents, before 2026-11-28 02:47 UTC)"


def gated_model() -> str:
    """The model ``experiment=ci_latency`` gates (``model=tiny``): its latent factor and the sha256 prefix of its
    trained weights, so that batches of different models are never totalled together."""
    import hashlib

    from omegaconf import OmegaConf

    m = OmegaConf.load(ROOT / "conf" / "model" / "tiny.yaml")
    path = ROOT / str(m.weights.trained)
    return f"tiny /{int(m.vae.get('factor', 8))} ({hashlib.sha256(path.read_bytes()).hexdigest()[:8]})"


OLD_YARDSTICKS = {"live2diff": "unet"}  # batches recorded before the field existed (busy on matmul)


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
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    when = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    load = os.getloadavg()[0]
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
    timings = gate.get("timings", {})
    return {
        "at": when,
        "load_1m": round(load, 2),
        "exit": proc.returncode,
        "seconds": round(seconds, 2),
        "flagged": sorted(m for m, v in verdicts.items() if v["status"] == "regression"),
        "change": {m: v["change"] for m, v in verdicts.items()},
        "spread": {m: v["spread"] for m, v in verdicts.items()},
        "frame_ms": {m: float(_median(t["frame_ms"])) for m, t in timings.items()},
        "yardsticks": {m: t.get("calibration") for m, t in timings.items()},  # what the gate measured against
        "retried": sorted(gate.get("retried", {})),
        "cmd": " ".join(shlex.quote(c) for c in cmd[1:]),
    }


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    n = len(xs)
    return (xs[n // 2] + xs[(n - 1) // 2]) / 2 if n else float("nan")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--trials", type=int, default=10, help="pairs of gate runs (unchanged, slowed) in this batch"
    )
    p.add_argument("--slowdown", type=float, default=1.2)
    p.add_argument(
        "--methods",
        default="identity,busy,live2diff",
        help="methods each gate run measures (default: the ones conf/experiment/ci_latency.yaml gates)",
    )
    p.add_argument(
        "--background-load", type=int, default=0, help="noisy neighbour processes during the trials"
    )
    p.add_argument(
        "--reference-load",
        type=int,
        default=None,
        help="neighbours while the reference is recorded (default: same)",
    )
    p.add_argument(
        "--reference",
        type=Path,
        default=None,
        help="reuse this reference across batches (recorded here first if missing): trials at later times are then "
        "compared with one reference, as CI compares with the committed one; default: a fresh one per batch",
    )
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gate_power")
    p.add_argument(
        "overrides", nargs="*", help="extra Hydra overrides for every gate run (e.g. gate.repeats=9)"
    )
    p.add_argument(
        "--live2diff-repeats",
        type=int,
        default=None,
        help="extra ResNet-block runs per UNet call in slowed runs (default: benchmarks/results/"
        "gate_inject_sizing.json, written by benchmarks/gate_inject.py)",
    )
    p.add_argument(
        "--alongside",
        default="",
        help="other work known to share the machine during the batch (recorded, and the batch counted under its own "
        "condition), e.g. '1 training job'",
    )
    p.add_argument("--summarise", action="store_true", help="only rewrite the .md from the campaign JSON")
    add_smoke_flag(p)
    args = apply_smoke(p, p.parse_args(), dict(trials=1, methods="identity,live2diff"))
    if args.smoke:  # a short gate run: one short video, one repetition
        args.overrides = [*["dataset.num_videos=1", "dataset.num_frames=12", "gate.repeats=1", "gate.retries=0", "gate.reference_passes=1"], *args.overrides]
    campaign_path = args.out.with_name(args.out.name + "_campaign.json")
    if args.summarise:
        args.out.with_suffix(".md").write_text(markdown(json.loads(campaign_path.read_text())["batches"]))
        return 0
    if args.reference_load is None:
        args.reference_load = args.background_load
    methods = [m for m in args.methods.split(",") if m]
    sizing = None
    if "live2diff" in methods and args.live2diff_repeats is None:
        sizing = sized_repeats()
        args.live2diff_repeats = int(sizing["repeats"])
    model = gated_model()
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    load_before = os.getloadavg()
    base, trials = measure_power(args, methods)
    if gated_model() != model:
        raise RuntimeError(
            f"the gated model changed during the batch ({model} -> {gated_model()}): not recorded"
        )
    slowed = [r for r in trials if r["kind"] == "slowed"]
    unchanged = [r for r in trials if r["kind"] == "unchanged"]
    per_method = {}
    for m in methods:
        caught = (
            sum(r["exit"] == 1 and m in r["flagged"] for r in slowed) if m in injectable(methods) else None
        )
        fs = [r["frame_ms"].get(m) for r in slowed if r["frame_ms"].get(m)]
        fu = [r["frame_ms"].get(m) for r in unchanged if r["frame_ms"].get(m)]
        per_method[m] = {
            "caught": caught,
            "false_alarms": sum(m in r["flagged"] for r in unchanged),
            "slowed_changes": [r["change"].get(m) for r in slowed],
            "unchanged_changes": [r["change"].get(m) for r in unchanged],
            "frame_ms_slowed_over_unchanged": _median(fs) / _median(fu) if fs and fu else None,
        }
    batch = {
        "started": started,
        "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": device_info(),
        "platform": platform.platform(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "condition": "loaded" if args.background_load else "quiet",
        "alongside": args.alongside,
        "model": model,
        "calibrations": measured_yardsticks(base, trials),
        "injection": INJECTION,
        "background_load": args.background_load,
        "reference_load": args.reference_load,
        "slowdown": args.slowdown,
        "live2diff_repeats": args.live2diff_repeats,
        "live2diff_sizing": sizing and {k: sizing[k] for k in ("target", "repeats", "verify", "finished")},
        "methods": methods,
        "overrides": args.overrides,
        "trials": args.trials,
        "per_method": per_method,
        "reference_run": base,
        "runs": trials,
        "command": command_line(args),
    }
    campaign = json.loads(campaign_path.read_text()) if campaign_path.is_file() else {"batches": []}
    campaign["batches"].append(batch)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    campaign_path.write_text(json.dumps(campaign, indent=2) + "\n")
    md = markdown(campaign["batches"])
    args.out.with_suffix(".md").write_text(md)
    print(md)
    return 0


def command_line(args: argparse.Namespace) -> str:
    cmd = f"python benchmarks/gate_power.py --trials {args.trials} --slowdown {args.slowdown} --methods {args.methods}"
    if args.background_load:
        cmd += f" --background-load {args.background_load}"
    if args.reference_load != args.background_load:
        cmd += f" --reference-load {args.reference_load}"
    if args.live2diff_repeats is not None:
        cmd += f" --live2diff-repeats {args.live2diff_repeats}"
    if args.reference:
        cmd += f" --reference {Path(args.reference).name}"
    if args.alongside:
        cmd += f" --alongside {shlex.quote(args.alongside)}"
    if args.overrides:
        cmd += " " + " ".join(args.overrides)
    return cmd


def measure_power(args: argparse.Namespace, methods: list[str]) -> tuple[dict, list[dict]]:
    """The reference, then ``trials`` pairs of gate runs (unchanged, slowed), alternating."""
    selected = [f"method=[{','.join(methods)}]", *args.overrides]
    with tempfile.TemporaryDirectory(prefix="gate_power_") as tmp:
        tmp = Path(tmp)
        ref = args.reference.resolve() if args.reference else tmp / "reference.json"
        if ref.is_file():
            created = json.loads(ref.read_text()).get("created")
            base = {"reused": str(ref), "created": created}
        else:
            neighbours = start_neighbours(args.reference_load)
            try:
                base = gate_run(tmp, ref, [*selected, *knobs(methods, 1.0, 0)], update=True)
            finally:
                stop(neighbours)
        neighbours = start_neighbours(args.background_load)
        trials = []
        try:
            for t in range(args.trials):
                for kind, s, k in (
                    ("unchanged", 1.0, 0),
                    ("slowed", args.slowdown, args.live2diff_repeats or 0),
                ):
                    r = gate_run(tmp, ref, [*selected, *knobs(methods, s, k)])
                    r.update(kind=kind, trial=t)
                    trials.append(r)
                    changes = " ".join(f"{m} {r['change'].get(m, float('nan')):+.1%}" for m in methods)
                    print(
                        f"{kind:9s} trial {t:2d}: exit {r['exit']} {changes} flagged {r['flagged']}",
                        flush=True,
                    )
        finally:
            stop(neighbours)
    return base, trials


def stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.kill()
        proc.wait()


def _pct(x) -> str:
    return "–" if x is None else f"{x:+.1%}"


def markdown(batches: list[dict]) -> str:
    lines = [
        "# Latency gate power on the gated methods",
        "",
        "Each batch: a fresh reference, then pairs of gate runs (unchanged / every injectable method slowed by 20 %), "
        "alternating, each a separate `python run_eval.py experiment=ci_latency` process as CI runs it "
        "(`benchmarks/gate_power.py`; slowdowns: `busy.slowdown=1.2`, and for `live2diff` "
        "`benchmarks/gate_inject.py`: the UNet re-runs one of its own ResNet blocks a fixed number of times inside its "
        "forward, a count sized once to add 20 % to the frame time; the older batches sized it in every process, and "
        "its size drifted with the load: they are listed under their injection's name). Caught = the gate exits 1 naming the method; false alarm = a method flagged on "
        "unchanged code. Load averages (1 min) are the machine's, shared with other jobs; `loaded` batches add "
        "noisy neighbour processes (compute / 64 MiB memory streaming / idle bursts).",
        "",
        "## Totals per condition",
        "",
        "| condition | method | batches | slowed trials | caught | catch rate | unchanged trials | false alarms "
        "| false-alarm rate |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def key(b: dict) -> tuple:
        return (
            b.get("injection", "one-phase"),
            b["condition"],
            b["reference_load"],
            b["background_load"],
            b.get("alongside", ""),
            tuple(sorted(b.get("calibrations", OLD_YARDSTICKS).items())),
            b.get("model", OLD_MODEL),
        )

    now = tuple(sorted(yardsticks().items()))
    model_now = gated_model()
    for inj, cond, rl, bl, along, sticks, model in sorted(
        {key(b) for b in batches}, key=lambda k: (k[-1] != model_now, k)
    ):
        bs = [b for b in batches if key(b) == (inj, cond, rl, bl, along, sticks, model)]
        label = cond if rl == bl else f"{cond} (reference recorded with {rl} neighbour(s))"
        if along:  # not quiet: other work shared the machine
            label = label.replace("quiet", "no added neighbours") + f", alongside {along}"
        if inj != INJECTION:
            label += f" [injection: {inj}]"
        if sticks != now:
            label += " [yardsticks: " + ", ".join(f"{m}/{c}" for m, c in sticks) + ", others/matmul]"
        if bl:
            label += f", {bl} neighbours"
        if model != model_now:
            label += f" [model: {model}]"
        for m in bs[0]["methods"]:
            slowed = sum(b["trials"] for b in bs if b["per_method"][m]["caught"] is not None)
            caught = sum(b["per_method"][m]["caught"] or 0 for b in bs)
            n_un = sum(b["trials"] for b in bs)
            fa = sum(b["per_method"][m]["false_alarms"] for b in bs)
            rate = f"**{caught / slowed:.0%}**" if slowed else "– (not injectable)"
            lines.append(
                f"| {label} | {m} | {len(bs)} | {slowed or '–'} | {caught if slowed else '–'} | {rate} | {n_un} | {fa} "
                f"| **{fa / n_un:.0%}** |"
            )
    lines += ["", "Requirement: catch rate ≥ 95 %, false-alarm rate ≤ 5 %.", "", "## Batches", ""]
    for b in batches:
        lb, la = b["load_average_before"], b["load_average_after"]
        lines += [
            f"### {b['started']} – {b['finished']}: "
            + (
                f"{b['condition'].replace('quiet', 'no added neighbours')}, alongside {b['alongside']}"
                if b.get("alongside")
                else b["condition"]
            )
            + f" (injection: {b.get('injection', 'one-phase')}; model: {b.get('model', OLD_MODEL)})",
            "",
            f"Load average (1/5/15 min) before {lb[0]:.2f}/{lb[1]:.2f}/{lb[2]:.2f}, after {la[0]:.2f}/{la[1]:.2f}/"
            f"{la[2]:.2f}; {b['machine']['cpu']}, {b['machine']['cpu_count']} CPUs. Command: `{b['command']}`"
            + (
                f". live2diff injection: {b['live2diff_repeats']} extra ResNet-block runs per UNet call"
                if b.get("live2diff_repeats")
                else ""
            ),
            "",
            "| method | caught | false alarms | changes, slowed trials | changes, unchanged trials "
            "| frame time slowed / unchanged |",
            "|---|---|---|---|---|---|",
        ]
        for m, r in b["per_method"].items():
            ratio = r["frame_ms_slowed_over_unchanged"]
            caught = "–" if r["caught"] is None else f"{r['caught']}/{b['trials']}"
            lines.append(
                f"| {m} | {caught} | {r['false_alarms']}/{b['trials']} "
                f"| {', '.join(_pct(x) for x in r['slowed_changes'])} "
                f"| {', '.join(_pct(x) for x in r['unchanged_changes'])} | {'–' if ratio is None else f'{ratio:.3f}'} |"
            )
        if b.get("note"):
            lines += ["", f"Note: {b['note']}."]
        loads = [r["load_1m"] for r in b["runs"]]
        ref = b["reference_run"]
        ref_words = (
            f"reference reused from {Path(ref['reused']).name} (recorded {ref['created']})"
            if "reused" in ref
            else f"reference recorded at {ref['at']} (1-min load {ref['load_1m']:.2f})"
        )
        lines += ["", f"Per-trial 1-min load: {min(loads):.2f} – {max(loads):.2f}; {ref_words}.", ""]
    lines += [
        "Every command, exit code, change and frame time: `gate_power_campaign.json` beside this file. Earlier "
        "results (the `busy`-only validation, the matmul yardstick for every method): `gate_power_history/`.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
