"""The run folder's schema, with one owner: its files, their columns, the metric descriptors, the settings that
produced the numbers, and the only code that writes, loads and merges run folders (as lm-evaluation-harness keeps
its results schema in one module). The runner and the CLI write through here, the report and the gate read through
here; nothing else opens a run folder's files by name.

Modules: :mod:`.schema` (files, columns, metric descriptors, settings, :class:`RunResults`), :mod:`.write`
(:func:`write_header`, :func:`write_tables`), :mod:`.load` (:func:`load_run`, :func:`load_runs`,
:func:`merge_runs`); everything is importable from ``eval.results`` itself.

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

from eval.results.load import (
    expand_run_dirs,
    how_it_ended,
    is_run_folder,
    load_run,
    load_runs,
    merge_runs,
)
from eval.results.schema import (
    CHECK_METRICS,
    FRAME_COLUMNS,
    FRAME_LIVE_METRICS,
    FRAME_SYSTEM_METRICS,
    FRAMES,
    LIVE_COLUMNS,
    LIVE_METRICS,
    METRICS,
    NOTES,
    OUTPUT_VIDEOS,
    PROVENANCE,
    REFERENCES,
    RUN,
    SCHEMA_VERSION,
    STRIPS,
    SYSTEM_METRICS,
    UNIT_COLUMNS,
    UNIT_STATUSES,
    UNITS,
    VIDEO_COLUMNS,
    VIDEOS,
    MetricDescriptor,
    Reference,
    ResultsError,
    RunResults,
    describe_metrics,
    descriptor_from_metric,
    run_settings,
    weights_hash,
)
from eval.results.write import (
    output_video_path,
    strip_path,
    write_header,
    write_tables,
)

__all__ = [
    "CHECK_METRICS",
    "FRAMES",
    "FRAME_COLUMNS",
    "FRAME_LIVE_METRICS",
    "FRAME_SYSTEM_METRICS",
    "LIVE_COLUMNS",
    "LIVE_METRICS",
    "METRICS",
    "MetricDescriptor",
    "NOTES",
    "OUTPUT_VIDEOS",
    "PROVENANCE",
    "REFERENCES",
    "RUN",
    "Reference",
    "ResultsError",
    "RunResults",
    "SCHEMA_VERSION",
    "STRIPS",
    "SYSTEM_METRICS",
    "UNITS",
    "UNIT_COLUMNS",
    "UNIT_STATUSES",
    "VIDEOS",
    "VIDEO_COLUMNS",
    "describe_metrics",
    "descriptor_from_metric",
    "expand_run_dirs",
    "how_it_ended",
    "is_run_folder",
    "load_run",
    "load_runs",
    "merge_runs",
    "output_video_path",
    "run_settings",
    "strip_path",
    "weights_hash",
    "write_header",
    "write_tables",
]
