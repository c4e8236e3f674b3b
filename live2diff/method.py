"""Live2Diff as a :class:`eval.interface.StreamMethod` (``conf/method/live2diff*.yaml``)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from live2diff.models import build_components
from live2diff.pipeline import Live2DiffStream


class Live2DiffMethod:
    """Builds the components once (``__init__``), then streams one video per ``prepare`` .. ``flush``.

    ``lookahead`` is ``warmup - 1``: the warmup frames are denoised jointly, so output 0 may depend on frame
    ``warmup - 1``; every later output depends only on frames up to itself. ``bidirectional_window`` is causal too
    (each output re-denoises the past window), so its lookahead is 0.
    """

    def __init__(
        self,
        model: Any = "tiny",
        device: str = "cpu",
        dtype: str = "float32",
        t_index_list: list[int] | tuple[int, ...] = (30, 36, 42),
        warmup: int = 8,
        window: int = 16,
        attention: str = "unidirectional",
        depth: bool | str = True,
        stream_batch: bool = True,
        threads: int | None = None,
        compile: bool = False,
    ):
        if threads:
            torch.set_num_threads(int(threads))
        if isinstance(depth, str):
            depth = depth.lower() not in ("none", "off", "false", "no")
        self.device = torch.device(device)
        self.components = build_components(model, self.device, dtype)
        self.stream = Live2DiffStream(
            self.components,
            t_index_list=list(t_index_list),
            warmup=warmup,
            window=window,
            attention=attention,
            depth=bool(depth),
            stream_batch=stream_batch,
        )
        if compile:
            self.components.unet = torch.compile(self.components.unet)  # type: ignore[assignment]
        self.lookahead = self.stream.lookahead

    def prepare(self, prompt: str, *, height: int, width: int, seed: int) -> None:
        self.stream.prepare(prompt, height=height, width=width, seed=seed)

    def push(self, index: int, frame: Tensor) -> list[tuple[int, Tensor]]:
        return self.stream.push(index, frame)

    def flush(self) -> list[tuple[int, Tensor]]:
        return self.stream.flush()

    def reset(self) -> None:
        self.stream.reset()
