"""Background jobs: a registry of job kinds, submission as a separate process, progress, cancel and liveness.

A job runs in its own process (``python -m seghz.jobs.worker <workspace> <job id>``) started in a new
session, so it outlives the Streamlit server that submitted it and any closed browser tab. Its state lives
in the workspace index (``jobs`` and ``job_metrics``), its stdout/stderr and :meth:`ProgressReporter.log`
lines in ``jobs/<id>.log``. One job runs at a time per workspace; later ones wait in line (FIFO).

Job kinds are registered with :func:`register_job_kind` in ``seghz.jobs.kinds`` (when that module exists)
and in the modules named in ``$SEGHZ_JOB_MODULES`` (comma-separated); :func:`load_job_kinds` imports them.
"""
from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from seghz.security import redact_secrets
from seghz.store import Job, Workspace, now_iso

JobFn = Callable[[Workspace, str, dict, "ProgressReporter"], dict]

JOB_KINDS: dict[str, JobFn] = {}
KINDS_MODULE = "seghz.jobs.kinds"
MODULES_ENV = "SEGHZ_JOB_MODULES"
CANCEL_POLL_S = 0.5
PROGRESS_MIN_INTERVAL_S = 0.25
DIED_LOG_LINES = 20
UNSTARTED_GRACE_S = 60.0


class JobCancelled(Exception):
    """Raised by :meth:`ProgressReporter.check_cancel` inside a job whose cancel was requested."""


def register_job_kind(name: str) -> Callable[[JobFn], JobFn]:
    """Decorator registering ``fn(ws, job_id, config, progress) -> dict`` as the job kind ``name``.

    Raises:
        ValueError: When another function is already registered under ``name``.
    """

    def deco(fn: JobFn) -> JobFn:
        old = JOB_KINDS.get(name)
        if old is not None and (old.__module__, old.__qualname__) != (fn.__module__, fn.__qualname__):
            raise ValueError(f"job kind '{name}' is already registered by {old.__module__}.{old.__qualname__}")
        JOB_KINDS[name] = fn
        return fn

    return deco


def load_job_kinds() -> dict[str, JobFn]:
    """Import ``seghz.jobs.kinds`` (if it exists) and the modules in ``$SEGHZ_JOB_MODULES``; return the registry.

    Raises:
        ImportError: When a module listed in ``$SEGHZ_JOB_MODULES`` (or an import inside a kinds module) fails.
    """
    try:
        importlib.import_module(KINDS_MODULE)
    except ModuleNotFoundError as e:
        if e.name != KINDS_MODULE:
            raise
    for name in filter(None, (m.strip() for m in os.environ.get(MODULES_ENV, "").split(","))):
        importlib.import_module(name)
    return JOB_KINDS


class ProgressReporter:
    """What a job function uses to report progress, metrics and log lines, and to notice a cancel request.

    Args:
        ws: The workspace.
        job_id: The running job.
    """

    def __init__(self, ws: Workspace, job_id: str):
        self.ws = ws
        self.job_id = job_id
        self.log_path = ws.path(ws.get_job(job_id).log_path)
        self._last_cancel_check = 0.0
        self._cancelled = False
        self._last_update = 0.0
        self._last_message: str | None = None

    def update(self, fraction: float, message: str = "") -> None:
        """Record progress (clamped to 0..1) and, when given, a status message.

        Writes are throttled to one per 0.25 s unless the message changes or the job reaches 1.0.
        """
        fraction = min(1.0, max(0.0, float(fraction)))
        now = time.monotonic()
        changed = bool(message) and message != self._last_message
        if not changed and fraction < 1.0 and now - self._last_update < PROGRESS_MIN_INTERVAL_S:
            return
        fields: dict = {"progress": fraction}
        if message:
            fields["message"] = message
            self._last_message = message
        self.ws.update_job(self.job_id, **fields)
        self._last_update = now

    def metrics(self, step: int, epoch: int, **values: float) -> None:
        """Record metric values at a step, e.g. ``metrics(120, 3, loss=0.41, lr=1e-3)``."""
        self.ws.add_job_metrics(self.job_id, step, epoch, values)

    def log(self, line: str) -> None:
        """Append a time-stamped line to the job's log file (API keys in URLs masked, see seghz.security)."""
        stamp = datetime.now().strftime("%H:%M:%S")
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(f"[{stamp}] {redact_secrets(line.rstrip())}\n")

    def check_cancel(self, force: bool = False) -> None:
        """Raise :class:`JobCancelled` when a cancel was requested (reads the index at most every 0.5 s, or now
        with ``force``: before a step that cannot be taken back, such as registering a checkpoint)."""
        now = time.monotonic()
        if not self._cancelled and (force or now - self._last_cancel_check >= CANCEL_POLL_S):
            self._last_cancel_check = now
            self._cancelled = self.ws.cancel_requested(self.job_id)
        if self._cancelled:
            raise JobCancelled(f"job '{self.job_id}' was cancelled")


def submit_job(ws: Workspace, kind: str, config: dict) -> str:
    """Queue a job and start its worker process; return the job id.

    The worker runs ``python -m seghz.jobs.worker <workspace> <job id>`` in a new session with stdout and
    stderr appended to ``jobs/<id>.log``; it waits until no other job runs and it is first in line.

    Raises:
        ValueError: When ``kind`` is not a registered job kind.
    """
    return submit_job_once(ws, kind, config, None)[0]


def submit_job_once(ws: Workspace, kind: str, config: dict, same: Callable[[Job], bool] | None) -> tuple[str, bool]:
    """:func:`submit_job` unless a queued or running job is ``same`` as this one (checked and queued in one write
    transaction: :meth:`Workspace.create_job_once`; jobs whose worker died are marked so first, and never count as
    the same): ``(new id, True)``, or ``(that job's id, False)`` and no worker.

    Raises:
        ValueError: When ``kind`` is not a registered job kind.
    """
    kinds = load_job_kinds()
    if kind not in kinds:
        raise ValueError(f"unknown job kind '{kind}'; registered kinds: {', '.join(sorted(kinds)) or 'none'}")
    if same is not None:
        refresh_job_states(ws)  # a job whose worker died must not hold a new one back
    job_id, created = ws.create_job_once(kind, config, same)
    if created:
        start_worker(ws, job_id)
    return job_id, created


_children: list[subprocess.Popen] = []  # workers this process started, until reaped (reap_workers)


def reap_workers() -> int:
    """Collect the exit status of the workers this process started that have ended, so none stays a zombie (a
    job that finishes records its own status and is never looked at again by :func:`refresh_job_states`, and a
    long-running app would collect one defunct process per job). Returns how many are still running."""
    _children[:] = [p for p in _children if p.poll() is None]
    return len(_children)


def start_worker(ws: Workspace, job_id: str) -> None:
    """Start the worker process of the queued job ``job_id`` (the only place a job's process is started)."""
    reap_workers()
    job = ws.get_job(job_id)
    kind, log_path = job.kind, ws.path(job.log_path)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    package_parent = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH", "")]))
    with open(log_path, "ab") as log:
        log.write(f"[{datetime.now():%H:%M:%S}] submitted job {job_id} ({kind})\n".encode())
        log.flush()
        proc = subprocess.Popen(
            [sys.executable, "-m", "seghz.jobs.worker", str(ws.root), job_id],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    _children.append(proc)
    with ws.transaction() as conn:  # the worker may already have recorded its pid (the same one)
        conn.execute("UPDATE jobs SET pid = ? WHERE id = ? AND pid IS NULL", (proc.pid, job_id))


def pid_alive(pid: int, job_id: str | None = None) -> bool:
    """Whether process ``pid`` exists and is not a zombie (and, when ``job_id`` is given and /proc can tell,
    whether it is still that job's worker rather than an unrelated process that reused the pid).

    A zombie that is a child of this process (a worker this process submitted) is reaped on the way.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    proc = Path(f"/proc/{pid}")
    try:
        stat = (proc / "stat").read_text()
        if stat[stat.rindex(")") + 2] in "ZX":
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass  # not our child; its own parent reaps it
            return False
        if job_id is not None:
            return job_id in (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
    except FileNotFoundError:
        return False
    except OSError:
        pass  # no /proc (macOS): os.kill said the pid exists
    return True


def refresh_job_states(ws: Workspace) -> list[str]:
    """Mark queued/running jobs whose worker process is gone as ``died`` (message = last log lines).

    A queued job whose worker never recorded a pid is considered dead after 60 s.

    Returns:
        Ids of the jobs marked ``died``.
    """
    reap_workers()
    died = []
    for job in ws.list_jobs():
        if not job.active:
            continue
        if job.pid is None:
            age = datetime.now(UTC) - datetime.fromisoformat(job.created_at)
            if age < timedelta(seconds=UNSTARTED_GRACE_S):
                continue
        elif pid_alive(job.pid, job.id):
            continue
        with ws.transaction() as conn:  # re-check under the write lock: the worker may just have finished
            row = conn.execute("SELECT status, pid FROM jobs WHERE id = ?", (job.id,)).fetchone()
            if row["status"] not in ("queued", "running") or (row["pid"] is not None and pid_alive(row["pid"], job.id)):
                continue
            what = f"worker process {row['pid']}" if row["pid"] is not None else "the worker process"
            lines = tail_log(ws, job.id, DIED_LOG_LINES)
            message = f"{what} is gone (killed or crashed) while the job was {row['status']}"
            if lines:
                message += "; last log lines:\n" + "\n".join(lines)
            conn.execute(
                "UPDATE jobs SET status = 'died', finished_at = ?, message = ? WHERE id = ?", (now_iso(), message, job.id)
            )
        died.append(job.id)
    return died


def cancel_job(ws: Workspace, job_id: str) -> Job:
    """Request a job's cancel; a job still queued (not started) becomes ``cancelled`` at once.

    A running job stops at its next :meth:`ProgressReporter.check_cancel`. Finished jobs are left as they are.

    Returns:
        The job after the request.
    """
    with ws.transaction() as conn:
        conn.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ? AND status IN ('queued', 'running')", (job_id,))
        conn.execute(
            "UPDATE jobs SET status = 'cancelled', finished_at = ?, message = 'cancelled before it started' "
            "WHERE id = ? AND status = 'queued'",
            (now_iso(), job_id),
        )
    return ws.get_job(job_id)


RETRYABLE_STATUSES = ("done", "failed", "cancelled", "died")


def retry_job(ws: Workspace, job_id: str) -> str:
    """Submit a new job with the same kind and config as a finished, failed, cancelled or died job; its id.

    Raises:
        ValueError: When the job is still queued or running.
    """
    job = ws.get_job(job_id)
    if job.status not in RETRYABLE_STATUSES:
        raise ValueError(f"job '{job_id}' is {job.status}; only {', '.join(RETRYABLE_STATUSES)} jobs can be retried")
    return submit_job(ws, job.kind, dict(job.config))


def tail_log(ws: Workspace, job_id: str, n: int = 50) -> list[str]:
    """The last ``n`` lines of a job's log (empty when the log does not exist yet)."""
    path = ws.path(ws.get_job(job_id).log_path)
    try:
        with open(path, "rb") as f:
            pos = f.seek(0, os.SEEK_END)
            chunk = b""
            while pos > 0 and chunk.count(b"\n") <= n:
                step = min(8192, pos)
                pos -= step
                f.seek(pos)
                chunk = f.read(step) + chunk
    except FileNotFoundError:
        return []
    return chunk.decode("utf-8", errors="replace").splitlines()[-n:] if n > 0 else []
