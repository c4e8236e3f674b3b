"""Faults lose nothing and say what happened: a damaged cached unit is recomputed (never served, never fatal)."""

from __future__ import annotations

import json
import logging

import pandas as pd
import pytest

from tests.conftest import run_config

RUN = [
    "method=[identity]",
    "dataset.num_videos=2",
    "dataset.num_frames=4",
    "metrics=none",
    "+metrics.frame_diff._target_=eval.metrics.frame_diff.MeanAbsFrameDiff",
    "report.enabled=false",
]


def run(tmp_path, *overrides, name="run"):
    return run_config(tmp_path, *RUN, *overrides, name=name, fresh=True)


def flip_bit(path, offset=None):
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0x10
    path.write_bytes(bytes(data))


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _fps_bit_flip(path):
    """A flip inside the stored fps value: the file still reads, as another number (the issue's 50.6 -> 101.3)."""
    import struct

    df = pd.read_parquet(path)
    value = float(df.loc[df.metric == "fps", "value"].iloc[0])
    at = path.read_bytes().find(struct.pack("<d", value))
    assert at >= 0
    flip_bit(path, at + 6)
    assert float(pd.read_parquet(path).loc[lambda d: d.metric == "fps", "value"].iloc[0]) != value


@pytest.mark.parametrize(
    "file, damage",
    [
        ("videos.parquet", _fps_bit_flip),
        ("strip.png", truncate),
        # slow: the same path as the two above (any file of the unit, or its record, against its digest)
        pytest.param("frames.parquet", truncate, marks=pytest.mark.slow),
        pytest.param(
            "unit.json",
            lambda p: p.write_text(p.read_text().replace('"n_frames": 4', '"n_frames": 5')),
            marks=pytest.mark.slow,
        ),
    ],
)
def test_a_damaged_cached_unit_is_recomputed_with_a_warning_never_served(tmp_path, caplog, file, damage):
    first = run(tmp_path, name="a")
    truth = pd.read_parquet(first.run_dir / "videos.parquet")
    unit = next(u for u in first.units if u.video == "synthetic_001")
    unit_dir = tmp_path / "results" / "units" / unit.key[:2] / unit.key
    assert set(json.loads((unit_dir / "unit.json").read_text())["files"]) >= {"videos.parquet", "strip.png"}
    damage(unit_dir / file)
    with caplog.at_level(logging.WARNING):
        again = run(tmp_path, name="b")
    status = {u.video: u.status for u in again.units}
    assert status == {"synthetic_000": "cached", "synthetic_001": "ok"}, status
    warned = [r.getMessage() for r in caplog.records if "cannot be served" in r.getMessage()]
    assert len(warned) == 1 and "identity / synthetic_001" in warned[0] and file in warned[0], warned
    assert "recomputed: " in {u.video: u for u in again.units}["synthetic_001"].notes
    got = pd.read_parquet(again.run_dir / "videos.parquet")
    keep = ~truth.metric.str.contains("latency|_ms|fps|peak_mem")  # wall-clock figures differ between runs
    pd.testing.assert_frame_equal(
        got[keep.values].reset_index(drop=True), truth[keep.values].reset_index(drop=True)
    )
    assert [u.status for u in run(tmp_path, name="c").units] == ["cached", "cached"]  # whole again


def test_a_damaged_kept_stream_is_run_again_not_rescored(tmp_path, caplog):
    keep = ["runner.keep_outputs=true"]
    run(tmp_path, *keep, name="a")
    kept = list((tmp_path / "results" / "streams").rglob("outputs.npy"))
    assert len(kept) == 2
    for p in kept:
        flip_bit(p, p.stat().st_size - 3)  # a pixel of the last frame
    more = "+metrics.diff2._target_=eval.metrics.frame_diff.MeanAbsFrameDiff"  # metric-only change: re-score
    with caplog.at_level(logging.WARNING):
        s = run(tmp_path, *keep, more, name="b")
    assert [u.status for u in s.units] == ["ok", "ok"], [u.status for u in s.units]  # not "rescored"
    assert sum("outputs.npy does not match" in r.getMessage() for r in caplog.records) == 2
