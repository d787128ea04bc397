"""ONNX Runtime's profile of the fused op in the kernel-speed study: each SgeResidual node's kernel time per run, and
their sum by feature-map side (one entry per ResNet stage)."""

from pathlib import Path


def node_profile(plans: dict, x, *, threads: int, runs: int, prefix: Path) -> dict[str, list[dict]]:
    """Each SgeResidual node's kernel ms per run and input shape, profiled interleaved across the fused sessions
    (runtime/sge_cost.py's ``profiled_kernel_events``); the floors are left out: their timings say all there is."""
    from export.ort_sge.nchwc import FUSED_OP
    from runtime.sge_cost import profiled_kernel_events

    fused = {n: plan for n, plan in plans.items() if plan.library is not None and not n.startswith("floor_")}
    out = {}
    for name, events in profiled_kernel_events(fused, x, threads=threads, runs=runs, prefix=prefix).items():
        nodes: dict[str, dict] = {}
        for e in events:
            args = e.get("args", {})
            if args.get("op_name") != FUSED_OP:
                continue
            node = nodes.setdefault(e["name"], {"node": e["name"][: -len("_kernel_time")], "ms": 0.0})
            node["shape"] = next(iter(args.get("input_type_shape", [{}])[0].values()), None)
            node["ms"] += e["dur"] / 1e3 / runs
        out[name] = [{**n, "ms": round(n["ms"], 4)} for n in nodes.values()]
    return out


def ms_by_side(nodes: list[dict]) -> dict[str, float]:
    """The op's ms per run summed by its feature map's side (H of [N, C/B, H, W, B], or of NCHW), largest first: one
    entry per ResNet stage, so the profiles of the two NCHWc widths compare stage by stage."""
    sides: dict[int, float] = {}
    for node in nodes:
        shape = node.get("shape") or []
        side = int(shape[2]) if len(shape) >= 4 else 0
        sides[side] = sides.get(side, 0.0) + node["ms"]
    return {str(side): round(ms, 3) for side, ms in sorted(sides.items(), reverse=True)}
