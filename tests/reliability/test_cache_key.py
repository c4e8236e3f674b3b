"""The unit cache never returns a number for something else: every input a unit's numbers depend on is in its key.

Each test changes one input and checks the unit is computed again (and labelled right); all of them returned
stale "cached" numbers before the key covered content, prompt, weights and code.
"""

from __future__ import annotations

import os
import subprocess
import textwrap

import numpy as np
import pytest
from PIL import Image

from tests.conftest import run_config

FOLDER = ["dataset=folder", "dataset.size=[16,16]", "metrics=none", "report.enabled=false"]


def run(tmp_path, *overrides, name="run"):
    return run_config(
        tmp_path, *overrides, name=name, identity=True, fresh=True
    )  # as a new process sees the files


def write_frames(folder, n=3, seed=0, size=(16, 16)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        arr = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / f"{i:05d}.png", compress_level=0)  # size depends on shape only


def statuses(summary):
    return {(u.method, u.video): u.status for u in summary.units}


def test_editing_prompts_recomputes(tmp_path):
    data = tmp_path / "v"
    write_frames(data / "clip")
    (data / "prompts.yaml").write_text("clip: a watercolor painting\n")
    first = run(tmp_path, *FOLDER, f"dataset.root={data}", name="a")
    assert statuses(first) == {("identity", "clip"): "ok"}
    assert statuses(run(tmp_path, *FOLDER, f"dataset.root={data}", name="b")) == {
        ("identity", "clip"): "cached"
    }
    (data / "prompts.yaml").write_text("clip: a pencil sketch\n")
    third = run(tmp_path, *FOLDER, f"dataset.root={data}", name="c")
    assert statuses(third) == {("identity", "clip"): "ok"}, "a new prompt returned the old prompt's numbers"


def test_copied_frame_folder_with_a_new_prompt_is_a_new_unit(tmp_path):
    data = tmp_path / "v"
    write_frames(data / "surf")
    (data / "prompts.yaml").write_text("surf: a watercolor\n")
    run(tmp_path, *FOLDER, f"dataset.root={data}", name="a")
    subprocess.run(["cp", "-rp", str(data / "surf"), str(data / "surf_copy")], check=True)
    (data / "prompts.yaml").write_text("surf: a watercolor\nsurf_copy: an oil painting\n")
    second = run(tmp_path, *FOLDER, f"dataset.root={data}", name="b")
    assert statuses(second) == {("identity", "surf"): "cached", ("identity", "surf_copy"): "ok"}
    assert set(second.videos.video) == {"surf", "surf_copy"}  # labelled with its own name, not the original's


def test_content_change_with_same_names_sizes_and_mtimes_recomputes(tmp_path):
    data = tmp_path / "v"
    write_frames(data / "clip", seed=0)
    run(tmp_path, *FOLDER, f"dataset.root={data}", "dataset.default_prompt=p", name="a")
    before = {f.name: (f.stat().st_size, f.stat().st_mtime_ns) for f in (data / "clip").iterdir()}
    victim = data / "clip" / "00001.png"
    write_frames(tmp_path / "other", seed=1)
    victim.write_bytes((tmp_path / "other" / "00001.png").read_bytes())
    os.utime(victim, ns=(before["00001.png"][1], before["00001.png"][1]))
    after = {f.name: (f.stat().st_size, f.stat().st_mtime_ns) for f in (data / "clip").iterdir()}
    assert after == before  # only the pixels differ
    second = run(tmp_path, *FOLDER, f"dataset.root={data}", "dataset.default_prompt=p", name="b")
    assert statuses(second) == {("identity", "clip"): "ok"}


def test_two_videos_with_one_name_are_an_error_naming_both_files(tmp_path):
    data = tmp_path / "v"
    data.mkdir()
    (data / "good.mp4").write_bytes(b"x" * 100)
    (data / "good.mov").write_bytes(b"y" * 100)
    with pytest.raises(ValueError, match="duplicate video names") as err:
        run(tmp_path, *FOLDER, f"dataset.root={data}", "dataset.default_prompt=p")
    assert str(data / "good.mp4") in str(err.value) and str(data / "good.mov") in str(err.value)


def test_weights_file_content_is_in_the_key(tmp_path):
    data = tmp_path / "v"
    write_frames(data / "clip")
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"version one")
    args = [
        *FOLDER,
        f"dataset.root={data}",
        "dataset.default_prompt=p",
        "method=[]",
        "+method.count._target_=tests.reliability.helpers.WeightedIdentity",
        f"+method.count.weights={weights}",
    ]
    assert statuses(run(tmp_path, *args, name="a")) == {("count", "clip"): "ok"}
    assert statuses(run(tmp_path, *args, name="b")) == {("count", "clip"): "cached"}
    weights.write_bytes(b"version two")  # same path, same size, new weights
    assert statuses(run(tmp_path, *args, name="c")) == {("count", "clip"): "ok"}


def test_metric_weights_file_content_is_in_the_key(tmp_path):
    data = tmp_path / "v"
    write_frames(data / "clip")
    weights = tmp_path / "metric_weights.bin"
    weights.write_bytes(b"one")
    args = [
        *FOLDER,
        f"dataset.root={data}",
        "dataset.default_prompt=p",
        "+metrics.fd._target_=tests.reliability.helpers.WeightedFrameDiff",
        f"+metrics.fd.weights={weights}",
    ]
    assert statuses(run(tmp_path, *args, name="a")) == {("identity", "clip"): "ok"}
    assert statuses(run(tmp_path, *args, name="b")) == {("identity", "clip"): "cached"}
    weights.write_bytes(b"two")
    assert statuses(run(tmp_path, *args, name="c")) == {("identity", "clip"): "ok"}


def test_editing_the_methods_code_recomputes(tmp_path, monkeypatch):
    """A user's method package: the unit is recomputed when its source, or a module it imports, changes (a new
    process would run the new code; the key is read from the sources on disk)."""
    pkg = tmp_path / "pkgs" / "my_methods_v"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("from my_methods_v.core import Blur\n")
    core = textwrap.dedent(
        """
        from my_methods_v.helpers import scale

        class Blur:
            lookahead = 0
            def prepare(self, prompt, *, height, width, seed): pass
            def push(self, index, frame): return [(index, frame * scale())]
            def flush(self): return []
            def reset(self): pass
        """
    )
    (pkg / "core.py").write_text(core)
    (pkg / "helpers.py").write_text("def scale():\n    return 1.0\n")
    monkeypatch.syspath_prepend(str(tmp_path / "pkgs"))
    args = [
        "method=[]",
        "+method.blur._target_=my_methods_v.Blur",
        "dataset.num_videos=1",
        "dataset.num_frames=3",
    ]
    args += ["metrics=none", "report.enabled=false"]
    assert statuses(run(tmp_path, *args, name="a")) == {("blur", "synthetic_000"): "ok"}
    assert statuses(run(tmp_path, *args, name="b")) == {("blur", "synthetic_000"): "cached"}
    (pkg / "helpers.py").write_text("def scale():\n    return 0.5\n")  # a module the method imports
    assert statuses(run(tmp_path, *args, name="c")) == {("blur", "synthetic_000"): "ok"}
