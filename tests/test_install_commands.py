"""The README's first commands are what CI runs: `.ci/run` must install and test exactly as README step 1 and 3 say,
and installing the project must give the `seghz` command (pyproject's console script)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_setup_block() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    m = re.search(r"## Install, run, test\s+```bash\n(.*?)```", text, re.DOTALL)
    assert m, "README lost its 'Install, run, test' bash block"
    return [ln.strip() for ln in m.group(1).splitlines() if ln.strip() and not ln.strip().startswith("#")]


def _ci_commands() -> str:
    return (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_ci_runs_the_readme_install_and_test_commands():
    lines = _readme_setup_block()
    install = lines[0]
    ci = _ci_commands()
    # each pip step of README step 1 appears in .ci/run (CI adds -q)
    for part in [p.strip() for p in install.split("&&")]:
        if part.startswith("pip install"):
            args = part.removeprefix("pip install").split()
            assert any(ln.strip().startswith("pip install") and ln.split()[2:] and
                       [a for a in ln.split()[2:] if a != "-q"] == args for ln in ci.splitlines()), (
                f"README installs with {part!r} but .ci/run does not")
    test_cmd = next(ln for ln in lines if ln.startswith("python -m pytest"))
    assert test_cmd in ci, f"README's test command {test_cmd!r} is not what .ci/run runs"
    assert any(ln.startswith("streamlit run app.py") for ln in lines), "README step 2 no longer runs the app"


def test_project_installs_the_seghz_command(tmp_path):
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert meta["project"]["scripts"]["seghz"] == "seghz.cli:entry"
    pkg = meta["tool"]["setuptools"]
    assert pkg["packages"]["find"]["include"] == ["seghz*"]
    assert pkg["package-data"]["seghz"] == ["schemes/*.json"]
    # README step 1 installed the project: the CLI runs from another folder, with no PYTHONPATH, and finds
    # its scheme files (the registry reads them at import)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["SEGHZ_WORKSPACE"] = str(tmp_path / "ws")
    out = subprocess.run([sys.executable, "-m", "seghz", "info"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "hz7 (7)" in out.stdout and str(tmp_path / "ws") in out.stdout
    script = Path(sys.executable).with_name("seghz")
    assert script.exists(), f"{script} missing: run README step 1 (pip install --no-deps -e .)"
    out = subprocess.run([str(script), "--help"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "predict-scene" in out.stdout, out.stderr[-2000:]


def test_end_process_leaves_a_torchrun_worker_through_os_exit_with_its_output_flushed(tmp_path):
    """Under torchrun (WORLD_SIZE > 1) the CLI ends through os._exit (no interpreter teardown, where gloo could
    abort a finished rank) with the exit status kept and buffered output written; elsewhere it raises SystemExit."""
    code = ("import atexit, sys\n"
            "from seghz.cli import end_process\n"
            "atexit.register(lambda: print('teardown ran'))\n"
            "print('buffered line', end='')\n"
            "sys.stderr.write('err line')\n"
            "end_process(3)\n")
    for world, teardown in (("2", False), ("1", True), (None, True)):
        env = {k: v for k, v in os.environ.items() if k != "WORLD_SIZE"} | ({"WORLD_SIZE": world} if world else {})
        env["PYTHONPATH"] = str(ROOT)
        out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 3, (world, out.stderr[-2000:])
        assert out.stdout.startswith("buffered line") and "err line" in out.stderr, world
        assert ("teardown ran" in out.stdout) is teardown, world  # os._exit skips atexit and the teardown


def test_output_piped_into_a_reader_that_stops_early_ends_quietly(tmp_path):
    """``seghz scenes list | head -1``: the CLI ends with status 141 (SIGPIPE, as Unix tools do), no traceback."""
    code = ("import seghz.cli as c\n"
            "c.main = lambda: sum(print('scene ' + 'x' * 100) or 0 for _ in range(200000))\n"
            "c.entry()\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().startswith("scene x")
    proc.stdout.close()  # the reader stops, like head -1
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141, err[-2000:]
    assert "Traceback" not in err and "BrokenPipeError" not in err, err[-2000:]
