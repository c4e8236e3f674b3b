"""Equal settings across methods (issue 11): one shared denoising setting, a note for every method that differs, each
method's noise schedule stated and the reference's, variants that inherit their base config."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from eval.method_notes import method_notes, override_notes
from tests.conftest import CONF, compose

METHODS = sorted(p.stem for p in (CONF / "method").glob("*.yaml"))


def resolved(overrides: list[str]) -> dict:
    return OmegaConf.to_container(compose(overrides), resolve=True)


def diffusion_methods(cfg: dict) -> dict[str, dict]:
    return {n: m for n, m in cfg["method"].items() if "t_index_list" in m}


#: configs that reproduce one of the authors' scripts, steps included: they pin their own t_index_list (and the
#: report header names the override, test_report_notes_name_every_override_and_schedule)
PINNED_STEPS = {
    "streamv2v_vid2vid": [30, 35, 40, 45],  # Jeff-LiangF/streamv2v vid2vid/main.py
    "streamdiffusion_vid2vid": [35, 45],  # cumulo-autumn/StreamDiffusion examples/vid2vid/main.py
}


def test_every_diffusion_method_takes_the_shared_setting():
    cfg = resolved([f"method=[{','.join(METHODS)}]", "diffusion.t_index_list=[25,34,43]"])
    methods = diffusion_methods(cfg)
    assert len(methods) >= 10, sorted(methods)
    assert {n: m["t_index_list"] for n, m in methods.items()} == {
        n: PINNED_STEPS.get(n, [25, 34, 43]) for n in methods
    }
    notes = "\n".join(override_notes(methods, cfg["diffusion"]))
    for name in PINNED_STEPS:
        assert f"{name} overrides the shared denoising setting: t_index_list" in notes
    for name in set(METHODS) - set(PINNED_STEPS):  # no other method file hard-codes its own t_index_list
        text = (CONF / "method" / f"{name}.yaml").read_text()
        assert "t_index_list: [" not in text, f"{name}.yaml repeats t_index_list instead of ${{diffusion...}}"


@pytest.mark.parametrize("name", ["paper_table1", "paper_speed"])
def test_paper_experiments_set_one_t_index_list_for_all(name):
    cfg = resolved([f"experiment={name}", "dataset.root=/nonexistent"])
    lists = {n: tuple(m["t_index_list"]) for n, m in diffusion_methods(cfg).items()}
    assert len(set(lists.values())) == 1, f"unequal denoising settings in {name}: {lists}"
    assert set(lists.values()) == {(30, 40)}


@pytest.mark.parametrize(
    "variant,base,keys",
    [
        ("live2diff_ssf", "live2diff", {"similar_image_filter"}),
        ("live2diff_nodepth", "live2diff", {"depth"}),
        ("live2diff_nowarmup", "live2diff", {"warmup", "stream_buffer"}),
        ("live2diff_window", "live2diff", {"warmup", "attention"}),
        ("streamdiffusion_ssf", "streamdiffusion", {"similar_image_filter"}),
        ("streamdiffusion_vid2vid", "streamdiffusion", {"t_index_list", "renoise", "similar_image_filter"}),
        ("streamv2v_fifo", "streamv2v", {"bank_size", "update", "update_interval"}),
        ("streamv2v_vid2vid", "streamv2v", {"t_index_list", "first_frame_repeats"}),
    ],
)
def test_variants_inherit_their_base(variant, base, keys):
    """A variant = its base + the keys it changes; a change to the base's file reaches the variant, a command-line
    override of one method does not reach the other."""
    text = (CONF / "method" / f"{variant}.yaml").read_text()
    assert f"{base}@_here_" in text and "_target_" not in text, f"{variant}.yaml copies {base}.yaml"
    cfg = resolved([f"method=[{base},{variant}]", f"method.{base}.dtype=float64"])
    a, b = cfg["method"][base], cfg["method"][variant]
    assert a["dtype"] == "float64" and b["dtype"] == "float32"
    b["dtype"] = a["dtype"]
    assert set(a) <= set(b)
    assert {k for k in b if a.get(k) != b[k]} == keys


def test_report_notes_name_every_override_and_schedule():
    cfg = resolved(
        [
            "method=[live2diff,streamdiffusion,streamv2v,animatediff_window,identity]",
            "method.live2diff.t_index_list=[30,40]",
        ]
    )
    notes = method_notes(cfg["method"], cfg["diffusion"], cfg["model"])
    text = "\n".join(notes)
    assert "live2diff overrides the shared denoising setting: t_index_list [30, 40] (shared" in text
    assert "streamdiffusion overrides the shared denoising setting: guidance_scale 1.2" in text
    assert "streamv2v overrides" not in text and "identity" not in text
    sched = [n for n in notes if n.startswith("Noise schedule")]
    assert sched == [
        "Noise schedule (betas) per method: live2diff linear, streamdiffusion scaled_linear, streamv2v scaled_linear, "
        "animatediff_window linear"
    ]
    assert any(n.startswith("animatediff_window is an offline reference") for n in notes)
    skips = [n for n in notes if n.startswith("Prompt encoding")]
    assert len(skips) == 1 and skips[0].endswith(
        ": live2diff 2 (model.clip_skip), streamdiffusion 0, streamv2v 0, animatediff_window 0"
    ), skips
    assert any(n.startswith("VAE encoding: frames are encoded to the KL posterior's mean") for n in notes)
    assert not any(n.startswith("Similarity filter") for n in notes)  # no filter in this run
    # equal settings: no override note at all
    assert override_notes({"a": {"t_index_list": [1, 2]}, "b": {}}, {"t_index_list": [1, 2]}) == []
    assert not any("variant of the authors' code" in n for n in notes)


def test_report_notes_name_a_variant_of_the_authors_code():
    """A key of a class's ``reference_settings`` set to another value (StreamV2V's bank written per frame, ours)
    is named in the report header; the reference's own value is not."""
    cfg = resolved(["method=[streamv2v,streamv2v_fifo]", "method.streamv2v.bank_write=frames"])
    notes = method_notes(cfg["method"], cfg["diffusion"], cfg["model"])
    assert [n for n in notes if "variant" in n] == [
        "streamv2v runs a variant of the authors' code: bank_write=frames (the authors' code: calls)"
    ]


def test_report_notes_name_live2diff_variants_of_the_authors_code():
    """Live2Diff's clean stream buffer and per-frame depth normalisation are named as variants; its defaults
    (``method=[live2diff]``) are the authors' code and are not."""
    cfg = resolved(
        [
            "method=[live2diff,live2diff_nowarmup]",
            "method.live2diff.stream_buffer=clean",
            "method.live2diff.depth_norm=per_frame",
        ]
    )
    notes = [n for n in method_notes(cfg["method"], cfg["diffusion"], cfg["model"]) if "authors' code" in n]
    assert notes == [
        "live2diff runs a variant of the authors' code: stream_buffer=clean (the authors' code: reference); "
        "depth_norm=per_frame (the authors' code: per_call)",
        "live2diff_nowarmup runs a variant of the authors' code: stream_buffer=clean (the authors' code: reference)",
    ]
    default = resolved(["method=[live2diff]"])
    assert not [
        n for n in method_notes(default["method"], default["diffusion"], default["model"]) if "variant" in n
    ]


def _alpha_sqrt(schedule: str, t: int) -> float:
    """SD1.5 / Live2Diff betas written out: 1000 steps, 0.00085 .. 0.012, linear or linear in sqrt (scaled)."""
    b0, b1 = 0.00085, 0.012
    if schedule == "linear":
        betas = torch.linspace(b0, b1, 1000, dtype=torch.float64)
    else:
        betas = torch.linspace(b0**0.5, b1**0.5, 1000, dtype=torch.float64) ** 2
    return float(torch.cumprod(1 - betas, 0)[t].sqrt())


@pytest.mark.parametrize(
    "name,schedule,clip_skip",
    [
        ("streamdiffusion", "scaled_linear", 0),
        ("streamv2v", "scaled_linear", 0),
        ("per_frame_img2img", "scaled_linear", 0),
        ("animatediff_window", "linear", 0),
        ("live2diff", "linear", 2),
    ],
)
def test_each_method_runs_on_its_references_betas_and_prompt_encoding(name, schedule, clip_skip):
    """Betas, and the CLIP layer the prompt is read from: the baselines' reference code calls the text encoder
    without a skip (0), Live2Diff's configs take clip_skip 2 (the model config's, which its YAML leaves to it)."""
    from hydra.utils import instantiate

    from live2diff.components import encode_prompt

    cfg = compose([f"method=[{name}]"])
    m = instantiate(cfg.method[name], _convert_="all")
    assert m.noise_schedule == schedule
    assert m.info["clip_skip"] == clip_skip
    comps = m.components if hasattr(m, "components") else m.comps
    ids = comps.tokenizer("a cat")
    out = comps.text_encoder(ids, output_hidden_states=True)
    norm = getattr(comps.text_encoder, "text_model", comps.text_encoder).final_layer_norm
    want = out[0] if clip_skip == 0 else norm(out.hidden_states[-3])
    torch.testing.assert_close(encode_prompt(comps, "a cat"), want, rtol=0, atol=0)
    sched = m.stream.schedule if hasattr(m, "stream") else m.schedule
    want = [_alpha_sqrt(schedule, int(t)) for t in sched.timesteps]
    torch.testing.assert_close(
        sched.alpha_sqrt.double(), torch.tensor(want, dtype=torch.float64), rtol=1e-5, atol=0
    )


def test_a_methods_clip_skip_overrides_the_models_and_bad_values_are_refused():
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    from eval.validate import ConfigError, validate

    cfg = compose(["method=[live2diff,streamdiffusion]", "method.live2diff.clip_skip=0", "model.clip_skip=1"])
    assert instantiate(cfg.method.live2diff, _convert_="all").info["clip_skip"] == 0
    assert instantiate(cfg.method.streamdiffusion, _convert_="all").info["clip_skip"] == 0
    notes = method_notes(
        *(OmegaConf.to_container(cfg[k], resolve=True) for k in ("method", "diffusion", "model"))
    )
    assert any(n.endswith(": live2diff 0, streamdiffusion 0") for n in notes), notes
    cfg = resolved(
        ["method=[streamdiffusion,streamv2v,per_frame_img2img]", "method.streamdiffusion.clip_skip=2"]
    )
    assert [n for n in method_notes(cfg["method"], cfg["diffusion"], cfg["model"]) if "variant" in n] == [
        "streamdiffusion runs a variant of the authors' code: clip_skip=2 (the authors' code: 0)"
    ]
    validate(compose(["method=[streamdiffusion_vid2vid,live2diff]"]), videos=False)
    n_layers = compose([]).model.text_encoder.num_hidden_layers
    for bad in (-1, n_layers, "two"):
        with pytest.raises(ConfigError, match=r"method\.streamdiffusion\.clip_skip"):
            validate(
                compose(["method=[streamdiffusion]", f"method.streamdiffusion.clip_skip={bad}"]), videos=False
            )
    with pytest.raises(InstantiationException, match="clip_skip must be null"):
        instantiate(
            compose(
                ["method=[streamdiffusion]", "method.streamdiffusion.clip_skip=-1"]
            ).method.streamdiffusion
        )


def test_reference_departures_are_stated_for_the_runs_they_concern():
    """The KL posterior (the references sample it, ours takes its mean) and the similarity filter's missing sleep
    are said in the header, naming whether this run is concerned."""
    cfg = resolved(["method=[streamdiffusion_ssf,streamdiffusion_vid2vid,live2diff]", "model.vae.kind=kl"])
    notes = method_notes(cfg["method"], cfg["diffusion"], cfg["model"])
    vae = [n for n in notes if n.startswith("VAE encoding")]
    assert len(vae) == 1 and "this run's VAE is kl" in vae[0], vae
    ssf = [n for n in notes if n.startswith("Similarity filter")]
    assert ssf == [
        "Similarity filter (streamdiffusion_ssf, streamdiffusion_vid2vid): a skipped frame is emitted at once, while "
        "the references (StreamDiffusion, Live2Diff) sleep inference_time_ema before returning it, so these rows' FPS "
        "is higher than the reference code would show"
    ]
    tiny = resolved(["method=[streamdiffusion]"])
    (vae,) = [
        n for n in method_notes(tiny["method"], tiny["diffusion"], tiny["model"]) if n.startswith("VAE")
    ]
    assert vae.endswith("has no posterior: no difference"), vae
