"""Writing a run folder: the header known before any unit runs (provenance, run settings, published figures,
notes), the tables and strips, and where output videos go."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from eval.results.schema import (
    FRAME_COLUMNS,
    FRAMES,
    METRICS,
    NOTES,
    OUTPUT_VIDEOS,
    PROVENANCE,
    REFERENCES,
    RUN,
    SCHEMA_VERSION,
    STRIPS,
    UNIT_COLUMNS,
    UNITS,
    VIDEO_COLUMNS,
    VIDEOS,
    MetricDescriptor,
    Reference,
    ResultsError,
    run_settings,
)
from eval.store import atomic_write_json, atomic_write_parquet


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
