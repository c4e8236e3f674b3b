"""Drives every (method, video) unit: stream it, time it, score it, store it; then tables and the report.

The runner knows no concrete method: methods are Hydra configs instantiated on first need (a fully resumed run
never builds a model). Quality metrics run after each stream, outside the timed path. A unit that fails (a corrupt
video, a method error, a contract violation) becomes an error row with its reason and the run goes on.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from eval import pictures, results
from eval.clips import DecodedClips, clip_key
from eval.datasets.base import Video, VideoReadError, shown
from eval.framefile import FrameFile
from eval.interface import StreamMethod, method_device
from eval.keys import metrics_identity, stream_identity
from eval.results import FRAME_COLUMNS, UNIT_COLUMNS, VIDEO_COLUMNS
from eval.run_types import RunnerSettings, RunSummary, UnitResult
from eval.scoring import LazyMetrics, MetricSetupError, score_stream
from eval.store import DamagedError, UnitStore, as_disk_full, content_key, disk_full, fault_point
from eval.timing import MemoryProbe, StreamRecord, run_stream, warm_up

log = logging.getLogger(__name__)


class Runner:
    def __init__(
        self,
        methods: dict[str, DictConfig | dict],
        videos: list[Video],
        metrics: dict[str, Any],
        metrics_cfg: Any,
        store: UnitStore,
        run_dir: Path,
        settings: RunnerSettings,
        context: dict | None = None,
        progress: bool = True,
    ) -> None:
        self.method_cfgs = {str(k): v for k, v in methods.items()}
        self.videos = videos
        self.metrics = metrics
        self.metrics_cfg = (
            OmegaConf.to_container(metrics_cfg, resolve=True)
            if isinstance(metrics_cfg, DictConfig)
            else metrics_cfg
        )
        self.store = store
        self.run_dir = Path(run_dir)
        self.settings = settings
        self.context = context or {}
        self.progress = progress
        self._built: dict[str, StreamMethod] = {}
        self._identity: dict[str, dict] = {}
        self.clips: DecodedClips | None = None  # made by run(): it knows every unit of the run
        self._descriptors: dict[str, dict] | None = None  # the quality metrics' descriptors, once built
        self._stored_descriptors: dict[str, dict] = {}  # ... as cached units recorded them
        self._damaged: dict[str, str] = {}  # unit key -> why its stored files could not be served

    # -- keys ---------------------------------------------------------------------------------------------------
    def stream_key(self, method_name: str, video: Video) -> str:
        """Everything that determines a method's outputs and timings on a video (not the metrics)."""
        s = self.settings
        return content_key(
            {
                **self._method_identity(method_name),
                "video": {"name": video.name, "content": video.fingerprint, "prompt": video.prompt},
                "seed": s.seed,
                "mode": s.mode,
                "mode_settings": s.extra.get(s.mode, {}),
                "context": self.context,
            }
        )

    def unit_key(self, method_name: str, video: Video) -> str:
        return content_key(
            {
                "stream": self.stream_key(method_name, video),
                **self._metrics_identity(),
                "keep_outputs": self.settings.keep_outputs,  # kept outputs are scored at float16
            }
        )

    def _method_identity(self, method_name: str) -> dict:
        """A method's config, the hashes of the weights it names and the version of the code it runs."""
        if method_name not in self._identity:
            mcfg = self.method_cfgs[method_name]
            mcfg = OmegaConf.to_container(mcfg, resolve=True) if isinstance(mcfg, DictConfig) else mcfg
            self._identity[method_name] = stream_identity(mcfg)
        return self._identity[method_name]

    def _metrics_identity(self) -> dict:
        if "__metrics__" not in self._identity:
            self._identity["__metrics__"] = metrics_identity(self.metrics_cfg)
        return self._identity["__metrics__"]

    # -- the run ------------------------------------------------------------------------------------------------
    def run(self) -> RunSummary:
        from tqdm.auto import tqdm

        units: list[UnitResult] = []
        todo = [(m, v) for m in self.method_cfgs for v in self.videos]
        self.clips = DecodedClips(self.settings.decode_cache_mb, Counter(clip_key(v) for _, v in todo))
        bar = tqdm(todo, desc="units", unit="unit", disable=not self.progress, dynamic_ncols=True)
        stopped: BaseException | None = (
            None  # what ended the loop early: raised again once the tables are written
        )
        try:
            for k, (method_name, video) in enumerate(bar):
                bar.set_postfix_str(f"{method_name} / {video.name}")
                units.append(self._unit(method_name, video))
                self.clips.release(video)
                if k + 1 == len(todo) or todo[k + 1][0] != method_name:
                    self._release(method_name)  # one model in memory at a time
        except BaseException as exc:  # noqa: BLE001 - an interrupt, a full disk, a set-up error: raised below
            stopped = (
                as_disk_full(exc) if disk_full(exc) else exc
            )  # a full disk: stop, every later unit is lost
        finally:
            bar.close()
            for name in list(self._built):
                self._release(name)
            self.clips.clear()
        try:
            # the run's tables come from the store (every unit that did not fail is there), not from tables kept
            # per unit: those small buffers, alive between every unit's large transient ones, fragmented the heap
            # and the process grew by ~50 MB per 100 units (benchmarks/scale.py, tests/test_runner_memory.py)
            frames, videos = self.store.read_tables([u.key for u in units if u.status != "error"])
            if frames is None:
                frames = pd.DataFrame(columns=FRAME_COLUMNS)
            if videos is None:
                videos = pd.DataFrame(columns=VIDEO_COLUMNS)
            self._write_run_tables(units, frames, videos)
        except Exception as exc:
            if stopped is None and disk_full(exc):
                raise as_disk_full(exc) from exc
            if stopped is None:
                raise
            log.error("the run's tables could not be written either: %s: %s", type(exc).__name__, exc)
        if stopped is not None:
            raise stopped
        return RunSummary(self.run_dir, units, frames, videos)

    def _release(self, name: str) -> None:
        method = self._built.pop(name, None)
        if method is None:
            return
        try:
            method.reset()
        finally:
            del method
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def _method(self, name: str, frames: Tensor) -> StreamMethod:
        if name not in self._built:
            from hydra.utils import instantiate

            log.info("building method %s", name)
            method = instantiate(self.method_cfgs[name], _convert_="all")
            missing = [
                a for a in ("prepare", "push", "flush", "reset") if not callable(getattr(method, a, None))
            ]
            if missing:
                raise TypeError(
                    f"method {name!r} ({type(method).__name__}) lacks StreamMethod methods {missing}"
                )
            self._built[name] = method
            self._warmup(method, frames)
        return self._built[name]

    def _warmup(self, method: StreamMethod, frames: Tensor) -> None:
        """Untimed frames through a fresh method, at least its ``steady_state_frames`` (eval.timing.warm_up), so
        one-off costs stay out of the first video's figures."""
        if self.settings.warmup_frames > 0:
            warm_up(method, frames, self.settings.warmup_frames, prompt="warm-up", seed=self.settings.seed)

    def _unit(self, method_name: str, video: Video) -> UnitResult:
        key = self.unit_key(method_name, video)
        if self._reusable(method_name, video, key, warn=False):
            return self._cached(method_name, video, key)
        with self.store.lock(key):  # another run on this results root may be computing it right now
            if self._reusable(method_name, video, key):
                return self._cached(method_name, video, key)
            fault_point("unit.begin")
            unit = self._compute(method_name, video, key)
            if key in self._damaged:
                unit.notes = "; ".join(n for n in (unit.notes, f"recomputed: {self._damaged[key]}") if n)
            return unit

    def _reusable(self, method_name: str, video: Video, key: str, warn: bool = True) -> bool:
        """Whether a finished unit may be served: only when every file matches the digest it recorded. A damaged
        one (a flipped bit, a truncated file) is recomputed with a warning naming it (``warn``: said once, under
        the lock)."""
        if not (self.settings.resume and self.store.done(key)):
            return False
        problem = self.store.damage(key)
        if problem is None:
            return True
        if warn:
            log.warning(
                "unit %s / %s (%s) cannot be served: %s; recomputing it",
                method_name,
                video.name,
                self.store.path(key),
                problem,
            )
            self._damaged[key] = problem
        return False

    def _cached(self, method_name: str, video: Video, key: str) -> UnitResult:
        meta = self.store.read_meta(key)
        self._stored_descriptors.update(meta.get("metric_descriptors") or {})
        notes = list(meta.get("notes", []))
        if self.settings.save_videos:
            notes += self._save_cached_video(method_name, video)
        unit = UnitResult(method_name, video.name, key, "cached", n_frames=meta.get("n_frames", 0))
        unit.notes = "; ".join(notes)
        return unit

    def _save_cached_video(self, method_name: str, video: Video) -> list[str]:
        """runner.save_videos for a unit computed earlier: from its kept outputs, or a note saying why not."""
        skey = self.stream_key(method_name, video)
        rec = self._kept_stream(method_name, video, skey)
        if rec is None:
            note = (
                "save_videos: no video written: this cached unit's outputs were not kept (runner.keep_outputs=true "
                "keeps them from now on; runner.resume=false recomputes)"
            )
            log.warning("%s / %s: %s", method_name, video.name, note)
            return [note]
        outputs = torch.stack(rec.outputs)
        outputs = torch.nan_to_num(outputs, nan=0.0, posinf=1.0, neginf=0.0).clamp(0, 1)
        pictures.write_mp4(
            results.output_video_path(self.run_dir, method_name, video.name), outputs, video.fps
        )
        return []

    def _compute(self, method_name: str, video: Video, key: str) -> UnitResult:
        t0 = time.perf_counter()
        status = "ok"
        notes: list[str] = []
        try:
            self._quality_metrics()  # built now, before the first computed unit (a cached unit needs none)
            if self.clips is None:  # a unit computed outside run()
                self.clips = DecodedClips(self.settings.decode_cache_mb, Counter())
            frames = self.clips.get(video)  # on disk, decoded frame by frame: never whole in memory
            source = dict(video.meta.get("source") or {})
            notes = [shown(n) for n in source.get("notes", [])]  # a path in a note may hold non-UTF-8 bytes
            if frames.shape[0] < self.settings.min_frames:
                raise VideoReadError(
                    f"{video.name}: {frames.shape[0]} frame(s) after decoding and preprocessing, fewer than "
                    f"runner.min_frames={self.settings.min_frames}"
                    + (f" ({'; '.join(notes)})" if notes else "")
                )
            skey = self.stream_key(method_name, video)
            kept = self.settings.keep_outputs and self.settings.resume  # resume=false re-runs everything
            rec = self._kept_stream(method_name, video, skey) if kept else None
            if rec is not None:
                status = "rescored"
                rec.outputs = self._on_disk(rec.outputs)
            else:
                method = self._method(method_name, frames)
                rec = self._stream(method, video, frames)
                if self.settings.keep_outputs:
                    # kept whole (float16): runner.keep_outputs is not bounded in video length
                    self.store.write_stream(skey, dataclasses.replace(rec, outputs=list(rec.outputs)))
                    # score exactly what is kept, so a later re-scoring gives the same numbers
                    for i in range(len(rec.outputs)):
                        rec.outputs[i] = rec.outputs[i].to(torch.float16).to(torch.float32)
            fr, vr, files = self._score(method_name, video, frames, rec)
            rec.outputs.close()
        except (KeyboardInterrupt, MetricSetupError):
            raise
        except Exception as exc:  # noqa: BLE001 - one bad unit must not stop the run
            if disk_full(exc):  # ... but a full disk stops it: every later unit would be computed and lost
                raise
            reason = shown(f"{type(exc).__name__}: {exc}")  # stored and logged: UTF-8 whatever the file names
            log.error("unit %s / %s failed: %s", method_name, video.name, reason)
            if method_name in self._built:
                try:
                    self._built[method_name].reset()
                except Exception:  # noqa: BLE001
                    self._built.pop(method_name, None)
            unit = UnitResult(method_name, video.name, key, "error", reason, seconds=time.perf_counter() - t0)
            unit.notes = "; ".join(notes)
            return unit
        meta = {
            "method": method_name,
            "video": video.name,
            "n_frames": int(frames.shape[0]),
            "prompt": video.prompt,
            "fps": video.fps,
            "height": int(frames.shape[-2]),
            "width": int(frames.shape[-1]),
            "extra": rec.extra,
            "source": source,  # declared vs decoded frames, conversions (eval/datasets/files.py)
            "notes": notes,
            # what the numbers are: a fully cached re-run describes its metrics from here, building none
            "metric_descriptors": self._descriptors or {},
        }
        self.store.write(key, meta, fr, vr, files)
        unit = UnitResult(
            method_name,
            video.name,
            key,
            status,
            n_frames=int(frames.shape[0]),
            seconds=time.perf_counter() - t0,
        )
        unit.notes = "; ".join(notes)
        return unit

    def _kept_stream(self, method_name: str, video: Video, skey: str) -> StreamRecord | None:
        """The kept outputs of this stream, or None (none kept, or damaged: then run again, with a warning)."""
        if not self.store.stream_done(skey):
            return None
        try:
            return self.store.read_stream(skey)
        except DamagedError as exc:
            log.warning("%s / %s: %s; running the method again", method_name, video.name, exc)
            return None

    def _quality_metrics(self) -> Mapping[str, Any]:
        """The metrics, built (once), and their descriptors (weights hashed once per run, not per unit)."""
        metrics = self.metrics.build() if isinstance(self.metrics, LazyMetrics) else self.metrics
        if self._descriptors is None:
            desc = results.describe_metrics(metrics, self.metrics_cfg, system=False)
            self._descriptors = {name: d.to_json() for name, d in desc.items()}
        return metrics

    def _metric_descriptors(self) -> dict:
        """Descriptors of every metric of the run: from the built metrics, or, when every unit was cached and no
        metric was built, as the cached units recorded them (units cached before they did: built after all)."""
        if self._descriptors is None and not set(self.metrics) <= set(self._stored_descriptors):
            self._quality_metrics()
        known = self._descriptors if self._descriptors is not None else self._stored_descriptors
        quality = {name: results.MetricDescriptor.from_json(name, known[name]) for name in self.metrics}
        return results.describe_metrics({}, known=quality)

    def _on_disk(self, outputs: list[Tensor]) -> FrameFile:
        """Kept outputs (read back whole) into a FrameFile, so that scoring reads one kind of store."""
        out = self.clips.new((len(outputs), *outputs[0].shape))
        for i, o in enumerate(outputs):
            out[i] = o
        return out

    def _stream(self, method: StreamMethod, video: Video, frames: FrameFile) -> StreamRecord:
        h, w = frames.shape[-2:]
        probe = MemoryProbe(method_device(method))  # per unit: made before prepare, so set-up memory counts
        method.prepare(video.prompt, height=int(h), width=int(w), seed=self.settings.seed)
        try:
            if self.settings.mode == "offline":
                rec = run_stream(method, frames, memory=probe, outputs=self.clips.new(frames.shape))
            elif self.settings.mode == "live":
                from eval.live import LivePacing

                pacing = LivePacing(video.fps, **self.settings.extra.get("live", {}))
                rec = run_stream(
                    method,
                    frames,
                    clock=pacing.clock,
                    pacing=pacing,
                    memory=probe,
                    outputs=self.clips.new(frames.shape),
                )
            else:
                raise ValueError(f"runner.mode must be 'offline' or 'live', got {self.settings.mode!r}")
            # how the method ran, as it states it (`info`: noise schedule, offline_reference = bursty per-call time...)
            info = getattr(method, "info", None)
            if isinstance(info, dict) and info:
                rec.extra["method_info"] = dict(info)
            skipped = getattr(method, "skipped", None)  # similarity filters: indices shown as the last output
            if isinstance(skipped, list) and rec.outputs:
                rec.extra.setdefault("video_metrics", {})["skipped_ratio"] = len(skipped) / len(rec.outputs)
            return rec
        finally:
            method.reset()

    def _score(
        self, method_name: str, video: Video, frames: FrameFile, rec: StreamRecord
    ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, bytes]]:
        return score_stream(self.metrics, self.settings, self.run_dir, method_name, video, frames, rec)

    # -- run-level outputs --------------------------------------------------------------------------------------
    def _write_run_tables(self, units: list[UnitResult], frames: pd.DataFrame, videos: pd.DataFrame) -> None:
        ut = pd.DataFrame([u.__dict__ for u in units], columns=UNIT_COLUMNS)
        strips = {}
        for u in units:
            src = self.store.path(u.key) / "strip.png"
            if u.status != "error" and src.is_file():
                strips[(u.method, u.video)] = src.read_bytes()
        results.write_tables(
            self.run_dir,
            units=ut,
            frames=frames,
            videos=videos,
            metrics=self._metric_descriptors(),
            strips=strips,
        )
        if self.settings.xt_slices or self.settings.side_by_side:
            pictures.write_run_pictures(
                self.run_dir,
                [(u.method, u.video, self.store.path(u.key)) for u in units if u.status != "error"],
                xt=self.settings.xt_slices,
                side_by_side=self.settings.side_by_side,
                fps={v.name: v.fps for v in self.videos},
            )
