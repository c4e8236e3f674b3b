"""Scoring a stream: the metric registry built from ``conf/metrics`` (lazily: a run whose units are all cached never
builds a metric) and the scores, tables and pictures of one stream, read chunk by chunk from its disk-backed frames.
The runner (:mod:`eval.runner`) calls :func:`score_stream` after each stream, outside the timed path."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig

from eval import pictures, results
from eval.datasets.base import Video
from eval.framefile import FrameFile
from eval.results import FRAME_COLUMNS, VIDEO_COLUMNS
from eval.run_types import RunnerSettings
from eval.timing import StreamRecord, summarise
from eval.validate import ConfigError

log = logging.getLogger(__name__)


def build_metrics(metrics_cfg: DictConfig | dict | None) -> dict[str, Any]:
    """Instantiate the metric registry (name -> VideoMetric) from ``conf/metrics``."""
    from hydra.utils import instantiate

    out = {}
    for name, mcfg in (metrics_cfg or {}).items():
        if mcfg is None:
            continue
        out[str(name)] = instantiate(mcfg)
    return out


class MetricSetupError(ConfigError):
    """A metric could not be built (a set-up error: exit status 2, not a failed unit)."""


class LazyMetrics(Mapping):
    """The metric registry, built on first use: a run whose units are all cached never builds a metric (no CLIP,
    no depth network). Its names are known from the config without building anything."""

    def __init__(self, metrics_cfg: DictConfig | dict | None) -> None:
        self.cfg = metrics_cfg or {}
        self.names = [str(k) for k, v in self.cfg.items() if v is not None]
        self._built: dict[str, Any] | None = None

    @property
    def built(self) -> bool:
        return self._built is not None

    def build(self) -> dict[str, Any]:
        if self._built is None:
            try:
                self._built = build_metrics(self.cfg)
            except Exception as exc:  # noqa: BLE001 - any failure to build is a set-up error
                raise MetricSetupError(f"set-up failed: {type(exc).__name__}: {exc}") from exc
        return self._built

    def __getitem__(self, name: str) -> Any:
        return self.build()[name]

    def __iter__(self):
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)


def score_stream(
    metrics: Mapping[str, Any],
    settings: RunnerSettings,
    run_dir: Path,
    method_name: str,
    video: Video,
    frames: FrameFile,
    rec: StreamRecord,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, bytes]]:
    """Metrics and pictures of one stream, read chunk by chunk from the disk-backed frames and outputs (a
    pairwise metric keeps its one frame of context across chunks: the scores are those of the whole clip)."""
    outputs = rec.outputs
    n = len(outputs)
    # per frame, one pass for both checks (NaN propagates through min/max, inf shows as a bound)
    lo, hi = torch.empty(n), torch.empty(n)
    for a, chunk in outputs.chunks():
        for i, o in enumerate(chunk):
            lo[a + i], hi[a + i] = torch.aminmax(o)
    finite = torch.isfinite(lo) & torch.isfinite(hi)
    n_bad = int((~finite).sum())
    if n_bad:
        log.warning(
            "%s / %s: %d output frames contain NaN/inf; they are excluded from the metrics",
            method_name,
            video.name,
            n_bad,
        )
    # counted and reported (a flag in every table), then clamped so the metrics see valid images
    out_of_range = ((lo < 0) | (hi > 1)) & finite
    n_range = int(out_of_range.sum())
    if n_range:
        log.warning(
            "%s / %s: %d output frames have values outside [0, 1]; clamped for scoring, flagged in the report",
            method_name,
            video.name,
            n_range,
        )
    fix = (~finite) | out_of_range
    for i in torch.nonzero(fix).flatten().tolist():
        outputs[i] = torch.nan_to_num(outputs[i], nan=0.0, posinf=1.0, neginf=0.0).clamp_(0, 1)
    per_frame, per_video = summarise(rec)
    per_video["nonfinite_frames"] = float(n_bad)
    per_video["out_of_range_frames"] = float(n_range)
    per_video.update(rec.extra.get("video_metrics", {}))
    per_frame.update(rec.extra.get("frame_metrics", {}))
    for metric in metrics.values():
        metric.reset()
        if getattr(metric, "needs_emissions", False):  # warp_error lag=auto: the video a script stored
            metric.set_emissions(rec.emitting_calls())
    if metrics:
        for (_, out_chunk), (_, src_chunk) in zip(outputs.chunks(), frames.chunks(), strict=True):
            for metric in metrics.values():
                metric.update(out_chunk, src_chunk, prompt=video.prompt)
    for name, metric in metrics.items():
        scores = metric.frame_scores().numpy().astype(np.float64)
        if scores.shape[0] != n:
            raise RuntimeError(f"metric {name} returned {scores.shape[0]} scores for {n} frames")
        bad = ~finite.numpy()
        scores[bad] = np.nan
        ctx = int(getattr(metric, "context_frames", 0))
        for c in range(1, ctx + 1):  # a pairwise score depends on the previous frames too
            scores[c:][bad[:-c]] = np.nan
        per_frame[name] = scores
        valid = scores[np.isfinite(scores)]
        per_video[name] = float(valid.mean()) if valid.size else float("nan")
        metric.reset()
    fr = pd.DataFrame(
        [
            (method_name, video.name, i, metric, float(vals[i]))
            for metric, vals in per_frame.items()
            for i in range(n)
        ],
        columns=FRAME_COLUMNS,
    )
    vr = pd.DataFrame(
        [(method_name, video.name, k, float(v)) for k, v in per_video.items()], columns=VIDEO_COLUMNS
    )
    files = {}
    if settings.save_strips:
        files["strip.png"] = pictures.frame_strip_png(frames, outputs, settings.strip_frames)
    if settings.save_videos:
        pictures.write_mp4(results.output_video_path(run_dir, method_name, video.name), outputs, video.fps)
    s = settings
    files.update(
        pictures.unit_files(
            frames, outputs, video.fps, xt=s.xt_slices, row=s.xt_row, side_by_side=s.side_by_side
        )
    )
    return fr, vr, files
