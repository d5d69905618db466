#!/usr/bin/env bash
# On the GPU machine: join the carried onnxruntime-gpu wheel parts, install it beside onnx-ad, point
# the loader at the CUDA/cuDNN pip libraries of the image's PyTorch, then run scripts/gpu_check.py
# (or scripts/gpu_memory_check.py with the argument `memory`).
set -euo pipefail
whl=/tmp/onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl
cat .gpu/ortgpu.part.* > "$whl"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$whl" .gpu/onnx_ad-0.3.0-py3-none-any.whl
site=$(python3 -c "import torch, os; print(os.path.dirname(os.path.dirname(torch.__file__)))")
export LD_LIBRARY_PATH="$(ls -d "$site"/nvidia/*/lib 2>/dev/null | tr '\n' ':')${LD_LIBRARY_PATH:-}"
export PYTHONPATH="/tmp/site:$PWD"
export ONNXLAM_CACHE=/tmp/onnxlam-cache PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
if [ "${1:-}" = memory ]; then
  python3 scripts/gpu_memory_check.py "${OUT:-/tmp/out}"
else
  python3 scripts/gpu_check.py "${OUT:-/tmp/out}"
fi
