"""Fixes from the browser review of the Map (Fetch imagery), Align and Train pages.

* Map, pixel-space scene: "Fetch imagery" showed "Not ready: bbox '' must be four numbers" before any input; now
  it says plainly that the scene has no location, leaves the box empty (never filled from pixel coordinates) and
  shows a neutral hint until a box is typed.
* Align: the label scheme defaulted to hz20 in an hz7 workspace (an hz7 label got the hz20 legend and was saved as an
  hz20 scene); it now defaults to the active model's scheme, else the workspace's most common scene scheme, else
  hz20, and says when the label reads as another scheme.
* Train: the progress line said "epoch 1/2 step 2/60" (steps over all epochs labelled per epoch) and sat at the
  last step while validating; now "epoch 1/2, step 2/30 of this epoch" and "validating epoch 1 (scene k/n)".
"""
from __future__ import annotations

import numpy as np
import pytest
from helpers_core import tiny_train_config, torch_one_thread  # noqa: F401 (fixture)
from streamlit.testing.v1 import AppTest

from seghz.classes import get_scheme
from seghz.data.io import write_index_mask, write_rgb
from seghz.store import Workspace
from tests.test_page_map import REPO, app, assert_ok, fake_map, texts, tiny_map_checkpoint, ws  # noqa: F401

HZ7, HZ20 = get_scheme("hz7"), get_scheme("hz20")
ALIGN_TIMEOUT = 120


# ------------------------------------------------------------------------------------------ Map: fetch imagery
def _add_pixel_scene(w: Workspace) -> str:
    """An aligned-like scene: a PNG with no CRS (pixel space)."""
    rng = np.random.default_rng(0)
    img = w.root / "scenes" / "pix.png"
    write_rgb(img, rng.integers(0, 255, (96, 128, 3), dtype=np.uint8))
    return w.add_scene("Aligned pixels", img, "hz7", scene_id="pix").id


def test_fetch_on_a_pixel_space_scene_says_so_and_shows_no_error_before_input(ws, fake_map):  # noqa: F811
    sid = _add_pixel_scene(ws)
    fake_map(None)
    at = app()
    at.session_state["map_scene"] = sid
    at.run()
    assert_ok(at)
    assert at.selectbox(key="map_scene").value == sid
    box = at.text_input(key=f"map_fetch_bbox_{sid}")
    assert box.value == ""  # never pre-filled from the pixel scene
    caps = [str(c.value) for c in at.caption]
    assert not any(c.startswith("Not ready") for c in caps), caps  # no error before the analyst types
    assert any("Type the box to fetch" in c for c in caps), caps  # a neutral hint instead
    assert at.button(key="map_fetch_go").disabled
    note = "\n".join(str(i.value) for i in at.info)
    assert "pixel space" in note and "no location" in note and "nothing to do with this one" in note, note
    assert any(e.label.startswith("Fetch imagery of a new area") for e in at.expander)
    # a typed box: the estimate, and the button is enabled (a new georeferenced area)
    box.input("120.150, 30.250, 120.152, 30.252").run()
    assert_ok(at)
    caps = [str(c.value) for c in at.caption]
    assert any(c.startswith("Estimate: ") for c in caps) and not any(c.startswith("Not ready") for c in caps)
    assert not at.button(key="map_fetch_go").disabled
    # a bad box, once typed, is still reported
    at.text_input(key=f"map_fetch_bbox_{sid}").input("1, 2").run()
    assert any("Not ready: bbox '1, 2' must be four numbers" in str(c.value) for c in at.caption)


def test_fetch_on_a_georeferenced_scene_is_prefilled_and_clearing_it_gives_the_hint(ws, fake_map):  # noqa: F811
    from tests.test_page_map import SCENE_ID

    fake_map(None)
    at = app().run()
    assert_ok(at)
    box = at.text_input(key=f"map_fetch_bbox_{SCENE_ID}")
    assert len(box.value.split(",")) == 4  # the scene's WGS-84 bounds
    assert not any("pixel space" in str(i.value) for i in at.info)
    assert any(e.label.startswith("Fetch imagery for this area") for e in at.expander)
    box.input("").run()
    caps = [str(c.value) for c in at.caption]
    assert any("Type the box to fetch" in c for c in caps) and not any(c.startswith("Not ready") for c in caps)


# ------------------------------------------------------------------------------------------ Align: label scheme
def _hz7_label(path, size=(64, 80)) -> None:
    lbl = np.zeros(size, np.uint8)
    lbl[:, 20:40], lbl[:, 40:60], lbl[:, 60:] = 2, 5, 6  # Green_land, Buildings, Road_land
    write_index_mask(path, lbl, HZ7)  # palette PNG in the hz7 colours


def _align(label, image, scheme: str | None = None) -> AppTest:
    at = AppTest.from_file(str(REPO / "pages" / "5_Align.py"), default_timeout=ALIGN_TIMEOUT)
    at.run()
    at.text_input(key="al_label").set_value(str(label))
    at.text_input(key="al_image").set_value(str(image))
    if scheme is not None:
        at.selectbox(key="al_scheme").set_value(scheme)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.fixture
def pair(tmp_path):
    lp, ip = tmp_path / "hz7_label.png", tmp_path / "image.png"
    _hz7_label(lp)
    write_rgb(ip, np.random.default_rng(1).integers(0, 255, (70, 90, 3), dtype=np.uint8))
    return lp, ip


def test_align_defaults_to_the_active_models_scheme_and_warns_when_read_as_another(ws, pair):  # noqa: F811
    lp, ip = pair
    assert ws.active_checkpoint().scheme == "hz7"
    at = _align(lp, ip)
    assert at.selectbox(key="al_scheme").value == "hz7"
    assert not at.main.warning and not at.main.error, [w.value for w in [*at.main.warning, *at.main.error]]
    legend = "\n".join(str(m.value) for m in at.markdown if "border-radius:3px" in str(m.value))
    assert "Buildings" in legend and "Irregular_Large_Buildings" not in legend  # the hz7 legend
    # read as hz20 by hand: the hz7 label decodes (same colours) but the page says what that means
    at.selectbox(key="al_scheme").set_value("hz20").run()
    warn = "\n".join(str(w.value) for w in at.main.warning)
    assert "also reads as hz7" in warn and "active model" in warn and "saved as a hz20 scene" in warn, warn
    assert "hz20's names and legend" in warn
    assert "choose hz7" in warn


def test_align_label_with_values_outside_the_scheme_names_the_schemes_it_reads_as(ws, tmp_path, pair):  # noqa: F811
    _lp, ip = pair
    lbl = np.zeros((64, 80), np.uint8)
    lbl[:, 40:] = 9  # High_Buildings2: hz20 only
    lp = tmp_path / "hz20_label.png"
    write_index_mask(lp, lbl, HZ20)
    at = _align(lp, ip)  # the active model's hz7 cannot read it: the page opens on the scheme it reads as
    assert at.selectbox(key="al_scheme").value == "hz20"
    assert not at.main.error and not at.main.warning
    at.selectbox(key="al_scheme").set_value("hz7").run()  # picked by hand: the error names the schemes it reads as
    err = "\n".join(str(e.value) for e in at.main.error)
    assert "not a hz7 label" in err and "reads as hz20" in err and "Label scheme" in err, err


def test_align_default_scheme_without_a_model_is_the_workspaces_most_common(tmp_path, monkeypatch, pair):
    lp, ip = pair
    w = Workspace(tmp_path / "ws")
    img = w.root / "scenes" / "s.png"
    write_rgb(img, np.zeros((16, 16, 3), np.uint8))
    for i, sch in enumerate(("hz7", "hz20", "hz7")):
        w.add_scene(f"s{i}", img, sch)
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("SEGHZ_WORKSPACE", str(w.root))
    monkeypatch.setenv("SEGHZ_NO_DEMO", "1")
    at = _align(lp, ip)
    assert at.selectbox(key="al_scheme").value == "hz7"
    assert "2 of the workspace's 3 scene(s)" in at.selectbox(key="al_scheme").help


def test_align_empty_workspace_keeps_hz20_and_notes_a_coarser_scheme(tmp_path, monkeypatch, pair):
    lp, ip = pair
    w = Workspace(tmp_path / "ws")
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("SEGHZ_WORKSPACE", str(w.root))
    monkeypatch.setenv("SEGHZ_NO_DEMO", "1")
    at = _align(lp, ip)
    assert at.selectbox(key="al_scheme").value == "hz20"
    assert not at.main.warning  # no model or scene to go by: a note, not a warning
    assert any("also a class of hz7" in str(c.value) for c in at.caption)


# ------------------------------------------------------------------------------------------ Train: progress text
def test_progress_message_helpers():
    from seghz.train.trainer import step_message, validation_message

    assert step_message(1, 2, 2, 30, 0.41234) == "epoch 1/2, step 2/30 of this epoch, loss 0.412"
    assert validation_message(1, 2, 3) == "validating epoch 1 (scene 2/3)"


def test_training_progress_counts_steps_per_epoch_and_reports_validation(tmp_path, torch_one_thread):  # noqa: F811
    from seghz.train.trainer import train

    rng = np.random.default_rng(0)

    def sample(seed):
        r = np.random.default_rng(seed)
        lbl = r.integers(0, 7, (32, 32)).astype(np.uint8)
        return r.integers(0, 255, (32, 32, 3), dtype=np.uint8), lbl

    tr, va = [sample(int(s)) for s in rng.integers(0, 99, 3)], [sample(100), sample(101)]
    got: list[tuple[float, str]] = []
    train(tiny_train_config(32, epochs=2, steps_per_epoch=3), tr, va, tmp_path / "m.safetensors",
          progress=lambda f, m: got.append((f, m)))
    msgs = [m for _, m in got]
    steps = [m for m in msgs if m.startswith("epoch ") and "step" in m]
    assert [m.rsplit(",", 1)[0] for m in steps] == [f"epoch {e}/2, step {s}/3 of this epoch"
                                                   for e in (1, 2) for s in (1, 2, 3)]
    vals = [(f, m) for f, m in got if m.startswith("validating")]
    assert [m for _, m in vals] == [f"validating epoch {e} (scene {k}/2)" for e in (1, 2) for k in (1, 2)]
    assert [f for f, _ in vals] == pytest.approx([0.5, 0.5, 1.0, 1.0])  # the bar stays at the epoch's end
    # validation follows the epoch's last step, before the next epoch's first one
    i = msgs.index("validating epoch 1 (scene 1/2)")
    assert msgs[i - 1].startswith("epoch 1/2, step 3/3") and msgs[i + 2].startswith("epoch 2/2, step 1/3")
