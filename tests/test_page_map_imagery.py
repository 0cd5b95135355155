"""Map page (AppTest): the basemap picker (offline default, Gaode GCJ-02 warning, Tianditu key never shown) and
the "Import imagery" expander. Reuses the fixtures of tests/test_page_map.py (no checkpoint needed here, but the
shared fixture builds the standard tiny workspace)."""
from __future__ import annotations

import numpy as np
import rasterio
from rasterio.transform import Affine

from tests.test_page_map import app, assert_ok, fake_map, texts, tiny_map_checkpoint, ws  # noqa: F401

KEY = "tdt0123456789abcdefSECRET42"


def _utm_tif(src):
    """A 64×64 GeoTIFF in UTM 51N (near Hangzhou)."""
    with rasterio.open(src, "w", driver="GTiff", width=64, height=64, count=3, dtype="uint8", crs="EPSG:32651",
                       transform=Affine(10, 0, 212000, 0, -10, 3350000)) as ds:
        ds.write(np.full((3, 64, 64), 90, np.uint8))
    return src


def test_basemap_picker_offline_default_and_online_layers(ws, fake_map, monkeypatch):  # noqa: F811
    monkeypatch.delenv("SEGHZ_TIANDITU_KEY", raising=False)
    fake = fake_map(None)
    at = app().run()
    assert_ok(at)
    sb = at.selectbox(key="map_basemap")
    assert sb.value == "offline" and "tianditu" not in sb.options
    assert "SEGHZ_TIANDITU_KEY" in texts(at)  # the hint why Tianditu is not offered
    html = fake.calls[-1]["fig"].get_root().render()
    assert "arcgisonline" not in html and "autonavi" not in html  # offline: no online tiles at all

    sb.set_value("gaode").run()
    assert_ok(at)
    html = fake.calls[-1]["fig"].get_root().render()
    assert "autonavi.com" in html and "/app/static/tiles/" in html  # basemap under the scene's own tiles
    warn = "\n".join(str(w.value) for w in at.warning)
    assert "GCJ-02" in warn and " m " in warn


def test_tianditu_key_is_masked(ws, fake_map, monkeypatch):  # noqa: F811
    monkeypatch.setenv("SEGHZ_TIANDITU_KEY", KEY)
    fake = fake_map(None)
    at = app().run()
    at.selectbox(key="map_basemap").set_value("tianditu").run()
    assert_ok(at)
    shown = texts(at)
    assert KEY not in shown and "****ET42" in shown
    assert KEY in fake.calls[-1]["fig"].get_root().render()  # only the tile URL handed to Leaflet has it


def test_import_expander_imports_a_geotiff(ws, fake_map, tmp_path):  # noqa: F811
    fake_map(None)
    src = _utm_tif(tmp_path / "utm.tif")
    at = app().run()
    at.text_input(key="map_import_path").input(str(src))
    at.text_input(key="map_import_name").input("UTM test")
    at.button(key="map_import_go").click().run()
    assert_ok(at)
    assert "WGS-84 bounds" in "\n".join(str(s.value) for s in at.success)
    sid = at.selectbox(key="map_scene").value
    assert sid == "utm-test" and ws.get_scene(sid).crs == "EPSG:32651"
    at.text_input(key="map_import_path").input(str(tmp_path / "missing.tif"))
    at.button(key="map_import_go").click().run()
    assert "Import failed" in "\n".join(str(e.value) for e in at.error)


def test_importing_the_same_file_again_offers_its_scene_instead_of_a_copy(ws, fake_map, tmp_path):  # noqa: F811
    fake_map(None)
    src = _utm_tif(tmp_path / "utm.tif")
    at = app().run()
    at.text_input(key="map_import_path").input(str(src))
    at.button(key="map_import_go").click().run()
    n = len(ws.list_scenes())
    first = at.selectbox(key="map_scene").value
    at.selectbox(key="map_scene").set_value(ws.list_scenes()[0].id).run()
    at.button(key="map_import_go").click().run()  # again
    assert_ok(at)
    warn = "\n".join(str(w.value) for w in at.warning)
    assert f"already imported as scene 'utm' ({first}) — the same file content" in warn
    assert len(ws.list_scenes()) == n
    at.button(key="map_import_open_dup").click().run()
    assert at.selectbox(key="map_scene").value == first
    at.checkbox(key="map_import_dup").check().run()
    at.button(key="map_import_go").click().run()  # on purpose: a second copy
    assert len(ws.list_scenes()) == n + 1 and at.selectbox(key="map_scene").value != first
    # "again" counted for that import only, and no notice of the earlier duplicate stays
    assert not at.checkbox(key="map_import_dup").value
    assert not any("already imported" in str(w.value) for w in at.warning)
    at.button(key="map_import_go").click().run()  # the third time is refused again
    assert len(ws.list_scenes()) == n + 1 and any("already imported" in str(w.value) for w in at.warning)


def test_the_import_refuses_a_path_outside_the_allowed_roots(ws, fake_map, monkeypatch, tmp_path):  # noqa: F811
    """Served to others, the import's path field read any file of the server and told by its error whether it
    exists; with SEGHZ_IMPORT_ROOTS it refuses anything outside, before looking at it."""
    from seghz.security import IMPORT_ROOTS_ENV

    fake_map(None)
    monkeypatch.setenv(IMPORT_ROOTS_ENV, str(tmp_path / "allowed"))
    n = len(ws.list_scenes())
    at = app().run()
    at.text_input(key="map_import_path").input("/etc/passwd")
    at.button(key="map_import_go").click().run()
    err = "\n".join(str(e.value) for e in at.error)
    assert "lies outside the folders this server may read" in err and "not a readable" not in err
    assert len(ws.list_scenes()) == n
