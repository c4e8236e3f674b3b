"""How often the report's intervals cover the truth with 3, 5 and 10 videos, against the percentile bootstrap the
report used before (normal data, seeded). Writes benchmarks/results/report_coverage.{json,md}.

    python benchmarks/report_coverage.py
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

# run from anywhere: the repo's eval/, not an installed copy
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _smoke import add_smoke_flag, apply_smoke  # noqa: E402

from eval.report.stats import sign_flip_pvalue, t_interval  # noqa: E402

OUT = Path(__file__).resolve().parent / "results"
T_REPS, BOOT_REPS, N_BOOT = 4000, 1000, 2000


def bootstrap(v: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    means = v[rng.integers(0, v.size, size=(N_BOOT, v.size))].mean(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def main() -> None:
    global T_REPS, BOOT_REPS, N_BOOT
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=OUT)
    add_smoke_flag(ap)
    args = ap.parse_args()
    if args.smoke:
        T_REPS, BOOT_REPS, N_BOOT = 40, 10, 50
    args = apply_smoke(ap, args, {})
    out = args.out
    rows = []
    for n in (3, 5, 10):
        rng = np.random.default_rng(n)  # the seeds of tests/test_report_stats.py
        t_cov = np.mean(
            [
                (lambda iv: iv.low <= 3.0 <= iv.high)(t_interval(rng.normal(3.0, 2.0, n)))
                for _ in range(T_REPS)
            ]
        )
        rb = np.random.default_rng(100 + n)
        b_cov = np.mean(
            [
                (lambda lo_hi: lo_hi[0] <= 3.0 <= lo_hi[1])(bootstrap(rb.normal(3.0, 2.0, n), rb))
                for _ in range(BOOT_REPS)
            ]
        )
        rn = np.random.default_rng(200 + n)
        b_fp, s_fp = [], []
        for i in range(BOOT_REPS):  # paired differences under H0 (mean 0)
            d = rn.normal(0.0, 1.0, n)
            lo, hi = bootstrap(d, rn)
            b_fp.append(not lo <= 0.0 <= hi)
            s_fp.append(sign_flip_pvalue(d, n_mc=2000, seed=i) <= 0.05)
        rows.append(
            {
                "n": n,
                "t_coverage": float(t_cov),
                "bootstrap_coverage": float(np.mean(b_cov)),
                "bootstrap_null_rejects": float(np.mean(b_fp)),
                "signflip_null_rejects": float(np.mean(s_fp)),
            }
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "report_coverage.json").write_text(json.dumps(rows, indent=1) + "\n")
    md = [
        "# Interval coverage and false positives at small n (`python benchmarks/report_coverage.py`)",
        "",
        f"Normal data; coverage of the true mean by a nominal 95 % interval ({T_REPS} draws for t, {BOOT_REPS} for the",
        f"percentile bootstrap with {N_BOOT} resamples); under H0 (paired differences ~ N(0, 1)): how often the bootstrap",
        "interval excludes 0 and how often the sign-flip p-value is ≤ 0.05 (both should be ≤ 5 %).",
        "",
        "| n | Student-t coverage | bootstrap coverage (before) | bootstrap excludes 0 under H0 | sign-flip p ≤ 0.05 under H0 |",
        "|---|---|---|---|---|",
    ]
    md += [
        f"| {r['n']} | {r['t_coverage']:.3f} | {r['bootstrap_coverage']:.3f} | {r['bootstrap_null_rejects']:.3f} | "
        f"{r['signflip_null_rejects']:.3f} |"
        for r in rows
    ]
    (out / "report_coverage.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
