"""A test double of the ``tensorrt`` module, generated from the TensorRT 10.13 type stubs (``trt_surface``).

Every class, method, property and enum member of the chosen surface (10.13, or 11.x without the removed names)
exists, and nothing else: calling, reading or setting a name the version lacks raises AttributeError, a call
that fits none of the stub's overloads (an unknown keyword, too many or too few arguments, a value of a type the
binding would not convert: ``trt_types``) raises TypeError, as does setting a property to such a value, a class
without a constructor cannot be built from Python, and a
stub method without a behaviour here raises NotImplementedError (so the code under test cannot silently rely on
something the double does not model). Every call is recorded in ``machine.calls`` in order.

Behaviours live in ``fake_machine``: it parses the ONNX into layers as onnx-tensorrt names them (extra layers of
one node get ``<node>_<n>`` or "(Unnamed Layer* n)" names, all with the node in their metadata), "builds" a plan
that records each layer's precision, and "runs" it with ONNX Runtime on host memory read from the addresses it is
given. It is a double: it proves the code calls the API of that version in a valid order, never that TensorRT
builds or runs anything. Nothing it produces is a real plan (the bytes start with ``FAKE-TRT-PLAN``).
"""

import types
from typing import Any

from tests.tensorrt.fake_machine import Behaviours, FakeMachine
from tests.tensorrt.trt_surface import ClassSurface, Signature, Surface
from tests.tensorrt.trt_types import accepts, binds, describe


class _Obj:
    """Base of every generated class: attributes are the stub's names only."""

    _generated = True

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
            return
        attr = getattr(type(self), name, None)
        if isinstance(attr, property):
            if attr.fset is None:
                raise AttributeError(f"property {name!r} of {type(self).__name__} is read-only")
            attr.fset(self, value)
        elif type(self).__dict__.get("_generated") is None and attr is None:
            object.__setattr__(self, name, value)  # a user subclass (calibrator, logger) keeps its own state
        else:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @classmethod
    def _new(cls, **state: Any) -> Any:
        obj = object.__new__(cls)
        object.__setattr__(obj, "_state", dict(state))
        return obj


class _Enum(_Obj):
    def __init__(self, value: int) -> None:
        member = next((m for m in type(self)._members.values() if m._value == value), None)
        if member is None:
            raise ValueError(f"{value} is not a valid {type(self).__name__}")
        object.__setattr__(self, "_value", value)
        object.__setattr__(self, "_name", member._name)

    def __int__(self) -> int:
        return self._value

    __index__ = __int__

    def __eq__(self, other: Any) -> bool:
        return type(other) is type(self) and other._value == self._value

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._value))

    def __repr__(self) -> str:
        return f"<{type(self).__name__}.{self._name}: {self._value}>"


def make_tensorrt(surface: Surface, machine: FakeMachine) -> types.ModuleType:
    """A module named ``tensorrt`` exposing exactly ``surface``, behaving as ``machine`` says."""
    module = types.ModuleType("tensorrt")
    module.__version__ = surface.version
    module._machine = machine
    made: dict[str, type] = {}

    def build(cs: ClassSurface, qualname: str) -> type:
        if qualname in made:
            return made[qualname]
        bases = tuple(build(surface.classes[b], b) for b in cs.bases if b in surface.classes)
        is_enum = bool(cs.members) and "value" in cs.readonly
        if not bases:
            bases = (_Enum,) if is_enum else (bytes, _Obj) if cs.name == "IHostMemory" else (_Obj,)
        ns: dict[str, Any] = {"_generated": True, "__qualname__": qualname, "_members": {}, "_trt": module}
        for name, overloads in cs.methods.items():
            if name.startswith("__") and name not in ("__init__", "__enter__", "__exit__"):
                continue
            if name == "__init__" and is_enum:
                continue
            ns[name] = _method(machine, module, qualname, name, overloads)
        for name in cs.readonly | cs.readwrite:
            if is_enum and name in ("name", "value"):
                ns[name] = property(lambda self, n=name: self._name if n == "name" else self._value)
            else:
                setter_type = cs.setter_types.get(name, "") if name in cs.readwrite else None
                ns[name] = _property(machine, module, qualname, name, setter_type=setter_type)
        if "__init__" not in cs.methods and not is_enum:
            ns["__init__"] = _no_constructor(qualname)
        cls = type(cs.name, bases, ns)
        made[qualname] = cls
        for nested_name, nested in cs.nested.items():
            if any(hasattr(base, nested_name) for base in bases):
                continue  # stubgen repeats an inherited class (Logger.Severity is ILogger.Severity)
            setattr(cls, nested_name, build(nested, f"{qualname}.{nested_name}"))
        return cls

    for name, cs in surface.classes.items():
        setattr(module, name, build(cs, name))
    own_first = sorted(made.items(), key=lambda item: not issubclass(item[1], _Enum))
    for qualname, cls in own_first:  # enum members: each enum's own, then the aliases other classes hold
        for member, (enum_name, value) in _find(surface, qualname).members.items():
            own = cls.__name__ == enum_name and issubclass(cls, _Enum)
            enum_cls = cls if own else made.get(f"{qualname}.{enum_name}") or made.get(enum_name)
            enum_cls = enum_cls or _nested_enum(made, enum_name)
            if enum_cls is cls:
                obj = object.__new__(cls)
                object.__setattr__(obj, "_value", value)
                object.__setattr__(obj, "_name", member)
                cls._members[member] = obj
            else:
                obj = next(m for m in enum_cls._members.values() if m._value == value)
            type.__setattr__(cls, member, obj)
    for alias, (enum_name, value) in surface.aliases.items():
        setattr(module, alias, next(m for m in made[enum_name]._members.values() if m._value == value))
    for name, overloads in surface.functions.items():
        setattr(module, name, _method(machine, module, "tensorrt", name, overloads))
    return module


def _find(surface: Surface, qualname: str) -> ClassSurface:
    head, *rest = qualname.split(".")
    cs = surface.classes[head]
    for part in rest:
        cs = cs.nested[part]
    return cs


def _nested_enum(made: dict[str, type], name: str) -> type:
    return next(cls for q, cls in made.items() if q.endswith("." + name))


def _no_constructor(qualname: str) -> Any:
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        raise TypeError(f"tensorrt.{qualname}: No constructor defined!")

    return __init__


def _check_call(
    module: types.ModuleType, owner: str, name: str, overloads: list[Signature], args: tuple, kwargs: dict
) -> None:
    """TypeError, as pybind11 raises it, when the arguments fit none of the overloads."""
    if any(binds(signature, args, kwargs, module) for signature in overloads):
        return
    known = {p.name for signature in overloads for p in signature}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise TypeError(f"{owner}.{name}() got unexpected keyword arguments {unknown}; takes {sorted(known)}")
    given = [type(a).__name__ for a in args] + [f"{k}={type(v).__name__}" for k, v in kwargs.items()]
    supported = "; ".join(describe(signature) for signature in overloads)
    raise TypeError(
        f"{owner}.{name}(): incompatible function arguments. Supported: {supported}. Invoked with: {', '.join(given)}"
    )


def _method(machine: FakeMachine, module: types.ModuleType, owner: str, name: str, overloads: list[Signature]) -> Any:
    behaviour = getattr(Behaviours, f"{owner.replace('.', '_')}__{name.strip('_')}", None)

    def run(self: Any, args: tuple, kwargs: dict) -> Any:
        _check_call(module, owner, name, overloads, args, kwargs)
        if name == "__init__" and type(self).__dict__.get("_generated") is None:
            object.__setattr__(self, "_state", {})  # a user subclass calling the base constructor
            return None
        machine.record(f"{owner}.{name}")
        if f"{owner}.{name}" in machine.hooks:
            machine.hooks[f"{owner}.{name}"]()
        if behaviour is None:
            raise NotImplementedError(f"the fake tensorrt has no behaviour for {owner}.{name}")
        return behaviour(machine, self, *args, **kwargs)

    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        return run(self, args, kwargs)

    def function(*args: Any, **kwargs: Any) -> Any:  # the module's own: no self
        return run(None, args, kwargs)

    chosen = function if owner == "tensorrt" else call
    chosen.__name__ = name
    return chosen


def _property(
    machine: FakeMachine, module: types.ModuleType, owner: str, name: str, *, setter_type: str | None
) -> property:
    def get(self: Any) -> Any:
        if name in self._state:
            return self._state[name]
        behaviour = getattr(Behaviours, f"{owner}__get_{name}", None)
        if behaviour is None:
            raise NotImplementedError(f"the fake tensorrt has no value for {owner}.{name}")
        return behaviour(machine, self)

    def set_(self: Any, value: Any) -> None:
        if not accepts(setter_type, value, module):
            raise TypeError(f"{owner}.{name} takes {setter_type}; got {type(value).__name__}")
        machine.record(f"{owner}.{name}=")
        self._state[name] = value

    return property(get, None if setter_type is None else set_)
