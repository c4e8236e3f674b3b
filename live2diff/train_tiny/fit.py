"""The optimiser loop every training stage shares: AdamW, a warm-up + cosine learning rate, gradient clipping and
an optional exponential moving average of the weights."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)


class EMA:
    def __init__(self, params: list[nn.Parameter], decay: float):
        self.params, self.decay = params, decay
        self.shadow = [p.detach().clone() for p in params]

        self.n = 0

    @torch.no_grad()
    def update(self) -> None:
        self.n += 1
        # warm-up of the decay: short runs are not dominated by the initial weights
        decay = min(self.decay, (1 + self.n) / (10 + self.n))
        for s, p in zip(self.shadow, self.params):
            s.lerp_(p.detach(), 1 - decay)

    @torch.no_grad()
    def copy_to(self) -> None:
        for s, p in zip(self.shadow, self.params):
            p.copy_(s)


def cosine_lr(step: int, total: int, base: float, warmup: int = 100) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))


def fit(
    stage: str,
    params: list[nn.Parameter],
    steps: int,
    lr: float,
    loss_at: Callable[[int], Tensor],
    log_every: int,
    ema: float | None = None,
    warmup: int = 100,
) -> list[dict]:
    """The optimiser loop of every stage: AdamW (no weight decay) on ``params`` with :func:`cosine_lr`'s ``warmup`` and
    cosine schedule, gradients clipped to norm 1, ``loss_at(step)`` the step's loss; with ``ema``, the parameters end
    as their exponential moving average. Returns the loss history (mean loss per ``log_every`` steps)."""
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    avg = EMA(params, ema) if ema is not None else None
    hist, acc, t0 = [], [], time.time()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, steps, lr, warmup)
        loss = loss_at(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if avg is not None:
            avg.update()
        acc.append(loss.item())
        if (step + 1) % log_every == 0 or step + 1 == steps:
            hist.append(
                {"stage": stage, "step": step + 1, "loss": float(np.mean(acc)), "s": time.time() - t0}
            )
            log.info("%s %5d/%d  loss %.4f  %.0fs", stage, step + 1, steps, np.mean(acc), time.time() - t0)
            acc = []
    if avg is not None:
        avg.copy_to()
    return hist
