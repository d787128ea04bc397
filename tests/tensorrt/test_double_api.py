"""The test double is faithful to the stubs: exactly 10.13's names, 11.x without the removed ones, strict calls."""

from pathlib import Path

import numpy as np
import pytest

from tests.tensorrt.trt_types import accepts


def test_the_double_exposes_the_version_surface(fake_trt):
    trt = fake_trt.module
    weak = fake_trt.major == 10
    assert trt.__version__.startswith(f"{fake_trt.major}.")
    assert hasattr(trt.BuilderFlag, "FP16") == weak and hasattr(trt.BuilderFlag, "INT8") == weak
    assert hasattr(trt.BuilderFlag, "OBEY_PRECISION_CONSTRAINTS") == weak
    assert hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH") == weak
    assert hasattr(trt, "IInt8EntropyCalibrator2") == weak
    assert hasattr(trt.IBuilderConfig, "int8_calibrator") == weak
    assert hasattr(trt.ILayer, "precision") == weak and hasattr(trt.ILayer, "set_output_type") == weak
    # kept on both: what the project uses on 11.x
    assert int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) == 1 and trt.float32 == trt.DataType.FLOAT
    assert trt.ProfilingVerbosity.DETAILED and trt.LayerInformationFormat.JSON and trt.BuilderFlag.TF32
    assert not hasattr(trt, "EngineInspectorr") and not hasattr(trt.Builder, "build_engine")  # gone since 10.0


def test_the_double_is_strict(fake_trt):
    trt = fake_trt.module
    config = trt.Builder(trt.Logger(trt.Logger.WARNING)).create_builder_config()
    with pytest.raises(AttributeError, match="no attribute 'max_workspace_size'"):  # removed in TensorRT 10
        config.max_workspace_size = 1 << 30
    with pytest.raises(AttributeError, match="read-only"):
        config.num_optimization_profiles = 2
    with pytest.raises(TypeError, match="unexpected keyword"):
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatches=True)
    with pytest.raises(TypeError, match="No constructor"):
        trt.ICudaEngine()
    with pytest.raises(NotImplementedError, match=r"no behaviour for IBuilderConfig\.get_tactic_sources"):
        config.get_tactic_sources()
    assert fake_trt.machine.calls[:3] == ["Logger.__init__", "Builder.__init__", "Builder.create_builder_config"]


def test_the_double_checks_argument_types_as_the_binding_would(fake_trt):
    trt = fake_trt.module
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    config = builder.create_builder_config()
    parser = trt.OnnxParser(builder.create_network(0), logger)
    refused = {
        "an int for an enum": lambda: config.set_flag(int(trt.BuilderFlag.TF32)),
        "a float for an int": lambda: config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1.5e9),
        "a Path for a str": lambda: parser.parse_from_file(Path("model.onnx")),
        "a missing argument": lambda: trt.OnnxParser(builder.create_network(0)),
        "one argument too many": lambda: builder.create_network(0, 1),
        "a severity as an int": lambda: trt.Logger(2),
        "a str for an int property": lambda: setattr(config, "builder_optimization_level", "3"),
        "an int for an enum property": lambda: setattr(config, "profiling_verbosity", 1),
    }
    for what, call in refused.items():
        with pytest.raises(TypeError, match=r"incompatible function arguments|takes"):
            call()
            pytest.fail(f"the double accepted {what}")
    # what pybind11 converts: a sequence for Dims, an enum where an int is asked for, an int where a float is
    profile = builder.create_optimization_profile()
    profile.set_shape("input", (1, 3, 8, 8), [2, 3, 8, 8], (np.int64(4), 3, 8, 8))
    builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    config.builder_optimization_level = np.int32(3)
    with pytest.raises(TypeError):
        profile.set_shape("input", (1.0, 3, 8, 8), (1, 3, 8, 8), (1, 3, 8, 8))


def test_the_type_rules_follow_pybind11(fake_trt):
    trt = fake_trt.module
    assert accepts("list[int]", (1, 2), trt) and not accepts("list[int]", "12", trt)
    assert accepts("list[str]", ["a"], trt) and not accepts("list[str]", [Path("a")], trt)
    assert accepts("typing_extensions.Buffer", b"plan", trt) and not accepts("typing_extensions.Buffer", "plan", trt)
    assert accepts("Weights", np.zeros(3, np.float32), trt) and not accepts("Weights", [0.0], trt)
    assert accepts("ILogger.Severity", trt.Logger.INFO, trt) and not accepts("DataType", trt.Logger.INFO, trt)
    assert accepts("float", 1, trt) and not accepts("int", 1.0, trt) and accepts("str", b"x", trt)
    assert accepts("capsule", object(), trt)  # not modelled: anything
