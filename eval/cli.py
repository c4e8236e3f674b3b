"""What ``run_eval.py`` does once Hydra has composed the config. Kept out of the entry point so tests call it.

:func:`main` is the one entry: the evaluation (:func:`run_from_config`) or, with ``gate.enabled``
(``experiment=ci_latency``), the latency gate (``eval.gate``); it returns the exit status. :func:`command_line`
checks the arguments before Hydra sees them.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from eval import results
from eval.frame_size import frame_size, frame_size_notes
from eval.method_notes import method_notes
from eval.paths import CONF_DIR
from eval.results import Reference
from eval.run_types import RunnerSettings, RunSummary
from eval.runner import Runner
from eval.scoring import LazyMetrics
from eval.store import DiskFullError, UnitStore, as_disk_full, claim_run_dir, disk_full, finish_run_dir
from eval.strength import apply_match

log = logging.getLogger(__name__)

GROUPS = ("method", "dataset", "model", "metrics", "hardware", "gate", "experiment")
#: how a group's options combine, said after "Unknown <group> ..."
GROUP_HINTS = {
    "metrics": (
        ". Each metric is an option: pick some with a list, metrics=[warp_error,clip_score] (metrics=default: all "
        "six, metrics=none: no quality metric); add an opt-in one to them with +metrics/add=<name> (lpips, "
        "streamv2v_compat, paper)"
    ),
    "method": ". Pick several with a list: method=[identity,live2diff]",
}
EXIT_DISK_FULL = 4  # the disk (or quota) filled up: stopped at the first failed write, finished units kept


class Terminated(KeyboardInterrupt):
    """SIGTERM (what SLURM sends on preemption and time-out, and ``kill``'s default), handled as Ctrl-C is: the
    finished units are kept, the run's tables written from them, the folder marked ``interrupted``."""

    exit_code = 128 + signal.SIGTERM  # as a shell reports a process ended by SIGTERM


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread (once: a second SIGTERM during the
    clean-up is ignored, SLURM's SIGKILL follows anyway). Elsewhere than the main thread, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated(f"terminated by {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(cfg: DictConfig, run_dir: Path | None = None) -> int:
    """Run what the composed config asks for and print its outcome; returns the exit status (0 ok, 1 failed
    units or a latency regression, 2 a configuration or set-up error (or a pre-flight check found something
    missing), 3 no comparable gate reference, 4 the disk is full)."""
    if cfg.get("check"):  # +check=true: pre-flight only (eval/check.py): what is missing, estimated run time
        from eval.check import preflight

        return preflight(cfg)
    if cfg.get("gate") and cfg.gate.get("enabled"):
        from eval.gate import run_gate

        outcome = run_gate(cfg, run_dir if run_dir is not None else _hydra_output_dir())
        print(outcome.text)
        return outcome.code
    from eval.validate import ConfigError

    try:
        summary = run_from_config(cfg, run_dir)
    except ConfigError as exc:  # configuration or set-up problem: nothing was computed
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except DiskFullError as exc:
        print(disk_full_message(exc, Path(str(cfg.results_root))), file=sys.stderr)
        return EXIT_DISK_FULL
    if cfg.report.get("print", True) and (summary.run_dir / "summary.md").is_file():
        print((summary.run_dir / "summary.md").read_text())
    print(f"results: {summary.run_dir}")
    return exit_code([summary])


def command_line(argv: list[str]) -> tuple[list[str], str | None]:
    """``argv`` with the human flag ``--update-reference`` turned into its override (Hydra only takes key=value),
    and a "did you mean" message for a misspelled config name (None when all is well)."""
    if "--update-reference" in argv:
        argv = [a for a in argv if a != "--update-reference"] + ["gate.update_reference=true"]
    return argv, check_overrides(argv[1:])


def _hydra_output_dir() -> Path | None:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else None


def run_from_config(cfg: DictConfig, run_dir: Path | None = None, progress: bool = True) -> RunSummary:
    from hydra.utils import instantiate

    from eval.provenance import provenance
    from eval.validate import ConfigError, validate

    # every setting, before anything is built: ConfigError (exit status 2) lists all problems; the dataset's
    # videos as validation listed them (listed once per run: its warnings are said once)
    listed: list = []
    validate(cfg, listed=listed)
    try:  # diffusion.match=strength: each method's t_index_list as it will run (eval/strength.py)
        matched = apply_match(cfg)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    # a folder of its own (never shared with another run), marked INCOMPLETE until the run finishes
    run_dir = claim_run_dir(run_dir if run_dir is not None else _hydra_output_dir())
    if cfg.hardware.get("threads"):
        torch.set_num_threads(int(cfg.hardware.threads))
    methods = cfg.get("method") or {}
    try:
        videos = listed or instantiate(cfg.dataset, _convert_="all").videos()
        metrics = LazyMetrics(cfg.metrics)  # built by the first unit that is computed, not by cached ones
    except Exception as exc:  # set-up, not a unit: exit status 2
        finish_run_dir(run_dir, "failed")
        raise ConfigError(f"set-up failed: {type(exc).__name__}: {exc}") from exc
    resolved = OmegaConf.to_container(cfg, resolve=True)
    refs = cfg.report.get("reference")
    refs = [Reference.from_config(r) for r in (OmegaConf.to_container(refs, resolve=True) if refs else [])]
    weights = (cfg.get("model") or {}).get("weights") or {}
    notes = weight_notes(str(cfg.model.get("size", "?")), dict(weights))
    notes += method_notes(
        resolved.get("method") or {},
        resolved.get("diffusion") or {},
        resolved.get("model") or {},
        matched,
    )
    from eval.datasets.tokens import long_prompt_note

    if methods and (long := long_prompt_note((v.name, v.prompt) for v in videos)):
        notes.append(long)  # said once per run: a warning now, a note above the report's tables
    size = frame_size(cfg)  # the model's own (model.resolution) or set (dataset.size): said in a note
    notes += frame_size_notes(size)
    try:
        results.write_header(
            run_dir,
            provenance={
                **provenance(resolved, seed=int(cfg.seed), device=str(cfg.hardware.device)),
                "frame_size": size,
            },
            references=refs,
            notes=notes,
        )
    except OSError as exc:
        if disk_full(exc):
            raise _stopped_by_full_disk(run_dir, exc) from exc
        raise
    settings = RunnerSettings.from_config(
        {**OmegaConf.to_container(cfg.runner, resolve=True), "seed": cfg.seed}
    )
    context = {"hardware": OmegaConf.to_container(cfg.hardware, resolve=True)}
    log.info("%d method(s) x %d video(s) -> %s", len(methods), len(videos), run_dir)
    runner = Runner(
        dict(methods),
        videos,
        metrics,
        cfg.metrics,
        UnitStore(cfg.results_root),
        run_dir,
        settings,
        context=context,
        progress=progress,
    )
    try:
        with sigterm_as_interrupt():
            summary = runner.run()
    except KeyboardInterrupt as exc:
        signal_name = "SIGTERM" if isinstance(exc, Terminated) else "SIGINT"
        finish_run_dir(run_dir, "interrupted", {"signal": signal_name})
        log.warning(
            "interrupted (%s): finished units are kept and in %s's tables; run the same command again to resume",
            signal_name,
            run_dir,
        )
        raise
    except DiskFullError as exc:
        raise _stopped_by_full_disk(run_dir, exc) from exc.__cause__
    except BaseException:
        finish_run_dir(run_dir, "failed")
        raise
    finish_run_dir(run_dir, "complete")  # the tables are whole; the report below is derived from them
    if cfg.report.enabled:
        from eval.report import build_report

        try:
            build_report(
                [run_dir],
                run_dir,
                compare_to=cfg.report.get("compare_to"),
                seed=int(cfg.seed),
                reference_methods=list(cfg.report.get("reference_methods") or []),
            )
        except Exception as exc:
            if not disk_full(exc):
                raise
            full = as_disk_full(exc)
            full.run_dir, full.stage = run_dir, "report"  # the tables are whole: only the report is missing
            raise full from exc
    return summary


def _stopped_by_full_disk(run_dir: Path, exc: BaseException) -> DiskFullError:
    """Mark the run folder ``disk_full`` (status.json; INCOMPLETE stays) and return the error to raise."""
    full = exc if isinstance(exc, DiskFullError) else as_disk_full(exc)
    full.run_dir, full.stage = run_dir, "run"
    try:
        finish_run_dir(run_dir, "disk_full", {"error": f"{full.strerror}: {full.filename}"})
    except OSError as again:  # not even room to rewrite status.json in place: INCOMPLETE still says it
        log.error("could not mark %s disk_full: %s", run_dir, again)
    return full


def disk_full_message(exc: DiskFullError, results_root: Path) -> str:
    """What a full disk stopped, what is kept, and how to go on."""
    where = f" writing {exc.filename}" if exc.filename else ""
    run_dir = getattr(exc, "run_dir", None)
    if getattr(exc, "stage", "") == "report":
        return (
            f"error: disk full ({exc.strerror}){where}: the run's tables in {run_dir} are complete, its report "
            f"is not; free space and rebuild it with `python -m eval.report {run_dir}`"
        )
    kept = len(list((results_root / "units").glob("*/*/unit.json")))
    return (
        f"error: disk full ({exc.strerror}){where}: the run stopped at the first write that failed instead of "
        f"computing units it could not keep. The {kept} finished unit(s) under {results_root / 'units'} are kept; "
        f"free space (or set results_root=...) and run the same command again to resume from them. Run folder: "
        f"{run_dir} (status.json: disk_full, marked INCOMPLETE); exit status {EXIT_DISK_FULL}"
    )


def available(group: str, extra_dirs: list[Path] = ()) -> list[str]:
    names = set()
    for root in [CONF_DIR, *extra_dirs]:
        d = Path(root) / group
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.yaml"))
    return sorted(names)


def check_overrides(argv: list[str]) -> str | None:
    """A "did you mean" message for a misspelled config name in ``group=name`` overrides, or None.

    Hydra itself lists the available options; this adds the closest match. Names reachable only through an extra
    ``hydra.searchpath`` are skipped unless that path is a plain folder we can list.
    """
    extra: list[Path] = []
    for arg in argv:
        if arg.startswith("hydra.searchpath="):
            for item in arg.split("=", 1)[1].strip("[]").split(","):
                item = item.strip().strip("'\"")
                if item.startswith("file://"):
                    extra.append(Path(item[len("file://") :]))
                elif item:
                    return None  # pkg:// search paths: let Hydra resolve them
    for arg in argv:
        if "=" not in arg or arg.startswith(("+", "~", "hydra")):
            continue
        key = arg.split("=", 1)[0]
        if key not in GROUPS:
            continue
        options = available(key, extra)
        for name in _option_names(arg):
            if name not in options:
                close = difflib.get_close_matches(name, options, n=1)
                hint = f" Did you mean '{close[0]}'?" if close else ""
                return f"Unknown {key} '{name}'.{hint} Available: {', '.join(options)}" + GROUP_HINTS.get(
                    key, ""
                )
    return None


def _option_names(arg: str) -> list[str]:
    """Config names in a ``group=...`` override as Hydra reads it: ``a``, ``[a,b]``, sweeps ``a,b`` and sweeps of
    lists ``[a],[b,c]``. An override Hydra cannot parse gives none here (Hydra reports it)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        (override,) = OverridesParser.create().parse_overrides([arg])
        values = list(override.sweep_iterator()) if override.is_sweep_override() else [override.value()]
    except Exception:  # noqa: BLE001 - Hydra's own message is the better one
        return []
    names: list[str] = []
    for v in values:
        for item in v if isinstance(v, list) else [v]:
            if isinstance(item, str) and item not in ("null", ""):
                names.append(item)
    return names


def exit_code(summaries: list[RunSummary]) -> int:
    failed = sum(len(s.failed) for s in summaries)
    total = sum(len(s.units) for s in summaries)
    if failed:
        print(
            f"{failed} of {total} units failed (see units.parquet / the report for reasons)", file=sys.stderr
        )
        return 1
    return 0


def weight_notes(size: str, weights: dict) -> list[str]:
    """Report notes on the model's weights: all random, or which components ran random while others are real
    (``model.weights.<key>=random``; the model refuses a real/unset mix, so these are the configured ones)."""
    real = [k for k, v in weights.items() if v and str(v).lower() not in ("random", "none")]
    random_parts = [k for k, v in weights.items() if str(v).lower() == "random"]
    if real == ["trained"]:
        return [
            f"model={size}: tiny model trained by the project (not SD1.5; {weights['trained']}, "
            "python -m live2diff.train_tiny): quality figures compare the methods on this ~3M-parameter video "
            "denoiser, not the published models' image quality"
        ]
    if not real:
        return [
            f"model={size} with random-initialised weights (no model.weights set): "
            "quality figures exercise the harness and the methods' mechanics, not their image quality"
        ]
    if random_parts:
        return [
            f"model={size}: real weights for {real}; random weights, as configured, for {random_parts} "
            "(model.weights.<key>=random): figures depending on those components are not the real model's"
        ]
    return []
