"""The case on which this project's Live2Diff is compared with the authors' code (open-mmlab/Live2Diff, run as an
oracle by ``benchmarks/reference_equivalence.py --live2diff CHECKOUT``; golden outputs in ``tests/golden/``).

Both sides read the same files (written here by :mod:`live2diff.testing.fixtures`, each with its own loader): an
SD1.5 diffusers folder with every structural count of SD1.5 but narrow channels (4 levels, 2 layers per block,
12 text layers, 32-group norms), the Live2Diff checkpoint in its training wrapping (motion modules with non-sinusoid
``pos_encoder.pe`` tables + the depth mapping network ``flow_conv_in``), an LCM-LoRA (kohya keys) and a TAESD
folder. They get the same frames, the same raw depth maps (the authors' MiDaS is a git submodule: both depth nets
are replaced by one that returns these maps, so the normalisation, VAE encoding and mapping network are compared)
and the same injected noise (each frame's step-0 noise and re-noising noise, and the noise of the stream buffer's
placeholder rows). Everything here is a pure function of the constants below, so a test regenerates the inputs and
the fixture files and checks their digests against the ones a golden file records.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from live2diff.testing import fixtures as fx

ROOT = Path(__file__).resolve().parents[2]
GOLDEN_DIR = ROOT / "tests" / "golden"
REGENERATE = "python benchmarks/reference_equivalence.py --live2diff <checkout of open-mmlab/Live2Diff>"
REFERENCE_REPO = "open-mmlab/Live2Diff"

HEIGHT, WIDTH = 64, 64  # the smallest frame whose 8x8 latent survives the UNet's three downsamplings
LATENT = (4, HEIGHT // 8, WIDTH // 8)
N_FRAMES = 40  # 8 warmup + 32 streamed: the ring of 8 recent frames wraps at stream frame 8 (frame 16)
WARMUP, WINDOW = 8, 16  # the reference's WARMUP_FRAMES, WINDOW_SIZE (hard-coded there)
PROMPT = "a watercolor painting of a red fox running through snow"
DEPTH_HW = (48, 48)  # raw depth maps at another size than the frames: the resize back is compared too
SEED = 42
#: step count -> t_index_list: the interactive demo's 2 steps, the configs' 3 and 4 (configs/*.yaml)
T_INDEX_LISTS = {2: (30, 40), 3: (30, 36, 42), 4: (25, 31, 37, 43)}

#: SD1.5's structure with narrow channels (the 32-group norms need widths that are multiples of 32). The deepest
#: level of an 8x8 latent is 1x1: with 32 groups a group there holds channels/32 values, and a group of 2 values (64
#: channels) is ill-conditioned (two near-equal values normalise to +-1: a 1e-7 change of the input moved outputs by
#: 7e-5), so the widths grow to 8 values per group at 1x1 (SD1.5 at 512x512 has 40 channels x 64 pixels)
WIDTHS: dict[str, Any] = {
    "block_out_channels": [32, 64, 128, 256],
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "cross_attention_dim": 64,
    "attention_head_dim": 8,
    "text_hidden_size": 64,
    "text_intermediate_size": 128,
    "text_num_attention_heads": 2,
    "text_projection_dim": 64,
    "text_num_hidden_layers": 12,
    "vae_block_out_channels": [32, 32, 64, 64],
}
MAPPING_CHANNELS = [16, 32, 96, 256]  # the reference's MappingNetwork default
TAESD_CHANNELS = [16, 16, 16, 16]  # madebyollin/taesd's layout with 16 channels instead of 64 (CPU time)
LCM_LORA = {"rank": 4, "alpha": 8.0}


def write_fixtures(root: Path) -> dict[str, Path]:
    """The weight files both sides load: ``base`` (SD1.5 diffusers folder), ``motion`` (Live2Diff ``.ckpt``,
    training wrapping), ``lcm_lora`` (kohya ``.safetensors``), ``taesd`` (AutoencoderTiny folder)."""
    root = Path(root)
    motion = fx.motion_state_dict(
        WIDTHS["block_out_channels"], WIDTHS["layers_per_block"], MAPPING_CHANNELS, seed=2
    )
    (root / "live2diff.ckpt").parent.mkdir(parents=True, exist_ok=True)
    torch.save(fx.wrap_checkpoint(_trained_scale(motion), "training"), root / "live2diff.ckpt")
    files = {
        "base": fx.write_sd15_folder(root / "stable-diffusion-v1-5", WIDTHS, seed=1),
        "motion": root / "live2diff.ckpt",
        "taesd": fx.write_taesd_folder(root / "taesd", {"taesd_channels": TAESD_CHANNELS}, seed=4),
    }
    unet2d, _, _ = fx.sd15_modules(WIDTHS)
    files["lcm_lora"] = fx.write_lora(
        root / "lcm-lora-sdv1-5" / "pytorch_lora_weights.safetensors", unet2d, None, "kohya",
        rank=LCM_LORA["rank"], alpha=LCM_LORA["alpha"], seed=6,
    )  # fmt: skip
    return files


def _trained_scale(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """The fixture's motion checkpoint (values ``0.02 * N(0, 1)``) rescaled to the magnitudes of a trained one, so
    that the paths under test carry signal: projections and convolutions ``N(0, 1/fan_in)``, norm scales around 1,
    positional tables of unit size (as the sinusoid), the mapping network's output convolution ten times that (at
    one, the warmup block's depth normalisation moved the outputs by only ~1.5e-4). At ``0.02`` the norm scales are
    ~0 and the six 3x3 convolutions of the mapping network shrink its input by ~1e-4: the depth maps, the KV-cache's
    contents and the positional tables would barely move an output, and a comparison could not tell a wrong
    implementation from a right one."""
    out = {}
    for k, v in sd.items():
        z = v / 0.02  # N(0, 1)
        if k.endswith(".pe"):
            out[k] = z
        elif k.endswith(".weight") and ("norm" in k.rsplit(".", 2)[-2] or ".norms." in k):
            out[k] = 1 + 0.1 * z
        elif k.endswith(".weight") and v.ndim >= 2:
            # the mapping network's last conv (zero at the start of training) carries the depth signal: x10
            gain = 10.0 if k.startswith("flow_conv_in.conv_out.") else 1.0
            out[k] = gain * z / math.sqrt(v[0].numel())
        else:
            out[k] = v
    return out


def _tensors_of(path: Path) -> dict[str, Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    obj = torch.load(path, map_location="cpu", weights_only=True)
    out: dict[str, Tensor] = {}

    def walk(prefix: str, o: Any) -> None:
        if isinstance(o, dict):
            for k, v in o.items():
                walk(f"{prefix}{k}.", v)
        elif isinstance(o, Tensor):
            out[prefix[:-1]] = o
        else:
            out[prefix[:-1]] = torch.tensor(float(o))

    walk("", obj)
    return out


def _hash_tensors(h, tensors: dict[str, Tensor]) -> None:
    for k in sorted(tensors):
        t = tensors[k].detach().contiguous().cpu()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def fixture_sha256(files: dict[str, Path]) -> str:
    """Digest of every tensor and config of the weight files (by content, not file bytes: a serialiser's
    container format may change, the weights may not)."""
    h = hashlib.sha256()
    for name in sorted(files):
        p = Path(files[name])
        members = sorted(p.rglob("*")) if p.is_dir() else [p]
        for m in members:
            if not m.is_file():
                continue
            h.update(f"{name}/{m.relative_to(p) if p.is_dir() else m.name}|".encode())
            if m.suffix in (".safetensors", ".ckpt", ".bin", ".pt"):
                _hash_tensors(h, _tensors_of(m))
            else:
                h.update(m.read_bytes())
    return h.hexdigest()


@dataclass
class Inputs:
    """One run's inputs: ``n_frames`` frames (the first ``N_FRAMES`` are compared; the reference is pushed
    ``n_steps - 1`` more so that its stream batch returns the last compared frames)."""

    frames: Tensor  # [n_frames, 3, H, W] in [0, 1]
    depth: Tensor  # [n_frames, *DEPTH_HW] raw depth (before the min-max normalisation)
    noise: Tensor  # [n_frames, n_steps, *LATENT]: step-0 noise, then the re-noising noise of steps 1..n-1
    placeholder_noise: Tensor  # [n_steps - 1, n_steps, *LATENT]: the stream buffer's rows at steps 1..n-1

    @property
    def n_steps(self) -> int:
        return self.noise.shape[1]


def make_inputs(n_steps: int) -> Inputs:
    """Deterministic (CPU generator) inputs for ``n_steps`` denoising steps."""
    n = N_FRAMES + n_steps - 1
    g = torch.Generator().manual_seed(SEED)
    # smooth moving content: a low-resolution random field, upsampled, drifting by a pixel per frame
    base = torch.rand(1, 3, HEIGHT // 4, WIDTH // 4 + n, generator=g)
    big = torch.nn.functional.interpolate(base, (HEIGHT, WIDTH + 4 * n), mode="bilinear", align_corners=False)
    frames = torch.stack([big[0, :, :, 2 * i : 2 * i + WIDTH] for i in range(n)])
    frames = (frames + 0.1 * torch.rand(frames.shape, generator=g)).clamp(0, 1)
    # raw depth with a different range per frame (a joint min-max over the warmup block differs from per-frame)
    lo = torch.rand(n, 1, 1, generator=g) * 5
    span = 1 + torch.rand(n, 1, 1, generator=g) * 10
    depth = lo + span * torch.rand(n, *DEPTH_HW, generator=g)
    noise = torch.randn(n, n_steps, *LATENT, generator=g)
    placeholder = torch.randn(max(n_steps - 1, 0), n_steps, *LATENT, generator=g)
    return Inputs(frames.contiguous(), depth.contiguous(), noise, placeholder)


def inputs_sha256(inputs: Inputs) -> str:
    h = hashlib.sha256()
    _hash_tensors(
        h,
        {
            "frames": inputs.frames,
            "depth": inputs.depth,
            "noise": inputs.noise,
            "placeholder_noise": inputs.placeholder_noise,
        },
    )
    return h.hexdigest()


def decoded_frames(n_steps: int) -> list[int]:
    """Frames whose decoded image a golden file keeps: all of them for the default 3 steps; for the others the
    warmup's first and last, the first streamed frames, the ring's wrap and the last (the latents of every frame
    are kept; the decoder is the same function of them whatever the step count), to keep the files small."""
    if n_steps == 3:
        return list(range(N_FRAMES))
    return [0, WARMUP - 1, WARMUP, WARMUP + 1, WINDOW - 1, WINDOW, WINDOW + 1, 24, N_FRAMES - 1]


def golden_path(n_steps: int) -> Path:
    return GOLDEN_DIR / f"live2diff_reference_{n_steps}steps.safetensors"


def settings(n_steps: int) -> dict[str, Any]:
    """The exact settings of one golden run (recorded in its file)."""
    return {
        "t_index_list": list(T_INDEX_LISTS[n_steps]),
        "num_inference_steps": 50,
        "height": HEIGHT,
        "width": WIDTH,
        "n_frames_compared": N_FRAMES,
        "warmup": WARMUP,
        "window": WINDOW,
        "prompt": PROMPT,
        "clip_skip": 2,
        "cfg_type": "none",
        "guidance_scale": 1.0,
        "do_add_noise": True,
        "use_denoising_batch": True,
        "frame_buffer_size": 1,
        "dtype": "float32",
        "device": "cpu",
        "vae": "taesd (AutoencoderTiny)",
        "lcm_lora_scale": 1.0,
        "depth": f"raw maps {list(DEPTH_HW)} injected in place of MiDaS",
        "noise": "injected (step-0, re-noising and placeholder-row noise)",
        "seed": SEED,
        "widths": WIDTHS,
        "mapping_channels": MAPPING_CHANNELS,
        "taesd_channels": TAESD_CHANNELS,
    }


def read_golden(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """``(tensors, metadata)`` of a golden file (metadata values are JSON)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as f:
        meta = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
    return load_file(str(path)), meta


def our_model_cfg(files: dict[str, Path]) -> dict[str, Any]:
    """``model=sd15`` narrowed to :data:`WIDTHS`, every weight from ``files`` (depth: a tiny stand-in net that the
    comparison replaces by the injected maps)."""
    from live2diff.components.config import load_model_yaml

    cfg = load_model_yaml("sd15")
    u = cfg["unet"]
    u["block_out_channels"] = list(WIDTHS["block_out_channels"])
    u["layers_per_block"] = WIDTHS["layers_per_block"]
    u["norm_num_groups"] = WIDTHS["norm_num_groups"]
    u["cross_attention_dim"] = WIDTHS["cross_attention_dim"]
    u["attention_head_dim"] = WIDTHS["attention_head_dim"]
    cfg["text_encoder"] = {
        "hidden_size": WIDTHS["text_hidden_size"],
        "intermediate_size": WIDTHS["text_intermediate_size"],
        "num_hidden_layers": WIDTHS["text_num_hidden_layers"],
        "num_attention_heads": WIDTHS["text_num_attention_heads"],
    }
    cfg["depth"] = {"kind": "tiny", "resolution": DEPTH_HW[0], "channels": 4}
    cfg["mapping_channels"] = list(MAPPING_CHANNELS)
    cfg["weights"] = {
        "base": str(files["base"]),
        "motion": str(files["motion"]),
        "lcm_lora": str(files["lcm_lora"]),
        "taesd": str(files["taesd"]),
        "depth": "random",
        "style_lora": None,
        "dreambooth": None,
        "animatediff_motion": None,
    }
    return cfg


class InjectedDepth(torch.nn.Module):
    """A depth net that returns the next raw maps of a queue, whatever it is shown (both sides get the same maps)."""

    def __init__(self, maps: Tensor):
        super().__init__()
        self.maps = maps
        self.next = 0

    def forward(self, images: Tensor) -> Tensor:
        b = images.shape[0]
        out = self.maps[self.next : self.next + b]
        if out.shape[0] != b:
            raise RuntimeError(f"depth queue exhausted: {self.next} of {len(self.maps)} maps used, {b} asked")
        self.next += b
        return out.to(images.device, images.dtype)


def run_ours(
    files: dict[str, Path], inputs: Inputs, n_frames: int = N_FRAMES, **method_kwargs: Any
) -> tuple[Tensor, Tensor]:
    """This project's ``live2diff`` (:class:`~live2diff.method.Live2DiffMethod`, as ``method=[live2diff]`` builds
    it, on :func:`our_model_cfg`) over the first ``n_frames`` inputs with the injected depth maps and noise:
    ``(latents [n_frames, *LATENT], frames [n_frames, 3, H, W])`` per frame index, the latents being what each frame
    is decoded from. ``method_kwargs`` override the method's settings (e.g. ``stream_buffer="clean"``)."""
    from live2diff.method import Live2DiffMethod

    n_steps = inputs.n_steps
    kwargs = {
        "t_index_list": list(T_INDEX_LISTS[n_steps]),
        "warmup": WARMUP,
        "window": WINDOW,
        **method_kwargs,
    }
    method = Live2DiffMethod(model=our_model_cfg(files), device="cpu", dtype="float32", **kwargs)
    stream = method.stream
    stream.comps.depth.net = InjectedDepth(inputs.depth)
    frame_noise = iter(inputs.noise)
    stream._frame_noise = lambda like: next(frame_noise).to(like.dtype)
    stream._placeholder_noise = lambda like, step: inputs.placeholder_noise[step - 1].to(like.dtype)
    decoded: list[Tensor] = []
    real_decode = stream._decode

    def decode(latents: Tensor) -> list[Tensor]:
        decoded.extend(latents)
        return real_decode(latents)

    stream._decode = decode
    method.prepare(PROMPT, height=HEIGHT, width=WIDTH, seed=SEED)
    emitted: list[tuple[int, Tensor]] = []
    with torch.no_grad():
        for i in range(n_frames):
            emitted += method.push(i, inputs.frames[i])
        emitted += method.flush()
    if len(decoded) != len(emitted) or sorted(i for i, _ in emitted) != list(range(n_frames)):
        raise RuntimeError(f"expected every index of {n_frames} once, got {[i for i, _ in emitted]}")
    latents = torch.empty(n_frames, *LATENT)
    frames = torch.empty(n_frames, 3, HEIGHT, WIDTH)
    for (i, img), z in zip(emitted, decoded):
        latents[i], frames[i] = z, img
    return latents, frames


class GoldenMismatch(AssertionError):
    """A golden file that was not made from this case's fixture, inputs or settings (names the command that
    regenerates it)."""


def check_golden(path: Path, meta: dict[str, Any], files: dict[str, Path], inputs: Inputs) -> None:
    """Refuse to compare against a golden file made from other weights, inputs or settings than this case's."""
    n_steps = inputs.n_steps
    checks = [
        ("fixture weights (sha256)", meta.get("fixture_sha256"), fixture_sha256(files)),
        ("inputs (sha256)", meta.get("inputs_sha256"), inputs_sha256(inputs)),
        ("settings", meta.get("settings"), json.loads(json.dumps(settings(n_steps)))),
    ]
    for what, recorded, now in checks:
        if recorded != now:
            raise GoldenMismatch(
                f"{path.name} was recorded from other {what} than live2diff/testing/live2diff_reference.py "
                f"writes now (recorded {str(recorded)[:80]}, now {str(now)[:80]}): regenerate the golden files "
                f"with `{REGENERATE}` (see docs/reference_equivalence.md)"
            )


def per_frame_max_abs(a: Tensor, b: Tensor) -> Tensor:
    """``max |a - b|`` of each frame (first dimension)."""
    return (a - b).flatten(1).abs().max(1).values
