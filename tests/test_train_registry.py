"""The Train page's checkpoint registry (ui.registry): every registered model with its status and lineage; a picked
one is gated against the active model and promoted, or archived (its weights deleted, its row kept)."""
from __future__ import annotations

import importlib

from test_pages import app, assert_ok, texts, tiny_checkpoint, ws  # noqa: F401  (fixtures)

import ui.common
from seghz import report


def _add(ws, cid: str, parent: str | None, recipe: dict) -> str:  # noqa: F811
    src = ws.checkpoint_path("tiny-test")
    dst = ws.root / "checkpoints" / f"{cid}.safetensors"
    dst.write_bytes(src.read_bytes())
    active = ws.get_checkpoint("tiny-test")
    return ws.register_checkpoint(dst, {"arch": active.arch, "encoder": active.encoder, "scheme": "hz7",
                                        "metrics": active.metrics}, checkpoint_id=cid, name=f"model {cid}",
                                  parent_id=parent, recipe=recipe, train_scenes=["train-farm"])


def _archive_popover(at):
    (pop,) = [p.proto.popover for p in at.get("popover") if p.proto.popover.label == "Archive…"]
    return pop


def _table_key(at) -> str:
    """The registry table's widget key: it names the ids shown (a changed list starts with no selection)."""
    import hashlib

    (table,) = [d.value for d in at.dataframe if "trained on" in d.value.columns]
    return "train_registry_" + hashlib.sha1(" ".join(table["id"]).encode()).hexdigest()[:10]


def _pick(at, row: int):
    at.session_state[_table_key(at)] = {"selection": {"rows": [row], "columns": []}}
    return at.run()


def test_registry_table_rows():
    from types import SimpleNamespace as NS

    cks = [NS(id="b", name="B", created_at="2026-11-29T05:00:00+00:00", parent_id="a", arch="Unet", encoder="e",
              scheme="hz7", metrics={"val": {"miou": 0.5}}, job_id="j1", note="fine-tuned\nmore", archived_at=None),
           NS(id="a", name="A", created_at="2026-11-28T05:00:00+00:00", parent_id=None, arch="Unet", encoder="e",
              scheme="hz7", metrics={}, job_id=None, note="", archived_at=None),
           NS(id="z", name="Z", created_at="2026-11-27T05:00:00+00:00", parent_id=None, arch="", encoder="",
              scheme="hz7", metrics={}, job_id=None, note="", archived_at="2026-11-29T06:00:00+00:00")]
    df = report.registry_table(cks, active_id="b", rollback_id="a", learned={"b": {"s1", "s2"}}, unknown={"a"})
    assert df["status"].tolist() == ["★ active", "↩ rollback target", "archived"]
    assert df["trained on"].tolist() == ["2 scene(s)", "not recorded", "no workspace scene"]
    assert df["val mIoU"].iloc[0] == 0.5 and df["val mIoU"].isna().iloc[1]
    assert df["note"].tolist() == ["fine-tuned", "", ""] and df["model"].tolist()[1:] == ["Unet/e", ""]


def test_a_registered_checkpoint_is_gated_promoted_and_the_old_one_archived(ws, monkeypatch):  # noqa: F811
    # imported before ui.common is patched: a module first imported under the patch binds the stand-in by
    # ``from ui.common import analyst_name``, and the teardown would then "restore" the stand-in (every later test
    # of the session had an analyst named Ann)
    for name in ("ui.registry", "ui.train_gate"):
        importlib.import_module(name)
    monkeypatch.setattr(ui.common, "analyst_name", lambda: "Ann")
    monkeypatch.setattr("ui.registry.analyst_name", lambda: "Ann")
    monkeypatch.setattr("ui.train_gate.analyst_name", lambda: "Ann")
    _add(ws, "cand", "tiny-test", {"epochs": 5, "lr": 0.002})
    _add(ws, "cand2", "cand", {"epochs": 20, "lr": 0.002})
    at = app("pages/4_Train.py").run()
    assert_ok(at)
    (table,) = [d.value for d in at.dataframe if "trained on" in d.value.columns]
    assert table["id"].tolist() == ["cand2", "cand", "tiny-test"]
    assert table["status"].tolist() == ["", "", "★ active"]
    assert "Pick a checkpoint in the table" in texts(at)

    at = _pick(at, 0)  # cand2: lineage with what each step changed, then the gate
    assert_ok(at)
    t = texts(at)
    assert "**model cand2** (`cand2`): epochs 5→20" in t and "↳ **model cand** (`cand`)" in t
    assert "↳ **tiny test model** (`tiny-test`)" in t and "Trained on: train-farm." in t
    assert "Regression gate" in t and "(Change them under Gate settings" in t
    # registered from a file: no per-class scores on this workspace's val split yet, so no verdict and no Promote
    assert any("Gate verdict: **UNKNOWN**" in w.value for w in at.warning)
    assert at.button(key="train_reg_promote_cand2").disabled
    at.button(key="train_reg_gate_eval_cand2").click().run()  # score both: the same weights, zero deltas
    assert_ok(at)
    assert any("Gate verdict: **PASS**" in s.value for s in at.success)
    assert not at.button(key="train_reg_promote_cand2").disabled
    at.button(key="train_reg_promote_cand2").click().run()
    assert_ok(at)
    assert ws.active_checkpoint().id == "cand2" and ws.rollback_target() == "tiny-test"

    # archive: the active one and the rollback target cannot be; cand can
    at = _pick(at, 0)
    assert "This checkpoint is the active one." in texts(at)
    assert _archive_popover(at).disabled and "it is the active model" in _archive_popover(at).help
    at = _pick(at, 2)  # tiny-test, the rollback target
    assert _archive_popover(at).disabled and "a rollback would return to it" in _archive_popover(at).help
    at = _pick(at, 1)  # cand
    at.text_input(key="train_reg_archive_reason_cand").input("superseded").run()
    at.button(key="train_reg_archive_cand").click().run()
    assert_ok(at)
    assert ws.get_checkpoint("cand").archived and not ws.checkpoint_path("cand").exists()
    assert "Archived model cand (`cand`); its weights file was deleted." in [s.value for s in at.success]
    (table,) = [d.value for d in at.dataframe if "trained on" in d.value.columns]
    assert table["id"].tolist() == ["cand2", "tiny-test"]
    at = _pick(at, 0)
    assert "This checkpoint is the active one." in texts(at)
    _add(ws, "late", "cand2", {"epochs": 1})  # a job finishing meanwhile: the rows shift, the selection goes
    at.run()
    assert "Pick a checkpoint in the table" in texts(at) and "This checkpoint is the active one." not in texts(at)
    at.toggle(key="train_registry_archived").set_value(True).run()
    (table,) = [d.value for d in at.dataframe if "trained on" in d.value.columns]
    assert table["status"].tolist() == ["", "★ active", "archived", "↩ rollback target"]
