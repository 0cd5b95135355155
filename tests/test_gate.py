"""Tests of seghz.gate (the regression gate), promotion with override, and the Train page's gate/rollback UI.

Metric dicts are hand-made; checkpoints are placeholder files (nothing here runs a model).
"""
from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

import numpy as np
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
    # the text in percentage points (the numbers above stay fractions): worst first, then the margin
    assert "Buildings −5.0 pp, Roads −3.0 pp (margin 2.0 pp)." in v.message
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
    assert list(df.columns) == ["class", "active IoU", "candidate IoU", "Δ IoU", "interval", "gate"]
    assert list(df["gate"]) == ["OFFENDING", "ok", "excluded: absent from the validation labels", "ok"]
    assert list(df["interval"]) == ["—"] * 4  # no per-scene evaluations, no intervals
    html = gate.styled_verdict_table(v).to_html()
    assert "#fbd5d5" in html and "#b00020" in html  # offending row highlighted, its delta in red


def _boot(spans: dict, scenes: int = 30) -> dict:
    """A paired_bootstrap-shaped result with hand-set per-class intervals (active = a, candidate = b)."""
    return {"level": 0.95, "scenes": scenes,
            "per_class": {n: (None if v is None else {"delta": None, "lo": v[0], "hi": v[1]}) for n, v in spans.items()}}


def test_intervals_margin_rule_flags_but_names_drops_within_noise():
    cand = {"Buildings": 0.55, "Roads": 0.47, "Water": 0.80, "Trees": 0.40}  # -0.05 and -0.03
    spans = {"Buildings": (-0.09, -0.01), "Roads": (-0.08, 0.02), "Water": (-0.01, 0.01), "Trees": (-0.02, 0.02)}
    v = compare(pc(ACTIVE), pc(cand), intervals=_boot(spans))
    assert v.status == "flagged" and v.rule == "margin" and v.offending_classes == ["Buildings", "Roads"]
    assert (v.level, v.scenes) == (0.95, 30)
    rows = {r["class"]: r for r in v.rows}
    assert (rows["Buildings"]["lo"], rows["Buildings"]["hi"]) == (-0.09, -0.01) and not rows["Buildings"]["within_noise"]
    assert rows["Roads"]["within_noise"] and rows["Roads"]["offending"]
    assert not rows["Water"]["within_noise"]  # no drop beyond the margin: nothing to say
    assert "Buildings −5.0 [−9.0, −1.0] pp" in v.message
    assert "Within the tile noise (their 95 % interval over 30 validation scenes holds 0): Roads −3.0 [−8.0, +2.0] pp" in v.message
    table = gate.verdict_table(v)
    assert list(table["gate"]) == ["OFFENDING", "OFFENDING (within tile noise)", "ok", "ok"]
    assert list(table["interval"])[:2] == ["[−9.0, −1.0] pp", "[−8.0, +2.0] pp"]
    assert gate.Verdict.from_dict(v.to_dict()) == v


def test_interval_rule_flags_only_drops_beyond_the_noise():
    cand = {"Buildings": 0.55, "Roads": 0.47, "Water": 0.70, "Trees": 0.40}
    spans = {"Buildings": (-0.09, -0.01), "Roads": (-0.08, 0.02), "Water": None, "Trees": (-0.02, 0.02)}
    v = compare(pc(ACTIVE), pc(cand), intervals=_boot(spans), rule="interval")
    # Roads' drop is within the noise; Water has no interval, so the margin rule decides it
    assert v.status == "flagged" and v.offending_classes == ["Buildings", "Water"]
    assert "beyond the tile noise" in v.message and "Not flagged, within the tile noise" in v.message
    assert dict(zip(gate.verdict_table(v)["class"], gate.verdict_table(v)["gate"]))["Roads"] == "ok (drop within tile noise)"
    css = gate.styled_verdict_table(v).to_html().split("#fbd5d5")[0].rsplit("}", 1)[-1]  # the highlighted cells
    assert "row0_col0" in css and "row2_col5" in css and "row1_" not in css  # Buildings, Water; not Roads
    # only drops within the noise: the interval rule passes, the margin rule does not
    cand = dict(ACTIVE, Roads=0.47)
    assert compare(pc(ACTIVE), pc(cand), intervals=_boot(spans), rule="interval").status == "pass"
    assert compare(pc(ACTIVE), pc(cand), intervals=_boot(spans)).status == "flagged"
    # without any intervals the interval rule is the margin rule
    assert compare(pc(ACTIVE), pc(cand), rule="interval").offending_classes == ["Roads"]
    with pytest.raises(ValueError, match="gate rule"):
        compare(ACTIVE, ACTIVE, rule="vibes")


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
    assert any("Gate verdict: **FLAGGED**" in e and "Water −10.0 pp (margin 2.0 pp)" in e for e in errors), errors
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
    assert at.button(key="train_promote_good").disabled  # … but a name: every promotion records who made it
    at.sidebar.text_input(key="seghz_analyst").input("Bo").run()
    at.button(key="train_promote_good").click().run()
    assert ws.active_checkpoint().id == "good"
    assert ws.promotion_history()[0].verdict == "pass" and ws.promotion_history()[0].analyst == "Bo"


# ------------------------------------------------------------------------------------------------ intervals in check


def _scene_cms(n_scenes: int, drop_everywhere: tuple[int, int] | None, drop_one_scene: tuple[int, int] | None,
               seed: int = 0) -> list[np.ndarray]:
    """Per-scene 4-class confusion matrices (rows = label): a good model, optionally moving 10 % of a class's
    pixels to another class in every scene, or 80 % of them in scene 0 only."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_scenes):
        cm = np.diag(rng.integers(800, 1200, 4)).astype(np.int64)
        cm[0, 1] += 40  # some ordinary confusion
        for pair, share, here in ((drop_everywhere, 0.10, True), (drop_one_scene, 0.80, i == 0)):
            if pair is not None and here:
                src, dst = pair
                k = int(cm[src, src] * share)
                cm[src, src] -= k
                cm[src, dst] += k
        out.append(cm)
    return out


def _add_scene_eval(ws: Workspace, cid: str, cms: list[np.ndarray]) -> None:
    from seghz.metrics import scores

    per_scene = {f"s{i:02d}": cm.tolist() for i, cm in enumerate(cms)}
    res = scores(np.sum(cms, 0), NAMES)
    ws.add_evaluation(cid, "val", False, ws.data_version("val"),
                      {"tta": "none", "per_class": res["per_class"], "per_scene": per_scene})


def test_check_bootstraps_cached_scene_evaluations_and_the_interval_rule(ws):
    """Buildings loses 10 % of its pixels to Roads in every scene (a real drop for both); Water loses 80 % to
    Trees in one scene of 20 (drops as large overall, but one tile's doing). The margin rule flags all four, the
    interval rule only Buildings and Roads."""
    _ckpt(ws, "cand", parent="old")
    active = _scene_cms(20, None, None)
    _add_scene_eval(ws, "old", active)
    _add_scene_eval(ws, "cand", _scene_cms(20, (0, 1), (2, 3)))
    v = gate.check(ws, "cand")
    assert v.scenes == 20 and v.level == 0.95 and v.rule == "margin"
    rows = {r["class"]: r for r in v.rows}
    assert rows["Buildings"]["delta"] < -0.05 and rows["Water"]["delta"] < -0.02
    assert v.offending_classes == NAMES
    for c in ("Buildings", "Roads"):
        assert rows[c]["lo"] <= rows[c]["delta"] <= rows[c]["hi"] < 0 and not rows[c]["within_noise"]
    for c in ("Water", "Trees"):
        assert rows[c]["lo"] < rows[c]["delta"] < -0.02 and rows[c]["hi"] >= 0 and rows[c]["within_noise"]
    # the deltas are those of the evaluations (the registry's class metrics of 'old' are the hand-made ACTIVE)
    assert rows["Trees"]["active_iou"] == pytest.approx(1.0) and rows["Buildings"]["active_iou"] > 0.9
    gate.set_rule(ws, "interval")
    assert gate.get_rule(ws) == "interval"
    v = gate.check(ws, "cand")
    assert v.status == "flagged" and v.offending_classes == ["Buildings", "Roads"] and v.rule == "interval"
    assert "Not flagged, within the tile noise" in v.message and "Water" in v.message
    with pytest.raises(GateRefused):
        gate.promote(ws, "cand", compute=False)
    # an identical candidate passes under both rules
    _ckpt(ws, "twin", parent="old")
    _add_scene_eval(ws, "twin", active)
    assert gate.check(ws, "twin").passed and gate.check(ws, "twin", rule="margin").passed
    gate.set_rule(ws, None)
    assert gate.get_rule(ws) == "margin"
    with pytest.raises(ValueError, match="gate rule"):
        gate.set_rule(ws, "lenient")


def test_check_without_common_scenes_falls_back_to_the_margin_rule(ws):
    _candidate(ws, "cand", dict(ACTIVE, Roads=0.47))
    v = gate.check(ws, "cand", rule="interval")  # registry scores only: no per-scene matrices
    assert v.status == "flagged" and v.offending_classes == ["Roads"] and v.scenes is None
    assert "the margin rule decided" in v.message
    # evaluations of different scenes cannot be paired
    _add_scene_eval(ws, "old", _scene_cms(5, None, None))
    cms = _scene_cms(6, None, None)
    _add_scene_eval(ws, "cand", cms)
    assert gate.scene_intervals(gate.scene_evaluation(ws, "old", "val", ws.data_version("val")),
                                gate.scene_evaluation(ws, "cand", "val", ws.data_version("val"))) is None
    assert gate.check(ws, "cand", rule="interval").scenes is None


def test_check_compute_scores_the_evaluations_the_interval_rule_needs(ws, monkeypatch):
    _candidate(ws, "cand", dict(ACTIVE, Roads=0.47))
    calls = []

    def fake_evaluate(w, cid, split, progress=None):
        calls.append(cid)
        cms = _scene_cms(12, (1, 0) if cid == "cand" else None, None)
        _add_scene_eval(w, cid, cms)
        return w.data_version(split), {}

    monkeypatch.setattr(gate, "evaluate_metrics", fake_evaluate)
    assert gate.check(ws, "cand", compute=True).scenes is None and calls == []  # margin rule: scores exist already
    v = gate.check(ws, "cand", compute=True, rule="interval")
    assert sorted(calls) == ["cand", "old"] and v.scenes == 12
    assert v.offending_classes == ["Buildings", "Roads"] and v.rows[1]["hi"] < 0  # Roads -> Buildings hurts both
    calls.clear()
    gate.set_rule(ws, "interval")
    v, promoted = gate.after_training(ws, "cand", auto_promote=True)
    assert calls == [] and v.status == "flagged" and not promoted  # cached now


def test_train_page_gate_settings_and_intervals(page_ws, monkeypatch):
    ws = page_ws

    def fake_evaluate(w, cid, split, progress=None):
        _add_scene_eval(w, cid, _scene_cms(20, None, (2, 3) if cid == "cand" else None))
        return w.data_version(split), {}

    monkeypatch.setattr(gate, "evaluate_metrics", fake_evaluate)
    at = _app().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.number_input(key="train_gate_margin").value == pytest.approx(100 * DEFAULT_MARGIN)  # shown in pp
    assert at.radio(key="train_gate_rule").value == "margin"
    assert not gate.scene_evaluations_cached(ws, "cand")
    at.button(key="train_gate_intervals_cand").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert gate.scene_evaluations_cached(ws, "cand")
    assert "train_gate_intervals_cand" not in [b.key for b in _app().run().button]  # nothing more to score
    errors = [e.value for e in at.error]
    assert any("Gate verdict: **FLAGGED**" in e and "Within the tile noise" in e for e in errors), errors
    table = _table(at, "candidate IoU")
    assert dict(zip(table["class"], table["gate"]))["Water"] == "OFFENDING (within tile noise)"
    assert any("paired bootstrap over 20 validation scenes" in c.value for c in at.caption)
    at.radio(key="train_gate_rule").set_value("interval").run()
    assert not at.exception, [e.value for e in at.exception]
    assert gate.get_rule(ws) == "interval"
    assert any("Gate verdict: **PASS**" in s.value for s in at.success)
    at.sidebar.text_input(key="seghz_analyst").input("Bo").run()
    assert not at.button(key="train_promote_cand").disabled  # no override needed any more
    at.number_input(key="train_gate_margin").set_value(50.0).run()  # 50 pp, stored as the fraction 0.5
    assert gate.get_margin(ws) == pytest.approx(0.5)
    assert any(c.value == "Gate: margin 50.0 pp of IoU, rule 'interval'." for c in at.caption)


def test_interval_rule_message_names_fallback_classes_and_single_scene_gives_no_intervals(ws):
    cand = {"Buildings": 0.55, "Roads": 0.40, "Water": 0.80, "Trees": 0.40}
    spans = {"Buildings": (-0.09, -0.01), "Roads": None, "Water": (-0.01, 0.01), "Trees": (-0.02, 0.02)}
    v = compare(pc(ACTIVE), pc(cand), intervals=_boot(spans), rule="interval")
    assert v.offending_classes == ["Buildings", "Roads"]
    assert "Roads −10.0 pp (no interval: margin rule)" in v.message and "Buildings −5.0 [−9.0, −1.0] pp" in v.message
    # no spans at all: no claim about the tile noise, no level or scene count
    v = compare(pc(ACTIVE), pc(cand), intervals=_boot(dict.fromkeys(spans)), rule="interval")
    assert "tile noise" not in v.message and v.scenes is None and v.level is None
    # one scene, or class lists in another order: nothing to pair
    _ckpt(ws, "cand", parent="old")
    _add_scene_eval(ws, "old", _scene_cms(1, None, None))
    _add_scene_eval(ws, "cand", _scene_cms(1, (0, 1), None))
    ev = lambda cid: gate.scene_evaluation(ws, cid, "val", ws.data_version("val"))
    assert gate.scene_intervals(ev("old"), ev("cand")) is None
    v = gate.check(ws, "cand", rule="interval")
    assert v.scenes is None and "single scene" in v.message and "the margin rule decided" in v.message
    assert gate.scene_evaluations_cached(ws, "cand")  # the page does not offer to score them again
    a, c = dict(ev("old")), dict(ev("cand"))
    a["per_scene"] = {"x": a["per_scene"]["s00"], "y": a["per_scene"]["s00"]}
    c["per_scene"] = {"x": c["per_scene"]["s00"], "y": c["per_scene"]["s00"]}
    assert gate.scene_intervals(a, c) is not None
    c["per_class"] = dict(reversed(list(c["per_class"].items())))
    assert gate.scene_intervals(a, c) is None
    c = dict(ev("cand"), per_scene={"x": [[1, 2], [3]], "y": [[1]]})  # ragged: no crash, no intervals
    assert gate.scene_intervals(a, c) is None


def test_a_drop_let_through_as_noise_is_never_auto_promoted(ws):
    _ckpt(ws, "cand", parent="old")
    _add_scene_eval(ws, "old", _scene_cms(20, None, None))
    _add_scene_eval(ws, "cand", _scene_cms(20, None, (2, 3)))  # Water and Trees: one scene's doing
    gate.set_rule(ws, "interval")
    logs: list[str] = []
    v, promoted = gate.after_training(ws, "cand", auto_promote=True, job_id="j", log=logs.append)
    assert v.passed and not promoted and ws.active_checkpoint().id == "old"
    assert any("not auto-promoted" in m and "Water" in m for m in logs), logs
    gate.promote(ws, "cand", analyst="Ann", compute=False)  # an analyst may: the verdict passes
    assert ws.active_checkpoint().id == "cand"
    # the Δ of a drop let through is orange, not red; its row is not highlighted
    html = gate.styled_verdict_table(v).to_html()
    assert "#b00020" not in html and "#fbd5d5" not in html and "#c77700" in html
    # a stored rule written by hand reads as the default
    ws.set_setting(gate.RULE_SETTING, "lenient")
    assert gate.get_rule(ws) == "margin"


def test_train_page_shows_gate_settings_changed_elsewhere(page_ws):
    ws = page_ws
    at = _app().run()
    assert at.number_input(key="train_gate_margin").value == pytest.approx(100 * DEFAULT_MARGIN)
    gate.set_margin(ws, 0.2)  # another analyst, or the shell
    gate.set_rule(ws, "interval")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert gate.get_margin(ws) == pytest.approx(0.2) and gate.get_rule(ws) == "interval"  # not written back
    assert at.number_input(key="train_gate_margin").value == pytest.approx(20.0)  # 0.2 shown in pp
    assert at.radio(key="train_gate_rule").value == "interval"
    assert any("Gate verdict: **PASS**" in s.value for s in at.success)  # Water -0.10 is within a 0.2 margin
