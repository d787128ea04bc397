"""The export command that made an artifact, rebuilt from its manifest: what a message tells the user to run again.

"Re-export it with `sge-deploy export --model NAME --int8`" dropped the user's own checkpoint, input size and output
folder: followed as printed, it exported untrained weights at 224×224 into ``artifacts/NAME`` and left the artifact
as it was. The manifest records the source and the spec, so the command can be the one that made the artifact.
"""

import shlex
from pathlib import Path
from typing import Any


def export_command(
    manifest: Any,
    *,
    directory: str | Path | None = None,
    adding: tuple[str, ...] = (),
    same_calibration: bool = True,
) -> str:
    """``sge-deploy export`` with the model, checkpoint (or ``--init random``), input size, ``--dynamic-hw`` and
    ``--output`` the artifact was made with, then ``adding``; in shell quoting. Where ``adding`` asks for ``--int8``
    and ``same_calibration``, the calibration the artifact recorded comes too (its images, method and count)."""
    extra = manifest.extra if isinstance(manifest.extra, dict) else {}
    source = extra.get("source") if isinstance(extra.get("source"), dict) else {}
    spec = extra.get("spec") if isinstance(extra.get("spec"), dict) else {}
    words = ["sge-deploy", "export", "--model", str(source.get("factory") or manifest.model)]  # registry: a flag
    if source.get("checkpoint"):
        words += ["--checkpoint", str(source["checkpoint"])]
    elif source.get("init") == "random":
        words += ["--init", "random"]
    size = spec.get("input_size")
    if isinstance(size, list | tuple) and len(size) == 2:
        words += ["--input-size", *map(str, size)]
    if spec.get("dynamic_hw"):
        words.append("--dynamic-hw")
    if directory is not None:
        words += ["--output", str(directory)]
    words += adding
    if "--int8" in adding and same_calibration:
        words += calibration_words(extra.get("int8"))
    return shlex.join(words)


def calibration_words(int8: Any) -> list[str]:
    """The ``--calib-*`` flags of a manifest's INT8 calibration record, where they are not the defaults."""
    calibration = int8.get("calibration") if isinstance(int8, dict) else None
    if not isinstance(calibration, dict):
        return []
    words = []
    images = calibration.get("images")
    if isinstance(images, list) and images:  # else "bundled photographs, augmented": the default
        words += ["--calib-images", *map(str, images)]
    from export.int8.calibration import CalibrationOptions

    default = CalibrationOptions()
    if calibration.get("method") not in (None, default.method):
        words += ["--calib-method", str(calibration["method"])]
    if isinstance(calibration.get("count"), int) and calibration["count"] != default.count:
        words += ["--calib-count", str(calibration["count"])]
    return words
