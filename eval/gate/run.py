"""The gate from a composed config (``conf/gate/``): measure, compare with (or rewrite) the reference, report."""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from eval.gate.calibration import CALIBRATIONS
from eval.gate.measure import CLOCKS, MethodTiming, measure, resolve_clock
from eval.gate.reference import (
    UnusableReference,
    config_hash,
    load_reference,
    machine_differences,
    make_reference,
    setup_differences,
    setup_of,
)
from eval.gate.verdict import (
    EXIT_NO_REFERENCE,
    EXIT_OK,
    Verdict,
    decide,
    exit_status,
    format_table,
)
from eval.interface import StreamMethod
from eval.store import atomic_write_json, content_key
from eval.timing import warm_up

log = logging.getLogger(__name__)


@dataclass
class GateOutcome:
    code: int
    text: str
    verdicts: list[Verdict] = field(default_factory=list)
    timings: dict[str, MethodTiming] = field(default_factory=dict)


@dataclass
class _Gate:
    """One gate run: the settings, what is measured, and the text and result it builds up."""

    g: DictConfig
    methods: dict[str, StreamMethod]
    method_cfgs: dict[str, dict]
    streams: list[tuple[str, torch.Tensor]]
    device: str
    clock_name: str
    repeats: int
    seed: int
    lines: list[str] = field(default_factory=list)
    result: dict[str, Any] = field(default_factory=dict)
    yardsticks: dict[str, Any] = field(default_factory=dict)  # calibration name -> workload (built once)

    def measure(self, subset: dict[str, StreamMethod]) -> dict[str, MethodTiming]:
        g = self.g
        names = {m: calibration_of(g, m) for m in subset}
        for cname in set(names.values()) - set(self.yardsticks):
            self.yardsticks[cname] = CALIBRATIONS[cname](self.device)
        timings = measure(
            subset,
            self.streams,
            repeats=self.repeats,
            warmup_frames=int(g.warmup_frames),
            calibration_calls={m: calibration_calls_of(g, c) for m, c in names.items()},
            statistic=str(g.get("statistic", "call")),
            quantile=float(g.get("quantile", 0.5)),
            estimator=str(g.get("estimator", "paired")),
            calibrate={m: self.yardsticks[c] for m, c in names.items()},
            clock=CLOCKS[self.clock_name],
            seed=self.seed,
        )
        for m, t in timings.items():
            t.calibration = names[m]
        return timings

    def tolerance_of(self, name: str) -> float:
        return float((self.g.get("tolerances") or {}).get(name, self.g.tolerance))

    def judge(self, timings: dict[str, MethodTiming], ref: dict) -> list[Verdict]:
        return decide(
            timings,
            ref.get("methods", {}),
            tolerance=float(self.g.tolerance),
            tolerances=dict(self.g.get("tolerances") or {}),
            min_change_ms=float(self.g.get("min_change_ms", 0)),
        )

    def finish(self, code: int, verdicts: list[Verdict], timings: dict, run_dir: Path | None) -> GateOutcome:
        outcome = GateOutcome(code, "\n".join(self.lines), verdicts, timings)
        if run_dir is not None:
            run_dir = Path(run_dir)
            atomic_write_json(run_dir / "gate.json", {**self.result, "exit_code": outcome.code})
            (run_dir / "gate.md").write_text(outcome.text + "\n")
        return outcome


def _finish_unmeasured(lines: list[str], result: dict, run_dir: Path | None) -> GateOutcome:
    """Exit 3 (no comparable reference) before anything is built or measured."""
    outcome = GateOutcome(EXIT_NO_REFERENCE, "\n".join(lines))
    if run_dir is not None:
        atomic_write_json(Path(run_dir) / "gate.json", {**result, "exit_code": outcome.code})
        (Path(run_dir) / "gate.md").write_text(outcome.text + "\n")
    return outcome


def calibration_of(g: DictConfig, method: str) -> str:
    """The yardstick a method is divided by: ``gate.calibrations[method]``, else ``gate.calibration``."""
    per = g.get("calibrations") or {}
    name = str(per.get(method, g.get("calibration", "matmul")))
    if name not in CALIBRATIONS:
        key = f"gate.calibrations.{method}" if method in per else "gate.calibration"
        raise ValueError(f"{key}={name!r}: unknown calibration; use one of {sorted(CALIBRATIONS)}")
    return name


def calibration_calls_of(g: DictConfig, calibration: str) -> int:
    """Calls per calibration block: ``gate.calibration_calls`` (one number, or one per calibration name)."""
    calls = g.calibration_calls
    if isinstance(calls, (int, str)):
        return int(calls)
    if calibration not in calls:
        raise ValueError(
            f"gate.calibration_calls has no entry for the '{calibration}' calibration: add "
            f"gate.calibration_calls.{calibration}=N (calls per block; 0 = matched to the method)"
        )
    return int(calls[calibration])


def _ratio_words(g: DictConfig, methods: list[str]) -> str:
    q = f"q{float(g.get('quantile', 0.5)):g}"
    blocks = []
    for m in methods:
        cname = calibration_of(g, m)
        calls = calibration_calls_of(g, cname)
        blocks.append(f"{m}: {calls or 'matched'} x {cname}")
    block = "a calibration block (" + ", ".join(blocks) + ")"
    if str(g.get("estimator", "paired")) == "paired":
        return f"{q} of per-frame (method time / per-call time of {block} just before it)"
    return f"{q} of method per-frame times / {q} of per-call calibration times ({block})"


def _build(cfg: DictConfig) -> _Gate:
    """Instantiate the methods and load the streams; warm every method up to its steady state, untimed."""
    from hydra.utils import instantiate

    g = cfg.gate
    device, clock_name = _clock(cfg)
    method_cfgs = {
        str(k): OmegaConf.to_container(v, resolve=True) for k, v in (cfg.get("method") or {}).items()
    }
    if not method_cfgs:
        raise ValueError("the gate has no method to measure: pass e.g. method=[identity,busy]")
    for name in method_cfgs:  # a bad yardstick setting fails before anything is built
        calibration_calls_of(g, calibration_of(g, name))
    videos = instantiate(cfg.dataset, _convert_="all").videos()
    if not videos:
        raise ValueError("the gate's dataset has no videos")
    streams = [(v.prompt, v.load()) for v in videos]
    methods = {name: instantiate(mc, _convert_="all") for name, mc in method_cfgs.items()}
    prompt, frames = streams[0]
    for method in methods.values():  # one-off costs (allocation, lazy init) out of every repetition
        warm_up(method, frames, max(1, int(g.warmup_frames)), prompt=prompt, seed=int(cfg.seed))
    update = bool(g.get("update_reference", False))
    repeats = int(g.get("reference_repeats") or g.repeats) if update else int(g.repeats)
    return _Gate(g, methods, method_cfgs, streams, device, clock_name, repeats, int(cfg.seed))


def _clock(cfg: DictConfig) -> tuple[str, str]:
    """The device and the clock the gate times with (the thread count set first: the clock depends on it)."""
    if cfg.hardware.get("threads"):
        torch.set_num_threads(int(cfg.hardware.threads))
    device = str(cfg.hardware.get("device", "cpu"))
    return device, resolve_clock(str(cfg.gate.get("clock", "auto")), device, torch.get_num_threads())


def _reference_timings(gate: _Gate, first: dict[str, MethodTiming]) -> dict[str, MethodTiming]:
    """The reference's own error shifts every later comparison, so it is the median of several passes, each
    measured exactly as a gate run measures (same k, so the same estimator)."""
    passes = [first] + [
        gate.measure(gate.methods) for _ in range(max(0, int(gate.g.get("reference_passes", 1)) - 1))
    ]
    chosen = {}
    for name in first:
        each = [p[name] for p in passes]
        chosen[name] = sorted(each, key=lambda t: t.ratio)[len(each) // 2]
        chosen[name].pass_ratios = [t.ratio for t in each]
    return chosen


def _comparable(
    lines: list[str], g, ref: dict | None, setup: dict, machine: dict, ref_path: Path, cfg
) -> bool:
    """Whether the reference can be compared with; says why not (or what differs) in the gate's ``lines``."""
    if ref is None:
        lines.append(
            f"NO REFERENCE at {ref_path}: create it with `python run_eval.py "
            f"experiment={cfg.get('experiment_name', 'ci_latency')} --update-reference` and commit it"
        )
        return False
    if ref.get("setup_hash") != content_key(setup):
        diffs = setup_differences(ref.get("setup", {}), setup)
        lines.append(
            "SET-UP MISMATCH: the reference was measured with a different set-up, so its ratios are not "
            "comparable (not compared). Differences:"
        )
        lines += [f"  - {d}" for d in diffs or ["(set-up hash differs)"]]
        lines.append(
            "Regenerate the reference deliberately with --update-reference if the change is intended."
        )
        return False
    machine_diffs = machine_differences(ref.get("machine", {}), machine)
    if machine_diffs:
        lines.append(
            "MACHINE DIFFERS from the reference's (ratios transfer between machines only approximately):"
        )
        lines += [f"  - {d}" for d in machine_diffs]
        if str(g.get("on_machine_mismatch", "warn")) == "fail":
            lines.append("not compared (gate.on_machine_mismatch=fail)")
            return False
    return True


def _retry_unsure(
    gate: _Gate, timings: dict[str, MethodTiming], verdicts: list[Verdict]
) -> dict[str, list[float]]:
    """Sequential measurement: a result that fails, or passes by less than ``retry_margin``, is not trusted to one
    measurement. Those methods are measured ``retries`` more times and judged on the median of all repetitions, so
    a burst of someone else's load cannot fail the gate alone, and a borderline pass gets more data."""
    g = gate.g
    margin = float(g.get("retry_margin", 0.05))
    floor = float(g.get("min_change_ms", 0))
    unsure = {
        v.method: gate.methods[v.method]
        for v in verdicts
        if v.status in ("ok", "regression")
        and math.isfinite(v.change)
        and v.change > gate.tolerance_of(v.method) - margin
        and v.change_ms > floor
    }
    retried: dict[str, list[float]] = {}
    for _ in range(int(g.get("retries", 0)) if unsure else 0):
        log.info("gate: measuring %s again", ", ".join(unsure))
        for name, t in gate.measure(unsure).items():
            retried.setdefault(name, [timings[name].ratio]).append(t.ratio)
            old = timings[name]
            timings[name] = MethodTiming(
                old.ratios + t.ratios,
                old.frame_ms + t.frame_ms,
                old.calib_ms + t.calib_ms,
                old.calls,
                calibration=old.calibration,
            )
    return retried


def _annotate(verdicts: list[Verdict], retried: dict[str, list[float]], ref: dict, method_cfgs: dict) -> None:
    for v in verdicts:
        notes = [v.note] if v.note else []
        if v.method in retried:
            ratios = ", ".join(f"{r:.4g}" for r in retried[v.method])
            notes.append(
                f"close or failing: measured {len(retried[v.method])}x (ratios {ratios}), median of all repetitions"
            )
        r = ref.get("methods", {}).get(v.method, {})
        if v.status != "missing" and r and r.get("config_hash") != config_hash(method_cfgs.get(v.method)):
            notes.append("method config changed since the reference")
        v.note = "; ".join(notes)


def run_gate(cfg: DictConfig, run_dir: Path | None = None) -> GateOutcome:
    """Measure the selected methods and compare with (or, with ``gate.update_reference``, rewrite) the reference."""
    from eval.provenance import device_info, git_state

    g = cfg.gate
    device, clock_name = _clock(cfg)
    setup = setup_of(cfg)
    setup["gate"]["clock"] = clock_name
    machine = device_info(device)
    update = bool(g.get("update_reference", False))
    ref_path = Path(str(g.reference))
    names = [str(k) for k in (cfg.get("method") or {})]
    repeats = int(g.get("reference_repeats") or g.repeats) if update else int(g.repeats)
    lines = [
        f"Latency gate — reference {ref_path}",
        f"machine: {machine['cpu']} ({machine['cpu_count']} CPUs, "
        f"torch {machine['torch']}, {machine['torch_threads']} thread(s), {device}); "
        f"clock={clock_name}, median of {repeats} repetitions, ratio = {_ratio_words(g, names)}",
    ]
    result = {"setup_hash": content_key(setup), "machine": machine}
    ref = None
    if not update:  # the reference is read and checked before the minutes of measurement, not after them
        try:
            ref = load_reference(ref_path)
        except UnusableReference as exc:
            lines.append(f"UNUSABLE REFERENCE (not compared, nothing measured): {exc}")
            return _finish_unmeasured(lines, result, run_dir)
        if not _comparable(lines, g, ref, setup, machine, ref_path, cfg):
            return _finish_unmeasured(lines, result, run_dir)
    gate = _build(cfg)
    gate.lines, gate.result = lines, result
    log.info(
        "gate: %d method(s) x %d video(s), %d repetitions, clock=%s",
        len(gate.methods),
        len(gate.streams),
        gate.repeats,
        gate.clock_name,
    )
    timings = gate.measure(gate.methods)
    if update:
        timings = _reference_timings(gate, timings)
        gate.result["timings"] = {k: asdict(t) for k, t in timings.items()}
        atomic_write_json(ref_path, make_reference(timings, setup, machine, gate.method_cfgs, git_state()))
        gate.lines.append(f"reference rewritten: {ref_path}")
        rows = [
            Verdict(n, "new", ratio=t.ratio, frame_ms=t.frame_ms_median, spread=t.spread, note="recorded")
            for n, t in timings.items()
        ]
        gate.lines.append(format_table(rows))
        return gate.finish(EXIT_OK, rows, timings, run_dir)
    gate.result["timings"] = {k: asdict(t) for k, t in timings.items()}
    retried = _retry_unsure(gate, timings, gate.judge(timings, ref))
    verdicts = gate.judge(timings, ref)
    _annotate(verdicts, retried, ref, gate.method_cfgs)
    gate.result.update(
        retried=retried,
        timings={k: asdict(t) for k, t in timings.items()},
        verdicts=[asdict(v) for v in verdicts],
    )
    gate.lines.append(format_table(verdicts))
    bad = [v.method for v in verdicts if v.status == "regression"]
    gate.lines.append(
        f"GATE FAILED: slower than the reference beyond tolerance: {', '.join(bad)}" if bad else "gate passed"
    )
    return gate.finish(exit_status(verdicts), verdicts, timings, run_dir)
