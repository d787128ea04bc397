"""Serve an exported artifact with a real Triton Inference Server (KServe v2 over HTTP and gRPC, Prometheus metrics).

    sge-deploy serve ARTIFACT [--backend onnxruntime] [--model-name NAME] [--http-port 8000]
        [--grpc-port 8001] [--metrics-port 8002] [--max-batch 32] [--queue-delay-us 500] [--instances N]
        [--exit-timeout 10] [--threads N] [--host 127.0.0.1] [--max-request-mb 256]

Runs until Ctrl+C (SIGINT) or SIGTERM (SIGTERM alone where a script started it in the background, with SIGINT
ignored), then exits 0; 1 when Triton did not stop cleanly.
"""

import argparse
import logging
import os
import sys

from rich.table import Table

from export.artifacts import ArtifactError, load_manifest
from runtime import UnknownBackendError
from runtime.backends.base import BackendUnavailableError
from runtime.cli import EXIT_FAILED, EXIT_INPUT, make_console, make_parser, options_given, run_main
from runtime.cli_flags import add_backends, add_model_name, add_threads, artifact_directory, precision_option
from runtime.serve import ServeConfig, ServeConfigError, ServeError, serve_artifact


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = make_parser(__doc__.split("\n\n")[0], prog=prog)
    parser.add_argument("artifact", type=artifact_directory, help="artifact directory (from sge-deploy export)")
    add_backends(parser, default="onnxruntime", one=True, help="runtime backend that runs the model")
    add_model_name(parser, help="name clients use (default: the artifact's model name)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 for every interface)")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--max-batch", type=int, default=32, help="largest batch the dynamic batcher forms")
    parser.add_argument("--queue-delay-us", type=int, default=500, help="longest wait for a fuller batch (µs)")
    parser.add_argument("--instances", type=int, default=1, help="model instances, one runner each")
    parser.add_argument(
        "--exit-timeout",
        type=int,
        default=10,
        help="seconds Triton gives requests in flight to finish when stopped (0..25, default 10)",
    )
    add_threads(parser, help="CPU threads per runner (default: the backend's own)")
    parser.add_argument(
        "--max-request-mb",
        type=int,
        default=256,
        help="largest HTTP request body the gate reads (MiB, default 256); it holds at most twice this at once",
    )
    parser.add_argument(
        "--no-gate",
        dest="gate",
        action="store_false",
        help="expose Triton's HTTP port directly, without the gate that refuses oversized/malformed requests (README)",
    )
    parser.add_argument("--precision", default="fp32", help="fp32 (= f32), bf16 (openvino), int8 (README)")
    parser.add_argument("-v", "--verbose", action="store_true", help="Triton's verbose log")
    return parser


def main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    return run_main(lambda a: _main(a, prog), argv)


def _main(argv: list[str] | None, prog: str | None) -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    backend = args.backends[0]
    console = make_console(stderr=True)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if not args.gate and options_given(parser, args, ["max_request_mb"]):
            raise ServeConfigError(
                "--max-request-mb bounds what the gate reads, and --no-gate removes the gate: drop one of them"
            )
        model_name = args.model_name or load_manifest(args.artifact, verify=False).model
        config = ServeConfig(
            model_name=model_name,
            host=args.host,
            http_port=args.http_port,
            grpc_port=args.grpc_port,
            metrics_port=args.metrics_port,
            max_batch=args.max_batch,
            queue_delay_us=args.queue_delay_us,
            instances=args.instances,
            exit_timeout_s=args.exit_timeout,
            log_verbose=1 if args.verbose else 0,
            gate=args.gate,
            max_request_mb=args.max_request_mb,
        )
        options = {"threads": args.threads} if args.threads is not None else {}
        options.update(precision_option(args.precision))
        server = serve_artifact(args.artifact, config=config, backend=backend, load_options=options)
        server.start()
    except (
        ArtifactError,
        ServeConfigError,
        ServeError,
        BackendUnavailableError,
        UnknownBackendError,
        ValueError,
    ) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INPUT
    table = Table(title=f"serving {model_name} ({backend}, {args.instances} instance(s))")
    table.add_column("endpoint")
    table.add_column("address")
    for key, url in config.urls.items():
        table.add_row(key, url)
    table.add_row("health", f"{config.urls['http']}/v2/health/ready")
    table.add_row("metadata", f"{config.urls['http']}/v2/models/{model_name}")
    table.add_row("infer", f"{config.urls['http']}/v2/models/{model_name}/infer")
    console.print(table)
    console.print(stop_hint())
    server.serve_forever()  # Ctrl-C or SIGTERM (run_main raises it as Terminated) stops it: its normal end
    problem = server.exit_problem()
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_FAILED
    return 0


def stop_hint() -> str:
    """How to stop the server: a job started in the background by a script inherits SIGINT ignored (so that Ctrl+C
    in the terminal leaves it running), and then only SIGTERM stops it; PyTriton's own line says SIGINT regardless."""
    import signal

    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        return f"SIGINT is ignored in this process (started in the background): stop it with kill {os.getpid()}."
    return "Ctrl+C (SIGINT) or SIGTERM stops the server."
