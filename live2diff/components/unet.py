"""The UNet: SD1.5's ``UNet2DConditionModel`` lifted to diffusers' ``UNetMotionModel`` with AnimateDiff-style
motion modules (the reference's layout: no mid-block motion module), and the plain per-frame UNet the baselines use."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from live2diff.components.weights import load_state_dict, require
from live2diff.convert import REFERENCE_MOTION_NORM_GROUPS
from live2diff.convert import unet2d_config_of as build_unet2d_config_from_motion


def unet2d_config(cfg: dict) -> dict:
    u = cfg["unet"]
    n = len(u["block_out_channels"])
    return dict(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        down_block_types=["CrossAttnDownBlock2D"] * (n - 1) + ["DownBlock2D"],
        up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * (n - 1),
        block_out_channels=list(u["block_out_channels"]),
        layers_per_block=int(u["layers_per_block"]),
        norm_num_groups=int(u["norm_num_groups"]),
        cross_attention_dim=int(u["cross_attention_dim"]),
        attention_head_dim=u["attention_head_dim"],
    )


def motion_norm_groups(cfg: dict) -> int:
    """``model.unet.motion_norm_num_groups`` (unset: the UNet's ``norm_num_groups``, as diffusers builds them; a
    reference checkpoint needs :data:`REFERENCE_MOTION_NORM_GROUPS`), checked against the widths."""
    u = cfg["unet"]
    groups = int(u.get("motion_norm_num_groups") or u["norm_num_groups"])
    bad = [c for c in u["block_out_channels"] if int(c) % groups]
    if bad:
        raise ValueError(
            f"model.unet.motion_norm_num_groups={groups}: the motion modules' widths {bad} "
            f"(model.unet.block_out_channels) are not multiples of it; the reference's motion modules use "
            f"{REFERENCE_MOTION_NORM_GROUPS} groups, so its checkpoints need widths that are multiples of "
            f"{REFERENCE_MOTION_NORM_GROUPS}"
        )
    return groups


def motion_adapter(cfg: dict):
    from diffusers import MotionAdapter

    u = cfg["unet"]
    return MotionAdapter(
        block_out_channels=tuple(u["block_out_channels"]),
        motion_layers_per_block=int(u["layers_per_block"]),
        motion_num_attention_heads=int(u["motion_num_attention_heads"]),
        motion_norm_num_groups=motion_norm_groups(cfg),
        motion_max_seq_length=int(u["motion_max_seq_length"]),
        # The reference has no motion module in the mid block (AnimateDiff v1 layout, motion_module_mid_block=False).
        use_motion_mid_block=bool(u.get("motion_mid_block", False)),
    )


def build_unet(cfg: dict, base: Path | None):
    """``UNetMotionModel``: spatial weights from the base (diffusers folder or single LDM file) or random."""
    from diffusers import UNet2DConditionModel, UNetMotionModel

    if base is None:
        unet2d = UNet2DConditionModel(**unet2d_config(cfg))
    elif base.is_dir():
        require(base / "unet", "model.weights.base", "the 'unet' subfolder of the SD1.5 diffusers folder")
        unet2d = UNet2DConditionModel.from_pretrained(base, subfolder="unet", local_files_only=True)
    else:
        unet2d = UNet2DConditionModel(**unet2d_config(cfg))
        from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

        sd = load_state_dict(base, "model.weights.base")
        unet2d.load_state_dict(convert_ldm_unet_checkpoint(sd, unet2d.config), strict=True)
    from diffusers.utils import logging as dlogging

    level = dlogging.get_verbosity()
    dlogging.set_verbosity_error()  # from_unet2d casts with .to(), which warns about fp32 modules (there are none)
    try:
        unet = UNetMotionModel.from_unet2d(unet2d, motion_adapter=motion_adapter(cfg), load_weights=True)
    finally:
        dlogging.set_verbosity(level)
    # diffusers builds the motion modules' GroupNorm with the UNet's norm_num_groups (not the adapter's
    # motion_norm_num_groups); the reference hard-codes 32 whatever the UNet's: the grouping is set here
    groups = motion_norm_groups(cfg)
    for module in unet.modules():
        if type(module).__name__ == "AnimateDiffTransformer3D":
            module.norm.num_groups = groups
    return unet


def build_unet2d(comps: Any) -> nn.Module:
    """A plain ``UNet2DConditionModel`` with the spatial weights of ``comps.unet`` (per-frame baselines): same
    weights, no motion modules. Build it *before* installing Live2Diff's attention if both are used."""
    from diffusers import UNet2DConditionModel

    u2 = UNet2DConditionModel(**build_unet2d_config_from_motion(comps.unet))
    sd = {k: v for k, v in comps.unet.state_dict().items() if "motion_modules" not in k}
    u2.load_state_dict(sd, strict=True)
    return u2.to(device=comps.device, dtype=comps.dtype).eval().requires_grad_(False)
