"""The Labels page's "Fast head refit" through to the Train page (review finding 1 of /work/notes/loop_review.md).

The Labels page showed only the gain on the corrected pixels, a before/after table whose "after" cells were all
None, and said "promote it on the Train page", where refit jobs were not listed (no gate, no Promote). A refit job
now goes through the training job's regression gate and scores both models on the validation split; both pages show
the accuracy on the corrected pixels *and* on the existing labels, warn about a drop of the latter, and the Train
page lists the refit with the gate verdict and the Promote / override flow. Same prepared workspace as
tests/test_pages.py.
"""
from __future__ import annotations

import numpy as np
from streamlit import dataframe_util
from streamlit.testing.v1 import AppTest
from test_pages import (  # noqa: F401  (fixtures)
    HZ7,
    REPO,
    TIMEOUT,
    app,
    assert_ok,
    fake_canvas_factory,
    texts,
    tiny_checkpoint,
    ws,
)

import ui.common
from seghz import gate


def frame(at, column: str):
    """The first dataframe element of the run that has ``column``."""
    els = [d for d in at.dataframe if column in d.value.columns]
    assert els, f"no dataframe with column {column!r}: {[list(d.value.columns) for d in at.dataframe]}"
    return els[0]


def shown(el):
    """The cells of a styled dataframe as the browser shows them (strings)."""
    return dataframe_util.convert_arrow_bytes_to_pandas_df(el.proto.arrow_data.styler.display_values)


def alerts(at) -> list[str]:
    return [e.value for e in [*at.error, *at.warning, *at.success, *at.info]]


def test_a_refit_job_is_gated_scored_and_promoted_from_the_train_page(ws, monkeypatch):  # noqa: F811
    from seghz.jobs.kinds import refit_job
    from seghz.jobs.runner import ProgressReporter

    (train,) = ws.list_scenes("train")
    fix = np.zeros((train.height, train.width), bool)
    fix[:32, :32] = True  # an arbitrary Water stroke, as in the review
    ws.save_label_edit(train.id, 0, "Ann", "brush", pixels=np.flatnonzero(fix), values=HZ7.names.index("Water"))
    config = {"checkpoint_id": "tiny-test", "name": "tiny test model head refit", "origin": "labels"}
    jid = ws.create_job("refit", config)
    res = refit_job(ws, jid, config, ProgressReporter(ws, jid))
    ws.update_job(jid, status="done", progress=1.0, result=res)
    cid = res["checkpoint_id"]
    # the job ran the training job's gate and scored both models on the validation split
    assert res["gate"] in ("pass", "flagged") and res["val_split"] == "val" and res["promoted"] is False
    assert isinstance(res["context_acc_before"], float) and isinstance(res["context_acc_after"], float)
    assert res["val_miou"] is not None and res["parent_val_miou"] is not None
    assert ws.class_metrics(cid, "val")  # as the gate records them
    log = (ws.path(ws.get_job(jid).log_path)).read_text()
    assert "regression gate:" in log and "context (existing labels) accuracy" in log

    # Labels: both accuracies side by side, and a before/after on the same labels with no empty "after" cell
    monkeypatch.setattr(ui.common, "canvas", fake_canvas_factory([]))
    at = app("pages/3_Labels.py").run()
    assert_ok(at)
    acc = frame(at, "sampled").value
    assert acc[["before", "after"]].notna().all().all() and len(acc) == 2
    assert abs(acc["after"].iloc[1] - res["context_acc_after"]) < 1e-9
    assert any(f"on the existing labels (a sample of unreviewed labels): {100 * res['context_acc_before']:.1f} % → "
               f"{100 * res['context_acc_after']:.1f} %" in c.value for c in at.caption)
    val = frame(at, "Δ (pp)")
    table = val.value
    after = table.columns[2]
    assert table.set_index("metric").loc[["mIoU", "fwIoU", "OA"], after].notna().all()
    assert abs(table.set_index("metric").loc["mIoU", after] - res["val_miou"]) < 1e-9
    cells = shown(val).astype(str).to_numpy()
    assert not any(c in ("None", "nan", "<NA>") for c in cells.ravel())
    assert any("Both models scored on the same labels" in c.value for c in at.caption)
    assert any(a.startswith("Gate verdict: ") and "(active model: tiny test model) — " in a for a in alerts(at))
    assert at.button(key=f"lbl_rt_promote_{jid}")

    # Train: the refit is listed with the training jobs, with the gate verdict and Promote
    gate.set_margin(ws, 1.0)  # whatever the tiny model's refit did to a class, it passes here: Promote at once
    tr = app("pages/4_Train.py").run()
    assert_ok(tr)
    assert tr.selectbox(key="train_job_sel").value == jid
    assert any("Gate verdict: **PASS**" in s.value for s in tr.success)
    assert "Head refit" in texts(tr)
    assert tr.button(key=f"train_promote_{cid}").disabled  # a promotion is recorded with who made it
    assert any("analyst name in the sidebar to promote" in c.value for c in tr.caption)
    tr.sidebar.text_input(key="seghz_analyst").input("Ann").run()
    tr.button(key=f"train_promote_{cid}").click().run()
    assert_ok(tr)
    assert ws.active_checkpoint().id == cid


def test_a_refit_that_loses_the_existing_labels_is_warned_and_needs_an_override(ws, monkeypatch):  # noqa: F811
    """The review's numbers: corrected pixels 0.8 % → 35.0 %, existing labels 98.6 % → 90.3 % (recorded in the
    checkpoint; an older job's result lacks them), and a class dropping on the validation split."""
    src = ws.checkpoint_path(ws.get_checkpoint("tiny-test"))
    dst = ws.root / "checkpoints" / "refit-bad.safetensors"
    dst.write_bytes(src.read_bytes())
    ck = ws.get_checkpoint("tiny-test")
    fit = {"before": {"corrected_acc": 0.008, "context_acc": 0.986}, "after": {"corrected_acc": 0.35, "context_acc": 0.903}}
    ws.register_checkpoint(dst, {"arch": ck.arch, "encoder": ck.encoder, "scheme": "hz7",
                                 "metrics": {"val": None, "refit": fit}},
                           checkpoint_id="refit-bad", name="bad refit", parent_id="tiny-test")
    dv = ws.data_version("val")
    ws.record_class_metrics("tiny-test", "val", dv, {n: {"iou": 0.8, "support": 100} for n in HZ7.names})
    ws.record_class_metrics("refit-bad", "val", dv,
                            {n: {"iou": 0.5 if n == "Buildings" else 0.8, "support": 100} for n in HZ7.names})
    jid = ws.create_job("refit", {"checkpoint_id": "tiny-test", "origin": "labels"})
    ws.update_job(jid, status="done", progress=1.0,
                  result={"checkpoint_id": "refit-bad", "corrected_acc_before": 0.008, "corrected_acc_after": 0.35})
    newer = ws.create_job("train", {"epochs": 1})  # a newer job: the Train page still opens on the refit asked for
    ws.update_job(newer, status="done", progress=1.0, result={"checkpoint_id": "tiny-test"})

    monkeypatch.setattr(ui.common, "canvas", fake_canvas_factory([]))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT).run()  # the app, so that pages can switch
    at.switch_page("pages/3_Labels.py").run()
    assert_ok(at)
    assert any("Accuracy on the reviewed pixels (corrected or confirmed): 0.8 % → 35.0 %; on the existing labels (a "
               "sample of unreviewed labels): 98.6 % → 90.3 %" in c.value for c in at.caption), [c.value for c in at.caption]
    assert any("lost 8.3 points of accuracy on the existing labels (98.6 % → 90.3 %)" in w.value for w in at.warning)
    el = frame(at, "Δ (pp)")
    cells = shown(el)
    assert not any(c in ("None", "nan", "<NA>") for c in cells.astype(str).to_numpy().ravel())
    assert list(cells.iloc[0, 1:3]) == ["—", "—"]  # mIoU: not recorded on these labels, said so
    row = el.value.set_index("metric").loc["IoU Buildings"]
    assert abs(row.iloc[0] - 0.8) < 1e-9 and abs(row.iloc[1] - 0.5) < 1e-9
    banner = [e.value for e in at.error if e.value.startswith("Gate verdict:")]  # the Train page's wording
    assert len(banner) == 1 and "Buildings" in banner[0], [e.value for e in at.error]
    assert banner[0].startswith("Gate verdict: **FLAGGED** (active model: tiny test model) — ")
    at.button(key=f"lbl_rt_promote_{jid}").click().run()  # "Promote on the Train page": the Train page, on this job

    tr = at
    assert_ok(tr)
    assert "Launch a training run" in texts(tr)
    assert tr.selectbox(key="train_job_sel").value == jid
    assert any("lost 8.3 points" in w.value for w in tr.warning)
    assert [e.value for e in tr.error if e.value.startswith("Gate verdict:")] == banner  # one banner, both pages
    assert tr.button(key="train_promote_refit-bad").disabled
    tr.switch_page("pages/4_Train.py")  # AppTest's own page for the next runs (it reruns the page it was last sent to)
    tr.checkbox(key="train_override_refit-bad").check().run()
    tr.text_input(key="train_override_reason_refit-bad").input("the Buildings val labels are being redone").run()
    tr.sidebar.text_input(key="seghz_analyst").input("Ann").run()
    tr.button(key="train_promote_refit-bad").click().run()
    assert_ok(tr)
    assert ws.active_checkpoint().id == "refit-bad"
    p = ws.promotion_history()[0]
    assert p.override and p.offending == ["Buildings"] and p.analyst == "Ann"
