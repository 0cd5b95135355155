"""XYZ tile fetching into a GeoTIFF mosaic (seghz.geo.fetch), against a real HTTP tile server on 127.0.0.1."""
from __future__ import annotations

import io
import re
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seghz.errors import BadInputError
from seghz.geo import fetch as F

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
ZOOM = 14
BBOX = (120.20, 30.20, 120.26, 30.24)  # Hangzhou, ~3 x 2 tiles at z14


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def synthetic_tile(z: int, x: int, y: int) -> np.ndarray:
    """A tile whose pixels encode (x, y) and the pixel position, so a misplaced tile or a flip is visible."""
    rr, cc = np.mgrid[0:256, 0:256]
    t = np.zeros((256, 256, 3), np.uint8)
    t[..., 0] = (x * 37) % 256
    t[..., 1] = (y * 53) % 256
    t[..., 2] = ((rr + cc) // 2) % 256
    return t


class TileServer:
    """Serves ``/{z}/{x}/{y}.png`` from a dict; ``flaky`` tiles answer 503 ``fail_times`` times, then succeed."""

    def __init__(self, tiles: dict, flaky: dict | None = None, status: dict | None = None, garbage: set | None = None):
        self.tiles = tiles
        self.flaky = dict(flaky or {})
        self.status = dict(status or {})
        self.garbage = set(garbage or ())
        self.hits: list[tuple[int, int, int]] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # keep test output quiet
                pass

            def do_GET(self):
                m = re.fullmatch(r"/(\d+)/(\d+)/(\d+)\.png(?:\?.*)?", self.path)  # a query (e.g. an API key) is ignored
                if not m:
                    self.send_error(400)
                    return
                key = tuple(int(v) for v in m.groups())
                with server.lock:
                    server.hits.append(key)
                    left = server.flaky.get(key, 0)
                    if left:
                        server.flaky[key] = left - 1
                if left:
                    self.send_error(503)
                    return
                if key in server.status:
                    self.send_error(server.status[key])
                    return
                if key in server.garbage:
                    body = b"<html>rate limited</html>"
                elif key in server.tiles:
                    body = png(server.tiles[key])
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{{z}}/{{x}}/{{y}}.png"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def all_tiles(plan, maker=synthetic_tile) -> dict:
    return {(plan.zoom, x, y): maker(plan.zoom, x, y) for x in plan.x_range for y in plan.y_range}


def no_sleep(_s):
    pass


def expected_mosaic(plan, tiles) -> np.ndarray:
    nx, ny = len(plan.x_range), len(plan.y_range)
    m = np.zeros((ny * 256, nx * 256, 4), np.uint8)
    for j, y in enumerate(plan.y_range):
        for i, x in enumerate(plan.x_range):
            if (plan.zoom, x, y) in tiles:
                m[j * 256:(j + 1) * 256, i * 256:(i + 1) * 256, :3] = tiles[(plan.zoom, x, y)]
                m[j * 256:(j + 1) * 256, i * 256:(i + 1) * 256, 3] = 255
    r, c, h, w = plan.window
    return m[r:r + h, c:c + w]


def read_tif(path):
    import rasterio

    with rasterio.open(path) as ds:
        return ds.read(), ds.crs, ds.transform, ds.bounds


def test_plan_estimate_and_geometry():
    plan = F.plan_xyz(BBOX, ZOOM)
    assert plan.tiles == len(plan.x_range) * len(plan.y_range) >= 2
    assert plan.bytes_estimate == plan.tiles * F.BYTES_PER_TILE
    assert "tiles" in plan.describe() and "MB" in plan.describe()
    # the crop bounds contain the bbox (in Web Mercator) and exceed it by less than one pixel
    from rasterio.warp import transform

    xs, ys = transform("EPSG:4326", "EPSG:3857", [BBOX[0], BBOX[2]], [BBOX[1], BBOX[3]])
    w, s, e, n = plan.bounds_3857()
    res = plan.resolution
    assert w <= xs[0] < w + res and e - res < xs[1] <= e
    assert s <= ys[0] < s + res and n - res < ys[1] <= n
    # XYZ tile index of the bbox centre (standard formula) is inside the plan
    lon, lat = (BBOX[0] + BBOX[2]) / 2, (BBOX[1] + BBOX[3]) / 2
    px, py = F.lonlat_to_global_pixel(lon, lat, ZOOM)
    assert int(px // 256) in plan.x_range and int(py // 256) in plan.y_range


def test_fetch_mosaic_retry_and_georef(tmp_path):
    plan = F.plan_xyz(BBOX, ZOOM)
    tiles = all_tiles(plan)
    flaky_key = (ZOOM, plan.x_range[1], plan.y_range[0])
    sleeps, fracs = [], []
    with TileServer(tiles, flaky={flaky_key: 2}) as srv:
        res = F.fetch_xyz(srv.url, BBOX, ZOOM, tmp_path / "out.tif", cache_dir=tmp_path / "cache", rate=1000,
                          backoff=0.25, sleep=sleeps.append, progress=lambda f, m: fracs.append(f))
    assert res.missing == [] and res.fetched == plan.tiles and res.cached == 0
    assert srv.hits.count(flaky_key) == 3  # failed twice, then succeeded
    assert [s for s in sleeps if s in (0.25, 0.5)][:2] == [0.25, 0.5]  # exponential backoff
    assert fracs[-1] == pytest.approx(1.0) and len(fracs) == plan.tiles
    arr, crs, tr, bounds = read_tif(tmp_path / "out.tif")
    assert crs.to_epsg() == 3857
    assert tuple(tr)[:6] == pytest.approx(plan.transform(), abs=1e-6)
    assert (bounds.left, bounds.bottom, bounds.right, bounds.top) == pytest.approx(plan.bounds_3857(), abs=1e-6)
    assert np.array_equal(np.moveaxis(arr, 0, 2), expected_mosaic(plan, tiles))
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp.tif")]


def test_missing_and_garbage_tiles_are_skipped_and_reported(tmp_path):
    plan = F.plan_xyz(BBOX, ZOOM)
    tiles = all_tiles(plan)
    gone = (ZOOM, plan.x_range[0], plan.y_range[0])
    junk = (ZOOM, plan.x_range[-1], plan.y_range[-1])
    broken = (ZOOM, plan.x_range[1], plan.y_range[-1])
    del tiles[gone]
    with TileServer(tiles, garbage={junk}, status={broken: 500}) as srv:
        res = F.fetch_xyz(srv.url, BBOX, ZOOM, tmp_path / "out.tif", cache_dir=tmp_path / "cache", rate=1000,
                          retries=2, backoff=0.0, sleep=no_sleep)
        assert srv.hits.count(gone) == 1  # a 404 is not retried
        assert srv.hits.count(broken) == 3  # a 500 is retried, then skipped
    why = {(x, y): w for x, y, w in res.missing}
    assert set(why) == {gone[1:], junk[1:], broken[1:]}
    assert "404" in why[gone[1:]] and "garbage" in why[junk[1:]] and "500" in why[broken[1:]]
    assert "missing" in res.summary()
    # skipped tiles are transparent in the mosaic and never cached
    del tiles[junk]
    tiles.pop(broken)
    arr, *_ = read_tif(tmp_path / "out.tif")
    assert np.array_equal(np.moveaxis(arr, 0, 2), expected_mosaic(plan, tiles))
    cached = {(int(p.parent.name), int(p.stem)) for p in (tmp_path / "cache").rglob("*.tile")}
    assert len(cached) == plan.tiles - 3 and not cached & set(why)


def test_resume_after_interruption_uses_cache(tmp_path):
    plan = F.plan_xyz(BBOX, ZOOM)
    tiles = all_tiles(plan)

    def stop_after_two(frac, msg):
        if frac >= 2 / plan.tiles - 1e-9:
            raise KeyboardInterrupt

    out = tmp_path / "out.tif"
    with TileServer(tiles) as srv:
        with pytest.raises(KeyboardInterrupt):
            F.fetch_xyz(srv.url, BBOX, ZOOM, out, cache_dir=tmp_path / "c", rate=1000, sleep=no_sleep,
                        progress=stop_after_two)
        assert not out.exists()
        assert len(srv.hits) == 2
        res = F.fetch_xyz(srv.url, BBOX, ZOOM, out, cache_dir=tmp_path / "c", rate=1000, sleep=no_sleep)
        assert res.cached == 2 and res.fetched == plan.tiles - 2
        assert len(srv.hits) == plan.tiles  # nothing fetched twice
        # a third run is served wholly from the cache
        res3 = F.fetch_xyz(srv.url, BBOX, ZOOM, out, cache_dir=tmp_path / "c", rate=1000, sleep=no_sleep)
        assert res3.cached == plan.tiles and len(srv.hits) == plan.tiles
    arr, *_ = read_tif(out)
    assert np.array_equal(np.moveaxis(arr, 0, 2), expected_mosaic(plan, tiles))


def test_rate_limit_spaces_requests(tmp_path):
    plan = F.plan_xyz(BBOX, ZOOM)
    now = [0.0]
    starts = []

    def clock():
        return now[0]

    def sleep(s):
        now[0] += s

    with TileServer(all_tiles(plan)) as srv:
        orig = srv.httpd.RequestHandlerClass.do_GET

        def timed(self):
            starts.append(now[0])
            orig(self)

        srv.httpd.RequestHandlerClass.do_GET = timed
        F.fetch_xyz(srv.url, BBOX, ZOOM, tmp_path / "o.tif", cache_dir=tmp_path / "c", rate=2.0, sleep=sleep, clock=clock)
    assert len(starts) == plan.tiles
    gaps = np.diff(starts)
    assert np.all(gaps >= 0.5 - 1e-9)


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_offline_gives_clear_error_naming_the_url(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/{{z}}/{{x}}/{{y}}.png"
    with pytest.raises(F.FetchError, match=r"cannot reach the tile server at http://127\.0\.0\.1:\d+/14/\d+/\d+\.png"):
        F.fetch_xyz(url, BBOX, ZOOM, tmp_path / "o.tif", cache_dir=tmp_path / "c", retries=1, backoff=0.0,
                    sleep=no_sleep, timeout=2)
    assert not (tmp_path / "o.tif").exists()


def test_bad_input():
    url = "http://127.0.0.1:1/{z}/{x}/{y}.png"
    with pytest.raises(BadInputError, match="antimeridian"):
        F.plan_xyz((179.5, 0.0, -179.5, 1.0), 5)
    with pytest.raises(BadInputError, match="out of range"):
        F.plan_xyz(BBOX, 23)
    with pytest.raises(BadInputError, match="out of range"):
        F.plan_xyz(BBOX, -1)
    with pytest.raises(BadInputError, match="Web-Mercator"):
        F.plan_xyz((0.0, 80.0, 1.0, 89.0), 3)
    with pytest.raises(BadInputError, match="template"):
        F.fetch_xyz("http://example.invalid/tiles.png", BBOX, ZOOM, "x.tif")
    with pytest.raises(BadInputError, match="max-tiles"):
        F.fetch_xyz(url, (119.0, 29.0, 121.0, 31.0), 16, "x.tif", max_tiles=100)
    with pytest.raises(BadInputError, match="empty"):
        F.plan_xyz((120.0, 30.0, 120.0, 30.1), 10)


def test_subdomain_template():
    u = "https://{s}.tile.example/{z}/{x}/{y}.png"
    assert F.tile_url(u, 3, 1, 2, ("a", "b", "c")) == "https://a.tile.example/3/1/2.png"
    assert F.tile_url(u, 3, 2, 2, ("a", "b", "c")) == "https://b.tile.example/3/2/2.png"
    assert F.tile_url("http://h/{z}/{y}/{x}", 5, 7, 9) == "http://h/5/9/7"


def test_real_imagery_tiles_round_trip(tmp_path):
    src = SHARED / "hangzhou_airport" / "B_sat.jpeg"
    if not src.exists():
        pytest.skip(f"real sample data not available: {src} is absent")
    img = np.asarray(Image.open(src).convert("RGB"))
    plan = F.plan_xyz(BBOX, ZOOM)
    # cut the real Baidu mosaic into 256-px blocks and serve them as this plan's tiles
    tiles = {}
    for j, y in enumerate(plan.y_range):
        for i, x in enumerate(plan.x_range):
            tiles[(ZOOM, x, y)] = np.ascontiguousarray(img[j * 256:(j + 1) * 256, i * 256:(i + 1) * 256])
    with TileServer(tiles) as srv:
        res = F.fetch_xyz(srv.url, BBOX, ZOOM, tmp_path / "o.tif", cache_dir=tmp_path / "c", rate=1000, sleep=no_sleep)
    assert res.missing == []
    arr, *_ = read_tif(tmp_path / "o.tif")
    assert np.array_equal(np.moveaxis(arr, 0, 2), expected_mosaic(plan, tiles))


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "seghz", *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          check=False, timeout=120, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})


def test_cli_fetch(tmp_path):
    plan = F.plan_xyz(BBOX, ZOOM)
    with TileServer(all_tiles(plan)) as srv:
        p = run_cli("fetch", "--url", srv.url, "--bbox", ",".join(map(str, BBOX)), "--zoom", ZOOM,
                    "--output", tmp_path / "o.tif", "--cache", tmp_path / "c", "--rate", 100)
    assert p.returncode == 0, p.stdout + p.stderr
    lines = p.stdout.splitlines()
    assert "tiles" in lines[0] and "MB" in lines[0]  # the estimate comes first
    assert (tmp_path / "o.tif").is_file()
    _, crs, _, _ = read_tif(tmp_path / "o.tif")
    assert crs.to_epsg() == 3857


def test_cli_fetch_errors(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/{{z}}/{{x}}/{{y}}.png"
    p = run_cli("fetch", "--url", url, "--bbox", "120.2,30.2,120.21,30.21", "--zoom", 14, "--output", tmp_path / "o.tif",
                "--retries", 0)
    assert p.returncode == 2 and "cannot reach" in p.stderr and "127.0.0.1" in p.stderr
    p = run_cli("fetch", "--url", url, "--bbox", "120.2,30.2,120.21", "--zoom", 14, "--output", tmp_path / "o.tif")
    assert p.returncode == 2 and "bbox" in p.stderr
    p = run_cli("fetch", "--url", url, "--bbox", "120.2,30.2,120.21,30.21", "--zoom", 30, "--output", tmp_path / "o.tif")
    assert p.returncode == 2 and "zoom" in p.stderr


def test_fetch_baidu_warps_to_web_mercator(tmp_path):
    from seghz.geo import datum as D

    bbox = (120.20, 30.20, 120.23, 30.22)
    z = 15
    plan = F.plan_baidu(bbox, z)
    tiles = {(z, x, y): synthetic_tile(z, x, y) for x in plan.x_range for y in plan.y_range}
    with TileServer(tiles) as srv:
        res = F.fetch_baidu(srv.url, bbox, z, tmp_path / "b.tif", cache_dir=tmp_path / "c", rate=1000, sleep=no_sleep)
    assert res.missing == [] and res.fetched == plan.tiles
    arr, crs, tr, _ = read_tif(tmp_path / "b.tif")
    assert crs.to_epsg() == 3857 and arr[3].min() == 255  # the whole bbox is covered
    # sample output pixels: their colour must be the Baidu tile (R = x*37, G = y*53) that holds the point
    from rasterio.warp import transform as rtransform

    rng = np.random.default_rng(0)
    for _ in range(40):
        r, c = int(rng.integers(0, arr.shape[1])), int(rng.integers(0, arr.shape[2]))
        x, y = tr @ (c + 0.5, r + 0.5)
        (lon,), (lat,) = rtransform("EPSG:3857", "EPSG:4326", [x], [y])
        tx, ty = D.wgs84_to_baidu_tile(lon, lat, z)
        mx, my = D.wgs84_to_bd09mc(lon, lat)
        s = 256 * 2 ** (18 - z)
        fx, fy = (float(mx) / s) % 1.0, (float(my) / s) % 1.0
        if min(fx, 1 - fx, fy, 1 - fy) < 0.01:
            continue  # too close to a tile edge for a nearest-neighbour check
        assert arr[0, r, c] == (int(tx) * 37) % 256 and arr[1, r, c] == (int(ty) * 53) % 256
    with pytest.raises(BadInputError, match="China"):
        F.plan_baidu((2.0, 48.0, 2.1, 48.1), 15)
