"""The folder and DAVIS datasets default to the model's own frame size (``model.resolution``), an explicit
``dataset.size`` wins, and the run says which it used (provenance ``frame_size``, a note in the report)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from eval.frame_size import frame_size
from eval.validate import ConfigError, validate
from tests.conftest import CONF, compose, run_config


class SizeProbe:
    """A pass-through method that records the frame size it is prepared for (what the run really used)."""

    lookahead = 0
    seen: list[tuple[int, int]] = []

    def prepare(self, prompt, *, height, width, seed):
        SizeProbe.seen.append((height, width))

    def push(self, index, frame):
        return [(index, frame)]

    def flush(self):
        return []

    def reset(self):
        pass


PROBE = ["method=[]", "+method.probe._target_=tests.test_frame_size.SizeProbe", "metrics=none"]


@pytest.fixture
def videos(tmp_path):
    """One frame folder of four 80x96 frames (larger than the tiny model's 64, smaller than SD1.5's 512)."""
    root = tmp_path / "videos"
    (root / "clip").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (80, 96, 3), dtype=np.uint8)).save(
            root / "clip" / f"{i:05d}.png"
        )
    (root / "prompts.yaml").write_text('clip: "a test clip"\n')
    return root


@pytest.mark.parametrize("model", sorted(p.stem for p in (CONF / "model").glob("*.yaml")))
def test_every_model_declares_its_frame_size(model):
    r = compose([f"model={model}"]).model.resolution
    assert isinstance(r, int) and r >= 8 and r % 8 == 0


@pytest.mark.parametrize("dataset", ["folder", "davis"])
@pytest.mark.parametrize("model, size", [("tiny", 64), ("tiny_random", 64), ("sd15", 512)])
def test_dataset_size_defaults_to_the_model_resolution(dataset, model, size):
    cfg = compose([f"dataset={dataset}", "dataset.root=/nowhere", f"model={model}"])
    assert list(cfg.dataset.size) == [size, size]
    fs = frame_size(cfg)
    assert (
        fs["size"] == [size, size] and fs["source"] == "model.resolution" and fs["model_resolution"] == size
    )
    # an explicit size wins (command line, or an experiment's dataset.size) and is named as set
    cfg = compose([f"dataset={dataset}", "dataset.root=/nowhere", f"model={model}", "dataset.size=[128,96]"])
    assert list(cfg.dataset.size) == [128, 96]
    fs = frame_size(cfg)
    assert fs["source"] == "dataset.size" and f"resolution is {size}x{size}" in fs["why"]
    fs = frame_size(compose([f"dataset={dataset}", "dataset.root=/x", f"model={model}", "dataset.size=null"]))
    assert fs["size"] is None and fs["source"] == "source"


def test_an_experiment_size_wins_over_the_model():
    fs = frame_size(compose(["experiment=paper_table1", "dataset.root=/x", "model=tiny"]))
    assert fs["size"] == [512, 512] and fs["source"] == "dataset.size"


def test_the_run_uses_and_records_the_frame_size(tmp_path, videos):
    base = [*PROBE, "dataset=folder", f"dataset.root={videos}", "report.enabled=false"]
    SizeProbe.seen.clear()
    run = run_config(tmp_path, *base, "model=tiny", name="default")
    assert set(SizeProbe.seen) == {(64, 64)}  # the tiny model's 64x64, not 512x512, not the source's 80x96
    prov = json.loads((run.run_dir / "provenance.json").read_text())
    assert prov["frame_size"]["size"] == [64, 64] and prov["frame_size"]["source"] == "model.resolution"
    notes = json.loads((run.run_dir / "notes.json").read_text())
    assert any(
        n.startswith("frame size 64x64: the model's own (model.resolution=64 of model=tiny)") for n in notes
    )

    SizeProbe.seen.clear()
    run = run_config(tmp_path, *base, "model=tiny", "dataset.size=[32,48]", name="explicit")
    assert set(SizeProbe.seen) == {(32, 48)}
    prov = json.loads((run.run_dir / "provenance.json").read_text())
    assert prov["frame_size"]["source"] == "dataset.size"
    notes = json.loads((run.run_dir / "notes.json").read_text())
    assert "frame size 32x48: dataset.size set in the config (model=tiny's resolution is 64x64)" in notes


@pytest.mark.parametrize("bad", [60, 4, "big"])
def test_a_bad_model_resolution_is_refused_naming_the_key(bad, videos):
    cfg = compose([*PROBE, "dataset=folder", f"dataset.root={videos}", f"model.resolution={bad}"])
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert [p.key for p in err.value.problems] == ["model.resolution"], str(err.value)  # not dataset.size


def test_a_model_without_resolution_needs_dataset_size(videos):
    cfg = compose([*PROBE, "dataset=folder", f"dataset.root={videos}", "~model.resolution"])
    with pytest.raises(ConfigError, match=r"model\.resolution.*not set.*dataset\.size=\[H,W\]"):
        validate(cfg)
    validate(
        compose(
            [*PROBE, "dataset=folder", f"dataset.root={videos}", "~model.resolution", "dataset.size=[64,64]"]
        )
    )
