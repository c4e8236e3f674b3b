"""Child process of ``benchmarks/reference/live2diff.py``: runs the authors' Live2Diff from a checkout as an oracle.

It is a separate process because the authors' package and this project's are both named ``live2diff``: here the
checkout comes first on ``sys.path`` and nothing of this project is imported. The job (weight files, settings,
inputs) comes as a ``torch.save`` file; the outputs go back the same way.

What runs is their code: ``AnimationDepthPipeline.build_pipeline`` / ``build_warmup_unet`` (their loaders, on a config
built from their ``configs/base_config.yaml`` with the fixture paths), ``StreamAnimateDiffusionDepth`` (``prepare``:
warmup, ``_encode_prompt`` with CLIP skip, their scheduler constants; ``__call__``: ``encode_image``, ``encode_depth``,
``predict_x0_batch``, ``update_attn_bias``, ``decode_image``), their streaming and warmup UNets. What is patched, in
this file's own code, so that it runs on a CPU in float32 with injected inputs:

* ``Tensor.cuda`` -> the tensor; ``Module.to("cuda")`` -> CPU; ``torch.load(map_location="cuda")`` -> CPU;
  ``safetensors.safe_open(device="cuda")`` -> CPU; ``torch.cuda.Event`` / ``torch.cuda.synchronize`` (their
  ``__call__``'s timing) -> no-ops; ``CLIPTextModel.text_model`` -> the model itself (transformers 5 removed that
  level; their CLIP skip reads ``text_encoder.text_model.final_layer_norm``).
* ``Module.to(dtype=float16/bfloat16)`` is ignored: ``build_pipeline`` casts the streaming UNet and the text encoder
  to float16 (a loading-time memory saving) before the wrapper moves the pipeline to the run's dtype, which would
  round the weights of an float32 run to float16 (the warmup UNet is not cast).
* ``live2diff.animatediff.pipeline.loader`` (their LoRA mixin, written for diffusers 0.25's ``LoraLoaderMixin``,
  absent from later diffusers) is a stub: the LCM-LoRA is fused beforehand by diffusers' own ``load_lora_weights``
  + ``fuse_lora`` (what their mixin calls, PEFT backend) into a copy of the base folder's UNet, which their loaders
  then read for both UNets.
* ``MidasDetector`` (a git submodule) is a module that returns the job's raw depth maps in order.
* the fixture's safetensors files get the ``{"format": "pt"}`` metadata of published files (in a copy), which
  ``from_pretrained`` requires.
* ``torch.randn`` / ``torch.randn_like`` return the job's noise in the order their code draws it (each draw's shape
  is checked), so both sides see the same noise.

    python benchmarks/reference/_live2diff_oracle.py CHECKOUT JOB.pt OUT.pt
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import types
from pathlib import Path

import torch
from torch import nn

_real_randn, _real_randn_like = torch.randn, torch.randn_like
_real_module_to, _real_load = nn.Module.to, torch.load
HALF = (torch.float16, torch.bfloat16)


def _cpu(device):
    if device is None:
        return None
    d = torch.device(device) if isinstance(device, (str, torch.device)) else device
    return torch.device("cpu") if isinstance(d, torch.device) and d.type == "cuda" else device


def install_patches() -> None:
    torch.Tensor.cuda = lambda self, *a, **k: self

    def module_to(self, *args, **kwargs):
        args = list(args)
        for i, a in enumerate(args):
            if isinstance(a, (str, torch.device)):
                args[i] = _cpu(a)
            elif isinstance(a, torch.dtype) and a in HALF:
                args[i] = None
        args = [a for a in args if a is not None]
        if "device" in kwargs:
            kwargs["device"] = _cpu(kwargs["device"])
        if kwargs.get("dtype") in HALF:
            kwargs.pop("dtype")
        return _real_module_to(self, *args, **kwargs)

    nn.Module.to = module_to

    def load(*args, **kwargs):
        kwargs["map_location"] = "cpu"
        return _real_load(*args, **kwargs)

    torch.load = load

    import safetensors

    real_safe_open = safetensors.safe_open

    def safe_open(filename, framework, device="cpu", **kwargs):
        device = "cpu" if "cuda" in str(device) else device
        return real_safe_open(filename, framework=framework, device=device, **kwargs)

    safetensors.safe_open = safe_open

    class Event:
        def __init__(self, *a, **k):
            pass

        def record(self, *a, **k):
            pass

        def elapsed_time(self, other):
            return 0.0

    torch.cuda.Event = Event
    torch.cuda.synchronize = lambda *a, **k: None

    from transformers import CLIPTextModel

    if not hasattr(
        CLIPTextModel, "text_model"
    ):  # transformers 5 flattened CLIPTextModel.text_model into itself
        CLIPTextModel.text_model = property(lambda self: self)


class NoiseFeed:
    """``torch.randn`` / ``torch.randn_like`` answering from a script of ``(kind, shape, tensor | None)``: the
    tensors the job injects, in the order the authors' code draws them (``None``: a draw the run does not use)."""

    def __init__(self):
        self.script: list[tuple[str, tuple, torch.Tensor | None]] = []
        self.used = 0

    def push(self, kind: str, tensor: torch.Tensor | None, shape: tuple | None = None) -> None:
        self.script.append((kind, tuple(tensor.shape) if tensor is not None else tuple(shape), tensor))

    def _next(self, kind: str, shape: tuple, like: torch.Tensor | None, kwargs: dict):
        if self.used >= len(self.script):
            raise RuntimeError(f"unscripted {kind}{shape}: the authors' code drew more noise than expected")
        want_kind, want_shape, t = self.script[self.used]
        if (want_kind, want_shape) != (kind, tuple(shape)):
            raise RuntimeError(f"draw {self.used}: {kind}{tuple(shape)}, expected {want_kind}{want_shape}")
        self.used += 1
        if t is None:
            return (_real_randn_like(like) if like is not None else _real_randn(*shape)).to(torch.float32)
        dtype = kwargs.get("dtype") or (like.dtype if like is not None else torch.float32)
        return t.clone().to(dtype)

    def install(self) -> None:
        def randn(*size, generator=None, **kwargs):
            shape = (
                tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)) else size
            )
            return self._next("randn", shape, None, kwargs)

        def randn_like(t, **kwargs):
            return self._next("randn_like", tuple(t.shape), t, kwargs)

        torch.randn, torch.randn_like = randn, randn_like

    @staticmethod
    def uninstall() -> None:
        torch.randn, torch.randn_like = _real_randn, _real_randn_like


class InjectedMidas(nn.Module):
    """Stands in for ``MidasDetector``: the next raw depth maps of the queue, one per image asked for."""

    def __init__(self, *args, **kwargs):
        super().__init__()
        self.register_buffer("anchor", torch.zeros(1))
        self.maps: torch.Tensor | None = None
        self.next = 0

    @property
    def dtype(self):
        return self.anchor.dtype

    @property
    def device(self):
        return self.anchor.device

    def forward(self, images):
        b = images.shape[0]
        out = self.maps[self.next : self.next + b]
        if out.shape[0] != b:
            raise RuntimeError("depth queue exhausted")
        self.next += b
        return out.to(images.dtype)


def with_format_metadata(folder: Path, out: Path) -> Path:
    """A copy of a diffusers folder whose safetensors files carry the ``{"format": "pt"}`` metadata of published
    files (diffusers' and transformers' ``from_pretrained`` refuse files without it; the fixture writes none)."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(folder, out)
    for path in out.rglob("*.safetensors"):
        save_file(load_file(str(path)), str(path), metadata={"format": "pt"})
    return out


def fuse_lcm_lora(base: Path, lora_file: Path, out: Path) -> Path:
    """A copy of the SD1.5 folder whose UNet has the LCM-LoRA fused by diffusers (``load_lora_weights`` +
    ``fuse_lora(lora_scale=1.0)``, PEFT backend), as their ``StreamAnimateDiffusionDepth.load_lora`` / ``fuse_lora``
    do with the LCM-LoRA; the text encoder is untouched (the LCM-LoRA has no text-encoder weights)."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.utils import USE_PEFT_BACKEND

    if not USE_PEFT_BACKEND:
        raise RuntimeError(
            "diffusers' LoRA loader needs `peft` (and `accelerate`) importable: e.g. "
            "`pip install --no-deps --target /work/refs/pydeps peft accelerate` and "
            "REFERENCE_PYTHONPATH=/work/refs/pydeps"
        )
    from transformers import CLIPTextModel, CLIPTokenizer

    unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet")
    pipe = StableDiffusionPipeline(
        vae=None, text_encoder=CLIPTextModel.from_pretrained(base, subfolder="text_encoder"),
        tokenizer=CLIPTokenizer.from_pretrained(base, subfolder="tokenizer"), unet=unet, scheduler=None,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    pipe.load_lora_weights(str(lora_file.parent), weight_name=lora_file.name)
    pipe.fuse_lora(lora_scale=1.0)
    pipe.unload_lora_weights()
    after = unet.state_dict()
    if set(after) != set(before):
        raise RuntimeError("the fused UNet's keys changed: LoRA layers were not unloaded")
    changed = sum(not torch.equal(before[k], after[k]) for k in before)
    if not changed:
        raise RuntimeError("fusing the LCM-LoRA changed no weight")
    from safetensors.torch import save_file

    shutil.copytree(
        base, out
    )  # the base's own config.json stays (save_pretrained would add diffusers' defaults)
    weights = out / "unet" / "diffusion_pytorch_model.safetensors"
    save_file({k: v.contiguous() for k, v in after.items()}, str(weights), metadata={"format": "pt"})
    print(f"LCM-LoRA fused by diffusers into {changed} UNet tensors", file=sys.stderr)
    return out


def stub_modules() -> None:
    """Their LoRA mixin (pre-fused, see :func:`fuse_lcm_lora`) and their MiDaS detector (the injected maps)."""
    loader = types.ModuleType("live2diff.animatediff.pipeline.loader")

    class LoraLoaderWithWarmup:  # LoRA fused beforehand
        pass

    loader.LoraLoaderWithWarmup = LoraLoaderWithWarmup
    sys.modules[loader.__name__] = loader
    import live2diff.animatediff.models.depth_utils as depth_utils  # their package root imports the pipeline
    import live2diff.animatediff.pipeline.pipeline_animatediff_depth as pipeline_module

    InjectedMidas.__module__ = depth_utils.__name__
    depth_utils.MidasDetector = pipeline_module.MidasDetector = InjectedMidas


def write_config(checkout: Path, base: Path, motion: Path, folder: Path) -> Path:
    """Their ``configs/base_config.yaml`` with the fixture paths, as the style configs extend it (clip_skip 2)."""
    text = (
        f"base: {checkout / 'configs' / 'base_config.yaml'}\n"
        f"pretrained_model_path: {base}\n"
        f"motion_module_path: {motion}\n"
        "depth_model_path: injected\n"
        "third_party_dict:\n  clip_skip: 2\n"
    )
    path = folder / "fixture_config.yaml"
    path.write_text(text)
    return path


def run(checkout: Path, job: dict) -> dict:
    sys.path.insert(0, str(checkout))
    install_patches()
    tmp = Path(tempfile.mkdtemp(prefix="live2diff-oracle-"))
    files = {k: Path(v) for k, v in job["files"].items()}
    base = with_format_metadata(files["base"], tmp / "sd15")
    taesd = with_format_metadata(files["taesd"], tmp / "taesd")
    base = fuse_lcm_lora(base, files["lcm_lora"], tmp / "sd15-lcm-fused")
    stub_modules()
    from diffusers import AutoencoderTiny
    from einops import rearrange
    from live2diff.animatediff.pipeline import AnimationDepthPipeline
    from live2diff.pipeline_stream_animation_depth import StreamAnimateDiffusionDepth
    from live2diff.utils.config import load_config

    config = write_config(checkout, base, files["motion"], tmp)
    cfg = load_config(str(config))
    s = job["settings"]
    inp = job["inputs"]
    n_steps = len(s["t_index_list"])
    frames, depth = inp["frames"], inp["depth"]
    noise, ph_noise = inp["noise"], inp["placeholder_noise"]
    warm = s["warmup"]

    # their wrapper's _load_model, in its order (LoRA: fused above; acceleration none without torch.compile)
    pipe = AnimationDepthPipeline.build_pipeline(str(config)).to(device="cpu", dtype=torch.float32)
    stream = StreamAnimateDiffusionDepth(
        pipe=pipe, num_inference_steps=s["num_inference_steps"], t_index_list=list(s["t_index_list"]),
        torch_dtype=torch.float32, width=s["width"], height=s["height"], do_add_noise=s["do_add_noise"],
        frame_buffer_size=s["frame_buffer_size"], use_denoising_batch=s["use_denoising_batch"],
        cfg_type=s["cfg_type"], clip_skip=cfg.third_party_dict.get("clip_skip", 1),
    )  # fmt: skip
    stream.load_warmup_unet(str(config))
    stream.prepare_cache(height=s["height"], width=s["width"], denoising_steps_num=n_steps)
    stream.vae = AutoencoderTiny.from_pretrained(taesd).to(device="cpu", dtype=torch.float32)
    midas = stream.depth_detector
    midas.maps, midas.next = depth, 0

    decoded: list[tuple[torch.Tensor, torch.Tensor]] = []
    real_decode = stream.decode_image

    def decode_image(x0):
        out = real_decode(x0)
        decoded.append((x0.detach().clone(), out.detach().clone()))
        return out

    stream.decode_image = decode_image

    feed = NoiseFeed()
    h, w = s["height"] // 8, s["width"] // 8
    # prepare(): init_noise (unused with cfg none), the warmup frames' step-0 noise, their re-noising per step
    feed.push("randn", None, (n_steps, 4, warm, h, w))
    feed.push("randn", noise[:warm, 0])
    for j in range(1, n_steps):
        feed.push("randn_like", rearrange(noise[:warm, j], "f c h w -> c f h w")[None])
    n_calls = frames.shape[0] - warm
    for c in range(n_calls):
        feed.push("randn", noise[warm + c, 0][None])  # encode_image
        if n_steps > 1:  # predict_x0_batch re-noises rows 0..n-2 to their next step
            rows = []
            for i in range(n_steps - 1):
                if c - i >= 0:
                    rows.append(noise[warm + c - i, i + 1])
                else:  # the stream buffer's placeholder started at row i - c at the first call
                    rows.append(ph_noise[i - c - 1, i + 1])
            feed.push("randn_like", torch.stack(rows)[:, :, None])
    feed.install()
    try:
        stream.prepare(warmup_frames=frames[:warm], prompt=s["prompt"], guidance_scale=s["guidance_scale"])
        for c in range(n_calls):
            stream(frames[warm + c])
    finally:
        feed.uninstall()
    if feed.used != len(feed.script):
        raise RuntimeError(f"{len(feed.script) - feed.used} scripted noise draws left unused")
    if midas.next != depth.shape[0]:
        raise RuntimeError(f"{midas.next} of {depth.shape[0]} depth maps used")

    # outputs per frame: the warmup block, then call c's last row is stream frame c - (n-1) (earlier calls return
    # the placeholder rows, not frames of the video)
    (wx0, wimg), stream_out = decoded[0], decoded[1:]
    latents, images = list(wx0), list(wimg)
    for c, (x0, img) in enumerate(stream_out):
        if c - (n_steps - 1) >= 0:
            latents.append(x0[0])
            images.append(img[0])
    n = s["n_frames_compared"]
    return {
        "latents": torch.stack(latents)[:n].contiguous(),
        "frames": ((torch.stack(images)[:n] + 1) / 2).clamp(0, 1).contiguous(),  # their wrapper's denormalise
        "placeholder_frames": torch.stack([img[0] for x0, img in stream_out[: n_steps - 1]]).contiguous()
        if n_steps > 1
        else torch.zeros(0),
    }


def main(argv: list[str]) -> int:
    checkout, job_path, out_path = map(Path, argv)
    job = _real_load(job_path, weights_only=False)
    with torch.no_grad():
        out = run(checkout, job)
    torch.save(out, out_path)
    return 0


if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.exit(main(sys.argv[1:]))
