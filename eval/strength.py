"""Effective strength of each diffusion method: the noise levels its ``t_index_list`` reaches on its own betas, and
``diffusion.match=strength``, which maps each method's list to the steps of equal noise level.

The same ``t_index_list`` is not the same edit: at ``[30, 36, 42]`` (timesteps 399/279/159) sqrt(alpha_bar) is
0.540/0.714/0.870 on Live2Diff's linear betas and 0.653/0.791/0.903 on SD1.5's scaled_linear, so the baselines keep
more of the input at "the same" setting. ``diffusion.match``:

* ``none`` (default) — every method runs ``diffusion.t_index_list`` as given (equal indices, as each reference's
  settings are written; the report header lists the unequal noise levels);
* ``strength`` — a method that follows the shared list gets, per entry, the index of its own 50-step LCM schedule
  whose alpha_bar is closest to alpha_bar of that entry on ``diffusion.match_schedule`` (Live2Diff's ``linear``
  betas); methods on those betas keep the list. A method that sets its own ``t_index_list`` is left alone (and
  named in the header as overriding the shared setting).

Generic over methods: any method node with ``t_index_list`` and ``noise_schedule`` takes part.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

MATCH_MODES = ("none", "strength")
LCM_ORIGINAL_STEPS = 50  # LCM's original_inference_steps in every method (live2diff/components/schedule.py)


# -- the schedules, from the config alone (eval/ never imports a method package: tests/test_architecture.py) -------
def method_scheduler(model: dict, noise_schedule: str | None) -> Any:
    """The LCM scheduler a method runs on, built from the resolved ``model`` config and its ``noise_schedule`` as the
    methods build theirs (``live2diff.components.schedule.build_scheduler`` then
    ``live2diff.noise_schedule.scheduler_with_betas``; tests/test_strength.py checks them equal on every diffusion
    method): ``model.scheduler``'s kwargs (or ``weights.base``'s ``scheduler/`` with ``from_base``), then the
    method's betas (``model``/null keeps the model's)."""
    from diffusers import LCMScheduler

    sc = dict(model.get("scheduler") or {})
    base = (model.get("weights") or {}).get("base")
    if sc.pop("from_base", False) and base and Path(base).is_dir():
        sched = LCMScheduler.from_pretrained(base, subfolder="scheduler", local_files_only=True)
    else:
        kwargs = dict(
            beta_start=0.00085, beta_end=0.012, beta_schedule="linear", steps_offset=1, clip_sample=False
        )
        kwargs.update(sc)
        sched = LCMScheduler(original_inference_steps=LCM_ORIGINAL_STEPS, **kwargs)
    if noise_schedule in (None, "model"):
        return sched
    return type(sched).from_config(sched.config, beta_schedule=noise_schedule)


def _alpha_bar(scheduler: Any, num_inference_steps: int) -> tuple[list[int], Any]:
    """Timesteps of the ``num_inference_steps``-step LCM schedule (index 0 = noisiest) and alpha_bar at each."""
    scheduler.set_timesteps(num_inference_steps)
    ts = [int(t) for t in scheduler.timesteps]
    return ts, scheduler.alphas_cumprod.double()[ts]


def noise_levels(
    scheduler: Any, t_index_list: list[int], num_inference_steps: int = 50
) -> list[tuple[int, float]]:
    """``(timestep, sqrt(alpha_bar))`` at each step of ``t_index_list``: how much of the input survives the noising
    at each step (the effective edit strength; "strength 1 - 30/50 = 0.4" says nothing of it)."""
    ts, ab = _alpha_bar(scheduler, num_inference_steps)
    return [(ts[int(i)], float(ab[int(i)].sqrt())) for i in t_index_list]


def match_strength(
    reference: Any,
    target: Any,
    t_index_list: list[int],
    num_inference_steps: int = 50,
    key: str = "diffusion.match",
) -> list[int]:
    """The indices into ``target``'s ``num_inference_steps``-step LCM schedule whose alpha_bar is closest to
    ``reference``'s at each entry of ``t_index_list``: the same noise levels on other betas. Two entries landing on
    one index cannot keep the list strictly increasing, so that is refused."""
    _, ref = _alpha_bar(reference, num_inference_steps)
    _, tgt = _alpha_bar(target, num_inference_steps)
    out = [int((tgt - ref[int(i)]).abs().argmin()) for i in t_index_list]
    if sorted(set(out)) != out:
        raise ValueError(
            f"{key}=strength: t_index_list {list(t_index_list)} maps to {out} on "
            f"{target.config.get('beta_schedule')} betas, which is not strictly increasing (two steps share one "
            "noise level); space the entries further apart or use diffusion.match=none"
        )
    return out


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def _schedule(mcfg: dict, model: dict) -> str:
    s = mcfg.get("noise_schedule")
    return (
        str((model.get("scheduler") or {}).get("beta_schedule", "linear")) if s in (None, "model") else str(s)
    )


def diffusion_methods(methods: dict) -> dict[str, dict]:
    """The method nodes that denoise over a ``t_index_list`` on a stated ``noise_schedule``."""
    return {
        n: m
        for n, m in methods.items()
        if isinstance(m, dict) and "t_index_list" in m and "noise_schedule" in m
    }


def apply_match(cfg: DictConfig) -> dict[str, tuple[list[int], list[int]]]:
    """With ``diffusion.match=strength``, set ``method.<name>.t_index_list`` of every method that follows the shared
    list to its strength-matched list (in ``cfg``, before anything is built, so the unit cache keys and the report see
    the lists that ran). Returns ``{method: (shared list, matched list)}`` for the methods whose list changed.
    ``ValueError`` names the key on an unknown mode or an unmatchable list."""
    diffusion = _plain(cfg.get("diffusion")) or {}
    mode = diffusion.get("match", "none") or "none"
    if mode not in MATCH_MODES:
        raise ValueError(f"diffusion.match={mode!r}: must be one of {MATCH_MODES}")
    if mode == "none":
        return {}
    shared = list(diffusion.get("t_index_list") or [])
    model = _plain(cfg.get("model")) or {}
    ref_name = str(diffusion.get("match_schedule") or "linear")
    reference = method_scheduler(model, ref_name)
    out = {}
    for name, mcfg in diffusion_methods(_plain(cfg.get("method")) or {}).items():
        if list(mcfg["t_index_list"]) != shared:
            continue
        if _schedule(mcfg, model) == ref_name:
            continue
        steps = int(mcfg.get("num_inference_steps", 50))
        target = method_scheduler(model, mcfg.get("noise_schedule"))
        matched = match_strength(reference, target, shared, steps, key="diffusion.match")
        if matched != shared:
            cfg.method[name].t_index_list = matched
            out[name] = (shared, matched)
    return out


def levels_note(methods: dict[str, dict], model: dict) -> str | None:
    """The report-header line: sqrt(alpha_bar) at each step of each diffusion method's ``t_index_list``, on its own
    betas (``methods``/``model``: resolved plain containers)."""
    parts = []
    for name, mcfg in diffusion_methods(methods).items():
        sched = method_scheduler(model, mcfg.get("noise_schedule"))
        levels = noise_levels(sched, list(mcfg["t_index_list"]), int(mcfg.get("num_inference_steps", 50)))
        ts = "/".join(str(t) for t, _ in levels)
        alphas = "/".join(f"{a:.3f}" for _, a in levels)
        parts.append(f"{name} {list(mcfg['t_index_list'])} on {_schedule(mcfg, model)}: t {ts}, √ᾱ {alphas}")
    if not parts:
        return None
    return (
        "Effective noise levels (√ᾱ at each step of the method's t_index_list on its own betas; lower = more of the "
        "input replaced, equal indices on other betas are not equal strength): " + "; ".join(parts)
    )


def match_note(matched: dict[str, tuple[list[int], list[int]]], match_schedule: str) -> str | None:
    if not matched:
        return None
    parts = [f"{name} {before} → {after}" for name, (before, after) in matched.items()]
    return (
        f"diffusion.match=strength: t_index_list mapped to the steps whose ᾱ on the method's betas is closest to "
        f"ᾱ of the shared list on {match_schedule} betas: " + "; ".join(parts)
    )
