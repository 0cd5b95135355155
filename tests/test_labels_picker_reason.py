"""AppTest tests of two Labels page bugs from the analyst's browser review.

1. The scene picker went back to the first scene by itself, and edits then landed on a scene nobody looked at. Streamlit
   sends a select widget's value as the *text* of its option, and a browser keeps sending the text the option had when
   it was chosen (or last set by the page). The picker's option text of a scene gained " · unsaved draft" when its draft
   was written (and lost it when the draft went); from the run after that, the text the browser sent matched no option,
   and Streamlit 1.67 reset the picker to its first option (``resolve_value_against_options``) -- the widget's id does
   not change (a keyed selectbox's id is its key). AppTest re-serialises a selectbox from its current options on every
   run, so it never sees this: :class:`BrowserSelectboxes` makes it send what the browser sends.
2. The Reason of a save was attached to the next, unrelated save (another scene's): a rerun that overtook the save's
   reply (the new canvas's first value) brought back the text the browser still showed.

Same prepared workspace and fake canvas as tests/test_pages.py and tests/test_page_labels_loop.py.
"""
from __future__ import annotations

import numpy as np
import pytest
from streamlit.proto.WidgetStates_pb2 import WidgetState
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.element_tree import InitialValue, Selectbox
from test_labels_review_fixes import hand_made_queue, sfx
from test_page_labels_loop import FakeCanvas
from test_pages import HZ7, app, assert_ok, tiny_checkpoint, ws  # noqa: F401  (fixtures)

import ui.common
from seghz import drafts as dft

LABELS = "pages/3_Labels.py"
BUILDINGS, FOREST, OPENAREA, WATER = (HZ7.names.index(n) for n in ("Buildings", "Forest", "OpenArea", "Water"))


class BrowserSelectboxes:
    """Makes AppTest send, for every ``st.selectbox``, what a browser sends: the text of the option as the browser got
    it -- picked by the user (``set_value`` / ``select_index`` in a test), or set by the page (``set_value`` in the
    element) -- and that same text on every later run, whatever the options' texts have become since."""

    def __init__(self, monkeypatch):
        self.held: dict[str, str] = {}
        plain = Selectbox._widget_state.fget

        def widget_state(sb: Selectbox) -> WidgetState:
            if isinstance(sb._value, InitialValue) and not sb.proto.set_value and sb.id in self.held:
                return WidgetState(id=sb.id, string_value=self.held[sb.id])
            state = plain(sb)
            if state.WhichOneof("value") == "string_value":
                self.held[sb.id] = state.string_value
            return state

        monkeypatch.setattr(Selectbox, "_widget_state", property(widget_state))


def start(ws, monkeypatch, name: str = "Ann") -> tuple[AppTest, FakeCanvas]:  # noqa: F811
    BrowserSelectboxes(monkeypatch)
    cv = FakeCanvas()
    monkeypatch.setattr(ui.common, "canvas", cv)
    at = app(LABELS).run()
    at.sidebar.text_input(key="seghz_analyst").input(name).run()
    assert_ok(at)
    return at, cv


def picked(at: AppTest) -> str:
    return at.selectbox(key="lbl_scene").value


def browser_reruns(at: AppTest, n: int = 2) -> None:
    """The reruns that follow in a browser (the new canvas's first value, a pan): the page must not move."""
    for _ in range(n):
        at.run()
        assert_ok(at)


def window_caption(at: AppTest) -> str:
    return next(c.value for c in at.caption if c.value.startswith("Window rows"))


def reason_box(at: AppTest):
    return next(t for t in at.text_input if t.label == "Reason (optional)")


def add_scene(ws, name: str, scheme: str, size: int = 128, seed: int = 5) -> str:  # noqa: F811
    from seghz.classes import get_scheme
    from seghz.data.io import write_index_mask, write_rgb
    from seghz.data.scenes import import_scene
    from seghz.demo import generate_scene

    rgb, lbl = generate_scene(size, seed)  # hz7 label values 0..6: valid in any scheme of 7 classes or more
    src = ws.root.parent / "src"
    write_rgb(src / f"{name}.png", rgb)
    write_index_mask(src / f"{name}_label.png", lbl, get_scheme(scheme))
    import_scene(ws, src / f"{name}.png", src / f"{name}_label.png", scheme=scheme, name=name, split="train",
                 synthetic=True)
    return next(s.id for s in ws.list_scenes() if s.name == name)


# ------------------------------------------------------------------------------------------------ 1. the scene picker


def test_the_scene_picked_stays_when_its_draft_is_written_and_the_edit_is_applied(ws, monkeypatch):  # noqa: F811
    """Labels → a scene other than the first (no draft) → rectangle → draw → Apply strokes: the picker showed the first
    scene, while the edit stayed a draft of the scene picked."""
    at, cv = start(ws, monkeypatch)
    first = picked(at)
    at.selectbox(key="lbl_scene").select_index(1).run()
    sid = picked(at)
    assert sid != first
    at.selectbox(key="lbl_class").set_value(BUILDINGS).run()
    at.radio(key="lbl_tool").set_value("rect").run()
    cv.paint(at)  # the draft of the scene is written in this run, after the picker
    assert [d.scene_id for d in dft.list_drafts(ws.root, None, None)[0]] == [sid]
    at.button(key="lbl_apply").click().run()
    assert_ok(at)
    browser_reruns(at)
    assert picked(at) == sid
    assert "unsaved edited label pixels: 400" in window_caption(at)  # the edit shown is the scene's own
    assert not any("draft" in at.selectbox(key="lbl_scene").format_func(i) for i in (first, sid))
    assert any(c.value == "Unsaved drafts on the server: val town (shown)." for c in at.caption)  # named elsewhere
    # saved where it was painted, and the page is still there
    at.button(key="lbl_save").click().run()
    browser_reruns(at)
    assert (ws.latest_label_version(sid), ws.latest_label_version(first)) == (1, 0)
    assert picked(at) == sid


def test_open_restore_save_then_confirm_stay_on_the_scene_opened(ws, monkeypatch):  # noqa: F811
    """Paint on X → reload → "Open X" → Restore → Save as new label version: the save was right but the page landed on
    the first scene, and "Save and confirm the rest of this window" then confirmed that scene's pixels."""
    first, other = (s.id for s in ws.list_scenes())
    lbl = ws.effective_label(other)
    px = np.zeros(lbl.shape, bool)
    px[5:7, 5:15] = True
    d = dft.write_draft(ws.root, "Ann", other, base_version=0, pixels=px, values=np.where(px, WATER, lbl))
    at, _cv = start(ws, monkeypatch)  # a reload: a new session, on the first scene
    assert picked(at) == first
    at.button(key=f"lbl_other_draft_{other}_{d.path.parent.name}").click().run()
    assert_ok(at)
    assert picked(at) == other
    at.button(key=f"lbl_draft_restore_{d.path.parent.name}").click().run()
    assert_ok(at)
    at.button(key="lbl_save").click().run()  # the draft is deleted
    assert_ok(at)
    browser_reruns(at)
    assert picked(at) == other and ws.latest_label_version(other) == 1
    at.button(key="lbl_confirm_window").click().run()
    assert_ok(at)
    browser_reruns(at)
    assert picked(at) == other
    assert (ws.latest_label_version(other), ws.latest_label_version(first)) == (2, 0)
    assert ws.label_history(other)[-1].tool == "confirm-window" and ws.label_history(first) == []


def test_a_scene_whose_option_text_changes_stays_picked(ws, monkeypatch):  # noqa: F811
    """Another option text that can change under the browser (a scene's split, changed elsewhere): the picker's
    callback puts the scene shown back instead of letting Streamlit reset it to the first scene."""
    at, cv = start(ws, monkeypatch)
    first = picked(at)
    at.selectbox(key="lbl_scene").select_index(1).run()
    sid = picked(at)
    cv.paint(at)
    ws.set_split(sid, "test", "Bob", "moved")
    browser_reruns(at, 3)
    assert picked(at) == sid
    assert at.selectbox(key="lbl_scene").format_func(sid).startswith("val town — test")
    assert not any("not lost" in i.value for i in at.info)  # no scene switch was noted
    assert "not yet applied: 6400 canvas px" in "\n".join(c.value for c in at.caption)  # the strokes are still there
    at.button(key="lbl_save").click().run()
    assert (ws.latest_label_version(sid), ws.latest_label_version(first)) == (1, 0)


def test_the_class_picked_stays_after_a_switch_to_a_scene_of_another_scheme(ws, monkeypatch):  # noqa: F811
    """The class picker's option texts are the scene's scheme's class names: after a switch to a scene of another
    scheme, the text the browser sends is gone, and the class went back to the first one a run later (strokes then
    painted with a class nobody chose)."""
    lake = add_scene(ws, "lake", "loveda")
    at, _cv = start(ws, monkeypatch)
    at.selectbox(key="lbl_scene").set_value("val-town").run()
    at.selectbox(key="lbl_class").set_value(FOREST).run()
    assert at.selectbox(key="lbl_class").format_func(FOREST) == f"{FOREST}: Forest"
    at.selectbox(key="lbl_scene").set_value(lake).run()
    assert_ok(at)
    browser_reruns(at)
    assert picked(at) == lake
    assert at.selectbox(key="lbl_class").value == FOREST  # the index picked, now named in the scene's scheme
    assert at.selectbox(key="lbl_class").format_func(FOREST) == f"{FOREST}: water"


def test_relabel_choice_of_a_queue_card_is_not_carried_to_another_scenes_card(ws, monkeypatch):  # noqa: F811
    """Queue cards of two scenes with a component at the same place shared their "Relabel as" picker: the class chosen
    on one scene's card was preselected on the other's, and "Relabel" wrote it there."""
    first, other = (s.id for s in ws.list_scenes())
    qa, runs = hand_made_queue(ws, first)
    qb, _ = hand_made_queue(ws, other)
    at, _cv = start(ws, monkeypatch)
    a = qa.items[0]
    assert sfx(a) == sfx(qb.items[0])
    relabel = next(s for s in at.selectbox if s.key and s.key.startswith("lbl_q_cls_") and s.key.endswith(sfx(a)))
    assert relabel.value == OPENAREA  # the model's class
    relabel.set_value(WATER).run()
    at.selectbox(key="lbl_scene").set_value(other).run()
    assert_ok(at)
    relabel = next(s for s in at.selectbox if s.key and s.key.startswith("lbl_q_cls_") and s.key.endswith(sfx(a)))
    assert relabel.value == OPENAREA  # this card's own default, not the other scene's choice
    at.button(key=f"lbl_q_relabel_{sfx(a)}").click().run()
    assert_ok(at)
    assert (ws.effective_label(other).ravel()[runs[0]] == OPENAREA).all()


# ------------------------------------------------------------------------------------------------ defence in depth


def test_save_and_confirm_refuse_a_button_of_another_scene_than_the_one_picked(ws, monkeypatch):  # noqa: F811
    """A button rendered for scene A, pressed when the picker shows B (a button of an earlier run clicked while the
    page reran): nothing is written, and the page says why."""
    at, cv = start(ws, monkeypatch)
    first = picked(at)
    other = next(s.id for s in ws.list_scenes() if s.id != first)
    cv.paint(at)
    for button in ("lbl_confirm_window", "lbl_save"):
        at.selectbox(key="lbl_scene").set_value(other)
        at.button(key=button).click().run()  # the button's args: the first scene
        assert_ok(at)
        assert any("Not saved: this button was for **train farm**, but the scene picker shows **val town** now"
                   in e.value for e in at.error), [e.value for e in at.error]
        assert (ws.latest_label_version(first), ws.latest_label_version(other)) == (0, 0)
        at.selectbox(key="lbl_scene").set_value(first).run()
    at.button(key="lbl_confirm_window").click().run()  # on the scene shown: saved
    assert ws.latest_label_version(first) == 1 and ws.latest_label_version(other) == 0


def test_confirm_window_refuses_a_window_other_than_the_one_shown(ws, monkeypatch):  # noqa: F811
    """The window widgets moved (a 256 px window picked) while the button still covers the whole 512 px scene: nothing
    is confirmed."""
    big = add_scene(ws, "big", "hz7", size=512)
    at, _cv = start(ws, monkeypatch)
    at.selectbox(key="lbl_scene").set_value(big).run()
    assert at.selectbox(key=f"lbl_size_{big}").value == 512
    at.selectbox(key=f"lbl_size_{big}").set_value(256)
    at.button(key="lbl_confirm_window").click().run()  # its args: the 512 px window
    assert_ok(at)
    assert any("Not saved: the window shown changed (rows 0–255, columns 0–255 now, not rows 0–511, columns 0–511)"
               in e.value for e in at.error), [e.value for e in at.error]
    assert ws.latest_label_version(big) == 0
    at.button(key="lbl_confirm_window").click().run()
    assert_ok(at)
    assert ws.latest_label_version(big) == 1
    assert any("confirmed in the 256×256 px window" in s.value for s in at.success)


# ------------------------------------------------------------------------------------------------ 2. the reason


def rerun_with_stale(at: AppTest, stale: WidgetState) -> None:
    """A rerun in which the browser sends ``stale`` (the state of a widget as it had it before the last run's reply
    reached it) in place of what the last run left."""
    states = at._tree.get_widget_states()
    keep = [w for w in states.widgets if w.id != stale.id]
    del states.widgets[:]
    states.widgets.extend([*keep, stale])
    at._run(states)
    assert_ok(at)


def test_the_reason_of_a_save_is_not_attached_to_the_next_save_on_another_scene(ws, monkeypatch):  # noqa: F811
    """Save on A with reason "forest confirmed", switch to B, draw, save without a reason: B's history showed "forest
    confirmed" -- the new canvas's first value reran the page before the browser had the save's reply, and sent the
    reason the box still showed."""
    at, cv = start(ws, monkeypatch)
    a = picked(at)
    cv.paint(at)
    box = reason_box(at)
    box.input("forest confirmed")
    stale = WidgetState(id=box.id, string_value="forest confirmed")
    at.button(key="lbl_save").click().run()
    assert_ok(at)
    assert ws.label_history(a)[-1].reason == "forest confirmed"
    assert reason_box(at).value == ""
    rerun_with_stale(at, stale)
    assert reason_box(at).value == ""
    b = next(s.id for s in ws.list_scenes() if s.id != a)
    at.selectbox(key="lbl_scene").set_value(b).run()
    at.radio(key="lbl_tool").set_value("rect").run()
    cv.paint(at)
    at.button(key="lbl_save").click().run()
    assert_ok(at)
    assert ws.latest_label_version(b) == 1
    assert ws.label_history(b)[-1].reason is None
    # and a second save on A does not borrow it either
    at.selectbox(key="lbl_scene").set_value(a).run()
    cv.paint(at)
    at.button(key="lbl_confirm_window").click().run()
    assert_ok(at)
    assert [h.reason for h in ws.label_history(a)] == ["forest confirmed", None]


@pytest.mark.parametrize("switch", ["picker", "open"])
def test_a_reason_typed_on_one_scene_is_cleared_by_a_scene_switch(ws, monkeypatch, switch):  # noqa: F811
    """A reason typed (not saved) on A, then another scene shown (the picker, or an "Open …" button): its save had the
    reason typed for A."""
    at, cv = start(ws, monkeypatch)
    a = picked(at)
    b = next(s.id for s in ws.list_scenes() if s.id != a)
    reason_box(at).input("roof mislabelled as road").run()
    if switch == "picker":
        at.selectbox(key="lbl_scene").set_value(b).run()
    else:  # "Open B" of the other-drafts box: a draft of B left by an earlier session
        lbl = ws.effective_label(b)
        px = np.zeros(lbl.shape, bool)
        px[5:7, 5:15] = True
        d = dft.write_draft(ws.root, "Ann", b, base_version=0, pixels=px, values=np.where(px, WATER, lbl))
        at.run()
        at.button(key=f"lbl_other_draft_{b}_{d.path.parent.name}").click().run()
    assert_ok(at)
    assert picked(at) == b and reason_box(at).value == ""
    cv.paint(at)
    at.button(key="lbl_save").click().run()
    assert_ok(at)
    assert ws.label_history(b)[-1].reason is None
    at.selectbox(key="lbl_scene").set_value(a).run()  # back on A: the box is empty too
    assert reason_box(at).value == ""
