"""Strength shown and matchable (issue 32, item 6): each method's noise levels in the report header,
``diffusion.match=strength``, the paper experiments' stated choice, and AnimateDiff's motion weights required there."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from eval.method_notes import method_notes
from eval.strength import apply_match, match_strength, method_scheduler, noise_levels
from eval.validate import ConfigError, validate
from tests.conftest import CONF, compose

MODEL = {
    "scheduler": {"beta_schedule": "linear", "beta_start": 0.00085, "beta_end": 0.012, "steps_offset": 1}
}
BASELINES = ("streamdiffusion", "streamv2v", "per_frame_img2img")  # SD1.5's scaled_linear betas


def _alpha_bar(schedule: str) -> torch.Tensor:
    """SD1.5 / Live2Diff betas written out (1000 steps, 0.00085 .. 0.012, linear or linear in sqrt)."""
    b0, b1 = 0.00085, 0.012
    if schedule == "linear":
        betas = torch.linspace(b0, b1, 1000, dtype=torch.float64)
    else:
        betas = torch.linspace(b0**0.5, b1**0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0)


def _timestep(index: int) -> int:
    """LCM's 50-step schedule over 50 original steps: index 0 is timestep 999, then every 20 down."""
    return 999 - 20 * index


@pytest.mark.parametrize(
    "schedule,want",
    [("linear", (0.540, 0.714, 0.870)), ("scaled_linear", (0.653, 0.791, 0.903))],
)
def test_noise_levels_at_the_default_setting(schedule, want):
    levels = noise_levels(method_scheduler(MODEL, schedule), [30, 36, 42])
    assert [t for t, _ in levels] == [399, 279, 159]
    assert [round(a, 3) for _, a in levels] == list(want)


def test_report_header_lists_each_methods_noise_levels():
    cfg = OmegaConf.to_container(
        compose(["method=[live2diff,streamdiffusion,animatediff_window,identity]"]), resolve=True
    )
    notes = method_notes(cfg["method"], cfg["diffusion"], cfg["model"])
    line = next(n for n in notes if n.startswith("Effective noise levels"))
    assert "live2diff [30, 36, 42] on linear: t 399/279/159, √ᾱ 0.540/0.714/0.870" in line
    assert "streamdiffusion [30, 36, 42] on scaled_linear: t 399/279/159, √ᾱ 0.653/0.791/0.903" in line
    assert "animatediff_window [30, 36, 42] on linear" in line and "identity" not in line
    assert not any(n.startswith("diffusion.match") for n in notes)


def test_match_strength_picks_the_closest_alpha_bar():
    lin, scaled = _alpha_bar("linear"), _alpha_bar("scaled_linear")
    ref, tgt = method_scheduler(MODEL, "linear"), method_scheduler(MODEL, "scaled_linear")
    for lst in ([30, 36, 42], [30, 40], [30, 35, 40, 45]):
        got = match_strength(ref, tgt, lst)
        for i, j in zip(lst, got):
            a = lin[_timestep(i)]
            dist = [(scaled[_timestep(k)] - a).abs() for k in range(50)]
            assert dist[j] == min(dist), (lst, got)
    assert match_strength(ref, tgt, [30, 36, 42]) == [26, 33, 40]
    assert match_strength(ref, ref, [30, 36, 42]) == [30, 36, 42]
    with pytest.raises(ValueError, match="diffusion.match=strength.*not strictly increasing"):
        match_strength(ref, tgt, [1, 3])  # both near timestep 999 on scaled_linear


def test_diffusion_match_strength_sets_each_methods_list_and_says_so():
    names = ["live2diff", *BASELINES, "animatediff_window"]
    cfg = compose([f"method=[{','.join(names)},identity]", "diffusion.match=strength"])
    cfg.method.streamv2v.t_index_list = [28, 38]  # its own list: left alone (and named as an override)
    matched = apply_match(cfg)
    assert matched == {n: ([30, 36, 42], [26, 33, 40]) for n in ("streamdiffusion", "per_frame_img2img")}
    assert list(cfg.method.live2diff.t_index_list) == [30, 36, 42]  # on the reference betas already
    assert list(cfg.method.animatediff_window.t_index_list) == [30, 36, 42]
    # the methods run the matched list: their sqrt(alpha_bar) lands within one LCM step of Live2Diff's
    l2d = noise_levels(method_scheduler(MODEL, "linear"), [30, 36, 42])
    sd = instantiate(cfg.method.streamdiffusion, _convert_="all")
    assert sd.schedule.t_index_list == [26, 33, 40]
    got = sd.schedule.alpha_sqrt.double().tolist()
    assert max(abs(g - a) for g, (_, a) in zip(got, l2d)) < 0.015
    r = OmegaConf.to_container(cfg, resolve=True)
    notes = method_notes(r["method"], r["diffusion"], r["model"], matched)
    text = "\n".join(notes)
    assert "diffusion.match=strength" in text and "streamdiffusion [30, 36, 42] → [26, 33, 40]" in text
    assert "streamdiffusion overrides the shared denoising setting: t_index_list" not in text
    assert "streamv2v overrides the shared denoising setting: t_index_list [28, 38]" in text
    assert "streamdiffusion [26, 33, 40] on scaled_linear: t 479/339/199, √ᾱ 0.552/0.724/0.869" in text


def test_diffusion_match_is_validated():
    with pytest.raises(ConfigError, match="diffusion.match='equal'"):
        validate(compose(["method=[identity]", "diffusion.match=equal"]), videos=False)
    with pytest.raises(ConfigError, match="diffusion.match_schedule"):
        validate(compose(["method=[identity]", "diffusion.match_schedule=cosine"]), videos=False)
    with pytest.raises(ValueError, match="diffusion.match="):
        apply_match(compose(["method=[identity]", "diffusion.match=equal"]))


@pytest.mark.parametrize("name", ["paper_setup", "paper_table1", "paper_speed"])
def test_paper_experiments_state_their_match(name):
    text = (CONF / "experiment" / f"{name}.yaml").read_text()
    assert "\n  match: none" in text, f"{name}.yaml does not state diffusion.match"
    assert compose([f"experiment={name}", "dataset.root=/nonexistent"]).diffusion.match == "none"


REAL = {
    "model.weights.base": "base",
    "model.weights.motion": "motion.safetensors",
    "model.weights.lcm_lora": "lcm.safetensors",
    "model.weights.taesd": "taesd",
    "model.weights.depth": "depth",
}


def _paper(tmp_path, methods: str, **extra):
    for rel in REAL.values():
        (tmp_path / rel).touch()
    over = [f"{k}={tmp_path / v}" for k, v in REAL.items()] + [f"{k}={v}" for k, v in extra.items()]
    return compose(["experiment=paper_table1", "dataset.root=/nonexistent", f"method=[{methods}]", *over])


def test_paper_setup_requires_animatediff_motion_for_its_row(tmp_path):
    from eval.check import inventory, required_weights
    from eval.validate import check_method_weights

    cfg = _paper(tmp_path, "live2diff,animatediff_window")
    assert "model.weights.animatediff_motion" in required_weights(cfg)
    problems = check_method_weights(cfg)
    assert [p.key for p in problems] == ["model.weights.animatediff_motion"]
    assert "method animatediff_window needs it" in str(problems[0])
    findings, _ = inventory(cfg)  # +check=true lists it with what it is and where to get it
    assert any(
        f.kind == "weights" and f.key == "model.weights.animatediff_motion" and "not set" in f.detail
        for f in findings
    ), findings
    # given, or the row not selected, or a random-weight run of the experiment (the README's tiny run): fine
    (tmp_path / "mm.ckpt").touch()
    assert (
        check_method_weights(
            _paper(
                tmp_path, "animatediff_window", **{"model.weights.animatediff_motion": tmp_path / "mm.ckpt"}
            )
        )
        == []
    )
    assert check_method_weights(_paper(tmp_path, "live2diff")) == []
    tiny = compose(["experiment=paper_table1", "dataset.root=/nonexistent", "model=tiny_random"])
    assert check_method_weights(tiny) == []
    assert "model.weights.animatediff_motion" not in required_weights(
        compose(["method=[animatediff_window]"])
    )


@pytest.mark.parametrize("name", ["live2diff", *BASELINES, "animatediff_window"])
def test_the_levels_shown_are_the_levels_each_method_runs(name):
    """eval/strength.py builds the schedules from the config alone (eval/ imports no method package): they must be
    the ones the instantiated methods sample with."""
    cfg = compose([f"method=[{name}]", "model=tiny_random", "diffusion.t_index_list=[25,34,43]"])
    m = instantiate(cfg.method[name], _convert_="all")
    sched = m.stream.schedule if hasattr(m, "stream") else m.schedule
    r = OmegaConf.to_container(cfg, resolve=True)
    levels = noise_levels(method_scheduler(r["model"], r["method"][name]["noise_schedule"]), [25, 34, 43])
    assert [t for t, _ in levels] == sched.timesteps.tolist()
    torch.testing.assert_close(
        torch.tensor([a for _, a in levels], dtype=torch.float64),
        sched.alpha_sqrt.double(),
        rtol=1e-6,
        atol=0,
    )
