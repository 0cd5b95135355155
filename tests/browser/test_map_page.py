"""Browser test of the Map page: ``streamlit run app.py`` + headless Chromium, fully offline.

A fresh temporary workspace (``$SEGHZ_WORKSPACE``, ``$SEGHZ_NO_DEMO=1``) is pre-populated with one 256 px
georeferenced synthetic hz7 scene and a checkpoint (see ``tests/test_page_map.py``): the shipped
``checkpoints/demo_hz7.safetensors`` when it exists (a nicer screenshot), else a tiny untrained one -- nothing the
test asserts depends on the prediction's quality. The test opens ``/Map``, waits for Leaflet inside the streamlit-folium
iframe, draws a rectangle with the mouse, presses "Predict region" and checks that the prediction overlay
(``img.leaflet-image-layer``) appears on the map without the map being re-created (the drawn shape stays), that
the legend and the class-area table show the hz7 classes, that the entropy layer (a second overlay with its
colour-bar legend) can be switched on in place, and that nothing was fetched from a host other than
127.0.0.1. Screenshot: ``docs/screenshots/map.png``.

The server runs the repository's ``app.py`` with the repository root as working directory (so
``.streamlit/config.toml`` applies) through a temporary folder of symlinks (``app.py``, ``pages``, ``static``):
Streamlit serves ``<folder of the main script>/static`` -- the symlink, i.e. the repository's ``static/`` where
the page builds its tiles -- and ``run_streamlit`` writes its log next to the script, i.e. not into the repo.
"""
from __future__ import annotations

import os
import re
import sys
from urllib.parse import urlparse

import pytest

from conftest import ROOT, run_streamlit

sys.path.insert(0, str(ROOT / "tests"))
from test_page_map import HZ7, SCENE_SIZE, populate_map_workspace, remove_tiles  # noqa: E402

pytestmark = pytest.mark.browser

LOCAL_HOSTS = {"127.0.0.1", "localhost"}
IFRAME = "iframe[title='streamlit_folium.st_folium']"
SCREENSHOT = ROOT / "docs" / "screenshots" / "map.png"


@pytest.fixture
def map_app(chromium_browser, tmp_path):
    import torch

    torch.set_num_threads(1)
    shipped = ROOT / "checkpoints" / "demo_hz7.safetensors"
    checkpoint = None
    if shipped.is_file():  # the trained demo model, when present, makes a more telling screenshot
        from seghz.models.checkpoint import read_metadata

        try:
            checkpoint = (shipped, read_metadata(shipped))
        except Exception:  # noqa: BLE001 - still being written / unreadable: use the tiny model
            checkpoint = None
    ws = populate_map_workspace(tmp_path / "ws", checkpoint, name="demo_hz7" if checkpoint else "tiny map model")
    farm = tmp_path / "app"
    farm.mkdir()
    for name in ("app.py", "pages", "static"):
        os.symlink(ROOT / name, farm / name)
    env = {"SEGHZ_WORKSPACE": str(ws.root), "SEGHZ_NO_DEMO": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    try:
        with run_streamlit(farm / "app.py", cwd=ROOT, env=env) as url:
            yield url, ws
    finally:
        remove_tiles(ws.root)


def test_map_page_draw_predict_overlay(map_app, chromium_browser, tmp_path):
    url, ws = map_app
    ctx = chromium_browser.new_context(viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    requests: list[str] = []
    page_errors: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("pageerror", lambda e: page_errors.append(str(e)))
    try:
        page.goto(f"{url}/Map", wait_until="domcontentloaded")
        iframe = page.wait_for_selector(IFRAME, timeout=60_000)
        frame = iframe.content_frame()
        assert frame is not None
        frame.wait_for_selector(".leaflet-container", timeout=30_000)
        frame.wait_for_function("() => document.querySelectorAll('img.leaflet-tile-loaded').length > 0", timeout=20_000)
        page.wait_for_selector("text=Draw a rectangle or polygon", timeout=20_000)

        # Drag a rectangle over the middle of the scene (from 25 % to 75 % of its extent).
        from seghz.data.io import raster_info
        from seghz.geo.tiles import pixel_to_latlng

        info = raster_info(ws.scene_path("town", "image"))
        lat, lng = pixel_to_latlng([SCENE_SIZE * 0.25, SCENE_SIZE * 0.75], [SCENE_SIZE * 0.25, SCENE_SIZE * 0.75], info)
        (x0, y0), (x1, y1) = frame.evaluate(
            "(ll) => ll.map(p => { const c = map.latLngToContainerPoint(L.latLng(p[0], p[1])); return [c.x, c.y]; })",
            [[float(lat[0]), float(lng[0])], [float(lat[1]), float(lng[1])]],
        )
        assert x1 - x0 > 60 and y1 - y0 > 60, ((x0, y0), (x1, y1))
        box = frame.locator(".leaflet-container").bounding_box()
        frame.click("a.leaflet-draw-draw-rectangle")
        page.mouse.move(box["x"] + x0, box["y"] + y0)
        page.mouse.down()
        page.mouse.move(box["x"] + x1, box["y"] + y1, steps=8)
        page.mouse.up()

        page.wait_for_selector("text=Drawn region:", timeout=30_000)
        caption = page.inner_text("body")
        m = re.search(r"Drawn region: rows (\d+)–(\d+), columns (\d+)–(\d+)", caption)
        assert m, caption
        r0, r1, c0, c1 = (int(v) for v in m.groups())
        q = SCENE_SIZE // 4
        assert abs(r0 - q) <= 3 and abs(c0 - q) <= 3 and abs(r1 - 3 * q) <= 3 and abs(c1 - 3 * q) <= 3, m.group(0)

        page.get_by_role("button", name="Predict region").click()
        frame.wait_for_selector("img.leaflet-image-layer", state="attached", timeout=60_000)
        page.wait_for_selector("text=Class areas", timeout=30_000)
        src = frame.evaluate("() => document.querySelector('img.leaflet-image-layer').src")
        assert src.startswith("data:image/png;base64,")
        # the map was not re-created: the drawn rectangle is still on it, next to the overlay and its outline
        assert frame.evaluate("() => document.querySelectorAll('.leaflet-overlay-pane path').length") >= 2
        body = page.inner_text("body")
        for name in HZ7.names:
            assert name in body, f"class {name!r} missing from legend/table"
        assert "km²" in body
        # Streamlit scrolls inside its own container, so grow the viewport to get the table and chart in the shot.
        page.set_viewport_size({"width": 1400, "height": 1750})
        page.wait_for_selector(".js-plotly-plot", timeout=20_000)
        page.wait_for_timeout(1000)  # let the tiles and the chart settle
        shot = SCREENSHOT if os.environ.get("SEGHZ_SCREENSHOTS") else tmp_path / "map.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot))

        # the entropy layer: a second image overlay swapped into the same map, with its colour-bar legend
        page.get_by_text("entropy", exact=True).click()
        page.wait_for_selector("text=Predictive entropy", timeout=30_000)
        frame.wait_for_function("() => document.querySelectorAll('img.leaflet-image-layer').length >= 2", timeout=30_000)
        assert frame.evaluate("() => document.querySelectorAll('.leaflet-overlay-pane path').length") >= 2
        body = page.inner_text("body")
        assert "ln 7 = 1.95 nats" in body and "mean entropy" in body

        external = [u for u in requests if urlparse(u).scheme in ("http", "https") and urlparse(u).hostname not in LOCAL_HOSTS]
        assert not external, f"requests to non-local hosts: {external}"
        assets = [u for u in requests if urlparse(u).path.endswith((".js", ".css"))]
        assert assets and all(urlparse(u).hostname == "127.0.0.1" for u in assets), assets
        assert any(urlparse(u).path == "/app/static/vendor/leaflet/leaflet.js" for u in requests)
        assert any("/app/static/tiles/" in u for u in requests)
        assert not page_errors, page_errors
    finally:
        ctx.close()
