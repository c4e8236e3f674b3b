"""Facts with one home: a default that code needs without a composed config is read from conf/config.yaml, so a
change there is a change everywhere (the denoising steps of every method, the report's reference rows)."""

from __future__ import annotations

import inspect

import pytest
from omegaconf import OmegaConf

from tests.conftest import CONF

CONFIG = OmegaConf.load(CONF / "config.yaml")


def _method_targets() -> list[str]:
    targets = []
    for p in sorted((CONF / "method").glob("*.yaml")):
        t = OmegaConf.load(p).get("_target_")
        if t and t not in targets:
            targets.append(t)
    return targets


@pytest.mark.parametrize("target", _method_targets())
def test_a_method_built_in_code_denoises_with_the_configs_t_index_list(target):
    import importlib

    from live2diff.components import DEFAULT_T_INDEX_LIST

    module, _, name = target.rpartition(".")
    params = inspect.signature(getattr(importlib.import_module(module), name)).parameters
    if "t_index_list" not in params:
        pytest.skip(f"{target} does not denoise")
    assert params["t_index_list"].default is DEFAULT_T_INDEX_LIST
    assert list(DEFAULT_T_INDEX_LIST) == list(CONFIG.diffusion.t_index_list)


def test_the_streams_and_the_training_share_the_default():
    from live2diff.components import DEFAULT_T_INDEX_LIST
    from live2diff.pipeline import Live2DiffStream
    from live2diff.train_tiny import stages

    assert inspect.signature(Live2DiffStream).parameters["t_index_list"].default is DEFAULT_T_INDEX_LIST
    assert stages.DEFAULT_T_INDEX_LIST is DEFAULT_T_INDEX_LIST


def test_the_report_defaults_are_the_configs():
    import dataclasses

    from eval.report import build_report
    from eval.report.context import Context
    from eval.sweep import MergeReport

    fields = {f.name: f.default for f in dataclasses.fields(Context)}
    assert fields["compare_to"] == CONFIG.report.compare_to
    assert fields["reference_methods"] == frozenset(CONFIG.report.reference_methods)
    params = inspect.signature(build_report).parameters
    assert params["compare_to"].default == CONFIG.report.compare_to
    assert list(params["reference_methods"].default) == list(CONFIG.report.reference_methods)
    assert MergeReport().compare_to == CONFIG.report.compare_to
