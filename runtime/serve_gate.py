"""A gate in front of Triton's HTTP endpoint: what the model cannot serve is refused before anything is allocated.

Triton's HTTP front end sizes a request from the shape it declares: a 95-byte JSON body declaring
[100000, 3, 96, 96] makes it allocate and parse for many seconds and answer HTTP 500, and a truncated or garbage
body is a 500 too. The gate listens on the public HTTP port, Triton on a private loopback port behind it. For an
inference request it checks, from the headers and the request's JSON header alone: a declared Content-Length no
larger than the largest valid request or the server's own bound (else 413; bodies held at once stay within twice that
bound, else 503), parseable JSON, the input's name, datatype and rank, a batch of
1..max_batch, the fixed dimensions, and that the data (binary or JSON) holds exactly as many values as the shape
says; anything else gets HTTP 400 with one line saying why. What passes is forwarded byte for byte, under the
Content-Type of what it is (a valid JSON request sent as form-urlencoded, curl's default, crashed Triton); every other
endpoint (health, metadata, metrics live on their own port) is forwarded as it is. ``check_infer_request`` is the
pure check, tested without a server.
"""

import contextlib
import http.client
import http.server
import json
import logging
import math
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from export.artifacts import MAX_INPUT_SIDE, TensorSpec

logger = logging.getLogger(__name__)

MAX_JSON_HEADER = 64 << 10  # the JSON part of a binary request: names, shapes, parameters
SMALL_BODY = 1 << 20  # a body this small is not counted against the server's budget (hold): idle clients cannot
# starve ordinary requests; a larger one must arrive within BODY_DEADLINE_S + its size at BODY_MIN_RATE
BODY_DEADLINE_S, BODY_MIN_RATE = 30.0, float(1 << 20)
JSON_BYTES_PER_VALUE = 48  # the longest float in JSON text, its separator, and the indentation of pretty-printed JSON
KSERVE_DTYPES = {"float32": "FP32", "float16": "FP16", "float64": "FP64", "uint8": "UINT8", "int64": "INT64"}
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


class RequestRejected(ValueError):
    """A request the model cannot serve; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class RequestLimits:
    """What one inference request may hold: the model's input spec and the server's largest batch."""

    input: TensorSpec
    max_batch: int
    max_request_bytes: int | None = None  # the server's own bound on a body (serve --max-request-mb); None: none

    @property
    def datatype(self) -> str:
        return KSERVE_DTYPES.get(self.input.dtype, self.input.dtype.upper())

    @property
    def itemsize(self) -> int:
        return np.dtype(self.input.dtype).itemsize

    def max_values(self) -> int:
        dims = [d if isinstance(d, int) and d > 0 else MAX_INPUT_SIDE for d in self.input.shape[1:]]
        return self.max_batch * math.prod(dims)

    def max_body_bytes(self) -> int:
        """The largest body a valid request can have (JSON text of every value, or the binary form)."""
        return MAX_JSON_HEADER + self.max_values() * max(JSON_BYTES_PER_VALUE, self.itemsize)

    def body_limit(self) -> tuple[int, str]:
        """The largest body the gate reads, and what sets it: the model's largest valid request, or the server's
        own bound where that is lower (a --dynamic-hw model's batch of 32 at 1024² is 4.8 GB of JSON)."""
        model = self.max_body_bytes()
        if self.max_request_bytes is not None and self.max_request_bytes < model:
            cap = self.max_request_bytes
            return cap, f"this server reads at most {cap} bytes a request (serve --max-request-mb raises it)"
        return model, f"the largest valid request has {model}"


def check_infer_request(body: bytes, *, header_length: int | None, limits: RequestLimits) -> None:
    """Raise RequestRejected (400) unless ``body`` is an inference request this model can serve; pure."""
    if header_length is not None:
        if not 0 < header_length <= min(len(body), MAX_JSON_HEADER):
            raise RequestRejected(
                f"Inference-Header-Content-Length {header_length} does not fit the {len(body)}-byte body"
            )
        header_bytes, binary = body[:header_length], body[header_length:]
    else:
        header_bytes, binary = body, b""
    request = _strict_json(header_bytes)
    _check_request_fields(request)
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise RequestRejected(f"the request must hold 'inputs': a list with one input, {limits.input.name!r}")
    tensor = inputs[0]
    if tensor.get("name") != limits.input.name:
        got = str(tensor.get("name"))[:40]
        raise RequestRejected(f"unexpected input {got!r}; the model takes {limits.input.name!r}")
    if tensor.get("datatype") != limits.datatype:
        got = str(tensor.get("datatype"))[:20]
        raise RequestRejected(
            f"unexpected data-type {got!r} for input {limits.input.name!r}; expected {limits.datatype}"
        )
    count = _check_shape(tensor.get("shape"), limits)
    parameters = tensor.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise RequestRejected("input 'parameters' must be an object")
    if "binary_data_size" in parameters:
        size, expected = parameters["binary_data_size"], count * limits.itemsize
        if type(size) is not int or size != expected or len(binary) != expected:
            raise RequestRejected(
                f"the shape needs {expected} bytes of binary data; binary_data_size says {str(size)[:20]} and the "
                f"body holds {len(binary)}"
            )
        _check_finite(binary, limits)
        return
    if binary:
        raise RequestRejected("binary data follows the JSON header but no input declares binary_data_size")
    values = _count_values(tensor.get("data"), largest=_largest_value(limits))
    if values != count:
        raise RequestRejected(f"the shape needs {count} values; 'data' holds {values}")


def _check_finite(binary: bytes, limits: RequestLimits) -> None:
    """A float input's binary data (little-endian, as KServe's binary extension sends it) holds no NaN or Inf."""
    dtype = np.dtype(limits.input.dtype)
    if dtype.kind == "f":
        bad = int((~np.isfinite(np.frombuffer(binary, dtype=dtype.newbyteorder("<")))).sum())
        if bad:
            raise RequestRejected(
                f"input {limits.input.name!r} holds {bad} NaN/Inf values; fix the preprocessing or the data"
            )


def _largest_value(limits: RequestLimits) -> float:
    """The largest magnitude a JSON value may have: beyond a float input's range Triton stores it as Inf."""
    dtype = np.dtype(limits.input.dtype)
    return float(np.finfo(dtype).max) if dtype.kind == "f" else math.inf


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Python keeps a repeated key's last value, Triton's parser its first: a request could show the gate one input and
    # Triton another (one declaring a batch of 100 000)
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        repeated = next(key for key in keys if keys.count(key) > 1)
        raise RequestRejected(f"the request repeats the key {repeated[:40]!r}")
    return dict(pairs)


def _finite_number(text: str) -> float:
    """A JSON number or constant (NaN, Infinity) as Triton can hold it: finite, within double's range."""
    value = float(text)
    if not math.isfinite(value):
        raise RequestRejected(f"the request holds {text[:20]}, which JSON cannot carry")
    return value


def _strict_json(data: bytes) -> Any:
    """JSON as Triton reads it: UTF-8 only, no repeated keys, no number beyond double's range, no NaN/Infinity."""
    try:
        text = data.decode("utf-8")
        return json.loads(
            text,
            object_pairs_hook=_no_duplicate_keys,
            parse_constant=_finite_number,
            parse_float=_finite_number,
        )
    except (ValueError, RecursionError) as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise RequestRejected(f"the request is not valid JSON in UTF-8 ({str(err)[:80]})") from None


def _check_request_fields(request: Any) -> None:
    """The top-level fields Triton reads besides the input, typed as it expects them."""
    if not isinstance(request, dict):
        raise RequestRejected("the request must be a JSON object holding 'inputs'")
    if "id" in request and not isinstance(request["id"], str):
        raise RequestRejected("'id' must be a string")
    outputs = request.get("outputs", [])
    if not isinstance(outputs, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) and isinstance(o.get("parameters", {}), dict)
        for o in outputs
    ):
        raise RequestRejected("'outputs' must be a list of objects, each with a string 'name'")
    parameters = request.get("parameters", {})
    if not isinstance(parameters, dict):
        raise RequestRejected("'parameters' must be an object")
    for key, value in parameters.items():
        if key in ("timeout", "priority") and (type(value) is not int or value < 0):
            raise RequestRejected(f"parameter {key!r} must be a non-negative integer")
        if not isinstance(value, str | bool | int | float):
            raise RequestRejected(f"parameter {key!r} must be a string, a boolean or a number")


def _check_shape(shape: Any, limits: RequestLimits) -> int:
    spec = limits.input.shape
    if not isinstance(shape, list) or not all(type(d) is int for d in shape) or len(shape) != len(spec):
        got = str(shape)[:60]
        raise RequestRejected(f"unexpected shape {got} for input {limits.input.name!r}; expected {_example(limits)}")
    if not 1 <= shape[0] <= limits.max_batch:
        raise RequestRejected(f"inference request batch-size must be <= {limits.max_batch} and ≥ 1; got {shape[0]}")
    refusal = limits.input.side_refusal(*shape[2:]) if len(shape) == 4 else None
    if refusal:
        raise RequestRejected(refusal)
    for axis, (got, want) in enumerate(zip(shape[1:], spec[1:], strict=True), start=1):
        fixed = isinstance(want, int) and want > 0
        if got != want if fixed else not 1 <= got <= MAX_INPUT_SIDE:  # a fixed side is the graph's, whatever it is
            raise RequestRejected(
                f"unexpected shape {shape} for input {limits.input.name!r}; expected {_example(limits)} (axis {axis})"
            )
    return math.prod(shape)


def _example(limits: RequestLimits) -> list[Any]:
    return ["N", *limits.input.shape[1:]]


def _count_values(data: Any, *, largest: float = math.inf) -> int:
    """How many numbers a (nested) JSON list holds; anything but lists of numbers of magnitude ≤ ``largest`` is
    refused."""
    if not isinstance(data, list):
        raise RequestRejected("the input needs 'data' (a list of numbers) or binary data")
    count, stack = 0, [data]
    while stack:
        for item in stack.pop():
            if isinstance(item, list):
                stack.append(item)
            elif isinstance(item, int | float) and not isinstance(item, bool):
                if abs(item) > largest:
                    raise RequestRejected(f"'data' holds {str(item)[:24]}, beyond the input's range (±{largest:.4g})")
                count += 1
            else:
                raise RequestRejected(f"'data' must hold numbers only; found {type(item).__name__}")
    return count


def one_line_error(data: bytes) -> bytes:
    """Triton's JSON error body with PyTriton's traceback cut to its last line, the exception's own message (the
    traceback named the server's files and took 20 lines); any other body as it is."""
    try:
        answer = json.loads(data)
    except ValueError:
        return data
    error = answer.get("error") if isinstance(answer, dict) else None
    if not isinstance(error, str) or "Traceback (most recent call last)" not in error:
        return data
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    message = lines[-1].split(": ", 1)[-1] if lines else error
    return json.dumps({**answer, "error": message}).encode()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as clients expect from Triton
    disable_nagle_algorithm = True  # headers and body are two writes: Nagle + delayed ACK would add 40 ms
    timeout = 60  # a client that stops sending mid-request frees its thread
    server: "_GateServer"

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        self._held = 0
        try:
            self._check_and_forward()
        finally:
            if self._held:
                self.server.release(self._held)

    def _check_and_forward(self) -> None:
        content_type = None  # as the client sent it
        try:
            body = self._read_body()
            if self.command == "POST" and urlsplit(self.path).path.rstrip("/").endswith("/infer"):
                length = self.headers.get("Inference-Header-Content-Length")
                try:
                    header_length = int(length) if length is not None else None
                except ValueError:
                    got = length[:20]
                    raise RequestRejected(f"Inference-Header-Content-Length must be an integer; got {got!r}") from None
                check_infer_request(body, header_length=header_length, limits=self.server.limits)
                # what the checked body is, whatever the client called it: Triton 2.x crashed (SIGSEGV, the whole
                # server) on a valid JSON request of a few MB sent as curl's default form-urlencoded
                content_type = "application/json" if header_length is None else "application/octet-stream"
        except RequestRejected as err:
            self._reply(err.status, {"Content-Type": "application/json"}, json.dumps({"error": str(err)}).encode())
            return
        self._forward(body, content_type=content_type)

    def _refuse_unread(self, message: str, status: int) -> RequestRejected:
        self.close_connection = True  # the unread body must not be taken for the next request
        return RequestRejected(message, status)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise self._refuse_unread("chunked request bodies are not accepted; send Content-Length", 411)
        if self.headers.get("Content-Encoding", "identity").lower() != "identity":
            raise self._refuse_unread("compressed request bodies are not accepted; send them uncompressed", 415)
        declared = self.headers.get_all("Content-Length") or ["0"]
        if len(declared) != 1 or not declared[0].strip().isascii() or not declared[0].strip().isdigit():
            raise self._refuse_unread("Content-Length must be one decimal integer", 400)
        length = int(declared[0])
        server = self.server
        if length > server.body_limit:
            raise self._refuse_unread(f"the body declares {length} bytes; {server.body_limit_why}", 413)
        held = length if length > server.small_body else 0  # small bodies pass whatever large ones hold
        if held and not server.hold(held):
            raise self._refuse_unread("the server is reading other large requests; retry in a moment", 503)
        self._held = held
        body = self._read_exactly(length)
        if len(body) != length:
            raise self._refuse_unread(f"the body ended after {len(body)} of its {length} bytes", 400)
        return body

    def _read_exactly(self, length: int) -> bytes:
        """``length`` bytes or fewer (the client closed), within a deadline for the whole body: a client trickling a
        byte a minute would otherwise hold its share of the budget for ever (each receive has its own timeout)."""
        deadline = time.monotonic() + BODY_DEADLINE_S + length / BODY_MIN_RATE
        chunks, got = [], 0
        while got < length:
            chunk = self.rfile.read1(min(1 << 20, length - got))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
            if got < length and time.monotonic() > deadline:
                raise self._refuse_unread(f"the body arrived too slowly ({got} of {length} bytes); send it again", 408)
        return b"".join(chunks)

    def _forward(self, body: bytes, *, content_type: str | None = None) -> None:
        upstream = self.server.connection()
        # http.client sets Content-Length from the body it sends: the client's own header is not forwarded
        dropped = _HOP_BY_HOP | {"expect", "content-length"} | ({"content-type"} if content_type else set())
        headers = {k: v for k, v in self.headers.items() if k.lower() not in dropped}
        if content_type:
            headers["Content-Type"] = content_type
        try:
            upstream.request(self.command, self.path, body=body or None, headers=headers)
            response = upstream.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as err:
            self.server.drop_connection()
            logger.warning("Triton did not answer %s %s: %s", self.command, self.path, err)
            self._reply(502, {"Content-Type": "application/json"}, json.dumps({"error": "server unavailable"}).encode())
            return
        kept = {k: v for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP | {"content-length"}}
        self._reply(response.status, kept, one_line_error(data) if response.status >= 400 else data)

    def _reply(self, status: int, headers: dict[str, str], data: bytes) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)


class _GateServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = socket.SOMAXCONN  # socketserver's 5 drops connections in a burst of clients

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that resets or drops its connection is routine: one debug line (socketserver printed a
        17-line traceback to stderr for each); anything else one warning line."""
        err = sys.exc_info()[1]
        if isinstance(err, ConnectionError | TimeoutError):
            logger.debug("client %s: %s", client_address, err)
        else:
            logger.warning("client %s: %s: %s", client_address, type(err).__name__, err)

    def __init__(self, address: tuple[str, int], *, upstream: tuple[str, int], limits: RequestLimits) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)
        self.upstream, self.limits = upstream, limits
        self._local = threading.local()  # one keep-alive connection to Triton per handler thread
        self._lock = threading.Lock()
        self._clients: set[socket.socket] = set()  # open client connections, closed by close_all()
        self._upstreams: set[http.client.HTTPConnection] = set()
        self.body_limit, self.body_limit_why = limits.body_limit()  # per server, not per request
        self.small_body = min(SMALL_BODY, self.body_limit // 4)
        # large bodies held at once, from their reading to Triton's answer: at most two of the largest a request may be
        self._held, self._budget = 0, 2 * self.body_limit

    def hold(self, size: int) -> bool:
        """Count ``size`` bytes of body as held if the budget allows; False when it does not (the caller says 503)."""
        with self._lock:
            if self._held + size > self._budget:
                return False
            self._held += size
            return True

    def release(self, size: int) -> None:
        with self._lock:
            self._held -= size

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            self._clients.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._lock:
            self._clients.discard(request)
        super().shutdown_request(request)

    def close_all(self) -> None:
        """End every client's keep-alive connection and every connection to Triton: a stopped gate holds none (Triton
        would otherwise wait its whole exit timeout for them)."""
        with self._lock:
            clients, upstreams = list(self._clients), list(self._upstreams)
        for sock in clients:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for conn in upstreams:
            conn.close()

    def connection(self) -> http.client.HTTPConnection:
        if getattr(self._local, "conn", None) is None:
            self._local.conn = http.client.HTTPConnection(*self.upstream, timeout=120)
            with self._lock:
                self._upstreams.add(self._local.conn)
        return self._local.conn

    def drop_connection(self) -> None:
        conn, self._local.conn = getattr(self._local, "conn", None), None
        if conn is not None:
            with self._lock:
                self._upstreams.discard(conn)
            conn.close()


class RequestGate:
    """The gate on ``host:port`` in front of Triton's HTTP endpoint at ``upstream``; ``start()``/``stop()``."""

    def __init__(self, host: str, port: int, *, upstream: tuple[str, int], limits: RequestLimits) -> None:
        self._server = _GateServer((host, port), upstream=upstream, limits=limits)
        self._thread = threading.Thread(target=self._server.serve_forever, name="serve-gate", daemon=True)

    def start(self) -> "RequestGate":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._server.close_all()
        self._thread.join(timeout=5)
