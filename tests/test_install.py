"""The suite installed as a package, not run from a checkout: the wheel carries the configs, the builtin prompts
and the trained tiny model, and its ``live2diff-bench`` command runs from an empty folder (a user's method by
config included). Slow (a wheel build, a venv and three ~5 s processes): the only coverage of the installed
package; the checkout's entry point is covered by tests/test_cli.py and tests/test_external_method.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import ROOT
from tests.test_external_method import PACKAGE

pytestmark = pytest.mark.slow


def _tracked(*tops: str) -> list[str]:
    """The checkout's files under ``tops`` that git tracks or would (untracked, not ignored): what a clone has."""
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", *tops], cwd=ROOT, capture_output=True, text=True
    )
    if out.returncode != 0:
        pytest.skip(f"git ls-files failed in {ROOT}: {out.stderr.strip()}")
    return [f for f in out.stdout.splitlines() if (ROOT / f).is_file()]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """``pip wheel --no-deps`` of a copy of the checkout's files (the build does not write into the checkout)."""
    if shutil.which("git") is None:
        pytest.skip("git is needed to list the checkout's files")
    src = tmp_path_factory.mktemp("src")
    for f in _tracked():
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, src / f)
    out = tmp_path_factory.mktemp("dist")
    # no build isolation: the build backend (setuptools) comes from this environment, so no index is needed
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "-q",
        "--no-deps",
        "--no-build-isolation",
        "-w",
        str(out),
        ".",
    ]
    p = subprocess.run(cmd, cwd=src, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-3000:]
    (whl,) = out.glob("live2diff_bench-*.whl")
    return whl


@pytest.fixture(scope="module")
def bench(wheel, tmp_path_factory) -> Path:
    """A fresh venv with the wheel installed (``--no-deps``): its ``bin/`` folder. torch and the other requirements
    are reused from this interpreter: ``--system-site-packages`` where they are in the base installation, and,
    when this interpreter is itself a venv (``make test``'s .venv), its site-packages listed in a ``.pth`` file
    written after the install (so pip never sees, let alone touches, the checkout's own editable install)."""
    env_dir = tmp_path_factory.mktemp("venv")
    venv.create(env_dir, system_site_packages=True, with_pip=False)
    python = env_dir / "bin" / "python"
    cmd = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index"]
    p = subprocess.run([*cmd, str(wheel)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-3000:]
    if sys.prefix != sys.base_prefix:
        site = subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
        (Path(site) / "_reuse_test_interpreter.pth").write_text("\n".join(sorted(ours)) + "\n")
    return env_dir / "bin"


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing of the checkout on the path
    return {**env, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1", **extra}


def _run(bench: Path, cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    cmd = [str(bench / "live2diff-bench"), *args]
    return subprocess.run(cmd, cwd=cwd, env=_env(**env), capture_output=True, text=True, timeout=600)


def test_wheel_carries_configs_prompts_weights_and_the_command(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    code = [f for f in _tracked("eval", "live2diff", "baselines") if f.endswith(".py")]
    assert code and not [f for f in code if f not in names]
    conf = [f for f in _tracked("conf") if f.endswith(".yaml")]
    assert "conf/config.yaml" in conf and "conf/method/live2diff.yaml" in conf
    missing = [f for f in conf if f"eval/{f}" not in names]  # conf/ ships as eval/conf/
    assert not missing, missing
    prompts = [f for f in _tracked("eval/datasets/prompts") if f.endswith(".yaml")]
    assert prompts and set(prompts) <= names
    assert "live2diff/assets/tiny_trained.safetensors" in names
    entry = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "live2diff-bench = eval.app:run" in zipfile.ZipFile(wheel).read(entry).decode()


def test_installed_command_runs_from_an_empty_folder(bench, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    # the installed package is what runs: configs inside it, not a checkout's
    where = subprocess.run(
        [str(bench / "python"), "-c", "import eval.paths as p; print(p.CHECKOUT, p.CONF_DIR)"],
        cwd=empty,
        env=_env(),
        capture_output=True,
        text=True,
    )
    checkout, conf = where.stdout.split()
    assert checkout == "False" and Path(conf).is_relative_to(bench.parent), where
    p = _run(bench, empty, "method=[identity]", "dataset.num_videos=1")
    assert p.returncode == 0, p.stderr[-3000:]
    run_dir = Path(p.stdout.strip().splitlines()[-1].removeprefix("results: "))
    assert run_dir.is_relative_to(empty / "results" / "default"), p.stdout[-2000:]
    for f in ("summary.md", "report.html", "units.parquet", "provenance.json"):
        assert (run_dir / f).is_file(), f
    assert set(pd.read_parquet(run_dir / "units.parquet").status) == {"ok"}
    # the "did you mean" check lists the installed configs
    bad = _run(bench, empty, "method=[live2dif]")
    assert bad.returncode == 2 and "Did you mean 'live2diff'?" in bad.stderr, bad.stderr[-2000:]


def test_installed_command_runs_an_external_method_and_the_shipped_tiny_model(bench, tmp_path):
    user = tmp_path / "user"
    (user / "my_methods").mkdir(parents=True)
    (user / "my_methods" / "__init__.py").write_text(PACKAGE)
    (user / "conf" / "method").mkdir(parents=True)
    (user / "conf" / "method" / "inverter.yaml").write_text(
        "# @package method.inverter\n_target_: my_methods.Inverter\nstrength: 0.5\n"
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    p = _run(
        bench,
        empty,
        f"hydra.searchpath=[file://{user / 'conf'}]",
        "method=[inverter,per_frame_img2img]",  # per_frame_img2img: model=tiny, the weights inside the package
        "dataset.num_videos=1",
        "dataset.num_frames=4",
        "report.compare_to=inverter",
        PYTHONPATH=str(user),
    )
    assert p.returncode == 0, p.stderr[-3000:]
    run_dir = Path(p.stdout.strip().splitlines()[-1].removeprefix("results: "))
    units = pd.read_parquet(run_dir / "units.parquet")
    assert set(units.method) == {"inverter", "per_frame_img2img"} and set(units.status) == {"ok"}, units
    header = (run_dir / "summary.md").read_text()
    assert "tiny model trained by the project" in header, header[:2000]
