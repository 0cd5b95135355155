"""Background jobs in separate processes: registry of kinds, submission, progress, cancel, liveness, logs."""
from seghz.jobs.runner import (
    JOB_KINDS,
    JobCancelled,
    ProgressReporter,
    cancel_job,
    load_job_kinds,
    refresh_job_states,
    register_job_kind,
    submit_job,
    submit_job_once,
    tail_log,
)

__all__ = [
    "JOB_KINDS",
    "JobCancelled",
    "ProgressReporter",
    "cancel_job",
    "load_job_kinds",
    "refresh_job_states",
    "register_job_kind",
    "submit_job",
    "submit_job_once",
    "tail_log",
]
