"""The run folder's schema, with one owner: its files, their columns, the metric descriptors, the settings that
produced the numbers, and the only code that writes, loads and merges run folders (as lm-evaluation-harness keeps
its results schema in one module). The runner and the CLI write through here, the report and the gate read through
here; nothing else opens a run folder's files by name.

A run folder (schema version ``SCHEMA_VERSION``)::

    run.json           schema version + the run's settings (model size, weights hashes, dtype, device)
    provenance.json    resolved config, git, packages, device, seed, time
    metrics.json       name -> MetricDescriptor (direction, unit, kind, settings, notes)
    reference.json     figures published elsewhere, each with its source (and the settings it was computed with)
    notes.json         caveats printed above the tables
    frames.parquet     FRAME_COLUMNS   one row per (method, video, frame, metric)
    videos.parquet     VIDEO_COLUMNS   one row per (method, video, metric)
    units.parquet      UNIT_COLUMNS    one row per (method, video): status and error reason
    strips/<method>/<video>.png

Folders written before ``run.json`` existed (version 1) load as version 1: same tables, no run settings.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from eval.store import INCOMPLETE, RUN_STATUS, atomic_write_json, atomic_write_parquet

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
    and match (eval/report/sections.py ``not_compared``), else greys it out with the reason."""

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


def is_run_folder(path: Path) -> bool:
    return (Path(path) / VIDEOS).is_file()


def write_header(
    run_dir: Path,
    *,
    provenance: dict,
    references: Iterable[Reference | Mapping] = (),
    notes: Iterable[str] = (),
) -> None:
    """What is known before any unit runs: provenance, run settings, published figures, notes."""
    run_dir = Path(run_dir)
    refs = [r if isinstance(r, Reference) else Reference.from_config(r) for r in references]
    atomic_write_json(run_dir / PROVENANCE, provenance)
    atomic_write_json(
        run_dir / RUN,
        {"schema_version": SCHEMA_VERSION, "settings": run_settings(provenance.get("config") or {})},
    )
    atomic_write_json(run_dir / REFERENCES, [r.to_json() for r in refs])
    atomic_write_json(run_dir / NOTES, list(notes))


def write_tables(
    run_dir: Path,
    *,
    units: pd.DataFrame,
    frames: pd.DataFrame,
    videos: pd.DataFrame,
    metrics: Mapping[str, MetricDescriptor],
    strips: Mapping[tuple[str, str], bytes] | None = None,
) -> None:
    """The run's tables (each written atomically) and its metric descriptors."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_parquet(run_dir / UNITS, _conform(units, UNIT_COLUMNS, "units"))
    atomic_write_parquet(run_dir / FRAMES, _conform(frames, FRAME_COLUMNS, "frames"))
    atomic_write_parquet(run_dir / VIDEOS, _conform(videos, VIDEO_COLUMNS, "videos"))
    atomic_write_json(run_dir / METRICS, {name: d.to_json() for name, d in metrics.items()})
    if not (run_dir / RUN).is_file():
        atomic_write_json(run_dir / RUN, {"schema_version": SCHEMA_VERSION, "settings": {}})
    for (method, video), png in (strips or {}).items():
        dst = strip_path(run_dir, method, video)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(png)


def strip_path(run_dir: Path, method: str, video: str) -> Path:
    return Path(run_dir) / STRIPS / method / f"{video}.png"


def output_video_path(run_dir: Path, method: str, video: str) -> Path:
    return Path(run_dir) / OUTPUT_VIDEOS / method / f"{video}.mp4"


def _conform(df: pd.DataFrame, columns: list[str], what: str) -> pd.DataFrame:
    if df is None or (df.empty and not len(df.columns)):
        return pd.DataFrame(columns=columns)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ResultsError(f"{what} table lacks columns {missing} (schema: {columns})")
    return df[columns]


def _read_json(path: Path, default: Any) -> Any:
    return json.loads(path.read_text()) if path.is_file() else default


def how_it_ended(run_dir: Path) -> str | None:
    """For a folder marked ``INCOMPLETE`` (eval/store.py claim_run_dir), what its ``status.json`` says about how the
    run ended (interrupted by a signal, out of disk, crashed, or killed: "running" with its process gone); None for
    a run that finished."""
    d = Path(run_dir)
    if not (d / INCOMPLETE).exists() and not (d / RUN_STATUS).exists():
        return None
    try:
        st = json.loads((d / RUN_STATUS).read_text())
    except (OSError, ValueError):
        st = {}
    status = st.get("status")
    if status == "complete" and not (d / INCOMPLETE).exists():
        return None
    if status == "running":
        return f"status.json says running (pid {st.get('pid')} on {st.get('host')}): {_process_state(st)}"
    detail = st.get("signal") or st.get("error")
    return f"status.json says {status}" + (f" ({detail})" if detail else "") if status else "no status.json"


def _process_state(st: dict) -> str:
    import os
    import socket

    pid = st.get("pid")
    if st.get("host") != socket.gethostname() or not isinstance(pid, int):
        return "killed, or still running on that host"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "that process is gone: the run was killed"
    except PermissionError:
        pass
    return "that process is alive: the run may still be running"


def _not_a_result_folder(d: Path) -> ResultsError:
    ended = how_it_ended(d)
    if ended:
        return ResultsError(
            f"{d} is a run that did not finish and wrote no tables ({ended}); run the same command again to resume "
            "it (its finished units are reused), then report it"
        )
    return ResultsError(f"{d} is not a result folder (no {VIDEOS}); pass results/<experiment>/<run>")


def load_run(run_dir: Path) -> RunResults:
    d = Path(run_dir)
    if not is_run_folder(d):
        raise _not_a_result_folder(d)
    head = _read_json(d / RUN, {"schema_version": 1, "settings": {}})
    version = int(head.get("schema_version", 1))
    if version > SCHEMA_VERSION:
        raise ResultsError(
            f"{d} was written with results schema {version}; this code reads up to {SCHEMA_VERSION} (update it)"
        )
    if not isinstance(_read_json(d / PROVENANCE, {}).get("config"), dict):
        raise ResultsError(
            f"{d} has no {PROVENANCE} with the run's config: the settings its numbers were computed with are "
            "unknown, so its rows cannot be told apart from (or merged with) other runs'; restore the file from "
            "the run, or re-run the command that produced it (its units are reused)"
        )
    ended = how_it_ended(d)
    if ended:
        log.warning(
            "%s is marked INCOMPLETE (%s): its tables may lack units (resume the run to complete it)",
            d,
            ended,
        )
    name = d.name
    prov = _read_json(d / PROVENANCE, {})
    tables = {}
    for file, columns in ((FRAMES, FRAME_COLUMNS), (VIDEOS, VIDEO_COLUMNS), (UNITS, UNIT_COLUMNS)):
        df = pd.read_parquet(d / file) if (d / file).is_file() else pd.DataFrame(columns=columns)
        df["run"] = name
        tables[file] = df
    return RunResults(
        frames=tables[FRAMES],
        videos=tables[VIDEOS],
        units=tables[UNITS],
        metrics={k: MetricDescriptor.from_json(k, v) for k, v in _read_json(d / METRICS, {}).items()},
        runs=[name],
        provenance={name: prov},
        # version 1 folders have no run.json: the same settings, derived from their provenance
        settings={name: head.get("settings") or run_settings(prov.get("config") or {})},
        references=[Reference.from_config(r) for r in _read_json(d / REFERENCES, [])],
        notes=list(_read_json(d / NOTES, [])),
        strips=sorted((d / STRIPS).glob("*/*.png")),
        schema_version=version,
        incomplete={name: ended} if ended else {},
    )


def expand_run_dirs(paths: Iterable[Path], unfinished: list[str] | None = None) -> list[Path]:
    """Run folders from the paths a user passes: a run folder as is; a multirun (sweep) folder as its job folders;
    Hydra's own files beside the job folders (``multirun.yaml``, ``.submitit``) skipped, so a shell glob such as
    ``results/default/multirun_*/*`` works as written. A job folder that did not finish and wrote no tables is
    left out with a warning, and said in ``unfinished`` (the report's header names it)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if is_run_folder(p):
            out.append(p)
        elif p.is_file() or p.name.startswith(".") or (p / "summary.md").is_file():
            log.info("skipping %s (not a result folder)", p)  # a file, hidden, or a merged report
        elif p.is_dir() and any(is_run_folder(c) for c in p.iterdir()):
            out += sorted((c for c in p.iterdir() if is_run_folder(c)), key=lambda c: (len(c.name), c.name))
            for c in sorted(p.iterdir()):
                if c.is_dir() and not is_run_folder(c) and (ended := how_it_ended(c)):
                    log.warning(
                        "leaving out %s: a job that did not finish and wrote no tables (%s)", c, ended
                    )
                    if unfinished is not None:
                        unfinished.append(f"{c.name}: did not finish and wrote no tables ({ended})")
        else:
            raise _not_a_result_folder(p)
    if not out:
        raise ResultsError(f"no result folder among {[str(p) for p in paths]}")
    return out


def load_runs(paths: Iterable[Path]) -> RunResults:
    """Load and merge run folders (runs, dataset shards, sweep jobs); see :func:`merge_runs`. Sweep jobs that
    wrote no tables are named in ``incomplete``."""
    unfinished: list[str] = []
    run = merge_runs([load_run(p) for p in expand_run_dirs(paths, unfinished)])
    for line in unfinished:
        name, _, why = line.partition(": ")
        run.incomplete.setdefault(name, why)
    return run


# -- merging ------------------------------------------------------------------------------------------------------
def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, Mapping):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def _short(v: Any) -> str:
    s = json.dumps(v, default=str) if not isinstance(v, str) else v
    return s if len(s) <= 40 else s[:37] + "..."


def _method_identity(run: RunResults, method: str) -> dict:
    """The settings that make a method's rows comparable: its resolved config, the run's mode, seed, device, dtype."""
    s = next(iter(run.settings.values()), {}) or {}
    return {
        "method": run.method_settings(method),
        "run": {k: s.get(k) for k in ("mode", "seed", "device", "dtype")},
    }


def merge_runs(runs: list[RunResults]) -> RunResults:
    """Combine runs into one table without mixing settings.

    * Shards and repeated runs of the same settings concatenate; a (method, video) present in several runs keeps the
      last run's rows.
    * A method run with different settings in different runs (a sweep's ``live2diff`` at two ``t_index_list``) is
      kept apart: each variant gets a label naming what differs, e.g. ``live2diff[t_index_list=[30, 40]]``.
    * A metric computed with different settings (flow backend, CLIP weights ...) cannot share a column: the merge
      refuses and says which metric and setting differ.
    """
    if not runs:
        raise ResultsError("nothing to merge")
    if len(runs) == 1:
        return runs[0]
    metrics: dict[str, MetricDescriptor] = {}
    owner: dict[str, str] = {}
    for run in runs:
        for name, d in run.metrics.items():
            if name in metrics and metrics[name].config != d.config:
                a, b = _flatten(metrics[name].config), _flatten(d.config)
                diff = {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}
                raise ResultsError(
                    f"cannot merge: metric {name!r} was computed with different settings in run {owner[name]!r} "
                    f"and run {run.runs[0]!r} ({'; '.join(f'{k}: {x!r} vs {y!r}' for k, (x, y) in diff.items())}); "
                    "report these runs separately"
                )
            metrics.setdefault(name, d)
            owner.setdefault(name, run.runs[0])

    # method variants: the same name with different settings gets a label per distinct setting
    identities: dict[str, list[dict]] = {}
    for run in runs:
        for m in run.methods:
            ident = _method_identity(run, m)
            if ident not in identities.setdefault(m, []):
                identities[m].append(ident)
    labels: dict[str, dict] = {}
    relabel: list[dict[str, str]] = []
    for run in runs:
        mapping = {}
        for m in run.methods:
            variants = identities[m]
            if len(variants) == 1:
                mapping[m] = m
                continue
            flat = [_flatten(v) for v in variants]
            keys = sorted({k for f in flat for k in f if any(g.get(k) != f.get(k) for g in flat)})
            mine = _flatten(_method_identity(run, m))
            shown = {k.split(".", 1)[1]: mine.get(k) for k in keys}
            label = f"{m}[{', '.join(f'{k}={_short(v)}' for k, v in shown.items())}]"
            mapping[m] = label
            labels[label] = shown
        relabel.append(mapping)

    def cat(attr: str, keys: list[str]) -> pd.DataFrame:
        parts = []
        for run, mapping in zip(runs, relabel):
            df = getattr(run, attr).copy()
            if not df.empty:
                df["method"] = df["method"].map(lambda m, mp=mapping: mp.get(m, m))
            parts.append(df)
        df = pd.concat([p for p in parts if len(p.columns)], ignore_index=True)
        if df.empty:
            return df
        dup = df.duplicated(subset=keys, keep="last")
        if dup.any():
            log.warning(
                "%d %s rows repeated across result dirs; keeping the last dir's", int(dup.sum()), attr
            )
        return df[~dup].reset_index(drop=True)

    references: list[Reference] = []
    notes: list[str] = []
    for run in runs:
        references += [r for r in run.references if r not in references]
        notes += [n for n in run.notes if n not in notes]
    return RunResults(
        frames=cat("frames", ["method", "video", "frame", "metric"]),
        videos=cat("videos", ["method", "video", "metric"]),
        units=cat("units", ["method", "video"]),
        metrics=metrics,
        runs=[n for r in runs for n in r.runs],
        provenance={k: v for r in runs for k, v in r.provenance.items()},
        settings={k: v for r in runs for k, v in r.settings.items()},
        references=references,
        notes=notes,
        strips=[p for r in runs for p in r.strips],
        labels=labels,
        schema_version=min(r.schema_version for r in runs),
        incomplete={k: v for r in runs for k, v in r.incomplete.items()},
    )


__all__ = [
    "CHECK_METRICS",
    "FRAME_COLUMNS",
    "FRAME_SYSTEM_METRICS",
    "LIVE_METRICS",
    "MetricDescriptor",
    "Reference",
    "ResultsError",
    "RunResults",
    "SCHEMA_VERSION",
    "SYSTEM_METRICS",
    "UNIT_COLUMNS",
    "VIDEO_COLUMNS",
    "describe_metrics",
    "expand_run_dirs",
    "load_run",
    "load_runs",
    "merge_runs",
    "run_settings",
    "write_header",
    "write_tables",
]
