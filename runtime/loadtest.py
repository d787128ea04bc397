"""Load report for a KServe v2 server (Triton): throughput and latency percentiles per concurrency level.

Like Triton's ``perf_analyzer`` in its concurrency mode: for each level N, N workers keep one request in flight
each (closed loop) for a fixed time or until a request budget is spent, whichever comes first; the report gives
completed requests per second, images per second and p50/p90/p95/p99 latency of the successful requests, measured
on the client with ``time.perf_counter()`` after one warm-up request per worker. Each worker owns its client
(tritonclient's HTTP client is not thread-safe). Targets are restricted to loopback addresses: this is a tool for
measuring one's own server, not for loading someone else's.

With ``bad_every=k`` (HTTP) every k-th request of each worker is a malformed one (a tiny body declaring a huge
batch, truncated JSON, garbage, negative dimensions, too little data, in turn): each must be answered 4xx
(counted as ``rejected``), while every good request must still succeed; anything else counts as an error.
"""

import http.client
import ipaddress
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from runtime.bench_report import machine_info

logger = logging.getLogger(__name__)

PROTOCOLS = ("http", "grpc")
MAX_BATCH_SIZE = 1024  # images per request: above any server's --max-batch here, and bounded in client memory
PERCENTILES = (50, 90, 95, 99)
DTYPES = {"FP32": np.float32, "FP16": np.float16, "FP64": np.float64, "UINT8": np.uint8, "INT64": np.int64}


# a level stops when this many requests in a row failed over at least this long: the server has gone or fails
# everything (a restart or a brief overload answers again within that time)
GONE_AFTER_FAILURES, GONE_AFTER_S = 20, 2.0


class LoadTestError(ValueError):
    """The load test cannot run as asked (the message says what to change)."""


@dataclass(frozen=True)
class LoadConfig:
    concurrency: tuple[int, ...] = (1, 4, 16)
    duration_s: float = 10.0
    max_requests: int = 100_000  # per level: the count bound beside the time bound
    batch_size: int = 1
    protocol: str = "http"
    request_timeout_s: float = 30.0
    seed: int = 0
    bad_every: int = 0  # HTTP: every k-th request of each worker is malformed (0: none)

    def __post_init__(self) -> None:
        problems = []
        if not self.concurrency or any(c < 1 for c in self.concurrency):
            problems.append(f"concurrency levels must be ≥ 1; got {list(self.concurrency)}")
        if max(self.concurrency, default=0) > 256:
            problems.append(f"concurrency above 256 is not supported; got {max(self.concurrency)}")
        if not 0 < self.duration_s <= 600:  # NaN fails too
            problems.append(f"duration must lie in (0, 600] seconds; got {self.duration_s}")
        if self.max_requests < 1:
            problems.append(f"max_requests must be ≥ 1; got {self.max_requests}")
        if not 1 <= self.batch_size <= MAX_BATCH_SIZE:
            problems.append(f"batch_size must lie in 1..{MAX_BATCH_SIZE}; got {self.batch_size}")
        if self.bad_every < 0 or (self.bad_every and self.protocol != "http"):
            problems.append(f"bad_every must be ≥ 0 and needs protocol http; got {self.bad_every} ({self.protocol})")
        if self.protocol not in PROTOCOLS:
            problems.append(f"protocol must be one of {', '.join(PROTOCOLS)}; got {self.protocol!r}")
        if problems:
            raise LoadTestError("; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return {
            "concurrency": list(self.concurrency),
            "duration_s": self.duration_s,
            "max_requests": self.max_requests,
            "batch_size": self.batch_size,
            "protocol": self.protocol,
            "request_timeout_s": self.request_timeout_s,
            "bad_every": self.bad_every,
        }


@dataclass(frozen=True)
class LevelResult:
    concurrency: int
    requests: int  # successful
    errors: int
    elapsed_s: float
    throughput_rps: float
    images_per_s: float
    latency_ms: dict[str, float]  # mean, p50, p90, p95, p99, min, max
    first_error: str | None = None
    rejected: int = 0  # malformed requests (bad_every) answered 4xx, as they must be
    stopped: str | None = None  # why the level ended before its time (the server stopped answering)

    def to_dict(self) -> dict[str, Any]:
        return {
            "concurrency": self.concurrency,
            "requests": self.requests,
            "errors": self.errors,
            "elapsed_s": round(self.elapsed_s, 3),
            "throughput_rps": round(self.throughput_rps, 2),
            "images_per_s": round(self.images_per_s, 2),
            "latency_ms": {k: round(v, 3) for k, v in self.latency_ms.items()},
            "first_error": self.first_error,
            "rejected": self.rejected,
            "stopped": self.stopped,
        }


@dataclass
class LoadReport:
    url: str
    model: str
    config: LoadConfig
    input: dict[str, Any]
    levels: list[LevelResult] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "model": self.model,
            "config": self.config.to_dict(),
            "input": self.input,
            "levels": [level.to_dict() for level in self.levels],
            "machine": self.machine,
        }


def loopback_address(url: str, *, protocol: str) -> str:
    """``host:port`` for tritonclient from ``url`` (with or without a scheme); refuse non-loopback hosts."""
    example = "grpc://127.0.0.1:8001" if protocol == "grpc" else "http://127.0.0.1:8000"
    try:
        parts = urlsplit(url if "://" in url else f"{protocol}://{url}")
        host, port = parts.hostname, parts.port  # .port raises on "99999" or "abc"
    except ValueError as err:
        raise LoadTestError(f"cannot read {url!r} ({err}); pass e.g. {example}") from None
    if host is None or port is None:
        raise LoadTestError(f"cannot read host and port from {url!r}; pass e.g. {example}")
    if parts.scheme != protocol:  # http://...:8000 with --protocol grpc sent gRPC to the HTTP port
        raise LoadTestError(
            f"{url!r} is not a {protocol}:// address and the load test speaks {protocol} (--protocol): pass the "
            f"server's {protocol} address, as serve prints it"
        )
    if host != "localhost":
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise LoadTestError(
                f"{host} is not a loopback address; the load test only targets servers on this machine "
                "(127.0.0.1, ::1 or localhost)"
            )
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def percentiles(latencies_s: Sequence[float]) -> dict[str, float]:
    """Latency summary in milliseconds (empty when no request succeeded); pure. Percentiles as the benchmark's
    (runtime/latency.py: trtexec's nearest rank, an observed latency, as perf_analyzer reports too), not numpy's
    interpolation between two requests."""
    from runtime.latency import trtexec_percentile

    if not latencies_s:
        return {}
    ms = np.sort(np.asarray(latencies_s, dtype=np.float64) * 1e3)
    summary = {"mean": float(ms.mean()), "min": float(ms[0]), "max": float(ms[-1])}
    for p in PERCENTILES:
        summary[f"p{p}"] = float(trtexec_percentile(ms, p))
    return summary


class _Client:
    """One worker's tritonclient client and its prepared request."""

    def __init__(self, address: str, model: str, batch: np.ndarray, meta: dict[str, Any], config: LoadConfig):
        self.protocol = config.protocol
        self.model = model
        self.address, self.input_name = address, meta["inputs"][0]["name"]
        self.timeout = config.request_timeout_s
        if self.protocol == "http":
            import tritonclient.http as client_module

            self.client = client_module.InferenceServerClient(
                address, connection_timeout=self.timeout, network_timeout=self.timeout
            )
            outputs = [client_module.InferRequestedOutput(o["name"], binary_data=True) for o in meta["outputs"]]
        else:
            import tritonclient.grpc as client_module

            self.client = client_module.InferenceServerClient(address)
            outputs = [client_module.InferRequestedOutput(o["name"]) for o in meta["outputs"]]
        tensor = client_module.InferInput(meta["inputs"][0]["name"], list(batch.shape), meta["inputs"][0]["datatype"])
        tensor.set_data_from_numpy(batch)
        self.inputs, self.outputs = [tensor], outputs
        self.error_type = client_module.InferenceServerException

    def send_bad(self, number: int) -> str | None:
        """Send the ``number``-th kind of malformed request; None if it was refused with 4xx, else what went wrong."""
        import http.client

        name, body = bad_requests(self.input_name)[number % len(BAD_KINDS)]
        host, port = self.address.rsplit(":", 1)
        conn = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=self.timeout)
        try:
            conn.request("POST", f"/v2/models/{self.model}/infer", body=body)
            status = conn.getresponse().status
        except (OSError, http.client.HTTPException) as err:
            return f"malformed request {name!r}: {err}"
        finally:
            conn.close()
        return None if 400 <= status < 500 else f"malformed request {name!r} got HTTP {status}, not 4xx"

    def infer(self) -> None:
        if self.protocol == "http":
            self.client.infer(self.model, self.inputs, outputs=self.outputs)
        else:
            self.client.infer(self.model, self.inputs, outputs=self.outputs, client_timeout=self.timeout)

    def close(self) -> None:
        self.client.close()


BAD_KINDS = ("huge-batch", "truncated-json", "garbage", "negative-dims", "short-data")


def bad_requests(input_name: str) -> list[tuple[str, bytes]]:
    """One malformed inference body of each kind in ``BAD_KINDS``; pure."""
    import json

    def body(shape: list[int], data: list[float]) -> bytes:
        return json.dumps({"inputs": [{"name": input_name, "shape": shape, "datatype": "FP32", "data": data}]}).encode()

    return [
        ("huge-batch", body([100000, 3, 96, 96], [0.0])),
        ("truncated-json", body([1, 3, 8, 8], [0.0])[:30]),
        ("garbage", b"\x00\x01 not json"),
        ("negative-dims", body([-1, 3, 8, 8], [0.0])),
        ("short-data", body([1, 3, 8, 8], [0.0, 1.0])),
    ]


def model_metadata(address: str, model: str, *, protocol: str) -> dict[str, Any]:
    """The model's inputs and outputs as ``{"inputs": [{name, datatype, shape}], "outputs": [...]}``."""
    if protocol == "http":
        import tritonclient.http as client_module
    else:
        import tritonclient.grpc as client_module
    from tritonclient.utils import InferenceServerException

    client = client_module.InferenceServerClient(address)
    as_json = {"as_json": True} if protocol == "grpc" else {}
    try:
        ready = client.is_model_ready(model)
        meta = client.get_model_metadata(model, **as_json) if ready else {}
        config = client.get_model_config(model, **as_json) if ready else {}
    except (InferenceServerException, OSError) as err:
        raise LoadTestError(
            f"cannot reach {protocol}://{address} ({err}); is the server running on that port?"
        ) from err
    except http.client.HTTPException as err:  # geventhttpclient's parse error: an answer that is not HTTP
        raise LoadTestError(
            f"{address} does not answer in HTTP ({type(err).__name__}); is it the gRPC port? give the server's HTTP "
            "port, or a grpc:// URL to test gRPC"
        ) from err
    finally:
        client.close()
    if not ready:
        raise LoadTestError(f"model {model!r} is not ready on {address}; check the name and the server log")
    # gRPC's JSON form gives dims (and max_batch_size) as strings, and wraps the config in "config"
    tensors = {k: [{**t, "shape": [int(d) for d in t["shape"]]} for t in meta[k]] for k in ("inputs", "outputs")}
    return tensors | {"max_batch_size": int(config.get("config", config).get("max_batch_size", 0))}


def classify_once(url: str, *, model: str, batch: np.ndarray, protocol: str = "http") -> np.ndarray:
    """One request of ``batch`` to ``model``; the first output (the logits) as an array."""
    address = loopback_address(url, protocol=protocol)
    meta = model_metadata(address, model, protocol=protocol)
    client = _Client(address, model, batch, meta, LoadConfig(concurrency=(1,), protocol=protocol))
    try:
        if protocol == "http":
            result = client.client.infer(model, client.inputs, outputs=client.outputs)
        else:
            result = client.client.infer(model, client.inputs, outputs=client.outputs, client_timeout=client.timeout)
    except (client.error_type, OSError) as err:
        raise LoadTestError(f"the server refused the classification request: {err}") from err
    finally:
        client.close()
    return result.as_numpy(meta["outputs"][0]["name"])


def make_batch(meta: dict[str, Any], *, batch_size: int, seed: int) -> np.ndarray:
    """Random input for the model's (first) input: the batch axis set to ``batch_size``; pure given ``seed``."""
    if len(meta["inputs"]) != 1:
        raise LoadTestError(f"the load test drives single-input models; this one has {len(meta['inputs'])} inputs")
    spec = meta["inputs"][0]
    shape = list(spec["shape"])
    if not shape or shape[0] != -1:
        raise LoadTestError(f"input {spec['name']!r} has shape {shape} without a batch axis; serve with batching")
    if any(d < 0 for d in shape[1:]):
        raise LoadTestError(f"input {spec['name']!r} has dynamic dimensions {shape}; the load test needs fixed ones")
    if spec["datatype"] not in DTYPES:
        raise LoadTestError(f"input datatype {spec['datatype']} is not supported (one of {', '.join(DTYPES)})")
    rng = np.random.default_rng(seed)
    return rng.standard_normal([batch_size, *shape[1:]]).astype(DTYPES[spec["datatype"]])


def run_level(
    address: str, model: str, batch: np.ndarray, meta: dict[str, Any], *, concurrency: int, config: LoadConfig
) -> LevelResult:
    """N workers in a closed loop until the time or the request budget runs out."""
    clients = [_Client(address, model, batch, meta, config) for _ in range(concurrency)]
    client_error_types = tuple({c.error_type for c in clients})
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []
    rejected = [0]
    window = {"begin": 0.0, "deadline": 0.0, "issued": 0}

    def open_window() -> None:  # runs once, when every worker is warm
        window["begin"] = time.perf_counter()
        window["deadline"] = window["begin"] + config.duration_s

    barrier = threading.Barrier(concurrency, action=open_window)
    # failures since the last answer: how many, when the first came and what it was
    streak: dict[str, Any] = {"failures": 0, "since": 0.0, "first": ""}
    stopped: list[str] = []

    def failed(problem: str) -> None:  # with the lock held
        errors.append(problem)
        now = time.perf_counter()
        if streak["failures"] == 0:
            streak.update(since=now, first=problem)
        streak["failures"] += 1
        quiet = now - streak["since"]
        if not stopped and streak["failures"] >= GONE_AFTER_FAILURES and quiet >= GONE_AFTER_S:
            stopped.append(
                f"every request failed for {quiet:.1f} s ({streak['failures']} in a row, after {len(latencies)} "
                f"answers; the first: {streak['first']}): the server stopped answering or fails everything; check "
                "that it is still running and its log"
            )
            window["deadline"] = now  # no more tickets: the level ends, and the command with it

    def answered(elapsed: float) -> None:  # with the lock held
        latencies.append(elapsed)
        streak["failures"] = 0

    def take_ticket() -> bool:
        with lock:
            if window["issued"] >= config.max_requests or time.perf_counter() >= window["deadline"]:
                return False
            window["issued"] += 1
            return True

    # Any exception of a request is its failure, counted: a connection the server closes mid-run raises
    # geventhttpclient's HTTPConnectionClosed (an http.client.HTTPException, neither OSError nor tritonclient's
    # error), which used to end the worker uncounted and leave a clean-looking, shortened level.
    def failure(err: Exception) -> str:
        return str(err) if isinstance(err, client_error_types) else f"{type(err).__name__}: {err}"

    def work(client: _Client) -> None:
        try:
            client.infer()  # warm-up, not counted
        except Exception as err:
            with lock:
                errors.append(f"warm-up: {failure(err)}")
        try:
            barrier.wait(timeout=config.request_timeout_s * 2)
        except threading.BrokenBarrierError:
            with lock:
                errors.append("a worker's warm-up request did not finish in time")
            return
        sent = 0
        while take_ticket():
            sent += 1
            if config.bad_every and sent % config.bad_every == 0:
                try:
                    problem = client.send_bad(sent // config.bad_every)
                except Exception as err:
                    problem = f"malformed request {sent // config.bad_every}: {failure(err)}"
                with lock:
                    if problem is None:
                        rejected[0] += 1
                    else:
                        errors.append(problem)
                continue
            t0 = time.perf_counter()
            try:
                client.infer()
            except Exception as err:
                with lock:
                    failed(failure(err))
                continue
            elapsed = time.perf_counter() - t0
            with lock:
                answered(elapsed)

    threads = [threading.Thread(target=work, args=(c,), daemon=True) for c in clients]
    try:
        for t in threads:
            t.start()
        limit = time.perf_counter() + 2 * config.request_timeout_s + config.duration_s + config.request_timeout_s
        for t in threads:
            t.join(timeout=max(0.0, limit - time.perf_counter()))
        end = time.perf_counter()
        if any(t.is_alive() for t in threads):
            raise LoadTestError(f"a worker did not finish within {config.request_timeout_s}s of the deadline")
    finally:
        for c in clients:
            c.close()
    elapsed = max(end - window["begin"], 1e-9) if window["begin"] else 0.0
    ok = len(latencies)
    return LevelResult(
        concurrency=concurrency,
        requests=ok,
        errors=len(errors),
        elapsed_s=elapsed,
        throughput_rps=ok / elapsed if elapsed else 0.0,
        images_per_s=ok * batch.shape[0] / elapsed if elapsed else 0.0,
        latency_ms=percentiles(latencies),
        first_error=errors[0] if errors else None,
        rejected=rejected[0],
        stopped=stopped[0] if stopped else None,
    )


def run_load(url: str, *, model: str, config: LoadConfig = LoadConfig(), batch: np.ndarray | None = None) -> LoadReport:
    """Drive ``model`` at ``url`` at each concurrency level in turn; return the report. Every request carries
    ``batch`` (for example preprocessed photographs), or seeded random input of the model's shape."""
    address = loopback_address(url, protocol=config.protocol)
    meta = model_metadata(address, model, protocol=config.protocol)
    largest, size = meta["max_batch_size"], config.batch_size if batch is None else len(batch)
    if 0 < largest < size:
        raise LoadTestError(
            f"a batch of {size} is above the max_batch_size {largest} that {model!r} is served with: use "
            f"--batch-size {largest} or less, or serve with a larger --max-batch"
        )
    if batch is None:
        batch = make_batch(meta, batch_size=config.batch_size, seed=config.seed)
    report = LoadReport(
        url=url,
        model=model,
        config=config,
        input={
            "name": meta["inputs"][0]["name"],
            "shape": list(batch.shape),
            "datatype": meta["inputs"][0]["datatype"],
        },
        machine={
            **machine_info(),  # the CPU model, cores, load at the start (other work on the machine), OS, Python
            "note": "client and server share this machine's CPUs",
        },
    )
    for concurrency in config.concurrency:
        level = run_level(address, model, batch, meta, concurrency=concurrency, config=config)
        logger.info(
            "concurrency %d: %d requests, %.1f req/s, p50 %.1f ms",
            concurrency,
            level.requests,
            level.throughput_rps,
            level.latency_ms.get("p50", float("nan")),
        )
        report.levels.append(level)
        if level.stopped:  # the next levels would only count failures
            break
    return report
