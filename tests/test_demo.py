"""Tests of seghz.demo: the synthetic hz7 demo scene."""
from __future__ import annotations

import math

import numpy as np
import pytest

from seghz.classes import get_scheme
from seghz.demo import BUILD, FOREST, GREEN, OPEN, ROAD, WATER, demo_transform, generate_scene, write_demo_geotiff


@pytest.fixture(scope="module")
def scene0():
    return generate_scene(1024, 0)


def test_class_constants_follow_hz7_order():
    names = get_scheme("hz7").names
    assert names[WATER] == "Water" and names[OPEN] == "OpenArea" and names[GREEN] == "Green_land"
    assert names[FOREST] == "Forest" and names[BUILD] == "Buildings" and names[ROAD] == "Road_land"


def test_seed0_1024_has_all_seven_classes(scene0):
    img, lbl = scene0
    assert img.shape == (1024, 1024, 3) and img.dtype == np.uint8
    assert lbl.shape == (1024, 1024) and lbl.dtype == np.uint8
    counts = np.bincount(lbl.ravel(), minlength=256)
    assert counts[7:].sum() == 0, "labels outside hz7 (and no ignore) in a label exact by construction"
    assert (counts[:7] > 0).all(), counts[:7]


@pytest.mark.parametrize("size,seed", [(128, 0), (200, 1), (257, 5)])
def test_deterministic_per_seed_and_shapes_agree(size, seed):
    img_a, lbl_a = generate_scene(size, seed)
    img_b, lbl_b = generate_scene(size, seed)
    assert img_a.shape == (size, size, 3) and lbl_a.shape == (size, size)
    assert img_a.dtype == np.uint8 and lbl_a.dtype == np.uint8
    assert np.array_equal(img_a, img_b) and np.array_equal(lbl_a, lbl_b)
    img_c, lbl_c = generate_scene(size, seed + 100)
    assert not np.array_equal(lbl_a, lbl_c)
    assert not np.array_equal(img_a, img_c)


def test_image_agrees_with_label(scene0):
    """The rendering follows the label: water is dark and bluish, bare ground brighter than forest."""
    img, lbl = scene0
    f = img.astype(np.float64)
    mean = {c: f[lbl == c].mean(0) for c in (WATER, OPEN, FOREST)}
    assert mean[WATER][2] > mean[WATER][0]  # blue > red on water
    assert mean[OPEN].sum() > mean[WATER].sum() and mean[OPEN].sum() > mean[FOREST].sum()
    # textured, not flat: every large class has pixel variation
    for c in (WATER, GREEN, FOREST):
        assert f[lbl == c].std(0).max() > 2


def test_demo_transform_and_geotiff(tmp_path):
    from seghz.data.io import raster_info, read_image

    crs, t = demo_transform(64)
    assert crs == "EPSG:3857"
    res = t[0]
    # ~1 m on the ground at latitude 30.29: Mercator metres are stretched by 1/cos(lat)
    assert res == pytest.approx(1 / math.cos(math.radians(30.29)), rel=1e-9)
    assert t[4] == -res and t[1] == 0 and t[3] == 0
    assert t[2] == pytest.approx(math.radians(120.08) * 6378137.0)
    img, _ = generate_scene(64, 2)
    p = tmp_path / "demo.tif"
    write_demo_geotiff(p, img)
    assert np.array_equal(read_image(p), img)
    info = raster_info(p)
    assert info.georeferenced and "3857" in info.crs
    assert info.transform == pytest.approx(t)
