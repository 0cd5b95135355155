"""Browser smoke test of the offline Map: a real Streamlit server + headless Chromium.

Checks, for a pixel-space scene (CRS.Simple) and a georeferenced one (Web Mercator): Leaflet renders inside the
streamlit-folium iframe with ``window.L`` = the vendored Leaflet 1.9.4 and Leaflet.draw 1.0.4, the local scene
tiles load, the rectangle/polygon draw tools exist, no request leaves 127.0.0.1 (all Leaflet JS/CSS comes from
the Streamlit server), and a rectangle drawn with the mouse comes back through ``st_folium`` as GeoJSON and maps
to the expected pixel window. Screenshots: /tmp/map_smoke.png (pixel), /tmp/map_smoke_georef.png.
"""
from __future__ import annotations

import math
import re
from urllib.parse import urlparse

import pytest

LOCAL_HOSTS = {"127.0.0.1", "localhost"}
IFRAME = "iframe[title='streamlit_folium.st_folium']"
LEAFLET_ASSETS = (
    "/app/static/vendor/leaflet/leaflet.js",
    "/app/static/vendor/leaflet/leaflet.css",
    "/app/static/vendor/leaflet-draw/leaflet.draw.js",
    "/app/static/vendor/leaflet-draw/leaflet.draw.css",
)


@pytest.mark.parametrize("kind", ["pixel", "georef"])
def test_offline_map_renders_and_draws(kind, browser_page, map_smoke_url):
    page = browser_page
    requests: list[str] = []
    failed: list[tuple[str, str]] = []
    status: dict[str, int] = {}
    page_errors: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("requestfailed", lambda r: failed.append((r.url, str(r.failure))))
    page.on("response", lambda r: status.__setitem__(r.url, r.status))
    page.on("pageerror", lambda e: page_errors.append(str(e)))

    page.goto(f"{map_smoke_url}/?kind={kind}", wait_until="domcontentloaded")
    iframe = page.wait_for_selector(IFRAME, timeout=30_000)
    frame = iframe.content_frame()
    assert frame is not None

    # Leaflet renders inside the component iframe, from the vendored files.
    frame.wait_for_selector(".leaflet-container", timeout=30_000)
    versions = frame.evaluate("() => [typeof window.L, window.L && L.version, window.L && L.drawVersion]")
    assert versions == ["object", "1.9.4", "1.0.4"], versions
    crs_simple = frame.evaluate("() => window.map.options.crs === L.CRS.Simple")
    assert crs_simple == (kind == "pixel")

    # Draw toolbar: rectangle + polygon only.
    rect_btn = frame.wait_for_selector("a.leaflet-draw-draw-rectangle", timeout=10_000)
    assert frame.query_selector("a.leaflet-draw-draw-polygon") is not None
    for absent in ("polyline", "circle", "marker", "circlemarker"):
        assert frame.query_selector(f"a.leaflet-draw-draw-{absent}") is None, absent

    # Local scene tiles load.
    frame.wait_for_function("() => document.querySelectorAll('img.leaflet-tile-loaded').length > 0", timeout=15_000)

    # Draw a rectangle with the mouse (container points 200,120 -> 400,300).
    box = frame.locator(".leaflet-container").bounding_box()
    assert box and box["width"] > 400 and box["height"] > 300, box
    p0, p1 = (200, 120), (400, 300)
    rect_btn.click()
    page.mouse.move(box["x"] + p0[0], box["y"] + p0[1])
    page.mouse.down()
    page.mouse.move(box["x"] + p1[0], box["y"] + p1[1], steps=10)
    page.mouse.up()
    # The corners Leaflet itself assigns to those container points.
    corners = frame.evaluate(
        "([a, b]) => [map.containerPointToLatLng(a), map.containerPointToLatLng(b)].map(l => [l.lat, l.lng])",
        [list(p0), list(p1)],
    )
    page.wait_for_selector("text=WINDOW=", timeout=20_000)
    body = page.inner_text("body")
    assert "DRAWN=" in body and '"Polygon"' in body, body
    m = re.search(r"WINDOW=\((\d+), (\d+), (\d+), (\d+)\)", body)
    assert m, body
    window = tuple(int(v) for v in m.groups())
    if kind == "pixel":
        # CRS.Simple convention: lat = -row, lng = col.
        (la0, ln0), (la1, ln1) = corners
        rows = sorted((-la0, -la1))
        cols = sorted((ln0, ln1))
        expect = (
            math.floor(rows[0] + 1e-3), math.floor(cols[0] + 1e-3),
            math.ceil(rows[1] - 1e-3) - math.floor(rows[0] + 1e-3),
            math.ceil(cols[1] - 1e-3) - math.floor(cols[0] + 1e-3),
        )
        assert all(abs(a - b) <= 1 for a, b in zip(window, expect)), (window, expect)
        # The map fits the 600x400 image at zoom 0 (1 screen px = 1 image px): a 200x180 px drag.
        assert abs(window[3] - 200) <= 1 and abs(window[2] - 180) <= 1, window
    else:
        # The window of the rectangle Leaflet put at those container points (lon/lat -> scene pixels) ...
        from seghz.data.io import RasterInfo
        from seghz.geo.tiles import geojson_to_pixel_window

        (la0, ln0), (la1, ln1) = corners
        ring = [[ln0, la0], [ln0, la1], [ln1, la1], [ln1, la0], [ln0, la0]]
        info = RasterInfo("smoke_georef.tif", 600, 400, 3, "uint8", "EPSG:3857", (1.0, 0.0, 13375037.0, 0.0, -1.0, 3535726.0))
        expect = geojson_to_pixel_window({"type": "Polygon", "coordinates": [ring]}, info)
        assert all(abs(a - b) <= 1 for a, b in zip(window, expect)), (window, expect)
        # ... and a 1 m/px scene: the 200x180 screen px drag spans that many metres at the fitted zoom.
        zoom = frame.evaluate("() => map.getZoom()")
        mpp = 2 * 20037508.342789244 / (256 * 2**zoom)
        assert abs(window[3] - 200 * mpp) <= 3 and abs(window[2] - 180 * mpp) <= 3, (window, zoom)
    page.screenshot(path="/tmp/map_smoke.png" if kind == "pixel" else "/tmp/map_smoke_georef.png")

    # Nothing left the machine; every Leaflet asset came from the Streamlit server on 127.0.0.1.
    external = [u for u in requests if urlparse(u).scheme in ("http", "https") and urlparse(u).hostname not in LOCAL_HOSTS]
    assert not external, f"requests to non-local hosts: {external}"
    for path in LEAFLET_ASSETS:
        hits = [u for u in requests if urlparse(u).path == path]
        assert hits, f"{path} was never requested (requests: {requests})"
        assert all(urlparse(u).hostname == "127.0.0.1" and status.get(u) == 200 for u in hits), (path, hits, status)
    leaflet_like = [u for u in requests if re.search(r"leaflet|jquery|bootstrap|awesome", u, re.IGNORECASE)]
    assert all(urlparse(u).hostname == "127.0.0.1" for u in leaflet_like), leaflet_like
    # Leaflet cancels tile loads it no longer needs while zooming (net::ERR_ABORTED); anything else is an error.
    static_failures = [f for f in failed if "/app/static/" in f[0] and "ERR_ABORTED" not in f[1]]
    assert not static_failures, static_failures
    bad_status = {u: s for u, s in status.items() if "/app/static/" in u and s >= 400}
    assert not bad_status, bad_status
    assert not page_errors, page_errors
