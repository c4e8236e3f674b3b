"""Golden outputs of the authors' Live2Diff (open-mmlab/Live2Diff), run from a checkout as an oracle.

For each step count of :data:`live2diff.testing.live2diff_reference.T_INDEX_LISTS` it writes the fixture weights
(:func:`~live2diff.testing.live2diff_reference.write_fixtures`) and inputs (``make_inputs``), runs the authors'
pipeline on them in a child process (``_live2diff_oracle.py``: their package is also called ``live2diff``, so it
cannot share this process) and stores its per-frame outputs — the clean latent each frame is decoded from and the
decoded frame — for the compared frames (warmup outputs included) in
``tests/golden/live2diff_reference_<n>steps.safetensors``, with the reference commit, the exact settings, the sha256
of the fixture weights and of the inputs in the file's metadata.

Their LoRA loader needs diffusers' PEFT backend: ``peft`` and ``accelerate`` must be importable in the child,
e.g. ``pip install --no-deps --target /work/refs/pydeps peft accelerate`` and ``REFERENCE_PYTHONPATH=/work/refs/pydeps``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

NAME = "live2diff"
HELP = "checkout of open-mmlab/Live2Diff (e40aa03 or newer): records tests/golden/live2diff_reference_*.safetensors"
HERE = Path(__file__).resolve().parent
log = logging.getLogger(__name__)


def _git(checkout: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(checkout), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def reference_commit(checkout: Path) -> str:
    try:
        commit = _git(checkout, "rev-parse", "HEAD")
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        raise SystemExit(f"--live2diff {checkout}: not a git checkout of open-mmlab/Live2Diff ({e})") from e
    if not (checkout / "live2diff" / "pipeline_stream_animation_depth.py").is_file():
        raise SystemExit(
            f"--live2diff {checkout}: no live2diff/pipeline_stream_animation_depth.py (not Live2Diff?)"
        )
    if _git(checkout, "status", "--porcelain", "--untracked-files=no"):
        raise SystemExit(
            f"--live2diff {checkout}: the checkout has local changes; record from a clean commit"
        )
    return commit


def run_oracle(checkout: Path, job: dict, work: Path) -> dict:
    job_path, out_path = work / "job.pt", work / "out.pt"
    torch.save(job, job_path)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = os.environ.get("REFERENCE_PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    cmd = [sys.executable, str(HERE / "_live2diff_oracle.py"), str(checkout), str(job_path), str(out_path)]
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"the authors' Live2Diff failed ({' '.join(cmd)}):\n{proc.stderr[-4000:]}")
    return torch.load(out_path, weights_only=True)


def record(checkout: Path, out_dir: Path) -> list[Path]:
    import diffusers
    import transformers
    from safetensors.torch import save_file

    from live2diff.testing import live2diff_reference as case

    commit = reference_commit(checkout)
    written = []
    with tempfile.TemporaryDirectory(prefix="live2diff-reference-") as tmp:
        work = Path(tmp)
        files = case.write_fixtures(work / "fixtures")
        fixture_sha = case.fixture_sha256(files)
        for n_steps in sorted(case.T_INDEX_LISTS):
            inputs = case.make_inputs(n_steps)
            settings = case.settings(n_steps)
            job = {
                "files": {k: str(v) for k, v in files.items()},
                "settings": settings,
                "inputs": {
                    "frames": inputs.frames,
                    "depth": inputs.depth,
                    "noise": inputs.noise,
                    "placeholder_noise": inputs.placeholder_noise,
                },
            }
            log.info(
                "live2diff: running the authors' pipeline, %d steps %s", n_steps, settings["t_index_list"]
            )
            out = run_oracle(checkout, job, work)
            meta = {
                "reference": case.REFERENCE_REPO,
                "reference_commit": commit,
                "settings": settings,
                "fixture_sha256": fixture_sha,
                "inputs_sha256": case.inputs_sha256(inputs),
                "command": case.REGENERATE,
                "recorded_with": {
                    "torch": torch.__version__,
                    "diffusers": diffusers.__version__,
                    "transformers": transformers.__version__,
                },
                "outputs": "latents [frame, 4, h, w]: the clean latent each frame is decoded from (frames 0..7: the "
                "warmup outputs); frames [k, 3, H, W] in [0, 1]: their decode_image of frame frame_indices[k], "
                "denormalised as their wrapper does",
            }
            path = Path(out_dir) / case.golden_path(n_steps).name
            keep = torch.tensor(case.decoded_frames(n_steps))
            save_file(
                {
                    "latents": out["latents"],
                    "frames": out["frames"][keep].contiguous(),
                    "frame_indices": keep,
                },
                str(path),
                metadata={k: json.dumps(v) for k, v in meta.items()},
            )
            written.append(path)
    return written
