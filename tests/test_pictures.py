"""Temporal-stability pictures: X–T slices (input | each method) and the side-by-side mp4, from a real run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from eval.pictures import GAP, XT_MIN_HEIGHT, xt_slice
from tests.conftest import run_config


def test_xt_slice_is_one_row_over_time():
    g = torch.Generator().manual_seed(0)
    frames = torch.rand(5, 3, 8, 6, generator=g)
    s = xt_slice(frames, 0.5)
    assert s.shape == (3, 5, 6)
    y = round(0.5 * 7)
    for t in range(5):
        assert torch.equal(s[:, t], frames[t, :, y])
    assert torch.equal(xt_slice(frames, 0.0)[:, 2], frames[2, :, 0])
    with pytest.raises(ValueError, match=r"runner\.xt_row"):
        xt_slice(frames, 1.5)


def test_flicker_shows_as_bands_a_static_video_does_not():
    static = torch.rand(1, 3, 8, 8).repeat(6, 1, 1, 1)
    flicker = (static + 0.3 * (torch.arange(6) % 2).float()[:, None, None, None]).clamp(0, 1)
    assert float(xt_slice(static).diff(dim=1).abs().max()) == 0.0
    assert float(xt_slice(flicker).diff(dim=1).abs().mean()) > 0.05


def _run(tmp_path, *overrides, name="run"):
    return run_config(
        tmp_path,
        "method=[identity,per_frame_img2img]",
        "dataset.num_videos=1",
        "dataset.num_frames=6",
        "metrics=none",  # the pictures are under test, not the metrics or the report
        "report.enabled=false",
        *overrides,
        name=name,
    )


def test_run_writes_xt_png_and_side_by_side_mp4(tmp_path):
    import av

    s = _run(tmp_path, "runner.side_by_side=true")
    assert not s.failed
    png = s.run_dir / "xt" / "synthetic_000.png"
    img = np.asarray(Image.open(png).convert("RGB"))
    w, t = 64, 6
    stretch = -(-XT_MIN_HEIGHT // t)
    assert img.shape[1] == 3 * w + 2 * GAP  # input | identity | per_frame_img2img
    assert img.shape[0] - 14 == t * stretch  # label row + time, stretched
    body = img[14:]
    assert np.array_equal(body[:, :w], body[:, w + GAP : 2 * w + GAP])  # identity's slice is the input's
    assert not np.array_equal(body[:, :w], body[:, 2 * w + 2 * GAP :])
    with av.open(str(s.run_dir / "side_by_side" / "synthetic_000.mp4")) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == t and frames[0].shape[1] == 3 * w + 2 * GAP

    # a resumed run (every unit cached) draws the same picture from the units' files
    s2 = _run(tmp_path, "runner.side_by_side=true", name="run2")
    assert {u.status for u in s2.units} == {"cached"}
    assert np.array_equal(np.asarray(Image.open(s2.run_dir / "xt" / "synthetic_000.png").convert("RGB")), img)
    assert (s2.run_dir / "side_by_side" / "synthetic_000.mp4").is_file()


def test_side_by_side_is_off_by_default_xt_can_be_turned_off(tmp_path):
    s = _run(tmp_path, "runner.xt_slices=false", "method=[identity]")
    assert not (s.run_dir / "xt").exists() and not (s.run_dir / "side_by_side").exists()
