"""The project's trained tiny model: shipped weights load and reconstruct video; training reduces the loss and is
reproducible; a weights file that does not fit the configured architecture is refused."""

from __future__ import annotations

import pytest
import torch

from live2diff import train_tiny
from live2diff.components import build_components
from tests.conftest import compose


def _tiny_args(**kw):
    args = train_tiny.parse_args(
        ["--synthetic-clips", "3", "--video-clips-per-file", "0", "--clip-frames", "10", "--image-batch", "8"]
        + ["--video-batch", "2", "--max-frames", "6", "--warmup", "3", "--log-every", "1"]
    )
    for k, v in kw.items():
        setattr(args, k, v)
    return args


def test_model_tiny_loads_the_shipped_weights_and_a_24_frame_run_reconstructs_the_input():
    from hydra.utils import instantiate

    from eval.datasets.synthetic import generate_clip
    from eval.metrics.warp_error import WarpError

    cfg = compose(["method=[live2diff]", "model=tiny"])
    path = train_tiny.resolve_trained_path(cfg.model.weights.trained)
    assert path.is_file() and path.stat().st_size < 16e6
    method = instantiate(cfg.method.live2diff)
    from safetensors.torch import load_file

    shipped = load_file(str(path))
    state = method.components.unet.state_dict()
    for key in ("conv_in.weight", "down_blocks.0.motion_modules.0.proj_out.weight"):
        torch.testing.assert_close(state[key], shipped[f"unet.{key}"].float(), rtol=0, atol=0)
    clip = generate_clip(24, 64, 64, seed=0).frames
    method.prepare("a pencil sketch", height=64, width=64, seed=42)
    out = dict(p for i in range(24) for p in method.push(i, clip[i]))
    out.update(method.flush())
    y = torch.stack([out[i] for i in range(24)])
    l1 = float((y - clip).abs().mean() * 255)
    warp = float(WarpError().score_frames(y, clip, None).nanmean())
    # random weights give ~90-100 grey levels on both; the trained model keeps the input's structure
    assert l1 < 30 and warp < 20, (l1, warp)


def test_a_few_training_steps_reduce_the_loss():
    args = _tiny_args(image_steps=40, video_steps=0, lr_image=3e-3)
    trainer = train_tiny.Trainer(args)
    hist = trainer.train_image(log_every=1)
    losses = [h["loss"] for h in hist]
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.7 * first, (first, last)


def test_training_is_reproducible_and_the_file_round_trips(tmp_path):
    args = _tiny_args(image_steps=3, video_steps=2)
    a, hist_a, _ = train_tiny.train(args)
    b, hist_b, _ = train_tiny.train(args)
    assert [h["loss"] for h in hist_a] == [h["loss"] for h in hist_b]
    sa, sb = train_tiny.trainable_state(a), train_tiny.trainable_state(b)
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    motion = [k for k in sa if "motion_modules" in k and "proj_out.weight" in k]
    assert motion and any(sa[k].abs().sum() > 0 for k in motion)  # the video stage trained the motion modules

    path = tmp_path / "w.safetensors"
    train_tiny.save_weights(a, path, {"command": "test"})
    cfg = train_tiny.load_model_cfg()
    cfg["weights"]["trained"] = str(path)
    loaded = build_components(cfg)
    for k, v in train_tiny.trainable_state(loaded).items():
        torch.testing.assert_close(v, sa[k].to(torch.float16).float(), rtol=0, atol=0)


def test_weights_that_do_not_fit_the_architecture_are_refused_naming_the_file(tmp_path):
    from omegaconf import OmegaConf

    cfg = compose(["model=tiny_random"]).model
    cfg = OmegaConf.to_container(cfg, resolve=True)
    cfg["weights"]["trained"] = str(train_tiny.DEFAULT_OUT)
    with pytest.raises(ValueError, match="tiny_trained.safetensors.*model.weights.trained.*tiny_random"):
        build_components(cfg)
    cfg["weights"]["trained"] = str(tmp_path / "absent.safetensors")
    with pytest.raises(FileNotFoundError, match="model.weights.trained"):
        build_components(cfg)
