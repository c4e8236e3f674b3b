"""StreamDiffusion (Kodaira et al., 2023; github.com/cumulo-autumn/StreamDiffusion) as a StreamMethod.

* **Stream batch**: one UNet call per pushed frame holds every frame in flight, each at its own step of
  ``t_index_list`` (newest at the noisiest); between steps the clean estimate is re-noised to the next timestep with
  that step's fixed ``init_noise``. Output lags input by ``len(t_index_list) - 1`` pushes.
* **RCFG, self-negative** (``cfg_type: self``): the negative noise prediction is the *stock noise* (initial noise
  plus the residual implied by the previous step), so guidance costs no second UNet pass. ``initialize`` adds one
  row (the newest frame with the negative prompt) whose prediction initialises that frame's stock noise; ``full``
  is classic CFG (every row twice); ``none`` turns guidance off.
* **Stochastic similarity filter** (``live2diff/similar_filter.py``, the same policy as ``live2diff_ssf``): a frame
  whose cosine similarity to the last processed input frame is high is skipped with probability
  ``max(0, 1 - (1 - cos) / (1 - threshold))`` (the reference's ``max_skip_frame`` counting) and is emitted at once
  with the last emitted output, as the reference returns ``prev_image_result``. The random draw is a function of
  (seed, frame index), so the skip pattern is reproducible under the seed.
* **Noise schedule**: SD1.5's ``scaled_linear`` betas by default, as the reference builds its LCM scheduler from
  the pipeline's scheduler config.
* **Prompt encoding**: ``clip_skip: 0`` (the text encoder's final layer), as the reference's ``prepare`` calls the
  pipeline's ``encode_prompt`` without a clip skip; the model config's ``clip_skip`` (2, Live2Diff's) is not used.
* **Re-noising** (``renoise``, the reference's ``do_add_noise``): True (the reference's default) noises each
  frame's clean estimate to the next step with that step's ``init_noise``; False only scales it by the next step's
  sqrt(alpha_bar) (its vid2vid example, ``conf/method/streamdiffusion_vid2vid.yaml``).

Where this differs from the reference, on purpose:

* With a KL VAE (``model.vae.kind: kl``) the reference *samples* the posterior with its generator
  (``retrieve_latents``' default); this project takes the posterior mean, so a frame's latent does not depend on a
  generator's position. TAESD (the reference wrapper's default, and this project's) has no posterior: no difference.
* The similarity filter returns a skipped frame at once; the reference ``time.sleep(inference_time_ema)`` first,
  so the ``*_ssf`` rows' FPS is higher than the reference's would be.

``tests/test_reference_streamdiffusion.py`` runs the authors' code (``streamdiffusion==0.1.1``) on the same
weights, frames and noise and checks that the frames agree (``docs/reference_equivalence.md``).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from baselines.common import LatentStreamMethod
from eval.interface import Emission
from live2diff.components import DEFAULT_T_INDEX_LIST
from live2diff.similar_filter import SimilarFrameSkipper, SimilarImageFilter

__all__ = ["SimilarImageFilter", "StreamDiffusion"]


class StreamDiffusion(LatentStreamMethod):
    #: the settings with which this class computes what the authors' code computes; any other value is a variant of
    #: ours, named in the report header (eval.method_notes). renoise true and false are both the authors' settings.
    reference_settings = {"clip_skip": 0}

    def __init__(
        self,
        model: Any = "tiny",
        device: str = "cpu",
        dtype: str = "float32",
        t_index_list: list[int] | tuple[int, ...] = DEFAULT_T_INDEX_LIST,
        stream_batch: bool = True,
        noise: str = "fixed",
        cfg_type: str = "self",
        guidance_scale: float = 1.2,
        delta: float = 1.0,
        similar_image_filter: bool = True,
        similar_image_filter_threshold: float = 0.98,
        similar_image_filter_max_skip_frame: int = 10,
        num_inference_steps: int = 50,
        negative_prompt: str = "",
        noise_schedule: str | None = "scaled_linear",
        renoise: bool = True,
        clip_skip: int | None = 0,
    ) -> None:
        self.filter = (
            SimilarFrameSkipper(similar_image_filter_threshold, similar_image_filter_max_skip_frame)
            if similar_image_filter
            else None
        )
        super().__init__(
            model,
            device,
            dtype,
            t_index_list,
            stream_batch=stream_batch,
            noise=noise,
            cfg_type=cfg_type,
            guidance_scale=guidance_scale,
            delta=delta,
            num_inference_steps=num_inference_steps,
            negative_prompt=negative_prompt,
            noise_schedule=noise_schedule,
            renoise=renoise,
            clip_skip=clip_skip,
        )

    def reset(self) -> None:
        super().reset()
        if getattr(self, "filter", None) is not None:
            self.filter.reset()

    @property
    def skipped(self) -> list[int] | None:
        """Indices the similarity filter skipped in this stream (None without a filter: nothing to report)."""
        return self.filter.skipped if self.filter is not None else None

    @property
    def n_skipped(self) -> int:
        return len(self.skipped or [])

    def admit(self, index: int, frame: Tensor, out: list[Emission]) -> bool:
        if self.filter is None:
            return True
        shown = self.filter.check(index, frame, self.seed)
        if shown is None:
            return True
        out.append((index, shown))  # skipped: the last emitted output, at once
        return False

    def push(self, index: int, frame: Tensor) -> list[Emission]:
        out = super().push(index, frame)
        if self.filter is not None:
            self.filter.emitted(out)
        return out
