"""Align page: points clicked on the two canvases and not yet added to the table survive a visit to another page
(kept per label/image pair, shown again through the canvas' ``initial_drawing``); "Add" and "Clear" consume them."""
from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from streamlit.testing.v1 import AppTest
from test_align import homography, render_image, synthetic_label
from test_page_align_state import real_point

from seghz.classes import get_scheme
from seghz.data.io import write_index_mask, write_rgb
from seghz.geo.align_scene import canvas_points
from seghz.store import Workspace
from ui import align_page as AP

TIMEOUT = 120


@pytest.fixture
def pair(tmp_path, monkeypatch):
    """A 200x160 hz20 label and a 300x250 image of it, in an empty workspace; the page is run from the repo."""
    lbl = synthetic_label(160, 200, seed=5, classes=8)
    img = render_image(lbl, homography(), (250, 300), seed=5)
    lp, ip = tmp_path / "label.png", tmp_path / "image.png"
    write_index_mask(lp, lbl, get_scheme("hz20"))
    write_rgb(ip, img)
    ws = Workspace(tmp_path / "ws")
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("SEGHZ_WORKSPACE", str(ws.root))
    monkeypatch.setenv("SEGHZ_NO_DEMO", "1")
    monkeypatch.setenv("SEGHZ_IMPORT_ROOTS", str(tmp_path))
    return lp, ip, ws

# ------------------------------------------------------------------------------------------------ pure helpers


@pytest.mark.parametrize("scale", [1.0, 0.5, (0.76, 0.7625), (2.0, 1.5)])
def test_points_drawing_is_the_inverse_of_canvas_points(scale):
    pts = np.array([[0, 0], [10.25, 3.5], [199, 159], [57.3, 88.8]])
    d = AP.points_drawing(pts, scale)
    assert [o["type"] for o in d["objects"]] == ["Circle"] * 4  # what the canvas' point tool stores (fabric.js 6)
    np.testing.assert_allclose(canvas_points(d, scale), pts, atol=0.02)  # fabric keeps 2 decimals


def test_points_drawing_places_a_point_as_the_canvas_point_tool_does():
    # a click at canvas (100.5, 50.5) is image pixel (100, 50) at scale 1: the same object the canvas sends
    obj = AP.points_drawing([[100, 50]], 1.0)["objects"][0]
    click = real_point(100.5, 50.5)
    for k in ("type", "originX", "originY", "left", "top", "radius", "strokeWidth", "stroke", "fill"):
        assert obj[k] == click[k], k
    assert AP.points_drawing([], 1.0) == {"objects": []} and AP.points_drawing(None, 2.0) == {"objects": []}
    with pytest.raises(ValueError, match="scale must be positive"):
        AP.points_drawing([[1, 2]], 0)


def test_pending_points_are_kept_per_pair():
    ss: dict = {}
    a = AP.pair_key("/d/label.png", "/d/image.png", (1, 10), (2, 20))
    assert AP.pair_key(" /d/label.png ", "/d/image.png", (1, 10), (2, 20)) == a
    b = AP.pair_key("/d/label.png", "/d/other.png", (1, 10), (3, 30))
    changed = AP.pair_key("/d/label.png", "/d/image.png", (1, 10), (9, 20))  # the image file changed
    assert len({a, b, changed}) == 3
    AP.keep_pending(ss, a, "label", [[1, 2], [3, 4]])
    AP.keep_pending(ss, a, "image", np.array([[5.5, 6.5]]))
    got = AP.pending_points(ss, a)
    np.testing.assert_allclose(got["label"], [[1, 2], [3, 4]])
    np.testing.assert_allclose(got["image"], [[5.5, 6.5]])
    for other in (b, changed):  # never shown on another pair
        assert AP.pending_points(ss, other)["label"].shape == (0, 2)
        assert AP.pending_points(ss, other)["image"].shape == (0, 2)
    AP.keep_pending(ss, b, "image", [[7, 8]])
    AP.drop_pending(ss, a)  # "Add" / "Clear" on pair a
    assert AP.pending_points(ss, a)["label"].shape == (0, 2)
    np.testing.assert_allclose(AP.pending_points(ss, b)["image"], [[7, 8]])  # the other pair's stay
    AP.keep_pending(ss, b, "image", [])  # cleared on the canvas: nothing left of pair b
    assert ss[AP.PENDING] == {}
    with pytest.raises(ValueError, match="side must be one of"):
        AP.keep_pending(ss, a, "map", [[1, 2]])


def test_pending_pairs_are_capped_least_recently_clicked_first():
    ss: dict = {}
    keys = [AP.pair_key(f"l{i}.png", f"i{i}.png") for i in range(AP.MAX_PENDING_PAIRS + 2)]
    for k in keys:
        AP.keep_pending(ss, k, "label", [[1, 1]])
    AP.keep_pending(ss, keys[2], "image", [[2, 2]])  # clicked again: the most recent
    AP.keep_pending(ss, AP.pair_key("new.png", "new.png"), "label", [[3, 3]])
    assert len(ss[AP.PENDING]) == AP.MAX_PENDING_PAIRS
    assert keys[0] not in ss[AP.PENDING] and keys[1] not in ss[AP.PENDING] and keys[3] not in ss[AP.PENDING]
    assert keys[2] in ss[AP.PENDING]


def test_canvas_key_names_the_side_and_differs_per_pair_generation_and_size():
    a, b = AP.pair_key("l.png", "i.png"), AP.pair_key("l.png", "j.png")
    k = AP.canvas_key("label", a, 0, (320, 400))
    assert k.startswith("al_canvas_label_0_400x320_")
    assert len({k, AP.canvas_key("label", b, 0, (320, 400)), AP.canvas_key("label", a, 1, (320, 400)),
                AP.canvas_key("label", a, 0, (320, 408)), AP.canvas_key("image", a, 0, (320, 400))}) == 5


def test_initial_drawing_is_fixed_while_the_canvas_lives_and_renewed_when_it_comes_back():
    ss: dict = {}
    key = AP.pair_key("l.png", "i.png")
    lk, ik = AP.canvas_key("label", key, 0, (320, 400)), AP.canvas_key("image", key, 0, (333, 400))
    AP.keep_pending(ss, key, "label", [[10, 20]])
    first = AP.initial_drawing(ss, lk, key, "label", 0.5)
    np.testing.assert_allclose(canvas_points(first, 0.5), [[10, 20]], atol=0.02)
    assert AP.initial_drawing(ss, ik, key, "image", 0.5) == {"objects": []}
    ss[lk] = {"drawing": "state"}  # the canvas is alive (its widget state is there)
    AP.keep_pending(ss, key, "label", [[10, 20], [30, 40]])  # a click on it
    assert AP.initial_drawing(ss, lk, key, "label", 0.5) is first  # not reloaded
    del ss[lk]  # another page was visited: the canvas is gone and comes back with the points
    back = AP.initial_drawing(ss, lk, key, "label", 0.5)
    np.testing.assert_allclose(canvas_points(back, 0.5), [[10, 20], [30, 40]], atol=0.02)
    # resized (a new canvas): the same image pixels at the new scale
    big_key = AP.canvas_key("label", key, 0, (640, 800))
    big = AP.initial_drawing(ss, big_key, key, "label", 1.0)
    np.testing.assert_allclose(canvas_points(big, 1.0), [[10, 20], [30, 40]], atol=0.02)
    assert ss[AP.CANVAS_SEED]["label"][0] == big_key and len(ss[AP.CANVAS_SEED]) == 2  # one canvas a side
    # another pair's canvas starts from that pair's points (none), even where a canvas of the same size lived
    other = AP.pair_key("l.png", "j.png")
    assert AP.initial_drawing(ss, AP.canvas_key("label", other, 0, (640, 800)), other, "label", 1.0) == {"objects": []}


# ------------------------------------------------------------------------------------------------ the page


class Browser:
    """The two canvases as the browser holds them: a canvas loads its ``initial_drawing`` when it is created (a new
    key) and then keeps its own objects (clicks added); leaving the page removes every canvas."""

    def __init__(self):
        self.canvases: dict[str, list] = {}
        self.calls: list[dict] = []

    def __call__(self, **kw):
        self.calls.append(kw)
        if kw["key"] not in self.canvases:
            self.canvases[kw["key"]] = list((kw.get("initial_drawing") or {}).get("objects") or [])
        return SimpleNamespace(json_data={"version": "6.7.1", "objects": list(self.canvases[kw["key"]])})

    def last(self, side: str) -> dict:
        return next(c for c in reversed(self.calls) if f"_{side}_" in c["key"])

    def click(self, side: str, *image_px):
        """Click image pixels on the ``side`` canvas shown last (at its scale, pixel centres)."""
        c = self.last(side)
        sc = c["width"] / c["shape"][1], c["height"] / c["shape"][0]
        for x, y in image_px:
            self.canvases[c["key"]].append(real_point((x + 0.5) * sc[0], (y + 0.5) * sc[1]))

    def leave(self):
        self.canvases.clear()


SHAPES = {"label": (160, 200), "image": (250, 300)}  # the pair fixture's label and image (rows, columns)


@pytest.fixture
def browser(monkeypatch):
    import ui.common

    b = Browser()

    def fake(**kw):
        kw["shape"] = SHAPES["label" if "_label_" in kw["key"] else "image"]
        return b(**kw)

    monkeypatch.setattr(ui.common, "canvas", fake)
    monkeypatch.setattr(AP, "column_width", lambda key="al_measure": 152)
    return b


def _shown(b: Browser, side: str) -> np.ndarray:
    """The image pixels the ``side`` canvas was created with (its initial drawing), at its scale."""
    c = b.last(side)
    return canvas_points(c.get("initial_drawing"), (c["width"] / c["shape"][1], c["height"] / c["shape"][0]))


def _caps(at) -> list[str]:
    return [str(c.value) for c in at.caption]


def _away_and_back(at, b: Browser):
    at.switch_page("app.py").run()
    assert not at.exception, [e.value for e in at.exception]
    b.leave()
    at.switch_page("pages/5_Align.py").run()
    assert not at.exception, [e.value for e in at.exception]


def test_clicked_points_survive_a_visit_to_another_page_and_are_added_once(pair, browser):
    lp, ip, _ = pair
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT).run()
    at.switch_page("pages/5_Align.py").run()
    at.text_input(key="al_label").set_value(str(lp))
    at.text_input(key="al_image").set_value(str(ip)).run()
    at.toggle(key="al_click").set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    lab, img = [(20, 30), (150, 40), (40, 120)], [(30, 50), (250, 60)]
    browser.click("label", *lab)
    browser.click("image", *img)
    at.run()
    assert "label: 3 point(s) clicked" in _caps(at) and "image: 2 point(s) clicked" in _caps(at)

    _away_and_back(at, browser)
    assert at.toggle(key="al_click").value
    np.testing.assert_allclose(_shown(browser, "label"), lab, atol=0.05)  # the canvases come back with the clicks
    np.testing.assert_allclose(_shown(browser, "image"), img, atol=0.05)
    caps = _caps(at)
    assert "label: 3 point(s) clicked" in caps and "image: 2 point(s) clicked" in caps, caps
    assert any("Restored the points" in c for c in caps), caps
    assert at.button(key="al_click_add").label == "Add the 2 clicked pair(s)"
    browser.click("image", (60, 190))  # one more click after the return pairs the third label point
    at.run()
    at.button(key="al_click_add").click().run()
    assert not at.exception, [e.value for e in at.exception]
    table = at.session_state["al_points"]
    assert len(table) == 3
    np.testing.assert_allclose(table[["label_x", "label_y"]].to_numpy(), lab, atol=0.05)
    np.testing.assert_allclose(table[["image_x", "image_y"]].to_numpy(), img + [(60, 190)], atol=0.05)

    # added: consumed, the next visit starts with empty canvases and nothing can be added twice
    assert _shown(browser, "label").shape == (0, 2) and _shown(browser, "image").shape == (0, 2)
    _away_and_back(at, browser)
    assert _shown(browser, "label").shape == (0, 2) and _shown(browser, "image").shape == (0, 2)
    assert at.button(key="al_click_add").disabled
    assert len(at.session_state["al_points"]) == 3


def test_pending_points_stay_with_their_pair_and_clear_consumes_them(pair, browser, tmp_path):
    lp, ip, _ = pair
    other = tmp_path / "other.png"
    write_rgb(other, np.full((250, 300, 3), 90, np.uint8))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT).run()
    at.switch_page("pages/5_Align.py").run()
    at.text_input(key="al_label").set_value(str(lp))
    at.text_input(key="al_image").set_value(str(ip)).run()
    at.toggle(key="al_click").set_value(True).run()
    browser.click("label", (20, 30), (150, 40))
    at.run()
    # another image of the same size: its canvases never show the first pair's points
    at.text_input(key="al_image").set_value(str(other)).run()
    assert not at.exception, [e.value for e in at.exception]
    assert _shown(browser, "label").shape == (0, 2)
    assert "label: 0 point(s) clicked" in _caps(at)
    # back to the first pair (after a visit to another page): its points are there again
    at.text_input(key="al_image").set_value(str(ip)).run()
    _away_and_back(at, browser)
    np.testing.assert_allclose(_shown(browser, "label"), [(20, 30), (150, 40)], atol=0.05)
    assert "label: 2 point(s) clicked" in _caps(at)
    # Clear: gone from the canvases and not restored again
    at.button(key="al_click_clear").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert _shown(browser, "label").shape == (0, 2) and "label: 0 point(s) clicked" in _caps(at)
    assert at.button(key="al_click_clear").disabled
    _away_and_back(at, browser)
    assert _shown(browser, "label").shape == (0, 2)
    assert len(at.session_state["al_points"]) == 0  # nothing was added


def test_the_installed_canvas_sends_the_restored_points_back_and_is_recreated_after_a_page_visit(pair, monkeypatch):
    """The installed streamlit-drawable-canvas (not a stand-in): a canvas created with the restored drawing sends
    that drawing back until it is drawn on (so the restored points count as clicked), keeps its drawing while it
    lives, and its state is gone after a visit to another page (so it is created again with the points)."""
    lp, ip, _ = pair
    monkeypatch.setattr(AP, "column_width", lambda key="al_measure": 152)
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT).run()
    at.switch_page("pages/5_Align.py").run()
    at.text_input(key="al_label").set_value(str(lp))
    at.text_input(key="al_image").set_value(str(ip))
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    p = at.session_state["al_pair"]
    key = AP.pair_key(p[0], p[1], p[3], p[4])
    at.session_state[AP.PENDING] = {key: {"label": [[20.0, 30.0], [150.0, 40.0]], "image": [[30.0, 50.0]]}}
    at.toggle(key="al_click").set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    caps = _caps(at)
    assert "label: 2 point(s) clicked" in caps and "image: 1 point(s) clicked" in caps, caps
    seeds = dict(at.session_state[AP.CANVAS_SEED])
    assert set(seeds) == {"label", "image"} and all(ck in at.session_state for ck, _ in seeds.values())  # alive
    at.run()
    assert dict(at.session_state[AP.CANVAS_SEED]) == seeds  # the same initial drawing while the canvases live
    # not created again, and still said: in a browser the canvas reports its size at once, and the caption shown
    # only on the creating run was gone 0.2 s later
    assert any("before (2 on the label, 1 on the image)" in c for c in _caps(at)), _caps(at)
    at.switch_page("app.py").run()
    at.switch_page("pages/5_Align.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("Restored the points" in c for c in _caps(at)), _caps(at)  # created again, with the points
    assert "label: 2 point(s) clicked" in _caps(at)
    at.button(key="al_click_add").click().run()
    assert not at.exception, [e.value for e in at.exception]
    np.testing.assert_allclose(at.session_state["al_points"].to_numpy(float), [[20, 30, 30, 50]], atol=0.05)
    assert key not in at.session_state[AP.PENDING]
    assert "label: 0 point(s) clicked" in _caps(at)
