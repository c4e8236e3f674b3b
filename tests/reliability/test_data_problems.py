"""Partial and silent data problems are recorded and said, never scored silently as something else."""

from __future__ import annotations

import logging
import os
import stat

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from eval.datasets.folder import FolderDataset
from tests.conftest import run_config

FOLDER = [
    "dataset=folder",
    "dataset.size=[32,32]",
    "metrics=none",
    "report.enabled=false",
    "method=[identity]",
]


def run(tmp_path, *overrides, name="run"):
    return run_config(tmp_path, *overrides, name=name, fresh=True)


def noise_mp4(path, n=40, faststart=True):
    import av

    opts = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=opts) as c:
        s = c.add_stream("mpeg4", rate=10)
        s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
        for i in range(n):
            arr = np.random.default_rng(i).integers(0, 255, (32, 32, 3), dtype=np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def test_truncated_video_records_declared_vs_decoded_and_errors_below_the_minimum(tmp_path, caplog):
    data = tmp_path / "v"
    data.mkdir()
    noise_mp4(tmp_path / "full.mp4")
    blob = (tmp_path / "full.mp4").read_bytes()
    (data / "cut.mp4").write_bytes(blob[: len(blob) // 10])  # index says 40 frames, 1 decodes
    noise_mp4(data / "fine.mp4", n=6)
    with caplog.at_level(logging.WARNING):
        s = run(tmp_path, *FOLDER, f"dataset.root={data}", "dataset.default_prompt=p")
    units = {u.video: u for u in s.units}
    assert units["cut"].status == "error" and "runner.min_frames=2" in units["cut"].error
    assert "of the 40 frames the file's index declares" in units["cut"].notes
    assert "40 frames the file's index declares" in caplog.text
    assert units["fine"].status == "ok" and units["fine"].notes == ""
    # with the minimum lowered, the short video is scored, and its row still says what happened
    s = run(
        tmp_path, *FOLDER, f"dataset.root={data}", "dataset.default_prompt=p", "runner.min_frames=1", name="b"
    )
    cut = {u.video: u for u in s.units}["cut"]
    assert cut.status == "ok" and cut.n_frames == 1 and "decoded 1 of the 40 frames" in cut.notes
    table = pd.read_parquet(s.run_dir / "units.parquet").set_index("video")
    assert "decoded 1 of the 40" in table.loc["cut", "notes"]


def test_16_bit_and_alpha_frames_are_read_fully_and_noted(tmp_path):
    import cv2

    deep = tmp_path / "deep"
    deep.mkdir()
    for i in range(3):
        cv2.imwrite(str(deep / f"{i}.png"), np.full((16, 16, 3), 1000 * (i + 1), dtype=np.uint16))
    alpha = tmp_path / "alpha"
    alpha.mkdir()
    for i in range(3):
        Image.fromarray(np.full((16, 16, 4), 100, dtype=np.uint8), "RGBA").save(alpha / f"{i}.png")
    videos = {v.name: v for v in FolderDataset(str(tmp_path), default_prompt="p", size=None).videos()}
    frames = videos["deep"].load()
    assert frames[0].mean().item() == pytest.approx(1000 / 65535, abs=1e-6)  # 16-bit precision, not 4/255
    assert frames[2].mean().item() == pytest.approx(3000 / 65535, abs=1e-6)
    assert "16-bit frames read at 16 bits" in videos["deep"].meta["source"]["notes"]
    videos["alpha"].load()
    assert any("alpha channel dropped" in n for n in videos["alpha"].meta["source"]["notes"])
    s = run(
        tmp_path, *FOLDER, f"dataset.root={tmp_path}", "dataset.default_prompt=p", "dataset.videos=[alpha]"
    )
    assert "alpha channel dropped" in s.units[0].notes


@pytest.mark.parametrize("ext", [".bmp", ".tif", ".tiff", ".webp"])
def test_bmp_and_tif_frame_folders_are_accepted(tmp_path, ext):
    clip = tmp_path / "clip"
    clip.mkdir()
    rng = np.random.default_rng(0)
    arrs = [rng.integers(0, 255, (16, 24, 3), dtype=np.uint8) for _ in range(3)]
    for i, a in enumerate(arrs):
        Image.fromarray(a).save(clip / f"{i:03d}{ext}", **({"lossless": True} if ext == ".webp" else {}))
    (v,) = FolderDataset(str(tmp_path), default_prompt="p", size=None).videos()
    frames = v.load()
    assert frames.shape == (3, 3, 16, 24)
    assert np.array_equal((frames[1].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), arrs[1])


def test_skipped_entries_and_unused_prompt_keys_are_warned(tmp_path, caplog):
    clip = tmp_path / "surf"
    clip.mkdir()
    Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(clip / "0.png")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("x")
    (tmp_path / "clip.gif").write_bytes(b"GIF89a")
    (tmp_path / "prompts.yaml").write_text("surf: a painting\nsurfer: a typo\n")
    with caplog.at_level(logging.WARNING):
        FolderDataset(str(tmp_path)).videos()
    assert "match no video: surfer" in caplog.text
    assert (
        f"skipped {tmp_path / 'notes'}" in caplog.text and f"skipped {tmp_path / 'clip.gif'}" in caplog.text
    )


def test_a_run_says_each_dataset_warning_once(tmp_path, caplog):
    """Validation lists the dataset and the run uses that listing (it listed it twice, warning twice)."""
    data = tmp_path / "v"
    (data / "surf").mkdir(parents=True)
    Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(data / "surf" / "0.png")
    Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(data / "surf" / "1.png")
    (data / "notes.txt").write_text("x")
    (data / "prompts.yaml").write_text("surf: a painting\nsurfer: a typo\n")
    with caplog.at_level(logging.WARNING):
        s = run(tmp_path, *FOLDER, f"dataset.root={data}")
    assert [u.status for u in s.units] == ["ok"]
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("skipped" in m and "notes.txt" in m for m in warned) == 1, warned
    assert sum("match no video: surfer" in m for m in warned) == 1, warned


def test_save_videos_for_cached_units(tmp_path):
    base = ["dataset.num_videos=1", "dataset.num_frames=4", "metrics=none", "report.enabled=false"]
    base += ["method=[identity]"]
    run(tmp_path, *base, name="a")
    s = run(tmp_path, *base, "runner.save_videos=true", name="b")
    assert s.units[0].status == "cached" and "outputs were not kept" in s.units[0].notes
    assert not (s.run_dir / "videos").exists()
    run(tmp_path, *base, "runner.keep_outputs=true", name="c")
    s = run(tmp_path, *base, "runner.keep_outputs=true", "runner.save_videos=true", name="d")
    assert s.units[0].status == "cached" and s.units[0].notes == ""
    assert (s.run_dir / "videos" / "identity" / "synthetic_000.mp4").stat().st_size > 0


def test_two_runs_given_one_folder_do_not_share_it(tmp_path):
    base = ["dataset.num_videos=1", "dataset.num_frames=3", "metrics=none", "report.enabled=false"]
    first = run(tmp_path, *base, "method=[identity]", name="same")
    second = run(
        tmp_path, *base, "method=[]", "+method.other._target_=baselines.identity.IdentityMethod", name="same"
    )
    assert first.run_dir == tmp_path / "same" and second.run_dir == tmp_path / "same_2"
    assert set(pd.read_parquet(first.run_dir / "units.parquet").method) == {"identity"}
    assert set(pd.read_parquet(second.run_dir / "units.parquet").method) == {"other"}
    assert not (first.run_dir / "INCOMPLETE").exists()


def test_result_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        s = run(tmp_path, "dataset.num_videos=1", "dataset.num_frames=3", "method=[identity]", "metrics=none")
    finally:
        os.umask(old)
    files = [s.run_dir / "units.parquet", s.run_dir / "videos.parquet"]
    files += list((tmp_path / "results" / "units").rglob("unit.json"))
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f
