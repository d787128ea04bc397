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
endpoint (health, metadata, metrics live on their own port) is forwarded as it is. The checks themselves are
runtime/infer_request_check.py's, pure and tested without a server.
"""

import contextlib
import http.client
import http.server
import json
import logging
import socket
import sys
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from runtime.infer_request_check import RequestLimits, RequestRejected, check_infer_request

logger = logging.getLogger(__name__)

SMALL_BODY = 1 << 20  # a body this small is not counted against the server's budget (hold): idle clients cannot
# starve ordinary requests; a larger one must arrive within BODY_DEADLINE_S + its size at BODY_MIN_RATE
BODY_DEADLINE_S, BODY_MIN_RATE = 30.0, float(1 << 20)
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


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
