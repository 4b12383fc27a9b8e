#!/usr/bin/env bash
# The GPU check, on a CUDA machine where only PyTorch and transformers are installed and nothing can
# be downloaded: the other packages arrive as wheels in WHEELS (default benchmarks/wheels, made on a
# connected machine with: pip download -d benchmarks/wheels einops pyyaml safetensors filelock tqdm
# gymnasium tokenizers). Run from the repository root; prints one Markdown table, in under 5 minutes.
#
#   bash benchmarks/gpu_check.sh [--steps 200] [--heads flow diffusion] [--compile] [--vlm DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS="${WHEELS:-benchmarks/wheels}"
PYTHON="${PYTHON:-$(command -v python3 || command -v python)}"
if [ -d "$WHEELS" ]; then
  "$PYTHON" -m pip install -q --no-index --find-links "$WHEELS" einops pyyaml safetensors filelock tqdm gymnasium
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
# TIMEOUT: 290 s keeps the modular rows under 5 minutes; --vlm rows need more (about 2 minutes each on an H200).
HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 timeout "${TIMEOUT:-290}" "$PYTHON" -m benchmarks.gpu_check "$@"
