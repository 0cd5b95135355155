"""Fixtures for browser tests: a real ``streamlit run`` server and a headless system Chromium (Playwright).

* :func:`run_streamlit` (context manager) starts ``streamlit run <script> --server.port <free port>
  --server.address 127.0.0.1 --server.headless true`` with the repository root as working directory (so the
  project's ``.streamlit/config.toml`` applies) and ``HF_HUB_OFFLINE=1``, waits for ``/_stcore/health``, yields
  the base URL and stops the process it started.
* Streamlit serves the ``static/`` folder that sits next to the **main script** (not the working directory) at
  ``/app/static``. The smoke app therefore runs from a temporary folder holding a copy of
  ``tests/browser/map_smoke_app.py`` and a copy of the committed ``static/vendor`` (tile pyramids it builds go
  to that temporary ``static/tiles``, never into the repository).
* The browser is ``/usr/bin/chromium`` (Debian package ``chromium``) launched through Playwright's
  ``executable_path``; Playwright's own browser downloads are never used. Tests skip with a reason when it is
  missing.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
STARTUP_TIMEOUT_S = 45.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def run_streamlit(script: Path, *, cwd: Path = ROOT, env: dict[str, str] | None = None) -> Iterator[str]:
    """Run ``streamlit run script`` on a free localhost port; yield ``http://127.0.0.1:<port>``."""
    port = free_port()
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), full_env.get("PYTHONPATH", "")) if p)
    log_path = Path(script).with_suffix(".streamlit.log")
    cmd = [
        sys.executable, "-m", "streamlit", "run", str(script),
        "--server.port", str(port), "--server.address", "127.0.0.1", "--server.headless", "true",
    ]
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, env=full_env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + STARTUP_TIMEOUT_S
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"streamlit exited with code {proc.returncode}:\n{log_path.read_text(errors='replace')}")
                try:
                    with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                        if r.status == 200:
                            break
                except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"streamlit not healthy after {STARTUP_TIMEOUT_S:.0f} s:\n{log_path.read_text(errors='replace')}")
                time.sleep(0.25)
            yield url
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def chromium_browser():
    """A headless system Chromium driven by Playwright (sync API)."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (install the Debian package: apt-get install -y chromium); browser tests need it")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright Python package is not installed")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def browser_page(chromium_browser):
    ctx = chromium_browser.new_context(viewport={"width": 1100, "height": 900})
    page = ctx.new_page()
    try:
        yield page
    finally:
        ctx.close()


@pytest.fixture(scope="session")
def map_smoke_url(chromium_browser, tmp_path_factory) -> Iterator[str]:
    """URL of the running test-only map app (``tests/browser/map_smoke_app.py``) with local Leaflet assets."""
    vendor = ROOT / "static" / "vendor"
    if not (vendor / "leaflet" / "leaflet.js").is_file():
        pytest.fail(f"{vendor} lacks the vendored Leaflet files (run scripts/vendor_leaflet.sh)")
    app_dir = tmp_path_factory.mktemp("map_smoke")
    shutil.copy2(HERE / "map_smoke_app.py", app_dir / "map_smoke_app.py")
    shutil.copytree(vendor, app_dir / "static" / "vendor")
    with run_streamlit(app_dir / "map_smoke_app.py") as url:
        yield url
