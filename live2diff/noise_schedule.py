"""Which noise schedule (betas) a method's LCM sampler runs on — stated per method, as each reference does.

The same ``t_index_list`` is a different edit strength on different betas, so a comparison must say which schedule
each method used:

* ``linear`` — Live2Diff's and AnimateDiff's configs (``noise_scheduler_kwargs``: ``beta_schedule: linear``,
  0.00085..0.012, ``steps_offset: 1``): a ``DDIMScheduler`` turned into an ``LCMScheduler`` with ``from_config``.
* ``scaled_linear`` — SD1.5's own scheduler config, which StreamDiffusion and StreamV2V take from the pipeline
  (``LCMScheduler.from_config(pipe.scheduler.config)``; LCM-LoRA sd-v1-5 was distilled on it).
* ``model`` (or ``null``) — whatever ``model.scheduler`` builds (the model config's choice, e.g. ``from_base``).

Only ``beta_schedule`` changes; the other settings (beta range, steps offset, LCM's 50 original steps) stay the
model's, which equal the references' for SD1.5.
"""

from __future__ import annotations

from typing import Any

NOISE_SCHEDULES = ("linear", "scaled_linear", "model")


def scheduler_with_betas(scheduler: Any, noise_schedule: str | None) -> Any:
    """A copy of the (LCM) ``scheduler`` on the named beta schedule; the scheduler itself when ``model``/None."""
    if noise_schedule in (None, "model"):
        return scheduler
    if noise_schedule not in NOISE_SCHEDULES:
        raise ValueError(
            f"noise_schedule must be one of {NOISE_SCHEDULES} (or null for the model's), got {noise_schedule!r}"
        )
    return type(scheduler).from_config(scheduler.config, beta_schedule=noise_schedule)


def schedule_name(scheduler: Any) -> str:
    """The beta schedule a scheduler actually runs on (what the report states)."""
    return str(scheduler.config.get("beta_schedule", "unknown"))
