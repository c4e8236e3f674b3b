"""Settings are checked before anything is built: each bad value is refused at start-up with its key, value and
fix (before: computed every unit and crashed in the report, was silently ignored, or failed per unit)."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from eval.validate import ConfigError, validate
from tests.conftest import compose


def problems(*overrides):
    synthetic = [] if "dataset=folder" in overrides else ["dataset.num_videos=1"]
    cfg = compose(["method=[identity]", *synthetic, *overrides])
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    return str(err.value)


@pytest.mark.parametrize(
    "override, key, fix",
    [
        ("seed=-1", "seed=-1", "integer in [0,"),
        ("seed=1.5", "seed=1.5", "integer"),
        ("runner.live.fps=0", "runner.live.fps=0", "> 0"),
        ("runner.live.policy=skip", "runner.live.policy='skip'", "drop, latest, queue"),
        ("runner.mode=realtime", "runner.mode='realtime'", "offline, live"),
        ("runner.warmup_frames=-1", "runner.warmup_frames=-1", ">= 0"),
        ("dataset.max_frames=0", "dataset.max_frames=0", ">= 1"),
        ("dataset.stride=0", "dataset.stride=0", ">= 1"),
        ("dataset.shard=2", "dataset.shard=2", "[0, dataset.num_shards=1)"),
        ("dataset.height=60", "dataset.height=60", "multiple of 8"),
        ("+method.identity.kernel=3", "method.identity.kernel=3", "IdentityMethod takes"),
        (
            "metrics.clip_score.weights=/nope/clip.bin",
            "metrics.clip_score.weights='/nope/clip.bin'",
            "no such",
        ),
        ("model.weights.base=/nope/sd15", "model.weights.base='/nope/sd15'", "no such"),
    ],
)
def test_bad_setting_names_key_value_and_fix(override, key, fix):
    text = problems(override)
    assert key in text and fix in text, text


@pytest.mark.parametrize("bad", ["[40,30]", "[30,30]", "[30,50]", "[]", "[-1,10]", "[a,b]"])
def test_bad_t_index_list_is_refused_before_any_model_is_built(bad):
    text = problems("method=[live2diff]", f"method.live2diff.t_index_list={bad}")
    assert "method.live2diff.t_index_list=" in text and "strictly increasing" in text


def test_every_problem_is_listed_at_once():
    text = problems("seed=-1", "runner.live.fps=0", "dataset.max_frames=0")
    assert text.startswith("3 configuration problems")


def test_misspelled_method_setting_suggests_the_key():
    text = problems("method=[live2diff]", "+method.live2diff.t_index=[30,40]")
    assert "did you mean method.live2diff.t_index_list" in text


def test_tiny_video_with_size_null(tmp_path):
    clip = tmp_path / "tiny"
    clip.mkdir()
    for i in range(3):
        Image.fromarray(np.zeros((5, 7, 3), dtype=np.uint8)).save(clip / f"{i}.png")
    text = problems(
        "dataset=folder", f"dataset.root={tmp_path}", "dataset.default_prompt=p", "dataset.size=null"
    )
    assert "dataset.size=null" in text and "5x7 px" in text and "dataset.size=[64,64]" in text


def test_malformed_prompts_file_names_file_and_line(tmp_path):
    (tmp_path / "clip").mkdir()
    Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(tmp_path / "clip" / "0.png")
    (tmp_path / "prompts.yaml").write_text('clip: "a painting\nother: a: b\n')
    text = problems("dataset=folder", f"dataset.root={tmp_path}")
    assert f"{tmp_path / 'prompts.yaml'}, line " in text and "not valid YAML" in text


def test_missing_root_and_unset_root(tmp_path):
    assert "dataset.root='???'" in problems("dataset=folder")
    assert "no such directory" in problems("dataset=folder", f"dataset.root={tmp_path / 'nope'}")


def test_default_config_is_valid():
    validate(compose([]))


def test_exit_status_2_for_setup_errors(tmp_path, run_py):
    """Configuration problems, Hydra's own refusals and missing method headers all exit 2; nothing is computed.
    (``run_eval.py`` in this process; tests/test_cli.py runs it as a real process.)"""
    conf = tmp_path / "conf" / "method"
    conf.mkdir(parents=True)
    (conf / "blur.yaml").write_text("_target_: baselines.identity.IdentityMethod\n")
    common = [f"results_root={tmp_path / 'r'}", f"hydra.run.dir={tmp_path / 'run'}", "dataset.num_videos=1"]
    r = run_py("run_eval.py", "seed=-1", "method=[identity]", *common)
    assert r.returncode == 2 and "seed=-1" in r.stderr, r.stderr
    assert not (tmp_path / "r" / "units").exists()
    r = run_py(
        "run_eval.py", f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "method=[identity,blur]", *common
    )
    assert r.returncode == 2 and f"{conf / 'blur.yaml'} (add `# @package method.blur`)" in r.stderr, r.stderr
    r = run_py(
        "run_eval.py", "method=[identity]", "method.identity.nokey=1", *common
    )  # Hydra refuses the override
    assert r.returncode == 2, r.stderr
    assert not (tmp_path / "r" / "units").exists()


def test_builtin_prompt_specs_are_accepted_and_bad_ones_named():
    from eval.validate import check_dataset

    def ds(prompts):
        return OmegaConf.create(
            {"_target_": "eval.datasets.folder.FolderDataset", "root": ".", "prompts": prompts}
        )

    assert not check_dataset(ds("builtin:davis2017_val"))
    assert not check_dataset(ds("builtin:davis2017_val:anime"))
    (problem,) = check_dataset(ds("builtin:davis2017_vall"))
    assert problem.key == "dataset.prompts" and "davis2017_val" in problem.fix
