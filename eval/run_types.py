"""The runner's settings (``runner.*``) and what it returns: one :class:`UnitResult` per (method, video) and the
:class:`RunSummary` of a run. A leaf module, so the runner and the scoring share them without importing each other."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf


@dataclass
class RunnerSettings:
    seed: int = 42
    warmup_frames: int = 2  # untimed frames pushed through each freshly built method before its first video
    resume: bool = True
    save_videos: bool = False
    save_strips: bool = True
    strip_frames: int = 6
    # keep each stream's outputs (float16) so that a metric-only change re-scores them instead of re-running
    keep_outputs: bool = False
    xt_slices: bool = (
        True  # <run>/xt/<video>.png: one pixel row over time, input | each method (eval/pictures.py)
    )
    xt_row: float = 0.5  # that row, as a fraction of the height
    side_by_side: bool = False  # <run>/side_by_side/<video>.mp4: input | each method
    mode: str = "offline"
    # a video that decodes fewer frames is an error row (one frame has no temporal metrics)
    min_frames: int = 2
    # decoded clips (files on disk) kept between the methods of a run (eval/clips.py): each video decoded once per run
    decode_cache_mb: float = 2048.0
    extra: dict = field(default_factory=dict)  # mode-specific settings (runner.live, ...): keyed per mode

    @classmethod
    def from_config(cls, cfg: DictConfig | dict) -> RunnerSettings:
        d = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
        known = {k: d.pop(k) for k in list(d) if k in cls.__dataclass_fields__ and k != "extra"}
        return cls(**known, extra=d)


@dataclass
class UnitResult:
    method: str
    video: str
    key: str
    status: str  # "ok" | "cached" | "rescored" (kept outputs, new metrics) | "error"
    error: str = ""
    n_frames: int = 0
    seconds: float = 0.0
    notes: str = ""  # what was not as the source declared (frames missing, 16-bit, alpha) or not done for it


@dataclass
class RunSummary:
    run_dir: Path
    units: list[UnitResult]
    frames: pd.DataFrame
    videos: pd.DataFrame

    @property
    def failed(self) -> list[UnitResult]:
        return [u for u in self.units if u.status == "error"]

    @property
    def computed(self) -> list[UnitResult]:
        return [u for u in self.units if u.status == "ok"]
