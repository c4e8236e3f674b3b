"""Builders, helpers, checkpoint converter and loading errors (offline, tiny)."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from live2diff.components import (
    MissingWeightsError,
    build_components,
    build_unet2d,
    encode_prompt,
    make_lcm_schedule,
    resolve_model_cfg,
    vae_decode,
    vae_encode,
)
from live2diff.convert import (
    convert_reference_state_dict,
    fuse_lora_state_dict,
    load_reference_checkpoint,
    to_reference_state_dict,
)
from tests.conftest import model_cfg
from tests.live2diff_helpers import tiny_cfg, tiny_components


def test_tiny_components_shapes_and_helpers():
    c = tiny_components()
    # conf/model/tiny.yaml (what `make eval` builds): the weight-free pixel VAE
    assert type(c.unet).__name__ == "UNetMotionModel" and type(c.vae).__name__ == "PixelAutoencoder"
    assert c.unet.config.motion_num_attention_heads == 8 and c.unet.config.motion_max_seq_length == 24
    assert not hasattr(c.unet.mid_block, "motion_modules")  # reference layout: no mid-block motion module
    emb = encode_prompt(c, "a cat")
    assert emb.shape == (1, 77, 32)
    x = torch.rand(2, 3, 64, 64)
    z = vae_encode(c, x)
    assert z.shape == (2, 4, 8, 8)
    y = vae_decode(c, z)
    assert y.shape == (2, 3, 64, 64) and 0 <= y.min() and y.max() <= 1


def test_random_taesd_vae_round_trip_shapes():
    cfg = model_cfg("tiny_random", "model.vae.kind=tiny")
    c = build_components(cfg)
    assert type(c.vae).__name__ == "AutoencoderTiny" and c.vae_scale_factor == 8
    z = vae_encode(c, torch.rand(2, 3, 64, 64))
    assert z.shape == (2, 4, 8, 8)
    y = vae_decode(c, z)
    assert y.shape == (2, 3, 64, 64) and 0 <= y.min() and y.max() <= 1


def test_tests_build_what_make_eval_builds():
    """The random model tests use is conf/model/tiny_random.yaml itself (no second, drifting copy in Python)."""
    from omegaconf import OmegaConf

    from tests.conftest import CONF

    yaml = OmegaConf.to_container(OmegaConf.load(CONF / "model" / "tiny_random.yaml"), resolve=True)
    assert resolve_model_cfg("tiny_random") == resolve_model_cfg(yaml) == resolve_model_cfg(tiny_cfg(0))
    assert not hasattr(__import__("live2diff.components").components, "PRESETS")


def test_build_is_deterministic_per_seed():
    a = build_components(tiny_cfg(3))
    b = build_components(tiny_cfg(3))
    for (n, p), (_, q) in zip(a.unet.state_dict().items(), b.unet.state_dict().items()):
        assert torch.equal(p, q), n


def test_lcm_schedule_matches_the_50_step_schedule_and_strength():
    s = make_lcm_schedule(tiny_components().scheduler, [30, 36, 42])
    assert s.timesteps.tolist() == [399, 279, 159]
    assert abs(s.strength - 0.4) < 1e-9
    # the reference's noise schedule: linear betas 0.00085..0.012 (its DDIM kwargs), not SD's scaled-linear
    betas = torch.linspace(0.00085, 0.012, 1000, dtype=torch.float32)
    expected = torch.cumprod(1 - betas, 0)[s.timesteps].sqrt()
    torch.testing.assert_close(s.alpha_sqrt, expected)
    x0, eps = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    # LCM's boundary condition recovers x0 from a perfect noise prediction (c_skip ~ 0 at these timesteps)
    torch.testing.assert_close(s.denoise(s.add_noise(x0, eps, 1), eps, 1), x0, rtol=1e-3, atol=1e-4)
    with pytest.raises(ValueError):
        make_lcm_schedule(tiny_components().scheduler, [40, 30])


def test_unknown_size_suggests_the_closest():
    with pytest.raises(ValueError, match="Did you mean 'tiny'"):
        resolve_model_cfg({"size": "tiyn"})


def test_unet2d_shares_spatial_weights():
    c = tiny_components()
    u2 = build_unet2d(c)
    z = torch.randn(1, 4, 8, 8)
    emb = encode_prompt(c, "x")
    with torch.no_grad():
        a = u2(z, 500, emb).sample
    assert a.shape == z.shape


@pytest.mark.parametrize("key", ["base", "motion", "lcm_lora", "style_lora", "dreambooth", "taesd", "depth"])
def test_missing_weight_file_names_path_and_config_key(tmp_path, key):
    missing = tmp_path / f"no_{key}.safetensors"
    with pytest.raises(MissingWeightsError) as err:
        build_components({"size": "tiny_random", "weights": {key: str(missing)}})
    assert str(missing) in str(err.value) and f"model.weights.{key}" in str(err.value)


def _reference_style_state_dict(unet, mapping_channels, seed=0):
    """Synthetic checkpoint with the reference's key names and shapes (AnimateDiff layout + flow_conv_in), written
    from the reference's module structure by the fixture generator, not from our converter."""
    from live2diff.testing.fixtures import motion_state_dict

    cfg = unet.config
    return motion_state_dict(list(cfg.block_out_channels), cfg.layers_per_block, mapping_channels, seed=seed)


def test_converter_round_trip_on_reference_layout(tmp_path):
    c = tiny_components(fresh=True)
    ref = _reference_style_state_dict(c.unet, c.cfg["mapping_channels"])
    ddp = {
        ("module." + k if i % 2 else k): v for i, (k, v) in enumerate(ref.items())
    }  # DDP prefixes, as saved
    path = tmp_path / "live2diff.safetensors"
    save_file(ddp, str(path))
    conv = load_reference_checkpoint(path, c.unet, c.depth_mapper)
    assert not conv.unknown
    own = c.unet.state_dict()
    for k, v in conv.unet.items():
        assert torch.equal(own[k], v), k
    for k, v in c.depth_mapper.state_dict().items():
        assert torch.equal(v, ref["flow_conv_in." + k])
    pe = [k for k in ref if k.endswith("pos_encoder.pe")]
    assert pe and all(torch.equal(own[conv_key], ref[k]) for k, conv_key in _pe_pairs(pe))  # the tables load
    back = to_reference_state_dict(c.unet.state_dict(), c.depth_mapper.state_dict())
    assert set(back) == set(ref)
    assert all(torch.equal(back[k], ref[k]) for k in ref)


def _pe_pairs(keys):
    """(reference key, our key) of positional tables: a block's ``attention_blocks.{0,1}.pos_encoder.pe`` are both
    its ``pos_embed.pe``."""
    for k in keys:
        block = k.split(".attention_blocks.")[0].replace(".temporal_transformer.", ".")
        yield k, block + ".pos_embed.pe"


def test_positional_tables_load_from_the_checkpoint_or_are_refused_by_key(tmp_path):
    """The reference uses the checkpoint's pos_encoder.pe tables (random in the fixture, so a loader that kept the
    sinusoid would be caught); diffusers keeps one table per block, so a block whose two attentions carry different
    tables is refused naming the key, as is a table of the wrong length."""
    c = tiny_components(fresh=True)
    ref = _reference_style_state_dict(c.unet, c.cfg["mapping_channels"])
    sinusoid = {k: v.clone() for k, v in c.unet.state_dict().items() if k.endswith("pos_embed.pe")}
    save_file(ref, str(tmp_path / "ok.safetensors"))
    load_reference_checkpoint(tmp_path / "ok.safetensors", c.unet, c.depth_mapper)
    own = c.unet.state_dict()
    assert all(not torch.equal(own[k], v) for k, v in sinusoid.items())
    key = next(k for k in ref if k.endswith("attention_blocks.1.pos_encoder.pe"))
    save_file({**ref, key: ref[key] + 1}, str(tmp_path / "two.safetensors"))
    with pytest.raises(ValueError, match=re.escape(key)):
        load_reference_checkpoint(tmp_path / "two.safetensors", c.unet, c.depth_mapper)
    longer = {k: (torch.cat([v, v], 1) if k.endswith(".pe") else v) for k, v in ref.items()}
    save_file(longer, str(tmp_path / "long.safetensors"))
    with pytest.raises(ValueError, match="motion_max_seq_length"):
        load_reference_checkpoint(tmp_path / "long.safetensors", c.unet, c.depth_mapper)


def test_converter_rejects_foreign_or_incomplete_checkpoints(tmp_path):
    c = tiny_components(fresh=True)
    ref = _reference_style_state_dict(c.unet, c.cfg["mapping_channels"])
    foreign = dict(ref, **{"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1)})
    save_file(foreign, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(ValueError, match="neither motion modules"):
        load_reference_checkpoint(tmp_path / "foreign.safetensors", c.unet, c.depth_mapper)
    partial = {k: v for k, v in ref.items() if not k.startswith("up_blocks.0.")}
    save_file(partial, str(tmp_path / "partial.safetensors"))
    with pytest.raises(ValueError, match="missing"):
        load_reference_checkpoint(tmp_path / "partial.safetensors", c.unet, c.depth_mapper)
    no_mapper = {k: v for k, v in ref.items() if not k.startswith("flow_conv_in.")}
    save_file(no_mapper, str(tmp_path / "nomap.safetensors"))
    with pytest.raises(ValueError, match="depth.kind=none"):
        load_reference_checkpoint(tmp_path / "nomap.safetensors", c.unet, c.depth_mapper)


def test_build_components_loads_motion_checkpoint_from_config(tmp_path):
    """A reference checkpoint needs the reference's motion-module GroupNorm (32 groups, hard-coded there): a model
    with other groups is refused naming model.unet.motion_norm_num_groups, one with 32 loads every tensor."""
    from live2diff.testing.fixtures import motion_state_dict

    mapping = tiny_components().cfg["mapping_channels"]
    ref = motion_state_dict([32, 32, 32, 32], 1, mapping, seed=7)
    torch.save(ref, tmp_path / "live2diff.ckpt")  # pickle path: read back with weights_only=True
    weights = {
        "base": "random",
        "depth": "random",
        "lcm_lora": "none",
        "motion": str(tmp_path / "live2diff.ckpt"),
    }
    unet = {"block_out_channels": [32, 32, 32, 32], "motion_norm_num_groups": 32}
    loaded = build_components({"size": "tiny_random", "unet": unet, "weights": weights})
    conv = convert_reference_state_dict(ref)
    own = loaded.unet.state_dict()
    assert all(torch.equal(own[k], v) for k, v in conv.unet.items())
    assert {m.norm.num_groups for n, m in loaded.unet.named_modules() if n.endswith("motion_modules.0")} == {
        32
    }
    with pytest.raises(
        ValueError, match=r"motion_norm_num_groups=32 .*\[8\]|\[8\].*motion_norm_num_groups=32"
    ):
        build_components(
            {"size": "tiny_random", "unet": {**unet, "motion_norm_num_groups": 8}, "weights": weights}
        )
    with pytest.raises(ValueError, match=r"widths \[16\] \(model.unet.block_out_channels\)"):
        build_components({"size": "tiny_random", "unet": {"motion_norm_num_groups": 32}})


def test_lora_fusion_kohya_and_peft_formats():
    c = tiny_components(fresh=True)
    name = "down_blocks.0.attentions.0.proj_in"
    lin = dict(c.unet.named_modules())[name]
    w0 = lin.weight.clone()
    out_c, in_c = w0.shape[:2]
    down, up = torch.randn(4, in_c, *w0.shape[2:]), torch.randn(out_c, 4, *([1] * (w0.ndim - 2)))
    kohya = {
        f"lora_unet_{name.replace('.', '_')}.lora_down.weight": down,
        f"lora_unet_{name.replace('.', '_')}.lora_up.weight": up,
        f"lora_unet_{name.replace('.', '_')}.alpha": torch.tensor(2.0),
    }
    te_name = "text_model_encoder_layers_0_self_attn_q_proj"
    q = c.text_encoder.encoder.layers[0].self_attn.q_proj
    q0 = q.weight.clone()
    kohya[f"lora_te_{te_name}.lora_down.weight"] = torch.randn(2, q0.shape[1])
    kohya[f"lora_te_{te_name}.lora_up.weight"] = torch.randn(q0.shape[0], 2)
    assert fuse_lora_state_dict(kohya, c.unet, c.text_encoder, scale=0.5) == 2
    expected = w0 + 0.5 * (2.0 / 4) * (up.flatten(1) @ down.flatten(1)).reshape(w0.shape)
    torch.testing.assert_close(lin.weight, expected)
    assert not torch.equal(q.weight, q0)
    peft = {f"unet.{name}.lora_A.weight": down, f"unet.{name}.lora_B.weight": up}
    w1 = lin.weight.clone()
    fuse_lora_state_dict(peft, c.unet, c.text_encoder)
    torch.testing.assert_close(lin.weight, w1 + (up.flatten(1) @ down.flatten(1)).reshape(w0.shape))
    with pytest.raises(ValueError, match="match no module"):
        fuse_lora_state_dict(
            {"lora_unet_nope.lora_down.weight": down, "lora_unet_nope.lora_up.weight": up},
            c.unet,
            c.text_encoder,
        )


def _write_clip_tokenizer(folder):
    """A transformers CLIPTokenizer folder built from the BPE vocabulary open_clip ships (no download)."""
    import json

    from open_clip.tokenizer import SimpleTokenizer

    tok = SimpleTokenizer()
    folder.mkdir(parents=True)
    rename = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}  # CLIP's own spelling
    (folder / "vocab.json").write_text(json.dumps({rename.get(k, k): v for k, v in tok.encoder.items()}))
    merges = sorted(tok.bpe_ranks, key=tok.bpe_ranks.get)
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "model_max_length": 77,
                "bos_token": "<|startoftext|>",
                "eos_token": "<|endoftext|>",
                "pad_token": "<|endoftext|>",
                "unk_token": "<|endoftext|>",
            }
        )
    )


def test_diffusers_folder_weights_are_loaded(tmp_path):
    src = tiny_components(fresh=True)
    base = tmp_path / "sd15"
    build_unet2d(src).save_pretrained(base / "unet")
    src.text_encoder.save_pretrained(base / "text_encoder")
    src.scheduler.save_pretrained(base / "scheduler")
    _write_clip_tokenizer(base / "tokenizer")
    rest = {"motion": "random", "depth": "random", "lcm_lora": "none"}
    c = build_components({"size": "tiny_random", "weights": {"base": str(base), **rest}})
    own = c.unet.state_dict()
    for k, v in src.unet.state_dict().items():
        if "motion_modules" not in k:
            assert torch.equal(own[k], v), k
    for (k, v), (_, w) in zip(src.text_encoder.state_dict().items(), c.text_encoder.state_dict().items()):
        assert torch.equal(v, w), k
    ids_hf, ids_oc = c.tokenizer("a watercolor cat"), src.tokenizer("a watercolor cat")
    assert torch.equal(ids_hf, ids_oc)  # both pad with <|endoftext|>, as SD1.x's CLIPTokenizer
    (base / "tokenizer" / "vocab.json").unlink()
    with pytest.raises(MissingWeightsError, match="vocab.json"):
        build_components({"size": "tiny_random", "weights": {"base": str(base), **rest}})


def test_clip_skip_follows_the_reference():
    """clip_skip=k -> final_layer_norm(hidden_states[-(k + 1)]), as the reference's _encode_prompt."""
    c = tiny_components()
    ids = c.tokenizer("a cat")
    with torch.no_grad():
        hs = c.text_encoder(ids, output_hidden_states=True).hidden_states
        expected = c.text_encoder.final_layer_norm(hs[-3])
    assert c.clip_skip == 2
    torch.testing.assert_close(encode_prompt(c, "a cat"), expected)


def test_a_taesd_file_is_refused_for_the_pixel_latent_model(tmp_path):
    """model=tiny's UNet was trained on the pixel encoder's latents: a TAESD file must not silently replace them."""
    from live2diff.components.vae import build_vae

    with pytest.raises(ValueError, match=r"model\.weights\.taesd.*pixel_taesd"):
        build_vae({"vae": {"kind": "pixel_taesd"}}, None, tmp_path / "taesd")


def test_the_pixel_encoder_block_size_follows_model_vae_factor():
    """model=tiny uses a /4 pixel encoder (16×16 latents of 64×64 frames); the decoder must have one level per
    halving, and a config whose levels do not match the factor is refused naming the keys."""
    from live2diff.components.vae import build_vae

    x = torch.rand(2, 3, 64, 64) * 2 - 1
    for kind, extra in (
        ("pixel", {}),
        ("pixel_taesd", {"block_out_channels": [8, 8, 8], "num_blocks": [1, 1, 1]}),
    ):
        vae = build_vae({"vae": {"kind": kind, "factor": 4, **extra}}, None, None)
        z = vae.encode(x).latents
        assert z.shape == (2, 4, 16, 16)
        torch.testing.assert_close(z[:, :3], F.avg_pool2d(x, 4))
        assert vae.decode(z).sample.shape == (2, 3, 64, 64)
        assert 2 ** (len(vae.config.block_out_channels) - 1) == 4  # what Components.vae_scale_factor reads
    assert (
        build_vae({"vae": {"kind": "pixel"}}, None, None).encode(x).latents.shape[-1] == 8
    )  # SD's /8 default
    with pytest.raises(ValueError, match=r"model\.vae\.block_out_channels.*3 levels"):
        build_vae(
            {
                "vae": {
                    "kind": "pixel_taesd",
                    "factor": 4,
                    "block_out_channels": [8] * 4,
                    "num_blocks": [1] * 4,
                }
            },
            None,
            None,
        )


def test_a_vae_factor_the_autoencoder_cannot_honour_is_refused(tmp_path):
    """model.vae.factor only sets the pixel encoders' block size: set for TAESD / KL (fixed /8), alongside a TAESD
    file, or not a power of two, it is an error naming the key rather than a silently different latent grid."""
    from live2diff.components.vae import build_vae

    for cfg, taesd in (
        ({"kind": "tiny", "factor": 4, "block_out_channels": [8] * 4, "num_blocks": [1] * 4}, None),
        ({"kind": "kl", "factor": 4}, None),
        ({"kind": "pixel", "factor": 6}, None),
        ({"kind": "pixel", "factor": 4}, tmp_path / "taesd"),
    ):
        with pytest.raises(ValueError, match=r"model\.vae\.factor"):
            build_vae({"vae": cfg}, None, taesd)
