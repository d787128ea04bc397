"""The export command an error tells the user to run again is the one that made the artifact."""

from types import SimpleNamespace

from export.reexport import export_command


def manifest(source, spec):
    return SimpleNamespace(model="sge_resnet18", extra={"source": source, "spec": spec})


def test_the_command_carries_the_checkpoint_size_folder_and_the_flag_added():
    made = manifest({"registry": "sge_resnet18", "checkpoint": "ck/my weights.pth", "init": "checkpoint"},
                    {"input_size": [96, 128], "dynamic_hw": True})  # fmt: skip
    assert export_command(made, directory="out/ack", adding=("--int8",)) == (
        "sge-deploy export --model sge_resnet18 --checkpoint 'ck/my weights.pth' --input-size 96 128 --dynamic-hw "
        "--output out/ack --int8"
    )


def test_default_weights_a_factory_and_an_unknown_folder():
    seeded = manifest({"registry": "sge_resnet18", "init": "random"}, {"input_size": [224, 224]})
    assert export_command(seeded) == "sge-deploy export --model sge_resnet18 --init random --input-size 224 224"
    factory = manifest({"factory": "my_models:tiny", "init": "calibrated"}, {})
    assert export_command(factory, adding=("--int8",)) == "sge-deploy export --model my_models:tiny --int8"
    assert export_command(SimpleNamespace(model="m", extra=None)) == "sge-deploy export --model m"
