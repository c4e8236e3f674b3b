"""Reading run folders: one run (:func:`load_run`), the folders a path stands for (:func:`expand_run_dirs`), and
several merged into one :class:`~eval.results.schema.RunResults` (:func:`merge_runs`: a merge never mixes
settings)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from eval.results.schema import (
    FRAME_COLUMNS,
    FRAMES,
    METRICS,
    NOTES,
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
    RunResults,
    run_settings,
)
from eval.store import INCOMPLETE, RUN_STATUS

log = logging.getLogger(__name__)


def is_run_folder(path: Path) -> bool:
    return (Path(path) / VIDEOS).is_file()


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
