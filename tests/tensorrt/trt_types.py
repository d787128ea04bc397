"""Argument checks for the TensorRT double: does a call match one of the stub's overloads, as pybind11 would decide?

pybind11 tries each overload in turn and raises TypeError ("incompatible function arguments") when none takes the
arguments: too many or too few, an unknown keyword, or a value its type caster refuses. The rules below are those
casters', as far as the project's calls reach: ``int`` takes integers and anything with ``__index__`` (never a
float), ``float`` takes integers and floats, ``str`` takes str and bytes (a ``pathlib.Path`` is refused), ``bool``
takes booleans, numbers and None (its conversion pass reads any number's truth), a pybind enum only its own members
(never an int), a class its instances and subclasses' (a user's logger or calibrator), ``list[T]`` any sequence but
a string, of T's. The implicit conversions TensorRT registers count too: a Python sequence of integers for ``Dims``
and ``Permutation``, a NumPy array for ``Weights``, and anything with the buffer protocol for
``typing_extensions.Buffer``. An annotation these rules do not know (a capsule, ``typing.Any``, stubgen's ``...``)
takes anything.
"""

import numbers
import types
from collections.abc import Sequence
from typing import Any

import numpy as np

from tests.tensorrt.trt_surface import Param, Signature

SEQUENCE_CONVERTIBLE = {"Dims", "Dims2", "Dims3", "Dims4", "DimsHW", "Permutation"}  # TensorRT's implicit conversions


def accepts(annotation: str, value: Any, module: types.ModuleType) -> bool:
    """Whether pybind11 would convert ``value`` for a parameter the stub annotates ``annotation``."""
    annotation = annotation.strip()
    if "|" in annotation:
        return any(accepts(part, value, module) for part in _top_level_split(annotation, "|"))
    if annotation == "None":
        return value is None
    if annotation.startswith("list[") and annotation.endswith("]"):
        item = annotation[len("list[") : -1]
        return _is_sequence(value) and all(accepts(item, v, module) for v in value)
    simple = _SIMPLE.get(annotation)
    if simple is not None:
        return simple(value)
    cls = _module_class(module, annotation)
    if cls is None:
        return True  # capsule, typing.Any, "...", typing.Callable: not modelled
    if isinstance(value, cls):
        return True
    if annotation in SEQUENCE_CONVERTIBLE:
        return _is_sequence(value) and all(_is_integer(v) for v in value)
    if annotation == "Weights":
        return isinstance(value, np.ndarray)
    return False


def binds(signature: Signature, args: tuple[Any, ...], kwargs: dict[str, Any], module: types.ModuleType) -> bool:
    """Whether the call's arguments fit this overload: count, keywords and every value's type."""
    params = list(signature)
    if params and params[-1].name == "*":
        return True  # a stub written as (*args, **kwargs)
    if len(args) > len(params):
        return False
    given: dict[str, Any] = {}
    for param, value in zip(params[: len(args)], args, strict=True):
        given[param.name] = value
    for name, value in kwargs.items():
        if name in given or name not in {p.name for p in params}:
            return False
        given[name] = value
    return all(_fits(p, given, module) for p in params)


def describe(signature: Signature) -> str:
    """An overload as pybind11's error message lists it."""
    parts = [
        f"{p.name}: {p.annotation or 'object'}" + ("" if p.default is None else f" = {p.default}") for p in signature
    ]
    return "(" + ", ".join(parts) + ")"


def _fits(param: Param, given: dict[str, Any], module: types.ModuleType) -> bool:
    if param.name not in given:
        return param.default is not None
    value = given[param.name]
    if value is None and param.default == "None":
        return True
    return accepts(param.annotation or "object", value, module)


def _is_integer(value: Any) -> bool:
    return not isinstance(value, float | str | bytes) and (
        isinstance(value, numbers.Integral) or hasattr(type(value), "__index__")
    )


def _is_sequence(value: Any) -> bool:
    return isinstance(value, Sequence | np.ndarray) and not isinstance(value, str | bytes)


def _is_buffer(value: Any) -> bool:
    try:
        memoryview(value)
    except TypeError:
        return False
    return True


_SIMPLE = {
    "int": _is_integer,
    "float": lambda v: isinstance(v, numbers.Real),
    "bool": lambda v: v is None or isinstance(v, bool | np.bool_ | numbers.Number),  # pybind11's convert pass
    "str": lambda v: isinstance(v, str | bytes),  # std::string's caster reads bytes too
    "bytes": lambda v: isinstance(v, bytes),
    "tuple": lambda v: isinstance(v, tuple),
    "list": lambda v: isinstance(v, list),
    "slice": lambda v: isinstance(v, slice),
    "numpy.ndarray": lambda v: isinstance(v, np.ndarray),
    "typing_extensions.Buffer": _is_buffer,
    "typing.Iterable": lambda v: hasattr(v, "__iter__") and not isinstance(v, str),
}


def _module_class(module: types.ModuleType, annotation: str) -> type | None:
    """The double's class for an annotation such as "ITensor" or "ILogger.Severity"; None if it names none."""
    obj: Any = module
    for part in annotation.removeprefix("tensorrt.").split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj if isinstance(obj, type) else None


def _top_level_split(text: str, sep: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += ch == "["
        depth -= ch == "]"
        if ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return [*parts, text[start:]]
