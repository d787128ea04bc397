"""The graphs and libraries the kernel-speed study times: resnet50 and sge_resnet50's fused graph at 224×224, whole
or cut after a ResNet stage; the fused plan in the worst node order; and diagnostic builds of the op's library (a
``-march=native`` build and the floors, export/ort_sge/kernels/build.py)."""

from dataclasses import replace
from pathlib import Path

WHOLE = 4  # the last ResNet stage: a cut "through layer4" is the whole network


def cut_after_layer(model, layer: int):
    """A ResNet through its stage ``layer`` (1–4): the later stages become identities and the classifier takes that
    stage's channels (as many classes; each stage doubles them). The graph up to there is the whole network's."""
    import torch.nn as nn

    if layer == WHOLE:
        return model
    for later in range(layer + 1, WHOLE + 1):
        setattr(model, f"layer{later}", nn.Identity())
    model.fc = nn.Linear(model.fc.in_features >> (WHOLE - layer), model.fc.out_features)
    return model


def stage_positions(layer: int) -> int:
    """H·W of ResNet stage ``layer``'s blocks at the study's 224×224 input (56², 28², 14², 7²)."""
    return (56 >> (layer - 1)) ** 2


def through_suffix(layer: int, top: int) -> str:
    """How files and sessions of the cut after stage ``layer`` are named; the cut ``top`` goes unnamed."""
    return "" if layer == top else f"_through_layer{layer}"


def cut_names(layer: int, top: int) -> tuple[str, str]:
    """The sessions of one cut: the largest cut asked for is the plain "resnet50" and "sge_fused"."""
    suffix = through_suffix(layer, top)
    return f"resnet50{suffix}", f"sge_fused{suffix}"


def export_graphs(workdir: Path, *, through_layer: int = WHOLE) -> dict[str, Path]:
    """resnet50 and sge_resnet50's fused graph at 224×224 (random weights: speed does not depend on them), cut after
    stage ``through_layer``; graphs already in ``workdir`` are reused."""
    suffix = through_suffix(through_layer, WHOLE)
    paths = {"resnet50": workdir / f"resnet50{suffix}.onnx", "sge_fused": workdir / f"sge_fused{suffix}.onnx"}
    if all(p.exists() for p in paths.values()):
        return paths
    from export.onnx_export import export_onnx
    from export.ort_sge.graph import fuse_sge_residual
    from export.spec import ExportSpec
    from models import create_model

    spec = ExportSpec(input_size=(224, 224))
    export_onnx(cut_after_layer(create_model("resnet50", init="random"), through_layer), paths["resnet50"], spec=spec)
    fused, _ = fuse_sge_residual(cut_after_layer(create_model("sge_resnet50", init="random"), through_layer))
    export_onnx(fused, paths["sge_fused"], spec=spec)
    return paths


def plan_cuts(workdir: Path, cuts: list[int]) -> dict:
    """Both networks' session plans (export/ort_sge/session.py) for every cut, the largest first, so that
    "resnet50" and "sge_fused" lead the rounds."""
    from export.ort_sge.session import plan_session

    plans = {}
    for layer in sorted(cuts, reverse=True):
        paths = export_graphs(workdir, through_layer=layer)
        resnet, fused = cut_names(layer, max(cuts))
        plans |= {resnet: plan_session(paths["resnet50"]), fused: plan_session(paths["sge_fused"])}
    return plans


def identity_last_plan(fused):
    """The fused graph's plan rescheduled in the worst order (export/ort_sge/schedule.py), in the plan's scratch
    folder beside the weights its initializers name."""
    import onnx

    from export.ort_sge.schedule import schedule_blocks

    model = onnx.load(fused.model, load_external_data=False)
    schedule_blocks(model.graph, identity_last=True)
    path = Path(fused.model).with_name("identity_last.onnx")
    onnx.save(model, str(path))
    return replace(fused, model=str(path), scratch=None)


def diagnostic_plans(
    fused,
    build_dir: Path,
    *,
    orders: bool,
    native: bool,
    floors: bool,
    floor_layer: int = 0,
    swap_halves: bool = False,
) -> dict:
    """The fused graph's plan in the worst node order (``orders``) and with each extra library asked for: the
    ``-march=native`` build, the floors and the swapped-halves build, compiled into ``build_dir``; ``floor_layer`` K
    (1–4) gives the floors to stage K's blocks only, the others computing SGE in full (0: every block)."""
    from export.ort_sge.kernels import kernel_build
    from export.ort_sge.kernels.build import FLOORS, build_library

    def with_library(library: Path):
        return replace(fused, library=library, kernel_build=kernel_build(library))

    plans = {"sge_fused_identity_last": identity_last_plan(fused)} if orders else {}
    if native:
        plans["sge_fused_native"] = with_library(build_library(build_dir / "native", native=True))
    if swap_halves:
        plans["sge_fused_swapped"] = with_library(build_library(build_dir / "swapped", swap_halves=True))
    if floors:
        size = stage_positions(floor_layer) if floor_layer else 0
        for floor in FLOORS:
            library = build_library(build_dir / f"floor_{floor}", floor=floor, floor_size=size)
            plans[f"floor_{floor}"] = with_library(library)
    return plans


def stage_bench_for_this_cpu(build_dir: Path, fused) -> Path:
    """The stage bench, built for the ISA build the installed library runs here (the fused graph's plan says which);
    it times NCHWc units only."""
    from export.ort_sge.kernels.build import KernelBuildError
    from export.ort_sge.kernels.stage_bench import build_stage_bench

    if fused.nchwc_block not in (8, 16):
        raise KernelBuildError("--stages times the NCHWc path, and ONNX Runtime runs no NCHWc on this CPU")
    (build_dir / "bench").mkdir()
    return build_stage_bench(build_dir / "bench", isa=fused.kernel_build)
