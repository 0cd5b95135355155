"""Stale information an analyst saw right after an action (AppTest; the workspaces of tests/test_pages.py and
tests/test_page_align.py):

1. After "Save as aligned label scene" (a real scene) the sidebar still said every scene was a synthetic demo scene:
   it was drawn before the save, in the same run. The page now runs again after a save, with the message kept.
2. After Promote the gate panel could still show a verdict naming the previous active model: a panel is now always
   against the active model at the time it is drawn (it says so when the page was drawn against another one), and a
   promote says which model is active and that the verdicts are against it.
3. The sidebar showed "val mIoU –" for an active refit the gate had just scored on val: it now uses the checkpoint's
   own validation score, else its cached evaluation of the val split at the current data version, saying which.
"""
from __future__ import annotations

from streamlit.testing.v1 import AppTest
from test_page_align import _load_points, _open, files  # noqa: F401  (fixture)
from test_pages import HZ7, app, assert_ok, tiny_checkpoint, ws  # noqa: F401  (fixtures)
from test_train_registry import _pick
from test_train_review_fixes import _copy, _done_job, _val

# ------------------------------------------------------------------------------------------------ 1. align save


def test_the_sidebar_counts_the_aligned_scene_right_after_its_save(files, tmp_path):  # noqa: F811
    from seghz.data.io import write_index_mask, write_rgb
    from seghz.data.scenes import import_scene
    from seghz.demo import generate_scene

    lp, ip, pts, ws_, _M = files
    for seed in (0, 1):
        rgb, lbl = generate_scene(64, seed)
        write_rgb(tmp_path / f"syn{seed}.png", rgb)
        write_index_mask(tmp_path / f"syn{seed}_label.png", lbl, HZ7)
        import_scene(ws_, tmp_path / f"syn{seed}.png", tmp_path / f"syn{seed}_label.png", scheme="hz7",
                     name=f"demo {seed}", split="val", synthetic=True)
    at = _open(lp, ip)
    assert any("every scene of this workspace (2) is a synthetic demo scene" in i.value for i in at.sidebar.info)
    _load_points(at, pts)
    at.text_input(key="al_name").set_value("real airport")
    at.button(key="al_save").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert [s.name for s in ws_.list_scenes() if not s.synthetic] == ["real airport"]
    assert not any("SYNTHETIC DEMO DATA" in i.value for i in at.sidebar.info), [i.value for i in at.sidebar.info]
    assert any("2 of 3 scenes are synthetic demo scenes" in c.value for c in at.sidebar.caption)
    assert any("Saved scene 'real airport'" in s.value for s in at.success)  # the save's message survives the rerun
    at.run()  # shown once
    assert not any("Saved scene" in s.value for s in at.success)


# ------------------------------------------------------------------------------------------------ 2. promote


def _gid_flagged(ws):  # noqa: F811
    """The active demo model scored 50 % per class on val, a registered "GID model" 30 % (flagged against it), and a
    finished job's candidate scored 30 %."""
    dv = ws.data_version("val")
    ws.record_class_metrics("tiny-test", "val", dv, _val(0.5)["val"]["per_class_iou"], source="eval")
    _copy(ws, "gid", "GID model")
    ws.record_class_metrics("gid", "val", dv, _val(0.3)["val"]["per_class_iou"], source="eval")
    _copy(ws, "cand", "model cand", metrics=_val(0.3), val_data_version=dv, parent_id="tiny-test")
    ws.record_class_metrics("cand", "val", dv, _val(0.3)["val"]["per_class_iou"], source="eval")
    _done_job(ws, "cand")


def _banners(at) -> list[str]:
    return [e.value for kind in ("error", "warning", "success", "info") for e in getattr(at, kind)
            if "Gate verdict" in e.value]


def test_after_a_promote_every_verdict_is_against_the_new_active_model(ws):  # noqa: F811
    _gid_flagged(ws)
    at = app("pages/4_Train.py").run()
    at.sidebar.text_input(key="seghz_analyst").input("Ann").run()  # promotions are recorded with a name
    at = _pick(at, 1)  # the GID model: flagged against the demo model
    assert any("Gate verdict: **FLAGGED** (active model: tiny test model)" in b for b in _banners(at)), _banners(at)
    at.checkbox(key="train_reg_override_gid").check().run()
    at.text_input(key="train_reg_override_reason_gid").input("real imagery").run()
    at.button(key="train_reg_promote_gid").click().run()
    assert_ok(at)
    assert ws.active_checkpoint().id == "gid"
    assert not [b for b in _banners(at) if "tiny test model" in b], _banners(at)
    assert [b for b in _banners(at) if "(active model: GID model)" in b]  # the job's candidate, against GID
    (done,) = [s.value for s in at.success if s.value.startswith("Promoted")]
    assert "**GID model** (`gid`)" in done and "in place of tiny test model" in done
    assert "Every gate verdict on this page is against it" in done
    at.run()  # said once
    assert not [s for s in at.success if s.value.startswith("Promoted")]


def _stale_gate_panel(root: str, candidate_id: str) -> None:
    """A gate panel drawn with the active model the page knew (the demo model) after another promote."""
    from seghz.store import Workspace
    from ui import train_gate

    w = Workspace(root)
    train_gate.show_gate(w, w.get_checkpoint(candidate_id), w.get_checkpoint("tiny-test"), prefix="t_",
                         settings=False)


def test_a_gate_panel_drawn_against_an_older_active_model_says_so_and_names_the_new_one(ws):  # noqa: F811
    """The page's active model (passed by the panel's caller) went stale while the job list polled on its own: the
    verdict is computed against the active model now, and the banner must name that one, not the old one."""
    _gid_flagged(ws)
    ws.set_active_checkpoint("gid")  # promoted elsewhere: another tab, a job's auto-promote, the CLI
    at = AppTest.from_function(_stale_gate_panel, args=(str(ws.root), "cand"), default_timeout=30).run()
    assert_ok(at)
    assert not [b for b in _banners(at) if "tiny test model" in b], _banners(at)
    assert [b for b in _banners(at) if "(active model: GID model)" in b], _banners(at)
    assert any("The active model changed to **GID model**" in i.value for i in at.info)

    # the promoted model itself: the active one, no verdict against the previous model, no Promote
    at = AppTest.from_function(_stale_gate_panel, args=(str(ws.root), "gid"), default_timeout=30).run()
    assert_ok(at)
    assert not _banners(at) and not at.button
    assert any("This checkpoint is the active one." in s.value for s in at.success)


# ------------------------------------------------------------------------------------------------ 3. sidebar mIoU


def _active_line(at) -> str:
    (line,) = [m.value for m in at.sidebar.markdown if m.value.startswith("**Active checkpoint**")]
    return line


def test_the_sidebar_uses_the_cached_val_evaluation_of_an_active_model_without_its_own_score(ws):  # noqa: F811
    at = app("pages/4_Train.py").run()
    assert_ok(at)
    assert "val mIoU 50.0 %" in _active_line(at)  # its own score, recorded at training

    _copy(ws, "refit", "refit of demo", parent_id="tiny-test")  # a head refit records no validation score
    ws.set_active_checkpoint("refit")
    at.run()
    assert "val mIoU –" in _active_line(at)  # nothing recorded anywhere: still a dash
    dv = ws.data_version("val")
    ws.add_evaluation("refit", "val", False, dv, {"tta": "none", "miou": 0.357, "per_class": {}})
    ws.add_evaluation("refit", "val", False, "an-older-version", {"tta": "none", "miou": 0.9, "per_class": {}})
    at.run()
    assert_ok(at)
    line = _active_line(at)
    assert "val mIoU 35.7 % (evaluated on this workspace's val split)" in line, line
    ws.set_active_checkpoint("tiny-test")
    at.run()
    assert "val mIoU 50.0 % (recorded at training)" in _active_line(at)  # it says which score it is
    ws.set_active_checkpoint("refit")

    # the val split changes (a new label version): that evaluation no longer describes it
    import numpy as np

    scene = ws.list_scenes("val")[0]
    confirm = np.zeros((scene.height, scene.width), bool)
    confirm[:4, :4] = True
    ws.save_label_edit(scene.id, 0, "ana", "confirm", confirm=confirm)
    assert ws.data_version("val") != dv
    at.run()
    assert "val mIoU –" in _active_line(at)
