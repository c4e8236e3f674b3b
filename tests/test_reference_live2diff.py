"""This project's Live2Diff against the authors' code (open-mmlab/Live2Diff, run as an oracle from a checkout),
through the golden outputs ``python benchmarks/reference_equivalence.py --live2diff CHECKOUT`` records into
``tests/golden/`` (docs/reference_equivalence.md).

Each side loads the same real-layout fixture files (:mod:`live2diff.testing.live2diff_reference`) with its own
loader — SD1.5 folder, Live2Diff checkpoint (motion modules, positional tables, depth mapping network), LCM-LoRA,
TAESD — and gets the same frames, raw depth maps and injected noise. Compared per frame, warmup outputs included:
the clean latent each frame is decoded from and the decoded frame, ``max |ours - theirs| <= 1e-4`` (fp32).
"""

from __future__ import annotations

import json

import pytest
import torch

from live2diff.testing import live2diff_reference as case

TOL = 1e-4
FAST_FRAMES = 20  # warmup, the placeholder rows' reach and the ring's first wrap (stream frame 8 = frame 16)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return case.write_fixtures(tmp_path_factory.mktemp("live2diff-reference"))


def _golden(n_steps: int, files) -> tuple[dict, dict, case.Inputs]:
    path = case.golden_path(n_steps)
    if not path.is_file():
        pytest.fail(f"{path} is missing: record it with `{case.REGENERATE}`")
    tensors, meta = case.read_golden(path)
    inputs = case.make_inputs(n_steps)
    case.check_golden(path, meta, files, inputs)
    return tensors, meta, inputs


def _compare(n_steps: int, files, n_frames: int, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame ``max |ours - theirs|`` of the latents and of the decoded frames (over the frames the golden file
    keeps decoded), for the first ``n_frames`` frames."""
    golden, _, inputs = _golden(n_steps, files)
    latents, frames = case.run_ours(files, inputs, n_frames=n_frames, **kwargs)
    d_lat = case.per_frame_max_abs(latents, golden["latents"][:n_frames])
    keep = [k for k, i in enumerate(golden["frame_indices"].tolist()) if i < n_frames]
    idx = golden["frame_indices"][keep]
    d_img = case.per_frame_max_abs(frames[idx], golden["frames"][keep])
    return d_lat, d_img


def _assert_equal(d_lat: torch.Tensor, d_img: torch.Tensor, what: str) -> None:
    print(f"\n{what}: {len(d_lat)} frames, max |ours - theirs| latent {float(d_lat.max()):.2e} (warmup "
          f"{float(d_lat[: case.WARMUP].max()):.2e}), decoded frame {float(d_img.max()):.2e}")  # fmt: skip
    bad = [(i, f"{d:.2e}") for i, d in enumerate(d_lat.tolist()) if not d <= TOL]
    assert not bad, f"{what}: latents of frames {bad} differ from the authors' code by more than {TOL}"
    assert float(d_img.max()) <= TOL, f"{what}: decoded frames differ by {float(d_img.max()):.2e} > {TOL}"


def test_live2diff_equals_the_authors_code_3_steps_first_frames(files):
    """The published 3-step setting ([30, 36, 42]) as ``method=[live2diff]`` runs by default: warmup block, the
    reference's placeholder rows in the stream buffer (step 2 attends one of their cache entries until the ring
    wraps), the ring's first wrap; CLIP skip 2, LCM-LoRA, checkpoint positional tables, depth normalised jointly
    over the warmup block, TAESD decode."""
    d_lat, d_img = _compare(3, files, FAST_FRAMES)
    _assert_equal(d_lat, d_img, "3 steps")


@pytest.mark.slow
@pytest.mark.parametrize("n_steps", sorted(case.T_INDEX_LISTS))
def test_live2diff_equals_the_authors_code(files, n_steps):
    """Every golden step count (2, 3, 4 steps), all 40 frames (the ring wraps at frame 16)."""
    d_lat, d_img = _compare(n_steps, files, case.N_FRAMES)
    _assert_equal(d_lat, d_img, f"{n_steps} steps")


@pytest.mark.slow
def test_the_clean_stream_buffer_is_what_the_golden_files_tell_apart(files):
    """``stream_buffer: clean`` (no placeholder rows) is a named variant, not the reference: at 3 steps it departs
    from the authors' code from the first streamed frame on (the golden comparison sees the placeholder rows)."""
    d_lat, _ = _compare(3, files, FAST_FRAMES, stream_buffer="clean")
    print(f"\nclean stream buffer, 3 steps: latent max |ours - theirs| {float(d_lat.max()):.2e}, from frame 8 on "
          f">= {float(d_lat[case.WARMUP :].min()):.2e}")  # fmt: skip
    assert float(d_lat[: case.WARMUP].max()) <= TOL  # the warmup block has no stream buffer
    assert float(d_lat[case.WARMUP :].min()) > 10 * TOL


def test_a_changed_fixture_fails_naming_the_command_that_regenerates_the_golden_files(files, tmp_path):
    """The golden files record the sha256 of the fixture weights, of the inputs and the settings they were made
    from; a case that writes other weights (here: one motion tensor changed) is refused with the command."""
    path = case.golden_path(3)
    _, meta = case.read_golden(path)
    inputs = case.make_inputs(3)
    case.check_golden(path, meta, files, inputs)  # the files this checkout writes: accepted
    ckpt = torch.load(files["motion"], weights_only=True)
    key = next(iter(ckpt["state_dict"]))
    ckpt["state_dict"][key] = ckpt["state_dict"][key] + 1e-3
    torch.save(ckpt, tmp_path / "changed.ckpt")
    changed = {**files, "motion": tmp_path / "changed.ckpt"}
    with pytest.raises(
        case.GoldenMismatch, match=r"fixture weights.*regenerate the golden files with `python "
    ):
        case.check_golden(path, meta, changed, inputs)
    other = case.Inputs(inputs.frames.flip(0), inputs.depth, inputs.noise, inputs.placeholder_noise)
    with pytest.raises(
        case.GoldenMismatch, match=r"inputs .*benchmarks/reference_equivalence.py --live2diff"
    ):
        case.check_golden(path, meta, files, other)
    with pytest.raises(case.GoldenMismatch, match="settings"):
        case.check_golden(path, {**meta, "settings": {**meta["settings"], "prompt": "x"}}, files, inputs)


def test_golden_files_record_the_reference_commit_and_settings():
    for n_steps, t_index_list in case.T_INDEX_LISTS.items():
        _, meta = case.read_golden(case.golden_path(n_steps))
        assert meta["reference"] == "open-mmlab/Live2Diff"
        assert len(meta["reference_commit"]) == 40
        assert meta["settings"]["t_index_list"] == list(t_index_list)
        assert meta["settings"] == json.loads(json.dumps(case.settings(n_steps)))
