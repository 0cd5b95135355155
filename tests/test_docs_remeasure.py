"""Every command in docs/remeasure.md is accepted by its script's own argument parser (so the page cannot rot).

Each command runs in a child process whose ``argparse`` stops right after a successful parse: nothing is measured,
but an unknown option, a bad choice or a missing argument fails the test exactly as it would fail a reader.
"""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "remeasure.md"

DRIVER = r"""
import argparse, runpy, sys
_orig = argparse.ArgumentParser.parse_args
def _parse_only(self, args=None, namespace=None):
    _orig(self, args, namespace)
    print("PARSED-OK")
    raise SystemExit(0)
argparse.ArgumentParser.parse_args = _parse_only
target, argv = sys.argv[1], sys.argv[2:]
if target.endswith(".py"):
    sys.argv = [target] + argv
    runpy.run_path(target, run_name="__main__")
else:
    sys.argv = [target] + argv
    runpy.run_module(target, run_name="__main__", alter_sys=True)
"""


def _commands() -> list[str]:
    cmds = re.findall(r"`(python [^`]+)`", DOC.read_text())
    return [c for c in cmds if "..." not in c]  # "seghz report ... --html" is shorthand in prose


def test_the_page_has_a_command_for_each_kind_of_claim():
    text = " ".join(_commands())
    for needle in ("seghz evaluate", "bench/noise_bench.py", "bench/noise_loop_bench.py", "bench/experiments.py",
                   "bench/infer_bench.py", "bench/train_bench.py"):
        assert needle in text, needle


@pytest.mark.parametrize("cmd", _commands())
def test_documented_command_parses(cmd, tmp_path):
    argv = [a.replace("DIR", str(tmp_path)) for a in shlex.split(cmd)[1:]]
    if argv[0] == "-m":
        target, rest = argv[1], argv[2:]
    else:
        target, rest = str(ROOT / argv[0]), argv[1:]
    proc = subprocess.run([sys.executable, "-c", DRIVER, target, *rest], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0 and "PARSED-OK" in proc.stdout, f"{cmd}\n{proc.stdout[-1500:]}\n{proc.stderr[-1500:]}"
