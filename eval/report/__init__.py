"""Tables, plots and the report — functions of stored results only, so a report can be rebuilt (or several runs,
shards or a sweep merged) without re-running anything::

    python -m eval.report RESULT_DIR [RESULT_DIR ...] [--out DIR] [--compare-to identity]

``RESULT_DIR`` is a run folder or a multirun folder (its job folders are merged). Writes ``summary.md``,
``report.html`` (self-contained, images inlined), ``per_method.csv``, ``per_video.csv``, ``paired.csv`` and PNG plots
into ``--out``; without it, one run folder's report is rebuilt in that folder, and the merged report of several goes
to a new folder ``merged_<time>`` beside the first (never over a run's own report).

Layout: ``stats.py`` (t intervals, sign-flip tests, Holm), ``blocks.py`` (the data a section is made of: cells,
tables, images, text), ``context.py`` (the merged results and what every section derives from them),
``sections.py`` (each section built once, as data; ``published.py``: the published-figures section),
``render.py`` (one markdown and one HTML renderer), ``plots.py``. The run folder is read through ``eval.results``.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterable
from pathlib import Path

from eval import results
from eval.report import render
from eval.report.context import Context
from eval.report.defaults import COMPARE_TO, REFERENCE_METHODS
from eval.report.sections import build_sections

log = logging.getLogger(__name__)


def build_report(
    dirs: list[Path],
    out: Path,
    compare_to: str | None = COMPARE_TO,
    seed: int = 0,
    reference_methods: Iterable[str] = REFERENCE_METHODS,
) -> Path:
    """Write the report for the results in ``dirs`` into ``out``; returns the path of ``summary.md``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    run = results.load_runs([Path(d) for d in dirs])
    ctx = Context(run, out, compare_to, frozenset(reference_methods), seed)
    ctx.table.to_csv(out / "per_method.csv", index=False)
    ctx.wide.to_csv(out / "per_video.csv")
    sections, paired = build_sections(ctx)
    if not paired.empty:
        paired.to_csv(out / "paired.csv", index=False)
    (out / "summary.md").write_text(render.markdown(sections, out))
    (out / "report.html").write_text(render.to_html(sections))
    return out / "summary.md"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval.report", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "dirs", nargs="+", type=Path, help="result folders (runs, shards, multirun folders) to merge"
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default: a single run's own folder; for several, a new merged_<time> folder beside them)",
    )
    p.add_argument(
        "--compare-to",
        default=COMPARE_TO,
        help="reference method of the paired comparison (report.compare_to)",
    )
    p.add_argument(
        "--reference-methods",
        default=",".join(REFERENCE_METHODS),
        help="comma-separated methods shown but never ranked (report.reference_methods)",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        run_dirs = results.expand_run_dirs(args.dirs)
        out = args.out or (run_dirs[0] if len(run_dirs) == 1 else new_report_dir(run_dirs[0].parent))
        summary = build_report(
            args.dirs,
            out,
            args.compare_to or None,
            reference_methods=[m for m in args.reference_methods.split(",") if m],
        )
    except (FileNotFoundError, results.ResultsError) as exc:
        print(f"error: {exc}")
        return 2
    print(summary.read_text())
    if args.out is None and len(run_dirs) > 1:
        print(
            f"merged report of {len(run_dirs)} run folders written to a new folder, {out} (each run's own report is "
            "left as it was; --out DIR picks the folder)"
        )
    print(f"report: {summary.parent / 'report.html'}")
    return 0


def new_report_dir(parent: Path) -> Path:
    """A folder of its own for a merged report, ``parent/merged_<time>`` (``_2`` ... when taken)."""
    import time

    base = Path(parent) / f"merged_{time.strftime('%Y-%m-%d_%H-%M-%S')}"
    for n in range(1, 1000):
        d = base if n == 1 else base.with_name(f"{base.name}_{n}")
        try:
            d.mkdir(parents=True)
            return d
        except FileExistsError:
            continue
    raise results.ResultsError(f"no free folder name next to {base}; pass --out DIR")
