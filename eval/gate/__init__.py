"""Latency regression gate (``experiment=ci_latency``; settings in ``conf/gate/default.yaml``): is any selected method slower than the committed reference by more than the tolerance?

Absolute times on a shared CI machine move by tens of percent with the neighbours' load, so the gate never compares
them. It compares **ratios measured in one process**: before every push a block of calibration calls (a fixed
tensor workload) is timed, and each frame's time is divided by the per-call time of the block just before it, so
whatever load slows the method at that moment slows its yardstick too. Each repetition streams every selected video
through every method (the order rotates between repetitions), discarding each stream's first ``warmup_frames``,
and takes a quantile (``gate.quantile``, the median by default) of these per-frame ratios. The gate's
figure is the **median of the k repetition ratios**. A method regresses when its ratio exceeds the reference's by
more than the tolerance *and* the change is larger than ``min_change_ms`` at the current machine speed (a floor for
microsecond methods such as ``identity``, whose relative jitter is large and meaningless).

The reference (``results/reference/<experiment>.json``, written only on request: ``--update-reference``) records
the ratios with the machine and a hash of the measurement set-up (dataset, model, hardware, gate settings,
calibration version). A different set-up hash is reported and not compared; a different machine is reported
beside the comparison (``gate.on_machine_mismatch: fail`` refuses instead). Method configs are deliberately *not*
part of the hash: a change to a method is exactly what the gate judges.

The package: ``measure`` (calibration, clocks, the measurement through the one stream driver), ``reference`` (the
committed reference: set-up hash, machine, reading and writing), ``verdict`` (ratios against the reference, the
table) and ``run`` (:func:`run_gate`, from a composed config; reached through ``eval.cli.main``).
"""

from eval.gate.measure import CLOCKS, ESTIMATORS, Calibration, MethodTiming, measure, resolve_clock
from eval.gate.reference import (
    CALIBRATION_VERSION,
    MACHINE_KEYS,
    REFERENCE_SCHEMA,
    SETUP_GATE_KEYS,
    UnusableReference,
    load_reference,
    machine_differences,
    make_reference,
    setup_differences,
    setup_of,
)
from eval.gate.run import GateOutcome, run_gate
from eval.gate.verdict import (
    EXIT_NO_REFERENCE,
    EXIT_OK,
    EXIT_REGRESSION,
    Verdict,
    decide,
    exit_status,
    format_table,
)

__all__ = [
    "CALIBRATION_VERSION",
    "CLOCKS",
    "ESTIMATORS",
    "EXIT_NO_REFERENCE",
    "EXIT_OK",
    "EXIT_REGRESSION",
    "MACHINE_KEYS",
    "REFERENCE_SCHEMA",
    "SETUP_GATE_KEYS",
    "Calibration",
    "GateOutcome",
    "MethodTiming",
    "UnusableReference",
    "Verdict",
    "decide",
    "exit_status",
    "format_table",
    "load_reference",
    "machine_differences",
    "make_reference",
    "measure",
    "resolve_clock",
    "run_gate",
    "setup_differences",
    "setup_of",
]
