"""Label edits are never silently lost or overwritten when several analysts (or tabs) work on one scene.

Review findings reproduced in /tmp/rev3 (r1_rebase.py, pw2.py, pw3.py, r5_queue_rerank.py, r6_undo.py):

1. "Re-apply my edit on the latest version" took over pixels saved since by someone else (and a pixel the analyst had
   only confirmed reverted the other's correction), saying only "Re-applied your N edited pixel(s)".
2. A stroke painted just after another analyst saved vanished: the page decided on the saved version before the canvas
   was drawn, from the strokes of the run before (``lbl_strokes``), and gave the canvas a new key.
3. A noise-queue verdict clicked on a card of a queue rebuilt since was applied to the new queue's item with the same
   box, with the new queue's predictions.
4. Undo / Redo acted on the analyst's newest version at click time, not on the one the button named.

Same prepared workspace and fake canvas as tests/test_pages.py and tests/test_page_labels_loop.py.
"""
from __future__ import annotations

import base64
import dataclasses
import io
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest
from test_page_labels_loop import FakeCanvas
from test_pages import HZ7, app, assert_ok, tiny_checkpoint, ws  # noqa: F401  (fixtures)

import ui.common
from seghz.errors import ConflictError
from seghz.labels_edit import kept_by_version, rebase_keeping_theirs, touched_mask, touched_since

STROKE = (slice(10, 20), slice(0, 40))  # label pixels of FakeCanvas's stroke (canvas rows 40..79, cols 0..159 at 4×)
W = 128  # scene width of the prepared workspace


def start(ws, monkeypatch, analyst: str = "Bob") -> tuple[AppTest, FakeCanvas, str]:  # noqa: F811
    cv = FakeCanvas()
    monkeypatch.setattr(ui.common, "canvas", cv)
    at = app("pages/3_Labels.py").run()
    sid = at.selectbox(key="lbl_scene").value
    at.sidebar.text_input(key="seghz_analyst").input(analyst).run()
    assert_ok(at)
    return at, cv, sid


def msgs(at: AppTest) -> str:
    return "\n".join(str(e.value) for kind in ("success", "info", "warning", "error") for e in getattr(at, kind))


def flat(rows: slice, cols: slice) -> np.ndarray:
    m = np.zeros((W, W), bool)
    m[rows, cols] = True
    return np.flatnonzero(m)


def other_class(*avoid: int) -> int:
    return next(c for c in range(HZ7.num_classes) if c not in avoid)


# ------------------------------------------------------------------------------------------------ 1. rebase


def test_rebase_keeping_theirs_keeps_pixels_saved_since_and_counts_them():
    base = np.zeros((4, 4), np.uint8)
    edited = base.copy()
    edited[0, :3] = 3  # my corrections
    painted = edited != base
    painted[1, 0] = True  # confirmed: painted with the class it held (0)
    latest = base.copy()
    latest[0, 0] = 6  # they corrected one of my pixels
    latest[1, 0] = 5  # ... and the pixel I only confirmed
    latest[0, 1] = 3  # ... and set another of mine to my class
    latest[3, 3] = 2  # ... and one I never touched
    theirs = latest != base
    rb = rebase_keeping_theirs(base, edited, painted, latest, theirs)
    assert rb.mask[0, 0] == 6 and rb.mask[1, 0] == 5  # theirs kept, the confirmation does not revert their 5
    assert rb.mask[0, 2] == 3 and rb.mask[3, 3] == 2 and rb.mask[0, 1] == 3
    assert rb.painted.sum() == 1 and rb.painted[0, 2]  # only my untouched pixel stays in the edit
    assert rb.kept.sum() == 2 and rb.kept[0, 0] and rb.kept[1, 0]
    assert rb.agreed.sum() == 1 and rb.agreed[0, 1]
    assert rb.overwritable.sum() == 1 and rb.overwritable[0, 0]  # not the confirm-only pixel
    assert rb.values[0, 0] == 3


def test_touched_since_names_versions_and_undos(ws):  # noqa: F811
    sid = ws.list_scenes()[0].id
    lbl = ws.effective_label(sid, 0)
    a = flat(slice(0, 2), slice(0, 5))
    v1 = ws.save_label_edit(sid, 0, "Ann", "brush", pixels=a, values=other_class(*np.unique(lbl.ravel()[a])))
    v2 = ws.save_label_edit(sid, v1, "Cy", "brush", confirm=flat(slice(5, 6), slice(0, 3)))
    v3 = ws.undo_label_edit(sid, "Ann")
    touches = touched_since(ws, sid, 0, v3)
    assert [(t.version, t.analyst, t.what) for t in touches] == [(v1, "Ann", "saved"), (v2, "Cy", "saved"),
                                                                (v3, "Ann", "undo of v1")]
    mask = touched_mask(touches, lbl.shape)
    assert mask.sum() == a.size + 3
    kept = np.zeros(lbl.shape, bool)
    kept.ravel()[a[:4]] = True
    kept[5, 0] = True
    assert [(t.version, n) for t, n in kept_by_version(touches, kept)] == [(v2, 1), (v3, 4)]  # newest toucher
    assert touched_since(ws, sid, v1, v2)[0].version == v2


def rebase_setup(ws, monkeypatch):  # noqa: F811
    """Bob paints STROKE with class X (some of its pixels already hold X: confirmed); meanwhile Ann saves Y on pixels
    of the stroke, some changed by Bob, some only confirmed by him."""
    at, cv, sid = start(ws, monkeypatch, "Bob")
    original = ws.effective_label(sid, 0)
    block = original[STROKE]
    x = int(np.bincount(block.ravel()).argmax())  # the stroke's class: its most common one (those px are confirmed)
    y = other_class(*np.unique(block))
    at.selectbox(key="lbl_class").set_value(x).run()
    cv.paint(at)
    at.button(key="lbl_apply").click().run()
    assert_ok(at)
    ann = np.zeros(original.shape, bool)
    ann[12:14, 0:40] = True  # inside the stroke: both pixels Bob changed and pixels he only confirmed
    ann[40:42, 40:42] = True  # outside it
    assert (original[ann & (np.arange(W) < 40)[None, :]] == x).any() and (original[12:14, 0:40] != x).any()
    v1 = ws.save_label_edit(sid, 0, "Ann", "brush", pixels=ann, values=y)
    return at, cv, sid, original, ann, x, y, v1


def test_rebase_keeps_another_analysts_saved_pixels_and_says_so(ws, monkeypatch):  # noqa: F811
    at, _cv, sid, original, ann, x, y, v1 = rebase_setup(ws, monkeypatch)
    at.button(key="lbl_save").click().run()  # overlaps Ann's save: refused, the edit is kept
    assert_ok(at)
    assert "someone saved this scene first" in msgs(at) and ws.latest_label_version(sid) == v1
    at.button(key="lbl_rebase").click().run()
    assert_ok(at)
    n_kept = int((ann[STROKE]).sum())  # Ann's pixels in Bob's stroke: all hold y now, Bob gave them x
    text = msgs(at)
    assert f"Kept {n_kept:,} pixel(s) as saved since version 0" in text, text
    assert f"v{v1} by 'Ann' ({n_kept:,} px)" in text
    confirmed_only = int((ann[STROKE] & (original[STROKE] == x)).sum())
    assert f"{confirmed_only:,} of them you had only confirmed" in text
    assert at.button(key="lbl_rebase_overwrite").label == f"Overwrite these {n_kept - confirmed_only:,} pixel(s) with my edit"
    at.button(key="lbl_save").click().run()
    assert_ok(at)
    assert ws.latest_label_version(sid) == v1 + 1
    final = ws.effective_label(sid)
    assert (final[ann] == y).all()  # Ann's correction survives Bob's re-applied edit, confirmed pixels included
    mine = np.zeros(original.shape, bool)
    mine[STROKE] = True
    assert (final[mine & ~ann] == x).all()  # the rest of Bob's edit is saved
    assert ws.label_history(sid)[-1].analyst == "Bob"


def test_rebase_overwrite_is_explicit_counted_and_recorded(ws, monkeypatch):  # noqa: F811
    at, _cv, sid, original, ann, x, y, v1 = rebase_setup(ws, monkeypatch)
    at.run()  # the page finds version 1: the stale-edit notice
    assert "Your unsaved edit (400 px) started from label version 0" in msgs(at)
    at.button(key="lbl_rebase").click().run()  # straight from that notice, without a refused save first
    assert_ok(at)
    over = ann.copy()
    over[:, 40:] = False
    over &= original != x  # pixels Bob changed (not only confirmed) that Ann set since
    at.button(key="lbl_rebase_overwrite").click().run()
    assert_ok(at)
    assert f"Your edit now overwrites {int(over.sum()):,} pixel(s) saved since version 0 (v{v1} by 'Ann'" in msgs(at)
    at.button(key="lbl_save").click().run()
    assert_ok(at)
    final = ws.effective_label(sid)
    assert (final[over] == x).all()
    assert (final[ann & ~over] == y).all()  # the pixels Bob only confirmed still hold Ann's correction
    assert "rebase-overwrite" in ws.label_history(sid)[-1].tool


def test_rebase_of_a_restored_old_draft_keeps_pixels_saved_since(ws, monkeypatch):  # noqa: F811
    """The same re-apply reached from a draft restored after a reload: its base is old, and Ann saved since."""
    from seghz import drafts as dft

    _at, cv, sid, original, ann, x, y, _v1 = rebase_setup(ws, monkeypatch)  # Bob's applied edit is kept as a draft
    assert dft.read_draft(dft.draft_path(ws.root, "Bob", sid)).pixels == 400
    cv.leave()
    fresh = app("pages/3_Labels.py").run()  # a reload: a new session
    fresh.sidebar.text_input(key="seghz_analyst").input("Bob").run()
    fresh.button(key=f"lbl_draft_restore_{dft.analyst_folder('Bob')}").click().run()
    assert_ok(fresh)
    fresh.button(key="lbl_rebase").click().run()
    assert_ok(fresh)
    assert f"Kept {int(ann[STROKE].sum()):,} pixel(s) as saved since version 0" in msgs(fresh)
    fresh.button(key="lbl_save").click().run()
    assert_ok(fresh)
    final = ws.effective_label(sid)
    assert (final[ann] == y).all()
    mine = np.zeros(original.shape, bool)
    mine[STROKE] = True
    assert (final[mine & ~ann] == x).all()


# ------------------------------------------------------------------------------------------------ 2. strokes


def browser_stroke(at: AppTest, cv: FakeCanvas, *blocks: tuple[slice, slice]) -> None:
    """What the browser does when the analyst paints on the canvas drawn in the last run: the component's new value
    (its drawing, holding every stroke on it: ``blocks`` in canvas pixels) is in the session state under its key when
    the page runs, *before* the page draws the canvas; drawn again under the same key, the canvas returns it."""
    kw = cv.calls[-1]
    rgba = np.zeros((kw["height"], kw["width"], 4), np.uint8)
    for rows, cols in blocks:
        rgba[rows, cols] = (255, 0, 0, 255)
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    drawing = {"objects": [{"type": "path"}] * len(blocks)}
    at.session_state[kw["key"]] = {"drawing": {"raw": drawing, "data": url}, "backgroundFit": None}
    cv.sent[kw["key"]] = SimpleNamespace(image_data=rgba, json_data=drawing)


CANVAS_STROKE = (slice(40, 80), slice(0, 160))  # = STROKE in label pixels
CANVAS_STROKE_2 = (slice(200, 240), slice(0, 160))  # label rows 50..59, columns 0..39


def test_a_stroke_painted_after_another_analyst_saved_is_kept(ws, monkeypatch):  # noqa: F811
    at, cv, sid = start(ws, monkeypatch, "Bob")
    original = ws.effective_label(sid, 0)
    cls = other_class(*np.unique(original[STROKE]), *np.unique(original[50:60, 0:40]))
    at.selectbox(key="lbl_class").set_value(cls).run()
    far = flat(slice(100, 102), slice(100, 102))  # Ann saves elsewhere meanwhile
    v1 = ws.save_label_edit(sid, 0, "Ann", "brush", pixels=far, values=other_class(*np.unique(original.ravel()[far])))
    browser_stroke(at, cv, CANVAS_STROKE)  # Bob's stroke: the run it triggers finds version 1
    at.run()
    assert_ok(at)
    text = msgs(at)
    assert "Your unsaved edit (400 px) started from label version 0" in text, text
    assert "Showing label version" not in text
    at.button(key="lbl_save").click().run()
    assert_ok(at)
    assert "merged on top of version 1" in msgs(at)
    final = ws.effective_label(sid)
    assert (final[STROKE] == cls).all() and ws.latest_label_version(sid) == v1 + 1


def test_a_second_stroke_painted_after_another_analyst_saved_is_kept(ws, monkeypatch):  # noqa: F811
    """Unapplied strokes on the canvas, another analyst saves, and the next stroke: applying the strokes of the run
    before (without the newest) and giving the canvas a new key lost the newest one."""
    at, cv, sid = start(ws, monkeypatch, "Bob")
    original = ws.effective_label(sid, 0)
    cls = other_class(*np.unique(original[STROKE]), *np.unique(original[50:60, 0:40]))
    at.selectbox(key="lbl_class").set_value(cls).run()
    browser_stroke(at, cv, CANVAS_STROKE)
    at.run()
    assert any("not yet applied: 6400 canvas px" in c.value for c in at.caption)
    ws.save_label_edit(sid, 0, "Ann", "brush", pixels=flat(slice(100, 101), slice(100, 101)),
                       values=other_class(int(original[100, 100])))
    browser_stroke(at, cv, CANVAS_STROKE, CANVAS_STROKE_2)  # the canvas holds both strokes now
    at.run()
    assert_ok(at)
    assert "Your unsaved edit (800 px) started from label version 0" in msgs(at)
    at.button(key="lbl_save").click().run()
    assert_ok(at)
    final = ws.effective_label(sid)
    assert (final[STROKE] == cls).all() and (final[50:60, 0:40] == cls).all()


def test_save_clicked_right_after_a_stroke_saves_that_stroke(ws, monkeypatch):  # noqa: F811
    """The browser sends the canvas's new value with the click: the save's callback runs before the page draws the
    canvas, so it must read the canvas's value, not the strokes of the run before."""
    at, cv, sid = start(ws, monkeypatch, "Bob")
    original = ws.effective_label(sid, 0)
    cls = other_class(*np.unique(original[STROKE]), *np.unique(original[50:60, 0:40]))
    at.selectbox(key="lbl_class").set_value(cls).run()
    browser_stroke(at, cv, CANVAS_STROKE)
    at.run()
    browser_stroke(at, cv, CANVAS_STROKE, CANVAS_STROKE_2)
    at.button(key="lbl_save").click().run()
    assert_ok(at)
    final = ws.effective_label(sid)
    assert (final[STROKE] == cls).all() and (final[50:60, 0:40] == cls).all()


# ------------------------------------------------------------------------------------------------ 3. queue


def test_a_verdict_on_a_card_of_a_rebuilt_queue_is_refused(ws, monkeypatch):  # noqa: F811
    from seghz.review import queue as rq
    from seghz.store import now_iso

    at, _cv, sid = start(ws, monkeypatch, "Ann")
    at.slider(key="lbl_q_threshold").set_value(0.05).run()
    at.checkbox(key=f"lbl_q_heldout_{sid}").uncheck().run()
    at.button(key="lbl_q_build").click().run()
    assert_ok(at)
    q = rq.load_queue(ws, sid)
    it = q.items[0]
    # rebuilt meanwhile (a retrain's re-rank, another tab's Rebuild): same box, another prediction
    new_cls = other_class(it.predicted_id, it.label_id)
    pred = q.predicted.copy()
    pred.ravel()[it.indices] = new_cls
    rq.save_queue(ws, dataclasses.replace(q, predicted=pred, created_at=now_iso()))
    sfx = "_".join(str(v) for v in it.bbox)
    at.button(key=f"lbl_q_accept_{sfx}").click().run()  # the card drawn from the old queue
    assert_ok(at)
    assert ws.latest_label_version(sid) == 0  # nothing written
    assert "the noise queue was rebuilt since this card was drawn" in msgs(at)
    # the card drawn again from the rebuilt queue: its verdict is applied, with what that card shows
    at.button(key=f"lbl_q_accept_{sfx}").click().run()
    assert_ok(at)
    assert ws.latest_label_version(sid) == 1
    assert (ws.effective_label(sid).ravel()[it.indices] == new_cls).all()


# ------------------------------------------------------------------------------------------------ 4. undo / redo


def test_store_undo_redo_refuse_another_version_than_expected(ws):  # noqa: F811
    sid = ws.list_scenes()[0].id
    lbl = ws.effective_label(sid, 0)
    m1, m2 = flat(slice(0, 2), slice(0, 2)), flat(slice(50, 52), slice(50, 52))
    v1 = ws.save_label_edit(sid, 0, "Ann", "brush", pixels=m1, values=other_class(*np.unique(lbl.ravel()[m1])))
    v2 = ws.save_label_edit(sid, v1, "Ann", "brush", pixels=m2, values=other_class(*np.unique(lbl.ravel()[m2])))
    with pytest.raises(ConflictError, match=f"asked for label version {v1}.*would now act on version {v2}"):
        ws.undo_label_edit(sid, "Ann", expected_version=v1)
    assert ws.latest_label_version(sid) == v2
    u = ws.undo_label_edit(sid, "Ann", expected_version=v2)
    with pytest.raises(ConflictError, match=f"asked for label version {v1}.*would now act on version {v2}"):
        ws.redo_label_edit(sid, "Ann", expected_version=v1)
    assert ws.latest_label_version(sid) == u
    ws.redo_label_edit(sid, "Ann", expected_version=v2)
    with pytest.raises(ConflictError, match="would now act on nothing"):
        ws.redo_label_edit(sid, "Ann", expected_version=v2)


def test_undo_button_undoes_the_version_it_shows_or_nothing(ws, monkeypatch):  # noqa: F811
    at, cv, sid = start(ws, monkeypatch, "Ann")
    original = ws.effective_label(sid, 0)
    at.selectbox(key="lbl_class").set_value(other_class(*np.unique(original[STROKE]))).run()
    cv.paint(at)
    at.button(key="lbl_save").click().run()
    assert_ok(at)
    assert at.button(key="lbl_undo").label == "Undo my last edit (v1)"
    m2 = flat(slice(60, 62), slice(60, 62))  # Ann's other tab saves meanwhile
    v2 = ws.save_label_edit(sid, 1, "Ann", "polygon", pixels=m2, values=other_class(*np.unique(original.ravel()[m2])))
    at.button(key="lbl_undo").click().run()  # the button drawn as "(v1)"
    assert_ok(at)
    assert ws.latest_label_version(sid) == v2  # nothing undone
    assert "Nothing undone: the button was for your label version 1, but undo would now act on version 2" in msgs(at)
    assert at.button(key="lbl_undo").label == "Undo my last edit (v2)"
    at.button(key="lbl_undo").click().run()
    assert_ok(at)
    assert "Undid your label version 2" in msgs(at)
    assert at.button(key="lbl_redo").label == "Redo (v2)"
    ws.undo_label_edit(sid, "Ann")  # the other tab undoes v1 too: redo would now re-apply v1
    at.button(key="lbl_redo").click().run()
    assert_ok(at)
    assert "Nothing re-applied: the button was for your label version 2, but redo would now act on version 1" in msgs(at)
    np.testing.assert_array_equal(ws.effective_label(sid), original)
