"""Map-page GeoTIFF export of a predicted region: window transform and the file rasterio reads back."""
from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seghz.classes import get_scheme
from seghz.infer.region import region_geotiff, window_transform
from seghz.store import Scene

HZ7 = get_scheme("hz7")


def scene(crs="EPSG:32651", transform=(0.5, 0.0, 500000.0, 0.0, -0.5, 3350000.0), w=400, h=300) -> Scene:
    return Scene(id="s", name="s", image_path="x", label_path=None, scheme="hz7", width=w, height=h, crs=crs,
                 transform=transform, split="train", synthetic=False, source="test", created_at="")


@settings(max_examples=100, deadline=None)
@given(a=st.floats(0.1, 10), b=st.floats(-1, 1), d=st.floats(-1, 1), e=st.floats(-10, -0.1),
       c=st.floats(-1e6, 1e6), f=st.floats(-1e6, 1e6), r=st.integers(0, 5000), col=st.integers(0, 5000),
       pr=st.integers(0, 100), pc=st.integers(0, 100))
def test_window_transform_maps_window_pixels_to_the_same_ground_points(a, b, c, d, e, f, r, col, pr, pc):
    full = (a, b, c, d, e, f)
    win = window_transform(full, (r, col, 10, 10))

    def apply(t, row, column):
        return t[0] * column + t[1] * row + t[2], t[3] * column + t[4] * row + t[5]

    x0, y0 = apply(full, r + pr, col + pc)
    x1, y1 = apply(win, pr, pc)
    assert x1 == pytest.approx(x0, rel=1e-9, abs=1e-6) and y1 == pytest.approx(y0, rel=1e-9, abs=1e-6)


def test_region_geotiff_opens_with_the_scene_crs_and_the_region_bounds():
    rasterio = pytest.importorskip("rasterio")
    mask = np.random.default_rng(0).integers(0, HZ7.num_classes, (60, 80)).astype(np.uint8)
    mask[:5] = 255
    data = region_geotiff(scene(), (100, 40, 60, 80), mask, HZ7)
    with rasterio.open(io.BytesIO(data)) as ds:
        assert ds.crs.to_epsg() == 32651 and ds.count == 1 and ds.dtypes[0] == "uint8" and ds.nodata == 255
        left, bottom, right, top = ds.bounds
        assert (left, top) == pytest.approx((500000 + 0.5 * 40, 3350000 - 0.5 * 100))
        assert (right, bottom) == pytest.approx((500000 + 0.5 * 120, 3350000 - 0.5 * 160))
        np.testing.assert_array_equal(ds.read(1), mask)
        assert ds.colormap(1)[5][:3] == tuple(HZ7.colors[5])
        assert ds.tags(1) == {"scheme": "hz7", "classes": ",".join(HZ7.names)} and ds.descriptions == ("class",)
    tagged = region_geotiff(scene(), (100, 40, 60, 80), mask, HZ7, tags={"checkpoint": "ck-1", "tta": "d4 (8 views)"})
    with rasterio.open(io.BytesIO(tagged)) as ds:  # which model and TTA made it, travelling with the file
        tags = ds.tags()
        assert tags["SEGHZ_CHECKPOINT"] == "ck-1" and tags["SEGHZ_TTA"] == "d4 (8 views)"
        assert tags["SEGHZ_WINDOW"] == "100,40,60,80" and tags["SEGHZ_SCENE"] == scene().id


def test_region_geotiff_of_a_pixel_space_scene_has_no_fake_location():
    rasterio = pytest.importorskip("rasterio")
    mask = np.zeros((8, 8), np.uint8)
    with rasterio.open(io.BytesIO(region_geotiff(scene(crs=None, transform=None), (0, 0, 8, 8), mask))) as ds:
        assert ds.crs is None
    with pytest.raises(ValueError, match="does not match the window"):
        region_geotiff(scene(), (0, 0, 8, 9), mask)
