import pytest
import torch
import torch.nn.functional as F

from eval.datasets.synthetic import SyntheticDataset, generate_clip, warp_backward


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_flow_reproduces_next_frame_away_from_occlusions(seed):
    clip = generate_clip(16, 64, 64, seed=seed)
    warped = warp_backward(clip.frames[:-1], clip.flow[1:])
    err = (warped - clip.frames[1:]).abs().amax(dim=1)  # [T-1, H, W]
    visible = ~clip.occlusion[1:]
    assert visible.float().mean() > 0.8
    assert err[visible].mean() < 0.003  # < 1/255 on average: bilinear interpolation error only
    assert err[visible].max() < 0.05
    # the flow is not trivially zero: not warping is much worse
    still = (clip.frames[:-1] - clip.frames[1:]).abs().amax(dim=1)
    assert still[visible].mean() > 5 * err[visible].mean()


def test_occlusion_marks_disocclusions():
    clip = generate_clip(12, 64, 64, seed=3, max_speed=3.0)
    warped = warp_backward(clip.frames[:-1], clip.flow[1:])
    err = (warped - clip.frames[1:]).abs().amax(dim=1)
    occluded = clip.occlusion[1:]
    assert occluded.any()
    assert err[occluded].mean() > 10 * err[~occluded].mean()


def test_first_frame_and_shapes():
    clip = generate_clip(5, 32, 48, seed=0)
    assert clip.frames.shape == (5, 3, 32, 48) and clip.frames.dtype == torch.float32
    assert clip.flow.shape == (5, 2, 32, 48)
    assert clip.occlusion.shape == (5, 32, 48)
    assert torch.all(clip.flow[0] == 0) and not clip.occlusion[0].any()
    assert 0 <= clip.frames.min() and clip.frames.max() <= 1


def test_deterministic_and_seed_dependent():
    a, b, c = (
        generate_clip(4, 32, 32, seed=7),
        generate_clip(4, 32, 32, seed=7),
        generate_clip(4, 32, 32, seed=8),
    )
    assert torch.equal(a.frames, b.frames)
    assert not torch.equal(a.frames, c.frames)


def test_translation_flow_matches_known_shift():
    """Pure background translation: the flow equals minus the velocity everywhere the background is visible."""
    clip = generate_clip(3, 32, 32, seed=0, num_objects=0, rotation=False)
    f = clip.flow[1]
    assert torch.allclose(f, f[:, :1, :1].expand_as(f), atol=1e-5)
    shifted = warp_backward(clip.frames[1:2], clip.flow[2:3])
    inner = (slice(None), slice(None), slice(4, -4), slice(4, -4))
    err = F.l1_loss(shifted[inner], clip.frames[2:3][inner])
    assert err < 5e-3
    assert F.l1_loss(clip.frames[1:2][inner], clip.frames[2:3][inner]) > 2 * err


def test_dataset_sharding_partitions_videos():
    names = [v.name for v in SyntheticDataset(num_videos=5).videos()]
    shards = [
        [v.name for v in SyntheticDataset(num_videos=5, shard=s, num_shards=2).videos()] for s in (0, 1)
    ]
    assert sorted(shards[0] + shards[1]) == sorted(names) and not set(shards[0]) & set(shards[1])
    with pytest.raises(ValueError, match="shard"):
        SyntheticDataset(shard=2, num_shards=2)


def test_dataset_max_frames_and_stride():
    v = SyntheticDataset(num_videos=1, num_frames=20, max_frames=4, stride=3).videos()[0]
    frames = v.load()
    assert frames.shape[0] == 4
    full = generate_clip(20, 64, 64, seed=0).frames
    assert torch.equal(frames, full[[0, 3, 6, 9]])
