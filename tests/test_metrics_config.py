"""The metric configs: the default set instantiates offline with no weights; opt-in sets say what they need."""

from __future__ import annotations

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf
from omegaconf.errors import MissingMandatoryValue

from tests.conftest import compose


def test_default_metrics_instantiate_offline_and_describe_themselves():
    cfg = compose()
    names = set(cfg.metrics)
    assert {"warp_error", "warp_error_input", "clip_score", "clip_consistency"} <= names
    assert "lpips" not in names  # needs a weights file: opt-in (+metrics/add=lpips)
    metrics = {k: instantiate(v) for k, v in cfg.metrics.items()}
    for name, m in metrics.items():
        d = m.describe()
        assert {"display_name", "unit", "higher_is_better"} <= set(d), name
    assert metrics["clip_score"].clip is metrics["clip_consistency"].clip
    assert metrics["clip_score"].describe()["comparable"] is False
    assert metrics["warp_error_input"].describe()["display_name"] == "Warp error (input)"


def test_clip_weights_key_reaches_both_clip_metrics():
    cfg = compose(["metrics.clip_score.weights=/w.bin"])
    assert cfg.metrics.clip_consistency.weights == "/w.bin"


def test_warp_error_flow_settings_reach_the_input_row():
    cfg = compose(["metrics.warp_error.flow=raft", "metrics.warp_error.raft_weights=/r.pth"])
    assert (
        cfg.metrics.warp_error_input.flow == "raft" and cfg.metrics.warp_error_input.raft_weights == "/r.pth"
    )


def test_lpips_opt_in_requires_weights(tmp_path):
    cfg = compose(["+metrics/add=lpips"])
    with pytest.raises(MissingMandatoryValue, match="weights"):
        OmegaConf.to_container(cfg.metrics.lpips, resolve=True, throw_on_missing=True)
    with pytest.raises(Exception, match=r"weights"):
        instantiate(cfg.metrics.lpips)
    cfg = compose(["+metrics/add=lpips", f"metrics.lpips.weights={tmp_path / 'absent.safetensors'}"])
    with pytest.raises(Exception, match=r"absent\.safetensors.*metrics\.lpips\.weights"):  # Hydra wraps it
        instantiate(cfg.metrics.lpips)


def test_paper_set_requires_every_weight_file():
    cfg = compose(["+metrics/add=paper"])
    assert cfg.metrics.warp_error_streamv2v.variant == "streamv2v_compat"
    assert OmegaConf.is_missing(cfg.metrics.lpips, "weights")
    for name, key in (
        ("clip_score", "metrics.clip_score.weights"),
        ("clip_consistency", "metrics.clip_score.weights"),
        ("warp_error", "metrics.warp_error.raft_weights"),
        ("warp_error_input", "metrics.warp_error.raft_weights"),
    ):
        with pytest.raises(Exception, match=key.replace(".", r"\.")):
            instantiate(cfg.metrics[name])


def test_streamv2v_compat_opt_in_instantiates():
    cfg = compose(["+metrics/add=streamv2v_compat"])
    m = instantiate(cfg.metrics.warp_error_streamv2v)
    assert m.variant == "streamv2v_compat" and "compat" in m.describe()["display_name"]
