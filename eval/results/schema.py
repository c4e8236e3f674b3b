"""The run folder's schema: its files and their columns, the metric descriptors (direction, unit, kind,
settings), the settings that produced the numbers, published figures, and :class:`RunResults` (a loaded run, or
several merged). Written by :mod:`eval.results.write`, read and merged by :mod:`eval.results.load`."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2

# -- files and columns --------------------------------------------------------------------------------------------
RUN = "run.json"
PROVENANCE = "provenance.json"
METRICS = "metrics.json"
REFERENCES = "reference.json"
NOTES = "notes.json"
FRAMES = "frames.parquet"
VIDEOS = "videos.parquet"
UNITS = "units.parquet"
STRIPS = "strips"
OUTPUT_VIDEOS = "videos"

FRAME_COLUMNS = ["method", "video", "frame", "metric", "value"]
VIDEO_COLUMNS = ["method", "video", "metric", "value"]
UNIT_COLUMNS = ["method", "video", "key", "status", "error", "n_frames", "seconds", "notes"]
UNIT_STATUSES = ("ok", "cached", "rescored", "error")


class ResultsError(ValueError):
    """A folder is not a run folder, is of an unknown schema, or runs cannot be merged without mixing settings."""


# -- metric descriptors ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MetricDescriptor:
    """What a number is: its direction (↑/↓, bolding), unit, kind and the settings that produced it."""

    name: str
    display_name: str
    unit: str = ""
    higher_is_better: bool | None = None
    kind: str = "quality"  # quality | system | check
    comparable: bool = True  # False: values cannot be compared with published numbers (random weights ...)
    notes: tuple[str, ...] = ()
    config: dict = field(
        default_factory=dict
    )  # settings that change the value (flow backend, CLIP model ...)
    input_side: bool = False  # depends on the input video only (same for every method): never compared

    @property
    def header(self) -> str:
        arrow = {True: " ↑", False: " ↓"}.get(self.higher_is_better, "")
        unit = f" ({self.unit})" if self.unit else ""
        return f"{self.display_name}{unit}{arrow}"

    @property
    def note(self) -> str | None:
        return f"{self.display_name}: {'; '.join(self.notes)}" if self.notes else None

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("name")
        d["notes"] = list(self.notes)
        if self.note:
            d["note"] = self.note
        return d

    @classmethod
    def from_json(cls, name: str, d: Mapping) -> MetricDescriptor:
        hib = d.get("higher_is_better")
        return cls(
            name=name,
            display_name=d.get("display_name") or name,
            unit=d.get("unit") or "",
            higher_is_better=None if hib is None else bool(hib),
            kind=d.get("kind", "quality"),
            comparable=bool(d.get("comparable", True)),
            notes=tuple(d.get("notes") or ()),
            config=dict(d.get("config") or {}),
            input_side=bool(d.get("input_side", False)),
        )


def _system(
    name: str, display: str, unit: str, hib: bool | None, kind: str = "system", input_side: bool = False
) -> MetricDescriptor:
    return MetricDescriptor(name, display, unit, hib, kind, input_side=input_side)


def _table(*descs: MetricDescriptor) -> dict[str, MetricDescriptor]:
    return {d.name: d for d in descs}


#: per-video system figures (eval/timing.py computes them)
SYSTEM_METRICS = _table(
    _system("latency_p50_ms", "E2E latency p50", "ms", False),
    _system("latency_p95_ms", "E2E latency p95", "ms", False),
    _system("latency_p99_ms", "E2E latency p99", "ms", False),
    _system("first_frame_latency_ms", "First-frame latency", "ms", False),
    _system("call_p50_ms", "Per-call time p50", "ms", False),
    _system("fps", "Throughput", "FPS", True),
    MetricDescriptor(
        "steady_fps",
        "Steady-state FPS",
        "FPS",
        True,
        "system",
        notes=(
            "pushes after the method's steady_state_frames, divided by their summed call time (eval/timing.py "
            "steady_fps); empty when a video is shorter than the method's steady state",
        ),
    ),
    MetricDescriptor(
        "peak_mem_mb",
        "Peak memory",
        "MiB",
        False,
        "system",
        notes=(
            "per unit (eval/timing.py MemoryProbe): on GPU the CUDA peak allocated, statistics reset at the start "
            "of each unit; on CPU the growth of the process's resident high-water mark (VmHWM, reset at the start "
            "of the unit) over its RSS then",
        ),
    ),
)
#: per-frame system rows
FRAME_SYSTEM_METRICS = _table(
    _system("latency_ms", "E2E latency", "ms", False),
    _system("call_ms", "Per-call time", "ms", False),
)
#: live mode (runner.mode=live) adds these per-video and per-frame figures
LIVE_METRICS = _table(
    _system("source_fps", "Source rate", "FPS", None, input_side=True),
    _system("output_fps", "Achieved output rate", "FPS", True),
    _system("drop_ratio", "Dropped frames", "fraction", False),
    _system("lag_p50_ms", "Lag p50", "ms", False),
    _system("lag_p95_ms", "Lag p95", "ms", False),
)
FRAME_LIVE_METRICS = _table(
    _system("lag_ms", "Lag (arrival to emission)", "ms", False),
    _system("dropped", "Dropped", "", False),
)
#: per-video checks the runner adds to every unit
CHECK_METRICS = _table(
    _system("skipped_ratio", "Skipped by similarity filter", "", None),
    _system("nonfinite_frames", "Non-finite frames", "", False, kind="check"),
    _system("out_of_range_frames", "Frames outside [0, 1]", "", False, kind="check"),
)
LIVE_COLUMNS = tuple(LIVE_METRICS)


def descriptor_from_metric(name: str, metric: Any, metric_cfg: Mapping | None = None) -> MetricDescriptor:
    """A quality metric's descriptor from its own ``describe()`` (the metric declares direction and settings once);
    local weight files named in its config are identified by content hash."""
    d = dict(metric.describe())
    config = dict(d.get("config") or {})
    for key, value in (metric_cfg or {}).items():
        if str(key).endswith("weights") and value:
            config[f"{key}_sha256"] = weights_hash(value)
    return MetricDescriptor(
        name=name,
        display_name=d.get("display_name") or name,
        unit=d.get("unit") or "",
        higher_is_better=d.get("higher_is_better"),
        kind="quality",
        comparable=bool(d.get("comparable", True)),
        notes=tuple(d.get("notes") or ()),
        config=config,
        input_side=bool(d.get("input_side", config.get("frames") == "source")),
    )


def describe_metrics(
    metrics: Mapping[str, Any],
    metrics_cfg: Mapping | None = None,
    *,
    known: Mapping[str, MetricDescriptor] | None = None,
    system: bool = True,
) -> dict[str, MetricDescriptor]:
    """Every metric a run can write: its quality metrics (built ``metrics``, and/or descriptors ``known``
    already, e.g. as cached units recorded them), then (``system``) the system figures and checks."""
    metrics_cfg = metrics_cfg or {}
    desc = dict(known or {})
    desc.update({name: descriptor_from_metric(name, m, metrics_cfg.get(name)) for name, m in metrics.items()})
    if system:
        for table in (SYSTEM_METRICS, FRAME_SYSTEM_METRICS, LIVE_METRICS, FRAME_LIVE_METRICS, CHECK_METRICS):
            desc.update(table)
    return desc


# -- settings -----------------------------------------------------------------------------------------------------
def weights_hash(path: str | Path) -> str | None:
    """sha256 (first 16 hex digits) of a weights file, or of a folder's files (relative names + contents)."""
    p = Path(str(path)).expanduser()
    h = hashlib.sha256()
    if p.is_file():
        files = [p]
    elif p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file())
    else:
        return None
    for f in files:
        if p.is_dir():
            h.update(str(f.relative_to(p)).encode())
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def run_settings(config: Mapping) -> dict:
    """What produced every number of a run besides the metric settings: model size, weights (path + hash), dtype,
    device, seed, runner mode."""
    model = config.get("model") or {}
    hardware = config.get("hardware") or {}
    runner = config.get("runner") or {}
    weights = {k: v for k, v in (model.get("weights") or {}).items() if v}
    return {
        "model": model.get("size"),
        "weights": {k: {"path": str(v), "sha256": weights_hash(v)} for k, v in weights.items()},
        "dtype": hardware.get("dtype"),
        "device": hardware.get("device"),
        "seed": config.get("seed"),
        "mode": runner.get("mode", "offline"),
    }


# -- published figures --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Reference:
    """A figure published elsewhere: shown beside ours, never invented. ``settings`` are what it was computed with
    (e.g. ``{variant: l1, flow: raft, gpu: RTX 4090}``); the report compares it with ours only when they are stated
    and match (eval/report/published.py ``not_compared``), else greys it out with the reason."""

    method: str
    metric: str
    value: float
    source: str
    settings: dict = field(default_factory=dict)

    @classmethod
    def from_config(cls, entry: Mapping) -> Reference:
        missing = {"method", "metric", "value", "source"} - set(entry)
        if missing:
            raise ResultsError(
                f"report.reference entry {dict(entry)} lacks {sorted(missing)}: every reported figure cites a source"
            )
        unknown = set(entry) - {"method", "metric", "value", "source", "settings"}
        if unknown:
            raise ResultsError(
                f"report.reference entry {dict(entry)} has unknown keys {sorted(unknown)} "
                "(allowed: method, metric, value, source, settings)"
            )
        try:
            value = float(entry["value"])
        except (TypeError, ValueError):
            raise ResultsError(f"report.reference entry {dict(entry)}: value must be a number") from None
        if not str(entry["source"]).strip():
            raise ResultsError(f"report.reference entry {dict(entry)}: source is empty")
        settings = entry.get("settings") or {}
        if not isinstance(settings, Mapping):
            raise ResultsError(f"report.reference entry {dict(entry)}: settings must be a mapping")
        return cls(str(entry["method"]), str(entry["metric"]), value, str(entry["source"]), dict(settings))

    def to_json(self) -> dict:
        d = asdict(self)
        if not self.settings:
            d.pop("settings")
        return d


# -- a loaded run (or several merged) -----------------------------------------------------------------------------
@dataclass
class RunResults:
    frames: pd.DataFrame
    videos: pd.DataFrame
    units: pd.DataFrame
    metrics: dict[str, MetricDescriptor]
    runs: list[str] = field(default_factory=list)
    provenance: dict = field(default_factory=dict)  # run name -> provenance.json
    settings: dict = field(default_factory=dict)  # run name -> run settings (run.json)
    references: list[Reference] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    strips: list[Path] = field(default_factory=list)
    labels: dict = field(default_factory=dict)  # method label -> the settings that set it apart (merges)
    schema_version: int = SCHEMA_VERSION
    incomplete: dict = field(default_factory=dict)  # run name -> how it ended, for runs marked INCOMPLETE

    @property
    def methods(self) -> list[str]:
        """Methods in run order (units first, so a method whose every unit failed is still listed)."""
        return list(dict.fromkeys([*self.units.get("method", []), *self.videos.get("method", [])]))

    def method_settings(self, method: str) -> dict:
        """The resolved config of ``method`` in the (first) run that has it."""
        for prov in self.provenance.values():
            cfg = ((prov or {}).get("config") or {}).get("method") or {}
            if method in cfg:
                return cfg[method]
        return {}

    def all_notes(self) -> list[str]:
        return sorted({d.note for d in self.metrics.values() if d.note} | set(self.notes))
