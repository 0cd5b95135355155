"""Tests of seghz.gate (the regression gate), promotion with override, and the Train page's gate/rollback UI.

Metric dicts are hand-made; checkpoints are placeholder files (nothing here runs a model).
"""
from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

import pytest

from seghz import gate
from seghz.errors import ConflictError
from seghz.gate import DEFAULT_MARGIN, GateRefused, compare
from seghz.store import Workspace

REPO = Path(__file__).resolve().parents[1]
NAMES = ["Buildings", "Roads", "Water", "Trees"]


def pc(ious: dict, support: dict | None = None) -> dict:
    """Per-class scores as scores()['per_class'] gives them (support default 100)."""
    support = support or {}
    return {n: {"iou": v, "acc": v, "precision": v, "f1": v, "support": support.get(n, 100)} for n, v in ious.items()}


ACTIVE = {"Buildings": 0.60, "Roads": 0.50, "Water": 0.80, "Trees": 0.40}


# ------------------------------------------------------------------------------------------------ pure comparison


def test_pass_when_no_class_drops_beyond_margin():
    cand = {"Buildings": 0.61, "Roads": 0.49, "Water": 0.80, "Trees": 0.45}
    v = compare(pc(ACTIVE), pc(cand))
    assert v.status == "pass" and v.passed and v.offending == [] and v.excluded == []
    assert v.margin == DEFAULT_MARGIN == 0.02
    rows = {r["class"]: r for r in v.rows}
    assert rows["Roads"]["delta"] == pytest.approx(-0.01) and not rows["Roads"]["offending"]
    assert rows["Trees"]["delta"] == pytest.approx(0.05)
    assert [r["class"] for r in v.rows] == NAMES  # class order kept


def test_flagged_lists_offending_classes_and_deltas():
    cand = {"Buildings": 0.55, "Roads": 0.47, "Water": 0.90, "Trees": 0.41}
    v = compare(pc(ACTIVE), pc(cand), candidate_id="c", active_id="a", split="val", data_version="dv1")
    assert v.status == "flagged" and not v.passed
    assert v.offending_classes == ["Buildings", "Roads"]
    off = {o["class"]: o for o in v.offending}
    assert off["Buildings"]["delta"] == pytest.approx(-0.05)
    assert off["Buildings"]["active_iou"] == 0.60 and off["Buildings"]["candidate_iou"] == 0.55
    assert off["Roads"]["delta"] == pytest.approx(-0.03)
    assert "Buildings -0.050" in v.message and "Roads -0.030" in v.message
    assert (v.candidate_id, v.active_id, v.split, v.data_version) == ("c", "a", "val", "dv1")
    # a round trip through JSON-ready dicts (stored with a promotion)
    assert gate.Verdict.from_dict(v.to_dict()) == v


def test_margin_is_configurable_and_exact_margin_passes():
    cand = dict(ACTIVE, Buildings=0.58)  # exactly -0.02 (0.6 - 0.58 is 0.020000000000000018 in floats)
    assert compare(ACTIVE, cand).status == "pass"
    assert compare(ACTIVE, dict(ACTIVE, Buildings=0.5799)).status == "flagged"
    assert compare(ACTIVE, dict(ACTIVE, Buildings=0.55), margin=0.05).status == "pass"
    v = compare(ACTIVE, dict(ACTIVE, Buildings=0.595), margin=0.0)
    assert v.status == "flagged" and v.offending_classes == ["Buildings"]
    with pytest.raises(ValueError, match="margin"):
        compare(ACTIVE, ACTIVE, margin=-0.1)


def test_classes_absent_from_validation_labels_are_excluded():
    # Water is absent from the validation labels (support 0): the candidate's IoU there is 0 (false positives
    # only) but that must not flag it. Trees has no score at all (absent from labels and predictions).
    active = pc({"Buildings": 0.6, "Roads": 0.5, "Water": 0.3, "Trees": None}, support={"Water": 0, "Trees": 0})
    cand = pc({"Buildings": 0.6, "Roads": 0.5, "Water": 0.0, "Trees": None}, support={"Water": 0, "Trees": 0})
    v = compare(active, cand)
    assert v.status == "pass"
    assert [e["class"] for e in v.excluded] == ["Water", "Trees"]
    assert all("absent from the validation labels" in e["why"] for e in v.excluded)
    assert "Excluded: Water (absent from the validation labels)" in v.message
    rows = {r["class"]: r for r in v.rows}
    assert rows["Water"]["delta"] is None and not rows["Water"]["offending"]
    # plain {class: iou} dicts: None means absent; a class scored for one model only is excluded too
    v2 = compare({"Buildings": 0.6, "Water": None, "Roads": 0.5}, {"Buildings": 0.3, "Water": 0.0})
    assert v2.status == "flagged" and v2.offending_classes == ["Buildings"]
    why = {e["class"]: e["why"] for e in v2.excluded}
    assert "absent from the validation labels" in why["Water"]
    assert why["Roads"] == "not scored for the candidate"


def test_nothing_comparable_is_unknown_and_metric_shapes():
    assert compare({}, {}).status == "unknown"
    assert compare({"A": None}, {"A": None}).status == "unknown"
    meta_metrics = {"val": {"miou": 0.5, "per_class_iou": {"A": 0.5, "B": 0.4}}, "epoch": 3}
    scores_result = {"miou": 0.4, "per_class": pc({"A": 0.5, "B": 0.3})}
    assert gate.per_class_iou(meta_metrics) == {"A": (0.5, None), "B": (0.4, None)}
    assert gate.per_class_iou(scores_result) == {"A": (0.5, 100), "B": (0.3, 100)}
    v = compare(meta_metrics, scores_result)
    assert v.offending_classes == ["B"]
    assert gate.per_class_iou({"A": float("nan")}) == {"A": (None, None)}


def test_verdict_and_history_tables():
    v = compare(pc(ACTIVE), pc(dict(ACTIVE, Buildings=0.5, Water=0.0), support={"Water": 0}))
    df = gate.verdict_table(v)
    assert list(df.columns) == ["class", "active IoU", "candidate IoU", "Δ IoU", "gate"]
    assert list(df["gate"]) == ["OFFENDING", "ok", "excluded: absent from the validation labels", "ok"]
    html = gate.styled_verdict_table(v).to_html()
    assert "#fbd5d5" in html and "#b00020" in html  # offending row highlighted, its delta in red


# ------------------------------------------------------------------------------------------------ workspace


def _ckpt(ws: Workspace, cid: str, scheme: str = "hz7", parent: str | None = None) -> str:
    f = ws.root / "checkpoints" / f"{cid}.safetensors"
    f.write_bytes(b"placeholder")
    meta = {"arch": "Unet", "encoder": "e", "scheme": scheme,
            "metrics": {"val": {"miou": 0.5, "fwiou": 0.5, "oa": 0.5, "per_class_iou": {}}, "epoch": 1}}
    return ws.register_checkpoint(f, meta, checkpoint_id=cid, name=cid, parent_id=parent)


@pytest.fixture
def ws(tmp_path) -> Workspace:
    w = Workspace(tmp_path / "ws")
    _ckpt(w, "old")
    w.set_active_checkpoint("old")
    w.record_class_metrics("old", "val", w.data_version("val"), pc(ACTIVE))
    return w


def _candidate(ws: Workspace, cid: str, ious: dict, **kw) -> str:
    _ckpt(ws, cid, parent="old")
    ws.record_class_metrics(cid, "val", ws.data_version("val"), pc(ious, **kw), source="train")
    return cid


def test_check_against_active_on_same_data(ws):
    _candidate(ws, "good", dict(ACTIVE, Trees=0.5))
    _candidate(ws, "bad", dict(ACTIVE, Water=0.7))
    v = gate.check(ws, "good")
    assert v.status == "pass" and v.active_id == "old" and v.data_version == ws.data_version("val")
    v = gate.check(ws, "bad")
    assert v.status == "flagged" and v.offending_classes == ["Water"]
    assert gate.check(ws, "old").status == "pass"  # already active
    # the workspace margin setting
    gate.set_margin(ws, 0.15)
    assert gate.get_margin(ws) == 0.15 and gate.check(ws, "bad").status == "pass"
    assert gate.check(ws, "bad", margin=0.05).status == "flagged"
    gate.set_margin(ws, None)
    assert gate.get_margin(ws) == DEFAULT_MARGIN


def test_check_unknown_cases_and_fallbacks(ws):
    _ckpt(ws, "other", scheme="hz14")
    v = gate.check(ws, "other")
    assert v.status == "unknown" and "cannot be compared" in v.message
    _ckpt(ws, "unscored")
    v = gate.check(ws, "unscored")  # no compute: no scores on the validation data
    assert v.status == "unknown" and "no per-class scores" in v.message
    # with compute the evaluation fails (a placeholder file, no val scenes): still unknown, with the reason
    assert gate.check(ws, "unscored", compute=True).status == "unknown"
    # the evaluation cache (no TTA) serves as a source too
    ws.add_evaluation("unscored", "val", False, ws.data_version("val"),
                      {"tta": "none", "per_class": pc(dict(ACTIVE, Roads=0.1))})
    v = gate.check(ws, "unscored")
    assert v.status == "flagged" and v.offending_classes == ["Roads"]


def test_check_falls_back_to_an_older_common_data_version(ws):
    _ckpt(ws, "cand")
    ws.record_class_metrics("cand", "val", "dv-old", pc(dict(ACTIVE, Roads=0.3)))
    ws.record_class_metrics("old", "val", "dv-old", pc(ACTIVE))
    v = gate.check(ws, "cand")
    assert v.status == "flagged" and v.data_version == "dv-old"
    assert "earlier version of the 'val' labels" in v.message


def test_promote_refuses_flagged_and_records_override(ws):
    _candidate(ws, "bad", dict(ACTIVE, Water=0.7, Roads=0.45))
    with pytest.raises(GateRefused, match="flagged") as ei:
        gate.promote(ws, "bad", analyst="Ann")
    assert ei.value.verdict.offending_classes == ["Roads", "Water"]
    assert ws.active_checkpoint().id == "old"
    with pytest.raises(ValueError, match="analyst's name and a reason"):
        gate.promote(ws, "bad", override=True, analyst="Ann", reason="  ")
    with pytest.raises(ValueError, match="analyst's name and a reason"):
        ws.promote("bad", override=True, analyst="", reason="field check")
    assert ws.active_checkpoint().id == "old"
    assert [p.action for p in ws.promotion_history()] == ["set"]  # only the fixture's direct set

    v = ws.promote("bad", override=True, analyst="Ann", reason="water labels in val are wrong")
    assert v.status == "flagged"
    assert ws.active_checkpoint().id == "bad"
    p = ws.promotion_history()[0]
    assert p.action == "promote" and p.from_id == "old" and p.to_id == "bad"
    assert p.override is True and p.verdict == "flagged" and p.analyst == "Ann"
    assert p.reason == "water labels in val are wrong" and p.offending == ["Roads", "Water"]
    assert p.gate["offending"][1]["delta"] == pytest.approx(-0.1)
    assert datetime.fromisoformat(p.created_at).tzinfo is not None


def test_promote_pass_then_rollback(ws):
    _candidate(ws, "good", dict(ACTIVE, Trees=0.5))
    v = gate.promote(ws, "good", analyst="Bob")
    assert v.passed and ws.active_checkpoint().id == "good"
    p = ws.promotion_history()[0]
    assert (p.action, p.from_id, p.to_id, p.verdict, p.override, p.offending) == ("promote", "old", "good", "pass", False, [])
    assert ws.rollback_target() == "old"
    now = ws.rollback(analyst="Bob", reason="field complaints")
    assert now.id == "old" and ws.active_checkpoint().id == "old"
    hist = ws.promotion_history()
    assert hist[0].action == "rollback" and (hist[0].from_id, hist[0].to_id) == ("good", "old")
    assert hist[1].undone_by == hist[0].id


def test_promote_conflict_when_active_changed(ws, monkeypatch):
    _candidate(ws, "good", dict(ACTIVE, Trees=0.5))
    _ckpt(ws, "third")
    real_check = gate.check

    def racing_check(*a, **kw):
        v = real_check(*a, **kw)
        ws.set_active_checkpoint("third")  # someone else changes the active model meanwhile
        return v

    monkeypatch.setattr(gate, "check", racing_check)
    with pytest.raises(ConflictError, match="active checkpoint changed"):
        gate.promote(ws, "good")
    assert ws.active_checkpoint().id == "third"


def test_after_training_auto_promotes_only_on_pass(ws):
    logs: list[str] = []
    _candidate(ws, "bad", dict(ACTIVE, Buildings=0.1))
    v, promoted = gate.after_training(ws, "bad", auto_promote=True, job_id="job-1", log=logs.append)
    assert v.status == "flagged" and not promoted and ws.active_checkpoint().id == "old"
    assert any("not auto-promoted" in line for line in logs)
    _candidate(ws, "good", ACTIVE)
    v, promoted = gate.after_training(ws, "good", auto_promote=False)
    assert v.passed and not promoted and ws.active_checkpoint().id == "old"
    v, promoted = gate.after_training(ws, "good", auto_promote=True, job_id="job-2")
    assert promoted and ws.active_checkpoint().id == "good"
    p = ws.promotion_history()[0]
    assert p.analyst == "auto (job-2)" and p.verdict == "pass" and not p.override


# ------------------------------------------------------------------------------------------------ Train page


@pytest.fixture
def page_ws(ws, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("SEGHZ_WORKSPACE", str(ws.root))
    monkeypatch.setenv("SEGHZ_NO_DEMO", "1")
    _candidate(ws, "cand", dict(ACTIVE, Water=0.70, Trees=0.1), support={"Trees": 0})
    jid = ws.create_job("train", {"epochs": 1, "name": "cand"})
    ws.update_job(jid, status="done", progress=1.0, result={"checkpoint_id": "cand", "gate": "flagged"})
    return ws


def _app():
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(str(REPO / "pages/4_Train.py"), default_timeout=30)


def _table(at, column: str):
    """The (first) dataframe of the run that has ``column``."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def test_train_page_shows_verdict_and_override_path(page_ws):
    ws = page_ws
    at = _app().run()
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in at.error]
    assert any("Gate verdict: **FLAGGED**" in e and "Water -0.100" in e for e in errors), errors
    table = _table(at, "candidate IoU")
    assert list(table["class"]) == NAMES
    gates = dict(zip(table["class"], table["gate"]))
    assert gates["Water"] == "OFFENDING" and gates["Buildings"] == "ok" and gates["Trees"].startswith("excluded")
    promote = at.button(key="train_promote_cand")
    assert promote.disabled  # flagged: needs the override
    assert at.text_input(key="train_override_reason_cand").disabled

    at.checkbox(key="train_override_cand").check().run()
    assert at.button(key="train_promote_cand").disabled  # no reason, no analyst yet
    at.text_input(key="train_override_reason_cand").input("val water labels are stale").run()
    assert any("analyst name" in w.value for w in at.warning)
    assert at.button(key="train_promote_cand").disabled
    at.sidebar.text_input(key="seghz_analyst").input("Ann Analyst").run()
    assert not at.button(key="train_promote_cand").disabled
    at.button(key="train_promote_cand").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert ws.active_checkpoint().id == "cand"
    p = ws.promotion_history()[0]
    assert p.override and p.analyst == "Ann Analyst" and p.reason == "val water labels are stale"
    assert p.offending == ["Water"] and p.verdict == "flagged"
    assert any("This checkpoint is the active one" in s.value for s in at.success)
    hist = _table(at, "override")
    assert list(hist["action"])[:2] == ["promote", "set"] and hist["override"].iloc[0] == "yes"

    # roll back from the page
    at.button(key="train_rollback").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert ws.active_checkpoint().id == "old"
    assert ws.promotion_history()[0].action == "rollback"
    assert ws.promotion_history()[0].analyst == "Ann Analyst"


def test_train_page_pass_promotes_directly(page_ws):
    ws = page_ws
    _candidate(ws, "good", dict(ACTIVE, Trees=0.6))
    jid = ws.create_job("train", {"epochs": 1})
    ws.update_job(jid, status="done", progress=1.0, result={"checkpoint_id": "good"})
    at = _app().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="train_job_sel").value == jid  # the newest job is shown
    assert any("Gate verdict: **PASS**" in s.value for s in at.success)
    assert "train_override_good" not in [c.key for c in at.checkbox]  # no override needed
    at.button(key="train_promote_good").click().run()
    assert ws.active_checkpoint().id == "good"
    assert ws.promotion_history()[0].verdict == "pass"
