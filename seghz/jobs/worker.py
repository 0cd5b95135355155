"""The worker process of one job: ``python -m seghz.jobs.worker <workspace> <job id>``.

It waits until the job is first in line and no other job runs, marks it running, calls the job kind's
function and records the outcome: ``done`` with the result, ``cancelled`` on :class:`JobCancelled`, or
``failed`` with the traceback's last lines (the full traceback goes to the job log).
"""
from __future__ import annotations

import json
import os
import sys
import time
import traceback

from seghz.jobs.runner import JobCancelled, ProgressReporter, load_job_kinds, refresh_job_states
from seghz.security import redact_secrets
from seghz.store import Workspace, now_iso

QUEUE_POLL_S = 0.5
TRACEBACK_LINES = 6


def _fail(ws: Workspace, job_id: str, exc: BaseException, what: str) -> None:
    text = redact_secrets("".join(traceback.format_exception(exc)))  # an API key in a URL must not reach log/index
    print(text, file=sys.stderr, flush=True)
    tail = "\n".join(text.strip().splitlines()[-TRACEBACK_LINES:])
    ws.update_job(job_id, status="failed", finished_at=now_iso(), message=f"{what}:\n{tail}")


def _wait_for_turn(ws: Workspace, job_id: str) -> bool:
    """Poll until the job is claimed (True) or no longer queued, e.g. cancelled while waiting (False)."""
    while True:
        job = ws.claim_job(job_id, os.getpid())
        if job.status == "running":
            return True
        if job.status != "queued":
            return False
        if job.cancel_requested:
            ws.update_job(job_id, status="cancelled", finished_at=now_iso(), message="cancelled before it started")
            return False
        refresh_job_states(ws)  # a dead job ahead in line must not block the queue forever
        time.sleep(QUEUE_POLL_S)


def run_job(ws: Workspace, job_id: str) -> int:
    """Run one job to its end and record the outcome; returns the process exit code (0 = done or cancelled)."""
    ws.update_job(job_id, pid=os.getpid())
    try:
        kinds = load_job_kinds()
        kind = ws.get_job(job_id).kind
        if kind not in kinds:
            raise LookupError(f"unknown job kind '{kind}'; registered kinds: {', '.join(sorted(kinds)) or 'none'}")
    except Exception as e:  # noqa: BLE001 - any import error must end up in the job's message
        _fail(ws, job_id, e, "could not load the job kind")
        return 1
    if not _wait_for_turn(ws, job_id):
        return 0
    job = ws.get_job(job_id)
    progress = ProgressReporter(ws, job_id)
    progress.log(f"job {job_id} ({job.kind}) started in process {os.getpid()}")
    t0 = time.monotonic()
    try:
        progress.check_cancel()
        result = kinds[job.kind](ws, job_id, job.config, progress) or {}
        json.dumps(result)  # refuse a result the index cannot store before claiming success
    except JobCancelled:
        elapsed = time.monotonic() - t0
        progress.log(f"cancelled after {elapsed:.1f} s")
        ws.update_job(job_id, status="cancelled", finished_at=now_iso(), message=f"cancelled by request after {elapsed:.1f} s")
        return 0
    except Exception as e:  # noqa: BLE001 - the job's failure is recorded, not re-raised
        _fail(ws, job_id, e, f"{job.kind} failed after {time.monotonic() - t0:.1f} s")
        return 1
    elapsed = time.monotonic() - t0
    progress.log(f"done in {elapsed:.1f} s")
    ws.update_job(job_id, status="done", progress=1.0, result=result, finished_at=now_iso(), message=f"done in {elapsed:.1f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``argv`` = [workspace root, job id]."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m seghz.jobs.worker <workspace> <job id>", file=sys.stderr)
        return 2
    return run_job(Workspace(args[0]), args[1])


if __name__ == "__main__":
    sys.exit(main())
