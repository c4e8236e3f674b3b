"""Results on disk: content-hashed units written atomically, so a re-run skips what is finished.

A *unit* is one (method config, video, metric config, runner settings) combination. Its key is a hash of all of
them, so changing anything that affects its numbers recomputes it, and nothing else does. A unit lives in
``<root>/units/<key[:2]>/<key>/``; ``unit.json`` is written last, so a unit without it (a crash or kill mid-write)
counts as not done. Every file is written to a temporary name and moved into place with ``os.replace``.

With ``runner.keep_outputs`` the *stream* behind a unit (the method's outputs as float16, and its timings) is kept
too, under ``<root>/streams/``, keyed by everything except the metric config: a later run that only adds or
changes metrics re-scores the kept outputs instead of running the method again.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

SCHEMA_VERSION = 1


def content_key(payload: Any) -> str:
    blob = json.dumps({"schema": SCHEMA_VERSION, "payload": payload}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())


def atomic_write_parquet(path: Path, df: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        df.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class UnitStore:
    """The content-addressed cache of finished units under ``root/units``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / "units" / key[:2] / key

    def done(self, key: str) -> bool:
        return (self.path(key) / "unit.json").is_file()

    def write(
        self,
        key: str,
        meta: dict,
        frames: pd.DataFrame,
        videos: pd.DataFrame,
        files: dict[str, bytes] | None = None,
    ) -> Path:
        d = self.path(key)
        d.mkdir(parents=True, exist_ok=True)
        (d / "unit.json").unlink(missing_ok=True)  # not done until rewritten last
        atomic_write_parquet(d / "frames.parquet", frames)
        atomic_write_parquet(d / "videos.parquet", videos)
        for name, data in (files or {}).items():
            atomic_write_bytes(d / name, data)
        atomic_write_json(d / "unit.json", {**meta, "key": key})
        return d

    def read(self, key: str) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
        d = self.path(key)
        meta = json.loads((d / "unit.json").read_text())
        return meta, pd.read_parquet(d / "frames.parquet"), pd.read_parquet(d / "videos.parquet")

    def delete(self, key: str) -> None:
        shutil.rmtree(self.path(key), ignore_errors=True)

    # -- kept streams (runner.keep_outputs) ----------------------------------------------------------------------
    def stream_path(self, key: str) -> Path:
        return self.root / "streams" / key[:2] / key

    def stream_done(self, key: str) -> bool:
        return (self.stream_path(key) / "stream.json").is_file()

    def write_stream(self, key: str, rec: Any) -> Path:
        """A :class:`eval.timing.StreamRecord`'s outputs (float16 ``[T, 3, H, W]``) and timings; ``stream.json``
        last, so a half-written stream counts as absent."""
        d = self.stream_path(key)
        d.mkdir(parents=True, exist_ok=True)
        (d / "stream.json").unlink(missing_ok=True)
        buf = io.BytesIO()
        np.save(buf, torch.stack(rec.outputs).to(torch.float16).numpy())
        atomic_write_bytes(d / "outputs.npy", buf.getvalue())
        record = {**rec.timings(), "key": key}
        atomic_write_bytes(d / "stream.json", json.dumps(record, default=str).encode())
        return d

    def read_stream(self, key: str) -> Any:
        from eval.timing import StreamRecord

        d = self.stream_path(key)
        record = json.loads((d / "stream.json").read_text())
        outputs = torch.from_numpy(np.load(d / "outputs.npy")).to(torch.float32)
        return StreamRecord.from_timings(list(outputs), record)
