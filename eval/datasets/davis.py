"""DAVIS-2017 layout: ``root/JPEGImages/<resolution>/<video>/00000.jpg`` plus a prompts file."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from eval.datasets.base import (
    Video,
    VideoDataset,
    fingerprint,
    folder_fingerprint,
    load_prompts,
    storable,
    unstorable_video,
)
from eval.datasets.files import list_frame_files, read_frame_folder


class DavisDataset(VideoDataset):
    """DAVIS videos (24 fps as captured). ``video_list`` is an optional text file of names, one per line (as in
    ``ImageSets/2017/val.txt``); ``prompts`` defaults to ``root/prompts.yaml``."""

    name = "davis"

    def __init__(
        self,
        root: str,
        *,
        resolution: str = "480p",
        video_list: str | None = None,
        fps: float = 24.0,
        **kwargs,
    ) -> None:
        kwargs.setdefault("prompts", None)
        super().__init__(**kwargs)
        self.root = Path(root).expanduser()
        self.frames_dir = self.root / "JPEGImages" / resolution
        if not self.frames_dir.is_dir():
            raise FileNotFoundError(
                f"dataset.root={root!r}: expected the DAVIS layout {self.frames_dir} (set dataset.root / "
                "dataset.resolution)"
            )
        self.video_list = video_list
        self.fps = fps
        if self.prompts_path is None:
            self.prompts_path = str(self.root / "prompts.yaml")

    def _names(self) -> list[str]:
        if self.video_list is None:
            return sorted(p.name for p in self.frames_dir.iterdir() if p.is_dir())
        path = Path(self.video_list)
        if not path.is_absolute() and not path.is_file():
            path = self.root / path
        if not path.is_file():
            raise FileNotFoundError(f"dataset.video_list={self.video_list!r}: no such file")
        return [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]

    def list_videos(self) -> list[Video]:
        prompts = load_prompts(self.prompts_path)
        out = []
        for name in self._names():
            folder = self.frames_dir / name
            if not storable(name):
                out.append(unstorable_video(name, folder, self.fps))
                continue
            files = list_frame_files(folder) if folder.is_dir() else []
            source: dict = {}
            out.append(
                Video(
                    name,
                    self.prompt_for(name, prompts),
                    self.fps,
                    fingerprint(folder_fingerprint(folder, files), self.transform.describe()),
                    partial(read_frame_folder, folder, self.transform, info=source),
                    {"path": str(folder), "source": source},
                )
            )
        # against every video on disk: a prompts file may well cover more than dataset.video_list selects
        self.warn_unused_prompts(prompts, [p.name for p in self.frames_dir.iterdir() if p.is_dir()])
        return out
