"""The project's trained tiny model: shipped weights load and reconstruct video; training reduces the loss and is
reproducible; a weights file that does not fit the configured architecture is refused."""

from __future__ import annotations

import hashlib

import pytest
import torch

from live2diff import train_tiny
from live2diff.components import build_components, trained
from tests.conftest import ROOT, compose


def _tiny_args(**kw):
    args = train_tiny.parse_args(
        ["--synthetic-clips", "3", "--video-clips-per-file", "0", "--clip-frames", "10", "--image-batch", "8"]
        + ["--video-batch", "2", "--max-frames", "6", "--warmup", "3", "--log-every", "1"]
        + "--ae-steps 2 --ae-batch 4 --ae-lpips-weight 0".split()  # L1 only: no LPIPS weights in tests
    )
    for k, v in kw.items():
        setattr(args, k, v)
    return args


def test_model_tiny_loads_the_shipped_weights_and_a_24_frame_run_reconstructs_the_input():
    from hydra.utils import instantiate

    from eval.datasets.synthetic import generate_clip
    from eval.metrics.warp_error import WarpError

    cfg = compose(["method=[live2diff]", "model=tiny"])
    path = trained.resolve_trained_path(cfg.model.weights.trained)
    assert path.is_file() and path.stat().st_size < 16e6
    method = instantiate(cfg.method.live2diff)
    from safetensors.torch import load_file

    shipped = load_file(str(path))
    state = method.components.unet.state_dict()
    for key in ("conv_in.weight", "down_blocks.0.motion_modules.0.proj_out.weight"):
        torch.testing.assert_close(state[key], shipped[f"unet.{key}"].float(), rtol=0, atol=0)
    vae = method.components.vae  # the pixel encoder + the trained decoder shipped in the same file
    assert type(vae).__name__ == "PixelEncoderTinyDecoder"
    for key, value in vae.state_dict().items():
        torch.testing.assert_close(value, shipped[f"vae.{key}"].float(), rtol=0, atol=0)
    clip = generate_clip(24, 64, 64, seed=0).frames
    method.prepare("a pencil sketch", height=64, width=64, seed=42)
    out = dict(p for i in range(24) for p in method.push(i, clip[i]))
    out.update(method.flush())
    y = torch.stack([out[i] for i in range(24)])
    l1 = float((y - clip).abs().mean() * 255)
    warp = float(WarpError().score_frames(y, clip, None).nanmean())
    # random weights give ~90-100 grey levels on both; the trained model keeps the input's structure
    assert l1 < 24 and warp < 15, (l1, warp)  # measured 19.5 and 7.8 (the /8 model: l1 26.1)
    # ... and its moving objects: the output's change around its temporal mean correlates with the input's
    # (measured 0.48; the /8 model, whose frames lost the objects, 0.05)
    dy, dx = y - y.mean(0), clip - clip.mean(0)
    moving = float(
        ((dy - dy.mean()) * (dx - dx.mean())).sum() / ((dy - dy.mean()).norm() * (dx - dx.mean()).norm())
    )
    assert moving > 0.35, moving


def test_a_few_training_steps_reduce_the_loss():
    args = _tiny_args(image_steps=40, video_steps=0, lr_image=3e-3)
    trainer = train_tiny.Trainer(args)
    hist = trainer.train_image(log_every=1)
    losses = [h["loss"] for h in hist]
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.7 * first, (first, last)


def test_a_few_decoder_steps_reduce_its_loss():
    args = _tiny_args(image_steps=2, ae_steps=30, ae_batch=8, lr_ae=3e-3)
    trainer = train_tiny.Trainer(args)
    trainer.train_image(log_every=1)
    hist = trainer.train_decoder(log_every=1)
    losses = [h["loss"] for h in hist]
    assert len(losses) == 30 and all(h["stage"] == "decoder" for h in hist)
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.8 * first, (first, last)


def test_the_decoder_loss_has_the_temporal_term_on_pairs_of_frames():
    """Same seed, same batches: the first step's loss grows by the weighted temporal term (the L1 between the
    output's and the input's change over a pair of neighbouring frames), which is positive for an untrained
    decoder; a batch too small for one pair is refused naming the option."""
    first = {}
    for w in (0.0, 2.0):
        trainer = train_tiny.Trainer(_tiny_args(image_steps=0, ae_steps=1, ae_temporal_weight=w))
        first[w] = trainer.train_decoder(log_every=1)[0]["loss"]
    assert first[2.0] > first[0.0] + 1e-4, first
    trainer = train_tiny.Trainer(_tiny_args(image_steps=0, ae_steps=1, ae_batch=1))
    with pytest.raises(ValueError, match="--ae-batch 1.*pairs"):
        trainer.train_decoder()


def test_the_decoder_loss_without_lpips_weights_is_refused_naming_the_option(tmp_path):
    args = _tiny_args(
        image_steps=0, ae_steps=1, ae_lpips_weight=1.0, lpips=str(tmp_path / "absent.safetensors")
    )
    trainer = train_tiny.Trainer(args)
    with pytest.raises(FileNotFoundError, match="--lpips .*absent.safetensors.*convert_lpips_weights"):
        trainer.train_decoder()


def test_an_unknown_vae_kind_is_refused_naming_the_key():
    cfg = train_tiny.load_model_cfg()
    cfg["vae"]["kind"] = "pixel_tiny"
    with pytest.raises(ValueError, match="model.vae.kind.*pixel_tiny.*pixel_taesd"):
        build_components(cfg)


def test_training_is_reproducible_and_the_file_round_trips(tmp_path):
    args = _tiny_args(image_steps=3, video_steps=2)
    a, hist_a, _ = train_tiny.train(args)
    b, hist_b, _ = train_tiny.train(args)
    assert [h["loss"] for h in hist_a] == [h["loss"] for h in hist_b]
    sa, sb = trained.trainable_state(a), trained.trainable_state(b)
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    motion = [k for k in sa if "motion_modules" in k and "proj_out.weight" in k]
    assert motion and any(sa[k].abs().sum() > 0 for k in motion)  # the video stage trained the motion modules
    assert any(k.startswith("vae.decoder.") for k in sa)  # the decoder is part of the trained state
    assert not torch.are_deterministic_algorithms_enabled()  # switched on for training only

    path = tmp_path / "w.safetensors"
    trained.save_trained(a, path, {"command": "test"})
    cfg = train_tiny.load_model_cfg()
    cfg["weights"]["trained"] = str(path)
    loaded = build_components(cfg)
    for k, v in trained.trainable_state(loaded).items():
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


@pytest.mark.slow
def test_the_command_gives_the_same_file_in_two_processes(tmp_path):
    """The CLI twice, in separate processes: byte-identical weights (sha256 in the .json beside them)."""
    import json
    import os
    import subprocess
    import sys

    argv = (
        "--synthetic-clips 2 --video-clips-per-file 0 --clip-frames 8 --image-batch 4 --video-batch 2".split()
    )
    argv += "--max-frames 5 --warmup 2 --image-steps 4 --video-steps 3".split()
    argv += "--ae-steps 3 --ae-batch 2 --ae-lpips-weight 0".split()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    shas = []
    for run in ("a", "b"):
        out = tmp_path / run / "w.safetensors"
        subprocess.run(
            [sys.executable, "-m", "live2diff.train_tiny", *argv, "--out", str(out)],
            check=True,
            env=env,
            cwd=ROOT,
            capture_output=True,
        )
        meta = json.loads(out.with_suffix(".json").read_text())
        assert meta["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
        shas.append(meta["sha256"])
    assert shas[0] == shas[1]
