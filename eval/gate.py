"""Latency regression gate: is any selected method slower than the committed reference by more than the tolerance?

Absolute times on a shared CI machine move by tens of percent with the neighbours' load, so the gate never compares
them. It compares **ratios measured in one process**: before every push a block of calibration calls (a fixed
tensor workload) is timed, and each frame's time is divided by the per-call time of the block just before it, so
whatever load slows the method at that moment slows its yardstick too. Each repetition streams every selected video
through every method (the order rotates between repetitions), discarding each stream's first ``warmup_frames``,
and takes a quantile (``gate.quantile``, the median by default) of these per-frame ratios. The gate's
figure is the **median of the k repetition ratios**. A method regresses when its ratio exceeds the reference's by
more than the tolerance *and* the change is larger than ``min_change_ms`` at the current machine speed (a floor for
microsecond methods such as ``identity``, whose relative jitter is large and meaningless).

The reference (``results/reference/<experiment>.json``, written only on request: ``--update-reference``) records
the ratios with the machine and a hash of the measurement set-up (dataset, model, hardware, gate settings,
calibration version). A different set-up hash is reported and not compared; a different machine is reported
beside the comparison (``gate.on_machine_mismatch: fail`` refuses instead). Method configs are deliberately *not*
part of the hash: a change to a method is exactly what the gate judges.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from eval.interface import StreamMethod
from eval.store import atomic_write_json, content_key
from eval.timing import run_stream, warm_up

log = logging.getLogger(__name__)

REFERENCE_SCHEMA = 1
CALIBRATION_VERSION = 2  # bump when the calibration workload changes: old references become incompatible

EXIT_OK, EXIT_REGRESSION, EXIT_NO_REFERENCE = 0, 1, 3

# Settings that change what a ratio means; the rest of ``gate`` (tolerances, repetitions, paths, flags) does not.
SETUP_GATE_KEYS = ("warmup_frames", "calibration_calls", "clock", "statistic", "quantile", "estimator")
ESTIMATORS = ("paired", "separate")


# -- measuring --------------------------------------------------------------------------------------------------
class Calibration:
    """A fixed tensor workload (a 3x3 convolution and matrix products, under 1 ms on one CPU core): the yardstick
    the methods' times are divided by. Runs on the methods' device so it sees the same contention."""

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        g = torch.Generator().manual_seed(1234)
        self.x = torch.rand(1, 16, 64, 64, generator=g).to(self.device)
        self.w = (torch.randn(16, 16, 3, 3, generator=g) / 12).to(self.device)
        self.a = (torch.randn(192, 192, generator=g) / 14).to(self.device)

    def __call__(self) -> float:
        y = torch.nn.functional.conv2d(self.x, self.w, padding=1)
        m = self.a
        for _ in range(6):
            m = m @ self.a
        return float(y.mean() + m[0, 0])  # reading a value synchronises the device


def resolve_clock(name: str, device: str, threads: int) -> str:
    """``auto``: the thread's CPU time when all work runs on this one CPU thread (immune to preemption by other
    processes, the main noise on a shared machine), wall-clock time otherwise (GPU, several threads)."""
    if name == "auto":
        return "thread" if device == "cpu" and threads == 1 else "wall"
    if name not in CLOCKS:
        raise ValueError(f"gate.clock must be auto, {' or '.join(CLOCKS)}; got {name!r}")
    if name == "thread" and (device != "cpu" or threads != 1):
        raise ValueError(
            "gate.clock=thread measures one CPU thread: it needs hardware.device=cpu and "
            "hardware.threads=1 (or use gate.clock=wall)"
        )
    return name


CLOCKS: dict[str, Callable[[], float]] = {
    "wall": time.perf_counter,
    # CPU time of the calling thread: ignores time spent descheduled by other processes. Only meaningful on the
    # CPU with torch.set_num_threads(1) (all work then runs on this thread); never for GPU methods.
    "thread": time.thread_time,
}


@dataclass
class MethodTiming:
    """One method's figures over k repetitions (times in ms)."""

    ratios: list[float]
    frame_ms: list[float]
    calib_ms: list[float]
    calls: int = (
        0  # calibration calls per frame (gate.calibration_calls, or the matched count when that is 0)
    )

    @property
    def ratio(self) -> float:
        return float(np.median(self.ratios))

    @property
    def frame_ms_median(self) -> float:
        return float(np.median(self.frame_ms))

    @property
    def calib_ms_median(self) -> float:
        return float(np.median(self.calib_ms))

    @property
    def spread(self) -> float:
        """Relative half-range of the repetition ratios: how noisy this measurement was."""
        r = np.asarray(self.ratios)
        return float((r.max() - r.min()) / 2 / np.median(r)) if r.size and np.median(r) > 0 else math.nan


def _timed(fn: Callable[[], Any], clock: Callable[[], float]) -> tuple[float, Any]:
    start = clock()
    out = fn()
    return clock() - start, out


def measure(
    methods: dict[str, StreamMethod],
    streams: list[tuple[str, torch.Tensor]],
    *,
    repeats: int = 5,
    warmup_frames: int = 4,
    calibration_calls: int = 1,
    statistic: str = "call",
    quantile: float = 0.5,
    estimator: str = "paired",
    calibrate: Callable[[], Any] | None = None,
    clock: Callable[[], float] = time.perf_counter,
    seed: int = 42,
) -> dict[str, MethodTiming]:
    """Time every method over every ``(prompt, frames)`` stream, ``repeats`` times, interleaved with calibration.

    Interleaving is per frame: before each ``push`` a block of ``calibration_calls`` calibration calls runs, timed
    on its own (and divided by the count), so a burst of load from a neighbour hits the method and its yardstick
    alike. ``calibration_calls=0`` matches the block's duration to the method's per-frame time (measured on one
    untimed stream first): a preemption or a cache flush then lands on either with the same odds, whereas a
    short yardstick beside a long frame escapes the disturbances the frame collects. A repetition's ratio is, with
    ``estimator="paired"`` (the default), the ``quantile`` of the per-frame ratios (each frame's time over the
    calibration block timed just before it: a slow drift of the machine's speed cancels frame by frame), or with
    ``"separate"`` the ``quantile`` of the method's kept per-frame times over the same quantile of the calibration
    times (0.1 reads the undisturbed speed and ignores a preempted tail, but the two quantiles come from different
    moments); the method order rotates between repetitions. ``statistic`` is ``call`` (each push's duration:
    the per-frame compute cost) or ``latency`` (push start → emission, which adds a stream batch's pipeline delay).
    """
    if repeats < 1 or calibration_calls < 0:
        raise ValueError(
            "gate.repeats must be >= 1 and gate.calibration_calls >= 0 (0: matched to the method)"
        )
    if not 0 <= quantile <= 1:
        raise ValueError(f"gate.quantile must be in [0, 1], got {quantile}")
    if statistic not in ("call", "latency"):
        raise ValueError(f"gate.statistic must be 'call' or 'latency', got {statistic!r}")
    if estimator not in ESTIMATORS:
        raise ValueError(f"gate.estimator must be {' or '.join(ESTIMATORS)}, got {estimator!r}")
    calibrate = calibrate or Calibration()
    names = list(methods)
    out = {name: MethodTiming([], [], []) for name in names}
    calls = {name: calibration_calls for name in names}
    for name in names if calibration_calls == 0 else []:
        prompt, frames = streams[0]
        times, calib = _stream_interleaved(methods[name], prompt, frames, calibrate, 1, "call", clock, seed)
        kept_t, kept_c = times[warmup_frames:] or times, calib[warmup_frames:] or calib
        calls[name] = max(1, min(1000, round(float(np.median(kept_t)) / max(float(np.median(kept_c)), 1e-9))))
    for name in names:
        out[name].calls = calls[name]
    for rep in range(repeats):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for name in order:
            method = methods[name]
            kept_method: list[float] = []
            kept_calib: list[float] = []
            for prompt, frames in streams:
                times, calib = _stream_interleaved(
                    method, prompt, frames, calibrate, calls[name], statistic, clock, seed
                )
                kept_method += times[warmup_frames:]
                kept_calib += calib[warmup_frames:]
            if not kept_method:
                raise ValueError(
                    f"gate.warmup_frames={warmup_frames} leaves no timed frame: the streams have "
                    f"{min(f.shape[0] for _, f in streams)} frames"
                )
            frame, cal = float(np.quantile(kept_method, quantile)), float(np.quantile(kept_calib, quantile))
            if estimator == "paired":
                per_frame = np.asarray(kept_method) / np.maximum(np.asarray(kept_calib), 1e-12)
                out[name].ratios.append(float(np.quantile(per_frame, quantile)))
            else:
                out[name].ratios.append(frame / cal)
            out[name].frame_ms.append(frame * 1e3)
            out[name].calib_ms.append(cal * 1e3)
    return out


def _stream_interleaved(
    method: StreamMethod,
    prompt: str,
    frames: torch.Tensor,
    calibrate: Callable[[], Any],
    calls: int,
    statistic: str,
    clock: Callable[[], float],
    seed: int,
) -> tuple[list[float], list[float]]:
    """One stream through ``method`` (the one stream driver, :func:`eval.timing.run_stream`) with a block of
    ``calls`` calibration calls before every push as its ``before_push`` hook; per-frame method times and per-call
    calibration times (block time / calls), in seconds."""
    calib: list[float] = []

    def calibration_block(i: int) -> None:
        start = clock()
        for _ in range(calls):
            calibrate()
        calib.append((clock() - start) / calls)

    method.prepare(prompt, height=int(frames.shape[-2]), width=int(frames.shape[-1]), seed=seed)
    try:
        rec = run_stream(method, frames, clock=clock, before_push=calibration_block)
    finally:
        method.reset()
    times = rec.call_s if statistic == "call" else rec.latency_s
    return times.tolist(), calib


# -- deciding ---------------------------------------------------------------------------------------------------
@dataclass
class Verdict:
    method: str
    status: str  # ok | regression | faster | new | missing
    ratio: float = math.nan
    ref_ratio: float = math.nan
    change: float = math.nan  # relative change of the ratio vs the reference
    change_ms: float = math.nan  # the same change in ms at the current machine speed
    tolerance: float = math.nan
    frame_ms: float = math.nan
    spread: float = math.nan
    note: str = ""


def decide(
    current: dict[str, MethodTiming],
    reference: dict[str, dict],
    *,
    tolerance: float = 0.15,
    tolerances: dict[str, float] | None = None,
    min_change_ms: float = 0.0,
) -> list[Verdict]:
    """Compare measured ratios with reference ratios (``{name: {"ratio": r, ...}}``); pure, no timing."""
    tolerances = tolerances or {}
    out = []
    for name, t in current.items():
        tol = float(tolerances.get(name, tolerance))
        v = Verdict(name, "new", ratio=t.ratio, tolerance=tol, frame_ms=t.frame_ms_median, spread=t.spread)
        ref = reference.get(name)
        if ref is None or not (isinstance(ref.get("ratio"), (int, float)) and ref["ratio"] > 0):
            v.note = "not in the reference (run with --update-reference to add it)"
            out.append(v)
            continue
        v.ref_ratio = float(ref["ratio"])
        v.change = v.ratio / v.ref_ratio - 1
        v.change_ms = (v.ratio - v.ref_ratio) * t.calib_ms_median
        if v.change > tol and v.change_ms > min_change_ms:
            v.status = "regression"
        elif v.change > tol:
            v.status, v.note = "ok", f"slower by {v.change_ms:.3f} ms only (below gate.min_change_ms)"
        elif v.change < -tol:
            v.status, v.note = "faster", "consider --update-reference to lock in the gain"
        else:
            v.status = "ok"
        if math.isfinite(v.spread) and v.spread > tol:
            v.note = (v.note + "; " if v.note else "") + "noisy: repetitions spread more than the tolerance"
        out.append(v)
    for name in reference:
        if name not in current:
            out.append(
                Verdict(
                    name,
                    "missing",
                    ref_ratio=float(reference[name].get("ratio", math.nan)),
                    note="in the reference but not selected in this run",
                )
            )
    return out


def exit_status(verdicts: list[Verdict]) -> int:
    return EXIT_REGRESSION if any(v.status == "regression" for v in verdicts) else EXIT_OK


# -- reference --------------------------------------------------------------------------------------------------
def machine_info(device: str = "cpu") -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "system": platform.system(),
        "arch": platform.machine(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if str(device).startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


MACHINE_KEYS = ("cpu", "cpu_count", "arch", "torch", "torch_threads", "device", "gpu")


def machine_differences(ref: dict, now: dict) -> list[str]:
    return [
        f"{k}: reference {ref.get(k)!r}, now {now.get(k)!r}" for k in MACHINE_KEYS if ref.get(k) != now.get(k)
    ]


def setup_of(cfg: DictConfig | dict) -> dict:
    """The part of the config that defines the measurement (not the methods, not the tolerances)."""
    c = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    gate = c.get("gate") or {}
    return {
        "dataset": c.get("dataset"),
        "model": c.get("model"),
        "hardware": c.get("hardware"),
        "gate": {k: gate.get(k) for k in SETUP_GATE_KEYS},
        "calibration_version": CALIBRATION_VERSION,
    }


def make_reference(
    timings: dict[str, MethodTiming], setup: dict, machine: dict, method_cfgs: dict, git: dict | None = None
) -> dict:
    return {
        "schema": REFERENCE_SCHEMA,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git": git or {},
        "machine": machine,
        "setup_hash": content_key(setup),
        "setup": setup,
        "methods": {
            name: {
                "ratio": t.ratio,
                "frame_ms": t.frame_ms_median,
                "calib_ms": t.calib_ms_median,
                "ratios": t.ratios,
                "calibration_calls": t.calls,
                "pass_ratios": getattr(t, "pass_ratios", [t.ratio]),
                "config_hash": content_key(method_cfgs.get(name)),
            }
            for name, t in timings.items()
        },
    }


def load_reference(path: Path) -> dict | None:
    path = Path(path)
    if not path.is_file():
        return None
    ref = json.loads(path.read_text())
    if ref.get("schema") != REFERENCE_SCHEMA:
        raise ValueError(
            f"{path}: reference schema {ref.get('schema')!r}, this code reads {REFERENCE_SCHEMA}; "
            "regenerate it with --update-reference"
        )
    return ref


def setup_differences(ref_setup: dict, setup: dict, prefix: str = "") -> list[str]:
    """Which set-up keys differ (dotted paths), for a message that says what changed."""
    out = []
    for k in sorted(set(ref_setup) | set(setup), key=str):
        a, b = ref_setup.get(k), setup.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += setup_differences(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: reference {a!r}, now {b!r}")
    return out


# -- presenting -------------------------------------------------------------------------------------------------
def _pct(x: float) -> str:
    return f"{x:+.1%}" if math.isfinite(x) else "–"


def _num(x: float, fmt: str = ".4g") -> str:
    return format(x, fmt) if math.isfinite(x) else "–"


def format_table(verdicts: list[Verdict]) -> str:
    mark = {"ok": "ok", "regression": "REGRESSION", "faster": "faster", "new": "new", "missing": "missing"}
    cols = ["method", "ref ratio", "ratio", "change", "tolerance", "frame ms", "spread", "verdict", "note"]
    rows = [
        [
            v.method,
            _num(v.ref_ratio),
            _num(v.ratio),
            _pct(v.change),
            f"{v.tolerance:.0%}" if math.isfinite(v.tolerance) else "–",
            _num(v.frame_ms, ".3f"),
            f"±{v.spread:.1%}" if math.isfinite(v.spread) else "–",
            mark[v.status],
            v.note,
        ]
        for v in verdicts
    ]
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(cols)]
    line = lambda r: "| " + " | ".join(s.ljust(w) for s, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(cols), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


@dataclass
class GateOutcome:
    code: int
    text: str
    verdicts: list[Verdict] = field(default_factory=list)
    timings: dict[str, MethodTiming] = field(default_factory=dict)


def _ratio_words(g: DictConfig) -> str:
    q = f"q{float(g.get('quantile', 0.5)):g}"
    calls = int(g.calibration_calls)
    block = f"a block of {calls} calibration calls" if calls else "a matched calibration block"
    if str(g.get("estimator", "paired")) == "paired":
        return f"{q} of per-frame (method time / per-call time of {block} just before it)"
    return f"{q} of method per-frame times / {q} of per-call calibration times ({block})"


# -- the gate, from a composed config ---------------------------------------------------------------------------
def run_gate(cfg: DictConfig, run_dir: Path | None = None) -> GateOutcome:
    """Measure the selected methods and compare with (or, with ``gate.update_reference``, rewrite) the reference."""
    from hydra.utils import instantiate

    from eval.provenance import git_state

    g = cfg.gate
    if cfg.hardware.get("threads"):
        torch.set_num_threads(int(cfg.hardware.threads))
    device = str(cfg.hardware.get("device", "cpu"))
    clock_name = resolve_clock(str(g.get("clock", "auto")), device, torch.get_num_threads())
    method_cfgs = {
        str(k): OmegaConf.to_container(v, resolve=True) for k, v in (cfg.get("method") or {}).items()
    }
    if not method_cfgs:
        raise ValueError("the gate has no method to measure: pass e.g. method=[identity,busy]")
    videos = instantiate(cfg.dataset, _convert_="all").videos()
    if not videos:
        raise ValueError("the gate's dataset has no videos")
    streams = [(v.prompt, v.load()) for v in videos]
    methods = {name: instantiate(mc, _convert_="all") for name, mc in method_cfgs.items()}
    for method in methods.values():  # one-off costs (allocation, lazy init) out of every repetition
        prompt, frames = streams[0]
        warm_up(method, frames, max(1, int(g.warmup_frames)), prompt=prompt, seed=int(cfg.seed))
    setup = setup_of(cfg)
    setup["gate"]["clock"] = clock_name
    update = bool(g.get("update_reference", False))
    repeats = int(g.repeats)
    if update:
        repeats = int(g.get("reference_repeats") or repeats)
    machine = machine_info(device)
    log.info(
        "gate: %d method(s) x %d video(s), %d repetitions, clock=%s",
        len(methods),
        len(streams),
        repeats,
        clock_name,
    )

    def measure_some(subset: dict[str, StreamMethod]) -> dict[str, MethodTiming]:
        return measure(
            subset,
            streams,
            repeats=repeats,
            warmup_frames=int(g.warmup_frames),
            calibration_calls=int(g.calibration_calls),
            statistic=str(g.get("statistic", "call")),
            quantile=float(g.get("quantile", 0.5)),
            estimator=str(g.get("estimator", "paired")),
            calibrate=Calibration(device),
            clock=CLOCKS[clock_name],
            seed=int(cfg.seed),
        )

    timings = measure_some(methods)
    if update:
        # The reference's own error shifts every later comparison, so it is the median of several passes, each
        # measured exactly as a gate run measures (same k, so the same estimator).
        passes = [timings] + [
            measure_some(methods) for _ in range(max(0, int(g.get("reference_passes", 1)) - 1))
        ]
        for name in list(timings):
            each = [p[name] for p in passes]
            chosen = sorted(each, key=lambda t: t.ratio)[len(each) // 2]
            chosen.pass_ratios = [t.ratio for t in each]
            timings[name] = chosen
    ref_path = Path(str(g.reference))
    lines = [
        f"Latency gate — reference {ref_path}",
        f"machine: {machine['cpu']} ({machine['cpu_count']} CPUs, "
        f"torch {machine['torch']}, {machine['torch_threads']} thread(s), {device}); clock={clock_name}, "
        f"median of {repeats} repetitions, ratio = {_ratio_words(g)}",
    ]
    result: dict[str, Any] = {
        "setup_hash": content_key(setup),
        "machine": machine,
        "timings": {k: asdict(t) for k, t in timings.items()},
    }
    if update:
        ref = make_reference(timings, setup, machine, method_cfgs, git_state())
        atomic_write_json(ref_path, ref)
        lines.append(f"reference rewritten: {ref_path}")
        rows = [
            Verdict(n, "new", ratio=t.ratio, frame_ms=t.frame_ms_median, spread=t.spread, note="recorded")
            for n, t in timings.items()
        ]
        lines.append(format_table(rows))
        return _finish(GateOutcome(EXIT_OK, "\n".join(lines), rows, timings), run_dir, result)
    ref = load_reference(ref_path)
    if ref is None:
        lines.append(
            f"NO REFERENCE at {ref_path}: create it with `python run_eval.py "
            f"experiment={cfg.get('experiment_name', 'ci_latency')} --update-reference` and commit it"
        )
        return _finish(GateOutcome(EXIT_NO_REFERENCE, "\n".join(lines), [], timings), run_dir, result)
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
        return _finish(GateOutcome(EXIT_NO_REFERENCE, "\n".join(lines), [], timings), run_dir, result)
    machine_diffs = machine_differences(ref.get("machine", {}), machine)
    if machine_diffs:
        lines.append(
            "MACHINE DIFFERS from the reference's (ratios transfer between machines only approximately):"
        )
        lines += [f"  - {d}" for d in machine_diffs]
        if str(g.get("on_machine_mismatch", "warn")) == "fail":
            lines.append("not compared (gate.on_machine_mismatch=fail)")
            return _finish(GateOutcome(EXIT_NO_REFERENCE, "\n".join(lines), [], timings), run_dir, result)

    def judge(t: dict) -> list[Verdict]:
        return decide(
            t,
            ref.get("methods", {}),
            tolerance=float(g.tolerance),
            tolerances=dict(g.get("tolerances") or {}),
            min_change_ms=float(g.get("min_change_ms", 0)),
        )

    verdicts = judge(timings)
    retried: dict[str, list[float]] = {}
    tol_of = lambda name: float((g.get("tolerances") or {}).get(name, g.tolerance))  # noqa: E731
    margin = float(g.get("retry_margin", 0.05))
    # Sequential measurement: a result that fails, or passes by less than retry_margin, is not trusted to one
    # measurement. Those methods are measured `retries` more times and judged on the median of all repetitions,
    # so a burst of someone else's load cannot fail the gate alone, and a borderline pass gets more data.
    unsure = {
        v.method: methods[v.method]
        for v in verdicts
        if v.status in ("ok", "regression")
        and math.isfinite(v.change)
        and v.change > tol_of(v.method) - margin
        and v.change_ms > float(g.get("min_change_ms", 0))
    }
    for _ in range(int(g.get("retries", 0)) if unsure else 0):
        log.info("gate: measuring %s again", ", ".join(unsure))
        again = measure_some(unsure)
        for name, t in again.items():
            retried.setdefault(name, [timings[name].ratio]).append(t.ratio)
            old = timings[name]
            timings[name] = MethodTiming(
                old.ratios + t.ratios, old.frame_ms + t.frame_ms, old.calib_ms + t.calib_ms, old.calls
            )
    verdicts = judge(timings)
    for v in verdicts:
        if v.method in retried:
            v.note = (
                (v.note + "; " if v.note else "") + f"close or failing: measured {len(retried[v.method])}x "
                f"(ratios {', '.join(f'{r:.4g}' for r in retried[v.method])}), median of all repetitions"
            )
    result["retried"] = retried
    result["timings"] = {k: asdict(t) for k, t in timings.items()}
    for v in verdicts:
        r = ref.get("methods", {}).get(v.method, {})
        if v.status != "missing" and r and r.get("config_hash") != content_key(method_cfgs.get(v.method)):
            v.note = (v.note + "; " if v.note else "") + "method config changed since the reference"
    lines.append(format_table(verdicts))
    code = exit_status(verdicts)
    bad = [v.method for v in verdicts if v.status == "regression"]
    lines.append(
        f"GATE FAILED: slower than the reference beyond tolerance: {', '.join(bad)}" if bad else "gate passed"
    )
    result["verdicts"] = [asdict(v) for v in verdicts]
    return _finish(GateOutcome(code, "\n".join(lines), verdicts, timings), run_dir, result)


def _finish(outcome: GateOutcome, run_dir: Path | None, result: dict) -> GateOutcome:
    if run_dir is not None:
        run_dir = Path(run_dir)
        atomic_write_json(run_dir / "gate.json", {**result, "exit_code": outcome.code})
        (run_dir / "gate.md").write_text(outcome.text + "\n")
    return outcome
