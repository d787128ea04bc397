"""Every figure is written, has its layout's pixel size and is drawn in every panel; stats.json and index.md agree."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from models.inspection import inspect_model
from models.inspection.figures import HEADER_PX, STATS_SIZE_PX, grid_size_px

from .conftest import SIZE


def _pixels(path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.float64)


def _assert_panels_drawn(pixels: np.ndarray, *, rows: int, cols: int, panel_px: int) -> None:
    """Each panel's square varies (not a blank or flat box)."""
    for r in range(rows):
        for c in range(cols):
            top = HEADER_PX + r * panel_px
            box = pixels[top + 16 : top + panel_px - 4, c * panel_px + 4 : (c + 1) * panel_px - 4]
            assert box.std() > 2.0, f"panel ({r}, {c}) is blank"


@pytest.fixture(scope="module")
def sge_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("sge")
    return inspect_model("sge_resnet18", image="astronaut", out_dir=out, init="random", size=SIZE, groups=4), out


def test_sge_report_files_sizes_and_content(sge_report):
    result, out = sge_report
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(result.files)  # nothing else, no temporary file left
    assert result.files[-1] == "index.md"
    for stage in ("layer1", "layer2", "layer3", "layer4"):
        gates = _pixels(out / f"{stage}_sge_gates.png")
        # 4 groups → a 2×2 grid of 96 px panels, a 40 px title and a 50 px colour bar: 192 × 282.
        assert gates.shape[:2][::-1] == grid_size_px(2, 2, panel_px=96, colorbar=True) == (192, 282)
        _assert_panels_drawn(gates, rows=2, cols=2, panel_px=96)
        acts = _pixels(out / f"{stage}_sge_activations.png")
        # 4 groups shown × (gate, before, after) in 180 px panels, with the gate's colour bar.
        assert acts.shape[:2][::-1] == grid_size_px(3, 4, panel_px=180, colorbar=True) == (720, 630)
        _assert_panels_drawn(acts, rows=3, cols=4, panel_px=180)
    stats_png = _pixels(out / "stats.png")
    assert stats_png.shape[:2][::-1] == STATS_SIZE_PX
    assert stats_png.std() > 10 and len(np.unique(stats_png.reshape(-1, 3), axis=0)) > 50


def test_stats_json_and_index_agree_with_the_result(sge_report):
    result, out = sge_report
    data = json.loads((out / "stats.json").read_text())
    assert data["model"] == "sge_resnet18" and data["image"] == "astronaut"
    assert data["input_size"] == list(SIZE)
    assert [b["block"] for b in data["blocks"]] == [b.block for b in result.blocks]
    assert len(data["blocks"]) == 8 and len(data["blocks"][0]["group_var_before"]) == 4
    assert data["stages"][2]["var_after"] == result.stages[2].var_after
    index = (out / "index.md").read_text()
    for name in result.files[:-2]:
        assert f"]({name})" in index
    assert "NOT trained" in index and "layer4.1" in index


def test_map_figures_for_cbam_and_gc(tmp_path):
    for name, suffix, stages in (("cbam_resnet18", "cbam_spatial_gate", 4), ("gc_resnet18", "gc_softmax", 3)):
        out = tmp_path / name
        result = inspect_model(name, image="coffee", out_dir=out, init="random", size=SIZE)
        pngs = [f for f in result.files if f.endswith(f"{suffix}.png")]
        assert len(pngs) == stages
        for png in pngs:
            pixels = _pixels(out / png)
            assert pixels.shape[:2][::-1] == grid_size_px(1, 5, panel_px=200, colorbar=False) == (1000, 240)
            _assert_panels_drawn(pixels, rows=1, cols=5, panel_px=200)


def test_block_out_of_range_is_refused_before_any_file(sge_report, tmp_path):
    empty, kept = tmp_path / "empty", tmp_path / "kept"
    with pytest.raises(IndexError, match="layer1, which has 2 attention blocks"):
        inspect_model("sge_resnet18", image="camera", out_dir=empty, init="random", size=SIZE, groups=4, block=2)
    assert not empty.exists()
    shutil.copytree(sge_report[1], kept)  # an earlier report
    before = {f.name: f.read_bytes() for f in kept.iterdir()}
    with pytest.raises(IndexError, match="layer1, which has 2 attention blocks"):
        inspect_model("sge_resnet18", image="camera", out_dir=kept, init="random", size=SIZE, groups=4, block=2)
    assert {f.name: f.read_bytes() for f in kept.iterdir()} == before  # the earlier report stays whole


def test_a_reused_folder_holds_only_the_new_report(sge_report, tmp_path):
    mine = ["notes.txt", "my_spatial_gate.png"]  # a user's files, one named like a report's figure
    for name in mine:
        (tmp_path / name).write_text("mine\n")
    shutil.copytree(sge_report[1], tmp_path, dirs_exist_ok=True)  # an earlier report beside them
    result = inspect_model("sa_resnet18", image="camera", out_dir=tmp_path, init="random", size=SIZE)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*result.files, *mine])


def test_groups_shown_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="groups_shown must be at least 1"):
        inspect_model("sge_resnet18", image="camera", out_dir=tmp_path, init="random", size=SIZE, groups_shown=0)
    assert not (tmp_path / "index.md").exists()
