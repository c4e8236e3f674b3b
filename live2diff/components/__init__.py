"""The diffusion components Live2Diff and the baselines run on, one module per component:

* :mod:`.config`   — the model config (``conf/model/*.yaml`` is the only source of sizes), dtypes
* :mod:`.weights`  — weight paths and the state-dict reader (shared with :mod:`eval.weights`)
* :mod:`.trained`  — the project's trained tiny weights file (``model.weights.trained``): load, save
* :mod:`.text`     — CLIP text encoder, tokenizer, :func:`encode_prompt`
* :mod:`.vae`      — TAESD / KL / pixel VAE, :func:`vae_encode`, :func:`vae_decode`
* :mod:`.depth`    — depth estimator, the depth mapping network, :func:`depth_latents`
* :mod:`.unet`     — ``UNetMotionModel`` (+ motion modules), :func:`build_unet2d` for per-frame baselines
* :mod:`.schedule` — the LCM scheduler and :class:`LCMSchedule`
* :mod:`.build`    — :class:`Components` and :func:`build_components`

Nothing here downloads; checkpoint layouts are converted in :mod:`live2diff.convert`.
"""

from live2diff.components.build import Components, build_components
from live2diff.components.config import parse_dtype, resolve_model_cfg
from live2diff.components.depth import (
    DepthEstimator,
    DPTDepth,
    MappingNetwork,
    TinyDepthNet,
    depth_latents,
    depth_latents_from_raw,
)
from live2diff.components.schedule import DEFAULT_T_INDEX_LIST, LCMSchedule, make_lcm_schedule
from live2diff.components.text import HFTokenizer, OpenClipTokenizer, encode_prompt, with_clip_skip
from live2diff.components.unet import build_unet2d, build_unet2d_config_from_motion
from live2diff.components.vae import PixelAutoencoder, vae_decode, vae_encode
from live2diff.components.weights import MissingWeightsError, UnsafeCheckpointError, load_state_dict

__all__ = [
    "DEFAULT_T_INDEX_LIST",
    "Components",
    "DPTDepth",
    "DepthEstimator",
    "HFTokenizer",
    "LCMSchedule",
    "MappingNetwork",
    "MissingWeightsError",
    "OpenClipTokenizer",
    "PixelAutoencoder",
    "TinyDepthNet",
    "UnsafeCheckpointError",
    "build_components",
    "build_unet2d",
    "build_unet2d_config_from_motion",
    "depth_latents",
    "depth_latents_from_raw",
    "encode_prompt",
    "load_state_dict",
    "make_lcm_schedule",
    "parse_dtype",
    "resolve_model_cfg",
    "vae_decode",
    "vae_encode",
    "with_clip_skip",
]
