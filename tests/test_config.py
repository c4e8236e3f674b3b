"""Every file in conf/ composes, and every instantiable one instantiates (STYLE rule 8)."""

from __future__ import annotations

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from eval.cli import check_overrides
from tests.conftest import CONF, compose


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_default_config_composes_and_resolves():
    cfg = compose()
    OmegaConf.to_container(cfg, resolve=True)
    assert cfg.dataset._target_.endswith("SyntheticDataset") and cfg.hardware.device == "cpu"
    assert "identity" in cfg.method


@pytest.mark.parametrize("name", options("method"))
def test_method_configs(name):
    """Composes under its own name, and its ``_target_`` is a StreamMethod class. Each method file is instantiated
    (and streamed) once, by tests/test_method_contract.py, not again here."""
    from hydra.utils import get_class

    cfg = compose([f"method=[{name}]"])
    assert list(cfg.method) == [name], "method files need the header '# @package method.<file name>'"
    assert callable(getattr(get_class(cfg.method[name]._target_), "push", None))


def test_several_methods_at_once():
    names = options("method")
    cfg = compose([f"method=[{','.join(names)}]"])
    assert sorted(cfg.method) == names


@pytest.mark.parametrize("name", options("dataset"))
def test_dataset_configs(name, tmp_path):
    overrides = [f"dataset={name}"]
    if name in ("folder", "davis"):
        (tmp_path / "JPEGImages" / "480p" / "clip").mkdir(parents=True)
        (tmp_path / "clip.mp4").write_bytes(b"")
        overrides += [f"dataset.root={tmp_path}", "dataset.default_prompt=p"]
    cfg = compose(overrides)
    ds = instantiate(cfg.dataset, _convert_="all")
    assert ds.videos()


@pytest.mark.parametrize("group", ["model", "hardware", "metrics"])
def test_other_groups_compose(group):
    for name in options(group):
        cfg = compose([f"{group}={name}"])
        OmegaConf.to_container(cfg, resolve=True)
        if group == "metrics":
            for mcfg in cfg.metrics.values():
                assert hasattr(instantiate(mcfg), "higher_is_better")


@pytest.mark.parametrize("name", options("experiment"))
def test_experiment_configs_compose(name):
    cfg = compose(
        [f"experiment={name}", "dataset.root=/nonexistent"]
        if name.startswith("paper")
        else [f"experiment={name}"]
    )
    OmegaConf.to_container(cfg, resolve=False)


def test_did_you_mean():
    msg = check_overrides(["method=[identity,identiy]"])
    assert msg and "Did you mean 'identity'" in msg
    assert "Did you mean 'synthetic'" in check_overrides(["dataset=synthetc"])
    assert check_overrides(["method=[identity]", "dataset.root=x"]) is None


def test_cli_typo_exits_2_with_suggestion(run_py):
    r = run_py("run_eval.py", "method=identty")
    assert r.returncode == 2 and "Did you mean 'identity'" in r.stderr
