"""Checkpoint conversion and weight fusion for real (local) weights.

* The reference (open-mmlab/Live2Diff) stores its motion modules in the original AnimateDiff layout and the depth
  mapping network as ``flow_conv_in``; :func:`convert_reference_state_dict` maps them to diffusers'
  ``UNetMotionModel`` keys and to :class:`~live2diff.components.depth.MappingNetwork`, :func:`to_reference_state_dict` maps
  back (round trip tested on a synthetic state dict).
* :func:`fuse_lora_file` fuses a LoRA (LCM-LoRA, style LoRAs) into the weights, in kohya (``lora_unet_*``,
  ``lora_te_*``; diffusers module names) or PEFT/diffusers (``*.lora_A/lora_B``, ``*.lora.down/up``) format, without
  needing ``peft``.
* :func:`load_dreambooth_unet` replaces the spatial UNet weights with a single-file (LDM layout) style checkpoint.

Pickled checkpoints are read with ``weights_only=True`` only.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from eval.metrics.weights import MissingWeightsError, load_state_dict

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
    unet: dict[str, Tensor] = field(default_factory=dict)
    depth_mapper: dict[str, Tensor] = field(default_factory=dict)
    pos_tables: dict[str, Tensor] = field(
        default_factory=dict
    )  # reference pos_encoder.pe (not loaded, checked)
    dropped: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)


def _strip(key: str) -> str:
    return key[len("module.") :] if key.startswith("module.") else key


def convert_reference_state_dict(sd: dict[str, Tensor]) -> ConvertedCheckpoint:
    """Reference Live2Diff checkpoint keys -> ours. Keys that are neither motion modules nor the mapper land in
    ``unknown`` (the caller decides whether that is an error)."""
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
                continue
            for a, b in _MOTION_RENAMES:
                key = key.replace(a, b)
            out.unet[key] = value
        else:
            out.unknown.append(raw)
    return out


def to_reference_state_dict(
    unet_sd: dict[str, Tensor], mapper_sd: dict[str, Tensor] | None = None
) -> dict[str, Tensor]:
    """Inverse of :func:`convert_reference_state_dict` for motion-module + mapper keys (positional tables omitted)."""
    out: dict[str, Tensor] = {}
    for key, value in unet_sd.items():
        if ".motion_modules." not in key or key.endswith("pos_embed.pe"):
            continue
        m = re.match(r"^(.*?\.motion_modules\.\d+\.)(.*)$", key)
        head, tail = m.group(1), m.group(2)
        tail = "." + tail
        for a, b in reversed(_MOTION_RENAMES[1:]):
            tail = tail.replace(b, a)
        out[head + "temporal_transformer" + tail] = value
    for key, value in (mapper_sd or {}).items():
        out[MAPPER_PREFIX + key] = value
    return out


def load_reference_checkpoint(
    path: str | Path, unet: nn.Module, mapper: nn.Module | None, key: str = "model.weights.motion"
) -> ConvertedCheckpoint:
    """Load the reference's motion-module (+ depth mapper) checkpoint into ``unet`` / ``mapper``; strict about what
    the checkpoint should cover so that a wrong file fails loudly instead of leaving random motion modules."""
    if not Path(path).exists():
        raise MissingWeightsError(path, key, "Live2Diff motion-module checkpoint")
    conv = convert_reference_state_dict(load_state_dict(Path(path), key))
    if conv.unknown:
        raise ValueError(
            f"{path}: {len(conv.unknown)} keys are neither motion modules nor the depth mapper "
            f"(e.g. {conv.unknown[:3]}); is `{key}` the Live2Diff checkpoint?"
        )
    own = {
        k: v
        for k, v in unet.state_dict().items()
        if ".motion_modules." in k and not k.endswith("pos_embed.pe")
    }
    missing = sorted(set(own) - set(conv.unet))
    unexpected = sorted(set(conv.unet) - set(own))
    if missing or unexpected:
        raise ValueError(
            f"{path} does not match the motion modules of this UNet: {len(missing)} missing "
            f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}). "
            "Check model.size / model.unet (motion_mid_block, layers_per_block)."
        )
    for k, table in conv.pos_tables.items():
        ours = next(v for n, v in unet.state_dict().items() if n.endswith("pos_embed.pe"))
        if table.shape[-2] != ours.shape[-2]:
            raise ValueError(
                f"{path}: positional table {k} has {table.shape[-2]} positions, the UNet has {ours.shape[-2]}; "
                "set model.unet.motion_max_seq_length accordingly"
            )
        break
    for k, v in conv.unet.items():
        if own[k].shape != v.shape:
            raise ValueError(
                f"{path}: {k} has shape {tuple(v.shape)}, the UNet expects {tuple(own[k].shape)}"
            )
    unet.load_state_dict(conv.unet, strict=False)
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


def load_dreambooth_unet(path: str | Path, unet: nn.Module, key: str = "model.weights.dreambooth") -> None:
    """Spatial UNet weights from a single-file (LDM layout) checkpoint; the motion modules are kept."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    sd = load_state_dict(Path(path), key)
    converted = convert_ldm_unet_checkpoint(sd, unet2d_config_of(unet))
    own = {k for k in unet.state_dict() if ".motion_modules." not in k}
    missing = sorted(own - set(converted))
    if missing:
        raise ValueError(f"{path} ({key}) lacks {len(missing)} UNet weights, e.g. {missing[:3]}")
    unet.load_state_dict({k: v for k, v in converted.items() if k in own}, strict=False)


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


def _lookup(model: nn.Module, name: str) -> nn.Module | None:
    mods = dict(model.named_modules())
    if name in mods:
        return mods[name]
    flat = {n.replace(".", "_"): m for n, m in mods.items()}
    if name in flat:
        return flat[name]
    # transformers 5 flattened CLIPTextModel: kohya's text_model_encoder_... -> encoder_...
    for prefix in ("text_model_", "text_model."):
        if name.startswith(prefix):
            return _lookup(model, name[len(prefix) :])
    return None


@torch.no_grad()
def fuse_lora_state_dict(
    sd: dict[str, Tensor],
    unet: nn.Module,
    text_encoder: nn.Module | None,
    scale: float = 1.0,
    key: str = "model.weights.lcm_lora",
) -> int:
    """``W += scale * (alpha / rank) * up @ down`` for every LoRA pair; returns the number of fused layers."""
    n = 0
    unknown = []
    for (target, name), parts in _group_lora(sd).items():
        model = unet if target == "unet" else text_encoder
        mod = _lookup(model, name) if model is not None else None
        if mod is None or not hasattr(mod, "weight") or "down" not in parts or "up" not in parts:
            unknown.append(f"{target}:{name}")
            continue
        down, up = parts["down"].float(), parts["up"].float()
        rank = down.shape[0]
        alpha = float(parts["alpha"]) if "alpha" in parts else float(rank)
        delta = (up.flatten(1) @ down.flatten(1)) * (alpha / rank) * scale
        w = mod.weight
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
    n = fuse_lora_state_dict(load_state_dict(p, key), unet, text_encoder, scale, key)
    log.info("fused %d LoRA layers from %s", n, p)
    return n
