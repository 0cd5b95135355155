"""A Map-page region's GeoTIFF and GeoJSON exports line up in a GIS, for pixel-space and georeferenced scenes.

A pixel-space scene's GeoJSON is ``[column, -row]`` of the full scene; its region GeoTIFF used an identity
transform (the window at (0, 0), the offset only in the ``SEGHZ_WINDOW`` tag), ~offset pixels away in QGIS.
"""
from __future__ import annotations

import io

import numpy as np
import pytest

from seghz.classes import get_scheme
from seghz.geo import vectors
from seghz.infer.region import region_geotiff
from seghz.store import Scene

rasterio = pytest.importorskip("rasterio")
HZ7 = get_scheme("hz7")
# the analyst's window on the Hangzhou airport scene: rows 306-944, cols 485-1281
WINDOW = (306, 485, 639, 797)


def scene(crs=None, transform=None, w=1600, h=1200) -> Scene:
    return Scene(id="s", name="s", image_path="x", label_path=None, scheme="hz7", width=w, height=h, crs=crs,
                 transform=transform, split="train", synthetic=False, source="test", created_at="")


def _mask(window) -> np.ndarray:
    m = np.zeros(window[2:], np.uint8)
    m[100:200, 50:300] = 3  # a patch inside, so the GeoJSON has more than the outline
    return m


def _exports(sc: Scene, window, mask):
    tif = region_geotiff(sc, window, mask, HZ7)
    gj = vectors.class_geojson(mask, list(HZ7.names), vectors.scene_info(sc), offset=window[:2])
    return tif, gj


def _coords(gj) -> np.ndarray:
    pts = [p for f in gj["features"] for ring in f["geometry"]["coordinates"] for p in ring]
    return np.asarray(pts, float)


def test_pixel_space_region_geotiff_bounds_are_the_geojson_extent():
    mask = _mask(WINDOW)
    tif, gj = _exports(scene(), WINDOW, mask)
    xy = _coords(gj)
    with rasterio.open(io.BytesIO(tif)) as ds:
        assert ds.crs is None
        left, bottom, right, top = ds.bounds
        assert (left, bottom, right, top) == pytest.approx(
            (xy[:, 0].min(), xy[:, 1].min(), xy[:, 0].max(), xy[:, 1].max()))
        assert (left, top, right, bottom) == pytest.approx((485, -306, 1282, -945))
        # the patch of class 3 sits at the same place in both: its GeoJSON polygon rasterised with the GeoTIFF's
        # transform gives back the GeoTIFF's class-3 pixels
        from rasterio import features

        patch = [f["geometry"] for f in gj["features"] if f["properties"]["class"] == HZ7.names[3]]
        burnt = features.rasterize([(g, 1) for g in patch], out_shape=ds.shape, transform=ds.transform)
        np.testing.assert_array_equal(burnt.astype(bool), ds.read(1) == 3)


def test_georeferenced_region_geotiff_corners_are_the_geojson_corners():
    from rasterio.warp import transform as warp

    sc = scene(crs="EPSG:32651", transform=(0.5, 0.0, 500000.0, 0.0, -0.5, 3350000.0))
    mask = np.zeros(WINDOW[2:], np.uint8)  # one class: the GeoJSON is the window's outline
    tif, gj = _exports(sc, WINDOW, mask)
    xy = _coords(gj)
    with rasterio.open(io.BytesIO(tif)) as ds:
        assert ds.crs.to_epsg() == 32651
        # the window offset is in the transform (not only in the tag)
        assert (ds.transform.c, ds.transform.f) == pytest.approx((500000 + 0.5 * 485, 3350000 - 0.5 * 306))
        h, w = ds.shape
        corners = [ds.transform @ (c, r) for c, r in ((0, 0), (w, 0), (w, h), (0, h))]
        lon, lat = warp(ds.crs, "EPSG:4326", [c[0] for c in corners], [c[1] for c in corners])
    for x, y in zip(lon, lat, strict=True):  # each GeoTIFF corner is a vertex of the GeoJSON outline
        d = np.hypot(xy[:, 0] - x, xy[:, 1] - y).min()
        assert d < 1e-7, (x, y, d)
    assert (xy[:, 0].min(), xy[:, 1].min()) == pytest.approx((min(lon), min(lat)), abs=1e-7)
    assert (xy[:, 0].max(), xy[:, 1].max()) == pytest.approx((max(lon), max(lat)), abs=1e-7)
