"""Why the CPU graphs' int8 weights take 7 bits by default: on an x86 CPU without VNNI a bright patch saturates the
16-bit pair sums of 8-bit weights in ONNX Runtime and OpenVINO alike, and 7-bit weights never do. The CPU without
VNNI is this one under the AVX2 view (export/ort_sge/kernels/avx2_view.py); the export writes the ranges it records,
and the runners warn where an 8-bit graph meets such a CPU."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from export.artifacts import load_manifest
from export.int8.quantize import calibrate, largest_int8_weight, quantize_graph
from export.int8.roles import (
    INT8_FUSED_ROLE,
    INT8_ROLE,
    INT8_S8S8_ROLE,
    VNNI_FLAGS,
    file_with_role,
    int8_weight_bits,
    saturation_note,
)
from export.ort_sge.kernels import avx2_view
from export.ort_sge.kernels.build import cpu_flags

ROOT = Path(__file__).resolve().parents[2]
CHANNELS, X_SCALE, W_SCALE, Y_SCALE = 16, np.float32(1 / 127), np.float32(1 / 127), np.float32(1 / 4)
LIMIT = {7: 64, 8: 127}  # |int8 weight| at each range's extreme


def bright_patch_conv(path: Path, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """x → Q/DQ (uint8, zero point 0) → 1×1 Conv with every weight at the range's extreme → Q/DQ (uint8, zero point
    128), which ORT runs as one U8S8 QLinearConv: (input, float64 output, as the output quantisation rounds it). An
    input at full scale makes each uint8 × int8 pair sum 2 × 255 × 127 = 64770 with 8-bit weights."""
    w_q = np.full((CHANNELS, CHANNELS, 1, 1), LIMIT[bits], np.int8)
    w_q[1::2] *= -1  # both signs: the negative channels saturate at −32768
    consts = {"x_s": X_SCALE, "x_z": np.uint8(0), "w_q": w_q, "w_s": np.full(CHANNELS, W_SCALE, np.float32)}
    consts.update(w_z=np.zeros(CHANNELS, np.int8), y_s=Y_SCALE, y_z=np.uint8(128))
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_s", "x_z"], ["x_q"]),
        helper.make_node("DequantizeLinear", ["x_q", "x_s", "x_z"], ["x_dq"]),
        helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["w_dq"], axis=0),
        helper.make_node("Conv", ["x_dq", "w_dq"], ["conv"]),
        helper.make_node("QuantizeLinear", ["conv", "y_s", "y_z"], ["y_q"]),
        helper.make_node("DequantizeLinear", ["y_q", "y_s", "y_z"], ["y"]),
    ]
    shape = [1, CHANNELS, 4, 4]
    graph = helper.make_graph(
        nodes,
        "bright_patch",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        [numpy_helper.from_array(np.asarray(v), name) for name, v in consts.items()],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    x = np.full(shape, 255 * X_SCALE, np.float32)  # uint8 255: a blown-out sky, a white wall
    conv = np.einsum("nchw,oc->nohw", np.float64(X_SCALE) * 255 * np.ones(shape), w_q[:, :, 0, 0] * np.float64(W_SCALE))
    return x, (np.clip(np.round(conv / Y_SCALE) + 128, 0, 255) - 128) * np.float64(Y_SCALE)


ERRORS_IN_STEPS = """
import json, sys
from pathlib import Path
import numpy as np
import onnxruntime as ort
import openvino as ov
from tests.int8.test_weight_range import Y_SCALE, bright_patch_conv
errors = {}
for bits in (7, 8):
    x, expected = bright_patch_conv(Path(sys.argv[1]) / f"conv{bits}.onnx", bits)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(Path(sys.argv[1]) / f"conv{bits}.onnx"), options)
    got = {"onnxruntime": session.run(None, {"x": x})[0]}
    got["openvino"] = ov.Core().compile_model(str(Path(sys.argv[1]) / f"conv{bits}.onnx"), "CPU")({0: x})[0]
    for backend, y in got.items():
        errors[f"{backend} {bits}-bit"] = float(np.abs(y - expected).max() / Y_SCALE)  # in output steps
print(json.dumps(errors))
"""


def errors_in_steps(tmp_path: Path, env: dict[str, str] | None = None) -> dict[str, float]:
    command = [sys.executable, "-c", ERRORS_IN_STEPS, str(tmp_path)]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


@pytest.mark.skipif(avx2_view.avx2_view_problem() is not None, reason="needs the AVX2 view (a CPU without VNNI)")
def test_without_vnni_8_bit_weights_saturate_and_7_bit_weights_do_not(tmp_path):
    library = avx2_view.build_avx2_view(tmp_path)
    errors = errors_in_steps(tmp_path, avx2_view.avx2_view_env(library))
    assert errors["onnxruntime 7-bit"] <= 1 and errors["openvino 7-bit"] <= 1, errors  # a tie rounded the other way
    # the output is ±32 (128 steps); saturated pair sums (32767 of 64770) lose about half of it
    assert errors["onnxruntime 8-bit"] >= 32 and errors["openvino 8-bit"] >= 32, errors


@pytest.mark.skipif(not cpu_flags() & VNNI_FLAGS, reason="this CPU has no VNNI")
def test_with_vnni_both_ranges_are_exact(tmp_path):
    errors = errors_in_steps(tmp_path)
    assert max(errors.values()) <= 1, errors


def test_the_export_writes_the_ranges_it_records(int8_artifact):
    """Default: the CPU graphs in 7 bits; TensorRT's S8S8 graph in 8 (its GPU sums in 32 bits)."""
    directory, _ = int8_artifact
    manifest = load_manifest(directory)
    for role, bits in ((INT8_ROLE, 7), (INT8_FUSED_ROLE, 7), (INT8_S8S8_ROLE, 8)):
        name = file_with_role(manifest, role)
        widest = largest_int8_weight(onnx.load(str(directory / name)))
        assert int8_weight_bits(manifest, name) == bits and widest == LIMIT[bits], (name, widest)
    assert manifest.extra["int8"]["calibration"]["cpu_weight_bits"] == 7


def test_8_bit_cpu_graphs_on_request(int8_artifact, tmp_path):
    directory, _ = int8_artifact
    src = directory / "model.onnx"
    batch = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)  # ranges only
    ranges = calibrate(src, batch, input_name="input", method="minmax", ranges_path=tmp_path / "r.json")
    for bits in (7, 8):
        out = quantize_graph(
            src, tmp_path / f"w{bits}.onnx", ranges_path=ranges, method="minmax", scheme="u8s8", weight_bits=bits
        )
        assert largest_int8_weight(onnx.load(str(out))) == LIMIT[bits]
    with pytest.raises(ValueError, match="weight_bits must be 7 or 8"):
        quantize_graph(src, tmp_path / "w6.onnx", ranges_path=ranges, method="minmax", scheme="u8s8", weight_bits=6)


class _Manifest:
    model = "sge_resnet50"

    def __init__(self, graphs):
        self.extra = {"int8": {"graphs": graphs}}


@pytest.mark.parametrize(
    ("recorded", "flags", "warns"),
    [
        ({"weight_bits": 8}, {"avx2", "fma"}, True),  # AVX2 only: saturates
        ({}, {"avx2", "fma", "avx512f"}, True),  # an artifact from before the choice has 8-bit weights; no VNNI
        ({"weight_bits": 8}, {"avx2", "avx512f", "avx512_vnni"}, False),
        ({"weight_bits": 8}, {"avx2", "avx_vnni"}, False),
        ({"weight_bits": 7}, {"avx2"}, False),
        ({"weight_bits": 8}, set(), False),  # not x86 (no flags line): its kernels are not the x86 ones
    ],
    ids=["avx2", "old-artifact-avx512", "avx512-vnni", "avx-vnni", "7-bit", "not-x86"],
)
def test_runners_warn_where_8_bit_weights_meet_a_cpu_without_vnni(recorded, flags, warns):
    manifest = _Manifest([{"file": "model.int8.onnx", **recorded}])
    note = saturation_note(manifest, "model.int8.onnx", backend="onnxruntime", cpu_flags=flags)
    assert (note is not None) is warns
    if warns:
        assert note.startswith("onnxruntime: model.int8.onnx has 8-bit weights and this CPU has no VNNI")
        assert "sge-deploy export --model sge_resnet50 --int8" in note


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_the_runners_warn_on_such_a_cpu(int8_artifact, backend, monkeypatch, caplog):
    import runtime
    from export.int8 import roles
    from export.ort_sge.kernels import build

    directory, _ = int8_artifact
    monkeypatch.setattr(roles, "int8_weight_bits", lambda manifest, graph_file: 8)  # as --int8-weight-bits 8 writes
    monkeypatch.setattr(build, "cpu_flags", lambda: {"avx2", "fma"})
    with caplog.at_level("WARNING"), runtime.load(directory, backend, precision="int8") as runner:
        runner.infer(np.zeros((1, 3, 64, 64), np.float32))
    notes = [r.getMessage() for r in caplog.records if "has 8-bit weights and this CPU has no VNNI" in r.getMessage()]
    assert len(notes) == 1 and notes[0].startswith(f"{backend}: model.int8")
