"""ONNX Runtime's profile of the fused op in the kernel-speed study: each SgeResidual node's kernel time per run, and
their sum by feature-map side (one entry per ResNet stage)."""

import json
from pathlib import Path


def node_profile(plans: dict, x, *, threads: int, runs: int, prefix: Path) -> dict[str, list[dict]]:
    """Each SgeResidual node's kernel ms per run (after one untimed run), interleaved across the fused sessions (the
    floors are left out: their timings say all there is)."""
    from export.ort_sge.nchwc import FUSED_OP
    from export.ort_sge.session import cpu_session

    sessions = {
        name: cpu_session(plan, threads=threads, spinning=False, profile_prefix=f"{prefix}_{name}")
        for name, plan in plans.items()
        if plan.library is not None and not name.startswith("floor_")
    }
    for _ in range(runs + 1):
        for session in sessions.values():
            session.run(None, {session.get_inputs()[0].name: x})
    out = {}
    for name, session in sessions.items():
        events = json.loads(Path(session.end_profiling()).read_text())
        starts = sorted(e["ts"] for e in events if e.get("name") == "model_run")
        nodes: dict[str, dict] = {}
        for e in events:
            args = e.get("args", {})
            if e.get("cat") != "Node" or args.get("op_name") != FUSED_OP or not e["name"].endswith("_kernel_time"):
                continue
            if len(starts) > 1 and e["ts"] < starts[1]:
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
