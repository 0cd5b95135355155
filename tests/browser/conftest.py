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


# ------------------------------------------------------------------------------------------------ the full app
# Shared by the browser tests of the app (test_map_page.py, test_pages_e2e.py, test_load.py) and by
# scripts/screenshots.py: one way to serve app.py on a workspace and one set of page-driving helpers.

FOLIUM_IFRAME = "iframe[title='streamlit_folium.st_folium']"
# exception boxes anywhere; st.error alerts in the main area (the sidebar's warning that the active model was trained
# on synthetic demo data while the workspace holds real scenes is an st.error by design)
ERROR_SELECTOR = "[data-testid='stException'], [data-testid='stMain'] [data-testid='stAlertContentError']"


@contextlib.contextmanager
def run_app(workspace: Path, farm: Path, *, demo: bool = False) -> Iterator[str]:
    """Serve the repository's ``app.py`` (with its pages) on ``workspace``; yield the base URL.

    ``farm`` is an empty scratch folder that receives symlinks to ``app.py``, ``pages`` and ``static``: Streamlit
    serves ``<folder of the main script>/static`` -- the symlink, i.e. the repository's ``static/`` with the
    vendored Leaflet and the tile pyramids -- and ``run_streamlit`` writes its log next to the script, i.e. into
    ``farm`` and not into the repository. ``demo=False`` sets ``SEGHZ_NO_DEMO=1`` (the workspace is used as is).
    """
    farm.mkdir(parents=True, exist_ok=True)
    for name in ("app.py", "pages", "static"):
        if not (farm / name).exists():
            os.symlink(ROOT / name, farm / name)
    env = {"SEGHZ_WORKSPACE": str(workspace), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    if not demo:
        env["SEGHZ_NO_DEMO"] = "1"
    with run_streamlit(farm / "app.py", cwd=ROOT, env=env) as url:
        yield url


def wait_app_idle(page, timeout_ms: int = 60_000) -> None:
    """Wait until Streamlit has finished the current script run (no "running" status widget)."""
    page.wait_for_timeout(300)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
        " || !document.querySelector('[data-testid=\"stStatusWidget\"]').innerText.match(/Running|Stop/)",
        timeout=timeout_ms,
    )


def app_errors(page) -> list[str]:
    """Texts of the exception boxes and st.error alerts currently shown on the page."""
    return [e.inner_text() for e in page.query_selector_all(ERROR_SELECTOR)]


def open_map(page, url: str, timeout_ms: int = 60_000):
    """Open the Map page; return the streamlit-folium frame once Leaflet shows loaded tiles."""
    page.goto(f"{url}/Map", wait_until="domcontentloaded")
    frame = page.wait_for_selector(FOLIUM_IFRAME, timeout=timeout_ms).content_frame()
    assert frame is not None
    frame.wait_for_selector(".leaflet-container", timeout=timeout_ms)
    frame.wait_for_function("() => document.querySelectorAll('img.leaflet-tile-loaded').length > 0", timeout=timeout_ms)
    return frame


def latlng_to_container(frame, latlngs) -> list[tuple[float, float]]:
    """Map container pixel coordinates of (lat, lng) points (Leaflet's ``latLngToContainerPoint``)."""
    return [tuple(p) for p in frame.evaluate(
        "(ll) => ll.map(p => { const c = map.latLngToContainerPoint(L.latLng(p[0], p[1])); return [c.x, c.y]; })",
        [[float(a), float(b)] for a, b in latlngs],
    )]


def scene_rect_points(frame, info, r0: float, c0: float, r1: float, c1: float) -> list[tuple[float, float]]:
    """Container pixel coordinates of the corners (r0, c0) and (r1, c1) of a georeferenced scene."""
    from seghz.geo.tiles import pixel_to_latlng

    lat, lng = pixel_to_latlng([r0, r1], [c0, c1], info)
    return latlng_to_container(frame, zip(lat, lng))


def draw_rectangle(page, frame, p0: tuple[float, float], p1: tuple[float, float]) -> None:
    """Drag a Leaflet.draw rectangle from container point ``p0`` to ``p1`` with the mouse."""
    frame.locator(".leaflet-container").scroll_into_view_if_needed()
    frame.click("a.leaflet-draw-draw-rectangle")
    box = frame.locator(".leaflet-container").bounding_box()  # after any scrolling: mouse positions are viewport ones
    page.mouse.move(box["x"] + p0[0], box["y"] + p0[1])
    page.mouse.down()
    page.mouse.move(box["x"] + p1[0], box["y"] + p1[1], steps=8)
    page.mouse.up()


def draw_centre_rectangle(page, frame, half_w: float = 160, half_h: float = 120) -> None:
    """Drag a rectangle around the centre of the map view."""
    box = frame.locator(".leaflet-container").bounding_box()
    cx, cy = box["width"] / 2, box["height"] / 2
    draw_rectangle(page, frame, (cx - half_w, cy - half_h), (cx + half_w, cy + half_h))


def assert_not_blank(png: Path, min_std: float = 3.0) -> float:
    """Assert that a screenshot has some contrast (pixel standard deviation above ``min_std``); return it."""
    import numpy as np
    from PIL import Image

    arr = np.asarray(Image.open(png).convert("L"), dtype=np.float32)
    std = float(arr.std())
    assert arr.size > 0 and std > min_std, f"{png} looks blank (pixel std {std:.2f})"
    return std


def full_screenshot(page, path: Path) -> Path:
    """A full-page screenshot at ``path``, checked not to be blank."""
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    assert_not_blank(path)
    return path


def selectbox_text(page, key: str) -> str:
    """What a keyed ``st.selectbox`` shows: its label, plus the chosen option (the value of its input, if any)."""
    box = page.locator(f".st-key-{key}").first
    inputs = box.locator("input")
    value = inputs.first.input_value() if inputs.count() else ""
    return f"{box.inner_text()}\n{value}"
