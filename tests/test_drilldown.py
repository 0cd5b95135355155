"""Tests of seghz.drilldown: scheme views / matrix collapse, A→B window ranking, highlight thumbnails, review list."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from seghz import drilldown as dd
from seghz.classes import IGNORE, get_scheme, index_crosswalk
from seghz.metrics import confusion_matrix, scores


def test_scheme_views_follow_crosswalk_chain():
    assert dd.scheme_views("hz20") == ["hz20", "hz14", "hz11", "hz7"]
    assert dd.scheme_views("hz14") == ["hz14", "hz11", "hz7"]
    assert dd.scheme_views("hz7") == ["hz7"]


@pytest.mark.parametrize("dst", ["hz14", "hz11", "hz7"])
def test_collapse_confusion_equals_matrix_of_crosswalked_masks(dst):
    rng = np.random.default_rng(0)
    n = get_scheme("hz20").num_classes
    gt = rng.integers(0, n, (64, 64)).astype(np.uint8)
    gt[:3] = IGNORE
    pred = rng.integers(0, n, (64, 64)).astype(np.uint8)
    cm = confusion_matrix(pred, gt, n)
    lut = index_crosswalk("hz20", dst)
    # pixels whose label or prediction the crosswalk drops are dropped from the collapsed matrix
    g2, p2 = lut[gt], lut[pred]
    g2 = np.where(p2 == IGNORE, IGNORE, g2).astype(np.uint8)
    p2 = np.where(p2 == IGNORE, 0, p2).astype(np.uint8)
    expect = confusion_matrix(p2, g2, get_scheme(dst).num_classes)
    np.testing.assert_array_equal(dd.collapse_confusion(cm, "hz20", dst), expect)


def test_collapse_confusion_hand_sum():
    # hz11 -> hz7: sum every (i, j) into (lut[i], lut[j])
    n = get_scheme("hz11").num_classes
    cm = np.arange(n * n).reshape(n, n)
    lut = index_crosswalk("hz11", "hz7")
    out = dd.collapse_confusion(cm, "hz11", "hz7")
    for A in range(get_scheme("hz7").num_classes):
        for B in range(get_scheme("hz7").num_classes):
            assert out[A, B] == sum(cm[i, j] for i in range(n) for j in range(n) if lut[i] == A and lut[j] == B)
    assert dd.collapse_confusion(cm, "hz11", "hz11").tolist() == cm.tolist()


def test_collapse_result_rescores_and_collapses_per_scene():
    n = get_scheme("hz14").num_classes
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 50, (n, n)), rng.integers(0, 50, (n, n))
    r = scores(a + b, get_scheme("hz14").names)
    r.update(per_scene={"s1": a.tolist(), "s2": b.tolist()}, split="val", tta="none")
    v = dd.collapse_result(r, "hz14", "hz7")
    assert v["classes"] == list(get_scheme("hz7").names) and v["split"] == "val"
    np.testing.assert_array_equal(np.asarray(v["per_scene"]["s1"]) + v["per_scene"]["s2"], v["confusion"])
    assert v["miou"] == pytest.approx(scores(dd.collapse_confusion(a + b, "hz14", "hz7"))["miou"])
    assert sum(v["freq_label"]) == pytest.approx(1) and dd.collapse_result(r, "hz14", "hz14") is r


def test_window_ranking_on_hand_made_pair():
    label = np.zeros((10, 12), np.uint8)
    pred = np.zeros((10, 12), np.uint8)
    # A=1 -> B=2: 3 px in window (0,0), 5 px in window (4,8) [edge window], 1 px in window (8,4)
    label[0:3, 0] = 1; pred[0:3, 0] = 2
    label[4:5, 8:12] = 1; pred[4:5, 8:12] = 2; label[5, 8] = 1; pred[5, 8] = 2
    label[9, 5] = 1; pred[9, 5] = 2
    label[1, 1] = 1; pred[1, 1] = 1    # correct: not counted
    label[2, 2] = 2; pred[2, 2] = 1    # B->A: not counted
    label[3, 3] = IGNORE; pred[3, 3] = 2
    m = dd.cell_mask(pred, label, 1, 2)
    assert m.sum() == 9
    w = dd.scene_windows("s", m, window=4)
    assert [(x.bbox, x.count) for x in w] == [((4, 8, 8, 12), 5), ((0, 0, 4, 4), 3), ((8, 4, 10, 8), 1)]
    other = np.zeros((4, 4), bool); other[:2, :2] = True  # 4 px
    ranked = dd.rank_windows({"s": m, "t": other}, window=4)
    assert [(x.scene_id, x.count) for x in ranked] == [("s", 5), ("t", 4), ("s", 3), ("s", 1)]
    assert len(dd.rank_windows({"s": m, "t": other}, window=4, limit=2)) == 2
    assert sum(x.count for x in ranked if x.scene_id == "s") == m.sum()


@pytest.mark.parametrize("seed", range(5))
def test_cell_mask_and_windows_property(seed):
    rng = np.random.default_rng(seed)
    h, w = rng.integers(5, 70, 2)
    label = rng.integers(0, 4, (h, w)).astype(np.uint8)
    label[rng.random((h, w)) < 0.1] = IGNORE
    pred = rng.integers(0, 4, (h, w)).astype(np.uint8)
    a, b = rng.integers(0, 4, 2)
    m = dd.cell_mask(pred, label, a, b)
    assert m.sum() == confusion_matrix(pred, label, 4)[a, b]
    assert np.array_equal(m, (label == a) & (pred == b))
    win = dd.scene_windows("x", m, window=16)
    assert sum(x.count for x in win) == m.sum()
    for x in win:
        r0, c0, r1, c1 = x.bbox
        assert m[r0:r1, c0:c1].sum() == x.count


def test_thumbnail_highlights_exactly_the_cell_pixels():
    rng = np.random.default_rng(3)
    scheme = get_scheme("hz7")
    image = rng.integers(0, 256, (20, 24, 3)).astype(np.uint8)
    image[0, 0] = (255, 0, 255)  # a magenta image pixel must not look highlighted
    label = rng.integers(0, scheme.num_classes, (20, 24)).astype(np.uint8)
    pred = rng.integers(0, scheme.num_classes, (20, 24)).astype(np.uint8)
    panels = dd.cell_panels(image, label, pred, 1, 3, scheme)
    assert len(panels) == 4 and all(p.shape == (20, 24, 3) for p in panels)
    np.testing.assert_array_equal(panels[1], scheme.colorize(label))
    np.testing.assert_array_equal(panels[2], scheme.colorize(pred))
    thumb = dd.thumbnail(panels, gap=4)
    assert thumb.shape == (20, 4 * 24 + 3 * 4, 3)
    hl = thumb[:, 3 * 28: 3 * 28 + 24]
    got = np.all(hl == dd.HIGHLIGHT, axis=2)
    np.testing.assert_array_equal(got, (label == 1) & (pred == 3))
    np.testing.assert_array_equal(thumb[:, :24], image)


def test_cell_panels_in_collapsed_view():
    scheme = get_scheme("hz7")
    lut = dd.view_lut("hz11", "hz7")
    n11 = get_scheme("hz11").num_classes
    rng = np.random.default_rng(4)
    label = rng.integers(0, n11, (16, 16)).astype(np.uint8)
    pred = rng.integers(0, n11, (16, 16)).astype(np.uint8)
    panels = dd.cell_panels(np.zeros((16, 16, 3), np.uint8), label, pred, 0, 1, scheme, lut)
    np.testing.assert_array_equal(np.all(panels[3] == dd.HIGHLIGHT, axis=2), (lut[label] == 0) & (lut[pred] == 1))


def test_scenes_with_cell():
    r = {"per_scene": {"a": [[1, 2], [0, 1]], "b": [[1, 5], [0, 0]], "c": [[3, 0], [1, 0]]}}
    assert dd.scenes_with_cell(r, 0, 1) == [("b", 5), ("a", 2)]
    assert dd.scenes_with_cell(r, 1, 1) == [("a", 1)]


def test_map_location_with_and_without_transform():
    s = SimpleNamespace(id="sc", transform=None, crs=None)
    assert dd.map_location(s, (0, 10, 256, 266)) == "scene `sc` rows 0–255, cols 10–265"  # first–last, as the Map page
    g = SimpleNamespace(id="sc", transform=(0.5, 0, 100, 0, -0.5, 200), crs="EPSG:32650")
    assert "bbox (105, 72, 233, 200) EPSG:32650" in dd.map_location(g, (0, 10, 256, 266))


def test_map_location_keeps_web_mercator_coordinates_to_the_pixel():
    # the demo scenes: EPSG:3857 at ~1 m/px around x = 1.3368e7 m; six significant digits ("1.33678e+07") were ±50 m
    g = SimpleNamespace(id="demo", transform=(0.29, 0, 13367512.34, 0, -0.29, 3540581.27), crs="EPSG:3857")
    txt = dd.map_location(g, (256, 512, 512, 768))
    assert "e+0" not in txt
    assert "bbox (13367660.82, 3540432.79, 13367735.06, 3540507.03) EPSG:3857" in txt
    deg = SimpleNamespace(id="wgs", transform=(1e-5, 0, 120.123456789, 0, -1e-5, 30.2), crs="EPSG:4326")
    assert "bbox (120.123457, 30.19744, 120.125017, 30.2) EPSG:4326" in dd.map_location(deg, (0, 0, 256, 156))
    # a coordinate that rounds to zero from below is "0", not "-0"
    tiny = SimpleNamespace(id="t", transform=(1.0, 0, -0.01, 0, -1.0, 10.0), crs="EPSG:32650")
    assert "bbox (0, 6, 4, 10) EPSG:32650" in dd.map_location(tiny, (0, 0, 4, 4))


def test_a_window_sent_again_by_another_checkpoint_becomes_its_confusion(tmp_path):
    """Re-sent by the checkpoint already recorded, a window is left alone (reviewed stays reviewed); re-sent by
    another checkpoint, it is recorded for that one, pending again, with the earlier send kept."""
    ws = SimpleNamespace(root=tmp_path)
    w, other = dd.Window("s", (0, 0, 256, 256), 40), dd.Window("s", (256, 0, 512, 256), 9)
    kw = {"true_class": "Water", "pred_class": "Road", "scheme": "hz7", "analyst": "ann"}
    assert dd.send_to_review(ws, [w, other], checkpoint_id="old", checkpoint_name="old model", **kw) == \
        dd.ReviewSend(added=2)
    first = dd.load_review_list(ws)
    assert dd.set_review_status(ws, first[0], "reviewed", "bo")
    # the same model again: nothing changes, the reviewed window stays reviewed
    same = dd.send_to_review(ws, [w, other], checkpoint_id="old", **kw)
    assert same == dd.ReviewSend(unchanged=2) and same.text() == "0 added, 2 already listed for this model"
    assert [e["status"] for e in dd.load_review_list(ws)] == ["reviewed", "pending"]
    # a newer model makes the same confusion in both windows, and in a third
    third = dd.Window("s", (0, 256, 256, 512), 3)
    again = dd.send_to_review(ws, [dd.Window("s", w.bbox, 55), other, third], checkpoint_id="new",
                              checkpoint_name="new model", tta="d4", **{**kw, "analyst": "cy"})
    assert again == dd.ReviewSend(added=1, refreshed=1, reopened=1)
    assert again.text() == ("1 added, 1 still pending, now recorded for this model, "
                            "1 reviewed for another model, re-opened for this one")
    items = dd.load_review_list(ws)
    assert len(items) == 3
    assert [(e["checkpoint_id"], e["status"], e["count"], e["analyst"]) for e in items] == \
        [("new", "pending", 55, "cy"), ("new", "pending", 9, "cy"), ("new", "pending", 3, "cy")]
    assert "reviewed_by" not in items[0] and items[0]["tta"] == "d4" and items[0]["checkpoint_name"] == "new model"
    assert [(x["checkpoint_id"], x["status"], x["count"], x.get("reviewed_by")) for x in items[0]["earlier"]] == \
        [("old", "reviewed", 40, "bo")]
    assert items[1]["earlier"][0]["status"] == "pending" and "earlier" not in items[2]
    assert drilldown_summary_names(items) == ["new model"] * 3
    # the Labels page lists all three again, for the newer model
    assert [e["count"] for e in dd.pending_reviews(ws, "s")] == [55, 9, 3]
    # an add that changes nothing does not rewrite the file
    before = dd.review_list_path(ws).stat().st_mtime_ns
    assert dd.add_to_review_list(ws, [other], checkpoint_id="new", **kw) == 0
    assert dd.review_list_path(ws).stat().st_mtime_ns == before


def drilldown_summary_names(items):
    return [dd.review_checkpoint_label(e) for e in items]


def test_review_list_is_appended_atomically_and_deduplicated(tmp_path):
    ws = SimpleNamespace(root=tmp_path)
    w1, w2 = dd.Window("s", (0, 0, 256, 256), 40), dd.Window("s", (256, 0, 512, 256), 7)
    kw = {"true_class": "Water", "pred_class": "Road", "scheme": "hz7", "checkpoint_id": "ck", "analyst": "ann"}
    assert dd.add_to_review_list(ws, [w1, w2], **kw) == 2
    assert dd.add_to_review_list(ws, [w1], **kw) == 0
    assert dd.add_to_review_list(ws, [w1], **{**kw, "pred_class": "Forest"}) == 1
    items = json.loads(dd.review_list_path(ws).read_text())
    assert len(items) == 3 and items[0]["bbox"] == [0, 0, 256, 256] and items[0]["count"] == 40
    assert items[0]["true"] == "Water" and items[0]["analyst"] == "ann" and items[0]["status"] == "pending"
    assert dd.load_review_list(ws) == items
    assert not [p for p in dd.review_list_path(ws).parent.iterdir() if p.name.endswith(".tmp")]
    # the Labels page's view: a scene's pending entries, largest first; marking one reviewed takes it out
    assert [e["count"] for e in dd.pending_reviews(ws, "s")] == [40, 40, 7] and dd.pending_reviews(ws, "other") == []
    assert dd.set_review_status(ws, items[1], "reviewed", "bo") is True
    assert [e["count"] for e in dd.pending_reviews(ws, "s")] == [40, 40]
    assert dd.load_review_list(ws)[1]["reviewed_by"] == "bo"
    assert dd.set_review_status(ws, {**items[1], "bbox": [1, 2, 3, 4]}, "reviewed") is False
    with pytest.raises(ValueError, match="review status"):
        dd.set_review_status(ws, items[0], "done")


def test_cell_from_selection_event():
    ev = {"selection": {"points": [{"x": 2, "y": 1, "z": 5}], "box": [], "lasso": []}}
    assert dd.cell_from_selection(ev, 3) == (1, 2)
    assert dd.cell_from_selection(ev, 2) is None  # outside the matrix
    assert dd.cell_from_selection({"selection": {"points": []}}, 3) is None
    assert dd.cell_from_selection(None, 3) is None
    assert dd.cell_from_selection({"selection": {"points": [{"x": "a", "y": 0}]}}, 3) is None


def test_largest_confusion_skips_the_diagonal():
    from seghz.drilldown import largest_confusion

    cm = np.array([[90, 3, 1], [7, 80, 2], [0, 5, 70]])
    assert largest_confusion(cm) == (1, 0)


def test_pick_cell_follows_a_new_evaluation():
    """The drill-down cell when the evaluation changes (another checkpoint, split, TTA, view): the page's own pick and
    a cell without pixels move to the new largest confusion; an analyst's pick with pixels stays."""
    names = ["Water", "Road", "Forest", "Field"]
    old = np.diag([50, 50, 50, 50])
    old[3, 1] = 40  # Field -> Road, the old largest
    old[0, 2] = 5
    new = np.diag([50, 50, 50, 50])
    new[2, 0] = 30  # Forest -> Water, the new largest; Field -> Road has no pixels in the new matrix
    new[0, 2] = 7
    assert dd.pick_cell(old, names, (None, None)) == ("Field", "Road", True)  # first visit: the largest
    # same evaluation: whatever is shown stays (an empty cell the analyst chose too)
    assert dd.pick_cell(old, names, ("Field", "Road"), auto=("Field", "Road")) == ("Field", "Road", True)
    assert dd.pick_cell(old, names, ("Road", "Water"), auto=("Field", "Road")) == ("Road", "Water", False)
    # another evaluation: the automatic pick follows, although it may still have pixels
    assert dd.pick_cell(new, names, ("Field", "Road"), auto=("Field", "Road"), changed=True) == ("Forest", "Water", True)
    new_with = new.copy()
    new_with[3, 1] = 3
    assert dd.pick_cell(new_with, names, ("Field", "Road"), auto=("Field", "Road"), changed=True) == \
        ("Forest", "Water", True)
    # the analyst's pick: kept where it has pixels, replaced where it has none
    assert dd.pick_cell(new, names, ("Water", "Forest"), auto=("Field", "Road"), changed=True) == \
        ("Water", "Forest", False)
    assert dd.pick_cell(new, names, ("Road", "Water"), auto=("Field", "Road"), changed=True) == ("Forest", "Water", True)
    assert dd.pick_cell(new, names, ("Field", "Road"), auto=None, changed=True) == ("Forest", "Water", True)
    # classes of another scheme view: the largest
    assert dd.pick_cell(new, names, ("Buildings", "Road"), auto=None) == ("Forest", "Water", True)


def test_map_jump_carries_the_evaluated_checkpoint():
    w = dd.Window("s1", (np.int64(0), 256, 256, 512), 36756)
    jump = dd.map_jump(w, checkpoint_id="gid15_hz7_unet_lite0", checkpoint_name="gid15 unet",
                       why="Forest predicted as Green_land")
    assert jump == {"scene_id": "s1", "bbox": (0, 256, 256, 512), "layer": "error",
                    "why": "Forest predicted as Green_land", "checkpoint_id": "gid15_hz7_unet_lite0",
                    "checkpoint_name": "gid15 unet", "tta": "none"}
    assert all(type(v) is int for v in jump["bbox"])
    assert dd.map_jump(w, checkpoint_id="x")["checkpoint_name"] == "x"


def test_map_jump_carries_the_evaluations_tta_and_cell():
    """The Map predicted a d4 drill-down with TTA none and showed every error: the jump now carries both."""
    w = dd.Window("s1", (0, 0, 256, 256), 194)
    jump = dd.map_jump(w, checkpoint_id="demo_hz7", tta="d4", cell=("Green_land", "OpenArea", "hz7"))
    assert jump["tta"] == "d4"
    assert jump["cell"] == {"true": "Green_land", "predicted": "OpenArea", "scheme": "hz7"}
    json.dumps(jump)  # plain data (session state)


def test_jump_cell_mask_is_exactly_the_cell_in_native_and_collapsed_views():
    rng = np.random.default_rng(3)
    hz20, hz7 = get_scheme("hz20"), get_scheme("hz7")
    pred = rng.integers(0, hz20.num_classes, (40, 50)).astype(np.uint8)
    label = rng.integers(0, hz20.num_classes, (40, 50)).astype(np.uint8)
    label[:3] = IGNORE
    pred[-2:] = IGNORE  # outside a drawn polygon
    a, b = hz20.names[2], hz20.names[5]
    got = dd.jump_cell_mask(pred, label, "hz20", {"true": a, "predicted": b, "scheme": "hz20"})
    assert np.array_equal(got, (label == 2) & (pred == 5))
    # a collapsed view: counted as the Evaluate drill-down counts it (both mapped through the crosswalk)
    lut = index_crosswalk("hz20", "hz7")
    ok = (lut[pred] != IGNORE) & (lut[label] != IGNORE)
    cm = confusion_matrix(lut[pred][ok], lut[label][ok], hz7.num_classes)
    ia, ib = dd.largest_confusion(cm)
    cell = {"true": hz7.names[ia], "predicted": hz7.names[ib], "scheme": "hz7"}
    got = dd.jump_cell_mask(pred, label, "hz20", cell)
    want = (lut[label] == ia) & (lut[pred] == ib) & (label != IGNORE) & (lut[label] != IGNORE)
    assert got.sum() > 0 and np.array_equal(got, want)
    assert np.array_equal(got, dd.cell_mask(pred, label, ia, ib, dd.view_lut("hz20", "hz7")))
    with pytest.raises(KeyError):
        dd.jump_cell_mask(pred, label, "hz20", {"true": "Nope", "predicted": b, "scheme": "hz20"})


def test_highlight_rings_thin_errors_without_touching_the_exact_pixels():
    img = np.full((256, 256, 3), 200, np.uint8)
    mask = np.zeros((256, 256), bool)
    mask[100, 50:150] = True  # a 1-px boundary error
    out = dd.highlight_panel(img, mask)
    exact = np.all(out == dd.HIGHLIGHT, axis=2)
    ring = np.all(out == dd.HALO, axis=2)
    np.testing.assert_array_equal(exact, mask)
    assert not (ring & mask).any()
    assert ring[98:100, 50:150].all() and ring[101:103, 50:150].all()  # 2 px each side at 256 px
    assert not ring[:97].any() and not ring[104:].any()
    assert (out[~(ring | mask)] == 100).all()  # the rest: the image darkened to half
    assert dd.HALO != dd.HIGHLIGHT and max(dd.HALO) < 255


def test_review_jump_opens_the_map_as_the_evaluate_drilldown_did(tmp_path):
    """A window sent for review opens on the Map with the checkpoint whose errors were sent, the TTA of the
    evaluation it came from and its A → B cell: the same request as Evaluate's own "Open on map"."""
    ws = SimpleNamespace(root=tmp_path)
    w = dd.Window("s", (0, 256, 256, 512), 40)
    dd.add_to_review_list(ws, [w], true_class="Water", pred_class="Road", scheme="hz7", checkpoint_id="ck",
                          analyst="ann", tta="d4")
    (entry,) = dd.load_review_list(ws)
    assert entry["tta"] == "d4"
    jump = dd.review_jump(entry, checkpoint_name="model A")
    direct = dd.map_jump(w, checkpoint_id="ck", checkpoint_name="model A", why="Water predicted as Road", tta="d4",
                         cell=("Water", "Road", "hz7"), role="the checkpoint whose errors were sent")
    assert jump == direct
    assert jump["bbox"] == (0, 256, 256, 512) and jump["cell"] == {"true": "Water", "predicted": "Road", "scheme": "hz7"}
    old = {k: v for k, v in entry.items() if k != "tta"}  # an entry written before the field existed
    assert dd.review_jump(old)["tta"] == "none" and dd.review_jump(old)["checkpoint_name"] == "ck"
    assert "checkpoint_role" not in dd.map_jump(w, checkpoint_id="ck")  # the Map's own default wording then
