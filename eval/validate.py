"""Check the whole composed config before anything is built or computed.

A bad setting found after an hour of compute (or never: a value silently ignored) costs more than a bad setting
refused at start-up. :func:`validate` looks at every part of the config — the dataset (its settings, its root, its
prompts file, its videos' sizes), every selected method's settings (``_target_`` importable, keys its constructor
takes, ``t_index_list``), the metrics (``_target_``, weights files), the runner and the seed — and raises one
:class:`ConfigError` listing *every* problem, each naming the key, the value and the fix. The entry point turns it
into exit status 2 (configuration or set-up error), apart from 1 (some units failed).
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from eval.datasets.base import shard_problem
from eval.datasets.builtin_prompts import is_builtin, load_builtin
from eval.frame_size import follows_model
from eval.paths import CONF_DIR
from eval.weights import local_path

SEED_MAX = 2**32 - 1  # numpy's and most generators' seed range
LIVE_POLICIES = ("drop", "latest", "queue")
RUNNER_MODES = ("offline", "live")
HYDRA_KEYS = ("_target_", "_partial_", "_convert_", "_recursive_", "_args_")


@dataclass
class Problem:
    key: str
    value: Any
    fix: str

    def __str__(self) -> str:
        return f"{self.key}={_show(self.value)}: {self.fix}"


class ConfigError(ValueError):
    """One or more configuration / set-up problems; the message lists each with its key, value and fix."""

    def __init__(self, problems: list[Problem] | str) -> None:
        if isinstance(problems, str):
            problems = [Problem("config", None, problems)]
        self.problems = problems
        head = f"{len(problems)} configuration problem{'s' if len(problems) > 1 else ''}"
        super().__init__(head + ":\n" + "\n".join(f"  - {p}" for p in problems))


def _show(v: Any) -> str:
    if isinstance(v, DictConfig | ListConfig):
        v = OmegaConf.to_container(v, resolve=False)
    return repr(v) if isinstance(v, str) else str(v).replace("None", "null")


def _get(cfg: Any, key: str, default: Any = None) -> Any:
    """A value without resolving interpolations that may fail (``???`` is returned as the string)."""
    if isinstance(cfg, DictConfig):
        if key not in cfg.keys():
            return default
        if OmegaConf.is_missing(cfg, key):
            return "???"
        return cfg[key]
    return cfg.get(key, default) if isinstance(cfg, dict) else default


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


# -- parts --------------------------------------------------------------------------------------------------------
def check_seed(cfg: Any) -> list[Problem]:
    seed = _get(cfg, "seed")
    if not _is_int(seed) or not 0 <= seed <= SEED_MAX:
        return [Problem("seed", seed, f"must be an integer in [0, {SEED_MAX}], e.g. seed=42")]
    return []


def check_runner(runner: Any) -> list[Problem]:
    out: list[Problem] = []
    if runner is None:
        return out
    mode = _get(runner, "mode", "offline")
    if mode not in RUNNER_MODES:
        out.append(Problem("runner.mode", mode, f"must be one of {', '.join(RUNNER_MODES)}"))
    for key in ("resume", "save_videos", "save_strips", "keep_outputs"):
        v = _get(runner, key, False)
        if not isinstance(v, bool):
            out.append(Problem(f"runner.{key}", v, "must be true or false"))
    for key, low in (("warmup_frames", 0), ("strip_frames", 1)):
        v = _get(runner, key, low)
        if not _is_int(v) or v < low:
            out.append(Problem(f"runner.{key}", v, f"must be an integer >= {low}"))
    v = _get(runner, "min_frames", 1)
    if not _is_int(v) or v < 1:
        out.append(
            Problem("runner.min_frames", v, "must be an integer >= 1 (fewest decoded frames a unit accepts)")
        )
    v = _get(runner, "decode_cache_mb", 0)
    if not _is_num(v) or v < 0:
        out.append(
            Problem(
                "runner.decode_cache_mb", v, "must be a number of MB >= 0 (0 decodes each video per unit)"
            )
        )
    live = _get(runner, "live") or {}
    fps = _get(live, "fps")
    if fps is not None and (not _is_num(fps) or fps <= 0):
        out.append(Problem("runner.live.fps", fps, "must be a frame rate > 0, or null for each video's own"))
    policy = _get(live, "policy", "drop")
    if policy not in LIVE_POLICIES:
        out.append(Problem("runner.live.policy", policy, f"must be one of {', '.join(LIVE_POLICIES)}"))
    return out


def check_dataset(ds: Any) -> list[Problem]:
    """Static checks of the dataset settings (no files read)."""
    out: list[Problem] = []
    if ds is None or _get(ds, "_target_") is None:
        known = " | ".join(sorted(p.stem for p in (CONF_DIR / "dataset").glob("*.yaml")))
        return [
            Problem(
                "dataset", ds, f"select a dataset: dataset={known} (or your own: docs/add_your_dataset.md)"
            )
        ]
    for key in ("root",):
        if key in ds.keys() and _get(ds, key) in ("???", None, ""):
            out.append(Problem(f"dataset.{key}", _get(ds, key), f"set dataset.{key}=/path/to/videos"))
        elif key in ds.keys():
            root = Path(str(_get(ds, key))).expanduser()
            if not root.is_dir():
                out.append(
                    Problem(
                        f"dataset.{key}", str(_get(ds, key)), "no such directory; point it at your videos"
                    )
                )
    v = _get(ds, "max_frames")
    if v is not None and (not _is_int(v) or v < 1):
        out.append(Problem("dataset.max_frames", v, "must be an integer >= 1, or null for every frame"))
    for key, low in (("stride", 1), ("start", 0)):
        v = _get(ds, key, low)
        if not _is_int(v) or v < low:
            out.append(Problem(f"dataset.{key}", v, f"must be an integer >= {low}"))
    shard, n = _get(ds, "shard", 0), _get(ds, "num_shards", 1)
    problem = shard_problem(shard, n)
    if problem:
        out.append(Problem(*problem))
    v = _get(ds, "max_videos")
    if v is not None and (not _is_int(v) or v < 1):
        out.append(Problem("dataset.max_videos", v, "must be an integer >= 1, or null for all"))
    following = follows_model(ds)  # dataset.size is model.resolution's: check_resolution checks that key
    try:
        size = _get(ds, "size")
        size = list(size) if isinstance(size, ListConfig | list | tuple) else size
    except Exception as exc:  # noqa: BLE001 - an interpolation that cannot be resolved
        size = None
        if not following:
            out.append(Problem("dataset.size", _raw(ds, "size"), _reason(exc)))
    if size is not None and not following:
        if (
            not isinstance(size, list)
            or len(size) != 2
            or not all(_is_int(s) and s >= 8 and s % 8 == 0 for s in size)
        ):
            out.append(
                Problem("dataset.size", size, "must be [height, width], multiples of 8 and >= 8 (or null)")
            )
    mode = _get(ds, "resize_mode", "resize_crop")
    if mode not in ("resize", "crop", "resize_crop"):
        out.append(Problem("dataset.resize_mode", mode, "must be resize, crop or resize_crop"))
    for key in ("height", "width"):  # synthetic
        v = _get(ds, key)
        if v is not None and (not _is_int(v) or v < 8 or v % 8):
            out.append(Problem(f"dataset.{key}", v, "must be a multiple of 8, >= 8"))
    for key in ("num_videos", "num_frames"):
        v = _get(ds, key)
        if key in ds and (not _is_int(v) or v < 1):
            out.append(Problem(f"dataset.{key}", v, "must be an integer >= 1"))
    fps = _get(ds, "fps")
    if fps is not None and (not _is_num(fps) or fps <= 0):
        out.append(Problem("dataset.fps", fps, "must be a frame rate > 0"))
    default = _get(ds, "default_prompt")
    if default is not None and (not isinstance(default, str) or not default.strip()):
        out.append(
            Problem(
                "dataset.default_prompt", default, 'must be a non-empty string, e.g. "a painting", or null'
            )
        )
    prompts = _get(ds, "prompts")
    if is_builtin(prompts):
        try:
            load_builtin(prompts)
        except ValueError as e:
            out.append(Problem("dataset.prompts", prompts, str(e).split(": ", 1)[-1]))
    elif isinstance(prompts, str) and prompts not in ("???",) and not Path(prompts).expanduser().is_file():
        out.append(
            Problem(
                "dataset.prompts",
                prompts,
                "no such file; give a YAML/JSON file of name: prompt, or builtin:<name>[:<template>]",
            )
        )
    return out


def check_resolution(cfg: Any) -> list[Problem]:
    """``model.resolution``: the model's own frame size in pixels, the default of ``dataset.size`` (folder, DAVIS)."""
    model = _get(cfg, "model")
    if not isinstance(model, DictConfig):
        return []
    follows = follows_model(_get(cfg, "dataset"))
    fix = "set it in the model's YAML (conf/model/*.yaml), or choose the frame size with dataset.size=[H,W]"
    if "resolution" not in model.keys():
        return [Problem("model.resolution", "not set", f"dataset.size follows it: {fix}")] if follows else []
    r = _get(model, "resolution")
    if not _is_int(r) or r < 8 or r % 8:
        return [
            Problem(
                "model.resolution",
                r,
                f"must be the model's frame size in pixels, a multiple of 8 >= 8; {fix}",
            )
        ]
    return []


def _raw(cfg: Any, key: str) -> Any:
    """A value as written (interpolations unresolved)."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=False).get(key)
    return cfg.get(key) if isinstance(cfg, dict) else None


def check_videos(cfg: Any, min_size: int = 8, listed: list | None = None) -> list[Problem]:
    """Build the dataset and list its videos (prompts, duplicate names, unknown names); with ``dataset.size=null``
    probe each video's size, which must be at least one VAE stride (8 px) in both directions. The listed videos are
    appended to ``listed`` (the run uses them: a dataset is listed, and its warnings said, once per run)."""
    from hydra.utils import instantiate

    try:
        dataset = instantiate(cfg.dataset, _convert_="all")
        videos = dataset.videos()
        if listed is not None:
            listed.extend(videos)
    except Exception as exc:  # noqa: BLE001 - every dataset error is a set-up problem to report
        return [Problem("dataset", _get(cfg.dataset, "root", _get(cfg.dataset, "_target_")), _reason(exc))]
    if not videos:
        shard = _get(cfg.dataset, "shard", 0)
        return [Problem("dataset.shard", shard, "this shard has no videos; lower dataset.num_shards")]
    out: list[Problem] = []
    if _get(cfg.dataset, "size", "x") is None:
        from eval.datasets.files import probe_size

        for v in videos:
            path = v.meta.get("path")
            hw = probe_size(Path(path)) if path else None
            if hw is not None and min(hw) < min_size:
                out.append(
                    Problem(
                        "dataset.size",
                        None,
                        f"video {v.name!r} ({path}) is {hw[0]}x{hw[1]} px, smaller than {min_size} px (one VAE "
                        f"stride); set dataset.size=[{min_size * 8},{min_size * 8}] to resize it, or drop it "
                        "with dataset.videos",
                    )
                )
    return out


def _reason(exc: BaseException) -> str:
    text = str(exc)
    return text if text else type(exc).__name__


def _import_target(target: str) -> Any:
    module, _, attr = target.rpartition(".")
    if not module:
        raise ImportError(f"{target!r} is not a dotted path (package.module.Class)")
    return getattr(importlib.import_module(module), attr)


def check_target(key: str, node: Any) -> tuple[list[Problem], Any]:
    target = _get(node, "_target_")
    if not isinstance(target, str) or not target:
        return [
            Problem(f"{key}._target_", target, "set it to the class to build (package.module.Class)")
        ], None
    try:
        obj = _import_target(target)
    except Exception as exc:  # noqa: BLE001
        return [
            Problem(
                f"{key}._target_",
                target,
                f"cannot import it ({type(exc).__name__}: {exc}); check the dotted path and PYTHONPATH",
            )
        ], None
    return [], obj


def check_params(key: str, node: Any, obj: Any) -> list[Problem]:
    """Keys the constructor does not take (a misspelled setting would otherwise fail per unit, or not at all)."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return []
    params = sig.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return []
    out = []
    for k in node:
        if str(k) in HYDRA_KEYS or str(k) in params:
            continue
        close = difflib.get_close_matches(str(k), list(params), n=1)
        hint = f"did you mean {key}.{close[0]}? " if close else ""
        out.append(
            Problem(f"{key}.{k}", _get(node, str(k)), f"{hint}{obj.__qualname__} takes {', '.join(params)}")
        )
    return out


def check_t_index_list(key: str, node: Any) -> list[Problem]:
    if "t_index_list" not in node:
        return []
    steps = _get(node, "num_inference_steps", 50)
    steps = steps if _is_int(steps) and steps > 0 else 50
    v = _get(node, "t_index_list")
    lst = list(v) if isinstance(v, ListConfig | list | tuple) else None
    fix = (
        f"a non-empty, strictly increasing list of integers in [0, {steps}) (indices into LCM's {steps}-step "
        "schedule), e.g. [30, 36, 42]"
    )
    if lst is None or not lst or not all(_is_int(t) for t in lst):
        return [Problem(f"{key}.t_index_list", v, f"must be {fix}")]
    if sorted(set(lst)) != lst or lst[0] < 0 or lst[-1] >= steps:
        return [Problem(f"{key}.t_index_list", lst, f"must be {fix}")]
    return []


def check_clip_skip(key: str, node: Any, model: Any) -> list[Problem]:
    """A method's ``clip_skip``: null (the model config's) or an integer the text encoder can give."""
    if "clip_skip" not in node:
        return []
    v = _get(node, "clip_skip")
    n = _get(_get(model, "text_encoder"), "num_hidden_layers")
    if v is None:
        return []
    if not _is_int(v) or v < 0 or (_is_int(n) and v >= n):
        bound = f" below the text encoder's {n} layers" if _is_int(n) else ""
        fix = f"null (model.clip_skip) or an integer >= 0{bound}: 0 = the final layer, 2 = Live2Diff's"
        return [Problem(f"{key}.clip_skip", v, f"must be {fix}")]
    return []


def check_diffusion(cfg: Any) -> list[Problem]:
    """``diffusion.match`` / ``diffusion.match_schedule`` (eval/strength.py)."""
    from eval.strength import MATCH_MODES

    diffusion = _get(cfg, "diffusion") or {}
    out = []
    match = _get(diffusion, "match", "none")
    if match not in MATCH_MODES:
        out.append(
            Problem(
                "diffusion.match",
                match,
                f"must be one of {', '.join(MATCH_MODES)} (strength: map each method's t_index_list to the steps "
                "of equal noise level on its own betas)",
            )
        )
    sched = _get(diffusion, "match_schedule", "linear")
    if sched not in ("linear", "scaled_linear"):
        out.append(
            Problem("diffusion.match_schedule", sched, "must be linear (Live2Diff's betas) or scaled_linear")
        )
    return out


def check_methods(cfg: Any) -> list[Problem]:
    methods = _get(cfg, "method")
    if not methods:
        return [Problem("method", methods, "select at least one: method=[identity,live2diff]")]
    out: list[Problem] = []
    for name in methods:
        node = methods[name]
        key = f"method.{name}"
        if str(name).startswith("_") or not isinstance(node, DictConfig | dict):
            files = headerless_method_files()
            where = (
                "; files without it: " + ", ".join(f"{f} (add `# @package method.{f.stem}`)" for f in files)
                if files
                else ""
            )
            out.append(
                Problem(
                    key,
                    node,
                    "this is not a method: a method's YAML file lacks its first line `# @package method.<name>` "
                    f"(without it the file's keys land directly under `method`){where}",
                )
            )
            continue
        problems, obj = check_target(key, node)
        out += problems
        if obj is not None:
            out += check_params(key, node, obj)
        out += check_t_index_list(key, node)
        out += check_clip_skip(key, node, _get(cfg, "model"))
    return out


def _method_dirs() -> list[Path]:
    from eval.paths import CONF_DIR

    dirs = [CONF_DIR / "method"]  # then Hydra's search path, if any
    try:
        from hydra.core.hydra_config import HydraConfig

        for src in HydraConfig.get().runtime.config_sources:
            if src.schema == "file" and src.path:
                dirs.append(Path(str(src.path)) / "method")
    except Exception:  # noqa: BLE001 - outside a Hydra app (tests compose directly): the repo's folder only
        pass
    return dirs


def headerless_method_files(dirs: list[Path] | None = None) -> list[Path]:
    """Method YAML files whose header does not put them under ``method.<file name>``."""
    out = []
    for d in dict.fromkeys(Path(x).resolve() for x in dirs or _method_dirs()):
        for f in sorted(Path(d).glob("*.yaml")) if Path(d).is_dir() else []:
            head = f.read_text().splitlines()[:5]
            if not any(line.strip().replace(" ", "") == f"#@packagemethod.{f.stem}" for line in head):
                out.append(f)
    return out


def check_metrics(cfg: Any) -> list[Problem]:
    metrics = _get(cfg, "metrics") or {}
    out: list[Problem] = []
    for name in metrics:
        node = metrics[name]
        if node is None:
            continue
        key = f"metrics.{name}"
        if not isinstance(node, DictConfig | dict):
            out.append(
                Problem(key, node, "a metric is a mapping with _target_ (see conf/metrics/default.yaml)")
            )
            continue
        problems, obj = check_target(key, node)
        out += problems
        if obj is not None:
            out += check_params(key, node, obj)
        out += check_paths(key, node)
    return out


def check_paths(key: str, node: Any) -> list[Problem]:
    """Weights paths that are set must exist (``???`` means a required one is unset)."""
    out = []
    for k in node:
        sub = f"{key}.{k}"
        v = _get(node, str(k))
        if isinstance(v, DictConfig):
            out += check_paths(sub, v)
        elif "weight" in sub.lower() and isinstance(v, str) and v:
            if v == "???":
                out.append(Problem(sub, v, f"required: set {sub}=/path/to/weights"))
            elif sub.startswith("model.weights.") and v.lower() in ("random", "none"):
                continue  # a component named random (a LoRA none) on purpose: not a path (check_model_weights)
            elif not local_path(v).exists():
                out.append(
                    Problem(sub, v, "no such file or folder (nothing is downloaded: give a local path)")
                )
    return out


def check_model_weights(model: Any) -> list[Problem]:
    """The model's weights plan (``eval.weights.weight_plan``, the one the builder runs): once any
    real weight is given, every other component is given or named ``random``/``none``, and no weight is given for
    a component the config does not use. Refused here, before anything runs, not when the first unit builds its
    method (an error row, exit 1). Read only when a real weight is set: the default tiny model needs no check."""
    weights = _get(model, "weights") or {}
    given = {str(k): _get(weights, str(k)) for k in weights}
    real = [
        k for k, v in given.items() if v not in (None, "", "???") and str(v).lower() not in ("random", "none")
    ]
    if not real or real == ["trained"]:
        return []
    from eval.weights import weight_plan

    try:  # a composed conf/model node is complete: the plan reads its weights, vae.kind and depth.kind
        weight_plan(OmegaConf.to_container(model, resolve=True))
    except Exception as exc:  # noqa: BLE001 - every refusal of the plan is a set-up problem
        return [Problem("model.weights", {k: given[k] for k in real}, _reason(exc))]
    return []


def _set(v: Any) -> bool:
    return isinstance(v, str) and v not in ("", "???") and v.lower() not in ("none", "random", "null", "n/a")


def check_method_weights(cfg: Any) -> list[Problem]:
    """``preflight.required_weights_by_method`` (the paper experiments): a selected method's weights that must be
    given once the run uses real weights (any of ``preflight.required_weights`` set). ``animatediff_window``
    without ``model.weights.animatediff_motion`` would run Live2Diff's causally trained motion modules instead."""
    pre = _get(cfg, "preflight") or {}
    by_method = _get(pre, "required_weights_by_method") or {}
    methods = _get(cfg, "method") or {}
    if not by_method or not any(_set(OmegaConf.select(cfg, k)) for k in _get(pre, "required_weights") or []):
        return []  # a random-weight run of the experiment (the README's tiny one): nothing is the paper's anyway
    out = []
    for name in methods:
        for key in _get(by_method, str(name)) or []:
            if not _set(OmegaConf.select(cfg, str(key))):
                out.append(
                    Problem(
                        str(key),
                        OmegaConf.select(cfg, str(key)),
                        f"method {name} needs it in this experiment (preflight.required_weights_by_method; "
                        f"otherwise it runs other weights than its reference's): set {key}=/path/to/file, or "
                        f"leave {name} out of method=[...]",
                    )
                )
    return out


def check_hardware(cfg: Any) -> list[Problem]:
    hw = _get(cfg, "hardware") or {}
    device = str(_get(hw, "device", "cpu"))
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            return [Problem("hardware.device", device, "no CUDA device is available here; use hardware=cpu")]
    return []


def validate(cfg: DictConfig, *, videos: bool = True, listed: list | None = None) -> None:
    """Raise :class:`ConfigError` listing every problem of ``cfg``; return None when it is fine to run. With
    ``videos``, the dataset is listed and its videos appended to ``listed`` (when given)."""
    problems = [*check_seed(cfg), *check_runner(_get(cfg, "runner")), *check_dataset(_get(cfg, "dataset"))]
    problems += check_diffusion(cfg)
    problems += check_methods(cfg)
    problems += check_metrics(cfg)
    model = _get(cfg, "model")
    if isinstance(model, DictConfig):
        problems += check_paths("model", model)
        if not any(p.key.startswith("model.weights") for p in problems):  # a missing file is said first
            problems += check_model_weights(model)
    problems += check_method_weights(cfg)
    problems += check_hardware(cfg)
    problems += check_resolution(cfg)
    if videos and not any(p.key.startswith(("dataset", "model.resolution")) for p in problems):
        problems += check_videos(cfg, listed=listed)
    if problems:
        raise ConfigError(problems)
