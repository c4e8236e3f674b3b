"""Checkpoints with the key names and shapes of the real files, random values: what a user's first run with real
weights will read, written into a temporary folder so the loaders can be proven without any download.

Layouts (each writer returns the path it wrote):

* :func:`write_sd15_folder` — SD1.5 as a diffusers folder: ``model_index.json``, ``unet/``, ``vae/``,
  ``text_encoder/`` (transformers 4 key names, ``text_model.*``, as the published files), ``tokenizer/`` (CLIP BPE,
  ``pad_token: <|endoftext|>``), ``scheduler/``; ``config.json`` values of runwayml/stable-diffusion-v1-5.
* :func:`write_sd15_single_file` — the single-file LDM checkpoint (``model.diffusion_model.*``,
  ``first_stage_model.*``, ``cond_stage_model.transformer.text_model.*`` and the schedule buffers), named by the
  inverse of diffusers' own LDM conversion tables (:func:`ldm_unet_keys` ...); a DreamBooth style file has the same
  layout (:func:`write_dreambooth`).
* :func:`write_motion_checkpoint` — the Live2Diff checkpoint, keys from the reference's module tree (AnimateDiff
  ``temporal_transformer`` + ``flow_conv_in``), plain or wrapped (``module.`` prefix, ``{"state_dict": ...,
  "global_step": ...}``), optionally with the spatial UNet of a full training save.
* :func:`write_lora` — LCM-LoRA / style LoRA in kohya (``lora_unet_*.lora_down.weight`` + ``.alpha``) or PEFT
  (``unet.*.lora_A.weight``) layout, over the layers the LCM-LoRA adapts.
* :func:`write_taesd_folder` (madebyollin/taesd), :func:`write_dpt_hybrid_folder` (Intel/dpt-hybrid-midas),
  :func:`write_open_clip_openai` (open_clip ViT-B-32 in OpenAI's layout, with its ``input_resolution`` /
  ``context_length`` / ``vocab_size`` entries), :func:`write_raft_large` (torchvision ``raft_large`` state dict).

``widths`` scale channel counts down (same keys, smaller shapes) for CPU tests; ``None`` = the real sizes.
:func:`widths_of` reads them from a ``conf/model`` config, so a fixture fits that model.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor

# ------------------------------------------------------------------------------------------------ real configs
#: runwayml/stable-diffusion-v1-5 unet/config.json
SD15_UNET_CONFIG: dict[str, Any] = {
    "_class_name": "UNet2DConditionModel",
    "_diffusers_version": "0.6.0",
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}
#: runwayml/stable-diffusion-v1-5 vae/config.json
SD15_VAE_CONFIG: dict[str, Any] = {
    "_class_name": "AutoencoderKL",
    "_diffusers_version": "0.6.0",
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 512,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}
#: runwayml/stable-diffusion-v1-5 text_encoder/config.json (CLIP ViT-L/14's text tower)
SD15_TEXT_CONFIG: dict[str, Any] = {
    "architectures": ["CLIPTextModel"],
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "dropout": 0.0,
    "eos_token_id": 2,
    "hidden_act": "quick_gelu",
    "hidden_size": 768,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "model_type": "clip_text_model",
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 1,
    "projection_dim": 768,
    "torch_dtype": "float32",
    "transformers_version": "4.22.0.dev0",
    "vocab_size": 49408,
}
#: runwayml/stable-diffusion-v1-5 scheduler/scheduler_config.json
SD15_SCHEDULER_CONFIG: dict[str, Any] = {
    "_class_name": "PNDMScheduler",
    "_diffusers_version": "0.6.0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
    "clip_sample": False,
}
SD15_TOKENIZER_CONFIG: dict[str, Any] = {
    "add_prefix_space": False,
    "bos_token": "<|startoftext|>",
    "do_lower_case": True,
    "eos_token": "<|endoftext|>",
    "errors": "replace",
    "model_max_length": 77,
    "pad_token": "<|endoftext|>",
    "tokenizer_class": "CLIPTokenizer",
    "unk_token": "<|endoftext|>",
}
#: madebyollin/taesd config.json
TAESD_CONFIG: dict[str, Any] = {
    "_class_name": "AutoencoderTiny",
    "_diffusers_version": "0.20.0.dev0",
    "act_fn": "relu",
    "decoder_block_out_channels": [64, 64, 64, 64],
    "encoder_block_out_channels": [64, 64, 64, 64],
    "force_upcast": False,
    "in_channels": 3,
    "latent_channels": 4,
    "latent_magnitude": 3,
    "latent_shift": 0.5,
    "num_decoder_blocks": [3, 3, 3, 1],
    "num_encoder_blocks": [1, 3, 3, 3],
    "out_channels": 3,
    "scaling_factor": 1.0,
    "upsampling_scaling_factor": 2,
}
#: the layers the LCM-LoRA for SD1.5 adapts (module-name suffixes in diffusers' UNet)
LCM_LORA_TARGETS = (
    "to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
    "conv1", "conv2", "conv_shortcut", "time_emb_proj", "downsamplers.0.conv", "upsamplers.0.conv",
)  # fmt: skip


def _scaled(widths: dict[str, Any] | None, key: str, real: Any) -> Any:
    return real if not widths or key not in widths else widths[key]


def widths_of(model_cfg: dict[str, Any]) -> dict[str, Any]:
    """``widths`` for the fixtures that fit a (resolved) ``conf/model`` config's UNet and text encoder."""
    u, t = model_cfg["unet"], model_cfg["text_encoder"]
    return {
        "block_out_channels": list(u["block_out_channels"]),
        "layers_per_block": int(u["layers_per_block"]),
        "norm_num_groups": int(u["norm_num_groups"]),
        "cross_attention_dim": int(u["cross_attention_dim"]),
        "attention_head_dim": u["attention_head_dim"],
        "text_hidden_size": int(t["hidden_size"]),
        "text_intermediate_size": int(t["intermediate_size"]),
        "text_num_attention_heads": int(t["num_attention_heads"]),
        "text_projection_dim": int(t["hidden_size"]),
        "text_num_hidden_layers": int(t["num_hidden_layers"]),
    }


def unet_config(widths: dict[str, Any] | None = None) -> dict[str, Any]:
    cfg = dict(SD15_UNET_CONFIG)
    for k in (
        "block_out_channels",
        "cross_attention_dim",
        "norm_num_groups",
        "attention_head_dim",
        "layers_per_block",
    ):
        cfg[k] = _scaled(widths, k, cfg[k])
    return cfg


def text_config(widths: dict[str, Any] | None = None) -> dict[str, Any]:
    cfg = dict(SD15_TEXT_CONFIG)
    for k in (
        "hidden_size",
        "intermediate_size",
        "num_attention_heads",
        "projection_dim",
        "num_hidden_layers",
    ):
        cfg[k] = _scaled(widths, f"text_{k}", cfg[k])
    return cfg


def vae_config(widths: dict[str, Any] | None = None) -> dict[str, Any]:
    cfg = dict(SD15_VAE_CONFIG)
    cfg["block_out_channels"] = _scaled(widths, "vae_block_out_channels", cfg["block_out_channels"])
    cfg["norm_num_groups"] = _scaled(widths, "vae_norm_num_groups", cfg["norm_num_groups"])
    return cfg


def _clean(cfg: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v
        for k, v in cfg.items()
        if not k.startswith("_") and k not in ("architectures", "transformers_version", "torch_dtype")
    }


def _rand(shape: Iterable[int], g: torch.Generator, device: str = "cpu") -> Tensor:
    if device == "meta":
        return torch.empty(tuple(shape), device="meta")
    return torch.randn(tuple(shape), generator=g) * 0.02


def _randomise(sd: dict[str, Tensor], seed: int, device: str = "cpu") -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: (_rand(v.shape, g, device) if v.is_floating_point() else v.clone()) for k, v in sd.items()}


def _build(fn, device: str):
    if device == "meta":
        with torch.device("meta"):
            return fn()
    return fn()


# ------------------------------------------------------------------------------------------------ diffusers models
def sd15_modules(widths: dict[str, Any] | None = None, device: str = "cpu", seed: int = 0):
    """``(unet2d, vae, text_encoder)`` with the SD1.5 configs (scaled by ``widths``), random values."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = _build(lambda: UNet2DConditionModel(**_clean(unet_config(widths))), device)
    vae = _build(lambda: AutoencoderKL(**_clean(vae_config(widths))), device)
    te = _build(lambda: CLIPTextModel(CLIPTextConfig(**_clean(text_config(widths)))), device)
    return unet, vae, te


def hf_text_keys(te_sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """CLIP text weights under the published files' names (``text_model.*``; transformers 5 drops that level)."""
    return {(k if k.startswith("text_model.") else "text_model." + k): v for k, v in te_sd.items()}


# ------------------------------------------------------------------------------------------------ LDM names
_RESNET = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"), ("conv2", "out_layers.3"),
           ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection")]  # fmt: skip


def _unet_prefix_map(n_levels: int, layers: int, attn_up: list[bool]) -> list[tuple[str, str]]:
    """(diffusers prefix, LDM prefix) pairs: the tables of diffusers' scripts/convert_diffusers_to_original_stable_
    diffusion.py, general in the number of levels and layers per block."""
    pairs = []
    for i in range(n_levels):
        for j in range(layers):
            pairs.append((f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{(layers + 1) * i + j + 1}.0."))
            pairs.append((f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{(layers + 1) * i + j + 1}.1."))
        for j in range(layers + 1):
            pairs.append((f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{(layers + 1) * i + j}.0."))
            pairs.append((f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{(layers + 1) * i + j}.1."))
        if i < n_levels - 1:
            pairs.append(
                (f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{(layers + 1) * (i + 1)}.0.op.")
            )
            slot = 2 if attn_up[i] else 1
            pairs.append(
                (f"up_blocks.{i}.upsamplers.0.", f"output_blocks.{(layers + 1) * i + layers}.{slot}.")
            )
    pairs.append(("mid_block.attentions.0.", "middle_block.1."))
    pairs += [(f"mid_block.resnets.{j}.", f"middle_block.{2 * j}.") for j in range(2)]
    return pairs


def ldm_unet_keys(unet_sd: dict[str, Tensor], config: dict[str, Any]) -> dict[str, Tensor]:
    """A diffusers ``UNet2DConditionModel`` state dict under LDM names (``model.diffusion_model.*``)."""
    layers_ = {
        "time_embedding.linear_1.": "time_embed.0.", "time_embedding.linear_2.": "time_embed.2.",
        "conv_in.": "input_blocks.0.0.", "conv_norm_out.": "out.0.", "conv_out.": "out.2.",
    }  # fmt: skip
    n = len(config["block_out_channels"])
    attn_up = [t.startswith("CrossAttn") for t in config["up_block_types"]]
    pairs = _unet_prefix_map(n, int(config["layers_per_block"]), attn_up)
    out = {}
    for k, v in unet_sd.items():
        new = None
        for a, b in layers_.items():
            if k.startswith(a):
                new = b + k[len(a) :]
        for a, b in pairs:
            if k.startswith(a):
                rest = k[len(a) :]
                if ".resnets." in a:
                    for x, y in _RESNET:
                        rest = re.sub(rf"^{x}\.", f"{y}.", rest)
                new = b + rest
                break
        if new is None:
            raise KeyError(f"no LDM name for UNet key {k}")
        out["model.diffusion_model." + new] = v
    return out


def ldm_vae_keys(vae_sd: dict[str, Tensor], config: dict[str, Any]) -> dict[str, Tensor]:
    """A diffusers ``AutoencoderKL`` state dict under LDM names (``first_stage_model.*``; attention as 1×1 convs)."""
    n = len(config["block_out_channels"])
    pairs = [("encoder.conv_norm_out.", "encoder.norm_out."), ("decoder.conv_norm_out.", "decoder.norm_out.")]
    for i in range(n):
        pairs.append((f"encoder.down_blocks.{i}.resnets.", f"encoder.down.{i}.block."))
        pairs.append((f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample."))
        pairs.append((f"decoder.up_blocks.{i}.resnets.", f"decoder.up.{n - 1 - i}.block."))
        pairs.append((f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{n - 1 - i}.upsample."))
    for part in ("encoder", "decoder"):
        pairs += [(f"{part}.mid_block.resnets.{j}.", f"{part}.mid.block_{j + 1}.") for j in range(2)]
        pairs.append((f"{part}.mid_block.attentions.0.", f"{part}.mid.attn_1."))
    attn = {"group_norm.": "norm.", "to_q.": "q.", "to_k.": "k.", "to_v.": "v.", "to_out.0.": "proj_out."}
    out = {}
    for k, v in vae_sd.items():
        new = k
        for a, b in pairs:
            if k.startswith(a):
                rest = k[len(a) :].replace("conv_shortcut.", "nin_shortcut.")
                if "mid.attn_1" in b:
                    for x, y in attn.items():
                        if rest.startswith(x):
                            rest = y + rest[len(x) :]
                    if rest.endswith("weight") and v.ndim == 2:
                        v = v[:, :, None, None]
                new = b + rest
                break
        out["first_stage_model." + new] = v
    return out


def ldm_clip_keys(te_sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """CLIP text weights under LDM names (``cond_stage_model.transformer.text_model.*``), with the int64
    ``position_ids`` buffer the published files carry."""
    out = {"cond_stage_model.transformer." + k: v for k, v in hf_text_keys(te_sd).items()}
    out["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(77)[None]
    return out


def ldm_schedule_buffers(device: str = "cpu") -> dict[str, Tensor]:
    """The DDPM buffers an SD1.x training checkpoint also holds (to be ignored by loaders)."""
    names = ("betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "posterior_variance")
    return {n: torch.zeros(1000, device=device) for n in names}


# ------------------------------------------------------------------------------------------------ writers
def _save(sd: dict[str, Tensor], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        torch.save(sd, path)
    return path


def _write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2))


def write_clip_tokenizer(folder: Path) -> Path:
    """A CLIPTokenizer folder (vocab.json, merges.txt) from the BPE vocabulary open_clip ships (OpenAI's)."""
    from open_clip.tokenizer import SimpleTokenizer

    tok = SimpleTokenizer()
    folder.mkdir(parents=True, exist_ok=True)
    rename = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}  # CLIP's own spelling
    (folder / "vocab.json").write_text(json.dumps({rename.get(k, k): v for k, v in tok.encoder.items()}))
    merges = sorted(tok.bpe_ranks, key=tok.bpe_ranks.get)
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    _write_json(folder / "tokenizer_config.json", SD15_TOKENIZER_CONFIG)
    _write_json(
        folder / "special_tokens_map.json",
        {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
         "unk_token": "<|endoftext|>"},
    )  # fmt: skip
    return folder


def write_sd15_folder(root: Path, widths: dict[str, Any] | None = None, seed: int = 0) -> Path:
    """SD1.5 as a diffusers folder (see the module docstring); returns ``root``."""
    unet, vae, te = sd15_modules(widths, seed=seed)
    _write_json(root / "model_index.json", {
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.6.0",
        "scheduler": ["diffusers", "PNDMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    })  # fmt: skip
    _write_json(root / "unet" / "config.json", unet_config(widths))
    _save(unet.state_dict(), root / "unet" / "diffusion_pytorch_model.safetensors")
    _write_json(root / "vae" / "config.json", vae_config(widths))
    _save(vae.state_dict(), root / "vae" / "diffusion_pytorch_model.safetensors")
    _write_json(root / "text_encoder" / "config.json", text_config(widths))
    _save(hf_text_keys(te.state_dict()), root / "text_encoder" / "model.safetensors")
    write_clip_tokenizer(root / "tokenizer")
    _write_json(root / "scheduler" / "scheduler_config.json", SD15_SCHEDULER_CONFIG)
    return root


def sd15_single_file_state_dict(
    widths: dict[str, Any] | None = None,
    device: str = "cpu",
    seed: int = 0,
    vae: bool = True,
    text: bool = True,
) -> dict[str, Tensor]:
    unet, kl, te = sd15_modules(widths, device, seed)
    sd = ldm_unet_keys(_randomise(unet.state_dict(), seed, device), unet_config(widths))
    if vae:
        sd.update(ldm_vae_keys(_randomise(kl.state_dict(), seed + 1, device), vae_config(widths)))
    if text:
        sd.update(ldm_clip_keys(_randomise(te.state_dict(), seed + 2, device)))
    sd.update(ldm_schedule_buffers(device))
    return sd


def write_sd15_single_file(path: Path, widths: dict[str, Any] | None = None, seed: int = 0) -> Path:
    return _save(sd15_single_file_state_dict(widths, seed=seed), path)


def write_dreambooth(
    path: Path, widths: dict[str, Any] | None = None, seed: int = 10, vae: bool = True, text: bool = True
) -> Path:
    """A style DreamBooth checkpoint: a full single-file SD1.x (UNet, and text encoder / VAE when asked)."""
    return _save(sd15_single_file_state_dict(widths, seed=seed, vae=vae, text=text), path)


def motion_state_dict(
    block_out_channels: list[int],
    layers_per_block: int,
    mapping_channels: list[int],
    max_len: int = 24,
    seed: int = 0,
    device: str = "cpu",
) -> dict[str, Tensor]:
    """The Live2Diff checkpoint's tensors, named from the reference's module tree: ``{down,up}_blocks.i.
    motion_modules.j.temporal_transformer.{norm,proj_in,proj_out,transformer_blocks.0.{attention_blocks.{0,1}.
    {to_q,to_k,to_v,to_out.0,pos_encoder.pe},norms.{0,1},ff.net.{0.proj,2},ff_norm}}`` (no mid-block module) and the
    depth mapping network ``flow_conv_in.{conv_in,blocks.k,conv_out}``."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return _rand(shape, g, device)

    ch = list(block_out_channels)
    prefixes = [
        (f"down_blocks.{i}.motion_modules.{j}", c) for i, c in enumerate(ch) for j in range(layers_per_block)
    ]
    prefixes += [
        (f"up_blocks.{i}.motion_modules.{j}", c)
        for i, c in enumerate(ch[::-1])
        for j in range(layers_per_block + 1)
    ]
    sd: dict[str, Tensor] = {}
    for p, c in prefixes:
        t = f"{p}.temporal_transformer"
        sd.update({f"{t}.norm.weight": r(c), f"{t}.norm.bias": r(c), f"{t}.proj_in.weight": r(c, c),
                   f"{t}.proj_in.bias": r(c), f"{t}.proj_out.weight": r(c, c), f"{t}.proj_out.bias": r(c)})  # fmt: skip
        b = f"{t}.transformer_blocks.0"
        for a in (0, 1):
            for proj in ("to_q", "to_k", "to_v"):
                sd[f"{b}.attention_blocks.{a}.{proj}.weight"] = r(c, c)
            sd[f"{b}.attention_blocks.{a}.to_out.0.weight"] = r(c, c)
            sd[f"{b}.attention_blocks.{a}.to_out.0.bias"] = r(c)
            sd[f"{b}.attention_blocks.{a}.pos_encoder.pe"] = r(1, max_len, c)
            sd[f"{b}.norms.{a}.weight"], sd[f"{b}.norms.{a}.bias"] = r(c), r(c)
        # the two attentions of a block share one table, as in the published file (both built by the same
        # sinusoid init); random here, so that a loader which ignores the checkpoint's table is caught
        sd[f"{b}.attention_blocks.1.pos_encoder.pe"] = sd[f"{b}.attention_blocks.0.pos_encoder.pe"].clone()
        sd[f"{b}.ff.net.0.proj.weight"], sd[f"{b}.ff.net.0.proj.bias"] = r(8 * c, c), r(8 * c)
        sd[f"{b}.ff.net.2.weight"], sd[f"{b}.ff.net.2.bias"] = r(c, 4 * c), r(c)
        sd[f"{b}.ff_norm.weight"], sd[f"{b}.ff_norm.bias"] = r(c), r(c)
    m = list(mapping_channels)
    sd["flow_conv_in.conv_in.weight"], sd["flow_conv_in.conv_in.bias"] = r(m[0], 4, 3, 3), r(m[0])
    k = 0
    for a, b2 in zip(m[:-1], m[1:]):
        sd[f"flow_conv_in.blocks.{k}.weight"], sd[f"flow_conv_in.blocks.{k}.bias"] = r(a, a, 3, 3), r(a)
        sd[f"flow_conv_in.blocks.{k + 1}.weight"], sd[f"flow_conv_in.blocks.{k + 1}.bias"] = (
            r(b2, a, 3, 3),
            r(b2),
        )
        k += 2
    sd["flow_conv_in.conv_out.weight"], sd["flow_conv_in.conv_out.bias"] = r(ch[0], m[-1], 3, 3), r(ch[0])
    return sd


def wrap_checkpoint(sd: dict[str, Tensor], wrapping: str) -> Any:
    """``plain`` | ``module`` (DDP ``module.`` prefix) | ``state_dict`` (``{"state_dict": sd, "global_step": n}``) |
    ``training`` (both)."""
    if wrapping in ("module", "training"):
        sd = {"module." + k: v for k, v in sd.items()}
    if wrapping in ("state_dict", "training"):
        return {"state_dict": sd, "global_step": 12000, "epoch": 3}
    if wrapping not in ("plain", "module"):
        raise ValueError(f"unknown wrapping {wrapping}")
    return sd


def write_motion_checkpoint(
    path: Path,
    block_out_channels: list[int],
    layers_per_block: int,
    mapping_channels: list[int],
    wrapping: str = "plain",
    spatial: dict[str, Tensor] | None = None,
    seed: int = 0,
) -> Path:
    """The Live2Diff checkpoint (``.ckpt`` pickle or ``.safetensors``, by suffix); ``spatial`` adds a full save's
    spatial UNet weights (diffusers names, as the reference's UNet3D names them)."""
    sd = motion_state_dict(block_out_channels, layers_per_block, mapping_channels, seed=seed)
    sd.update(spatial or {})
    obj = wrap_checkpoint(sd, wrapping)
    if path.suffix == ".safetensors":
        if not isinstance(obj, dict) or "state_dict" in obj:
            raise ValueError("safetensors holds a flat tensor dict: use wrapping plain/module")
        return _save(obj, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)
    return path


def lora_targets(unet, text_encoder=None) -> list[tuple[str, str, torch.nn.Module]]:
    """``(target, module name, module)`` for the layers an SD1.5 LoRA adapts (spatial UNet + CLIP attention/MLP)."""
    out = []
    for name, mod in unet.named_modules():
        if (
            "motion_modules" in name
            or not hasattr(mod, "weight")
            or mod.weight is None
            or mod.weight.ndim < 2
        ):
            continue
        if any(name.endswith(t) for t in LCM_LORA_TARGETS):
            out.append(("unet", name, mod))
    if text_encoder is not None:
        for name, mod in text_encoder.named_modules():
            if name.endswith(("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")):
                out.append(("text_encoder", name, mod))
    return out


def lora_state_dict(
    unet, text_encoder=None, layout: str = "kohya", rank: int = 4, alpha: float | None = 2.0, seed: int = 0
) -> dict[str, Tensor]:
    """A LoRA over :func:`lora_targets`: ``kohya`` (``lora_unet_<flat name>.lora_down.weight`` / ``lora_up`` /
    ``alpha``; ``lora_te_text_model_<...>`` for CLIP) or ``peft`` (``unet.<name>.lora_A.weight`` / ``lora_B``)."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, Tensor] = {}
    for target, name, mod in lora_targets(unet, text_encoder):
        w = mod.weight
        down = torch.randn((rank, w.shape[1], *w.shape[2:]), generator=g) * 0.1
        up = torch.randn((w.shape[0], rank, *([1] * (w.ndim - 2))), generator=g) * 0.1
        if layout == "kohya":
            te_name = name if name.startswith("text_model.") else "text_model." + name
            flat = (name if target == "unet" else te_name).replace(".", "_")
            head = f"lora_unet_{flat}" if target == "unet" else f"lora_te_{flat}"
            sd[f"{head}.lora_down.weight"], sd[f"{head}.lora_up.weight"] = down, up
            if alpha is not None:
                sd[f"{head}.alpha"] = torch.tensor(float(alpha))
        elif layout == "peft":
            te_name = name if name.startswith("text_model.") else "text_model." + name
            head = f"unet.{name}" if target == "unet" else f"text_encoder.{te_name}"
            sd[f"{head}.lora_A.weight"], sd[f"{head}.lora_B.weight"] = down, up
        else:
            raise ValueError(f"unknown LoRA layout {layout}")
    return sd


def write_lora(
    path: Path, unet, text_encoder=None, layout: str = "kohya", rank: int = 4, alpha=2.0, seed=0
) -> Path:
    return _save(lora_state_dict(unet, text_encoder, layout, rank, alpha, seed), path)


def write_taesd_folder(root: Path, widths: dict[str, Any] | None = None, seed: int = 0) -> Path:
    """madebyollin/taesd as a diffusers folder (config.json + diffusion_pytorch_model.safetensors)."""
    from diffusers import AutoencoderTiny

    cfg = dict(TAESD_CONFIG)
    for k in ("encoder_block_out_channels", "decoder_block_out_channels"):
        cfg[k] = _scaled(widths, "taesd_channels", cfg[k])
    torch.manual_seed(seed)
    vae = AutoencoderTiny(**_clean(cfg))
    _write_json(root / "config.json", cfg)
    _save(vae.state_dict(), root / "diffusion_pytorch_model.safetensors")
    return root


def dpt_hybrid_config_dict(widths: dict[str, Any] | None = None) -> dict[str, Any]:
    """Intel/dpt-hybrid-midas config values (``widths`` may shrink ``hidden_size`` / ``num_hidden_layers``)."""
    from live2diff.components.depth import dpt_hybrid_config

    cfg = dpt_hybrid_config(384)
    if widths:
        cfg.hidden_size = widths.get("dpt_hidden_size", cfg.hidden_size)
        cfg.intermediate_size = 4 * cfg.hidden_size
        cfg.num_attention_heads = widths.get("dpt_heads", cfg.num_attention_heads)
        cfg.neck_hidden_sizes = widths.get("dpt_neck_hidden_sizes", cfg.neck_hidden_sizes)
        cfg.fusion_hidden_size = widths.get("dpt_fusion_hidden_size", cfg.fusion_hidden_size)
        cfg.head_in_index = -1
    return cfg.to_dict()


def write_dpt_hybrid_folder(root: Path, widths: dict[str, Any] | None = None, seed: int = 0) -> Path:
    from transformers import DPTConfig, DPTForDepthEstimation

    torch.manual_seed(seed)
    model = DPTForDepthEstimation(DPTConfig.from_dict(dpt_hybrid_config_dict(widths)))
    model.save_pretrained(root, safe_serialization=True)
    return root


def open_clip_openai_state_dict(model_name: str = "ViT-B-32", device: str = "cpu") -> dict[str, Tensor]:
    """open_clip ViT-B-32 in OpenAI's layout (``visual.*``, ``transformer.resblocks.*``, ``text_projection``,
    ``logit_scale`` ...) with the ``input_resolution`` / ``context_length`` / ``vocab_size`` entries of OpenAI's
    own checkpoint, which mark its origin (its MLPs use QuickGELU)."""
    import open_clip

    model = _build(lambda: open_clip.create_model(model_name, pretrained=None), device)
    sd = dict(model.state_dict())
    sd["input_resolution"] = torch.tensor(224)
    sd["context_length"] = torch.tensor(77)
    sd["vocab_size"] = torch.tensor(49408)
    return sd


def write_open_clip_openai(path: Path, model_name: str = "ViT-B-32") -> Path:
    torch.manual_seed(0)
    return _save(open_clip_openai_state_dict(model_name), path)


def write_raft_large(path: Path, seed: int = 0) -> Path:
    """torchvision's ``raft_large`` state dict (the layout of raft_large_C_T_SKHT_V2-ff5fadd5.pth)."""
    from torchvision.models.optical_flow import raft_large

    torch.manual_seed(seed)
    return _save(raft_large(weights=None, progress=False).state_dict(), path)
