"""How much cache this machine's process can use now (cache_probe.cc): the latency of a dependent load at random over
buffers from 256 KB to 128 MB, and of a cache line handed between two CPUs. On a VM, lscpu's L3 is the host's,
shared with other guests; the chase shows how much of it answers like a cache, and repeats show how that moves.
A diagnostic beside ``kernel_speed.py``, not a timing of this project's code.

    python -m runtime.kernel_speed.cache_probe [--repeats 5] [--pause 10] [--json FILE]

"Reach" is the largest buffer whose load latency is nearer the smallest buffer's than the largest's: past it, most
loads go to memory.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SOURCE = Path(__file__).resolve().parent / "cache_probe.cc"
SMALLEST_KB = 256
DEFAULT_LOADS = 4_000_000


def build_probe(output_dir: Path, *, compiler: str | None = None) -> Path:
    """Compile cache_probe.cc; KernelBuildError with the compiler's one-line reason if that fails."""
    from export.ort_sge.kernels.build import find_compiler, run_compiler

    executable = Path(output_dir) / "cache_probe"
    command = [*find_compiler(compiler), "-O2", "-std=c++17", "-pthread", str(SOURCE), "-o", str(executable)]
    run_compiler(command, what="the cache probe")
    return executable


def buffer_sizes_kb(largest_mb: int) -> list[int]:
    """256 KB, doubling up to ``largest_mb``."""
    if largest_mb < 1:
        raise ValueError(f"the largest buffer must be at least 1 MB, got {largest_mb}")
    sizes = [SMALLEST_KB]
    while sizes[-1] * 2 <= largest_mb * 1024:
        sizes.append(sizes[-1] * 2)
    return sizes


def run_probe(executable: Path, *, sizes_kb: list[int], loads: int = DEFAULT_LOADS) -> dict:
    """One pass of the probe over buffers of ``sizes_kb``:
    {"chase_ns": [[KB, ns], ...], "handoff_ns": ns or None, "cpus": [...]}."""
    result = subprocess.run(
        [str(executable), str(loads), *map(str, sizes_kb)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"the cache probe failed: {result.stderr.strip() or f'exit {result.returncode}'}")
    return json.loads(result.stdout)


def cache_reach_kb(chase_ns: list[list[float]]) -> int:
    """The largest buffer (KB) whose latency is below the midpoint of the smallest and largest buffers' latencies;
    the chase must be in growing sizes."""
    sizes = [kb for kb, _ in chase_ns]
    if len(sizes) < 2 or sizes != sorted(sizes):
        raise ValueError("the chase needs at least two buffer sizes, smallest first")
    midpoint = (chase_ns[0][1] + chase_ns[-1][1]) / 2
    reach = sizes[0]
    for kb, ns in chase_ns:
        if ns >= midpoint:
            break
        reach = kb
    return int(reach)


def format_size(kb: int) -> str:
    return f"{kb // 1024} MB" if kb >= 1024 else f"{kb} KB"


def table_lines(passes: list[dict]) -> list[str]:
    """One column per pass: ns a load for each buffer size, then the handoff and the reach."""
    sizes = [kb for kb, _ in passes[0]["chase_ns"]]
    head = ["buffer"] + [f"pass {i + 1}" for i in range(len(passes))]
    rows = [head]
    for row, kb in enumerate(sizes):
        rows.append([format_size(kb)] + [f"{p['chase_ns'][row][1]:.1f} ns" for p in passes])
    rows.append(["CPU-to-CPU"] + [f"{p['handoff_ns']:.1f} ns" if p["handoff_ns"] else "-" for p in passes])
    rows.append(["reach"] + [format_size(cache_reach_kb(p["chase_ns"])) for p in passes])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return ["  ".join(cell.rjust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5, help="passes over every buffer size")
    p.add_argument("--pause", type=float, default=10.0, help="seconds between passes")
    p.add_argument("--loads", type=int, default=DEFAULT_LOADS, help="timed loads per buffer size")
    p.add_argument("--largest-mb", type=int, default=128, help="the largest buffer (from 256 KB, doubling)")
    p.add_argument("--json", type=Path, help="write every pass here")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.loads < 1 or args.pause < 0 or args.largest_mb < 1:
        p.error("--repeats, --loads and --largest-mb must be positive and --pause not negative")
    from export.ort_sge.kernels.build import KernelBuildError

    passes, sizes = [], buffer_sizes_kb(args.largest_mb)
    try:
        with tempfile.TemporaryDirectory() as scratch:
            probe = build_probe(Path(scratch))
            for i in range(args.repeats):
                if i:
                    time.sleep(args.pause)
                started = time.strftime("%H:%M:%S", time.gmtime())
                passes.append({"utc": started, **run_probe(probe, sizes_kb=sizes, loads=args.loads)})
                print(f"pass {i + 1}/{args.repeats} at {passes[-1]['utc']} UTC", file=sys.stderr)
    except (KernelBuildError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(table_lines(passes)))
    if args.json:
        args.json.write_text(json.dumps({"loads": args.loads, "passes": passes}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
