"""Tests of seghz.data.io (the raster reader/writer) and seghz.data.folders.load_folder."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from helpers_core import HZ_DIR, encode, files_in, need_shared
from PIL import Image

from seghz.classes import get_scheme
from seghz.data import io as sio
from seghz.data.folders import load_folder
from seghz.data.io import list_pairs, read_label
from seghz.errors import BadInputError

HZ7 = get_scheme("hz7")
HZ20 = get_scheme("hz20")


def _rand_rgb(h=40, w=56, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _write_geotiff(path, arr_bhw, dtype, georef=True):
    import rasterio
    from rasterio.transform import Affine

    kw = {"crs": "EPSG:3857", "transform": Affine(0.5, 0.0, 13_500_000.0, 0.0, -0.5, 3_600_000.0)} if georef else {}
    b, h, w = arr_bhw.shape
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=b, dtype=dtype, **kw) as ds:
        ds.write(arr_bhw)


# ---------------------------------------------------------------- corrupt / unsuitable files


@pytest.mark.parametrize("fmt,ext", [("PNG", "png"), ("JPEG", "jpg")])
@pytest.mark.parametrize("keep", [0.3, 0.6, 0.9])
def test_truncated_image_raises_naming_file(tmp_path, fmt, ext, keep):
    data = encode(_rand_rgb(), fmt)
    assert sio.read_image(_put(tmp_path / f"ok.{ext}", data)).shape == (40, 56, 3)
    p = _put(tmp_path / f"cut_{int(keep * 100)}.{ext}", data[: int(len(data) * keep)])
    with pytest.raises(BadInputError) as ei:
        sio.read_image(p)
    assert p.name in str(ei.value)
    assert ei.value.source == str(p)


def _put(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("keep", [0.3, 0.9, 0.99])
def test_truncated_geotiff_raises_naming_file(tmp_path, keep):
    t = tmp_path / "full.tif"
    _write_geotiff(t, _rand_rgb(60, 70).transpose(2, 0, 1), "uint8")
    data = t.read_bytes()
    p = _put(tmp_path / "cut.tif", data[: int(len(data) * keep)])
    with pytest.raises(BadInputError) as ei:
        sio.read_image(p)
    assert "cut.tif" in str(ei.value)


def test_truncated_label_raises_naming_file(tmp_path):
    data = encode(HZ7.colorize(np.random.default_rng(1).integers(0, 7, (64, 64)).astype(np.uint8)), "PNG")
    p = _put(tmp_path / "lbl.png", data[: len(data) // 2])
    with pytest.raises(BadInputError, match="lbl.png"):
        sio.read_label(p, HZ7)


def test_zero_byte_files_raise(tmp_path):
    for name in ("empty.png", "empty.jpg", "empty.tif"):
        p = _put(tmp_path / name, b"")
        with pytest.raises(BadInputError, match="0 bytes") as ei:
            sio.read_image(p)
        assert name in str(ei.value)
        with pytest.raises(BadInputError, match=name):
            sio.read_label(p, HZ7)


def test_missing_and_garbage_files_raise(tmp_path):
    with pytest.raises(BadInputError, match="does not exist"):
        sio.read_image(tmp_path / "nope.png")
    p = _put(tmp_path / "garbage.tif", b"this is not a tiff at all" * 10)
    with pytest.raises(BadInputError, match="garbage.tif"):
        sio.read_image(p)
    q = _put(tmp_path / "garbage.png", b"\x89PNG but not really" * 10)
    with pytest.raises(BadInputError, match="garbage.png"):
        sio.read_image(q)
    with pytest.raises(BadInputError, match="garbage.png"):
        sio.raster_info(q)


def test_folder_given_as_image_or_label_says_so(tmp_path):
    # a folder typed where a file is expected (Align page, CLI) used to read "corrupt or truncated label image
    # ([Errno 21] Is a directory)"
    folder = tmp_path / "scenes.png"
    folder.mkdir()
    with pytest.raises(BadInputError, match=r"scenes\.png: is a folder, not a file \(give the label image file itself\)"):
        sio.read_label(folder, HZ7)
    with pytest.raises(BadInputError, match=r"is a folder, not a file \(give the image file itself\)"):
        sio.read_image(tmp_path)


def test_single_band_image_raises(tmp_path):
    p = tmp_path / "gray.png"
    Image.fromarray(np.zeros((8, 9), np.uint8)).save(p)
    with pytest.raises(BadInputError, match="1 band") as ei:
        sio.read_image(p)
    assert "gray.png" in str(ei.value)
    t = tmp_path / "gray.tif"
    _write_geotiff(t, np.zeros((1, 8, 9), np.uint8), "uint8")
    with pytest.raises(BadInputError, match="1 band"):
        sio.read_image(t)


def test_two_band_tiff_raises(tmp_path):
    t = tmp_path / "two.tif"
    _write_geotiff(t, np.zeros((2, 8, 9), np.uint8), "uint8")
    with pytest.raises(BadInputError, match="2 bands"):
        sio.read_image(t)


def test_rgba_png_drops_alpha(tmp_path):
    rgb = _rand_rgb(12, 15)
    alpha = np.random.default_rng(5).integers(0, 256, (12, 15, 1), dtype=np.uint8)
    p = tmp_path / "rgba.png"
    Image.fromarray(np.concatenate([rgb, alpha], 2), "RGBA").save(p)
    out = sio.read_image(p)
    assert out.shape == (12, 15, 3) and out.dtype == np.uint8
    assert np.array_equal(out, rgb)


def test_rgba_tiff_drops_alpha(tmp_path):
    rgb = _rand_rgb(10, 11)
    t = tmp_path / "rgba.tif"
    _write_geotiff(t, np.concatenate([rgb, np.full((10, 11, 1), 255, np.uint8)], 2).transpose(2, 0, 1), "uint8")
    assert np.array_equal(sio.read_image(t), rgb)


def test_16bit_tiff_is_stretched_to_uint8(tmp_path):
    # a ramp 1000..4000 in every band: a plain cast to uint8 would wrap around
    h, w = 50, 60
    ramp = np.linspace(1000, 4000, h * w).reshape(h, w)
    arr = np.stack([ramp, ramp, ramp]).round().astype(np.uint16)
    t = tmp_path / "u16.tif"
    _write_geotiff(t, arr, "uint16")
    out = sio.read_image(t)
    assert out.shape == (h, w, 3) and out.dtype == np.uint8
    # stretched: full range used, order preserved
    assert out.min() == 0 and out.max() == 255
    flat_in, flat_out = arr[0].ravel(), out[..., 0].ravel()
    order = np.argsort(flat_in, kind="stable")
    assert (np.diff(flat_out[order].astype(int)) >= 0).all()
    # 2-98 % stretch of a uniform ramp: 2500 (the middle) lands at mid-grey (~128, by hand)
    mid = np.argmin(np.abs(flat_in.astype(int) - 2500))
    assert abs(int(flat_out[mid]) - 128) <= 2
    # 10 % up the ramp: (1300 - 1060) / (3940 - 1060) * 255 = 21.25
    q = np.argmin(np.abs(flat_in.astype(int) - 1300))
    assert abs(int(flat_out[q]) - 21) <= 2


def test_uint8_rgb_png_and_jpeg_read(tmp_path):
    rgb = _rand_rgb(20, 30)
    p = _put(tmp_path / "a.png", encode(rgb, "PNG"))
    assert np.array_equal(sio.read_image(p), rgb)
    smooth = np.repeat(np.linspace(0, 255, 30)[None, :, None], 20, 0).repeat(3, 2).astype(np.uint8)
    j = _put(tmp_path / "a.jpeg", encode(smooth, "JPEG"))
    out = sio.read_image(j)
    assert out.shape == (20, 30, 3) and np.abs(out.astype(int) - smooth).max() < 12


# ---------------------------------------------------------------- GeoTIFF windows and info


def test_geotiff_window_equals_slice_of_full_read(tmp_path):
    rgb = _rand_rgb(70, 90, seed=3)
    t = tmp_path / "geo.tif"
    _write_geotiff(t, rgb.transpose(2, 0, 1), "uint8")
    full = sio.read_image(t)
    assert np.array_equal(full, rgb)
    for r, c, h, w in [(5, 17, 23, 41), (0, 0, 70, 90), (69, 89, 1, 1), (10, 60, 40, 30)]:
        win = sio.read_image(t, window=(r, c, h, w))
        assert win.shape == (h, w, 3)
        assert np.array_equal(win, full[r : r + h, c : c + w])
    info = sio.raster_info(t)
    assert (info.width, info.height, info.count, info.dtype) == (90, 70, 3, "uint8")
    assert info.georeferenced and "3857" in info.crs
    assert info.transform[:3] == (0.5, 0.0, 13_500_000.0)


def test_label_window_geotiff(tmp_path):
    ids = np.random.default_rng(2).integers(0, 21, (30, 40)).astype(np.uint8)
    t = tmp_path / "lbl.tif"
    _write_geotiff(t, ids[None], "uint8")
    full = sio.read_label(t, HZ20)
    assert np.array_equal(full, HZ20.ids_to_index(ids))
    assert np.array_equal(sio.read_label(t, HZ20, window=(3, 7, 11, 13)), full[3:14, 7:20])


def test_png_info_is_not_georeferenced(tmp_path):
    p = _put(tmp_path / "a.png", encode(_rand_rgb(9, 13), "PNG"))
    info = sio.raster_info(p)
    assert (info.width, info.height, info.count) == (13, 9, 3)
    assert not info.georeferenced


# ---------------------------------------------------------------- labels


def test_read_label_rgb_palette_and_id_masks(tmp_path):
    idx = np.random.default_rng(4).integers(0, 7, (16, 16)).astype(np.uint8)
    idx[0, :3] = 255
    p = _put(tmp_path / "rgb.png", encode(HZ7.colorize(idx), "PNG"))
    assert np.array_equal(sio.read_label(p, HZ7), idx)
    ids = HZ7.index_to_ids(idx)  # 0 for ignore
    q = _put(tmp_path / "ids.png", encode(ids, "PNG"))
    assert np.array_equal(sio.read_label(q, HZ7), idx)


@pytest.mark.realdata
def test_read_real_hz20_rgb_label():
    p = need_shared(HZ_DIR / "A_label.png")
    lbl = sio.read_label(p, HZ20)
    assert lbl.shape == (800, 1000)
    present = set(np.unique(lbl).tolist()) - {255}
    assert len(present) == 12  # the data README: 12 of the 20 classes are present
    assert max(present) < 20
    # independent decode: match each pixel colour against the palette with plain numpy comparisons
    from PIL import Image

    rgb = np.asarray(Image.open(p).convert("RGB"))
    for idx in present:
        col = np.array(HZ20.colors[idx], np.uint8)
        assert np.array_equal(lbl == idx, (rgb == col).all(2)), HZ20.names[idx]


def test_read_label_unknown_colour_names_file(tmp_path):
    rgb = HZ7.colorize(np.zeros((6, 6), np.uint8))
    rgb[4, 1] = (9, 9, 9)
    p = _put(tmp_path / "bad_colour.png", encode(rgb, "PNG"))
    with pytest.raises(BadInputError, match="bad_colour.png") as ei:
        sio.read_label(p, HZ7)
    assert "1 pixel(s)" in str(ei.value) and "row 4, col 1" in str(ei.value)


def test_read_pair_size_mismatch(tmp_path):
    img = _put(tmp_path / "a.png", encode(_rand_rgb(20, 30), "PNG"))
    lbl = _put(tmp_path / "a_lbl.png", encode(np.ones((20, 31), np.uint8), "PNG"))
    with pytest.raises(BadInputError) as ei:
        sio.read_pair(img, lbl, HZ7)
    msg = str(ei.value)
    assert "a_lbl.png" in msg and "31x20" in msg and "30x20" in msg
    ok = _put(tmp_path / "b_lbl.png", encode(np.ones((20, 30), np.uint8), "PNG"))
    im, lb = sio.read_pair(img, ok, HZ7)
    assert im.shape == (20, 30, 3) and lb.shape == (20, 30) and (lb == 0).all()


# ---------------------------------------------------------------- folders


def test_list_pairs_errors(tmp_path):
    di, dl = tmp_path / "images", tmp_path / "labels"
    di.mkdir()
    dl.mkdir()
    with pytest.raises(BadInputError, match="no images") as ei:
        sio.list_pairs(di, dl)
    assert "images" in str(ei.value)
    (di / "notes.txt").write_text("not an image")
    with pytest.raises(BadInputError, match="no images"):
        sio.list_pairs(di, dl)
    for stem in ("t1", "t2", "t3"):
        _put(di / f"{stem}.png", encode(_rand_rgb(4, 4), "PNG"))
    with pytest.raises(BadInputError, match="no label"):
        sio.list_pairs(di, dl)
    _put(dl / "t1.png", encode(np.ones((4, 4), np.uint8), "PNG"))
    _put(dl / "t3.tif", encode(np.ones((4, 4), np.uint8), "PNG"))
    with pytest.raises(BadInputError) as ei:
        sio.list_pairs(di, dl)
    assert "1 image(s)" in str(ei.value) and "'t2'" in str(ei.value)
    _put(dl / "t2.png", encode(np.ones((4, 4), np.uint8), "PNG"))
    pairs = sio.list_pairs(di, dl)
    assert [(a.name, b.name) for a, b in pairs] == [("t1.png", "t1.png"), ("t2.png", "t2.png"), ("t3.png", "t3.tif")]
    with pytest.raises(BadInputError, match="does not exist"):
        sio.list_pairs(tmp_path / "missing", dl)


def test_load_folder_crosswalks_to_target(tmp_path):
    di, dl = tmp_path / "img", tmp_path / "lbl"
    di.mkdir()
    dl.mkdir()
    ids = np.array([[0, 1, 2, 3], [5, 6, 7, 8], [9, 15, 19, 20]], np.uint8)
    for stem in ("b", "a"):
        _put(di / f"{stem}.png", encode(_rand_rgb(3, 4), "PNG"))
        _put(dl / f"{stem}.png", encode(ids, "PNG"))
    seen = []
    items = load_folder(di, dl, "hz20", "hz7", progress=lambda f, m: seen.append(f))
    assert [it[0] for it in items] == ["a", "b"]
    # by hand from the study map: 0->ignore, 1,2,3->Water(0), 5->OpenArea(1), 6,19->Green(2), 7->Forest(3),
    # 8->Glass(4), 9,15->Buildings(5), 20->Road(6)
    assert items[0][2].tolist() == [[255, 0, 0, 0], [1, 2, 3, 4], [5, 5, 2, 6]]
    assert seen[-1] == 1.0 and len(seen) == 2
    plain = load_folder(di, dl, "hz20")
    assert np.array_equal(plain[0][2], HZ20.ids_to_index(ids))


# ---------------------------------------------------------------- writers


@pytest.mark.parametrize("with_scheme", [False, True])
def test_write_then_read_index_mask_round_trip(tmp_path, with_scheme):
    mask = np.random.default_rng(7).integers(0, 7, (33, 47)).astype(np.uint8)
    mask[::5, ::3] = 255
    p = tmp_path / "sub" / "mask.png"
    sio.write_index_mask(p, mask, HZ7 if with_scheme else None)
    back = sio.read_index_mask(p)
    assert back.dtype == np.uint8 and np.array_equal(back, mask)
    assert files_in(p.parent) == ["mask.png"]
    if with_scheme:  # a palette PNG shows the scheme colours in any viewer
        with Image.open(p) as im:
            assert im.mode == "P"
            assert np.array_equal(np.asarray(im.convert("RGB")), HZ7.colorize(mask))


def test_read_index_mask_rejects_rgb_and_missing(tmp_path):
    p = _put(tmp_path / "rgb.png", encode(_rand_rgb(4, 4), "PNG"))
    with pytest.raises(BadInputError, match="single-band"):
        sio.read_index_mask(p)
    with pytest.raises(BadInputError, match="nothere.png"):
        sio.read_index_mask(tmp_path / "nothere.png")


def test_atomic_write_bytes_leaves_no_temp_files(tmp_path):
    p = tmp_path / "d" / "file.bin"
    sio.atomic_write_bytes(p, b"first")
    sio.atomic_write_bytes(p, b"second version")
    assert p.read_bytes() == b"second version"
    assert files_in(p.parent) == ["file.bin"]
    # a failing write (str is not bytes) keeps the old content and cleans its temp file up
    with pytest.raises(TypeError):
        sio.atomic_write_bytes(p, "not bytes")  # type: ignore[arg-type]
    assert p.read_bytes() == b"second version"
    assert files_in(p.parent) == ["file.bin"]


def test_write_rgb_round_trip(tmp_path):
    rgb = _rand_rgb(9, 11)
    sio.write_rgb(tmp_path / "x.png", rgb)
    assert np.array_equal(sio.read_image(tmp_path / "x.png"), rgb)
    assert files_in(tmp_path) == ["x.png"]


def test_16bit_geotiff_windows_share_one_scene_wide_stretch(tmp_path):
    """Windows of a 16-bit scene are stretched with the scene's range, so reading row strips (as predict_scene
    does) gives exactly the slices of the full read: no seams between window rows; the map tiles use the same."""
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import from_origin

    from seghz.data.io import read_image, tiff_stretch
    from seghz.geo.tiles import _TiffSource

    h, w = 96, 80
    rows = np.linspace(0, 1, h)[:, None, None]
    data = (1000 + 30000 * rows * np.ones((h, w, 3))).astype(np.uint16)  # bright at the bottom, dark at the top
    data[:5, :5] = 0
    p = tmp_path / "s16.tif"
    with rasterio.open(p, "w", driver="GTiff", width=w, height=h, count=3, dtype="uint16", nodata=0,
                       crs="EPSG:3857", transform=from_origin(0, 0, 1, 1)) as ds:
        ds.write(np.moveaxis(data, 2, 0))
    full = read_image(p)
    strips = np.concatenate([read_image(p, window=(r, 0, 16, w)) for r in range(0, h, 16)])
    np.testing.assert_array_equal(strips, full)
    lo, hi = tiff_stretch(p)
    assert 1000 <= lo < hi <= 31000  # nodata (0) left out of the range
    assert full[:16].mean() < 40 and full[-16:].mean() > 215  # a dark top strip stays dark (not stretched alone)
    src = _TiffSource(p)
    try:
        assert src.stretch == (lo, hi)
    finally:
        src.close()


# ---------------------------------------------------------------- colour tables: index vs id masks


def _every_index_mask(scheme, h=12, w=20, seed=3):
    """A class-index mask holding every class index of ``scheme`` and 255 (nodata/ignore)."""
    m = np.random.default_rng(seed).integers(0, scheme.num_classes, (h, w)).astype(np.uint8)
    m[0, : scheme.num_classes] = np.arange(scheme.num_classes)
    m[1, :3] = 255
    return m


def _write_predict_scene_like(path, mask, scheme):
    """A GeoTIFF laid out as ``predict-scene`` writes it (seghz.infer.scene._Writer): nodata 255, tiled, a full
    256-entry colour map from scheme.palette() (classes 0..K-1, black after)."""
    import rasterio

    pal = scheme.palette()
    with rasterio.open(path, "w", driver="GTiff", width=mask.shape[1], height=mask.shape[0], count=1, dtype="uint8",
                       nodata=255, compress="deflate") as ds:
        ds.write(mask, 1)
        ds.write_colormap(1, {i: (*map(int, pal[i]), 255) for i in range(256)})


_INDEX_WRITERS = {
    "palette_png": lambda p, m, s: sio.write_index_mask(p, m, s),
    "geotiff": lambda p, m, s: sio.write_index_mask_geotiff(p, m, scheme=s),
    "geotiff_georef": lambda p, m, s: sio.write_index_mask_geotiff(
        p, m, crs="EPSG:3857", transform=(2.0, 0.0, 13_375_000.0, 0.0, -2.0, 3_536_000.0), scheme=s),
    "predict_scene": _write_predict_scene_like,
}


@pytest.mark.parametrize("scheme_name", ["hz7", "gid15", "loveda", "hz20"])
@pytest.mark.parametrize("writer", sorted(_INDEX_WRITERS))
def test_seghz_index_masks_read_back_as_the_same_indices(tmp_path, writer, scheme_name):
    """Everything SegHZ writes as a class-index mask (palette PNG, GeoTIFF export, predict-scene output) reads back
    as the same indices through read_label, for id-based schemes (hz7/hz20/loveda: ids 1..K, 0 = unlabelled) and
    0-based ones (gid15: ids 0..14) alike; 255 stays ignore."""
    scheme = get_scheme(scheme_name)
    mask = _every_index_mask(scheme)
    p = tmp_path / ("mask.png" if writer == "palette_png" else "mask.tif")
    _INDEX_WRITERS[writer](p, mask, scheme)
    meta = {}
    sio._read_raw(p, None, "label", {}, meta)
    assert sio.palette_layout(meta["palette"], scheme) == ("both" if scheme_name == "gid15" else "index")
    back = sio.read_label(p, scheme)
    assert back.dtype == np.uint8 and np.array_equal(back, mask)
    win = sio.read_label(p, scheme, window=(1, 2, 5, 7))
    assert np.array_equal(win, mask[1:6, 2:9])


def test_index_geotiff_as_hz7_label_is_not_read_as_ids(tmp_path):
    """The reviewer's case: index 0 (Water) must stay Water (not unlabelled), index 5 (Buildings) must not become
    id 5 (Reflection_Glass_Curtainwall = index 4)."""
    mask = np.array([[0, 5, 6, 255]], np.uint8)
    p = tmp_path / "pred.tif"
    _write_predict_scene_like(p, mask, HZ7)
    assert sio.read_label(p, HZ7).tolist() == [[0, 5, 6, 255]]
    assert HZ7.names[5] != HZ7.names[4]
    # without a colour table the same values are file ids, as before (id 0 = unlabelled, id 5 = index 4)
    q = tmp_path / "ids.tif"
    _write_geotiff(q, mask[None], "uint8", georef=False)
    with pytest.raises(BadInputError, match="255"):  # 255 is no hz7 id
        sio.read_label(q, HZ7)
    _write_geotiff(q, np.array([[[0, 5, 6, 7]]], np.uint8), "uint8", georef=False)
    assert sio.read_label(q, HZ7).tolist() == [[255, 4, 5, 6]]


def _id_palette(scheme) -> np.ndarray:
    pal = np.zeros((256, 3), np.uint8)
    pal[list(scheme.ids)] = np.array(scheme.colors, np.uint8)
    return pal


@pytest.mark.parametrize("fmt", ["png", "tif"])
def test_colour_table_by_id_reads_as_ids(tmp_path, fmt):
    """A single-band file whose colour table puts class k's colour at its id (entry id_k) holds ids."""
    import rasterio

    idx = _every_index_mask(HZ7)
    ids = HZ7.index_to_ids(idx)  # ignore -> id 0 (unlabelled)
    pal = _id_palette(HZ7)
    p = tmp_path / f"ids.{fmt}"
    if fmt == "png":
        im = Image.fromarray(ids).convert("P")
        im.putpalette(pal.ravel().tolist())
        im.save(p)
    else:
        with rasterio.open(p, "w", driver="GTiff", width=ids.shape[1], height=ids.shape[0], count=1,
                           dtype="uint8") as ds:
            ds.write(ids, 1)
            ds.write_colormap(1, {i: (*map(int, pal[i]), 255) for i in range(256)})
    assert sio.palette_layout(pal, HZ7) == "id"
    assert np.array_equal(sio.read_label(p, HZ7), idx)


def test_other_colour_tables_keep_todays_reading(tmp_path):
    """A colour table matching the scheme neither way: a GeoTIFF's values are ids, a palette PNG is decoded by
    colour (both as before)."""
    import rasterio

    ids = np.array([[0, 1, 5, 7]], np.uint8)
    grey = {i: (i, i, i, 255) for i in range(256)}
    p = tmp_path / "grey.tif"
    with rasterio.open(p, "w", driver="GTiff", width=4, height=1, count=1, dtype="uint8") as ds:
        ds.write(ids, 1)
        ds.write_colormap(1, grey)
    assert sio.read_label(p, HZ7).tolist() == [[255, 0, 4, 6]]
    # a palette PNG with the scheme's colours at other entries (here reversed) is decoded by colour
    pal = np.zeros((256, 3), np.uint8)
    pal[10 : 10 + HZ7.num_classes] = np.array(HZ7.colors[::-1], np.uint8)
    raw = np.array([[10, 16, 3]], np.uint8)  # colours of classes 6, 0 and black (unlabelled)
    im = Image.fromarray(raw).convert("P")
    im.putpalette(pal.ravel().tolist())
    q = tmp_path / "odd.png"
    im.save(q)
    assert sio.palette_layout(pal, HZ7) is None
    assert sio.read_label(q, HZ7).tolist() == [[6, 0, 255]]


def test_index_mask_with_values_outside_the_scheme_names_file(tmp_path):
    mask = np.array([[0, 1, 9, 255]], np.uint8)
    p = tmp_path / "pred.tif"
    _write_predict_scene_like(p, mask, HZ7)
    with pytest.raises(BadInputError) as ei:
        sio.read_label(p, HZ7)
    msg = str(ei.value)
    assert str(p) in msg and "[9]" in msg and "class indices 0..6" in msg and "row 0, col 2" in msg


def test_gid15_index_mask_unlabelled_id_is_ignore(tmp_path):
    """gid15's ids are its indices, so its palette matches both ways: its unlabelled id 15 and nodata 255 are both
    ignore (a plain gid15 id mask with 255 was an error before)."""
    g = get_scheme("gid15")
    p = tmp_path / "g.tif"
    sio.write_index_mask_geotiff(p, np.array([[0, 14, 15, 255]], np.uint8), scheme=g)
    assert sio.read_label(p, g).tolist() == [[0, 14, 255, 255]]


def test_check_image_from_header(tmp_path):
    ok = _put(tmp_path / "ok.png", encode(_rand_rgb(), "PNG"))
    info = sio.check_image(ok)
    assert (info.width, info.height) == (56, 40)
    grey = _put(tmp_path / "grey.png", encode(np.zeros((4, 5), np.uint8), "PNG"))
    with pytest.raises(BadInputError, match="1 band"):
        sio.check_image(grey)
    two = tmp_path / "two.tif"
    _write_geotiff(two, np.zeros((2, 4, 5), np.uint8), "uint8")
    with pytest.raises(BadInputError, match="2 bands"):
        sio.check_image(two)
    tif = tmp_path / "rgb16.tif"
    _write_geotiff(tif, np.zeros((3, 4, 5), np.uint16), "uint16")
    assert sio.check_image(tif).count == 3
    with pytest.raises(BadInputError, match="does not exist"):
        sio.check_image(tmp_path / "missing.png")
    with pytest.raises(BadInputError, match="empty"):
        sio.check_image(_put(tmp_path / "empty.png", b""))


def test_a_palette_png_is_decoded_by_its_colours_nodata_included(tmp_path):
    """A GIS export in hz7 ids with 255 as nodata drawn black (palette[0] black, [1..7] the class colours) read as
    before: by colour, the nodata black is unlabelled. The colour-table layouts apply to GeoTIFFs only."""
    from PIL import Image

    from seghz.classes import IGNORE, get_scheme

    hz7 = get_scheme("hz7")
    pal = np.zeros((256, 3), np.uint8)
    pal[list(hz7.ids)] = np.array(hz7.colors, np.uint8)
    ids = np.array([[1, 6, 255], [7, 0, 3]], np.uint8)
    im = Image.fromarray(ids, mode="P")
    im.putpalette(pal.ravel().tolist())
    im.save(tmp_path / "l.png")
    got = sio.read_label(tmp_path / "l.png", hz7)
    assert got.tolist() == [[0, 5, IGNORE], [6, IGNORE, 2]]


# --- folder pairing: every file needs its partner, one file per stem, no JPEG labels ---------------------------------

def _pair_folder(root, images, labels):
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for name in images:
        cv2.imwrite(str(root / "images" / name), np.zeros((4, 4, 3), np.uint8))
    for name in labels:
        cv2.imwrite(str(root / "labels" / name), np.zeros((4, 4), np.uint8))
    return root / "images", root / "labels"


def test_a_label_without_its_image_is_named(tmp_path):
    ims, lbs = _pair_folder(tmp_path, ["a.png", "b.webp"], ["a.png", "b.png"])  # .webp is not read: b has no image
    with pytest.raises(BadInputError, match=r"images: 1 label\(s\) have no image with the same stem, e.g. 'b.png' "
                                            r"\(images are read from bmp/jpeg/jpg/png/tif/tiff files\)"):
        list_pairs(ims, lbs)


def test_two_files_with_one_stem_are_refused(tmp_path):
    ims, lbs = _pair_folder(tmp_path, ["x.jpg", "x.png"], ["x.png"])
    with pytest.raises(BadInputError, match=r"two files have the stem 'x' \(x.jpg and x.png\)"):
        list_pairs(ims, lbs)


def test_jpeg_labels_are_refused_with_the_reason(tmp_path):
    ims, lbs = _pair_folder(tmp_path, ["a.png", "b.png"], ["a.png", "b.jpg"])
    with pytest.raises(BadInputError, match=r"b.jpg: a label cannot be a JPEG \(1 in this folder\): lossy"):
        list_pairs(ims, lbs)  # before anything is predicted
    with pytest.raises(BadInputError, match=r"b.jpg: a label cannot be a JPEG: lossy compression"):
        read_label(lbs / "b.jpg", get_scheme("gid15"))


# ---------------------------------------------------------------- the one 8-bit conversion (read_image and map tiles)


def test_to_rgb8_stretch_values():
    a = np.array([[0, 1000, 1500, 2000, 65535]], np.uint16)
    got = sio.to_rgb8(a, (1000.0, 2000.0))
    assert got.shape == (1, 5, 3) and got.dtype == np.uint8
    # lo -> 0, hi -> 255, halfway -> 127.5 rounded up, clipped outside; a grey band becomes grey RGB
    assert got[0, :, 0].tolist() == [0, 0, 128, 255, 255]
    assert (got == got[..., :1]).all()
    # (x - lo) / (hi - lo) * 255, rounded: 1100 -> 25.5 -> 26, 1900 -> 229.5 -> 230
    assert sio.to_rgb8(np.array([[1100, 1900]], np.uint16), (1000, 2000))[0, :, 0].tolist() == [26, 230]
    # RGBA: the alpha band is dropped, not stretched into a colour
    rgba = np.dstack([np.full((2, 2), 1500, np.uint16)] * 3 + [np.zeros((2, 2), np.uint16)])
    assert (sio.to_rgb8(rgba, (1000, 2000)) == 128).all()
    # uint8 passes through untouched (no stretch even when one is given)
    u8 = _rand_rgb(4, 5)
    np.testing.assert_array_equal(sio.to_rgb8(u8, (10.0, 20.0)), u8)
    # an empty range does not divide by zero
    assert sio.to_rgb8(np.full((2, 2, 3), 7, np.uint16), (7.0, 7.0)).max() <= 255
    # no stretch given: the array's own 2nd..98th percentiles (values far above 255 are not wrapped)
    ramp = np.linspace(10000, 20000, 101).astype(np.uint16)[None]
    own = sio.to_rgb8(ramp)[0, :, 0].astype(int)
    assert own[0] == 0 and own[-1] == 255 and (np.diff(own) >= 0).all()
    with pytest.raises(ValueError, match="B in"):
        sio.to_rgb8(np.zeros((2, 2, 2), np.uint16))


# ---------------------------------------------------------------- TiffReader: windowed reads with clear errors


def _tiled_rgba(path, h=300, w=300, seed=0):
    import rasterio
    from rasterio.transform import from_origin

    data = np.random.default_rng(seed).integers(0, 256, (4, h, w), dtype=np.uint8)
    data[3] = 255
    data[3, :10, :10] = 0
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=4, dtype="uint8", tiled=True,
                       blockxsize=64, blockysize=64, compress="deflate", photometric="RGB", alpha="YES",
                       crs="EPSG:3857", transform=from_origin(13_500_000.0, 3_600_000.0, 1.0, 1.0)) as ds:
        ds.write(data)
    return data


def test_tiff_reader_reads_windows(tmp_path):
    p = tmp_path / "ok.tif"
    data = _tiled_rgba(p)
    with sio.TiffReader(p) as r:
        assert (r.width, r.height, r.count, r.dtype) == (300, 300, 4, "uint8")
        assert r.has_alpha and r.crs is not None and r.nodata is None
        np.testing.assert_array_equal(r.read((10, 20, 30, 40), [1, 2, 3]), data[:3, 10:40, 20:60])
        np.testing.assert_array_equal(r.read((10, 20, 30, 40), 4), data[3, 10:40, 20:60])
        np.testing.assert_array_equal(r.read(), data)
        m = r.dataset_mask((0, 0, 20, 20))
        assert m.shape == (20, 20) and (m[:10, :10] == 0).all() and (m[10:, :] == 255).all()
        with pytest.raises(BadInputError, match="outside the 300x300 raster") as ei:
            r.read((290, 0, 20, 10))
        assert ei.value.source == str(p)
    with pytest.raises(BadInputError, match="closed"):
        r.read((0, 0, 1, 1))


@pytest.mark.parametrize("damage", ["truncated", "corrupt block"])
def test_tiff_reader_damaged_pixels_raise_naming_the_file(tmp_path, damage):
    """The header is intact (so the file opens) but pixel blocks are cut off / overwritten: every read that touches
    them raises BadInputError naming the file and saying what could not be read, not a raw rasterio error."""
    import rasterio

    full = tmp_path / "full.tif"
    _tiled_rgba(full)
    raw = bytearray(full.read_bytes())
    p = tmp_path / f"{damage.replace(' ', '_')}.tif"
    if damage == "truncated":
        p.write_bytes(bytes(raw[: len(raw) * 6 // 10]))
    else:  # wipe the zlib header of the block at column 1, row 2 (pixels 128..191 x 64..127)
        with rasterio.open(full) as ds:
            off = int(ds.get_tag_item("BLOCK_OFFSET_1_2", "TIFF", bidx=1))
        raw[off : off + 16] = bytes(16)
        p.write_bytes(bytes(raw))
    r = sio.TiffReader(p)
    try:
        assert r.read((0, 0, 64, 64)).shape == (4, 64, 64)  # undamaged blocks still read
        for call in (lambda: r.read(), lambda: r.read((64, 0, 200, 300), [1, 2, 3]), lambda: r.dataset_mask()):
            with pytest.raises(BadInputError) as ei:
                call()
            assert ei.value.source == str(p) and p.name in str(ei.value)
            assert "corrupt or truncated GeoTIFF" in str(ei.value)
    finally:
        r.close()


def test_tiff_reader_unreadable_files(tmp_path):
    for name, data, why in [("empty.tif", b"", "empty"), ("junk.tif", b"not a tiff at all" * 20, "not a readable GeoTIFF"),
                            ("head.tif", None, "not a readable GeoTIFF")]:
        p = tmp_path / name
        if data is None:  # only the first bytes of a real GeoTIFF: the header itself is cut
            _tiled_rgba(tmp_path / "src.tif")
            data = (tmp_path / "src.tif").read_bytes()[:6]
        p.write_bytes(data)
        with pytest.raises(BadInputError, match=why) as ei:
            sio.TiffReader(p)
        assert ei.value.source == str(p)
    with pytest.raises(BadInputError, match="does not exist"):
        sio.TiffReader(tmp_path / "missing.tif")


def test_map_tiles_of_a_damaged_tiff_raise_naming_the_file(tmp_path):
    """seghz.geo.tiles reads GeoTIFFs through TiffReader: a truncated scene is a BadInputError naming it."""
    from seghz.geo.tiles import build_pyramid

    full = tmp_path / "full.tif"
    _tiled_rgba(full, 600, 600)
    p = tmp_path / "cut.tif"
    p.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(BadInputError, match="corrupt or truncated GeoTIFF") as ei:
        build_pyramid(p, tmp_path / "static" / "tiles" / "k" / "s", static_root=tmp_path / "static")
    assert ei.value.source == str(p)
