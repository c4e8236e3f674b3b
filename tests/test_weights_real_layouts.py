"""Real weights without surprises: every loader proven on checkpoints with the real files' key names and shapes
(random values, written by ``live2diff.testing.fixtures``), and each review finding of issue 13 pinned."""

from __future__ import annotations

import argparse

import pytest
import torch
from safetensors.torch import load_file

from live2diff import convert
from live2diff.components import build_components, resolve_model_cfg
from live2diff.components.text import HFTokenizer, OpenClipTokenizer
from live2diff.components.weights import PartialWeightsError, UnsafeCheckpointError
from live2diff.testing import fixtures as fx
from tests.live2diff_helpers import tiny_cfg

# CLIP's published ids: <|startoftext|> a photo of a cat <|endoftext|> (49406 320 1125 539 320 2368 49407)
A_PHOTO_OF_A_CAT = [49406, 320, 1125, 539, 320, 2368, 49407]


def _random_rest(cfg: dict, **paths: str) -> dict:
    """``cfg`` with ``paths`` set and every other used weight named ``random`` (``none`` for the LCM-LoRA)."""
    w = {k: "random" for k in ("base", "motion", "depth")}
    w["lcm_lora"] = "none"
    if cfg["vae"]["kind"] == "tiny":
        w["taesd"] = "random"
    w.update(paths)
    return {**cfg, "weights": w}


# ------------------------------------------------------------------------------------------------ tokenizer
def test_sd1_tokenizer_pads_with_end_of_text_as_clip_tokenizer(tmp_path):
    """Finding: open_clip's tokenizer padded with 0, SD1.x's CLIPTokenizer pads with <|endoftext|> (49407)."""
    expected = torch.tensor(A_PHOTO_OF_A_CAT + [49407] * (77 - len(A_PHOTO_OF_A_CAT)))
    assert torch.equal(OpenClipTokenizer()("a photo of a cat")[0], expected)
    from transformers import CLIPTokenizer

    folder = fx.write_clip_tokenizer(tmp_path / "tokenizer")
    hf = HFTokenizer(CLIPTokenizer.from_pretrained(folder, local_files_only=True))
    assert torch.equal(hf("a photo of a cat")[0], expected)
    long = " ".join(["cat"] * 100)  # truncated as CLIPTokenizer truncates: 75 tokens + <|endoftext|>
    assert torch.equal(OpenClipTokenizer()(long), hf(long))


# ------------------------------------------------------------------------------------------------ manifests (meta)
def test_sd15_single_file_manifest_maps_onto_the_sd15_model_on_meta():
    """The LDM single-file layout (686 UNet, 248 VAE, 197 CLIP keys, as SD1.5's published files) converts through
    diffusers' own conversion onto exactly the modules `model=sd15` builds: every key, every shape."""
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    from live2diff.components.unet import unet2d_config
    from live2diff.components.vae import random_kl_vae

    sd = fx.sd15_single_file_state_dict(device="meta")
    counts = {
        p: sum(k.startswith(p) for k in sd)
        for p in ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.")
    }
    assert counts == {"model.diffusion_model.": 686, "first_stage_model.": 248, "cond_stage_model.": 197}
    cfg = resolve_model_cfg("sd15")
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        ours_unet = UNet2DConditionModel(**unet2d_config(cfg)).state_dict()
        ours_vae = random_kl_vae({"block_out_channels": [128, 256, 512, 512]}).state_dict()
        t = cfg["text_encoder"]
        ours_te = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_act="quick_gelu", **t)).state_dict()
    for converted, ours in (
        (convert_ldm_unet_checkpoint(sd, fx.unet_config()), ours_unet),
        (convert_ldm_vae_checkpoint(sd, fx.vae_config()), ours_vae),
        ({k.removeprefix("text_model."): v for k, v in convert_ldm_clip_checkpoint(sd).items()}, ours_te),
    ):
        converted = {k: v for k, v in converted.items() if not k.endswith("position_ids")}
        assert set(converted) == set(ours)
        assert all(tuple(converted[k].shape) == tuple(v.shape) for k, v in ours.items())


def test_motion_lora_taesd_manifests_fit_sd15_on_meta():
    """The reference's motion-module names, the LCM-LoRA layers (kohya and PEFT names) and TAESD's layout all
    resolve onto `model=sd15`'s modules with the right shapes."""
    from diffusers import AutoencoderTiny

    from live2diff.components.unet import build_unet
    from live2diff.components.vae import build_vae

    cfg = resolve_model_cfg("sd15")
    with torch.device("meta"):
        unet = build_unet(cfg, None)
        ours_taesd = build_vae(cfg, None, None).state_dict()
        real_taesd = AutoencoderTiny(**fx.constructor_kwargs(fx.TAESD_CONFIG)).state_dict()
    assert {k: tuple(v.shape) for k, v in ours_taesd.items()} == {
        k: tuple(v.shape) for k, v in real_taesd.items()
    }
    state = unet.state_dict()
    ref = fx.motion_state_dict([320, 640, 1280, 1280], 2, cfg["mapping_channels"], device="meta")
    conv = convert.convert_reference_state_dict(ref, frozenset(k for k in state if "motion_modules" not in k))
    own = {k for k in state if "motion_modules" in k}  # positional tables included: the reference loads them
    assert not conv.unknown and set(conv.unet) == own
    assert all(tuple(state[k].shape) == tuple(v.shape) for k, v in conv.unet.items())
    assert len(conv.pos_tables) == 2 * len({k.split(".temporal")[0] for k in ref if "temporal" in k})
    for layout in ("kohya", "peft"):
        lora = fx.lora_state_dict(unet, None, layout, rank=1)
        groups = convert._group_lora(lora)
        assert len(groups) > 200  # the LCM-LoRA adapts every attention, feed-forward and resnet conv
        for (_target, name), parts in groups.items():
            mod = convert._lookup(unet, name)
            assert mod is not None, name
            assert (parts["up"].shape[0], *parts["down"].shape[1:2]) == tuple(mod.weight.shape[:2]), name


# ------------------------------------------------------------------------------------------------ motion checkpoint
@pytest.mark.parametrize("wrapping,suffix", [("plain", ".safetensors"), ("module", ".safetensors"),
                                             ("state_dict", ".ckpt"), ("training", ".ckpt")])  # fmt: skip
def test_motion_checkpoint_wrappings_all_land(tmp_path, wrapping, suffix):
    """Finding: the loader was stricter than the reference's: nested state_dict, module. prefix, metadata entries
    (global_step, epoch) and a full save's spatial UNet weights are accepted; every tensor lands."""
    from tests.live2diff_helpers import tiny_components

    c = tiny_components(fresh=True)
    cfg = c.cfg
    spatial = {k: torch.randn_like(v) for k, v in list(c.unet.state_dict().items())[:6] if "motion" not in k}
    path = fx.write_motion_checkpoint(
        tmp_path / f"live2diff{suffix}",
        cfg["unet"]["block_out_channels"],
        cfg["unet"]["layers_per_block"],
        cfg["mapping_channels"],
        wrapping,
        spatial=spatial,
        seed=3,
    )
    conv = convert.load_reference_checkpoint(path, c.unet, c.depth_mapper)
    state = c.unet.state_dict()
    expected = convert.convert_reference_state_dict(
        fx.motion_state_dict(
            cfg["unet"]["block_out_channels"],
            cfg["unet"]["layers_per_block"],
            cfg["mapping_channels"],
            seed=3,
        )
    )
    assert set(conv.unet) == set(expected.unet)
    assert all(torch.equal(state[k], v) for k, v in expected.unet.items())
    assert all(torch.equal(state[k], v) for k, v in spatial.items())
    for k, v in c.depth_mapper.state_dict().items():
        assert torch.equal(v, expected.depth_mapper[k]), k


def test_motion_checkpoint_reports_unexpected_keys_by_name(tmp_path):
    from safetensors.torch import save_file

    from tests.live2diff_helpers import tiny_components

    c = tiny_components(fresh=True)
    u = c.cfg["unet"]
    sd = fx.motion_state_dict(u["block_out_channels"], u["layers_per_block"], c.cfg["mapping_channels"])
    sd["model.diffusion_model.input_blocks.0.0.weight"] = torch.zeros(1)
    sd["ema.decay"] = torch.zeros(1)
    save_file(sd, str(tmp_path / "odd.safetensors"))
    with pytest.raises(
        ValueError,
        match=r"2 unexpected keys.*model\.diffusion_model\.input_blocks\.0\.0\.weight.*ema\.decay|2 unexpected keys.*ema\.decay.*model\.diffusion",
    ):
        convert.load_reference_checkpoint(tmp_path / "odd.safetensors", c.unet, c.depth_mapper)


def test_refused_pickle_names_the_convert_command_which_works(tmp_path):
    """Finding: a pickle torch.load(weights_only=True) refuses gets a message with the remedy, and the remedy (the
    project's convert-to-safetensors command) produces a file the loader reads."""
    from eval import weights as shared
    from tests.live2diff_helpers import tiny_components

    c = tiny_components(fresh=True)
    u = c.cfg["unet"]
    sd = fx.motion_state_dict(
        u["block_out_channels"], u["layers_per_block"], c.cfg["mapping_channels"], seed=5
    )
    path = tmp_path / "train_save.ckpt"
    torch.save({"state_dict": sd, "hyper_parameters": argparse.Namespace(lr=1e-4)}, path)  # a pickled object
    with pytest.raises(
        UnsafeCheckpointError, match=r"weights_only=True.*python -m eval\.weights to-safetensors"
    ):
        convert.load_reference_checkpoint(path, c.unet, c.depth_mapper)
    out = tmp_path / "train_save.safetensors"
    assert shared.main(["to-safetensors", str(path), str(out)]) == 0
    conv = convert.load_reference_checkpoint(out, c.unet, c.depth_mapper)
    assert conv.unet and conv.depth_mapper


# ------------------------------------------------------------------------------------------------ DreamBooth
def test_dreambooth_loads_unet_text_encoder_and_kl_vae(tmp_path):
    """Finding: a DreamBooth single file replaced only the UNet; the reference also loads its text encoder and
    (with a KL VAE) its VAE. With TAESD the file's VAE is reported as unused."""
    from diffusers import AutoencoderKL

    from tests.live2diff_helpers import tiny_components

    c = tiny_components(fresh=True)
    widths = fx.widths_of(c.cfg) | {"vae_block_out_channels": [8, 8, 8, 8], "vae_norm_num_groups": 4}
    path = fx.write_dreambooth(tmp_path / "style.safetensors", widths)
    vae = AutoencoderKL(**fx.constructor_kwargs(fx.vae_config(widths)))
    motion_before = {k: v.clone() for k, v in c.unet.state_dict().items() if "motion_modules" in k}
    report = convert.load_dreambooth(path, c.unet, c.text_encoder, vae)
    assert report["text_encoder"].endswith("tensors") and report["vae"].endswith("tensors")
    sd = load_file(str(path))
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

    want = convert_ldm_unet_checkpoint(sd, convert.unet2d_config_of(c.unet))
    state = c.unet.state_dict()
    assert all(torch.equal(state[k], v) for k, v in want.items())
    assert all(torch.equal(state[k], v) for k, v in motion_before.items())  # motion modules kept
    te = c.text_encoder.state_dict()
    for k, v in sd.items():
        if k.startswith("cond_stage_model.transformer.text_model.") and not k.endswith("position_ids"):
            assert torch.equal(te[k.removeprefix("cond_stage_model.transformer.text_model.")], v), k
    vs = vae.state_dict()
    assert all(torch.equal(vs[k], v) for k, v in convert_ldm_vae_checkpoint(sd, vae.config).items())
    # the tiny model's VAE is not a KL VAE: the file's VAE is reported unused; a file without text keeps ours
    no_text = fx.write_dreambooth(tmp_path / "unet_only.safetensors", widths, text=False)
    te0 = {k: v.clone() for k, v in c.text_encoder.state_dict().items()}
    report = convert.load_dreambooth(no_text, c.unet, c.text_encoder, c.vae)
    assert report["text_encoder"] == "not in file" and report["vae"].startswith("not used")
    assert all(torch.equal(te0[k], v) for k, v in c.text_encoder.state_dict().items())


# ------------------------------------------------------------------------------------------------ LoRA scaling
@pytest.mark.parametrize("layout", ["kohya", "peft"])
def test_lora_scalings_named_both_conventions(layout):
    """Finding: style LoRAs in the reference's configs fuse as lora_alpha · up @ down (file alpha ignored);
    diffusers/kohya (and the reference's LCM-LoRA) as scale · alpha/rank · up @ down. Both, named."""
    from tests.live2diff_helpers import tiny_components

    c = tiny_components(fresh=True)
    sd = fx.lora_state_dict(c.unet, c.text_encoder, layout, rank=4, alpha=2.0)
    mod = dict(c.unet.named_modules())["down_blocks.0.attentions.0.proj_in"]
    head = (
        "lora_unet_down_blocks_0_attentions_0_proj_in"
        if layout == "kohya"
        else "unet.down_blocks.0.attentions.0.proj_in"
    )
    down = sd[f"{head}.lora_down.weight" if layout == "kohya" else f"{head}.lora_A.weight"]
    up = sd[f"{head}.lora_up.weight" if layout == "kohya" else f"{head}.lora_B.weight"]
    delta = (up.flatten(1) @ down.flatten(1)).reshape(mod.weight.shape)
    file_alpha_over_rank = 2.0 / 4 if layout == "kohya" else 1.0  # PEFT files carry no alpha: alpha = rank
    for scaling, factor in ((convert.ALPHA_OVER_RANK, 0.6 * file_alpha_over_rank), (convert.LORA_ALPHA, 0.6)):
        w0 = mod.weight.clone()
        n = convert.fuse_lora_state_dict(sd, c.unet, c.text_encoder, scale=0.6, scaling=scaling)
        assert n == len(fx.lora_targets(c.unet, c.text_encoder))
        torch.testing.assert_close(mod.weight, w0 + factor * delta)
    with pytest.raises(ValueError, match="unknown LoRA scaling"):
        convert.fuse_lora_state_dict(sd, c.unet, c.text_encoder, scaling="alpha")


def test_style_lora_defaults_to_the_reference_configs_scaling(tmp_path):
    from tests.live2diff_helpers import tiny_components

    src = tiny_components(fresh=True)
    path = fx.write_lora(
        tmp_path / "style.safetensors", src.unet, src.text_encoder, "kohya", rank=4, alpha=1.0
    )
    base = build_components(_random_rest(tiny_cfg()))
    styled = build_components(_random_rest(tiny_cfg(), style_lora=str(path)) | {"style_lora_scale": 0.5})
    name = "down_blocks.0.attentions.0.proj_in"
    sd = load_file(str(path))
    h = "lora_unet_" + name.replace(".", "_")
    delta = (sd[f"{h}.lora_up.weight"].flatten(1) @ sd[f"{h}.lora_down.weight"].flatten(1)).reshape(
        dict(base.unet.named_modules())[name].weight.shape
    )
    w0, w1 = dict(base.unet.named_modules())[name].weight, dict(styled.unet.named_modules())[name].weight
    torch.testing.assert_close(
        w1, w0 + 0.5 * delta
    )  # lora_alpha (0.5) · up @ down, the file's alpha/rank ignored


# ------------------------------------------------------------------------------------------------ partial weights
def test_partial_real_weights_refuse_before_building(tmp_path):
    """Finding: a real base with no motion/taesd/depth ran random modules silently. Now every used component
    must be given or named random, and the components say what was random."""
    path = fx.write_motion_checkpoint(tmp_path / "m.safetensors", [32, 32, 32, 32], 1, [8, 8, 16, 16])
    # widths and motion-module GroupNorm a reference checkpoint fits (it hard-codes 32 groups)
    unet32 = {**tiny_cfg()["unet"], "block_out_channels": [32, 32, 32, 32], "motion_norm_num_groups": 32}
    cfg = {**tiny_cfg(), "unet": unet32, "weights": {"motion": str(path)}}
    with pytest.raises(PartialWeightsError) as err:
        build_components(cfg)
    msg = str(err.value)
    for key in (
        "model.weights.base=/path (or random)",
        "model.weights.depth=/path (or random)",
        "model.weights.lcm_lora=/path (or none)",
    ):
        assert key in msg
    assert "taesd" not in msg  # tiny.yaml's pixel VAE uses no TAESD weights
    comps = build_components(_random_rest({**tiny_cfg(), "unet": unet32}, motion=str(path)))
    assert comps.random_parts == ["base", "depth"] and comps.weights["motion"] == str(path)
    assert build_components(tiny_cfg()).random_parts == [
        "base",
        "motion",
        "depth",
    ]  # no real weights: all random
    with pytest.raises(ValueError, match="model.depth.kind=tiny"):
        build_components(
            _random_rest(tiny_cfg(), depth=str(tmp_path))
        )  # a path the tiny depth net cannot load


def test_report_notes_list_random_components():
    from eval.cli import weight_notes

    (note,) = weight_notes("sd15", {"base": "/w/sd15", "motion": "/w/l2d.ckpt", "depth": "random", "taesd": "random",
                                    "lcm_lora": "none", "style_lora": None})  # fmt: skip
    assert "['depth', 'taesd']" in note and "['base', 'motion']" in note
    assert "random-initialised" in weight_notes("tiny", {"base": None, "depth": "random"})[0]
    assert weight_notes("sd15", {"base": "/w", "motion": "/m", "lcm_lora": "none"}) == []


# ------------------------------------------------------------------------------------------------ RAFT, DPT, CLIP
def test_raft_large_torchvision_layout_loads_every_tensor(tmp_path):
    from eval.metrics.flow import RaftFlow

    path = fx.write_raft_large(tmp_path / "raft_large_C_T_SKHT_V2-ff5fadd5.pth")
    flow = RaftFlow(str(path), "large", iters=2, device="cpu")
    saved = torch.load(path, weights_only=True)
    net = next(m for m in vars(flow).values() if isinstance(m, torch.nn.Module))
    got = net.state_dict()
    assert set(got) == set(saved) and all(torch.equal(got[k], v) for k, v in saved.items())


def test_clip_openai_layout_is_detected_and_names_the_quickgelu_architecture(tmp_path):
    """Fast half of the CLIP finding: OpenAI's layout (its input_resolution/context_length/vocab_size entries) turns
    ViT-B-32 into ViT-B-32-quickgelu; quick_gelu=false with such a file is refused; other files keep the name."""
    from safetensors.torch import save_file

    from eval.metrics import clip as clipm

    sd = {"visual.conv1.weight": torch.zeros(2, 3, 1, 1), "input_resolution": torch.tensor(224),
          "context_length": torch.tensor(77), "vocab_size": torch.tensor(49408)}  # fmt: skip
    save_file(sd, str(tmp_path / "openai.safetensors"))
    name, openai_sd = clipm._activation("ViT-B-32", str(tmp_path / "openai.safetensors"), "k", None)
    assert name == "ViT-B-32-quickgelu" and set(openai_sd) == {"visual.conv1.weight"}
    with pytest.raises(ValueError, match="QuickGELU"):
        clipm._activation("ViT-B-32", str(tmp_path / "openai.safetensors"), "k", False)
    save_file({"visual.conv1.weight": torch.zeros(2, 3, 1, 1)}, str(tmp_path / "laion.safetensors"))
    assert clipm._activation("ViT-B-32", str(tmp_path / "laion.safetensors"), "k", None) == ("ViT-B-32", None)


@pytest.mark.slow
def test_clip_openai_layout_builds_quickgelu_and_loads_every_tensor(tmp_path):
    """Finding (CLIP): OpenAI weights need QuickGELU; plain ViT-B-32 was built silently. OpenAI's layout is
    detected (its input_resolution/context_length/vocab_size entries) and the quickgelu architecture built."""
    import open_clip

    from eval.metrics import clip as clipm

    path = fx.write_open_clip_openai(tmp_path / "ViT-B-32-openai.safetensors")
    m = clipm.load_clip("ViT-B-32", str(path), "cpu")
    assert isinstance(m.model.visual.transformer.resblocks[0].mlp.gelu, open_clip.transformer.QuickGELU)
    assert "quickgelu" in m.label
    saved = load_file(str(path))
    got = m.model.state_dict()
    for k, v in got.items():
        assert torch.equal(v, saved[k]), k
    with pytest.raises(ValueError, match="quickgelu"):
        clipm.load_clip("ViT-B-32", str(path), "cpu", quick_gelu=False)


@pytest.mark.slow
def test_dpt_hybrid_transformers_folder_loads_every_tensor(tmp_path):
    from safetensors.torch import load_file as lf

    from live2diff.components.depth import build_depth

    widths = {
        "dpt_hidden_size": 64,
        "dpt_heads": 2,
    }
    folder = fx.write_dpt_hybrid_folder(tmp_path / "dpt-hybrid-midas", widths)
    est = build_depth({"depth": {"kind": "dpt", "resolution": 384}}, "dpt", folder)
    saved = lf(str(folder / "model.safetensors"))
    got = est.net.model.state_dict()
    assert len(saved) > 400 and all(torch.equal(got[k], v) for k, v in saved.items() if k in got)
    assert set(saved) <= set(got)
    d = est(torch.rand(1, 3, 64, 64))
    assert d.shape == (1, 3, 64, 64) and torch.isfinite(d).all()


# ------------------------------------------------------------------------------------------------ end to end (slow)
#: model=sd15 with every structural count of SD1.5 (levels, layers per block, 12 text layers, heads layout, TAESD,
#: DPT-hybrid, the reference's mapping network) but narrower channels, so that a CPU test can run it
SD15_NARROW = [
    "model.unet.block_out_channels=[32,64,64,64]",
    "model.unet.cross_attention_dim=64",
    "model.text_encoder.hidden_size=64",
    "model.text_encoder.intermediate_size=128",
    "model.text_encoder.num_attention_heads=2",
]
DPT_NARROW = {
    "dpt_hidden_size": 64,
    "dpt_heads": 2,
}
DIFFUSION_METHODS = [
    "live2diff", "live2diff_window", "live2diff_nowarmup", "live2diff_nodepth",
    "streamdiffusion", "streamv2v", "per_frame_img2img", "animatediff_window",
]  # fmt: skip


def _real_layout_files(root, cfg):
    widths = fx.widths_of(cfg) | {"vae_block_out_channels": [32, 32, 64, 64]}
    u = cfg["unet"]
    files = {
        "base": fx.write_sd15_folder(root / "stable-diffusion-v1-5", widths, seed=1),
        "motion": fx.write_motion_checkpoint(
            root / "live2diff.ckpt", u["block_out_channels"], u["layers_per_block"], cfg["mapping_channels"],
            "training", seed=2,
        ),
        "dreambooth": fx.write_dreambooth(root / "toonyou.safetensors", widths, seed=3),
        "taesd": fx.write_taesd_folder(root / "taesd", seed=4),
        "depth": fx.write_dpt_hybrid_folder(root / "dpt-hybrid-midas", DPT_NARROW, seed=5),
    }  # fmt: skip
    unet2d, _, te = fx.sd15_modules(widths)
    files["lcm_lora"] = fx.write_lora(root / "lcm-lora-sdv1-5" / "pytorch_lora_weights.safetensors", unet2d, None,
                                      "kohya", rank=4, alpha=8.0, seed=6).parent  # fmt: skip
    files["style_lora"] = fx.write_lora(root / "style_peft.safetensors", unet2d, te, "peft", rank=2, seed=7)
    return files


@pytest.mark.slow
def test_sd15_layout_every_weight_path_lands_and_every_method_runs(tmp_path):
    """model=sd15's structure (narrow channels, see SD15_NARROW) with every model.weights path set to a real-layout
    file: every tensor of every component equals what the files say (base → DreamBooth → LoRAs fused, motion +
    mapper, TAESD, DPT), none left random; then every diffusion method streams a few 64×64 frames, finite."""
    from diffusers.loaders.single_file_utils import convert_ldm_clip_checkpoint, convert_ldm_unet_checkpoint
    from hydra.utils import instantiate

    from tests.conftest import compose, model_cfg

    cfg = model_cfg("sd15", *SD15_NARROW)
    files = _real_layout_files(tmp_path, cfg)
    overrides = (
        SD15_NARROW + [f"model.weights.{k}={v}" for k, v in files.items()] + ["model.style_lora_scale=0.7"]
    )
    cfg = model_cfg("sd15", *overrides)
    comps = build_components(cfg)
    assert comps.random_parts == [] and comps.weights == {
        **{k: str(v) for k, v in files.items()},
        "trained": "none",
        "animatediff_motion": "none",  # an optional entry (animatediff_window's), not given here
    }

    # expected tensors, from the files (LoRA deltas computed here, independently of convert.fuse_lora_*)
    db = load_file(str(files["dreambooth"]))
    unet_want = convert_ldm_unet_checkpoint(db, convert.unet2d_config_of(comps.unet))
    unet_want.update(convert.convert_reference_state_dict(torch.load(files["motion"], weights_only=True)["state_dict"]
                                                          ).unet)  # fmt: skip
    te_want = {k.removeprefix("text_model."): v for k, v in convert_ldm_clip_checkpoint(db).items()}
    lcm = load_file(str(files["lcm_lora"] / "pytorch_lora_weights.safetensors"))
    for k in [k for k in lcm if k.endswith(".lora_down.weight")]:
        head = k.removesuffix(".lora_down.weight")
        name = convert._lookup(comps.unet, head.removeprefix("lora_unet_"))
        key = next(n for n, m in comps.unet.named_modules() if m is name) + ".weight"
        d = lcm[f"{head}.lora_up.weight"].flatten(1) @ lcm[k].flatten(1) * (8.0 / 4)
        unet_want[key] = unet_want[key] + d.reshape(unet_want[key].shape)
    style = load_file(str(files["style_lora"]))
    for k in [k for k in style if k.endswith(".lora_A.weight")]:
        target, name = k.removesuffix(".lora_A.weight").split(".", 1)
        d = (
            style[k.replace("lora_A", "lora_B")].flatten(1) @ style[k].flatten(1) * 0.7
        )  # lora_alpha convention
        want = unet_want if target == "unet" else te_want
        key = name + ".weight" if target == "unet" else name.removeprefix("text_model.") + ".weight"
        want[key] = want[key] + d.reshape(want[key].shape)
    state = comps.unet.state_dict()
    for k, v in state.items():  # the positional tables too: the checkpoint's, as the reference loads them
        torch.testing.assert_close(v, unet_want[k], msg=k)
    for k, v in comps.text_encoder.state_dict().items():
        torch.testing.assert_close(v, te_want[k], msg=k)
    taesd = load_file(str(files["taesd"] / "diffusion_pytorch_model.safetensors"))
    assert comps.vae.state_dict().keys() == taesd.keys()
    assert all(torch.equal(v, taesd[k]) for k, v in comps.vae.state_dict().items())
    dpt = load_file(str(files["depth"] / "model.safetensors"))
    got = comps.depth.net.model.state_dict()
    assert set(dpt) <= set(got) and all(torch.equal(got[k], v) for k, v in dpt.items())
    mapper = convert.convert_reference_state_dict(
        torch.load(files["motion"], weights_only=True)["state_dict"]
    ).depth_mapper
    assert all(torch.equal(v, mapper[k]) for k, v in comps.depth_mapper.state_dict().items())

    frames = fx_frames = torch.rand(10, 3, 64, 64)
    for name in DIFFUSION_METHODS:
        c = compose([f"method=[{name}]", "model=sd15", "hardware=cpu", *overrides])
        method = instantiate(c.method[name], _convert_="all")
        method.prepare("a photo of a cat", height=64, width=64, seed=0)
        out = {}
        for i, f in enumerate(fx_frames):
            out.update(dict(method.push(i, f)))
        out.update(dict(method.flush()))
        assert sorted(out) == list(range(len(frames))), name
        assert all(torch.isfinite(o).all() for o in out.values()), name
        method.reset()


# ------------------------------------------------------------------------------------------------ fp16
def test_tiny_streaming_pipeline_in_float16_matches_float32():
    """GPU readiness on the CPU: the whole streaming pipeline in float16 (as hardware=cuda runs it) gives finite
    frames within half precision of the float32 run."""
    from live2diff.method import Live2DiffMethod
    from tests.live2diff_helpers import frames

    clip = frames(8, 64)
    outs = {}
    for dtype in ("float16", "float32"):
        m = Live2DiffMethod(model=tiny_cfg(), dtype=dtype, t_index_list=[30, 40], warmup=4, window=8)
        assert next(m.components.unet.parameters()).dtype == getattr(torch, dtype)
        m.prepare("a cat", height=64, width=64, seed=0)
        got = {}
        for i, f in enumerate(clip):
            got.update(dict(m.push(i, f)))
        got.update(dict(m.flush()))
        outs[dtype] = torch.stack([got[i] for i in range(len(clip))])
    assert torch.isfinite(outs["float16"]).all()
    assert (outs["float16"] - outs["float32"]).abs().max() < 2e-2
