"""The LCM noise schedule (the reference's DDIM kwargs) and the per-step constants of few-step stream sampling."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from eval.paths import CONF_DIR
from live2diff.components.weights import require


def _config_t_index_list() -> tuple[int, ...]:
    from omegaconf import OmegaConf

    return tuple(int(i) for i in OmegaConf.load(CONF_DIR / "config.yaml").diffusion.t_index_list)


#: ``diffusion.t_index_list`` of ``conf/config.yaml`` (the one source of the default): what a method constructed in
#: code without one denoises with. A run hands every method the composed value instead.
DEFAULT_T_INDEX_LIST: tuple[int, ...] = _config_t_index_list()


def build_scheduler(cfg: dict, base: Path | None):
    """LCM over the noise schedule the reference uses: its configs build a DDIMScheduler from
    ``noise_scheduler_kwargs`` (linear betas 0.00085..0.012, steps_offset 1) and convert it with
    ``LCMScheduler.from_config`` — not SD1.5's scaled-linear schedule. ``model.scheduler.from_base: true`` takes
    the base folder's ``scheduler/`` config instead."""
    from diffusers import LCMScheduler

    sc = dict(cfg.get("scheduler") or {})
    if sc.pop("from_base", False) and base is not None and base.is_dir():
        require(base / "scheduler", "model.weights.base", "the 'scheduler' subfolder")
        return LCMScheduler.from_pretrained(base, subfolder="scheduler", local_files_only=True)
    kwargs = dict(
        beta_start=0.00085, beta_end=0.012, beta_schedule="linear", steps_offset=1, clip_sample=False
    )
    kwargs.update(sc)
    return LCMScheduler(original_inference_steps=50, **kwargs)


@dataclass
class LCMSchedule:
    """Per-step constants for few-step LCM sampling over ``t_index_list`` (StreamDiffusion-style).

    ``add_noise(x0, eps, j)`` noises a clean latent to step j's timestep; ``denoise(x_t, eps_pred, j)`` applies LCM's
    boundary condition to get the clean estimate. Shapes broadcast over a leading step dimension when ``j`` is a
    LongTensor of step indices."""

    t_index_list: list[int]
    timesteps: Tensor  # [k] long
    alpha_sqrt: Tensor  # [k]
    beta_sqrt: Tensor  # [k]
    c_skip: Tensor  # [k]
    c_out: Tensor  # [k]

    @property
    def n_steps(self) -> int:
        return len(self.t_index_list)

    @property
    def strength(self) -> float:
        return 1.0 - self.t_index_list[0] / 50.0

    def _c(self, v: Tensor, j: int | Tensor, like: Tensor) -> Tensor:
        c = v[j] if isinstance(j, int) else v.index_select(0, j.to(v.device))
        c = c.to(like.device, like.dtype)
        return c.reshape(c.shape + (1,) * (like.ndim - c.ndim))

    def add_noise(self, x0: Tensor, eps: Tensor, j: int | Tensor) -> Tensor:
        return self._c(self.alpha_sqrt, j, x0) * x0 + self._c(self.beta_sqrt, j, x0) * eps

    def denoise(self, x_t: Tensor, eps_pred: Tensor, j: int | Tensor) -> Tensor:
        a, b = self._c(self.alpha_sqrt, j, x_t), self._c(self.beta_sqrt, j, x_t)
        x0_pred = (x_t - b * eps_pred) / a
        return self._c(self.c_out, j, x_t) * x0_pred + self._c(self.c_skip, j, x_t) * x_t


def make_lcm_schedule(
    scheduler: Any, t_index_list: Sequence[int], num_inference_steps: int = 50
) -> LCMSchedule:
    """Pick ``t_index_list`` out of LCM's ``num_inference_steps``-step schedule (index 0 = noisiest)."""
    t_index_list = [int(t) for t in t_index_list]
    if (
        not t_index_list
        or sorted(t_index_list) != t_index_list
        or len(set(t_index_list)) != len(t_index_list)
    ):
        raise ValueError(f"t_index_list must be strictly increasing and non-empty, got {t_index_list}")
    if t_index_list[-1] >= num_inference_steps or t_index_list[0] < 0:
        raise ValueError(f"t_index_list entries must lie in [0, {num_inference_steps}), got {t_index_list}")
    scheduler.set_timesteps(num_inference_steps)
    ts = scheduler.timesteps
    sub = torch.tensor([int(ts[i]) for i in t_index_list], dtype=torch.long)
    ac = scheduler.alphas_cumprod
    c_skip, c_out = zip(*[scheduler.get_scalings_for_boundary_condition_discrete(int(t)) for t in sub])
    return LCMSchedule(
        t_index_list=t_index_list,
        timesteps=sub,
        alpha_sqrt=ac[sub].sqrt().float(),
        beta_sqrt=(1 - ac[sub]).sqrt().float(),
        c_skip=torch.tensor([float(c) for c in c_skip]),
        c_out=torch.tensor([float(c) for c in c_out]),
    )
