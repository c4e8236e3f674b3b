"""Warp error validated against ground truth: known flow, injected flicker, occlusions, RAFT plumbing, chunking."""

from __future__ import annotations

import math

import pytest
import torch

from eval.datasets.synthetic import generate_clip
from eval.metrics.flow import DISFlow, fb_occlusion, warp
from eval.metrics.warp_error import WarpError
from tests.test_metrics_helpers import TranslationOracle, flicker, translating_clip

# Tolerances on the 0-255 scale. Bilinear resampling of the synthetic textures at 64x64 alone costs ~0.25/255.
GT_TOL = 0.5
DIS_SMOOTH_TOL = 0.5
DIS_OBJECTS_TOL = 3.0


def value(metric: WarpError, output, source) -> float:
    metric.reset()
    metric.update(output, source)
    return float(metric.compute())


def test_warp_convention_matches_synthetic_ground_truth():
    clip = generate_clip(8, 64, 64, seed=1)
    err = (warp(clip.frames[:-1], clip.flow[1:]) - clip.frames[1:]).abs().mean(1) * 255
    valid = ~clip.occlusion[1:]
    assert (err[valid].mean()) < GT_TOL


def test_known_flow_is_near_zero_with_oracle_flow():
    clip = translating_clip()
    m = WarpError(flow=TranslationOracle(clip.frames, clip.flow[1]))
    v = value(m, clip.frames, clip.frames)
    assert 0 <= v < GT_TOL


def test_known_flow_is_near_zero_with_dis():
    smooth = translating_clip()
    assert value(WarpError(flow="dis"), smooth.frames, smooth.frames) < DIS_SMOOTH_TOL
    objects = generate_clip(8, 64, 64, seed=0)
    # sharp-edged rotating objects: DIS smooths flow across their boundaries, where most of the residual lies
    assert value(WarpError(flow="dis"), objects.frames, objects.frames) < DIS_OBJECTS_TOL


@pytest.mark.parametrize("flow", ["dis", "farneback"])
def test_grows_strictly_with_flicker(flow):
    clip = generate_clip(8, 64, 64, seed=2)
    m = WarpError(flow=flow)
    levels = [0.0, 2 / 255, 6 / 255, 16 / 255]
    values = [value(m, flicker(clip.frames, lv), clip.frames) for lv in levels]
    assert all(b > a for a, b in zip(values, values[1:])), values
    # flicker of +-a per frame gives a pairwise difference of 0 or 2a: the error tracks it
    assert values[-1] > 8


def test_occlusion_mask_excludes_disoccluded_regions():
    clip = generate_clip(8, 64, 64, seed=3, num_objects=2, max_speed=4.0)
    assert clip.occlusion[1:].float().mean() > 0.02
    with_mask = value(WarpError(flow="dis", occlusion=True), clip.frames, clip.frames)
    without = value(WarpError(flow="dis", occlusion=False), clip.frames, clip.frames)
    assert with_mask < without
    # the forward-backward check finds most ground-truth occlusions
    dis = DISFlow()
    bwd, fwd = dis(clip.frames[1:], clip.frames[:-1]), dis(clip.frames[:-1], clip.frames[1:])
    occ = fb_occlusion(bwd, fwd)
    gt = clip.occlusion[1:]
    assert (occ & gt).sum() / gt.sum() > 0.5


def test_input_reference_row_ignores_output():
    clip = generate_clip(6, 48, 48, seed=4)
    noise = torch.rand_like(clip.frames)
    m = WarpError(frames="source")
    assert value(m, noise, clip.frames) == value(m, clip.frames, clip.frames)
    assert m.describe()["display_name"] == "Warp error (input)"


def test_chunking_and_batching_do_not_change_scores():
    clip = generate_clip(9, 48, 48, seed=5)
    out = flicker(clip.frames, 4 / 255)
    m = WarpError(flow="dis")
    m.update(out, clip.frames)
    whole = m.frame_scores().clone()
    assert math.isnan(whole[0]) and torch.isfinite(whole[1:]).all()
    for chunk in (1, 2, 4):
        m.reset()
        for i in range(0, 9, chunk):
            m.update(out[i : i + chunk], clip.frames[i : i + chunk])
        torch.testing.assert_close(m.frame_scores(), whole, equal_nan=True)


def test_streamv2v_compat_reproduces_uint8_wraparound():
    # constant frames, zero flow: the correct L1 is 10; the script's uint8 subtraction gives (100 - 110) mod 256
    prev, cur = torch.full((1, 3, 16, 16), 100 / 255), torch.full((1, 3, 16, 16), 110 / 255)
    frames = torch.cat([prev, cur])
    source = torch.zeros_like(frames)
    assert value(WarpError(variant="l1"), frames, source) == pytest.approx(10.0, abs=1e-4)
    compat = WarpError(variant="streamv2v_compat")
    assert value(compat, frames, source) == pytest.approx(246.0)
    assert "compat" in compat.describe()["display_name"]


class InjectedFlow:
    """Returns given flows: ``fwd[i]`` for (frame i -> frame i + 1), ``bwd[i]`` for (frame i + 1 -> frame i)."""

    name = "injected"

    def __init__(self, frames, fwd, bwd):
        self.frames, self.fwd, self.bwd = frames, fwd, bwd

    def index(self, img):
        d = (self.frames - img[None]).abs().flatten(1).amax(1)
        assert d.min() == 0
        return int(d.argmin())

    def __call__(self, a, b):
        out = []
        for x, y in zip(a, b):
            i, j = self.index(x), self.index(y)
            assert abs(i - j) == 1
            out.append(self.fwd[i] if j == i + 1 else self.bwd[j])
        return torch.stack(out)


def _streamv2v_script_pair(edit1, edit2, fwd, bwd):
    """tools/warp_error.py of Jeff-LiangF/streamv2v transcribed for one pair (its coords_grid, flow_warp,
    bilinear_sample, forward_backward_consistency_check, cv2.remap and calculate_error); ``edit*`` uint8 HWC,
    ``fwd``/``bwd`` [2, H, W] as its predicted_flows[0] / [1]."""
    import cv2
    import numpy as np

    def coords_grid(b, h, w):
        y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        return torch.stack([x, y], dim=0).float()[None].repeat(b, 1, 1, 1)

    def bilinear_sample(img, sample_coords):
        _, _, h, w = sample_coords.shape
        x_grid = 2 * sample_coords[:, 0] / (w - 1) - 1
        y_grid = 2 * sample_coords[:, 1] / (h - 1) - 1
        grid = torch.stack([x_grid, y_grid], dim=-1)
        return torch.nn.functional.grid_sample(
            img, grid, mode="bilinear", padding_mode="zeros", align_corners=True
        )

    def flow_warp(feature, flow):
        b, c, h, w = feature.size()
        return bilinear_sample(feature, coords_grid(b, h, w) + flow)

    fwd_flow, bwd_flow = fwd[None], bwd[None]
    flow_mag = torch.norm(fwd_flow, dim=1) + torch.norm(bwd_flow, dim=1)
    diff_fwd = torch.norm(fwd_flow + flow_warp(bwd_flow, fwd_flow), dim=1)
    fwd_occ = (diff_fwd > 0.01 * flow_mag + 0.5).float()
    h, w = bwd.shape[1:]
    grid_x, grid_y = np.meshgrid(np.arange(w), np.arange(h))
    grid = np.stack((grid_x, grid_y), axis=2)
    warped_grid = (grid + bwd.permute(1, 2, 0).numpy()).astype(np.float32)
    warped_image = cv2.remap(edit1, warped_grid, None, cv2.INTER_LINEAR)
    occlusion = fwd_occ[0].bool()
    warped_image[occlusion] = np.array([0, 0, 0], dtype=np.uint8)
    mask = occlusion.numpy().astype(np.uint8)
    return float(np.abs(warped_image - edit2)[mask == 0].mean()), float(mask.mean())


def test_streamv2v_compat_equals_the_script_with_nonzero_flow():
    """Sub-pixel, spatially varying flows with an inconsistent patch (so the occlusion mask has both kinds of
    pixels) and textured uint8 frames (so the script's wrap-around happens): every pair's score equals the script's
    arithmetic transcribed above, and differs from the correct L1 variant."""
    import numpy as np

    g = torch.Generator().manual_seed(0)
    n, h, w = 4, 24, 32
    edits = (torch.rand(n, 3, h, w, generator=g) * 255).round() / 255
    source = torch.rand(
        n, 3, h, w, generator=g
    )  # flows come from the injector; frames only identify the pair
    smooth = torch.nn.functional.interpolate(
        torch.randn(n - 1, 2, 4, 4, generator=g), (h, w), mode="bilinear"
    )
    bwd = torch.tensor([1.3, -0.7])[None, :, None, None] + 0.8 * smooth
    fwd = -bwd.clone()
    fwd[:, :, 5:14, 8:20] += 3.0  # inconsistent region: occluded
    metric = WarpError(flow=InjectedFlow(source, fwd, bwd), variant="streamv2v_compat")
    metric.update(edits, source)
    got = metric.frame_scores()[1:]
    to_u8 = lambda f: (f * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()  # noqa: E731
    script = [
        _streamv2v_script_pair(to_u8(edits[i]), to_u8(edits[i + 1]), fwd[i], bwd[i]) for i in range(n - 1)
    ]
    want = [e for e, _ in script]
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-9)
    assert all(0.05 < occluded < 0.6 for _, occluded in script), script
    l1 = WarpError(flow=InjectedFlow(source, fwd, bwd), variant="l1")
    l1.update(edits, source)
    assert not np.allclose(l1.frame_scores()[1:].numpy(), want, rtol=1e-3)


def _save_random_raft(tmp_path, kind="small"):
    from safetensors.torch import save_file
    from torchvision.models.optical_flow import raft_small

    torch.manual_seed(0)
    net = raft_small(weights=None)
    path = tmp_path / f"raft_{kind}.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return net, path


def test_raft_loads_local_weights_and_runs(tmp_path):
    net, path = _save_random_raft(tmp_path)
    # random weights give random flow, which fails the occlusion check everywhere: score all pixels instead
    m = WarpError(flow="raft", raft_model="small", raft_weights=str(path), raft_iters=2, occlusion=False)
    for k, v in net.state_dict().items():
        torch.testing.assert_close(m.flow.model.state_dict()[k], v, rtol=0, atol=0)
    clip = generate_clip(3, 36, 44, seed=6)  # not a multiple of 8: exercises the padding
    m.update(clip.frames, clip.frames)
    assert torch.isfinite(m.frame_scores()[1:]).all()


def test_raft_path_with_injected_ground_truth_flow(tmp_path):
    """Random-weight RAFT is not a flow estimator: swap its network for an oracle and check the plumbing
    (normalisation to [-1, 1], padding, pair order, cropping) gives ~0 on a known-flow clip."""
    _, path = _save_random_raft(tmp_path)
    clip = translating_clip(num_frames=6, size=44)
    oracle = TranslationOracle(clip.frames, clip.flow[1])

    class RaftOracle(torch.nn.Module):
        def forward(self, img1, img2, num_flow_updates=12):
            h, w = clip.frames.shape[-2:]
            assert img1.shape[-1] % 8 == 0 and img1.min() < 0  # padded, scaled to [-1, 1]
            a, b = (img1[..., :h, :w] + 1) / 2, (img2[..., :h, :w] + 1) / 2
            flow = oracle(a, b)
            return [torch.nn.functional.pad(flow, (0, img1.shape[-1] - w, 0, img1.shape[-2] - h))]

    m = WarpError(flow="raft", raft_model="small", raft_weights=str(path))
    m.flow.model = RaftOracle()
    v = value(m, clip.frames, clip.frames)
    assert oracle.calls > 0 and 0 <= v < GT_TOL
    assert value(m, flicker(clip.frames, 8 / 255), clip.frames) > 5


def test_raft_missing_weights_names_file_and_key(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match=r"nope\.pth.*metrics\.warp_error\.raft_weights"):
        WarpError(flow="raft", raft_weights=str(missing))
    with pytest.raises(ValueError, match=r"metrics\.warp_error\.raft_weights"):
        WarpError(flow="raft")


@pytest.mark.slow
def test_raft_batch_size_does_not_change_scores(tmp_path):
    _, path = _save_random_raft(tmp_path)
    clip = generate_clip(4, 36, 44, seed=7)
    scores = []
    for bs in (1, 3):
        m = WarpError(
            flow="raft",
            raft_model="small",
            raft_weights=str(path),
            raft_iters=2,
            occlusion=False,
            batch_size=bs,
        )
        m.update(clip.frames, clip.frames)
        scores.append(m.frame_scores())
    torch.testing.assert_close(scores[0], scores[1], rtol=0, atol=1e-4, equal_nan=True)
