"""Our StreamV2V against the authors' code: the golden outputs that benchmarks/reference/streamv2v.py recorded by
running Jeff-LiangF/streamv2v itself (live2diff/testing/streamv2v_golden.py: the cases, fixture and files).

Each side loads the same real-layout random fixture with its own loader and takes the same frames, init noise and
ToMe splits; ours is the method as ``conf/method/<case.method>.yaml`` composes it. Per frame, the denoised latent
(what the feature bank moves: ~1e-3 on random weights, where decoded frames move ~1e-5) and the decoded frame must
be within 1e-4 of the reference's.

ToMe's matching is an argmax over cosine similarities, and some of the reference's choices are decided by float
rounding: the vid2vid script repeats the first frame, so the bank's second write at step 0 merges frame 0 with
itself, and a token whose two copies both sit on the dst side is matched to one or the other by ~1e-7 differences
(on this fixture the choice moves later latents by ~3e-3). So each merge replays the reference's matching, and
checks ours against it: every choice of ours that differs must be a near-tie, its similarity within MATCH_TOL of
the reference's choice (the two sides' keys agree to ~2e-6)."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

import baselines.streamv2v as sv2v
from live2diff.testing import streamv2v_golden as G
from tests.conftest import compose

TOL = 1e-4
MATCH_TOL = 1e-5


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    folders = G.write_fixture(tmp_path_factory.mktemp("streamv2v-fixture"))
    return folders, G.fixture_sha256(folders)


def build(case: G.Case, folders):
    """Our method as its config composes it, on the fixture (its ``clip_skip`` included: the reference's prompt
    encoding is the text encoder's final layer, ``clip_skip: 0``, checked below with the other settings)."""
    cfg = compose([f"method=[{case.method}]", "hardware=cpu", *G.model_overrides(folders)])
    mcfg = cfg.method[case.method]
    resolved = OmegaConf.to_container(mcfg, resolve=True)
    for key, want in G.our_settings(case).items():
        got = resolved.get(key)
        if key == "first_frame_repeats" and got == "batch_size":
            got = len(resolved["t_index_list"])
        assert got == want, (
            f"conf/method/{case.method}.yaml: {key}={got!r}, but the reference case {case.name!r} it reproduces "
            f"runs {want!r}"
        )
    return instantiate(mcfg)


class Matching:
    """Our ToMe merges with the reference's matching replayed (see the module docstring). What differs is collected
    in ``violations`` (checked after the outputs, so that a wrong mechanism shows its figure): a merge where the
    reference made none (ours then merges with its own seeded split), or a choice of ours that is not a near-tie."""

    def __init__(self, golden: G.Golden, bank: sv2v.FeatureBank) -> None:
        self.golden, self.bank, self.at = golden, bank, None
        self.merges = self.choices = self.near_ties = 0
        self.worst = 0.0  # largest similarity gap between our choice and theirs
        self.violations: list[str] = []

    def draw(self, layer: str, step: int, call: int, n: int) -> torch.Tensor:
        self.at = (layer, step, call)
        if (call, layer) not in self.golden.tome:
            self.violations.append(
                f"ours merged at call {call} in {layer}, step {step}; the reference did not"
            )
            return self.bank.seeded_permutation(layer, step, call, n)
        return self.golden.draw(layer, step, call, n)

    def merge(self, old, new, perm, nearest=None):
        layer, step, call = self.at
        keys = torch.cat([old.keys, new.keys])
        ours = sv2v.tome_nearest(keys, perm)
        if (call, layer) not in self.golden.nearest:
            return sv2v.tome_merge.__wrapped__(old, new, perm, ours)
        theirs = self.golden.matched(layer, step, call)
        r = keys.shape[0] // 2
        metric = torch.nn.functional.normalize(keys.float(), dim=-1)
        sim = metric[perm[:r]] @ metric[perm[r:]].T
        rows = torch.arange(r)
        gap = (sim[rows, ours] - sim[rows, theirs]).abs()
        self.merges, self.choices = self.merges + 1, self.choices + r
        self.near_ties += int((ours != theirs).sum())
        self.worst = max(self.worst, float(gap.max()))
        if float(gap.max()) > MATCH_TOL:
            self.violations.append(
                f"ToMe matching at call {call}, {layer}, step {step}: ours differs from the reference's on "
                f"{int((gap > MATCH_TOL).sum())} of {r} tokens by up to {float(gap.max()):.2e} in cosine "
                "similarity (not a near-tie)"
            )
        return sv2v.tome_merge.__wrapped__(old, new, perm, theirs)


def stream(method, case: G.Case, golden: G.Golden, pushes: int, flush: bool, monkeypatch):
    """Push ``pushes`` golden frames (then flush); return {frame: (latent, image)} of what came out, and the
    matching record."""
    method.prepare(G.PROMPT, height=G.HEIGHT, width=G.WIDTH, seed=case.seed)
    method.init_noise = golden.init_noise.to(method.device, method.comps.dtype)
    matching = Matching(golden, method.bank)
    method.bank.draw = matching.draw
    merge = sv2v.tome_merge
    replay = lambda *a, **k: matching.merge(*a, **k)  # noqa: E731
    replay.__wrapped__ = merge
    monkeypatch.setattr(sv2v, "tome_merge", replay)
    latents: list[torch.Tensor] = []
    decode = method.decode
    method.decode = lambda x: latents.extend(x.float().cpu()) or decode(x)
    frames = golden.frames.float() / 255
    emitted: list[tuple[int, torch.Tensor]] = []
    for i in range(pushes):
        emitted += method.push(i, frames[i])
    if flush:
        emitted += method.flush()
    monkeypatch.undo()
    assert len(latents) == len(emitted)
    missed = sum(1 for (call, _) in golden.tome if call < method.calls) * case.n_steps - matching.merges
    if missed and not flush:  # (flush calls hold fewer rows than the reference's drained stream)
        matching.violations.append(f"ours made {missed} fewer ToMe merges than the reference")
    return {i: (lat, img.float().cpu()) for (i, img), lat in zip(emitted, latents)}, matching


def compare(case: G.Case, golden: G.Golden, out: dict, frames: int) -> list[tuple[float, float]]:
    assert sorted(out) == list(range(frames)), f"frames emitted: {sorted(out)}"
    diffs = [
        (
            (out[t][0] - golden.latents[t]).abs().max().item(),
            (out[t][1] - golden.images[t]).abs().max().item(),
        )
        for t in range(frames)
    ]
    bad = [(t, d) for t, d in enumerate(diffs) if not max(d) <= TOL]
    table = ", ".join(f"{t}: {lat:.1e}/{img:.1e}" for t, (lat, img) in enumerate(diffs))
    assert not bad, (
        f"streamv2v case {case.name} ({case.method}) differs from {golden.meta['reference']['repository']}@"
        f"{golden.meta['reference']['commit'][:7]} by more than {TOL} (frame: latent/image max |ours - theirs|): {table}"
    )
    return diffs


def check(case_name: str, fixture, full: bool, monkeypatch):
    case = G.CASES[case_name]
    folders, digest = fixture
    golden = G.load_golden(case)
    G.check_fixture(golden, digest)
    method = build(case, folders)
    pushes = case.frames if full else case.fast_frames  # without flush: frames 0 .. pushes - n_steps come out
    out, matching = stream(method, case, golden, pushes, full, monkeypatch)
    diffs = compare(case, golden, out, case.frames if full else pushes - case.n_steps + 1)
    assert not matching.violations, (
        "; ".join(matching.violations[:3]) + f" ({len(matching.violations)} in all)"
    )
    print(
        f"{case_name}: {len(diffs)} frames, max |ours - theirs| latent {max(d[0] for d in diffs):.2e}, image "
        f"{max(d[1] for d in diffs):.2e}; ToMe: {matching.merges} merges, {matching.choices} choices, "
        f"{matching.near_ties} near-ties replayed (largest gap {matching.worst:.1e})"
    )
    return diffs


def test_vid2vid_prefix_equals_the_reference(fixture, monkeypatch):
    """Every make test: the reference's vid2vid defaults (streamv2v_vid2vid), its first 9 pushes after the 4 repeats of
    frame 0 (frames 0-5 out) — bank writes at calls 0 (placeholder rows), 4, 8, 12, ToMe merges at 4 (frame 0 with
    itself), 8, 12, fusion throughout."""
    check("vid2vid", fixture, False, monkeypatch)


@pytest.mark.slow  # the fast test above covers the same code on a prefix of the vid2vid case
@pytest.mark.parametrize("case_name", sorted(G.CASES))
def test_whole_stream_equals_the_reference(fixture, case_name, monkeypatch):
    """Every frame of every case (20-24 frames, the last ones through flush), each against its recorded output."""
    check(case_name, fixture, True, monkeypatch)


def test_a_changed_fixture_names_the_command_that_regenerates_the_golden_files():
    golden = G.load_golden(G.CASES["vid2vid"])
    with pytest.raises(AssertionError, match="reference_equivalence.py --streamv2v"):
        G.check_fixture(golden, "0" * 64)
