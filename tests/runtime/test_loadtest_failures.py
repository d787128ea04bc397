"""A load-test level counts every failed request, whatever its exception type; a malformed URL is one line."""

import http.client
import re

import numpy as np
import pytest

import runtime.loadtest as loadtest
from runtime.kserve_client import LoadTestError, loopback_address
from runtime.loadtest import LoadConfig, run_level


class ServerGoneClient:
    """A worker's client whose server closes the connection after two answers, as geventhttpclient reports it."""

    error_type = RuntimeError  # stands in for tritonclient's InferenceServerException

    def __init__(self, *args, **kwargs):
        self.answered = 0

    def infer(self):
        if self.answered >= 2:
            raise http.client.HTTPException("connection closed.")  # neither OSError nor the client's error type
        self.answered += 1

    def send_bad(self, number):
        return None

    def close(self):
        pass


def test_a_connection_closed_mid_run_is_counted_not_lost(monkeypatch):
    monkeypatch.setattr(loadtest, "KServeClient", ServerGoneClient)
    meta = {"inputs": [{"name": "input"}], "outputs": [{"name": "output"}]}
    config = LoadConfig(concurrency=(2,), duration_s=0.3, max_requests=50)
    level = run_level("127.0.0.1:1", "m", np.zeros((1, 3, 8, 8), np.float32), meta, concurrency=2, config=config)
    # every ticket is accounted for: one answer per client after its warm-up (the faster worker may take them all)
    assert 1 <= level.requests <= 2 and level.requests + level.errors == config.max_requests
    assert level.first_error == "HTTPException: connection closed."


def test_a_server_that_stopped_answering_ends_the_level_and_the_command(monkeypatch, capsys):
    from runtime.commands import loadtest as command

    monkeypatch.setattr(loadtest, "KServeClient", ServerGoneClient)
    monkeypatch.setattr(loadtest, "GONE_AFTER_S", 0.2)
    meta = {"inputs": [{"name": "input", "datatype": "FP32"}], "outputs": [{"name": "output"}], "max_batch_size": 8}
    monkeypatch.setattr(loadtest, "model_metadata", lambda *args, **kwargs: meta)
    monkeypatch.setattr(loadtest, "make_batch", lambda *args, **kwargs: np.zeros((1, 3, 8, 8), np.float32))
    config = LoadConfig(concurrency=(2, 4), duration_s=30.0, max_requests=10**9)
    report = loadtest.run_load("http://127.0.0.1:1", model="m", config=config)
    (level,) = report.levels  # the second level never ran: it would only count failures
    assert level.elapsed_s < 5 and level.stopped.startswith("every request failed for ")
    assert "in a row, after 2 answers; the first: HTTPException: connection closed.)" in level.stopped
    monkeypatch.setattr(command, "run_load", lambda *args, **kwargs: report)
    assert command.main(["http://127.0.0.1:1", "--model-name", "m", "--concurrency", "2", "--duration", "30"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: every request failed for ") and "still running" in err


def test_photographs_skip_a_server_that_went_away_and_nan_answers_are_one_line(monkeypatch, tmp_path, capsys):
    from runtime.commands import loadtest as command
    from runtime.loadtest import LevelResult, LoadReport

    image = tmp_path / "cat.png"
    image.write_bytes(b"png")  # never decoded: photo_batch is replaced
    photos = np.zeros((1, 3, 8, 8), np.float32)
    monkeypatch.setattr(command, "photo_batch", lambda *args, **kwargs: (photos, photos, 4))
    gone = LevelResult(2, 5, 40, 2.0, 2.5, 2.5, {"p50": 5.0}, first_error="closed", stopped="every request failed")
    machine = {"cpu_model": "x", "logical_cpus": 2, "note": ""}
    report = LoadReport("http://127.0.0.1:1", "m", LoadConfig(concurrency=(2,)), {}, [gone], machine)
    monkeypatch.setattr(command, "run_load", lambda *args, **kwargs: report)

    def no_server(*args, **kwargs):
        raise AssertionError("classified on a server that went away")

    monkeypatch.setattr(command, "classify_once", no_server)
    argv = ["http://127.0.0.1:1", "--model-name", "m", "--concurrency", "2", "--images", str(image)]
    assert command.main(argv) == 1
    assert capsys.readouterr().err.strip().endswith("error: every request failed")
    report.levels[0] = LevelResult(2, 5, 0, 2.0, 2.5, 2.5, {"p50": 5.0})
    monkeypatch.setattr(command, "classify_once", lambda *args, **kwargs: np.full((1, 4), np.nan, np.float32))
    assert command.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the server answered NaN/Inf logits for cat.png" in err


def test_an_http_test_of_a_port_that_does_not_speak_http_is_one_line():
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))

    def answer_like_grpc():  # an HTTP/2 SETTINGS frame, as a gRPC port sends to an HTTP/1.1 client
        for _ in range(3):
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(b"\x00\x00\x06\x04\x00\x00\x00\x00\x00\x00\x03\x00\x00\x00\x64")

    threading.Thread(target=answer_like_grpc, daemon=True).start()
    address = f"127.0.0.1:{listener.getsockname()[1]}"
    try:
        with pytest.raises(LoadTestError, match=r"does not answer in HTTP .*is it the gRPC port\?") as err:
            loadtest.model_metadata(address, "m", protocol="http")
    finally:
        listener.close()
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("url", ["http://127.0.0.1:99999", "http://[::1", "http://127.0.0.1:abc"])
def test_a_malformed_url_is_one_line(url):
    with pytest.raises(
        LoadTestError, match=rf"cannot read .*{re.escape(repr(url))}.*pass e\.g\. http://127\.0\.0\.1:8000"
    ) as err:
        loopback_address(url, protocol="http")
    assert "\n" not in str(err.value)


def test_an_address_of_the_other_protocol_is_one_line():
    assert loopback_address("grpc://127.0.0.1:8001", protocol="grpc") == "127.0.0.1:8001"
    assert loopback_address("127.0.0.1:8001", protocol="grpc") == "127.0.0.1:8001"  # no scheme: the protocol's
    for url, protocol in (("http://127.0.0.1:8000", "grpc"), ("grpc://127.0.0.1:8001", "http")):
        with pytest.raises(LoadTestError, match=rf"is not a {protocol}:// address .*--protocol"):
            loopback_address(url, protocol=protocol)


def test_load_test_percentiles_are_observed_latencies_as_the_benchmarks():
    from runtime.latency import trtexec_percentile
    from runtime.loadtest import percentiles

    latencies_s = [0.010, 0.020, 0.030, 0.040, 0.100]
    summary = percentiles(latencies_s)
    observed = {round(t * 1e3, 6) for t in latencies_s}
    assert all(round(summary[f"p{p}"], 6) in observed for p in (50, 90, 95, 99))  # numpy interpolated: p99 97.6 ms
    assert summary["p99"] == trtexec_percentile(sorted(t * 1e3 for t in latencies_s), 99) == 100.0
    assert percentiles([]) == {}


def test_percentiles_of_latencies_in_arrival_order():
    from runtime.loadtest import percentiles

    arrival = [0.040, 0.010, 0.100, 0.030, 0.020]  # requests finish in any order
    summary = percentiles(arrival)
    assert (summary["min"], summary["max"], summary["p50"]) == (10.0, 100.0, 30.0)
    assert summary["mean"] == pytest.approx(40.0)


class EveryThirdFailsClient(ServerGoneClient):
    """Answers two requests, fails the third, and so on (its warm-up request included)."""

    def infer(self):
        self.answered += 1
        if self.answered % 3 == 0:
            raise RuntimeError("model busy")


def test_throughput_counts_answered_requests_only(monkeypatch):
    monkeypatch.setattr(loadtest, "KServeClient", EveryThirdFailsClient)
    meta = {"inputs": [{"name": "input"}], "outputs": [{"name": "output"}]}
    config = LoadConfig(concurrency=(1,), duration_s=30, max_requests=30)
    batch = np.zeros((2, 3, 8, 8), np.float32)
    level = run_level("127.0.0.1:1", "m", batch, meta, concurrency=1, config=config)
    # one client, 30 tickets after its warm-up (call 1): calls 2..31 fail at 3, 6, ..., 30: 10 failures
    assert (level.requests, level.errors) == (20, 10) and level.first_error == "model busy"
    assert level.throughput_rps == pytest.approx(20 / level.elapsed_s)
    assert level.images_per_s == pytest.approx(2 * 20 / level.elapsed_s)


def test_a_level_with_failed_requests_makes_the_command_exit_1_in_one_line(monkeypatch, capsys):
    from runtime.commands import loadtest as command
    from runtime.loadtest import LevelResult, LoadReport

    config = LoadConfig(concurrency=(2,), duration_s=0.1)
    level = LevelResult(2, 10, 3, 1.0, 10.0, 10.0, {"p50": 5.0}, first_error="model busy")
    report = LoadReport(
        "http://127.0.0.1:1", "m", config, {}, [level], {"cpu_model": "x", "logical_cpus": 2, "note": ""}
    )
    monkeypatch.setattr(command, "run_load", lambda *args, **kwargs: report)
    assert command.main(["http://127.0.0.1:1", "--model-name", "m", "--concurrency", "2", "--duration", "0.1"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error: 3 requests failed; first: model busy" in err
    report.levels[0] = LevelResult(2, 10, 0, 1.0, 10.0, 10.0, {"p50": 5.0})
    assert command.main(["http://127.0.0.1:1", "--model-name", "m", "--concurrency", "2", "--duration", "0.1"]) == 0
