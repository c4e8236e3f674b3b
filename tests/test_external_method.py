"""A user's own method, in their own package outside this repo, run by config alone (DESIGN use 2): no file of
this repo is edited. Two ways: a YAML on an extra config search path, or a ``+method.<name>._target_`` override."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pandas as pd

from tests.conftest import ROOT

PACKAGE = '''
"""An external StreamMethod: scales the inverted frame (so its effect is visible in the metrics)."""


class Inverter:
    lookahead = 0

    def __init__(self, strength: float = 1.0):
        self.strength = strength

    def prepare(self, prompt, *, height, width, seed):
        pass

    def push(self, index, frame):
        return [(index, (1 - frame) * self.strength)]

    def flush(self):
        return []

    def reset(self):
        pass
'''


def _user_dir(tmp_path: Path) -> Path:
    user = tmp_path / "user"
    (user / "my_methods").mkdir(parents=True)
    (user / "my_methods" / "__init__.py").write_text(textwrap.dedent(PACKAGE))
    (user / "conf" / "method").mkdir(parents=True)
    (user / "conf" / "method" / "inverter.yaml").write_text(
        "# @package method.inverter\n_target_: my_methods.Inverter\nstrength: 0.5\n"
    )
    assert not str(user).startswith(str(ROOT))
    return user


def _run(run_py, monkeypatch, args: list[str], user: Path, results: Path) -> Path:
    """``python <repo>/run_eval.py ARGS`` from the user's folder with their package on the path (in this process)."""
    monkeypatch.syspath_prepend(str(user))
    monkeypatch.delitem(sys.modules, "my_methods", raising=False)  # each test's own copy of the package
    only_frame_diff = [
        "metrics=none",
        "+metrics.frame_diff._target_=eval.metrics.frame_diff.MeanAbsFrameDiff",
    ]
    p = run_py(
        "run_eval.py",
        *args,
        f"results_root={results}",
        "dataset.num_videos=1",
        "dataset.num_frames=4",
        *only_frame_diff,
        "report.enabled=false",
        cwd=user,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    run_dir = Path(p.stdout.strip().splitlines()[-1].removeprefix("results: "))
    assert run_dir.is_dir(), p.stdout[-2000:]
    return run_dir


def _frame_diff(run_dir: Path) -> dict[str, float]:
    units = pd.read_parquet(run_dir / "units.parquet")
    assert set(units.status) == {"ok"}, units
    v = pd.read_parquet(run_dir / "videos.parquet")
    return v[v.metric == "frame_diff"].set_index("method").value.to_dict()


def test_external_method_via_config_search_path(tmp_path, run_py, monkeypatch):
    user = _user_dir(tmp_path)
    run_dir = _run(
        run_py,
        monkeypatch,
        [f"hydra.searchpath=[file://{user / 'conf'}]", "method=[identity,inverter]"],
        user,
        tmp_path / "results",
    )
    diff = _frame_diff(run_dir)
    assert set(diff) == {"identity", "inverter"}
    # |(1-a)/2 - (1-b)/2| = |a-b|/2: the user's class really produced the frames
    assert abs(diff["inverter"] - diff["identity"] / 2) < 1e-4 * diff["identity"]


def test_external_method_via_override_only(tmp_path, run_py, monkeypatch):
    user = _user_dir(tmp_path)
    run_dir = _run(
        run_py,
        monkeypatch,
        ["method=[identity]", "+method.mine._target_=my_methods.Inverter", "+method.mine.strength=0.5"],
        user,
        tmp_path / "results",
    )
    diff = _frame_diff(run_dir)
    assert "mine" in diff and abs(diff["mine"] - diff["identity"] / 2) < 1e-4 * diff["identity"]
