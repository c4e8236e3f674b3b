"""Checkpoint conversion and weight fusion for real (local) weights.

* The reference (open-mmlab/Live2Diff) stores its motion modules in the original AnimateDiff layout and the depth
  mapping network as ``flow_conv_in``; :func:`convert_reference_state_dict` maps them to diffusers'
  ``UNetMotionModel`` keys and to :class:`~live2diff.components.depth.MappingNetwork`, :func:`to_reference_state_dict` maps
  back (round trip tested on a synthetic state dict).
* :func:`fuse_lora_file` fuses a LoRA (LCM-LoRA, style LoRAs) into the weights, in kohya (``lora_unet_*``,
  ``lora_te_*``; diffusers module names) or PEFT/diffusers (``*.lora_A/lora_B``, ``*.lora.down/up``) format, without
  needing ``peft``.
* :func:`load_dreambooth` applies a single-file (LDM layout) style checkpoint: spatial UNet, text encoder, VAE.

Pickled checkpoints are read with ``weights_only=True`` only.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from eval.weights import MissingWeightsError, load_state_dict

log = logging.getLogger(__name__)

# (reference substring, ours) — applied in this order to motion-module keys.
_MOTION_RENAMES = [
    (".temporal_transformer.", "."),
    (".attention_blocks.0.", ".attn1."),
    (".attention_blocks.1.", ".attn2."),
    (".norms.0.", ".norm1."),
    (".norms.1.", ".norm2."),
    (".ff_norm.", ".norm3."),
]
MAPPER_PREFIX = "flow_conv_in."


@dataclass
class ConvertedCheckpoint:
    unet: dict[str, Tensor] = field(default_factory=dict)  # motion-module weights, our names
    depth_mapper: dict[str, Tensor] = field(default_factory=dict)
    spatial: dict[str, Tensor] = field(
        default_factory=dict
    )  # spatial UNet weights a full training save holds
    #: the reference's ``pos_encoder.pe`` tables by their own key (the first attention's is also in ``unet``, as
    #: the block's ``pos_embed.pe``: diffusers keeps one table per block for both temporal attentions)
    pos_tables: dict[str, Tensor] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)


#: ``<block>.attention_blocks.<a>.pos_encoder.pe`` of the reference: group 1 the transformer block, 2 the attention
_PE_KEY = re.compile(r"^(.*\.)attention_blocks\.(\d+)\.pos_encoder\.pe$")


def _rename_motion(key: str) -> str:
    for a, b in _MOTION_RENAMES:
        key = key.replace(a, b)
    return key


def _strip(key: str) -> str:
    return key[len("module.") :] if key.startswith("module.") else key


def convert_reference_state_dict(
    sd: dict[str, Tensor], spatial_keys: set[str] | frozenset[str] = frozenset()
) -> ConvertedCheckpoint:
    """Reference Live2Diff checkpoint keys -> ours.

    Motion modules are renamed; each block's first ``pos_encoder.pe`` table becomes its ``pos_embed.pe`` (the
    reference loads and uses the checkpoint's tables; :func:`load_reference_checkpoint` requires the second
    attention's table to be the same); ``flow_conv_in.*`` is the depth mapper; keys named in ``spatial_keys`` (the UNet's
    own spatial weights: the reference's UNet3D names them as diffusers does) are kept as spatial weights, as the
    reference's ``load_state_dict(strict=False)`` would load them; the reference's derived buffers (``grid``,
    ``q_pe/k_pe/v_pe``) are dropped. Anything else lands in ``unknown`` (the caller reports it by name)."""
    out = ConvertedCheckpoint()
    for raw, value in sd.items():
        key = _strip(raw)
        if "grid" in key or key.endswith((".q_pe", ".k_pe", ".v_pe")):
            out.dropped.append(raw)  # the reference's own derived buffers
        elif key.startswith(MAPPER_PREFIX):
            out.depth_mapper[key[len(MAPPER_PREFIX) :]] = value
        elif ".motion_modules." in key:
            if key.endswith("pos_encoder.pe"):
                out.pos_tables[key] = value
                m = _PE_KEY.match(key)
                if m and m.group(2) == "0":
                    out.unet[_rename_motion(m.group(1)) + "pos_embed.pe"] = value
                continue
            for a, b in _MOTION_RENAMES:
                key = key.replace(a, b)
            out.unet[key] = value
        elif key in spatial_keys:
            out.spatial[key] = value
        else:
            out.unknown.append(raw)
    return out


def to_reference_state_dict(
    unet_sd: dict[str, Tensor], mapper_sd: dict[str, Tensor] | None = None
) -> dict[str, Tensor]:
    """Inverse of :func:`convert_reference_state_dict` for motion-module + mapper keys (a block's ``pos_embed.pe``
    becomes the ``pos_encoder.pe`` of both its attentions)."""
    out: dict[str, Tensor] = {}
    for key, value in unet_sd.items():
        if ".motion_modules." not in key:
            continue
        m = re.match(r"^(.*?\.motion_modules\.\d+\.)(.*)$", key)
        head, tail = m.group(1), m.group(2)
        if tail.endswith("pos_embed.pe"):
            block = head + "temporal_transformer." + tail[: -len("pos_embed.pe")]
            for a in (0, 1):  # two tensors, as saved (a shared one could not be written to safetensors)
                out[f"{block}attention_blocks.{a}.pos_encoder.pe"] = value if a == 0 else value.clone()
            continue
        tail = "." + tail
        for a, b in reversed(_MOTION_RENAMES[1:]):
            tail = tail.replace(b, a)
        out[head + "temporal_transformer" + tail] = value
    for key, value in (mapper_sd or {}).items():
        out[MAPPER_PREFIX + key] = value
    return out


#: the motion modules' GroupNorm groups in the reference (and AnimateDiff): hard-coded in its
#: TemporalTransformer3DModel, whatever the UNet's norm_num_groups
REFERENCE_MOTION_NORM_GROUPS = 32


def check_motion_norm_groups(unet: nn.Module, path: str | Path, key: str) -> None:
    """Refuse a reference checkpoint for motion modules whose GroupNorm grouping is not the reference's: it
    hard-codes 32 groups (its TemporalTransformer3DModel, from AnimateDiff), whatever the UNet's norm groups."""
    G = REFERENCE_MOTION_NORM_GROUPS

    groups = sorted(
        {m.norm.num_groups for m in unet.modules() if type(m).__name__ == "AnimateDiffTransformer3D"}
    )
    if groups and groups != [G]:
        raise ValueError(
            f"{path} ({key}): the reference's motion modules normalise with {G} GroupNorm groups, this model's with "
            f"{groups} (model.unet.motion_norm_num_groups): set model.unet.motion_norm_num_groups={G} (the "
            f"motion-module widths, model.unet.block_out_channels, must then be multiples of {G})"
        )


def load_reference_checkpoint(
    path: str | Path, unet: nn.Module, mapper: nn.Module | None, key: str = "model.weights.motion"
) -> ConvertedCheckpoint:
    """Load the reference's motion-module (+ depth mapper) checkpoint into ``unet`` / ``mapper``.

    As lenient as the reference's loader about wrapping (a nested ``state_dict``, ``module.`` prefixes, metadata
    entries such as ``global_step``, spatial UNet weights of a full save — loaded over the base's, as the reference
    does), and strict about coverage: every motion-module weight must be there and every key must be understood,
    so that a wrong file fails loudly (unexpected keys are listed by name) instead of leaving random modules."""
    if not Path(path).exists():
        raise MissingWeightsError(path, key, "Live2Diff motion-module checkpoint")
    state = unet.state_dict()
    spatial_keys = frozenset(k for k in state if ".motion_modules." not in k)
    conv = convert_reference_state_dict(load_state_dict(Path(path), key), spatial_keys)
    if conv.unknown:
        shown = ", ".join(conv.unknown[:20]) + (" ..." if len(conv.unknown) > 20 else "")
        raise ValueError(
            f"{path} ({key}): {len(conv.unknown)} unexpected keys, neither motion modules, the depth mapper "
            f"(flow_conv_in.*) nor this UNet's spatial weights: {shown}. Is it the Live2Diff checkpoint, for this "
            "model size?"
        )
    own = {k: v for k, v in state.items() if ".motion_modules." in k}
    # a checkpoint without positional tables keeps the model's sinusoid (as the reference's strict=False load does)
    missing = sorted(k for k in set(own) - set(conv.unet) if not k.endswith("pos_embed.pe"))
    unexpected = sorted(set(conv.unet) - set(own))
    if missing or unexpected:
        raise ValueError(
            f"{path} does not match the motion modules of this UNet: {len(missing)} missing "
            f"(e.g. {missing[:3]}), {len(unexpected)} unexpected ({unexpected[:20]}). "
            "Check model.size / model.unet (motion_mid_block, layers_per_block)."
        )
    for k, table in conv.pos_tables.items():
        ours = next(v for n, v in state.items() if n.endswith("pos_embed.pe"))
        if table.shape[-2] != ours.shape[-2]:
            raise ValueError(
                f"{path}: positional table {k} has {table.shape[-2]} positions, the UNet has {ours.shape[-2]}; "
                "set model.unet.motion_max_seq_length accordingly"
            )
        first = conv.pos_tables.get(_PE_KEY.sub(r"\1attention_blocks.0.pos_encoder.pe", k))
        if first is None or not torch.equal(first, table):
            raise ValueError(
                f"{path}: positional table {k} differs from the first attention's of its block (or that one is "
                "missing); this model keeps one table per motion block for both temporal attentions (diffusers' "
                "pos_embed), so it cannot load a checkpoint whose two attentions use different tables"
            )
    for k, v in {**conv.unet, **conv.spatial}.items():
        if state[k].shape != v.shape:
            raise ValueError(
                f"{path}: {k} has shape {tuple(v.shape)}, the UNet expects {tuple(state[k].shape)}"
            )
    unet.load_state_dict({**conv.unet, **conv.spatial}, strict=False)
    if conv.spatial:
        log.warning(
            "%s holds %d spatial UNet weights; loaded over the base's, as the reference's loader does",
            path,
            len(conv.spatial),
        )
    if mapper is not None:
        if not conv.depth_mapper:
            raise ValueError(
                f"{path} has no depth mapping network ({MAPPER_PREFIX}*); set model.depth.kind=none"
            )
        mapper.load_state_dict(conv.depth_mapper, strict=True)
    elif conv.depth_mapper:
        log.warning(
            "%s holds a depth mapping network but depth is off (model.depth.kind=none); ignored", path
        )
    return conv


def unet2d_config_of(unet: nn.Module) -> dict:
    """``UNet2DConditionModel`` config with the spatial layout of a ``UNetMotionModel`` (what diffusers' LDM
    conversion needs to name the blocks)."""
    cfg = dict(unet.config)
    n = len(cfg["block_out_channels"])
    return dict(
        sample_size=cfg.get("sample_size") or 64,
        in_channels=cfg["in_channels"],
        out_channels=cfg["out_channels"],
        down_block_types=["CrossAttnDownBlock2D"] * (n - 1) + ["DownBlock2D"],
        up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * (n - 1),
        block_out_channels=list(cfg["block_out_channels"]),
        layers_per_block=cfg["layers_per_block"],
        norm_num_groups=cfg["norm_num_groups"],
        cross_attention_dim=cfg["cross_attention_dim"],
        attention_head_dim=cfg["num_attention_heads"],
    )


LDM_UNET_PREFIX = "model.diffusion_model."
LDM_VAE_PREFIX = "first_stage_model."
LDM_CLIP_PREFIX = "cond_stage_model.transformer."


def load_ldm_text_encoder(sd: dict[str, Tensor], te: nn.Module, path: str | Path, key: str) -> int:
    """The CLIP text weights of a single-file (LDM layout) checkpoint into ``te``; every weight must be there."""
    from diffusers.loaders.single_file_utils import convert_ldm_clip_checkpoint

    te_sd = convert_ldm_clip_checkpoint(sd)
    own = te.state_dict()
    if not any(k.startswith("text_model.") for k in own):  # transformers 5 dropped the text_model level
        te_sd = {k.removeprefix("text_model."): v for k, v in te_sd.items()}
    missing = [k for k in own if k not in te_sd and not k.endswith("position_ids")]
    if missing:
        raise ValueError(f"{path} ({key}) lacks CLIP text weights, e.g. {missing[:3]}")
    for k, v in te_sd.items():
        if k in own and own[k].shape != v.shape:
            raise ValueError(
                f"{path} ({key}): {k} has shape {tuple(v.shape)}, the text encoder expects {tuple(own[k].shape)}"
            )
    loaded = {k: v for k, v in te_sd.items() if k in own}
    te.load_state_dict(loaded, strict=False)
    return len(loaded)


def load_ldm_vae(sd: dict[str, Tensor], vae: nn.Module, path: str | Path, key: str) -> int:
    """The KL VAE of a single-file (LDM layout) checkpoint into a diffusers ``AutoencoderKL`` (strict)."""
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    converted = convert_ldm_vae_checkpoint(sd, vae.config)
    try:
        vae.load_state_dict(converted, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{path} ({key}): its VAE ({LDM_VAE_PREFIX}*) does not fit model.vae: {e}") from None
    return len(converted)


def load_dreambooth(
    path: str | Path,
    unet: nn.Module,
    text_encoder: nn.Module | None = None,
    vae: nn.Module | None = None,
    key: str = "model.weights.dreambooth",
) -> dict[str, str]:
    """A single-file (LDM layout) style DreamBooth checkpoint, as the reference's ``load_third_party_checkpoints``
    applies it: the spatial UNet (motion modules kept), the CLIP text encoder when the file has one, and the KL VAE
    when the file has one and the model uses a KL VAE (with TAESD the VAE is replaced anyway, as the reference's
    ``use_tiny_vae`` does). Returns what each part became (for the logs and the tests)."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    sd = load_state_dict(Path(path), key)
    report: dict[str, str] = {}
    if not any(k.startswith(LDM_UNET_PREFIX) for k in sd):
        raise ValueError(
            f"{path} ({key}) has no UNet weights ({LDM_UNET_PREFIX}*): is it a single-file SD1.x checkpoint?"
        )
    converted = convert_ldm_unet_checkpoint(sd, unet2d_config_of(unet))
    state = unet.state_dict()
    own = {k for k in state if ".motion_modules." not in k}
    missing = sorted(own - set(converted))
    if missing:
        raise ValueError(f"{path} ({key}) lacks {len(missing)} UNet weights, e.g. {missing[:3]}")
    for k in own:
        if converted[k].shape != state[k].shape:
            raise ValueError(
                f"{path} ({key}): {k} has shape {tuple(converted[k].shape)}, the UNet expects {tuple(state[k].shape)}"
            )
    unet.load_state_dict({k: v for k, v in converted.items() if k in own}, strict=False)
    report["unet"] = f"{len(own)} tensors"
    if text_encoder is not None and any(k.startswith(LDM_CLIP_PREFIX) for k in sd):
        report["text_encoder"] = f"{load_ldm_text_encoder(sd, text_encoder, path, key)} tensors"
    else:
        report["text_encoder"] = "not in file"
    if not any(k.startswith(LDM_VAE_PREFIX) for k in sd):
        report["vae"] = "not in file"
    elif vae is not None and type(vae).__name__ == "AutoencoderKL":
        report["vae"] = f"{load_ldm_vae(sd, vae, path, key)} tensors"
    else:
        report["vae"] = f"not used: the model's VAE is {type(vae).__name__} (model.vae.kind)"
        log.info("%s: its KL VAE is not used (the model runs %s)", path, type(vae).__name__)
    log.info("DreamBooth %s: %s", path, report)
    return report


# ------------------------------------------------------------------------------------------------ LoRA
_KOHYA = re.compile(r"^(lora_unet|lora_te)_(.+?)\.(lora_down\.weight|lora_up\.weight|alpha)$")
_PEFT = re.compile(
    r"^(unet|text_encoder)\.(.+?)\.(lora_A\.weight|lora_B\.weight|lora\.down\.weight|lora\.up\.weight|alpha)$"
)


def _group_lora(sd: dict[str, Tensor]) -> dict[tuple[str, str], dict[str, Tensor]]:
    groups: dict[tuple[str, str], dict[str, Tensor]] = {}
    for k, v in sd.items():
        m = _KOHYA.match(k)
        if m:
            target = "unet" if m.group(1) == "lora_unet" else "text_encoder"
            part = {"lora_down.weight": "down", "lora_up.weight": "up", "alpha": "alpha"}[m.group(3)]
            groups.setdefault((target, m.group(2)), {})[part] = v
            continue
        m = _PEFT.match(k)
        if m:
            part = {
                "lora_A.weight": "down",
                "lora.down.weight": "down",
                "lora_B.weight": "up",
                "lora.up.weight": "up",
                "alpha": "alpha",
            }[m.group(3)]
            groups.setdefault((m.group(1), m.group(2)), {})[part] = v
            continue
        raise ValueError(
            f"unrecognised LoRA key '{k}' (expected kohya lora_unet_*/lora_te_* or PEFT *.lora_A/B)"
        )
    return groups


def _module_index(model: nn.Module) -> tuple[dict[str, nn.Module], dict[str, nn.Module]]:
    """``(modules by name, modules by name with '_' for '.')``: built once per model, not once per LoRA layer."""
    mods = dict(model.named_modules())
    return mods, {n.replace(".", "_"): m for n, m in mods.items()}


def _lookup(model: nn.Module, name: str, index=None) -> nn.Module | None:
    mods, flat = index if index is not None else _module_index(model)
    if name in mods:
        return mods[name]
    if name in flat:
        return flat[name]
    # transformers 5 flattened CLIPTextModel: kohya's text_model_encoder_... -> encoder_...
    for prefix in ("text_model_", "text_model."):
        if name.startswith(prefix):
            return _lookup(model, name[len(prefix) :], (mods, flat))
    return None


#: ``W += scale · (alpha / rank) · up @ down`` — diffusers' ``load_lora_weights`` + ``fuse_lora(lora_scale)``, kohya's
#: convention; how the reference fuses the LCM-LoRA and its ``lora_dict`` LoRAs. No alpha in the file: alpha = rank.
ALPHA_OVER_RANK = "alpha_over_rank"
#: ``W += lora_alpha · up @ down``, the file's alpha ignored — the reference's ``convert_lora_model_level``, which
#: applies its configs' ``third_party_dict.lora_list`` entries (``lora_alpha``) to style LoRAs.
LORA_ALPHA = "lora_alpha"
LORA_SCALINGS = (ALPHA_OVER_RANK, LORA_ALPHA)


@torch.no_grad()
def fuse_lora_state_dict(
    sd: dict[str, Tensor],
    unet: nn.Module,
    text_encoder: nn.Module | None,
    scale: float = 1.0,
    key: str = "model.weights.lcm_lora",
    scaling: str = ALPHA_OVER_RANK,
) -> int:
    """Fuse every LoRA pair into its layer's weight with the named ``scaling`` (:data:`ALPHA_OVER_RANK` or
    :data:`LORA_ALPHA`, where ``scale`` is the reference config's ``lora_alpha``); returns the number of fused
    layers."""
    if scaling not in LORA_SCALINGS:
        raise ValueError(f"unknown LoRA scaling '{scaling}' for {key}; use one of {LORA_SCALINGS}")
    n = 0
    unknown = []
    indices: dict[str, tuple] = {}
    for (target, name), parts in _group_lora(sd).items():
        model = unet if target == "unet" else text_encoder
        if model is not None and target not in indices:
            indices[target] = _module_index(model)
        mod = _lookup(model, name, indices[target]) if model is not None else None
        if mod is None or not hasattr(mod, "weight") or "down" not in parts or "up" not in parts:
            unknown.append(f"{target}:{name}")
            continue
        down, up = parts["down"].float(), parts["up"].float()
        rank = down.shape[0]
        if scaling == ALPHA_OVER_RANK:
            alpha = float(parts["alpha"]) if "alpha" in parts else float(rank)
            factor = scale * alpha / rank
        else:
            factor = scale
        delta = (up.flatten(1) @ down.flatten(1)) * factor
        w = mod.weight
        if delta.numel() != w.numel():
            raise ValueError(
                f"{key}: LoRA {target}:{name} has shape {tuple(delta.shape)}, the layer {tuple(w.shape)}"
            )
        mod.weight.copy_((w.float() + delta.reshape(w.shape)).to(w.dtype))
        n += 1
    if unknown:
        raise ValueError(f"{len(unknown)} LoRA layers match no module (e.g. {unknown[:3]}); check `{key}`")
    return n


def fuse_lora_file(
    path: str | Path,
    unet: nn.Module,
    text_encoder: nn.Module | None,
    scale: float = 1.0,
    key: str = "model.weights.lcm_lora",
    scaling: str = ALPHA_OVER_RANK,
) -> int:
    if not Path(path).exists():
        raise MissingWeightsError(path, key, "LoRA weights")
    p = Path(path)
    if p.is_dir():
        cand = p / "pytorch_lora_weights.safetensors"
        if not cand.exists():
            raise MissingWeightsError(
                cand, key, "LoRA weights (pytorch_lora_weights.safetensors in the folder)"
            )
        p = cand
    n = fuse_lora_state_dict(load_state_dict(p, key), unet, text_encoder, scale, key, scaling)
    log.info("fused %d LoRA layers from %s (%s, scale %g)", n, p, scaling, scale)
    return n
