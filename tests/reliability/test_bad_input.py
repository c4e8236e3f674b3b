"""Bad input never kills a run and never becomes something else: a name that cannot be stored is an error row of
its own, a prompts file with values that are not prompts is refused naming file, key and line, and what the
harness reinterprets (gaps in a frame folder's numbering, an upscale, a variable frame rate) is noted on the unit."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.conftest import run_config
from tests.reliability.test_data_problems import FOLDER, noise_mp4


def run(tmp_path, *overrides, name="run"):
    return run_config(tmp_path, *overrides, name=name, fresh=True)


def _move(src: str, dst: bytes) -> None:
    os.replace(src, dst)  # writers (PyAV, Pillow) take str paths; a non-UTF-8 name is made with bytes


def test_a_non_utf8_name_is_an_error_row_of_its_own(tmp_path):
    data = tmp_path / "v"
    data.mkdir()
    noise_mp4(data / "good.mp4", n=4)
    noise_mp4(tmp_path / "x.mp4", n=4)
    _move(str(tmp_path / "x.mp4"), os.fsencode(data) + b"/bad\xff.mp4")
    # a frame folder named in Latin-1, and a UTF-8-named one whose frames are not
    for folder, frame in ((b"caf\xe9", b"%d.png"), (b"frames", b"f\xe9%d.png")):
        os.mkdir(os.fsencode(data) + b"/" + folder)
        for i in range(3):
            Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)).save(tmp_path / "f.png")
            _move(str(tmp_path / "f.png"), os.fsencode(data) + b"/" + folder + b"/" + frame % i)
    (data / "prompts.yaml").write_text("good: a cat\nframes: a dog\n")  # no key can name the Latin-1 ones
    s = run(tmp_path, *FOLDER, f"dataset.root={data}")
    units = {u.video: u for u in s.units}
    assert set(units) == {"bad\\xff", "caf\\xe9", "frames", "good"}
    assert units["good"].status == "ok" and units["frames"].status == "ok"
    for bad in ("bad\\xff", "caf\\xe9"):
        assert units[bad].status == "error" and "not valid UTF-8" in units[bad].error, units[bad]
        assert bad in units[bad].error  # the file, shown with its bytes escaped
    table = pd.read_parquet(s.run_dir / "units.parquet").set_index("video")
    assert table.loc["bad\\xff", "status"] == "error" and table.loc["good", "status"] == "ok"
    assert set(pd.read_parquet(s.run_dir / "videos.parquet").video) == {"good", "frames"}
    again = run(tmp_path, *FOLDER, f"dataset.root={data}", name="again")  # the next run is no different
    assert sorted(u.status for u in again.units) == ["cached", "cached", "error", "error"]


def _clips(root, *names):
    root.mkdir(exist_ok=True)
    for n in names:
        (root / n).mkdir()
        for i in range(2):
            Image.fromarray(np.full((16, 16, 3), 50 * i, np.uint8)).save(root / n / f"{i}.png")


def test_prompts_that_are_not_strings_are_refused_with_file_key_and_line(tmp_path, run_py):
    data = tmp_path / "v"
    _clips(data, "a", "b", "c", "d", "e")
    prompts = data / "prompts.yaml"
    prompts.write_text('a: [a cat, a dog]\nb:\nc: ""\nd: 42\ne: "a fine prompt"\n')
    common = [f"results_root={tmp_path / 'r'}", f"hydra.run.dir={tmp_path / 'run'}", *FOLDER]
    r = run_py("run_eval.py", f"dataset.root={data}", *common)
    assert r.returncode == 2, r.stderr
    for where in ("line 1: 'a': a list", "line 2: 'b': no value", "line 3: 'c': an empty string"):
        assert where in r.stderr, r.stderr
    assert (
        f"{prompts}: every prompt must be a non-empty string" in r.stderr
        and "line 4: 'd': a number" in r.stderr
    )
    assert "'e'" not in r.stderr and not (tmp_path / "r" / "units").exists()
    prompts.write_text(
        'a: "a cat"\nb: "a dog"\nc: "caf\xe9"\n'.encode("latin-1").decode("latin-1"), "latin-1"
    )
    r = run_py("run_eval.py", f"dataset.root={data}", *common)
    assert r.returncode == 2 and f"{prompts}, line 3: not valid UTF-8 (byte 0xe9" in r.stderr, r.stderr
    prompts.write_text('{"a": "a cat",\n "b": ["x"]}')
    prompts.rename(data / "prompts.json")
    r = run_py("run_eval.py", f"dataset.root={data}", "dataset.default_prompt=p", *common)
    assert (
        r.returncode == 2 and "prompts.json: every prompt" in r.stderr and "line 2: 'b': a list" in r.stderr
    )
    r = run_py("run_eval.py", f"dataset.root={data}", "dataset.default_prompt=42", *common)
    assert r.returncode == 2 and "dataset.default_prompt=42: must be a non-empty string" in r.stderr


def test_prompt_keys_are_taken_as_written_and_a_repeated_key_is_refused(tmp_path):
    from eval.datasets.base import load_prompts

    f = tmp_path / "prompts.yaml"
    f.write_text('00001: "a cat"\nyes: "a dog"\n')
    assert load_prompts(f) == {"00001": "a cat", "yes": "a dog"}  # not {"1": ..., "True": ...}
    f.write_text('a: "a cat"\nb: "x"\na: "a dog"\n')
    with pytest.raises(ValueError, match=r"line 3: 'a': given again \(first at line 1\)"):
        load_prompts(f)


def test_a_prompt_longer_than_77_tokens_is_warned_once_and_noted(tmp_path, caplog):
    data = tmp_path / "v"
    _clips(data, "long", "longer", "short")
    words = " ".join(["watercolor"] * 80)
    (data / "prompts.yaml").write_text(f'long: "{words}"\nlonger: "{words} {words}"\nshort: "a cat"\n')
    with caplog.at_level(logging.WARNING):
        s = run(
            tmp_path,
            *FOLDER,
            f"dataset.root={data}",
            "+method.copy._target_=baselines.identity.IdentityMethod",
        )
    warned = [r.getMessage() for r in caplog.records if "77 tokens" in r.getMessage()]
    assert len(warned) == 1, warned  # once per run, not per unit or method
    assert "2 video(s)" in warned[0] and "long (82 tokens)" in warned[0] and "short" not in warned[0]
    notes = json.loads((s.run_dir / "notes.json").read_text())
    assert any("truncated to their first 75" in n and "longer (162 tokens)" in n for n in notes), notes


def vfr_mp4(path, intervals_ms=(120, 40)):
    """An MPEG-4 file whose frames are 120 ms and 40 ms apart in turn (a variable frame rate)."""
    from fractions import Fraction

    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=25)
        s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
        s.codec_context.time_base = Fraction(1, 1000)
        t = 0
        for i in range(12):
            f = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 20 * i, np.uint8), format="rgb24")
            f.pts, f.time_base = t, Fraction(1, 1000)
            t += intervals_ms[i % len(intervals_ms)]
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def test_reinterpretations_are_noted_on_the_unit_and_symlink_loops_named(tmp_path):
    data = tmp_path / "v"
    data.mkdir()
    for folder, numbers, size in (("gappy", (0, 2, 3, 6), 32), ("small", (0, 1, 2), 16)):
        (data / folder).mkdir()
        for i in numbers:
            Image.fromarray(np.full((size, size, 3), 30 * i, np.uint8)).save(data / folder / f"{i:05d}.png")
    vfr_mp4(data / "vfr.mp4")
    noise_mp4(data / "steady.mp4", n=6)  # constant rate, 32 px: nothing to note
    (data / "loop.mp4").symlink_to("loop.mp4")
    (data / "gone.mp4").symlink_to(tmp_path / "nowhere.mp4")
    (data / "frameloop").mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(data / "frameloop" / "0.png")
    (data / "frameloop" / "1.png").symlink_to("1.png")
    s = run(tmp_path, *FOLDER, f"dataset.root={data}", "dataset.default_prompt=p")
    units = {u.video: u for u in s.units}
    assert (
        "frame numbering has gaps: 4 frames numbered 00000-00006, 3 number(s) missing" in units["gappy"].notes
    )
    assert (
        "upscaled x2.00: the source is 16x16 px, smaller than dataset.size=[32, 32]" in units["small"].notes
    )
    assert "variable frame rate: frame intervals 40.0-120.0 ms" in units["vfr"].notes
    assert "its average rate (12.5 fps)" in units["vfr"].notes
    assert units["steady"].status == "ok" and units["steady"].notes == ""
    assert all(units[v].status == "ok" for v in ("gappy", "small", "vfr"))
    assert units["loop"].status == "error" and "a symlink loop" in units["loop"].error
    assert units["gone"].status == "error" and "a broken symlink" in units["gone"].error
    # one looping frame used to stop the listing of every video (exit 2): now its folder's own error row
    assert (
        units["frameloop"].status == "error" and "frameloop/1.png: a symlink loop" in units["frameloop"].error
    )
    table = pd.read_parquet(s.run_dir / "units.parquet").set_index("video")
    assert "variable frame rate" in table.loc["vfr", "notes"] and "gaps" in table.loc["gappy", "notes"]


def test_unpadded_frame_numbers_play_in_numeric_order(tmp_path):
    from eval.datasets.folder import FolderDataset

    (tmp_path / "clip").mkdir()
    for i in range(1, 12):  # 1.png ... 11.png: sorted as text, 10 and 11 came right after 1
        Image.fromarray(np.full((16, 16, 3), 20 * i, np.uint8)).save(tmp_path / "clip" / f"{i}.png")
    (v,) = FolderDataset(str(tmp_path), default_prompt="p", size=None).videos()
    levels = (v.load()[:, 0, 0, 0] * 255).round().int().tolist()
    assert levels == [20 * i for i in range(1, 12)]
    assert v.meta["source"]["notes"] == []  # 1..11 has no gap


def test_single_metrics_are_picked_with_a_list_and_a_typo_says_how(tmp_path):
    from eval.cli import check_overrides

    said = check_overrides(["metrics=[warp_eror]"])  # run_eval.py prints it, exit 2 (tests/test_config.py)
    assert "Did you mean 'warp_error'?" in said and "metrics=[warp_error,clip_score]" in said
    assert "+metrics/add=" in said and check_overrides(["metrics=[warp_error,warp_error_input]"]) is None
    s = run_config(
        tmp_path,
        "method=[identity]",
        "dataset.num_videos=1",
        "dataset.num_frames=3",
        "report.enabled=false",
        "metrics=[warp_error,warp_error_input]",
        "metrics.warp_error.flow=farneback",
    )
    computed = set(pd.read_parquet(s.run_dir / "videos.parquet").metric)
    assert {"warp_error", "warp_error_input"} <= computed and not computed & {"clip_score", "frame_diff"}
    described = json.loads((s.run_dir / "metrics.json").read_text())
    assert described["warp_error_input"]["config"]["flow"] == "farneback"  # the input row follows warp_error


def test_the_default_metric_set_is_the_six_single_metric_files():
    from omegaconf import OmegaConf

    from tests.conftest import compose

    every = OmegaConf.to_container(compose().metrics, resolve=True)
    names = ["frame_diff", "warp_error", "warp_error_input", "clip_score", "clip_consistency", "depth_error"]
    assert list(every) == names
    one_by_one = {
        n: OmegaConf.to_container(compose([f"metrics=[{n}]"]).metrics, resolve=True)[n] for n in names
    }
    assert one_by_one == every  # alone, each file resolves to what the default set gives it


def test_sd15_with_one_real_weight_is_refused_by_validation_exit_2(tmp_path, run_py):
    """It was refused only when the first unit built its method (an error row, exit 1)."""
    from eval.validate import ConfigError, validate
    from tests.conftest import compose

    taesd = tmp_path / "taesd"
    taesd.mkdir()
    (taesd / "config.json").write_text("{}")
    common = ["model=sd15", f"model.weights.taesd={taesd}", "method=[live2diff]", "dataset.num_videos=1"]
    r = run_py("run_eval.py", *common, f"results_root={tmp_path / 'r'}", f"hydra.run.dir={tmp_path / 'run'}")
    assert r.returncode == 2, r.stderr[-2000:]
    assert "model.weights={'taesd':" in r.stderr and "model.weights.base=/path (or random)" in r.stderr
    assert not (tmp_path / "r" / "units").exists()
    named = [f"model.weights.{k}=random" for k in ("base", "motion", "depth")] + [
        "model.weights.lcm_lora=none"
    ]
    validate(compose([*common, *named]), videos=False)  # every other component named on purpose: fine
    with pytest.raises(ConfigError, match="model.weights.depth=/path"):
        validate(compose([*common, *named[:2], named[3]]), videos=False)
