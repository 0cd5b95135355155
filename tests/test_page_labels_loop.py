"""AppTest tests of the Labels page's daily loop (review findings of /work/notes/loop_review.md): Undo with strokes on
the canvas that are not applied yet, unapplied strokes kept across a page switch, and the windows sent from Evaluate
for review found from any scene. Same prepared workspace as tests/test_pages.py."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from streamlit.testing.v1 import AppTest
from test_pages import HZ7, REPO, TIMEOUT, app, assert_ok, texts, tiny_checkpoint, ws  # noqa: F401  (fixtures)

import ui.common

STROKE = (slice(10, 20), slice(0, 40))  # the label pixels of the fake stroke (canvas rows 40..79, cols 0..159 at 4×)


class FakeCanvas:
    """Stands in for streamlit-drawable-canvas the way the real component behaves.

    A canvas mounted afresh (a new key, or the page left and opened again) has sent nothing yet: its value is the
    ``initial_drawing`` and no image (``image_data`` None). ``paint()`` is a stroke by the analyst: the canvas sends
    its drawing (the stroke of tests/test_pages.fake_canvas_factory, 2 Fabric objects), and keeps sending that value
    on later reruns, as a mounted component does. ``leave()``: the page's components unmount."""

    def __init__(self):
        self.calls: list[dict] = []
        self.sent: dict[str, SimpleNamespace] = {}
        self.painting = False

    def __call__(self, **kw):
        self.calls.append(kw)
        key = kw["key"]
        if self.painting:
            rgba = np.zeros((kw["height"], kw["width"], 4), np.uint8)
            rgba[40:80, 0:160] = (255, 0, 0, 255)
            self.sent[key] = SimpleNamespace(image_data=rgba, json_data={"objects": [{"type": "path"}, {"type": "path"}]})
        if key in self.sent:
            return self.sent[key]
        return SimpleNamespace(image_data=None, json_data=kw.get("initial_drawing") or {"objects": []})

    def paint(self, at: AppTest) -> None:
        self.painting = True
        at.run()
        self.painting = False

    def leave(self) -> None:
        self.sent.clear()


def caption_has(at: AppTest, text: str) -> bool:
    return any(text in c.value for c in at.caption)


# ------------------------------------------------------------------------------------------------ undo


def test_undo_clears_unapplied_strokes_first_then_undoes_the_saved_edit(ws, monkeypatch):  # noqa: F811
    """Undo (Shift+Z) with strokes painted and not applied undid an older saved version (an earlier queue verdict,
    recorded as a new version) and dropped the strokes without a word. The first Undo now clears the strokes and
    says so; the next one takes back the saved edit."""
    cv = FakeCanvas()
    monkeypatch.setattr(ui.common, "canvas", cv)
    at = app("pages/3_Labels.py").run()
    sid = at.selectbox(key="lbl_scene").value
    original = ws.effective_label(sid, 0)
    at.sidebar.text_input(key="seghz_analyst").input("Ann").run()
    buildings = HZ7.names.index("Buildings")
    at.selectbox(key="lbl_class").set_value(buildings).run()
    cv.paint(at)
    at.button(key="lbl_save").click().run()
    assert_ok(at)
    assert ws.latest_label_version(sid) == 1
    saved = ws.effective_label(sid)

    cv.paint(at)  # a new stroke on the new canvas, not applied
    assert_ok(at)
    assert caption_has(at, "not yet applied: 6400 canvas px")
    undo = at.button(key="lbl_undo")
    assert not undo.disabled and "unapplied" in undo.label
    key_before = cv.calls[-1]["key"]
    undo.click().run()
    assert_ok(at)
    assert ws.latest_label_version(sid) == 1  # nothing saved was undone
    np.testing.assert_array_equal(ws.effective_label(sid), saved)
    assert any("cleared your unapplied strokes" in i.value and "no saved label version was undone" in i.value
               for i in at.info), [i.value for i in at.info]
    assert cv.calls[-1]["key"] != key_before  # a fresh, empty canvas
    assert caption_has(at, "not yet applied: 0 canvas px")
    assert at.button(key="lbl_undo").label == "Undo my last edit (v1)"

    at.button(key="lbl_undo").click().run()  # the next Undo takes back the saved edit
    assert_ok(at)
    assert any("Undid your label version 1" in s.value for s in at.success)
    np.testing.assert_array_equal(ws.effective_label(sid), original)

    # Redo with unapplied strokes is refused with the way out, and re-applies nothing
    cv.paint(at)
    at.button(key="lbl_redo").click().run()
    assert_ok(at)
    assert any("Not re-applied: you have unapplied strokes" in w.value for w in at.warning)
    assert ws.latest_label_version(sid) == 2
    assert caption_has(at, "not yet applied: 6400 canvas px")


# ------------------------------------------------------------------------------------------------ leaving the page


def test_unapplied_strokes_are_restored_after_visiting_another_page(ws, monkeypatch):  # noqa: F811
    """Paint (not applied), click another page in the sidebar, come back: the strokes were gone ("unsaved edited label
    pixels: 0") and the page opened on its first scene. They are now restored into the canvas of their scene and
    window, with their class and tool, and can be applied and saved."""
    cv = FakeCanvas()
    monkeypatch.setattr(ui.common, "canvas", cv)
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT).run()
    at.switch_page("pages/3_Labels.py").run()
    assert_ok(at)
    first = at.selectbox(key="lbl_scene").value
    other = next(s.id for s in ws.list_scenes() if s.id != first)
    at.selectbox(key="lbl_scene").set_value(other).run()
    at.sidebar.text_input(key="seghz_analyst").input("Ann").run()
    forest = HZ7.names.index("Forest")
    at.selectbox(key="lbl_class").set_value(forest).run()
    at.radio(key="lbl_tool").set_value("rect").run()
    cv.paint(at)
    assert caption_has(at, "not yet applied: 6400 canvas px")

    at.switch_page("app.py").run()  # the Home page (any other page): the Labels widgets and canvas are gone
    assert_ok(at)
    cv.leave()
    at.switch_page("pages/3_Labels.py").run()
    assert_ok(at)
    assert at.selectbox(key="lbl_scene").value == other
    assert at.selectbox(key="lbl_class").value == forest and at.radio(key="lbl_tool").value == "rect"
    assert cv.calls[-1]["initial_drawing"] == {"objects": [{"type": "path"}, {"type": "path"}]}
    assert any("2 unapplied strokes restored" in i.value for i in at.info), [i.value for i in at.info]
    assert caption_has(at, "not yet applied: 6400 canvas px")

    at.button(key="lbl_apply").click().run()
    assert_ok(at)
    assert any("Applied the strokes to your edit: 400 label pixels" in i.value for i in at.info)
    at.button(key="lbl_save").click().run()
    assert_ok(at)
    assert ws.latest_label_version(other) == 1 and (ws.effective_label(other)[STROKE] == forest).all()
    assert ws.label_history(other)[-1].tool == "rect"
    assert ws.latest_label_version(first) == 0
    # applied and saved: nothing is restored on the next visit
    at.switch_page("app.py").run()
    cv.leave()
    at.switch_page("pages/3_Labels.py").run()
    assert_ok(at)
    assert not any("restored" in i.value for i in at.info) and "initial_drawing" not in cv.calls[-1]


def test_strokes_cleared_on_the_canvas_are_not_restored(ws, monkeypatch):  # noqa: F811
    cv = FakeCanvas()
    monkeypatch.setattr(ui.common, "canvas", cv)
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT).run()
    at.switch_page("pages/3_Labels.py").run()
    cv.paint(at)
    key = cv.calls[-1]["key"]
    cv.sent[key] = SimpleNamespace(image_data=np.zeros_like(cv.sent[key].image_data), json_data={"objects": []})
    at.run()  # the analyst emptied the canvas with its own trash button
    at.switch_page("app.py").run()
    cv.leave()
    at.switch_page("pages/3_Labels.py").run()
    assert_ok(at)
    assert not any("restored" in i.value for i in at.info) and caption_has(at, "not yet applied: 0 canvas px")


# ------------------------------------------------------------------------------------------------ sent from Evaluate


def test_windows_sent_for_review_are_listed_whatever_the_scene_with_a_switch(ws, monkeypatch):  # noqa: F811
    """Windows sent from Evaluate were listed only once the scene picker showed their scene, with no hint on the
    others. The page now lists, on any scene, how many wait in which scenes, with a button to open each."""
    from seghz import drilldown

    monkeypatch.setattr(ui.common, "canvas", FakeCanvas())
    at = app("pages/3_Labels.py").run()
    shown = at.selectbox(key="lbl_scene").value
    other = next(s for s in ws.list_scenes() if s.id != shown)
    assert drilldown.add_to_review_list(ws, [drilldown.Window(other.id, (8, 16, 40, 64), 123),
                                             drilldown.Window(other.id, (64, 64, 96, 96), 50)],
                                        true_class="Water", pred_class="Buildings", scheme="hz7",
                                        checkpoint_id="tiny-test", analyst="Eve") == 2
    at.run()
    assert_ok(at)
    t = texts(at)
    assert "2 window(s) sent from Evaluate wait for review** in 1 scene(s)" in t
    assert f"**{other.name}** ({other.split}): 2 window(s)" in t
    assert not any("Water → Buildings" in m.value for m in at.markdown)  # the list itself is on that scene
    at.button(key=f"lbl_sent_goto_{other.id}").click().run()
    assert_ok(at)
    assert at.selectbox(key="lbl_scene").value == other.id
    assert any("Water → Buildings" in m.value and "123 px" in m.value for m in at.markdown)
    assert f"**{other.name}** (shown): 2 window(s), listed under *Sent from Evaluate for review*" in texts(at)
    assert not any(b.key == f"lbl_sent_goto_{other.id}" for b in at.button)
    # reviewed: the summary goes once nothing waits
    for k in range(2):
        at.button(key="lbl_sent_done_0").click().run()
    assert_ok(at)
    assert "sent from Evaluate wait for review" not in texts(at)


def test_another_page_can_open_a_scene_on_the_labels_page(ws, monkeypatch):  # noqa: F811
    """``st.session_state["lbl_open_scene"] = <scene id>`` before switching to the Labels page opens that scene (for
    Evaluate's "Send to label review"), once; unapplied strokes on the canvas are applied to their own scene."""
    cv = FakeCanvas()
    monkeypatch.setattr(ui.common, "canvas", cv)
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT).run()
    at.switch_page("pages/3_Labels.py").run()
    first = at.selectbox(key="lbl_scene").value
    other = next(s.id for s in ws.list_scenes() if s.id != first)
    cv.paint(at)
    at.switch_page("app.py").run()
    cv.leave()
    at.session_state["lbl_open_scene"] = other
    at.switch_page("pages/3_Labels.py").run()
    assert_ok(at)
    assert at.selectbox(key="lbl_scene").value == other
    assert "lbl_open_scene" not in at.session_state
    at.selectbox(key="lbl_scene").set_value(first).run()
    assert_ok(at)
    assert "unsaved edited label pixels: 400" in texts(at)  # the strokes were applied to their scene's edit


def test_a_queue_verdict_keeps_the_strokes_on_the_canvas(ws, monkeypatch):  # noqa: F811
    """A queue verdict gives the canvas a new key; strokes painted and not applied were dropped without a word. They
    now join the unsaved edit first, and the verdict is saved as its own version."""
    from seghz.review import queue as rq

    cv = FakeCanvas()
    monkeypatch.setattr(ui.common, "canvas", cv)
    at = app("pages/3_Labels.py").run()
    sid = at.selectbox(key="lbl_scene").value
    at.sidebar.text_input(key="seghz_analyst").input("Ann").run()
    at.slider(key="lbl_q_threshold").set_value(0.05).run()
    at.checkbox(key=f"lbl_q_heldout_{sid}").uncheck().run()
    at.button(key="lbl_q_build").click().run()
    assert_ok(at)
    first = rq.load_queue(ws, sid).items[0]
    buildings = HZ7.names.index("Buildings")
    at.selectbox(key="lbl_class").set_value(buildings).run()
    cv.paint(at)
    assert caption_has(at, "not yet applied")
    at.button(key=f"lbl_q_confirm_{'_'.join(str(v) for v in first.bbox)}").click().run()
    assert_ok(at)
    assert any("Confirmed the label" in s.value for s in at.success)
    assert ws.label_history(sid)[-1].tool == "queue-confirm"
    # the strokes are in the unsaved edit: saving writes them on top of the verdict's version
    verdict = ws.effective_label(sid)
    at.button(key="lbl_save").click().run()
    assert_ok(at)
    assert any("merged on top of version 1" in m.value for m in at.success)
    saved = ws.effective_label(sid)
    assert (saved[STROKE] == buildings).all()
    outside = np.ones(saved.shape, bool)
    outside[STROKE] = False
    assert (saved[outside] == verdict[outside]).all()
