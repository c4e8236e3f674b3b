"""A user's own dataset format, in their own package outside this repo, run by config alone: the class and YAML
of docs/add_your_dataset.md, taken from the guide itself (so the guide cannot drift from what runs)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from tests.conftest import ROOT

GUIDE = ROOT / "docs" / "add_your_dataset.md"


def _block(lang: str) -> str:
    blocks = re.findall(rf"```{lang}\n(.*?)```", GUIDE.read_text(), flags=re.S)
    assert len(blocks) == 1, f"{GUIDE} should hold one {lang} block"
    return blocks[0]


def _user_dir(tmp_path: Path) -> Path:
    user = tmp_path / "user"
    (user / "my_datasets").mkdir(parents=True)
    (user / "my_datasets" / "__init__.py").write_text(_block("python"))
    (user / "my_conf" / "dataset").mkdir(parents=True)
    (user / "my_conf" / "dataset" / "npy.yaml").write_text(_block("yaml"))
    assert not str(user).startswith(str(ROOT))
    return user


def test_the_guides_dataset_runs_from_the_users_folder(tmp_path, run_py, monkeypatch):
    user = _user_dir(tmp_path)
    clips = tmp_path / "clips"
    clips.mkdir()
    rng = np.random.default_rng(0)
    raw = {name: rng.integers(0, 256, (5, 64, 64, 3), dtype=np.uint8) for name in ("alpha", "beta")}
    for name, clip in raw.items():
        np.save(clips / f"{name}.npy", clip)
    (clips / "prompts.yaml").write_text('alpha: "a pencil sketch"\nbeta: "a watercolor painting"\n')
    monkeypatch.syspath_prepend(str(user))
    monkeypatch.delitem(sys.modules, "my_datasets", raising=False)
    common = [
        f"hydra.searchpath=[file://{user / 'my_conf'}]",
        "dataset=npy",
        f"dataset.root={clips}",
        "method=[identity]",
        "metrics=none",
        "+metrics.frame_diff._target_=eval.metrics.frame_diff.MeanAbsFrameDiff",
        "report.enabled=false",
        f"results_root={tmp_path / 'results'}",
    ]
    p = run_py("run_eval.py", *common, "dataset.stride=2", cwd=user)
    assert p.returncode == 0, p.stderr[-3000:]
    run_dir = Path(p.stdout.strip().splitlines()[-1].removeprefix("results: "))
    units = pd.read_parquet(run_dir / "units.parquet")
    assert sorted(units.video) == ["alpha", "beta"] and set(units.status) == {"ok"}
    assert set(units.n_frames) == {3}  # frames 0, 2, 4 of 5: the base class's dataset.stride
    v = pd.read_parquet(run_dir / "videos.parquet")
    v = v[v.metric == "frame_diff"].set_index("video")
    for name, clip in raw.items():  # identity returns what the dataset decoded: the user's frames
        x = clip[::2].astype(np.float64) / 255.0
        expected = np.abs(np.diff(np.float32(x), axis=0)).mean(axis=(1, 2, 3)).mean() * 255.0
        assert abs(v.loc[name, "value"] - expected) < 1e-3, (name, v.loc[name, "value"], expected)

    bad = run_py("run_eval.py", *common, "dataset.shard=2", "dataset.num_shards=2", cwd=user)
    assert bad.returncode == 2 and "dataset.shard=2: must be in [0, dataset.num_shards=2)" in bad.stderr
