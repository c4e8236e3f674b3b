"""AnimateDiff over sliding context windows: the offline, *bidirectional* quality reference that Live2Diff's causal
temporal attention approximates.

**Which AnimateDiff this is.** The context scheduling is ComfyUI-AnimateDiff-Evolved's ``standard_static`` style
(``create_windows_static_standard``: windows of ``context_length`` frames every ``context_length - context_overlap``,
the last one moved back to end at the last frame; the noise predictions of overlapping windows fused at every step)
with **flat** fusion weights (its ``ContextOptions`` default; its node defaults to ``pyramid`` weights and overlap 4)
and overlap ``window - stride`` = 8 at the defaults (16 / 8). It is *not* guoyww/AnimateDiff's pipeline, which runs
the motion modules over the whole clip in **one pass** (no windows, no averaging; window averaging exists there only
as an unmerged pull request). Published "AnimateDiff" numbers from that pipeline are not this row's.

* **Motion modules as AnimateDiff runs them**: the UNet's temporal attention sees every frame of its window in both
  directions, and each motion module's GroupNorm normalises **per frame** (AnimateDiff's
  ``TemporalTransformer3DModel`` folds frames into the batch before its norm; diffusers' motion block pools over all
  frames, which would leak frames into each other by a path AnimateDiff does not have) — :class:`FrameGroupNorm`.
* **Windows averaged at every step** (AnimateDiff's context scheduling for clips longer than its motion module):
  windows of ``window`` frames start every ``stride`` frames; at each LCM step every window predicts the noise of its
  frames, a frame's predictions are averaged over the windows that contain it, and only then is the step taken — so
  overlapping windows agree at every step, not just in their final latents. The stream's last window ends at its last
  frame; it adds to the frames still open when the stream ends (a frame never waits for the end of the stream).
* **Motion weights**: ``model.weights.animatediff_motion`` (an AnimateDiff motion-module checkpoint, reference key
  names, e.g. ``mm_sd_v15_v2.ckpt``; ``model.unet.motion_mid_block`` / ``motion_max_seq_length`` must match it).
  Without it the UNet keeps ``model.weights.motion`` (Live2Diff's causally trained, depth-fine-tuned modules, run
  bidirectionally here: a warning says so), the trained tiny model's (``model=tiny``) or random weights.
  ``info["motion_weights"]`` records which.
* **Depth**: off by default (AnimateDiff has no depth input); ``depth: true`` adds Live2Diff's depth latent after
  ``conv_in`` (for Live2Diff's depth-fine-tuned weights). Stated in ``info["depth"]``.
* **Noise schedule**: AnimateDiff's inference configs (``beta_schedule: linear``).
* **Prompt encoding**: ``clip_skip: 0``, the text encoder's final layer, as AnimateDiff's ``_encode_prompt``.

Offline by nature: a frame's output waits for the windows around it at every step, so ``lookahead`` (computed from
window, stride and the number of steps) is large, most pushes only VAE-encode and a few run whole windows — the
per-call time is bursty (``offline_reference = True``: its steady-state FPS is not a speed; the end-to-end latency in
the results shows the cost).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from baselines.common import latent_size, seeded_noise
from eval.interface import Emission
from live2diff.attention import temporal_blocks, use_frame_groupnorm
from live2diff.components import (
    DEFAULT_T_INDEX_LIST,
    MissingWeightsError,
    build_components,
    depth_latents,
    encode_prompt,
    make_lcm_schedule,
    vae_decode,
    vae_encode,
    with_clip_skip,
)
from live2diff.noise_schedule import schedule_name, scheduler_with_betas

log = logging.getLogger(__name__)

MOTION_KEY = "model.weights.animatediff_motion"


def install_frame_groupnorm(unet: nn.Module) -> int:
    """Replace every motion module's GroupNorm with :class:`FrameGroupNorm` (same parameters); returns how many."""
    n = 0
    for _, tm in temporal_blocks(unet):
        use_frame_groupnorm(tm)
        n += 1
    if not n:
        raise ValueError("animatediff_window: the UNet has no motion modules")
    return n


def window_starts(n_frames: int, window: int, stride: int, final: bool) -> list[int]:
    """Starts of the windows over ``n_frames`` frames: every ``stride`` while a whole window fits; with ``final``
    (the stream has ended) one more window ending at the last frame if the regular ones do not."""
    starts = list(range(0, n_frames - window + 1, stride))
    if final and (not starts or starts[-1] + window < n_frames):
        starts.append(max(0, n_frames - window))
    return starts


def window_lookahead(window: int, stride: int, n_steps: int) -> int:
    """Future frames an output may depend on when predictions are averaged over windows at every step.

    ``D[j][g]``: the last frame that frame g's latent at step j depends on (``D[0][g] = g``); a step mixes in every
    frame of every window containing g, so ``D[j+1][g] = max(D[j][g'] for g' in those windows)``. The output is
    ``D[n_steps]``; the lookahead is the largest ``D[n_steps][g] - g`` (periodic in g with the stride)."""
    span = (n_steps + 2) * window + 2 * stride
    d = list(range(span))
    for _ in range(n_steps):
        nxt = list(d)
        for s in range(0, span - window + 1, stride):
            top = max(d[s : s + window])
            for g in range(s, s + window):
                nxt[g] = max(nxt[g], top)
        d = nxt
    return max(d[g] - g for g in range(stride + window))


class AnimateDiffWindow:
    initial_block = 0
    offline_reference = True  # bursty per-call time: the report must not show its steady-state FPS as a speed
    reference_settings = {"clip_skip": 0}  # any other value is named in the report header (eval.method_notes)

    def __init__(
        self,
        model: Any = "tiny",
        device: str = "cpu",
        dtype: str = "float32",
        t_index_list: list[int] | tuple[int, ...] = DEFAULT_T_INDEX_LIST,
        window: int = 16,
        stride: int = 8,
        num_inference_steps: int = 50,
        noise_schedule: str | None = "linear",
        depth: bool | str = False,
        clip_skip: int | None = 0,
    ) -> None:
        if isinstance(depth, str):
            depth = depth.lower() not in ("none", "off", "false", "no")
        # guoyww/AnimateDiff's _encode_prompt takes text_encoder(...)[0]: the final layer (clip_skip 0)
        comps = with_clip_skip(build_components(model, device, dtype), clip_skip)
        weights = (comps.cfg or {}).get("weights") or {}
        self.motion_weights = self._load_motion(comps, weights)
        if depth and (comps.depth is None or comps.depth_mapper is None):
            raise ValueError("animatediff_window depth: true needs a depth model (model.depth.kind is none)")
        self.use_depth = bool(depth)
        self.comps = dataclasses.replace(
            comps,
            depth=comps.depth if depth else None,
            depth_mapper=comps.depth_mapper if depth else None,
            scheduler=scheduler_with_betas(comps.scheduler, noise_schedule),
        )
        self.noise_schedule = schedule_name(self.comps.scheduler)
        install_frame_groupnorm(self.comps.unet)
        self._depth_feat: Tensor | None = None
        if self.use_depth:
            self.comps.unet.conv_in.register_forward_hook(self._add_depth)
        max_len = int(self.comps.unet.config.get("motion_max_seq_length", 32))
        if not 1 <= int(window) <= max_len:
            raise ValueError(
                f"window must be in [1, {max_len}] (the motion module's positions), got {window}"
            )
        if not 1 <= int(stride) <= int(window):
            raise ValueError(f"stride must be in [1, window={window}], got {stride}")
        self.window, self.stride = int(window), int(stride)
        self.device = self.comps.device
        self.schedule = make_lcm_schedule(self.comps.scheduler, t_index_list, num_inference_steps)
        self.n_steps = self.schedule.n_steps
        self.lookahead = window_lookahead(self.window, self.stride, self.n_steps)
        # the first output needs `lookahead` more frames; from then on every `stride` pushes emit `stride` frames:
        # the runner's untimed warm-up covers that (eval.interface)
        self.steady_state_frames = self.lookahead + 1
        self.reset()

    @staticmethod
    def _load_motion(comps, weights: dict) -> str:
        def given(v: Any) -> bool:
            return v not in (None, "") and str(v).lower() not in ("none", "random", "n/a", "null")

        path = weights.get("animatediff_motion")
        if given(path):
            from live2diff.convert import check_motion_norm_groups, load_reference_checkpoint

            if not Path(path).exists():
                raise MissingWeightsError(path, MOTION_KEY, "AnimateDiff motion-module checkpoint")
            check_motion_norm_groups(comps.unet, path, MOTION_KEY)
            load_reference_checkpoint(path, comps.unet, None, key=MOTION_KEY)
            return f"animatediff:{Path(path).name}"
        if given(weights.get("motion")):
            log.warning(
                "animatediff_window runs Live2Diff's motion modules (model.weights.motion: causally trained, "
                "depth-fine-tuned) bidirectionally; set %s to an AnimateDiff motion-module checkpoint for the "
                "reference AnimateDiff",
                MOTION_KEY,
            )
            return f"live2diff:{Path(weights['motion']).name}"
        if given(
            weights.get("trained")
        ):  # the project's tiny model: motion modules trained with Live2Diff's mask
            log.info("animatediff_window runs the trained tiny model's (causally trained) motion modules")
            return f"trained:{Path(weights['trained']).name}"
        return "random"

    @property
    def info(self) -> dict[str, Any]:
        """How this method ran, recorded per unit for the report."""
        return {
            "noise_schedule": self.noise_schedule,
            "clip_skip": self.comps.clip_skip,
            "offline_reference": True,
            "motion_weights": self.motion_weights,
            "depth": self.use_depth,
            "window": self.window,
            "stride": self.stride,
        }

    # -- StreamMethod -------------------------------------------------------------------------------------------
    def prepare(self, prompt: str, *, height: int, width: int, seed: int) -> None:
        self.reset()
        self.seed, self.size = int(seed), (int(height), int(width))
        self.work_size = latent_size(self.comps, height, width)
        self.prompt_embeds = encode_prompt(self.comps, prompt)
        self._prepared = True

    def push(self, index: int, frame: Tensor) -> list[Emission]:
        if not self._prepared:
            raise RuntimeError("call prepare() before push()")
        if index != self.n_pushed:
            raise ValueError(f"frames must be pushed in order: expected index {self.n_pushed}, got {index}")
        x = frame[None].to(self.device, torch.float32)
        if tuple(x.shape[-2:]) != self.work_size:
            x = F.interpolate(x, self.work_size, mode="bilinear", align_corners=False)
        z = vae_encode(self.comps, x)
        if self.use_depth:
            self.feats[index] = self.comps.depth_mapper(depth_latents(self.comps, x))
        self.x[index] = {0: self.schedule.add_noise(z, self._noise(index, 0, z), 0)}
        self.n_pushed += 1
        return self._advance(final=False)

    def flush(self) -> list[Emission]:
        if not self._prepared or self.n_pushed == 0:
            return []
        return self._advance(final=True)

    def reset(self) -> None:
        self.x: dict[int, dict[int, Tensor]] = {}  # frame -> step -> noisy latent at that step
        self.eps_sum: dict[tuple[int, int], Tensor] = {}  # (frame, step) -> sum of its windows' predictions
        self.eps_n: dict[tuple[int, int], int] = {}
        self.done: set[tuple[int, int]] = set()  # (window start, step) computed
        self.closed: set[tuple[int, int]] = set()  # (frame, step) whose prediction is final (step taken)
        self.feats: dict[int, Tensor] = {}
        self.keep_from = 0  # frames and windows before this are finished and forgotten
        self.n_pushed = 0
        self._prepared = False

    # -- machinery ----------------------------------------------------------------------------------------------
    def _noise(self, index: int, step: int, like: Tensor) -> Tensor:
        return seeded_noise(tuple(like.shape), self.seed, 7919, index, step).to(like.device, like.dtype)

    def _add_depth(self, module, inputs, output):
        return output if self._depth_feat is None else output + self._depth_feat

    @torch.no_grad()
    def _run(self, start: int, n: int, step: int) -> None:
        """Step ``step``'s noise prediction for the window of frames ``start .. start + n - 1`` (bidirectional)."""
        idx = range(start, start + n)
        x = torch.cat([self.x[g][step] for g in idx])  # [F, C, h, w]
        emb = self.prompt_embeds.repeat(n, 1, 1)
        self._depth_feat = torch.cat([self.feats[g] for g in idx]) if self.use_depth else None
        try:
            t = self.schedule.timesteps[step].to(self.device)
            eps = self.comps.unet(x.transpose(0, 1)[None], t, encoder_hidden_states=emb, return_dict=False)[0]
        finally:
            self._depth_feat = None
        for g, e in zip(idx, eps[0].transpose(0, 1).split(1)):
            if (
                g,
                step,
            ) in self.closed:  # the stream's last window: frames already stepped keep their prediction
                continue
            key = (g, step)
            self.eps_sum[key] = self.eps_sum[key] + e if key in self.eps_sum else e
            self.eps_n[key] = self.eps_n.get(key, 0) + 1
        self.done.add((start, step))

    def _close(self, g: int, step: int, out: list[tuple[int, Tensor]]) -> None:
        """Take frame g's step with its averaged prediction."""
        eps = self.eps_sum.pop((g, step)) / self.eps_n.pop((g, step))
        x0 = self.schedule.denoise(self.x[g][step], eps, step)
        self.closed.add((g, step))
        if step + 1 < self.n_steps:
            self.x[g][step + 1] = self.schedule.add_noise(x0, self._noise(g, step + 1, x0), step + 1)
        else:
            out.append((g, x0))

    def _advance(self, final: bool) -> list[Emission]:
        """Run every window step that has its inputs and close every frame whose windows are all in, until nothing
        moves; ``final``: the stream has ended (its last window is known)."""
        n = self.n_pushed
        starts = window_starts(n, self.window, self.stride, final)
        spans = {s: min(self.window, n - s) for s in starts if s + self.window > self.keep_from}
        out: list[tuple[int, Tensor]] = []
        moved = True
        while moved:
            moved = False
            for j in range(self.n_steps):
                for s, w in spans.items():
                    if (s, j) not in self.done and all(j in self.x[g] for g in range(s, s + w)):
                        self._run(s, w, j)
                        moved = True
                for g in sorted(self.x):
                    if (g, j) in self.closed or j not in self.x[g]:
                        continue
                    mine = [s for s in starts if s <= g < s + min(self.window, n - s)]
                    if not final:  # windows that will contain g once enough frames are pushed
                        mine += [
                            s for s in range(0, g + 1, self.stride) if s + self.window > g and s not in spans
                        ]
                    if mine and all((s, j) in self.done for s in mine):
                        self._close(g, j, out)
                        moved = True
        self._prune(n)
        if not out:
            return []
        out.sort(key=lambda t: t[0])
        img = vae_decode(self.comps, torch.cat([x0 for _, x0 in out]))
        if tuple(img.shape[-2:]) != self.size:
            img = F.interpolate(img, self.size, mode="bilinear", align_corners=False).clamp(0, 1)
        return [(g, im) for (g, _), im in zip(out, img)]

    def _prune(self, n: int) -> None:
        """Forget frames no window will read again: before every open window and before the stream's last possible
        window (which starts no earlier than ``n - window``)."""
        open_starts = [
            s for s in range(0, n, self.stride) if any((s, j) not in self.done for j in range(self.n_steps))
        ]
        keep_from = min(open_starts + [max(0, n - self.window)])
        for g in [g for g in self.x if g < keep_from and (g, self.n_steps - 1) in self.closed]:
            del self.x[g]
            self.feats.pop(g, None)
            self.closed -= {(g, j) for j in range(self.n_steps)}
        self.keep_from = max(self.keep_from, min([keep_from] + [g for g in self.x]))
