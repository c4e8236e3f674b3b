"""Notes for the report header that say how the methods of a run were set up, so a table never hides an unequal
comparison: a method whose denoising setting differs from the shared ``diffusion:`` block, each method's noise
schedule, the noise levels (sqrt(alpha_bar)) its steps reach on it, and its prompt encoding (CLIP skip),
methods whose per-call time is not a streaming speed, methods run as a variant of the authors' code, and
where every method departs from its reference code the same way (VAE posterior, similarity filter pacing).

Generic over methods: it reads the resolved method configs (keys the ``diffusion:`` block shares, the stated
``noise_schedule`` / ``clip_skip`` / ``similar_image_filter``) and two class attributes (``offline_reference``;
``reference_settings``: the values with which the class reproduces the authors' code), never a concrete method name.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def _fmt(v: Any) -> str:
    return "[" + ", ".join(str(x) for x in v) + "]" if isinstance(v, (list, tuple)) else str(v)


def override_notes(
    methods: dict[str, dict], shared: dict[str, Any], matched: dict | None = None
) -> list[str]:
    """A note per (method, key) whose resolved value differs from ``diffusion.<key>`` (only keys the method has:
    a method without classifier-free guidance is not compared on it). A ``t_index_list`` that
    ``diffusion.match=strength`` set (``matched``: method -> (shared, matched)) is said in the match note instead."""
    notes = []
    matched = matched or {}
    for name, mcfg in methods.items():
        diffs = [
            f"{key} {_fmt(mcfg[key])} (shared diffusion.{key}: {_fmt(value)})"
            for key, value in shared.items()
            if key in mcfg
            and mcfg[key] != value
            and not (key == "t_index_list" and name in matched and list(mcfg[key]) == list(matched[name][1]))
        ]
        if diffs:
            notes.append(f"{name} overrides the shared denoising setting: " + "; ".join(diffs))
    return notes


def schedule_note(methods: dict[str, dict], model: dict) -> str | None:
    """Which betas each diffusion method's sampler runs on (the same t_index_list is a different strength on
    different betas)."""
    sched = model.get("scheduler") or {}
    model_sched = (
        "the base's scheduler/ config" if sched.get("from_base") else sched.get("beta_schedule", "?")
    )
    parts = []
    for name, mcfg in methods.items():
        if "noise_schedule" not in mcfg:
            continue
        s = mcfg["noise_schedule"]
        parts.append(f"{name} {model_sched if s in (None, 'model') else s}")
    return "Noise schedule (betas) per method: " + ", ".join(parts) if parts else None


def _method_class(name: str, mcfg: dict) -> type | None:
    from hydra.utils import get_class

    target = mcfg.get("_target_")
    if not target:
        return None
    try:
        return get_class(target)
    except Exception:  # noqa: BLE001 - the run reports an unbuildable method itself
        log.debug("cannot import %s for %s", target, name)
        return None


def clip_skip_note(methods: dict[str, dict], model: dict) -> str | None:
    """How each method encodes its prompt: ``clip_skip`` k takes the text encoder's output k layers before the last
    (then its final layer norm), 0 the final layer; a method's ``clip_skip: null`` takes ``model.clip_skip``."""
    parts = []
    for name, mcfg in methods.items():
        if "clip_skip" not in mcfg:
            continue
        k = mcfg["clip_skip"]
        parts.append(f"{name} {model.get('clip_skip', 2)} (model.clip_skip)" if k is None else f"{name} {k}")
    if not parts:
        return None
    return (
        "Prompt encoding, CLIP skip per method (0 = the text encoder's final layer, as StreamDiffusion's, "
        "StreamV2V's, diffusers' img2img and AnimateDiff's code; 2 = Live2Diff's configs): "
        + ", ".join(parts)
    )


def reference_departure_notes(methods: dict[str, dict], model: dict) -> list[str]:
    """What this project does differently from every reference's code, the same for each method: the KL posterior
    is taken at its mean (the references sample it with their generator), and the similarity filter does not
    sleep on a skipped frame (the references ``time.sleep(inference_time_ema)``)."""
    notes = []
    diffusion = [n for n, m in methods.items() if "t_index_list" in m]
    if diffusion:
        kind = str((model.get("vae") or {}).get("kind", "tiny"))
        this_run = (
            "this run's VAE is kl: its latents differ from the references' by that draw"
            if kind == "kl"
            else f"this run's VAE ({kind}) has no posterior: no difference"
        )
        notes.append(
            "VAE encoding: frames are encoded to the KL posterior's mean; the references (StreamDiffusion, "
            f"StreamV2V, Live2Diff) sample it with their generator (diffusers' retrieve_latents) — {this_run}"
        )
    ssf = [n for n, m in methods.items() if m.get("similar_image_filter") is True]
    if ssf:
        notes.append(
            f"Similarity filter ({', '.join(ssf)}): a skipped frame is emitted at once, while the references "
            "(StreamDiffusion, Live2Diff) sleep inference_time_ema before returning it, so these rows' FPS is "
            "higher than the reference code would show"
        )
    return notes


def offline_notes(methods: dict[str, dict]) -> list[str]:
    """Methods that declare ``offline_reference = True``: most pushes only buffer, one push runs a whole window, so
    the per-call time (and steady-state FPS) is not their speed."""
    notes = []
    for name, mcfg in methods.items():
        if getattr(_method_class(name, mcfg), "offline_reference", False):
            notes.append(
                f"{name} is an offline reference (each output waits for the windows around it): its per-call time is "
                "bursty, so per-call p50 and steady-state FPS are not its speed; read throughput and end-to-end "
                "latency"
            )
    return notes


def variant_notes(methods: dict[str, dict]) -> list[str]:
    """A note per method whose config sets a key of its class's ``reference_settings`` to another value: it runs
    our variant, not the authors' computation."""
    notes = []
    for name, mcfg in methods.items():
        ref = getattr(_method_class(name, mcfg), "reference_settings", None) or {}
        diffs = [
            f"{k}={_fmt(mcfg[k])} (the authors' code: {_fmt(v)})"
            for k, v in ref.items()
            if k in mcfg and mcfg[k] != v
        ]
        if diffs:
            notes.append(f"{name} runs a variant of the authors' code: " + "; ".join(diffs))
    return notes


def method_notes(
    methods: dict[str, dict], shared: dict[str, Any], model: dict, matched: dict | None = None
) -> list[str]:
    """All of the above, for ``notes.json``, plus each method's effective noise levels and what
    ``diffusion.match=strength`` changed (``eval/strength.py``). ``methods``/``shared``/``model``: resolved plain
    containers; ``matched``: what :func:`eval.strength.apply_match` returned."""
    from eval.strength import levels_note, match_note

    shared_keys = {k: v for k, v in shared.items() if k not in ("match", "match_schedule")}
    notes = override_notes(methods, shared_keys, matched)
    for s in (schedule_note(methods, model), clip_skip_note(methods, model)):
        if s:
            notes.append(s)
    for extra in (
        levels_note(methods, model),
        match_note(matched or {}, str(shared.get("match_schedule", "linear"))),
    ):
        if extra:
            notes.append(extra)
    return notes + offline_notes(methods) + variant_notes(methods) + reference_departure_notes(methods, model)
