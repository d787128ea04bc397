"""The kernel-speed report (runtime/kernel_speed/study.py) as lines for people: the machine, each session's medians,
each ratio with its rounds within the target, the split by stage, the profile and the stages in cache."""

from runtime.kernel_speed.cpu_placement import ONE_L3, TWO_L3S, per_placement_lines, placement_lines
from runtime.kernel_speed.ratios import TARGET


def counted(count: int, noun: str) -> str:
    """``count`` and ``noun``, plural unless there is one: "1 thread", "2 threads"."""
    return f"{count} {noun}{'s' * (count != 1)}"


def stage_split(extra_ms_by_stage: dict[str, float]) -> str:
    return ", ".join(f"{label} {ms:+.3f} ms" for label, ms in extra_ms_by_stage.items())


def stage_lines(stages: dict, resnet50_ms: float) -> list[str]:
    """The warm stage costs per network run, in µs and as a share of this run's resnet50 wall median."""
    cost = stages["us_per_network"]
    share = {k: 100 * us / (resnet50_ms * 1000) for k, us in cost.items()}
    lines = [
        f"  tail stages warm in cache ({stages['isa']} build, one unit on one thread, projected over "
        f"{stages['threads']} threads), per network run and share of resnet50's wall median:"
    ]
    lines += [f"    {name:10s} {us:7.1f} us  {share[name]:5.2f} %" for name, us in cost.items()]
    rest = sum(share[k] for k in ("similarity", "sigmoid", "apply"))
    lines.append(f"    without the channel means (a convolution that sums its own output): {rest:.2f} %")
    return lines


def report_lines(report: dict) -> list[str]:
    m = report["machine"]
    view = f" ({m['cpu_view']})" if m["cpu_view"] else ""
    lines = [
        report["command"],
        f"{m['cpu']}, {m['logical_cpus']} logical CPUs, {'/'.join(m['isa'])}{view}; {counted(m['threads'], 'thread')}; "
        f"NCHWc block {report['nchwc_block']}; {report['graphs']}; "
        f"the installed library runs its {report['library']['runs']} build; "
        f"{report['timing_mode']}; load average {m['load_average']}",
    ]
    if report.get("floors_in"):
        lines.append(f"  the floors replace the tail in {report['floors_in']}")
    for name, t in report["timings"].items():
        places = t.get("wall_ms_median_by_place", [])  # rotated rounds only
        by_place = f"  by place in the round {' '.join(f'{ms:.2f}' for ms in places)}" if places else ""
        lines.append(
            f"  {name:24s} wall median {t['wall_ms_median']:8.2f} ms  CPU {t['cpu_ms_median']:8.2f} ms  "
            f"IQR/median {t['wall_spread_iqr']:.3f}{by_place}"
        )
    for name, r in report["ratios"].items():
        paired = ""
        if "wall_paired" in r:
            paired = f"  per-round wall ratio {r['wall_paired']:.3f} (IQR {r['wall_paired_iqr']:.3f})"
        if "rounds_within_target" in r:
            paired += f", {r['rounds_within_target']} of {r['rounds']} rounds ≤ {TARGET}"
        lines.append(f"  {name:28s} wall {r['wall']:.3f}  CPU {r['cpu']:.3f}{paired}")
    if "by_cpu_placement" in report:
        lines += placement_lines(report["by_cpu_placement"], target=TARGET)
    if "extra_ms_by_stage" in report:
        lines.append(
            f"  fused - resnet50 added by each stage (per-round medians): {stage_split(report['extra_ms_by_stage'])}"
        )
        placed = report.get("by_cpu_placement", {})
        staged = {p: placed[p] for p in (ONE_L3, TWO_L3S) if "extra_ms_by_stage" in placed.get(p, {})}
        lines += per_placement_lines(staged, lambda p: stage_split(p["extra_ms_by_stage"]), indent="    ")
    for name, ms in report["sge_residual_ms_per_run"].items():
        sides = ", ".join(f"{s}×{s} {v:.2f}" for s, v in report["sge_residual_ms_by_side"][name].items())
        lines.append(f"  SgeResidual kernel time, {name}: {ms:.2f} ms per run ({sides})")
    if "stages" in report:
        lines += stage_lines(report["stages"], report["timings"]["resnet50"]["wall_ms_median"])
    return lines
