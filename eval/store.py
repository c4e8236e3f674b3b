"""Results on disk: content-hashed units written atomically, so a re-run skips what is finished.

A *unit* is one (method config, video, metric config, runner settings) combination. Its key is a hash of all of
them, so changing anything that affects its numbers recomputes it, and nothing else does. A unit lives in
``<root>/units/<key[:2]>/<key>/``; ``unit.json`` is written last, so a unit without it (a crash or kill mid-write)
counts as not done. Every file is written to a temporary name and moved into place with ``os.replace``.

A unit records the sha256 of each of its files (and of its own record) in ``unit.json``; a unit whose files do not
match (a flipped bit, a truncated file, an edit) is reported by :meth:`UnitStore.damage` and recomputed by the
runner, never served. The same holds for kept streams.

With ``runner.keep_outputs`` the *stream* behind a unit (the method's outputs as float16, and its timings) is kept
too, under ``<root>/streams/``, keyed by everything except the metric config: a later run that only adds or
changes metrics re-scores the kept outputs instead of running the method again.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

SCHEMA_VERSION = 1


def content_key(payload: Any) -> str:
    blob = json.dumps({"schema": SCHEMA_VERSION, "payload": payload}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _umask() -> int:
    mask = os.umask(0)  # the umask can only be read by setting it
    os.umask(mask)
    return mask


def fault_point(name: str) -> None:
    """Crash-test hook: ``LIVE2DIFF_BENCH_FAULT=name:n`` SIGKILLs this process the n-th time it reaches ``name``
    (tests/reliability kill runs at chosen points of a unit's life, then check that resuming is exact)."""
    spec = os.environ.get("LIVE2DIFF_BENCH_FAULT")
    if not spec:
        return
    point, _, n = spec.partition(":")
    if point != name:
        return
    _fault_counts[name] = _fault_counts.get(name, 0) + 1
    if _fault_counts[name] == int(n or 1):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


_fault_counts: dict[str, int] = {}


class DiskFullError(OSError):
    """The disk (or the quota) is full: the run stops at the first failed write instead of computing units it cannot
    keep; every unit finished before it is kept (exit status 4, eval/cli.py)."""


def disk_full(exc: BaseException | None) -> bool:
    """Whether ``exc``, or what caused it, is ENOSPC / EDQUOT (pyarrow and PyAV raise their own types: their
    message is read too)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(exc) or "Disk quota exceeded" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def as_disk_full(exc: BaseException) -> DiskFullError:
    """A :class:`DiskFullError` naming the file whose write found the disk full (from ``exc`` or its causes)."""
    cause: BaseException | None = exc
    while cause is not None and not (
        isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT)
    ):
        cause = cause.__cause__ or cause.__context__
    code = cause.errno if isinstance(cause, OSError) else errno.ENOSPC
    name = getattr(cause, "filename", None) or getattr(exc, "filename", None)
    out = DiskFullError(code, os.strerror(code), name)
    out.__cause__ = exc
    return out


def _publish(tmp: str, path: Path) -> None:
    """Move a finished temporary file into place with the permissions a plain ``open`` would give it (mkstemp
    creates files 0600; results are meant to be read by the group/others the user's umask allows)."""
    os.chmod(tmp, 0o666 & ~_umask())
    fault_point("atomic.before_replace")
    os.replace(tmp, path)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        _name(exc, path)
        raise
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        _publish(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        _name(exc, path)
        raise


def _name(exc: BaseException, path: Path) -> None:
    """Name the file a failed write was for (a bare ``write()`` error names none)."""
    if isinstance(exc, OSError) and not exc.filename:
        exc.filename = str(path)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())


def parquet_bytes(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _record_digest(record: dict) -> str:
    """The digest of a unit's or stream's own record (everything but this digest), as JSON reads it back."""
    body = {k: v for k, v in record.items() if k != "digest"}
    return sha256(json.dumps(json.loads(json.dumps(body, default=str)), sort_keys=True).encode())


def _sealed(record: dict) -> dict:
    return {**record, "digest": _record_digest(record)}


class DamagedError(ValueError):
    """A stored unit or stream whose files do not match the digests it recorded: it is recomputed, never served."""


def atomic_write_parquet(path: Path, df: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        _name(exc, path)
        raise
    os.close(fd)
    try:
        df.to_parquet(tmp, index=False)
        _publish(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        _name(exc, path)
        raise


class UnitStore:
    """The content-addressed cache of finished units under ``root/units``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / "units" / key[:2] / key

    def done(self, key: str) -> bool:
        return (self.path(key) / "unit.json").is_file()

    @contextlib.contextmanager
    def lock(self, key: str) -> Iterator[None]:
        """Exclusive per-unit lock (``flock``): two runs on one results root never compute the same unit at once;
        the second waits, then finds it done. The kernel drops the lock when its process dies, even by SIGKILL."""
        import fcntl

        path = self.root / "locks" / key[:2] / f"{key}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

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
        digests = {}
        for i, (name, data) in enumerate(
            [("frames.parquet", parquet_bytes(frames)), ("videos.parquet", parquet_bytes(videos))]
            + list((files or {}).items())
        ):
            atomic_write_bytes(d / name, data)
            digests[name] = sha256(data)
            if i == 0:
                fault_point("unit.frames_written")
        fault_point("unit.before_done")
        atomic_write_json(d / "unit.json", _sealed({**meta, "key": key, "files": digests}))
        fault_point("unit.done")
        return d

    def damage(self, key: str) -> str | None:
        """What is wrong with a finished unit's files (unreadable record, a file missing, changed or truncated),
        or None when every file matches the digest the unit recorded for it."""
        return _damage(self.path(key), "unit.json")

    def read(self, key: str) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
        d = self.path(key)
        meta = json.loads((d / "unit.json").read_text())
        return meta, pd.read_parquet(d / "frames.parquet"), pd.read_parquet(d / "videos.parquet")

    def read_meta(self, key: str) -> dict:
        meta = json.loads((self.path(key) / "unit.json").read_text())
        return {k: v for k, v in meta.items() if k not in ("files", "digest")}

    def read_tables(self, keys: list[str]) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
        """The frames and videos tables of many units, concatenated (None for no units).

        The runner assembles a run's tables here once at the end instead of keeping each unit's tables in memory:
        hundreds of small per-unit buffers kept alive between every unit's large transient ones pinned holes in
        glibc's heap, and the process's memory grew by ~50 MB per 100 units (benchmarks/scale.py). One Arrow
        read per file and one conversion to pandas: ~1 ms a unit."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not keys:
            return None, None
        out = []
        for name in ("frames.parquet", "videos.parquet"):
            # schema metadata holds each file's own pandas index: dropped, the concatenation gets a fresh one
            parts = [pq.read_table(self.path(k) / name).replace_schema_metadata(None) for k in keys]
            out.append(pa.concat_tables(parts).to_pandas())
        return out[0], out[1]

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
        fault_point("stream.outputs_written")
        record = _sealed({**rec.timings(), "key": key, "files": {"outputs.npy": sha256(buf.getvalue())}})
        atomic_write_bytes(d / "stream.json", json.dumps(record, default=str).encode())
        return d

    def read_stream(self, key: str) -> Any:
        """A kept stream; :class:`DamagedError` when its files do not match their digests (never served)."""
        from eval.timing import StreamRecord

        d = self.stream_path(key)
        problem = _damage(d, "stream.json")
        if problem:
            raise DamagedError(f"kept stream {d}: {problem}")
        record = json.loads((d / "stream.json").read_text())
        data = (d / "outputs.npy").read_bytes()
        if sha256(data) != record["files"]["outputs.npy"]:  # changed since it was checked
            raise DamagedError(f"kept stream {d}: outputs.npy does not match its digest")
        outputs = torch.from_numpy(np.load(io.BytesIO(data), allow_pickle=False)).to(torch.float32)
        return StreamRecord.from_timings(list(outputs), record)


def _damage(d: Path, record_name: str) -> str | None:
    """Why the files of the unit or stream in ``d`` cannot be trusted, or None (see :meth:`UnitStore.damage`)."""
    try:
        record = json.loads((d / record_name).read_text())
    except (OSError, ValueError) as exc:
        return f"{record_name} unreadable ({type(exc).__name__}: {exc})"
    if not isinstance(record, dict) or not isinstance(record.get("files"), dict):
        return f"{record_name} records no digests of its files (written by an older version)"
    if record.get("digest") != _record_digest(record):
        return f"{record_name} does not match its own digest (edited or corrupted)"
    for name, digest in record["files"].items():
        try:
            with open(d / name, "rb") as f:
                h = hashlib.sha256()
                while chunk := f.read(1 << 20):
                    h.update(chunk)
        except OSError as exc:
            return f"{name} unreadable ({exc.strerror or exc})"
        if h.hexdigest() != digest:
            return f"{name} does not match its recorded sha256 (changed or truncated since it was written)"
    return None


# -- run folders ----------------------------------------------------------------------------------------------------
# {"status": running|complete|interrupted|failed|disk_full, "pid", "host", "started", "finished", ...}
RUN_STATUS = "status.json"
# present until the run finished writing its tables and report: a killed run keeps it
INCOMPLETE = "INCOMPLETE"


def slurm_attempt() -> dict:
    """The SLURM job this process runs in and which attempt of it this is (a requeued job runs again under the same
    ``SLURM_JOB_ID`` with ``SLURM_RESTART_COUNT`` one higher); empty outside SLURM."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return {}
    return {"slurm_job": job, "slurm_restart": int(os.environ.get("SLURM_RESTART_COUNT") or 0)}


def _earlier_attempt(d: Path, attempt: dict) -> bool:
    """``d`` was claimed by an earlier attempt of this same SLURM job that did not complete (preempted, timed out,
    ``scontrol requeue``): this attempt continues in it, so a job keeps one folder however often it is requeued."""
    if not attempt:
        return False
    try:
        prev = json.loads((d / RUN_STATUS).read_text())
    except (OSError, ValueError):
        return False
    return (
        prev.get("slurm_job") == attempt["slurm_job"]
        and prev.get("status") != "complete"
        and int(prev.get("slurm_restart") or 0) < attempt["slurm_restart"]
    )


def claim_run_dir(run_dir: str | Path) -> Path:
    """Make ``run_dir`` this run's own: its status file is created exclusively (``O_EXCL``), so a second run that
    was given the same folder (two runs started in the same second) gets ``<run_dir>_2`` (``_3`` ...) instead of
    overwriting the first one's tables. A requeued SLURM job takes its earlier attempt's folder back (its finished
    units are cached; its tables are rewritten whole at the end). The folder is marked ``INCOMPLETE`` until
    :func:`finish_run_dir`."""
    import socket
    import time

    base = Path(run_dir)
    attempt = slurm_attempt()
    for n in range(1, 1000):
        d = base if n == 1 else base.with_name(f"{base.name}_{n}")
        d.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(d / RUN_STATUS, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            if not _earlier_attempt(d, attempt):
                continue
            fd = None
        status = {
            "status": "running",
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.time(),
            **attempt,
        }
        if fd is None:
            atomic_write_json(d / RUN_STATUS, status)
        else:
            with os.fdopen(fd, "w") as f:
                json.dump(status, f)
        atomic_write_bytes(d / INCOMPLETE, b"this run did not finish (killed, crashed or still running)\n")
        return d
    raise RuntimeError(f"could not claim a run folder next to {base}")


def finish_run_dir(run_dir: str | Path, status: str, extra: dict | None = None) -> None:
    """Record how the run ended (``extra``: what else to say, e.g. the signal or the error); ``complete`` also
    removes the ``INCOMPLETE`` mark."""
    import time

    d = Path(run_dir)
    try:
        record = json.loads((d / RUN_STATUS).read_text())
    except (OSError, ValueError):
        record = {}
    record = {**record, **(extra or {}), "status": status, "finished": time.time()}
    try:
        atomic_write_json(d / RUN_STATUS, record)
    except OSError as exc:
        if not disk_full(exc):
            raise
        # a full disk has no room for a new file: the status is rewritten in place, in the block it already has
        with open(d / RUN_STATUS, "r+b") as f:
            f.write(json.dumps(record, sort_keys=True).encode())
            f.truncate()
    if status == "complete":
        (d / INCOMPLETE).unlink(missing_ok=True)
