#!/usr/bin/env bash
# Run HERE (a machine with PyPI), in the repository root, before a GPU call: fills .whl/ (git-ignored) with the
# cp312 wheels the device image lacks, so that one prepared call (benchmarks/gpu_run.sh) needs no network.
# The device image (its KINDS.md) has torch, transformers, timm, safetensors, huggingface_hub, numpy, pandas, ...;
# it lacks the packages below. Pure-python wheels; antlr4 4.9.3 exists only as an sdist, so it is built here.
# Then call the device tool with carry [".whl"] (and ".refs/live2diff" for the authors' rows, see --reference).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
PY=${PY:-python3}
plat=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
"$PY" -m pip download -q --no-deps "${plat[@]}" -d .whl \
  diffusers==0.42.1 hydra-core==1.3.2 omegaconf==2.3.1 importlib_metadata==10.2.0 \
  open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.5 \
  streamdiffusion==0.1.1   # the authors' StreamDiffusion, installed --no-deps (its diffusers==0.24 pin is not honoured)
ls .whl/antlr4_python3_runtime-4.9.3-*.whl >/dev/null 2>&1 || "$PY" -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3
# one version of each: two of one package stop the install on the device
dups=$(ls .whl | sed -E 's/-[0-9].*//' | sort | uniq -d)
[ -z "$dups" ] || { echo "more than one wheel of: $dups" >&2; exit 1; }
du -sh .whl
