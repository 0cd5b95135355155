"""Load: 4 browser sessions at once against one ``streamlit run app.py`` server, each predicting its own region.

Four Playwright contexts (separate cookies/storage, i.e. four Streamlit sessions) open the Map page of one server
on a fresh workspace with one 256 px georeferenced synthetic scene and a tiny untrained checkpoint
(``tests/test_page_map.py``). Each draws a different rectangle (one quadrant of the scene), then all four press
"Predict region" before any prediction has finished. Every session must end with its own prediction and no
exception/st.error box, and nothing may leak between sessions: each page's "Drawn region" and "Predicted window"
captions name its own rectangle, and every vector shape on its Leaflet map lies inside its own rectangle (no other
session's drawing or outline).
"""
from __future__ import annotations

import re
import sys

import pytest
from conftest import (
    ROOT,
    app_errors,
    draw_rectangle,
    full_screenshot,
    open_map,
    run_app,
    scene_rect_points,
    wait_app_idle,
)

sys.path.insert(0, str(ROOT / "tests"))
from test_page_map import SCENE_SIZE, populate_map_workspace, remove_tiles

pytestmark = pytest.mark.browser

S = SCENE_SIZE
# (row0, col0, row1, col1) in scene pixels: the four quadrants, kept apart by a gap
REGIONS = [(8, 8, 112, 112), (8, 144, 112, 248), (144, 8, 248, 112), (144, 144, 248, 248)]
TOL_PX = 3  # scene pixels: mouse positions are rounded to screen pixels
SHAPES_JS = """() => { const out = []; map.eachLayer(l => { if (l.getBounds && l.getLatLngs) {
    const b = l.getBounds(); out.push([b.getSouth(), b.getWest(), b.getNorth(), b.getEast()]); } }); return out; }"""


@pytest.fixture(scope="module")
def load_app(chromium_browser, tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("load")
    ws = populate_map_workspace(tmp / "ws")
    try:
        with run_app(ws.root, tmp / "app") as url:
            yield url, ws
    finally:
        remove_tiles(ws.root)


def region_caption(text: str, prefix: str) -> tuple[int, int, int, int] | None:
    m = re.search(prefix + r" rows (\d+)–(\d+), columns (\d+)–(\d+)", text)
    return tuple(int(v) for v in m.groups()) if m else None  # r0, r1, c0, c1


def close(got, region) -> bool:
    r0, c0, r1, c1 = region
    return got is not None and all(abs(a - b) <= TOL_PX for a, b in zip(got, (r0, r1 - 1, c0, c1 - 1)))


def test_four_sessions_predict_their_own_regions(load_app, chromium_browser, tmp_path):
    from seghz.data.io import raster_info
    from seghz.geo.tiles import latlng_to_pixel

    url, ws = load_app
    info = raster_info(ws.scene_path("town", "image"))
    contexts = [chromium_browser.new_context(viewport={"width": 1200, "height": 1000}) for _ in REGIONS]
    try:
        pages, frames = [], []
        for ctx in contexts:
            page = ctx.new_page()
            page.set_default_timeout(90_000)
            frames.append(open_map(page, url, timeout_ms=90_000))
            pages.append(page)

        for page, frame, region in zip(pages, frames, REGIONS):
            r0, c0, r1, c1 = region
            p0, p1 = scene_rect_points(frame, info, r0, c0, r1, c1)
            assert p1[0] - p0[0] > 40 and p1[1] - p0[1] > 40, (p0, p1)
            draw_rectangle(page, frame, p0, p1)
            page.get_by_text("Drawn region:").first.wait_for()

        buttons = [page.get_by_role("button", name="Predict region") for page in pages]
        for b in buttons:
            b.wait_for()
            assert b.is_enabled()
        for b in buttons:  # all four sessions predict at the same time
            b.click(no_wait_after=True)

        for i, (page, frame, region) in enumerate(zip(pages, frames, REGIONS)):
            page.get_by_text("Class areas").first.wait_for(timeout=120_000)
            page.get_by_text(re.compile(r"Predicted window rows \d+")).first.wait_for(timeout=60_000)
            frame.wait_for_selector("img.leaflet-image-layer", state="attached", timeout=30_000)
            wait_app_idle(page)  # read the page between reruns, not half-drawn
            text = page.inner_text("body")
            assert not app_errors(page), (i, app_errors(page))
            drawn = region_caption(text, "Drawn region:")
            predicted = region_caption(text, "Predicted window")
            assert close(drawn, region), (i, region, drawn)
            assert close(predicted, region), (i, region, predicted)
            assert "earlier region" not in text, i
            # every vector shape on this session's map (its drawing, the region and window outlines) is its own
            shapes = frame.evaluate(SHAPES_JS)
            assert len(shapes) >= 2, (i, shapes)
            r0, c0, r1, c1 = region
            for south, west, north, east in shapes:
                rows, cols = latlng_to_pixel([north, south], [west, east], info)
                assert r0 - TOL_PX <= min(rows) and max(rows) <= r1 + TOL_PX, (i, region, rows, cols)
                assert c0 - TOL_PX <= min(cols) and max(cols) <= c1 + TOL_PX, (i, region, rows, cols)
        full_screenshot(pages[0], tmp_path / "load_session0.png")
        full_screenshot(pages[-1], tmp_path / "load_session3.png")
    finally:
        for ctx in contexts:
            ctx.close()
