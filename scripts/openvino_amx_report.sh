#!/usr/bin/env bash
# OpenVINO fp32, bf16 and int8 on an AMX CPU (the GPU machine's host Intel Xeon): resnet50, sge_resnet50 and
# se_resnet50 exported there with --int8, both ONNX Runtime and OpenVINO SGE kernels built there, then one
# interleaved run (batch 1 unless BATCH says otherwise) of scripts/benchmark_openvino.py pinned to 2 cores
# (`taskset -c 0,1`) so that it compares with the 2-core reports. Wheels that machine lacks (openvino, onnxsim) are
# installed beforehand into a directory on PYTHONPATH.
# Usage: OUT=DIR [BATCH=1] [PRECISIONS=fp32,bf16,int8] bash scripts/openvino_amx_report.sh
set -uo pipefail
OUT=${OUT:-/tmp/openvino_amx_report}
BATCH=${BATCH:-1}
PRECISIONS=${PRECISIONS:-fp32,bf16,int8}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
art=/tmp/openvino_amx_artifacts
{
  lscpu | grep -E "Model name|^CPU\(s\)"
  grep -o -E "amx_[a-z0-9]+|avx512_bf16|avx512_vnni" /proc/cpuinfo | sort -u | tr '\n' ' '; echo
  python3 -m export.ort_sge.kernels.build && python3 -m export.ov_sge.build || exit 1
  for m in resnet50 sge_resnet50 se_resnet50; do
    python3 scripts/export.py --model "$m" --int8 --output "$art/$m" > "$OUT/export_$m.log" 2>&1 &
  done
  wait
  for m in resnet50 sge_resnet50 se_resnet50; do tail -3 "$OUT/export_$m.log"; done
  time taskset -c 0,1 python3 scripts/benchmark_openvino.py --base "$art/resnet50" --sge "$art/sge_resnet50" \
    --reference "$art/se_resnet50" --precisions "$PRECISIONS" --batch-size "$BATCH" --threads 2 --duration 3 \
    --no-profile --json "$OUT/openvino_xeon_amx_int8_batch$BATCH.json"
} 2>&1 | tee "$OUT/openvino_amx_report_log.txt"
