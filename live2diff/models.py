"""Builds the components Live2Diff (and the baselines) run on: UNet + motion modules, VAE, text encoder, tokenizer,
LCM scheduler, depth estimator and the depth mapping network.

Every size has the same *structure* as SD1.5 + AnimateDiff (four resolution levels, motion modules with 8 heads
and sinusoidal positions up to 24 frames at every level, TAESD-style VAE, CLIP text encoder); only widths and depths
change. ``tiny`` and ``mid`` are random-initialised; ``sd15`` is random unless local weight paths are given under
``model.weights``. Nothing here downloads: every path is local, and a missing file raises
:class:`MissingWeightsError` naming the file and the config key to set.

Public API (used by the baselines too): :func:`build_components`, :class:`Components`, :func:`encode_prompt`,
:func:`vae_encode`, :func:`vae_decode`, :class:`LCMSchedule` (:func:`make_lcm_schedule`), :func:`depth_latents`,
:func:`build_unet2d`.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

log = logging.getLogger(__name__)


class MissingWeightsError(FileNotFoundError):
    """A configured weight file or folder does not exist."""

    def __init__(self, path: str | os.PathLike, key: str, what: str = "weights"):
        self.path, self.key = str(path), key
        super().__init__(
            f"{what} not found at '{path}'. Set the config key `{key}` to an existing local path "
            f"(or null to use random weights). Nothing is downloaded."
        )


# ------------------------------------------------------------------------------------------------ configs
def _get(cfg: Any, key: str, default: Any = None) -> Any:
    """Read ``a.b.c`` from a dict / DictConfig / attribute object, with a default."""
    node = cfg
    for part in key.split("."):
        if node is None:
            return default
        if isinstance(node, Mapping) or hasattr(node, "get"):
            try:
                node = node.get(part, None)
            except Exception:  # noqa: BLE001 - OmegaConf raises on missing struct keys
                node = None
        else:
            node = getattr(node, part, None)
    return default if node is None else node


def _to_plain(cfg: Any) -> Any:
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(cfg, (DictConfig, ListConfig)):
            return OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    return cfg


# Built-in presets; conf/model/*.yaml mirror these and may override any key.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "unet": {
            "block_out_channels": [16, 32, 32, 32],
            "layers_per_block": 1,
            "norm_num_groups": 8,
            "cross_attention_dim": 32,
            "attention_head_dim": 2,
            "motion_num_attention_heads": 8,
            "motion_max_seq_length": 24,
        },
        "text_encoder": {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 3,
            "num_attention_heads": 2,
        },
        "vae": {"kind": "tiny", "block_out_channels": [8, 8, 8, 8], "num_blocks": [1, 1, 1, 1]},
        "depth": {"kind": "tiny", "resolution": 64, "channels": 8},
        "mapping_channels": [8, 8, 16, 16],
        "mapping_init": "random",
    },
    "mid": {
        "unet": {
            "block_out_channels": [64, 128, 256, 256],
            "layers_per_block": 2,
            "norm_num_groups": 32,
            "cross_attention_dim": 256,
            "attention_head_dim": 8,
            "motion_num_attention_heads": 8,
            "motion_max_seq_length": 24,
        },
        "text_encoder": {
            "hidden_size": 256,
            "intermediate_size": 1024,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
        },
        "vae": {"kind": "tiny", "block_out_channels": [32, 32, 32, 32], "num_blocks": [1, 2, 2, 2]},
        "depth": {"kind": "tiny", "resolution": 128, "channels": 16},
        "mapping_channels": [16, 32, 96, 256],
        "mapping_init": "random",
    },
    "sd15": {
        "unet": {
            "block_out_channels": [320, 640, 1280, 1280],
            "layers_per_block": 2,
            "norm_num_groups": 32,
            "cross_attention_dim": 768,
            "attention_head_dim": 8,
            "motion_num_attention_heads": 8,
            "motion_max_seq_length": 24,
        },
        "text_encoder": {
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
        },
        "vae": {"kind": "tiny", "block_out_channels": [64, 64, 64, 64], "num_blocks": [1, 3, 3, 3]},
        "depth": {"kind": "dpt", "resolution": 384},
        "mapping_channels": [16, 32, 96, 256],
    },
}


def _deep_merge(base: dict, over: Mapping) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def resolve_model_cfg(model_cfg: Any) -> dict[str, Any]:
    """Preset for ``model_cfg.size`` overlaid with whatever the config sets explicitly."""
    plain = _to_plain(model_cfg) or {}
    if isinstance(plain, str):
        plain = {"size": plain}
    size = plain.get("size", "tiny")
    if size not in PRESETS:
        import difflib

        close = difflib.get_close_matches(str(size), PRESETS, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ValueError(f"unknown model size '{size}' (model.size); known: {sorted(PRESETS)}.{hint}")
    cfg = _deep_merge(PRESETS[size], {k: v for k, v in plain.items() if v is not None})
    cfg.setdefault("weights", {})
    cfg["weights"] = dict(cfg["weights"] or {})
    cfg.setdefault("clip_skip", 2)
    cfg.setdefault("seed", 0)
    return cfg


# ------------------------------------------------------------------------------------------------ tokenizer
class OpenClipTokenizer:
    """CLIP BPE tokenizer shipped inside open_clip (no files to fetch): ``tok(["a cat"]) -> LongTensor[N, 77]``."""

    def __init__(self, context_length: int = 77):
        from open_clip.tokenizer import SimpleTokenizer

        self._tok = SimpleTokenizer(context_length=context_length)
        self.model_max_length = context_length

    def __call__(self, prompts: str | Sequence[str]) -> Tensor:
        if isinstance(prompts, str):
            prompts = [prompts]
        return self._tok(list(prompts), context_length=self.model_max_length)


class HFTokenizer:
    """A transformers ``CLIPTokenizer`` loaded from a local folder, padded to 77 like SD1.5's pipelines."""

    def __init__(self, tokenizer: Any):
        self._tok = tokenizer
        self.model_max_length = tokenizer.model_max_length

    def __call__(self, prompts: str | Sequence[str]) -> Tensor:
        if isinstance(prompts, str):
            prompts = [prompts]
        return self._tok(
            list(prompts),
            padding="max_length",
            max_length=self.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids


# ------------------------------------------------------------------------------------------------ depth
class TinyDepthNet(nn.Module):
    """Random stand-in for MiDaS: ``[B,3,H,W]`` in [0,1] -> relative depth ``[B,H,W]`` (same call shape as DPT)."""

    def __init__(self, channels: int = 8):
        super().__init__()
        c = channels
        self.net = nn.Sequential(
            nn.Conv2d(3, c, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv2d(c, c, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(c, 1, 3, padding=1),
        )

    def forward(self, images01: Tensor) -> Tensor:
        d = self.net(images01 * 2 - 1)
        return F.interpolate(d, size=images01.shape[-2:], mode="bilinear", align_corners=False)[:, 0]


class DPTDepth(nn.Module):
    """transformers' DPT (MiDaS DPT-Hybrid / DPT-Large) behind the same call: ``[B,3,H,W]`` [0,1] -> ``[B,H,W]``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images01: Tensor) -> Tensor:
        x = (images01 - 0.5) / 0.5  # DPT's image processor normalises with mean=std=0.5
        return self.model(pixel_values=x).predicted_depth


class DepthEstimator(nn.Module):
    """Frame -> 3-channel depth image in [-1, 1] at frame size (what the VAE then encodes), as the reference does:
    resize to the depth net's resolution, predict, min-max normalise per frame, repeat to 3 channels, resize back."""

    def __init__(self, net: nn.Module, resolution: int):
        super().__init__()
        self.net = net
        self.resolution = int(resolution)

    def forward(self, frames01: Tensor) -> Tensor:
        h, w = frames01.shape[-2:]
        x = F.interpolate(frames01, (self.resolution, self.resolution), mode="bilinear", align_corners=False)
        d = self.net(x).float()
        lo = d.flatten(1).min(1).values[:, None, None]
        hi = d.flatten(1).max(1).values[:, None, None]
        d = (d - lo) / (hi - lo).clamp_min(1e-6)
        d = d[:, None].repeat(1, 3, 1, 1) * 2 - 1
        return F.interpolate(d, (h, w), mode="bilinear", align_corners=False).to(frames01.dtype)


class MappingNetwork(nn.Module):
    """The reference's depth "mapping network": VAE depth latent -> features added to ``conv_in``'s output.

    Same layout and parameter names as the reference's ``flow_conv_in`` (conv_in, blocks.{0..5}, conv_out), so its
    checkpoint keys map one to one; ``conv_out`` starts at zero so an untrained mapper leaves the UNet unchanged."""

    def __init__(
        self, out_channels: int, in_channels: int = 4, block_out_channels: Sequence[int] = (16, 32, 96, 256)
    ):
        super().__init__()
        ch = list(block_out_channels)
        self.conv_in = nn.Conv2d(in_channels, ch[0], 3, padding=1)
        self.blocks = nn.ModuleList()
        for a, b in zip(ch[:-1], ch[1:]):
            self.blocks.append(nn.Conv2d(a, a, 3, padding=1))
            self.blocks.append(nn.Conv2d(a, b, 3, padding=1))
        self.conv_out = nn.Conv2d(ch[-1], out_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, depth_latent: Tensor) -> Tensor:
        x = F.silu(self.conv_in(depth_latent))
        for block in self.blocks:
            x = F.silu(block(x))
        return self.conv_out(x)


# ------------------------------------------------------------------------------------------------ components
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


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "float16": torch.float16,
        "fp16": torch.float16,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
    }
    if dtype not in table:
        raise ValueError(f"unknown dtype '{dtype}' (hardware.dtype); use one of {sorted(table)}")
    return table[dtype]


def _check_path(path: Any, key: str, what: str) -> Path | None:
    if path in (None, "", "null"):
        return None
    p = Path(os.path.expanduser(str(path)))
    if not p.exists():
        raise MissingWeightsError(p, key, what)
    return p


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
    w = cfg["weights"]
    # the project's own tiny weights (python -m live2diff.train_tiny), shipped in the repo: found from any directory
    if w.get("trained"):
        from live2diff.train_tiny import resolve_trained_path

        w = {**w, "trained": resolve_trained_path(w["trained"])}
    paths = {
        k: _check_path(w.get(k), f"model.weights.{k}", desc)
        for k, desc in [
            ("base", "SD1.5 base weights (diffusers folder or single-file checkpoint)"),
            ("motion", "Live2Diff motion-module checkpoint"),
            ("lcm_lora", "LCM-LoRA weights"),
            ("style_lora", "style LoRA weights"),
            ("dreambooth", "DreamBooth UNet checkpoint"),
            ("taesd", "TAESD (AutoencoderTiny) folder"),
            ("depth", "DPT depth model folder"),
            ("trained", "the project's trained tiny weights (python -m live2diff.train_tiny)"),
        ]
    }
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(cfg["seed"]))
        unet = _build_unet(cfg, paths["base"])
        text_encoder, tokenizer = _build_text(cfg, paths["base"])
        vae = _build_vae(cfg, paths["base"], paths["taesd"])
        scheduler = _build_scheduler(cfg, paths["base"])
        depth_kind = str(_get(cfg, "depth.kind", "tiny"))
        depth, mapper = None, None
        if depth_kind != "none":
            depth = _build_depth(cfg, depth_kind, paths["depth"])
            mapper = MappingNetwork(
                unet.config.block_out_channels[0], unet.config.in_channels, cfg["mapping_channels"]
            )
            if _get(cfg, "mapping_init", "zero") == "random":  # exercise the depth path in random-weight runs
                nn.init.normal_(mapper.conv_out.weight, std=0.02)

    if paths["motion"] is not None:
        from live2diff.convert import load_reference_checkpoint

        load_reference_checkpoint(paths["motion"], unet, mapper)
    if paths["dreambooth"] is not None:
        from live2diff.convert import load_dreambooth_unet

        load_dreambooth_unet(paths["dreambooth"], unet)
    for key in ("lcm_lora", "style_lora"):
        if paths[key] is not None:
            from live2diff.convert import fuse_lora_file

            scale = float(_get(cfg, f"{key}_scale", 1.0))
            fuse_lora_file(paths[key], unet, text_encoder, scale=scale, key=f"model.weights.{key}")

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
    )
    if paths["trained"] is not None:
        from live2diff.train_tiny import load_trained

        load_trained(paths["trained"], comps)
    for m in comps.modules().values():
        m.eval().requires_grad_(False)
        p = next(m.parameters(), None)
        if p is not None and (p.device != device or p.dtype != dtype):
            m.to(device=device, dtype=dtype)
    return comps


def _unet2d_config(cfg: dict) -> dict:
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


def _motion_adapter(cfg: dict):
    from diffusers import MotionAdapter

    u = cfg["unet"]
    return MotionAdapter(
        block_out_channels=tuple(u["block_out_channels"]),
        motion_layers_per_block=int(u["layers_per_block"]),
        motion_num_attention_heads=int(u["motion_num_attention_heads"]),
        motion_norm_num_groups=int(u["norm_num_groups"]),
        motion_max_seq_length=int(u["motion_max_seq_length"]),
        # The reference has no motion module in the mid block (AnimateDiff v1 layout, motion_module_mid_block=False).
        use_motion_mid_block=bool(u.get("motion_mid_block", False)),
    )


def _build_unet(cfg: dict, base: Path | None):
    from diffusers import UNet2DConditionModel, UNetMotionModel

    if base is None:
        unet2d = UNet2DConditionModel(**_unet2d_config(cfg))
    elif base.is_dir():
        _require(base / "unet", "model.weights.base", "the 'unet' subfolder of the SD1.5 diffusers folder")
        unet2d = UNet2DConditionModel.from_pretrained(base, subfolder="unet", local_files_only=True)
    else:
        unet2d = UNet2DConditionModel(**_unet2d_config(cfg))
        from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

        sd = _load_state_dict(base, "model.weights.base")
        unet2d.load_state_dict(convert_ldm_unet_checkpoint(sd, unet2d.config), strict=True)
    from diffusers.utils import logging as dlogging

    level = dlogging.get_verbosity()
    dlogging.set_verbosity_error()  # from_unet2d casts with .to(), which warns about fp32 modules (there are none)
    try:
        return UNetMotionModel.from_unet2d(unet2d, motion_adapter=_motion_adapter(cfg), load_weights=True)
    finally:
        dlogging.set_verbosity(level)


def build_unet2d_config_from_motion(unet: nn.Module) -> dict[str, Any]:
    """``UNet2DConditionModel`` config with the spatial layout of a ``UNetMotionModel``."""
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


def build_unet2d(comps: Components) -> nn.Module:
    """A plain ``UNet2DConditionModel`` with the spatial weights of ``comps.unet`` (per-frame baselines): same
    weights, no motion modules. Build it *before* installing Live2Diff's attention if both are used."""
    from diffusers import UNet2DConditionModel

    u2 = UNet2DConditionModel(**build_unet2d_config_from_motion(comps.unet))
    sd = {k: v for k, v in comps.unet.state_dict().items() if "motion_modules" not in k}
    u2.load_state_dict(sd, strict=True)
    return u2.to(device=comps.device, dtype=comps.dtype).eval().requires_grad_(False)


def _build_text(cfg: dict, base: Path | None):
    from transformers import CLIPTextConfig, CLIPTextModel

    if base is not None and base.is_dir():
        from transformers import CLIPTokenizer

        _require(base / "text_encoder", "model.weights.base", "the 'text_encoder' subfolder")
        for name in ("vocab.json", "merges.txt"):
            _require(
                base / "tokenizer" / name, "model.weights.base", f"the CLIP tokenizer file tokenizer/{name}"
            )
        te = CLIPTextModel.from_pretrained(base, subfolder="text_encoder", local_files_only=True)
        tok = HFTokenizer(CLIPTokenizer.from_pretrained(base, subfolder="tokenizer", local_files_only=True))
        return te, tok
    t = cfg["text_encoder"]
    te = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=int(t["hidden_size"]),
            intermediate_size=int(t["intermediate_size"]),
            num_hidden_layers=int(t["num_hidden_layers"]),
            num_attention_heads=int(t["num_attention_heads"]),
            max_position_embeddings=77,
            hidden_act="quick_gelu",
            projection_dim=int(t["hidden_size"]),
        )
    )
    if base is not None:  # single file: the CLIP text weights live under cond_stage_model.transformer.
        from diffusers.loaders.single_file_utils import convert_ldm_clip_checkpoint

        sd = _load_state_dict(base, "model.weights.base")
        te_sd = convert_ldm_clip_checkpoint(sd)
        own = te.state_dict()
        if not any(k.startswith("text_model.") for k in own):  # transformers 5 dropped the text_model level
            te_sd = {k.removeprefix("text_model."): v for k, v in te_sd.items()}
        missing = [k for k in own if k not in te_sd and not k.endswith("position_ids")]
        if missing:
            raise ValueError(f"{base} (model.weights.base) lacks CLIP text weights, e.g. {missing[:3]}")
        te.load_state_dict({k: v for k, v in te_sd.items() if k in own}, strict=False)
    return te, OpenClipTokenizer()


class PixelAutoencoder(nn.Module):
    """A weight-free, structure-preserving VAE stand-in (``model.vae.kind: pixel``, the ``tiny`` default).

    A random-initialised TAESD decodes *every* latent to a nearly constant image, so with random weights every
    quality metric would compare flat grey frames. This stand-in keeps the image's structure instead: the latent is
    the 8×8 block average of the RGB frame in [-1, 1] plus its luma as a 4th channel, and decoding upsamples the
    colour channels bilinearly. Outputs are blurry versions of the input perturbed by whatever the (random) UNet
    does, so temporal metrics respond to the method's latent-space behaviour. Same interface as diffusers' VAEs.
    """

    def __init__(self, factor: int = 8, scaling_factor: float = 1.0) -> None:
        super().__init__()
        from diffusers.configuration_utils import FrozenDict

        levels = int(round(math.log2(factor))) + 1
        self.config = FrozenDict(
            scaling_factor=float(scaling_factor), latent_channels=4, block_out_channels=[4] * levels
        )
        self.factor = factor
        self.register_buffer(
            "_anchor", torch.zeros(()), persistent=False
        )  # gives .to()/.dtype something to move

    @property
    def dtype(self) -> torch.dtype:
        return self._anchor.dtype

    def encode(self, x: Tensor):
        rgb = F.avg_pool2d(x, self.factor)
        lat = torch.cat([rgb, rgb.mean(dim=1, keepdim=True)], dim=1)
        return SimpleNamespace(latents=lat, latent_dist=SimpleNamespace(mean=lat))

    def decode(self, z: Tensor):
        h, w = z.shape[-2] * self.factor, z.shape[-1] * self.factor
        return SimpleNamespace(
            sample=F.interpolate(z[:, :3], size=(h, w), mode="bilinear", align_corners=False)
        )


def _build_vae(cfg: dict, base: Path | None, taesd: Path | None):
    from diffusers import AutoencoderKL, AutoencoderTiny

    v = cfg["vae"]
    if taesd is not None:
        return AutoencoderTiny.from_pretrained(taesd, local_files_only=True)
    if v.get("kind", "tiny") == "pixel":
        return PixelAutoencoder(scaling_factor=float(v.get("scaling_factor", 1.0)))
    if v.get("kind", "tiny") == "kl":
        if base is not None and base.is_dir():
            return AutoencoderKL.from_pretrained(base, subfolder="vae", local_files_only=True)
        ch = v.get("block_out_channels", [128, 256, 512, 512])
        n = len(ch)
        vae = AutoencoderKL(
            block_out_channels=ch,
            down_block_types=["DownEncoderBlock2D"] * n,
            up_block_types=["UpDecoderBlock2D"] * n,
            latent_channels=4,
            norm_num_groups=int(v.get("norm_num_groups", 32)),
            layers_per_block=int(v.get("layers_per_block", 2)),
            scaling_factor=0.18215,
        )
        if base is not None:
            from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

            vae.load_state_dict(
                convert_ldm_vae_checkpoint(_load_state_dict(base, "model.weights.base"), vae.config)
            )
        return vae
    ch = list(v["block_out_channels"])
    nb = list(v["num_blocks"])
    return AutoencoderTiny(
        encoder_block_out_channels=ch,
        decoder_block_out_channels=ch,
        num_encoder_blocks=nb,
        num_decoder_blocks=nb[::-1],
        latent_channels=4,
    )


def _build_scheduler(cfg: dict, base: Path | None):
    """LCM over the noise schedule the reference uses: its configs build a DDIMScheduler from
    ``noise_scheduler_kwargs`` (linear betas 0.00085..0.012, steps_offset 1) and convert it with
    ``LCMScheduler.from_config`` — not SD1.5's scaled-linear schedule. ``model.scheduler.from_base: true`` takes
    the base folder's ``scheduler/`` config instead."""
    from diffusers import LCMScheduler

    sc = dict(cfg.get("scheduler") or {})
    if sc.pop("from_base", False) and base is not None and base.is_dir():
        _require(base / "scheduler", "model.weights.base", "the 'scheduler' subfolder")
        return LCMScheduler.from_pretrained(base, subfolder="scheduler", local_files_only=True)
    kwargs = dict(
        beta_start=0.00085, beta_end=0.012, beta_schedule="linear", steps_offset=1, clip_sample=False
    )
    kwargs.update(sc)
    return LCMScheduler(original_inference_steps=50, **kwargs)


def _build_depth(cfg: dict, kind: str, path: Path | None) -> DepthEstimator:
    res = int(_get(cfg, "depth.resolution", 384))
    if kind == "tiny":
        return DepthEstimator(TinyDepthNet(int(_get(cfg, "depth.channels", 8))), res)
    if kind == "dpt":
        from transformers import DPTConfig, DPTForDepthEstimation

        if path is not None:
            return DepthEstimator(
                DPTDepth(DPTForDepthEstimation.from_pretrained(path, local_files_only=True)), res
            )
        # Random DPT for speed runs without weights: MiDaS DPT-Hybrid layout (ViT-B/16 on a BiT backbone, ~122M
        # parameters, as the reference's dpt_hybrid_384) or DPT-Large.
        if str(_get(cfg, "depth.arch", "hybrid")) == "hybrid":
            dpt_cfg = DPTConfig(
                is_hybrid=True,
                image_size=res,
                backbone_featmap_shape=[1, 1024, res // 16, res // 16],
                neck_ignore_stages=[0, 1],
                readout_type="project",
                reassemble_factors=[1, 1, 1, 0.5],
                neck_hidden_sizes=[256, 512, 768, 768],
                backbone_out_indices=[2, 5, 8, 11],
            )
        else:
            dpt_cfg = DPTConfig(image_size=res)
        return DepthEstimator(DPTDepth(DPTForDepthEstimation(dpt_cfg)), res)
    raise ValueError(f"unknown depth kind '{kind}' (model.depth.kind); use tiny, dpt or none")


def _require(path: Path, key: str, what: str) -> None:
    if not path.exists():
        raise MissingWeightsError(path, key, what)


def _load_state_dict(path: Path, key: str) -> dict[str, Tensor]:
    """safetensors, or a torch pickle loaded with ``weights_only=True``; unwraps ``state_dict``."""
    if not Path(path).exists():
        raise MissingWeightsError(path, key)
    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(str(path))
    obj = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    return obj


# ------------------------------------------------------------------------------------------------ helpers
@torch.no_grad()
def encode_prompt(comps: Components, prompt: str | Sequence[str]) -> Tensor:
    """Text embeddings ``[N, 77, D]``.

    ``clip_skip`` follows the reference (and diffusers): ``k`` takes ``hidden_states[-(k + 1)]`` — the output of
    the layer ``k`` before the last — then CLIP's final layer norm; 0/None takes the last layer. The reference's
    style configs use ``clip_skip: 2``."""
    ids = comps.tokenizer(prompt).to(comps.device)
    te = comps.text_encoder
    if not comps.clip_skip:
        return te(ids)[0].to(comps.dtype)
    out = te(ids, output_hidden_states=True)
    h = out.hidden_states[-(comps.clip_skip + 1)]
    return getattr(te, "text_model", te).final_layer_norm(h).to(comps.dtype)


def _is_tiny_vae(vae: nn.Module) -> bool:
    return type(vae).__name__ == "AutoencoderTiny"


@torch.no_grad()
def vae_encode(comps: Components, frames01: Tensor) -> Tensor:
    """``[B,3,H,W]`` in [0,1] -> scaled latents ``[B,4,H/8,W/8]`` (deterministic: the posterior mean for KL)."""
    x = frames01.to(comps.device, comps.dtype) * 2 - 1
    if _is_tiny_vae(comps.vae):
        lat = comps.vae.encode(x).latents
    else:
        lat = comps.vae.encode(x).latent_dist.mean
    return lat * comps.vae.config.scaling_factor


@torch.no_grad()
def vae_decode(comps: Components, latents: Tensor) -> Tensor:
    """Scaled latents -> ``[B,3,H,W]`` float32 in [0,1]."""
    x = comps.vae.decode(latents / comps.vae.config.scaling_factor).sample
    return ((x.float() + 1) / 2).clamp(0, 1)


@torch.no_grad()
def depth_latents(comps: Components, frames01: Tensor) -> Tensor | None:
    """Depth image of each frame, VAE-encoded (what the mapping network consumes); None when depth is off."""
    if comps.depth is None:
        return None
    d = comps.depth(frames01.to(comps.device, comps.dtype))
    return vae_encode(comps, (d + 1) / 2)


@dataclass
class LCMSchedule:
    """Per-step constants for few-step LCM sampling over ``t_index_list`` (StreamDiffusion-style).

    ``add_noise(x0, eps, j)`` noises a clean latent to step j's timestep; ``denoise(x_t, eps_pred, j)`` applies LCM's
    boundary condition to get the clean estimate. Shapes broadcast over a leading step dimension when ``j`` is a
    LongTensor of step indices."""

    t_index_list: list[int]
    timesteps: Tensor  # [k] long
    alpha_sqrt: Tensor  # [k]
    beta_sqrt: Tensor  # [k]
    c_skip: Tensor  # [k]
    c_out: Tensor  # [k]

    @property
    def n_steps(self) -> int:
        return len(self.t_index_list)

    @property
    def strength(self) -> float:
        return 1.0 - self.t_index_list[0] / 50.0

    def _c(self, v: Tensor, j: int | Tensor, like: Tensor) -> Tensor:
        c = v[j] if isinstance(j, int) else v.index_select(0, j.to(v.device))
        c = c.to(like.device, like.dtype)
        return c.reshape(c.shape + (1,) * (like.ndim - c.ndim))

    def add_noise(self, x0: Tensor, eps: Tensor, j: int | Tensor) -> Tensor:
        return self._c(self.alpha_sqrt, j, x0) * x0 + self._c(self.beta_sqrt, j, x0) * eps

    def denoise(self, x_t: Tensor, eps_pred: Tensor, j: int | Tensor) -> Tensor:
        a, b = self._c(self.alpha_sqrt, j, x_t), self._c(self.beta_sqrt, j, x_t)
        x0_pred = (x_t - b * eps_pred) / a
        return self._c(self.c_out, j, x_t) * x0_pred + self._c(self.c_skip, j, x_t) * x_t


def make_lcm_schedule(
    scheduler: Any, t_index_list: Sequence[int], num_inference_steps: int = 50
) -> LCMSchedule:
    """Pick ``t_index_list`` out of LCM's ``num_inference_steps``-step schedule (index 0 = noisiest)."""
    t_index_list = [int(t) for t in t_index_list]
    if (
        not t_index_list
        or sorted(t_index_list) != t_index_list
        or len(set(t_index_list)) != len(t_index_list)
    ):
        raise ValueError(f"t_index_list must be strictly increasing and non-empty, got {t_index_list}")
    if t_index_list[-1] >= num_inference_steps or t_index_list[0] < 0:
        raise ValueError(f"t_index_list entries must lie in [0, {num_inference_steps}), got {t_index_list}")
    scheduler.set_timesteps(num_inference_steps)
    ts = scheduler.timesteps
    sub = torch.tensor([int(ts[i]) for i in t_index_list], dtype=torch.long)
    ac = scheduler.alphas_cumprod
    c_skip, c_out = zip(*[scheduler.get_scalings_for_boundary_condition_discrete(int(t)) for t in sub])
    return LCMSchedule(
        t_index_list=t_index_list,
        timesteps=sub,
        alpha_sqrt=ac[sub].sqrt().float(),
        beta_sqrt=(1 - ac[sub]).sqrt().float(),
        c_skip=torch.tensor([float(c) for c in c_skip]),
        c_out=torch.tensor([float(c) for c in c_out]),
    )
