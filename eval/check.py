"""Pre-flight check: ``python run_eval.py experiment=paper_table1 ... +check=true``.

Before hours of compute, read the composed config and list everything a run would miss — each weight file with
the config key that sets it (and where to get it), each video without frames, each video without a prompt, each
resolution that does not match — touching only the file system: no model is built. Exit status 2 when anything is
missing. When nothing is, run a short timing probe (each method built once, ``preflight.probe_frames`` frames of
the first video pushed through it, the metrics scored on them) and estimate each method's run time over the whole
dataset; exit status 0.

Settings (all optional; the paper experiments set them in ``conf/experiment/paper_setup.yaml``)::

    preflight:
      required_weights: [model.weights.base, ...]   # keys that must be set (random weights are not the paper)
      required_weights_by_method:                   # keys that must be set when that method is selected
        animatediff_window: [model.weights.animatediff_motion]
      resolution: [512, 512]                        # the experiment's resolution; dataset.size must match
      probe_frames: 6                               # frames per method in the timing probe (0: no probe)
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from eval.weights import local_path

log = logging.getLogger(__name__)

#: model.weights.<key> -> (what it is, where to get it)
MODEL_WEIGHTS = {
    "base": (
        "SD1.5 base weights: diffusers folder or single-file .safetensors",
        "runwayml/stable-diffusion-v1-5",
    ),
    "motion": (
        "Live2Diff checkpoint (motion modules + depth mapping network)",
        "the checkpoint linked from the open-mmlab/Live2Diff README",
    ),
    "lcm_lora": ("LCM-LoRA for SD1.5 (.safetensors)", "latent-consistency/lcm-lora-sdv1-5"),
    "style_lora": ("style LoRA (.safetensors)", "any SD1.5 LoRA"),
    "dreambooth": ("single-file DreamBooth UNet checkpoint", "any SD1.5 DreamBooth checkpoint"),
    "taesd": ("TAESD folder (diffusers AutoencoderTiny)", "madebyollin/taesd"),
    "depth": ("MiDaS DPT folder (transformers DPTForDepthEstimation)", "Intel/dpt-hybrid-midas"),
    "animatediff_motion": (
        "AnimateDiff motion-module checkpoint for animatediff_window (reference key names)",
        "guoyww/animatediff mm_sd_v15_v2.ckpt",
    ),
}
#: metric weights: (config field, what it is, where to get it) by metric class name
METRIC_WEIGHTS = {
    "ClipScore": (
        "weights",
        "open_clip checkpoint",
        "ViT-B-32-quickgelu openai weights (open_clip_pytorch_model.bin)",
    ),
    "ClipConsistency": (
        "weights",
        "open_clip checkpoint",
        "ViT-B-32-quickgelu openai weights (open_clip_pytorch_model.bin)",
    ),
    "LPIPS": (
        "weights",
        "AlexNet-LPIPS safetensors",
        "python -m eval.metrics.convert_lpips_weights --out weights/lpips_alex.safetensors",
    ),
    "DepthError": (
        "weights",
        "MiDaS DPT folder",
        "Intel/dpt-hybrid-midas (the folder model.weights.depth uses)",
    ),
}
RAFT_SOURCE = "torchvision raft_large_C_T_SKHT_V2-ff5fadd5.pth (download.pytorch.org/models/)"
_SENTINEL = "\x00no prompt\x00"


@dataclass
class Finding:
    kind: str  # weights | video | prompt | resolution | dataset | config
    key: str  # the config key that fixes it
    detail: str

    def line(self) -> str:
        return f"  {self.kind:<10} {self.key:<36} {self.detail}"


# ---------------------------------------------------------------------------------------------- config helpers
def _raw(cfg: DictConfig, key: str) -> Any:
    """The value at ``key`` without resolving it: ``'???'`` for missing, the ``${...}`` string for interpolations."""
    node: Any = cfg
    parts = key.split(".")
    for p in parts[:-1]:
        if not isinstance(node, DictConfig) or p not in node.keys():  # `in` is False for ??? values
            return None
        node = node._get_node(p)
    if not isinstance(node, DictConfig) or parts[-1] not in node.keys():
        return None
    child = node._get_node(parts[-1])
    if child._is_missing():
        return "???"
    if child._is_interpolation():
        return child._value()
    return OmegaConf.to_container(child) if isinstance(child, DictConfig) else child._value()


_INTERP = re.compile(r"^\$\{(?:oc\.select:)?([^,}]+)(?:,[^}]*)?\}$")


def source_key(cfg: DictConfig, key: str) -> str:
    """Follow interpolations (``${..clip_score.weights}``, ``${oc.select:model.weights.depth,null}``) to the key a
    user sets; returns ``key`` itself when it holds a value."""
    for _ in range(8):
        raw = _raw(cfg, key)
        m = _INTERP.match(raw) if isinstance(raw, str) else None
        if not m:
            return key
        target = m.group(1).strip()
        if target.startswith("."):  # relative to the node holding `key`
            up = len(target) - len(target.lstrip("."))
            base = key.split(".")[:-up] if up <= key.count(".") else []
            target = ".".join([*base, target.lstrip(".")])
        key = target
    return key


def _value(cfg: DictConfig, key: str) -> Any:
    try:
        return OmegaConf.select(cfg, key, throw_on_missing=True)
    except Exception:  # noqa: BLE001 - missing / unresolvable: treated as not set
        return None


# ---------------------------------------------------------------------------------------------- inventory
def required_weights(cfg: DictConfig) -> set[str]:
    """``preflight.required_weights`` plus ``preflight.required_weights_by_method.<m>`` of every selected method
    (``animatediff_window`` needs AnimateDiff's motion modules: without them it would run Live2Diff's)."""
    pre = cfg.get("preflight") or {}
    required = set(pre.get("required_weights") or [])
    by_method = pre.get("required_weights_by_method") or {}
    for name in cfg.get("method") or {}:
        required |= set(by_method.get(name) or [])
    return required


def _weights(cfg: DictConfig) -> list[Finding]:
    out: list[Finding] = []
    seen: set[str] = set()
    required = required_weights(cfg)

    def check(
        key: str, what: str, where: str, need: bool, folder: bool | None = None, marker: str | None = None
    ):
        src = source_key(cfg, key)
        val = _value(cfg, key)
        if src in seen or (val in (None, "", "???") and not need):
            return  # reported already, or optional and not set (random weights)
        seen.add(src)
        shown = src if src == key else f"{src} (-> {key})"
        if val in (None, "", "???"):
            out.append(Finding("weights", shown, f"not set — {what}; get: {where}"))
            return
        p = local_path(str(val))
        if not p.exists():
            out.append(Finding("weights", shown, f"{p}: no such file or folder — {what}; get: {where}"))
        elif marker and not (p / marker).is_file():
            out.append(Finding("weights", shown, f"{p}: not a {what} (no {marker}); get: {where}"))

    model = cfg.get("model") or {}
    if isinstance(model, DictConfig) and "weights" in model:
        keys = list(dict.fromkeys([*MODEL_WEIGHTS, *model.weights.keys()]))
        for k in keys:
            what, where = MODEL_WEIGHTS.get(k, (f"model weights '{k}'", "see conf/model/"))
            marker = "config.json" if k in ("depth", "taesd") else None  # transformers / diffusers folders
            check(f"model.weights.{k}", what, where, f"model.weights.{k}" in required, marker=marker)
    for name, m in (cfg.get("metrics") or {}).items():
        if m is None or not isinstance(m, DictConfig):
            continue
        cls = str(m.get("_target_", "")).rsplit(".", 1)[-1]
        if cls in METRIC_WEIGHTS:
            field, what, where = METRIC_WEIGHTS[cls]
            need = bool(m.get("require_weights")) or _raw(cfg, f"metrics.{name}.{field}") == "???"
            need = need or f"metrics.{name}.{field}" in required
            check(
                f"metrics.{name}.{field}",
                what,
                where,
                need,
                marker="config.json" if cls == "DepthError" else None,
            )
        if cls == "WarpError" and _value(cfg, f"metrics.{name}.flow") == "raft":
            check(f"metrics.{name}.raft_weights", "RAFT weights (flow=raft)", RAFT_SOURCE, True)
    return out


def _count_frames(video: Any, cfg: DictConfig) -> tuple[int | None, tuple[int, int] | None]:
    """(frames the run will use, source (height, width)) read from the file system only (no decoding of folders)."""
    meta = getattr(video, "meta", {}) or {}
    path = meta.get("path")
    if path and not Path(path).exists():
        return 0, None
    if path and Path(path).is_dir():
        from PIL import Image

        from eval.datasets.files import list_frame_files

        files = list_frame_files(Path(path))
        if not files:
            return 0, None
        with Image.open(files[0]) as im:
            w, h = im.size
        n = len(files)
    elif path and Path(path).is_file():
        import av

        with av.open(str(path)) as c:
            s = c.streams.video[0]
            n, h, w = int(s.frames or 0), s.codec_context.height, s.codec_context.width
        if n == 0:
            return None, (h, w)
    elif "clip" in meta or cfg.dataset.get("num_frames"):
        n = int(cfg.dataset.get("num_frames") or 0)
        h, w = int(cfg.dataset.get("height") or 0), int(cfg.dataset.get("width") or 0)
    else:
        return None, None
    ds = cfg.dataset
    start, stride = int(ds.get("start") or 0), int(ds.get("stride") or 1)
    kept = len(range(start, n, stride))
    if ds.get("max_frames"):
        kept = min(kept, int(ds.max_frames))
    return kept, (h, w)


def _dataset(cfg: DictConfig) -> tuple[list[Finding], list[tuple[Any, int | None]]]:
    from hydra.utils import instantiate

    out: list[Finding] = []
    ds_cfg = cfg.dataset
    if _raw(cfg, "dataset.root") == "???":
        return [Finding("dataset", "dataset.root", "not set — the dataset's folder (e.g. /data/DAVIS)")], []
    pre = cfg.get("preflight") or {}
    size = ds_cfg.get("size")
    if pre.get("resolution") and (size is None or list(size) != list(pre.resolution)):
        out.append(
            Finding(
                "resolution",
                "dataset.size",
                f"{None if size is None else list(size)}, but this experiment is defined at {list(pre.resolution)}",
            )
        )
    node = OmegaConf.to_container(ds_cfg, resolve=True)
    if "default_prompt" in node and node.get("default_prompt") is None:
        node["default_prompt"] = (
            _SENTINEL  # list every video without a prompt instead of stopping at the first
        )
    try:
        ds = instantiate(node, _convert_="all")
        videos = ds.videos()
    except Exception as exc:  # noqa: BLE001 - any set-up error is a finding, with its own message
        key = "dataset.root" if isinstance(exc, FileNotFoundError) and "root" in str(exc) else "dataset"
        if "video_list" in str(exc):
            key = "dataset.video_list"
        if "prompts" in str(exc):
            key = "dataset.prompts"
        return [*out, Finding("dataset", key, str(exc).splitlines()[0])], []
    prompts_src = getattr(ds, "prompts_path", None)
    expect_h = {"480p": 480}.get(str(ds_cfg.get("resolution", ""))) if "resolution" in ds_cfg else None
    counted, empty = [], []
    for v in videos:
        n, hw = _count_frames(v, cfg)
        if n == 0:
            empty.append((v.name, (getattr(v, "meta", {}) or {}).get("path", v.name)))
        if v.prompt == _SENTINEL:
            out.append(Finding("prompt", "dataset.prompts", f"{v.name}: no prompt in {prompts_src}"))
        if hw and expect_h and hw[0] != expect_h:
            out.append(
                Finding(
                    "resolution",
                    "dataset.resolution",
                    f"{v.name}: frames are {hw[0]}x{hw[1]}, a {ds_cfg.resolution} folder holds height {expect_h}",
                )
            )
        counted.append((v, n))
    if len(empty) <= 3:
        out += [Finding("video", "dataset.root", f"{name}: no frames at {where}") for name, where in empty]
    else:  # one line: a partial copy of a dataset misses many
        parent = Path(str(empty[0][1])).parent
        out.append(
            Finding(
                "video",
                "dataset.root",
                f"{len(empty)} of {len(videos)} videos have no frames under {parent}: "
                + ", ".join(name for name, _ in empty),
            )
        )
    if not videos:
        out.append(Finding("video", "dataset", "the dataset lists no videos"))
    return out, counted


def inventory(cfg: DictConfig) -> tuple[list[Finding], list[tuple[Any, int | None]]]:
    """Everything missing, from the config and the file system only (no model, no metric network is built)."""
    from eval.strength import apply_match

    findings = _weights(cfg)
    try:  # diffusion.match=strength: the probe builds each method with the list it will run
        apply_match(cfg)
    except ValueError as exc:
        findings.append(Finding("config", "diffusion.match", str(exc)))
    ds_findings, videos = _dataset(cfg)
    findings += ds_findings
    if not (cfg.get("method") or {}):
        findings.append(
            Finding("config", "method", "no method selected: pass e.g. method=[identity,live2diff]")
        )
    findings += _validation_problems(cfg, {f.key.split(" ")[0] for f in findings})
    return findings, videos


def _validation_problems(cfg: DictConfig, known: set[str]) -> list[Finding]:
    """The run's own config validation (eval/validate.py, where present), for keys not listed already."""
    try:
        from eval.validate import ConfigError, validate
    except ImportError:
        return []
    try:
        validate(cfg)
    except ConfigError as exc:

        def related(key: str) -> bool:
            return any(key == k or key.startswith(k + ".") or k.startswith(key + ".") for k in known)

        return [
            Finding("config", p.key, str(p).split("=", 1)[-1]) for p in exc.problems if not related(p.key)
        ]
    return []


# ---------------------------------------------------------------------------------------------- timing probe
def probe(cfg: DictConfig, videos: list[tuple[Any, int | None]], n_probe: int) -> list[dict]:
    """Build each method once, push ``n_probe`` frames of the first video, time it; the same for the metrics."""
    import torch
    from hydra.utils import instantiate

    from eval.scoring import build_metrics
    from eval.timing import run_stream

    if cfg.hardware.get("threads"):
        torch.set_num_threads(int(cfg.hardware.threads))
    video = videos[0][0]
    all_frames = video.load()
    total = sum(n or 0 for _, n in videos)
    h, w = all_frames.shape[-2:]
    rows = []
    for name, mcfg in (cfg.method or {}).items():
        t0 = time.perf_counter()
        method = instantiate(mcfg, _convert_="all")
        build_s = time.perf_counter() - t0
        # at least two rounds of whatever a method holds back (Live2Diff's warmup block, a window) so that the
        # joint passes are part of the average; per frame = (all pushes + flush) / frames
        n = min(max(n_probe, 2 * (int(getattr(method, "lookahead", 0) or 0) + 1)), all_frames.shape[0])
        frames = all_frames[:n]
        method.prepare(video.prompt, height=int(h), width=int(w), seed=int(cfg.seed))
        # the one stream driver: the runner's timed calls, on the frames as the runner hands them
        rec = run_stream(method, frames)
        per = (float(rec.call_s.sum()) + rec.flush_s) / n
        method.reset()
        rows.append(
            {
                "method": name,
                "build_s": build_s,
                "probe_frames": n,
                "s_per_frame": per,
                "frames": total,
                "estimate_s": build_s + per * total,
            }
        )
        del method
    frames = all_frames[:n_probe]
    metrics = build_metrics(cfg.metrics)
    t = time.perf_counter()
    for m in metrics.values():
        m.reset()
        if getattr(m, "needs_emissions", False):  # warp_error lag=auto: timed as if each frame came out at once
            m.set_emissions(list(range(len(frames))))
        m.update(frames, frames, prompt=video.prompt)
    per = (time.perf_counter() - t) / max(len(frames), 1)
    rows.append(
        {
            "method": "(metrics, all methods)",
            "build_s": 0.0,
            "probe_frames": len(frames),
            "s_per_frame": per,
            "frames": total * len(cfg.method or {}),
            "estimate_s": per * total * len(cfg.method or {}),
        }
    )
    return rows


def _fmt_s(s: float) -> str:
    if s != s:
        return "?"
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def preflight(cfg: DictConfig, out=print) -> int:
    """Print the pre-flight report; 2 when anything is missing (nothing built), else 0 after the timing probe."""
    findings, videos = inventory(cfg)
    methods = list(cfg.get("method") or {})
    n_frames = sum(n or 0 for _, n in videos)
    out(
        f"Pre-flight check: experiment {cfg.get('experiment_name')}, {len(methods)} method(s) "
        f"[{', '.join(methods)}], {len(videos)} video(s), {n_frames} frames at "
        f"{list(cfg.dataset.size) if cfg.dataset.get('size') else 'source size'}, device {cfg.hardware.device}"
    )
    if findings:
        out(f"MISSING ({len(findings)}) — nothing was built or run:")
        for kind in ("weights", "dataset", "video", "prompt", "resolution", "config"):
            for f in findings:
                if f.kind == kind:
                    out(f.line())
        out(
            "Fix the keys above (README: 'Reproducing the paper'), then run the same command without +check=true."
        )
        return 2
    out("All weight files, videos and prompts are present.")
    n_probe = int((cfg.get("preflight") or {}).get("probe_frames", 6))
    if n_probe <= 0 or not videos:
        return 0
    rows = probe(cfg, videos, n_probe)
    out(
        f"Estimated run time (timing probe on {videos[0][0].name}: build once, push `probe` frames + flush; "
        "per frame = probe time / probe frames; estimate = build + per frame x frames; this machine):"
    )
    out(f"  {'method':<28} {'build':>8} {'probe':>6} {'per frame':>10} {'frames':>7} {'estimate':>10}")
    for r in rows:
        out(
            f"  {r['method']:<28} {_fmt_s(r['build_s']):>8} {r['probe_frames']:>6} {r['s_per_frame'] * 1e3:>8.1f}ms "
            f"{r['frames']:>7} {_fmt_s(r['estimate_s']):>10}"
        )
    out(f"  {'total':<28} {'':>8} {'':>6} {'':>10} {'':>7} {_fmt_s(sum(r['estimate_s'] for r in rows)):>10}")
    return 0
