"""INT8 calibration on TensorRT 10.x end to end against the double: OPT-sized batches, the cache and its inputs,
and an unreadable image that the binding would swallow. (11.x has no calibrators: test_double_build.)"""

import json

import pytest
from PIL import Image

from export.trt.build import PLAN_NAME, build_engine
from export.trt.calibrate import CalibrationDataError, fingerprint_path
from export.trt.route import TrtBuildOptions
from models.transforms import sample_photos


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, img in sample_photos(("astronaut", "chelsea", "coffee", "rocket", "camera")).items():
        Image.fromarray(img).resize((80, 80)).save(folder / f"{name}.png")
    return folder


def int8(artifact, batch=(1, 2, 4), **options):
    options = TrtBuildOptions(precision="int8", batch=batch, **options)
    return build_engine(artifact / "model.onnx", artifact, options=options)


def test_calibration_reads_opt_batches_and_reuses_its_cache_only_for_the_same_inputs(fake_trt, sge_artifact, photos):
    if fake_trt.major != 10:
        pytest.skip("calibrators exist on TensorRT 10.x only")
    first = int8(sge_artifact, calib_dir=photos)
    plan = json.loads((sge_artifact / PLAN_NAME).read_bytes().split(b"\n", 1)[1])
    assert plan["calibration"] == {"batch": 2, "batches": 2, "from_cache": False}  # OPT 2: 4 of 5 images
    assert first.info["calibration"] == {
        "cache": "calibration.cache",
        "images": 4,
        "batch": 2,
        "folder": str(photos),
        "reused_cache": False,
    }
    calls = fake_trt.machine.calls
    assert calls.index("IBuilderConfig.int8_calibrator=") < calls.index("Builder.build_serialized_network")
    assert calls.index("IBuilderConfig.set_calibration_profile") < calls.index("Builder.build_serialized_network")

    again = int8(sge_artifact, calib_dir=photos)  # same ONNX, images, batch: the cache answers
    plan = json.loads((sge_artifact / PLAN_NAME).read_bytes().split(b"\n", 1)[1])
    assert plan["calibration"]["from_cache"] and again.info["calibration"]["reused_cache"]

    int8(sge_artifact, batch=(1, 4, 4), calib_dir=photos)  # another OPT batch: calibrated again, at 4
    plan = json.loads((sge_artifact / PLAN_NAME).read_bytes().split(b"\n", 1)[1])
    assert plan["calibration"] == {"batch": 4, "batches": 1, "from_cache": False}
    assert json.loads(fingerprint_path(sge_artifact / "calibration.cache").read_text())["batch"] == 4


def test_an_unreadable_image_fails_the_build_instead_of_a_short_calibration(fake_trt, sge_artifact, photos):
    if fake_trt.major != 10:
        pytest.skip("calibrators exist on TensorRT 10.x only")
    (photos / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(CalibrationDataError, match=r"stopped after 0 of 3 batches.*broken\.png"):
        int8(sge_artifact, calib_dir=photos)
    assert not (sge_artifact / PLAN_NAME).exists() and not (sge_artifact / "calibration.cache").exists()


@pytest.mark.parametrize("asked", [None, (0.4, 0.4, 0.4)], ids=["model's own", "asked"])
def test_int8_calibrates_with_the_artifacts_preprocessing_unless_asked_otherwise(
    fake_trt, sge_artifact, photos, monkeypatch, asked
):
    import export.trt.artifact as artifact_module

    own = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}  # a model trained with other statistics
    load_manifest = artifact_module.load_manifest

    def manifest_with_own_statistics(*args, **kwargs):
        manifest = load_manifest(*args, **kwargs)
        manifest.preprocessing.update(own)
        return manifest

    built = []

    def capture(onnx_path, directory, *, options):
        built.append(options)
        raise KeyboardInterrupt  # stop before TensorRT: only the options matter here

    monkeypatch.setattr(artifact_module, "load_manifest", manifest_with_own_statistics)
    monkeypatch.setattr(artifact_module, "build_engine", capture)
    extra = {} if asked is None else {"mean": asked, "std": (0.3, 0.3, 0.3)}
    with pytest.raises(KeyboardInterrupt):
        artifact_module.add_engine(
            sge_artifact, options=TrtBuildOptions(precision="int8", calib_dir=photos, **extra), validate=False
        )
    expected = (own["mean"], own["std"]) if asked is None else ([0.4] * 3, [0.3] * 3)
    assert (list(built[0].mean), list(built[0].std)) == expected


def test_a_refused_calibration_profile_fails_the_build(fake_trt, sge_artifact, photos):
    from export.trt.build import TrtBuildError, TrtRequestError

    fake_trt.machine.calibration_profile_refused = True  # the binding's False: the profile was not set
    if fake_trt.major != 10:  # 11.x: no calibrators, refused before any profile is set
        with pytest.raises(TrtRequestError, match="has no calibrators"):
            int8(sge_artifact, calib_dir=photos)
        return
    with pytest.raises(TrtBuildError, match="refused the calibration profile"):
        int8(sge_artifact, calib_dir=photos)
    assert not (sge_artifact / PLAN_NAME).exists()
