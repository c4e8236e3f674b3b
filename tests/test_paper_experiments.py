"""Every paper experiment file (paper_table1, ablation_*) composes with the paper set-up and runs end to end on the
tiny model with synthetic clips written in the DAVIS-2017 layout (builtin prompts, val list), producing the
ablation's table and quality-vs-latency plot."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from eval.datasets.synthetic import generate_clip
from tests.conftest import CONF, compose, run_config

EXPERIMENTS = sorted(
    p.stem
    for p in (CONF / "experiment").glob("*.yaml")
    if p.stem == "paper_table1" or p.stem.startswith("ablation_")
)
#: method variants each experiment must hold (the ablation's rows)
EXPECTED = {
    "paper_table1": {
        "live2diff",
        "streamdiffusion",
        "streamv2v",
        "per_frame_img2img",
        "animatediff_window",
        "identity",
    },
    "ablation_warmup": {"live2diff", "live2diff_warmup0", "live2diff_warmup2", "live2diff_warmup4"},
    "ablation_window": {"live2diff", "live2diff_window8", "live2diff_window24"},
    "ablation_attention": {"live2diff", "live2diff_window", "live2diff_perframe"},
    "ablation_depth": {"live2diff", "live2diff_nodepth"},
    "ablation_steps": {"live2diff_steps1", "live2diff_steps2", "live2diff_steps3", "live2diff_steps4"},
}
#: what a machine without any weights adds to run a paper experiment on the tiny model (as the README shows)
TINY = ["model=tiny", "hardware=cpu", "+metrics/stand_ins=offline"]


def write_davis(root, names=("blackswan", "dog"), n_frames=12, size=48):
    for i, name in enumerate(names):
        d = root / "JPEGImages" / "480p" / name
        d.mkdir(parents=True)
        clip = generate_clip(n_frames, size, size, seed=i)
        for t, f in enumerate(clip.frames):
            arr = (f.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            Image.fromarray(arr).save(d / f"{t:05d}.jpg", quality=95)
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("\n".join(names) + "\n")
    return root


def test_every_expected_experiment_exists():
    assert set(EXPECTED) == set(EXPERIMENTS)
    # test_paper_table1_runs_on_the_tiny_model is also the in-process end-to-end run of `make eval`'s methods
    assert EXPECTED["paper_table1"] == set(compose([]).method)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_has_the_paper_setup(name):
    cfg = compose([f"experiment={name}", "dataset.root=/data/DAVIS"])
    assert set(cfg.method) == EXPECTED[name]
    assert cfg.dataset.prompts == "builtin:davis2017_val" and list(cfg.dataset.size) == [512, 512]
    assert cfg.dataset.video_list == "ImageSets/2017/val.txt" and cfg.model.size == "sd15"
    m = cfg.metrics
    assert {
        "clip_score",
        "clip_consistency",
        "warp_error",
        "warp_error_streamv2v",
        "depth_error",
        "lpips",
    } <= set(m)
    assert m.warp_error.flow == "raft" and m.clip_score.require_weights and m.depth_error.require_weights
    assert m.warp_error_streamv2v.variant == "streamv2v_compat"
    # the depth metric reads Live2Diff's DPT folder unless given its own
    cfg = compose([f"experiment={name}", "model.weights.depth=/w/dpt"])
    assert cfg.metrics.depth_error.weights == "/w/dpt"
    assert cfg.report.compare_to in cfg.method
    for r in cfg.report.get("reference") or []:  # published figures always carry their source
        assert r.source and r.value is not None


def _run(name, tmp_path):
    root = write_davis(tmp_path / "DAVIS", names=("blackswan",), n_frames=10)
    return run_config(tmp_path, f"experiment={name}", *TINY, f"dataset.root={root}", "dataset.size=[48,48]")


def _check_run(name, summary):
    assert not summary.failed, [(u.method, u.video, u.error) for u in summary.failed]
    d = summary.run_dir
    table = pd.read_csv(d / "per_method.csv")
    assert set(table.method) == EXPECTED[name]
    assert {"clip_score", "depth_error", "warp_error", "warp_error_streamv2v", "latency_p50_ms"} <= set(
        table.metric
    )
    assert (d / "quality_vs_speed.png").stat().st_size > 1000  # the ablation's quality-vs-latency plot
    assert "Depth error" in (d / "summary.md").read_text()
    videos = summary.videos
    prompts = set(videos.get("prompt", pd.Series(dtype=str)).dropna()) if "prompt" in videos else set()
    assert not prompts or all(p.startswith("a watercolor painting of") for p in prompts)


def test_paper_table1_runs_on_the_tiny_model(tmp_path):
    summary = _run("paper_table1", tmp_path)
    _check_run("paper_table1", summary)
    text = (summary.run_dir / "summary.md").read_text()
    for ref in compose(["experiment=paper_table1", "dataset.root=/d"]).report.reference:
        assert ref.source in text  # every cited figure is printed with its source


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in EXPERIMENTS if n != "paper_table1"])
def test_ablation_runs_on_the_tiny_model(name, tmp_path):
    _check_run(name, _run(name, tmp_path))
