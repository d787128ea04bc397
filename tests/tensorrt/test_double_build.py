"""The builder end to end against the TensorRT double, 10.13 and 11.x: call order, timing cache, precision routes,
FP32 pins. The double checks the API of each version; it builds nothing (README: TensorRT, what the double proves)."""

import json
from dataclasses import replace
from pathlib import Path

import pytest

from export.trt.build import PLAN_NAME, SIDECAR_NAME, TrtBuildError, TrtRequestError, build_engine
from export.trt.route import TrtBuildOptions

FP16_ONNX = "model_fp16.onnx"


def build(artifact: Path, **options):
    return build_engine(artifact / "model.onnx", artifact, options=TrtBuildOptions(batch=(1, 2, 4), **options))


def test_fp32_build_calls_in_order_and_writes_plan_and_sidecar(fake_trt, sge_artifact):
    result = build(sge_artifact, precision="fp32", opt_level=2, verbose=True, log_file=sge_artifact / "build.log")
    calls = fake_trt.machine.calls
    assert calls.index("OnnxParser.parse_from_file") < calls.index("IBuilderConfig.add_optimization_profile")
    assert calls.index("IOptimizationProfile.set_shape") < calls.index("IBuilderConfig.add_optimization_profile")
    assert calls.index("IBuilderConfig.add_optimization_profile") < calls.index("Builder.build_serialized_network")
    assert calls.index("IBuilderConfig.profiling_verbosity=") < calls.index("Builder.build_serialized_network")
    assert "IBuilderConfig.builder_optimization_level=" in calls and "IBuilderConfig.clear_flag" in calls
    info = json.loads((sge_artifact / SIDECAR_NAME).read_text())
    assert info == result.info and info["opt_level"] == 2 and info["precision"] == "fp32"
    assert info["build"]["engine_bytes"] == (sge_artifact / PLAN_NAME).stat().st_size > 0
    assert info["build"]["seconds"] >= 0 and info["build"]["log"].endswith("build.log")
    assert info["api"] == ("weakly typed (10.x)" if fake_trt.major == 10 else "strongly typed (11.x)")
    assert info["gpu"]["name"] == fake_trt.machine.gpu and info["tensorrt_version"] == fake_trt.module.__version__


def test_timing_cache_checked_never_merged_and_saved_after_the_plan(fake_trt, sge_artifact, caplog):
    cache = sge_artifact / "trt.cache"
    cache.write_text(json.dumps(["NVIDIA A100-SXM4-80GB:12"]))  # a cache from another GPU
    plan = sge_artifact / PLAN_NAME
    seen = []
    fake_trt.machine.hooks["ITimingCache.serialize"] = lambda: seen.append(plan.is_file())
    result = build(sge_artifact, precision="fp32", timing_cache=cache)
    calls = fake_trt.machine.calls
    assert "ITimingCache.combine" not in calls  # another device's timings are never merged into this GPU's
    assert calls.count("IBuilderConfig.set_timing_cache") == 2  # rejected for this GPU, then an empty one
    assert "rejected the timing cache" in caplog.text
    assert seen == [True]  # the plan was on disk before the cache was serialized
    saved = json.loads(cache.read_text())
    assert saved and all(entry.startswith(fake_trt.machine.gpu) for entry in saved)
    assert result.info["build"]["timing_cache"] == {"file": str(cache), "loaded": False, "saved": True}

    build(sge_artifact, precision="fp32", timing_cache=cache)  # now this GPU's own cache is accepted
    assert fake_trt.machine.calls.count("IBuilderConfig.set_timing_cache") == 3


def test_a_lost_timing_cache_keeps_the_engine(fake_trt, sge_artifact, caplog):
    fake_trt.machine.timing_cache_lost = True
    result = build(sge_artifact, precision="fp32", timing_cache=sge_artifact / "trt.cache")
    assert result.plan.is_file() and result.info["build"]["timing_cache"]["saved"] is False
    assert not (sge_artifact / "trt.cache").exists() and "returned no timing cache" in caplog.text


def test_a_failed_build_writes_no_plan(fake_trt, sge_artifact):
    fake_trt.machine.build_fails = True
    with pytest.raises(TrtBuildError, match="could not build"):
        build(sge_artifact, precision="fp32", timing_cache=sge_artifact / "trt.cache", log_file=sge_artifact / "b.log")
    assert not (sge_artifact / PLAN_NAME).exists() and not (sge_artifact / "trt.cache").exists()
    assert (sge_artifact / "b.log").is_file()  # the log that says why is kept


def test_a_refused_optimization_profile_is_one_line(fake_trt, sge_artifact):
    fake_trt.machine.profile_refused = True
    with pytest.raises(TrtBuildError, match=r"refused the optimization profile \{'input': 'input'"):
        build(sge_artifact, precision="fp32")
    assert "Builder.build_serialized_network" not in fake_trt.machine.calls


def test_the_parsed_graph_must_have_the_deploy_onnxs_input(fake_trt, sge_artifact):
    import onnx

    fp16 = onnx.load(str(sge_artifact / FP16_ONNX))
    for value in (*fp16.graph.input, *(n for n in fp16.graph.node)):  # rename the input everywhere it is named
        if getattr(value, "name", None) == "input":
            value.name = "images"
        if hasattr(value, "input"):
            value.input[:] = ["images" if i == "input" else i for i in value.input]
    onnx.save(fp16, str(sge_artifact / FP16_ONNX))
    with pytest.raises(TrtBuildError, match=r"model_fp16.onnx's input 'images' \[3, 64, 64\] differs from the deploy"):
        build(sge_artifact, precision="fp16", fp16_onnx=sge_artifact / FP16_ONNX)
    assert not (sge_artifact / PLAN_NAME).exists()


def test_fp16_is_strongly_typed_from_the_fp16_onnx_on_10_13_and_11(fake_trt, sge_artifact):
    result = build(sge_artifact, precision="fp16", fp16_onnx=sge_artifact / FP16_ONNX)
    assert result.info["onnx"] == FP16_ONNX and result.info["route"]["strongly_typed"]
    assert result.info["fp32_layers"] == 0 and "Builder.create_network" in fake_trt.machine.calls
    flags = [c for c in fake_trt.machine.calls if c == "IBuilderConfig.set_flag"]
    assert flags == []  # no precision flags: the graph's types decide


def test_the_fp16_onnx_may_be_named_by_a_string(fake_trt, sge_artifact):
    result = build(sge_artifact, precision="fp16", fp16_onnx=str(sge_artifact / FP16_ONNX))  # a library caller's str
    assert result.info["onnx"] == FP16_ONNX


def test_fp16_without_the_fp16_onnx(fake_trt, sge_artifact):
    if fake_trt.major == 11:
        with pytest.raises(TrtRequestError, match="no FP16 builder flag"):
            build(sge_artifact, precision="fp16")
        return
    fake_trt.machine.parser_metadata = False  # names and tensors alone must find every layer of an island
    result = build(sge_artifact, precision="fp16")
    assert result.info["route"]["flags"] == ["FP16", "OBEY_PRECISION_CONSTRAINTS"]
    plan = json.loads(result.plan.read_bytes().split(b"\n", 1)[1])
    by_name = {layer["name"]: layer for layer in plan["layers"]}
    suffixed = [n for n in by_name if n.split("/")[-1].startswith("Div_") and n.rsplit("_", 1)[-1].isdigit()]
    unnamed = [n for n in by_name if n.startswith("(Unnamed Layer*")]
    assert suffixed and unnamed
    island_outputs = {o["dtype"] for n in (*suffixed, *unnamed) for o in by_name[n]["outputs"]}
    assert island_outputs == {"FLOAT"} and result.info["fp32_layers"] >= len(suffixed) + len(unnamed)
    conv = next(layer for layer in plan["layers"] if layer["type"] == "CONVOLUTION")
    assert conv["outputs"][0]["dtype"] == "HALF"


def test_int8_routes(fake_trt, sge_artifact):
    s8s8 = sge_artifact / "model.int8.s8s8.onnx"  # stands in for the INT8 engineer's Q/DQ file: only its path matters
    s8s8.write_bytes((sge_artifact / "model.onnx").read_bytes())
    result = build(sge_artifact, precision="int8", int8_onnx=s8s8, calib_dir=sge_artifact)
    assert result.info["onnx"] == s8s8.name and result.info["route"]["strongly_typed"]
    assert "IBuilderConfig.int8_calibrator=" not in fake_trt.machine.calls
    if fake_trt.major == 11:
        with pytest.raises(TrtRequestError, match="has no calibrators"):
            build(sge_artifact, precision="int8", calib_dir=sge_artifact)


def test_tensorrts_own_messages_reach_python_logging_and_the_build_log(fake_trt, sge_artifact, caplog):
    with caplog.at_level("DEBUG", logger="tensorrt"):
        build(sge_artifact, precision="fp32", log_file=sge_artifact / "b.log")  # not verbose: WARNING up only
        assert not [r for r in caplog.records if r.name == "tensorrt"]
        build(sge_artifact, precision="fp32", verbose=True)
    heard = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "tensorrt"]
    assert ("DEBUG", "[fake] tactic 0x0 timed") in heard and ("INFO", "[fake] building the engine") in heard
    text = (sge_artifact / "b.log").read_text()
    assert text == "[INFO] [fake] building the engine\n[VERBOSE] [fake] tactic 0x0 timed\n"


def test_a_build_beside_a_live_runner_still_gets_its_log(fake_trt, sge_artifact):
    from runtime.backends.trt import TrtRunner

    plan = build(sge_artifact, precision="fp32").plan
    with TrtRunner(plan):  # its Runtime registered the process's logger first; TensorRT ignores any later one
        build(sge_artifact, precision="fp32", log_file=sge_artifact / "b.log")
    assert "[VERBOSE] [fake] tactic 0x0 timed" in (sge_artifact / "b.log").read_text()


def test_a_logger_registered_elsewhere_first_is_said_in_the_build_log(fake_trt, sge_artifact, caplog):
    from export.trt.log import NO_MESSAGES

    trt = fake_trt.module
    foreign = trt.Runtime(trt.Logger(trt.Logger.WARNING))  # another library's TensorRT object, alive
    with caplog.at_level("WARNING", logger="tensorrt"):
        build(sge_artifact, precision="fp32", log_file=sge_artifact / "b.log")
    assert (sge_artifact / "b.log").read_text() == f"[sge-deploy] {NO_MESSAGES}\n"
    assert NO_MESSAGES in caplog.text
    del foreign


def test_a_parser_failure_keeps_the_log_that_says_why(fake_trt, sge_artifact):
    fake_trt.machine.parser_error = "no importer registered for op: SgeResidual"
    with pytest.raises(TrtBuildError, match=r"ONNX parser rejected .*no importer registered for op: SgeResidual"):
        build(sge_artifact, precision="fp32", log_file=sge_artifact / "p.log")
    assert "[ERROR] [fake] ONNX parser: no importer" in (sge_artifact / "p.log").read_text()


def test_a_profile_the_binding_refuses_is_one_line(fake_trt, sge_artifact, monkeypatch):
    from export.trt import build as build_module

    derive = build_module.derive_profile

    def unordered(spec, batch):  # past our own check: what TensorRT's binding refuses by raising
        profile = derive(spec, batch)
        return replace(profile, opt=(profile.max[0] + 1, *profile.opt[1:]))

    monkeypatch.setattr(build_module, "derive_profile", unordered)
    with pytest.raises(TrtBuildError, match=r"refused the optimization profile .*: Shape provided for max is"):
        build(sge_artifact, precision="fp32")
    assert "Builder.build_serialized_network" not in fake_trt.machine.calls


def test_fp16_pins_the_layers_of_unnamed_island_nodes(fake_trt, sge_artifact):
    # onnx-tensorrt names an unnamed node's layers node_of_<first output>: the pins matched only export.fp16's own
    # names for such nodes (and the tensor fallback only named nodes), so those islands built in FP16
    import onnx

    from export.artifacts import load_manifest, write_manifest
    from export.fp16 import plan_precision

    path = sge_artifact / "model.onnx"
    model = onnx.load(str(path))
    island = {name for nodes in plan_precision(model).islands for name in nodes}
    unnamed = [node for node in model.graph.node if node.name in island and node.op_type in ("Div", "Sqrt")]
    for node in unnamed:
        node.name = ""
    onnx.save(model, str(path))
    manifest = load_manifest(sge_artifact, verify=False)
    manifest.record(sge_artifact, "model.onnx", role="model")
    write_manifest(sge_artifact, manifest)
    fake_trt.machine.parser_metadata = False
    if fake_trt.major == 11:  # no weak typing: FP16 is the strongly typed FP16-islands ONNX, named when it is made
        with pytest.raises(TrtRequestError, match="no FP16 builder flag"):
            build(sge_artifact, precision="fp16")
        return
    result = build(sge_artifact, precision="fp16")
    layers = {layer["name"]: layer for layer in json.loads(result.plan.read_bytes().split(b"\n", 1)[1])["layers"]}
    parser_named = [name for name in layers if name.startswith("node_of_")]
    assert len(parser_named) >= len(unnamed) > 0
    assert {o["dtype"] for name in parser_named for o in layers[name]["outputs"]} == {"FLOAT"}
