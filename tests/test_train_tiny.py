"""The project's trained tiny model: shipped weights load and reconstruct video; training reduces the loss and is
reproducible; a weights file that does not fit the configured architecture is refused."""

from __future__ import annotations

import pytest
import torch

from live2diff import train_tiny
from live2diff.models import build_components


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _tiny_args(**kw):
    args = train_tiny.parse_args(
        ["--synthetic-clips", "3", "--video-clips-per-file", "0", "--clip-frames", "10", "--image-batch", "8"]
        + ["--video-batch", "2", "--max-frames", "6", "--warmup", "3", "--log-every", "1"]
    )
    for k, v in kw.items():
        setattr(args, k, v)
    return args


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
