"""AnimateDiff over sliding windows: the UNet with its *bidirectional* motion modules denoises ``window`` frames
together (LCM few-step img2img over ``t_index_list``); windows start every ``stride`` frames and the final latents of
a frame are averaged over the windows that contain it. Offline by nature: a frame's output needs the frames after it
in its windows, so ``push`` holds frames until the window is full and emits late. Declared ``lookahead =
window - 1`` (a frame at a window start depends on the ``window - 1`` frames after it); the end-to-end latency in the
results shows that cost. The quality reference that uni-directional (causal) temporal attention approximates.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from baselines.common import latent_size, seeded_noise
from eval.interface import Emission
from live2diff.models import build_components, encode_prompt, make_lcm_schedule, vae_decode, vae_encode
from live2diff.noise_schedule import schedule_name, scheduler_with_betas


class AnimateDiffWindow:
    initial_block = 0
    # most pushes only VAE-encode; one push in `stride` denoises a whole window: the per-call time is bursty and
    # not a streaming speed (the report says so; read throughput and end-to-end latency)
    offline_reference = True

    def __init__(
        self,
        model: Any = "tiny",
        device: str = "cpu",
        dtype: str = "float32",
        t_index_list: list[int] | tuple[int, ...] = (30, 36, 42),
        window: int = 16,
        stride: int = 8,
        num_inference_steps: int = 50,
        noise_schedule: str | None = "linear",
    ) -> None:
        comps = build_components(model, device, dtype)
        self.comps = dataclasses.replace(
            comps,
            depth=None,
            depth_mapper=None,
            scheduler=scheduler_with_betas(comps.scheduler, noise_schedule),
        )
        self.noise_schedule = schedule_name(self.comps.scheduler)
        max_len = int(self.comps.unet.config.get("motion_max_seq_length", 32))
        if not 1 <= int(window) <= max_len:
            raise ValueError(
                f"window must be in [1, {max_len}] (the motion module's positions), got {window}"
            )
        if not 1 <= int(stride) <= int(window):
            raise ValueError(f"stride must be in [1, window={window}], got {stride}")
        self.window, self.stride = int(window), int(stride)
        self.lookahead = self.window - 1
        self.steady_state_frames = self.window  # a full window: the runner's warm-up covers it
        self.device = self.comps.device
        self.schedule = make_lcm_schedule(self.comps.scheduler, t_index_list, num_inference_steps)
        self.reset()

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
        self.latents.append(vae_encode(self.comps, x))
        self.n_pushed += 1
        start = self.n_pushed - self.window
        if start < 0 or start % self.stride:
            return []
        self._run_window(start)
        return self._emit(upto=start + self.stride)

    def flush(self) -> list[Emission]:
        if self.n_pushed > self.emitted_upto:
            start = max(0, self.n_pushed - self.window)
            if start != self.last_start:
                self._run_window(start)
        return self._emit(upto=self.n_pushed)

    def reset(self) -> None:
        self.latents: deque[Tensor] = deque(maxlen=getattr(self, "window", 16))  # last `window` clean latents
        self.sums: dict[int, Tensor] = {}
        self.counts: dict[int, int] = {}
        self.pending: list[int] = []  # pushed, not yet emitted
        self.n_pushed = 0
        self.emitted_upto = 0  # every frame below this index has been emitted
        self.last_start: int | None = None
        self._prepared = False

    # -- machinery ----------------------------------------------------------------------------------------------
    def _noise(self, index: int, step: int) -> Tensor:
        shape = (1,) + tuple(self.latents[0].shape[1:])
        return seeded_noise(shape, self.seed, 7919, index, step).to(self.device, self.comps.dtype)

    @torch.no_grad()
    def _run_window(self, start: int) -> None:
        """All LCM steps over frames ``start .. n_pushed - 1`` at once (bidirectional motion modules)."""
        idx = list(range(start, self.n_pushed))
        first = self.n_pushed - len(self.latents)
        x0 = torch.cat([self.latents[i - first] for i in idx])  # [F, C, h, w]
        s = self.schedule
        x_t = s.add_noise(x0, torch.cat([self._noise(i, 0) for i in idx]), 0)
        emb = self.prompt_embeds.repeat(len(idx), 1, 1)
        for j in range(s.n_steps):
            sample = x_t.permute(1, 0, 2, 3)[None]  # [1, C, F, h, w]
            t = s.timesteps[j].to(self.device)
            eps = self.comps.unet(sample, t, encoder_hidden_states=emb, return_dict=False)[0]
            eps = eps[0].permute(1, 0, 2, 3)
            x0_pred = s.denoise(x_t, eps, j)
            if j < s.n_steps - 1:
                x_t = s.add_noise(x0_pred, torch.cat([self._noise(i, j + 1) for i in idx]), j + 1)
        for i, lat in zip(idx, x0_pred.split(1)):
            if i in self.sums:
                self.sums[i] = self.sums[i] + lat
                self.counts[i] += 1
            elif i >= self.emitted_upto:
                self.sums[i], self.counts[i] = lat, 1
                self.pending.append(i)
        self.last_start = start

    def _emit(self, upto: int) -> list[Emission]:
        ready = sorted(i for i in self.pending if i < upto)
        if not ready:
            return []
        lat = torch.cat([self.sums.pop(i) / self.counts.pop(i) for i in ready])
        img = vae_decode(self.comps, lat)
        if tuple(img.shape[-2:]) != self.size:
            img = F.interpolate(img, self.size, mode="bilinear", align_corners=False).clamp(0, 1)
        self.pending = [i for i in self.pending if i >= upto]
        self.emitted_upto = max(self.emitted_upto, upto)
        return list(zip(ready, img))
