import numpy as np
import pandas as pd
import pytest

from eval.report import bootstrap_ci, paired_table, per_method_table, summary_cells

DESC = {
    "q": {"display_name": "Q", "higher_is_better": True, "kind": "quality"},
    "lat": {"display_name": "Lat", "unit": "ms", "higher_is_better": False, "kind": "system"},
}


def videos():
    rows = []
    for method, q, lat in (("a", [1.0, 2.0, 3.0], [10, 12, 11]), ("b", [2.0, 3.0, 4.0], [30, 31, 29])):
        for i in range(3):
            rows += [(method, f"v{i}", "q", q[i]), (method, f"v{i}", "lat", float(lat[i]))]
    return pd.DataFrame(rows, columns=["method", "video", "metric", "value"])


def test_bootstrap_ci_brackets_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    small, big = rng.normal(5, 1, 10), rng.normal(5, 1, 1000)
    m, lo, hi = bootstrap_ci(small, 2000, 0)
    assert lo < m < hi and m == pytest.approx(small.mean())
    _, blo, bhi = bootstrap_ci(big, 2000, 0)
    assert (bhi - blo) < (hi - lo) / 5
    assert bootstrap_ci(np.array([3.0, np.nan]))[0] == 3.0  # NaN dropped
    assert np.isnan(bootstrap_ci(np.array([np.nan]))[0])


def test_best_follows_declared_direction():
    table = per_method_table(videos(), DESC, n_boot=200)
    methods, metrics, cells, best = summary_cells(table, DESC)
    assert metrics == ["q", "lat"]
    by = dict(zip(methods, best))
    assert by["b"][0] and not by["a"][0]  # higher Q is better
    assert by["a"][1] and not by["b"][1]  # lower latency is better


def test_paired_difference():
    p = paired_table(videos(), "a", n_boot=200).set_index("metric")
    assert p.loc["q", "diff"] == pytest.approx(1.0) and p.loc["q", "ci_low"] == pytest.approx(1.0)
    assert p.loc["lat", "diff"] == pytest.approx(19.0)
    assert paired_table(videos(), "missing").empty
