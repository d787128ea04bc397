"""The serving gate's request check (no server): what Triton would allocate for, or answer with 500, is a 400."""

import contextlib
import http.client
import http.server
import json
import threading
from typing import ClassVar

import numpy as np
import pytest

from export.artifacts import TensorSpec
from runtime.infer_request_check import RequestLimits, RequestRejected, check_infer_request
from runtime.kserve_client import BAD_KINDS, bad_requests

LIMITS = RequestLimits(input=TensorSpec("input", ("batch", 3, 8, 8), "float32", "NCHW"), max_batch=4)
VALUES = 3 * 8 * 8


def json_body(shape, data, **extra):
    return json.dumps({"inputs": [{"name": "input", "shape": shape, "datatype": "FP32", "data": data, **extra}]})


def binary_body(shape, payload):
    header = json.dumps(
        {
            "inputs": [
                {"name": "input", "shape": shape, "datatype": "FP32", "parameters": {"binary_data_size": len(payload)}}
            ]
        }
    ).encode()
    return header + payload, len(header)


def test_good_requests_pass_in_json_and_binary_form():
    check_infer_request(json_body([2, 3, 8, 8], [0.5] * 2 * VALUES).encode(), header_length=None, limits=LIMITS)
    check_infer_request(json_body([1, 3, 8, 8], [[[0.0] * 8] * 8] * 3).encode(), header_length=None, limits=LIMITS)
    body, n = binary_body([4, 3, 8, 8], np.zeros((4, 3, 8, 8), np.float32).tobytes())
    check_infer_request(body, header_length=n, limits=LIMITS)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (json_body([100000, 3, 96, 96], [0]), "batch-size must be <= 4"),
        (json_body([5, 3, 8, 8], [0.5] * 5 * VALUES), "batch-size must be <= 4 and ≥ 1; got 5"),  # max + 1
        (json_body([0, 3, 8, 8], []), "batch-size must be <= 4 and ≥ 1; got 0"),
        (json_body([-1, 3, 8, 8], [0]), "batch-size"),
        (json_body([1, 3, 8, 9], [0] * 216), "unexpected shape"),
        (json_body([1, 3, 8], [0] * 24), "unexpected shape"),
        (json_body([1, 3, 8, True], [0] * 24), "unexpected shape"),
        (json_body([1, 3, 8, 8], [0, 1, 2]), "needs 192 values; 'data' holds 3"),
        (json_body([1, 3, 8, 8], ["x"] * VALUES), "numbers only"),
        (json_body([1, 3, 8, 8], None), "needs 'data'"),
        ('{"inputs": [{"name": "input", "sha', "not valid JSON"),
        ("\x00\x01garbage", "not valid JSON"),
        ("[1, 2]", "'inputs'"),
        (json.dumps({"inputs": [{"name": "x", "shape": [1, 3, 8, 8], "datatype": "FP32", "data": []}]}), "'x'"),
        (json_body([1, 3, 8, 8], [0] * VALUES).replace("FP32", "FP64"), "data-type"),
        ("[" * 100000 + "]" * 100000, "not valid JSON"),
        # Triton's parser keeps a repeated key's first value, Python its last: each would show them different inputs
        (
            json_body([20000, 3, 96, 96], [0])[:-1] + ', "inputs": ' + json_body([1, 3, 8, 8], [0] * VALUES)[11:],
            "repeats the key 'inputs'",
        ),
        (
            json_body([1, 3, 8, 8], [0] * VALUES).replace('"shape"', '"shape": [9999, 3, 8, 8], "shape"'),
            "repeats the key 'shape'",
        ),
        (json_body([1, 3, 8, 8], [0] * VALUES).replace('"data": [0', '"data": [1e400', 1), "JSON cannot carry"),
        (json_body([1, 3, 8, 8], [0] * VALUES).replace('"data": [0', '"data": [NaN', 1), "JSON cannot carry"),
        (json_body([1, 3, 8, 8], [0] * VALUES)[:-1] + ', "id": 5}', "'id' must be a string"),
        (json_body([1, 3, 8, 8], [0] * VALUES)[:-1] + ', "outputs": 5}', "'outputs' must be a list"),
        (json_body([1, 3, 8, 8], [0] * VALUES)[:-1] + ', "parameters": {"timeout": -5}}', "non-negative integer"),
    ],
    ids=lambda v: v[:24] if isinstance(v, str) else None,
)
def test_malformed_or_oversized_json_requests_are_400(body, says):
    with pytest.raises(RequestRejected) as info:
        check_infer_request(body.encode("latin-1"), header_length=None, limits=LIMITS)
    assert info.value.status == 400 and says in str(info.value)


def test_binary_requests_must_carry_exactly_the_declared_bytes():
    payload = np.zeros((1, 3, 8, 8), np.float32).tobytes()
    body, n = binary_body([1, 3, 8, 8], payload[:-4])  # short data
    with pytest.raises(RequestRejected, match="needs 768 bytes"):
        check_infer_request(body, header_length=n, limits=LIMITS)
    header, _ = binary_body([1, 3, 8, 8], payload)  # the declared size right, the body 4 bytes short or long
    header = header[: -len(payload)]
    for data in (payload[:-4], payload + b"\0" * 4):
        with pytest.raises(RequestRejected, match=r"binary_data_size says 768 and the body holds (764|772)"):
            check_infer_request(header + data, header_length=len(header), limits=LIMITS)
    body, n = binary_body([1, 3, 8, 8], payload)
    with pytest.raises(RequestRejected, match="does not fit"):
        check_infer_request(body, header_length=len(body) + 1, limits=LIMITS)


def test_the_largest_valid_body_bounds_what_is_read():
    assert LIMITS.max_body_bytes() < 1 << 20  # 4 × 192 values: a body declaring more gets 413 unread


def test_the_load_tests_malformed_requests_are_all_refused():
    bodies = bad_requests("input")
    assert [name for name, _ in bodies] == list(BAD_KINDS)
    for _, body in bodies:
        with pytest.raises(RequestRejected):
            check_infer_request(body, header_length=None, limits=LIMITS)


def test_a_body_that_is_not_utf8_is_refused():
    body = json_body([1, 3, 8, 8], [0] * VALUES).encode("utf-16")
    with pytest.raises(RequestRejected, match="not valid JSON in UTF-8"):
        check_infer_request(body, header_length=None, limits=LIMITS)


class Upstream(http.server.BaseHTTPRequestHandler):
    """Triton's place behind the gate: answers every request, and records each POST's Content-Type."""

    protocol_version = "HTTP/1.1"
    received: ClassVar[list[str | None]] = []

    def do_GET(self):
        self._answer(b"ok")

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        Upstream.received.append(self.headers.get("Content-Type"))
        self._answer(b"{}")

    def _answer(self, data):
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def gate_before_upstream(limits=LIMITS):
    """A gate on a free loopback port in front of ``Upstream``; yields (gate, client connection to the gate)."""
    from runtime.serve_gate import RequestGate
    from runtime.serve_ports import free_loopback_port

    Upstream.received = []
    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    port = free_loopback_port()
    gate = RequestGate("127.0.0.1", port, upstream=upstream.server_address, limits=limits).start()
    client = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        yield gate, client
    finally:
        client.close()
        gate.stop()
        upstream.shutdown()
        upstream.server_close()


def test_a_stopped_gate_keeps_no_client_or_upstream_connection():
    with gate_before_upstream() as (gate, client):
        client.request("GET", "/v2/health/ready")
        assert client.getresponse().read() == b"ok"  # the client and the gate's upstream connection stay open
        gate.stop()
        assert client.sock.recv(1) == b""  # closed by the gate, not left to its keep-alive
        upstreams = gate._server._upstreams
        assert upstreams and all(conn.sock is None for conn in upstreams)  # the one it opened, now closed


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_binary_data_is_400_before_triton(bad):
    """Behind the gate a NaN request never reaches a runner, nor the requests Triton would batch with it."""
    batch = np.zeros((2, 3, 8, 8), np.float32)
    batch[1, 2, 3, 4] = bad
    body, n = binary_body([2, 3, 8, 8], batch.tobytes())
    with pytest.raises(RequestRejected, match=r"input 'input' holds 1 NaN/Inf values; fix the preprocessing"):
        check_infer_request(body, header_length=n, limits=LIMITS)


def test_a_json_value_beyond_float32_is_400():  # Triton would store 1e39 as Inf
    data = [0.0] * (VALUES - 1) + [1e39]
    with pytest.raises(RequestRejected, match=r"'data' holds 1e\+39, beyond the input's range \(±3.403e\+38\)"):
        check_infer_request(json_body([1, 3, 8, 8], data).encode(), header_length=None, limits=LIMITS)
    check_infer_request(json_body([1, 3, 8, 8], [3e38] * VALUES).encode(), header_length=None, limits=LIMITS)


def test_a_triton_traceback_becomes_its_last_line():
    from runtime.serve_gate import one_line_error

    traceback = (
        'Model execute error: Traceback (most recent call last):\n  File "/srv/runtime/base.py", line 130, in infer\n'
        "    raise InputMismatchError(\n"
        "runtime.backends.base.InputMismatchError: input 'input' holds 1 NaN/Inf values\n"
    )
    answer = json.loads(one_line_error(json.dumps({"error": traceback}).encode()))
    assert answer == {"error": "input 'input' holds 1 NaN/Inf values"}
    plain = json.dumps({"error": "inference request batch-size must be <= 8"}).encode()
    assert one_line_error(plain) == plain and one_line_error(b"not json") == b"not json"


def test_a_client_resetting_its_connection_is_one_debug_line(caplog, capsys):
    from runtime.serve_gate import _GateServer

    gate = _GateServer(("127.0.0.1", 0), upstream=("127.0.0.1", 9), limits=LIMITS)
    try:
        with caplog.at_level("DEBUG", logger="runtime.serve_gate"):
            try:
                raise ConnectionResetError(104, "Connection reset by peer")
            except ConnectionResetError:
                gate.handle_error(None, ("127.0.0.1", 5000))
    finally:
        gate.server_close()
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("DEBUG", "client ('127.0.0.1', 5000): [Errno 104] Connection reset by peer")
    ]
    assert capsys.readouterr().err == ""  # socketserver's default printed a traceback here


def test_a_side_below_the_models_smallest_is_400():
    limits = RequestLimits(input=TensorSpec("input", ("batch", 3, "height", "width"), min_side=33), max_batch=4)
    refusal = r"must be at least 33×33 pixels for this model, the smallest square its export verified .*; got 32×64"
    with pytest.raises(RequestRejected, match=refusal):
        check_infer_request(json_body([1, 3, 32, 64], [0.0] * 3 * 32 * 64).encode(), header_length=None, limits=limits)
    check_infer_request(json_body([1, 3, 33, 33], [0.0] * 3 * 33 * 33).encode(), header_length=None, limits=limits)


def test_one_bound_on_a_symbolic_side_for_runners_the_gate_and_grpc():
    """TensorSpec.side_refusal is the one place: a symbolic side lies in min_side..1024 (the largest an export takes);
    a fixed side is the graph's own, whatever its size (a bare ONNX file may fix 2048)."""
    dynamic = TensorSpec("input", ("batch", 3, "height", "width"), min_side=33)
    assert dynamic.side_refusal(1024, 33) is None
    assert "has a side above 1024 (1025×64)" in dynamic.side_refusal(1025, 64)
    assert "at least 33×33" in dynamic.side_refusal(32, 64)
    assert TensorSpec("input", ("batch", 3, 2048, 2048)).side_refusal(2048, 2048) is None
    assert "above 1024" in TensorSpec("input", ("batch", 3, 2048, "width")).side_refusal(2048, 1025)
    fixed = RequestLimits(input=TensorSpec("input", ("batch", 3, 2048, 2048), "float32", "NCHW"), max_batch=1)
    body, length = binary_body([1, 3, 2048, 2048], np.zeros(3 * 2048 * 2048, np.float32).tobytes())
    check_infer_request(body, header_length=length, limits=fixed)  # the gate refused every request of such a graph
    wide = RequestLimits(input=TensorSpec("input", ("batch", 3, 2048, "width"), "float32", "NCHW"), max_batch=1)
    body, length = binary_body([1, 3, 2048, 1025], np.zeros(3 * 2048 * 1025, np.float32).tobytes())
    with pytest.raises(RequestRejected, match="above 1024"):
        check_infer_request(body, header_length=length, limits=wide)


@pytest.mark.parametrize("sent", ["application/x-www-form-urlencoded", None])
def test_a_checked_request_reaches_triton_under_the_content_type_of_what_it_is(sent):
    headers = {"Content-Type": sent} if sent else {}  # curl -d sends form-urlencoded
    with gate_before_upstream() as (_, client):
        client.request("POST", "/v2/models/m/infer", body=json_body([1, 3, 8, 8], [0.5] * VALUES), headers=headers)
        answer = client.getresponse()
        assert answer.status == 200 and answer.read() == b"{}"
        body, length = binary_body([1, 3, 8, 8], np.zeros(VALUES, np.float32).tobytes())
        binary_headers = {**headers, "Inference-Header-Content-Length": str(length)}
        client.request("POST", "/v2/models/m/infer", body=body, headers=binary_headers)
        assert client.getresponse().status == 200
    assert Upstream.received == ["application/json", "application/octet-stream"]


def test_the_server_bounds_one_body_and_the_bodies_held_at_once():
    """A --dynamic-hw model's largest valid JSON request is 4.8 GB: the server's own bound (serve --max-request-mb)
    caps one body, and twice it caps the large bodies read at once (a third large one is 503, retry; a small one is
    read as ever)."""
    import socket
    import time

    dynamic = TensorSpec("input", ("batch", 3, "height", "width"), "float32", "NCHW")
    assert RequestLimits(input=dynamic, max_batch=32).max_body_bytes() > 4_800_000_000
    capped = RequestLimits(input=dynamic, max_batch=32, max_request_bytes=256 << 20)
    assert capped.body_limit() == (
        256 << 20,
        f"this server reads at most {256 << 20} bytes a request (serve --max-request-mb raises it)",
    )
    assert LIMITS.body_limit()[0] == LIMITS.max_body_bytes()  # a small model's own bound is lower: it stays
    tiny = RequestLimits(input=dynamic, max_batch=1, max_request_bytes=4096)
    with gate_before_upstream(tiny) as (gate, client):
        client.request("POST", "/v2/models/m/infer", body=b"x" * 5000)
        answer = client.getresponse()
        assert answer.status == 413 and b"at most 4096 bytes a request (serve --max-request-mb" in answer.read()
        port = client.port
        slow = []
        for _ in range(2):  # two bodies of the largest size, still arriving: the budget is full
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 4096\r\n\r\n{")
            slow.append(sock)
        deadline = time.monotonic() + 5
        while gate._server._held < 8192 and time.monotonic() < deadline:
            time.sleep(0.01)
        third = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        third.request("POST", "/v2/models/m/infer", body=b"{" + b" " * 2047)
        answer = third.getresponse()
        assert answer.status == 503 and b"retry in a moment" in answer.read()  # a third large body waits its turn
        third.close()
        small = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        small.request("POST", "/v2/models/m/infer", body=b"{}")
        assert small.getresponse().status == 400  # a small body is read and checked whatever the large ones hold
        small.close()
        for sock in slow:
            sock.close()  # each read ends short: 400, and its bytes are released
        deadline = time.monotonic() + 5
        while gate._server._held and time.monotonic() < deadline:
            time.sleep(0.01)
        assert gate._server._held == 0


def test_a_body_trickling_in_past_its_deadline_is_408_and_releases_its_share(monkeypatch):
    import socket
    import time

    import runtime.serve_gate as serve_gate

    monkeypatch.setattr(serve_gate, "BODY_DEADLINE_S", 0.3)
    monkeypatch.setattr(serve_gate, "BODY_MIN_RATE", 1e12)
    dynamic = TensorSpec("input", ("batch", 3, "height", "width"), "float32", "NCHW")
    with gate_before_upstream(RequestLimits(input=dynamic, max_batch=1, max_request_bytes=4096)) as (gate, client):
        sock = socket.create_connection(("127.0.0.1", client.port))
        sock.sendall(b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 4096\r\n\r\n{")
        time.sleep(0.6)  # past the deadline: the next byte to arrive ends the read
        sock.sendall(b" ")  # (nothing after it: a send to the closed connection would reset it)
        sock.settimeout(5)
        answer = b""
        while chunk := sock.recv(4096):  # headers and body are two writes: read to the gate's close
            answer += chunk
        sock.close()
        assert answer.startswith(b"HTTP/1.1 408") and b"arrived too slowly" in answer
        assert gate._server._held == 0
