"""Per-frame img2img: every frame VAE-encoded, noised to ``t_index_list[0]`` and denoised with LCM few-step, alone —
no temporal module, no state carried between frames. The flicker baseline: whatever temporal consistency it shows
comes from the input video and the shared noise only."""

from __future__ import annotations

from typing import Any

from baselines.common import LatentStreamMethod
from live2diff.components import DEFAULT_T_INDEX_LIST


class PerFrameImg2Img(LatentStreamMethod):
    """Each push runs all ``len(t_index_list)`` steps on its own frame and returns it at once (no pipeline lag).

    ``noise="per_frame"`` (default) draws fresh noise per frame, as independent img2img calls do; ``"fixed"``
    reuses one noise tensor per step for every frame. ``noise_schedule`` defaults to SD1.5's ``scaled_linear`` (an
    img2img call of the SD1.5 pipeline with LCM-LoRA); ``clip_skip: 0`` encodes the prompt with the text encoder's
    final layer, as that pipeline does without a ``clip_skip`` argument."""

    reference_settings = {"clip_skip": 0}  # any other value is named in the report header (eval.method_notes)

    def __init__(
        self,
        model: Any = "tiny",
        device: str = "cpu",
        dtype: str = "float32",
        t_index_list: list[int] | tuple[int, ...] = DEFAULT_T_INDEX_LIST,
        noise: str = "per_frame",
        guidance_scale: float = 1.0,
        num_inference_steps: int = 50,
        noise_schedule: str | None = "scaled_linear",
        clip_skip: int | None = 0,
    ) -> None:
        super().__init__(
            model,
            device,
            dtype,
            t_index_list,
            stream_batch=False,
            noise=noise,
            cfg_type="none",
            guidance_scale=guidance_scale,
            num_inference_steps=num_inference_steps,
            noise_schedule=noise_schedule,
            clip_skip=clip_skip,
        )
