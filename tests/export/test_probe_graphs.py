"""Graphs the project builds itself (not exported from PyTorch) must load in the oldest ONNX Runtime it runs on:
onnxruntime-gpu 1.31 reads IR versions up to 13, while onnx 1.23's helper writes its newest, 14, by default (the
GPU run of scripts/gpu_report.sh failed at the fused export on exactly that)."""

import onnx

from export.ort_sge.nchwc import block_probe
from runtime.sge_cost import gemm_model

OLDEST_ORT_IR = 13  # onnxruntime(-gpu) 1.31


def test_block_probe_loads_in_older_onnxruntimes():
    model = block_probe()
    onnx.checker.check_model(model)
    assert model.ir_version <= OLDEST_ORT_IR


def test_gemm_model_loads_in_older_onnxruntimes():
    assert onnx.load_from_string(gemm_model(4)).ir_version <= OLDEST_ORT_IR
