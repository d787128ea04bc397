"""The TensorRT runner end to end against the double (host memory for the GPU): call order, its own stream, plans
without a sidecar, CUDA graphs, no-transfer timing and the compatibility check. Outputs come from ONNX Runtime
inside the double, so equality here proves the data path (addresses, shapes, copies), not TensorRT's numerics."""

import numpy as np
import pytest

from export.trt.artifact import add_engine
from export.trt.route import TrtBuildOptions
from export.validate import onnxruntime_runner
from models.transforms import photo_batch
from runtime.backends.base import InputMismatchError
from runtime.backends.trt import PlanMismatchError, TrtRunner
from tests.tensorrt.host_cuda import HostCuda


@pytest.fixture
def plan(fake_trt, sge_artifact):
    options = TrtBuildOptions(precision="fp32", batch=(1, 2, 4))
    return add_engine(sge_artifact, options=options, validate=False)[0].plan


@pytest.fixture(scope="module")
def photos():
    return photo_batch((64, 64))[:4]


def reference(artifact, batch):
    return onnxruntime_runner(artifact / "model.onnx", input_name="input")(batch)


def test_infer_sets_shapes_then_addresses_on_its_own_stream(fake_trt, plan, photos):
    with TrtRunner(plan.parent) as runner:  # the artifact directory, manifest-verified
        out = runner.infer(photos[:3])
        assert runner.last_timings.compute_ms > 0
    np.testing.assert_allclose(out, reference(plan.parent, photos[:3]), rtol=1e-6, atol=1e-6)
    calls = fake_trt.machine.calls
    execute = calls.index("IExecutionContext.execute_async_v3")
    run = [c for c in calls[:execute] if c.startswith("IExecutionContext.set_")][-3:]
    assert run == [
        "IExecutionContext.set_input_shape",
        "IExecutionContext.set_tensor_address",
        "IExecutionContext.set_tensor_address",
    ]
    assert "warning: legacy default stream" not in calls


def test_a_plan_without_its_sidecar_is_read_from_the_engine(fake_trt, plan, photos):
    (plan.parent / "model.plan.json").unlink()  # as trtexec --saveEngine leaves it
    with TrtRunner(plan) as runner:
        assert runner.batch_range == (1, 4) and runner.input_spec.shape == ("batch", 3, 64, 64)
        assert runner.output_spec.shape == ("batch", 1000)
        np.testing.assert_allclose(runner.infer(photos[:2]), reference(plan.parent, photos[:2]), rtol=1e-6, atol=1e-6)
        with pytest.raises(InputMismatchError, match="outside the engine's profile"):
            runner.infer(photo_batch((64, 64))[:5])


def test_a_static_plan_without_a_sidecar_runs_at_its_fixed_batch(fake_trt, sge_artifact, photos):
    options = TrtBuildOptions(precision="fp32", batch=(2, 2, 2))
    plan = add_engine(sge_artifact, options=options, validate=False)[0].plan
    (plan.parent / "model.plan.json").unlink()
    fake_trt.machine.static_plan = True  # as from an ONNX with a fixed batch: no profile shapes to ask
    with TrtRunner(plan) as runner:
        assert runner.batch_range == (2, 2) and runner.input_spec.shape == ("batch", 3, 64, 64)
        np.testing.assert_allclose(runner.infer(photos[:2]), reference(plan.parent, photos[:2]), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("io_dtype", ["int8", "int32"])
def test_a_plan_with_integer_io_is_refused_in_one_line(fake_trt, plan, io_dtype):
    fake_trt.machine.io_dtype = io_dtype  # trtexec --inputIOFormats=int8:chw: quantised values without their scale
    with pytest.raises(PlanMismatchError, match=rf"is {io_dtype.upper()}, not FP32 or FP16"):
        TrtRunner(plan).activate()


def test_cuda_graph_captured_again_after_each_batch_size_change_and_replayed_on_its_stream(fake_trt, plan, photos):
    with TrtRunner(plan, cuda_graph=True) as runner:
        first = runner.infer(photos[:2])
        second = runner.infer(photos[:2])
        runner.infer(photos[:1])
        third = runner.infer(photos[:2])  # the context was set up for batch 1 since the first capture
    calls = fake_trt.machine.calls
    assert calls.count("graph.capture") == 3 and calls.count("graph.replay") == 4
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first, third)


@pytest.mark.parametrize("cuda_graph", [False, True])
def test_the_timed_windows_hold_device_work_only(fake_trt, plan, photos, cuda_graph):
    # trtexec's H2D and GPU compute times are device work: the shapes, addresses and a graph's capture (host work, a
    # capture synchronises) came after the first event, and counted as H2D or compute time on a real GPU
    with TrtRunner(plan, cuda_graph=cuda_graph) as runner:
        runner.infer(photos[:2])
    calls = fake_trt.machine.calls
    first_event = calls.index("event.record")
    host_work = ("IExecutionContext.set_input_shape", "IExecutionContext.set_tensor_address", "graph.capture")
    assert all(i < first_event for i, call in enumerate(calls) if call in host_work)
    launched = "graph.replay" if cuda_graph else "IExecutionContext.execute_async_v3"
    windows = [i for i, call in enumerate(calls) if call == "event.record"]
    assert len(windows) == 4 and windows[1] < calls.index(launched, first_event) < windows[2]
    with TrtRunner(plan, cuda_graph=cuda_graph, transfers=False) as runner:  # the no-transfer path: compute alone
        runner.infer(photos[:2])
        del calls[:]
        runner.infer(photos[:2])
    first_event = calls.index("event.record")
    assert all(i < first_event for i, call in enumerate(calls) if call in host_work)
    assert calls.count("event.record") == 2 and first_event < calls.index(launched, first_event)


def test_benchmark_times_the_runners_own_infer_so_no_transfers_holds(fake_trt, plan, photos):
    from runtime.bench import measure
    from runtime.latency import BenchmarkConfig

    config = BenchmarkConfig(warmup_ms=0, duration_s=0, iterations=4)
    with TrtRunner(plan, transfers=False, cuda_graph=True) as runner:
        report = measure(runner, photos[:2], config)
    assert report.description["stage_timing"] == "cuda events on the runner's stream"
    assert report.device_times_ms["h2d"] == [0.0] * 4 and report.device_times_ms["d2h"] == [0.0] * 4
    assert all(ms > 0 for ms in report.device_times_ms["compute"])


def test_no_execution_context_is_one_line_naming_the_plan(fake_trt, plan):
    fake_trt.machine.no_context = True
    with pytest.raises(PlanMismatchError, match=r"could not create an execution context for model\.plan"):
        TrtRunner(plan).activate()


def test_no_transfers_after_the_first_call(fake_trt, plan, photos):
    with TrtRunner(plan, transfers=False) as runner:
        first = runner.infer(photos[:2])
        assert runner.last_timings.h2d_ms > 0
        again = runner.infer(photos[2:4])  # timing only: the device still holds the first input
        assert runner.last_timings.h2d_ms == 0 and runner.last_timings.d2h_ms == 0
    np.testing.assert_array_equal(first, again)
    assert fake_trt.machine.calls.count("IExecutionContext.execute_async_v3") == 2


def test_a_plan_for_another_gpu_is_refused(fake_trt, plan, monkeypatch):
    monkeypatch.setattr("runtime.backends.trt.open_cuda_device", lambda: HostCuda(fake_trt.machine, "8.9"))
    with pytest.raises(PlanMismatchError, match=r"compute capability 9\.0, this GPU is 8\.9"):
        TrtRunner(plan).activate()
    fake_trt.machine.gpu = "NVIDIA H200"
    monkeypatch.setattr("runtime.backends.trt.open_cuda_device", lambda: HostCuda(fake_trt.machine))
    with pytest.raises(PlanMismatchError, match="this GPU is a NVIDIA H200"):
        TrtRunner(plan).activate()


def test_benchmark_passes_trtexecs_cuda_graph_and_no_transfer_options():
    from runtime.commands import benchmark

    args = benchmark.build_parser().parse_args(
        ["artifact", "--backends", "tensorrt", "--trt-cuda-graph", "--trt-no-transfers"]
    )
    assert benchmark.backend_options("tensorrt", args) == {"cuda_graph": True, "transfers": False}
    default = benchmark.build_parser().parse_args(["artifact", "--backends", "tensorrt"])
    assert benchmark.backend_options("tensorrt", default) == {"cuda_graph": False, "transfers": True}


def test_the_double_refuses_a_host_buffer_where_tensorrt_takes_device_memory(fake_trt, plan, photos):
    """A host address given to TensorRT crashes or reads garbage on a GPU; the double refuses it, so the data-path
    tests above prove that every address the runner hands over is one of its device buffers."""
    with TrtRunner(plan) as runner:
        runner._dev_in = runner._cuda.empty(tuple(runner._dev_in.shape), runner._dev_in.dtype, pinned=True)
        with pytest.raises(AssertionError, match=r"set_tensor_address\('input'\): .* is not device memory"):
            runner.infer(photos[:2])
