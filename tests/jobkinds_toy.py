"""Toy job kinds for tests/test_jobs.py, loaded by workers through ``$SEGHZ_JOB_MODULES=jobkinds_toy``."""
from __future__ import annotations

import time

from seghz.jobs import ProgressReporter, register_job_kind
from seghz.store import Workspace


@register_job_kind("toy_ok")
def toy_ok(ws: Workspace, job_id: str, config: dict, progress: ProgressReporter) -> dict:
    """Report progress and metrics over ``config["steps"]`` steps, then return a result."""
    steps = int(config.get("steps", 4))
    for i in range(steps):
        progress.check_cancel()
        progress.update((i + 1) / steps, f"step {i + 1}/{steps}")
        progress.metrics(step=i, epoch=i // 2, loss=1.0 / (i + 1), acc=i / steps)
        progress.log(f"toy step {i}")
    return {"answer": 42, "steps": steps}


@register_job_kind("toy_loop")
def toy_loop(ws: Workspace, job_id: str, config: dict, progress: ProgressReporter) -> dict:
    """Loop (checking cancel) for up to ``config["seconds"]`` seconds."""
    t0 = time.monotonic()
    i = 0
    while time.monotonic() - t0 < float(config.get("seconds", 30)):
        progress.check_cancel()
        if i % 10 == 0:
            progress.log(f"looping {i}")
        progress.update(min(0.99, (time.monotonic() - t0) / 30), f"iteration {i}")
        i += 1
        time.sleep(0.02)
    return {"iterations": i}


@register_job_kind("toy_fail")
def toy_fail(ws: Workspace, job_id: str, config: dict, progress: ProgressReporter) -> dict:
    """Fail with a recognisable error."""
    progress.log("about to fail")
    raise ValueError(f"toy failure: bad value {config.get('value')}")
