"""Harness cost (issue 16): each video decoded once per run, a fully cached re-run builds no method and no metric,
and the 8-bit preprocessing path gives the float path's frames to within 8-bit rounding."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch

import eval.runner as runner_mod
from eval import scoring
from eval.cli import run_from_config
from eval.datasets import base
from eval.datasets.base import FrameTransform
from eval.validate import ConfigError
from tests.conftest import compose

TWO_METHODS = [
    "method=[identity]",
    "+method.inv._target_=tests.fake_methods.DelayMethod",
    "+method.inv.delay=0",
]
SMALL = ["dataset.num_videos=2", "dataset.num_frames=4", "report.enabled=false", "runner.xt_slices=false"]


class Scribbler:
    """Breaks the rules: writes into its input frames (then behaves as identity)."""

    def prepare(self, prompt, *, height, width, seed):
        pass

    def push(self, index, frame):
        frame.mul_(0.5)
        return [(index, frame.clone())]

    def flush(self):
        return []

    def reset(self):
        pass


class BrokenMetric:
    def __init__(self):
        raise RuntimeError("no weights here")


def _count_loads(monkeypatch) -> Counter:
    calls: Counter = Counter()
    original = base.Video.frames  # what the runner decodes through (streamed, or from load)

    def frames(self):
        calls[self.name] += 1
        return original(self)

    monkeypatch.setattr(base.Video, "frames", frames)
    return calls


def _run(tmp_path, *overrides, name="run"):
    cfg = compose([f"results_root={tmp_path / 'results'}", *overrides])
    return run_from_config(cfg, run_dir=tmp_path / name, progress=False)


FRAME_DIFF = ["metrics=none", "+metrics.frame_diff._target_=eval.metrics.frame_diff.MeanAbsFrameDiff"]


def _frame_diff(summary):
    v = summary.videos
    return v[v.metric == "frame_diff"].set_index(["method", "video"]).value


def test_each_video_is_decoded_once_for_two_methods(tmp_path, monkeypatch):
    calls = _count_loads(monkeypatch)
    s = _run(tmp_path, *TWO_METHODS, *SMALL, *FRAME_DIFF)
    assert len(s.units) == 4 and not s.failed
    assert calls == {"synthetic_000": 1, "synthetic_001": 1}
    # the second method got the same frames: its output 1 - x changes from frame to frame as much as x does
    d = _frame_diff(s)
    for video in ("synthetic_000", "synthetic_001"):
        assert d[("inv", video)] == pytest.approx(d[("identity", video)], rel=1e-5)
    # with the cache off, each unit decodes its video
    calls.clear()
    _run(tmp_path, *TWO_METHODS, *SMALL, *FRAME_DIFF, "runner.decode_cache_mb=0", "runner.resume=false")
    assert calls == {"synthetic_000": 2, "synthetic_001": 2}


def test_a_method_that_writes_into_its_input_does_not_feed_the_next_one(tmp_path, monkeypatch):
    calls = _count_loads(monkeypatch)
    s = _run(
        tmp_path,
        "method=[]",
        "+method.a_scribbler._target_=tests.test_harness_cost.Scribbler",
        "+method.b_inv._target_=tests.fake_methods.DelayMethod",
        "+method.b_inv.delay=0",
        *FRAME_DIFF,
        *SMALL,
    )
    assert not s.failed and [u.method for u in s.units][::2] == ["a_scribbler", "b_inv"]
    # decoded once: every read of the decoded clip (a file, eval/clips.py) is a fresh tensor, so the scribbler's
    # writes never reach the file
    assert calls == {"synthetic_000": 1, "synthetic_001": 1}
    # b_inv saw the clip as decoded (its frame difference is the input's own), not the scribbler's halved frames
    from eval.datasets.synthetic import generate_clip

    clip = generate_clip(4, 64, 64, seed=0).frames
    expected = (clip[1:] - clip[:-1]).abs().mean(dim=(1, 2, 3)).mean().item() * 255
    assert _frame_diff(s)[("b_inv", "synthetic_000")] == pytest.approx(expected, rel=1e-5)


def test_a_fully_cached_rerun_builds_no_method_and_no_metric(tmp_path, monkeypatch):
    metrics = FRAME_DIFF
    first = _run(tmp_path, *TWO_METHODS, *SMALL, *metrics, name="a")
    assert {u.status for u in first.units} == {"ok"}

    def refuse(*args, **kwargs):
        raise AssertionError("built something on a fully cached re-run")

    monkeypatch.setattr(scoring, "build_metrics", refuse)
    monkeypatch.setattr(runner_mod.Runner, "_method", refuse)
    second = _run(tmp_path, *TWO_METHODS, *SMALL, *metrics, name="b")
    assert {u.status for u in second.units} == {"cached"}
    # the metric descriptors come from the cached units, the same as the first run's
    a = json.loads((first.run_dir / "metrics.json").read_text())
    b = json.loads((second.run_dir / "metrics.json").read_text())
    assert a == b and "frame_diff" in a

    # units cached without descriptors (sealed again, so the integrity check still serves them): the metrics are
    # built at the end, the descriptors complete
    from eval.store import _sealed

    for unit in (tmp_path / "results" / "units").glob("*/*/unit.json"):
        meta = json.loads(unit.read_text())
        meta.pop("metric_descriptors")
        meta.pop("digest")
        unit.write_text(json.dumps(_sealed(meta)))
    monkeypatch.undo()
    third = _run(tmp_path, *TWO_METHODS, *SMALL, *metrics, name="c")
    assert {u.status for u in third.units} == {"cached"}
    assert json.loads((third.run_dir / "metrics.json").read_text()) == a


def test_a_metric_that_cannot_be_built_is_a_set_up_error(tmp_path):
    with pytest.raises(ConfigError, match=r"set-up failed: [\s\S]*no weights here"):
        _run(
            tmp_path,
            "method=[identity]",
            "metrics=none",
            "+metrics.bad._target_=tests.test_harness_cost.BrokenMetric",
            *SMALL,
        )


@pytest.mark.parametrize(
    ("size", "mode"),
    [
        ((32, 32), "resize_crop"),
        ((24, 40), "resize"),
        ((16, 16), "crop"),
        (None, "resize_crop"),
        ((64, 96), "resize_crop"),
    ],
)
def test_the_8_bit_path_matches_the_float_path(size, mode):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (45, 70, 3), dtype=np.uint8)
    t = FrameTransform(size, mode)
    fitted = base.uint8_frames_to_float([t.fit_uint8(arr)])
    reference = t.spatial(base.uint8_to_frames(arr[None]))
    assert fitted.shape == reference.shape and fitted.is_contiguous()
    assert float((fitted - reference).abs().max()) <= 1 / 255 + 1e-6


def test_davis_frames_through_the_8_bit_path(davis_root):
    from eval.datasets.files import _read_frames, list_frame_files, read_frame_folder

    folder = davis_root / "JPEGImages" / "480p" / "blackswan"
    t = FrameTransform((512, 512), "resize_crop", max_frames=3)
    fast = read_frame_folder(folder, t)
    slow = _read_frames(folder, list_frame_files(folder), t, None, fit=False)
    assert fast.shape == slow.shape == (3, 3, 512, 512)
    assert float((fast - slow).abs().max()) <= 1 / 255 + 1e-6
    assert torch.equal(fast, read_frame_folder(folder, t))
