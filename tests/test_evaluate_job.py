"""The "evaluate" background job and the Evaluate page's *Run in the background* (browser review: a d4 evaluation run
inline took ~3.5 min per 1024 px scene on a CPU and was silently lost when the analyst left the page mid-run).

The job scores a checkpoint on a split in a worker process and stores the result in the evaluation cache, where the
page's cached-result path finds it. Same prepared workspace as tests/test_pages.py (one 128 px labelled val scene
and a tiny active hz7 checkpoint ``tiny-test``); no worker process is started: ``runner.submit_job`` is replaced by
``create_job`` and the job is run in this process.
"""
from __future__ import annotations

import contextlib
import subprocess

import pytest
from test_pages import app, assert_ok, texts, tiny_checkpoint, ws  # noqa: F401  (fixtures)

from seghz.jobs import JOB_KINDS, JobCancelled, ProgressReporter, cancel_job, load_job_kinds, runner
from seghz.jobs.kinds import evaluate_job
from seghz.jobs.worker import run_job

D4 = {"checkpoint_id": "tiny-test", "split": "val", "tta": "d4", "force": False}


def _run(ws, config: dict) -> tuple[str, dict]:  # noqa: F811
    jid = ws.create_job("evaluate", config)
    return jid, evaluate_job(ws, jid, config, ProgressReporter(ws, jid))


# ------------------------------------------------------------------------------------------------ the job kind


def test_evaluate_job_stores_the_result_in_the_cache_and_returns_a_summary(ws):  # noqa: F811
    assert "evaluate" in load_job_kinds() and JOB_KINDS["evaluate"] is evaluate_job
    jid, res = _run(ws, D4)
    dv = ws.data_version("val")
    ev = ws.find_evaluation("tiny-test", "val", True, dv, tta_spec="d4")
    assert ev is not None and ev.result["tta"] == "d4" and ev.result["scenes"] == 1
    assert res == {"checkpoint_id": "tiny-test", "split": "val", "tta": "d4", "miou": ev.result["miou"], "scenes": 1,
                   "data_version": dv, "evaluation_id": ev.id, "cached": False}
    assert isinstance(res["miou"], float)
    assert ws.find_evaluation("tiny-test", "val", False, dv, tta_spec="none") is None  # only the d4 entry
    log = ws.path(ws.get_job(jid).log_path).read_text()
    assert "evaluating tiny-test on 1 labelled scene(s) of the 'val' split (TTA d4)" in log and "mIoU" in log
    assert ws.get_job(jid).progress > 0  # the job's progress bar moved

    # again: the cached result, nothing recomputed; with force: recomputed and cached anew
    _, again = _run(ws, D4)
    assert again["cached"] is True and again["evaluation_id"] == ev.id and len(ws.list_evaluations("tiny-test")) == 1
    _, forced = _run(ws, {**D4, "force": True})
    assert forced["cached"] is False and forced["evaluation_id"] != ev.id
    assert len(ws.list_evaluations("tiny-test")) == 2


def test_evaluate_job_defaults_to_the_active_checkpoint_and_refuses_bad_config(ws):  # noqa: F811
    _, res = _run(ws, {})
    assert (res["checkpoint_id"], res["split"], res["tta"]) == ("tiny-test", "val", "none")
    with pytest.raises(ValueError, match="unknown TTA spec"):
        _run(ws, {**D4, "tta": "sideways"})
    with pytest.raises(Exception, match="no labelled scenes"):
        _run(ws, {**D4, "split": "test"})


def cancel_then_cancel_in_flight(ws, monkeypatch, kind: str, config: dict, job_fn) -> str:  # noqa: F811
    """A job of ``kind`` cancelled before it starts raises JobCancelled and stores no evaluation; a second one,
    cancelled at its first progress update while the worker runs it, ends 'cancelled' with no result. Returns the
    second job's id (the caller checks what its kind leaves behind)."""
    jid = ws.create_job(kind, config)
    ws.update_job(jid, status="running")
    cancel_job(ws, jid)
    with pytest.raises(JobCancelled):
        job_fn(ws, jid, config, ProgressReporter(ws, jid))
    assert ws.list_evaluations("tiny-test") == []
    ws.update_job(jid, status="cancelled")  # as its worker records it (a 'running' job would hold the queue)
    # through the worker: a cancel requested while it runs ends the job 'cancelled', with nothing cached
    jid2 = ws.create_job(kind, config)
    real = ProgressReporter.update

    def cancel_on_first_update(self, fraction, message=""):
        cancel_job(self.ws, self.job_id)
        real(self, fraction, message)

    monkeypatch.setattr(ProgressReporter, "update", cancel_on_first_update)
    monkeypatch.setattr(runner, "CANCEL_POLL_S", 0.0)  # the tiny scene is scored within the 0.5 s between reads
    assert run_job(ws, jid2) == 0  # in this process, as the worker runs it
    job = ws.get_job(jid2)
    assert job.status == "cancelled" and "cancelled by request" in job.message and job.result is None
    assert ws.list_evaluations("tiny-test") == []
    return jid2


def test_evaluate_job_honours_a_cancel_and_stores_nothing(ws, monkeypatch):  # noqa: F811
    cancel_then_cancel_in_flight(ws, monkeypatch, "evaluate", D4, evaluate_job)


# ------------------------------------------------------------------------------------------------ the page


def _no_worker(monkeypatch):
    monkeypatch.setattr(runner, "start_worker", lambda w, job_id: None)  # no worker process


def test_run_in_the_background_submits_one_job_and_the_page_shows_its_result(ws, monkeypatch):  # noqa: F811
    _no_worker(monkeypatch)
    at = app("pages/2_Evaluate.py").run()
    assert_ok(at)
    # without TTA on a small split the inline run is the primary one; d4 makes the background run primary
    assert at.button(key="eval_run").proto.type == "primary" and at.button(key="eval_bg").proto.type == "secondary"
    at.radio(key="eval_tta").set_value("d4").run()
    assert_ok(at)
    assert at.button(key="eval_bg").proto.type == "primary" and at.button(key="eval_run").proto.type == "secondary"
    assert "**Run in the background** is suggested: TTA d4 runs every window 8×" in texts(at)
    stale = app("pages/2_Evaluate.py").run()  # another tab, drawn before the job exists
    stale.radio(key="eval_tta").set_value("d4").run()

    at.button(key="eval_bg").click().run()
    assert_ok(at)
    (job,) = ws.list_jobs()
    assert job.kind == "evaluate" and job.config == D4 and job.status == "queued"
    assert any(f"Background evaluation job `{job.id}` submitted" in s.value for s in at.success)
    assert at.button(key="eval_bg").disabled  # while it is queued or running
    assert at.button(key=f"eval_bg_cancel_{job.id}")
    assert any(f"background evaluation `{job.id}` queued" in p.proto.text for p in at.get("progress"))
    assert "A background evaluation of this checkpoint, split and TTA is running" in texts(at)
    assert not [m for m in at.metric if m.label == "mIoU"]

    # a second click (the stale tab's button was still enabled) submits nothing and points at the running job
    stale.button(key="eval_bg").click().run()
    assert_ok(stale)
    assert len(ws.list_jobs()) == 1
    assert any(f"already running in the background (job `{job.id}`)" in i.value for i in stale.info)
    assert stale.button(key=f"eval_bg_cancel_{job.id}")

    # leaving the page and coming back: the widgets are back at TTA none, the d4 job is listed with a Show button
    back = app("pages/2_Evaluate.py").run()
    assert_ok(back)
    assert back.radio(key="eval_tta").value == "none"
    assert f"Also running in the background: job `{job.id}` · tiny test model on val, TTA d4" in texts(back)
    back.button(key=f"eval_bg_show_{job.id}").click().run()
    assert_ok(back)
    assert back.radio(key="eval_tta").value == "d4" and back.button(key=f"eval_bg_cancel_{job.id}")

    # the job runs (here, in this process, as its worker would): the page shows the cached result
    assert run_job(ws, job.id) == 0
    done = ws.get_job(job.id)
    assert done.status == "done" and done.result["tta"] == "d4" and done.result["evaluation_id"] is not None
    at.run()
    assert_ok(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["mIoU"] == f"{100 * done.result['miou']:.1f} %"
    assert "TTA d4" in texts(at) and not at.get("progress")
    assert not [b for b in at.button if b.key == f"eval_bg_cancel_{job.id}"]
    assert at.button(key="eval_bg").disabled  # cached: nothing to run unless "Recompute" is ticked
    at.checkbox(key="eval_force").check().run()
    assert not at.button(key="eval_bg").disabled
    at.button(key="eval_bg").click().run()
    assert_ok(at)
    new = ws.list_jobs()[0]
    assert len(ws.list_jobs()) == 2 and new.config == {**D4, "force": True}


def test_cancel_a_background_evaluation_from_the_page(ws, monkeypatch):  # noqa: F811
    _no_worker(monkeypatch)
    at = app("pages/2_Evaluate.py").run()
    at.button(key="eval_bg").click().run()
    assert_ok(at)
    (job,) = ws.list_jobs()
    assert job.config == {**D4, "tta": "none"}
    cancel_on_the_page(at, ws, job.id, f"eval_bg_cancel_{job.id}", "background evaluation", "eval_bg")


def cancel_on_the_page(at, ws, job_id: str, cancel_key: str, what: str, submit_key: str) -> None:  # noqa: F811
    """Press a background job's Cancel on the Evaluate page: the job is cancelled, the page says so, the button that
    submits it is back, and nothing was cached."""
    at.button(key=cancel_key).click().run()
    assert_ok(at)
    assert ws.get_job(job_id).status == "cancelled"
    assert f"The last {what} (job `{job_id}`) was cancelled" in texts(at)
    assert not at.button(key=submit_key).disabled  # it can be submitted again
    assert ws.list_evaluations("tiny-test") == []


@contextlib.contextmanager
def job_running_in_a_stand_in(ws, monkeypatch, job_id: str, end_status: str):  # noqa: F811
    """``job_id`` is 'running' in a stand-in worker process (never this test's own pid: cleaning up a running job
    signals its process) that counts as alive; afterwards the job is ``end_status`` and the stand-in is gone."""
    stand_in = subprocess.Popen(["sleep", "120"])
    try:
        ws.update_job(job_id, status="running", pid=stand_in.pid)
        monkeypatch.setattr(runner, "pid_alive", lambda pid, job_id=None: True)
        yield
    finally:
        ws.update_job(job_id, status=end_status, pid=None)
        stand_in.kill()
        stand_in.wait()


def test_a_queued_background_evaluation_says_which_job_it_waits_for(ws, monkeypatch):  # noqa: F811
    _no_worker(monkeypatch)
    train = ws.create_job("train", {"epochs": 1})
    with job_running_in_a_stand_in(ws, monkeypatch, train, "done"):
        at = app("pages/2_Evaluate.py").run()
        at.button(key="eval_bg").click().run()
        assert_ok(at)
    assert any(f"Queued behind the train job `{train}`" in c.value for c in at.caption), [c.value for c in at.caption]
