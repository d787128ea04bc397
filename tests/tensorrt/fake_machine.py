"""What the TensorRT double does when called: parse an ONNX into layers the way onnx-tensorrt names them, "build" a
plan that records each layer's precision, run it with ONNX Runtime on host memory read from the given addresses,
and report layer information as the engine inspector does. Used only through ``fake_tensorrt.make_tensorrt``.
"""

import ctypes
import json
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

PLAN_MAGIC = b"FAKE-TRT-PLAN\n"
ONNX_DTYPES = {1: "FLOAT", 10: "HALF", 2: "UINT8", 3: "INT8", 6: "INT32", 7: "INT64", 9: "BOOL", 16: "BF16"}
FORMAT = {"FLOAT": "Row major linear FP32", "HALF": "Row major linear FP16 format", "INT8": "Row major Int8 format"}
DATATYPE = {"FLOAT": "Float", "HALF": "Half", "INT8": "Int8"}  # 11.x splits "Format/Datatype" into Format, DataType
UNKNOWN_SHAPE = "N/A due to dynamic shapes"


def tensor_fields(version: str, dtype: str, known: bool) -> dict[str, str]:
    """One layer output's format and type fields in the inspector JSON of TensorRT ``version``."""
    if version.startswith("10."):
        return {"Format/Datatype": FORMAT.get(dtype, dtype) if known else UNKNOWN_SHAPE}
    if not known:
        return {"Format": UNKNOWN_SHAPE, "DataType": UNKNOWN_SHAPE}
    return {"Format": FORMAT.get(dtype, dtype), "DataType": DATATYPE.get(dtype, dtype)}


@dataclass
class FakeMachine:
    """What the double's "GPU" does; tests set the knobs and read ``calls``."""

    gpu: str = "NVIDIA H100 80GB HBM3"
    calls: list[str] = field(default_factory=list)
    build_fails: bool = False
    timing_cache_lost: bool = False  # get_timing_cache() returns None after the build
    output_noise: float = 0.0  # added to every output: a wrong engine the parity gate must catch
    hooks: dict[str, Any] = field(default_factory=dict)  # "Class.method" → called before the behaviour
    parser_metadata: bool = True  # layers carry "[ONNX Layer: node]" (off: names and tensors are all there is)
    onnx_sessions: dict[str, Any] = field(default_factory=dict)
    contexts: list[Any] = field(default_factory=list)  # every execution context made, for the CUDA-graph checks
    profile_refused: bool = False  # add_optimization_profile returns -1, as TensorRT does for an invalid profile
    calibration_profile_refused: bool = False  # set_calibration_profile returns False (profile not set)
    no_context: bool = False  # create_execution_context() returns None, as TensorRT does out of device memory
    parser_error: str | None = None  # parse_from_file reports this (an op the parser has no importer for, …)
    io_dtype: str = "float32"  # what get_tensor_dtype answers for the input and the output
    static_plan: bool = False  # a plan from an ONNX with a static batch: fixed I/O shapes, no profile shapes
    # what host_cuda allocated as "device" memory, while it lives (a freed buffer's addresses may be reused by host
    # memory); TensorRT takes device addresses only
    device_memory: list[Any] = field(default_factory=list)  # weak references to the tensors
    # TensorRT keeps one logger a process: the first Builder's or Runtime's while any of them lives
    process_logger: Any = None
    logger_holders: Any = field(default_factory=weakref.WeakSet)

    # -- helpers ---------------------------------------------------------------------------------------------
    def record(self, name: str) -> None:
        self.calls.append(name)

    def check_device(self, address: int, what: str) -> None:
        """TensorRT reads and writes device memory only: a host address there is a crash or garbage on a GPU, so the
        double refuses it loudly (a real binding takes any integer)."""
        live = [tensor for ref in self.device_memory if (tensor := ref()) is not None]
        spans = [(t.data_ptr(), t.numel() * t.element_size()) for t in live]
        if not any(start <= address < start + size for start, size in spans):
            raise AssertionError(f"{what}: {address:#x} is not device memory (a host buffer passed to TensorRT?)")

    def register_logger(self, holder: Any, logger: Any) -> None:
        """What createInferBuilder/createInferRuntime do with their logger: a new one is ignored, with a warning to
        the one kept, while an object made with that one lives."""
        if not len(self.logger_holders):
            self.process_logger = logger
        elif logger is not self.process_logger:
            self.log(holder, "WARNING", "the logger passed differs from one already registered; the new one is ignored")
        self.logger_holders.add(holder)

    def log(self, obj: Any, severity: str, message: str) -> None:
        """A message to the process logger; TensorRT's own Logger prints it, which the fake leaves out."""
        logger = self.process_logger
        if logger is not None and type(logger).__dict__.get("_generated") is None:  # a user ILogger subclass
            logger.log(getattr(trt_of(obj).ILogger.Severity, severity), message)

    def index(self, name: str) -> int:
        """Position of the first call of ``name`` (ValueError if never called)."""
        return self.calls.index(name)


def trt_of(obj: Any) -> Any:
    return type(obj)._trt


class Behaviours:
    """``<Class>__<method>(machine, self, *args)``: what the double does for the calls the project makes."""

    # -- loggers ---------------------------------------------------------------------------------------------
    @staticmethod
    def Logger__init(machine: FakeMachine, self: Any, min_severity: Any = None) -> None:
        object.__setattr__(self, "_state", {"min_severity": min_severity})

    @staticmethod
    def ILogger__init(machine: FakeMachine, self: Any) -> None:
        object.__setattr__(self, "_state", {})

    # -- builder ---------------------------------------------------------------------------------------------
    @staticmethod
    def Builder__init(machine: FakeMachine, self: Any, logger: Any) -> None:
        object.__setattr__(self, "_state", {"logger": logger, "trt": _module_of(self)})
        machine.register_logger(self, logger)

    @staticmethod
    def Builder__create_network(machine: FakeMachine, self: Any, flags: int = 0) -> Any:
        trt = trt_of(self)
        return trt.INetworkDefinition._new(trt=trt, flags=flags, layers=[], inputs=[], outputs=[], onnx=None)

    @staticmethod
    def Builder__create_builder_config(machine: FakeMachine, self: Any) -> Any:
        trt = trt_of(self)
        return trt.IBuilderConfig._new(trt=trt, flags_set=set(), profiles=[], pools={}, cache=None)

    @staticmethod
    def Builder__create_optimization_profile(machine: FakeMachine, self: Any) -> Any:
        return trt_of(self).IOptimizationProfile._new(shapes={})

    @staticmethod
    def Builder__build_serialized_network(machine: FakeMachine, self: Any, network: Any, config: Any) -> Any:
        trt = trt_of(self)
        c = config._state
        if not c["profiles"]:
            raise AssertionError("build before an optimisation profile was added")
        machine.log(self, "INFO", "[fake] building the engine")
        machine.log(self, "VERBOSE", "[fake] tactic 0x0 timed")
        if machine.build_fails:
            machine.log(self, "ERROR", "[fake] no tactic fits the workspace")
            return None
        if network._state["inputs"][0] not in c["profiles"][0]._state["shapes"]:
            machine.record("error: the profile does not name the network's input")
            return None  # TensorRT logs the error and builds nothing
        names = {f._name for f in c["flags_set"]}
        strongly = bool(network._state["flags"] & (1 << 1)) or not hasattr(trt.BuilderFlag, "FP16")
        calibrator = c.get("int8_calibrator")
        calibration = None
        if "INT8" in names and calibrator is not None:
            calibration = _calibrate(machine, calibrator, network._state["inputs"][0])
        low = "HALF" if names & {"FP16", "INT8"} else None
        layers = []
        for layer in network._state["layers"]:
            s = layer._state
            outputs = []
            for t in s["outputs"]:
                dtype = t._state["dtype"]._name
                pinned = s.get("precision") is not None and s["precision"]._name == "FLOAT"
                if dtype == "FLOAT" and low and not strongly and not (pinned and "OBEY_PRECISION_CONSTRAINTS" in names):
                    dtype = low
                outputs.append({"name": t._state["name"], "dtype": dtype})
            layers.append({"name": s["name"], "metadata": s["metadata"], "type": s["type"]._name, "outputs": outputs})
        profile = c["profiles"][0]._state["shapes"]
        plan = {
            "version": trt.__version__,
            "gpu": machine.gpu,
            "onnx": network._state["onnx"],
            "input": network._state["inputs"][0],
            "output": network._state["outputs"][0],
            "profile": {k: [list(map(int, s)) for s in v] for k, v in profile.items()},
            "layers": layers,
            "output_tail": network._state["output_tail"],
            "verbosity": c.get("profiling_verbosity")._name if c.get("profiling_verbosity") else "LAYER_NAMES_ONLY",
            "calibration": calibration,
            "timing_cache": c["cache"]._state["entries"] if c["cache"] is not None else None,
        }
        if c["cache"] is not None:
            c["cache"]._state["entries"] = sorted({*c["cache"]._state["entries"], f"{machine.gpu}:{len(layers)}"})
        return host_memory(trt, PLAN_MAGIC + json.dumps(plan).encode())

    # -- network and parser ------------------------------------------------------------------------------------
    @staticmethod
    def OnnxParser__init(machine: FakeMachine, self: Any, network: Any, logger: Any) -> None:
        object.__setattr__(self, "_state", {"network": network, "errors": [], "trt": trt_of(network)})

    @staticmethod
    def OnnxParser__parse_from_file(machine: FakeMachine, self: Any, model: str) -> bool:
        try:
            if machine.parser_error:
                raise ValueError(machine.parser_error)
            proto = onnx.shape_inference.infer_shapes(onnx.load(model))
        except Exception as err:  # the real parser reports, it does not raise
            self._state["errors"].append(str(err))
            machine.log(self._state["network"], "ERROR", f"[fake] ONNX parser: {err}")
            return False
        _parse(machine, self._state["trt"], self._state["network"], proto, str(Path(model).resolve()))
        return True

    @staticmethod
    def OnnxParser__get_error(machine: FakeMachine, self: Any, index: int) -> Any:
        return self._state["errors"][index]

    @staticmethod
    def OnnxParser__get_num_errors(machine: FakeMachine, self: Any) -> int:
        return len(self._state["errors"])

    @staticmethod
    def INetworkDefinition__get_num_layers(machine: FakeMachine, self: Any) -> int:
        return len(self._state["layers"])

    @staticmethod
    def INetworkDefinition__get_layer(machine: FakeMachine, self: Any, index: int) -> Any:
        return self._state["layers"][index]

    @staticmethod
    def ILayer__get_output(machine: FakeMachine, self: Any, index: int) -> Any:
        return self._state["outputs"][index]

    @staticmethod
    def ILayer__get_input(machine: FakeMachine, self: Any, index: int) -> Any:
        return self._state["inputs"][index]

    @staticmethod
    def ILayer__get_num_outputs(machine: FakeMachine, self: Any) -> int:
        return len(self._state["outputs"])

    @staticmethod
    def ILayer__get_num_inputs(machine: FakeMachine, self: Any) -> int:
        return len(self._state["inputs"])

    @staticmethod
    def ILayer__set_output_type(machine: FakeMachine, self: Any, index: int, dtype: Any) -> None:
        self._state.setdefault("output_types", {})[index] = dtype

    # -- builder config ----------------------------------------------------------------------------------------
    @staticmethod
    def IBuilderConfig__set_memory_pool_limit(machine: FakeMachine, self: Any, pool: Any, pool_size: int) -> None:
        self._state["pools"][pool._name] = pool_size

    @staticmethod
    def IBuilderConfig__add_optimization_profile(machine: FakeMachine, self: Any, profile: Any) -> int:
        shapes = profile._state["shapes"].values()
        ordered = all(a <= b <= c for lo, opt, hi in shapes for a, b, c in zip(lo, opt, hi, strict=True))
        if machine.profile_refused or not shapes or not ordered:
            return -1
        self._state["profiles"].append(profile)
        return len(self._state["profiles"]) - 1

    @staticmethod
    def IBuilderConfig__set_calibration_profile(machine: FakeMachine, self: Any, profile: Any) -> bool:
        return not machine.calibration_profile_refused

    @staticmethod
    def IBuilderConfig__set_flag(machine: FakeMachine, self: Any, flag: Any) -> None:
        self._state["flags_set"].add(flag)

    @staticmethod
    def IBuilderConfig__clear_flag(machine: FakeMachine, self: Any, flag: Any) -> None:
        self._state["flags_set"].discard(flag)

    @staticmethod
    def IBuilderConfig__create_timing_cache(machine: FakeMachine, self: Any, serialized_timing_cache: Any) -> Any:
        raw = bytes(serialized_timing_cache)
        entries = json.loads(raw) if raw else []
        return trt_of(self).ITimingCache._new(entries=entries)

    @staticmethod
    def IBuilderConfig__set_timing_cache(machine: FakeMachine, self: Any, cache: Any, ignore_mismatch: bool) -> bool:
        if not ignore_mismatch and any(not e.startswith(machine.gpu + ":") for e in cache._state["entries"]):
            return False  # a cache from another GPU is rejected unless mismatches are ignored
        self._state["cache"] = cache
        return True

    @staticmethod
    def IBuilderConfig__get_timing_cache(machine: FakeMachine, self: Any) -> Any:
        return None if machine.timing_cache_lost else self._state["cache"]

    @staticmethod
    def ITimingCache__combine(machine: FakeMachine, self: Any, input_cache: Any, ignore_mismatch: bool) -> bool:
        theirs = input_cache._state["entries"]
        if not ignore_mismatch and any(not e.startswith(machine.gpu + ":") for e in theirs):
            return False
        self._state["entries"] = sorted({*self._state["entries"], *theirs})
        return True

    @staticmethod
    def ITimingCache__serialize(machine: FakeMachine, self: Any) -> Any:
        return host_memory(_module_of(self), json.dumps(self._state["entries"]).encode())

    @staticmethod
    def IOptimizationProfile__set_shape(
        machine: FakeMachine, self: Any, input: str, min: Any, opt: Any, max: Any
    ) -> None:
        # the binding raises where setDimensions refuses: a negative dim, or MIN ≤ OPT ≤ MAX broken
        shapes = {"min": tuple(min), "opt": tuple(opt), "max": tuple(max)}
        previous: tuple[int, ...] | None = None
        for which, dims in shapes.items():
            broken = previous is not None and (
                len(dims) != len(previous) or any(a > b for a, b in zip(previous, dims, strict=True))
            )
            if any(d < 0 for d in dims) or broken:
                raise RuntimeError(f"Shape provided for {which} is inconsistent with other shapes.")
            previous = dims
        self._state["shapes"][input] = tuple(shapes.values())

    # -- runtime -----------------------------------------------------------------------------------------------
    @staticmethod
    def Runtime__init(machine: FakeMachine, self: Any, logger: Any) -> None:
        object.__setattr__(self, "_state", {"trt": _module_of(self)})
        machine.register_logger(self, logger)

    @staticmethod
    def Runtime__deserialize_cuda_engine(machine: FakeMachine, self: Any, serialized_engine: Any) -> Any:
        raw = bytes(serialized_engine)
        if not raw.startswith(PLAN_MAGIC):
            return None  # TensorRT logs an error and returns None for bytes that are not its plan
        plan = json.loads(raw[len(PLAN_MAGIC) :])
        trt = self._state["trt"]
        if plan["version"] != trt.__version__:
            return None  # a plan from another TensorRT release is refused the same way
        return trt.ICudaEngine._new(trt=trt, plan=plan)

    @staticmethod
    def ICudaEngine__get_num_io_tensors(machine: FakeMachine, self: Any) -> int:
        return 2

    @staticmethod
    def ICudaEngine__get_tensor_name(machine: FakeMachine, self: Any, index: int) -> str:
        return (self._state["plan"]["input"], self._state["plan"]["output"])[index]

    @staticmethod
    def ICudaEngine__get_tensor_mode(machine: FakeMachine, self: Any, name: str) -> Any:
        mode = trt_of(self).TensorIOMode
        return mode.INPUT if name == self._state["plan"]["input"] else mode.OUTPUT

    @staticmethod
    def ICudaEngine__get_tensor_dtype(machine: FakeMachine, self: Any, name: str) -> Any:
        return getattr(trt_of(self), machine.io_dtype)

    @staticmethod
    def ICudaEngine__get_tensor_shape(machine: FakeMachine, self: Any, name: str) -> Any:
        plan = self._state["plan"]
        lo, _, hi = plan["profile"][plan["input"]]
        dims = list(hi if name == plan["input"] else (hi[0], *plan["output_tail"]))
        if not machine.static_plan and lo[0] != hi[0]:
            dims[0] = -1  # the dynamic batch
        return tuple(dims)

    @staticmethod
    def ICudaEngine__get_tensor_profile_shape(machine: FakeMachine, self: Any, name: str, profile_index: int) -> Any:
        if machine.static_plan:  # not documented for a static engine: the worst case, dims that say nothing
            raise ValueError("__len__() should return >= 0")
        return [tuple(s) for s in self._state["plan"]["profile"][name]]

    @staticmethod
    def ICudaEngine__create_execution_context(machine: FakeMachine, self: Any, *args: Any) -> Any:
        if machine.no_context:
            return None
        context = trt_of(self).IExecutionContext._new(trt=trt_of(self), engine=self, shapes={}, addresses={})
        machine.contexts.append(context)
        return context

    @staticmethod
    def ICudaEngine__create_engine_inspector(machine: FakeMachine, self: Any) -> Any:
        return trt_of(self).EngineInspector._new(engine=self, execution_context=None)

    @staticmethod
    def IExecutionContext__set_input_shape(machine: FakeMachine, self: Any, name: str, shape: Any) -> bool:
        plan = self._state["engine"]._state["plan"]
        lo, _, hi = plan["profile"].get(name, (None, None, None))
        if lo is None or not all(a <= b <= c for a, b, c in zip(lo, shape, hi, strict=True)):
            return False
        self._state["shapes"][name] = tuple(shape)
        return True

    @staticmethod
    def IExecutionContext__get_tensor_shape(machine: FakeMachine, self: Any, name: str) -> Any:
        plan = self._state["engine"]._state["plan"]
        batch = self._state["shapes"][plan["input"]][0]
        return (batch, *plan["output_tail"]) if name == plan["output"] else self._state["shapes"][name]

    @staticmethod
    def IExecutionContext__set_tensor_address(machine: FakeMachine, self: Any, name: str, memory: int) -> bool:
        plan = self._state["engine"]._state["plan"]
        if name not in (plan["input"], plan["output"]):
            return False
        machine.check_device(memory, f"set_tensor_address({name!r})")
        self._state["addresses"][name] = memory
        return True

    @staticmethod
    def IExecutionContext__execute_async_v3(machine: FakeMachine, self: Any, stream_handle: int) -> bool:
        plan = self._state["engine"]._state["plan"]
        if stream_handle == 0:
            machine.record("warning: legacy default stream")
        shape = self._state["shapes"][plan["input"]]
        self._state["enqueued"] = shape  # the shape the context's internal state was last set up for
        x = _read(self._state["addresses"][plan["input"]], shape)
        session = machine.onnx_sessions.get(plan["onnx"])
        if session is None:
            import onnxruntime as ort

            session = machine.onnx_sessions[plan["onnx"]] = ort.InferenceSession(plan["onnx"])
        y = session.run(None, {plan["input"]: x})[0].astype(np.float32) + np.float32(machine.output_noise)
        _write(self._state["addresses"][plan["output"]], y)
        return True

    @staticmethod
    def EngineInspector__get_engine_information(machine: FakeMachine, self: Any, format: Any) -> str:
        plan = self._state["engine"]._state["plan"]
        if plan["verbosity"] != "DETAILED":
            return json.dumps({"Layers": [layer["name"] for layer in plan["layers"]]})
        context = self._state["execution_context"]
        known = context is not None and plan["input"] in context._state["shapes"]
        layers = [
            {
                "Name": layer["name"],
                "LayerType": layer["type"],
                "Metadata": layer["metadata"],
                "Outputs": [
                    {"Name": o["name"], **tensor_fields(_module_of(self).__version__, o["dtype"], known)}
                    for o in layer["outputs"]
                ],
            }
            for layer in plan["layers"]
        ]
        return json.dumps({"Layers": layers, "Bindings": [plan["input"], plan["output"]]})


def _module_of(obj: Any) -> Any:
    return type(obj)._trt


def host_memory(trt: Any, data: bytes) -> Any:
    memory = bytes.__new__(trt.IHostMemory, data)
    object.__setattr__(memory, "_state", {"nbytes": len(data)})
    return memory


def _calibrate(machine: "FakeMachine", calibrator: Any, input_name: str) -> dict[str, Any]:
    """What TensorRT does with a calibrator: batch size, the cache, then batches until None; errors inside
    get_batch are swallowed (the binding logs them) and end the calibration."""
    size = calibrator.get_batch_size()
    cache = calibrator.read_calibration_cache()
    if cache:
        return {"batch": size, "batches": 0, "from_cache": True}
    count = 0
    while True:
        try:
            pointers = calibrator.get_batch([input_name])
        except Exception:
            pointers = None
        if not pointers:
            break
        for pointer in pointers:  # get_batch must give device pointers (TensorRT's calibrator documentation)
            machine.check_device(pointer, "get_batch")
        count += 1
    calibrator.write_calibration_cache(b"fake scales")
    return {"batch": size, "batches": count, "from_cache": False}


def node_name(node: onnx.NodeProto) -> str:
    """onnx-tensorrt's getNodeName: the node's name, or ``node_of_<first output>`` for an unnamed node."""
    return node.name or f"node_of_{node.output[0]}"


def _parse(machine: "FakeMachine", trt: Any, network: Any, proto: onnx.ModelProto, path: str) -> None:
    """Layers as onnx-tensorrt registers them: the first under the node's name, further ones suffixed or unnamed,
    every one carrying the node in its metadata."""
    types_ = {
        v.name: v.type.tensor_type.elem_type for v in (*proto.graph.value_info, *proto.graph.input, *proto.graph.output)
    }
    inits = {i.name for i in proto.graph.initializer}
    state = network._state
    state["onnx"] = path
    state["inputs"] = [i.name for i in proto.graph.input if i.name not in inits]
    state["outputs"] = [o.name for o in proto.graph.output]
    out_dims = proto.graph.output[0].type.tensor_type.shape.dim[1:]
    unnamed = 0

    def tensor(name: str, elem: int) -> Any:
        dtype = getattr(trt.DataType, ONNX_DTYPES.get(elem, "FLOAT"))
        return trt.ITensor._new(name=name, dtype=dtype)

    def layer(name: str, node: onnx.NodeProto, inputs: list[str], outputs: list[Any], kind: str) -> None:
        state["layers"].append(
            trt.ILayer._new(
                name=name,
                metadata=f"[ONNX Layer: {node_name(node)}]" if machine.parser_metadata else "",
                type=getattr(trt.LayerType, kind),
                outputs=outputs,
                inputs=[tensor(i, types_.get(i, 1)) for i in inputs if i and i not in inits],
                precision=None,
            )
        )

    for node in proto.graph.node:
        elem = types_.get(node.output[0], 1)
        kind = {"Constant": "CONSTANT", "Shape": "SHAPE", "Conv": "CONVOLUTION", "ReduceMean": "REDUCE"}.get(
            node.op_type, "ELEMENTWISE"
        )
        outs = [tensor(o, types_.get(o, 1)) for o in node.output]
        inputs = list(node.input)
        if node.op_type == "ReduceMean":  # a reshape the parser adds before the reduction, unnamed
            unnamed += 1
            helper = f"(Unnamed Layer* {unnamed}) [Shuffle]"
            layer(helper, node, inputs[:1], [tensor(helper + "_output", elem)], "SHUFFLE")
            inputs = [helper + "_output", *inputs[1:]]
        name = node_name(node)
        if node.op_type == "Div":  # a second layer for one node: suffixed with the parser's counter
            layer(name, node, inputs, [tensor(name + "_tmp", elem)], kind)
            layer(f"{name}_{len(state['layers'])}", node, [name + "_tmp"], outs, kind)
            continue
        layer(name, node, inputs, outs, kind)
    state["output_tail"] = [d.dim_value for d in out_dims]


def _read(address: int, shape: tuple[int, ...]) -> np.ndarray:
    count = int(np.prod(shape))
    return np.ctypeslib.as_array((ctypes.c_float * count).from_address(address)).reshape(shape).copy()


def _write(address: int, values: np.ndarray) -> None:
    flat = np.ascontiguousarray(values, dtype=np.float32).ravel()
    ctypes.memmove(address, flat.ctypes.data, flat.nbytes)
