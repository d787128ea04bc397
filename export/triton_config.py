"""Triton Inference Server model configs (``config.pbtxt``): what one model's config says, the checks that refuse an
impossible one, and its rendering in protobuf text format. Follows Triton's model configuration schema
(``model_config.proto``; the protobuf module ships with tritonclient as ``tritonclient.grpc.model_config_pb2``) and
the ONNX Runtime backend's documented TensorRT accelerator parameters
(https://github.com/triton-inference-server/onnxruntime_backend#onnx-runtime-with-tensorrt-optimization). Pure:
nothing here touches the disk (``export.triton_repo`` writes the repository)."""

from dataclasses import dataclass, field
from typing import Any

from export.artifacts import TensorSpec

# numpy dtype names → Triton's DataType enum names (model_config.proto).
TRITON_DTYPES = {
    "bool": "TYPE_BOOL",
    "uint8": "TYPE_UINT8",
    "int8": "TYPE_INT8",
    "int16": "TYPE_INT16",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "float16": "TYPE_FP16",
    "float32": "TYPE_FP32",
    "float64": "TYPE_FP64",
}
INSTANCE_KINDS = {"auto": "KIND_AUTO", "gpu": "KIND_GPU", "cpu": "KIND_CPU"}
PRECISION_MODES = ("FP32", "FP16", "INT8")


class TritonConfigError(ValueError):
    """The requested Triton configuration cannot describe this model (message says what to change)."""


@dataclass(frozen=True)
class TensorRTAccelerator:
    """TensorRT inside Triton's ONNX Runtime backend (``gpu_execution_accelerator { name: "tensorrt" }``)."""

    precision_mode: str = "FP16"
    max_workspace_size_bytes: int = 1 << 30
    engine_cache_path: str | None = None  # a path on the serving node; enables the engine cache when set

    def __post_init__(self) -> None:
        if self.precision_mode not in PRECISION_MODES:
            raise TritonConfigError(
                f"TensorRT precision_mode must be one of {', '.join(PRECISION_MODES)}; got {self.precision_mode!r}"
            )
        if self.max_workspace_size_bytes <= 0:
            raise TritonConfigError(f"max_workspace_size_bytes must be positive; got {self.max_workspace_size_bytes}")

    def parameters(self) -> dict[str, str]:
        params = {
            "precision_mode": self.precision_mode,
            "max_workspace_size_bytes": str(self.max_workspace_size_bytes),
        }
        if self.engine_cache_path is not None:
            params["trt_engine_cache_enable"] = "1"
            params["trt_engine_cache_path"] = self.engine_cache_path
        return params

    def to_dict(self) -> dict[str, Any]:
        return {
            "precision_mode": self.precision_mode,
            "max_workspace_size_bytes": self.max_workspace_size_bytes,
            "engine_cache_path": self.engine_cache_path,
        }


@dataclass(frozen=True)
class TritonModelConfig:
    """Everything ``config.pbtxt`` says about one model."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    platform: str = "onnxruntime_onnx"  # or "tensorrt_plan"
    max_batch_size: int = 32
    queue_delay_us: int = 500
    preferred_batch_sizes: tuple[int, ...] = ()
    instances: int = 1
    kind: str = "auto"  # auto | gpu | cpu
    tensorrt: TensorRTAccelerator | None = None
    label_filename: str | None = None
    extra: dict[str, str] = field(default_factory=dict)  # free-form model parameters (string values)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "platform": self.platform,
            "max_batch_size": self.max_batch_size,
            "queue_delay_us": self.queue_delay_us,
            "preferred_batch_sizes": list(self.preferred_batch_sizes),
            "instances": self.instances,
            "kind": self.kind,
            "tensorrt": self.tensorrt.to_dict() if self.tensorrt is not None else None,
            "label_filename": self.label_filename,
            "extra": dict(self.extra),
        }


def has_batch_axis(spec: TensorSpec) -> bool:
    """A symbolic or -1 leading dimension is the batch axis Triton's batcher fills."""
    return bool(spec.shape) and (isinstance(spec.shape[0], str) or spec.shape[0] == -1)


def triton_dims(spec: TensorSpec, *, batching: bool) -> list[int]:
    """Triton dims: without the batch axis when batching; symbolic dimensions become -1."""
    shape = spec.shape[1:] if batching else spec.shape
    return [d if isinstance(d, int) else -1 for d in shape]


def render_config(config: TritonModelConfig) -> str:
    """``config.pbtxt`` text (protobuf text format of Triton's ``ModelConfig``) for ``config``; pure."""
    problems = check_config(config)
    if problems:
        raise TritonConfigError(f"cannot write a Triton config for {config.name!r}: {'; '.join(problems)}")
    batching = config.max_batch_size > 0
    lines = [f"name: {quote(config.name)}", f"platform: {quote(config.platform)}"]
    lines.append(f"max_batch_size: {config.max_batch_size}")
    for section, specs in (("input", config.inputs), ("output", config.outputs)):
        lines.append(f"{section} [")
        entries = []
        for spec in specs:
            body = [
                f"    name: {quote(spec.name)}",
                f"    data_type: {TRITON_DTYPES[spec.dtype]}",
                f"    dims: [ {', '.join(str(d) for d in triton_dims(spec, batching=batching))} ]",
            ]
            if section == "input" and batching and spec.layout == "NCHW" and len(spec.shape) == 4:
                body.append("    format: FORMAT_NCHW")
            if section == "output" and config.label_filename is not None and spec is specs[0]:
                body.append(f"    label_filename: {quote(config.label_filename)}")
            entries.append("  {\n" + "\n".join(body) + "\n  }")
        lines.append(",\n".join(entries))
        lines.append("]")
    if batching:
        lines.append("dynamic_batching {")
        if config.preferred_batch_sizes:
            lines.append(f"  preferred_batch_size: [ {', '.join(str(b) for b in config.preferred_batch_sizes)} ]")
        lines.append(f"  max_queue_delay_microseconds: {config.queue_delay_us}")
        lines.append("}")
    lines.append("instance_group [")
    lines.append(f"  {{ count: {config.instances} kind: {INSTANCE_KINDS[config.kind]} }}")
    lines.append("]")
    if config.tensorrt is not None:
        lines.append("optimization {")
        lines.append("  execution_accelerators {")
        lines.append("    gpu_execution_accelerator: [")
        lines.append("      {")
        lines.append('        name: "tensorrt"')
        for key, value in config.tensorrt.parameters().items():
            lines.append(f"        parameters {{ key: {quote(key)} value: {quote(value)} }}")
        lines.append("      }")
        lines.append("    ]")
        lines.append("  }")
        lines.append("}")
    for key, value in config.extra.items():
        lines.append(f"parameters {{ key: {quote(key)} value: {{ string_value: {quote(value)} }} }}")
    return "\n".join(lines) + "\n"


def check_config(config: TritonModelConfig) -> list[str]:
    """Every reason ``config`` cannot be rendered (empty when it can)."""
    problems = []
    if not config.name or not all(c.isalnum() or c in "._-" for c in config.name):
        problems.append(f"model name {config.name!r} may only hold letters, digits, '.', '_' and '-'")
    if config.platform not in ("onnxruntime_onnx", "tensorrt_plan"):
        problems.append(f"platform must be onnxruntime_onnx or tensorrt_plan; got {config.platform!r}")
    if not config.inputs or not config.outputs:
        problems.append("a model needs at least one input and one output")
    for spec in (*config.inputs, *config.outputs):
        if spec.dtype not in TRITON_DTYPES:
            problems.append(f"tensor {spec.name!r} has dtype {spec.dtype}, which Triton has no type for")
        if config.max_batch_size > 0 and not has_batch_axis(spec):
            problems.append(
                f"tensor {spec.name!r} has shape {spec.shape} without a dynamic batch axis; "
                "export with a dynamic batch or set max_batch_size=0"
            )
    if config.max_batch_size < 0:
        problems.append(f"max_batch_size must be ≥ 0; got {config.max_batch_size}")
    if config.queue_delay_us < 0:
        problems.append(f"queue_delay_us must be ≥ 0; got {config.queue_delay_us}")
    if any(b < 1 or b > config.max_batch_size for b in config.preferred_batch_sizes):
        problems.append(f"preferred batch sizes {config.preferred_batch_sizes} must lie in 1..{config.max_batch_size}")
    if config.instances < 1:
        problems.append(f"instances must be ≥ 1; got {config.instances}")
    if config.kind not in INSTANCE_KINDS:
        problems.append(f"kind must be one of {', '.join(INSTANCE_KINDS)}; got {config.kind!r}")
    if config.tensorrt is not None and (config.kind == "cpu" or config.platform != "onnxruntime_onnx"):
        problems.append("the TensorRT accelerator applies to the ONNX Runtime platform on GPU instances")
    if config.platform == "tensorrt_plan" and config.kind == "cpu":
        problems.append("a TensorRT plan runs on GPU instances only (kind gpu or auto)")
    return problems


def quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
