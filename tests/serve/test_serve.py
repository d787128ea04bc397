"""A real Triton Inference Server (PyTriton) on loopback serving an ONNX Runtime runner.

One server for the module (start-up is the slow part); every test ends on its own (pytest-timeout).
"""

import os
import sysconfig
import threading
import urllib.request

import numpy as np
import pytest

import runtime
from export.artifacts import TensorSpec
from runtime.pytriton_startup import library_path_with_libpython, triton_child_environment
from runtime.serve import ModelServer, ServeConfig, ServeConfigError, ServeError, serve_artifact, triton_tensor
from tests.serve.conftest import INPUT, OUTPUT, SIZE, free_ports, load_script

pytestmark = [pytest.mark.serve, pytest.mark.timeout(180)]

httpclient = pytest.importorskip("tritonclient.http")
grpcclient = pytest.importorskip("tritonclient.grpc")
pytest.importorskip("pytriton")

MAX_BATCH = 8
MODEL = "r18"
RUNNER_OPTIONS = {"threads": 1, "allow_spinning": False}  # two instances and the clients share 2 cores
RTOL, ATOL = 1e-5, 1e-5  # same ONNX Runtime build, same graph: only batch-composition rounding differs


@pytest.fixture(scope="module")
def server(onnx_artifact):
    http_port, grpc_port, metrics_port = free_ports(3)
    config = ServeConfig(
        model_name=MODEL,
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        max_batch=MAX_BATCH,
        queue_delay_us=2000,
        instances=2,
    )
    with serve_artifact(onnx_artifact, config=config, backend="onnxruntime", load_options=RUNNER_OPTIONS) as running:
        yield running
    assert not running.is_running
    assert running.triton_exit_code == 0 and running.exit_problem() is None  # PyTriton's exit report reached us
    assert running.cleaned_up == []  # a clean stop leaves nothing behind to kill or remove


@pytest.fixture(scope="module")
def reference(onnx_artifact):
    """The runner's own outputs, computed outside the server."""
    with runtime.load(onnx_artifact, backend="onnxruntime", **RUNNER_OPTIONS) as runner:
        yield runner.infer


def http_client(server):
    return httpclient.InferenceServerClient(f"127.0.0.1:{server.config.http_port}", network_timeout=30)


def grpc_client(server):
    return grpcclient.InferenceServerClient(f"127.0.0.1:{server.config.grpc_port}")


def http_infer(client, batch, *, datatype="FP32"):
    tensor = httpclient.InferInput(INPUT.name, list(batch.shape), datatype)
    tensor.set_data_from_numpy(batch)
    return client.infer(MODEL, [tensor], outputs=[httpclient.InferRequestedOutput(OUTPUT.name)]).as_numpy(OUTPUT.name)


def grpc_infer(client, batch, *, datatype="FP32"):
    tensor = grpcclient.InferInput(INPUT.name, list(batch.shape), datatype)
    tensor.set_data_from_numpy(batch)
    return client.infer(MODEL, [tensor], client_timeout=30).as_numpy(OUTPUT.name)


def random_batch(n, seed):
    return np.random.default_rng(seed).standard_normal((n, 3, SIZE, SIZE)).astype(np.float32)


def photo_batch():
    from models.transforms import photo_batch

    return photo_batch((SIZE, SIZE))


def test_health_metadata_and_config(server):
    client = http_client(server)
    try:
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(MODEL)
        meta = client.get_model_metadata(MODEL)
        assert [(t["name"], t["datatype"], t["shape"]) for t in meta["inputs"]] == [
            (INPUT.name, "FP32", [-1, 3, SIZE, SIZE])
        ]
        assert [(t["name"], t["datatype"], t["shape"]) for t in meta["outputs"]] == [(OUTPUT.name, "FP32", [-1, 1000])]
        config = client.get_model_config(MODEL)
        assert config["max_batch_size"] == MAX_BATCH
        assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 2000
        assert sum(g["count"] for g in config["instance_group"]) == 2
    finally:
        client.close()
    assert grpc_client(server).is_model_ready(MODEL)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_outputs_are_the_runners_own(server, reference, protocol):
    batches = [random_batch(3, seed=1), random_batch(1, seed=2), photo_batch()]
    if protocol == "http":
        client = http_client(server)
        try:
            got = [http_infer(client, b) for b in batches]
        finally:
            client.close()
    else:
        client = grpc_client(server)
        got = [grpc_infer(client, b) for b in batches]
    for batch, out in zip(batches, got, strict=True):
        assert out.shape == (batch.shape[0], 1000) and out.dtype == np.float32
        np.testing.assert_allclose(out, reference(batch), rtol=RTOL, atol=ATOL)
    assert not np.allclose(got[0][0], got[0][1]), "different images gave the same logits"


def test_sixteen_concurrent_clients_lose_nothing(server, reference):
    """16 threads × 6 requests (each its own client, HTTP and gRPC mixed): every answer is the right one."""
    clients, per_client = 16, 6
    inputs = {
        (c, r): random_batch(1 + (c + r) % 3, seed=100 * c + r) for c in range(clients) for r in range(per_client)
    }
    answers: dict[tuple[int, int], np.ndarray] = {}
    errors: list[str] = []
    lock = threading.Lock()

    def work(c: int) -> None:
        use_grpc = c % 2 == 1
        client = grpc_client(server) if use_grpc else http_client(server)
        try:
            for r in range(per_client):
                out = (grpc_infer if use_grpc else http_infer)(client, inputs[c, r])
                with lock:
                    answers[c, r] = out
        except Exception as err:  # collected and reported by the assertion below
            with lock:
                errors.append(f"client {c}: {err}")
        finally:
            client.close()

    threads = [threading.Thread(target=work, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a client hung"
    assert errors == []
    assert len(answers) == clients * per_client
    stacked = np.concatenate([inputs[k] for k in sorted(inputs)])
    expected = reference(stacked)
    got = np.concatenate([answers[k] for k in sorted(inputs)])
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_malformed_requests_get_errors_and_the_server_stays_up(server, reference, protocol):
    client = http_client(server) if protocol == "http" else grpc_client(server)
    infer = http_infer if protocol == "http" else grpc_infer
    error = httpclient.InferenceServerException if protocol == "http" else grpcclient.InferenceServerException
    bad = {  # what is sent → what Triton's error must mention
        "wrong shape": (np.zeros((1, 3, SIZE + 1, SIZE), np.float32), "FP32", "unexpected shape"),
        "NHWC": (np.zeros((1, SIZE, SIZE, 3), np.float32), "FP32", "unexpected shape"),
        "wrong rank": (np.zeros((3, SIZE, SIZE), np.float32), "FP32", "unexpected shape"),
        "wrong dtype": (np.zeros((1, 3, SIZE, SIZE), np.float64), "FP64", "data-type"),
        "batch above max": (np.zeros((MAX_BATCH + 1, 3, SIZE, SIZE), np.float32), "FP32", "batch-size must be <="),
    }
    try:
        for what, (batch, datatype, says) in bad.items():
            with pytest.raises(error) as info:
                infer(client, batch, datatype=datatype)
            assert says in info.value.message(), f"{what}: {info.value.message()}"
        good = random_batch(MAX_BATCH, seed=7)
        np.testing.assert_allclose(infer(client, good), reference(good), rtol=RTOL, atol=ATOL)
    finally:
        client.close()


def raw_post(server, body, *, headers=None, query=""):
    """(status, seconds, JSON answer) of one raw HTTP POST to the model's infer endpoint."""
    import http.client
    import json
    import time

    conn = http.client.HTTPConnection("127.0.0.1", server.config.http_port, timeout=30)
    start = time.perf_counter()
    try:
        conn.request("POST", f"/v2/models/{MODEL}/infer{query}", body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, time.perf_counter() - start, json.loads(response.read() or b"{}")
    finally:
        conn.close()


def requests_triton_saw(server) -> float:
    """Triton's own count of the model's requests, answered or failed (its Prometheus counters)."""
    text = urllib.request.urlopen(server.config.urls["metrics"], timeout=10).read().decode()
    counters = ("nv_inference_request_success", "nv_inference_request_failure")
    lines = [line for line in text.splitlines() if line.startswith(counters) and f'model="{MODEL}"' in line]
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines)


def test_requests_beyond_the_models_limits_are_refused_before_triton(server, reference):
    from runtime.kserve_client import bad_requests

    before = requests_triton_saw(server)
    for what, body in bad_requests(INPUT.name):  # a 95-byte body declaring [100000, 3, 96, 96] among them
        status, seconds, answer = raw_post(server, body)
        assert status == 400 and answer["error"], (what, status, seconds)
        status, seconds, _ = raw_post(server, body, query="?x=1")  # Triton routes it to infer all the same
        assert status == 400, (what, "with a query string", status, seconds)
    status, _, answer = raw_post(server, b"x", headers={"Content-Length": str(1 << 40)})
    assert status == 413 and "largest valid request" in answer["error"]
    assert requests_triton_saw(server) == before  # the gate answered them all: Triton allocated for none
    good = random_batch(2, seed=9)  # the server is still up and right
    client = http_client(server)
    try:
        np.testing.assert_allclose(http_infer(client, good), reference(good), rtol=RTOL, atol=ATOL)
    finally:
        client.close()
    assert requests_triton_saw(server) == before + 1  # the counters do count what reaches Triton


def test_grpc_refuses_a_declared_shape_beyond_the_data(server):
    """No gate on gRPC: Triton's gRPC front end checks the batch and the byte size before allocating."""
    client = grpc_client(server)
    cases = (
        ([100000, 3, SIZE, SIZE], 4, "batch-size must be <="),
        ([2, 3, SIZE, SIZE], 3 * SIZE * SIZE, "input byte size mismatch"),
    )
    for shape, values, says in cases:
        tensor = grpcclient.InferInput(INPUT.name, [1, 3, SIZE, SIZE], "FP32")
        tensor.set_data_from_numpy(random_batch(1, seed=3))
        tensor._input.ClearField("shape")  # declare a shape the data does not have (the client would refuse it)
        tensor._input.shape.extend(shape)
        tensor._raw_content = np.zeros(values, np.float32).tobytes()
        with pytest.raises(grpcclient.InferenceServerException) as info:
            client.infer(MODEL, [tensor])
        assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert says in info.value.message()  # Triton's own check, before it allocates for the declared shape


def test_prometheus_metrics_count_the_requests(server):
    text = urllib.request.urlopen(server.config.urls["metrics"], timeout=10).read().decode()
    lines = [line for line in text.splitlines() if line.startswith("nv_inference_request_success") and MODEL in line]
    assert lines, "no success counter for the model"
    assert sum(float(line.rsplit(" ", 1)[1]) for line in lines) > 0


def test_a_taken_port_fails_fast_with_the_flag_to_change(server, onnx_artifact):
    config = ServeConfig(
        model_name="other",
        http_port=server.config.http_port,
        grpc_port=free_ports(1)[0],
        metrics_port=server.config.metrics_port,
    )
    with pytest.raises(ServeError, match=r"--http-port.*--metrics-port"):
        ModelServer([runtime.load(onnx_artifact, backend="onnxruntime")], config=config).start()


def test_bad_options_are_refused():
    with pytest.raises(ServeConfigError) as info:
        ServeConfig(model_name="a b", http_port=0, grpc_port=8001, metrics_port=8001, max_batch=0, instances=0)
    for word in ("model name", "http_port", "must differ", "max_batch", "instances"):
        assert word in str(info.value)
    with pytest.raises(ServeConfigError, match="dynamic batch"):
        triton_tensor(TensorSpec("input", (1, 3, SIZE, SIZE)))
    with pytest.raises(ServeConfigError, match="IPv6 hosts are not supported"):
        ServeConfig(model_name="m", host="::1")
    with pytest.raises(ServeConfigError, match=r"max_request_mb must lie in 1\.\.16384; got 0"):
        ServeConfig(model_name="m", max_request_mb=0)


def test_a_refusal_that_leaves_the_body_unread_closes_the_connection(server):
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", server.config.http_port, timeout=30)
    try:
        smuggled = b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n"
        headers = {"Content-Encoding": "gzip", "Content-Length": str(len(smuggled))}
        conn.request("POST", f"/v2/models/{MODEL}/infer", body=smuggled, headers=headers)
        response = conn.getresponse()
        assert response.status == 415 and response.getheader("Connection", "").lower() == "close"
        response.read()
    finally:
        conn.close()


def test_one_runner_per_instance(onnx_artifact):
    with pytest.raises(ServeConfigError, match="1 runners for 2 instances"):
        ModelServer([runtime.load(onnx_artifact)], config=ServeConfig(model_name="m", instances=2))


@pytest.mark.parametrize(("batch_range", "max_batch"), [((1, 16), 32), ((4, 32), 8), ((2, 32), 8)])
def test_an_engine_profile_must_cover_every_batch_triton_forms(onnx_artifact, batch_range, max_batch):
    runner = runtime.load(onnx_artifact)
    runner.batch_range = batch_range  # what a TensorRT runner reads from its engine's profile
    with pytest.raises(ServeConfigError, match=f"profile takes batches {batch_range[0]}..{batch_range[1]}"):
        ModelServer([runner], config=ServeConfig(model_name="m", max_batch=max_batch))
    runner.batch_range = (1, 16)
    assert ModelServer([runner], config=ServeConfig(model_name="m", max_batch=16)).runners == [runner]


def test_libpython_goes_first_on_the_library_path(monkeypatch):
    libdir = sysconfig.get_config_var("LIBDIR")
    assert library_path_with_libpython(None) == libdir
    assert library_path_with_libpython(f"/a:{libdir}:/b").split(":") == [libdir, "/a", "/b"]
    monkeypatch.setenv("LD_LIBRARY_PATH", "/a")
    monkeypatch.delenv("PYTRITON_NO_TENSORSTORE", raising=False)
    with triton_child_environment(instances=2):
        assert os.environ["LD_LIBRARY_PATH"].split(":") == [libdir, "/a"]
        assert os.environ["PYTRITON_NO_TENSORSTORE"] == "1"
    assert os.environ["LD_LIBRARY_PATH"] == "/a"
    assert "PYTRITON_NO_TENSORSTORE" not in os.environ
    with triton_child_environment(instances=1):
        assert "PYTRITON_NO_TENSORSTORE" not in os.environ


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_loadtest_script_reports_every_level(server, tmp_path, protocol):
    import json

    port = server.config.http_port if protocol == "http" else server.config.grpc_port
    out = tmp_path / "load.json"
    argv = [f"127.0.0.1:{port}", "--model-name", MODEL, "--protocol", protocol, "--concurrency", "1,4"]
    assert load_script("loadtest").main([*argv, "--duration", "2", "--max-requests", "12", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [level["concurrency"] for level in report["levels"]] == [1, 4]
    for level in report["levels"]:
        assert 0 < level["requests"] <= 12 and level["errors"] == 0
        lat = level["latency_ms"]
        assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert report["input"] == {"name": INPUT.name, "shape": [1, 3, SIZE, SIZE], "datatype": "FP32"}
    from runtime.bench_report import machine_info

    assert report["machine"]["cpu_model"] == machine_info()["cpu_model"]  # every report names its CPU
    assert "loadtest" in report["command"] and "--concurrency 1,4" in report["command"]  # and what produced it
    assert report["versions"].get("numpy")  # the package versions that decide the figures


def test_a_load_test_mixing_bad_requests_loses_no_good_one(server, tmp_path):
    import json

    out = tmp_path / "load.json"
    argv = [f"127.0.0.1:{server.config.http_port}", "--model-name", MODEL, "--concurrency", "4", "--bad-every", "2"]
    assert load_script("loadtest").main([*argv, "--duration", "3", "--max-requests", "40", "--json", str(out)]) == 0
    (level,) = json.loads(out.read_text())["levels"]
    assert level["errors"] == 0 and level["requests"] >= 10 and level["rejected"] >= 10, level


def test_loadtest_refuses_other_hosts_unknown_models_and_closed_ports(server, capsys):
    loadtest = load_script("loadtest")
    assert loadtest.main(["http://192.0.2.1:8000", "--model-name", MODEL, "--duration", "1"]) == 2
    assert "not a loopback address" in capsys.readouterr().err
    url = f"http://127.0.0.1:{server.config.http_port}"
    assert loadtest.main([url, "--model-name", "nope", "--duration", "1"]) == 2
    assert "nope" in capsys.readouterr().err
    closed = free_ports(1)[0]
    for protocol in ("http", "grpc"):
        assert loadtest.main([f"127.0.0.1:{closed}", "--model-name", MODEL, "--protocol", protocol]) == 2
        err = capsys.readouterr().err
        assert "is the server running" in err and err.count("\n") == 1, err


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_loadtest_refuses_a_batch_above_the_served_max_before_any_request(server, capsys, protocol):
    argv = [f"127.0.0.1:{server.config.http_port if protocol == 'http' else server.config.grpc_port}"]
    argv += ["--model-name", MODEL, "--protocol", protocol, "--batch-size", str(MAX_BATCH + 1), "--duration", "60"]
    assert load_script("loadtest").main(argv) == 2  # it ran the whole level, then exit 1 with a table of zeros
    err = capsys.readouterr().err
    assert f"a batch of {MAX_BATCH + 1} is above the max_batch_size {MAX_BATCH} that 'r18' is served with" in err


def test_loadtest_labels_need_images(capsys, tmp_path):
    (tmp_path / "labels.txt").write_text("a\n" * 1001)
    with pytest.raises(SystemExit) as refused:
        load_script("loadtest").main(["127.0.0.1:1", "--model-name", MODEL, "--labels", str(tmp_path / "labels.txt")])
    assert refused.value.code == 2 and "give --images too" in capsys.readouterr().err


def test_serve_script_refuses_a_bad_artifact(tmp_path, capsys):
    assert load_script("serve").main([str(tmp_path), "--http-port", "1"]) == 2
    assert "manifest.json" in capsys.readouterr().err


def test_serve_script_refuses_a_body_bound_without_the_gate(onnx_artifact, capsys):
    # --max-request-mb bounds the gate's reads: with --no-gate it was accepted and did nothing
    assert load_script("serve").main([str(onnx_artifact), "--no-gate", "--max-request-mb", "64"]) == 2
    err = capsys.readouterr().err
    assert "--max-request-mb bounds what the gate reads, and --no-gate removes the gate" in err and err.count("\n") == 1


def test_serve_script_refuses_an_unknown_backend(onnx_artifact, capsys):
    assert load_script("serve").main([str(onnx_artifact), "--backend", "onnxruntme"]) == 2
    assert "unknown backend" in capsys.readouterr().err


def test_a_load_test_duration_must_be_a_finite_positive_time():
    from runtime.kserve_client import LoadTestError
    from runtime.loadtest import LoadConfig

    for bad in (float("nan"), 0.0, 601.0):
        with pytest.raises(LoadTestError, match="duration must lie in"):
            LoadConfig(duration_s=bad)


def test_a_nan_request_fails_alone_on_http_and_gets_nan_on_grpc(server, reference):
    nan = random_batch(1, seed=11)
    nan[0, 0, 0, 0] = np.nan
    http, grpc = http_client(server), grpc_client(server)
    try:
        with pytest.raises(httpclient.InferenceServerException) as refused:
            http_infer(http, nan)
        assert refused.value.message() == "input 'input' holds 1 NaN/Inf values; fix the preprocessing or the data"
        assert np.isnan(grpc_infer(grpc, nan)).all()
        good = random_batch(2, seed=12)
        np.testing.assert_allclose(grpc_infer(grpc, good), reference(good), rtol=RTOL, atol=ATOL)
    finally:
        http.close()
        grpc.close()


class RefusesNonFinite:
    """A runner that refuses NaN input as OpenVINO's does, counting the rows it ran."""

    input_spec = TensorSpec("input", ("batch", 3, 2, 2))
    output_spec = TensorSpec("logits", ("batch", 4), layout="NC")
    hides_nonfinite_input, check_finite = True, False  # as runtime.backends.ov.OpenVINORunner

    def __init__(self):
        self.rows = 0

    def infer(self, batch):
        assert np.isfinite(batch).all(), "a non-finite row reached the runner"
        self.rows += len(batch)
        return batch.reshape(len(batch), -1)[:, :4].copy()


def test_one_nan_request_never_fails_the_requests_batched_with_it():
    from types import SimpleNamespace

    from runtime.serve import infer_function

    runner = RefusesNonFinite()
    requests = [
        np.random.default_rng(i).standard_normal((n, 3, 2, 2)).astype(np.float32) for i, n in enumerate([2, 1, 3])
    ]
    requests[1][0, 1, 1, 1] = np.inf
    responses = infer_function(runner)([SimpleNamespace(data={"input": x}) for x in requests])
    assert runner.rows == 5 and [r["logits"].shape for r in responses] == [(2, 4), (1, 4), (3, 4)]
    np.testing.assert_array_equal(responses[0]["logits"], requests[0].reshape(2, -1)[:, :4])
    np.testing.assert_array_equal(responses[2]["logits"], requests[2].reshape(3, -1)[:, :4])
    assert np.isnan(responses[1]["logits"]).all()


def test_a_runner_that_propagates_nan_gets_the_batch_as_it_is():
    from types import SimpleNamespace

    from runtime.serve import infer_function

    class Propagates(RefusesNonFinite):  # as ONNX Runtime: NaN in a row gives NaN in that row's logits only
        hides_nonfinite_input = False

        def infer(self, batch):
            self.batches = [*getattr(self, "batches", []), len(batch)]
            return batch.reshape(len(batch), -1)[:, :4].copy()

    runner = Propagates()
    x = np.zeros((3, 3, 2, 2), np.float32)
    x[1, 0, 0, 0] = np.nan
    responses = infer_function(runner)([SimpleNamespace(data={"input": x[:1]}), SimpleNamespace(data={"input": x[1:]})])
    assert runner.batches == [3]  # one call holding every row, the NaN one too
    assert np.isnan(responses[1]["logits"][0]).any() and np.isfinite(responses[0]["logits"]).all()


def test_a_dynamic_size_call_outside_the_models_sides_fails_in_one_line():
    """gRPC has no gate: a --dynamic-hw model's too small or too large images reach the infer callable, which refuses
    them before the runner, with no traceback for PyTriton to put into the client's error."""
    import traceback
    from types import SimpleNamespace

    from runtime.backends.base import check_batch
    from runtime.serve import RequestRefused, infer_function

    class DynamicSides(RefusesNonFinite):
        input_spec = TensorSpec("input", ("batch", 3, "height", "width"), min_side=33)

        def infer(self, batch):
            check_batch(batch, self.input_spec)  # as every runner does first
            self.rows += len(batch)
            return batch.reshape(len(batch), -1)[:, :4].copy()

    runner = DynamicSides()
    infer = infer_function(runner)
    for shape, says in (((1, 3, 8, 8), "must be at least 33×33 pixels"), ((1, 3, 1025, 64), "a side above 1024")):
        with pytest.raises(RequestRefused, match=says) as info:
            infer([SimpleNamespace(data={"input": np.zeros(shape, np.float32)})])
        formatted = "".join(traceback.format_exception(None, info.value, info.value.__traceback__))  # as PyTriton
        assert (
            formatted.count("\n") == 1
            and formatted.startswith("runtime.serve.RequestRefused: input")
            and "File " not in formatted
        )
    assert runner.rows == 0
    assert infer([SimpleNamespace(data={"input": np.ones((2, 3, 40, 33), np.float32)})])[0]["logits"].shape == (2, 4)
    assert infer([SimpleNamespace(data={"input": np.ones((1, 3, 1024, 33), np.float32)})])[0]["logits"].shape == (1, 4)


def test_an_unclean_triton_exit_is_reported_with_the_exit_timeout(onnx_artifact):
    server = ModelServer([runtime.load(onnx_artifact)], config=ServeConfig(model_name="m", exit_timeout_s=25))
    assert server.exit_problem() is None  # not yet stopped: unknown, not a failure
    server._on_triton_exit(True, 0)
    assert server.exit_problem() is None
    server._on_triton_exit(False, 134)  # "Exit timeout expired. Exiting immediately." then an abort
    assert "Triton exited with code 134" in server.exit_problem() and "--exit-timeout, 25 s" in server.exit_problem()
    for beyond in (-1, 26):  # PyTriton kills Triton 30 s after asking it to stop
        with pytest.raises(ServeConfigError, match=r"exit_timeout_s must lie in 0\.\.25"):
            ServeConfig(model_name="m", exit_timeout_s=beyond)


def test_triton_exiting_by_itself_while_serving_is_a_failure(onnx_artifact):
    """PyTriton's own exit callback stops its Triton object and leaves ours uncalled: serve_forever must see it."""
    from types import SimpleNamespace

    server = ModelServer([runtime.load(onnx_artifact)], config=ServeConfig(model_name="m"))
    stopped = []
    server._triton = SimpleNamespace(is_alive=lambda: False, stop=lambda: stopped.append(True))  # died meanwhile
    server.serve_forever()
    assert stopped == [True] and server._triton is None
    assert "Triton exited while serving, unasked" in server.exit_problem()


def test_a_model_process_killed_while_serving_stops_the_server(onnx_artifact):
    """Triton answered ready and failed every request after its Python backend stub was killed (the OOM killer)."""
    import signal

    http_port, grpc_port, metrics_port = free_ports(3)
    config = ServeConfig(model_name="m", http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port)
    server = ModelServer([runtime.load(onnx_artifact, threads=1)], config=config).start()
    try:
        (stub,) = server._stubs
        os.kill(stub.process.pid, signal.SIGKILL)
        server.serve_forever()  # returns once it sees the stub gone, having stopped Triton
    finally:
        server.stop()
    assert not server.is_running and f"Python backend process (pid {stub.process.pid}) ended while serving" in (
        server.exit_problem() or ""
    )


def test_a_second_server_on_the_same_ports_is_refused_at_once_while_the_first_holds_them(tmp_path, monkeypatch):
    """Started at the same moment, both passed the bind check; the loser waited 120 s for PyTriton's timeout."""
    import tempfile

    from runtime.serve_ports import reserve_ports

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # this test's lock files, not the machine's

    http, grpc, metrics = free_ports(3)
    first = ServeConfig(model_name="a", http_port=http, grpc_port=grpc, metrics_port=metrics)
    second = ServeConfig(model_name="b", http_port=free_ports(1)[0], grpc_port=grpc, metrics_port=free_ports(1)[0])
    with (
        reserve_ports(first),
        pytest.raises(
            ServeError, match=rf"another sge-deploy server .* on grpc_port {grpc}; choose free ports with --grpc-port$"
        ),
    ):
        reserve_ports(second)
    reserve_ports(second).close()  # free again once the first let go
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    (elsewhere / f"sge-deploy-ports-{os.getuid()}").write_text("a file where the folder would be")
    monkeypatch.setattr(tempfile, "tempdir", str(elsewhere))
    reserve_ports(first).close()  # no lock can be taken there: the bind check alone, as before the locks, no crash


def test_a_port_another_program_holds_is_named_with_its_flag():
    import socket

    from runtime.serve_ports import check_ports_free

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other:  # not an sge-deploy server: no lock file
        other.bind(("127.0.0.1", 0))
        other.listen()
        busy = other.getsockname()[1]
        http, metrics = free_ports(2)
        config = ServeConfig(model_name="m", http_port=http, grpc_port=busy, metrics_port=metrics)
        with pytest.raises(
            ServeError, match=rf"cannot bind 127\.0\.0\.1: grpc_port {busy} \(.*\); choose free ports with --grpc-port$"
        ):
            check_ports_free(config)


def test_a_host_that_is_not_this_machines_is_named_not_the_ports():
    import socket

    from runtime.serve_ports import check_ports_free

    with socket.socket() as probe:  # 192.0.2.1: TEST-NET-1, never a local address
        try:
            probe.bind(("192.0.2.1", 0))
        except OSError:
            pass
        else:
            pytest.skip("this machine binds addresses it does not have (net.ipv4.ip_nonlocal_bind)")
    http, grpc, metrics = free_ports(3)
    config = ServeConfig(model_name="m", host="192.0.2.1", http_port=http, grpc_port=grpc, metrics_port=metrics)
    with pytest.raises(ServeError, match=r"^--host 192\.0\.2\.1 is not an address of this machine \(.*\); give one"):
        check_ports_free(config)


def test_the_serve_command_exits_1_in_one_line_when_triton_did_not_stop_cleanly(onnx_artifact, monkeypatch, capsys):
    from runtime.commands import serve as command

    class Stopped:
        problem = "Triton exited with code 134: requests in flight when it stopped may have been dropped"

        def start(self):
            return self

        def serve_forever(self):
            pass

        def exit_problem(self):
            return self.problem

    server = Stopped()
    monkeypatch.setattr(command, "serve_artifact", lambda *args, **kwargs: server)
    assert command.main([str(onnx_artifact)]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the endpoint table, which goes to stderr too
    assert last.startswith("error: Triton exited with code 134: requests in flight")
    server.problem = None
    assert command.main([str(onnx_artifact)]) == 0  # a clean stop is the server's normal end


def test_the_stop_hint_says_sigterm_where_sigint_is_ignored(monkeypatch):
    import signal

    from runtime.commands.serve import stop_hint

    monkeypatch.setattr(signal, "getsignal", lambda sig: signal.SIG_IGN)  # `serve.py &` from a script
    pid = os.getpid()
    assert stop_hint() == f"SIGINT is ignored in this process (started in the background): stop it with kill {pid}."
    monkeypatch.setattr(signal, "getsignal", lambda sig: signal.default_int_handler)
    assert stop_hint().startswith("Ctrl+C (SIGINT) or SIGTERM")
