"""Each metric's functional twin (one whole video in, its value or frame scores out) gives exactly what the
``Metric`` class computes from one ``update`` with that video (and the same up to round-off over chunked calls);
bad input is refused naming the function and argument."""

from __future__ import annotations

import pytest
import torch

from eval.metrics.clip import ClipConsistency, ClipScore, clip_consistency, clip_score
from eval.metrics.depth_error import DepthError, depth_error
from eval.metrics.frame_diff import MeanAbsFrameDiff, frame_diff
from eval.metrics.warp_error import WarpError, warp_error

PROMPT = "a watercolor painting"


@pytest.fixture(scope="module")
def videos():
    g = torch.Generator().manual_seed(0)
    source = torch.rand(7, 3, 32, 32, generator=g)
    output = (source + 0.1 * torch.rand(7, 3, 32, 32, generator=g)).clamp(0, 1)
    return output, source


def _by_class(metric, output, source, prompt=None, chunks=((0, 7),)):
    for lo, hi in chunks:  # pairwise metrics carry the previous chunk's last frame
        metric.update(output[lo:hi], source[lo:hi], prompt)
    return metric.compute(), metric.frame_scores()


CASES = {
    "frame_diff": (MeanAbsFrameDiff, lambda o, s, **k: frame_diff(o, **k)),
    "clip_score": (ClipScore, lambda o, s, **k: clip_score(o, PROMPT, **k)),
    "clip_consistency": (ClipConsistency, lambda o, s, **k: clip_consistency(o, **k)),
    "depth_error": (DepthError, lambda o, s, **k: depth_error(o, s, **k)),
    "warp_error": (WarpError, lambda o, s, **k: warp_error(o, s, **k)),
    "warp_error_input": (lambda: WarpError(frames="source"), lambda o, s, **k: warp_error(s, s, **k)),
    "warp_error_streamv2v": (
        lambda: WarpError(variant="streamv2v_compat"),
        lambda o, s, **k: warp_error(o, s, variant="streamv2v_compat", **k),
    ),
    "warp_error_lai2018": (
        lambda: WarpError(variant="lai2018"),
        lambda o, s, **k: warp_error(o, s, variant="lai2018", **k),
    ),
    "warp_error_mawe": (
        lambda: WarpError(variant="mawe", mawe_size=(48, 48)),
        lambda o, s, **k: warp_error(o, s, variant="mawe", mawe_size=(48, 48), **k),
    ),
    "warp_error_lag_jpeg": (
        lambda: WarpError(lag=2, encode="jpeg"),
        lambda o, s, **k: warp_error(o, s, lag=2, encode="jpeg", **k),
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_the_functional_twin_equals_the_metric_class(name, videos):
    cls, fn = CASES[name]
    output, source = videos
    value, frames = _by_class(cls(), output, source, PROMPT)
    torch.testing.assert_close(fn(output, source, reduction="none"), frames, rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(fn(output, source), value, rtol=0, atol=0, equal_nan=True)
    assert fn(output, source).dtype == torch.float64 and fn(output, source).ndim == 0
    # in chunks, as the runner feeds the class: the same up to the models' batch-shape round-off (CLIP batches)
    value, frames = _by_class(cls(), output, source, PROMPT, chunks=((0, 3), (3, 5), (5, 7)))
    torch.testing.assert_close(
        fn(output, source, reduction="none"), frames, rtol=1e-5, atol=1e-5, equal_nan=True
    )


def test_pairwise_twins_score_frame_zero_nan_and_a_single_frame_nan(videos):
    output, _ = videos
    for fn in (frame_diff, clip_consistency, lambda v, **k: warp_error(v, v, **k)):
        scores = fn(output, reduction="none")
        assert scores.shape == (7,) and torch.isnan(scores[0]) and torch.isfinite(scores[1:]).all()
        assert torch.isnan(fn(output[:1])) and fn(output[:1], reduction="none").shape == (1,)


def test_bad_input_is_refused_naming_the_function_and_argument(videos):
    output, source = videos
    with pytest.raises(
        ValueError, match=r"frame_diff: frames must be one video \[T, 3, H, W\].*\(3, 32, 32\)"
    ):
        frame_diff(output[0])
    with pytest.raises(ValueError, match=r"depth_error: frames and source_frames must have the same shape"):
        depth_error(output, source[:3])
    with pytest.raises(ValueError, match=r"depth_error: source_frames must be one video"):
        depth_error(output, source[:, :1])
    with pytest.raises(
        ValueError, match=r"frame_diff: reduction must be one of \('mean', 'none'\), got 'sum'"
    ):
        frame_diff(output, reduction="sum")
    with pytest.raises(ValueError, match=r"warp_error lag must be 0, a number of frames, got 'auto'"):
        warp_error(output, source, lag="auto")  # the runner's emissions exist only inside the runner
    with pytest.raises(ValueError, match=r"warp_error variant must be one of"):
        warp_error(output, source, variant="l2")
    with pytest.raises(ValueError, match=r"clip_score: prompt must be a string"):
        clip_score(output, None)
