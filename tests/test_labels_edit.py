"""Tests of seghz.labels_edit: canvas strokes -> class-index label edits (pure numpy)."""
from __future__ import annotations

import numpy as np
import pytest

from seghz.labels_edit import (
    MAX_WINDOW,
    agreement,
    apply_strokes,
    blend_overlay,
    canvas_scale,
    clamp_window,
    count_painted,
    offset_slider_max,
    offset_step,
    rebase_edit,
    resize_nearest,
    stroke_mask,
    window_options,
)


def rgba_with(h: int, w: int, box: tuple[int, int, int, int], alpha: int = 255) -> np.ndarray:
    """A transparent h×w RGBA canvas with an opaque red box (r0, r1, c0, c1)."""
    a = np.zeros((h, w, 4), np.uint8)
    r0, r1, c0, c1 = box
    a[r0:r1, c0:c1] = (255, 0, 0, alpha)
    return a


def test_apply_strokes_same_size_sets_only_painted_pixels_and_copies():
    label = np.full((20, 30), 2, np.uint8)
    label[0, 0] = 255
    rgba = rgba_with(10, 10, (2, 5, 3, 7))
    out = apply_strokes(label, rgba, 5, (4, 6, 10, 10))
    expected = label.copy()
    expected[6:9, 9:13] = 5
    np.testing.assert_array_equal(out, expected)
    assert out is not label and label[6, 9] == 2  # input untouched
    assert out.dtype == np.uint8


def test_apply_strokes_scales_a_smaller_canvas_to_the_window():
    label = np.zeros((100, 100), np.uint8)
    rgba = rgba_with(50, 50, (10, 20, 0, 50))  # canvas at half scale: rows 10..19 -> window rows 20..39
    out = apply_strokes(label, rgba, 3, (0, 0, 100, 100))
    rows = np.nonzero((out == 3).any(1))[0]
    assert rows.min() == 20 and rows.max() == 39
    assert (out[20:40] == 3).all() and (out[:20] == 0).all() and (out[40:] == 0).all()


def test_apply_strokes_scales_a_larger_canvas_to_the_window():
    label = np.zeros((64, 64), np.uint8)
    rgba = rgba_with(256, 256, (40, 80, 0, 256))  # 4× canvas: centres 4i+2 in 40..79 -> rows 10..19
    out = apply_strokes(label, rgba, 1, (0, 0, 64, 64))
    np.testing.assert_array_equal(np.nonzero((out == 1).any(1))[0], np.arange(10, 20))


def test_alpha_zero_is_not_painted_and_threshold_is_respected():
    label = np.zeros((8, 8), np.uint8)
    rgba = rgba_with(8, 8, (0, 4, 0, 8), alpha=10)
    rgba[:, :, :3] = 255  # colour without alpha must not count
    assert (apply_strokes(label, rgba, 4, (0, 0, 8, 8))[:4] == 4).all()
    assert (apply_strokes(label, rgba, 4, (0, 0, 8, 8))[4:] == 0).all()
    assert (apply_strokes(label, rgba, 4, (0, 0, 8, 8), alpha_threshold=128) == 0).all()


def test_none_canvas_changes_nothing_and_ignore_class_allowed():
    label = np.ones((5, 5), np.uint8)
    np.testing.assert_array_equal(apply_strokes(label, None, 3, (0, 0, 5, 5)), label)
    out = apply_strokes(label, rgba_with(5, 5, (0, 1, 0, 5)), 255, (0, 0, 5, 5), num_classes=7)
    assert (out[0] == 255).all() and (out[1:] == 1).all()


@pytest.mark.parametrize("ci", [-1, 7, 254, 256])
def test_bad_class_index_raises(ci):
    with pytest.raises(ValueError, match="class index"):
        apply_strokes(np.zeros((4, 4), np.uint8), rgba_with(4, 4, (0, 1, 0, 1)), ci, (0, 0, 4, 4), num_classes=7)


@pytest.mark.parametrize("window", [(0, 0, 5, 4), (-1, 0, 2, 2), (0, 3, 2, 2), (0, 0, 0, 2)])
def test_window_outside_label_raises(window):
    with pytest.raises(ValueError, match="window"):
        apply_strokes(np.zeros((4, 4), np.uint8), None, 1, window)


def test_non_rgba_canvas_raises():
    with pytest.raises(ValueError, match="RGBA"):
        stroke_mask(np.zeros((4, 4, 3), np.uint8), 4, 4)
    assert count_painted(np.zeros((4, 4, 3), np.uint8)) == 0
    assert count_painted(None) == 0
    assert count_painted(rgba_with(4, 4, (0, 2, 0, 2))) == 4


def test_canvas_scale():
    assert canvas_scale(1024, 1024, 768) == (768, 768, 0.75)
    assert canvas_scale(512, 1024, 768) == (384, 768, 0.75)
    assert canvas_scale(300, 200, 768) == (300, 200, 1.0)
    assert canvas_scale(128, 128, 768, min_display=512) == (512, 512, 4.0)
    assert canvas_scale(128, 64, 768, min_display=512)[:2] == (512, 256)
    with pytest.raises(ValueError):
        canvas_scale(0, 10)


def test_clamp_window_and_options():
    assert clamp_window(5000, 3000, 4900, 10, 1024) == (5000 - 1024, 10, 1024, 1024)
    assert clamp_window(100, 200, 50, 150, 1024) == (0, 0, 100, 200)
    assert clamp_window(4000, 4000, 0, 0, 5000)[2:] == (MAX_WINDOW, MAX_WINDOW)
    assert window_options(128, 100) == [128]
    assert window_options(5000, 300) == [256, 512, 768, 1024]
    assert window_options(600, 600) == [256, 512, 600]


def test_offset_slider_reaches_the_border():
    for ext in (0, 5, 63, 64, 100, 1000, 1023, 1024, 7000):
        step, top = offset_step(ext), offset_slider_max(ext)
        assert top >= ext and top % step == 0 and top - ext < step


def test_resize_nearest_identity_and_shape():
    m = np.arange(12).reshape(3, 4)
    np.testing.assert_array_equal(resize_nearest(m, 3, 4), m)
    assert resize_nearest(m, 6, 8).shape == (6, 8)
    assert resize_nearest(m, 6, 8)[5, 7] == 11


def test_rebase_edit_keeps_others_changes_and_reapplies_mine():
    base = np.zeros((4, 4), np.uint8)
    mine = base.copy()
    mine[0, :2] = 3
    theirs = base.copy()
    theirs[3, 3] = 5
    theirs[0, 0] = 6  # conflicting pixel: my edit wins
    out, n = rebase_edit(base, mine, theirs)
    assert n == 2
    assert out[0, 0] == 3 and out[0, 1] == 3 and out[3, 3] == 5
    with pytest.raises(ValueError):
        rebase_edit(base, mine, np.zeros((2, 2), np.uint8))


def test_blend_overlay_and_agreement():
    img = np.full((2, 2, 3), 100, np.uint8)
    col = np.full((2, 2, 3), 200, np.uint8)
    mask = np.array([[True, False], [False, False]])
    out = blend_overlay(img, col, 0.5, mask)
    assert out[0, 0, 0] == 150 and out[1, 1, 0] == 100
    assert agreement(np.array([1, 2, 3]), np.array([1, 0, 255])) == 0.5
    assert agreement(np.array([1]), np.array([255])) is None


def test_diff_layer_roundtrip_and_stroke_pixels():
    from seghz.labels_edit import apply_layer, colorize_status, diff_layer, stroke_pixels

    base = np.zeros((6, 8), np.uint8)
    edited = base.copy()
    edited[1, 2], edited[4, 7] = 3, 255
    idx, vals = diff_layer(base, edited)
    assert idx.tolist() == [1 * 8 + 2, 4 * 8 + 7] and vals.tolist() == [3, 255] and idx.dtype == np.int32
    np.testing.assert_array_equal(apply_layer(base, idx, vals), edited)
    with pytest.raises(ValueError, match="shape"):
        diff_layer(base, edited[:, 1:])
    px = stroke_pixels(rgba_with(4, 4, (0, 2, 0, 2)), (2, 3, 4, 4), (6, 8))
    assert px.shape == (6, 8) and px.sum() == 4 and px[2:4, 3:5].all()
    rgb, drawn = colorize_status(np.array([[0, 1], [2, 255]], np.uint8))
    assert drawn.tolist() == [[False, True], [True, True]] and rgb[0, 0].tolist() == [0, 0, 0]


def test_unreviewed_in_window_by_hand():
    from seghz.labels_edit import unreviewed_in_window

    status = np.array([[0, 1, 2, 0], [0, 0, 255, 0], [0, 0, 0, 0]], np.uint8)  # original, corrected, confirmed, ignored
    label = np.array([[1, 2, 3, 255], [1, 1, 255, 4], [0, 0, 0, 0]], np.uint8)
    got = unreviewed_in_window(status, label, (0, 0, 2, 4))
    assert got.tolist() == [[True, False, False, False], [True, True, False, True], [False, False, False, False]]
    pending = np.zeros_like(got)
    pending[1, 0] = True  # the unsaved edit sets this one: it is saved as an edit, not confirmed
    assert unreviewed_in_window(status, label, (0, 0, 2, 4), pending)[1].tolist() == [False, True, False, True]
    with pytest.raises(ValueError, match="does not lie inside"):
        unreviewed_in_window(status, label, (2, 0, 2, 4))


def test_box_on_canvas_outlines_a_box_inside_the_window_and_clips_it():
    from seghz.labels_edit import box_on_canvas

    # window rows 100..355, cols 200..455 at 2 canvas px per scene px; box rows 110..119, cols 210..229
    assert box_on_canvas((110, 210, 120, 230), (100, 200, 256, 256), 2.0, pad=3) == (17, 17, 62, 42)
    assert box_on_canvas((110, 210, 120, 230), (100, 200, 256, 256), 2.0, pad=0) == (20, 20, 59, 39)
    # partly outside: clipped to the canvas; wholly outside: None
    assert box_on_canvas((90, 190, 105, 205), (100, 200, 256, 256), 1.0) == (0, 0, 7, 7)
    assert box_on_canvas((0, 0, 50, 50), (100, 200, 256, 256), 1.0) is None
    assert box_on_canvas((350, 450, 400, 500), (100, 200, 256, 256), 0.5, pad=0) == (125, 125, 127, 127)
