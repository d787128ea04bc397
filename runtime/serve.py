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

PyTriton runs the model's Python backend stubs as children of ``tritonserver``; runtime/pytriton_startup.py sets what
they need from their environment (this interpreter's libpython first on ``LD_LIBRARY_PATH``; PyTriton's socket
transport for several instances) and says why, and tells a start lost to PyTriton's start-up race between instances,
which ``start`` tries again, from a real load failure.
"""

import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from export.artifacts import TensorSpec
from runtime.backends.base import BackendUnavailableError, InputMismatchError, Runner
from runtime.pytriton_startup import LOAD_ATTEMPTS, handshake_race, triton_child_environment
from runtime.serve_config import ServeConfig, ServeConfigError, ServeError
from runtime.serve_ports import check_ports_free, free_loopback_port, reserve_ports
from runtime.triton_processes import Stub, clean_up_after, find_stubs, stub_died

logger = logging.getLogger(__name__)

MONITOR_PERIOD_S = 1.0  # how often serve_forever checks that Triton is still alive


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
        """Start Triton and return once the model is ready; a load lost to PyTriton's handshake race (below) is
        started again, up to ``LOAD_ATTEMPTS`` times in all."""
        if self._triton is not None:
            raise ServeError("the server is already running; stop() it first")
        attempt = 1
        while True:
            try:
                return self._start_once()
            except Exception as err:  # _start_once has stopped everything it started
                if attempt == LOAD_ATTEMPTS or not handshake_race(err):
                    raise
            attempt += 1
            logger.warning(
                "Triton could not load %r: its instances' start-up handshake raced (PyTriton, a busy machine); "
                "starting again (attempt %d of %d)",
                self.config.model_name,
                attempt,
                LOAD_ATTEMPTS,
            )

    def _start_once(self) -> "ModelServer":
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
        triton_http = (c.host, c.http_port) if not c.gate else ("127.0.0.1", free_loopback_port())
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
