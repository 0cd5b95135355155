"""Correction tools of the Labels page (seghz.labels_edit.apply_tool and friends) on hand-built masks."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seghz.classes import IGNORE
from seghz.labels_edit import (
    TOOLS,
    apply_tool,
    blob_seeds,
    clamp_window,
    fill_region,
    offset_slider_max,
    offset_step,
    window_options,
    zoom_window,
)


def two_regions() -> np.ndarray:
    """10×10: left half class 1, right half class 2, with a separate class-1 island at the right."""
    m = np.ones((10, 10), np.uint8)
    m[:, 5:] = 2
    m[7:9, 7:9] = 1
    return m


def test_fill_fills_the_4_connected_region_under_the_click_only():
    m = two_regions()
    click = np.zeros_like(m, bool)
    click[2:4, 1:3] = True  # one blob inside the left region
    out, touched = apply_tool(m, click, "fill", 3, (0, 0, 10, 10))
    assert (out[:, :5] == 3).all()
    assert (out[7:9, 7:9] == 1).all(), "the island of the same class is not connected: it stays"
    assert (out[:, 5:][m[:, 5:] == 2] == 2).all()
    assert touched.sum() == 50 and (touched == (out != m)).all()
    assert (m[:, :5] == 1).all(), "input not modified"


def test_fill_does_not_leak_across_a_diagonal_only_contact():
    m = np.zeros((4, 4), np.uint8)
    m[0, 0] = m[1, 1] = 5  # touch only at a corner
    click = np.zeros_like(m, bool)
    click[0, 0] = True
    out, touched = apply_tool(m, click, "fill", 6, (0, 0, 4, 4))
    assert out[0, 0] == 6 and out[1, 1] == 5 and touched.sum() == 1


def test_fill_stays_inside_the_window():
    m = np.ones((10, 10), np.uint8)
    click = np.zeros_like(m, bool)
    click[3, 3] = True
    out, touched = apply_tool(m, click, "fill", 0, (2, 2, 4, 4))
    assert touched.sum() == 16 and (out[2:6, 2:6] == 0).all() and (out == 0).sum() == 16


def test_two_clicks_fill_two_regions():
    m = two_regions()
    click = np.zeros_like(m, bool)
    click[1, 1] = click[1, 8] = True
    out, _ = apply_tool(m, click, "fill", IGNORE, (0, 0, 10, 10))
    assert (out[7:9, 7:9] == 1).all() and (out == IGNORE).sum() == 100 - 4


def test_eraser_restores_the_saved_label_under_the_stroke():
    base = two_regions()
    edited = base.copy()
    edited[0:4, 0:10] = 7
    stroke = np.zeros_like(base, bool)
    stroke[0:2, 0:10] = True
    out, touched = apply_tool(edited, stroke, "eraser", 0, (0, 0, 10, 10), base=base)
    assert (out[0:2] == base[0:2]).all() and (out[2:4] == 7).all() and touched.sum() == 20
    with pytest.raises(ValueError, match="saved label"):
        apply_tool(edited, stroke, "eraser", 0, (0, 0, 10, 10))


def test_accept_takes_the_prediction_inside_the_shape_only():
    m = np.zeros((8, 8), np.uint8)
    pred = np.arange(16, dtype=np.uint8).reshape(4, 4) % 5
    rect = np.zeros_like(m, bool)
    rect[3:5, 3:5] = True
    out, touched = apply_tool(m, rect, "accept", 0, (2, 2, 4, 4), prediction=pred, num_classes=5)
    assert (out[3:5, 3:5] == pred[1:3, 1:3]).all()
    out[3:5, 3:5] = 0
    assert not out.any() and touched.sum() == 4
    with pytest.raises(ValueError, match="predict it first"):
        apply_tool(m, rect, "accept", 0, (2, 2, 4, 4))
    with pytest.raises(ValueError, match="does not match the window"):
        apply_tool(m, rect, "accept", 0, (2, 2, 4, 4), prediction=np.zeros((3, 4), np.uint8))
    with pytest.raises(ValueError, match="outside the label's scheme"):
        apply_tool(m, rect, "accept", 0, (2, 2, 4, 4), prediction=np.full((4, 4), 9, np.uint8), num_classes=5)


@pytest.mark.parametrize("tool", ["brush", "rect", "polygon"])
def test_painting_tools_write_the_class_on_the_painted_pixels_in_the_window(tool):
    m = np.zeros((6, 6), np.uint8)
    px = np.zeros_like(m, bool)
    px[0:6, 2] = True
    out, touched = apply_tool(m, px, tool, 4, (1, 0, 3, 6), num_classes=5)
    assert (out[1:4, 2] == 4).all() and out.sum() == 12 and touched.sum() == 3


def test_bad_tool_and_class_are_refused():
    m = np.zeros((4, 4), np.uint8)
    px = np.ones_like(m, bool)
    with pytest.raises(ValueError, match="unknown correction tool"):
        apply_tool(m, px, "lasso", 1, (0, 0, 4, 4))
    with pytest.raises(ValueError, match="class index 9"):
        apply_tool(m, px, "brush", 9, (0, 0, 4, 4), num_classes=5)
    with pytest.raises(ValueError, match="same 2-D shape"):
        apply_tool(m, px[:3], "brush", 1, (0, 0, 4, 4))
    assert set(TOOLS) >= {"brush", "eraser", "fill", "accept", "polygon", "rect"}


def test_blob_seeds_one_per_blob_and_inside_it():
    px = np.zeros((20, 20), bool)
    px[2:5, 2:5] = True
    px[10:12, 14:19] = True
    seeds = blob_seeds(px)
    assert len(seeds) == 2 and all(px[r, c] for r, c in seeds)
    assert blob_seeds(np.zeros((3, 3), bool)) == []


def test_fill_region_refuses_a_seed_outside_the_window():
    with pytest.raises(ValueError, match="outside the window"):
        fill_region(np.zeros((5, 5), np.uint8), (0, 0), (1, 1, 3, 3))


@settings(max_examples=150, deadline=None)
@given(h=st.integers(1, 3000), w=st.integers(1, 3000), data=st.data())
def test_zoom_window_shows_the_whole_box_when_it_fits(h, w, data):
    r0 = data.draw(st.integers(0, h - 1))
    c0 = data.draw(st.integers(0, w - 1))
    r1 = data.draw(st.integers(r0 + 1, min(h, r0 + 600)))
    c1 = data.draw(st.integers(c0 + 1, min(w, c0 + 600)))
    size, row, col = zoom_window((r0, c0, r1, c1), h, w)
    assert size in window_options(h, w)
    # offsets are what the page's sliders can hold
    for off, extent in ((row, h - size), (col, w - size)):
        if extent > 0:
            assert 0 <= off <= offset_slider_max(extent) and off % offset_step(extent) == 0
        else:
            assert off == 0
    wr, wc, wh, ww = clamp_window(h, w, row, col, size)
    if max(r1 - r0, c1 - c0) <= size:
        assert wr <= r0 and r1 <= wr + wh and wc <= c0 and c1 <= wc + ww


def test_zoom_window_picks_a_small_window_for_a_small_box():
    size, row, col = zoom_window((500, 600, 540, 640), 3000, 3000)
    assert size == 256
    wr, wc, _, _ = clamp_window(3000, 3000, row, col, size)
    assert wr <= 500 and 540 <= wr + 256 and wc <= 600 and 640 <= wc + 256
    with pytest.raises(ValueError, match="outside"):
        zoom_window((0, 0, 0, 5), 10, 10)
