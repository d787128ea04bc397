"""The runners' ``precision="int8"``: which graph each backend opens, and that its logits follow FP32's."""

import json

import numpy as np
import pytest

import runtime
from export.artifacts import Manifest
from export.int8.roles import PrecisionError, int8_graph_file, normalise_precision
from tests.conftest import save_photos
from tests.int8.conftest import SGE_BLOCKS, SIZE, cosine


def logits(artifact, backend, batch, **options):
    with runtime.load(artifact, backend, threads=1, **options) as runner:
        return runner.infer(batch), runner.describe()


@pytest.fixture(scope="module")
def random_batch():
    return np.random.default_rng(7).standard_normal((3, 3, *SIZE)).astype(np.float32)


def test_onnxruntime_int8_runs_the_fused_int8_graph_close_to_fp32(int8_artifact, photos, random_batch):
    directory, _ = int8_artifact
    for batch, gate in ((photos, 0.99), (random_batch, 0.85)):  # the export's INT8 gates (export/int8/parity.py)
        fp32, _ = logits(directory, "onnxruntime", batch)
        int8, described = logits(directory, "onnxruntime", batch, precision="int8")
        assert described["model_path"].endswith("model.int8.sge_fused.onnx") and described["precision"] == "int8"
        assert described["graph"] == "sge_fused"
        assert cosine(int8, fp32).min() >= gate
        assert not np.allclose(int8, fp32, atol=1e-4)  # it is a different (quantised) graph


def test_the_fused_int8_graph_keeps_its_blocks_in_uint8_nhwc(int8_artifact, photos, monkeypatch):
    """Every SGE block runs as SgeResidualQ on the convolutions' uint8 NHWC maps (export/ort_sge/quantized_io.py),
    and its logits follow those of the same graph with the float op between DequantizeLinear and QuantizeLinear."""
    from export.ort_sge import session
    from export.ort_sge.nchwc import nchwc_block_size

    if nchwc_block_size() == 0:
        pytest.skip("ORT uses no blocked layout on this CPU: the fused graph is not re-planned")
    directory, _ = int8_artifact
    folded, described = logits(directory, "onnxruntime", photos, precision="int8")
    assert described["uint8_nhwc_sge_blocks"] == described["fused_sge_blocks"] == SGE_BLOCKS
    monkeypatch.setattr(session, "fold_quantized_io", lambda model: 0)
    detour, described = logits(directory, "onnxruntime", photos, precision="int8")
    assert described["uint8_nhwc_sge_blocks"] == 0
    # the two differ by the identities (quantised now, as the convolutions read them) and the output's rounding
    assert cosine(folded, detour).min() >= 0.999


def test_onnxruntime_int8_without_the_fused_graph_runs_model_int8(int8_artifact, photos):
    directory, _ = int8_artifact
    fused, _ = logits(directory, "onnxruntime", photos, precision="int8")
    plain, described = logits(directory, "onnxruntime", photos, precision="int8", sge_fused=False)
    assert described["model_path"].endswith("model.int8.onnx") and described["graph"] == "plain"
    assert cosine(plain, fused).min() >= 0.99


def test_openvino_int8_reads_the_qdq_graph(int8_artifact, photos):
    pytest.importorskip("openvino")
    directory, _ = int8_artifact
    fp32, _ = logits(directory, "openvino", photos)
    int8, described = logits(directory, "openvino", photos, precision="int8")
    # the SGE tail as standard ops on the INT8 fused graph by default (runtime/backends/ov.py)
    assert described["graph"] == "sge_native" and described["model_path"].endswith("model.int8.sge_fused.onnx")
    plain, described = logits(directory, "openvino", photos, precision="int8", sge_fused=False)
    assert described["model_path"].endswith("model.int8.onnx") and cosine(plain, int8).min() >= 0.99
    assert described["config"]["INFERENCE_PRECISION_HINT"] == "f32"
    assert cosine(int8, fp32).min() >= 0.99


def test_precision_errors_say_what_to_do():
    assert normalise_precision("f32") == "fp32"
    with pytest.raises(PrecisionError, match="choose from"):
        normalise_precision("int4")
    manifest = Manifest(model="sge_resnet18", deploy="model.onnx", inputs=[], outputs=[])
    with pytest.raises(PrecisionError, match="--int8"):
        int8_graph_file(manifest)


def test_onnxruntime_refuses_fp16_on_the_cpu(int8_artifact):
    with pytest.raises(PrecisionError, match="fp32 or int8"):
        runtime.load(int8_artifact[0], "onnxruntime", precision="fp16")
    with pytest.raises(PrecisionError, match=r"got 'bf16' \(bf16 and f16 run on openvino;"):  # where to go instead
        runtime.load(int8_artifact[0], "onnxruntime", precision="bf16")


def test_torch_names_itself_and_where_the_precision_runs(int8_artifact):
    with pytest.raises(ValueError, match=r"the torch backend runs precision fp32 or fp16; got 'int8' \(int8 runs on"):
        runtime.load(int8_artifact[0], "torch", precision="int8")
    with pytest.raises(ValueError, match=r"the torch backend runs fp16 on a CUDA GPU only"):
        runtime.load(int8_artifact[0], "torch", precision="fp16")


def test_infer_script_takes_the_precision(int8_artifact, tmp_path):
    from tests.export.conftest import load_script

    (image,) = save_photos(tmp_path, ["coffee"])
    out = tmp_path / "pred.json"
    infer = load_script("infer")
    assert infer.main([str(int8_artifact[0]), str(image), "--precision", "int8", "--json", str(out)]) == 0
    assert len(json.loads(out.read_text())["predictions"][0]["top_k"]) == 5
    assert infer.main([str(int8_artifact[0]), str(image), "--precision", "int4"]) == 2


def test_benchmark_compares_fp32_and_int8_per_backend_in_one_run(int8_artifact, tmp_path):
    from tests.export.conftest import load_script

    out = tmp_path / "bench.json"
    argv = [
        str(int8_artifact[0]),
        "--backends",
        "onnxruntime,openvino",
        "--precision",
        "fp32,int8",
        "--threads",
        "1",
        "--mode",
        "interleave",
        "--duration",
        "0.1",
        "--iterations",
        "3",
        "--warmup-ms",
        "0",
        "--json",
        str(out),
    ]
    assert load_script("benchmark").main(argv) == 0
    report = json.loads(out.read_text())
    assert [r["backend"] for r in report["comparison"]] == [
        "onnxruntime",
        "onnxruntime:int8",
        "openvino",
        "openvino:int8",
    ]
    described = {r["backend"]: r["runner"] for r in report["reports"]}
    assert described["onnxruntime:int8"]["model_path"].endswith("model.int8.sge_fused.onnx")
    assert described["openvino:int8"]["model_path"].endswith("model.int8.sge_fused.onnx")  # as standard ops
    assert described["openvino:int8"]["graph"] == "sge_native"


@pytest.mark.parametrize("script", ["infer", "evaluate"])
def test_tensorrt_int8_says_the_engine_fixes_the_precision(int8_artifact, tmp_path, capsys, script):
    """A TensorRT engine's precision is chosen at trt-build: asking the runner for int8 is bad input, not a crash."""
    from tests.export.conftest import load_script

    save_photos(tmp_path, ["coffee"])
    directory = str(int8_artifact[0])
    if script == "infer":
        argv = [directory, str(tmp_path / "coffee.png"), "--backend", "tensorrt", "--precision", "int8"]
    else:
        argv = [directory, "--data", str(tmp_path), "--backends", "tensorrt:int8", "--reference", "onnxruntime"]
    assert load_script(script).main(argv) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and "precision is fixed when it is built" in errors[0]
    assert "trt-build ARTIFACT --trt int8" in errors[0]
