"""Live2Diff as a :class:`eval.interface.StreamMethod` (``conf/method/live2diff*.yaml``)."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor

from live2diff.components import DEFAULT_T_INDEX_LIST, build_components, with_clip_skip
from live2diff.noise_schedule import schedule_name, scheduler_with_betas
from live2diff.pipeline import Live2DiffStream
from live2diff.similar_filter import SimilarFrameSkipper


class Live2DiffMethod:
    """Builds the components once (``__init__``), then streams one video per ``prepare`` .. ``flush``.

    ``lookahead`` is ``warmup - 1``: the warmup frames are denoised jointly, so output 0 may depend on frame
    ``warmup - 1``; every later output depends only on frames up to itself. ``bidirectional_window`` is causal too
    (each output re-denoises the past window), so its lookahead is 0.

    ``similar_image_filter`` (off by default, as in the reference's demo config) is the reference pipeline's
    stochastic similarity filter, with the policy every ``*_ssf`` method shares (``live2diff/similar_filter.py``): a
    frame too similar to the last processed one is not run through the model (the KV-cache and the stream batch do
    not see it) and is emitted at once with the last emitted output, as the reference returns
    ``prev_image_result``. The filter starts after the warm-up (the reference warms up in ``prepare``).

    ``stream_buffer`` and ``depth_norm`` default to the authors' code (:class:`~live2diff.pipeline.Live2DiffStream`:
    placeholder rows of the zero-initialised stream buffer, the warmup block's depth normalised jointly);
    :data:`reference_settings` lists them, and the report names a method that departs from them.
    """

    #: the settings with which this method computes what the authors' code computes (open-mmlab/Live2Diff):
    #: a run that sets another value is named in the report's notes (eval/method_notes.py)
    reference_settings = {"stream_buffer": "reference", "depth_norm": "per_call"}

    def __init__(
        self,
        model: Any = "tiny",
        device: str = "cpu",
        dtype: str = "float32",
        t_index_list: list[int] | tuple[int, ...] = DEFAULT_T_INDEX_LIST,
        warmup: int = 8,
        window: int = 16,
        attention: str = "unidirectional",
        depth: bool | str = True,
        stream_batch: bool = True,
        threads: int | None = None,
        compile: bool = False,
        cuda_graphs: bool = True,
        channels_last: bool = False,
        similar_image_filter: bool = False,
        similar_image_filter_threshold: float = 0.98,
        similar_image_filter_max_skip_frame: int = 10,
        noise_schedule: str | None = "linear",
        clip_skip: int | None = None,
        stream_buffer: str = "reference",
        depth_norm: str = "per_call",
    ):
        if threads:
            torch.set_num_threads(int(threads))
        if isinstance(depth, str):
            depth = depth.lower() not in ("none", "off", "false", "no")
        self.device = torch.device(device)
        # clip_skip None: the model config's (2, as the reference's configs); a method-level value overrides it
        comps = with_clip_skip(build_components(model, self.device, dtype), clip_skip)
        # the reference's LCM runs on its DDIM kwargs' linear betas (live2diff/noise_schedule.py)
        self.components = dataclasses.replace(
            comps, scheduler=scheduler_with_betas(comps.scheduler, noise_schedule)
        )
        self.noise_schedule = schedule_name(self.components.scheduler)
        self.stream = Live2DiffStream(
            self.components,
            t_index_list=list(t_index_list),
            warmup=warmup,
            window=window,
            attention=attention,
            depth=bool(depth),
            stream_batch=stream_batch,
            stream_buffer=stream_buffer,
            depth_norm=depth_norm,
        )
        # opt-in (hardware.channels_last): NHWC convolutions, often faster with fp16 on GPUs
        if channels_last:
            for name in ("unet", "vae", "depth_mapper"):
                mod = getattr(self.components, name, None)
                if mod is not None:
                    mod.to(memory_format=torch.channels_last)
        if compile:  # opt-in (hardware.compile): see live2diff.pipeline.Live2DiffStream.compile
            self.stream.compile(cuda_graphs=cuda_graphs)
        self.lookahead = self.stream.lookahead
        # pushes until the streaming path runs with a full stream batch (or, re-run windows, a full window); the
        # runner's untimed warm-up covers them (eval.interface)
        s = self.stream
        full_batch = s.n_steps if s.stream_batch else 1
        self.steady_state_frames = s.window if attention == "bidirectional_window" else s.warmup + full_batch
        self.filter = (
            SimilarFrameSkipper(similar_image_filter_threshold, similar_image_filter_max_skip_frame)
            if similar_image_filter
            else None
        )
        self.seed = 0
        self._reset_filter()

    @property
    def skipped(self) -> list[int] | None:
        """Indices the similarity filter skipped in this stream (None without a filter: nothing to report)."""
        return self.filter.skipped if self.filter is not None else None

    def _reset_filter(self) -> None:
        if self.filter is not None:
            self.filter.reset()

    @property
    def info(self) -> dict[str, Any]:
        """How this method runs, recorded per unit for the report."""
        return {
            "noise_schedule": self.noise_schedule,
            "clip_skip": self.components.clip_skip,
            "offline_reference": False,
            "stream_buffer": self.stream.stream_buffer,
            "depth_norm": self.stream.depth_norm,
        }

    def prepare(self, prompt: str, *, height: int, width: int, seed: int) -> None:
        self.seed = int(seed)
        self._reset_filter()
        self.stream.prepare(prompt, height=height, width=width, seed=seed)

    def push(self, index: int, frame: Tensor) -> list[tuple[int, Tensor]]:
        if self.filter is not None:
            shown = self.filter.check(index, frame, self.seed)
            if shown is not None:
                return [(index, shown)]  # skipped: the last emitted output, at once
        out = self.stream.push(index, frame)
        if self.filter is not None:
            self.filter.emitted(out)
        return out

    def flush(self) -> list[tuple[int, Tensor]]:
        return self.stream.flush()

    def reset(self) -> None:
        self._reset_filter()
        self.stream.reset()
