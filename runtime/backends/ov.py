"""OpenVINO on the CPU, reading the ONNX file directly (no IR conversion step).

Threads go through ``INFERENCE_NUM_THREADS``. ``precision`` (runtime/backends/ov_precision.py) sets
``INFERENCE_PRECISION_HINT``: "fp32" by default, because OpenVINO otherwise picks bf16 on CPUs with AMX or
AVX512-BF16, which would break parity with the FP32 reference; "bf16" asks for it; "int8" runs the artifact's
Q/DQ model (manifest role "model-int8"), or its fused INT8 graph alone where only that one passed its export gate.

An SGE artifact runs its fused-SGE graph (SGE + residual add + ReLU as one ``sgedeploy::SgeResidual`` node; roles
"model-ort-cpu", and "model-int8-ort-cpu" for int8; the export writes it where ONNX Runtime's kernel compiled)
unless ``sge_fused=False``. ``sge_form="native"`` (the default) rewrites each node in memory into standard ops
that the CPU plugin runs in its own layouts and precisions (export/ov_sge/native.py); ``sge_form="extension"``
runs the node as the extension op of export/ov_sge/ (a plain-NCHW f32 reference node: slower, README, OpenVINO
precisions). Where either cannot be read or compiled, one warning says so and the plain graph runs. After
compiling, the runner reads back what OpenVINO chose and logs one warning when the CPU cannot run the precision
asked for; ``describe()["precision"]`` is what runs, ``describe()["graph"]`` which graph.
"""

import logging
from pathlib import Path
from typing import Any

import numpy as np

from export.int8.roles import (
    INT8_FUSED_ROLE,
    PrecisionError,
    file_with_role,
    fused_int8_cannot_run,
    normalise_precision,
    not_quantised,
)
from runtime.backends.base import BackendUnavailableError, one_line
from runtime.backends.ov_precision import HINTS, hint_name, precision_note, runs_as
from runtime.backends.source_runner import SourceRunner, import_backend
from runtime.source import ModelSource

logger = logging.getLogger(__name__)

FUSED_ROLES = {"int8": INT8_FUSED_ROLE}  # precision → role of its fused-SGE graph; the others: "model-ort-cpu"
SGE_FORMS = {"native": "sge_native", "extension": "sge_fused"}  # sge_form → describe()["graph"]


def import_openvino() -> Any:
    return import_backend("openvino", backend="openvino", install="'sge-deploy[openvino]'")


class OpenVINORunner(SourceRunner):
    name = "openvino"
    hides_nonfinite_input = True  # OpenVINO maps NaN/Inf input to finite logits (ORT and torch propagate them)
    shares_call_state = True  # one InferRequest

    def __init__(
        self,
        source: str | Path | ModelSource,
        *,
        device: str = "CPU",
        threads: int | None = None,
        precision: str = "fp32",
        config: dict[str, Any] | None = None,
        check_finite: bool = False,
        sge_fused: bool = True,
        sge_form: str = "native",
        sge_extension: str | Path | None = None,
    ) -> None:
        super().__init__(source, threads=threads, check_finite=check_finite)
        self.device = device
        self.precision = normalise_precision(precision)
        self.config = dict(config or {})
        if sge_form not in SGE_FORMS:
            raise ValueError(f"sge_form must be one of {', '.join(SGE_FORMS)}; got {sge_form!r}")
        self.sge_fused = sge_fused
        self.sge_form = sge_form
        self.sge_extension = Path(sge_extension) if sge_extension is not None else None  # None: the installed one
        self.model_path = self._model_path()
        self._graph: dict[str, Any] = {}  # which graph runs: plain, or sge_fused with its block count
        self._compiled: Any = None
        self._request: Any = None
        self._runs: dict[str, Any] = {}  # what OpenVINO compiled: precision, hint, note

    def _model_path(self) -> Path | None:
        """The plain file this precision runs: the artifact's INT8 model for "int8", else its model; None for an
        artifact whose ``model.int8.onnx`` failed its export gate while its fused INT8 graph passed (run that)."""
        # a bare file runs as given (int8 checks it holds Q/DQ at activation)
        return self.source.plain_graph(self.precision, fused=self.sge_fused)

    def _no_plain_graph(self, fused: Path, err: BaseException) -> PrecisionError:
        """The fused INT8 graph failed here and the artifact has no plain one to fall back to: say both."""
        return fused_int8_cannot_run(
            self.source.manifest, "openvino", fused.name, one_line(err), directory=self.source.directory
        )

    def fused_graph_path(self) -> Path | None:
        """The artifact's fused-SGE graph for this precision, if it has one and ``sge_fused`` is on."""
        manifest = self.source.manifest
        if not self.sge_fused or manifest is None:
            return None
        role = FUSED_ROLES.get(self.precision, "model-ort-cpu")
        found = file_with_role(manifest, role)
        return self.source.directory / found if found else None

    def _read_model(self, core: Any) -> Any:
        """The fused-SGE graph in ``sge_form`` where possible; else, with one warning, the plain graph."""
        fused = self.fused_graph_path()
        if fused is not None:
            try:
                model, blocks = self._read_fused(core, fused)
                graph = SGE_FORMS[self.sge_form]
                self._graph = {"graph": graph, "fused_sge_blocks": blocks, "model_path": str(fused)}
                return model
            except Exception as err:  # whatever breaks the fused graph, model.onnx still runs (never down)
                if self.model_path is None:
                    raise self._no_plain_graph(fused, err) from err
                reason = one_line(err)
                what = "SGE extension" if self.sge_form == "extension" else "native SGE graph"
                logger.warning("openvino %s unavailable (%s); running %s", what, reason, self.model_path.name)
        self._graph = {"graph": "plain", "model_path": str(self.model_path)}
        try:
            return core.read_model(str(self.model_path))
        except RuntimeError as err:
            from export.ort_sge.nchwc import FUSED_OP

            if FUSED_OP not in str(err):
                raise
        # a bare fused-SGE file (no artifact around it): its SgeResidual nodes as standard ops
        from export.ov_sge.native import read_native_model

        model, blocks = read_native_model(core, self.model_path, bias_apart=self._reduced_precision())
        self._graph = {"graph": SGE_FORMS["native"], "fused_sge_blocks": blocks, "model_path": str(self.model_path)}
        return model

    def _read_fused(self, core: Any, fused: Path) -> tuple[Any, int]:
        if self.sge_form == "native":
            from export.ov_sge.native import read_native_model

            return read_native_model(core, fused, bias_apart=self._reduced_precision())
        from export.ov_sge.build import installed_library
        from export.ov_sge.graph import read_fused_model

        library = self.sge_extension or installed_library()
        hint = str(self.compile_config()["INFERENCE_PRECISION_HINT"]).lower()  # a config may override the precision
        storage = "bf16" if hint == "bf16" else "f32"  # the op's tensors: see export/ov_sge/graph.py
        return read_fused_model(core, fused, library, storage=storage)

    def _reduced_precision(self) -> bool:
        """Whether the compiled model computes in bf16 or f16 (a config may override the precision)."""
        return str(self.compile_config()["INFERENCE_PRECISION_HINT"]).lower() in ("bf16", "f16")

    def compile_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": HINTS[self.precision],
            "PERFORMANCE_HINT": "LATENCY",
        }
        if self.threads is not None:
            config["INFERENCE_NUM_THREADS"] = self.threads
        config.update(self.config)
        return config

    def _model_io(self):
        def io(port):
            dims = tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
            return frozenset(port.get_names()), dims, str(port.get_element_type().to_dtype())

        return io(self._compiled.input(0)), io(self._compiled.output(0))

    def _activate_impl(self) -> None:
        ov = import_openvino()
        core = ov.Core()
        if self.device not in core.available_devices:
            raise BackendUnavailableError(
                f"OpenVINO device {self.device!r} is not available here (it has {', '.join(core.available_devices)})"
            )
        model = self._read_model(core)
        if self.precision == "int8" and not any(op.get_type_name() == "FakeQuantize" for op in model.get_ops()):
            raise not_quantised(self._graph["model_path"])  # OpenVINO reads Q/DQ pairs as FakeQuantize
        try:
            self._compiled = core.compile_model(model, self.device, self.compile_config())
        except RuntimeError as err:
            if self._graph["graph"] not in SGE_FORMS.values():
                name = Path(self._graph["model_path"]).name
                raise RuntimeError(f"openvino could not compile {name}: {one_line(err)}") from err
            if self.model_path is None:
                raise self._no_plain_graph(Path(self._graph["model_path"]), err) from err
            try:  # the plain graph: only when it compiles with the same configuration is the fused graph to blame
                plain = core.compile_model(str(self.model_path), self.device, self.compile_config())
            except RuntimeError as plain_err:
                raise RuntimeError(f"openvino could not compile {self.model_path.name}: {one_line(plain_err)}") from err
            logger.warning(
                "openvino could not compile the fused-SGE graph (%s); running %s", one_line(err), self.model_path.name
            )
            self._graph = {"graph": "plain", "model_path": str(self.model_path)}
            self._compiled = plain
        try:
            self._request = self._compiled.create_infer_request()
            self._runs = self._read_back(core)
        except BaseException:
            self._compiled = self._request = None  # a failed activation holds nothing
            raise
        for note in (self._runs["note"], self._saturation_note(), self._plain_sge_note()):
            if note:
                logger.warning("%s", note)
        logger.info("openvino %s on %s: %s, runs %s", ov.__version__, self.device, self.compile_config(), self._runs)

    def _plain_sge_note(self) -> str | None:
        """One line where SGE runs in bf16/f16 on a graph that keeps its BatchNorm-folded convolutions (the plain one,
        the extension form), which lose SGE's spatial deviations (README: OpenVINO precisions; only the native form
        keeps their bias apart)."""
        graph = self._graph.get("graph")
        plain_sge = graph == "plain" and self._has_sge()
        if not (plain_sge or graph == SGE_FORMS["extension"]) or self._runs.get("precision") not in ("bf16", "fp16"):
            return None
        return (
            f"openvino {self._runs['precision']} on the {graph} SGE graph ({Path(self._graph['model_path']).name}) "
            "can miss its parity gate: folded BatchNorm shifts drown SGE's spatial deviations in reduced precision "
            "(cosine 0.9976 measured, gate 0.999); the native fused form (sge_fused=True, sge_form='native', the "
            "defaults) keeps the bias apart, which held the gate at 96² and 224² (check other sizes with "
            "sge-deploy evaluate --backends openvino:bf16)"
        )

    def _has_sge(self) -> bool:
        """Whether the model has SGE layers: the manifest's count (any model name, a factory's too), else the name
        (manifests written before the count)."""
        manifest = self.source.manifest
        if manifest is not None and "sge_layers" in manifest.extra:
            return bool(manifest.extra["sge_layers"])
        return (self.source.model_name or "").startswith("sge_")

    def _saturation_note(self) -> str | None:
        """The INT8 graph's one line where its 8-bit weights can saturate on this CPU (export.int8.roles)."""
        if self.precision != "int8" or self.device != "CPU" or self.source.manifest is None:
            return None
        from export.int8.roles import saturation_note

        graph = Path(self._graph["model_path"]).name
        return saturation_note(self.source.manifest, graph, backend="openvino", directory=self.source.directory)

    def _read_back(self, core: Any) -> dict[str, Any]:
        """What the compiled model runs, from OpenVINO's own properties."""
        hint = hint_name(self._compiled.get_property("INFERENCE_PRECISION_HINT"))
        capabilities = list(core.get_property(self.device, "OPTIMIZATION_CAPABILITIES"))
        cpu = str(core.get_property(self.device, "FULL_DEVICE_NAME"))
        note = precision_note(self.precision, compiled_hint=hint, capabilities=capabilities, cpu=cpu)
        return {
            "precision": runs_as(self.precision, hint, capabilities),
            "precision_requested": self.precision,
            "inference_precision_hint": hint,
            "capabilities": capabilities,
            "note": note,
        }

    def _deactivate_impl(self) -> None:
        self._request = None
        self._compiled = None
        self._runs = {}
        self._graph = {}

    def _infer_impl(self, batch: np.ndarray) -> np.ndarray:
        self._request.infer({0: batch})  # one InferRequest: shares_call_state makes calls take turns
        return self._request.get_output_tensor(0).data.copy()

    def layer_times(self) -> list[dict[str, Any]]:
        """Per-layer times of the last ``infer`` (OpenVINO's perf counts; compile with config {"PERF_COUNT": True})."""
        if self._request is None:
            raise RuntimeError("openvino runner is not active; use `with runner:` or call runner.activate()")
        return [
            {
                "name": info.node_name,
                "type": info.node_type,
                "exec": info.exec_type,
                "ms": info.real_time.total_seconds() * 1e3,
            }
            for info in self._request.get_profiling_info()
        ]

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "model_path": str(self.model_path or self.fused_graph_path()),
            **self._graph,
            "device": self.device,
            "config": self.compile_config(),
            "precision": self.precision,
            **self._runs,
        }
