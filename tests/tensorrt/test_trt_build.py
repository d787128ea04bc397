"""TensorRT build decisions without TensorRT: version gating, profile, precision route, sidecar, manifest, errors."""

import json
import sys
from pathlib import Path

import onnx
import pytest

from export.artifacts import ArtifactError, Manifest, TensorSpec, file_sha256, load_manifest, write_manifest
from export.trt_build import (
    PLAN_NAME,
    SIDECAR_NAME,
    BuildRoute,
    Profile,
    TensorRTNotInstalledError,
    TrtApi,
    TrtBuildOptions,
    TrtRequestError,
    build_engine,
    derive_profile,
    fp32_layer_names,
    import_tensorrt,
    network_flag_names,
    onnx_input_spec,
    plan_route,
    record_engine,
    sidecar,
    workspace_bytes,
)

TRT10, TRT11 = TrtApi.from_version("10.13.3"), TrtApi.from_version("11.1.0")
ONNX = Path("model.onnx")
SPEC = TensorSpec(name="input", shape=("batch", 3, 224, 224))


def route(api, precision, **kw):
    flags = {k: kw.pop(k) for k in ("onnx_has_qdq", "fp16_onnx_exists", "calib_cache_exists") if k in kw}
    flags.setdefault("onnx_has_qdq", False)
    flags.setdefault("fp16_onnx_exists", "fp16_onnx" in kw)
    return plan_route(api, TrtBuildOptions(precision=precision, **kw), onnx_path=ONNX, **flags)


# -- version gating ---------------------------------------------------------------------------------------------
def test_version_gating():
    assert TRT10.weak_typing and (TRT10.major, TRT10.minor) == (10, 13)
    assert not TRT11.weak_typing
    with pytest.raises(TrtRequestError, match=r"8\.6\.1 is too old.*tensorrt-cu12"):
        TrtApi.from_version("8.6.1")
    with pytest.raises(TrtRequestError, match="cannot read the TensorRT version"):
        TrtApi.from_version("ten")


def test_network_flags_strong_typing_only_named_on_10x():
    strong = BuildRoute(ONNX, True, (), False, False)
    weak = BuildRoute(ONNX, False, ("FP16",), True, False)
    assert network_flag_names(TRT10, strong) == ("STRONGLY_TYPED",)
    assert network_flag_names(TRT10, weak) == ()
    assert network_flag_names(TRT11, strong) == ()  # always strongly typed; no EXPLICIT_BATCH in 11.x


# -- precision route --------------------------------------------------------------------------------------------
def test_fp32_route():
    assert route(TRT10, "fp32") == BuildRoute(ONNX, False, (), False, False)
    assert route(TRT11, "fp32").strongly_typed


def test_fp16_on_10x_is_weak_typing_with_sge_pinned_fp32_unless_strong_typing_is_asked():
    weak = route(TRT10, "fp16", fp16_onnx=Path("model_fp16.onnx"))
    assert weak.flags == ("FP16", "OBEY_PRECISION_CONSTRAINTS") and weak.fp32_islands and weak.onnx == ONNX
    strong = route(TRT10, "fp16", fp16_onnx=Path("model_fp16.onnx"), strong_typing=True)
    assert strong.strongly_typed and strong.flags == () and strong.onnx.name == "model_fp16.onnx"


def test_fp16_on_11x_needs_the_fp16_islands_onnx():
    with pytest.raises(TrtRequestError, match=r"11\.1\.0 has no FP16 builder flag.*--fp16-onnx"):
        route(TRT11, "fp16")
    assert route(TRT11, "fp16", fp16_onnx=Path("model_fp16.onnx")).strongly_typed
    with pytest.raises(TrtRequestError, match="does not exist"):
        route(TRT11, "fp16", fp16_onnx=Path("gone.onnx"), fp16_onnx_exists=False)


def test_int8_routes_and_their_errors():
    with pytest.raises(TrtRequestError, match="--trt-calib-dir"):
        route(TRT10, "int8")
    calibrated = route(TRT10, "int8", calib_dir=Path("photos"))
    assert calibrated.calibrate and "INT8" in calibrated.flags and calibrated.fp32_islands
    assert route(TRT10, "int8", calib_cache_exists=True).calibrate  # a cache alone is enough
    with pytest.raises(TrtRequestError, match=r"has no calibrators.*ModelOpt"):
        route(TRT11, "int8", calib_dir=Path("photos"))
    with pytest.raises(TrtRequestError, match="Q/DQ was asked for"):
        route(TRT10, "int8", int8_mode="qdq", calib_dir=Path("photos"))
    for api in (TRT10, TRT11):
        qdq = route(api, "int8", onnx_has_qdq=True)
        assert qdq.strongly_typed and not qdq.calibrate


def test_unknown_precision_and_bad_workspace():
    with pytest.raises(TrtRequestError, match="choose one of fp32, fp16, int8"):
        route(TRT10, "bf16")
    assert workspace_bytes(4) == 4 << 30
    with pytest.raises(TrtRequestError, match="positive"):
        workspace_bytes(0)


# -- profile ----------------------------------------------------------------------------------------------------
def test_profile_from_trt_batch_and_input_spec():
    p = derive_profile(SPEC, (1, 8, 32))
    assert p == Profile("input", (1, 3, 224, 224), (8, 3, 224, 224), (32, 3, 224, 224))
    assert p.to_dict()["max"] == [32, 3, 224, 224]
    fixed = TensorSpec(name="input", shape=(4, 3, 96, 96))
    assert derive_profile(fixed, (4, 4, 4)).opt == (4, 3, 96, 96)


def test_profile_errors_are_reported_together():
    with pytest.raises(TrtRequestError, match="MIN <= OPT <= MAX; got 8 4 32"):
        derive_profile(SPEC, (8, 4, 32))
    with pytest.raises(TrtRequestError, match="fixed batch of 1") as err:
        derive_profile(TensorSpec(name="input", shape=(1, 3, "height", "width")), (1, 8, 32))
    assert "dynamic non-batch dimensions ['height', 'width']" in str(err.value)


def test_input_spec_read_from_the_onnx(sge18):
    _, path = sge18
    assert onnx_input_spec(onnx.load(path)) == TensorSpec(name="input", shape=("batch", 3, 128, 128))


# -- FP32 layers on weak typing ---------------------------------------------------------------------------------
def test_fp32_layers_matched_by_node_name_or_output_tensor():
    layers = [
        ("/sge/ReduceMean", ["/sge/ReduceMean_output_0"]),  # named after its node
        ("(Unnamed Layer* 12) [ElementWise]", ["/sge/Div_2_output_0"]),  # writes an island tensor
        ("/conv1/Conv", ["/conv1/Conv_output_0"]),
    ]
    chosen = fp32_layer_names(layers, {"/sge/ReduceMean", "/sge/Div_2"}, {"/sge/Div_2_output_0"})
    assert chosen == ["/sge/ReduceMean", "(Unnamed Layer* 12) [ElementWise]"]


# -- sidecar and manifest ---------------------------------------------------------------------------------------
def test_sidecar_and_manifest_record_the_engine(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"onnx bytes")
    manifest = Manifest(model="sge_resnet18", deploy="model.onnx", inputs=[SPEC], outputs=[])
    manifest.record(tmp_path, "model.onnx", role="model")
    options = TrtBuildOptions(precision="fp16", batch=(1, 8, 32), workspace_gb=2)
    chosen = plan_route(TRT10, options, onnx_path=tmp_path / "model.onnx", onnx_has_qdq=False, fp16_onnx_exists=False)
    info = sidecar(
        api=TRT10,
        gpu={"name": "NVIDIA H100", "compute_capability": "9.0"},
        options=options,
        route=chosen,
        profile=derive_profile(SPEC, options.batch),
        onnx_sha256=file_sha256(tmp_path / "model.onnx"),
        fp32_layers=96,
    )
    # Bookkeeping only: these bytes stand in for a serialized plan; no TensorRT is involved or imitated.
    (tmp_path / PLAN_NAME).write_bytes(b"not a real plan")
    (tmp_path / SIDECAR_NAME).write_text(json.dumps(info))
    record_engine(manifest, tmp_path, info)
    write_manifest(tmp_path, manifest)

    loaded = load_manifest(tmp_path, verify=True)
    assert loaded.files[PLAN_NAME].role == "engine" and loaded.files[SIDECAR_NAME].role == "engine-info"
    assert loaded.extra["tensorrt"]["precision"] == "fp16"
    assert loaded.extra["tensorrt"]["profile"]["opt"] == [8, 3, 224, 224]
    written = json.loads((tmp_path / SIDECAR_NAME).read_text())
    assert written["tensorrt_version"] == "10.13.3" and written["gpu"]["compute_capability"] == "9.0"
    assert written["api"] == "weakly typed (10.x)" and written["route"]["flags"] == [
        "FP16",
        "OBEY_PRECISION_CONSTRAINTS",
    ]
    assert written["workspace_bytes"] == 2 << 30
    (tmp_path / PLAN_NAME).write_bytes(b"tampered plan!!")
    with pytest.raises(ArtifactError, match=r"model\.plan"):
        load_manifest(tmp_path, verify=True)


# -- TensorRT missing -------------------------------------------------------------------------------------------
def test_missing_tensorrt_says_how_to_install(monkeypatch, sge18, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import fails, as on every machine of this project
    with pytest.raises(TensorRTNotInstalledError, match=r"pip install tensorrt-cu12 .* tensorrt-cu13"):
        import_tensorrt()
    with pytest.raises(TensorRTNotInstalledError):
        build_engine(sge18[1], tmp_path, options=TrtBuildOptions())
    with pytest.raises(TrtRequestError, match="MIN <= OPT <= MAX"):  # a bad request is reported first
        build_engine(sge18[1], tmp_path, options=TrtBuildOptions(batch=(4, 2, 1)))
    assert not (tmp_path / PLAN_NAME).exists()


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_build_fp16_engine_on_a_gpu(trt_gpu, tmp_path):
    result = build_engine(trt_gpu[1], tmp_path, options=TrtBuildOptions(precision="fp16", batch=(1, 2, 4)))
    assert result.plan.stat().st_size > 0 and result.info["fp32_layers"] > 0
