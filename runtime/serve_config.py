"""The serving options (``ServeConfig``, checked as a whole when made) and the serving errors: what
runtime/serve.py, its port checks (runtime/serve_ports.py) and the command line share, importing neither PyTriton
nor a runner."""

from dataclasses import dataclass
from typing import Any


class ServeError(RuntimeError):
    """The server could not start or is not serving the model (the message says what to do)."""


class ServeConfigError(ValueError):
    """A serving option is out of range."""


MAX_EXIT_TIMEOUT_S = 25  # PyTriton waits 30 s for Triton to stop, then kills it: leave it time to unload
MAX_REQUEST_MB = 16 << 10  # 16 GiB: the gate holds bodies in memory


@dataclass(frozen=True)
class ServeConfig:
    model_name: str
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    max_batch: int = 32
    queue_delay_us: int = 500
    instances: int = 1
    exit_timeout_s: int = 10  # how long Triton waits for in-flight requests when stopping
    log_verbose: int = 0
    gate: bool = True  # HTTP: refuse oversized and malformed requests before Triton sees them (serve_gate.py)
    max_request_mb: int = 256  # the gate's bound on one request body; twice it bounds the bodies held at once

    def __post_init__(self) -> None:
        problems = []
        if not self.model_name or not all(c.isalnum() or c in "._-" for c in self.model_name):
            problems.append(f"model name {self.model_name!r} may only hold letters, digits, '.', '_' and '-'")
        ports = {"http_port": self.http_port, "grpc_port": self.grpc_port, "metrics_port": self.metrics_port}
        for key, port in ports.items():
            if not 1 <= port <= 65535:
                problems.append(f"{key} must lie in 1..65535; got {port}")
        if len(set(ports.values())) != len(ports):
            problems.append(f"the HTTP, gRPC and metrics ports must differ; got {sorted(ports.values())}")
        if self.max_batch < 1:
            problems.append(f"max_batch must be ≥ 1; got {self.max_batch}")
        if self.queue_delay_us < 0:
            problems.append(f"queue_delay_us must be ≥ 0; got {self.queue_delay_us}")
        if self.instances < 1:
            problems.append(f"instances must be ≥ 1; got {self.instances}")
        if not 1 <= self.max_request_mb <= MAX_REQUEST_MB:
            problems.append(f"max_request_mb must lie in 1..{MAX_REQUEST_MB}; got {self.max_request_mb}")
        if not 0 <= self.exit_timeout_s <= MAX_EXIT_TIMEOUT_S:
            problems.append(
                f"exit_timeout_s must lie in 0..{MAX_EXIT_TIMEOUT_S} (PyTriton kills Triton 30 s after asking it to "
                f"stop); got {self.exit_timeout_s}"
            )
        if ":" in self.host:  # Triton's gRPC endpoint and PyTriton's readiness check take host:port unbracketed
            problems.append(f"IPv6 hosts are not supported; got {self.host!r}: use 127.0.0.1, or 0.0.0.0 for all IPv4")
        if problems:
            raise ServeConfigError("; ".join(problems))

    @property
    def urls(self) -> dict[str, str]:
        return {
            "http": f"http://{self.host}:{self.http_port}",
            "grpc": f"grpc://{self.host}:{self.grpc_port}",
            "metrics": f"http://{self.host}:{self.metrics_port}/metrics",
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "host": self.host,
            "http_port": self.http_port,
            "grpc_port": self.grpc_port,
            "metrics_port": self.metrics_port,
            "max_batch": self.max_batch,
            "queue_delay_us": self.queue_delay_us,
            "instances": self.instances,
            "exit_timeout_s": self.exit_timeout_s,
            "gate": self.gate,
            "max_request_mb": self.max_request_mb,
            "urls": self.urls,
        }
