"""Importing imagery for the Map page: GeoTIFFs in any CRS (WGS-84 bounds), GeoTIFFs without CRS (pixel space),
folders of Baidu ``{x}-{y}.jpeg`` tiles (mosaicked + warped to EPSG:3857 via the datum conversions), the
``python -m seghz import PATH`` command, and the Baidu bad-input errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.transform import Affine
from rasterio.warp import transform as warp_transform

from seghz.data.io import raster_info
from seghz.data.scenes import import_imagery, wgs84_bounds
from seghz.errors import BadInputError
from seghz.geo import datum as D
from seghz.geo import fetch as F
from seghz.geo.tiles import PIXEL, crs_kind, scene_bounds
from seghz.store import Workspace

SHANGHAI = Path(__file__).resolve().parents[2] / "shared" / "data" / "shanghai"
HZ_LON, HZ_LAT = 120.15, 30.25  # West Lake, Hangzhou


def _write_tif(path: Path, h: int, w: int, crs=None, transform=None) -> Path:
    rng = np.random.default_rng(0)
    data = rng.integers(0, 255, (3, h, w), dtype=np.uint8)
    prof = {"driver": "GTiff", "width": w, "height": h, "count": 3, "dtype": "uint8"}
    if crs is not None:
        prof["crs"] = crs
    if transform is not None:
        prof["transform"] = transform
    with rasterio.open(path, "w", **prof) as ds:
        ds.write(data)
    return path


def _utm_tif(path: Path, h=120, w=200, res=10.0) -> Path:
    (x,), (y,) = warp_transform("EPSG:4326", "EPSG:32651", [HZ_LON], [HZ_LAT])
    return _write_tif(path, h, w, "EPSG:32651", Affine(res, 0, x, 0, -res, y))


def test_utm_geotiff_import_has_true_wgs84_bounds(tmp_path):
    ws = Workspace(tmp_path / "ws")
    src = _utm_tif(tmp_path / "hz_utm.tif")
    scene, msg = import_imagery(ws, src, name="hz utm")
    info = raster_info(ws.scene_path(scene, "image"))
    assert scene.crs and "32651" in scene.crs
    w, s, e, n = wgs84_bounds(info)
    with rasterio.open(ws.scene_path(scene, "image")) as ds:
        t = ds.transform
    cols, rows = [0, info.width, 0, info.width], [0, 0, info.height, info.height]
    clon, clat = warp_transform("EPSG:32651", "EPSG:4326", *zip(*(t @ (c, r) for c, r in zip(cols, rows))))
    assert (w, s, e, n) == pytest.approx((min(clon), min(clat), max(clon), max(clat)), abs=1e-7)
    assert clon[0] == pytest.approx(HZ_LON, abs=1e-7) and clat[0] == pytest.approx(HZ_LAT, abs=1e-7)
    assert 0.019 < e - w < 0.023 and 0.010 < n - s < 0.0125
    # 3 deg east of UTM 51's central meridian the grid is rotated (~1.5 deg): the NE corner lies ~50 m north of
    # the NW one, so the WGS-84 box is not the UTM box's corners read as degrees
    assert (clat[1] - clat[0]) * 111_000 > 30
    # UTM 51N is 3 deg east of its central meridian here: the grid is rotated, so the WGS-84 box is wider than
    # the corners alone -- the same box the map fits to (scene_bounds, densified outline)
    (ms, mw), (mn, me) = scene_bounds(info)
    assert (mw, ms, me, mn) == pytest.approx((w, s, e, n), abs=1e-6)
    assert "WGS-84 bounds" in msg and "EPSG:32651" in msg


@pytest.mark.parametrize("crs", ["EPSG:4326", "EPSG:3857"])
def test_geographic_and_mercator_geotiffs(tmp_path, crs):
    ws = Workspace(tmp_path / "ws")
    if crs == "EPSG:4326":
        t = Affine(1e-4, 0, HZ_LON, 0, -1e-4, HZ_LAT)
    else:
        (x,), (y,) = warp_transform("EPSG:4326", crs, [HZ_LON], [HZ_LAT])
        t = Affine(10, 0, x, 0, -10, y)
    scene, _ = import_imagery(ws, _write_tif(tmp_path / "a.tif", 64, 64, crs, t))
    w, s, e, n = wgs84_bounds(raster_info(ws.scene_path(scene, "image")))
    assert w == pytest.approx(HZ_LON, abs=1e-6) and n == pytest.approx(HZ_LAT, abs=1e-6)
    assert e > w and n > s


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_geotiff_without_crs_is_pixel_space(tmp_path):
    ws = Workspace(tmp_path / "ws")
    scene, msg = import_imagery(ws, _write_tif(tmp_path / "nocrs.tif", 50, 70))
    info = raster_info(ws.scene_path(scene, "image"))
    assert scene.crs is None and crs_kind(info) == PIXEL and wgs84_bounds(info) is None
    assert "pixel space" in msg and "no CRS" in msg and "WGS-84" not in msg
    assert scene_bounds(info) == ((-50.0, 0.0), (0.0, 70.0))  # CRS.Simple, never a place on Earth
    # a CRS with no geotransform (identity) has no location either
    scene2, msg2 = import_imagery(ws, _write_tif(tmp_path / "ident.tif", 40, 40, "EPSG:32651"))
    assert scene2.crs is None and "no geotransform" in msg2


# ------------------------------------------------------------------------------------------------ Baidu tiles
Z = 16
XS, YS = range(13039, 13042), range(3432, 3434)  # seed tile ids (Hangzhou), 3 x 2 tiles


def _tile_colour(x: int, y: int) -> tuple[int, int, int]:
    return (40 * (x - XS.start) + 20, 100 * (y - YS.start) + 50, 200)


def _tile_folder(root: Path, skip=()) -> Path:
    d = root / "16"
    d.mkdir(parents=True)
    for x in XS:
        for y in YS:
            if (x, y) not in skip:
                Image.new("RGB", (256, 256), _tile_colour(x, y)).save(d / f"{x}-{y}.jpeg", quality=95)
    (d / "notes.txt").write_text("not a tile")
    return d


def test_baidu_tile_folder_becomes_a_georeferenced_scene(tmp_path):
    ws = Workspace(tmp_path / "ws")
    folder = _tile_folder(tmp_path, skip={(XS[-1], YS[0])})
    scene, msg = import_imagery(ws, folder)
    path = ws.scene_path(scene, "image")
    info = raster_info(path)
    assert "3857" in info.crs and "Baidu tile folder" in msg
    # the mosaic's bounds = the WGS-84 extent of the tile block's corners (BD09MC -> WGS-84), to 1 output pixel
    span = D.baidu_tile_span(Z)
    cx = np.array([XS.start, XS.stop, XS.start, XS.stop]) * span
    cy = np.array([YS.start, YS.start, YS.stop, YS.stop]) * span
    lon, lat = D.bd09mc_to_wgs84(cx, cy)
    w, s, e, n = wgs84_bounds(info)
    px_deg = 4.0 / 111_000 / np.cos(np.radians(30.3)) * 1.5
    assert w == pytest.approx(lon.min(), abs=px_deg) and e == pytest.approx(lon.max(), abs=px_deg)
    assert s == pytest.approx(lat.min(), abs=px_deg) and n == pytest.approx(lat.max(), abs=px_deg)
    # BD-09 -> WGS-84 moves it by ~1 km: the naive reading (BD09MC as if Web-Mercator) would be far off
    assert abs(w - np.degrees(XS.start * span / 6378137.0)) > 0.005
    # each tile's WGS-84 centre shows that tile's colour; the missing tile is transparent
    with rasterio.open(path) as ds:
        for x in XS:
            for y in YS:
                clon, clat = D.bd09mc_to_wgs84((x + 0.5) * span, (y + 0.5) * span)
                (mx,), (my,) = warp_transform("EPSG:4326", "EPSG:3857", [float(clon)], [float(clat)])
                v = next(ds.sample([(mx, my)]))
                if (x, y) == (XS[-1], YS[0]):
                    assert v[3] == 0
                else:
                    assert v[3] == 255 and np.abs(v[:3].astype(int) - _tile_colour(x, y)).max() <= 4
    # the Map page can tile it (RGBA EPSG:3857 like a fetched mosaic)
    from seghz.geo.tiles import build_pyramid

    pyr = build_pyramid(path, tmp_path / "pyr", url_template="/t/{z}/{x}/{y}.png")
    assert (tmp_path / "pyr" / "pyramid.json").is_file() and pyr.max_zoom >= 15


def test_tile_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInputError, match="no Baidu tiles"):
        F.baidu_folder_to_geotiff(tmp_path / "empty", tmp_path / "o.tif")
    bad = tmp_path / "bad"
    bad.mkdir()
    Image.new("RGB", (200, 256)).save(bad / "13039-3433.jpeg")
    with pytest.raises(BadInputError, match="256x256"):
        F.baidu_folder_to_geotiff(bad, tmp_path / "o.tif")
    with pytest.raises(BadInputError, match="out of range"):
        F.baidu_folder_to_geotiff(bad, tmp_path / "o.tif", zoom=25)
    far = tmp_path / "far"
    far.mkdir()
    Image.new("RGB", (256, 256)).save(far / "10-10.jpeg")  # next to the BD09MC origin: the Gulf of Guinea
    with pytest.raises(BadInputError, match="not inside China"):
        F.baidu_folder_to_geotiff(far, tmp_path / "o.tif")
    assert not (tmp_path / "o.tif").exists()


def test_baidu_bbox_bad_input():
    with pytest.raises(BadInputError, match="antimeridian"):
        F.plan_baidu((179.5, 30.0, -179.5, 31.0), 16)
    with pytest.raises(BadInputError, match="China"):
        F.plan_baidu((2.3, 48.8, 2.4, 48.9), 16)
    with pytest.raises(BadInputError, match="out of range"):
        F.plan_baidu((120.1, 30.2, 120.2, 30.3), 25)


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_import_path(tmp_path, capsys):
    from seghz.cli import main

    ws = tmp_path / "ws"
    assert main(["--workspace", str(ws), "import", str(_utm_tif(tmp_path / "u.tif")), "--name", "utm scene"]) == 0
    out = capsys.readouterr().out
    assert "utm scene" in out and "WGS-84 bounds 120.1" in out
    assert main(["--workspace", str(ws), "import", str(_tile_folder(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert "Baidu tile folder" in out and "EPSG:3857" in out
    assert main(["--workspace", str(ws), "import", str(tmp_path / "missing.tif")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert len(Workspace(ws).list_scenes()) == 2


# ------------------------------------------------------------------------------------------------ real data
@pytest.mark.skipif(not SHANGHAI.is_dir(), reason=f"real Shanghai GeoTIFFs not found at {SHANGHAI}")
def test_real_shanghai_tiles_land_in_shanghai(tmp_path):
    ws = Workspace(tmp_path / "ws")
    files = sorted(SHANGHAI.glob("google_*.tif"))
    assert files
    # The README's box is rounded: the 14 tiles' union is 121.4800-121.5214 E, 31.1010-31.1443 N, so allow 0.005 deg
    lo_w, lo_s, hi_e, hi_n = 121.48 - 0.005, 31.10 - 0.005, 121.52 + 0.005, 31.14 + 0.005
    for f in files[:2]:  # imported into the workspace (copied as is, EPSG:3857 kept)
        scene, msg = import_imagery(ws, f)
        assert "EPSG:3857" in msg and "WGS-84 bounds 121." in msg
        assert wgs84_bounds(raster_info(ws.scene_path(scene, "image"))) == pytest.approx(wgs84_bounds(raster_info(f)))
    boxes = {}
    for f in files:
        w, s, e, n = boxes[f.stem] = wgs84_bounds(raster_info(f))
        assert lo_w <= w < e <= hi_e and lo_s <= s < n <= hi_n, (f.name, w, s, e, n)
        assert 0.004 < e - w < 0.0052 and 0.0035 < n - s < 0.0044  # 512 px at ~1 m
    b = np.array(list(boxes.values()))
    assert b[:, 0].min() < 121.485 and b[:, 2].max() > 121.515 and b[:, 1].min() < 31.105 and b[:, 3].max() > 31.135
    if {"google_5_5", "google_5_6"} <= boxes.keys():  # adjacent tiles share an edge (y index grows northward)
        assert boxes["google_5_5"][3] == pytest.approx(boxes["google_5_6"][1], abs=1e-7)


def test_predict_scene_output_imports_as_the_same_classes(tmp_path, capsys):
    """The reviewer's case: ``predict-scene`` writes class INDICES (255 = nodata) with a colour map in the scheme's
    colours; importing that GeoTIFF as an hz7 label (``import --image X.tif --label pred.tif --scheme hz7``) keeps
    every class (index 0 = Water stays Water, not unlabelled; index 5 = Buildings does not become id 5)."""
    import torch

    from seghz.classes import get_scheme
    from seghz.cli import main
    from seghz.infer.engine import Predictor
    from seghz.infer.scene import predict_scene

    hz7 = get_scheme("hz7")
    src = _utm_tif(tmp_path / "scene.tif", h=64, w=96)
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, hz7.num_classes, 1)
    with torch.no_grad():  # a pointwise model that gives every class somewhere on the random image
        conv.weight.copy_(torch.randn(hz7.num_classes, 3, 1, 1) * 4)
    pred = Predictor(conv, hz7.num_classes, (0.5,) * 3, (0.5,) * 3, tile=64, overlap=0.25, batch_size=2, device="cpu")
    out = tmp_path / "pred.tif"
    predict_scene(pred, src, out, scheme=hz7)
    with rasterio.open(out) as ds:
        want = ds.read(1)
    want[:2, :5] = 255  # and some nodata
    with rasterio.open(out, "r+") as ds:
        ds.write(want, 1)
    assert len(np.unique(want)) >= 5, np.unique(want)
    ws = tmp_path / "ws"
    assert main(["--workspace", str(ws), "import", "--image", str(src), "--label", str(out), "--scheme", "hz7"]) == 0
    capsys.readouterr()
    w = Workspace(ws)
    (scene,) = w.list_scenes()
    assert np.array_equal(w.effective_label(scene.id), want)


# ------------------------------------------------------------------------------------------------ duplicates


def test_the_same_imagery_twice_names_the_scene_it_is_already(tmp_path, capsys):
    """Importing a file twice made a second, identical scene (the review: two "B_sat — 1536×1280 px" entries)."""
    from seghz.cli import main
    from seghz.errors import DuplicateImportError

    ws = Workspace(tmp_path / "ws")
    src = _write_tif(tmp_path / "a.tif", 48, 64)
    first, _ = import_imagery(ws, src, name="first")
    copy = tmp_path / "elsewhere" / "renamed.tif"  # the same content under another name and folder (an upload)
    copy.parent.mkdir()
    copy.write_bytes(src.read_bytes())
    with pytest.raises(DuplicateImportError, match=r"already imported as scene 'first' \(first\) — the same file "
                                                   r"content") as e:
        import_imagery(ws, copy, source="uploaded file renamed.tif")
    assert e.value.scene_id == first.id and str(e.value).startswith("uploaded file renamed.tif: ")
    assert [s.id for s in ws.list_scenes()] == [first.id]  # nothing written
    other = _write_tif(tmp_path / "b.tif", 48, 65)  # other content: imported
    second, _ = import_imagery(ws, other)
    again, _ = import_imagery(ws, copy, allow_duplicate=True)  # on purpose
    assert len({first.id, second.id, again.id}) == 3
    # the CLI refuses (exit 2, naming the scene) unless --allow-duplicate
    assert main(["--workspace", str(ws.root), "import", str(src)]) == 2
    assert "already imported as scene 'first'" in capsys.readouterr().err
    assert main(["--workspace", str(ws.root), "import", str(src), "--allow-duplicate", "--name", "third"]) == 0
    assert len(ws.list_scenes()) == 4


def test_a_scene_imported_before_content_was_recorded_is_found_by_its_path(tmp_path):
    from seghz.data.scenes import SOURCE_RECORD, find_imported

    ws = Workspace(tmp_path / "ws")
    src = _write_tif(tmp_path / "a.tif", 48, 64)
    scene, _ = import_imagery(ws, src)
    (ws.scene_path(scene, "image").parent / SOURCE_RECORD).unlink()  # as older SegHZ left it
    assert find_imported(ws, src) == (ws.get_scene(scene.id), "the same source path")
    copy = tmp_path / "copy.tif"
    copy.write_bytes(src.read_bytes())
    assert find_imported(ws, copy) is None  # another path, no recorded content: not known to be the same
