"""``build_components``: every component for a model config, random or from the local paths in
``model.weights`` (conversion of checkpoint layouts lives in :mod:`live2diff.convert`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from live2diff import convert
from live2diff.components.config import WEIGHT_KEYS, get, parse_dtype, resolve_model_cfg
from live2diff.components.depth import DepthEstimator, MappingNetwork, build_depth
from live2diff.components.schedule import build_scheduler
from live2diff.components.text import build_text
from live2diff.components.trained import load_trained, resolve_trained_path
from live2diff.components.unet import build_unet
from live2diff.components.vae import build_vae
from live2diff.components.weights import DESCRIPTIONS, RANDOM, check_path, weight_plan

log = logging.getLogger(__name__)


@dataclass
class Components:
    """Everything a Live2Diff-style pipeline needs. ``depth``/``depth_mapper`` are None when depth is off."""

    unet: nn.Module  # diffusers UNetMotionModel; sample layout [B, C, F, h, w]
    vae: nn.Module  # AutoencoderTiny (TAESD) or AutoencoderKL
    text_encoder: nn.Module  # transformers CLIPTextModel
    tokenizer: Any  # callable: list[str] -> LongTensor[N, 77]
    scheduler: Any  # diffusers LCMScheduler
    depth: DepthEstimator | None
    depth_mapper: MappingNetwork | None
    device: torch.device
    dtype: torch.dtype
    clip_skip: int = 2
    cfg: dict[str, Any] = field(default_factory=dict)
    #: ``model.weights`` as built: each entry a path, ``random``, ``none`` or ``n/a`` (see ``weight_plan``)
    weights: dict[str, str] = field(default_factory=dict)

    @property
    def random_parts(self) -> list[str]:
        """The ``model.weights`` entries built with random weights."""
        return [k for k, v in self.weights.items() if v == RANDOM]

    @property
    def vae_scale_factor(self) -> int:
        vc = self.vae.config
        if hasattr(vc, "encoder_block_out_channels") or "encoder_block_out_channels" in vc:
            return int(vc.upsampling_scaling_factor) ** (len(vc.encoder_block_out_channels) - 1)
        return 2 ** (len(vc.block_out_channels) - 1)

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.latent_channels)

    def modules(self) -> dict[str, nn.Module]:
        mods = {"unet": self.unet, "vae": self.vae, "text_encoder": self.text_encoder}
        if self.depth is not None:
            mods["depth"] = self.depth
        if self.depth_mapper is not None:
            mods["depth_mapper"] = self.depth_mapper
        return mods


def build_components(
    model_cfg: Any, device: str | torch.device = "cpu", dtype: str | torch.dtype = "float32"
) -> Components:
    """Build every component for ``model_cfg`` (a ``conf/model/*.yaml`` node, a dict or just a size name).

    Random weights come from ``torch.manual_seed(model.seed)`` so two builds are identical. Local weights listed
    under ``model.weights`` replace them: ``base`` (diffusers SD1.5 folder or single-file .safetensors), ``motion``
    (Live2Diff motion-module + depth-mapper checkpoint, reference key names), ``lcm_lora``, ``style_lora``,
    ``dreambooth`` (single-file UNet weights), ``taesd`` (diffusers AutoencoderTiny folder), ``depth`` (DPT folder).
    """
    cfg = resolve_model_cfg(model_cfg)
    device, dtype = torch.device(device), parse_dtype(dtype)
    if cfg["weights"].get("trained") and str(cfg["weights"]["trained"]).lower() not in ("random", "none"):
        # the project's own tiny weights (python -m live2diff.train_tiny), shipped in the repo: found from anywhere
        cfg["weights"]["trained"] = str(resolve_trained_path(cfg["weights"]["trained"]))
    for k in WEIGHT_KEYS:  # a missing file is named first: the most specific error
        v = (cfg["weights"] or {}).get(k)
        if v is not None and str(v).lower() not in ("random", "none"):
            check_path(v, f"model.weights.{k}", DESCRIPTIONS[k])
    plan = weight_plan(cfg)  # refuses partial real weights before anything is built
    paths = {k: check_path(plan[k], f"model.weights.{k}", DESCRIPTIONS[k]) for k in WEIGHT_KEYS}
    if any(p is not None for p in paths.values()) and any(v == RANDOM for v in plan.values()):
        log.warning(
            "real weights with random components, as configured: %s",
            [k for k, v in plan.items() if v == RANDOM],
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(cfg["seed"]))
        unet = build_unet(cfg, paths["base"])
        text_encoder, tokenizer = build_text(cfg, paths["base"])
        vae = build_vae(cfg, paths["base"], paths["taesd"])
        scheduler = build_scheduler(cfg, paths["base"])
        depth_kind = str(get(cfg, "depth.kind", "tiny"))
        depth, mapper = None, None
        if depth_kind != "none":
            depth = build_depth(cfg, depth_kind, paths["depth"])
            mapper = MappingNetwork(
                unet.config.block_out_channels[0], unet.config.in_channels, cfg["mapping_channels"]
            )
            if get(cfg, "mapping_init", "zero") == "random":  # exercise the depth path in random-weight runs
                nn.init.normal_(mapper.conv_out.weight, std=0.02)

    if paths["motion"] is not None:
        convert.check_motion_norm_groups(unet, paths["motion"], "model.weights.motion")
        convert.load_reference_checkpoint(paths["motion"], unet, mapper)
    if paths["dreambooth"] is not None:
        convert.load_dreambooth(paths["dreambooth"], unet, text_encoder, vae)
    # Fusion adds to the weights, so the order is immaterial; the scalings are the reference's (see convert.py).
    for key, default_scaling in (("style_lora", convert.LORA_ALPHA), ("lcm_lora", convert.ALPHA_OVER_RANK)):
        if paths[key] is not None:
            convert.fuse_lora_file(
                paths[key],
                unet,
                text_encoder,
                scale=float(get(cfg, f"{key}_scale", 1.0)),
                key=f"model.weights.{key}",
                scaling=str(get(cfg, f"{key}_scaling", default_scaling)),
            )

    comps = Components(
        unet,
        vae,
        text_encoder,
        tokenizer,
        scheduler,
        depth,
        mapper,
        device,
        dtype,
        int(cfg.get("clip_skip", 2)),
        cfg,
        plan,
    )
    if (
        paths["trained"] is not None
    ):  # a full state dict for this model (every component but a weight-free VAE)
        load_trained(paths["trained"], comps)
    for m in comps.modules().values():
        m.eval().requires_grad_(False)
        p = next(m.parameters(), None)
        if p is not None and (p.device != device or p.dtype != dtype):
            m.to(device=device, dtype=dtype)
    return comps
