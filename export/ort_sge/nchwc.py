"""Keep ONNX Runtime's CPU graph in its blocked NCHWc layout across the fused SGE op (export/ort_sge/graph.py).

ORT's NCHWc transformer runs convolutions in a blocked layout ([N, C/8, H, W, 8] on AVX2, /16 on AVX-512) and puts
``ReorderOutput`` before, and ``ReorderInput`` after, every node it does not know: around each fused SGE block that
is two extra passes over the activation map. The kernel also reads the blocked layout (attribute ``block``), so
``drop_reorders`` takes an ORT-optimised graph (``SessionOptions.optimized_model_filepath``) and wires each
SgeResidual straight to the blocked tensors. It is safe only on the machine (block size) it was optimised for,
which is why ``export/ort_sge/session.py`` does it when a session is opened, never at export.
"""

import contextlib
import ctypes
import ctypes.util
import functools
import logging
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from export.external_data import SIZE_THRESHOLD, data_file_for

logger = logging.getLogger(__name__)

NCHWC_DOMAIN = "com.microsoft.nchwc"
OPTIMIZED_NAME = "optimized.onnx"  # ORT's saved optimised graph, in a scratch directory
FUSED_DOMAIN = "ai.sgedeploy"
FUSED_OP = "SgeResidual"
QUANTIZED_OP = "SgeResidualQ"  # its quantised-IO form (export/ort_sge/quantized_io.py)


def node_attribute(node: onnx.NodeProto, name: str, default: int | None = None) -> int | None:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def is_op(node: onnx.NodeProto | None, domain: str, op_type: str) -> bool:
    return node is not None and node.domain == domain and node.op_type == op_type


def block_probe() -> onnx.ModelProto:
    """A 1×1 convolution from 32 to 20 channels: ORT pads its filter to the next whole NCHWc block."""
    weight = numpy_helper.from_array(np.ones((20, 32, 1, 1), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])],
        "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 20, 4, 4])],
        [weight],
    )
    # IR 8 (opset 17's): onnx's newest IR (14 in onnx 1.23) is refused by an older ORT (1.31 reads up to 13)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@functools.lru_cache(maxsize=1)
def nchwc_block_size() -> int:
    """ORT's NCHWc block on this CPU (8 on AVX2, 16 on AVX-512), or 0 where ORT does not use NCHWc.

    Read off ORT itself: a 1×1 convolution to 20 channels gets its filter padded to the next whole block.
    """
    optimized = optimized_graph(block_probe().SerializeToString(), threads=1)
    padded_to_block = {24: 8, 32: 16}  # 20 output channels pad to 24 with 8-wide blocks, to 32 with 16-wide ones
    for node in optimized.graph.node:
        if is_op(node, NCHWC_DOMAIN, "Conv"):
            for init in optimized.graph.initializer:
                if init.name == node.input[1]:
                    return padded_to_block.get(init.dims[0], 0)
    return 0


def optimized_graph(
    model: bytes | str, *, threads: int, custom_ops: str | None = None, weights_dir: str | Path | None = None
) -> onnx.ModelProto:
    """ORT's fully optimised CPU graph of ``model`` (bytes or a path), as ORT saves it.

    With ``weights_dir``, ORT writes the optimised graph there with its weights in a side file
    (``optimized.onnx.data``), and only the graph's structure is read back: a session opened from
    ``weights_dir`` then maps the weights instead of copying them once more (export/external_data.py).
    """
    import onnxruntime as ort

    with contextlib.nullcontext(weights_dir) if weights_dir is not None else tempfile.TemporaryDirectory() as scratch:
        where = Path(scratch)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.optimized_model_filepath = str(where / OPTIMIZED_NAME)
        options.log_severity_level = 3  # ORT warns that a saved NCHWc graph is machine-specific: that is the point
        if weights_dir is not None:
            options.add_session_config_entry(
                "session.optimized_model_external_initializers_file_name", data_file_for(OPTIMIZED_NAME)
            )
            options.add_session_config_entry(
                "session.optimized_model_external_initializers_min_size_in_bytes", str(SIZE_THRESHOLD)
            )
        if custom_ops is not None:
            options.register_custom_ops_library(custom_ops)
        ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])  # saves the graph, then goes
        release_free_heap()
        return onnx.load(str(where / OPTIMIZED_NAME), load_external_data=weights_dir is None)


def release_free_heap() -> None:
    """Hand the heap pages the C allocator keeps after a large free back to the OS (glibc's ``malloc_trim``; a
    no-op elsewhere). After the optimising session, glibc sometimes keeps ~150 MB of its freed weights, which the
    next session's then add to; measured on sge_resnet50 (scripts/reports/deploy_infer_cold_start.txt)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def fits_block(channels: int | None, groups: int, block: int) -> bool:
    """Whether the kernel can read a ``channels``-channel map of ``groups`` groups in ``block``-wide NCHWc."""
    if not channels or channels % block or channels % groups:
        return False
    per_group = channels // groups
    return block % per_group == 0 if per_group < block else per_group % block == 0


def graph_links(graph: onnx.GraphProto) -> tuple[dict[str, onnx.NodeProto], dict[str, list[onnx.NodeProto]]]:
    """Each tensor's producing node, and the nodes that read it."""
    producer = {out: n for n in graph.node for out in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for n in graph.node:
        for name in n.input:
            consumers[name].append(n)
    return producer, consumers


def rename_input(readers: list[onnx.NodeProto], old: str, new: str) -> None:
    """Make ``readers`` read tensor ``new`` wherever they read ``old``."""
    for reader in readers:
        reader.input[:] = [new if name == old else name for name in reader.input]


def relist(graph: onnx.GraphProto, kept: list[onnx.NodeProto], added: list[onnx.NodeProto]) -> None:
    """Make ``graph``'s node list ``kept`` (in its order) with each node of ``added`` right after the producer of its
    first input (and a node added to read an added one right after that), so the list stays topologically sorted."""
    after: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in added:
        after[node.input[0]].append(node)

    def place(node: onnx.NodeProto) -> None:
        graph.node.append(node)
        for reader in after[node.output[0]]:
            place(reader)

    del graph.node[:]
    for node in kept:
        place(node)


def _reorder_output(blocked: str, plain: str, channels: int | None) -> onnx.NodeProto:
    return helper.make_node(
        "ReorderOutput", [blocked], [plain], name=plain, domain=NCHWC_DOMAIN, channels=channels, channels_last=0
    )


def drop_reorders(model: onnx.ModelProto, *, block: int) -> int:
    """Rewire ORT-optimised ``model`` in place so its SgeResidual nodes read and write NCHWc; how many were.

    A node is rewritten when its map fits the block (``fits_block``), its output is not a graph output, and each of
    its two activations comes from a ``ReorderOutput`` or from another rewritten node. Its output's ``ReorderInput``
    consumers are bypassed; any other consumer (the head's pooling, a node left in NCHW) reads it through one new
    ``ReorderOutput``.
    """
    graph = model.graph
    producer, consumers = graph_links(graph)
    graph_outputs = {o.name for o in graph.output}

    def plain_reorder_out(node: onnx.NodeProto | None) -> bool:
        return is_op(node, NCHWC_DOMAIN, "ReorderOutput") and not node_attribute(node, "channels_last", 0)

    def plain_reorder_in(node: onnx.NodeProto) -> bool:
        return is_op(node, NCHWC_DOMAIN, "ReorderInput") and not node_attribute(node, "channels_last", 0)

    fused = [n for n in graph.node if is_op(n, FUSED_DOMAIN, FUSED_OP)]
    channels: dict[str, int | None] = {}  # of each fused node's output; nodes are in topological order
    for n in fused:
        source = producer.get(n.input[0])
        channels[n.output[0]] = (
            node_attribute(source, "channels") if plain_reorder_out(source) else channels.get(n.input[0])
        )
    chosen = {
        id(n)
        for n in fused
        if fits_block(channels[n.output[0]], node_attribute(n, "groups"), block)
        and n.output[0] not in graph_outputs
        and not any(plain_reorder_in(c) and c.output[0] in graph_outputs for c in consumers[n.output[0]])
    }
    changed = True
    while changed:  # drop nodes whose inputs cannot come in the blocked layout, until nothing changes
        changed = False
        for n in fused:
            if id(n) in chosen and not all(
                plain_reorder_out(producer.get(name)) or id(producer.get(name)) in chosen for name in n.input[:2]
            ):
                chosen.discard(id(n))
                changed = True

    removed: set[int] = set()
    added: list[onnx.NodeProto] = []
    for n in fused:
        if id(n) not in chosen:
            continue
        for i in (0, 1):
            source = producer.get(n.input[i])
            if plain_reorder_out(source):
                n.input[i] = source.input[0]
        blocked = n.output[0]
        plain_readers = [c for c in consumers[blocked] if not plain_reorder_in(c) and id(c) not in chosen]
        for c in consumers[blocked]:
            if plain_reorder_in(c):  # its consumers now read the fused node's blocked output directly
                rename_input(consumers[c.output[0]], c.output[0], blocked)
                removed.add(id(c))
        pools = [c for c in plain_readers if is_op(c, "", "GlobalAveragePool")]
        for pool in pools:  # pool in the blocked layout, then reorder the [N, C, 1, 1] result (as ORT does in ResNet)
            pooled = f"{pool.output[0]}_nchwc"
            added.append(helper.make_node("GlobalAveragePool", [blocked], [pooled], name=pooled, domain=NCHWC_DOMAIN))
            added.append(_reorder_output(pooled, pool.output[0], channels[blocked]))
        plain_readers = [c for c in plain_readers if not is_op(c, "", "GlobalAveragePool")]
        removed.update(map(id, pools))
        if plain_readers:
            plain = f"{blocked}_nchw"
            added.append(_reorder_output(blocked, plain, channels[blocked]))
            rename_input(plain_readers, blocked, plain)
        for a in n.attribute:
            if a.name == "block":
                a.i = block
    still_read = {name for n in graph.node if id(n) not in removed for name in n.input}
    still_read |= {name for n in added for name in n.input} | graph_outputs
    kept = [
        n for n in graph.node if id(n) not in removed and not (plain_reorder_out(n) and n.output[0] not in still_read)
    ]
    relist(graph, kept, added)
    logger.info("NCHWc: %d of %d fused SGE blocks read the blocked layout directly", len(chosen), len(fused))
    return len(chosen)
