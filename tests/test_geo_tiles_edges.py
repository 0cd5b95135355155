"""Lower pyramid zooms have no seams: where an image/scene edge falls inside a pixel of a lower zoom, that pixel
is as opaque as the scene (it used to be averaged with the transparent padding of the edge tile and came out
part-transparent: a faint line along the bottom/right edge, or between two tile rows)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from seghz.geo.tiles import TILE_SIZE, _downsample, build_pyramid

T = TILE_SIZE


def _mosaic(out: Path, z: int) -> tuple[np.ndarray, int, int]:
    """All tiles of zoom z pasted into one RGBA array; returns (array, row of its top, col of its left) in
    global pixel units of that zoom (tile y * 256, tile x * 256)."""
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
    return mos, y0 * T, x0 * T


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    w=st.integers(1, 1100),
    h=st.integers(1, 1100),
    colour=st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255)),
    fmt=st.sampled_from(["png", "tif"]),
)
def test_pixel_pyramid_of_a_uniform_image_has_no_seams(tmp_path_factory, w, h, colour, fmt):
    """Uniform w x h image -> at every zoom z (scale 2**(z-N)) the tile pixels rows [0, ceil(h / 2**(N-z))),
    cols [0, ceil(w / 2**(N-z))) are exactly (colour, 255) and every other pixel of every tile has alpha 0.

    Allowed: the drawn extent is the exact extent h / 2**(N-z) x w / 2**(N-z) rounded *outwards* to whole
    pixels (less than one pixel more on the bottom and right side; the top-left corner is exact). Nothing else:
    no part-transparent pixel, no colour off by one, every tile under the extent exists."""
    tmp = tmp_path_factory.mktemp("pyr")
    img = np.empty((h, w, 3), np.uint8)
    img[:] = colour
    src = tmp / f"a.{fmt}"
    if fmt == "png":
        Image.fromarray(img).save(src)
    else:  # a plain TIFF without CRS: the windowed rasterio reader with its dataset mask
        import rasterio

        with rasterio.open(src, "w", driver="GTiff", width=w, height=h, count=3, dtype="uint8") as ds:
            ds.write(np.transpose(img, (2, 0, 1)))
    pyr = build_pyramid(src, tmp / "tiles", static_root=tmp / "static")
    n = pyr.max_zoom
    assert pyr.min_zoom == 0 and n == (math.ceil(math.log2(max(w, h) / T)) if max(w, h) > T else 0)
    for z in range(n, -1, -1):
        s = 2 ** (n - z)
        vh, vw = math.ceil(h / s), math.ceil(w / s)  # the exact extent h/s x w/s rounded outwards
        mos, r0, c0 = _mosaic(tmp / "tiles", z)
        assert (r0, c0) == (0, 0) and mos.shape[:2] == (math.ceil(vh / T) * T, math.ceil(vw / T) * T), z
        inside = mos[:vh, :vw]
        assert (inside[..., 3] == 255).all(), (z, np.argwhere(inside[..., 3] != 255)[:3], inside[..., 3].min())
        assert (inside[..., :3] == np.array(colour, np.uint8)).all(), (z, np.unique(inside[..., :3].reshape(-1, 3), axis=0)[:4])
        assert not mos[vh:, :, 3].any() and not mos[:, vw:, 3].any(), z


def test_edge_pixels_average_only_the_covered_children():
    """An edge pixel's colour is the mean of the scene pixels under it, its alpha that of the covered ones."""
    mosaic = np.zeros((2 * T, 2 * T, 4), np.uint8)
    mosaic[:3, :3] = (10, 20, 30, 255)  # rows/cols 0..2: parent pixel (1, 1) sees 1 covered child of 4
    mosaic[0, 1] = (50, 60, 70, 255)  # parent (0, 0): children (10,20,30) x3 + (50,60,70)
    mosaic[4:6, 4] = (100, 100, 100, 128)  # parent (2, 2): two half-transparent children, two empty
    out = _downsample(mosaic)
    assert tuple(out[0, 0]) == (20, 30, 40, 255)
    assert tuple(out[1, 1]) == (10, 20, 30, 255) and tuple(out[0, 1]) == (10, 20, 30, 255)
    assert tuple(out[2, 2]) == (100, 100, 100, 128)  # semi-transparent content stays as transparent as it was
    assert not out[3:, :, 3].any() and not out[:, 3:, 3].any() and not out[2, :2, 3].any()
    # Fully opaque input: the plain box filter (rounded half up), unchanged.
    rng = np.random.default_rng(0)
    opaque = rng.integers(0, 256, (2 * T, 2 * T, 4)).astype(np.uint8)
    opaque[..., 3] = 255
    q = opaque.astype(np.float64)
    expect = ((q[0::2, 0::2] + q[1::2, 0::2] + q[0::2, 1::2] + q[1::2, 1::2]) / 4 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(_downsample(opaque), expect)


def test_georef_lower_zooms_have_no_part_transparent_rim(tmp_path):
    """A uniform UTM scene (its outline is not aligned with the Mercator tile grid): at every lower zoom a pixel is
    opaque exactly when a max-zoom pixel under it is, and carries the scene's colour; no pixel is part-transparent."""
    import rasterio
    from affine import Affine

    w, h, colour = 150, 110, (200, 120, 40)
    src = tmp_path / "utm.tif"
    with rasterio.open(src, "w", driver="GTiff", width=w, height=h, count=3, dtype="uint8", crs="EPSG:32651",
                       transform=Affine(0.9, 0.25, 355000.0, 0.25, -0.9, 3445000.0)) as ds:
        ds.write(np.broadcast_to(np.array(colour, np.uint8)[:, None, None], (3, h, w)))
    pyr = build_pyramid(src, tmp_path / "tiles", static_root=tmp_path / "static", min_zoom=15)
    out = Path(pyr.out_dir)
    assert (pyr.min_zoom, pyr.max_zoom) == (15, 18)
    top, r0, c0 = _mosaic(out, pyr.max_zoom)
    rr, cc = np.nonzero(top[..., 3])
    assert set(np.unique(top[..., 3])) == {0, 255}
    for z in range(pyr.max_zoom, pyr.min_zoom - 1, -1):
        f = 2 ** (pyr.max_zoom - z)
        mos, zr0, zc0 = _mosaic(out, z)
        a = mos[..., 3]
        assert set(np.unique(a)) <= {0, 255}, (z, np.unique(a))
        assert (mos[a == 255][:, :3] == np.array(colour, np.uint8)).all(), z
        got = set(zip((np.nonzero(a)[0] + zr0).tolist(), (np.nonzero(a)[1] + zc0).tolist()))
        expect = set(zip(((rr + r0) // f).tolist(), ((cc + c0) // f).tolist()))
        assert got == expect, (z, len(got), len(expect))
