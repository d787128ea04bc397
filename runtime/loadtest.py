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

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from runtime.bench_report import machine_info
from runtime.kserve_client import (
    KServeClient,
    LoadTestError,
    loopback_address,
    make_batch,
    model_metadata,
)

logger = logging.getLogger(__name__)

PROTOCOLS = ("http", "grpc")
MAX_BATCH_SIZE = 1024  # images per request: above any server's --max-batch here, and bounded in client memory
PERCENTILES = (50, 90, 95, 99)


# a level stops when this many requests in a row failed over at least this long: the server has gone or fails
# everything (a restart or a brief overload answers again within that time)
GONE_AFTER_FAILURES, GONE_AFTER_S = 20, 2.0


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


def run_level(
    address: str, model: str, batch: np.ndarray, meta: dict[str, Any], *, concurrency: int, config: LoadConfig
) -> LevelResult:
    """N workers in a closed loop until the time or the request budget runs out."""
    clients = [
        KServeClient(address, model, batch, meta, protocol=config.protocol, timeout_s=config.request_timeout_s)
        for _ in range(concurrency)
    ]
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

    def work(client: KServeClient) -> None:
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
