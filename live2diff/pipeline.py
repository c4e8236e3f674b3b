"""Live2DiffStream: frame in -> VAE encode (+ depth) -> stream-batched LCM denoising with cached temporal attention
-> VAE decode -> frame out.

Life of a video (``attention="unidirectional"``, the model as published):

1. **Warmup.** The first ``warmup`` frames are buffered, then denoised *together* through every step of
   ``t_index_list`` with full temporal attention among themselves; at each step their keys/values fill that step's
   warmup slots of every temporal-attention cache. All warmup frames are emitted at once.
2. **Streaming.** Each new frame is encoded, noised to the first timestep and joins the *stream batch*: one UNet
   call holds the newest frame at step 0, the previous frame at step 1, ... (StreamDiffusion); each row attends to its
   own step's cache (warmup sinks + ring of recent frames, itself included) and appends its keys/values there.
   After the call the finished row (last step) is decoded and emitted; the others are re-noised with fresh noise to
   their next timestep (LCM multistep). Output therefore lags input by ``n_steps - 1`` frames; ``flush`` drains.

Other modes: ``warmup=0`` (no sinks: a ring of ``window`` recent frames); ``stream_batch=False`` (each frame runs
all its steps at once, lag 0 — the same numbers, one UNet call per step); ``attention="bidirectional_window"``
(no cache: every frame re-denoises the last ``window`` frames jointly with full attention and keeps the newest —
the naive alternative, ``window`` times the work).

Noise: every frame draws its ``n_steps`` noise tensors from one seeded generator *on the compute device* when it is
pushed, so a run is a pure function of (weights, frames, prompt, seed) on a given device, whatever the batching.

Device work per frame (GPU path): the schedule's constants and the stream call's step indices live on the device
(no host-to-device copy per call besides the frame itself), the temporal attention reads its cache through SDPA
(:mod:`live2diff.attention`), and outputs stay on the device until the driver copies each emitted frame once.
:meth:`Live2DiffStream.compile` is the opt-in ``torch.compile`` of the steady stream call (``hardware.compile``).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from live2diff.attention import StreamAttentionController, install_stream_attention
from live2diff.components import (
    DEFAULT_T_INDEX_LIST,
    Components,
    depth_latents,
    depth_latents_from_raw,
    encode_prompt,
    make_lcm_schedule,
    vae_decode,
    vae_encode,
)

log = logging.getLogger(__name__)

ATTENTION_MODES = ("unidirectional", "bidirectional_window")
#: ``reference``: the authors' stream buffer (placeholder rows from the first streaming call, their slot
#: bookkeeping); ``clean``: only rows that hold frames (see :class:`Live2DiffStream`)
STREAM_BUFFERS = ("reference", "clean")
#: ``per_call``: min-max over each depth call's batch, as the reference (the warmup block jointly, then one frame
#: per call); ``per_frame``: every frame on its own
DEPTH_NORMS = ("per_call", "per_frame")


@dataclass
class _InFlight:
    index: int
    x: Tensor  # [1, 4, h, w] noisy latent at `step`
    noise: Tensor  # [n_steps, 4, h, w]
    depth_feat: Tensor | None  # mapping-network output [1, C0, h, w]
    step: int = 0
    placeholder: bool = False  # a row of the reference's zero-initialised stream buffer (never emitted)


@dataclass
class _Buffered:
    index: int
    z: Tensor  # clean latent [1, 4, h, w]
    noise: Tensor
    depth_feat: Tensor | None = None
    extra: dict = field(default_factory=dict)
    depth_raw: Tensor | None = (
        None  # depth_norm per_call: the raw map, normalised with the rest of the warmup
    )


class _DepthInjector:
    """Adds the current call's depth features to ``unet.conv_in``'s output (a forward hook, not a fork)."""

    def __init__(self, unet):
        self.feat: Tensor | None = None
        self.handle = unet.conv_in.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output):
        if self.feat is None:
            return output
        if self.feat.shape != output.shape:
            raise RuntimeError(
                f"depth features {tuple(self.feat.shape)} do not match conv_in output {tuple(output.shape)}"
            )
        return output + self.feat


class Live2DiffStream:
    """The streaming pipeline over :class:`~live2diff.components.Components` (which it patches: it owns the UNet).

    ``stream_buffer`` (unidirectional attention, stream batch):

    * ``reference`` (default): the authors' code. Its stream batch always holds ``n_steps`` rows: at the first
      streaming call the rows of steps ``1..n-1`` come from its zero-initialised buffer — zero latents with zero
      depth latents — and these placeholders are denoised, re-noised and carried along like frames until they
      leave the last step (their outputs are never emitted). They also write keys and values into their step's
      cache, under the reference's own slot bookkeeping (:class:`~live2diff.kv_cache.ReferenceSlotIndex`): with 3+
      steps the first frames at steps >= 2 attend those entries until the ring wraps.
    * ``clean``: only rows that hold frames run; each step's ring holds frames only.

    ``depth_norm``: ``per_call`` (default, the reference) normalises the warmup block's depth jointly (its one
    depth call), each later frame on its own; ``per_frame`` every frame on its own."""

    def __init__(
        self,
        comps: Components,
        t_index_list: list[int] | tuple[int, ...] = DEFAULT_T_INDEX_LIST,
        warmup: int = 8,
        window: int = 16,
        attention: str = "unidirectional",
        depth: bool = True,
        stream_batch: bool = True,
        stream_buffer: str = "reference",
        depth_norm: str = "per_call",
    ):
        if attention not in ATTENTION_MODES:
            raise ValueError(f"attention must be one of {ATTENTION_MODES}, got '{attention}'")
        if stream_buffer not in STREAM_BUFFERS:
            raise ValueError(f"stream_buffer must be one of {STREAM_BUFFERS}, got '{stream_buffer}'")
        if depth_norm not in DEPTH_NORMS:
            raise ValueError(f"depth_norm must be one of {DEPTH_NORMS}, got '{depth_norm}'")
        if stream_buffer == "reference" and attention == "unidirectional":
            if not stream_batch:
                raise ValueError(
                    "stream_buffer=reference is the reference's stream batch (placeholder rows): it needs "
                    "stream_batch=true; set stream_buffer=clean for stream_batch=false"
                )
            if not 0 < int(warmup) < int(window) - 1:
                raise ValueError(
                    f"stream_buffer=reference needs 0 < warmup < window - 1 (the reference's bookkeeping), got "
                    f"warmup={warmup}, window={window}; set stream_buffer=clean"
                )
        self.comps = comps
        schedule = make_lcm_schedule(comps.scheduler, list(t_index_list))
        self.schedule = dataclasses.replace(  # constants on the device once, not copied there per call
            schedule,
            **{
                f.name: getattr(schedule, f.name).to(comps.device)
                for f in dataclasses.fields(schedule)
                if isinstance(getattr(schedule, f.name), Tensor)
            },
        )
        self._step_index: dict[tuple[int, ...], Tensor] = {}
        self.n_steps = self.schedule.n_steps
        self.warmup = int(warmup) if attention == "unidirectional" else 0
        self.window = int(window)
        self.attention = attention
        self.use_depth = bool(depth) and comps.depth is not None and comps.depth_mapper is not None
        self.stream_batch = bool(stream_batch)
        # bidirectional_window has no stream batch, hence no buffer: it runs as `clean`
        self.stream_buffer = stream_buffer if attention == "unidirectional" else "clean"
        self.depth_norm = depth_norm
        self.ctl: StreamAttentionController = install_stream_attention(
            comps.unet,
            self.n_steps,
            window=self.window,
            warmup=self.warmup,
            bookkeeping="reference" if self.stream_buffer == "reference" else "clean",
        )
        self.depth_injector = _DepthInjector(comps.unet)
        self.compiled = None  # the compiled UNet of the steady stream call (:meth:`compile`)
        self.prompt_embeds: Tensor | None = None
        self.reset()

    # ------------------------------------------------------------------------------------------------ set-up
    @property
    def lookahead(self) -> int:
        """Future frames an output may depend on: the warmup frames are denoised jointly."""
        return max(self.warmup - 1, 0) if self.attention == "unidirectional" else 0

    def prepare(self, prompt: str, *, height: int, width: int, seed: int) -> None:
        self.reset()
        self.prompt_embeds = encode_prompt(self.comps, prompt)
        self.height, self.width = int(height), int(width)
        f = self.comps.vae_scale_factor
        self.proc_h, self.proc_w = max(f, round(height / f) * f), max(f, round(width / f) * f)
        self.latent_hw = (self.proc_h // f, self.proc_w // f)
        self.generator = torch.Generator(self.comps.device).manual_seed(int(seed))
        # the placeholder rows' noise has its own generator: the frames draw the same noise in both buffer modes
        self.placeholder_generator = torch.Generator(self.comps.device).manual_seed(
            (int(seed) * 1_000_003 + 0x5EED) % 2**63
        )

    def reset(self) -> None:
        self.ctl.reset()
        self.depth_injector.feat = None
        self.warmup_buffer: list[_Buffered] = []
        self.in_flight: list[_InFlight] = []
        self.window_buffer: collections.deque[_Buffered] = collections.deque(maxlen=self.window)
        self.warmed_up = self.warmup == 0
        self.buffer_filled = self.stream_buffer != "reference" or self.n_steps == 1
        self.generator = None
        self.placeholder_generator = None

    # ------------------------------------------------------------------------------------------------ noise
    def _frame_noise(self, like: Tensor) -> Tensor:
        """A pushed frame's ``n_steps`` noise tensors (step-0 noise, then the re-noising of steps 1..n-1)."""
        shape = (self.n_steps, *like.shape[1:])
        return torch.randn(shape, generator=self.generator, device=self.generator.device).to(like.dtype)

    def _placeholder_noise(self, like: Tensor, step: int) -> Tensor:
        """The re-noising noise of the placeholder row that starts at ``step`` (``stream_buffer: reference``)."""
        g = self.placeholder_generator
        return torch.randn((self.n_steps, *like.shape[1:]), generator=g, device=g.device).to(like.dtype)

    # ------------------------------------------------------------------------------------------------ stream API
    @torch.no_grad()
    def push(self, index: int, frame: Tensor) -> list[tuple[int, Tensor]]:
        if self.prompt_embeds is None or self.generator is None:
            raise RuntimeError("call prepare(prompt, height=, width=, seed=) before push()")
        joint_depth = not self.warmed_up and self.depth_norm == "per_call"
        z, depth_feat, depth_raw = self._encode(frame, raw_depth=joint_depth)
        noise = self._frame_noise(z)
        if self.attention == "bidirectional_window":
            self.window_buffer.append(_Buffered(index, z, noise, depth_feat))
            return self._run_window()
        if not self.warmed_up:
            self.warmup_buffer.append(_Buffered(index, z, noise, depth_feat, depth_raw=depth_raw))
            if len(self.warmup_buffer) == self.warmup:
                return self._run_warmup()
            return []
        x = self.schedule.add_noise(z, noise[0:1], 0)
        self.in_flight.insert(
            0, _InFlight(index, x, noise, depth_feat)
        )  # newest first: rows at steps 0, 1, ...
        if not self.buffer_filled:
            self._add_placeholders(z)
        if self.stream_batch:
            return self._stream_call()
        out: list[tuple[int, Tensor]] = []
        while self.in_flight:  # sequential: finish this frame's steps now, one UNet call per step
            out += self._stream_call()
        return out

    @torch.no_grad()
    def flush(self) -> list[tuple[int, Tensor]]:
        out: list[tuple[int, Tensor]] = []
        if self.warmup_buffer:  # stream shorter than the warmup: denoise what there is, jointly
            out += self._run_warmup()
        while self.in_flight:
            out += self._stream_call()
        return out

    # ------------------------------------------------------------------------------------------------ stages
    def _encode(self, frame: Tensor, raw_depth: bool = False) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """``(latent, depth features, raw depth)``: with ``raw_depth`` (a warmup frame normalised with its block)
        only the raw map, the features come at :meth:`_run_warmup`."""
        x = frame.to(self.comps.device, self.comps.dtype)[None]
        if x.shape[-2:] != (self.proc_h, self.proc_w):
            x = F.interpolate(x, (self.proc_h, self.proc_w), mode="bilinear", align_corners=False)
        z = vae_encode(self.comps, x)
        feat = raw = None
        if self.use_depth and raw_depth:
            raw = self.comps.depth.raw(x)
        elif self.use_depth:
            feat = self.comps.depth_mapper(depth_latents(self.comps, x))
        return z, feat, raw

    def _add_placeholders(self, like: Tensor) -> None:
        """The reference's stream buffer at its first streaming call: rows at steps 1..n-1 holding zero latents
        (and zero depth latents), carried through the remaining steps like frames and never emitted."""
        feat = None
        if self.use_depth:
            feat = self.comps.depth_mapper(torch.zeros_like(like))
        for step in range(1, self.n_steps):
            noise = self._placeholder_noise(like, step)
            self.in_flight.append(_InFlight(-1, torch.zeros_like(like), noise, feat, step, placeholder=True))
        self.buffer_filled = True

    def _decode(self, latents: Tensor) -> list[Tensor]:
        img = vae_decode(self.comps, latents)
        if img.shape[-2:] != (self.height, self.width):
            img = F.interpolate(img, (self.height, self.width), mode="bilinear", align_corners=False)
        return list(img)  # left on the device: the driver copies every method's emissions to the CPU

    def _unet(self, x: Tensor, timesteps: Tensor, depth_feat: Tensor | None, steady: bool = False) -> Tensor:
        """``x``: ``[B, 4, F, h, w]``; ``depth_feat``: ``[B*F, C0, h, w]`` in (b, f) order, or None. ``steady``:
        a full stream batch, run by the compiled UNet when there is one."""
        b, _, f = x.shape[:3]
        emb = self.prompt_embeds.expand(b * f, -1, -1)
        unet = self.compiled if steady and self.compiled is not None and self.ctl.ready() else self.comps.unet
        self.depth_injector.feat = depth_feat
        try:
            return unet(x, timesteps.to(x.device), emb, return_dict=False)[0]
        finally:
            self.depth_injector.feat = None

    def _denoise_jointly(self, items: list[_Buffered], write_cache: bool) -> Tensor:
        """All steps over ``items`` as one clip with full temporal attention; returns clean latents ``[n, 4, h, w]``."""
        z = torch.cat([it.z for it in items])  # [n, 4, h, w]
        noise = torch.stack([it.noise for it in items])  # [n, k, 4, h, w]
        feats = torch.cat([it.depth_feat for it in items]) if self.use_depth else None
        x = self.schedule.add_noise(z, noise[:, 0], 0)
        n = len(items)
        for j in range(self.n_steps):
            with self.ctl.full(write_step=j if write_cache else None, n_frames=n):
                eps = self._unet(x.transpose(0, 1)[None], self.schedule.timesteps[j : j + 1], feats)
            x0 = self.schedule.denoise(x, eps[0].transpose(0, 1), j)
            if j + 1 < self.n_steps:
                x = self.schedule.add_noise(x0, noise[:, j + 1], j + 1)
        return x0

    def _run_warmup(self) -> list[tuple[int, Tensor]]:
        items, self.warmup_buffer = self.warmup_buffer, []
        if (
            self.use_depth and items[0].depth_raw is not None
        ):  # depth_norm per_call: one min-max for the block
            raw = torch.cat([it.depth_raw for it in items])
            feats = self.comps.depth_mapper(
                depth_latents_from_raw(self.comps, raw, (self.proc_h, self.proc_w), joint=True)
            )
            for it, f in zip(items, feats.split(1)):
                it.depth_feat = f
        x0 = self._denoise_jointly(items, write_cache=True)
        self.warmed_up = True
        return list(zip([it.index for it in items], self._decode(x0)))

    def _run_window(self) -> list[tuple[int, Tensor]]:
        items = list(self.window_buffer)
        x0 = self._denoise_jointly(items, write_cache=False)
        return [(items[-1].index, self._decode(x0[-1:])[0])]

    def _stream_call(self) -> list[tuple[int, Tensor]]:
        """One UNet call over every in-flight frame (each at its own step); emits the frame that finishes."""
        rows = self.in_flight
        if not self.stream_batch:
            rows = rows[:1]
        steps = [r.step for r in rows]
        x = torch.cat([r.x for r in rows])  # [nb, 4, h, w]
        feats = torch.cat([r.depth_feat for r in rows]) if self.use_depth else None
        step_t = self._step_index.get(tuple(steps))
        if step_t is None:
            step_t = self._step_index[tuple(steps)] = torch.tensor(steps, device=self.comps.device)
        steady = self.stream_batch and len(rows) == self.n_steps
        with self.ctl.stream(steps):
            eps = self._unet(x[:, :, None], self.schedule.timesteps[step_t], feats, steady)[:, :, 0]
        x0 = self.schedule.denoise(x, eps, step_t)
        out: list[tuple[int, Tensor]] = []
        keep: list[_InFlight] = []
        for i, r in enumerate(rows):
            if r.step + 1 == self.n_steps:
                if not r.placeholder:
                    out.append((r.index, self._decode(x0[i : i + 1])[0]))
            else:
                r.step += 1
                r.x = self.schedule.add_noise(x0[i : i + 1], r.noise[r.step : r.step + 1], r.step)
                keep.append(r)
        self.in_flight = keep + self.in_flight[len(rows) :]
        return out

    def cache_bytes(self) -> int:
        return self.ctl.cache_bytes()

    def compile(self, cuda_graphs: bool = True, fullgraph: bool = True, backend: str = "inductor", **kw) -> None:
        """``torch.compile`` the steady stream call (``hardware.compile=true``): one graph for the UNet call of a
        full stream batch, every temporal attention inside it (capture mode: the ring's state is in tensors written
        before the call, :meth:`StreamAttentionController.capture`), traced once and reused for every later call.
        The warm-up clip, the calls filling the stream batch and those draining it at ``flush`` (other shapes, a
        few calls per video) stay eager rather than each compiling a graph of its own. On CUDA with
        ``cuda_graphs`` the graph is replayed as a CUDA graph (``mode="reduce-overhead"``)."""
        if "mode" not in kw and backend == "inductor":
            kw["mode"] = "reduce-overhead" if cuda_graphs and self.comps.device.type == "cuda" else "default"
        # diffusers logs (logger.info) when the latent is not a multiple of the UNet's stride: no graph break for it
        from diffusers.models.unets import unet_motion_model

        torch._dynamo.config.ignore_logging_functions.add(unet_motion_model.logger.info)
        self.ctl.capture(True)
        self.compiled = torch.compile(self.comps.unet, fullgraph=fullgraph, backend=backend, dynamic=False, **kw)
