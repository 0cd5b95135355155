"""Scene import (GeoTIFF, palette masks, crosswalks, demo workspace) and region checks."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seghz.classes import get_scheme
from seghz.data.io import read_index_mask
from seghz.data.scenes import DEMO_SCENES, import_scene, register_shipped_checkpoints
from seghz.errors import BadInputError, RegionError
from seghz.infer.region import check_window, class_areas, pixel_area_m2
from seghz.store import Workspace

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _rgb(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def test_import_png_with_palette_label_crosswalked(tmp_path):
    ws = Workspace(tmp_path / "ws")
    hz20 = get_scheme("hz20")
    ids = np.array([[1, 4, 9, 20], [6, 19, 16, 0]], np.uint8)  # file ids; 0 = unlabelled
    Image.fromarray(_rgb(2, 4)).save(tmp_path / "a.png")
    pal = np.zeros((2, 4, 3), np.uint8)
    for i, cid in enumerate(hz20.ids):
        pal[ids == cid] = hz20.colors[i]
    Image.fromarray(pal).save(tmp_path / "a_label.png")
    s = import_scene(ws, tmp_path / "a.png", tmp_path / "a_label.png", scheme="hz20", target_scheme="hz7", split="train")
    lbl = ws.effective_label(s.id)
    hz7 = get_scheme("hz7")
    want = [["Water", "OpenArea", "Buildings", "Road_land"], ["Green_land", "Green_land", "Buildings", None]]
    for r in range(2):
        for c in range(4):
            assert (lbl[r, c] == 255) if want[r][c] is None else hz7.names[lbl[r, c]] == want[r][c]
    assert s.scheme == "hz7" and s.crs is None and s.split == "train"


def test_import_rejects_unknown_colour_and_size_mismatch(tmp_path):
    ws = Workspace(tmp_path / "ws")
    Image.fromarray(_rgb(4, 4)).save(tmp_path / "a.png")
    bad = np.zeros((4, 4, 3), np.uint8)
    bad[1, 2] = (1, 2, 3)
    Image.fromarray(bad).save(tmp_path / "bad.png")
    with pytest.raises(BadInputError, match=r"bad\.png.*1 pixel.*row 1, col 2.*\(1, 2, 3\)"):
        import_scene(ws, tmp_path / "a.png", tmp_path / "bad.png", scheme="hz7")
    Image.fromarray(np.ones((3, 4), np.uint8)).save(tmp_path / "small.png")
    with pytest.raises(BadInputError, match="small.png: label size 4x3 differs from image a.png size 4x4"):
        import_scene(ws, tmp_path / "a.png", tmp_path / "small.png", scheme="hz7")
    assert ws.list_scenes() == []  # nothing half-imported
    assert not any((ws.root / "scenes").iterdir())


def test_import_id_out_of_range(tmp_path):
    ws = Workspace(tmp_path / "ws")
    Image.fromarray(_rgb(4, 4)).save(tmp_path / "a.png")
    Image.fromarray(np.full((4, 4), 9, np.uint8)).save(tmp_path / "l.png")
    with pytest.raises(BadInputError, match=r"l\.png: 16 pixel\(s\) hold class id\(s\) \[9\]"):
        import_scene(ws, tmp_path / "a.png", tmp_path / "l.png", scheme="hz7")


@pytest.mark.skipif(not (SHARED / "shanghai").is_dir(), reason="../shared/data/shanghai is absent")
def test_import_shanghai_geotiff_keeps_georeference(tmp_path):
    ws = Workspace(tmp_path / "ws")
    s = import_scene(ws, SHARED / "shanghai" / "google_5_5.tif", scheme="hz7")
    assert s.crs and "3857" in s.crs and s.transform is not None and (s.width, s.height) == (512, 512)
    a = pixel_area_m2(s, 256, 256)
    # ~1 m/px in EPSG:3857 at 31.1 N: the ground area of a pixel is well below the Mercator 1 m^2
    assert 0.3 < a < 1.5
    from seghz.data.io import raster_info
    from seghz.geo.tiles import scene_bounds_latlon

    (south, west), (north, east) = scene_bounds_latlon(raster_info(ws.scene_path(s, "image")))
    assert 121.48 <= west < east <= 121.52 and 31.10 <= south < north <= 31.14


def test_check_window_clips_and_caps(tmp_path):
    ws = Workspace(tmp_path / "ws")
    Image.fromarray(_rgb(100, 200)).save(tmp_path / "a.png")
    s = import_scene(ws, tmp_path / "a.png", scheme="hz7")
    assert check_window(s, (-10, 150, 50, 100)) == (0, 150, 40, 50)
    with pytest.raises(RegionError, match="outside scene"):
        check_window(s, (100, 0, 10, 10))
    with pytest.raises(RegionError, match="over the cap"):
        check_window(s, (0, 0, 100, 200), max_pixels=1000)


def test_class_areas_sum():
    m = np.array([[0, 0, 1], [2, 255, 1]], np.uint8)
    rows = class_areas(m, ["a", "b", "c"], 4.0)
    assert [r["pixels"] for r in rows] == [2, 2, 1]
    assert abs(sum(r["percent"] for r in rows) - 100) < 1e-9
    assert rows[0]["km2"] == pytest.approx(8e-6)


def test_demo_workspace_and_shipped_checkpoints(tmp_path):
    """The demo scenes are written once, georeferenced, synthetic, with exact labels."""
    from seghz.data import scenes as sc

    ws = Workspace(tmp_path / "ws")
    empty = tmp_path / "nockpt"
    empty.mkdir()
    assert sc.ensure_demo_workspace(ws, empty) is True
    got = ws.list_scenes()
    assert len(got) == len(DEMO_SCENES) and all(s.synthetic and s.crs for s in got)
    assert {s.split for s in got} == {"train", "val"}
    from seghz.demo import generate_scene

    town = next(s for s in got if s.name.startswith("Demo town"))
    assert np.array_equal(read_index_mask(ws.scene_path(town, "label")), generate_scene(1024, 0)[1])
    assert sc.ensure_demo_workspace(ws, empty) is False  # idempotent
    # distinct placements: no two demo scenes share an origin, and each file carries the indexed transform
    assert len({s.transform[2:6:3] for s in got}) == len(got)
    from seghz.data.io import raster_info

    for s in got:
        assert np.allclose(raster_info(ws.scene_path(s, "image")).transform, s.transform)
    assert register_shipped_checkpoints(ws, empty) is False and ws.active_checkpoint() is None


def test_interrupted_demo_build_is_completed(tmp_path):
    """A kill during the first start leaves a partial demo (and maybe an orphan folder): the next start finishes it."""
    from seghz.data import scenes as sc

    ws = Workspace(tmp_path / "ws")
    empty = tmp_path / "nockpt"
    empty.mkdir()
    sc.ensure_demo_workspace(ws, empty)
    victim = ws.list_scenes()[0]
    ws.delete_scene(victim.id)
    (ws.root / "scenes" / victim.id).mkdir(parents=True, exist_ok=True)  # orphan folder, no index row
    (ws.root / "scenes" / victim.id / "image.tif").write_bytes(b"torn")
    assert sc.ensure_demo_workspace(ws, empty) is True
    assert sorted(s.name for s in ws.list_scenes()) == sorted(n for n, *_ in DEMO_SCENES)


def test_non_ascii_names_get_distinct_ids(tmp_path):
    ws = Workspace(tmp_path / "ws")
    Image.fromarray(_rgb(4, 4)).save(tmp_path / "西湖.png")
    Image.fromarray(_rgb(4, 4)).save(tmp_path / "钱塘江.png")
    a = import_scene(ws, tmp_path / "西湖.png", scheme="hz7")
    b = import_scene(ws, tmp_path / "钱塘江.png", scheme="hz7")
    assert a.id != b.id and a.id.startswith("scene-") and a.name == "西湖"


def test_bad_shipped_checkpoint_does_not_hide_the_others(tmp_path):
    from seghz.models.checkpoint import save_checkpoint
    from seghz.models.registry import build_model

    d = tmp_path / "ck"
    d.mkdir()
    (d / "a_broken.safetensors").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\n")
    model = build_model("Segformer", "tu-efficientnet_lite0", 7)
    save_checkpoint(d / "b_demo.safetensors", model, {"arch": "Segformer", "encoder": "tu-efficientnet_lite0", "num_classes": 7,
                                                      "scheme": get_scheme("hz7").to_json()})
    save_checkpoint(d / "c_synthetic.safetensors", model, {"arch": "Segformer", "encoder": "tu-efficientnet_lite0",
                                                           "num_classes": 7, "scheme": get_scheme("hz7").to_json(),
                                                           "synthetic": True})
    ws = Workspace(tmp_path / "ws")
    assert register_shipped_checkpoints(ws, d) is True
    assert [c.id for c in ws.list_checkpoints()] == ["c_synthetic", "b_demo"] and ws.active_checkpoint() is not None
    # the synthetic demo model trained on other seeds: on no scene here; a real shipped one may have (unknown)
    assert ws.get_checkpoint("c_synthetic").train_scenes == () and ws.get_checkpoint("b_demo").train_scenes is None
