"""Jump-to the map (drill-down / noise queue → Map page): bbox → window → drawn-region GeoJSON → the same window."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seghz.classes import IGNORE
from seghz.data.io import RasterInfo
from seghz.errors import RegionError
from seghz.geo.regions import bbox_to_window, error_classes, error_scheme, window_to_geojson
from seghz.geo.tiles import geojson_to_pixel_window


def infos(h: int, w: int) -> list[RasterInfo]:
    return [
        RasterInfo(path="x.tif", width=w, height=h, count=3, dtype="uint8", crs="EPSG:3857",
                   transform=(0.6, 0.0, 13370000.0, 0.0, -0.6, 3530000.0)),
        RasterInfo(path="x.tif", width=w, height=h, count=3, dtype="uint8", crs="EPSG:32651",
                   transform=(0.5, 0.0, 210000.0, 0.0, -0.5, 3350000.0)),
        RasterInfo(path="x.tif", width=w, height=h, count=3, dtype="uint8", crs=None, transform=None),
    ]


@settings(max_examples=60, deadline=None)
@given(h=st.integers(8, 3000), w=st.integers(8, 3000), data=st.data())
def test_jump_window_round_trips_through_the_drawn_region(h, w, data):
    r0 = data.draw(st.integers(0, h - 1))
    c0 = data.draw(st.integers(0, w - 1))
    r1 = data.draw(st.integers(r0 + 1, h))
    c1 = data.draw(st.integers(c0 + 1, w))
    win = bbox_to_window((r0, c0, r1, c1), h, w)
    r, c, wh, ww = win
    assert r <= r0 and c <= c0 and r + wh >= r1 and c + ww >= c1 and r + wh <= h and c + ww <= w
    for info in infos(h, w):
        assert geojson_to_pixel_window(window_to_geojson(win, info), info) == win


def test_bbox_to_window_pads_small_boxes_and_refuses_bad_ones():
    assert bbox_to_window((100, 100, 110, 110), 1000, 1000) == (73, 73, 64, 64)
    assert bbox_to_window((0, 0, 10, 10), 1000, 1000)[:2] == (0, 0)
    with pytest.raises(RegionError, match="outside"):
        bbox_to_window((0, 0, 0, 10), 100, 100)
    with pytest.raises(RegionError, match="outside"):
        bbox_to_window((90, 90, 120, 95), 100, 100)


def test_error_layer_marks_only_valid_disagreeing_pixels():
    pred = np.array([[0, 1, 2], [3, IGNORE, 1]], np.uint8)
    lbl = np.array([[0, 2, 2], [IGNORE, 4, 5]], np.uint8)
    out = error_classes(pred, lbl)
    np.testing.assert_array_equal(out, [[IGNORE, 0, IGNORE], [IGNORE, IGNORE, 0]])
    assert error_scheme().colors == ((255, 0, 255),)
    with pytest.raises(ValueError, match="differ in shape"):
        error_classes(pred, lbl[:1])
