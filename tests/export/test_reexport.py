"""The export command an error tells the user to run again is the one that made the artifact."""

from types import SimpleNamespace

from export.reexport import export_command


def manifest(source, spec):
    return SimpleNamespace(model="sge_resnet18", extra={"source": source, "spec": spec})


def test_the_command_carries_the_checkpoint_size_folder_and_the_flag_added():
    made = manifest({"registry": True, "checkpoint": "ck/my weights.pth", "init": "checkpoint"},
                    {"input_size": [96, 128], "dynamic_hw": True})  # fmt: skip
    assert export_command(made, directory="out/ack", adding=("--int8",)) == (
        "sge-deploy export --model sge_resnet18 --checkpoint 'ck/my weights.pth' --input-size 96 128 --dynamic-hw "
        "--output out/ack --int8"
    )


def test_default_weights_a_factory_and_an_unknown_folder():
    seeded = manifest({"registry": True, "init": "random"}, {"input_size": [224, 224]})
    assert export_command(seeded) == "sge-deploy export --model sge_resnet18 --init random --input-size 224 224"
    factory = manifest({"registry": False, "factory": "my_models:tiny", "init": "calibrated"}, {})
    assert export_command(factory, adding=("--int8",)) == "sge-deploy export --model my_models:tiny --int8"
    assert export_command(SimpleNamespace(model="m", extra=None)) == "sge-deploy export --model m"


def test_the_command_of_a_real_manifest_names_the_registry_model(tmp_path):
    # the manifest records `registry` as a flag: "--model True" was printed for every registry model
    from export.artifacts import load_manifest
    from export.pipeline import export_model

    out = tmp_path / "r18"
    export_model("resnet18", out, init="random", input_size=(32, 32), batch_sizes=(1,), fused_sge=False)
    command = export_command(load_manifest(out), directory=out, adding=("--int8",))
    assert command == f"sge-deploy export --model resnet18 --init random --input-size 32 32 --output {out} --int8"


def test_an_int8_re_export_keeps_the_calibration_the_artifact_recorded():
    # the saturation note's command dropped --calib-images: followed, it calibrated on the bundled photographs
    calibrated = SimpleNamespace(
        model="sge_resnet18",
        extra={
            "source": {"registry": True, "init": "random"},
            "spec": {"input_size": [64, 64]},
            "int8": {"calibration": {"images": ["imgs/few", "x y.jpg"], "method": "percentile", "count": 8}},
        },
    )
    assert export_command(calibrated, directory="c_few", adding=("--int8",)) == (
        "sge-deploy export --model sge_resnet18 --init random --input-size 64 64 --output c_few --int8 "
        "--calib-images imgs/few 'x y.jpg' --calib-method percentile --calib-count 8"
    )
    other = export_command(calibrated, adding=("--int8",), same_calibration=False)  # validate's "other calibration"
    assert "--calib" not in other
    bundled = {**calibrated.extra, "int8": {"calibration": {"images": "bundled photographs, augmented", "count": 32}}}
    assert export_command(SimpleNamespace(model="m", extra=bundled), adding=("--int8",)).endswith("--int8")
