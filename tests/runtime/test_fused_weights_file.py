"""The fused SGE graph keeps its weights in a side file (export/external_data.py) so that ONNX Runtime maps them
instead of holding several copies: the plan's rewritten graph does the same, and its scratch files go when the
session is open. The side file is part of the artifact: recorded, hashed, refused when tampered with."""

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

import runtime
from export.artifacts import ArtifactError, load_manifest
from export.external_data import external_data_files
from export.ort_sge.nchwc import nchwc_block_size
from export.ort_sge.session import FUSED_DATA_ROLE, cpu_session, plan_session
from tests.runtime.conftest import ATOL

pytestmark = pytest.mark.timeout(120)

FUSED = "model.sge_fused.onnx"


def test_the_export_writes_the_fused_weights_beside_the_graph(artifact):
    graph = onnx.load(str(artifact / FUSED), load_external_data=False)
    (data,) = external_data_files(graph)
    assert data == f"{FUSED}.data" and (artifact / data).stat().st_size > (artifact / FUSED).stat().st_size
    assert load_manifest(artifact, verify=True).files[data].role == FUSED_DATA_ROLE
    assert (artifact / data).stat().st_mode & 0o777 == (artifact / FUSED).stat().st_mode & 0o777


def test_the_plan_maps_its_weights_and_drops_its_scratch_when_closed(artifact, random_batch):
    if nchwc_block_size() == 0:
        pytest.skip("ONNX Runtime uses no NCHWc layout on this CPU: the fused graph is opened as it is")
    plan = plan_session(artifact / FUSED, fused=True)
    planned = Path(plan.model)
    graph = onnx.load(str(planned), load_external_data=False)
    assert sum(t.data_location == onnx.TensorProto.EXTERNAL for t in graph.graph.initializer) > 10
    assert all((planned.parent / name).is_file() for name in external_data_files(graph))
    session = cpu_session(plan, threads=1)
    plan.close()
    assert not planned.parent.exists()
    got = session.run(None, {"input": random_batch})[0]  # the session keeps what it mapped
    with runtime.load(artifact, "onnxruntime", threads=1, sge_fused=False) as plain:
        np.testing.assert_allclose(got, plain.infer(random_batch), atol=ATOL, rtol=0)


@pytest.mark.parametrize("damage", ["flip", "delete"])
def test_a_tampered_or_missing_weights_file_is_refused(artifact, tmp_path, damage):
    copy = tmp_path / "copy"
    shutil.copytree(artifact, copy)
    data = copy / f"{FUSED}.data"
    if damage == "flip":
        raw = bytearray(data.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        data.write_bytes(bytes(raw))
    else:
        data.unlink()
    with pytest.raises(ArtifactError, match=f"{FUSED}.data"):
        runtime.load(copy, "onnxruntime")


def test_the_weights_reader_matches_onnx_and_refuses_cut_or_escaping_files(artifact, tmp_path):
    from export.external_data import initializer_array, load_external_weights

    fused = artifact / "model.sge_fused.onnx"
    ours = onnx.load(str(fused), load_external_data=False)
    load_external_weights(ours, fused)
    theirs = onnx.load(str(fused))
    assert [t.raw_data for t in ours.graph.initializer] == [t.raw_data for t in theirs.graph.initializer]
    bare = onnx.load(str(fused), load_external_data=False)
    big = next(t for t in bare.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL)
    expected = onnx.numpy_helper.to_array(next(t for t in theirs.graph.initializer if t.name == big.name))
    np.testing.assert_array_equal(initializer_array(big, fused), expected)
    cut = tmp_path / "cut"
    cut.mkdir()
    shutil.copy(fused, cut)
    data = (artifact / "model.sge_fused.onnx.data").read_bytes()
    (cut / "model.sge_fused.onnx.data").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"holds \d+ bytes, short of the \d+ that model\.sge_fused\.onnx's weights"):
        load_external_weights(onnx.load(str(cut / fused.name), load_external_data=False), cut / fused.name)
    for entry in big.external_data:
        if entry.key == "location":
            entry.value = "../../etc/passwd"
    with pytest.raises(ValueError, match="not a file beside it"):
        initializer_array(big, fused)
