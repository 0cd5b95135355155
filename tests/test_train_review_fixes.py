"""Fixes from an analyst's browser review of the Train page and the shared sidebar (ui/common.py, ui/candidates.py,
ui/registry.py, pages/4_Train.py); same prepared workspace as tests/test_pages.py.

1. The analyst name was lost after Labels → "Promote on the Train page" (the real browser round trip is
   tests/browser/test_navigation_browser.py::test_analyst_name_survives_switch_page_from_a_fragment; here: a
   page's first run fills the box from the session's kept name whatever the widget state says).
2. "Scores recorded during training" ranked two checkpoints' scores measured on different validation data.
3. After Promote, the "Start from" radio showed neither option selected (its option texts named the active model).
4. "Roll back to X" was one click with no confirmation.
5. A synthetic-trained active model on real scenes gave no warning; the synthetic-data box alarmed on every page.
"""
from __future__ import annotations

from types import SimpleNamespace as NS

from test_pages import HZ7, app, assert_ok, texts, tiny_checkpoint, ws  # noqa: F401  (fixtures)

import ui.common


def _copy(ws, cid: str, name: str, **kw) -> str:  # noqa: F811
    """Register a copy of the tiny active checkpoint's file (marked ``synthetic: true``) as ``cid``."""
    src = ws.checkpoint_path("tiny-test")
    dst = ws.root / "checkpoints" / f"{cid}.safetensors"
    dst.write_bytes(src.read_bytes())
    active = ws.get_checkpoint("tiny-test")
    meta = {"arch": active.arch, "encoder": active.encoder, "scheme": "hz7", "metrics": kw.pop("metrics", {})}
    return ws.register_checkpoint(dst, meta, checkpoint_id=cid, name=name, **kw)


def _val(miou: float) -> dict:
    return {"val": {"miou": miou, "fwiou": miou, "oa": miou, "per_class_iou": {n: miou for n in HZ7.names}}}


def _done_job(ws, cid: str) -> str:  # noqa: F811
    jid = ws.create_job("train", {"epochs": 1})
    ws.update_job(jid, status="done", progress=1.0, result={"checkpoint_id": cid})
    return jid


# ------------------------------------------------------------------------------------------------ 1. analyst name


def test_a_pages_first_run_shows_the_kept_name_even_when_the_box_state_says_otherwise(ws):  # noqa: F811
    """In the browser, the Train page's box is another widget than the Labels page's (the id includes the page), and
    the run a switch_page stops skips the cleanup that carries the value over: the box started empty although the
    session key still read the name, so nothing put it back, and the empty run overwrote the kept name."""
    at = app("pages/4_Train.py")
    at.session_state["seghz_analyst_kept"] = "Ann"
    at.session_state["seghz_analyst"] = ""  # what the new page's widget came up with
    at.run()
    assert_ok(at)
    assert at.sidebar.text_input(key="seghz_analyst").value == "Ann"
    assert at.session_state["seghz_analyst_kept"] == "Ann"
    assert "Enter your analyst name in the sidebar to promote" not in texts(at)
    # on the same page the box is the analyst's: what they type stays, also through the next runs
    at.sidebar.text_input(key="seghz_analyst").input("Bob").run()
    at.run()
    assert at.sidebar.text_input(key="seghz_analyst").value == "Bob"
    assert at.session_state["seghz_analyst_kept"] == "Bob"


# ------------------------------------------------------------------------------------------------ 2. training scores


def test_training_scores_caveat_rules():
    from ui.candidates import training_scores_caveat

    a = NS(name="A", scheme="hz7", val_data_version="v1")
    assert training_scores_caveat(a, NS(name="B", scheme="hz7", val_data_version="v1")) is None
    assert training_scores_caveat(None, a) is None
    assert "different versions of the validation split" in training_scores_caveat(
        a, NS(name="B", scheme="hz7", val_data_version="v2"))
    assert "different class schemes" in training_scores_caveat(a, NS(name="B", scheme="gid15", val_data_version="v1"))
    unknown = training_scores_caveat(NS(name="demo", scheme="hz7", val_data_version=None), a)
    assert "the scores of the active model (demo) were measured" in unknown and "does not know" in unknown


def _scores_expander(at):
    (exp,) = [e for e in at.expander if e.label.startswith("Scores recorded during training")]
    return exp


def _scores_table(at, new_name: str):
    (df,) = [d.value for d in at.dataframe if f"new ({new_name})" in d.value.columns]
    return df


def test_training_scores_on_different_validation_data_say_so_and_show_no_delta(ws):  # noqa: F811
    """The review's case: the active model (registered from a file: its scores are on its own synthetic validation
    data) against a new model scored on this workspace's val split, shown as Δ −9.9 pp above "Gate verdict: PASS"."""
    dv = ws.data_version("val")
    _copy(ws, "cand", "model cand", metrics=_val(0.401), val_data_version=dv, parent_id="tiny-test")
    _done_job(ws, "cand")
    at = app("pages/4_Train.py").run()
    assert_ok(at)
    exp = _scores_expander(at)
    assert "not comparable" in exp.label
    warning = " ".join(w.value for w in exp.warning)
    assert "not comparable" in warning and "tiny test model" in warning and "regression gate" in warning
    assert "Δ (pp)" not in _scores_table(at, "model cand").columns

    # both scored on the same version of the val split: the difference is meaningful and shown
    _copy(ws, "base", "model base", metrics=_val(0.5), val_data_version=dv)
    ws.set_active_checkpoint("base")
    at.run()
    assert_ok(at)
    exp = _scores_expander(at)
    assert exp.label == "Scores recorded during training" and not exp.warning
    table = _scores_table(at, "model cand")
    assert abs(table["Δ (pp)"].iloc[0] - (40.1 - 50.0)) < 1e-6
    assert any("same validation data" in c.value for c in exp.caption)


def test_a_job_result_that_is_already_active_is_compared_with_its_parent_not_itself(ws):  # noqa: F811
    """Once a job's checkpoint was promoted, "active" and "new" were the same model: a table of identical columns with
    Δ 0.0 everywhere. It is compared with the model it was trained from."""
    dv = ws.data_version("val")
    _copy(ws, "base", "model base", metrics=_val(0.5), val_data_version=dv)
    _copy(ws, "cand", "model cand", metrics=_val(0.6), val_data_version=dv, parent_id="base")
    _done_job(ws, "cand")
    ws.set_active_checkpoint("cand")
    at = app("pages/4_Train.py").run()
    assert_ok(at)
    exp = _scores_expander(at)
    table = _scores_table(at, "model cand")
    assert list(table.columns[1:3]) == ["parent (model base)", "new (model cand)"]
    assert abs(table["Δ (pp)"].iloc[0] - (60.0 - 50.0)) < 1e-6
    assert not [d for d in at.dataframe if "active (model cand)" in d.value.columns]
    assert not any("regression gate below" in c.value for c in exp.caption)
    assert any("This checkpoint is the active one" in s.value for s in at.success)


# ------------------------------------------------------------------------------------------------ 3. start from


def test_start_from_keeps_a_valid_selection_when_the_active_model_changes(ws):  # noqa: F811
    """The browser keeps a radio's selection as its option text: a text naming the active model matched no option
    once Promote changed it, and neither option showed selected. The texts no longer depend on the active model
    (its name is in the caption)."""
    _copy(ws, "b", "model b")
    at = app("pages/4_Train.py").run()
    radio = at.radio(key="train_start")
    before = list(radio.options)
    assert radio.value == "finetune"
    ws.set_active_checkpoint("b")
    at.run()
    assert_ok(at)
    radio = at.radio(key="train_start")
    assert list(radio.options) == before  # the selection the browser holds still names an option
    assert radio.value == "finetune" and radio.options[radio.index] == before[0]
    assert radio.proto.captions[0] == "fine-tunes model b"
    assert any("Fine-tunes **model b**" in m.value for m in at.markdown)


# ------------------------------------------------------------------------------------------------ 4. rollback


def _rollback_popover(at):
    pops = [p for p in at.get("popover") if p.proto.popover.label.startswith("Roll back to")]
    assert len(pops) == 1, [p.proto.popover.label for p in at.get("popover")]
    return pops[0]


def test_rollback_asks_first_and_says_what_it_does(ws):  # noqa: F811
    _copy(ws, "b", "model b")
    ws.set_active_checkpoint("b")
    assert ws.rollback_target() == "tiny-test"
    at = app("pages/4_Train.py").run()
    assert_ok(at)
    pop = _rollback_popover(at)
    assert pop.proto.popover.label == "Roll back to tiny test model…"
    assert pop.proto.popover.disabled and "analyst name" in pop.proto.popover.help

    at.sidebar.text_input(key="seghz_analyst").input("Ann").run()
    pop = _rollback_popover(at)
    assert not pop.proto.popover.disabled
    text = " ".join(m.value for m in pop.markdown)
    assert "**tiny test model** (`tiny-test`)" in text and "in place of **model b** (`b`)" in text
    assert "active model" in text and "**Ann**" in text
    assert ws.active_checkpoint().id == "b"  # opening the page, entering a name: nothing rolled back
    assert [b.key for b in pop.button] == ["train_rollback"]  # the only way to roll back is inside the popover

    at.text_input(key="train_rollback_reason").input("b predicts water on roofs").run()
    at.button(key="train_rollback").click().run()
    assert_ok(at)
    assert ws.active_checkpoint().id == "tiny-test"
    p = ws.promotion_history()[0]
    assert p.action == "rollback" and p.analyst == "Ann" and p.reason == "b predicts water on roofs"
    assert any("tiny test model (`tiny-test`) is the active model" in s.value for s in at.success)
    assert not [p for p in at.get("popover") if p.proto.popover.label.startswith("Roll back to")]  # nothing left


# ------------------------------------------------------------------------------------------------ 5. synthetic


def _unmarked_checkpoint(path) -> dict:
    """A tiny hz7 checkpoint file whose metadata does not say ``synthetic`` (a model trained elsewhere)."""
    import torch

    from seghz.models.checkpoint import save_checkpoint
    from seghz.models.registry import build_model

    torch.manual_seed(1)
    meta = {"arch": "FPN", "encoder": "tu-mobilenetv3_small_050", "num_classes": HZ7.num_classes,
            "scheme": HZ7.to_json(), "normalization": {"mean": [0.5] * 3, "std": [0.5] * 3}, "tile_size": 256,
            "metrics": _val(0.6)}
    save_checkpoint(path, build_model("FPN", "tu-mobilenetv3_small_050", HZ7.num_classes), meta)
    return {**meta, "scheme": "hz7"}


def _add_real_scene(ws, tmp_path) -> str:  # noqa: F811
    from seghz.data.io import write_index_mask, write_rgb
    from seghz.data.scenes import import_scene
    from seghz.demo import generate_scene

    rgb, lbl = generate_scene(128, 5)  # the pixels do not matter: the scene is registered as real imagery
    write_rgb(tmp_path / "real.png", rgb)
    write_index_mask(tmp_path / "real_label.png", lbl, HZ7)
    return import_scene(ws, tmp_path / "real.png", tmp_path / "real_label.png", scheme="hz7", name="real town",
                        split="train", synthetic=False).id


def test_which_checkpoints_learned_from_synthetic_data_only(ws, tmp_path):  # noqa: F811
    real = _add_real_scene(ws, tmp_path)
    train_syn = [s.id for s in ws.list_scenes("train") if s.synthetic]
    dst = ws.root / "checkpoints" / "gid.safetensors"
    ws.register_checkpoint(dst, _unmarked_checkpoint(dst), checkpoint_id="gid", name="gid15 model")
    ws.register_checkpoint(dst, _unmarked_checkpoint(dst), checkpoint_id="in-app-syn", name="in-app synthetic",
                           train_scenes=train_syn)
    _copy(ws, "demo-on-real", "demo fine-tuned on real", parent_id="tiny-test", train_scenes=[real])
    _copy(ws, "demo-refit", "demo refit on synthetic", parent_id="tiny-test", train_scenes=train_syn)
    assert ui.common.synthetic_trained(ws) == {"tiny-test", "in-app-syn", "demo-refit"}


def test_sidebar_warns_when_a_synthetic_model_is_active_on_real_scenes(ws, tmp_path):  # noqa: F811
    """The review: the synthetic demo model predicted real scenes with no warning while a real model was registered,
    and the red "SYNTHETIC DEMO DATA" box showed on every page even for real scenes."""
    at = app("pages/4_Train.py").run()  # every scene synthetic: a plain notice, nothing about the model
    assert_ok(at)
    assert any("SYNTHETIC DEMO DATA" in i.value and "every scene of this workspace (2)" in i.value
               for i in at.sidebar.info)
    assert not at.sidebar.error

    _add_real_scene(ws, tmp_path)
    dst = ws.root / "checkpoints" / "gid.safetensors"
    ws.register_checkpoint(dst, _unmarked_checkpoint(dst), checkpoint_id="gid", name="gid15 real model")
    for page in ("app.py", "pages/4_Train.py"):
        at = app(page).run()
        assert_ok(at)
        (err,) = [e.value for e in at.sidebar.error]
        assert "The active model (tiny test model) was trained on synthetic demo data" in err
        assert "predictions on the 1 real scene of this workspace mean nothing" in err
        assert "Train page (Checkpoint registry)" in err and "gid15 real model" in err
        assert not any("SYNTHETIC DEMO DATA" in i.value for i in at.sidebar.info)
        assert any("2 of 3 scenes are synthetic demo scenes" in c.value for c in at.sidebar.caption)

    ws.set_active_checkpoint("gid")
    at = app("pages/4_Train.py").run()
    assert_ok(at)
    assert not at.sidebar.error
    assert any("2 of 3 scenes are synthetic demo scenes" in c.value for c in at.sidebar.caption)


def test_the_gate_says_when_its_yardstick_is_only_synthetic_scenes(ws, tmp_path):  # noqa: F811
    """The review: the real GID model was flagged "Forest −98.7 pp" against the demo model on the synthetic val scene,
    and no screen said the val split was synthetic."""
    from seghz.data.io import write_index_mask, write_rgb
    from seghz.data.scenes import import_scene
    from seghz.demo import generate_scene
    from ui.train_gate import synthetic_yardstick

    _copy(ws, "cand", "model cand", metrics=_val(0.6), val_data_version=ws.data_version("val"), parent_id="tiny-test")
    _done_job(ws, "cand")
    at = app("pages/4_Train.py").run()
    assert_ok(at)
    assert any("holds only synthetic demo scenes (1)" in w.value for w in at.warning)
    assert synthetic_yardstick(ws, "test") is None  # an empty split: the gate says that itself
    rgb, lbl = generate_scene(64, 5)
    write_rgb(tmp_path / "real.png", rgb)
    write_index_mask(tmp_path / "real_label.png", lbl, HZ7)
    import_scene(ws, tmp_path / "real.png", tmp_path / "real_label.png", scheme="hz7", name="real", split="val")
    at.run()
    assert_ok(at)
    assert not any("synthetic demo scenes" in w.value for w in at.warning)
