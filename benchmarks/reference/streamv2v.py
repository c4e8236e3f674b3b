"""StreamV2V's own code (Jeff-LiangF/streamv2v, UT Austin Research License) run as an oracle from a checkout, never
copied: this module imports the authors' ``StreamV2VWrapper`` and ``CachedSTXFormersAttnProcessor`` from the
checkout and records their per-frame outputs on the cases of :mod:`live2diff.testing.streamv2v_golden`.

What runs is theirs: the wrapper loads the fixture's SD1.5 folder and TAESD (their loader), their ``StreamV2V``
pipeline does the stream batch (zero-initialised buffer, re-noising, LCM boundary scalings), their processor does
the feature bank (write every ``cache_interval``-th call, ToMe merge, extended attention, feature fusion) and their
``__call__`` pre/post-processes each frame. The patches, all here, change where it runs, not what it computes:

* their feature bank exists only in ``CachedSTXFormersAttnProcessor`` (``acceleration="xformers"``); xformers is a
  CUDA library, so the wrapper is built with ``acceleration="none"`` and the processors are installed afterwards,
  on every attention layer with the wrapper's own arguments, as its xformers branch does;
* their one xformers call, ``xformers.ops.memory_efficient_attention(q, k, v, attn_bias=None, scale=s)`` on
  ``[batch·heads, tokens, dim]`` tensors, is plain attention ``softmax(q kᵀ · s) v``: a stand-in module provides it;
* ``USE_PEFT_BACKEND`` is set True in their processor module, so that it calls diffusers ≥ 0.26's plain
  ``nn.Linear`` projections without the ``scale`` argument their pinned diffusers' LoRA layers took (no LoRA is
  loaded: ``use_lcm_lora=False``, as diffusers' LoRA loader needs PEFT);
* ``torch.cuda.Event`` / ``torch.cuda.synchronize`` (timing only, in ``StreamV2V.__call__``) are no-ops while it runs;
* ``einops`` (imported by their ``models/utils.py`` for a function this path never calls) is a stand-in when absent;
* injected inputs: after ``prepare`` their ``init_noise`` is replaced by the case's noise, and ``torch.rand`` in their
  ``models/utils.py`` (ToMe's random split, ``torch.rand(B, N, 1).argsort(1)`` from the global RNG) draws from a
  seeded generator; their ``random_bipartite_soft_matching`` is wrapped to record, per call and layer, the split it
  used and the matching it made (read from the merge function it returns), for the test to replay in ours.

The stream is pushed as their vid2vid script pushes it (the first frame ``first_frame_repeats`` times, then every
frame), then ``n_steps - 1`` more copies of the last frame so that the last frames come out (their pipeline has no
flush; the extra rows only occupy steps the last frames have already passed). Frame ``t``'s outputs are those of
the call that completes it: call ``repeats + t + n_steps - 1``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import subprocess
import sys
import tempfile
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

NAME = "streamv2v"
HELP = (
    "checkout of Jeff-LiangF/streamv2v (its feature bank, ToMe merge and fusion; golden latents and frames)"
)

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from live2diff.testing import streamv2v_golden as G  # noqa: E402

log = logging.getLogger(__name__)
PATCHES = [
    "CachedSTXFormersAttnProcessor installed on every attention layer with the wrapper's arguments (its xformers "
    "branch), the wrapper built with acceleration='none'",
    "xformers.ops.memory_efficient_attention(q, k, v, attn_bias=None, scale=s) = softmax(q k^T s) v",
    "USE_PEFT_BACKEND=True in streamv2v.models.attention_processor (no `scale` argument to nn.Linear)",
    "torch.cuda.Event / torch.cuda.synchronize no-ops (timing only)",
    "einops stand-in when not installed (rearrange is not called on this path)",
    "init_noise replaced after prepare; torch.rand in streamv2v.models.utils drawn from a seeded generator",
    "random_bipartite_soft_matching wrapped to record the split (a_idx, b_idx) and the matching (dst_idx) it made",
]


def _git(checkout: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(checkout), *args], capture_output=True, text=True, check=True
    ).stdout


def _commit(checkout: Path) -> tuple[str, bool]:
    try:
        commit = _git(checkout, "rev-parse", "HEAD").strip()
        dirty = bool(_git(checkout, "status", "--porcelain", "--untracked-files=no").strip())
    except (OSError, subprocess.CalledProcessError) as e:
        raise SystemExit(
            f"--streamv2v {checkout}: not a git checkout ({e}); make one with `{G.REGENERATE}`"
        ) from e
    return commit, dirty


def _plain_attention(query, key, value, attn_bias=None, op=None, scale=None):
    """xformers.ops.memory_efficient_attention on 3-D [batch·heads, tokens, dim] inputs, without a bias."""
    if attn_bias is not None or query.ndim != 3:
        raise NotImplementedError("the stand-in covers the reference's self-/cross-attention calls only")
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    return ((query @ key.transpose(-1, -2)) * scale).softmax(dim=-1) @ value


class _CudaEvent:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def record(self, *args: Any) -> None:
        pass

    def elapsed_time(self, other: Any) -> float:
        return 0.0


def _closure(fn: Any) -> dict[str, Any]:
    return dict(zip(fn.__code__.co_freevars, (c.cell_contents for c in fn.__closure__ or ())))


class _Draws:
    """ToMe's random split and matching as the reference made them. ``torch`` as their ``models/utils.py`` sees it
    draws ``rand`` from a seeded generator (their global RNG, made reproducible); their
    ``random_bipartite_soft_matching`` is wrapped to read, from the merge function it returns, the split it used
    (``a_idx``: src, ``b_idx``: dst) and its matching (``dst_idx``), recorded under the current (call, layer)."""

    def __init__(self, matching: Any) -> None:
        self.matching = matching
        self.generator = torch.Generator()
        self.current: tuple[int, str] | None = None
        self.perms: dict[tuple[int, str], torch.Tensor] = {}
        self.nearest: dict[tuple[int, str], torch.Tensor] = {}

    def module(self) -> types.ModuleType:
        draws = self

        class TorchWithSeededRand(types.ModuleType):
            def __getattr__(self, name: str) -> Any:
                return draws.rand if name == "rand" else getattr(torch, name)

        return TorchWithSeededRand("torch")

    def rand(self, *size: Any, device: Any = None, **kwargs: Any) -> torch.Tensor:
        if self.current is None:
            raise RuntimeError(f"unexpected torch.rand{size} in the reference outside a ToMe merge")
        out = torch.rand(*size, generator=self.generator, **kwargs)
        return out.to(device) if device is not None else out

    def recorded_matching(self, *args: Any, **kwargs: Any) -> Any:
        fns = self.matching(*args, **kwargs)
        cells = _closure(fns[0])  # merge_kv_out: dst_idx, and split() whose own closure holds a_idx / b_idx
        cells.update(_closure(cells["split"]))
        if self.current is None or self.current in self.perms:
            raise RuntimeError(f"unexpected ToMe merge in the reference (call/layer {self.current})")
        perm = torch.cat([cells["a_idx"], cells["b_idx"]], dim=1)[..., 0]
        self.perms[self.current] = perm.to(torch.int32)
        self.nearest[self.current] = cells["dst_idx"][..., 0].to(torch.int32)
        return fns


@contextlib.contextmanager
def _reference(checkout: Path) -> Iterator[tuple[Any, Any, _Draws]]:
    """Import their wrapper and processor module from ``checkout`` with the patches above; undone on exit."""
    added = [str(checkout / "src"), str(checkout)]
    sys.path[:0] = added
    saved_cuda = (torch.cuda.Event, torch.cuda.synchronize)
    saved_grad = torch.is_grad_enabled()  # their wrapper module calls torch.set_grad_enabled(False) on import
    stub_einops = importlib.util.find_spec("einops") is None
    if stub_einops:
        sys.modules["einops"] = types.ModuleType("einops")
        sys.modules["einops"].rearrange = None
    before = set(sys.modules)
    try:
        torch.cuda.Event, torch.cuda.synchronize = _CudaEvent, lambda *a, **k: None
        spec = importlib.util.spec_from_file_location("_streamv2v_wrapper", checkout / "utils" / "wrapper.py")
        wrapper = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(wrapper)
        ap = sys.modules["streamv2v.models.attention_processor"]
        ap.USE_PEFT_BACKEND = True
        ap.xformers = types.SimpleNamespace(
            ops=types.SimpleNamespace(memory_efficient_attention=_plain_attention)
        )
        utils = sys.modules["streamv2v.models.utils"]
        draws = _Draws(utils.random_bipartite_soft_matching)
        utils.torch = draws.module()
        ap.random_bipartite_soft_matching = draws.recorded_matching
        yield wrapper, ap, draws
    finally:
        torch.cuda.Event, torch.cuda.synchronize = saved_cuda
        torch.set_grad_enabled(saved_grad)
        for name in set(sys.modules) - before:
            if name.split(".")[0] == "streamv2v" or name == "_streamv2v_wrapper":
                del sys.modules[name]
        if stub_einops:
            sys.modules.pop("einops", None)
        for p in added:
            sys.path.remove(p)


def _run_case(case: G.Case, fixture: dict[str, Path], checkout: Path) -> dict[str, torch.Tensor]:
    r = case.reference
    frames = G.make_frames(case)
    noise = G.make_noise(case)
    n = case.n_steps
    with _reference(checkout) as (wrapper_mod, ap, draws), torch.no_grad():
        torch.manual_seed(case.seed)
        draws.generator.manual_seed(2000 + case.seed)
        stream = wrapper_mod.StreamV2VWrapper(
            model_id_or_path=str(fixture["base"]),
            t_index_list=list(r["t_index_list"]),
            output_type="pt",
            mode="img2img",
            vae_id=str(fixture["taesd"]),
            device="cpu",
            dtype=torch.float32,
            frame_buffer_size=r["frame_buffer_size"],
            width=G.WIDTH,
            height=G.HEIGHT,
            acceleration="none",
            do_add_noise=r["do_add_noise"],
            use_lcm_lora=False,
            use_tiny_vae=True,
            enable_similar_image_filter=False,
            use_denoising_batch=r["use_denoising_batch"],
            cfg_type=r["cfg_type"],
            use_cached_attn=r["use_cached_attn"],
            use_feature_injection=r["use_feature_injection"],
            feature_injection_strength=r["feature_injection_strength"],
            feature_similarity_threshold=r["feature_similarity_threshold"],
            cache_interval=r["cache_interval"],
            cache_maxframes=r["cache_maxframes"],
            use_tome_cache=r["use_tome_cache"],
            tome_metric=r["tome_metric"],
            tome_ratio=r["tome_ratio"],
            seed=case.seed,
        )
        unet = stream.stream.pipe.unet
        procs = {}
        for key in unet.attn_processors:  # their _load_model's xformers branch, with the same arguments
            proc = ap.CachedSTXFormersAttnProcessor(
                name=key,
                use_feature_injection=stream.use_feature_injection,
                feature_injection_strength=stream.feature_injection_strength,
                feature_similarity_threshold=stream.feature_similarity_threshold,
                interval=stream.cache_interval,
                max_frames=stream.cache_maxframes,
                use_tome_cache=stream.use_tome_cache,
                tome_metric=stream.tome_metric,
                tome_ratio=stream.tome_ratio,
            )
            merge, layer = proc._tome_step_kvout, key.removesuffix(".processor")

            def tracked(keys, values, outputs, proc=proc, merge=merge, layer=layer):
                draws.current = (proc.frame_id, layer)
                try:
                    return merge(keys, values, outputs)
                finally:
                    draws.current = None

            proc._tome_step_kvout = tracked
            procs[key] = proc
        unet.set_attn_processor(procs)
        stream.prepare(prompt=G.PROMPT, num_inference_steps=50, guidance_scale=r["guidance_scale"])
        pipe = stream.stream
        if tuple(pipe.init_noise.shape) != tuple(noise.shape):
            raise RuntimeError(
                f"their init_noise is {tuple(pipe.init_noise.shape)}, the case's {tuple(noise.shape)}"
            )
        pipe.init_noise = noise.clone()

        latents: list[torch.Tensor] = []
        predict = pipe.predict_x0_batch

        def recorded(x_t_latent):
            out = predict(x_t_latent)
            latents.append(out[0].clone())
            return out

        pipe.predict_x0_batch = recorded
        f = frames.float() / 255
        pushes = [f[0]] * r["first_frame_repeats"] + list(f) + [f[-1]] * (n - 1)
        images = [stream(image=x.clone()).clone() for x in pushes]
        calls = len(pushes)
        if any(p.frame_id != calls for p in procs.values()):
            raise RuntimeError("their processors did not run once per UNet call")
    first = r["first_frame_repeats"] + n - 1
    out = {
        "frames": frames,
        "init_noise": noise,
        "latents": torch.stack(latents[first : first + case.frames]),
        "images": torch.stack(images[first : first + case.frames]).float(),
    }
    out.update({G.tome_key(call, layer): perm for (call, layer), perm in draws.perms.items()})
    out.update({G.tome_key(call, layer, "nearest"): m for (call, layer), m in draws.nearest.items()})
    return out


def record(checkout: Path, out_dir: Path) -> list[Path]:
    """Run every case of :data:`live2diff.testing.streamv2v_golden.CASES` through the checkout; write the golden
    files into ``out_dir``."""
    import diffusers
    import transformers

    if not (checkout / "src" / "streamv2v" / "models" / "attention_processor.py").is_file():
        raise SystemExit(
            f"--streamv2v {checkout}: no src/streamv2v/models/attention_processor.py (not streamv2v)"
        )
    commit, dirty = _commit(checkout)
    if dirty:
        log.warning("%s has local changes: the golden files record dirty=true", checkout)
    written: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="streamv2v-fixture-") as tmp:
        fixture = G.write_fixture(Path(tmp))
        digest = G.fixture_sha256(fixture)
        for case in G.CASES.values():
            log.info("streamv2v: case %s (%d frames)", case.name, case.frames)
            tensors = _run_case(case, fixture, checkout)
            meta = {
                "reference": {"repository": G.REPOSITORY, "commit": commit, "dirty": dirty},
                "settings": {
                    **case.reference,
                    "prompt": G.PROMPT,
                    "height": G.HEIGHT,
                    "width": G.WIDTH,
                    "num_inference_steps": 50,
                    "dtype": "float32",
                    "device": "cpu",
                    "use_lcm_lora": False,
                    "use_tiny_vae": True,
                    "frames": case.frames,
                    "noise_seed": 1000 + case.seed,
                    "tome_draw_seed": 2000 + case.seed,
                },
                "fixture": {"widths": G.WIDTHS, "seeds": G.FIXTURE_SEEDS, "sha256": digest},
                "patches": PATCHES,
                "outputs": (
                    "latents[t]: x_0_pred_out of the call that completes frame t (their predict_x0_batch); images[t]: "
                    "that call's decoded frame in [0, 1] (their __call__ + postprocess 'pt')"
                ),
                "versions": {
                    "torch": torch.__version__,
                    "diffusers": diffusers.__version__,
                    "transformers": transformers.__version__,
                },
                "command": G.REGENERATE,
            }
            written += G.save_golden(case, tensors, meta, out_dir)
    return written
