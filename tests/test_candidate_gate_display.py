"""One way of showing a job's regression-gate verdict: :func:`seghz.candidate.job_val_split` (the split the job's
gate scored on), :func:`seghz.candidate.gate_verdict_text` (the one wording) and
:func:`ui.candidates.show_gate_verdict` (the one banner, status → alert), used by both the Labels and the Train page.
"""
from __future__ import annotations

from types import SimpleNamespace

from streamlit.testing.v1 import AppTest
from test_pages import TIMEOUT, app, assert_ok, fake_canvas_factory, tiny_checkpoint, ws  # noqa: F401  (fixtures)

import ui.common
from seghz import candidate, gate


def _job(result=None, config=None):
    return SimpleNamespace(result=result, config=config)


def test_job_val_split_result_then_config_then_val():
    assert candidate.job_val_split(_job({"val_split": "holdout"}, {"val_split": "val"})) == "holdout"  # result first
    assert candidate.job_val_split(_job({"checkpoint_id": "c"}, {"val_split": "test"})) == "test"  # config only
    assert candidate.job_val_split(_job({"val_split": None}, {"val_split": "test"})) == "test"
    assert candidate.job_val_split(_job({"checkpoint_id": "c"}, {"epochs": 1})) == "val"  # neither
    assert candidate.job_val_split(_job(None, None)) == "val"


def test_gate_verdict_text_names_the_active_model():
    v = gate.Verdict("flagged", 0.02, message="Water dropped by 10.0 pp.")
    assert candidate.gate_verdict_text(v, "old model") == (
        "Gate verdict: **FLAGGED** (active model: old model) — Water dropped by 10.0 pp.")
    v = gate.Verdict("pass", message="there is no active model: nothing to compare against.")
    assert candidate.gate_verdict_text(v, None) == (
        "Gate verdict: **PASS** — there is no active model: nothing to compare against.")


def _verdict_script():
    from types import SimpleNamespace

    import streamlit as st

    from seghz import gate
    from ui.candidates import show_gate_verdict

    rows = [{"class": "Water", "active_iou": 0.8, "candidate_iou": 0.7, "delta": -0.1, "lo": None, "hi": None,
             "offending": True, "within_noise": False, "excluded": None}]
    off = [{"class": "Water", "active_iou": 0.8, "candidate_iou": 0.7, "delta": -0.1, "lo": None, "hi": None}]
    cur = SimpleNamespace(name="old model")
    compact = st.session_state.get("compact", False)
    show_gate_verdict(gate.Verdict("pass", message="ok."), cur, compact=compact)
    show_gate_verdict(gate.Verdict("unknown", message="no scores."), None, compact=compact)
    show_gate_verdict(gate.Verdict("flagged", 0.02, rows=rows, offending=off, message="Water dropped.", scenes=12,
                                   level=0.95), cur, compact=compact, key="tbl")


def test_show_gate_verdict_maps_status_to_alert_and_compact_shows_only_the_banner():
    at = AppTest.from_function(_verdict_script, default_timeout=TIMEOUT).run()
    assert_ok(at)
    assert [s.value for s in at.success] == ["Gate verdict: **PASS** (active model: old model) — ok."]
    assert [w.value for w in at.warning] == ["Gate verdict: **UNKNOWN** — no scores."]
    flagged = "Gate verdict: **FLAGGED** (active model: old model) — Water dropped."
    assert [e.value for e in at.error] == [flagged]
    assert len(at.dataframe) == 1 and "candidate IoU" in at.dataframe[0].value.columns
    import json

    from ui.candidates import DELTA_HELP

    assert json.loads(at.dataframe[0].proto.columns)["Δ IoU"]["help"] == DELTA_HELP  # why Δ can look 0.1 pp off
    caps = [c.value for c in at.caption]
    assert any("paired bootstrap over 12 validation scenes" in c for c in caps), caps
    assert "Offending classes: **Water** (−10.0 pp) — margin 2.0 pp of IoU." in caps, caps

    at.session_state["compact"] = True
    at.run()
    assert_ok(at)
    assert len(at.error) == len(at.success) == len(at.warning) == 1
    assert not at.dataframe and not at.caption


def test_both_pages_show_one_banner_on_the_split_the_job_recorded(ws, monkeypatch):  # noqa: F811
    """A training job started from the Labels page whose result does not record its split (an older job): both pages
    gate it on its configured split and show the same banner."""
    src = ws.checkpoint_path(ws.get_checkpoint("tiny-test"))
    dst = ws.root / "checkpoints" / "cand.safetensors"
    dst.write_bytes(src.read_bytes())
    ck = ws.get_checkpoint("tiny-test")
    ws.register_checkpoint(dst, {"arch": ck.arch, "encoder": ck.encoder, "scheme": "hz7", "metrics": {}},
                           checkpoint_id="cand", name="candidate", parent_id="tiny-test")
    jid = ws.create_job("train", {"parent_checkpoint_id": "tiny-test", "origin": "labels", "val_split": "test"})
    ws.update_job(jid, status="done", progress=1.0, result={"checkpoint_id": "cand"})
    splits: list[str] = []

    def fake_check(w, cid, *, split="val", **kw):
        splits.append(split)
        return gate.Verdict("flagged", 0.02, message="Buildings dropped by 30.0 pp.", candidate_id=cid,
                            active_id="tiny-test", split=split)

    monkeypatch.setattr(gate, "check", fake_check)
    monkeypatch.setattr(ui.common, "canvas", fake_canvas_factory([]))
    want = "Gate verdict: **FLAGGED** (active model: tiny test model) — Buildings dropped by 30.0 pp."

    labels = app("pages/3_Labels.py").run()
    assert_ok(labels)
    shown_labels = [e.value for e in labels.error if e.value.startswith("Gate verdict:")]
    train = app("pages/4_Train.py").run()
    assert_ok(train)
    assert train.selectbox(key="train_job_sel").value == jid
    shown_train = [e.value for e in train.error if e.value.startswith("Gate verdict:")]
    assert shown_labels == shown_train == [want]
    assert splits and set(splits) == {"test"}, splits
