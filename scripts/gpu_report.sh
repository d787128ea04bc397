#!/usr/bin/env bash
# The GPU figures in scripts/reports/gpu_*: the main job's artifact exported on the GPU machine, its parity on the
# GPU against FP32 eager PyTorch on the CPU, latency of eager PyTorch (FP32, FP16) and ONNX Runtime's CUDA provider
# at batch 1 and 32, and the `gpu` tests. Needs a CUDA torch and onnxruntime-gpu (README, GPU, says how the run
# that made the committed reports installed it). Usage: OUT=DIR bash scripts/gpu_report.sh
set -uo pipefail
OUT=${OUT:-/tmp/gpu_report}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
art=/tmp/gpu_report_artifacts/sge_resnet50
{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  python3 -c "import sys, torch, numpy, onnxruntime as o; o.preload_dlls(); print(sys.version.split()[0], 'torch',
torch.__version__, 'numpy', numpy.__version__, 'onnxruntime', o.__version__, o.get_available_providers())"
  time python3 scripts/export.py --model sge_resnet50 --output "$art"
  python3 scripts/gpu_parity.py "$art" --batch-size 8 --json "$OUT/gpu_parity_sge_resnet50.json"
  for b in 1 32; do
    python3 scripts/benchmark.py "$art" --backends torch,onnxruntime --device cuda --batch-size $b --duration 3 \
      --json "$OUT/gpu_benchmark_fp32_batch$b.json"
    python3 scripts/benchmark.py "$art" --backends torch --device cuda --fp16 --batch-size $b --duration 3 \
      --json "$OUT/gpu_benchmark_fp16_batch$b.json"
  done
  python3 -m pytest -q -m gpu tests/runtime/test_gpu_parity.py -p no:cacheprovider -o addopts="-ra"
} 2>&1 | tee "$OUT/gpu_report_log.txt"
