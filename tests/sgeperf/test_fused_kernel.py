"""The compiled SgeResidual kernel against a float64 NumPy transcription of the official SGE, in NCHW and NCHWc.

Each case is a one-op ONNX graph run by ONNX Runtime with the library built at install (export/ort_sge/kernels).
The NCHWc cases wrap the op between two 1×1 identity convolutions, so that ORT runs them blocked and
``drop_reorders`` hands the kernel blocked tensors; the convolutions copy exactly, so the reference is unchanged.
"""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from export.ort_sge.graph import DOMAIN, DOMAIN_VERSION, OP_TYPE
from export.ort_sge.nchwc import fits_block, nchwc_block_size
from export.ort_sge.session import cpu_session, plan_session

EPS = 1e-5
ATOL = 2e-5  # float32 kernel vs float64 reference, on O(1) activations


def reference(x, identity, gamma, beta, groups: int) -> np.ndarray:
    """relu(SGE(x) + identity) in float64, written from the paper's equations and the official code's numerics."""
    n, c, h, w = x.shape
    xg = x.astype(np.float64).reshape(n, groups, c // groups, h * w)
    similarity = (xg * xg.mean(axis=-1, keepdims=True)).sum(axis=2)  # (n, G, hw)
    centred = similarity - similarity.mean(axis=-1, keepdims=True)
    normalised = centred / (centred.std(axis=-1, ddof=1, keepdims=True) + EPS)  # unbiased std, eps outside
    with np.errstate(over="ignore"):  # the hard cases' large negative logits: exp gives inf, the gate exactly 0
        gate = 1.0 / (1.0 + np.exp(-(normalised * gamma[None, :, None] + beta[None, :, None])))
    out = (xg * gate[:, :, None, :]).reshape(n, c, h, w) + identity
    return np.maximum(out, 0.0)


def fused_graph(shape, groups: int, rng, *, around_convs: bool, final_conv: bool = True) -> onnx.ModelProto:
    _, c, h, w = shape
    gamma = numpy_helper.from_array(rng.standard_normal(groups).astype(np.float32), "gamma")
    beta = numpy_helper.from_array(rng.standard_normal(groups).astype(np.float32), "beta")
    eye = numpy_helper.from_array(np.eye(c, dtype=np.float32).reshape(c, c, 1, 1), "eye")
    nodes, x, identity = [], "x", "identity"
    if around_convs:
        nodes += [
            helper.make_node("Conv", ["x", "eye"], ["x_c"]),
            helper.make_node("Conv", ["identity", "eye"], ["i_c"]),
        ]
        x, identity = "x_c", "i_c"
    fused_out = "fused" if around_convs and final_conv else "y"
    nodes.append(
        helper.make_node(
            OP_TYPE, [x, identity, "gamma", "beta"], [fused_out], domain=DOMAIN, groups=groups, eps=EPS, block=0
        )
    )
    if around_convs and final_conv:
        nodes.append(helper.make_node("Conv", ["fused", "eye"], ["y"]))
    value = helper.make_tensor_value_info
    graph = helper.make_graph(
        nodes,
        "sge_residual",
        [value("x", TensorProto.FLOAT, ["n", c, h, w]), value("identity", TensorProto.FLOAT, ["n", c, h, w])],
        [value("y", TensorProto.FLOAT, ["n", c, h, w])],
        [gamma, beta, eye] if around_convs else [gamma, beta],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, DOMAIN_VERSION)]
    return helper.make_model(graph, opset_imports=opsets)


def run(model: onnx.ModelProto, tmp_path, x, identity):
    path = tmp_path / "fused.onnx"
    onnx.save(model, str(path))
    plan = plan_session(path)
    session = cpu_session(plan, threads=2, spinning=False)
    return plan, session.run(None, {"x": x, "identity": identity})[0]


def params(model: onnx.ModelProto) -> tuple[np.ndarray, np.ndarray]:
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return inits["gamma"], inits["beta"]


# (channels, groups): channels per group 1, 2, 4 (several groups share an 8-lane block), 8, 16, 32 (a group spans
# blocks); feature sizes with H·W not a multiple of 8 or 4 exercise the vector loops' tails.
GROUPINGS = [(32, 32), (32, 16), (64, 16), (64, 8), (64, 4), (128, 4)]
SIZES = [(7, 7), (5, 9), (8, 8), (1, 2)]


@pytest.mark.parametrize(("channels", "groups"), GROUPINGS)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("around_convs", [False, True], ids=["nchw", "nchwc"])
def test_kernel_matches_float64_reference(channels, groups, size, around_convs, tmp_path):
    rng = np.random.default_rng(channels * 100 + groups + size[0])
    shape = (3, channels, *size)
    x = rng.standard_normal(shape, dtype=np.float32)
    identity = rng.standard_normal(shape, dtype=np.float32)
    model = fused_graph(shape, groups, rng, around_convs=around_convs)
    plan, got = run(model, tmp_path, x, identity)
    want = reference(x, identity, *params(model), groups)
    assert np.abs(got - want).max() <= ATOL
    if around_convs and nchwc_block_size():
        assert plan.nchwc_blocks == 1  # the kernel really read the blocked layout
    if not around_convs:
        assert plan.nchwc_blocks == 0  # graph inputs come in NCHW: nothing to rewire


@pytest.mark.parametrize(
    ("channels", "groups", "final_conv"),
    [(24, 8, True), (64, 16, False)],
    ids=["groups-of-3-do-not-fit-a-block", "output-is-a-graph-output"],
)
def test_nodes_that_cannot_run_blocked_stay_in_nchw(channels, groups, final_conv, tmp_path):
    rng = np.random.default_rng(channels)
    shape = (2, channels, 6, 5)
    x, identity = rng.standard_normal(shape, dtype=np.float32), rng.standard_normal(shape, dtype=np.float32)
    model = fused_graph(shape, groups, rng, around_convs=True, final_conv=final_conv)
    plan, got = run(model, tmp_path, x, identity)
    assert plan.nchwc_blocks == 0
    assert np.abs(got - reference(x, identity, *params(model), groups)).max() <= ATOL


@pytest.mark.parametrize(
    ("channels", "groups", "block", "fits"),
    [
        (256, 64, 8, True),
        (2048, 64, 8, True),
        (64, 64, 16, True),
        (24, 8, 8, False),
        (20, 4, 8, False),
        (80, 2, 16, False),
        (96, 3, 16, True),
        (None, 4, 8, False),
    ],
)
def test_fits_block(channels, groups, block, fits):
    assert fits_block(channels, groups, block) is fits


def to_blocked(a: np.ndarray, block: int) -> np.ndarray:
    """NCHW → ORT's NCHWc memory order, viewed with the NCHW shape (as the kernel receives it)."""
    n, c, h, w = a.shape
    return np.ascontiguousarray(a.reshape(n, c // block, block, h, w).transpose(0, 1, 3, 4, 2)).reshape(n, c, h, w)


def from_blocked(a: np.ndarray, block: int) -> np.ndarray:
    n, c, h, w = a.shape
    return np.ascontiguousarray(a.reshape(n, c // block, h, w, block).transpose(0, 1, 4, 2, 3)).reshape(n, c, h, w)


def run_in_layout(model: onnx.ModelProto, tmp_path, x, identity, block: int) -> np.ndarray:
    """The one-op ``model``'s output in NCHW, its op fed ``block``-lane NCHWc data directly (block 0: plain NCHW)."""
    for a in model.graph.node[0].attribute:
        if a.name == "block":
            a.i = block
    if not block:
        return run(model, tmp_path, x, identity)[1]
    return from_blocked(run(model, tmp_path, to_blocked(x, block), to_blocked(identity, block))[1], block)


def blocked_error(
    tmp_path, *, block: int, channels: int, groups: int, rng, size=(5, 7), x_mean=0.0, x_std=1.0, gamma_scale=1.0
) -> float:
    """Max |kernel - reference| of one op fed ``block``-lane NCHWc data directly (block 0: plain NCHW); x is drawn
    from N(x_mean, x_std²) and γ scaled by ``gamma_scale``."""
    shape = (2, channels, *size)
    x = (x_mean + x_std * rng.standard_normal(shape)).astype(np.float32)
    identity = rng.standard_normal(shape, dtype=np.float32)
    model = fused_graph(shape, groups, rng, around_convs=False)
    gamma = next(i for i in model.graph.initializer if i.name == "gamma")
    gamma.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(gamma) * np.float32(gamma_scale), "gamma"))
    got = run_in_layout(model, tmp_path, x, identity, block)
    return float(np.abs(got - reference(x, identity, *params(model), groups)).max())


@pytest.mark.parametrize("block", [8, 16])
@pytest.mark.parametrize(("channels", "groups"), [(64, 64), (64, 32), (64, 16), (64, 8), (64, 4), (128, 2)])
@pytest.mark.parametrize("size", [(5, 7), (2, 9)], ids=["35-positions", "18-positions"])
def test_blocked_layout_of_either_width(block, channels, groups, size, tmp_path):
    """The NCHWc code path for 8- and 16-lane blocks (AVX2 and AVX-512 machines), fed blocked data directly."""
    rng = np.random.default_rng(block + groups)
    assert blocked_error(tmp_path, block=block, channels=channels, groups=groups, rng=rng, size=size) <= ATOL


# Statistics that stress float32 (tolerances from the float64 reference; a float32 NumPy transcription of the same
# formula errs 4.6e-6 and 5e-6 on these): channel means far from 0, so the similarity map's mean Σ m_c² dwarfs
# its spread (the kernel centres it on that known mean while computing it); and γ ×100, gates driven to 0 and 1
# through the steepest part of the sigmoid and its clamp (2^±126). 28×28: long sums, and a whole number of 4- and
# 16-position chunks.
HARD_CASES = {"offset-means": ({"x_mean": 3.0, "x_std": 0.5}, 2e-5), "steep-gates": ({"gamma_scale": 100.0}, 1e-4)}


@pytest.mark.parametrize("case", sorted(HARD_CASES))
@pytest.mark.parametrize(("block", "channels", "groups"), [(16, 64, 16), (16, 128, 4), (8, 64, 16), (0, 64, 16)])
def test_hard_statistics_stay_within_float32_accuracy(case, block, channels, groups, tmp_path):
    draw, tolerance = HARD_CASES[case]
    rng = np.random.default_rng(11)
    error = blocked_error(tmp_path, block=block, channels=channels, groups=groups, rng=rng, size=(28, 28), **draw)
    assert error <= tolerance


# Activations of order 1e10 and beyond: the similarity map's squared deviations pass float32's range (~1.8e19), so
# the gate's moments are taken again in double from the map. Before that, these outputs were off by up to twice the
# activations' scale: the variance became inf, every gate sigmoid(β). The error is relative to the activations' scale
# (float32 rounds each value to ~1e-7 of its size); eager PyTorch, in float32, is held to the same bound below.
HUGE_SCALES = pytest.mark.parametrize("x_std", [1e10, 1e15], ids=["1e10", "1e15"])
HUGE_RELATIVE_ERROR = 2e-6


@HUGE_SCALES
@pytest.mark.parametrize(("block", "channels", "groups"), [(16, 64, 16), (16, 128, 4), (8, 64, 16), (0, 64, 16)])
def test_huge_activations_keep_their_statistics(x_std, block, channels, groups, tmp_path):
    rng = np.random.default_rng(13)
    error = blocked_error(tmp_path, block=block, channels=channels, groups=groups, rng=rng, size=(7, 7), x_std=x_std)
    assert error <= HUGE_RELATIVE_ERROR * x_std


@HUGE_SCALES
def test_eager_pytorch_normalises_huge_activations(x_std):
    """What the kernel is held to above: the official layer's maths, in float32, keeps these statistics too."""
    import torch

    from models.layers.sge import spatial_group_enhance

    rng = np.random.default_rng(13)
    shape, groups = (2, 64, 7, 7), 16
    x = (x_std * rng.standard_normal(shape)).astype(np.float32)
    identity = rng.standard_normal(shape, dtype=np.float32)
    gamma, beta = rng.standard_normal(groups, dtype=np.float32), rng.standard_normal(groups, dtype=np.float32)
    with torch.no_grad():
        sge = spatial_group_enhance(
            torch.from_numpy(x),
            torch.from_numpy(gamma).reshape(1, groups, 1, 1),
            torch.from_numpy(beta).reshape(1, groups, 1, 1),
            groups=groups,
            eps=EPS,
        )
    got = np.maximum(sge.numpy() + identity, 0.0)
    assert np.abs(got - reference(x, identity, gamma, beta, groups)).max() <= HUGE_RELATIVE_ERROR * x_std


def test_every_batch_item_is_its_own(tmp_path):
    """Batch 1 and batch 3 give the same rows: the kernel's (image, unit) split has no cross-talk."""
    rng = np.random.default_rng(1)
    shape = (3, 64, 7, 7)
    x, identity = rng.standard_normal(shape, dtype=np.float32), rng.standard_normal(shape, dtype=np.float32)
    model = fused_graph(shape, 16, rng, around_convs=True)
    _, whole = run(model, tmp_path, x, identity)
    _, single = run(model, tmp_path, x[1:2], identity[1:2])
    np.testing.assert_allclose(single[0], whole[1], atol=1e-6)


def assert_nan_stays_in_its_group(tmp_path, block: int = 0) -> None:
    """One NaN in x makes its whole group NaN (its mean, so its gates), and nothing else: the sigmoid and the ReLU
    propagate NaN as torch does."""
    rng = np.random.default_rng(2)
    shape = (1, 32, 4, 4)
    x, identity = rng.standard_normal(shape, dtype=np.float32), rng.standard_normal(shape, dtype=np.float32)
    x[0, 5, 1, 1] = np.nan  # channel 5 is in group 1 of 8 groups (4 channels each)
    model = fused_graph(shape, 8, rng, around_convs=False)
    got = run_in_layout(model, tmp_path, x, identity, block)
    want = reference(x, identity, *params(model), 8)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert np.isnan(got[0, 4:8]).all() and not np.isnan(got[0, :4]).any()


@pytest.mark.parametrize("block", [0, 8, 16])
def test_nan_stays_in_its_group(block, tmp_path):
    assert_nan_stays_in_its_group(tmp_path, block)


@pytest.mark.parametrize(
    ("x_shape", "identity_shape", "groups", "message"),
    [
        ((1, 32, 1, 1), (1, 32, 1, 1), 8, "H*W must be at least 2"),
        ((1, 32, 4, 4), (1, 32, 4, 5), 8, "differs from x"),
        ((1, 30, 4, 4), (1, 30, 4, 4), 8, "divisible by the groups"),
        ((1, 0, 4, 4), (1, 0, 4, 4), 8, "at least one channel"),
        ((1, 32, 4, 4), (1, 32, 4, 4), 0, "groups attribute must be positive"),
    ],
    ids=["one-position", "identity-differs", "groups-do-not-divide", "zero-channels", "zero-groups"],
)
def test_bad_shapes_fail_with_one_clear_error(x_shape, identity_shape, groups, message, tmp_path):
    rng = np.random.default_rng(3)
    model = fused_graph(x_shape, groups, rng, around_convs=False)
    model.graph.input[1].type.tensor_type.shape.dim[3].dim_value = identity_shape[3]
    x = rng.standard_normal(x_shape, dtype=np.float32)
    identity = rng.standard_normal(identity_shape, dtype=np.float32)
    errors = ort.capi.onnxruntime_pybind11_state
    with pytest.raises((errors.Fail, errors.InvalidArgument)) as err:
        run(model, tmp_path, x, identity)
    assert message in str(err.value)


@pytest.mark.parametrize("stage", ["layer1", "layer4"])
@pytest.mark.parametrize("around_convs", [False, True], ids=["nchw", "nchwc"])
def test_kernel_on_photograph_activations(stage, around_convs, tmp_path):
    """The kernel on what a real SGE block sees: sge_resnet18's (calibrated default weights) last block of a stage,
    fed the bundled photographs. Its x and identity come from the eager block's own branches; the kernel must match
    the float64 reference and the eager block's output (layer1: 1 channel a group at 28×28; layer4: 8 at 4×4)."""
    import torch

    from models import create_model
    from models.transforms import photo_batch

    model = create_model("sge_resnet18", init="calibrated").eval()
    block = getattr(model, stage)[-1]
    sge = getattr(block, block.attn_name)
    gamma, beta = sge.weight.detach().flatten().numpy(), sge.bias.detach().flatten().numpy()
    assert np.abs(gamma).max() > 0.1  # the gate depends on the photograph, not only on beta
    inputs = {}
    block.register_forward_pre_hook(lambda module, args: inputs.setdefault("x", args[0]))
    with torch.no_grad():
        model(torch.from_numpy(photo_batch((112, 112))))
        x, identity = (t.numpy() for t in block.branches(inputs["x"]))
        eager = block(inputs["x"]).numpy()
    model_graph = fused_graph(x.shape, sge.groups, np.random.default_rng(0), around_convs=around_convs)
    for init in model_graph.graph.initializer:
        if init.name in ("gamma", "beta"):
            init.CopyFrom(numpy_helper.from_array(gamma if init.name == "gamma" else beta, init.name))
    _, got = run(model_graph, tmp_path, np.ascontiguousarray(x), np.ascontiguousarray(identity))
    scale = max(1.0, float(np.abs(eager).max()))  # activations grow past O(1) in deep stages: a relative gate
    assert np.abs(got - reference(x, identity, gamma, beta, sge.groups)).max() <= ATOL * scale
    assert np.abs(got - eager).max() <= ATOL * scale
