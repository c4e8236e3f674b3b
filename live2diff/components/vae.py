"""The VAE: TAESD (diffusers ``AutoencoderTiny``), SD's ``AutoencoderKL``, the weight-free ``pixel`` stand-in or
``pixel_taesd`` (pixel encoder + trained TAESD-architecture decoder, the trained ``tiny`` model's); and encode/decode
between frames in [0, 1] and scaled latents."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from live2diff.components.weights import load_state_dict
from live2diff.convert import load_ldm_vae


class PixelAutoencoder(nn.Module):
    """A weight-free, structure-preserving VAE stand-in (``model.vae.kind: pixel``, the ``tiny`` default).

    A random-initialised TAESD decodes *every* latent to a nearly constant image, so with random weights every
    quality metric would compare flat grey frames. This stand-in keeps the image's structure instead: the latent is
    the ``factor``×``factor`` block average (``model.vae.factor``, 8 by default as SD's VAE) of the RGB frame in
    [-1, 1] plus its luma as a 4th channel, and decoding upsamples the colour channels bilinearly. Outputs are
    blurry versions of the input perturbed by whatever the (random) UNet does, so temporal metrics respond to the
    method's latent-space behaviour. Same interface as diffusers' VAEs.
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


class PixelEncoderTinyDecoder(PixelAutoencoder):
    """``model.vae.kind: pixel_taesd`` (the trained ``tiny`` model): the weight-free pixel encoder above (block
    mean + luma, so the latents keep the frame's structure and motion by construction; ``factor`` 4 for that
    model) and a learned decoder of TAESD's architecture (diffusers ``DecoderTiny``: ``block_out_channels`` channels, ``num_blocks`` blocks per
    level), trained by ``python -m live2diff.train_tiny`` to render the 64×64 frame from the 16×16 latents with
    an L1 + LPIPS loss. Its weights are part of the trained weights file (``vae.decoder.*``)."""

    def __init__(self, block_out_channels, num_blocks, factor: int = 8, scaling_factor: float = 1.0) -> None:
        from diffusers.models.autoencoders.vae import DecoderTiny

        super().__init__(factor=factor, scaling_factor=scaling_factor)
        ch, nb = [int(c) for c in block_out_channels], [int(n) for n in num_blocks]
        if len(ch) != len(nb) or 2 ** (len(ch) - 1) != factor:
            raise ValueError(
                f"model.vae.block_out_channels {ch} / num_blocks {nb}: need {int(math.log2(factor)) + 1} levels "
                f"of equal length for the {factor}x pixel latents"
            )
        self.decoder = DecoderTiny(4, 3, tuple(nb[::-1]), tuple(ch), 2, "relu", "nearest")

    @property
    def dtype(self) -> torch.dtype:
        return self.decoder.layers[0].weight.dtype

    def decode(self, z: Tensor):
        return SimpleNamespace(sample=self.decoder(z))


#: ``model.vae.kind``: a random or local TAESD, SD's KL autoencoder, the weight-free pixel stand-in, or the pixel
#: encoder with a trained TAESD-architecture decoder
VAE_KINDS = ("tiny", "kl", "pixel", "pixel_taesd")


def build_vae(cfg: dict, base: Path | None, taesd: Path | None):
    from diffusers import AutoencoderKL, AutoencoderTiny

    v = cfg["vae"]
    kind = v.get("kind", "tiny")
    if kind not in VAE_KINDS:
        raise ValueError(f"model.vae.kind is {kind!r}; expected one of {', '.join(VAE_KINDS)}")
    factor = v.get("factor", 8)  # the pixel encoder's block size (SD's VAE: 8)
    if kind not in ("pixel", "pixel_taesd") and "factor" in v:  # TAESD / KL fix their own factor (8)
        raise ValueError(
            f"model.vae.factor is set ({factor}) but model.vae.kind {kind!r} has a fixed factor of 8; "
            "only the pixel encoders (pixel, pixel_taesd) take one"
        )
    if not isinstance(factor, int) or factor < 1 or factor & (factor - 1):
        raise ValueError(f"model.vae.factor must be a power of two (1, 2, 4, 8, ...), got {factor!r}")
    if taesd is not None:
        if kind == "pixel_taesd":  # the trained UNet denoises the pixel encoder's latents, not TAESD's
            raise ValueError(
                f"model.weights.taesd={taesd} would replace the pixel latent space this model was trained on "
                "(model.vae.kind: pixel_taesd); unset model.weights.taesd or use a model whose vae.kind is tiny"
            )
        if factor != 8:
            raise ValueError(
                f"model.weights.taesd={taesd} encodes with a factor of 8, but model.vae.factor is {factor}; "
                "unset one of them"
            )
        return AutoencoderTiny.from_pretrained(taesd, local_files_only=True)
    if kind == "pixel":
        return PixelAutoencoder(factor=factor, scaling_factor=float(v.get("scaling_factor", 1.0)))
    if kind == "pixel_taesd":
        return PixelEncoderTinyDecoder(
            v["block_out_channels"],
            v["num_blocks"],
            factor=factor,
            scaling_factor=float(v.get("scaling_factor", 1.0)),
        )
    if kind == "kl":
        if base is not None and base.is_dir():
            return AutoencoderKL.from_pretrained(base, subfolder="vae", local_files_only=True)
        vae = random_kl_vae(v)
        if base is not None:
            load_ldm_vae(load_state_dict(base, "model.weights.base"), vae, base, "model.weights.base")
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


def random_kl_vae(v: dict[str, Any]) -> nn.Module:
    from diffusers import AutoencoderKL

    ch = v.get("block_out_channels", [128, 256, 512, 512])
    n = len(ch)
    return AutoencoderKL(
        block_out_channels=ch,
        down_block_types=["DownEncoderBlock2D"] * n,
        up_block_types=["UpDecoderBlock2D"] * n,
        latent_channels=4,
        norm_num_groups=int(v.get("norm_num_groups", 32)),
        layers_per_block=int(v.get("layers_per_block", 2)),
        scaling_factor=0.18215,
    )


def _is_tiny_vae(vae: nn.Module) -> bool:
    return type(vae).__name__ == "AutoencoderTiny"


@torch.no_grad()
def vae_encode(comps: Any, frames01: Tensor) -> Tensor:
    """``[B,3,H,W]`` in [0,1] -> scaled latents ``[B,4,H/f,W/f]`` (f: ``vae_scale_factor``, 8 for SD's VAE;
    deterministic: the posterior mean for KL)."""
    x = frames01.to(comps.device, comps.dtype) * 2 - 1
    if _is_tiny_vae(comps.vae):
        lat = comps.vae.encode(x).latents
    else:
        lat = comps.vae.encode(x).latent_dist.mean
    return lat * comps.vae.config.scaling_factor


@torch.no_grad()
def vae_decode(comps: Any, latents: Tensor) -> Tensor:
    """Scaled latents -> ``[B,3,H,W]`` float32 in [0,1]."""
    x = comps.vae.decode(latents / comps.vae.config.scaling_factor).sample
    return ((x.float() + 1) / 2).clamp(0, 1)
