"""The frame size a run uses, and why.

The folder and DAVIS datasets default to the model's own frame size (``model.resolution``: 64 for the tiny models,
512 for SD1.5): their YAML sets ``dataset.size`` to that interpolation, so a model trained at 64x64 is not fed
512x512 frames by default (minutes per clip on a CPU, and not what it was trained for). An explicit
``dataset.size=[H,W]`` (command line or experiment) wins; ``dataset.size=null`` keeps each source's size. The run's
provenance records which of these it was (``frame_size``) and the report header says so in a note.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

#: the key dataset.size follows by default
KEY = "model.resolution"


def follows_model(dataset: Any) -> bool:
    """``dataset.size`` is (still) the interpolation of ``model.resolution``: not set by the user or an experiment."""
    if not isinstance(dataset, DictConfig) or "size" not in dataset:
        return False
    raw = OmegaConf.to_container(dataset, resolve=False).get("size")
    items = raw if isinstance(raw, list) else [raw]
    return any(isinstance(x, str) and KEY in x for x in items)


def frame_size(cfg: DictConfig) -> dict:
    """``{"size": [h, w] | None, "source": ..., "model_resolution": r, "why": text}`` for a composed, valid config.
    ``source``: ``model.resolution`` (the default), ``dataset.size`` (set), ``source`` (``dataset.size=null``),
    ``dataset.height/width`` (synthetic clips), or None for a dataset with neither key."""
    ds = cfg.get("dataset")
    model = cfg.get("model") or {}
    name = model.get("size", "?")
    res = model.get("resolution") if "resolution" in model else None
    trained = (
        f"model={name}'s resolution is {res}x{res}" if res is not None else f"model={name} sets no resolution"
    )
    if isinstance(ds, DictConfig) and "size" in ds:
        size = OmegaConf.to_container(ds.size, resolve=True) if isinstance(ds.size, ListConfig) else ds.size
        size = list(size) if size is not None else None
        if follows_model(ds):
            source, why = (
                KEY,
                f"the model's own (model.resolution={res} of model={name}); dataset.size=[H,W] changes it",
            )
        elif size is None:
            source, why = "source", f"dataset.size=null: each video at its own size ({trained})"
        else:
            source, why = "dataset.size", f"dataset.size set in the config ({trained})"
    elif isinstance(ds, DictConfig) and "height" in ds and "width" in ds:
        size, source = [int(ds.height), int(ds.width)], "dataset.height/width"
        why = f"the synthetic clips' dataset.height/width ({trained})"
    else:
        size, source, why = None, None, "the dataset sets no frame size"
    return {"size": size, "source": source, "model_resolution": res, "why": why}


def frame_size_notes(fs: dict) -> list[str]:
    """The report header's note on the frame size: for datasets with a ``size`` key (folder, DAVIS, a user's)."""
    if fs["source"] not in (KEY, "dataset.size", "source"):
        return []
    size = "each video's own size" if fs["size"] is None else "x".join(str(s) for s in fs["size"])
    return [f"frame size {size}: {fs['why']}"]
