"""TensorRT build decisions without TensorRT: version gating, profile, precision route, sidecar, manifest, errors."""

import json
import sys
import types
from pathlib import Path

import onnx
import pytest

from export.artifacts import ArtifactError, Manifest, TensorSpec, file_sha256, load_manifest, write_manifest
from export.trt.build import (
    PLAN_NAME,
    SIDECAR_NAME,
    TensorRTNotInstalledError,
    TrtRequestError,
    build_engine,
    import_tensorrt,
    record_engine,
    sidecar,
    workspace_bytes,
)
from export.trt.pinning import LayerView, fp32_layer_names
from export.trt.route import (
    BuildRoute,
    Profile,
    TrtApi,
    TrtBuildOptions,
    derive_profile,
    network_flag_names,
    onnx_input_spec,
    plan_route,
)

TRT10, TRT11 = TrtApi.from_version("10.13.3"), TrtApi.from_version("11.1.0")
TRT10_8 = TrtApi.from_version("10.8.0")  # before 10.12 deprecated weak typing
ONNX = Path("model.onnx")
SPEC = TensorSpec(name="input", shape=("batch", 3, 224, 224))


def route(api, precision, **kw):
    keys = ("onnx_has_qdq", "fp16_onnx_exists", "calib_cache_exists", "int8_onnx_exists")
    flags = {k: kw.pop(k) for k in keys if k in kw}
    flags.setdefault("onnx_has_qdq", False)
    flags.setdefault("fp16_onnx_exists", "fp16_onnx" in kw)
    flags.setdefault("int8_onnx_exists", "int8_onnx" in kw)
    return plan_route(api, TrtBuildOptions(precision=precision, **kw), onnx_path=ONNX, **flags)


# -- version gating ---------------------------------------------------------------------------------------------
def test_version_gating():
    assert TRT10.weak_typing and (TRT10.major, TRT10.minor) == (10, 13)
    assert TRT10.weak_typing_deprecated and not TRT10_8.weak_typing_deprecated
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


def test_fp16_before_10_12_is_weak_typing_with_sge_pinned_fp32_unless_strong_typing_is_asked():
    weak = route(TRT10_8, "fp16", fp16_onnx=Path("model_fp16.onnx"))
    assert weak.flags == ("FP16", "OBEY_PRECISION_CONSTRAINTS") and weak.fp32_islands and weak.onnx == ONNX
    strong = route(TRT10_8, "fp16", fp16_onnx=Path("model_fp16.onnx"), strong_typing=True)
    assert strong.strongly_typed and strong.flags == () and strong.onnx.name == "model_fp16.onnx"


def test_fp16_from_10_12_builds_the_fp16_onnx_strongly_typed_when_it_exists():
    strong = route(TRT10, "fp16", fp16_onnx=Path("model_fp16.onnx"))
    assert strong.strongly_typed and strong.onnx.name == "model_fp16.onnx" and not strong.fp32_islands
    assert network_flag_names(TRT10, strong) == ("STRONGLY_TYPED",)
    weak = route(TRT10, "fp16")  # no FP16 ONNX: the deprecated flags still work on 10.x
    assert weak.flags == ("FP16", "OBEY_PRECISION_CONSTRAINTS") and weak.fp32_islands


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
        # the symmetric Q/DQ ONNX (role model-int8-s8s8) is preferred to the calibrator even on 10.x
        s8s8 = route(api, "int8", int8_onnx=Path("model.int8.s8s8.onnx"), calib_dir=Path("photos"))
        assert s8s8.onnx.name == "model.int8.s8s8.onnx" and s8s8.strongly_typed and not s8s8.calibrate
    with pytest.raises(TrtRequestError, match="does not exist"):
        route(TRT11, "int8", int8_onnx=Path("gone.onnx"), int8_onnx_exists=False)


def test_opt_level_range():
    assert route(TRT10, "fp32", opt_level=5).onnx == ONNX
    with pytest.raises(TrtRequestError, match=r"--trt-opt-level must be 0\.\.5"):
        route(TRT11, "fp32", opt_level=6)


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
def test_fp32_layers_matched_by_name_metadata_suffix_output_or_interior():
    v = LayerView
    layers = [
        v("/sge/ReduceSum", "", ("x",), ("c",)),  # named after its node
        v("(Unnamed Layer* 3) [Shuffle]", "", ("c",), ("s",)),  # a helper between island layers
        v("/sge/ReduceMean", "", ("s",), ("m",)),
        v("/sge/Div", "", ("c", "m"), ("d0",)),
        v("/sge/Div_17", "", ("d0",), ("d",)),  # the parser's second layer for /sge/Div
        v("(Unnamed Layer* 9) [ElementWise]", "[ONNX Layer: /sge/Sub]", ("d",), ("e",)),  # by metadata
        v("(Unnamed Layer* 12) [ElementWise]", "", ("e",), ("/sge/Sqrt_output_0",)),  # writes an island tensor
        v("/conv1/Conv", "", ("/sge/Sqrt_output_0",), ("y",)),
        v("(Unnamed Layer* 20) [Shuffle]", "", ("y",), ("z",)),  # fed from outside the island: not pinned
    ]
    nodes = {"/sge/ReduceSum", "/sge/ReduceMean", "/sge/Div", "/sge/Sub", "/sge/Sqrt"}
    chosen = fp32_layer_names(layers, nodes, {"/sge/Sqrt_output_0"})
    assert chosen == [layer.name for layer in layers[:7]]


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


def test_the_type_stubs_alone_are_not_tensorrt(monkeypatch):
    # tensorrt-stubs installs tensorrt/__init__.pyi, so `import tensorrt` finds an empty namespace package.
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))
    with pytest.raises(TensorRTNotInstalledError, match="not TensorRT"):
        import_tensorrt()


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_build_fp16_engine_on_a_gpu(trt_gpu, tmp_path):
    """Runs unchanged on 10.x (weak typing before 10.12, strongly typed from the FP16 ONNX after) and 11.x."""
    from export.fp16 import write_fp16_onnx
    from export.trt.inspect import check_fp32_islands, engine_layer_info

    _, onnx_path = trt_gpu
    fp16_onnx, policy = write_fp16_onnx(onnx_path, tmp_path / "model_fp16.onnx")
    options = TrtBuildOptions(precision="fp16", batch=(1, 2, 4), fp16_onnx=fp16_onnx)
    result = build_engine(onnx_path, tmp_path, options=options)
    assert result.plan.stat().st_size == result.info["build"]["engine_bytes"] > 0
    if result.info["route"]["strongly_typed"]:
        assert result.info["onnx"] == "model_fp16.onnx" and result.info["fp32_layers"] == 0
    else:
        assert result.info["fp32_layers"] > 0
    islands = check_fp32_islands(engine_layer_info(result.plan), {n for i in policy.islands for n in i})
    assert not islands.not_fp32, islands.to_dict()  # fused Myelin regions are reported, not judged
