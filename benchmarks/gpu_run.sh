#!/usr/bin/env bash
# Run ON THE DEVICE, in the repository root: the one prepared GPU call of issue 33 (about 8 minutes).
#   device tool: command "bash benchmarks/gpu_run.sh", carry [".whl"], timeout_s 540
# Installs the carried wheels (benchmarks/gpu_prepare.sh), records the device and versions, then runs
# benchmarks/gpu_speed.py with a budget: rows in priority order (live2diff eager/compiled/channels-last,
# streamdiffusion, streamv2v, per_frame_img2img, then the rest); a failing row prints its first line and the run
# goes on; rows past the budget are written as "not run (budget)"; --reference times the authors' StreamDiffusion
# (the carried streamdiffusion wheel) and ours on one random SD1.5 folder, right after our streamdiffusion rows.
# Results land in $OUT (json, md, log).
set -uo pipefail
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { echo "wheel install failed: run benchmarks/gpu_prepare.sh here first and carry .whl" >&2; exit 3; }
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export TORCHINDUCTOR_CACHE_DIR=/tmp/inductor
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__)"
} > "$OUT/device.txt" 2>&1
cat "$OUT/device.txt"
timeout "${GPU_SPEED_TIMEOUT:-450}" python3 benchmarks/gpu_speed.py --budget-s "${GPU_SPEED_BUDGET:-330}" \
  --frames "${GPU_SPEED_FRAMES:-40}" --flop-pushes 4 --reference --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_speed.log"
echo "gpu_speed exit ${PIPESTATUS[0]}"
