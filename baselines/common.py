"""Shared machinery of the image-diffusion baselines: LCM few-step img2img over ``t_index_list``, run either one
frame at a time (per-frame img2img) or as StreamDiffusion's *stream batch* (one UNet call holds the newest frame at
the noisiest step and older frames at later steps), with StreamDiffusion's residual CFG ("self" negative) as an
option. StreamDiffusion and StreamV2V build on :class:`LatentStreamMethod`; per-frame img2img is its
``stream_batch=False`` case.

Components come from :mod:`live2diff.components` (same sizes and weights as Live2Diff); the UNet is the plain
``UNet2DConditionModel`` with the same spatial weights (:func:`live2diff.components.build_unet2d`), without motion
modules.

Noise is a function of ``(seed, frame index, step)`` or of ``(seed, step)`` only — never of a shared generator whose
position depends on what happened earlier — so outputs are deterministic under the seed and a frame's output never
depends on later frames.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import deque
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from eval.interface import Emission
from live2diff.components import (
    DEFAULT_T_INDEX_LIST,
    Components,
    LCMSchedule,
    build_components,
    build_unet2d,
    encode_prompt,
    make_lcm_schedule,
    vae_decode,
    vae_encode,
    with_clip_skip,
)
from live2diff.noise_schedule import schedule_name, scheduler_with_betas

log = logging.getLogger(__name__)

NOISE_MODES = ("fixed", "per_frame")
#: the index of a row that is not a frame of the stream (StreamV2V's placeholder rows and repeated first frame):
#: advanced like any row, never decoded nor emitted
NOT_EMITTED = -1
CFG_TYPES = ("none", "full", "self", "initialize")


def seeded_noise(shape: tuple[int, ...], *keys: int) -> Tensor:
    """Standard normal noise determined by ``keys`` alone (CPU generator, so identical on every device)."""
    seed = 0
    for k in keys:
        seed = (seed * 1_000_003 + int(k) + 1) % (2**63 - 1)
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g)


def build_image_components(
    model: Any, device: str, dtype: str, noise_schedule: str | None = None
) -> Components:
    """Components with the motion UNet replaced by a plain 2D UNet of the same spatial weights (the motion UNet is
    dropped, so it does not count in the baseline's memory), the LCM scheduler on ``noise_schedule``'s betas
    (:mod:`live2diff.noise_schedule`; None = the model config's)."""
    comps = build_components(model, device, dtype)
    return dataclasses.replace(
        comps,
        unet=build_unet2d(comps),
        depth=None,
        depth_mapper=None,
        scheduler=scheduler_with_betas(comps.scheduler, noise_schedule),
    )


def latent_size(comps: Components, height: int, width: int) -> tuple[int, int]:
    """Frame size rounded to the VAE's stride (frames are resized to it and outputs resized back)."""
    f = comps.vae_scale_factor
    return max(f, round(height / f) * f), max(f, round(width / f) * f)


@dataclass
class InFlight:
    """One frame in the stream batch: its noisy latent at denoising step ``step`` and RCFG's stock noise."""

    index: int
    latent: Tensor  # [1, C, h, w] at timestep t_index_list[step]
    step: int = 0
    stock: Tensor | None = None


class LatentStreamMethod:
    """LCM img2img over ``t_index_list``, per frame or stream-batched. Subclasses add mechanisms by overriding
    :meth:`admit` (skip a frame before any work) or :meth:`unet` (e.g. attention processors with state).

    Settings:
      t_index_list: indices into LCM's 50-step schedule (noisiest first); strength = 1 - t_index_list[0] / 50.
      stream_batch: True = one UNet call per pushed frame over all frames in flight (output lags the input by
        ``len(t_index_list) - 1`` frames); False = all steps of a frame within its own push.
      noise: "fixed" = one noise tensor per step, shared by all frames (StreamDiffusion's ``init_noise``);
        "per_frame" = fresh noise per frame and step (independent img2img calls).
      cfg_type: StreamDiffusion's four: "none"; "full" (classic CFG: every row also runs with the negative prompt,
        2n UNet rows); "self" (RCFG self-negative: the virtual negative is the stock noise, no extra rows);
        "initialize" (RCFG onetime-negative: one extra row, the newest frame with the negative prompt, whose
        prediction initialises that frame's stock noise). guidance_scale (all CFG is off at <= 1), delta and
        negative_prompt as in StreamDiffusion.
      noise_schedule: the betas LCM runs on — "scaled_linear" (SD1.5's, what StreamDiffusion and StreamV2V take
        from the pipeline), "linear" (Live2Diff's DDIM kwargs) or "model" (the model config's scheduler as is);
        the resolved name is ``self.noise_schedule`` (recorded per unit for the report).
      renoise: True = between steps a frame's clean estimate is noised to the next timestep with that step's noise
        (LCM multistep); False = only scaled by the next step's sqrt(alpha_bar), no noise added (StreamDiffusion's
        ``do_add_noise=False``, its vid2vid example).
      clip_skip: how the prompt is encoded (:func:`live2diff.components.encode_prompt`): 0 = the text encoder's
        final layer (what StreamDiffusion, StreamV2V and diffusers' img2img pipeline do); None = the model
        config's ``clip_skip``.
    """

    lookahead = 0
    initial_block = 0
    offline_reference = False  # True: per-call time is not a streaming speed (see animatediff_window)

    def __init__(
        self,
        model: Any = "tiny",
        device: str = "cpu",
        dtype: str = "float32",
        t_index_list: list[int] | tuple[int, ...] = DEFAULT_T_INDEX_LIST,
        stream_batch: bool = True,
        noise: str = "fixed",
        cfg_type: str = "none",
        guidance_scale: float = 1.0,
        delta: float = 1.0,
        num_inference_steps: int = 50,
        negative_prompt: str = "",
        noise_schedule: str | None = "model",
        renoise: bool = True,
        clip_skip: int | None = None,
    ) -> None:
        if noise not in NOISE_MODES:
            raise ValueError(f"noise must be one of {NOISE_MODES}, got {noise!r}")
        if cfg_type not in CFG_TYPES:
            raise ValueError(f"cfg_type must be one of {CFG_TYPES}, got {cfg_type!r}")
        self.comps = with_clip_skip(build_image_components(model, device, dtype, noise_schedule), clip_skip)
        self.noise_schedule = schedule_name(self.comps.scheduler)
        self.device = self.comps.device
        self.schedule: LCMSchedule = make_lcm_schedule(
            self.comps.scheduler, t_index_list, num_inference_steps
        )
        self.stream_batch = bool(stream_batch)
        self.noise_mode = noise
        self.cfg_type = cfg_type
        self.guidance_scale = float(guidance_scale)
        self.delta = float(delta)
        self.negative_prompt = str(negative_prompt)
        self.renoise = bool(renoise)
        self._prepared = False
        self.compiled = None  # the compiled UNet of the steady stream call (:meth:`compile`)
        self.reset()

    def compile(self, cuda_graphs: bool = True, fullgraph: bool = True, backend: str = "inductor", **kw) -> None:
        """``torch.compile`` the steady stream call: one graph for the UNet call of a full stream batch (fixed
        shapes once the batch is full), reused for every later call; the calls that fill the batch and drain it
        stay eager. On CUDA with ``cuda_graphs`` the graph is replayed as a CUDA graph."""
        if "mode" not in kw and backend == "inductor":
            kw["mode"] = "reduce-overhead" if cuda_graphs and self.device.type == "cuda" else "default"
        self.compiled = torch.compile(self.comps.unet, fullgraph=fullgraph, backend=backend, dynamic=False, **kw)

    # -- properties ---------------------------------------------------------------------------------------------
    @property
    def n_steps(self) -> int:
        return self.schedule.n_steps

    @property
    def steady_state_frames(self) -> int:
        """Pushes until the stream batch is full (eval.interface: the runner's warm-up covers them)."""
        return self.n_steps if self.stream_batch else 1

    @property
    def use_rcfg(self) -> bool:
        """Residual CFG: a stock noise per frame stands in for the negative prediction."""
        return self.cfg_type in ("self", "initialize") and self.guidance_scale > 1.0

    @property
    def uncond_rows(self) -> str:
        """Which rows also run with the negative prompt: "all" (full CFG), "first" (initialize) or "none"."""
        if self.guidance_scale <= 1.0:
            return "none"
        return {"full": "all", "initialize": "first"}.get(self.cfg_type, "none")

    @property
    def info(self) -> dict[str, Any]:
        """How this method runs, recorded per unit for the report."""
        return {
            "noise_schedule": self.noise_schedule,
            "clip_skip": self.comps.clip_skip,
            "offline_reference": self.offline_reference,
        }

    # -- StreamMethod -------------------------------------------------------------------------------------------
    def prepare(self, prompt: str, *, height: int, width: int, seed: int) -> None:
        self.reset()
        self.seed = int(seed)
        self.size = (int(height), int(width))
        self.work_size = latent_size(self.comps, height, width)
        f = self.comps.vae_scale_factor
        self.latent_shape = (1, self.comps.latent_channels, self.work_size[0] // f, self.work_size[1] // f)
        self.prompt_embeds = encode_prompt(self.comps, prompt)
        self.negative_embeds = (
            encode_prompt(self.comps, self.negative_prompt) if self.uncond_rows != "none" else None
        )
        self.init_noise = torch.cat(
            [seeded_noise(self.latent_shape, self.seed, j) for j in range(self.n_steps)]
        )
        self.init_noise = self.init_noise.to(self.device, self.comps.dtype)
        self._prepared = True

    def push(self, index: int, frame: Tensor) -> list[Emission]:
        if not self._prepared:
            raise RuntimeError("call prepare() before push()")
        out: list[Emission] = []
        if not self.admit(index, frame, out):
            return out
        self.in_flight.appendleft(self.start(index, frame))
        if self.stream_batch:
            out += self.advance()
        else:
            while self.in_flight:
                out += self.advance()
        return out

    def flush(self) -> list[Emission]:
        out: list[Emission] = []
        while self.in_flight:
            out += self.advance()
        return out

    def reset(self) -> None:
        self.in_flight: deque[InFlight] = deque()  # newest first = noisiest first
        self._prepared = False

    # -- hooks --------------------------------------------------------------------------------------------------
    def admit(self, index: int, frame: Tensor, out: list[Emission]) -> bool:
        """Return False to skip the frame (then it must be given an output, now in ``out`` or later)."""
        return True

    def unet(
        self, latents: Tensor, timesteps: Tensor, rows: list[InFlight], embeds: Tensor | None = None
    ) -> Tensor:
        """Noise prediction for ``latents`` (one row per frame in ``rows``, unless ``embeds`` [B, L, D] gives each
        of B rows its own prompt: CFG's extra negative rows)."""
        emb = self.prompt_embeds.expand(latents.shape[0], -1, -1) if embeds is None else embeds
        steady = self.compiled is not None and self.stream_batch and len(rows) == self.n_steps
        unet = self.compiled if steady else self.comps.unet
        return unet(latents, timesteps, encoder_hidden_states=emb, return_dict=False)[0]

    def predict(self, x_t: Tensor, timesteps: Tensor, rows: list[InFlight]) -> tuple[Tensor, Tensor | None]:
        """(text-conditioned prediction, negative prediction for the rows that have one: all, the first, none)."""
        mode = self.uncond_rows
        # initialize: the negative row belongs to a frame entering the batch (step 0); while a stream drains there is
        # none, and the frames in flight keep their stock noise (as they do in the reference's steady state)
        if mode == "none" or (mode == "first" and rows[0].step != 0):
            return self.unet(x_t, timesteps, rows), None
        k = x_t.shape[0] if mode == "all" else 1
        neg = self.negative_embeds.expand(k, -1, -1)
        pos = self.prompt_embeds.expand(x_t.shape[0], -1, -1)
        pred = self.unet(
            torch.cat([x_t[:k], x_t]), torch.cat([timesteps[:k], timesteps]), rows, torch.cat([neg, pos])
        )
        return pred[k:], pred[:k]

    # -- machinery ----------------------------------------------------------------------------------------------
    def noise(self, index: int, step: int) -> Tensor:
        if self.noise_mode == "fixed":
            return self.init_noise[step : step + 1]
        return seeded_noise(self.latent_shape, self.seed, 7919, index, step).to(self.device, self.comps.dtype)

    def encode(self, frame: Tensor) -> Tensor:
        x = frame[None].to(self.device, torch.float32)
        if tuple(x.shape[-2:]) != self.work_size:
            x = F.interpolate(x, self.work_size, mode="bilinear", align_corners=False)
        return vae_encode(self.comps, x)

    def decode(self, latents: Tensor) -> Tensor:
        img = vae_decode(self.comps, latents)
        if tuple(img.shape[-2:]) != self.size:
            img = F.interpolate(img, self.size, mode="bilinear", align_corners=False).clamp(0, 1)
        return img

    def start(self, index: int, frame: Tensor) -> InFlight:
        x0 = self.encode(frame)
        item = InFlight(index, self.schedule.add_noise(x0, self.noise(index, 0), 0))
        if self.use_rcfg:
            item.stock = self.noise(index, 0).clone()
        return item

    @torch.no_grad()
    def advance(self) -> list[Emission]:
        """One UNet call over every frame in flight (each at its own step); emits the frames that finish."""
        rows = list(self.in_flight)
        x_t = torch.cat([r.latent for r in rows])
        steps = torch.tensor([r.step for r in rows], dtype=torch.long)
        timesteps = self.schedule.timesteps[steps].to(self.device)
        eps_text, eps_neg = self.predict(x_t, timesteps, rows)
        if self.use_rcfg:
            if eps_neg is not None:  # initialize: the newest frame's stock noise is its negative prediction
                rows[0].stock = eps_neg[0:1].clone()
            stock = torch.cat([r.stock for r in rows])
            eps_uncond = stock * self.delta
            eps = eps_uncond + self.guidance_scale * (eps_text - eps_uncond)
        elif eps_neg is not None:  # full CFG
            eps = eps_neg + self.guidance_scale * (eps_text - eps_neg)
        else:
            eps = eps_text
        x0 = self.schedule.denoise(x_t, eps, steps)
        if self.use_rcfg:
            # StreamDiffusion's stock-noise update: the residual noise this step implies, carried to the next step.
            beta = self.schedule._c(self.schedule.beta_sqrt, steps, x_t)
            delta_x = self.schedule.denoise(beta * stock, eps, steps)
            nxt = (steps + 1).clamp(max=self.n_steps - 1)
            last = (steps == self.n_steps - 1).to(x_t.dtype).reshape(-1, 1, 1, 1).to(x_t.device)
            a_next = self.schedule._c(self.schedule.alpha_sqrt, nxt, x_t) * (1 - last) + last
            b_next = self.schedule._c(self.schedule.beta_sqrt, nxt, x_t) * (1 - last) + last
            delta_x = a_next * delta_x / b_next
        done: list[tuple[InFlight, Tensor]] = []
        keep: deque[InFlight] = deque()
        for r, (row, x0_r) in enumerate(zip(rows, x0.split(1))):
            if row.step == self.n_steps - 1:
                if row.index >= 0:
                    done.append((row, x0_r))
                continue
            row.step += 1
            if self.renoise:
                row.latent = self.schedule.add_noise(x0_r, self.noise(row.index, row.step), row.step)
            else:  # do_add_noise=False: the clean estimate scaled to the next timestep, no noise
                row.latent = self.schedule._c(self.schedule.alpha_sqrt, row.step, x0_r) * x0_r
            if self.use_rcfg:
                row.stock = self.noise(row.index, row.step) + delta_x[r : r + 1]
            keep.append(row)
        self.in_flight = keep
        out: list[Emission] = []
        if done:
            images = self.decode(torch.cat([x for _, x in done]))
            for (row, _), img in zip(done, images):
                out.append((row.index, img))
        return out
