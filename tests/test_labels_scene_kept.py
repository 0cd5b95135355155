"""The Labels page keeps the scene it showed across page switches.

Labels (the airport scene) -> Train -> Align -> Labels opened the first scene ("Demo farmland A") instead: Streamlit
drops a page's widget state when another page runs, and the scene picker started afresh at its first option (only
unapplied canvas strokes brought their scene back). Same prepared workspace as tests/test_pages.py.
"""
from __future__ import annotations

from types import SimpleNamespace

from streamlit.testing.v1 import AppTest
from test_pages import REPO, TIMEOUT, assert_ok, tiny_checkpoint, ws  # noqa: F401  (fixtures)

import ui.common
from ui import labels as lui


def blank_canvas(**kw):
    return SimpleNamespace(image_data=None, json_data=kw.get("initial_drawing") or {"objects": []})


def open_labels_on_the_second_scene(ws, monkeypatch):  # noqa: F811
    monkeypatch.setattr(ui.common, "canvas", blank_canvas)
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT).run()
    at.switch_page("pages/3_Labels.py").run()
    assert_ok(at)
    first = at.selectbox(key="lbl_scene").value
    other = next(s.id for s in ws.list_scenes() if s.id != first)
    at.selectbox(key="lbl_scene").set_value(other).run()
    assert_ok(at)
    assert at.selectbox(key="lbl_scene").value == other
    return at, first, other


def test_the_scene_picked_on_labels_is_shown_again_after_train_and_align(ws, monkeypatch):  # noqa: F811
    at, first, other = open_labels_on_the_second_scene(ws, monkeypatch)
    for page in ("pages/4_Train.py", "pages/5_Align.py"):
        at.switch_page(page).run()
        assert_ok(at)
    assert lui.SCENE_KEY not in at.session_state  # Streamlit dropped the picker's state: the page must put it back
    at.switch_page("pages/3_Labels.py").run()
    assert_ok(at)
    assert at.selectbox(key="lbl_scene").value == other
    # ... and stays a normal picker: another scene can be picked, and is kept in turn
    at.selectbox(key="lbl_scene").set_value(first).run()
    at.switch_page("app.py").run()
    at.switch_page("pages/3_Labels.py").run()
    assert_ok(at)
    assert at.selectbox(key="lbl_scene").value == first


def test_the_scene_is_kept_with_a_pending_edit_and_an_open_request_still_wins(ws, monkeypatch):  # noqa: F811
    at, first, other = open_labels_on_the_second_scene(ws, monkeypatch)
    edits = at.session_state["lbl_edits"]
    assert other in edits  # the scene's edit (a server-side draft once it changes) stays in the session
    at.switch_page("pages/4_Train.py").run()
    at.switch_page("pages/3_Labels.py").run()
    assert_ok(at)
    assert at.selectbox(key="lbl_scene").value == other
    # another page's "open this scene on the Labels page" still opens that scene
    at.switch_page("app.py").run()
    at.session_state[lui.OPEN_SCENE_KEY] = first
    at.switch_page("pages/3_Labels.py").run()
    assert_ok(at)
    assert at.selectbox(key="lbl_scene").value == first


def test_a_scene_removed_meanwhile_falls_back_to_the_first():
    ss = {lui.SHOWN_SCENE_KEY: "gone"}
    assert lui.restore_scene(ss, ["a", "b"]) is None and lui.SCENE_KEY not in ss
    ss = {lui.SHOWN_SCENE_KEY: "b"}
    assert lui.restore_scene(ss, ["a", "b"]) == "b" and ss[lui.SCENE_KEY] == "b"
    ss = {lui.SHOWN_SCENE_KEY: "b", lui.SCENE_KEY: "a"}  # the picker still has its state: left alone
    assert lui.restore_scene(ss, ["a", "b"]) is None and ss[lui.SCENE_KEY] == "a"
