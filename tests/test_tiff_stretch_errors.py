"""seghz.data.io.tiff_stretch never swallows a read error into None (None means "stretch each window by its own
percentiles", i.e. seams between predicted rows / map tiles and different model inputs per window).

When the decimated whole-raster read fails (a broken overview, a rasterio error on out_shape reads) the range comes
from a grid of small windowed reads over the whole raster -- still one scene-wide range; when that fails too, a
BadInputError names the file and both reasons. Synthetic GeoTIFFs written by rasterio in tmp_path."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import rasterio
import rasterio.io
import rasterio.windows
from rasterio.errors import RasterioIOError
from rasterio.transform import from_origin

from seghz.data import io as sio
from seghz.errors import BadInputError

_ORIG_READ = rasterio.io.DatasetReader.read


def _write(path, bands_hw: np.ndarray, dtype: str, **kw):
    b, h, w = bands_hw.shape
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=b, dtype=dtype, crs="EPSG:3857",
                       transform=from_origin(500000, 4000000, 1, 1), **kw) as ds:
        ds.write(bands_hw.astype(dtype))
    return path


@pytest.fixture
def calls():
    return {"out_shape": 0, "window": 0}


@pytest.fixture
def fail_decimated(monkeypatch, calls):
    """Reads with ``out_shape`` (the decimated read) raise a rasterio error; window reads work."""
    def read(self, *a, **k):
        if k.get("out_shape") is not None:
            calls["out_shape"] += 1
            raise RasterioIOError("Read or write failed. broken overview (test)")
        if k.get("window") is not None:
            calls["window"] += 1
        return _ORIG_READ(self, *a, **k)

    monkeypatch.setattr(rasterio.io.DatasetReader, "read", read)
    sio._tiff_stretch_cached.cache_clear()
    yield
    sio._tiff_stretch_cached.cache_clear()


@pytest.fixture
def fail_all(monkeypatch):
    def read(self, *a, **k):
        raise RasterioIOError("Read or write failed. every block is bad (test)")

    monkeypatch.setattr(rasterio.io.DatasetReader, "read", read)
    sio._tiff_stretch_cached.cache_clear()
    yield
    sio._tiff_stretch_cached.cache_clear()


def _scene16(path, h=1500, w=1300):
    """A uint16 RGB scene dark at the top, bright at the bottom (plus noise), nodata 0 in a corner."""
    rng = np.random.default_rng(3)
    rows = np.linspace(0, 1, h, dtype=np.float32)[:, None]
    base = 2000 + 40000 * rows + rng.normal(0, 1500, (h, w)).astype(np.float32)
    data = np.stack([base, base * 0.9, base * 1.1]).clip(1, 65535)
    data[:, :100, :100] = 0
    _write(path, data, "uint16", nodata=0, tiled=True, blockxsize=256, blockysize=256, compress="deflate")
    valid = data[:, data[0] > 0]
    return tuple(float(v) for v in np.percentile(valid, [2, 98]))


def test_failed_decimated_read_still_gives_one_scene_wide_range(tmp_path, fail_decimated, calls):
    p = tmp_path / "s16.tif"
    true_lo, true_hi = _scene16(p)
    stretch = sio.tiff_stretch(p)
    assert stretch is not None, "a failed decimated read must not turn into per-window stretching"
    assert calls["out_shape"] == 1 and calls["window"] > 100  # the decimated read was tried, the grid sampled
    lo, hi = stretch
    span = true_hi - true_lo
    assert abs(lo - true_lo) < 0.01 * span and abs(hi - true_hi) < 0.01 * span, (stretch, (true_lo, true_hi))
    # the map tiles use the very same range
    from seghz.geo.tiles import _TiffSource

    src = _TiffSource(p)
    try:
        assert src.stretch == stretch
    finally:
        src.close()
    # two windows of different brightness, read as the predicted rows are: equal input -> equal output (no seams)
    wins = [(200, 300, 256, 256), (420, 300, 256, 256)]
    with rasterio.open(p) as ds:
        raw = [_ORIG_READ(ds, 1, window=rasterio.windows.Window(c, r, w, h)) for r, c, h, w in wins]
    rgb = [sio.read_image(p, window=win)[..., 0] for win in wins]
    for a, b in ((rgb[0], sio.to_rgb8(raw[0], stretch)[..., 0]), (rgb[1], sio.to_rgb8(raw[1], stretch)[..., 0])):
        np.testing.assert_array_equal(a, b)
    common = np.intersect1d(raw[0], raw[1])
    assert common.size > 1000

    def lut(raw_, rgb_):
        vals, idx = np.unique(raw_, return_index=True)
        return dict(zip(vals.tolist(), rgb_.ravel()[idx].tolist()))

    m0, m1 = lut(raw[0], rgb[0]), lut(raw[1], rgb[1])
    assert all(m0[v] == m1[v] for v in common.tolist())
    # what None (per-window percentiles) would have given: the same values mapped differently -- a seam
    own = [sio.to_rgb8(r)[..., 0] for r in raw]
    o0, o1 = lut(raw[0], own[0]), lut(raw[1], own[1])
    assert sum(o0[v] != o1[v] for v in common.tolist()) > 0.5 * common.size


def test_fallback_leaves_nodata_out(tmp_path, fail_decimated, calls):
    h, w = 700, 900
    rng = np.random.default_rng(5)
    grey = rng.integers(5000, 6001, (1, h, w)).astype(np.uint16)
    grey[:, :, : w // 2] = 0  # half the scene is nodata
    p = _write(tmp_path / "grey16.tif", grey, "uint16", nodata=0)
    lo, hi = sio.tiff_stretch(p)
    assert calls["out_shape"] == 1 and calls["window"] > 0
    assert 5000 <= lo < 5100 and 5900 < hi <= 6000, (lo, hi)


def test_every_read_failing_raises_naming_the_file(tmp_path, fail_all):
    p = tmp_path / "broken16.tif"
    _write(p, np.full((3, 80, 90), 1234), "uint16")
    with pytest.raises(BadInputError) as ei:
        sio.tiff_stretch(p)
    msg = str(ei.value)
    assert ei.value.source == str(p) and p.name in msg
    assert "every block is bad (test)" in msg and "decimated read" in msg and "windowed sample" in msg


def test_errors_are_not_cached(tmp_path, monkeypatch):
    p = tmp_path / "later_ok16.tif"
    _write(p, np.arange(3 * 50 * 60).reshape(3, 50, 60) + 100, "uint16")

    def read(self, *a, **k):
        raise RasterioIOError("transient (test)")

    sio._tiff_stretch_cached.cache_clear()
    monkeypatch.setattr(rasterio.io.DatasetReader, "read", read)
    with pytest.raises(BadInputError, match="transient"):
        sio.tiff_stretch(p)
    monkeypatch.undo()
    lo, hi = sio.tiff_stretch(p)
    assert 100 <= lo < hi <= 100 + 3 * 50 * 60


def test_truncated_16bit_scene_is_refused_not_stretched_per_window(tmp_path):
    """A real damaged file: its first blocks still read, but the scene-wide range cannot be read -- read_image of
    an intact window used to come back stretched by its own percentiles; now it is a BadInputError naming it."""
    full = tmp_path / "full16.tif"
    _scene16(full, 600, 600)
    p = tmp_path / "cut16.tif"
    p.write_bytes(full.read_bytes()[: full.stat().st_size * 4 // 10])
    sio._tiff_stretch_cached.cache_clear()
    with rasterio.open(p) as ds:
        ds.read(window=rasterio.windows.Window(0, 0, 64, 64))  # the first block is intact
    for call in (lambda: sio.tiff_stretch(p), lambda: sio.read_image(p, window=(0, 0, 64, 64))):
        with pytest.raises(BadInputError) as ei:
            call()
        assert ei.value.source == str(p) and "cut16.tif" in str(ei.value)
        assert "corrupt or truncated GeoTIFF" in str(ei.value)


def test_unreadable_and_missing_files(tmp_path):
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"not a tiff at all" * 20)
    with pytest.raises(BadInputError, match="not a readable GeoTIFF") as ei:
        sio.tiff_stretch(junk)
    assert ei.value.source == str(junk)
    with pytest.raises(BadInputError, match="does not exist") as ei:
        sio.tiff_stretch(tmp_path / "missing.tif")
    assert "missing.tif" in str(ei.value)


def test_uint8_is_not_stretched_even_when_reads_fail(tmp_path, fail_all):
    p = _write(tmp_path / "rgb8.tif", np.full((3, 40, 50), 77), "uint8")
    assert sio.tiff_stretch(p) is None


def test_grid_spreads_over_the_whole_axis():
    assert sio._grid_starts(150) == [(0, 64), (64, 64), (128, 22)]  # short axis: covered exactly
    g = sio._grid_starts(5000)  # long axis: 16 windows, one centred in each 1/16 of it
    assert len(g) == 16 and all(size == 64 for _, size in g)
    assert g[0][0] == round(5000 / 32 - 32) and g[-1][0] + 64 == round(5000 - 5000 / 32 + 32)
    assert all(b[0] - a[0] > 64 for a, b in itertools.pairwise(g)) and g[-1][0] + 64 <= 5000
