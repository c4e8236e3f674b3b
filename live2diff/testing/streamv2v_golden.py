"""The StreamV2V differential cases: what ``benchmarks/reference/streamv2v.py`` runs through the authors' code
(Jeff-LiangF/streamv2v, from a git-ignored checkout) and ``tests/test_reference_streamv2v.py`` runs through ours.

Both sides read the same real-layout random fixture (:func:`write_fixture`: a narrow SD1.5 diffusers folder and a
TAESD folder, written by :mod:`live2diff.testing.fixtures`), each with its own loader; the golden file of a case
holds the inputs both sides take (uint8 frames, the stream's init noise, the ToMe splits the reference drew) and the
reference's per-frame outputs (denoised latents and decoded frames), with the reference commit, the settings and the
sha256 of the fixture it was made from (:func:`fixture_sha256`).

Each case names the ``conf/method`` config of ours that claims to reproduce it and the reference settings that
config stands for (``reference``: the keyword arguments of the authors' ``StreamV2VWrapper`` plus their vid2vid
script's first-frame repeats).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor

ROOT = Path(__file__).resolve().parents[2]
GOLDEN_DIR = ROOT / "tests" / "golden"
REPOSITORY = "Jeff-LiangF/streamv2v"
REGENERATE = (
    "git --git-dir=<mirror of Jeff-LiangF/streamv2v> worktree add /work/refs/streamv2v <commit>; "
    "python benchmarks/reference_equivalence.py --streamv2v /work/refs/streamv2v"
)

#: the fixture's sizes: SD1.5's structure (4 levels, 2 layers per block, 12 text layers, TAESD's block counts) with
#: narrow channels, so that both sides run on a CPU in seconds
WIDTHS: dict[str, Any] = {
    "block_out_channels": [32, 64, 64, 64],
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "cross_attention_dim": 64,
    "attention_head_dim": 8,
    "text_hidden_size": 64,
    "text_intermediate_size": 128,
    "text_num_attention_heads": 2,
    "text_projection_dim": 64,
    "text_num_hidden_layers": 12,
    "vae_block_out_channels": [32, 32, 64, 64],
    "taesd_channels": [16, 16, 16, 16],
}
FIXTURE_SEEDS = {"base": 1, "taesd": 4}
HEIGHT, WIDTH = 80, 64  # not square: a transposed token grid cannot pass
PROMPT = "a watercolor painting of a fox in the snow"


def model_overrides(fixture: dict[str, Path]) -> list[str]:
    """Our ``model=sd15`` composed to the fixture's sizes and files (Hydra overrides). No LCM-LoRA on either side:
    the reference loads it through diffusers' PEFT backend, which this environment does not install (LoRA fusion is
    covered by tests/test_weights_real_layouts.py)."""
    w = WIDTHS
    return [
        "model=sd15",
        f"model.unet.block_out_channels=[{','.join(map(str, w['block_out_channels']))}]",
        f"model.unet.cross_attention_dim={w['cross_attention_dim']}",
        f"model.text_encoder.hidden_size={w['text_hidden_size']}",
        f"model.text_encoder.intermediate_size={w['text_intermediate_size']}",
        f"model.text_encoder.num_attention_heads={w['text_num_attention_heads']}",
        f"model.vae.block_out_channels=[{','.join(map(str, w['taesd_channels']))}]",
        f"model.weights.base={fixture['base']}",
        f"model.weights.taesd={fixture['taesd']}",
        "model.weights.lcm_lora=none",
        "model.weights.motion=random",
        "model.weights.depth=random",
        "model.depth.kind=none",  # StreamV2V has no depth path: build none
    ]


@dataclass(frozen=True)
class Case:
    name: str
    method: str  # the conf/method config of ours that reproduces it
    # StreamV2VWrapper keyword arguments (+ first_frame_repeats: the vid2vid script's pushes of the first frame)
    reference: dict[str, Any]
    frames: int
    fast_frames: int  # pushes of the prefix checked in every `make test` (without flush)
    seed: int = 0  # frames, init noise and the ToMe draws
    notes: list[str] = field(default_factory=list)

    @property
    def n_steps(self) -> int:
        return len(self.reference["t_index_list"])

    @property
    def golden(self) -> Path:
        return GOLDEN_DIR / f"streamv2v_{self.name}.safetensors"

    @property
    def meta_path(self) -> Path:
        return GOLDEN_DIR / f"streamv2v_{self.name}.json"


_BANK = {
    "use_cached_attn": True,
    "use_feature_injection": True,
    "feature_injection_strength": 0.8,
    "feature_similarity_threshold": 0.98,
    "tome_metric": "keys",
    "tome_ratio": 0.5,
    "cfg_type": "none",
    "guidance_scale": 1.0,
    "do_add_noise": True,
    "use_denoising_batch": True,
    "frame_buffer_size": 1,
}
CASES: dict[str, Case] = {
    c.name: c
    for c in [
        Case(
            "vid2vid",
            "streamv2v_vid2vid",
            {
                **_BANK,
                "t_index_list": [30, 35, 40, 45],
                "cache_interval": 4,
                "cache_maxframes": 1,
                "use_tome_cache": True,
                "first_frame_repeats": 4,
            },
            frames=24,
            fast_frames=9,
            notes=[
                "vid2vid/main.py's defaults: 4 steps at noise_strength 0.4, the first frame pushed batch_size times"
            ],
        ),
        Case(
            "default",
            "streamv2v",
            {
                **_BANK,
                "t_index_list": [30, 36, 42],
                "cache_interval": 4,
                "cache_maxframes": 1,
                "use_tome_cache": True,
                "first_frame_repeats": 0,
            },
            frames=20,
            fast_frames=0,
            seed=1,
            notes=[
                "the pipeline called frame by frame (no repeated first frame): placeholder rows in the first writes"
            ],
        ),
        Case(
            "fifo",
            "streamv2v_fifo",
            {
                **_BANK,
                "t_index_list": [30, 36, 42],
                "cache_interval": 1,
                "cache_maxframes": 4,
                "use_tome_cache": False,
                "first_frame_repeats": 0,
            },
            frames=20,
            fast_frames=0,
            seed=2,
            notes=[
                "demo_continuous_txt2img's bank settings (cache_interval 1, cache_maxframes 4, no ToMe) on vid2vid"
            ],
        ),
    ]
}


def our_settings(case: Case) -> dict[str, Any]:
    """The keys of our StreamV2V config that the case's reference settings fix (the test checks the composed config)."""
    r = case.reference
    return {
        "t_index_list": list(r["t_index_list"]),
        "cfg_type": r["cfg_type"],
        "guidance_scale": r["guidance_scale"],
        "update_interval": r["cache_interval"],
        "bank_size": r["cache_maxframes"],
        "update": "tome" if r["use_tome_cache"] else "fifo",
        "bank_write": "calls",
        "fusion": r["use_feature_injection"],
        "fusion_strength": r["feature_injection_strength"],
        "fusion_threshold": r["feature_similarity_threshold"],
        # the layer names the reference's processor tests for feature injection
        "fusion_layers": ["up_blocks.0", "up_blocks.1", "mid_block"],
        "first_frame_repeats": r["first_frame_repeats"],
        "noise_schedule": "scaled_linear",  # LCMScheduler.from_config(pipe.scheduler.config): SD1.5's betas
        "clip_skip": 0,  # their prepare: pipe.encode_prompt without a clip skip (the text encoder's final layer)
        "similar_image_filter": False,
    }


# ------------------------------------------------------------------------------------------------ inputs
def write_fixture(root: Path) -> dict[str, Path]:
    """The narrow SD1.5 diffusers folder and the TAESD folder both sides load (deterministic: same bytes each time)."""
    from live2diff.testing import fixtures as fx

    widths = {k: v for k, v in WIDTHS.items() if k != "taesd_channels"}
    base = fx.write_sd15_folder(root / "stable-diffusion-v1-5", widths, seed=FIXTURE_SEEDS["base"])
    taesd = fx.write_taesd_folder(
        root / "taesd", {"taesd_channels": WIDTHS["taesd_channels"]}, FIXTURE_SEEDS["taesd"]
    )
    return {"base": base, "taesd": taesd}


def fixture_sha256(fixture: dict[str, Path]) -> str:
    """sha256 over every file of the fixture folders (relative name and bytes, in sorted order)."""
    h = hashlib.sha256()
    for key in sorted(fixture):
        folder = fixture[key]
        for p in sorted(q for q in folder.rglob("*") if q.is_file()):
            h.update(f"{key}/{p.relative_to(folder).as_posix()}\0".encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def make_frames(case: Case) -> Tensor:
    """uint8 [T, 3, H, W]: a synthetic clip with moving textured shapes (eval.datasets.synthetic), quantised."""
    from eval.datasets.synthetic import generate_clip

    clip = generate_clip(case.frames, HEIGHT, WIDTH, seed=case.seed).frames
    return (clip * 255).round().clamp(0, 255).to(torch.uint8)


def make_noise(case: Case, latent_channels: int = 4, factor: int = 8) -> Tensor:
    """The stream's init noise, one tensor per step ``[n, 4, H/8, W/8]`` (both sides' ``init_noise``)."""
    g = torch.Generator().manual_seed(1000 + case.seed)
    return torch.randn((case.n_steps, latent_channels, HEIGHT // factor, WIDTH // factor), generator=g)


def tome_key(call: int, layer: str, what: str = "split") -> str:
    return f"tome_{what}/{call}/{layer}"


# ------------------------------------------------------------------------------------------------ golden files
def save_golden(case: Case, tensors: dict[str, Tensor], meta: dict[str, Any], out_dir: Path) -> list[Path]:
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    golden = out_dir / case.golden.name
    save_file({k: v.contiguous() for k, v in sorted(tensors.items())}, str(golden))
    meta = {**meta, "case": asdict(case), "golden_sha256": hashlib.sha256(golden.read_bytes()).hexdigest()}
    path = out_dir / case.meta_path.name
    path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return [golden, path]


@dataclass
class Golden:
    meta: dict[str, Any]
    frames: Tensor  # uint8 [T, 3, H, W]
    init_noise: Tensor  # [n, 4, h, w]
    latents: Tensor  # [T, 4, h, w] the reference's denoised latent of each frame
    images: Tensor  # [T, 3, H, W] in [0, 1], the reference's decoded frames
    # (call, layer) -> [n_steps, N]: the splits the reference drew; [n_steps, N/2]: its matching (dst of each src)
    tome: dict[tuple[int, str], Tensor]
    nearest: dict[tuple[int, str], Tensor]

    def draw(self, layer: str, step: int, call: int, n: int) -> Tensor:
        """``FeatureBank.draw`` replaying the reference's ToMe splits (row ``step`` of call ``call``)."""
        try:
            perm = self.tome[(call, layer)][step]
        except KeyError:
            raise KeyError(f"the reference drew no ToMe split at call {call} in {layer}") from None
        if perm.numel() != n:
            raise ValueError(
                f"the reference's split at call {call} in {layer} has {perm.numel()} tokens, ours {n}"
            )
        return perm.long()

    def matched(self, layer: str, step: int, call: int) -> Tensor:
        """The reference's matching at that merge: for each src token, its dst position."""
        return self.nearest[(call, layer)][step].long()


def load_golden(case: Case, folder: Path | None = None) -> Golden:
    folder = folder or GOLDEN_DIR
    meta_path, golden = folder / case.meta_path.name, folder / case.golden.name
    if not meta_path.is_file() or not golden.is_file():
        raise FileNotFoundError(f"{golden} / {meta_path} missing: record them with `{REGENERATE}`")
    meta = json.loads(meta_path.read_text())
    digest = hashlib.sha256(golden.read_bytes()).hexdigest()
    if digest != meta["golden_sha256"]:
        raise ValueError(
            f"{golden}: sha256 {digest} is not the one {meta_path} records; regenerate: `{REGENERATE}`"
        )
    t = load_file(str(golden))
    tome: dict[str, dict[tuple[int, str], Tensor]] = {"split": {}, "nearest": {}}
    for k, v in t.items():
        if k.startswith("tome_"):
            what, call, layer = k.split("/", 2)
            tome[what.removeprefix("tome_")][(int(call), layer)] = v
    return Golden(
        meta, t["frames"], t["init_noise"], t["latents"], t["images"], tome["split"], tome["nearest"]
    )


def check_fixture(golden: Golden, digest: str) -> None:
    """The golden file was recorded on this very fixture (same sizes, seeds and bytes), else it compares nothing."""
    want = golden.meta["fixture"]["sha256"]
    assert digest == want, (
        f"the StreamV2V fixture changed (sha256 {digest[:12]}..., the golden files were recorded on {want[:12]}...: "
        f"live2diff/testing/fixtures/ or streamv2v_golden.py's sizes/seeds moved). Regenerate them from the "
        f"reference checkout: {REGENERATE}"
    )
