"""The "fetch" background job (Map page → Fetch imagery): tiles from a local HTTP server → GeoTIFF → a new scene."""
from __future__ import annotations

import pytest
from test_fetch import BBOX, ZOOM, TileServer, all_tiles

from seghz.data.io import raster_info
from seghz.data.scenes import wgs84_bounds
from seghz.geo import fetch as F
from seghz.jobs.kinds import fetch_job
from seghz.jobs.runner import ProgressReporter, tail_log
from seghz.store import Workspace


def run(ws: Workspace, config: dict) -> tuple[dict, str]:
    jid = ws.create_job("fetch", config)
    return fetch_job(ws, jid, config, ProgressReporter(ws, jid)), jid


def test_fetch_job_imports_the_mosaic_as_a_georeferenced_scene(tmp_path):
    ws = Workspace(tmp_path / "ws")
    plan = F.plan_xyz(BBOX, ZOOM)
    with TileServer(all_tiles(plan)) as srv:
        res, jid = run(ws, {"url": srv.url, "bbox": list(BBOX), "zoom": ZOOM, "name": "Fetched Xihu", "rate": 1000})
    assert res["tiles"] == plan.tiles and res["missing"] == 0
    scene = ws.get_scene(res["scene_id"])
    assert scene.name == "Fetched Xihu" and scene.crs and scene.label_path is None
    w, s, e, n = wgs84_bounds(raster_info(ws.scene_path(scene, "image")))
    tile_deg = 360 / 2**ZOOM
    assert w <= BBOX[0] + 1e-9 and e >= BBOX[2] - 1e-9 and s <= BBOX[1] + 1e-9 and n >= BBOX[3] - 1e-9
    assert BBOX[0] - w < tile_deg and e - BBOX[2] < tile_deg  # the bbox, snapped out to whole pixels, not whole tiles
    assert any("imported scene" in line for line in tail_log(ws, jid))


def test_fetch_job_key_from_the_environment_never_in_the_log_or_config(tmp_path, monkeypatch):
    ws = Workspace(tmp_path / "ws")
    plan = F.plan_xyz(BBOX, ZOOM)
    monkeypatch.setenv("SEGHZ_TEST_TILE_KEY", "s3cr3t-KEY-0042")
    with TileServer(all_tiles(plan), status={(ZOOM, plan.x_range[0], plan.y_range[0]): 404}) as srv:
        config = {"url": srv.url + "?tk={key}", "key_env": "SEGHZ_TEST_TILE_KEY", "bbox": list(BBOX), "zoom": ZOOM,
                  "rate": 1000}
        res, jid = run(ws, config)
    assert res["missing"] == 1  # the 404 tile is skipped and reported, never written as an image
    log = "\n".join(tail_log(ws, jid, 200))
    assert "missing tile" in log and "s3cr3t" not in log
    assert "s3cr3t" not in str(ws.get_job(jid).config) and "s3cr3t" not in res["summary"]
    monkeypatch.delenv("SEGHZ_TEST_TILE_KEY")
    with pytest.raises(ValueError, match="SEGHZ_TEST_TILE_KEY"):
        run(ws, config)
