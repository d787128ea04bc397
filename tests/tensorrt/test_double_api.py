"""The test double is faithful to the stubs: exactly 10.13's names, 11.x without the removed ones, strict calls."""

import pytest


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
