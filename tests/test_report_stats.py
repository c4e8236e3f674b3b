"""Intervals and tests that hold with 3–30 videos (eval/report/stats.py)."""

import itertools

import numpy as np
import pytest

from eval.report.stats import EXACT_MAX_N, holm, sign_flip_pvalue, t_interval

REPS = 4000  # binomial s.e. of a 95 % coverage estimate: 0.34 points


def coverage(n: int, reps: int = REPS, seed: int = 0) -> float:
    rng = np.random.default_rng(seed + n)
    hits = 0
    for _ in range(reps):
        iv = t_interval(rng.normal(3.0, 2.0, n))
        hits += iv.low <= 3.0 <= iv.high
    return hits / reps


@pytest.mark.parametrize("n", [3, 5, 10])
def test_t_interval_covers_the_true_mean_95_percent_of_the_time(n):
    assert 0.93 <= coverage(n) <= 0.97


def test_t_interval_is_the_textbook_one():
    iv = t_interval([1.0, 2.0, 3.0, np.nan])  # NaN dropped, n counts finite values
    assert iv.n == 3 and iv.mean == pytest.approx(2.0)
    assert iv.high - iv.mean == pytest.approx(
        4.302652729911275 * 1.0 / np.sqrt(3)
    )  # t_{0.975, 2} * s / sqrt(n)
    one = t_interval([5.0])
    assert one.n == 1 and one.mean == 5.0 and np.isnan(one.low)  # no interval from one video
    assert t_interval([]).n == 0


def test_sign_flip_is_exact_for_small_n():
    d = np.array([1.0, 2.0, -0.5, 3.0])
    stats = [abs(np.dot(s, d)) / 4 for s in itertools.product((1, -1), repeat=4)]
    assert sign_flip_pvalue(d) == pytest.approx(np.mean(np.array(stats) >= abs(d.mean()) - 1e-12))
    assert sign_flip_pvalue([1.0, 2.0, 3.0]) == pytest.approx(0.25)  # the smallest p three videos can give
    assert sign_flip_pvalue(np.zeros(5)) == 1.0


def test_sign_flip_false_positive_rate_under_the_null():
    """Under H0 (symmetric differences) p <= 0.05 happens at most 5 % of the time, at n = 3 (exact) and 20 (MC)."""
    rng = np.random.default_rng(1)
    for n, reps in ((3, 2000), (8, 1000), (20, 300)):
        p = np.array([sign_flip_pvalue(rng.normal(0, 1, n), n_mc=2000, seed=i) for i in range(reps)])
        assert np.mean(p <= 0.05) <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / reps), n
    assert n > EXACT_MAX_N


def test_sign_flip_detects_a_real_shift():
    rng = np.random.default_rng(2)
    assert sign_flip_pvalue(rng.normal(2.0, 1.0, 10)) < 0.01
    assert sign_flip_pvalue(rng.normal(2.0, 1.0, 30), seed=0) < 0.01  # Monte Carlo branch


def test_holm():
    adj = holm([0.01, 0.04, 0.03, np.nan])
    # sorted 0.01, 0.03, 0.04 -> 3*0.01, max(0.03, 2*0.03), max(0.06, 1*0.04)
    assert adj[:3] == pytest.approx([0.03, 0.06, 0.06]) and np.isnan(adj[3])
