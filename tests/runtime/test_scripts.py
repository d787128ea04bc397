"""scripts/infer.py and scripts/benchmark.py end to end on the tiny artifact."""

import importlib.util
import json
from pathlib import Path

import pytest
from PIL import Image

from models.transforms import sample_photos
from tests.conftest import expected_kernel_build

ROOT = Path(__file__).resolve().parents[2]


def load_script(name):
    spec = importlib.util.spec_from_file_location(f"scripts_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def photo_files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("photos")
    paths = []
    for name, image in sample_photos(("chelsea", "coffee")).items():
        paths.append(directory / f"{name}.jpg")
        Image.fromarray(image).save(paths[-1], quality=95)
    return paths


def test_infer_prints_and_writes_top_k(artifact, photo_files, tmp_path, capsys):
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"label{i}\n" for i in range(1000)))
    out = tmp_path / "preds.json"
    infer = load_script("infer")
    args = [str(artifact), *map(str, photo_files), "--backend", "openvino", "--top-k", "3", "--labels", str(labels)]
    assert infer.main([*args, "--threads", "1", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [Path(p["image"]).name for p in result["predictions"]] == ["chelsea.jpg", "coffee.jpg"]
    top = result["predictions"][0]["top_k"]
    assert len(top) == 3 and top[0]["probability"] >= top[1]["probability"] >= top[2]["probability"]
    assert top[0]["label"] == f"label{top[0]['index']}"
    assert "chelsea.jpg" in capsys.readouterr().out


def test_infer_errors_exit_non_zero_with_one_line(artifact, tmp_path, capsys):
    infer = load_script("infer")
    assert infer.main([str(artifact), str(tmp_path / "missing.jpg")]) == 2
    assert "cannot read image" in capsys.readouterr().err
    assert infer.main([str(artifact), str(tmp_path / "missing.jpg"), "--backend", "mxnet"]) == 2
    assert "unknown backend 'mxnet'" in capsys.readouterr().err


def test_benchmark_writes_json_times_and_plot(artifact, tmp_path, capsys):
    benchmark = load_script("benchmark")
    paths = {k: tmp_path / f"{k}.{ext}" for k, ext in (("json", "json"), ("times", "json"), ("plot", "png"))}
    args = [str(artifact), "--backends", "onnxruntime,openvino", "--batch", "2", "--threads", "1"]
    args += ["--warmup-ms", "0", "--duration", "0", "--iterations", "4", "--percentiles", "50,99"]
    args += ["--json", str(paths["json"]), "--export-times", str(paths["times"]), "--plot", str(paths["plot"])]
    assert benchmark.main(args) == 0
    result = json.loads(paths["json"].read_text())
    assert [r["backend"] for r in result["reports"]] == ["onnxruntime", "openvino"]
    first = result["reports"][0]
    assert first["queries"] == 4 and first["batch"] == 2 and set(first["latency"]["percentiles_ms"]) == {"50", "99"}
    assert first["throughput_images_per_s"] == pytest.approx(2 * first["throughput_qps"])
    assert first["runner"]["allow_spinning"] is False  # ORT must not spin while others are timed
    assert result["comparison"][0]["latency_ratio"] == 1.0
    agreement = result["agreement_with_first"]  # both against the first backend's output
    assert agreement["onnxruntime"] == {"max_abs": 0.0, "rel_l2": 0.0} and agreement["openvino"]["max_abs"] < 1e-4
    assert result["command"][:2] == ["python", "scripts/benchmark.py"] and "--threads" in result["command"]
    assert result["machine"]["logical_cpus"] >= 1 and "onnxruntime" in result["versions"]
    # self-describing: when, where, what it read, which CPU extensions decided it, how the statistics are defined
    from export.ort_sge.kernels.build import cpu_flags

    assert result["machine"]["when"].endswith("+00:00") and result["working_directory"]
    assert Path(result["artifact"]).is_absolute() and "sge-deploy" in result["versions"]
    assert set(result["machine"]["cpu_flags"]) <= cpu_flags() and ("avx2" in cpu_flags()) == (
        "avx2" in result["machine"]["cpu_flags"]
    )
    assert "nearest rank" in result["statistics"]["percentiles"]
    times = json.loads(paths["times"].read_text())
    assert len(times["openvino"]["times_ms"]) == 4
    assert paths["plot"].read_bytes()[:4] == b"\x89PNG"
    printed = capsys.readouterr().out
    assert "Performance summary: onnxruntime" in printed and "Total Host Walltime" in printed
    build = expected_kernel_build()  # the report says which graph and which build of its kernel ran
    assert first["runner"]["graph"] == "sge_fused" and first["runner"]["kernel_build"] == build
    assert f"its kernel's {build} build" in printed


def test_benchmark_refuses_bad_arguments(artifact, tmp_path, capsys):
    benchmark = load_script("benchmark")
    out = tmp_path / "r.json"
    with pytest.raises(SystemExit) as exit_info:  # the shared --batch-size type refuses it while parsing
        benchmark.main([str(artifact), "--backends", "onnxruntime", "--batch", "0", "--json", str(out)])
    assert exit_info.value.code == 2
    assert "argument --batch: must be at least 1; got 0" in capsys.readouterr().err
    assert not out.exists()
    assert benchmark.main([str(tmp_path / "nothing"), "--backends", "onnxruntime"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert benchmark.main([str(artifact), "--backends", "onnxruntime", "--precision", "fp32,fp64"]) == 2
    assert "unknown precision 'fp64'" in capsys.readouterr().err


def test_benchmark_entries_name_what_they_leave_out():
    from runtime.commands.benchmark import build_parser, entries, left_out

    args = build_parser().parse_args(["artifact", "--threads", "1"])
    runs = entries(["onnxruntime", "openvino"], ["bf16"], args)
    assert list(runs) == ["openvino:bf16"] and left_out(["onnxruntime", "openvino"], runs) == ["onnxruntime"]
    runs = entries(["onnxruntime", "openvino"], ["fp32", "bf16", "fp16"], args)  # fp16 on OpenVINO, as infer takes
    assert list(runs) == ["onnxruntime", "openvino", "openvino:bf16", "openvino:fp16"]
    assert left_out(["onnxruntime", "openvino"], runs) == []
