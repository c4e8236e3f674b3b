"""Benchmarks are code too: each script compiles without warnings, has a ``--smoke`` mode, and the smoke mode runs end
to end (writing its JSON/markdown into a temporary folder) — fast ones in ``make test``, the others under ``-m slow``.
A benchmark that crashes while writing its markdown after minutes of measurement is caught here in seconds."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
SHARED_DAVIS = ROOT.parent / "shared" / "data" / "davis"
SCRIPTS = sorted(p for p in BENCH.glob("*.py") if not p.name.startswith("_"))
# reference_equivalence.py runs the authors' code from a checkout; its golden files are checked by tests/test_reference_*.
NO_SMOKE = {"reference_equivalence.py"}
JSON_ONLY = {"gate_inject.py"}  # a sizing file that gate_power.py reads, no table
FAST = {"report_coverage.py"}  # seconds; the rest take 10 s to minutes on 2 cores (they import the models)


def test_every_benchmark_compiles_without_warnings():
    for path in SCRIPTS + sorted(BENCH.glob("_*.py")) + sorted((BENCH / "reference").glob("*.py")):
        with warnings.catch_warnings():
            warnings.simplefilter(
                "error"
            )  # SyntaxWarning ('str' object is not callable ...) becomes an error
            compile(path.read_text(), str(path), "exec")


@pytest.mark.parametrize("path", [p for p in SCRIPTS if p.name not in NO_SMOKE], ids=lambda p: p.stem)
def test_every_benchmark_has_a_smoke_mode(path):
    tree = ast.parse(path.read_text())
    flags = {
        c.args[0].value
        for c in ast.walk(tree)
        if isinstance(c, ast.Call) and getattr(c.func, "attr", None) == "add_argument" and c.args
        if isinstance(c.args[0], ast.Constant)
    }
    called = {getattr(c.func, "id", None) for c in ast.walk(tree) if isinstance(c, ast.Call)}
    assert "--smoke" in flags or "add_smoke_flag" in called, f"{path.name}: no --smoke mode"


def _run_smoke(path: Path, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    out = tmp_path / (
        "out.json" if path.name in JSON_ONLY else "out"
    )  # gate_inject's --out is the file itself
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cmd = [sys.executable, "-W", "error::SyntaxWarning", str(path), "--smoke", "--out", str(out), *extra]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{path.name} --smoke exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    written = sorted(p.name for p in tmp_path.rglob("*") if p.suffix in (".json", ".md"))
    assert any(n.endswith(".json") for n in written), f"{path.name} --smoke wrote no JSON: {written}"
    if path.name not in JSON_ONLY:
        assert any(n.endswith(".md") for n in written), f"{path.name} --smoke wrote no markdown: {written}"
    return proc


def _smoke_params():
    for p in SCRIPTS:
        if p.name in NO_SMOKE:
            continue
        marks = [] if p.name in FAST else [pytest.mark.slow]
        if p.name == "harness_cost.py" and not SHARED_DAVIS.is_dir():
            marks.append(pytest.mark.skip(reason=f"needs the DAVIS clips in {SHARED_DAVIS}"))
        yield pytest.param(p, marks=marks, id=p.stem)


@pytest.mark.parametrize("path", list(_smoke_params()))
def test_benchmark_smoke_runs_end_to_end(path, tmp_path):
    extra = ("--data", str(SHARED_DAVIS)) if path.name == "harness_cost.py" else ()
    _run_smoke(path, tmp_path, *extra)


def test_smoke_never_writes_over_recorded_figures(tmp_path):
    """Without --out a smoke run goes to benchmarks/results/smoke/ (git-ignored), not over the committed files."""
    sys.path.insert(0, str(BENCH))
    try:
        import argparse

        from _smoke import SMOKE_OUT, add_smoke_flag, apply_smoke
    finally:
        sys.path.remove(str(BENCH))
    for default, expected in [
        (BENCH / "results", SMOKE_OUT),
        (BENCH / "results" / "live_mode", SMOKE_OUT / "live_mode"),
    ]:
        ap = argparse.ArgumentParser()
        ap.add_argument("--out", type=Path, default=default)
        ap.add_argument("--frames", type=int, default=60)
        add_smoke_flag(ap)
        args = apply_smoke(ap, ap.parse_args(["--smoke"]), {"frames": 2})
        assert (args.out, args.frames) == (expected, 2)
        args = apply_smoke(ap, ap.parse_args(["--smoke", "--frames", "5"]), {"frames": 2})
        assert args.frames == 5  # an explicit value wins over the smoke size
    assert "benchmarks/results/smoke" in (ROOT / ".gitignore").read_text()
