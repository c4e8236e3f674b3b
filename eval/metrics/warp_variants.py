"""The published warp-error scripts, end to end, as options of ``eval.metrics.warp_error.WarpError`` — for comparing
with numbers those scripts produced (the default ``l1`` variant is the one to rank methods with).

Written from each script's arithmetic (read, never copied); tests/test_metrics_warp_error.py checks each against a
transcription of its script on non-zero flow. Frames are ``[3, H, W]`` float in ``[0, 1]``; flows follow
``eval.metrics.flow``'s convention (``flow(a -> b)`` with ``a(p) ≈ b(p + flow(p))``, x then y).

* **StreamV2V** (Jeff-LiangF/streamv2v ``tools/warp_error.py`` on videos written by ``vid2vid/main.py``): the
  arithmetic is ``variant=streamv2v_compat`` (``warp_error.py``); ``lag`` rebuilds the video its script stores
  (call *i*'s output at index *i*, :func:`stored_video`) and ``encode=mp4`` its ``torchvision.io.write_video``
  round trip (:func:`mp4_roundtrip`).
* **Lai et al. 2018** (phoenix104104/fast_blind_video_consistency ``evaluate_WarpError.py`` with the occlusion of
  ``compute_flow_occlusion.py``, MIT): :func:`lai2018_pair`; ``encode=jpeg`` is its ``save_img`` / ``read_img`` round
  trip of the output frames (:func:`jpeg_roundtrip`). Its flow is FlowNet2, which this project does not have.
* **StreamingT2V's MAWE** (Picsart-AI-Research/StreamingT2V, branch StreamingModelscope, ``mawe.py``): :func:`mawe_pair`
  on the video resized to 720x720 (:func:`resize_u8`), flow estimated on that video itself.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import cv2
import numpy as np
import torch
from torch import Tensor

from eval.metrics.flow import warp

ENCODINGS = ("none", "mp4", "jpeg")


# -- the stored video: lag -----------------------------------------------------------------------------------------
def stored_video(outputs: Tensor, emitted_by: Sequence[int]) -> Tensor:
    """The video a script that stores *call i's output at index i* writes (StreamV2V's ``vid2vid/main.py``).

    ``emitted_by[j]``: the push call that emitted output frame j (``len(outputs)`` for the final flush, which such a
    script never calls). Index i holds the newest frame emitted by call i, or by the last call before it that emitted
    one; before the first emission, frame 0's output (the script pushes frame 0 ``batch_size`` times before its
    loop, so its first calls return outputs of frame 0). A stream batch of n steps gives ``outputs[max(0, i-(n-1))]``.
    """
    n = outputs.shape[0]
    emitted_by = [int(c) for c in emitted_by]
    if len(emitted_by) != n:
        raise ValueError(f"emitted_by has {len(emitted_by)} entries for {n} output frames")
    newest: dict[int, int] = {}
    for j, c in enumerate(emitted_by):
        if c < n:
            newest[c] = max(newest.get(c, -1), j)
    idx, last = [], 0
    for i in range(n):
        last = newest.get(i, last)
        idx.append(last)
    return outputs[torch.tensor(idx, dtype=torch.long)]


def fixed_lag(n: int, lag: int) -> list[int]:
    """``emitted_by`` of a method whose output j comes out of call ``j + lag`` (the flush for the last ``lag``)."""
    return [min(j + lag, n) for j in range(n)]


# -- what the scripts' writers do to the frames --------------------------------------------------------------------
def truncate_u8(frames: Tensor) -> Tensor:
    """``[T, 3, H, W]`` in [0, 1] -> uint8 ``[T, H, W, 3]`` by truncation, as ``torch.as_tensor(x * 255, uint8)`` and
    ``np.uint8(x * 255)`` do in those scripts (not rounding)."""
    return (frames.clamp(0, 1) * 255.0).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def mp4_roundtrip(frames: Tensor, fps: float = 24.0) -> Tensor:
    """Write ``frames`` as ``torchvision.io.write_video`` did (uint8 by truncation, libx264, yuv420p, the codec's
    default options, ``round(fps)``) and read them back as ``read_video`` did (rgb24): what StreamV2V's warp-error
    script reads. In memory, with PyAV; a build without libx264 is refused (another codec is another number)."""
    import av

    arr = truncate_u8(frames).numpy()
    t, h, w, _ = arr.shape
    if h % 2 or w % 2:
        raise ValueError(f"warp_error encode=mp4: yuv420p needs an even frame size, got {h}x{w}")
    if "libx264" not in av.codecs_available:
        raise RuntimeError("warp_error encode=mp4 needs PyAV with libx264 (StreamV2V's write_video codec)")
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=int(round(fps)))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for img in arr:
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    buf.seek(0)
    with av.open(buf) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    if len(decoded) != t:
        raise RuntimeError(f"warp_error encode=mp4: wrote {t} frames, read back {len(decoded)}")
    return torch.from_numpy(np.stack(decoded)).permute(0, 3, 1, 2).float() / 255.0


def jpeg_roundtrip(frames: Tensor, quality: int = 95) -> Tensor:
    """Lai et al.'s ``save_img`` (``np.uint8(clip(x) * 255)``, ``cv2.imwrite`` as .jpg: OpenCV's default quality 95)
    then ``read_img`` (``cv2.imread``, BGR -> RGB, / 255)."""
    out = []
    for img in truncate_u8(frames).numpy():
        ok, data = cv2.imencode(
            ".jpg", np.ascontiguousarray(img[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality]
        )
        if not ok:
            raise RuntimeError("warp_error encode=jpeg: OpenCV could not encode a frame")
        out.append(cv2.imdecode(data, cv2.IMREAD_COLOR)[:, :, ::-1])
    return torch.from_numpy(np.ascontiguousarray(np.stack(out))).permute(0, 3, 1, 2).float() / 255.0


def encode(frames: Tensor, how: str, *, fps: float = 24.0, jpeg_quality: int = 95) -> Tensor:
    if how == "none":
        return frames
    if how == "mp4":
        return mp4_roundtrip(frames, fps)
    if how == "jpeg":
        return jpeg_roundtrip(frames, jpeg_quality)
    raise ValueError(f"warp_error encode must be one of {ENCODINGS}, got {how!r}")


# -- Lai et al. 2018 -----------------------------------------------------------------------------------------------
def lai2018_occlusion(fwd: Tensor, bwd: Tensor) -> Tensor:
    """``compute_flow_occlusion.py``'s mask of frame t-1 (``True`` = occluded), from ``fwd`` = flow t-1 -> t (frame
    t-1's pixels) and ``bwd`` = flow t -> t-1 (frame t's pixels), both ``[2, H, W]``.

    Its ``utils.detect_occlusion(fw_flow, bw_flow)`` is called with the two flows swapped, so in terms of the actual
    flows: ``b' = bwd(p + fwd(p))`` (bilinear, edge-clamped like FlowNet2's Resample2d), occluded where
    ``|fwd + b'|^2 > 0.01 (|b'|^2 + |fwd|^2) + 0.5`` (squared norms) or on a motion boundary of ``fwd``:
    ``|d_x fwd|^2 + |d_y fwd|^2 > 0.01 |fwd|^2 + 0.002`` with forward differences (0 in the last column / row)."""
    fwd, bwd = fwd.double(), bwd.double()
    b_at = warp(bwd[None], fwd[None], padding_mode="border")[0]
    mag = lambda f: (f**2).sum(0)  # noqa: E731 - the script's compute_flow_magnitude (squared)
    mask1 = mag(fwd + b_at) > 0.01 * (mag(b_at) + mag(fwd)) + 0.5
    du = torch.zeros_like(fwd)
    dv = torch.zeros_like(fwd)
    du[:, :, :-1] = fwd[:, :, :-1] - fwd[:, :, 1:]
    dv[:, :-1, :] = fwd[:, :-1, :] - fwd[:, 1:, :]
    mask2 = (du**2 + dv**2).sum(0) > 0.01 * mag(fwd) + 0.002
    return mask1 | mask2


def lai2018_pair(prev: Tensor, cur: Tensor, fwd: Tensor, bwd: Tensor, occlusion: bool = True) -> float:
    """``evaluate_WarpError.py`` for one pair: frame t warped into frame t-1 with the forward flow
    (``cur(p + fwd(p))``, edge-clamped bilinear), squared difference to frame t-1 over the non-occluded pixels,
    summed over channels and divided by 3 x their number (0 when none is left: its ``N`` falls back to all pixels
    while the masked difference is 0). On the [0, 1] scale."""
    warped = warp(cur[None].double(), fwd[None].double(), padding_mode="border")[0]
    noc = (
        (~lai2018_occlusion(fwd, bwd)).double()
        if occlusion
        else torch.ones(prev.shape[1:], dtype=torch.float64)
    )
    diff = (warped - prev.double()) * noc
    n = 3.0 * float(noc.sum())
    if n == 0:
        n = float(diff.numel())
    return float((diff**2).sum()) / n


# -- StreamingT2V's MAWE -------------------------------------------------------------------------------------------
def resize_u8(frames_u8: Tensor, size: Sequence[int]) -> Tensor:
    """``torchvision.transforms.functional.resize(video, size, antialias=False)`` on a uint8 ``[T, 3, H, W]`` video
    (bilinear, rounded back to uint8), as ``mawe.py`` does to 720x720."""
    import torchvision.transforms.functional as TF

    return TF.resize(frames_u8, list(size), antialias=False)


def forward_splat(img: Tensor, flow: Tensor) -> tuple[Tensor, Tensor]:
    """``mawe.py``'s ``warp_with_flow``: every pixel p of ``img`` ``[C, H, W]`` moved to ``round(p + flow(p))``
    (round half to even, as ``torch.round``); where several land on one pixel the last in row-major order wins;
    pixels nothing lands on are 0. Returns (warped, hit mask ``[H, W]``)."""
    c, h, w = img.shape
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    tx = (xs.float() + flow[0]).round().to(torch.int64)
    ty = (ys.float() + flow[1]).round().to(torch.int64)
    inside = (tx >= 0) & (ty >= 0) & (tx < w) & (ty < h)
    src = (ys * w + xs)[inside].numpy()
    dst = (ty * w + tx)[inside].numpy()
    source_of = np.arange(h * w)
    source_of[dst] = src  # numpy fancy assignment, as the script's: the last write wins
    hit = np.zeros(h * w, dtype=bool)
    hit[dst] = True
    flat = img.reshape(c, h * w)
    warped = flat[:, torch.from_numpy(source_of)].reshape(c, h, w).clone()
    hit_t = torch.from_numpy(hit).reshape(h, w)
    warped[:, ~hit_t] = 0
    return warped, hit_t


def mawe_pair(
    left_u8: Tensor, right_u8: Tensor, flow: Tensor, coeff: float = 9.5
) -> tuple[float, float, float]:
    """One pair of ``mawe.py``'s ``get_mawe``: ``left_u8``/``right_u8`` uint8 ``[3, H, W]`` (already resized),
    ``flow`` = flow left -> right ``[2, H, W]``. The warp error is the squared difference on the 0-255 scale over the
    pixels the forward splat reached (3 x their number; all pixels when none), the motion the mean flow magnitude;
    returns (warp error / (coeff x motion), warp error, motion)."""
    motion = float(flow.double().norm(dim=0).mean())
    warped, hit = forward_splat(left_u8.double(), flow)
    known = hit.double()[None].expand(3, -1, -1)
    diff = (right_u8.double() - warped) * known
    n = float(known.sum())
    if n == 0:
        n = float(diff.numel())
    err = float((diff**2).sum()) / n
    if (
        motion == 0
    ):  # the script divides anyway: inf (nan for 0 / 0); here an undefined score, left out of the mean
        return float("nan"), err, motion
    return err / (coeff * motion), err, motion
