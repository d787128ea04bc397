"""The installed kernel library: the loader's checks (export/ort_sge/kernels/library.py), the install-time build that
never fails an install (export/ort_sge/kernels/build.py), and each instruction-set build of the maths on this CPU.

A library that is missing, truncated or altered must be refused before anything dlopens it: ORT would die of
SIGBUS or SIGILL inside ``register_custom_ops_library``, with no chance of a fallback.
"""

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from export.ort_sge.kernels import KernelUnavailableError, kernel_build, kernel_library
from export.ort_sge.kernels.build import (
    LIBRARY_NAME,
    RECORD_NAME,
    KernelBuildError,
    build_library,
    build_or_record,
    compiler_cause,
    cpu_flags,
    find_compiler,
    run_compiler,
    run_compilers,
)
from tests.conftest import ISA_CPU_FEATURES, expected_kernel_build, needs_compiler


@pytest.fixture
def installed_copy(tmp_path) -> Path:
    """A copy of the installed library and its record, free to damage."""
    source = kernel_library()
    for name in (LIBRARY_NAME, RECORD_NAME):
        shutil.copyfile(source.parent / name, tmp_path / name)
    return tmp_path


def test_an_intact_copy_is_accepted(installed_copy):
    assert kernel_library(installed_copy) == installed_copy / LIBRARY_NAME


def test_a_truncated_library_is_refused(installed_copy):
    library = installed_copy / LIBRARY_NAME
    library.write_bytes(library.read_bytes()[:4096])
    with pytest.raises(KernelUnavailableError, match="is corrupt"):
        kernel_library(installed_copy)


def test_a_library_altered_in_place_is_refused(installed_copy):
    library = installed_copy / LIBRARY_NAME
    data = bytearray(library.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte differs
    library.write_bytes(bytes(data))
    with pytest.raises(KernelUnavailableError, match="is corrupt"):
        kernel_library(installed_copy)


def test_a_missing_library_is_named(installed_copy):
    (installed_copy / LIBRARY_NAME).unlink()
    with pytest.raises(KernelUnavailableError, match="is missing") as err:
        kernel_library(installed_copy)
    assert "\n" not in str(err.value) and "pip install -e ." in str(err.value)


def test_no_build_record_means_not_built(tmp_path):
    with pytest.raises(KernelUnavailableError, match="is not built"):
        kernel_library(tmp_path)


def test_an_unreadable_record_is_refused(installed_copy):
    (installed_copy / RECORD_NAME).write_text("{truncated")
    with pytest.raises(KernelUnavailableError, match="unreadable"):
        kernel_library(installed_copy)


def test_an_install_without_a_compiler_succeeds_and_says_why(tmp_path, caplog):
    (tmp_path / LIBRARY_NAME).write_bytes(b"stale")  # an earlier build's file must not survive
    assert build_or_record(tmp_path, compiler="no-such-compiler-sge") is None
    assert not (tmp_path / LIBRARY_NAME).exists()
    assert "no C++ compiler" in json.loads((tmp_path / RECORD_NAME).read_text())["reason"]
    with pytest.raises(KernelUnavailableError, match="not built at install: no C\\+\\+ compiler found"):
        kernel_library(tmp_path)
    assert any("fused ONNX Runtime graph will be unavailable" in r.message for r in caplog.records)


def test_a_cpu_that_is_not_x86_64_gets_no_library(tmp_path, monkeypatch):
    import export.ort_sge.kernels.build as build

    monkeypatch.setattr(build.platform, "machine", lambda: "aarch64")
    with pytest.raises(KernelBuildError, match="x86-64 CPUs only; this one is aarch64"):
        build_library(tmp_path)
    assert build_or_record(tmp_path) is None
    with pytest.raises(KernelUnavailableError, match="x86-64 CPUs only"):
        kernel_library(tmp_path)


@pytest.mark.parametrize("builds", [["native"], ["avx512"]])
def test_a_library_without_run_time_dispatch_is_refused(installed_copy, builds):
    # a -march=native or single-ISA build runs its instructions as it loads: on another CPU that is SIGILL in dlopen
    record_path = installed_copy / RECORD_NAME
    record = json.loads(record_path.read_text())
    record_path.write_text(json.dumps({**record, "builds": builds}))
    with pytest.raises(KernelUnavailableError, match=f"holds only the {builds[0]} build") as err:
        kernel_library(installed_copy)
    assert "\n" not in str(err.value)


def test_an_unreadable_library_is_refused_in_one_line(installed_copy, monkeypatch):
    import export.ort_sge.kernels.library as library

    def unreadable(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(library, "file_sha256", unreadable)
    with pytest.raises(KernelUnavailableError, match=r"is unreadable .*Permission denied"):
        kernel_library(installed_copy)


def test_a_native_build_is_never_written_in_place():
    from export.ort_sge.kernels.build import main

    with pytest.raises(SystemExit) as exit_code:
        main(["--native"])
    assert exit_code.value.code == 2


def test_a_compiler_command_with_a_launcher_is_kept_whole():
    from export.ort_sge.kernels.build import find_compiler

    if shutil.which("g++") is None:
        pytest.skip("no g++ here")
    command = find_compiler("env CCACHE_DISABLE=1 g++")  # as $CXX="ccache g++" would be
    assert command[0] == shutil.which("env") and command[1:] == ["CCACHE_DISABLE=1", "g++"]
    with pytest.raises(KernelBuildError, match="no C\\+\\+ compiler found"):
        find_compiler("no-such-launcher-sge g++")


def test_the_installed_library_dispatches_over_every_build():
    record = json.loads((kernel_library().parent / RECORD_NAME).read_text())
    assert record["builds"] == ["avx2", "avx512", "baseline"]


def test_the_installed_library_runs_the_widest_build_this_cpu_supports():
    """What the library's own dispatcher picked (SgeKernelBuild), against the CPU's features as Linux reports them."""
    assert kernel_build(kernel_library()) == expected_kernel_build()


def test_asking_the_build_leaves_the_library_unloaded(installed_copy):
    """kernel_build must not keep the file mapped: at exit the loader runs a mapped library's destructors from its
    pages, so one damaged in place after the check (cp over it, a half-copied layer) would end the process with
    SIGBUS, as it ended a whole pytest run once."""
    library = installed_copy / LIBRARY_NAME
    assert kernel_build(library) == expected_kernel_build()
    assert str(library) not in Path("/proc/self/maps").read_text()


def test_a_library_that_cannot_report_its_build_is_refused_in_one_line():
    """A library built by an older version (no SgeKernelBuild) is refused, so the runner falls back and says why."""
    import _ctypes

    other = Path(_ctypes.__file__)  # a shared library that is not the kernel
    with pytest.raises(KernelUnavailableError, match="predates this version") as raised:
        kernel_build(other)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("isa", sorted(ISA_CPU_FEATURES))
@needs_compiler
def test_each_instruction_set_build_matches_the_reference(isa, tmp_path, monkeypatch):
    """Each build alone (SSE2, AVX2, AVX-512 with its own sigmoid: one a CPU would not pick is tested here only)
    against the float64 reference, on 8- and 16-lane blocks fed directly and on NCHW, hard statistics included; and
    its SgeResidualQ (uint8 NHWC, at this build's vector width)."""
    if not ISA_CPU_FEATURES[isa] <= cpu_flags():
        pytest.skip(f"this CPU lacks {isa}'s instructions")
    import export.ort_sge.session as ort_session
    from tests.sgeperf.test_fused_kernel import HARD_CASES, assert_nan_stays_in_its_group, blocked_error
    from tests.sgeperf.test_fused_kernel_q import assert_matches, run_case

    library = build_library(tmp_path / "lib", isas=(isa,))
    assert kernel_build(library) == isa  # a one-build library runs that build, whatever the CPU
    monkeypatch.setattr(ort_session, "kernel_library", lambda: library)
    rng = np.random.default_rng(7)
    # 8 lanes: groups of 1, 2, 4 and 8+ lanes (every AVX2 reduction tree); 16 lanes: 1, 4 and 16+
    cases = [(8, 64, 64), (8, 64, 32), (8, 64, 16), (8, 64, 4), (16, 64, 16), (16, 128, 4), (16, 64, 64), (0, 32, 8)]
    for block, channels, groups in cases:
        error = blocked_error(tmp_path, block=block, channels=channels, groups=groups, rng=rng)
        assert error <= 2e-5, (block, channels, groups)
    for case, (draw, tolerance) in HARD_CASES.items():
        for block in (0, 8, 16):
            error = blocked_error(tmp_path, block=block, channels=64, groups=16, rng=rng, size=(28, 28), **draw)
            assert error <= tolerance, (case, block)
    other = np.random.default_rng(8)  # groups of 8 and 16 channels in 16 lanes: the other reduction trees
    for channels, groups in [(64, 8), (64, 4)]:
        assert blocked_error(tmp_path, block=16, channels=channels, groups=groups, rng=other) <= 2e-5, groups
    for block in (0, 8, 16):
        assert_nan_stays_in_its_group(tmp_path, block)
    for channels, groups in [(64, 64), (64, 16), (256, 64), (256, 8), (48, 12)]:  # SgeResidualQ at this build's width
        assert_matches(*run_case(library, channels, groups, (5, 7), np.random.default_rng(channels + groups)))


@pytest.fixture(scope="module")
def compiled_objects(tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """Every ISA build of the maths and the dispatcher, compiled side by side as the install compiles them (its flags,
    its compiler, its run_compilers): name → (object file, the compiler's diagnostics)."""
    from export.ort_sge.kernels.build import COMMON_FLAGS, ISA_FLAGS, KERNEL_DIR

    try:
        compiler = find_compiler()  # as the build finds it
    except KernelBuildError:
        pytest.skip("needs a C++ compiler")
    out = tmp_path_factory.mktemp("objects")
    sources = {isa: [*flags, f"-DSGE_ISA={isa}", str(KERNEL_DIR / "sge_units.cc")] for isa, flags in ISA_FLAGS.items()}
    sources["op"] = [str(KERNEL_DIR / "sge_ort_op.cc")]
    objects = {name: out / f"{name}.o" for name in sources}
    diagnostics = run_compilers(
        [[*compiler, *COMMON_FLAGS, *source, "-c", "-o", str(objects[name])] for name, source in sources.items()]
    )
    return {name: (objects[name], stderr) for name, stderr in zip(sources, diagnostics, strict=True)}


def test_the_installed_library_compiles_without_a_warning(compiled_objects):
    """A warning (an unused variable left by a refactor, an intrinsic GCC 12 calls maybe-uninitialised) once passed
    unseen, the install showing the compiler's output only on failure: every ISA build of the maths and the
    dispatcher, with the install's flags, must compile silently."""
    for name, (_, stderr) in compiled_objects.items():
        assert "warning:" not in stderr, (name, stderr[:2000])


def test_no_instruction_set_build_defines_a_symbol_outside_its_namespace(compiled_objects):
    """The linker merges same-named weak definitions (inline functions, std templates) across object files: one
    compiled with -mavx512f that replaced the baseline's copy would crash an older CPU with SIGILL."""
    if shutil.which("nm") is None:
        pytest.skip("needs nm")
    for isa, (obj, _) in compiled_objects.items():
        if isa == "op":
            continue
        symbols = subprocess.run(["nm", "-C", "--defined-only", str(obj)], capture_output=True, text=True).stdout
        # global and weak definitions (local ones are never merged)
        shared = [ln for ln in symbols.splitlines() if ln.split()[1] in "TWVuv" and f"sge::{isa}::" not in ln]
        assert shared == [], f"{isa}: {shared}"


@pytest.mark.parametrize(
    ("floor", "expected"),
    [
        ("apply", lambda x, identity: np.maximum(x * 0.5 + identity, 0)),
        ("x_only", lambda x, identity: np.maximum(x * 0.5, 0)),
        ("identity_only", lambda x, identity: np.maximum(identity, 0)),
    ],
)
@needs_compiler
def test_floor_builds_compute_only_their_bound_and_are_never_loaded_as_the_kernel(
    tmp_path, monkeypatch, floor, expected
):
    """scripts/kernel_speed.py --floors: each build makes only its one pass, in either layout, reading only its inputs
    (x and identity are random and different, so reading the other would show); the record names the floor, and
    kernel_library refuses such a library."""
    import export.ort_sge.session as ort_session
    from tests.sgeperf.test_fused_kernel import fused_graph, run_in_layout

    library = build_library(tmp_path / "floor", floor=floor)
    assert json.loads((tmp_path / "floor" / RECORD_NAME).read_text())["floor"] == floor
    with pytest.raises(KernelUnavailableError, match="diagnostic build"):
        kernel_library(tmp_path / "floor")
    monkeypatch.setattr(ort_session, "kernel_library", lambda: library)
    rng = np.random.default_rng(3)
    shape = (2, 32, 5, 7)
    x, identity = rng.standard_normal(shape, dtype=np.float32), rng.standard_normal(shape, dtype=np.float32)
    # 4 groups of 8 channels: NCHW units of 8 × 35 = 280 floats (17 vectors and a partial one), NCHWc units of 16
    model = fused_graph(shape, 4, rng, around_convs=False)
    for block in (0, 16):  # elementwise over each unit's memory: the same in either layout
        got = run_in_layout(model, tmp_path, x, identity, block)
        np.testing.assert_allclose(got, expected(x, identity), atol=1e-6)


@needs_compiler
def test_a_floor_for_one_stage_leaves_the_other_blocks_their_sge(tmp_path, monkeypatch):
    """scripts/kernel_speed.py --floor-layer: blocks of the floor's H·W make only its pass; blocks of any other H·W
    compute SGE in full, against the float64 reference, in either layout."""
    import export.ort_sge.session as ort_session
    from tests.sgeperf.test_fused_kernel import ATOL, fused_graph, params, reference, run_in_layout

    library = build_library(tmp_path / "floor", floor="apply", floor_size=5 * 7)
    assert json.loads((tmp_path / "floor" / RECORD_NAME).read_text())["floor_size"] == 35
    monkeypatch.setattr(ort_session, "kernel_library", lambda: library)
    rng = np.random.default_rng(5)
    for size in [(5, 7), (6, 7)]:
        shape = (2, 32, *size)
        x, identity = rng.standard_normal(shape, dtype=np.float32), rng.standard_normal(shape, dtype=np.float32)
        model = fused_graph(shape, 4, rng, around_convs=False)
        floor = size == (5, 7)
        want = np.maximum(x * 0.5 + identity, 0) if floor else reference(x, identity, *params(model), 4)
        for block in (0, 16):
            got = run_in_layout(model, tmp_path, x, identity, block)
            assert np.abs(got - want).max() <= (1e-6 if floor else ATOL), (size, block)


def test_every_floor_build_makes_its_pass_in_vectors_of_its_own_width(tmp_path):
    """The AVX2 view's floor_apply ran slower than the op itself: its pass used 16-lane vectors in every build, and
    the AVX2 build split them and compared each lane in a scalar register (vucomiss) for the ReLU. A bound must not
    be slowed by its own code: no floor build may compare scalars."""
    from export.ort_sge.kernels.build import COMMON_FLAGS, FLOORS, ISA_FLAGS, KERNEL_DIR

    try:
        compiler = find_compiler()  # as the build finds it
    except KernelBuildError:
        pytest.skip("needs a C++ compiler")
    cases = [(isa, floor) for isa in ISA_FLAGS for floor in FLOORS]
    listings = {case: tmp_path / f"{case[0]}_{case[1]}.s" for case in cases}
    source = str(KERNEL_DIR / "sge_units.cc")
    flags = {case: [*ISA_FLAGS[case[0]], f"-DSGE_ISA={case[0]}", f"-DSGE_FLOOR={FLOORS[case[1]]}"] for case in cases}
    run_compilers([[*compiler, *COMMON_FLAGS, *flags[c], "-S", "-o", str(listings[c]), source] for c in cases])
    for case, listing in listings.items():
        assert "comiss" not in listing.read_text(), case


def test_an_unknown_floor_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown floor"):
        build_library(tmp_path / "other", floor="half")
    with pytest.raises(ValueError, match="floor_size needs a floor"):
        build_library(tmp_path / "other", floor_size=49)


def test_a_failed_build_names_its_cause_not_collect2(tmp_path):
    link_failure = (
        "/usr/bin/ld: /tmp/cc.o: in function `f':\na.cc:(.text+0x5): undefined reference to `g'\n"
        "collect2: error: ld returned 1 exit status\n"
    )
    assert compiler_cause(link_failure) == "a.cc:(.text+0x5): undefined reference to `g'"
    assert compiler_cause("a.cc: In function 'int f()':\na.cc:3:5: error: 'x' was not declared\n").endswith("declared")
    assert compiler_cause("") == "the compiler printed nothing"
    source = tmp_path / "a.cc"
    source.write_text("int main() { return 0; }\n")
    with pytest.raises(KernelBuildError, match=r"ld: cannot open output file .*nowhere/a\.out"):
        run_compiler([*find_compiler(), str(source), "-o", str(tmp_path / "nowhere" / "a.out")], what="a test")


def test_side_by_side_compiles_all_end_and_the_first_failure_is_raised(tmp_path):
    """build_library compiles the ISA builds and the op at once: a failure is reported as a sequential build would
    report it, and only once every compile has ended (none is left writing into the scratch folder)."""
    compiler = find_compiler()
    good, bad = tmp_path / "good.cc", tmp_path / "bad.cc"
    good.write_text("int f() { return 1; }\n")
    bad.write_text("int g() { return missing; }\n")
    commands = [
        [*compiler, "-c", str(source), "-o", str(tmp_path / f"{source.stem}{i}.o")]
        for i, source in enumerate([bad, good, bad])
    ]
    with pytest.raises(KernelBuildError, match=r"bad0\.o") as raised:
        run_compilers(commands)
    assert "was not declared" in str(raised.value)
    assert (tmp_path / "good1.o").is_file()


def test_a_built_library_shows_what_the_compiler_warned(tmp_path, caplog):
    """The install logs a successful compile's warnings instead of dropping them (a compiler that warns on every
    file stands in for one that warns on the sources)."""
    import logging
    import shlex
    import stat

    compiler = tmp_path / "warning-g++"
    real = shlex.join(find_compiler())  # the whole command the build would run ($CXX may be a launcher and g++)
    compiler.write_text(f'#!/bin/sh\necho "sge_units.cc:1:1: warning: a stand-in warning" >&2\nexec {real} "$@"\n')
    compiler.chmod(compiler.stat().st_mode | stat.S_IXUSR)
    with caplog.at_level(logging.WARNING, logger="export.ort_sge.kernels.build"):
        build_library(tmp_path / "lib", compiler=str(compiler), isas=("baseline",))
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 2 and all("warning: a stand-in warning" in m for m in warned)  # the maths and the op
