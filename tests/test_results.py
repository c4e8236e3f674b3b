"""The run folder's schema (eval/results/): one owner writes, loads and merges; merging never mixes settings."""

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from eval import results
from eval.results import MetricDescriptor, Reference, ResultsError

ROOT = Path(__file__).resolve().parent.parent

WARP = MetricDescriptor("warp_error", "Warp error", "L1 /255", False, config={"flow": "dis", "variant": "l1"})


def provenance(method_cfg: dict, **config) -> dict:
    return {
        "config": {"method": method_cfg, "model": {"size": "tiny"}, "hardware": {"device": "cpu"}, **config}
    }


def write_run(d: Path, method_cfg: dict, values: dict, metric: MetricDescriptor = WARP, refs=()) -> Path:
    """A run folder with one quality metric; ``values`` maps (method, video) -> value."""
    results.write_header(d, provenance=provenance(method_cfg, seed=42), references=refs, notes=["a note"])
    units = pd.DataFrame(
        [(m, v, f"k{m}{v}", "ok", "", 4, 0.1, "") for m, v in values], columns=results.UNIT_COLUMNS
    )
    videos = pd.DataFrame(
        [(m, v, metric.name, x) for (m, v), x in values.items()], columns=results.VIDEO_COLUMNS
    )
    frames = pd.DataFrame(
        [(m, v, i, metric.name, x) for (m, v), x in values.items() for i in range(4)],
        columns=results.FRAME_COLUMNS,
    )
    results.write_tables(d, units=units, frames=frames, videos=videos, metrics={metric.name: metric})
    return d


def test_round_trip_keeps_tables_descriptors_settings_and_references(tmp_path):
    ref = {
        "method": "a",
        "metric": "warp_error",
        "value": 3.0,
        "source": "paper",
        "settings": {"flow": "raft"},
    }
    d = write_run(tmp_path / "r1", {"a": {"steps": 2}}, {("a", "v0"): 1.0, ("a", "v1"): 2.0}, refs=[ref])
    run = results.load_run(d)
    assert json.loads((d / results.RUN).read_text())["schema_version"] == results.SCHEMA_VERSION
    assert run.settings["r1"]["model"] == "tiny" and run.settings["r1"]["device"] == "cpu"
    assert run.metrics["warp_error"] == WARP
    assert run.references == [Reference("a", "warp_error", 3.0, "paper", {"flow": "raft"})]
    assert run.notes == ["a note"] and run.methods == ["a"]
    assert sorted(run.videos.value) == [1.0, 2.0] and len(run.frames) == 8
    assert run.method_settings("a") == {"steps": 2}


def test_newer_schema_and_non_run_folders_are_refused_with_the_reason(tmp_path):
    d = write_run(tmp_path / "r1", {"a": {}}, {("a", "v0"): 1.0})
    (d / results.RUN).write_text(json.dumps({"schema_version": results.SCHEMA_VERSION + 1}))
    with pytest.raises(ResultsError, match="schema"):
        results.load_run(d)
    with pytest.raises(ResultsError, match="not a result folder"):
        results.load_runs([tmp_path / "nothing"])


def test_reference_entries_must_cite_a_source():
    with pytest.raises(ResultsError, match="source"):
        Reference.from_config({"method": "a", "metric": "fps", "value": 1.0})
    with pytest.raises(ResultsError, match="unknown keys"):
        Reference.from_config({"method": "a", "metric": "fps", "value": 1.0, "source": "x", "flow": "raft"})


def test_shards_concatenate(tmp_path):
    a = write_run(tmp_path / "s0", {"a": {"steps": 2}}, {("a", "v0"): 1.0})
    b = write_run(tmp_path / "s1", {"a": {"steps": 2}}, {("a", "v1"): 3.0})
    run = results.load_runs([a, b])
    assert run.methods == ["a"] and sorted(run.videos.video) == ["v0", "v1"] and not run.labels


def test_a_method_run_with_different_settings_becomes_two_labelled_rows(tmp_path):
    a = write_run(tmp_path / "0", {"live2diff": {"t_index_list": [30, 40]}}, {("live2diff", "v0"): 1.0})
    b = write_run(tmp_path / "1", {"live2diff": {"t_index_list": [25, 34, 43]}}, {("live2diff", "v0"): 5.0})
    run = results.load_runs([a, b])
    assert sorted(run.methods) == ["live2diff[t_index_list=[25, 34, 43]]", "live2diff[t_index_list=[30, 40]]"]
    by = run.videos.set_index("method").value
    assert by["live2diff[t_index_list=[30, 40]]"] == 1.0 and by["live2diff[t_index_list=[25, 34, 43]]"] == 5.0


def test_a_metric_computed_with_different_settings_refuses_to_merge(tmp_path):
    raft = MetricDescriptor(
        "warp_error", "Warp error", "L1 /255", False, config={"flow": "raft", "variant": "l1"}
    )
    a = write_run(tmp_path / "0", {"a": {}}, {("a", "v0"): 1.0})
    b = write_run(tmp_path / "1", {"a": {}}, {("a", "v1"): 2.0}, metric=raft)
    with pytest.raises(ResultsError, match=r"warp_error.*flow: 'dis' vs 'raft'"):
        results.load_runs([a, b])


def test_a_multirun_folder_merges_as_the_readme_writes_it(tmp_path):
    sweep = tmp_path / "multirun_x"
    write_run(sweep / "0", {"a": {}}, {("a", "v0"): 1.0})
    write_run(sweep / "1", {"a": {}}, {("a", "v1"): 2.0})
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    glob = sorted(sweep.glob("*"))  # what the shell expands results/default/multirun_*/* to
    assert results.load_runs(glob).runs == ["0", "1"]
    assert results.load_runs([sweep]).runs == ["0", "1"]


def test_run_folder_files_are_named_only_in_eval_results():
    """One owner: no other module of eval/ opens a run folder's files by name."""
    names = [
        results.FRAMES,
        results.VIDEOS,
        results.UNITS,
        results.METRICS,
        results.NOTES,
        results.REFERENCES,
    ]
    offenders = []
    for f in (ROOT / "eval").rglob("*.py"):
        if f.parent.name == "results" or f.name == "store.py":  # store.py: the unit cache's own files
            continue
        text = f.read_text()
        offenders += [
            f"{f.relative_to(ROOT)}: {n}" for n in names if re.search(rf"[\"']{re.escape(n)}[\"']", text)
        ]
    assert not offenders


def test_system_descriptors_are_declared_once():
    """timing.py computes system figures; their descriptors live in eval/results/ only."""
    assert "higher_is_better" not in (ROOT / "eval" / "timing.py").read_text()
    assert not hasattr(__import__("eval.timing", fromlist=["x"]), "SYSTEM_METRICS")
    assert results.SYSTEM_METRICS["fps"].header == "Throughput (FPS) ↑"


class _FakeClip:
    def describe(self):
        return {
            "display_name": "CLIP score",
            "unit": "100·cos",
            "higher_is_better": True,
            "config": {"model": "x"},
        }


def test_metric_weights_are_identified_by_content_hash(tmp_path):
    w = tmp_path / "clip.bin"
    w.write_bytes(b"weights v1")
    d = results.describe_metrics({"clip_score": _FakeClip()}, {"clip_score": {"weights": str(w)}})[
        "clip_score"
    ]
    first = d.config["weights_sha256"]
    w.write_bytes(b"weights v2")
    again = results.describe_metrics({"clip_score": _FakeClip()}, {"clip_score": {"weights": str(w)}})[
        "clip_score"
    ]
    assert first and again.config["weights_sha256"] != first and d.config["model"] == "x"
    settings = results.run_settings({"model": {"size": "sd15", "weights": {"base": str(w), "motion": None}}})
    assert settings["weights"] == {"base": {"path": str(w), "sha256": results.weights_hash(w)}}


def test_a_version_1_folder_merges_with_a_version_2_one_without_spurious_labels(tmp_path):
    old = write_run(tmp_path / "old", {"a": {"steps": 2}}, {("a", "v0"): 1.0})
    (old / results.RUN).unlink()  # written before run.json existed
    new = write_run(tmp_path / "new", {"a": {"steps": 2}}, {("a", "v1"): 2.0})
    run = results.load_runs([old, new])
    assert results.load_run(old).schema_version == 1 and run.methods == ["a"] and not run.labels
