"""The Evaluate page's comparison "Evaluate missing" and its TTA report as background jobs (they ran inline in the
script run: leaving the page lost them, and the page was blocked meanwhile).

"Evaluate missing" submits one "evaluate" job per checkpoint without a cached evaluation; the TTA report is a
"tta_report" job whose rows land in the evaluation cache, where ``compare.tta_report(..., compute=False)`` (the page)
reads them. Neither is submitted twice while one computing the same thing is queued or running. Same prepared
workspace as tests/test_pages.py (one 128 px labelled val scene, a tiny active hz7 checkpoint ``tiny-test``); no
worker process is started: ``runner.submit_job`` is replaced by ``create_job`` and jobs run in this process through
the worker's ``run_job``.
"""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from test_evaluate_job import cancel_on_the_page, cancel_then_cancel_in_flight, job_running_in_a_stand_in
from test_pages import assert_ok, texts, tiny_checkpoint, ws  # noqa: F401  (fixtures)
from test_pages_compare import _element, _frame, _frames, _register, app

from seghz import compare
from seghz.infer.engine import TTA_MODES
from seghz.jobs import JOB_KINDS, ProgressReporter, cancel_job, load_job_kinds, runner
from seghz.jobs.kinds import (
    evaluate_job,
    evaluation_jobs,
    evaluation_key,
    submit_evaluation_job,
    submit_missing_evaluations,
    tta_report_job,
)
from seghz.jobs.worker import run_job
from seghz.store import NotFoundError

VIEWS3 = ["identity", "lr", "tb"]  # three rows (none, flip, identity,lr,tb): quicker than the full D4 report
D4_ROWS = ["baseline (identity)", "+lr", "+tb", "+diag", "+diag2", "+rot90", "+rot180", "+rot270"]


def _no_worker(monkeypatch):
    monkeypatch.setattr(runner, "start_worker", lambda w, job_id: None)  # no worker process


def _cached_specs(ws) -> list[str]:  # noqa: F811
    return sorted(e.result["tta"] for e in ws.list_evaluations("tiny-test"))


# ------------------------------------------------------------------------------------------------ the tta_report kind


def test_tta_report_job_caches_every_row_and_the_page_reads_them_with_compute_false(ws):  # noqa: F811
    assert "tta_report" in load_job_kinds() and JOB_KINDS["tta_report"] is tta_report_job
    before = compare.tta_report(ws, "tiny-test", "val", VIEWS3, compute=False)
    assert before["mIoU"].isna().all()
    config = {"checkpoint_id": "tiny-test", "split": "val", "views": VIEWS3}
    jid = ws.create_job("tta_report", config)
    assert run_job(ws, jid) == 0  # in this process, as its worker runs it
    job = ws.get_job(jid)
    assert job.status == "done", job.message
    res = job.result
    assert (res["checkpoint_id"], res["split"], res["reused"], res["computed"]) == ("tiny-test", "val", 0, 3)
    assert res["data_version"] == ws.data_version("val")
    assert [r["spec"] for r in res["rows"]] == ["none", "flip", "identity,lr,tb"]
    assert [r["views"] for r in res["rows"]] == [1, 2, 3]
    assert _cached_specs(ws) == ["flip", "identity,lr,tb", "none"]  # every row in the evaluation cache

    table = compare.tta_report(ws, "tiny-test", "val", VIEWS3, compute=False)  # what the page reads
    assert table["TTA"].tolist() == ["baseline (identity)", "+lr", "+tb"]
    assert table["mIoU"].notna().all()
    assert table["mIoU"].tolist() == pytest.approx([r["miou"] for r in res["rows"]])
    assert table.loc[0, "mIoU"] == pytest.approx(ws.find_evaluation("tiny-test", "val", False, res["data_version"],
                                                                    tta_spec="none").result["miou"])
    log = ws.path(job.log_path).read_text()
    assert "3 rows (0 cached for the current labels, 3 to score)" in log and "+tb: mIoU" in log
    assert job.progress == 1.0

    # again: every row is cached, nothing is scored (no model is even loaded) and nothing is added to the cache
    jid2 = ws.create_job("tta_report", config)
    res2 = tta_report_job(ws, jid2, config, ProgressReporter(ws, jid2))
    assert (res2["reused"], res2["computed"]) == (3, 0) and res2["rows"] == res["rows"]
    assert len(ws.list_evaluations("tiny-test")) == 3


def test_tta_report_job_reuses_a_cached_evaluation_as_its_baseline_row(ws):  # noqa: F811
    ev_id = ws.create_job("evaluate", {"checkpoint_id": "tiny-test", "split": "val", "tta": "none"})
    evaluate_job(ws, ev_id, {"checkpoint_id": "tiny-test", "split": "val", "tta": "none"}, ProgressReporter(ws, ev_id))
    baseline = ws.list_evaluations("tiny-test")[0]
    jid = ws.create_job("tta_report", {"checkpoint_id": "tiny-test", "views": ["identity", "lr"]})  # split: val
    res = tta_report_job(ws, jid, ws.get_job(jid).config, ProgressReporter(ws, jid))
    assert (res["split"], res["reused"], res["computed"]) == ("val", 1, 1)
    assert res["rows"][0]["miou"] == pytest.approx(baseline.result["miou"])
    assert _cached_specs(ws) == ["flip", "none"]
    assert [e.id for e in ws.list_evaluations("tiny-test") if e.result["tta"] == "none"] == [baseline.id]


def test_tta_report_job_failures_are_recorded_with_their_message(ws):  # noqa: F811
    for config, kind, text in (({"checkpoint_id": "tiny-test", "views": ["identity", "sideways"]}, ValueError,
                                "unknown TTA spec"),
                               ({"checkpoint_id": "nope"}, NotFoundError, "nope")):
        jid = ws.create_job("tta_report", config)
        with pytest.raises(kind, match=text):
            tta_report_job(ws, jid, config, ProgressReporter(ws, jid))
        ws.update_job(jid, status="failed")  # as its worker records it (a queued job would hold the queue)
    # through the worker: a split without labelled scenes fails the job, with the reason in its message
    jid = ws.create_job("tta_report", {"checkpoint_id": "tiny-test", "split": "test"})
    assert run_job(ws, jid) == 1
    job = ws.get_job(jid)
    assert job.status == "failed" and "tta_report failed" in job.message and "no labelled scenes" in job.message
    assert ws.list_evaluations("tiny-test") == []


def test_tta_report_job_honours_a_cancel_and_caches_nothing(ws, monkeypatch):  # noqa: F811
    config = {"checkpoint_id": "tiny-test", "split": "val", "views": VIEWS3}
    cancel_then_cancel_in_flight(ws, monkeypatch, "tta_report", config, tta_report_job)
    assert compare.tta_report(ws, "tiny-test", "val", VIEWS3, compute=False)["mIoU"].isna().all()


def test_a_cancel_during_a_later_row_keeps_the_rows_finished_before_it(ws, monkeypatch):  # noqa: F811
    config = {"checkpoint_id": "tiny-test", "split": "val", "views": VIEWS3}
    jid = ws.create_job("tta_report", config)
    real = ProgressReporter.update

    def cancel_in_the_second_row(self, fraction, message=""):
        if message.startswith("+lr"):
            cancel_job(self.ws, self.job_id)
        real(self, fraction, message)

    monkeypatch.setattr(ProgressReporter, "update", cancel_in_the_second_row)
    monkeypatch.setattr(runner, "CANCEL_POLL_S", 0.0)
    assert run_job(ws, jid) == 0
    assert ws.get_job(jid).status == "cancelled"
    assert _cached_specs(ws) == ["none"]  # the finished baseline row stays; the row being scored stored nothing
    table = compare.tta_report(ws, "tiny-test", "val", VIEWS3, compute=False)
    assert table["mIoU"].notna().tolist() == [True, False, False]


# ------------------------------------------------------------------------------------------------ no duplicates


def test_evaluation_key_tells_jobs_apart_by_what_they_compute():
    assert evaluation_key("evaluate", {"checkpoint_id": "a", "split": "test", "tta": "d4"}) == ("evaluate", "a", "test", "d4")
    assert evaluation_key("evaluate", {"checkpoint_id": "a"}) == ("evaluate", "a", "val", "none")
    d4 = compare.cumulative_tta_specs()[-1][1]
    assert evaluation_key("tta_report", {"checkpoint_id": "a"}) == ("tta_report", "a", "val", "d4") == \
        evaluation_key("tta_report", {"checkpoint_id": "a", "views": "d4"}) and d4 == "d4"
    assert evaluation_key("tta_report", {"checkpoint_id": "a", "views": "lr, tb"}) == \
        ("tta_report", "a", "val", "identity,lr,tb")  # the report puts the identity view first
    assert evaluation_key("evaluate", {"tta": "sideways"}) is None and evaluation_key("train", {}) is None


def test_no_duplicate_evaluation_job_while_one_is_queued_or_running(ws, monkeypatch):  # noqa: F811
    _no_worker(monkeypatch)
    rep = {"checkpoint_id": "tiny-test", "split": "val"}
    jid, new = submit_evaluation_job(ws, "tta_report", rep)
    assert new and ws.get_job(jid).kind == "tta_report" and ws.get_job(jid).config == rep
    # the same report (its views spelt out), queued then running: never a second job
    assert submit_evaluation_job(ws, "tta_report", {**rep, "views": TTA_MODES["d4"]}) == (jid, False)
    ws.update_job(jid, status="running")  # no pid yet: its worker counts as alive for a minute after submission
    assert submit_evaluation_job(ws, "tta_report", rep) == (jid, False)
    assert len(ws.list_jobs()) == 1
    # other things to compute are other jobs: another split, an evaluation of the same checkpoint, another TTA
    other_split, n1 = submit_evaluation_job(ws, "tta_report", {**rep, "split": "train"})
    ev, n2 = submit_evaluation_job(ws, "evaluate", {**rep, "tta": "d4"})
    ev_none, n3 = submit_evaluation_job(ws, "evaluate", {**rep, "tta": "none"})
    assert n1 and n2 and n3 and len({jid, other_split, ev, ev_none}) == 4
    assert submit_evaluation_job(ws, "evaluate", {**rep, "tta": "d4", "force": True}) == (ev, False)
    assert [j.id for j in evaluation_jobs(ws, "evaluate", "tiny-test", "val", "d4", active_only=True)] == [ev]
    assert {j.id for j in evaluation_jobs(ws, active_only=True)} == {jid, other_split, ev, ev_none}
    # once it has ended (done, cancelled, died), the same report can be submitted again
    ws.update_job(jid, status="done")
    again, new = submit_evaluation_job(ws, "tta_report", rep)
    assert new and again != jid
    cancel_job(ws, again)  # queued: cancelled at once
    assert submit_evaluation_job(ws, "tta_report", rep)[1] is True
    with pytest.raises(ValueError, match="not an evaluation job kind"):
        submit_evaluation_job(ws, "train", rep)
    with pytest.raises(ValueError, match="unknown TTA"):
        submit_evaluation_job(ws, "evaluate", {**rep, "tta": "sideways"})


def test_a_job_whose_worker_died_does_not_block_a_new_one(ws, monkeypatch):  # noqa: F811
    _no_worker(monkeypatch)
    rep = {"checkpoint_id": "tiny-test", "split": "val"}
    jid, _ = submit_evaluation_job(ws, "tta_report", rep)
    gone = subprocess.Popen(["true"])
    gone.wait()
    ws.update_job(jid, status="running", pid=gone.pid)  # a worker that is gone
    new_id, new = submit_evaluation_job(ws, "tta_report", rep)
    assert new and new_id != jid and ws.get_job(jid).status == "died"


def test_submit_missing_evaluations_one_evaluate_job_per_missing_checkpoint(ws, tiny_checkpoint, monkeypatch):  # noqa: F811
    _no_worker(monkeypatch)
    _path, meta = tiny_checkpoint
    for cid, seed in (("cmp-a", 1), ("cmp-b", 2)):
        _register(ws, cid, seed, {"epochs": seed}, meta)
    pre = ws.create_job("evaluate", {"checkpoint_id": "tiny-test", "split": "val", "tta": "none"})
    assert run_job(ws, pre) == 0  # tiny-test is evaluated already: nothing is submitted for it
    sel = ["tiny-test", "cmp-a", "cmp-b"]
    got = submit_missing_evaluations(ws, sel, "val")
    assert list(got) == ["cmp-a", "cmp-b"] and all(new for _j, new in got.values())
    for c, (jid, _new) in got.items():
        job = ws.get_job(jid)
        assert job.kind == "evaluate" and job.config == {"checkpoint_id": c, "split": "val", "tta": "none", "force": False}
    assert submit_missing_evaluations(ws, sel, "val") == {c: (j, False) for c, (j, _n) in got.items()}  # no duplicates
    assert len(ws.list_jobs()) == 3
    for jid, _new in got.values():
        assert run_job(ws, jid) == 0
    assert compare.missing_evaluations(ws, sel, "val") == [] and submit_missing_evaluations(ws, sel, "val") == {}
    assert [compare.split_scores(ws, c, "val")[1] for c in sel] == ["evaluated"] * 3


# ------------------------------------------------------------------------------------------------ the page


def test_page_tta_report_cancel_and_failure(ws, monkeypatch):  # noqa: F811
    _no_worker(monkeypatch)
    at = app("pages/2_Evaluate.py").run()
    assert_ok(at)
    at.button(key="eval_tta_run").click().run()
    assert_ok(at)
    (job,) = ws.list_jobs()
    assert job.kind == "tta_report" and job.config == {"checkpoint_id": "tiny-test", "split": "val"}
    assert ws.list_evaluations("tiny-test") == []  # nothing computed in the script run
    # shown once, in the TTA report (progress and Cancel), which is open for it (a line above it points there only
    # when the analyst closed it: tests/test_evaluate_review_fixes.py); the panel at the top does not list it
    assert f"Also running in the background: job `{job.id}`" not in texts(at)
    (tta_exp,) = [e for e in at.expander if e.label.startswith("TTA report")]
    assert tta_exp.proto.expanded and "open **TTA report** below" not in texts(at)
    assert [b.key for b in at.button if job.id in str(b.key)] == [f"eval_tta_cancel_{job.id}"]
    cancel_on_the_page(at, ws, job.id, f"eval_tta_cancel_{job.id}", "background TTA report", "eval_tta_run")

    # a failed job: its message shows as an error, and the button comes back
    failed = ws.create_job("tta_report", {"checkpoint_id": "tiny-test", "split": "val"})
    ws.update_job(failed, status="failed", message="tta_report failed after 0.1 s:\nRuntimeError: out of memory")
    at = app("pages/2_Evaluate.py").run()
    assert_ok(at)
    errors = [e.value for e in at.error]
    assert any(f"The last background TTA report (job `{failed}`) failed" in e and "out of memory" in e for e in errors)
    assert not at.button(key="eval_tta_run").disabled


def test_page_compare_missing_cancel_and_failure(ws, tiny_checkpoint, monkeypatch):  # noqa: F811
    _no_worker(monkeypatch)
    _path, meta = tiny_checkpoint
    _register(ws, "cmp-a", 1, {"epochs": 5}, meta)
    _register(ws, "cmp-b", 2, {"epochs": 20}, meta)
    at = app("pages/2_Evaluate.py").run()
    at.multiselect(key="eval_cmp_sel").set_value(["cmp-a", "cmp-b"]).run()
    assert_ok(at)
    at.button(key="eval_cmp_run").click().run()
    assert_ok(at)
    jobs = {j.config["checkpoint_id"]: j for j in ws.list_jobs()}
    assert set(jobs) == {"cmp-a", "cmp-b"} and ws.list_evaluations("cmp-a") == []
    at.button(key=f"eval_cmp_cancel_{jobs['cmp-b'].id}").click().run()
    assert_ok(at)
    assert ws.get_job(jobs["cmp-b"].id).status == "cancelled" and ws.get_job(jobs["cmp-a"].id).status == "queued"
    assert f"The last background evaluation of `cmp-b` on val (job `{jobs['cmp-b'].id}`) was cancelled" in texts(at)
    # cmp-a still runs: the button offers the one that is not running, and submits only that one
    assert at.button(key="eval_cmp_run").label == "Evaluate 1 missing on val" and not at.button(key="eval_cmp_run").disabled
    assert "(1 being evaluated in the background)" in texts(at)
    at.button(key="eval_cmp_run").click().run()
    assert_ok(at)
    active = {j.config["checkpoint_id"]: j.id for j in ws.list_jobs() if j.active}
    assert len(ws.list_jobs()) == 3 and active["cmp-a"] == jobs["cmp-a"].id and active["cmp-b"] != jobs["cmp-b"].id
    assert at.button(key="eval_cmp_run").disabled  # both are running now

    # cmp-b's job fails: the error names it; cmp-a's succeeds: its score is in the table
    ws.update_job(active["cmp-b"], status="failed", message="evaluate failed after 0.2 s:\nOSError: disk full")
    assert run_job(ws, active["cmp-a"]) == 0
    at.run()
    assert_ok(at)
    assert any(f"The last background evaluation of `cmp-b` on val (job `{active['cmp-b']}`) failed" in e.value
               and "disk full" in e.value for e in at.error)
    table = _frame(at, "eval_cmp_table")
    assert np.isfinite(table["val mIoU (this workspace)"].tolist()[0]) and np.isnan(table["val mIoU (this workspace)"].tolist()[1])
    assert not _frames(at, "eval_cmp_deltas")  # cmp-b is not evaluated


# ------------------------------------------------------------------------------------------------ one place per job


def _job_elements(at, job_id: str) -> dict:
    """Where a job shows on the page: its Cancel buttons, its progress bars, its "Also running" lines."""
    return {"cancel": sorted(b.key for b in at.button if b.key and b.key.endswith(f"cancel_{job_id}")),
            "progress": [p.proto.text for p in at.get("progress") if f"`{job_id}`" in p.proto.text],
            "also": [c.value for c in at.caption if c.value.startswith(f"Also running in the background: job `{job_id}`")]}


def test_the_inline_run_is_off_while_the_same_evaluation_runs_in_the_background(ws, monkeypatch):  # noqa: F811
    _no_worker(monkeypatch)
    at = app("pages/2_Evaluate.py").run()
    assert_ok(at)
    assert not at.button(key="eval_run").disabled
    at.button(key="eval_bg").click().run()
    assert_ok(at)
    (job,) = ws.list_jobs()
    assert job.status == "queued"
    run = at.button(key="eval_run")
    assert run.disabled and at.button(key="eval_bg").disabled  # an inline run would compute the same thing again
    assert f"is queued or running (job `{job.id}`" in run.help
    at.radio(key="eval_tta").set_value("d4").run()  # another TTA: another evaluation, the inline run is on
    assert_ok(at)
    assert not at.button(key="eval_run").disabled
    at.radio(key="eval_tta").set_value("none").run()
    assert at.button(key="eval_run").disabled
    at.button(key=f"eval_bg_cancel_{job.id}").click().run()
    assert_ok(at)
    assert ws.get_job(job.id).status == "cancelled" and not at.button(key="eval_run").disabled


def test_each_comparison_job_is_shown_once_with_its_controls(ws, tiny_checkpoint, monkeypatch):  # noqa: F811
    """'Evaluate 2 missing on val', then leave the page and come back: the panel at the top listed one job with its
    bar and Cancel and the other as 'Also running', and the comparison showed both again with their own."""
    _no_worker(monkeypatch)
    _path, meta = tiny_checkpoint
    _register(ws, "cmp-b", 2, {"epochs": 20}, meta)
    at = app("pages/2_Evaluate.py").run()
    assert_ok(at)
    assert at.multiselect(key="eval_cmp_sel").value == ["tiny-test", "cmp-b"]  # the default: the active one first
    at.button(key="eval_cmp_run").click().run()
    assert_ok(at)
    jobs = {j.config["checkpoint_id"]: j.id for j in ws.list_jobs()}
    assert set(jobs) == {"tiny-test", "cmp-b"}  # tiny-test's is also the job of the page's own evaluation
    back = app("pages/2_Evaluate.py").run()  # leaving the page and coming back: the widgets are at their defaults
    assert_ok(back)
    names = {"tiny-test": "tiny test model", "cmp-b": "cmp-b"}
    for c, jid in jobs.items():  # each in the comparison: one bar, one Cancel, no "Also running" line at the top
        got = _job_elements(back, jid)
        assert got["cancel"] == [f"eval_cmp_cancel_{jid}"] and len(got["progress"]) == 1 and not got["also"], (c, got)
        assert f"background evaluation of {names[c]} on val `{jid}` queued" in got["progress"][0]
    # the top points at the comparison for the page's own checkpoint, split and TTA, and the buttons are off
    assert (f"The background evaluation of this checkpoint, split and TTA (job `{jobs['tiny-test']}`, queued) is shown "
            "with its progress and Cancel under **Compare checkpoints** below.") in texts(back)
    assert "is running (under **Compare checkpoints** below): its result shows here" in texts(back)
    assert back.button(key="eval_run").disabled and back.button(key="eval_bg").disabled
    assert "shown under **Compare checkpoints** below" in back.button(key="eval_run").help

    # the comparison no longer shows them (one checkpoint picked): the top shows each, once
    back.multiselect(key="eval_cmp_sel").set_value(["cmp-b"]).run()
    assert_ok(back)
    own, other = _job_elements(back, jobs["tiny-test"]), _job_elements(back, jobs["cmp-b"])
    assert own["cancel"] == [f"eval_bg_cancel_{jobs['tiny-test']}"] and len(own["progress"]) == 1 and not own["also"]
    assert not other["cancel"] and not other["progress"] and len(other["also"]) == 1
    assert "cmp-b on val, TTA none" in other["also"][0]

    # a job cancelled from the comparison is reported there only, in one wording
    back.multiselect(key="eval_cmp_sel").set_value(["tiny-test", "cmp-b"]).run()
    back.button(key=f"eval_cmp_cancel_{jobs['tiny-test']}").click().run()
    assert_ok(back)
    said = [c.value for c in back.caption if f"(job `{jobs['tiny-test']}`) was cancelled" in c.value]
    assert said == [(f"The last background evaluation of `tiny test model` on val (job `{jobs['tiny-test']}`) was "
                     "cancelled before it started.")], said


def test_a_cancelled_job_says_cancelled_once(ws, monkeypatch):  # noqa: F811
    _no_worker(monkeypatch)
    jid = ws.create_job("evaluate", {"checkpoint_id": "tiny-test", "split": "val", "tta": "none"})
    ws.update_job(jid, status="running")
    ws.update_job(jid, status="cancelled", message="cancelled by request after 17.8 s")  # as its worker words it
    at = app("pages/2_Evaluate.py").run()
    assert_ok(at)
    assert f"The last background evaluation (job `{jid}`) was cancelled by request after 17.8 s." in texts(at)
    assert "cancelled: cancelled" not in texts(at)


def test_a_job_queued_behind_one_being_cancelled_says_so(ws, monkeypatch):  # noqa: F811
    _no_worker(monkeypatch)
    ahead = ws.create_job("evaluate", {"checkpoint_id": "tiny-test", "split": "val", "tta": "d4"})
    with job_running_in_a_stand_in(ws, monkeypatch, ahead, "cancelled"):
        cancel_job(ws, ahead)  # running: it stops at its next check, and stays 'running' until then
        at = app("pages/2_Evaluate.py").run()
        at.button(key="eval_bg").click().run()
        assert_ok(at)
    assert any(f"Queued behind the evaluate job `{ahead}`, which is being cancelled" in c.value for c in at.caption)


# ------------------------------------------------------------------------------------------------ no "None" in tables


def _shown_strings(el) -> list[str]:
    """The text of every cell of a dataframe element as the browser gets it: the pandas Styler's display values
    when it has them, else the values (a missing value is drawn as the element's placeholder)."""
    from streamlit import dataframe_util

    display = el.proto.arrow_data.styler.display_values
    frame = dataframe_util.convert_arrow_bytes_to_pandas_df(display) if display else el.value
    cells = frame.to_numpy().ravel()
    return [el.proto.placeholder if v is not None and isinstance(v, float) and np.isnan(v) else str(v) for v in cells]


def test_comparison_and_tta_tables_show_a_dash_not_none(ws, tiny_checkpoint, monkeypatch):  # noqa: F811
    _no_worker(monkeypatch)
    _path, meta = tiny_checkpoint
    _register(ws, "cmp-b", 2, {"epochs": 20}, meta)
    for jid, _new in submit_missing_evaluations(ws, ["tiny-test", "cmp-b"], "val").values():
        assert run_job(ws, jid) == 0  # both on val (one scene: no bootstrap interval), the TTA report's first row too
    at = app("pages/2_Evaluate.py").run()
    assert_ok(at)
    ev = {c: ws.list_evaluations(c)[0].result for c in ("tiny-test", "cmp-b")}
    for key in ("eval_cmp_table", "eval_cmp_deltas", "eval_cmp_sure", "eval_tta_table"):
        el = _element(at, key)
        assert el.proto.placeholder == "–", key  # a missing value is drawn as "–"
        shown = _shown_strings(el)
        assert not [s for s in shown if s in ("None", "nan", "NaN", "<NA>")], (key, shown)
    sure = _frame(at, "eval_cmp_sure")
    assert sure["verdict"].tolist() == ["fewer than 2 common scenes"]
    assert sure["Δ mIoU (pp)"].tolist() == pytest.approx([100 * (ev["cmp-b"]["miou"] - ev["tiny-test"]["miou"])])
    sure_shown = _shown_strings(_element(at, "eval_cmp_sure"))
    assert f"{100 * (ev['cmp-b']['miou'] - ev['tiny-test']['miou']):+.2f}" in sure_shown and "–" in sure_shown
    tta = _frame(at, "eval_tta_table")
    assert tta["mIoU"].notna().tolist() == [True] + [False] * 7  # only the baseline row is scored
    assert tta["spec"].tolist()[:3] == ["identity", "identity,lr", "identity,lr,tb"]  # the views, not "flip"
    assert tta["spec"].tolist()[-1] == ",".join(TTA_MODES["d4"])
    # scores in percent with one decimal, rounded, as the metrics ("99.3 %", not "99.31%" nor a truncated "99.2%"):
    # the Styler's text, which a column format would override
    from seghz.report import fmt_pct

    el = _element(at, "eval_tta_table")
    cfg = json.loads(el.proto.columns)
    assert not [c for c in ("mIoU", "fwIoU", "OA") if (cfg.get(c, {}).get("type_config") or {}).get("format")], cfg
    shown = _shown_strings(el)
    assert shown[list(tta.columns).index("mIoU")] == fmt_pct(ev["tiny-test"]["miou"])
