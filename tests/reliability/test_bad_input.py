"""Bad input never kills a run and never becomes something else: a name that cannot be stored is an error row of
its own, a prompts file with values that are not prompts is refused naming file, key and line, and what the
harness reinterprets (gaps in a frame folder's numbering, an upscale, a variable frame rate) is noted on the unit."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
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
