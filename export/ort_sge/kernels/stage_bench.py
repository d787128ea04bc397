"""What the fused SGE tail's stages cost with their data in cache (sge_stage_bench.cc), projected onto one network run.

The bench runs the shipped maths one stage at a time on one warm NCHWc unit, on one thread: the channel means, the
similarity map (with its moments), the sigmoid over the map, and the gated output pass. Summed over a network's
units (split evenly over its threads) it is a lower bound on what a tail that makes these passes costs, even with
every byte in cache (one whose own convolution left x in L2, say). ``scripts/kernel_speed.py --stages`` prints it
beside the run's resnet50 time.
"""

import json
import subprocess
from pathlib import Path

from export.ort_sge.kernels.build import (
    COMMON_FLAGS,
    ISA_FLAGS,
    KERNEL_DIR,
    KernelBuildError,
    find_compiler,
    run_compiler,
)

BENCH_SOURCE = KERNEL_DIR / "sge_stage_bench.cc"
STAGES = ("means", "similarity", "sigmoid", "apply")
# sge_resnet50's block tails at 224×224: (channels, side of the square map, blocks of that shape)
RESNET50_TAILS = ((256, 56, 3), (512, 28, 4), (1024, 14, 6), (2048, 7, 3))
RESNET50_GROUPS = 64


def build_stage_bench(output_dir: Path, *, isa: str, compiler: str | None = None) -> Path:
    """Compile the bench with the flags of one ISA build (the one the dispatcher picks, to time the shipped code)."""
    if isa not in ISA_FLAGS:
        raise ValueError(f"unknown instruction set {isa!r}; choose from {sorted(ISA_FLAGS)}")
    executable = Path(output_dir) / "sge_stage_bench"
    flags = [f for f in COMMON_FLAGS if f not in ("-fPIC", "-fvisibility=hidden")]
    command = [*find_compiler(compiler), *flags, *ISA_FLAGS[isa], f"-DSGE_BENCH_ISA={isa}", str(BENCH_SOURCE)]
    run_compiler([*command, "-o", str(executable)])
    return executable


def run_stage_bench(
    executable: Path, shapes: list[tuple[int, int]], *, block: int, groups: int, repeats: int, iterations: int
) -> dict:
    """The bench's JSON for these (channels, side) shapes; KernelBuildError with its one-line reason if it fails."""
    words = [str(executable), str(block), str(groups), str(repeats), str(iterations)]
    result = subprocess.run([*words, *(f"{c}:{s}" for c, s in shapes)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise KernelBuildError(f"the stage bench failed: {result.stderr.strip() or f'exit {result.returncode}'}")
    return json.loads(result.stdout)


def network_cost(bench: dict, tails: tuple[tuple[int, int, int], ...], threads: int) -> dict[str, float]:
    """Microseconds per network run of each stage and of the whole unit: a shape's time per unit × its units per
    image × the blocks of that shape (``tails``: channels, side, blocks), over ``threads`` (the units split evenly)."""
    blocks = {(c, side): n for c, side, n in tails}
    cost = dict.fromkeys((*STAGES, "unit"), 0.0)
    for shape in bench["shapes"]:
        calls = shape["units"] * blocks[(shape["channels"], shape["side"])] / threads
        for stage in cost:
            cost[stage] += shape["us"][stage] * calls
    return cost


def resnet50_stage_cost(executable: Path, *, block: int, threads: int, repeats: int = 9, iterations: int = 200) -> dict:
    """Run the bench (build_stage_bench) on sge_resnet50's tails and project it onto one network run."""
    shapes = [(c, s) for c, s, _ in RESNET50_TAILS]
    bench = run_stage_bench(
        executable, shapes, block=block, groups=RESNET50_GROUPS, repeats=repeats, iterations=iterations
    )
    return {
        "isa": bench["isa"],
        "threads": threads,
        "bench": bench,
        "us_per_network": network_cost(bench, RESNET50_TAILS, threads),
    }
