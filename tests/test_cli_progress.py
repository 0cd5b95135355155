"""CLI progress: a bar on a terminal, plain lines every 10 % elsewhere (a long `seghz evaluate --tta d4` written to a
log file showed nothing until it ended)."""
from __future__ import annotations

import io
import re

from seghz.cli import _tqdm_progress


class _Pipe(io.StringIO):
    def isatty(self) -> bool:
        return False


def test_non_terminal_progress_prints_one_line_per_tenth():
    out = _Pipe()
    cb = _tqdm_progress("evaluate", stream=out)
    for i in range(1, 125):
        cb(i / 124, f"scored tile_{i}")
    cb.close()
    lines = out.getvalue().splitlines()
    pct = [int(re.match(r"evaluate:\s+(\d+) %  \d+m\d\ds", ln).group(1)) for ln in lines]
    assert pct == [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100]  # the first call says it started
    assert lines[-1].endswith("scored tile_124")


def test_non_terminal_progress_starts_at_zero_and_never_repeats():
    out = _Pipe()
    cb = _tqdm_progress("train", stream=out)
    for f in (0.0, 0.0, 0.05, 0.34, 0.2, 1.0, 1.0):
        cb(f)
    assert [ln.split()[1] for ln in out.getvalue().splitlines()] == ["0", "30", "100"]
