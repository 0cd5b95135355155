"""Tests of seghz.jobs: jobs run in worker processes; progress, metrics, cancel, failure, death, queueing."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers_core import wait_for

from seghz.jobs import JOB_KINDS, cancel_job, refresh_job_states, register_job_kind, submit_job, tail_log
from seghz.jobs.runner import pid_alive
from seghz.store import Workspace

TESTS = Path(__file__).resolve().parent
TIMEOUT_S = 30.0


def wait_status(ws: Workspace, job_id: str, *statuses: str, timeout: float = TIMEOUT_S):
    job = wait_for(lambda: (j := ws.get_job(job_id)).status in statuses and j, f"job {job_id} to be {statuses}", timeout)
    return job


@pytest.fixture
def ws(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGHZ_JOB_MODULES", "jobkinds_toy")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))
    w = Workspace(tmp_path / "ws")
    yield w
    for job in w.list_jobs():  # never leave a worker of ours behind, even when a test fails
        if job.pid and pid_alive(job.pid, job.id):
            os.kill(job.pid, signal.SIGKILL)


def test_job_runs_to_done_with_progress_metrics_and_log(ws):
    jid = submit_job(ws, "toy_ok", {"steps": 4})
    job = wait_status(ws, jid, "done", "failed", "died")
    assert job.status == "done", job.message
    assert job.result == {"answer": 42, "steps": 4}
    assert job.progress == 1.0 and job.pid and job.started_at and job.finished_at
    metrics = ws.job_metrics(jid)
    assert len(metrics) == 8
    assert [m["value"] for m in metrics if m["key"] == "loss"] == [1.0, 0.5, 1 / 3, 0.25]
    assert {m["epoch"] for m in metrics} == {0, 1}
    log = tail_log(ws, jid, 100)
    assert any("toy step 3" in line for line in log) and any("done in" in line for line in log)
    assert tail_log(ws, jid, 1) == log[-1:]


def test_cancel_stops_a_running_job(ws):
    jid = submit_job(ws, "toy_loop", {"seconds": 25})
    wait_status(ws, jid, "running")
    assert cancel_job(ws, jid).cancel_requested
    job = wait_status(ws, jid, "cancelled", "done", "failed", "died", timeout=30)
    assert job.status == "cancelled"
    assert "cancelled by request" in job.message and job.finished_at


def test_killed_worker_is_marked_died(ws):
    jid = submit_job(ws, "toy_loop", {"seconds": 25})
    wait_for(lambda: any("looping" in line for line in tail_log(ws, jid, 5)), "the toy loop to log")
    pid = ws.get_job(jid).pid
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: jid in refresh_job_states(ws), "refresh_job_states to notice the killed worker")
    job = ws.get_job(jid)
    assert job.status == "died" and job.finished_at
    assert f"worker process {pid} is gone" in job.message and "looping" in job.message
    assert refresh_job_states(ws) == []  # a died job stays died


def test_failing_job_records_the_error(ws):
    jid = submit_job(ws, "toy_fail", {"value": 7})
    job = wait_status(ws, jid, "failed", "done", "died")
    assert job.status == "failed"
    assert "toy_fail failed" in job.message and "ValueError: toy failure: bad value 7" in job.message
    assert any("Traceback" in line for line in tail_log(ws, jid, 50))


def test_one_job_at_a_time_in_submission_order(ws):
    first = submit_job(ws, "toy_loop", {"seconds": 25})
    second = submit_job(ws, "toy_ok", {"steps": 2})
    third = submit_job(ws, "toy_ok", {"steps": 2})
    wait_status(ws, first, "running")
    wait_for(lambda: ws.get_job(second).pid and ws.get_job(third).pid, "the waiting workers to start")
    assert ws.get_job(second).status == "queued" and ws.get_job(third).status == "queued"
    job = cancel_job(ws, third)  # queued: cancelled at once, its worker exits without running it
    assert job.status == "cancelled" and job.message == "cancelled before it started"
    cancel_job(ws, first)
    assert wait_status(ws, second, "done", "failed", "died").status == "done"
    assert ws.get_job(third).status == "cancelled" and ws.get_job(third).started_at is None
    assert ws.get_job(first).status == "cancelled"
    assert ws.get_job(second).started_at >= ws.get_job(first).finished_at


def test_unknown_kind_and_duplicate_registration(ws):
    with pytest.raises(ValueError, match="unknown job kind 'nope'"):
        submit_job(ws, "nope", {})
    assert ws.list_jobs() == []
    assert "toy_ok" in JOB_KINDS
    with pytest.raises(ValueError, match="already registered"):
        register_job_kind("toy_ok")(lambda ws, job_id, config, progress: {})


def test_pid_alive():
    assert pid_alive(os.getpid())
    assert not pid_alive(os.getpid(), "some-job-id")  # a live pid that is not that job's worker
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    assert not pid_alive(p.pid)
    z = subprocess.Popen([sys.executable, "-c", "pass"])
    wait_for(lambda: not pid_alive(z.pid), "the exited child (a zombie until reaped) to count as dead", 10)
    z.wait()


def test_submit_job_once_checks_and_queues_in_one_write_transaction(ws, monkeypatch):
    """Two sessions submitting the same job at the same moment get one job: while ``same`` is being asked, the
    workspace's write lock is held (another writer times out), and concurrent submitters see each other's job."""
    import sqlite3
    import threading
    import time

    from seghz.jobs import runner, submit_job_once

    started: list[str] = []
    monkeypatch.setattr(runner, "start_worker", lambda w, job_id: started.append(job_id))  # no worker process
    ws.create_job("toy_ok", {"steps": 1, "key": "other"})  # an unrelated queued job: not "the same"
    seen_lock: list[str] = []

    def same_and_probe(job) -> bool:
        other = sqlite3.connect(ws.db_path, timeout=0.05, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # a second writer, mid-check
            other.execute("ROLLBACK")
        except sqlite3.OperationalError as e:
            seen_lock.append(str(e))
        finally:
            other.close()
        return job.config.get("key") == "a"

    jid, created = submit_job_once(ws, "toy_ok", {"steps": 1, "key": "a"}, same_and_probe)
    assert created and started == [jid] and seen_lock and "locked" in seen_lock[0]

    def slow_same(job) -> bool:
        time.sleep(0.2)  # widen the window between the check and the insert
        return job.config.get("key") == "b"

    go, results = threading.Barrier(3), []

    def submit() -> None:
        go.wait()
        results.append(submit_job_once(ws, "toy_ok", {"steps": 1, "key": "b"}, slow_same))

    threads = [threading.Thread(target=submit) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(c for _, c in results) == [False, False, True]
    assert len({j for j, _ in results}) == 1  # all three name the one job
    assert [j.config.get("key") for j in ws.list_jobs()].count("b") == 1 and len(started) == 2
    assert submit_job_once(ws, "toy_ok", {"steps": 1, "key": "a"}, lambda j: j.config.get("key") == "a") == (jid, False)
    with pytest.raises(ValueError, match="unknown job kind"):
        submit_job_once(ws, "nope", {}, None)


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(")") + 2] == "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to tell a zombie")
def test_a_finished_worker_does_not_stay_a_zombie(ws):
    """The review's browser session: every finished job left a defunct python under streamlit (a done job is never
    looked at by refresh_job_states' dead-worker check, so nothing collected its exit status)."""
    jid = submit_job(ws, "toy_ok", {"steps": 2})
    pid = wait_status(ws, jid, "done").pid
    wait_for(lambda: _zombie(pid) or not Path(f"/proc/{pid}").exists() or None, "the worker to exit")
    refresh_job_states(ws)  # what every page does on its next run
    assert not _zombie(pid) and not Path(f"/proc/{pid}").exists()
