"""Pre-flight check (``+check=true``): lists every missing weight file with its key, missing video, missing prompt
and mismatched resolution, exits 2 without building a model; with nothing missing it estimates run times."""

from __future__ import annotations

import sys

import pytest

from eval import check
from tests.conftest import compose
from tests.test_paper_experiments import write_davis


@pytest.fixture
def incomplete(tmp_path):
    """A DAVIS folder with 2 of the 3 listed videos, a prompts file lacking one of them."""
    root = write_davis(tmp_path / "DAVIS", names=("blackswan", "dog"), n_frames=4, size=32)
    (root / "ImageSets" / "2017" / "val.txt").write_text("blackswan\ndog\ncamel\n")
    prompts = tmp_path / "prompts.yaml"
    prompts.write_text("blackswan: a watercolor painting of a black swan\ncamel: a camel\n")
    return [
        "experiment=paper_table1",
        f"dataset.root={root}",
        f"dataset.prompts={prompts}",
        "dataset.size=[256,256]",
        f"model.weights.base={tmp_path / 'sd15-absent'}",
        f"results_root={tmp_path / 'results'}",
    ]


EXPECTED_KEYS = (
    "model.weights.base",
    "model.weights.motion",
    "model.weights.lcm_lora",
    "model.weights.taesd",
    "model.weights.depth",  # also the depth_error metric's folder: listed once
    "model.weights.animatediff_motion",  # paper_table1 selects animatediff_window: its own motion modules
    "metrics.clip_score.weights",
    "metrics.warp_error.raft_weights",
    "metrics.lpips.weights",
)


def test_lists_everything_missing_and_builds_nothing(incomplete, monkeypatch):
    import live2diff.components.build

    def forbidden(*a, **k):
        raise AssertionError("a model was built during the pre-flight check")

    # every build_components call builds its UNet first (a patched build_components would not reach the names
    # the methods imported)
    monkeypatch.setattr(live2diff.components.build, "build_unet", forbidden)
    monkeypatch.setattr(check, "probe", forbidden)
    lines: list[str] = []
    assert check.preflight(compose([*incomplete, "+check=true"]), out=lines.append) == 2
    text = "\n".join(lines)
    for key in EXPECTED_KEYS:
        assert key in text, key
    assert text.count("model.weights.depth") == 1
    assert "sd15-absent: no such file" in text
    assert "camel: no frames" in text  # listed in val.txt, absent on disk
    assert "dog: no prompt" in text and "blackswan: no prompt" not in text
    assert "dataset.size" in text and "[512, 512]" in text
    kinds = [ln.split()[0] for ln in lines if ln.startswith("  ")]
    assert kinds.count("weights") == len(EXPECTED_KEYS) and {"video", "prompt", "resolution"} <= set(kinds)


def test_cli_exits_2_and_writes_no_results(incomplete, tmp_path, run_py):
    r = run_py("run_eval.py", *incomplete, "+check=true", f"hydra.run.dir={tmp_path / 'hydra'}")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "MISSING" in r.stdout and "metrics.lpips.weights" in r.stdout and "camel: no frames" in r.stdout
    assert not (tmp_path / "results").exists()  # nothing computed, no unit cached


def test_unset_dataset_root_is_named():
    lines: list[str] = []
    assert check.preflight(compose(["experiment=paper_table1", "+check=true"]), out=lines.append) == 2
    assert any("dataset.root" in ln and "not set" in ln for ln in lines)


def test_interpolated_keys_point_to_the_key_a_user_sets():
    cfg = compose(["experiment=paper_table1", "dataset.root=/d"])
    assert check.source_key(cfg, "metrics.clip_consistency.weights") == "metrics.clip_score.weights"
    assert check.source_key(cfg, "metrics.depth_error.weights") == "model.weights.depth"
    assert check.source_key(cfg, "metrics.warp_error_input.raft_weights") == "metrics.warp_error.raft_weights"
    cfg = compose(["experiment=paper_table1", "dataset.root=/d", "metrics.depth_error.weights=/w/dpt"])
    assert check.source_key(cfg, "metrics.depth_error.weights") == "metrics.depth_error.weights"


def test_complete_setup_passes_and_estimates_each_method():
    cfg = compose(
        [
            "+check=true",
            "method=[identity,live2diff]",
            "dataset.num_videos=2",
            "dataset.num_frames=10",
            "+preflight.probe_frames=4",
        ]
    )
    lines: list[str] = []
    assert check.preflight(cfg, out=lines.append) == 0
    text = "\n".join(lines)
    assert "All weight files, videos and prompts are present" in text and "Estimated run time" in text
    rows = {ln.split()[0]: ln for ln in lines if ln.startswith("  ")}
    assert {"identity", "live2diff", "(metrics,", "total"} <= set(rows)
    assert " 20 " in rows["live2diff"]  # 2 videos x 10 frames


def test_config_validation_problems_are_listed_once(incomplete, monkeypatch):
    """Problems found by the run's config validation (eval/validate.py) join the list, without repeating a key
    the inventory already names."""
    import types
    from dataclasses import dataclass

    @dataclass
    class Problem:
        key: str
        value: object
        fix: str

        def __str__(self):
            return f"{self.key}={self.value}: {self.fix}"

    class ConfigError(ValueError):
        def __init__(self, problems):
            self.problems = problems
            super().__init__("problems")

    def validate(cfg):
        raise ConfigError(
            [
                Problem("model.weights.base", "/x", "no such file"),
                Problem("runner.mode", "'fast'", "must be offline|live"),
            ]
        )

    monkeypatch.setitem(
        sys.modules, "eval.validate", types.SimpleNamespace(ConfigError=ConfigError, validate=validate)
    )
    lines: list[str] = []
    assert check.preflight(compose([*incomplete, "+check=true"]), out=lines.append) == 2
    text = "\n".join(lines)
    assert text.count("model.weights.base") == 1
    assert any(ln.split()[:2] == ["config", "runner.mode"] and "must be offline|live" in ln for ln in lines)


def test_probe_scores_the_published_warp_rows():
    """+metrics/add=published in the timing probe: lag=auto is given an emission schedule (no stream ran)."""
    cfg = compose(
        [
            "+check=true",
            "method=[identity]",
            "dataset.num_videos=1",
            "dataset.num_frames=6",
            "+preflight.probe_frames=4",
            "+metrics/add=published",
        ]
    )
    lines: list[str] = []
    assert check.preflight(cfg, out=lines.append) == 0, lines
    assert any(ln.strip().startswith("(metrics,") for ln in lines)


def test_the_probe_times_methods_through_the_one_stream_driver(monkeypatch):
    """The pre-flight probe times each method with eval.timing.run_stream (the runner's timed calls, frames as the
    runner hands them), not a loop of its own: its estimate is the recorded calls plus the flush, per frame."""
    import numpy as np

    from eval import timing

    seen, drive = [], timing.run_stream

    def recorded(method, frames, **kw):
        rec = drive(method, frames, **kw)
        rec.call_s = np.full_like(rec.call_s, 0.5)  # a known duration per call
        rec.flush_s = 1.0
        seen.append((type(method).__name__, int(frames.shape[0])))
        return rec

    monkeypatch.setattr(timing, "run_stream", recorded)
    cfg = compose(["+check=true", "method=[identity]", "dataset.num_videos=1", "dataset.num_frames=8"])
    rows = check.probe(cfg, [(v, 8) for v in instantiate_videos(cfg)], 4)
    assert seen == [("IdentityMethod", 4)]
    assert rows[0]["method"] == "identity" and rows[0]["s_per_frame"] == (4 * 0.5 + 1.0) / 4


def instantiate_videos(cfg):
    from hydra.utils import instantiate

    return instantiate(cfg.dataset).videos()
