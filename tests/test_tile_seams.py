"""The offline tile pyramid has no seams: adjacent tiles of one zoom, stitched back together, are the same image
as resampling the whole scene at once, and nothing changes across a tile border that does not change inside a tile.

Scenes are smooth synthetic patterns (a gradient plus slow sinusoids), 8-bit and 16-bit, georeferenced (north-up
EPSG:3857 with a grid that is not aligned to the tile grid, and UTM) and pixel-space (plain TIFF, PNG). What a seam
would come from, and what catches it here:

* a tile resampled from a window without neighbouring pixels (the bilinear kernel at the tile edge clamps instead
  of seeing the next tile's pixels), a half-pixel offset or rounded window bounds in the window -> tile mapping:
  the max-zoom mosaic differs from one whole-scene reprojection, most at the tile borders;
* a per-tile contrast stretch of 16-bit data: each tile's own 2..98 % range differs, so neighbouring tiles disagree
  by tens of grey levels at their common border;
* lower zooms built from the children tiles: the 2x2 means of a mosaic must stay continuous across borders.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seghz.data.io import tiff_stretch, to_rgb8
from seghz.geo.tiles import MERC_HALF, TILE_SIZE, build_pyramid

T = TILE_SIZE


def _pattern(h: int, w: int) -> np.ndarray:
    """Smooth 0..1 field: a diagonal gradient plus slow sinusoids (periods of ~40-70 px)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    g = 0.35 * xx / w + 0.25 * yy / h + 0.15 * np.sin(xx / 7.0) + 0.12 * np.cos(yy / 9.0) + 0.05 * np.sin((xx + yy) / 11.0)
    return (g - g.min()) / (g.max() - g.min())


def _bands(h: int, w: int, dtype: str) -> np.ndarray:
    g = _pattern(h, w)
    if dtype == "uint8":
        return np.stack([g * 230 + 10, (1 - g) * 230 + 10, g * g * 230 + 10]).round().astype(np.uint8)
    # 16-bit with a scene-wide range far from 0..255: only one scene-wide stretch keeps neighbouring tiles equal.
    return np.stack([g * 30000 + 2000, (1 - g) * 30000 + 2000, g * g * 30000 + 6000]).round().astype(np.uint16)


def _write_tif(path: Path, bands: np.ndarray, crs: str | None = None, transform=None) -> None:
    import rasterio

    kw = {"crs": crs, "transform": transform} if crs else {}
    with rasterio.open(path, "w", driver="GTiff", width=bands.shape[2], height=bands.shape[1], count=bands.shape[0],
                       dtype=bands.dtype.name, **kw) as ds:
        ds.write(bands)


def _mosaic(out: Path, z: int) -> tuple[np.ndarray, int, int]:
    """Tiles of zoom z pasted into one RGBA array (missing tiles transparent); (array, x0, y0) of its top-left tile."""
    tiles = {}
    for f in (out / str(z)).glob("*/*.png"):
        with Image.open(f) as im:
            tiles[(int(f.parent.name), int(f.stem))] = np.asarray(im.convert("RGBA"))
    assert tiles, f"no tiles at zoom {z}"
    xs, ys = [k[0] for k in tiles], [k[1] for k in tiles]
    x0, y0 = min(xs), min(ys)
    mos = np.zeros(((max(ys) - y0 + 1) * T, (max(xs) - x0 + 1) * T, 4), np.uint8)
    for (x, y), t in tiles.items():
        mos[(y - y0) * T : (y - y0 + 1) * T, (x - x0) * T : (x - x0 + 1) * T] = t
    return mos, x0, y0


def _erode(mask: np.ndarray, n: int) -> np.ndarray:
    m = mask.copy()
    for _ in range(n):
        e = m.copy()
        e[1:] &= m[:-1]
        e[:-1] &= m[1:]
        e[:, 1:] &= m[:, :-1]
        e[:, :-1] &= m[:, 1:]
        e[0] = e[-1] = False
        e[:, 0] = e[:, -1] = False
        m = e
    return m


def _border_band(shape: tuple[int, int], half: int) -> np.ndarray:
    """True within ``half`` px of an internal tile border of a mosaic."""
    band = np.zeros(shape, bool)
    for j in range(T, shape[1], T):
        band[:, j - half : j + half] = True
    for i in range(T, shape[0], T):
        band[i - half : i + half] = True
    return band


def seam_excess(mos: np.ndarray) -> tuple[float, float, float, float, int]:
    """How much the step between two neighbouring pixels departs from the steps beside it (the second difference
    ``|d_j - (d_{j-1} + d_{j+1}) / 2|`` of each colour band), at the internal tile borders and inside the tiles,
    over opaque pixels of the scene interior, both directions. Returns (border max, border mean, inside max,
    inside mean, number of border samples)."""
    rgb = mos[..., :3].astype(np.float64)
    opaque = _erode(mos[..., 3] == 255, 3)
    bmax = bsum = imax = isum = 0.0
    bn = inn = 0
    for arr, ok in ((rgb, opaque), (np.swapaxes(rgb, 0, 1), opaque.T)):
        d = np.diff(arr, axis=1)  # d[:, j] = p[:, j + 1] - p[:, j]
        ex = np.abs(d[:, 1:-1] - 0.5 * (d[:, :-2] + d[:, 2:])).max(axis=2)  # step j (1..W-3) vs its neighbours
        okj = ok[:, 1:-2] & ok[:, 2:-1] & ok[:, :-3] & ok[:, 3:]
        j = np.arange(1, arr.shape[1] - 2)
        at_border = ((j + 1) % T == 0)[None, :] & okj  # step between the last column of a tile and the next tile
        inside = ((j + 1) % T != 0)[None, :] & okj
        if at_border.any():
            bmax = max(bmax, float(ex[at_border].max()))
            bsum += float(ex[at_border].sum())
            bn += int(at_border.sum())
        if inside.any():
            imax = max(imax, float(ex[inside].max()))
            isum += float(ex[inside].sum())
            inn += int(inside.sum())
    return bmax, bsum / max(bn, 1), imax, isum / max(inn, 1), bn


def _assert_no_seam(mos: np.ndarray, what: str) -> None:
    bmax, bmean, imax, imean, n = seam_excess(mos)
    assert n > 100, f"{what}: the scene crosses no tile border ({n} samples), the test sees nothing"
    # Inside a tile the second difference of these smooth patterns is rounding noise (<= ~2 levels); a seam is a
    # jump at the border larger than any inside, or a border that is consistently rougher than the inside.
    assert bmax <= imax + 0.5, f"{what}: step excess at tile borders max {bmax:.2f} > inside max {imax:.2f}"
    assert bmean <= 1.5 * imean + 0.1, f"{what}: step excess at tile borders mean {bmean:.3f} vs inside {imean:.3f}"


def _compare(mos: np.ndarray, ref: np.ndarray, what: str, max_diff: int) -> None:
    """Mosaic vs reference (same grid): max difference bounded, and no larger at tile borders than inside."""
    ok = _erode(mos[..., 3] == 255, 3)
    diff = np.abs(mos[..., :3].astype(np.int32) - ref.astype(np.int32)).max(axis=2)
    band = _border_band(ok.shape, 3)
    assert (ok & band).sum() > 100, f"{what}: the scene crosses no tile border"
    at_b, ins = diff[ok & band], diff[ok & ~band]
    assert at_b.max() <= max_diff and ins.max() <= max_diff, (
        f"{what}: mosaic vs whole-scene resampling differs by up to {at_b.max()} at tile borders, {ins.max()} inside")
    assert at_b.mean() <= ins.mean() + 0.05, f"{what}: mean difference {at_b.mean():.3f} at tile borders vs {ins.mean():.3f} inside"


GEO_CASES = {
    # crs, transform (a, b, c, d, e, f), height, width; grids not aligned with the Web-Mercator tile grid
    "3857": ("EPSG:3857", (0.55, 0.0, 13375101.37, 0.0, -0.55, 3536000.71), 260, 300),
    "utm": ("EPSG:32650", (0.5, 0.0, 500000.13, 0.0, -0.5, 4000000.29), 420, 480),
}


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
@pytest.mark.parametrize("case", sorted(GEO_CASES))
def test_georef_pyramid_has_no_seams(tmp_path, case, dtype):
    from affine import Affine
    from rasterio.warp import Resampling, reproject

    crs, tr6, h, w = GEO_CASES[case]
    tr = Affine(*tr6)
    bands = _bands(h, w, dtype)
    src = tmp_path / "scene.tif"
    _write_tif(src, bands, crs, tr)
    out = tmp_path / "tiles"
    pyr = build_pyramid(src, out, static_root=tmp_path / "static")
    z = pyr.max_zoom
    mos, x0, y0 = _mosaic(out, z)
    # The whole scene reprojected at once onto the same Web-Mercator grid (exact transformer), stretched once.
    size = 2 * MERC_HALF / 2**z
    dst_tr = Affine(size / T, 0.0, -MERC_HALF + x0 * size, 0.0, -size / T, MERC_HALF - y0 * size)
    ref = np.zeros((bands.shape[0], mos.shape[0], mos.shape[1]), bands.dtype)
    reproject(bands, ref, src_transform=tr, src_crs=crs, dst_transform=dst_tr, dst_crs="EPSG:3857",
              resampling=Resampling.bilinear, num_threads=1, tolerance=0)
    ref8 = to_rgb8(np.moveaxis(ref, 0, -1), tiff_stretch(src))
    # 3857 -> 3857 is exact; UTM tiles use GDAL's approximate transformer (<= 0.125 px): 1 grey level.
    _compare(mos, ref8, f"{case}/{dtype} z{z}", max_diff=0 if case == "3857" else 1)
    crossed = 0
    for zz in range(pyr.max_zoom, pyr.min_zoom - 1, -1):
        m, _, _ = _mosaic(out, zz)
        if m.shape[0] > T or m.shape[1] > T:
            _assert_no_seam(m, f"{case}/{dtype} z{zz}")
            crossed += 1
    assert crossed >= 2, "the scene should cross tile borders at two zooms at least"


@pytest.mark.parametrize(("fmt", "dtype"), [("tif", "uint8"), ("tif", "uint16"), ("png", "uint8")])
def test_pixel_pyramid_has_no_seams(tmp_path, fmt, dtype):
    h, w = 600, 700  # N = 2: 3x3 tiles at native scale, 2x2 at half scale
    bands = _bands(h, w, dtype)
    src = tmp_path / f"scene.{fmt}"
    if fmt == "png":
        Image.fromarray(np.moveaxis(bands, 0, -1)).save(src)
    else:
        _write_tif(src, bands)
    out = tmp_path / "tiles"
    pyr = build_pyramid(src, out, static_root=tmp_path / "static")
    n = pyr.max_zoom
    assert n == 2
    whole = to_rgb8(np.moveaxis(bands, 0, -1), tiff_stretch(src) if fmt == "tif" else None).astype(np.float64)
    for z in range(n, -1, -1):
        s = 2 ** (n - z)
        mos, x0, y0 = _mosaic(out, z)
        assert (x0, y0) == (0, 0)
        # Reference: the whole image (stretched once) averaged over s x s blocks, as one array.
        hh, ww = h // s, w // s
        ref = whole[: hh * s, : ww * s].reshape(hh, s, ww, s, 3).mean(axis=(1, 3))
        part = mos[:hh, :ww]
        diff = np.abs(part[..., :3].astype(np.float64) - ref)
        # Each lower zoom rounds its 2x2 means to 8 bits once more: <= 0.5 level per zoom below native.
        assert diff.max() <= 0.5 * (n - z) + 1e-9, (z, float(diff.max()))
        if z == n:
            assert (part[..., :3] == whole.astype(np.uint8)).all()
        if mos.shape[0] > T or mos.shape[1] > T:
            _assert_no_seam(mos, f"{fmt}/{dtype} z{z}")
