"""CLIP text alignment (``clip_score``) and CLIP frame consistency (``clip_consistency``), with open_clip.

Definitions, with ``e(x)`` the L2-normalised CLIP image embedding of frame x and ``e(p)`` that of the prompt:

* ``clip_score``  per frame t: ``scale * cos(e(p), e(O_t))`` (``scale=100`` by default, no clamping at 0); the video's
  value is the mean over frames. StreamV2V's script reports the plain cosine (set ``scale=1``).
* ``clip_consistency`` per frame t >= 1: ``scale * cos(e(O_{t-1}), e(O_t))`` (``scale=1`` by default, so a static
  video scores exactly 1.0), mean over consecutive pairs, as StreamV2V's script computes it.

Frames are preprocessed as CLIP expects, on tensors: bicubic resize (antialiased) of the shorter side to the
model's input size, centre crop, clamp to [0, 1], normalisation with the model's mean/std. (The reference pipelines
do the same through PIL; values differ from them by resampling round-off only.)

Weights: ``weights=/path/open_clip_pytorch_model.bin|.safetensors`` (the open_clip checkpoint of ``model_name``;
for OpenAI's ``openai/clip-vit-base-patch32``, the model the StreamV2V script uses, take ``model_name=ViT-B-32-quickgelu``
with the open_clip/timm conversion of those weights). With ``weights=None`` a tiny random-init CLIP is used so
that everything runs offline; its values are marked not comparable. One model is loaded per (name, file, device)
and shared by every metric that asks for it.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from eval.metrics.base import VideoMetric, check_video, reduce_scores, with_context_head
from eval.weights import resolve_weights

log = logging.getLogger(__name__)

CONFIG_KEY = "metrics.clip_score.weights"
RANDOM_NOTE = "random CLIP weights — not comparable"

#: a tiny ViT CLIP (same code path as ViT-B-32, a fraction of its size): the offline default
TINY_CFG: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


@dataclass
class ClipModel:
    model: torch.nn.Module
    tokenizer: Any
    image_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    comparable: bool
    label: str
    device: str
    _text_cache: dict[str, Tensor] = field(default_factory=dict)

    def preprocess(self, frames: Tensor) -> Tensor:
        """``[N, 3, H, W]`` in [0, 1] -> normalised model input ``[N, 3, S, S]``."""
        x = frames.to(self.device, torch.float32)
        size = min(self.image_size)
        if tuple(x.shape[-2:]) != tuple(self.image_size):
            x = TF.resize(x, size, interpolation=InterpolationMode.BICUBIC, antialias=True)
            x = TF.center_crop(x, list(self.image_size))
        x = x.clamp(0, 1)
        return TF.normalize(x, self.mean, self.std)

    @torch.no_grad()
    def embed_images(self, frames: Tensor, batch_size: int = 16) -> Tensor:
        out = [
            self.model.encode_image(self.preprocess(frames[i : i + batch_size]))
            for i in range(0, frames.shape[0], batch_size)
        ]
        return F.normalize(torch.cat(out).double(), dim=-1)  # float64: a static video scores exactly 1

    @torch.no_grad()
    def embed_text(self, prompt: str) -> Tensor:
        if prompt not in self._text_cache:
            tokens = self.tokenizer([prompt]).to(self.device)
            self._text_cache[prompt] = F.normalize(self.model.encode_text(tokens).double(), dim=-1)[0]
        return self._text_cache[prompt]


_CACHE: dict[tuple, ClipModel] = {}
_LOCK = threading.Lock()


def load_clip(
    model_name: str = "ViT-B-32",
    weights: str | None = None,
    device: str = "cpu",
    config_key: str = CONFIG_KEY,
    require_weights: bool = False,
    quick_gelu: bool | None = None,
) -> ClipModel:
    """The CLIP model for these settings, loaded once per process and shared (cached).

    OpenAI's CLIP weights were trained with QuickGELU: a checkpoint in OpenAI's layout (recognised by the
    ``input_resolution`` / ``context_length`` / ``vocab_size`` entries of OpenAI's own files) builds the
    ``<model_name>-quickgelu`` architecture; ``quick_gelu=False`` with such a file is refused, ``True`` forces it."""
    if require_weights and not weights:
        raise ValueError(
            f"CLIP: real weights are required here (no random fallback); set {config_key}=/path/to/"
            f"open_clip_pytorch_model.bin (the open_clip checkpoint of {model_name})"
        )
    path = str(resolve_weights(weights, config_key, "CLIP")) if weights else None
    openai_sd = None
    if path is not None:
        model_name, openai_sd = _activation(model_name, path, config_key, quick_gelu)
    key = (model_name if path else "tiny-random", path, str(device))
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = _build(model_name, path, device, openai_sd)
        return _CACHE[key]


OPENAI_MARKERS = ("input_resolution", "context_length", "vocab_size")


def _activation(
    model_name: str, path: str, config_key: str, quick_gelu: bool | None
) -> tuple[str, dict | None]:
    """The architecture name for these weights, and their state dict when they are in OpenAI's layout."""
    from eval.weights import read_checkpoint, unwrap_state_dict

    openai_sd = None
    if not path.endswith(".pt"):  # OpenAI's own .pt is a TorchScript archive: open_clip reads it itself
        obj = read_checkpoint(path, config_key, "CLIP")
        sd = unwrap_state_dict(obj, path)[0] if isinstance(obj, dict) else {}
        if any(k in sd for k in OPENAI_MARKERS):
            openai_sd = {k: v for k, v in sd.items() if k not in OPENAI_MARKERS}
    named_quick = model_name.endswith("-quickgelu")
    if openai_sd is not None and (quick_gelu is False):
        raise ValueError(
            f"{path} ({config_key}) holds OpenAI CLIP weights, trained with QuickGELU: set "
            f"model_name={model_name.removesuffix('-quickgelu')}-quickgelu (or leave quick_gelu unset)"
        )
    if quick_gelu is False and named_quick:
        raise ValueError(f"model_name={model_name} contradicts quick_gelu=false")
    if (openai_sd is not None or quick_gelu) and not named_quick:
        log.info("CLIP: %s is in OpenAI's layout: building %s-quickgelu", path, model_name)
        model_name = f"{model_name}-quickgelu"
    return model_name, openai_sd


def _build(model_name: str, path: str | None, device: str, openai_sd: dict | None = None) -> ClipModel:
    import open_clip

    tiny = path is None or model_name == "tiny"
    base = "ViT-B-32" if tiny else model_name
    kwargs = TINY_CFG if tiny else {}
    if path is None:
        log.warning(
            "CLIP metrics: no weights given (%s); using a tiny random-init CLIP — %s", CONFIG_KEY, RANDOM_NOTE
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = open_clip.create_model(base, pretrained=None, device=device, **kwargs)
    elif openai_sd is not None:  # OpenAI's layout with its extra entries: load strictly ourselves
        model = open_clip.create_model(base, pretrained=None, device=device, **kwargs)
        missing, unexpected = model.load_state_dict(openai_sd, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"CLIP weights {path} do not fit {base}: missing {missing[:10]}, unexpected {unexpected[:10]}"
            )
    else:
        model = open_clip.create_model(base, pretrained=path, device=device, **kwargs)
    model.eval()
    pp = open_clip.get_model_preprocess_cfg(model)
    size = model.visual.image_size
    size = (size, size) if isinstance(size, int) else tuple(size)
    label = f"{'tiny' if tiny else model_name} ({path or 'random init'})"
    return ClipModel(
        model,
        open_clip.get_tokenizer(base),
        size,
        tuple(pp["mean"]),
        tuple(pp["std"]),
        comparable=path is not None,
        label=label,
        device=str(device),
    )


def _model(
    model: ClipModel | None,
    model_name: str,
    weights: str | None,
    device: str,
    require_weights: bool,
    quick_gelu: bool | None,
) -> ClipModel:
    return (
        model
        if model is not None
        else load_clip(model_name, weights, device, require_weights=require_weights, quick_gelu=quick_gelu)
    )


def clip_score(
    frames: Tensor,
    prompt: str,
    *,
    weights: str | None = None,
    model_name: str = "ViT-B-32",
    device: str = "cpu",
    batch_size: int = 16,
    scale: float = 100.0,
    require_weights: bool = False,
    quick_gelu: bool | None = None,
    model: ClipModel | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Text-frame alignment of one video: ``scale * cos(e(prompt), e(frame))`` per frame, not clamped at 0.

    Args:
        frames: one video ``[T, 3, H, W]``, float in [0, 1] (any size: resized and centre-cropped as CLIP expects).
        prompt: the text the frames should show.
        weights: an open_clip checkpoint of ``model_name`` (``.bin`` / ``.safetensors``, or OpenAI's layout);
            ``None``: a tiny random CLIP (seed 0) whose values are not comparable with anything published.
        model_name: the open_clip architecture (``ViT-B-32``; ``ViT-B-32-quickgelu`` for OpenAI's weights).
        device: where the model runs.
        batch_size: frames per forward pass (does not change the values).
        scale: the factor (100 as the literature; StreamV2V's script reports the plain cosine, ``scale=1``).
        require_weights: refuse ``weights=None`` instead of falling back to the random CLIP.
        quick_gelu: force (True) or forbid (False) the QuickGELU activation; ``None`` picks it from the file.
        model: a :class:`ClipModel` already loaded (:func:`load_clip`): then ``weights``, ``model_name``,
            ``device``, ``require_weights`` and ``quick_gelu`` are not used.
        reduction: ``"mean"``: the video's value (mean over frames); ``"none"``: the ``[T]`` frame scores.

    Returns:
        A float64 scalar (``"mean"``) or ``[T]`` tensor (``"none"``), on the CPU.

    Raises:
        ValueError: ``frames`` is not ``[T, 3, H, W]``; ``prompt`` is not a string; ``require_weights`` without
            ``weights``; weights that do not fit ``model_name``; an unknown ``reduction``.
        MissingWeightsError: no file at ``weights``.

    >>> import torch
    >>> scores = clip_score(torch.rand(4, 3, 32, 32), "a watercolor cat", reduction="none")
    >>> scores.shape, scores.dtype
    (torch.Size([4]), torch.float64)
    >>> bool((scores.abs() <= 100).all())
    True
    """
    check_video(frames, "clip_score")
    if not isinstance(prompt, str):
        raise ValueError(f"clip_score: prompt must be a string, got {type(prompt).__name__}")
    clip = _model(model, model_name, weights, device, require_weights, quick_gelu)
    img = clip.embed_images(frames, batch_size)
    scores = (scale * (img @ clip.embed_text(prompt))).double().cpu()
    return reduce_scores(scores, reduction, "clip_score")


def clip_consistency(
    frames: Tensor,
    *,
    weights: str | None = None,
    model_name: str = "ViT-B-32",
    device: str = "cpu",
    batch_size: int = 16,
    scale: float = 1.0,
    require_weights: bool = False,
    quick_gelu: bool | None = None,
    model: ClipModel | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Temporal consistency of one video: ``scale * cos(e(frame t-1), e(frame t))`` of CLIP image embeddings.

    Args:
        frames: one video ``[T, 3, H, W]``, float in [0, 1].
        weights, model_name, device, batch_size, require_weights, quick_gelu, model: as :func:`clip_score`.
        scale: the factor (1: a static video scores exactly 1.0).
        reduction: ``"mean"``: the video's value (mean over the pairs); ``"none"``: ``[T]`` frame scores, NaN
            for frame 0 (nothing before it).

    Returns:
        A float64 scalar (``"mean"``; NaN for a single frame) or ``[T]`` tensor (``"none"``), on the CPU.

    Raises:
        ValueError, MissingWeightsError: as :func:`clip_score`.

    >>> import torch
    >>> still = torch.rand(1, 3, 32, 32).repeat(4, 1, 1, 1)  # the same frame four times
    >>> round(clip_consistency(still).item(), 9)
    1.0
    """
    check_video(frames, "clip_consistency")
    clip = _model(model, model_name, weights, device, require_weights, quick_gelu)
    e = clip.embed_images(frames, batch_size)
    scores = (scale * (e[:-1] * e[1:]).sum(-1)).double().cpu()
    return reduce_scores(with_context_head(scores, frames.shape[0], 1), reduction, "clip_consistency")


class _ClipMetric(VideoMetric):
    #: the scale a subclass reports in by default; another scale shows in the unit ("10·cos")
    default_scale: float = 1.0

    def __init__(
        self,
        weights: str | None = None,
        model_name: str = "ViT-B-32",
        device: str = "cpu",
        batch_size: int = 16,
        scale: float | None = None,
        require_weights: bool = False,
        quick_gelu: bool | None = None,
        **kwargs: Any,
    ) -> None:
        """Loads (or reuses) the CLIP model once; every video is then scored with it.

        Args:
            weights, model_name, device, batch_size, require_weights, quick_gelu: as :func:`clip_score`.
            scale: the factor; ``None``: the metric's own (100 for ``clip_score``, 1 for ``clip_consistency``).
                Another scale shows in the unit ("10·cos").
            kwargs: torchmetrics ``Metric`` options.

        Raises:
            ValueError, MissingWeightsError: as :func:`clip_score`.
        """
        super().__init__(**kwargs)
        self.clip = load_clip(
            model_name, weights, device, require_weights=require_weights, quick_gelu=quick_gelu
        )
        self.batch_size = batch_size
        self.scale = float(self.default_scale if scale is None else scale)
        if self.scale != self.default_scale:
            self.unit = f"{self.scale:g}·cos"
        self.comparable = self.clip.comparable
        self.notes = () if self.clip.comparable else (RANDOM_NOTE,)

    def config(self) -> dict[str, Any]:
        return {"model": self.clip.label, "scale": self.scale}


class ClipScore(_ClipMetric):
    """Text-frame alignment: ``scale * cos(text, frame)`` per output frame (scale 100 by default); a video without
    a prompt scores NaN. Functional twin: :func:`clip_score`; the arguments are its own."""

    higher_is_better = True
    display_name = "CLIP score"
    unit = "100·cos"
    context_frames = 0
    default_scale = 100.0
    _warned = False

    def score_frames(self, output: Tensor, source: Tensor, prompt: str | None) -> Tensor:
        if prompt is None:
            if not self._warned:
                log.warning("clip_score: video has no prompt; its frames are scored NaN")
                self._warned = True
            return torch.full((output.shape[0],), float("nan"), dtype=torch.float64)
        return clip_score(
            output, prompt, model=self.clip, batch_size=self.batch_size, scale=self.scale, reduction="none"
        )


class ClipConsistency(_ClipMetric):
    """Temporal consistency: ``scale * cos(frame t-1, frame t)`` of CLIP image embeddings (scale 1 by default).
    Functional twin: :func:`clip_consistency`; the arguments are its own."""

    higher_is_better = True
    display_name = "CLIP consistency"
    unit = "cos"
    context_frames = 1
    default_scale = 1.0

    def score_frames(self, output: Tensor, source: Tensor, prompt: str | None) -> Tensor:
        return clip_consistency(
            output, model=self.clip, batch_size=self.batch_size, scale=self.scale, reduction="none"
        )[1:]
