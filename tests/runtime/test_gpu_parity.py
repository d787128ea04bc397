"""The GPU variants (runtime/gpu_parity.py) against FP32 eager PyTorch on the CPU, on random inputs and the
photographs; skipped without a CUDA device. Tolerances: FP32 on the GPU differs from the CPU only in summation
order and in cuDNN's algorithms, so its gate is relative L2 ≤ 1e-4 (ten times the export gate between two CPU
runtimes) with every top-1 class the same; FP16 (10-bit mantissa, FP32 accumulation in cuDNN) is held to
cosine ≥ 0.999, as bf16 on the CPU (README, OpenVINO precisions)."""

import pytest

from runtime.gpu_parity import VARIANTS, gpu_parity

torch = pytest.importorskip("torch")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

GATES = {"fp32": {"rel_l2": 1e-4, "top1": 1.0}, "fp16": {"cosine": 0.999}, "tf32": {"cosine": 0.999}}


def test_a_variant_without_its_gpu_backend_is_skipped_with_the_reason(artifact, photos, random_batch):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    (result,) = gpu_parity(artifact, {"random": random_batch, "photos": photos}, ["torch:cuda:fp32"])
    assert result.random is None and result.photos is None
    assert "no CUDA device" in result.skipped


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_gpu_variant_matches_cpu_eager(variant, artifact, photos, random_batch):
    (result,) = gpu_parity(artifact, {"random": random_batch, "photos": photos}, [variant])
    if result.skipped:
        pytest.skip(result.skipped)
    gate = GATES[variant.rsplit(":", 1)[1]]
    for stats in (result.random, result.photos):
        if "rel_l2" in gate:
            assert stats.rel_l2 <= gate["rel_l2"]
        if "top1" in gate:
            assert stats.top1 >= gate["top1"]
        if "cosine" in gate:
            assert stats.cosine >= gate["cosine"]
