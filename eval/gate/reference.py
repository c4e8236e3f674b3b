"""The committed reference: the ratios with the machine and a hash of the measurement set-up that produced them."""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from eval.gate.measure import MethodTiming
from eval.store import content_key

REFERENCE_SCHEMA = 1
CALIBRATION_VERSION = 2  # bump when a calibration workload changes: old references become incompatible

# Settings that change what a ratio means; the rest of ``gate`` (tolerances, repetitions, paths, flags) does not.
SETUP_GATE_KEYS = (
    "warmup_frames",
    "calibration",
    "calibrations",
    "calibration_calls",
    "clock",
    "statistic",
    "quantile",
    "estimator",
)

# Yardstick settings at these values are left out of the set-up: every method divided by the matmul workload, the
# measurement as it was before per-method yardsticks existed (a reference recorded then stays comparable).
_DEFAULT_YARDSTICK = {"calibration": "matmul", "calibrations": {}}

MACHINE_KEYS = ("cpu", "cpu_count", "arch", "torch", "torch_threads", "device", "gpu")


def machine_differences(ref: dict, now: dict) -> list[str]:
    return [
        f"{k}: reference {ref.get(k)!r}, now {now.get(k)!r}" for k in MACHINE_KEYS if ref.get(k) != now.get(k)
    ]


def _measured_model(model: dict | None) -> dict | None:
    """A model config without ``resolution``: that key only supplies ``dataset.size``'s default, and the frame size
    measured is in the setup's resolved dataset already."""
    if not isinstance(model, dict):
        return model
    return {k: v for k, v in model.items() if k != "resolution"}


def config_hash(method_cfg: dict | None) -> str:
    """What identifies a gated method's config in the reference (its ``model`` node as :func:`_measured_model`)."""
    if isinstance(method_cfg, dict) and "model" in method_cfg:
        method_cfg = {**method_cfg, "model": _measured_model(method_cfg["model"])}
    return content_key(method_cfg)


def setup_of(cfg: DictConfig | dict) -> dict:
    """The part of the config that defines the measurement (not the methods, not the tolerances)."""
    c = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    gate = c.get("gate") or {}
    return {
        "dataset": c.get("dataset"),
        "model": _measured_model(c.get("model")),
        "hardware": c.get("hardware"),
        "gate": {
            k: gate.get(k)
            for k in SETUP_GATE_KEYS
            if k not in _DEFAULT_YARDSTICK or (gate.get(k) or _DEFAULT_YARDSTICK[k]) != _DEFAULT_YARDSTICK[k]
        },
        "calibration_version": CALIBRATION_VERSION,
    }


def make_reference(
    timings: dict[str, MethodTiming], setup: dict, machine: dict, method_cfgs: dict, git: dict | None = None
) -> dict:
    return {
        "schema": REFERENCE_SCHEMA,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git": git or {},
        "machine": machine,
        "setup_hash": content_key(setup),
        "setup": setup,
        "methods": {
            name: {
                "ratio": t.ratio,
                "frame_ms": t.frame_ms_median,
                "calib_ms": t.calib_ms_median,
                "ratios": t.ratios,
                "calibration": t.calibration,
                "calibration_calls": t.calls,
                "pass_ratios": t.pass_ratios or [t.ratio],
                "config_hash": config_hash(method_cfgs.get(name)),
            }
            for name, t in timings.items()
        },
    }


class UnusableReference(ValueError):
    """The reference file cannot be used: unreadable or truncated, another schema, or its set-up fields do not
    hash to the ``setup_hash`` it records (edited by hand, or damaged). The gate exits 3 (no comparable
    reference), never 1 (a regression), and says so before measuring anything."""


def load_reference(path: Path) -> dict | None:
    """The reference at ``path`` (None when there is none), checked whole: JSON, schema, the fields the verdict
    reads, and its ``setup_hash`` recomputed from its own ``setup``; :class:`UnusableReference` naming what is wrong."""
    path = Path(path)
    if not path.is_file():
        return None
    fix = "regenerate it with --update-reference (or restore the committed file)"
    try:
        ref = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise UnusableReference(f"{path}: unreadable ({exc}); {fix}") from None
    except json.JSONDecodeError as exc:
        raise UnusableReference(
            f"{path}: not valid JSON at line {exc.lineno} ({exc.msg}): truncated or damaged; {fix}"
        ) from None
    if not isinstance(ref, dict):
        raise UnusableReference(
            f"{path}: a reference is a JSON object, this is a {type(ref).__name__}; {fix}"
        )
    if ref.get("schema") != REFERENCE_SCHEMA:
        raise UnusableReference(
            f"{path}: reference schema {ref.get('schema')!r}, this code reads {REFERENCE_SCHEMA}; "
            "regenerate it with --update-reference"
        )
    missing = [
        k for k in ("setup", "setup_hash", "methods", "machine") if not isinstance(ref.get(k), (dict, str))
    ]
    if missing:
        raise UnusableReference(f"{path}: lacks {', '.join(missing)}; {fix}")
    bad = [
        name
        for name, m in ref["methods"].items()
        if not isinstance(m, dict)
        or not isinstance(m.get("ratio"), (int, float))
        or isinstance(m["ratio"], bool)
    ]
    if bad:
        raise UnusableReference(f"{path}: methods {bad} have no numeric ratio; {fix}")
    if content_key(ref["setup"]) != ref["setup_hash"]:
        raise UnusableReference(
            f"{path}: its setup fields do not hash to its setup_hash (edited by hand, or damaged), so what it "
            f"was measured with is unknown; {fix}"
        )
    return ref


def setup_differences(ref_setup: dict, setup: dict, prefix: str = "") -> list[str]:
    """Which set-up keys differ (dotted paths), for a message that says what changed."""
    out = []
    for k in sorted(set(ref_setup) | set(setup), key=str):
        a, b = ref_setup.get(k), setup.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += setup_differences(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: reference {a!r}, now {b!r}")
    return out
