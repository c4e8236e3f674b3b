"""A user's own videos: a directory of video files and/or folders of frames, prompts from ``prompts.yaml``."""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

from eval.datasets.base import (
    Video,
    VideoDataset,
    broken_link,
    file_fingerprint,
    fingerprint,
    folder_fingerprint,
    load_prompts,
    shown,
    storable,
    unreadable_video,
    unstorable_video,
)
from eval.datasets.files import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    list_frame_files,
    probe_fps,
    read_frame_folder,
    read_video_file,
)

log = logging.getLogger(__name__)

PROMPT_FILES = ("prompts.yaml", "prompts.yml", "prompts.json")


class FolderDataset(VideoDataset):
    """``root/*.mp4|*.avi|*.mov`` files and ``root/<name>/*.jpg|*.png`` frame folders.

    Prompts come from ``root/prompts.yaml`` (or ``.json``, or the file named by ``prompts``), keyed by video name
    (file stem or folder name); videos without one get ``default_prompt``. Frame folders play at ``fps``.
    """

    name = "folder"

    def __init__(self, root: str, *, fps: float = 25.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.root = Path(root).expanduser()
        self.fps = fps
        if not self.root.is_dir():
            raise FileNotFoundError(f"dataset.root={root!r} is not a directory")

    def _prompts(self) -> dict[str, str]:
        if self.prompts_path is not None:
            if not str(self.prompts_path).startswith("builtin:") and not Path(self.prompts_path).is_file():
                raise FileNotFoundError(f"dataset.prompts={self.prompts_path!r}: no such file")
            return load_prompts(self.prompts_path)
        for candidate in PROMPT_FILES:
            if (self.root / candidate).is_file():
                self.prompts_path = str(self.root / candidate)
                return load_prompts(self.root / candidate)
        return {}

    def list_videos(self) -> list[Video]:
        prompts = self._prompts()
        out = []
        for entry in sorted(self.root.iterdir()):
            is_video = entry.is_file() and entry.suffix.lower() in VIDEO_EXTENSIONS
            files = list_frame_files(entry) if not is_video and entry.is_dir() else []
            name = entry.stem if is_video else entry.name
            link = broken_link(entry)
            if (is_video or files) and not storable(name):
                out.append(unstorable_video(name, entry, self.fps))  # an error row of its own
            elif (
                link and entry.suffix.lower() in VIDEO_EXTENSIONS
            ):  # meant as a video: an error row of its own
                prompt = prompts.get(entry.stem, self.default_prompt or "")
                out.append(unreadable_video(entry.stem, entry, f"{shown(entry)}: {link}", self.fps, prompt))
            elif is_video or files:
                try:
                    out.append(self._video(entry, name, files, prompts))
                except (
                    OSError
                ) as exc:  # a frame that cannot even be hashed (a symlink loop ...): this video only
                    bad = Path(exc.filename) if exc.filename else entry
                    why = f"{shown(bad)}: {broken_link(bad) or exc.strerror or exc}"
                    out.append(unreadable_video(name, entry, why, self.fps, prompts.get(name, "")))
            elif not entry.name.startswith(".") and entry.name not in PROMPT_FILES:
                log.warning(
                    "dataset.root: skipped %s: %s",
                    shown(entry),
                    link
                    or (
                        f"a folder without frames ({', '.join(IMAGE_EXTENSIONS)})"
                        if entry.is_dir()
                        else f"not a video ({', '.join(VIDEO_EXTENSIONS)}) or frame folder"
                    ),
                )
        if not out:
            raise FileNotFoundError(
                f"dataset.root={str(self.root)!r} holds no videos ({', '.join(VIDEO_EXTENSIONS)}) "
                f"and no folders of frames ({', '.join(IMAGE_EXTENSIONS)})"
            )
        self.warn_unused_prompts(prompts, [v.name for v in out])
        return out

    def _video(self, entry: Path, name: str, frames: list[Path], prompts: dict[str, str]) -> Video:
        """A video file (``frames`` empty) or a folder of ``frames``."""
        source: dict = {}  # filled when decoded: declared vs decoded frames, conversions (eval/datasets/files.py)
        t = self.transform
        if not frames:
            ident = fingerprint(file_fingerprint(entry), t.describe())
            load = partial(read_video_file, entry, t, info=source)
            fps = probe_fps(entry, self.fps)
        else:
            ident = fingerprint(folder_fingerprint(entry, frames), t.describe())
            load = partial(read_frame_folder, entry, t, info=source)
            fps = self.fps
        return Video(
            name, self.prompt_for(name, prompts), fps, ident, load, {"path": str(entry), "source": source}
        )
