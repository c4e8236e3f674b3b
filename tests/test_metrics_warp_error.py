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


# -- the other published scripts, each against a transcription of its arithmetic (issue 32, item 5) ----------------
def _nonzero_flows(n, h, w, seed=0, shift=(1.3, -0.7), out_of_frame=True, amp=0.8):
    """Sub-pixel, spatially varying flows; an inconsistent patch (occluded for the forward-backward checks); a
    strip pointing out of the frame (the scripts' edge handling)."""
    g = torch.Generator().manual_seed(seed)
    smooth = torch.nn.functional.interpolate(
        torch.randn(n - 1, 2, 4, 4, generator=g), (h, w), mode="bilinear"
    )
    bwd = torch.tensor(shift)[None, :, None, None] + amp * smooth
    fwd = -bwd.clone()
    fwd[:, :, 5:14, 8:20] += 3.0
    if out_of_frame:
        fwd[:, 0, :, :3] -= 4.0
        bwd[:, 1, -2:, :] += 3.0
    return fwd, bwd


def _lai_resample2d(img, flow):
    """FlowNet2's Resample2d kernel (kernel_size 1), per output pixel: bilinear at (x + dx, y + dy), each corner
    index clamped to the frame. ``img`` H x W x C, ``flow`` H x W x 2 (numpy float64)."""
    import math

    import numpy as np

    h, w, _ = img.shape
    out = np.zeros_like(img)
    for y in range(h):
        for x in range(w):
            xf, yf = x + flow[y, x, 0], y + flow[y, x, 1]
            a, b = xf - math.floor(xf), yf - math.floor(yf)
            xl, xr = max(min(math.floor(xf), w - 1), 0), max(min(math.floor(xf) + 1, w - 1), 0)
            yt, yb = max(min(math.floor(yf), h - 1), 0), max(min(math.floor(yf) + 1, h - 1), 0)
            out[y, x] = (
                (1 - a) * (1 - b) * img[yt, xl]
                + a * (1 - b) * img[yt, xr]
                + (1 - a) * b * img[yb, xl]
                + a * b * img[yb, xr]
            )
    return out


def _lai_detect_occlusion(fw_flow, bw_flow):
    """utils.detect_occlusion as written (its own argument names; H x W x 2)."""
    import numpy as np

    fw_flow_w = _lai_resample2d(fw_flow, bw_flow)
    mag = lambda f: f[:, :, 0] ** 2 + f[:, :, 1] ** 2  # noqa: E731 - compute_flow_magnitude
    mask1 = mag(fw_flow_w + bw_flow) > 0.01 * (mag(fw_flow_w) + mag(bw_flow)) + 0.5
    h, w = bw_flow.shape[:2]
    fx_du, fx_dv, fy_du, fy_dv = (np.zeros((h, w)) for _ in range(4))
    fx, fy = bw_flow[:, :, 0], bw_flow[:, :, 1]
    fx_du[:, :-1] = fx[:, :-1] - fx[:, 1:]
    fx_dv[:-1, :] = fx[:-1, :] - fx[1:, :]
    fy_du[:, :-1] = fy[:, :-1] - fy[:, 1:]
    fy_dv[:-1, :] = fy[:-1, :] - fy[1:, :]
    mask2 = (fx_du**2 + fx_dv**2 + fy_du**2 + fy_dv**2) > 0.01 * mag(bw_flow) + 0.002
    occlusion = np.zeros((h, w))
    occlusion[np.logical_or(mask1, mask2) == 1] = 1
    return occlusion


def _lai_script_pair(img1, img2, fw_flow, bw_flow):
    """compute_flow_occlusion.py (``detect_occlusion(bw_flow, fw_flow)``: the arguments swapped), its occlusion PNG
    read back as 3 channels, then evaluate_WarpError.py for frames t-1 (img1) and t (img2), H x W x 3 in [0, 1]."""
    import numpy as np

    occ = _lai_detect_occlusion(bw_flow, fw_flow)
    occ_mask = np.repeat(np.uint8(occ * 255.0)[:, :, None], 3, axis=2).astype(np.float32) / 255.0
    noc_mask = 1 - occ_mask
    warp_img2 = _lai_resample2d(img2, fw_flow)
    diff = np.multiply(warp_img2 - img1, noc_mask)
    n = np.sum(noc_mask)
    if n == 0:
        n = diff.shape[0] * diff.shape[1] * diff.shape[2]
    return float(np.sum(np.square(diff)) / n), float(occ.mean())


def test_lai2018_equals_its_script_with_nonzero_flow():
    import numpy as np

    g = torch.Generator().manual_seed(1)
    n, h, w = 4, 18, 22
    out = torch.rand(n, 3, h, w, generator=g)
    source = torch.rand(n, 3, h, w, generator=g)
    fwd, bwd = _nonzero_flows(
        n, h, w, seed=1, amp=0.02
    )  # its motion-boundary test flags gradients > ~0.045 px
    fwd[:, 0, 1:5, 2:12] += (
        0.6  # inconsistent by 0.6 px: occluded with plain norms, not with its squared ones
    )
    metric = WarpError(flow=InjectedFlow(source, fwd, bwd), variant="lai2018")
    metric.update(out, source)
    got = metric.frame_scores()
    assert math.isnan(got[0])
    hwc = lambda t: t.permute(1, 2, 0).double().numpy()  # noqa: E731
    script = [_lai_script_pair(hwc(out[i]), hwc(out[i + 1]), hwc(fwd[i]), hwc(bwd[i])) for i in range(n - 1)]
    np.testing.assert_allclose(got[1:].numpy(), [e for e, _ in script], rtol=1e-6)
    assert all(0.05 < occ < 0.9 for _, occ in script), script  # both kinds of pixels
    assert metric.describe()["unit"] == "MSE (0-1)" and "Lai et al. 2018" in metric.describe()["display_name"]
    l1 = WarpError(flow=InjectedFlow(source, fwd, bwd))
    l1.update(out, source)
    assert not np.allclose(l1.frame_scores()[1:].numpy(), [e for e, _ in script], rtol=1e-2)


def _mawe_splat(left, flow):
    """mawe.py's warp_with_flow for one frame, with loops: each source pixel in row-major order writes itself to
    round(p + flow) (round half to even), so the last writer wins; unreached pixels are 0. ``left`` C x H x W."""
    import numpy as np

    c, h, w = left.shape
    remap = np.stack(np.meshgrid(np.arange(w), np.arange(h)), axis=0)  # [x, y] of itself
    hit = np.zeros((h, w), dtype=bool)
    tx = np.round((np.arange(w)[None, :] + flow[0]).astype(np.float32))
    ty = np.round((np.arange(h)[:, None] + flow[1]).astype(np.float32))
    for y in range(h):
        for x in range(w):
            qx, qy = int(tx[y, x]), int(ty[y, x])
            if 0 <= qx < w and 0 <= qy < h:
                remap[:, qy, qx] = (x, y)
                hit[qy, qx] = True
    warped = left[:, remap[1], remap[0]].copy()
    warped[:, ~hit] = 0
    return warped, hit


def _mawe_script(video_u8, flows, coeff=9.5):
    """get_mawe after its resize: per pair the masked squared error (0-255) over 3 x the reached pixels, the mean
    flow magnitude, their ratio over coeff; returns the per-pair ratios."""
    import numpy as np

    ratios = []
    for i in range(video_u8.shape[0] - 1):
        left, right = video_u8[i].astype(np.float32), video_u8[i + 1].astype(np.float32)
        f = flows[i]
        motion = float(np.mean(np.sqrt(f[0] ** 2 + f[1] ** 2)))
        warped, hit = _mawe_splat(left, f)
        known = np.repeat((~hit)[None] == 0, 3, axis=0).astype(np.float32)
        diff = (right - warped) * known
        n = known.sum() or diff.size
        ratios.append(float((diff**2).sum() / n) / (coeff * motion))
    return ratios


@pytest.mark.parametrize("size", [None, (20, 26)])
def test_mawe_equals_its_script_with_nonzero_flow(size):
    """Forward splat with collisions (a converging flow), pixels nothing reaches, flow on the scored video itself,
    the resize to mawe_size (torchvision's, as the script calls it)."""
    import numpy as np
    import torchvision.transforms.functional as TF

    g = torch.Generator().manual_seed(2)
    n, h, w = 4, 16, 20
    out = (torch.rand(n, 3, h, w, generator=g) * 255).round() / 255
    u8 = (out * 255).round().to(torch.uint8)
    if size is not None:
        u8 = TF.resize(u8, list(size), antialias=False)
    hh, ww = u8.shape[-2:]
    fwd, _ = _nonzero_flows(n, hh, ww, seed=2, shift=(2.4, 1.1))
    fwd[:, 0, :, ww // 2 :] -= 1.7  # converging: several sources land on one pixel
    scored = u8.float() / 255
    metric = WarpError(
        flow=InjectedFlow(scored, fwd, torch.zeros_like(fwd)), variant="mawe", mawe_size=size, mawe_coeff=9.5
    )
    metric.update(out, torch.zeros_like(out))  # the input plays no part: flow on the scored video
    got = metric.frame_scores()[1:].numpy()
    want = _mawe_script(u8.numpy(), fwd.numpy())
    np.testing.assert_allclose(got, want, rtol=1e-5)
    _, hit = _mawe_splat(u8[0].numpy().astype(np.float32), fwd[0].numpy())
    assert 0.05 < 1 - hit.mean() < 0.6  # some pixels nothing reaches
    assert metric.config()["mawe_size"] == (None if size is None else list(size))


def test_streamv2v_lag_stores_call_i_at_index_i_and_auto_reads_the_emissions():
    """lag=k scores the video a script storing call i's output at index i writes (frame i-k, frame 0's output
    before the first emission), warped with the input's i -> i+1 flow; lag='auto' takes it from the emissions."""
    import numpy as np

    g = torch.Generator().manual_seed(3)
    n, h, w, k = 6, 24, 32, 2
    edits = (torch.rand(n, 3, h, w, generator=g) * 255).round() / 255
    source = torch.rand(n, 3, h, w, generator=g)
    fwd, bwd = _nonzero_flows(n, h, w, seed=3, out_of_frame=False)
    to_u8 = lambda f: (f * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()  # noqa: E731
    stored = [edits[max(0, i - k)] for i in range(n)]  # call i returns frame i - k
    want = [
        _streamv2v_script_pair(to_u8(stored[i]), to_u8(stored[i + 1]), fwd[i], bwd[i])[0]
        for i in range(n - 1)
    ]
    fixed = WarpError(flow=InjectedFlow(source, fwd, bwd), variant="streamv2v_compat", lag=k)
    fixed.update(edits, source)
    np.testing.assert_allclose(fixed.frame_scores()[1:].numpy(), want, rtol=1e-9)
    auto = WarpError(flow=InjectedFlow(source, fwd, bwd), variant="streamv2v_compat", lag="auto")
    assert auto.needs_emissions
    auto.update(edits, source)
    with pytest.raises(ValueError, match="set_emissions"):
        auto.frame_scores()
    auto.reset()
    auto.set_emissions([min(j + k, n) for j in range(n)])  # a 3-step stream batch: output j from call j + 2
    auto.update(edits, source)
    np.testing.assert_allclose(auto.frame_scores()[1:].numpy(), want, rtol=1e-9)
    unlagged = WarpError(flow=InjectedFlow(source, fwd, bwd), variant="streamv2v_compat")
    unlagged.update(edits, source)
    assert not np.allclose(unlagged.frame_scores()[1:].numpy(), want)
    assert fixed.config()["lag"] == k and auto.config()["lag"] == "auto"
    chunked = WarpError(flow=InjectedFlow(source, fwd, bwd), variant="streamv2v_compat", lag=k)
    for i in range(0, n, 4):  # the runner's chunks: held, then scored as one video
        chunked.update(edits[i : i + 4], source[i : i + 4])
    np.testing.assert_allclose(chunked.frame_scores()[1:].numpy(), want, rtol=1e-9)


def test_emitting_calls_of_a_stream_batch():
    from baselines.busy import BusyMethod
    from eval.timing import run_stream

    frames = torch.rand(7, 3, 8, 8)
    m = BusyMethod(iterations=1, size=8, delay=2)
    m.prepare("", height=8, width=8, seed=0)
    rec = run_stream(m, frames)
    assert rec.emitting_calls() == [2, 3, 4, 5, 6, 7, 7]  # the last two come out of the flush


def _torchvision_write_read(frames, fps):
    """torchvision.io.write_video (<= 0.24) then read_video, as StreamV2V's scripts call them: uint8 by
    torch.as_tensor(dtype=uint8) (truncation), libx264, yuv420p, no options, int(round(fps)); decoded as rgb24."""
    import av
    import numpy as np

    video = torch.as_tensor(frames.permute(0, 2, 3, 1) * 255, dtype=torch.uint8).numpy()
    import io

    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=int(np.round(fps)))
        stream.width, stream.height = video.shape[2], video.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {}
        for img in video:
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    buf.seek(0)
    with av.open(buf) as container:
        return np.stack([f.to_rgb().to_ndarray() for f in container.decode(video=0)])


def test_mp4_and_jpeg_reencode_as_the_scripts_writers(tmp_path):
    import cv2
    import numpy as np

    from eval.metrics import warp_variants as wv

    clip = generate_clip(5, 32, 48, seed=6)
    frames = (clip.frames * 255 + 0.6).floor().clamp(0, 255) / 255 + 0.7 / 255  # fractional: truncation shows
    frames = frames.clamp(0, 1)
    got = wv.mp4_roundtrip(frames, fps=24.0)
    want = _torchvision_write_read(frames, 23.6)
    assert np.array_equal((got * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy(), want)
    assert (got - frames).abs().max() > 1 / 255  # the codec changed the frames
    # Lai et al.: save_img (np.uint8(x * 255), cv2.imwrite .jpg with OpenCV's default quality) then read_img
    jpg = wv.jpeg_roundtrip(frames)
    for i in range(frames.shape[0]):
        img = frames[i].permute(1, 2, 0).numpy()[:, :, ::-1]
        path = str(tmp_path / f"{i:05d}.jpg")
        cv2.imwrite(path, np.uint8(np.clip(img, 0, 1) * 255.0), [cv2.IMWRITE_PNG_COMPRESSION, 0])
        back = np.float32(cv2.imread(path)[:, :, ::-1]) / 255.0
        np.testing.assert_array_equal(jpg[i].permute(1, 2, 0).numpy(), back)
    # the metric scores the re-encoded output, and says so in its settings
    src = clip.frames
    fwd, bwd = _nonzero_flows(5, 32, 48, seed=6)
    m = WarpError(flow=InjectedFlow(src, fwd, bwd), variant="streamv2v_compat", encode="mp4")
    plain = WarpError(flow=InjectedFlow(src, fwd, bwd), variant="streamv2v_compat")
    m.update(frames, src)
    plain.update(wv.mp4_roundtrip(frames), src)
    torch.testing.assert_close(m.frame_scores(), plain.frame_scores(), equal_nan=True)
    assert m.config()["encode"] == "mp4" and m.config()["mp4_fps"] == 24.0
    with pytest.raises(ValueError, match="encode must be one of"):
        WarpError(encode="webm")
    with pytest.raises(ValueError, match="lag must be"):
        WarpError(lag=-1)


def test_runner_hands_each_methods_emissions_to_lag_auto(tmp_path):
    """Through the runner: +metrics/add=published's StreamV2V row (lag=auto, mp4) on a stream batch of depth 3
    equals lag=2 computed directly on the same outputs, kept outputs re-scored included."""
    import pandas as pd

    from eval.datasets.synthetic import generate_clip
    from eval.metrics import warp_variants as wv
    from tests.conftest import run_config

    base = [
        "dataset.num_videos=1",
        "dataset.num_frames=8",
        "method=[]",
        "+method.delay._target_=tests.fake_methods.DelayMethod",
        "+method.delay.delay=2",
        "metrics=none",
        "+metrics/add=published",
        "~metrics.mawe",
        "~metrics.warp_error_lai2018",
        "+metrics.warp_error.flow=dis",
        "+metrics.warp_error.dis_preset=medium",
        "+metrics.warp_error.raft_model=large",
        "+metrics.warp_error.raft_weights=null",
        "+metrics.warp_error.raft_iters=12",
        "+metrics.warp_error._target_=eval.metrics.warp_error.WarpError",
        "runner.keep_outputs=true",
        "report.enabled=false",
    ]
    s = run_config(tmp_path, *base)
    f = s.frames
    got = f[f.metric == "warp_error_streamv2v_script"].sort_values("frame").value.to_numpy()
    clip = generate_clip(8, 64, 64, seed=0).frames
    out = (1.0 - clip).half().float()  # runner.keep_outputs: scored from the kept float16 outputs
    m = WarpError(flow="dis", variant="streamv2v_compat", lag=2, encode="mp4", mp4_fps=24)
    m.update(out, clip)
    import numpy as np

    np.testing.assert_allclose(got, m.frame_scores().numpy(), rtol=1e-6, equal_nan=True)
    unlagged = WarpError(flow="dis", variant="streamv2v_compat", encode="mp4", mp4_fps=24)
    unlagged.update(out, clip)
    assert not np.allclose(got[1:], unlagged.frame_scores().numpy()[1:])
    assert wv.stored_video(clip, wv.fixed_lag(8, 2)).shape == clip.shape
    again = run_config(
        tmp_path, *base, "+metrics.frame_diff._target_=eval.metrics.frame_diff.MeanAbsFrameDiff", name="b"
    )
    assert [u.status for u in again.units] == ["rescored"]
    g = again.frames
    pd.testing.assert_series_equal(
        g[g.metric == "warp_error_streamv2v_script"].sort_values("frame").value.reset_index(drop=True),
        f[f.metric == "warp_error_streamv2v_script"].sort_values("frame").value.reset_index(drop=True),
    )
