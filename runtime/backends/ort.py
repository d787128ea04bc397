"""ONNX Runtime: CPU execution provider, or the CUDA / TensorRT providers when ``onnxruntime-gpu`` is installed.

On the CPU, an artifact of an SGE model runs its ``model.sge_fused.onnx`` (SGE + residual add + ReLU as one
compiled op in ORT's blocked layout; export/ort_sge/graph.py, export/ort_sge/session.py) unless ``sge_fused=False``. Any
failure of that path (no kernel library in this install, a corrupt one, registration or planning) is one warning,
and the runner runs the portable ``model.onnx`` instead: the process never goes down for the faster graph.
``precision="int8"`` runs the artifact's INT8 graph instead (export/int8/): its fused-SGE form
``model.int8.sge_fused.onnx`` on the CPU when recorded (falling back the same way where ``model.int8.onnx`` is
recorded too: each INT8 graph passes its export gate on its own), else ``model.int8.onnx``; a bare ``.onnx`` file
with ``precision="int8"`` must hold quantised layers (Q/DQ or QLinear nodes), as OpenVINO requires.

On ``cuda`` the input and output stay bound to the device (IO binding), so the benchmark can time the host→device
copy, the run and the device→host copy apart. ``allow_spinning=False`` sets ``session.intra_op.allow_spinning`` to
"0": idle intra-op threads then sleep instead of spinning, which they must when several backends or sessions are
timed in one process (spinning threads steal the CPU from the others).
"""

import logging
from pathlib import Path
from typing import Any

import numpy as np

from runtime.backends.base import BackendUnavailableError, one_line
from runtime.backends.source_runner import SourceRunner, import_backend
from runtime.source import ModelSource

logger = logging.getLogger(__name__)

# device → the execution providers to ask for, in priority order.
PROVIDERS = {
    "cpu": ("CPUExecutionProvider",),
    "cuda": ("CUDAExecutionProvider", "CPUExecutionProvider"),
    "tensorrt": ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
}


def import_onnxruntime() -> Any:
    return import_backend(
        "onnxruntime",
        backend="onnxruntime",
        install="'sge-deploy[onnxruntime]' (CPU) or 'sge-deploy[onnxruntime-gpu]' (CUDA, TensorRT), not both",
    )


# ONNX Runtime's tensor type names → numpy's, for the manifest check (others: not compared)
ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(uint8)": "uint8",
}


class OnnxRuntimeRunner(SourceRunner):
    name = "onnxruntime"

    @property
    def shares_call_state(self) -> bool:  # a GPU device's IO binding serves every call; a CPU session is thread-safe
        return self.device != "cpu"

    def __init__(
        self,
        source: str | Path | ModelSource,
        *,
        device: str = "cpu",
        threads: int | None = None,
        allow_spinning: bool = True,
        fp16: bool = False,
        provider_options: dict[str, Any] | None = None,
        cache_dir: str | Path | None = None,
        check_finite: bool = False,
        sge_fused: bool = True,
        precision: str = "fp32",
    ) -> None:
        from export.int8.roles import PrecisionError, normalise_precision

        super().__init__(source, threads=threads, check_finite=check_finite)
        self.precision = normalise_precision(precision)
        if self.precision not in ("fp32", "int8"):
            raise PrecisionError(
                f"onnxruntime runs precision fp32 or int8; got {precision!r} (bf16 and f16 run on openvino; FP16 on "
                "a GPU is ONNX Runtime's TensorRT provider, fp16=True with device='tensorrt')"
            )
        if device not in PROVIDERS:
            raise ValueError(f"onnxruntime device must be one of {', '.join(PROVIDERS)}; got {device!r}")
        if fp16 and device != "tensorrt":
            raise ValueError(
                "fp16=True applies to the TensorRT provider (device='tensorrt'); export an FP16 model else"
            )
        self.device = device
        self.allow_spinning = allow_spinning
        self.fp16 = fp16
        self.provider_options = dict(provider_options or {})
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.sge_fused = sge_fused
        self._graph: dict[str, Any] = {}  # how the CPU session's graph was made (SessionPlan.describe())
        self._cpu_path: Path | None = None  # the graph the CPU session runs
        self._session: Any = None
        self._binding: Any = None

    def session_options(self) -> Any:
        from export.ort_sge.session import session_options

        return session_options(threads=self.threads, spinning=self.allow_spinning)

    def providers(self) -> list[tuple[str, dict[str, Any]]]:
        """(provider, options) pairs for the session; the first is this runner's device's provider."""
        names = PROVIDERS[self.device]
        chosen = []
        for name in names:
            options: dict[str, Any] = {}
            if name == "TensorrtExecutionProvider":
                options = {"trt_fp16_enable": self.fp16}
                if self.cache_dir is not None:
                    options.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(self.cache_dir))
            elif name == "CUDAExecutionProvider":
                # FP32 means FP32 (the CUDA EP's default use_tf32=1 rounds convolution inputs to 10-bit mantissas)
                options = {"device_id": 0, "use_tf32": 0}
            if name == names[0]:
                options.update(self.provider_options)
            chosen.append((name, options))
        return chosen

    def _model_io(self):
        def io(arg):
            dims = tuple(d if isinstance(d, int) and d > 0 else None for d in arg.shape)
            return frozenset([arg.name]), dims, ORT_DTYPES.get(arg.type)

        return io(self._session.get_inputs()[0]), io(self._session.get_outputs()[0])

    def _graph_metadata(self):
        return dict(self._session.get_modelmeta().custom_metadata_map)

    def _activate_impl(self) -> None:
        ort = import_onnxruntime()
        if self.precision == "int8":  # a float graph would run FP32 under the int8 name, as OpenVINO refuses too
            from export.int8.roles import holds_quantised_layer, not_quantised

            path = self.cpu_model_path() if self.device == "cpu" else self.model_path()
            # a bare file's ops were read with its specs; an artifact's INT8 graph is another file, read here
            ops = self.source.graph_ops if self.source.manifest is None else _op_types(path)
            if not holds_quantised_layer(ops):
                raise not_quantised(path)
        wanted = PROVIDERS[self.device][0]
        if wanted not in ort.get_available_providers():
            raise BackendUnavailableError(
                f"onnxruntime device {self.device!r} needs {wanted}, which this onnxruntime build lacks "
                f"(it has {', '.join(ort.get_available_providers())}); on a GPU machine install "
                "'sge-deploy[onnxruntime-gpu]' in an environment without the onnxruntime package"
            )
        if self.device == "cpu":
            self._activate_cpu()
            return
        if hasattr(ort, "preload_dlls"):
            # onnxruntime-gpu ≥ 1.21 loads CUDA and cuDNN from the nvidia-* pip packages (a CUDA torch's too) when
            # asked; where they are on neither path the provider fails to load and the check below says so
            try:
                ort.preload_dlls()
            except OSError as error:
                logger.warning("onnxruntime could not preload CUDA libraries: %s", error)
        providers = self.providers()
        self._session = ort.InferenceSession(
            str(self.model_path()),
            sess_options=self.session_options(),
            providers=[name for name, _ in providers],
            provider_options=[options for _, options in providers],
        )
        active = self._session.get_providers()
        if active[0] != wanted:
            raise RuntimeError(f"onnxruntime fell back to {active[0]} instead of {wanted}; check the CUDA install")
        logger.info("onnxruntime %s: providers %s, threads %s", ort.__version__, active, self.threads)
        self._binding = self._session.io_binding()  # the GPU devices: the CPU returned above

    def model_path(self) -> Path:
        """The graph for the precision: the artifact's model, or its INT8 graph (``model.int8.onnx``)."""
        from export.int8.roles import int8_graph_file

        if self.precision != "int8":
            return self.source.model_path
        if self.source.manifest is None or self.source.directory is None:
            return self.source.model_path  # a bare .onnx file: the caller chose the INT8 graph itself
        return self.source.directory / int8_graph_file(self.source.manifest, directory=self.source.directory)

    def cpu_model_path(self) -> Path:
        """The graph the CPU session runs: the artifact's fused-SGE graph when it has one, else ``model_path()``."""
        from export.int8.roles import int8_graph_file
        from export.ort_sge.session import fused_graph_file

        manifest, directory = self.source.manifest, self.source.directory
        if self.precision == "int8" and manifest is not None and directory is not None:
            return directory / int8_graph_file(manifest, fused=self.sge_fused, directory=directory)
        fused = fused_graph_file(manifest) if manifest is not None else None
        if self.sge_fused and fused and directory is not None:
            return directory / fused
        return self.source.model_path

    def _fallback_path(self) -> Path | None:
        """The plain graph the CPU runs when the fused one cannot: ``model_path()``, or None for an INT8 artifact
        whose ``model.int8.onnx`` failed its export gate while its fused INT8 graph passed."""
        return self.source.plain_graph(self.precision, fused=self.sge_fused)

    def _activate_cpu(self) -> None:
        path, plain = self.cpu_model_path(), self._fallback_path()
        if self.precision == "int8" and self.source.manifest is not None:
            from export.int8.roles import saturation_note

            note = saturation_note(
                self.source.manifest, path.name, backend="onnxruntime", directory=self.source.directory
            )
            if note:
                logger.warning("%s", note)
        if path != plain:
            try:
                self._open_cpu(path, fused=True)
                return
            except Exception as err:  # any failure of the fused path (library, registration, planning): the plain graph
                reason = one_line(err)
                if plain is None:
                    from export.int8.roles import fused_int8_cannot_run

                    raise fused_int8_cannot_run(
                        self.source.manifest, "onnxruntime", path.name, reason, directory=self.source.directory
                    ) from err
                logger.warning("the fused SGE graph cannot run here (%s); running %s instead", reason, plain.name)
        # An artifact says which of its graphs is fused; a bare .onnx file's opsets, read with its specs, say it.
        from export.ort_sge.session import uses_fused_sge

        fused = self.source.manifest is None and uses_fused_sge(self.source.graph_domains)
        try:
            self._open_cpu(plain, fused=fused)
        except Exception as err:
            if not fused:
                raise
            raise BackendUnavailableError(  # a bare fused file: no plain graph beside it to fall back to
                f"{plain.name} holds the fused SGE op, which cannot run here ({one_line(err)}); run the plain graph "
                "instead (model.onnx of the same export)"
            ) from err

    def _open_cpu(self, path: Path, *, fused: bool) -> None:
        from export.ort_sge.session import cpu_session, plan_session

        plan = plan_session(path, fused=fused)
        try:
            session = cpu_session(plan, threads=self.threads, spinning=self.allow_spinning)
        finally:
            plan.close()  # the session maps the planned weights: their scratch files can go
        self._cpu_path, self._graph = path, plan.describe()
        self._session = session
        ort = import_onnxruntime()
        logger.info("onnxruntime %s CPU, threads %s: %s", ort.__version__, self.threads, self._graph)

    def _deactivate_impl(self) -> None:
        self._binding = None
        self._session = None
        self._graph = {}
        self._cpu_path = None

    # The three stages the benchmark times apart on a GPU (host→device, compute, device→host).
    def to_device(self, batch: np.ndarray) -> Any:
        ort = import_onnxruntime()
        value = ort.OrtValue.ortvalue_from_numpy(batch, "cuda", 0)
        self._binding.bind_ortvalue_input(self.input_spec.name, value)
        self._binding.bind_output(self.output_spec.name, "cuda", 0)
        return value

    def compute(self, value: Any) -> Any:
        self._session.run_with_iobinding(self._binding)
        return self._binding.get_outputs()[0]

    def to_host(self, value: Any) -> np.ndarray:
        return value.numpy()

    def synchronize(self) -> None:
        if self._binding is not None:
            self._binding.synchronize_outputs()

    def _infer_impl(self, batch: np.ndarray) -> np.ndarray:
        if self.device == "cpu":
            return self._session.run([self.output_spec.name], {self.input_spec.name: batch})[0]
        return self.to_host(self.compute(self.to_device(batch)))

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "device": self.device,
            "providers": self._session.get_providers()
            if self._session is not None
            else [p for p, _ in self.providers()],
            "allow_spinning": self.allow_spinning,
            "precision": self.precision,
            **self._graph,
            **({"model_path": str(self._cpu_path)} if self._cpu_path is not None else {}),
        }


def _op_types(path: Path) -> set[str]:
    """The node types of the graph in ``path`` (its structure only; an unreadable file is one ArtifactError)."""
    from runtime.source import read_model

    return {node.op_type for node in read_model(path).graph.node}
