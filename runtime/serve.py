"""Local serving: a real Triton Inference Server, started through PyTriton, hosting a runtime runner.

The server speaks the KServe v2 inference protocol over HTTP and gRPC, reports Prometheus metrics, answers the
health endpoints (``/v2/health/live``, ``/v2/health/ready``) and the model metadata (input and output names,
datatypes and shapes), and batches concurrent requests dynamically (up to ``max_batch`` rows, waiting at most
``queue_delay_us`` for more). Each of ``instances`` model instances owns one runner. Triton checks every request
against the model's input spec before it is queued, so a wrong shape, a wrong dtype or a batch above the maximum
gets an error response and never reaches the runner; the server stays up. On HTTP a gate (runtime/serve_gate.py)
stands in front of Triton and refuses, before anything is allocated, a body larger than the largest valid request
(413) and a request whose JSON, shape or data size is wrong (400); Triton itself would allocate what a tiny body
declares and answer such requests with 500. ``gate=False`` exposes Triton's HTTP port directly.

PyTriton runs the model's Python backend stubs as children of ``tritonserver``; ``triton_child_environment`` sets
what they need from their environment (this interpreter's libpython first on ``LD_LIBRARY_PATH``; PyTriton's socket
transport, which makes multi-instance start-up reliable) and says why.
"""

import contextlib
import errno
import logging
import os
import socket
import sysconfig
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from export.artifacts import TensorSpec
from runtime.backends.base import BackendUnavailableError, InputMismatchError, Runner
from runtime.triton_processes import Stub, clean_up_after, find_stubs, stub_died

logger = logging.getLogger(__name__)


class ServeError(RuntimeError):
    """The server could not start or is not serving the model (the message says what to do)."""


class ServeConfigError(ValueError):
    """A serving option is out of range."""


class RequestRefused(ValueError):
    """Why the requests of one model call cannot run, for the client in one line.

    PyTriton answers a failed call with the exception formatted with its traceback, which put the server's file
    paths and 25 lines into a gRPC client's error; this exception has no traceback to format."""

    @property
    def __traceback__(self) -> None:
        return None

    @__traceback__.setter
    def __traceback__(self, value: object) -> None:
        pass


MONITOR_PERIOD_S = 1.0  # how often serve_forever checks that Triton is still alive
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


def library_path_with_libpython(current: str | None) -> str:
    """``LD_LIBRARY_PATH`` with this interpreter's library directory first (pure; ``current`` may be None)."""
    libdir = sysconfig.get_config_var("LIBDIR")
    rest = [p for p in (current or "").split(os.pathsep) if p and p != libdir]
    return os.pathsep.join([libdir, *rest]) if libdir else os.pathsep.join(rest)


@contextlib.contextmanager
def triton_child_environment(*, instances: int) -> Iterator[dict[str, str]]:
    """The environment PyTriton hands to ``tritonserver`` and its Python backend stubs, set while the server starts.

    PyTriton builds the child's environment from this process's environment (and reads the transport switch at
    bind time), so this is the one place where the project writes environment variables; the previous values are
    restored once the server is up.

    - ``LD_LIBRARY_PATH``: this interpreter's libpython first. The stub links the system libpython; when this
      interpreter is another build, model load fails with
      ``'_thread.RLock' object has no attribute '_recursion_count'``.
    - ``PYTRITON_NO_TENSORSTORE=1`` when ``instances > 1``: requests and responses travel between the stubs and
      this process over PyTriton's socket transport instead of its shared-memory tensor store. With the tensor
      store, instance 0 spawns a store process before it opens the handshake socket that the other instances wait
      on for only one second, so on a busy machine model load fails with ``Timeout occurred while waiting for config
      file``. A single instance keeps the tensor store, which the load test measured as the faster of the two
      (README: Serving).
    """
    libdir = sysconfig.get_config_var("LIBDIR")
    if not libdir or not any(Path(libdir).glob("libpython3*.so*")):
        logger.warning("no shared libpython in %s; Triton's Python backend stub may fail to load the model", libdir)
    wanted = {"LD_LIBRARY_PATH": library_path_with_libpython(os.environ.get("LD_LIBRARY_PATH"))}
    if instances > 1:
        wanted["PYTRITON_NO_TENSORSTORE"] = "1"
    previous = {key: os.environ.get(key) for key in wanted}
    os.environ.update(wanted)
    try:
        yield wanted
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def import_pytriton() -> Any:
    try:
        import pytriton.triton
    except ImportError as err:
        raise BackendUnavailableError("serving needs PyTriton: pip install 'sge-deploy[serve]'") from err
    return pytriton


def triton_tensor(spec: TensorSpec) -> Any:
    """A PyTriton tensor for ``spec``: shape without the batch axis, symbolic dimensions as -1."""
    from pytriton.model_config import Tensor

    if not spec.shape or not (isinstance(spec.shape[0], str) or spec.shape[0] == -1):
        raise ServeConfigError(
            f"tensor {spec.name!r} has shape {spec.shape} without a dynamic batch axis; re-export with a dynamic batch"
        )
    dims = tuple(d if isinstance(d, int) else -1 for d in spec.shape[1:])
    return Tensor(name=spec.name, dtype=np.dtype(spec.dtype), shape=dims)


def infer_function(runner: Runner) -> Callable[[list[Any]], list[dict[str, np.ndarray]]]:
    """PyTriton callable for one model instance: the requests Triton batched → one runner call → one response each.

    A request whose input holds NaN or Inf gets NaN logits, as ONNX Runtime gives it. A runner that refuses
    non-finite input (OpenVINO always, any with ``check_finite``) never sees such a row: PyTriton answers a failed call
    with one error for every request in the batch, so one such request failed the others batched with it. A runner
    that propagates NaN row by row gets the batch as it is, with no extra pass over it. (The HTTP gate refuses a
    non-finite request before Triton with 400; gRPC has no gate.)

    A ``--dynamic-hw`` model takes sides from its smallest up to the largest an export takes; the runner refuses
    others before it allocates (``TensorSpec.side_refusal``). Triton batches only requests of one shape, so such a
    call fails whole, in one line (``RequestRefused``)."""
    input_name, output_name = runner.input_spec.name, runner.output_spec.name
    classes = runner.output_spec.shape[1:]
    refuses_nonfinite = runner.hides_nonfinite_input or runner.check_finite

    def infer(requests: list[Any]) -> list[dict[str, np.ndarray]]:
        inputs = [request.data[input_name] for request in requests]
        batch = np.concatenate(inputs) if len(inputs) > 1 else inputs[0]
        try:
            return run(batch, inputs)
        except InputMismatchError as err:  # e.g. a side below the model's smallest: one line, not a traceback
            raise RequestRefused(str(err)) from None

    def run(batch: np.ndarray, inputs: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
        finite = np.isfinite(batch.reshape(len(batch), -1)).all(axis=1) if refuses_nonfinite else None
        if finite is None or finite.all():
            out = runner.infer(batch)
        else:
            if not all(isinstance(d, int) and d > 0 for d in classes):
                raise RequestRefused(f"input {input_name!r} holds NaN/Inf values; fix the preprocessing or the data")
            out = np.full((len(batch), *classes), np.nan, dtype=np.dtype(runner.output_spec.dtype))
            if finite.any():
                out[finite] = runner.infer(batch[finite])
        ends = np.cumsum([len(x) for x in inputs])[:-1]
        return [{output_name: part} for part in np.split(out, ends)]

    return infer


def _free_loopback_port() -> int:
    """A loopback port free right now, for Triton's HTTP endpoint behind the gate."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


PORT_FLAGS = {"http_port": "--http-port", "grpc_port": "--grpc-port", "metrics_port": "--metrics-port"}


def reserve_ports(config: ServeConfig) -> contextlib.ExitStack:
    """A lock per port (a file under the temp directory), held while the server lives; closing the stack frees them.

    Two servers started at the same moment on the same ports both passed ``check_ports_free``; the loser's Triton
    exited at once, and PyTriton waited 120 s for it before an internal error. Servers of this project now take the
    locks first and the second one fails at once. (Other programs can still take a port in the moment before Triton
    binds it.)"""
    import fcntl
    import tempfile

    folder = Path(tempfile.gettempdir()) / f"sge-deploy-ports-{os.getuid()}"  # one user's servers: no permissions
    stack, held = contextlib.ExitStack(), []
    try:
        for key in PORT_FLAGS:
            port = getattr(config, key)
            try:
                folder.mkdir(mode=0o700, exist_ok=True)
                fd = os.open(folder / f"{port}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as err:  # an unwritable temp directory: the bind check alone, as before the locks
                logger.debug("no port lock for %s (%s)", port, err)
                continue
            stack.callback(os.close, fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                held.append(key)
        if held:
            ports = "; ".join(f"{key} {getattr(config, key)}" for key in held)
            flags = ", ".join(PORT_FLAGS[key] for key in held)
            raise ServeError(
                f"another sge-deploy server is starting or serving on {ports}; choose free ports with {flags}"
            )
    except BaseException:
        stack.close()
        raise
    return stack


def check_ports_free(config: ServeConfig) -> None:
    """Fail before Triton starts, naming the flag to change, when a port is taken."""
    taken = []
    for key in PORT_FLAGS:
        port = getattr(config, key)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            # as Triton and the gate bind: a closing connection's TIME_WAIT does not make the port taken
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((config.host, port))
            except OSError as err:
                if err.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):  # the address, not the port
                    raise ServeError(
                        f"--host {config.host} is not an address of this machine ({err.strerror}); give one of its "
                        "own, 127.0.0.1 for this machine only or 0.0.0.0 for every interface"
                    ) from None
                taken.append((key, f"{key} {port} ({err.strerror})"))
    if taken:
        flags = ", ".join(PORT_FLAGS[key] for key, _ in taken)
        raise ServeError(f"cannot bind {config.host}: {'; '.join(t for _, t in taken)}; choose free ports with {flags}")


class ModelServer:
    """A Triton Inference Server serving ``runners`` (one per model instance) under ``config.model_name``.

    ``with ModelServer(runners, config=...) as server:`` starts the server and returns once the model is ready;
    leaving the block stops Triton and deactivates the runners.
    """

    def __init__(self, runners: Sequence[Runner], *, config: ServeConfig) -> None:
        if len(runners) != config.instances:
            raise ServeConfigError(f"got {len(runners)} runners for {config.instances} instances; pass one each")
        specs = {(r.input_spec, r.output_spec) for r in runners}
        if len(specs) != 1:
            raise ServeConfigError("all instances' runners must have the same input and output specs")
        batch_range = getattr(runners[0], "batch_range", None)  # a TensorRT engine's optimisation profile
        if batch_range is not None and (batch_range[0] > 1 or config.max_batch > batch_range[1]):
            raise ServeConfigError(
                f"the engine's profile takes batches {batch_range[0]}..{batch_range[1]}; Triton forms batches "
                f"1..{config.max_batch}: serve with --max-batch {batch_range[1]} (or less), from an engine whose "
                "profile starts at 1"
            )
        self.runners = list(runners)
        self.config = config
        self._triton: Any = None
        self._gate: Any = None
        self._port_locks: contextlib.ExitStack | None = None
        self.triton_exit_code: int | None = None  # how tritonserver last ended (0: cleanly), once it has
        self.exited_while_serving = False  # Triton stopped by itself, not because it was asked to
        self._stubs: list[Stub] = []  # the model instances' Python backend processes (runtime/triton_processes.py)
        self.dead_stub: Stub | None = None  # one of them ended while serving: Triton still said ready
        self.cleaned_up: list[str] = []  # what the last stop removed that Triton left behind

    @property
    def input_spec(self) -> TensorSpec:
        return self.runners[0].input_spec

    @property
    def output_spec(self) -> TensorSpec:
        return self.runners[0].output_spec

    @property
    def is_running(self) -> bool:
        return self._triton is not None and self._triton.is_alive()

    def start(self) -> "ModelServer":
        if self._triton is not None:
            raise ServeError("the server is already running; stop() it first")
        pytriton = import_pytriton()
        from pytriton.model_config import DynamicBatcher, ModelConfig

        try:
            self._port_locks = reserve_ports(self.config)
            check_ports_free(self.config)
            for runner in self.runners:
                runner.activate()
        except BaseException:
            self.stop()  # frees the ports, closes what activated
            raise
        c = self.config
        triton_http = (c.host, c.http_port) if not c.gate else ("127.0.0.1", _free_loopback_port())
        triton_config = pytriton.triton.TritonConfig(
            http_address=triton_http[0],
            http_port=triton_http[1],
            grpc_address=c.host,
            grpc_port=c.grpc_port,
            metrics_address=c.host,
            metrics_port=c.metrics_port,
            allow_metrics=True,
            exit_timeout_secs=c.exit_timeout_s,
            log_verbose=c.log_verbose,
        )
        try:
            with triton_child_environment(instances=c.instances):
                self._triton = pytriton.triton.Triton(config=triton_config)
                self._triton.bind(
                    model_name=c.model_name,
                    infer_func=[infer_function(r) for r in self.runners],
                    inputs=[triton_tensor(self.input_spec)],
                    outputs=[triton_tensor(self.output_spec)],
                    config=ModelConfig(
                        max_batch_size=c.max_batch,
                        batcher=DynamicBatcher(max_queue_delay_microseconds=c.queue_delay_us),
                    ),
                    strict=True,
                )
                self._triton.run()
            self._watch_exit()
            if c.gate:
                self._gate = self._start_gate(upstream=triton_http)
            self._check_ready()
        except BaseException:
            # while tritonserver lives its stubs are below this process: found now, cleaned up by stop() if left
            self._stubs = find_stubs(grpc_port=c.grpc_port)
            self.stop()
            raise
        self._stubs = find_stubs(grpc_port=c.grpc_port)
        logger.info("serving %s on %s", c.model_name, ", ".join(f"{k} {v}" for k, v in c.urls.items()))
        return self

    def _watch_exit(self) -> None:
        """Record how tritonserver ends: an exit timeout that expires with requests in flight makes it exit at once
        (and it has aborted there), which a stop must not report as clean. PyTriton tells only its own callbacks,
        on an object it keeps private; without it the exit code stays unknown (None)."""
        server = getattr(self._triton, "_triton_server", None)
        if server is not None and hasattr(server, "register_on_exit"):
            server.register_on_exit(self._on_triton_exit)

    def _on_triton_exit(self, success: bool, exit_code: int) -> None:
        self.triton_exit_code = 0 if success else exit_code or 1

    def exit_problem(self) -> str | None:
        """Why the last stop was not clean (Triton exited unasked, or with a failing code), in one line; None when it
        was or is unknown."""
        if self.exited_while_serving:
            return "Triton exited while serving, unasked; its log above says why (every request failed from then on)"
        if self.dead_stub is not None:
            return (
                f"the model's Python backend process (pid {self.dead_stub.process.pid}) ended while serving (killed, "
                "out of memory?): Triton still answered ready but failed every request, so the server stopped"
            )
        code = self.triton_exit_code
        if not code:
            return None
        return (
            f"Triton exited with code {code}: requests in flight when it stopped may have been dropped (they get "
            f"--exit-timeout, {self.config.exit_timeout_s} s, to finish) or it failed; its log above says which"
        )

    def _start_gate(self, *, upstream: tuple[str, int]) -> Any:
        from runtime.serve_gate import RequestGate, RequestLimits

        limits = RequestLimits(
            input=self.input_spec, max_batch=self.config.max_batch, max_request_bytes=self.config.max_request_mb << 20
        )
        return RequestGate(self.config.host, self.config.http_port, upstream=upstream, limits=limits).start()

    def _check_ready(self) -> None:
        import tritonclient.http

        address = f"{self.config.host}:{self.config.http_port}"
        with contextlib.closing(tritonclient.http.InferenceServerClient(address)) as client:
            if not client.is_model_ready(self.config.model_name):
                raise ServeError(
                    f"Triton started but model {self.config.model_name!r} is not ready; "
                    "the Triton log above says why (run with log_verbose=1 for more)"
                )

    def serve_forever(self) -> None:
        """Block until Triton exits (a failure: ``exit_problem`` says so) or the process gets Ctrl+C or SIGTERM (both
        arrive as KeyboardInterrupt, runtime.cli.run_main); then stop."""
        if self._triton is None:
            raise ServeError("start() the server before serve_forever()")
        try:  # PyTriton's own serve() would stop Triton first, while the gate still forwarded to it
            while self._triton.is_alive():
                time.sleep(MONITOR_PERIOD_S)
                self.dead_stub = stub_died(self._stubs)
                if self.dead_stub is not None:
                    logger.error("the model's Python backend process %d ended; stopping", self.dead_stub.process.pid)
                    return
            logger.error("Triton exited; stopping")
            self.exited_while_serving = True  # PyTriton's own exit callback left ours uncalled: no code to read
        except KeyboardInterrupt:
            logger.info("stopping: the gate first, then Triton")
        finally:
            self.stop()

    def stop(self) -> None:
        try:
            if self._gate is not None:
                self._gate.stop()
                self._gate = None
            if self._triton is not None:
                self._triton.stop()
                self._triton = None
            if self._stubs:  # what a crashed or aborted Triton left running or on disk
                stubs, self._stubs = self._stubs, []
                self.cleaned_up = clean_up_after(stubs)
                for phrase in self.cleaned_up:
                    logger.warning("after Triton stopped: %s", phrase)
        finally:
            for runner in self.runners:
                runner.deactivate()
            self._release_ports()

    def _release_ports(self) -> None:
        if self._port_locks is not None:
            self._port_locks.close()
            self._port_locks = None

    def describe(self) -> dict[str, Any]:
        return {
            **self.config.to_dict(),
            "input": self.input_spec.to_dict(),
            "output": self.output_spec.to_dict(),
            "runner": self.runners[0].describe(),
        }

    def __enter__(self) -> "ModelServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_artifact(
    artifact: str | Path,
    *,
    config: ServeConfig,
    backend: str = "onnxruntime",
    load_options: Mapping[str, Any] | None = None,
) -> ModelServer:
    """A (not yet started) server for ``artifact``: one runner per instance from ``runtime.load``."""
    from runtime import load, open_source

    source = open_source(artifact)  # verify the artifact's hashes once, not once per instance
    runners = [load(source, backend=backend, **dict(load_options or {})) for _ in range(config.instances)]
    return ModelServer(runners, config=config)
