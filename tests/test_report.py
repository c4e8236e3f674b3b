"""The report as a reader sees it: intervals with n, fair "best", flagged failures, paired table, published | ours."""

import re

import numpy as np
import pandas as pd
import pytest

from eval import results
from eval.report import build_report
from eval.report.context import Context, best_methods
from eval.report.sections import paired_rows
from eval.results import MetricDescriptor

WARP = MetricDescriptor("warp_error", "Warp error", "L1 /255", False, config={"flow": "dis", "variant": "l1"})
WARP_IN = MetricDescriptor(
    "warp_error_input",
    "Warp error (input)",
    "L1 /255",
    False,
    config={"flow": "dis", "frames": "source"},
    input_side=True,
)
CLIP = MetricDescriptor("clip_score", "CLIP score", "100·cos", True, config={"model": "ViT-B-32"})
DESCS = (
    {d.name: d for d in (WARP, WARP_IN, CLIP)} | dict(results.SYSTEM_METRICS) | dict(results.CHECK_METRICS)
)


def make_run(d, values: dict, errors=(), refs=(), nonfinite=None, out_of_range=None):
    """values: method -> metric -> [per-video values] (NaN = no value); errors: (method, video) failed units."""
    config = {
        "model": {"size": "tiny"},
        "hardware": {"dtype": "float32"},
        "seed": 1,
        "method": {m: {"t_index_list": [30, 40]} for m in values},
    }
    results.write_header(d, provenance={"config": config}, references=refs)
    vrows, urows = [], []
    for method, metrics in values.items():
        n = len(next(iter(metrics.values())))
        for i in range(n):
            video = f"v{i}"
            if (method, video) in errors:
                urows.append((method, video, "k", "error", "RuntimeError: boom", 0, 0.0, ""))
                continue
            urows.append((method, video, "k", "ok", "", 4, 0.1, ""))
            for metric, vals in metrics.items():
                vrows.append((method, video, metric, float(vals[i])))
            vrows.append(
                (method, video, "nonfinite_frames", float((nonfinite or {}).get((method, video), 0)))
            )
            vrows.append(
                (method, video, "out_of_range_frames", float((out_of_range or {}).get((method, video), 0)))
            )
    results.write_tables(
        d,
        units=pd.DataFrame(urows, columns=results.UNIT_COLUMNS),
        frames=pd.DataFrame(columns=results.FRAME_COLUMNS),
        videos=pd.DataFrame(vrows, columns=results.VIDEO_COLUMNS),
        metrics=DESCS,
    )
    return d


def ctx_of(d, **kw):
    return Context(results.load_run(d), d, **kw)


def section(md: str, title: str) -> str:
    m = re.search(rf"^## {re.escape(title)}.*?\n(.*?)(?=^## |\Z)", md, flags=re.S | re.M)
    assert m, f"no section {title!r}"
    return m.group(1)


def row(md_section: str, method: str) -> list[str]:
    for line in md_section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0].split(" ")[0] == method:
            return cells
    raise AssertionError(f"no row {method!r}")


def test_cells_show_mean_t_interval_and_n(tmp_path):
    d = make_run(tmp_path, {"a": {"warp_error": [1.0, 2.0, 3.0], "latency_p95_ms": [5.0, 5.0, 5.0]}})
    md = (build_report([d], tmp_path)).read_text()
    half = 4.302652729911275 / np.sqrt(3)  # t_{0.975,2} * s / sqrt(n), s = 1
    assert f"2.00 [{2 - half:.4f}, {2 + half:.2f}] n=3" in md
    assert "5.00 [5.00, 5.00] n=3" in md


def test_best_is_never_a_reference_row_and_is_judged_on_common_videos(tmp_path):
    # identity has the lowest warp error (a reference row: not ranked). "a" has the better mean over its own three
    # videos, but its third video failed for "b"; on the two videos both have, "b" is better.
    d = make_run(
        tmp_path,
        {
            "identity": {"warp_error": [0.1, 0.1, 0.1]},
            "a": {"warp_error": [5.0, 5.0, 0.0]},
            "b": {"warp_error": [4.0, 4.0, 99.0]},
            "dead": {"warp_error": [1.0, 1.0, 1.0]},
        },
        errors={("b", "v2"), ("dead", "v0"), ("dead", "v1"), ("dead", "v2")},
    )
    ctx = ctx_of(d, reference_methods=frozenset({"identity"}))
    assert best_methods(ctx, "warp_error", ctx.methods) == {"b"}
    md = build_report([d], tmp_path, reference_methods=["identity"]).read_text()
    full = section(md, "All metrics")
    assert row(full, "b")[1].startswith("**4.00") and "(1 missing)" in row(full, "b")[1]
    assert not row(full, "identity")[1].startswith("**") and not row(full, "a")[1].startswith("**")
    assert row(full, "dead")[1] == "– n=0 (3 missing)"  # every unit failed: shown, never silently dropped
    assert "Failed units (4)" in md and "RuntimeError: boom" in md


def test_a_method_with_non_finite_outputs_is_flagged_everywhere_and_never_ranked(tmp_path):
    d = make_run(
        tmp_path,
        {
            "a": {"warp_error": [0.0, 0.0, np.nan]},
            "b": {"warp_error": [4.0, 4.0, 4.0]},
            "c": {"warp_error": [6.0] * 3},
        },
        nonfinite={("a", "v2"): 4, ("a", "v1"): 1},
        out_of_range={("b", "v0"): 2},
    )
    md = build_report([d], tmp_path, reference_methods=[]).read_text()
    for title in ("Headline (the paper's axes)", "All metrics"):
        s = section(md, title)
        a, b = row(s, "a"), row(s, "b")
        assert a[0] == "a †" and "(1 missing)" in a[1] and "†5 frames" in a[1]
        assert not a[1].startswith("**") and b[1].startswith("**")  # a looks best but is not ranked
        assert b[0] == "b ‡"
    assert "a: 5 output frames are NaN/inf" in md and "b: 2 output frames have values outside [0, 1]" in md


def test_paired_uses_common_videos_exact_sign_flip_and_holm(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.normal(10, 1, 9)
    d = make_run(
        tmp_path,
        {
            "identity": {"warp_error": base, "warp_error_input": base, "fps": base * 100},
            "good": {"warp_error": base - 3, "warp_error_input": base, "fps": base},
            "same": {
                "warp_error": base + np.array([0.01, -0.01] * 4 + [0.0]),
                "warp_error_input": base,
                "fps": base,
            },
        },
        errors={("good", "v8")},
    )
    ctx = ctx_of(d, reference_methods=frozenset({"identity"}))
    p = paired_rows(ctx)
    # input-side metrics cannot differ; system figures are not compared with the reference row
    assert set(p.metric) == {"warp_error"}
    good = p.set_index("method").loc["good"]
    assert good.n_videos == 8 and good["diff"] == pytest.approx(-3.0)
    assert good.p == pytest.approx(
        2 / 2**8
    )  # exact: only the all-negative flip and its mirror are as extreme
    assert good.p_holm == pytest.approx(min(1, 2 * good.p))  # two rows in the table
    md = build_report([d], tmp_path, reference_methods=["identity"]).read_text()
    s = section(md, "Paired comparison against identity")
    lines = [ln for ln in s.splitlines() if ln.startswith("| ") and "method" not in ln]
    assert lines[0].split("|")[2].strip() == "good"  # sorted best first (lower warp error)
    assert lines[0].split("|")[5].strip() == "**0.0156** *" and "*" not in lines[1].split("|")[5]
    assert "Warp error (input)" not in s and "Throughput" not in s


def test_headline_leads_with_the_paper_axes(tmp_path):
    d = make_run(
        tmp_path,
        {
            "a": {
                "clip_score": [1, 2],
                "warp_error": [1, 2],
                "fps": [3, 4],
                "latency_p95_ms": [1, 1],
                "call_p50_ms": [1, 1],
            }
        },
    )
    md = build_report([d], tmp_path).read_text()
    first_table = md.index("| method |")
    assert md.index("## Headline") < first_table < md.index("## All metrics")
    head = section(md, "Headline (the paper's axes)").splitlines()
    cols = next(ln for ln in head if ln.startswith("| method"))
    assert [c.split(":")[0].strip() for c in cols.strip("|").split("|")][1:] == [
        "Prompt alignment",
        "Warp error",
        "FPS",
        "Latency p95",
    ]
    assert "Per-call" not in cols and "Per-call" in section(md, "All metrics")


def test_published_ours_delta_cites_sources_and_never_fills_uncited_cells(tmp_path):
    """A published figure is compared only when it states its settings, names the metric's variant where the metric
    has variants, and equals ours on every key it states; otherwise its cell is greyed out with the reason and no Δ
    is computed (issue 32)."""
    refs = [
        {
            "method": "a",
            "metric": "warp_error",
            "value": 2.5,
            "source": "Paper, Table 1",
            "settings": {"variant": "l1", "flow": "raft"},
        },
        {"method": "a", "metric": "fps", "value": 10.0, "source": "README speed table"},
        {
            "method": "b",
            "metric": "fps",
            "value": 1.5,
            "source": "B's README",
            "settings": {"t_index_list": [30, 40], "denoising_steps": 2},
        },
        {"method": "b", "metric": "fps", "value": 0.5, "source": "B fp16", "settings": {"dtype": "float16"}},
        {
            "method": "b",
            "metric": "warp_error",
            "value": 3.5,
            "source": "B's paper",
            "settings": {"flow": "dis"},
        },
        {
            "method": "a",
            "metric": "fps",
            "value": 11.0,
            "source": "A on a GPU",
            "settings": {"gpu": "RTX 4090", "resolution": "not stated"},
        },
    ]
    d = make_run(
        tmp_path,
        {
            "a": {"warp_error": [2.0, 2.0], "fps": [12.0, 12.0]},
            "b": {"warp_error": [3.0, 3.0], "fps": [1.0, 1.0]},
        },
        refs=refs,
    )
    md = build_report([d], tmp_path).read_text()
    s = section(md, "Published figures beside ours")
    a, b = row(s, "a"), row(s, "b")
    assert a[1] == "2.50 [1] (not compared)" and a[2].startswith("2.00") and a[3] == "not compared [1]"
    assert a[4] == "10.00 [2] (not compared); 11.00 [6] (not compared)"
    assert a[6] == "not compared [2]; not compared [6]"
    assert b[1] == "3.50 [5] (not compared)" and b[3] == "not compared [5]"  # warp error: variant not stated
    assert b[4] == "1.50 [3]; 0.5000 [4] (not compared)"  # method and run settings are compared too
    assert b[6] == "-0.5000 (-33%) [3]; not compared [4]"
    assert b[2].startswith("3.00") and b[5].startswith("1.00") and a[5].startswith("12.00")
    assert "Paper, Table 1" in s and "flow: raft published, dis ours" in s and "settings not stated" in s
    assert "variant not stated (ours: l1)" in s
    assert "dtype: float16 published, float32 ours" in s
    assert "settings match ours (denoising_steps=2, t_index_list=[30, 40])" in s
    assert "gpu: RTX 4090 published, none (cpu) ours" in s and "resolution not stated by the source" in s
    html = (tmp_path / "report.html").read_text()
    assert html.count("class='muted'") + html.count("num muted'") >= 6  # greyed cells, the compared ones not
    assert "title='[1] flow: raft published, dis ours'" in html


def test_published_gpu_matches_the_devices_name():
    from eval.report.published import _settings_mismatch

    ours = {"gpu": "NVIDIA GeForce RTX 4090", "resolution": [512, 512]}
    assert _settings_mismatch({"gpu": "RTX 4090", "resolution": [512, 512]}, ours) == []
    assert _settings_mismatch({"gpu": "A100"}, ours) == ["gpu: A100 published, NVIDIA GeForce RTX 4090 ours"]
    assert _settings_mismatch({"resolution": [768, 512]}, ours)


def test_markdown_and_html_render_the_same_sections(tmp_path):
    d = make_run(tmp_path, {"a": {"warp_error": [1.0, 2.0]}, "b": {"warp_error": [3.0, 4.0]}})
    md = build_report([d], tmp_path).read_text()
    html = (tmp_path / "report.html").read_text()
    titles = re.findall(r"^#+ (.+)$", md, flags=re.M)
    assert titles and all(t.replace("'", "&#x27;") in html for t in titles)
    assert "<td class='best num'" in html and "**1.50" in md


def test_every_reference_in_the_experiments_carries_its_settings():
    """conf/experiment/*.yaml: each published figure states the settings it was computed with (and the variant, for
    a metric that has variants), so the report can tell a comparable figure from one it must grey out."""
    from tests.conftest import CONF, compose

    seen = 0
    for path in sorted((CONF / "experiment").glob("*.yaml")):
        cfg = compose([f"experiment={path.stem}"])
        for r in cfg.report.get("reference") or []:
            seen += 1
            assert r.get("settings"), f"{path.name}: {r.method}/{r.metric} states no settings"
            if r.metric.startswith("warp_error") or r.metric == "mawe":
                assert "variant" in r.settings, f"{path.name}: {r.method}/{r.metric} states no variant"
    assert seen >= 5


def test_paper_speed_figures_compare_only_on_the_stated_setup(tmp_path):
    """A live2diff run on an RTX 4090 at 512x512, 2 steps, torch.compile: the README's TensorRT-off figure is
    compared, the TensorRT one is greyed out (this project has no TensorRT path); the same run on another card
    greys both."""
    from omegaconf import OmegaConf

    from tests.conftest import compose

    refs = OmegaConf.to_container(compose(["experiment=paper_speed", "dataset.root=/d"]).report.reference)
    for gpu, compared in (("NVIDIA GeForce RTX 4090", {6.91}), ("NVIDIA H100 80GB HBM3", set())):
        d = tmp_path / gpu.replace(" ", "_")
        config = {
            "model": {"size": "sd15"},
            "hardware": {"dtype": "float16", "device": "cuda"},
            "dataset": {"size": [512, 512]},
            "seed": 42,
            "method": {"live2diff": {"t_index_list": [30, 40], "compile": True}},
        }
        results.write_header(d, provenance={"config": config, "device": {"gpu": gpu}}, references=refs)
        results.write_tables(
            d,
            units=pd.DataFrame(
                [("live2diff", "v0", "k", "ok", "", 4, 0.1, "")], columns=results.UNIT_COLUMNS
            ),
            frames=pd.DataFrame(columns=results.FRAME_COLUMNS),
            videos=pd.DataFrame([("live2diff", "v0", "steady_fps", 7.5)], columns=results.VIDEO_COLUMNS),
            metrics=DESCS,
        )
        s = section(build_report([d], d).read_text(), "Published figures beside ours")
        cells = row(s, "live2diff")
        got = {float(p.split(" [")[0]) for p in cells[1].split("; ") if "not compared" not in p}
        assert got == compared, cells
        assert "acceleration: tensorrt published, torch.compile ours" in s
        if not compared:
            assert "gpu: RTX 4090 published, NVIDIA H100 80GB HBM3 ours" in s
