"""The check of one KServe v2 inference request against the model's input spec and the server's largest batch, from
the request's bytes alone (runtime/serve_gate.py runs it before Triton sees the request): parseable JSON without
duplicate keys, the input's name, datatype and rank, a batch of 1..max_batch, the fixed dimensions, and data (binary
or JSON) holding exactly as many finite values as the shape says. Pure: no server, no allocation from what a
request declares."""

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from export.artifacts import MAX_INPUT_SIDE, TensorSpec

MAX_JSON_HEADER = 64 << 10  # the JSON part of a binary request: names, shapes, parameters
JSON_BYTES_PER_VALUE = 48  # the longest float in JSON text, its separator, and the indentation of pretty-printed JSON
KSERVE_DTYPES = {"float32": "FP32", "float16": "FP16", "float64": "FP64", "uint8": "UINT8", "int64": "INT64"}


class RequestRejected(ValueError):
    """A request the model cannot serve; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class RequestLimits:
    """What one inference request may hold: the model's input spec and the server's largest batch."""

    input: TensorSpec
    max_batch: int
    max_request_bytes: int | None = None  # the server's own bound on a body (serve --max-request-mb); None: none

    @property
    def datatype(self) -> str:
        return KSERVE_DTYPES.get(self.input.dtype, self.input.dtype.upper())

    @property
    def itemsize(self) -> int:
        return np.dtype(self.input.dtype).itemsize

    def max_values(self) -> int:
        dims = [d if isinstance(d, int) and d > 0 else MAX_INPUT_SIDE for d in self.input.shape[1:]]
        return self.max_batch * math.prod(dims)

    def max_body_bytes(self) -> int:
        """The largest body a valid request can have (JSON text of every value, or the binary form)."""
        return MAX_JSON_HEADER + self.max_values() * max(JSON_BYTES_PER_VALUE, self.itemsize)

    def body_limit(self) -> tuple[int, str]:
        """The largest body the gate reads, and what sets it: the model's largest valid request, or the server's
        own bound where that is lower (a --dynamic-hw model's batch of 32 at 1024² is 4.8 GB of JSON)."""
        model = self.max_body_bytes()
        if self.max_request_bytes is not None and self.max_request_bytes < model:
            cap = self.max_request_bytes
            return cap, f"this server reads at most {cap} bytes a request (serve --max-request-mb raises it)"
        return model, f"the largest valid request has {model}"


def check_infer_request(body: bytes, *, header_length: int | None, limits: RequestLimits) -> None:
    """Raise RequestRejected (400) unless ``body`` is an inference request this model can serve; pure."""
    if header_length is not None:
        if not 0 < header_length <= min(len(body), MAX_JSON_HEADER):
            raise RequestRejected(
                f"Inference-Header-Content-Length {header_length} does not fit the {len(body)}-byte body"
            )
        header_bytes, binary = body[:header_length], body[header_length:]
    else:
        header_bytes, binary = body, b""
    request = _strict_json(header_bytes)
    _check_request_fields(request)
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise RequestRejected(f"the request must hold 'inputs': a list with one input, {limits.input.name!r}")
    tensor = inputs[0]
    if tensor.get("name") != limits.input.name:
        got = str(tensor.get("name"))[:40]
        raise RequestRejected(f"unexpected input {got!r}; the model takes {limits.input.name!r}")
    if tensor.get("datatype") != limits.datatype:
        got = str(tensor.get("datatype"))[:20]
        raise RequestRejected(
            f"unexpected data-type {got!r} for input {limits.input.name!r}; expected {limits.datatype}"
        )
    count = _check_shape(tensor.get("shape"), limits)
    parameters = tensor.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise RequestRejected("input 'parameters' must be an object")
    if "binary_data_size" in parameters:
        size, expected = parameters["binary_data_size"], count * limits.itemsize
        if type(size) is not int or size != expected or len(binary) != expected:
            raise RequestRejected(
                f"the shape needs {expected} bytes of binary data; binary_data_size says {str(size)[:20]} and the "
                f"body holds {len(binary)}"
            )
        _check_finite(binary, limits)
        return
    if binary:
        raise RequestRejected("binary data follows the JSON header but no input declares binary_data_size")
    values = _count_values(tensor.get("data"), largest=_largest_value(limits))
    if values != count:
        raise RequestRejected(f"the shape needs {count} values; 'data' holds {values}")


def _check_finite(binary: bytes, limits: RequestLimits) -> None:
    """A float input's binary data (little-endian, as KServe's binary extension sends it) holds no NaN or Inf."""
    dtype = np.dtype(limits.input.dtype)
    if dtype.kind == "f":
        bad = int((~np.isfinite(np.frombuffer(binary, dtype=dtype.newbyteorder("<")))).sum())
        if bad:
            raise RequestRejected(
                f"input {limits.input.name!r} holds {bad} NaN/Inf values; fix the preprocessing or the data"
            )


def _largest_value(limits: RequestLimits) -> float:
    """The largest magnitude a JSON value may have: beyond a float input's range Triton stores it as Inf."""
    dtype = np.dtype(limits.input.dtype)
    return float(np.finfo(dtype).max) if dtype.kind == "f" else math.inf


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Python keeps a repeated key's last value, Triton's parser its first: a request could show the gate one input and
    # Triton another (one declaring a batch of 100 000)
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        repeated = next(key for key in keys if keys.count(key) > 1)
        raise RequestRejected(f"the request repeats the key {repeated[:40]!r}")
    return dict(pairs)


def _finite_number(text: str) -> float:
    """A JSON number or constant (NaN, Infinity) as Triton can hold it: finite, within double's range."""
    value = float(text)
    if not math.isfinite(value):
        raise RequestRejected(f"the request holds {text[:20]}, which JSON cannot carry")
    return value


def _strict_json(data: bytes) -> Any:
    """JSON as Triton reads it: UTF-8 only, no repeated keys, no number beyond double's range, no NaN/Infinity."""
    try:
        text = data.decode("utf-8")
        return json.loads(
            text,
            object_pairs_hook=_no_duplicate_keys,
            parse_constant=_finite_number,
            parse_float=_finite_number,
        )
    except (ValueError, RecursionError) as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise RequestRejected(f"the request is not valid JSON in UTF-8 ({str(err)[:80]})") from None


def _check_request_fields(request: Any) -> None:
    """The top-level fields Triton reads besides the input, typed as it expects them."""
    if not isinstance(request, dict):
        raise RequestRejected("the request must be a JSON object holding 'inputs'")
    if "id" in request and not isinstance(request["id"], str):
        raise RequestRejected("'id' must be a string")
    outputs = request.get("outputs", [])
    if not isinstance(outputs, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) and isinstance(o.get("parameters", {}), dict)
        for o in outputs
    ):
        raise RequestRejected("'outputs' must be a list of objects, each with a string 'name'")
    parameters = request.get("parameters", {})
    if not isinstance(parameters, dict):
        raise RequestRejected("'parameters' must be an object")
    for key, value in parameters.items():
        if key in ("timeout", "priority") and (type(value) is not int or value < 0):
            raise RequestRejected(f"parameter {key!r} must be a non-negative integer")
        if not isinstance(value, str | bool | int | float):
            raise RequestRejected(f"parameter {key!r} must be a string, a boolean or a number")


def _check_shape(shape: Any, limits: RequestLimits) -> int:
    spec = limits.input.shape
    if not isinstance(shape, list) or not all(type(d) is int for d in shape) or len(shape) != len(spec):
        got = str(shape)[:60]
        raise RequestRejected(f"unexpected shape {got} for input {limits.input.name!r}; expected {_example(limits)}")
    if not 1 <= shape[0] <= limits.max_batch:
        raise RequestRejected(f"inference request batch-size must be <= {limits.max_batch} and ≥ 1; got {shape[0]}")
    refusal = limits.input.side_refusal(*shape[2:]) if len(shape) == 4 else None
    if refusal:
        raise RequestRejected(refusal)
    for axis, (got, want) in enumerate(zip(shape[1:], spec[1:], strict=True), start=1):
        fixed = isinstance(want, int) and want > 0
        if got != want if fixed else not 1 <= got <= MAX_INPUT_SIDE:  # a fixed side is the graph's, whatever it is
            raise RequestRejected(
                f"unexpected shape {shape} for input {limits.input.name!r}; expected {_example(limits)} (axis {axis})"
            )
    return math.prod(shape)


def _example(limits: RequestLimits) -> list[Any]:
    return ["N", *limits.input.shape[1:]]


def _count_values(data: Any, *, largest: float = math.inf) -> int:
    """How many numbers a (nested) JSON list holds; anything but lists of numbers of magnitude ≤ ``largest`` is
    refused."""
    if not isinstance(data, list):
        raise RequestRejected("the input needs 'data' (a list of numbers) or binary data")
    count, stack = 0, [data]
    while stack:
        for item in stack.pop():
            if isinstance(item, list):
                stack.append(item)
            elif isinstance(item, int | float) and not isinstance(item, bool):
                if abs(item) > largest:
                    raise RequestRejected(f"'data' holds {str(item)[:24]}, beyond the input's range (±{largest:.4g})")
                count += 1
            else:
                raise RequestRejected(f"'data' must hold numbers only; found {type(item).__name__}")
    return count
