"""The kernel-speed study's ratios from its timings (runtime/sge_cost.py's Timing): which sessions are compared, each
ratio of medians and the median of the rounds' own ratios, and the fused graph's extra over resnet50 split by stage."""

import statistics

from runtime.kernel_speed.graphs import cut_names

# issue 12's target for sge_resnet50 (fused) / resnet50 at batch 1; each paired "/resnet50" ratio of the whole
# network counts its rounds within it
TARGET = 1.02


def ratio(a, b, *, paired: bool, target: float | None = None) -> dict[str, float]:
    """a / b: of the wall and CPU medians; interleaved, also the median of the rounds' own wall ratios (each round
    runs both sessions back to back, so load that hits a round hits both: a steadier estimate) and its IQR; with
    ``target``, how many of those rounds are within it."""
    out = {"wall": a.wall_median / b.wall_median, "cpu": a.cpu_median / b.cpu_median}
    if paired:
        per_round = [x / y for x, y in zip(a.paired_wall_ms, b.paired_wall_ms, strict=True)]
        if len(per_round) == 1:  # one isolated round
            out |= {"wall_paired": per_round[0], "wall_paired_iqr": 0.0}
        else:
            q1, median, q3 = statistics.quantiles(per_round, n=4, method="inclusive")
            out |= {"wall_paired": median, "wall_paired_iqr": q3 - q1}
        if target is not None:
            out |= {"rounds_within_target": sum(r <= target for r in per_round), "rounds": len(per_round)}
    return out


def ratio_pairs(session_names, cuts: list[int]) -> dict[str, tuple[str, str]]:
    """Each reported ratio's label → (numerator, denominator) among the sessions timed: the fused graph against
    resnet50 at every cut, then the native build, the swapped halves, the floors and the worst order where they ran."""
    names = set(session_names)
    top = max(cuts)
    pairs = {"sge_fused/resnet50": ("sge_fused", "resnet50")}
    for layer in sorted(cuts)[:-1]:
        resnet, fused = cut_names(layer, top)
        pairs[f"{fused}/{resnet}"] = (fused, resnet)
    if "sge_fused_native" in names:
        pairs["sge_fused_native/resnet50"] = ("sge_fused_native", "resnet50")
        pairs["dispatched/native"] = ("sge_fused", "sge_fused_native")
    if "sge_fused_swapped" in names:
        pairs["sge_fused_swapped/resnet50"] = ("sge_fused_swapped", "resnet50")
        pairs["swapped/dispatched"] = ("sge_fused_swapped", "sge_fused")
    for name in [n for n in session_names if n.startswith("floor_")]:
        pairs[f"{name}/resnet50"] = (name, "resnet50")
    if "floor_apply" in names:
        pairs["sge_fused/floor_apply"] = ("sge_fused", "floor_apply")
    if "floor_none" in names:
        pairs["sge_fused/floor_none"] = ("sge_fused", "floor_none")
    if "sge_fused_identity_last" in names:
        pairs["identity_last/planned"] = ("sge_fused_identity_last", "sge_fused")
    return pairs


def extra_by_stage(timings: dict, cuts: list[int]) -> dict[str, float]:
    """The fused graph's extra ms over resnet50 added by each run of stages between consecutive cuts ("layer1",
    "layer2–3", …): per round, the extra through one cut minus the extra through the cut before, then the median
    over the rounds (all cuts run in the same rounds, so each difference pairs calls milliseconds apart)."""
    out, before, previous = {}, None, 0
    for layer in sorted(cuts):
        resnet, fused = (timings[n].paired_wall_ms for n in cut_names(layer, max(cuts)))
        extra = [f - r for f, r in zip(fused, resnet, strict=True)]
        added = extra if before is None else [e - b for e, b in zip(extra, before, strict=True)]
        label = f"layer{layer}" if layer == previous + 1 else f"layer{previous + 1}–{layer}"
        out[label] = round(statistics.median(added), 3)
        before, previous = extra, layer
    return out
