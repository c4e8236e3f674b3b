"""Record golden outputs of the authors' own code (run as an oracle from a git-ignored checkout, never copied here).

Each reference has one module in ``benchmarks/reference/`` exposing ``NAME`` (the flag), ``HELP`` and
``record(checkout: Path, out_dir: Path) -> list[Path]``: it runs the authors' code with patches written in this
project's own code, on the project's real-layout random fixtures (:mod:`live2diff.testing.fixtures`), and writes
golden files (their per-frame outputs, the reference commit, the exact settings and the sha256 of the fixture
weights) under ``tests/golden/``. The tests compare this project against those files in every ``make test``.

    python benchmarks/reference_equivalence.py --live2diff /work/refs/Live2Diff --streamv2v /work/refs/streamv2v

Checkouts: ``git --git-dir=<mirror> worktree add <dir> <commit>`` of open-mmlab/Live2Diff and Jeff-LiangF/streamv2v
in a folder outside the repository (or a git-ignored one).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_OUT = ROOT / "tests" / "golden"


def _arms() -> dict[str, object]:
    """Every module of ``benchmarks/reference/`` that declares a ``NAME`` (one per reference repository)."""
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(ROOT))
    arms = {}
    for info in pkgutil.iter_modules([str(HERE / "reference")]):
        mod = importlib.import_module(f"reference.{info.name}")
        if hasattr(mod, "NAME"):
            arms[mod.NAME] = mod
    return arms


def main(argv: list[str] | None = None) -> int:
    arms = _arms()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, mod in sorted(arms.items()):
        p.add_argument(f"--{name}", type=Path, metavar="CHECKOUT", help=getattr(mod, "HELP", ""))
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="golden folder (default tests/golden)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    chosen = {n: getattr(args, n.replace("-", "_")) for n in arms if getattr(args, n.replace("-", "_"))}
    if not chosen:
        p.error(f"name at least one reference checkout: {', '.join('--' + n for n in sorted(arms))}")
    args.out.mkdir(parents=True, exist_ok=True)
    for name, checkout in chosen.items():
        if not checkout.is_dir():
            p.error(f"--{name} {checkout}: not a folder (a checkout of the authors' repository)")
        for path in arms[name].record(checkout.resolve(), args.out):
            print(f"{name}: wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
