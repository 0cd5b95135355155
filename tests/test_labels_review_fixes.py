"""AppTest tests of the Labels page fixes from the analyst's browser review:

1. lost work: the unsaved edit of a scene is kept as a server-side draft (``<workspace>/drafts/``); a reload / a new
   tab (a fresh AppTest session on the same workspace) offers it back with Restore / Discard, and a scene switch says
   the edit is kept;
2. a noise queue built on an older label (changed since by more than its own verdicts), or with another model, is
   flagged out of date with a rebuild button;
3. a queue card says what "Accept prediction" writes: the model's class per pixel, with the breakdown, next to
   "All as <majority class>".

Same prepared workspace and fake canvas as tests/test_pages.py and tests/test_page_labels_loop.py.
"""
from __future__ import annotations

import re

import numpy as np
from streamlit.testing.v1 import AppTest
from test_page_labels_loop import STROKE, FakeCanvas, caption_has
from test_pages import HZ7, app, assert_ok, texts, tiny_checkpoint, ws  # noqa: F401  (fixtures)

import ui.common
from seghz import drafts as dft
from seghz.review import queue as rq

LABELS = "pages/3_Labels.py"
BUILDINGS, OPENAREA, GLASS, ROAD, WATER = (HZ7.names.index(n) for n in (
    "Buildings", "OpenArea", "Reflection_Glass_Curtainwall", "Road_land", "Water"))


def banners(at: AppTest) -> list[str]:
    return [w.value for w in at.warning if "Unsaved draft from" in w.value]


def fresh_session(cv: FakeCanvas) -> AppTest:
    """A browser reload or a new tab: a new session (the canvas components unmount)."""
    cv.leave()
    at = app(LABELS).run()
    assert_ok(at)
    return at


def start(ws, monkeypatch, name: str | None = "Ann") -> tuple[AppTest, FakeCanvas, str]:  # noqa: F811
    cv = FakeCanvas()
    monkeypatch.setattr(ui.common, "canvas", cv)
    at = app(LABELS).run()
    sid = at.selectbox(key="lbl_scene").value
    if name:
        at.sidebar.text_input(key="seghz_analyst").input(name).run()
    return at, cv, sid


# ------------------------------------------------------------------------------------------------ 1. drafts


def test_a_reload_offers_the_unsaved_edit_back_and_restore_reapplies_it(ws, monkeypatch):  # noqa: F811
    at, cv, sid = start(ws, monkeypatch)
    original = ws.effective_label(sid, 0)
    at.selectbox(key="lbl_class").set_value(BUILDINGS).run()
    cv.paint(at)  # strokes on the canvas, not even applied
    assert_ok(at)
    path = dft.draft_path(ws.root, "Ann", sid)
    d = dft.read_draft(path)
    assert (d.analyst, d.base_version, d.pixels, d.tool) == ("Ann", 0, 400, "brush")
    assert (d.values == BUILDINGS).all() and d.mask()[STROKE].all()
    assert caption_has(at, "kept as a draft on the server")
    assert banners(at) == []  # this tab's own draft: no banner here

    # F5: a new session, the analyst name field empty
    fresh = fresh_session(cv)
    assert fresh.selectbox(key="lbl_scene").value == sid
    [banner] = banners(fresh)
    assert re.search(r"Unsaved draft from \d\d:\d\d UTC\*\* \(400 px, based on version 0\) by \*\*Ann\*\*", banner), banner
    assert "unsaved edited label pixels: 0" in texts(fresh)
    fresh.button(key=f"lbl_draft_restore_{path.parent.name}").click().run()
    assert_ok(fresh)
    assert any("Restored the draft of Ann" in s.value and "400 edited pixels on label version 0" in s.value
               for s in fresh.success), [s.value for s in fresh.success]
    assert "unsaved edited label pixels: 400" in texts(fresh) and banners(fresh) == []
    fresh.sidebar.text_input(key="seghz_analyst").input("Ann").run()
    fresh.button(key="lbl_save").click().run()
    assert_ok(fresh)
    assert ws.latest_label_version(sid) == 1
    expected = original.copy()
    expected[STROKE] = BUILDINGS
    np.testing.assert_array_equal(ws.effective_label(sid), expected)
    assert ws.label_history(sid)[-1].analyst == "Ann" and ws.label_history(sid)[-1].tool == "brush"
    assert not path.exists()  # saved: the draft is gone
    assert banners(fresh_session(cv)) == []


def test_a_draft_whose_label_moved_on_says_so_and_the_save_merges(ws, monkeypatch):  # noqa: F811
    at, cv, sid = start(ws, monkeypatch)
    at.selectbox(key="lbl_class").set_value(BUILDINGS).run()
    cv.paint(at)
    at.button(key="lbl_apply").click().run()
    assert dft.read_draft(dft.draft_path(ws.root, "Ann", sid)).pixels == 400
    # Bob saves a pixel outside the strokes meanwhile
    bob = ws.effective_label(sid)
    ws.save_label_edit(sid, 0, "Bob", "brush", pixels=np.array([0]), values=int((bob[0, 0] + 1) % 7))

    fresh = fresh_session(cv)
    fresh.sidebar.text_input(key="seghz_analyst").input("Ann").run()
    [banner] = banners(fresh)
    assert "(400 px, based on version 0)" in banner and "by **" not in banner  # her own: no "by"
    assert "The label has moved on since: it is at version 1 now" in banner
    fresh.button(key=f"lbl_draft_restore_{dft.analyst_folder('Ann')}").click().run()
    assert_ok(fresh)
    assert any("The label has moved on to version 1 since" in s.value for s in fresh.success)
    assert any("started from label version 0, but version 1 has been saved since" in w.value for w in fresh.warning)
    fresh.button(key="lbl_save").click().run()
    assert_ok(fresh)
    assert any("merged on top of version 1" in s.value for s in fresh.success)
    final = ws.effective_label(sid)
    assert (final[STROKE] == BUILDINGS).all() and final[0, 0] == (bob[0, 0] + 1) % 7
    assert dft.list_drafts(ws.root, sid) == ([], [])


def test_switching_scenes_keeps_the_edit_as_a_draft_and_says_so(ws, monkeypatch):  # noqa: F811
    at, cv, sid = start(ws, monkeypatch)
    other = next(s for s in ws.list_scenes() if s.id != sid)
    cv.paint(at)
    at.selectbox(key="lbl_scene").set_value(other.id).run()
    assert_ok(at)
    name = ws.get_scene(sid).name
    assert any(f"Your unsaved edit of **{name}** (400 px) is not lost" in i.value and "as a draft on the server"
               in i.value for i in at.info), [i.value for i in at.info]
    assert dft.read_draft(dft.draft_path(ws.root, "Ann", sid)).pixels == 400
    at.run()  # the new canvas's first values rerun the page: the notice stays while this scene is shown
    assert any("is not lost" in i.value for i in at.info)
    at.button(key="lbl_left_edit_back").click().run()
    assert_ok(at)
    assert at.selectbox(key="lbl_scene").value == sid and not any("is not lost" in i.value for i in at.info)
    assert "unsaved edited label pixels: 400" in texts(at) and banners(at) == []
    # the Discard button of the edit deletes its draft
    at.button(key="lbl_discard").click().run()
    assert_ok(at)
    assert not dft.draft_path(ws.root, "Ann", sid).exists()


def test_drafts_per_analyst_discard_and_damaged_files(ws, monkeypatch):  # noqa: F811
    cv = FakeCanvas()
    monkeypatch.setattr(ui.common, "canvas", cv)
    at = app(LABELS).run()
    sid = at.selectbox(key="lbl_scene").value
    lbl = ws.effective_label(sid)
    px = np.zeros(lbl.shape, bool)
    px[50:52, 50:60] = True
    new = np.where(px, WATER, lbl).astype(np.uint8)
    for who in ("Ann", "Bob", ""):
        dft.write_draft(ws.root, who, sid, base_version=0, pixels=px, values=new, tool="rect")
    at.run()
    assert_ok(at)
    shown = banners(at)  # no name entered: every draft, saying whose
    assert len(shown) == 3 and any("by **Ann**" in b for b in shown) and any("by **Bob**" in b for b in shown)
    assert any("made without an analyst name" in b for b in shown)
    at.sidebar.text_input(key="seghz_analyst").input("Bob").run()
    shown = banners(at)  # Bob's own and the unnamed one, not Ann's
    assert len(shown) == 2 and not any("Ann" in b for b in shown)
    at.button(key=f"lbl_draft_discard_{dft.ANON}").click().run()
    assert_ok(at)
    assert not dft.draft_path(ws.root, "", sid).exists() and len(banners(at)) == 1
    assert any("Discarded the draft" in i.value for i in at.info)
    assert dft.draft_path(ws.root, "Ann", sid).exists()  # someone else's draft is left alone

    # a damaged draft file: a clear error naming the file, never a crash; it can be deleted
    bad = dft.draft_path(ws.root, "", sid)
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_bytes(b"PK\x03\x04 truncated")
    at.run()
    assert_ok(at)
    assert any(str(bad) in e.value and "damaged draft file" in e.value for e in at.error), [e.value for e in at.error]
    at.button(key="lbl_draft_bad_discard_0").click().run()
    assert_ok(at)
    assert not bad.exists() and not any("damaged" in e.value for e in at.error)

    # Bob restores his draft: its 20 px are the edit
    at.button(key=f"lbl_draft_restore_{dft.analyst_folder('Bob')}").click().run()
    assert_ok(at)
    assert "unsaved edited label pixels: 20" in texts(at)
    at.button(key="lbl_save").click().run()
    assert_ok(at)
    assert (ws.effective_label(sid)[50:52, 50:60] == WATER).all() and ws.label_history(sid)[-1].tool == "rect"
    assert not dft.draft_path(ws.root, "Bob", sid).exists()


def test_a_tab_never_overwrites_a_draft_it_did_not_write(ws, monkeypatch):  # noqa: F811
    """A draft left by an earlier session stays as it is while this tab paints (the banner says the new changes are
    not kept); once it is discarded, this tab's edit is kept there."""
    at, cv, sid = start(ws, monkeypatch)
    lbl = ws.effective_label(sid)
    px = np.zeros(lbl.shape, bool)
    px[60, 60:70] = True
    old = dft.write_draft(ws.root, "Ann", sid, base_version=0, pixels=px, values=np.where(px, WATER, lbl))
    at.run()
    cv.paint(at)
    assert_ok(at)
    assert dft.read_draft(old.path).token == old.token  # untouched
    [banner] = banners(at)
    assert "changes you make to this scene here are not kept as a draft" in banner
    assert "Restoring replaces this tab's unsaved edit" not in banner  # only strokes so far, nothing applied
    at.button(key="lbl_apply").click().run()
    assert "Restoring replaces this tab's unsaved edit of the scene (400 px)" in banners(at)[0]
    at.button(key=f"lbl_draft_discard_{old.path.parent.name}").click().run()
    assert_ok(at)
    mine = dft.read_draft(old.path)
    assert mine.token != old.token and mine.pixels == 400 and banners(at) == []


# ------------------------------------------------------------------------------------------------ 2 + 3. queue


def hand_made_queue(ws, sid: str) -> tuple[rq.SceneQueue, list[np.ndarray]]:  # noqa: F811
    """Version 1 relabels three runs of pixels as Buildings; the queue (built on version 1 with the active
    checkpoint) holds them as items. The model predicts, on the first two runs of 39 px, OpenArea 19,
    Reflection_Glass_Curtainwall 19 and Road_land 1 (a mixed component; OpenArea is its majority by the smaller id),
    on the third (20 px) Water only."""
    h, w = ws.effective_label(sid).shape
    runs = [100 * w + np.arange(10, 49), 110 * w + np.arange(10, 49), 120 * w + np.arange(10, 30)]
    allpx = np.concatenate(runs)
    v = ws.save_label_edit(sid, 0, "Setup", "brush", pixels=allpx, values=BUILDINGS)
    predicted = ws.effective_label(sid, v).copy()
    flat = predicted.ravel()
    for r in runs[:2]:
        flat[r[:19]], flat[r[19:38]], flat[r[38:]] = OPENAREA, GLASS, ROAD
    flat[runs[2]] = WATER
    score = np.zeros((h, w), np.float32)
    score.ravel()[allpx] = 0.9
    items = []
    for r, pred_id in zip(runs, (OPENAREA, OPENAREA, WATER)):
        rows, cols = np.divmod(r, w)
        bbox = (int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1)
        items.append(rq.ReviewItem(sid, bbox, int(r.size), 0.9 * r.size, 0.9, BUILDINGS, pred_id, "Buildings",
                                   HZ7.names[pred_id], np.sort(r).astype(np.int64)))
    q = rq.SceneQueue(sid, "tiny-test", "none", v, "2026-01-01T00:00:00+00:00", items, predicted, score)
    rq.save_queue(ws, q)
    return q, runs


def sfx(it: rq.ReviewItem) -> str:
    return "_".join(str(v) for v in it.bbox)


def test_a_queue_card_says_what_accept_writes_per_pixel_and_offers_all_as_the_majority(ws, monkeypatch):  # noqa: F811
    monkeypatch.setattr(ui.common, "canvas", FakeCanvas())
    at = app(LABELS).run()
    sid = at.selectbox(key="lbl_scene").value
    q, runs = hand_made_queue(ws, sid)
    assert rq.describe_breakdown(rq.accept_breakdown(q, q.items[0], HZ7.names)) == \
        "OpenArea 19, Reflection_Glass_Curtainwall 19, Road_land 1"
    assert rq.accept_breakdown(q, q.items[2], HZ7.names) == [(WATER, "Water", 20)]
    at.sidebar.text_input(key="seghz_analyst").input("Ann").run()
    assert_ok(at)
    md = "\n".join(m.value for m in at.markdown)
    assert ("label **Buildings** → model says **OpenArea** on 19 of 39 px (also Reflection_Glass_Curtainwall 19, "
            "Road_land 1)") in md, md
    assert "label **Buildings** → model says **Water** · 20 px" in md
    assert caption_has(at, "Accept prediction writes the model's class per pixel: OpenArea 19, "
                           "Reflection_Glass_Curtainwall 19, Road_land 1 — or “All as OpenArea” sets all 39 px to "
                           "OpenArea.")
    assert caption_has(at, "Accept prediction writes the model's class per pixel: Water 20.")
    a, b, c = q.items
    assert at.button(key=f"lbl_q_accept_{sfx(a)}").label == "Accept prediction (per pixel)"
    assert at.button(key=f"lbl_q_accept_all_{sfx(a)}").label == "All as OpenArea"
    assert at.button(key=f"lbl_q_accept_{sfx(c)}").label == "Accept prediction"
    assert not any(bt.key == f"lbl_q_accept_all_{sfx(c)}" for bt in at.button)  # one class: nothing to choose

    at.button(key=f"lbl_q_accept_{sfx(a)}").click().run()  # per pixel
    assert_ok(at)
    assert any("per-pixel prediction" in s.value and "OpenArea 19, Reflection_Glass_Curtainwall 19, Road_land 1"
               in s.value for s in at.success), [s.value for s in at.success]
    flat = ws.effective_label(sid).ravel()
    assert (flat[runs[0][:19]] == OPENAREA).all() and (flat[runs[0][19:38]] == GLASS).all() and flat[runs[0][38]] == ROAD
    assert ws.label_history(sid)[-1].tool == "queue-accept"

    at.button(key=f"lbl_q_accept_all_{sfx(b)}").click().run()  # all as the majority class
    assert_ok(at)
    assert any("Relabelled the Buildings component" in s.value and "as OpenArea" in s.value for s in at.success)
    assert (ws.effective_label(sid).ravel()[runs[1]] == OPENAREA).all()
    assert ws.label_history(sid)[-1].tool == "queue-relabel"
    # the queue's own verdicts do not make it out of date
    assert not any("out of date" in w.value for w in at.warning)
    assert caption_has(at, "on label version 1 (the scene is at version 3 now; the 78 label px changed since were "
                           "this queue's own verdicts)")


def test_a_queue_built_on_an_older_label_or_model_is_flagged_with_a_rebuild(ws, monkeypatch, tiny_checkpoint):  # noqa: F811
    monkeypatch.setattr(ui.common, "canvas", FakeCanvas())
    at = app(LABELS).run()
    sid = at.selectbox(key="lbl_scene").value
    hand_made_queue(ws, sid)
    at.run()
    assert not any("out of date" in w.value for w in at.warning) and not any(b.key == "lbl_q_rebuild" for b in at.button)
    # a brush edit (not a verdict) changes 3 label pixels: the queue no longer describes the label
    lbl = ws.effective_label(sid)
    ws.save_label_edit(sid, 1, "Bob", "brush", pixels=np.array([0, 1, 2]), values=(lbl[0, :3].astype(int) + 1) % 7)
    ws.save_label_edit(sid, 2, "Bob", "brush", pixels=np.array([5]), values=int((lbl[0, 5] + 2) % 7))
    at.run()
    assert_ok(at)
    stale = [w.value for w in at.warning if "out of date" in w.value]
    assert stale and "built on label version 1, the scene is at version 3 now, and 4 label pixels changed since" \
        in stale[0], stale
    assert caption_has(at, "3 item(s), 3 still to review")
    rebuild = at.button(key="lbl_q_rebuild")
    assert "tiny test model" in rebuild.label
    rebuild.click().run()
    assert_ok(at)
    q2 = rq.load_queue(ws, sid)
    assert q2.label_version == 3 and q2.checkpoint_id == "tiny-test" and q2.tta == "none" and q2.scoring == "in-sample"
    assert not any("out of date" in w.value for w in at.warning) and not any(b.key == "lbl_q_rebuild" for b in at.button)
    assert any("Rebuilt the noise queue on label version 3" in s.value for s in at.success)

    # another active model: flagged too, and the rebuild uses it
    path, meta = tiny_checkpoint
    dst = ws.root / "checkpoints" / "tiny2.safetensors"
    dst.write_bytes(path.read_bytes())
    ws.set_active_checkpoint(ws.register_checkpoint(dst, {**meta, "scheme": "hz7"}, checkpoint_id="tiny-2", name="tiny 2"))
    at.run()
    assert any("not the active checkpoint **tiny-2**" in w.value for w in at.warning)
    at.button(key="lbl_q_rebuild").click().run()
    assert_ok(at)
    assert rq.load_queue(ws, sid).checkpoint_id == "tiny-2"
    assert not any(b.key == "lbl_q_rebuild" for b in at.button)


def test_queue_staleness_by_hand(ws):  # noqa: F811
    sid = ws.list_scenes()[0].id
    q, runs = hand_made_queue(ws, sid)
    s = rq.queue_staleness(ws, q, active_id="tiny-test")
    assert not s.stale and s.changed_px == 0 and s.latest_version == 1
    rq.apply_action(ws, q, q.items[0], "accept", "Ann")  # a verdict: not stale
    s = rq.queue_staleness(ws, q, active_id="tiny-test")
    assert not s.stale and s.verdict_px == 39 and s.latest_version == 2
    ws.save_label_edit(sid, 2, "Bob", "brush", pixels=runs[2][:3], values=WATER)  # a brush edit on queued pixels
    s = rq.queue_staleness(ws, q, active_id="tiny-test")
    assert s.label_stale and s.changed_px == 3 and not s.model_stale
    assert rq.queue_staleness(ws, q, active_id="other").model_stale
    ws.undo_label_edit(sid, "Ann")  # the verdict undone: its pixels hold the queue's label again
    s = rq.queue_staleness(ws, q)
    assert s.changed_px == 3 and s.verdict_px == 0


def test_drafts_of_other_scenes_are_listed_with_a_way_to_open_them(ws, monkeypatch):  # noqa: F811
    """After a reload the page opens on its first scene: a draft of another scene is named at the top."""
    at, _cv, sid = start(ws, monkeypatch)
    other = next(s for s in ws.list_scenes() if s.id != sid)
    lbl = ws.effective_label(other.id)
    px = np.zeros(lbl.shape, bool)
    px[5:7, 5:15] = True
    d = dft.write_draft(ws.root, "Ann", other.id, base_version=0, pixels=px, values=np.where(px, WATER, lbl))
    at.run()
    assert_ok(at)
    assert f"**{other.name}**: 20 px from" in texts(at) and banners(at) == []
    # the scene with the draft is named under the scene picker, not in its option texts (a text changing under the
    # browser reset the picker to the first scene: tests/test_labels_picker_reason.py)
    assert any(c.value == f"Unsaved drafts on the server: {other.name}." for c in at.caption)
    picker = at.selectbox(key="lbl_scene")
    assert not any("draft" in picker.format_func(i) for i in (sid, other.id))
    at.button(key=f"lbl_other_draft_{other.id}_{d.path.parent.name}").click().run()
    assert_ok(at)
    assert at.selectbox(key="lbl_scene").value == other.id
    assert len(banners(at)) == 1 and "other scene(s)" not in texts(at)
