"""The warm stage bench of the fused SGE tail (export/ort_sge/kernels/sge_stage_bench.cc, stage_bench.py): that
its stages, run one at a time, are the shipped unit's maths; that bad arguments get a one-line error; that its
projection onto a network and its ResNet-50 shapes are right; and that the dispatcher's choice of build is read as
sge_ort_op.cc makes it.
"""

import re

import pytest

from export.ort_sge.kernels import kernel_build, kernel_library
from export.ort_sge.kernels.build import KERNEL_DIR
from export.ort_sge.kernels.stage_bench import (
    RESNET50_GROUPS,
    RESNET50_TAILS,
    STAGES,
    build_stage_bench,
    network_cost,
    run_stage_bench,
)
from tests.conftest import ISA_CPU_FEATURES, dispatched_isa, expected_kernel_build, needs_compiler


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return build_stage_bench(tmp_path_factory.mktemp("bench"), isa=kernel_build(kernel_library()))  # the shipped build


# (channels, side) with 64 groups: groups of 1, 2, 4, 8, 16 and 32 channels, every lane width of both blocks
SMALL_SHAPES = [(64, 5), (128, 6), (256, 5), (512, 4), (1024, 3), (2048, 3)]


@needs_compiler
@pytest.mark.parametrize("block", [8, 16])
def test_the_stages_in_sequence_are_the_units_maths(bench, block):
    result = run_stage_bench(bench, SMALL_SHAPES, block=block, groups=64, repeats=1, iterations=2)
    assert result["block"] == block and len(result["shapes"]) == len(SMALL_SHAPES)
    assert result["isa"] == expected_kernel_build()  # the build the installed library runs here
    for (channels, side), shape in zip(SMALL_SHAPES, result["shapes"], strict=True):
        assert (shape["channels"], shape["side"]) == (channels, side)
        unit_channels = max(channels // 64, block)
        assert shape["unit_channels"] == unit_channels and shape["units"] == channels // unit_channels
        assert shape["max_abs_diff"] == 0.0, (block, channels)  # bit for bit: the bench times the shipped code
        assert all(shape["us"][stage] > 0 for stage in (*STAGES, "unit")), shape


@needs_compiler
@pytest.mark.parametrize(
    ("words", "message"),
    [
        (["16", "64", "1", "1", "256:5x"], "bad shape '256:5x'"),
        (["16", "64", "1", "1", "100:5"], "channels must be divisible by the groups attribute"),
        (["12", "64", "1", "1", "256:5"], "BLOCK must be 8 or 16"),
        (["16", "64", "0", "1", "256:5"], "REPEATS and ITERATIONS must be positive"),
        (["16", "64"], "too few arguments"),
    ],
)
def test_bad_arguments_get_one_line_and_exit_2(bench, words, message):
    import subprocess

    result = subprocess.run([str(bench), *words], capture_output=True, text=True, check=False)
    assert result.returncode == 2 and result.stdout == ""
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_the_projection_counts_every_unit_of_every_block_over_the_threads():
    bench = {
        "shapes": [
            {"channels": 256, "side": 56, "units": 16, "us": dict.fromkeys((*STAGES, "unit"), 2.0)},
            {
                "channels": 2048,
                "side": 7,
                "units": 64,
                "us": {"means": 1.0, "similarity": 0.5, "sigmoid": 0.25, "apply": 0.0, "unit": 3.0},
            },
        ]
    }
    cost = network_cost(bench, ((256, 56, 3), (2048, 7, 2)), threads=2)
    assert cost["means"] == pytest.approx(2.0 * 16 * 3 / 2 + 1.0 * 64 * 2 / 2)
    assert cost["sigmoid"] == pytest.approx(2.0 * 16 * 3 / 2 + 0.25 * 64 * 2 / 2)
    assert cost["unit"] == pytest.approx(2.0 * 16 * 3 / 2 + 3.0 * 64 * 2 / 2)


def test_the_resnet50_tails_are_sge_resnet50s_sge_inputs():
    import torch

    from models.layers.sge import SpatialGroupEnhance
    from models.registry import build_model

    model = build_model("sge_resnet50").eval()
    seen: list[tuple[int, int, int]] = []
    hooks = [
        m.register_forward_hook(lambda m, inputs, _: seen.append((*inputs[0].shape[1:3], m.groups)))
        for m in model.modules()
        if isinstance(m, SpatialGroupEnhance)
    ]
    with torch.no_grad():
        model(torch.zeros(1, 3, 224, 224))
    for hook in hooks:
        hook.remove()
    expected = [(c, side, RESNET50_GROUPS) for c, side, blocks in RESNET50_TAILS for _ in range(blocks)]
    assert seen == expected


def test_the_dispatcher_reads_the_same_features_as_sge_ort_op():
    """ISA_CPU_FEATURES and the __builtin_cpu_supports checks of each branch of choose_build() must agree, and each
    branch reports the build it calls by build.py's name (SgeKernelBuild)."""
    source = (KERNEL_DIR / "sge_ort_op.cc").read_text()
    branches = re.findall(r'if \(((?:[^;])*?)\)\s*\n?\s*return SGE_BUILD\((\w+), "(\w+)"\)', source)
    assert len(branches) == 2  # avx512, avx2; baseline is the fall-through
    assert all(isa == name for _, isa, name in branches)
    checked = {isa: set(re.findall(r'__builtin_cpu_supports\("(\w+)"\)', cond)) for cond, isa, _ in branches}
    assert checked == {isa: set(f) for isa, f in ISA_CPU_FEATURES.items() if f}
    assert dispatched_isa({"avx2", "fma", "avx512f", "avx512vl", "avx512bw"}) == "avx2"  # no avx512dq
    assert dispatched_isa(set(ISA_CPU_FEATURES["avx512"])) == "avx512"
    assert dispatched_isa({"sse2", "avx2"}) == "baseline"  # AVX2 without FMA


def test_kernel_speed_refuses_stages_where_ort_runs_no_nchwc(tmp_path):
    from export.ort_sge.kernels.build import KernelBuildError
    from export.ort_sge.session import SessionPlan
    from runtime.kernel_speed.graphs import stage_bench_for_this_cpu

    with pytest.raises(KernelBuildError, match="runs no NCHWc on this CPU"):
        stage_bench_for_this_cpu(tmp_path, SessionPlan(model="m.onnx", kernel_build="avx2"))
