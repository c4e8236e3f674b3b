"""depth_error: definition (affine-invariant aligned MSE), validation (0 for identity, monotone in blur / warp),
the DPT weights path and the offline stand-in's "not comparable" flag."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torchvision.transforms.functional import gaussian_blur

from eval.datasets.synthetic import generate_clip
from eval.metrics.depth_error import DepthError, aligned_mse
from tests.conftest import compose


def _value(m: DepthError, output, source) -> float:
    m.reset()
    m.update(output, source)
    return float(m.compute())


def _blur(v, sigma):
    return v if sigma == 0 else gaussian_blur(v, 2 * int(3 * sigma) + 1, sigma)


def _increasing(vals):
    return all(b > a for a, b in zip(vals, vals[1:]))


def test_aligned_mse_is_scale_shift_invariant_and_equals_one_minus_r2():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 16, 16, generator=g)
    assert aligned_mse(a, 3.5 * a - 7.0).abs().max() < 1e-12  # MiDaS depth is affine-invariant
    assert aligned_mse(a, -a).abs().max() < 1e-12  # a sign flip is an affine map too
    b = torch.rand(3, 16, 16, generator=g)
    r = torch.stack(
        [torch.corrcoef(torch.stack([x.flatten(), y.flatten()]).double())[0, 1] for x, y in zip(a, b)]
    )
    assert torch.allclose(aligned_mse(a, b), 1 - r**2, atol=1e-10)
    flat = torch.ones(1, 16, 16)
    assert float(aligned_mse(a[:1], flat)) == pytest.approx(1.0)  # a flat output keeps no structure
    assert torch.isnan(aligned_mse(flat, a[:1])).all()  # nothing to compare with: NaN, not a number


def test_identity_is_zero_and_blur_and_warp_grow_it():
    m = DepthError()
    clip = generate_clip(6, 64, 64, seed=0).frames
    assert _value(m, clip, clip) < 1e-12
    blur = [_value(m, _blur(clip, s), clip) for s in (0, 0.5, 1, 2, 4)]
    assert blur[0] < 1e-12 and _increasing(blur), blur
    shift = [_value(m, torch.roll(clip, k, -1), clip) for k in (0, 1, 2, 4, 8)]
    assert shift[0] < 1e-12 and _increasing(shift), shift
    assert len(m.frame_scores()) == 6  # one score per frame, none undefined


def test_real_davis_frames_identity_zero_blur_warp_monotone(davis_root):
    from torchvision.io import read_image

    files = sorted((davis_root / "JPEGImages" / "480p" / "dog").glob("*.jpg"))[:4]
    video = F.interpolate(
        torch.stack([read_image(str(p)) for p in files]).float() / 255, (128, 128), mode="area"
    )
    m = DepthError()
    assert _value(m, video, video) < 1e-12
    assert _increasing([_value(m, _blur(video, s), video) for s in (0, 1, 2, 4)])
    assert _increasing([_value(m, torch.roll(video, k, -1), video) for k in (0, 2, 4, 8)])


def test_random_stand_in_is_flagged_not_comparable():
    d = DepthError().describe()
    assert d["comparable"] is False and "not comparable" in d["note"]
    assert "random" in d["config"]["model"] and d["higher_is_better"] is False


def test_dpt_folder_is_loaded_and_comparable(tmp_path):
    from transformers import DPTConfig, DPTForDepthEstimation

    cfg = DPTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=64,
        neck_hidden_sizes=[8, 16, 32, 32],
        fusion_hidden_size=16,
        backbone_out_indices=[0, 1, 2, 3],
    )
    torch.manual_seed(0)
    DPTForDepthEstimation(cfg).save_pretrained(tmp_path / "dpt")
    m = DepthError(weights=str(tmp_path / "dpt"), resolution=32)
    clip = generate_clip(3, 48, 48, seed=1).frames
    assert _value(m, clip, clip) < 1e-12
    assert _value(m, torch.roll(clip, 6, -1), clip) > 0
    d = m.describe()
    assert d["comparable"] is True and not d["notes"] and str(tmp_path / "dpt") in d["config"]["model"]


def test_missing_weights_name_the_key(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"absent.*metrics\.depth_error\.weights"):
        DepthError(weights=str(tmp_path / "absent"))
    with pytest.raises(ValueError, match=r"metrics\.depth_error\.weights"):
        DepthError(require_weights=True)


def test_default_metric_set_has_depth_error_and_paper_set_requires_weights():
    cfg = compose()
    m = instantiate(cfg.metrics.depth_error)
    assert isinstance(m, DepthError) and m.resolution == 64
    cfg = compose(["+metrics/add=paper"])
    with pytest.raises(Exception, match=r"metrics\.depth_error\.weights"):
        instantiate(cfg.metrics.depth_error)
