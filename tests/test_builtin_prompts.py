"""The project's DAVIS-2017 val prompt file: every val video described, templates applied, loader specs, errors."""

from __future__ import annotations

import pytest
from hydra.utils import instantiate

from eval.datasets.base import load_prompts
from eval.datasets.builtin_prompts import describe, load_builtin
from tests.conftest import compose

#: ImageSets/2017/val.txt of DAVIS-2017 (public)
DAVIS_2017_VAL = (
    "bike-packing blackswan bmx-trees breakdance camel car-roundabout car-shadow cows dance-twirl dog dogs-jump "
    "drift-chicane drift-straight goat gold-fish horsejump-high india judo kite-surf lab-coat libby loading "
    "mbike-trick motocross-jump paragliding-launch parkour pigs scooter-black shooting soapbox"
).split()


def test_every_val_video_has_a_short_description_and_templates_have_one_slot():
    data = describe("davis2017_val")
    assert sorted(data["descriptions"]) == sorted(DAVIS_2017_VAL) and len(DAVIS_2017_VAL) == 30
    for name, desc in data["descriptions"].items():
        assert 3 <= len(desc.split()) <= 14, name
    assert {"watercolor", "pixar", "anime", "pencil_sketch", "plain"} <= set(data["templates"])
    for name, t in data["templates"].items():
        assert t.count("{}") == 1, name
    assert data["default_template"] in data["templates"]


def test_prompt_is_template_times_description():
    desc = describe("davis2017_val")["descriptions"]
    default = load_prompts("builtin:davis2017_val")
    assert default["blackswan"] == "a watercolor painting of " + desc["blackswan"]
    anime = load_prompts("builtin:davis2017_val:anime")
    assert anime["dog"] == "an anime illustration of " + desc["dog"]
    assert load_builtin("builtin:davis2017_val:plain") == desc
    assert len(set(anime.values())) == 30  # one distinct prompt per video


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("builtin:davis2017_vall", r"no builtin prompt file 'davis2017_vall'.*Did you mean 'davis2017_val'"),
        ("builtin:davis2017_val:animee", r"no template 'animee'.*Did you mean 'anime'.*Available: "),
        ("builtin:", r"expected builtin:<name>"),
        ("builtin:davis2017_val:anime:x", r"expected builtin:<name>"),
    ],
)
def test_bad_specs_name_the_key_and_the_fix(spec, match):
    with pytest.raises(ValueError, match=r"dataset\.prompts=.*" + match):
        load_prompts(spec)


def test_users_own_file_still_works(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("dog: a pencil sketch of a dog\n")
    assert load_prompts(f) == {"dog": "a pencil sketch of a dog"}
    assert load_prompts(str(f)) == {"dog": "a pencil sketch of a dog"}


def test_davis_dataset_with_builtin_prompts_on_the_real_clips(davis_root):
    cfg = compose(
        [
            "dataset=davis",
            f"dataset.root={davis_root}",
            "dataset.prompts=builtin:davis2017_val:pencil_sketch",
            "dataset.max_frames=2",
            "dataset.size=[64,64]",
        ]
    )
    ds = instantiate(cfg.dataset, _convert_="all")
    videos = ds.videos()
    assert {v.name for v in videos} == {"blackswan", "bmx-trees", "breakdance", "dog", "paragliding-launch"}
    desc = describe("davis2017_val")["descriptions"]
    for v in videos:
        assert v.prompt == "a pencil sketch of " + desc[v.name]
    assert tuple(videos[0].load().shape) == (2, 3, 64, 64)


def test_folder_dataset_accepts_builtin_prompts(tmp_path):
    import numpy as np
    from PIL import Image

    d = tmp_path / "videos" / "dog"
    d.mkdir(parents=True)
    for i in range(2):
        Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(d / f"{i:05d}.png")
    cfg = compose(
        ["dataset=folder", f"dataset.root={tmp_path / 'videos'}", "dataset.prompts=builtin:davis2017_val"]
    )
    (v,) = instantiate(cfg.dataset, _convert_="all").videos()
    assert v.prompt == "a watercolor painting of " + describe("davis2017_val")["descriptions"]["dog"]
