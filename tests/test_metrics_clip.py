"""CLIP score / consistency: equal to a direct open_clip computation, static video, sharing, weights, chunking."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from eval.metrics.clip import RANDOM_NOTE, ClipConsistency, ClipScore, load_clip

PROMPT = "a watercolor painting of a fox running through snow"


@pytest.fixture(scope="module")
def frames():
    g = torch.Generator().manual_seed(0)
    return torch.rand(6, 3, 32, 32, generator=g)


def test_clip_score_equals_direct_open_clip(frames):
    import open_clip

    m = ClipScore()
    m.update(frames, frames, prompt=PROMPT)
    model = m.clip.model  # the same model object
    pp = open_clip.get_model_preprocess_cfg(model)
    with torch.no_grad():
        x = (frames - torch.tensor(pp["mean"])[:, None, None]) / torch.tensor(pp["std"])[:, None, None]
        img = F.normalize(model.encode_image(x), dim=-1)
        txt = F.normalize(model.encode_text(open_clip.get_tokenizer("ViT-B-32")([PROMPT])), dim=-1)
    direct = 100 * (img @ txt.T)[:, 0]
    torch.testing.assert_close(m.frame_scores().float(), direct, rtol=0, atol=1e-5)
    torch.testing.assert_close(m.compute().float(), direct.mean(), rtol=0, atol=1e-5)


def test_clip_consistency_equals_direct_open_clip(frames):
    m = ClipConsistency()
    m.update(frames, frames)
    with torch.no_grad():
        x = m.clip.preprocess(frames)
        img = F.normalize(m.clip.model.encode_image(x), dim=-1)
    direct = (img[:-1] * img[1:]).sum(-1)
    torch.testing.assert_close(m.frame_scores()[1:].float(), direct, rtol=0, atol=1e-5)


def test_preprocessing_close_to_open_clip_pil_pipeline():
    """Our tensor preprocessing of a larger frame ~ open_clip's own PIL transform (resampling round-off only)."""
    import open_clip
    from PIL import Image

    m = ClipScore()
    g = torch.Generator().manual_seed(1)
    frame = F.interpolate(torch.rand(1, 3, 12, 16, generator=g), size=(96, 128), mode="bilinear")
    u8 = (frame * 255).round() / 255
    ours = m.clip.preprocess(u8)
    pil = Image.fromarray((u8[0].permute(1, 2, 0).numpy() * 255).round().astype("uint8"))
    pp = open_clip.get_model_preprocess_cfg(m.clip.model)
    ref = open_clip.image_transform(pp["size"], is_train=False, mean=pp["mean"], std=pp["std"])(pil)[None]
    assert (ours - ref).abs().mean() < 0.02


def test_static_video_consistency_is_one(frames):
    m = ClipConsistency()
    m.update(frames[:1].repeat(5, 1, 1, 1), frames[:1].repeat(5, 1, 1, 1))
    assert float(m.compute()) == pytest.approx(1.0, abs=1e-12)


def test_model_loaded_once_and_shared():
    assert ClipScore().clip is ClipConsistency().clip


def test_random_weights_are_flagged():
    d = ClipScore().describe()
    assert d["comparable"] is False and RANDOM_NOTE in d["notes"]
    assert ClipScore.describe()["higher_is_better"] is True  # class-level describe still works


def test_chunking_and_batch_size_do_not_change_scores(frames):
    ref_s, ref_c = ClipScore(batch_size=16), ClipConsistency(batch_size=16)
    ref_s.update(frames, frames, prompt=PROMPT)
    ref_c.update(frames, frames)
    for bs, chunk in ((1, 1), (2, 4), (4, 2)):
        s, c = ClipScore(batch_size=bs), ClipConsistency(batch_size=bs)
        for i in range(0, frames.shape[0], chunk):
            s.update(frames[i : i + chunk], frames[i : i + chunk], prompt=PROMPT)
            c.update(frames[i : i + chunk], frames[i : i + chunk])
        torch.testing.assert_close(s.frame_scores(), ref_s.frame_scores(), rtol=0, atol=1e-5)
        torch.testing.assert_close(c.frame_scores(), ref_c.frame_scores(), rtol=0, atol=1e-6, equal_nan=True)


def test_no_prompt_gives_nan_not_a_crash(frames):
    m = ClipScore()
    m.update(frames, frames)
    assert torch.isnan(m.frame_scores()).all() and torch.isnan(m.compute())


def test_loads_local_weights_file(tmp_path, frames):
    from safetensors.torch import save_file

    rand = load_clip()
    sd = {k: (v + 0.01 * torch.randn_like(v)).contiguous() for k, v in rand.model.state_dict().items()}
    path = tmp_path / "open_clip_tiny.safetensors"
    save_file(sd, str(path))
    m = ClipScore(weights=str(path), model_name="tiny")
    assert m.clip is not rand and m.describe()["comparable"] is True
    for k, v in sd.items():
        torch.testing.assert_close(m.clip.model.state_dict()[k], v, rtol=0, atol=0)
    assert ClipConsistency(weights=str(path), model_name="tiny").clip is m.clip


def test_missing_weights_names_file_and_key(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.bin.*metrics\.clip_score\.weights"):
        ClipScore(weights=str(tmp_path / "missing.bin"))
