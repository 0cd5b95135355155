"""Streamlit AppTest tests of the Map page (``pages/1_Map.py``) on a small prepared workspace.

The workspace (``$SEGHZ_WORKSPACE`` with ``$SEGHZ_NO_DEMO=1``) holds one 256 px synthetic georeferenced hz7 scene
with its label and a tiny registered, active Segformer/efficientnet-lite0 hz7 checkpoint (untrained weights: the
page is tested, not the model). ``streamlit_folium.st_folium`` is replaced by a fake that "draws" a region
(GeoJSON in lon/lat, as Leaflet returns it) and records what the page passed to the map.

:func:`populate_map_workspace` is reused by ``tests/browser/test_map_page.py``.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch

torch.set_num_threads(1)

from streamlit.testing.v1 import AppTest

from seghz.classes import get_scheme
from seghz.store import Workspace

TIMEOUT = 60  # seconds per AppTest run: the CPU is shared with long training runs
HZ7 = get_scheme("hz7")
SCENE_SIZE = 256
SCENE_ID = "town"


def make_tiny_checkpoint(path: Path) -> dict:
    """An untrained Segformer/tu-efficientnet_lite0 hz7 checkpoint (~3.4 M parameters) with trainer-like metadata."""
    from seghz.models.checkpoint import save_checkpoint
    from seghz.models.registry import build_model

    torch.manual_seed(0)
    model = build_model("Segformer", "tu-efficientnet_lite0", HZ7.num_classes)
    meta = {
        "arch": "Segformer", "encoder": "tu-efficientnet_lite0", "num_classes": HZ7.num_classes,
        "scheme": HZ7.to_json(), "normalization": {"mean": [0.5] * 3, "std": [0.5] * 3}, "tile_size": 256,
        "recipe": {"note": "test fixture, untrained"},
        "metrics": {"val": {"miou": 0.5, "fwiou": 0.6, "oa": 0.7,
                            "per_class_iou": {n: 0.1 * i for i, n in enumerate(HZ7.names)}}, "epoch": 1},
        "parent": None, "synthetic": True,
    }
    save_checkpoint(path, model, meta)
    return meta


def populate_map_workspace(root: Path, checkpoint: tuple[Path, dict] | None = None, name: str = "tiny map model") -> Workspace:
    """A workspace with one 256 px georeferenced synthetic hz7 scene (id ``town``, labelled) and an active
    checkpoint ``tiny-map`` called ``name`` (copied from ``checkpoint`` = (file, metadata) when given, else a tiny
    untrained one is built)."""
    from seghz.data.io import write_index_mask
    from seghz.demo import generate_scene, write_demo_geotiff

    ws = Workspace(root)
    rgb, lbl = generate_scene(SCENE_SIZE, 0)
    img = ws.root / "scenes" / "town.tif"
    write_demo_geotiff(img, rgb)
    lab = ws.root / "labels" / "town_label.png"
    write_index_mask(lab, lbl, HZ7)
    ws.add_scene("Test town (synthetic)", img, "hz7", label_path=lab, split="val", synthetic=True, scene_id=SCENE_ID)
    dst = ws.root / "checkpoints" / "tiny.safetensors"
    if checkpoint is None:
        meta = make_tiny_checkpoint(dst)
    else:
        shutil.copy2(checkpoint[0], dst)
        meta = checkpoint[1]
    scheme = meta["scheme"]["name"] if isinstance(meta["scheme"], dict) else meta["scheme"]
    cid = ws.register_checkpoint(dst, {**meta, "scheme": scheme}, checkpoint_id="tiny-map", name=name)
    ws.set_active_checkpoint(cid)
    return ws


def remove_tiles(ws_root: Path) -> None:
    """Delete the tile pyramids the Map page built for this workspace under the repository's static/tiles."""
    from seghz.geo.regions import workspace_tile_key
    from seghz.geo.tiles import tile_dir

    shutil.rmtree(tile_dir(workspace_tile_key(ws_root), SCENE_ID).parent, ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_map_checkpoint(tmp_path_factory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("map_ckpt") / "tiny.safetensors"
    return path, make_tiny_checkpoint(path)


@pytest.fixture
def ws(tmp_path, monkeypatch, tiny_map_checkpoint) -> Workspace:
    monkeypatch.syspath_prepend(str(REPO))
    monkeypatch.chdir(REPO)
    w = populate_map_workspace(tmp_path / "ws", tiny_map_checkpoint)
    monkeypatch.setenv("SEGHZ_WORKSPACE", str(w.root))
    monkeypatch.setenv("SEGHZ_NO_DEMO", "1")
    yield w
    remove_tiles(w.root)


class FakeFolium:
    """Stands in for ``streamlit_folium.st_folium``: returns ``drawing`` as the last drawn shape."""

    def __init__(self, drawing: dict | None):
        self.drawing = drawing
        self.calls: list[dict] = []

    def __call__(self, fig, **kwargs):
        self.calls.append({"fig": fig, **kwargs})
        if self.drawing is None:
            return {"last_active_drawing": None, "all_drawings": None}
        return {"last_active_drawing": self.drawing, "all_drawings": [self.drawing]}

    def layers(self) -> dict[str, object]:
        """Name -> layer of the overlays in the feature group of the last call."""
        fg = self.calls[-1]["feature_group_to_add"]
        return {getattr(ch, "layer_name", type(ch).__name__): ch for ch in fg._children.values()}


def feature(geometry: dict) -> dict:
    return {"type": "Feature", "properties": {}, "geometry": geometry}


def scene_info(ws: Workspace):
    from seghz.data.io import raster_info

    return raster_info(ws.scene_path(SCENE_ID, "image"))


@pytest.fixture
def fake_map(monkeypatch):
    import streamlit_folium

    def install(drawing: dict | None) -> FakeFolium:
        fake = FakeFolium(drawing)
        monkeypatch.setattr(streamlit_folium, "st_folium", fake)
        return fake

    return install


def app() -> AppTest:
    return AppTest.from_file(str(REPO / "pages" / "1_Map.py"), default_timeout=TIMEOUT)


def assert_ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def texts(at: AppTest) -> str:
    parts = []
    for kind in ("markdown", "caption", "info", "warning", "error", "success", "title", "subheader"):
        parts += [str(e.value) for e in getattr(at, kind)]
    return "\n".join(parts)


def test_map_page_jump_to_opens_predicts_and_shows_the_error_layer(ws, fake_map):
    """"Open on map" from the Evaluate drill-down / the noise queue: the Map page selects the scene, puts the
    window around the bbox in as the region, zooms the map to it, predicts it and turns the error layer on."""
    from folium.raster_layers import ImageOverlay

    from seghz.geo.regions import bbox_to_window
    from seghz.geo.tiles import window_bounds

    info = scene_info(ws)
    fake = fake_map(None)  # the analyst draws nothing
    at = app()
    at.session_state["map_jump"] = {"scene_id": SCENE_ID, "bbox": (40, 50, 70, 90), "layer": "error",
                                    "why": "Water predicted as Buildings"}
    at.run()
    assert_ok(at)
    want = bbox_to_window((40, 50, 70, 90), info.height, info.width)
    assert at.selectbox(key="map_scene").value == SCENE_ID and at.toggle(key="map_show_error").value
    assert "Opened at rows" in texts(at) and "Water predicted as Buildings" in texts(at)
    res = at.session_state["map_results"][SCENE_ID]["result"]
    assert res.window == want  # predicted without a click
    assert at.session_state["map_focus"][SCENE_ID] == want
    call = fake.calls[-1]
    assert call["key"].endswith("__at_{}_{}_{}_{}".format(*want))  # a map re-created at the window
    assert call["fig"].get_root().render().count("fitBounds") >= 1
    layers = fake.layers()
    assert isinstance(layers.get("Errors"), ImageOverlay), layers
    (s, w), (n, e) = layers["Errors"].bounds
    (s0, w0), (n0, e0) = window_bounds(want, info)
    assert abs(s - s0) < 1e-7 and abs(e - e0) < 1e-7
    assert "Error layer:" in texts(at) and "prediction differs from the label" in texts(at)
    # a bbox outside the scene: a clear message, nothing predicted (below)

    # a jump over the analyst's own drawn region says that it replaced it; drawing again removes the message
    from seghz.geo.tiles import pixel_window_to_geojson

    mine = feature(pixel_window_to_geojson((10, 10, 30, 30), info))
    fake.drawing = mine
    at3 = app()
    at3.run()
    assert_ok(at3)
    fake.drawing = None
    at3.session_state["map_jump"] = {"scene_id": SCENE_ID, "bbox": (40, 50, 70, 90), "layer": "error"}
    at3.run()
    assert_ok(at3)
    assert "It replaced the region you had drawn on this scene" in texts(at3)
    fake.drawing = feature(pixel_window_to_geojson((100, 100, 20, 20), info))
    at3.run()
    assert_ok(at3)
    assert "Opened at rows" not in texts(at3)
    # a second jump over the region drawn after the first one says so too (the map's focus stays set by the first)
    fake.drawing = None
    at3.session_state["map_jump"] = {"scene_id": SCENE_ID, "bbox": (20, 20, 50, 60), "layer": "error"}
    at3.run()
    assert_ok(at3)
    assert "It replaced the region you had drawn on this scene" in texts(at3)
    # and a jump over a jump's own region does not
    at3.session_state["map_jump"] = {"scene_id": SCENE_ID, "bbox": (40, 50, 70, 90), "layer": "error"}
    at3.run()
    assert_ok(at3)
    assert "Opened at rows" in texts(at3) and "It replaced the region" not in texts(at3)

    fake.drawing = None
    at2 = app()
    at2.session_state["map_jump"] = {"scene_id": SCENE_ID, "bbox": (0, 0, 10**6, 10), "layer": "error"}
    at2.run()
    assert_ok(at2)
    assert any("Cannot open that place on the map" in e.value for e in at2.error)


def test_map_page_suspicion_layer_from_the_noise_queue(ws, fake_map):
    from folium.raster_layers import ImageOverlay

    from seghz.geo.tiles import pixel_window_to_geojson
    from seghz.review import queue as rq
    from seghz.store import now_iso

    info = scene_info(ws)
    fake_map(feature(pixel_window_to_geojson((0, 0, 64, 64), info)))
    at = app().run()
    assert at.toggle(key="map_show_sus").disabled  # no queue yet
    score = np.linspace(0, 1, info.height * info.width, dtype=np.float32).reshape(info.height, info.width)
    rq.save_queue(ws, rq.SceneQueue(SCENE_ID, "tiny-map", "none", 0, now_iso(), [],
                                    np.zeros((info.height, info.width), np.uint8), score))
    fake = fake_map(feature(pixel_window_to_geojson((0, 0, 64, 64), info)))
    at.run()
    at.toggle(key="map_show_sus").set_value(True).run()
    at.button(key="map_predict").click().run()
    assert_ok(at)
    assert isinstance(fake.layers().get("Suspicion"), ImageOverlay), fake.layers()
    assert "Label suspicion (noise queue)" in texts(at) and "built with tiny-map" in texts(at)


def test_map_page_fetch_expander_submits_a_fetch_job_for_the_drawn_box(ws, fake_map, monkeypatch):
    from seghz.geo.tiles import pixel_window_to_geojson
    from seghz.jobs import runner

    info = scene_info(ws)
    region = feature(pixel_window_to_geojson((0, 0, 64, 64), info))
    fake_map(region)
    submitted = []
    monkeypatch.setattr(runner, "submit_job", lambda w, kind, config: submitted.append((kind, config)) or "fetch-1")
    at = app().run()
    assert_ok(at)
    assert "osm" not in at.selectbox(key="map_fetch_src").options
    box = at.text_input(key=f"map_fetch_bbox_{SCENE_ID}").value
    lngs = [p[0] for p in region["geometry"]["coordinates"][0]]
    assert float(box.split(",")[0]) == pytest.approx(min(lngs), abs=1e-6)  # the drawn region's west edge
    assert any(c.value.startswith("Estimate: ") for c in at.caption)
    at.number_input(key="map_fetch_zoom").set_value(15).run()
    at.button(key="map_fetch_go").click().run()
    assert_ok(at)
    (kind, cfg), = submitted
    assert kind == "fetch" and cfg["zoom"] == 15 and cfg["url"].startswith("https://server.arcgisonline.com")
    assert cfg["bbox"] == pytest.approx([float(v) for v in box.split(",")])
    assert any("Fetch job fetch-1 started" in s.value for s in at.success)
    # a custom source without a template: not ready, no button
    at.selectbox(key="map_fetch_src").set_value("custom").run()
    assert at.button(key="map_fetch_go").disabled and any("give a tile URL template" in c.value for c in at.caption)


def test_map_page_region_over_the_cap_runs_as_a_background_job(ws, fake_map, monkeypatch):
    """Past the inline cap the page offers a background job; the job streams the window into a GeoTIFF with the
    window's georeference, equal to predicting the cropped image inline."""
    import rasterio

    import seghz.infer.region as region_mod
    from seghz.data.io import read_image
    from seghz.geo.tiles import pixel_window_to_geojson
    from seghz.infer.engine import Predictor
    from seghz.infer.region import window_transform
    from seghz.jobs import runner
    from seghz.jobs.kinds import predict_region_job
    from seghz.jobs.runner import ProgressReporter

    info = scene_info(ws)
    window = (16, 24, 64, 96)
    fake_map(feature(pixel_window_to_geojson(window, info)))
    monkeypatch.setattr(region_mod.check_window, "__defaults__", (1000,))  # a tiny inline cap for the test
    monkeypatch.setattr(region_mod, "MAX_REGION_PIXELS", 1000)
    submitted = []
    monkeypatch.setattr(runner, "submit_job", lambda w, kind, config: submitted.append((kind, config)) or "job-1")
    at = app().run()
    assert_ok(at)
    assert any("over the cap" in e.value for e in at.error)
    at.button(key="map_bigjob").click().run()
    (kind, cfg), = submitted
    assert kind == "predict-region" and cfg["window"] == list(window) and cfg["scene_id"] == SCENE_ID

    jid = ws.create_job(kind, cfg)
    res = predict_region_job(ws, jid, cfg, ProgressReporter(ws, jid))
    ck = ws.get_checkpoint(cfg["checkpoint_id"])
    pred, _ = Predictor.from_checkpoint(ws.checkpoint_path(ck), "cpu")
    r, c, h, w = window
    want = pred.predict_full(read_image(ws.scene_path(SCENE_ID, "image"))[r:r + h, c:c + w], "none").mask
    with rasterio.open(ws.root / res["output"]) as ds:
        assert (ds.height, ds.width) == (h, w) and ds.crs.to_string() == rasterio.crs.CRS.from_user_input(info.crs).to_string()
        assert tuple(ds.transform)[:6] == pytest.approx(window_transform(info.transform, window))
        np.testing.assert_array_equal(ds.read(1), want)
    assert (ws.root / res["areas_csv"]).is_file()
    assert res["compiled"] is False  # 1 window of the default tile: a compile would not pay for itself


def test_region_job_compiles_where_it_pays_and_refuses_a_bad_choice(ws, monkeypatch):
    """The big-region job asks the engine's compile policy with the window's size and the TTA's view count
    (``compile: auto``), honours ``on`` / ``off``, and refuses anything else before it loads the model."""
    import seghz.infer.engine as engine_mod
    from seghz.jobs.kinds import predict_region_job
    from seghz.jobs.runner import ProgressReporter

    ck = ws.active_checkpoint()
    asked = []
    monkeypatch.setattr(engine_mod, "compile_pays", lambda pred, h, w, views=1, world=1: asked.append((h, w, views)) or False)
    cfg = {"scene_id": SCENE_ID, "window": [0, 0, 40, 56], "checkpoint_id": ck.id, "tta": "d4"}
    jid = ws.create_job("predict-region", cfg)
    assert predict_region_job(ws, jid, cfg, ProgressReporter(ws, jid))["compiled"] is False
    assert asked == [(40, 56, 8)]
    cfg_off = {**cfg, "tta": "none", "compile": "off"}
    jid = ws.create_job("predict-region", cfg_off)
    assert predict_region_job(ws, jid, cfg_off, ProgressReporter(ws, jid))["compiled"] is False and len(asked) == 1
    # "on": the job runs its full windows through the compiled model (here the eager one stands in for it)
    used = []
    monkeypatch.setattr(engine_mod.Predictor, "_compiled_fn",
                        lambda self: (used.append(1) or self.model) if self.compile else None)
    cfg_on = {**cfg, "tta": "none", "compile": "on"}
    jid = ws.create_job("predict-region", cfg_on)
    assert predict_region_job(ws, jid, cfg_on, ProgressReporter(ws, jid))["compiled"] is True and used
    loads = []
    monkeypatch.setattr(engine_mod.Predictor, "from_checkpoint", classmethod(lambda cls, *a, **k: loads.append(a)))
    bad = {**cfg, "compile": "yes"}
    with pytest.raises(ValueError, match="compile must be 'auto', 'on' or 'off'"):
        jid = ws.create_job("predict-region", bad)
        predict_region_job(ws, jid, bad, ProgressReporter(ws, jid))
    assert loads == []


def capture_downloads(monkeypatch) -> dict:
    """Record what the page offers for download: key -> (data, file_name) (the data of lazy buttons is not made)."""
    from streamlit.delta_generator import DeltaGenerator

    got: dict = {}
    real = DeltaGenerator.download_button

    def record(self, label, data, file_name=None, *args, **kwargs):
        got[kwargs.get("key")] = (data, file_name)
        return real(self, label, data, file_name, *args, **kwargs)

    monkeypatch.setattr(DeltaGenerator, "download_button", record)
    return got


def test_map_page_predicts_a_drawn_rectangle(ws, fake_map, monkeypatch):
    from folium.raster_layers import ImageOverlay

    from seghz.geo.regions import workspace_tile_key
    from seghz.geo.tiles import pixel_window_to_geojson, tile_dir

    info = scene_info(ws)
    window = (64, 32, 96, 128)
    fake = fake_map(feature(pixel_window_to_geojson(window, info)))
    downloads = capture_downloads(monkeypatch)
    at = app().run()
    assert_ok(at)
    # tiles were built for this workspace's scene, and the map got them plus the draw tools
    assert (tile_dir(workspace_tile_key(ws.root), SCENE_ID) / "pyramid.json").is_file()
    call = fake.calls[-1]
    assert call["key"] == f"map_folium__{SCENE_ID}" and call["returned_objects"] == ["last_active_drawing", "all_drawings"]
    assert "/app/static/tiles/" in call["fig"].get_root().render()
    assert not [ch for ch in call["feature_group_to_add"]._children.values() if isinstance(ch, ImageOverlay)]
    assert at.session_state["map_regions"][SCENE_ID]["geometry"]["type"] == "Polygon"
    assert "rows 64–159, columns 32–159 (128×96 px" in texts(at)
    assert at.selectbox(key="map_scene").value == SCENE_ID

    at.button(key="map_predict").click().run()
    assert_ok(at)
    res = at.session_state["map_results"][SCENE_ID]["result"]
    assert res.window == window and res.pred.shape == (96, 128) and res.tta == "none"
    assert res.label is not None and res.pixel_area_m2 == pytest.approx(1.0, rel=0.05)  # ~1 m demo pixels
    assert at.session_state["map_results"][SCENE_ID]["inside"] is None  # rectangle: whole window

    layers = fake.layers()
    assert isinstance(layers.get("Prediction"), ImageOverlay), layers
    (s, w), (n, e) = layers["Prediction"].bounds
    from seghz.geo.tiles import window_bounds

    (s0, w0), (n0, e0) = window_bounds(window, info)
    assert abs(s - s0) < 1e-7 and abs(n - n0) < 1e-7 and abs(w - w0) < 1e-7 and abs(e - e0) < 1e-7
    assert "Label" not in layers and "Uncertainty" not in layers

    # class-area table: all hz7 classes, m² column (12,288 m² read "0.0123 km²" before), shares sum to 100 %
    df = at.dataframe[0].value
    assert list(df["class"]) == list(HZ7.names)
    assert abs(float(df["predicted share (%)"].sum()) - 100.0) < 1e-6
    assert int(df["pixels"].sum()) == 96 * 128
    assert float(df["area (m²)"].sum()) == pytest.approx(96 * 128 * res.pixel_area_m2, rel=1e-6)
    # the region's class frequencies against its label: the label's shares, the difference, bias flags
    lab = res.label[res.label != 255]
    want = [100.0 * float((lab == i).mean()) for i in range(HZ7.num_classes)]
    assert list(df["label share (%)"]) == pytest.approx(want)
    assert list(df["Δ (pp)"]) == pytest.approx(list(df["predicted share (%)"] - df["label share (%)"]))
    assert all((b == "over") == (d > 5) and (b == "under") == (d < -5) for b, d in zip(df["bias"], df["Δ (pp)"]))
    # the table spans the page (next to the chart, in 2/5 of it, its right columns were off the edge at 1400 px)
    assert not any("bias" in d.value.columns for c in at.columns for d in c.dataframe)
    # the CSV: the table's headers, areas to 6 decimals and shares to 2 (it had 0.0503120841566746 and "share (%)")
    import io

    import pandas as pd

    data, fname = downloads["map_dl_csv"]
    assert fname.endswith("_class_areas.csv")
    csv_text = data.decode() if isinstance(data, bytes) else data
    csv = pd.read_csv(io.StringIO(csv_text))
    assert list(df.columns) == ["class", "area (m²)", "pixels", "predicted share (%)", "label share (%)", "Δ (pp)",
                                "bias"]
    assert list(csv.columns) == [*df.columns, "checkpoint", "TTA"]  # which model and TTA made the prediction
    assert set(csv["checkpoint"]) == {"tiny-map"} and set(csv["TTA"]) == {"none"}
    for col, decimals in (("area (m²)", 2), ("predicted share (%)", 2), ("label share (%)", 2), ("Δ (pp)", 2)):
        assert list(csv[col]) == pytest.approx(list(df[col].round(decimals)), abs=1e-12), col
    lines = csv_text.splitlines()[1:]
    assert all(len(v.split(".")[1]) <= 6 for line in lines for v in line.split(",")[1:] if "." in v), lines
    assert "e-" not in csv_text  # fixed decimals, never "6.6e-05"
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Area"].endswith(" m²") and metrics["Pixels"] == f"{96 * 128:,}"
    assert metrics["Mean confidence"].endswith("%") and metrics["Agreement with label"].endswith("%")
    assert len(at.get("plotly_chart")) == 1
    t = texts(at)
    assert all(name in t for name in HZ7.names)  # legend chips in the scheme colours
    assert "tiny map model" in t

    # TTA off: one view recorded, disagreement explained as n/a in the summary under the map
    assert res.views == ("identity",) and res.merge == "softmax" and res.blend == "uniform"
    assert "TTA none (1 view: identity)" in t
    assert "mean entropy" in t and "n/a, TTA off (1 view)" in t

    # label + low-confidence layers
    at.toggle(key="map_show_label").set_value(True)
    at.radio(key="map_uncertainty").set_value("confidence").run()
    assert_ok(at)
    layers = fake.layers()
    assert {"Prediction", "Label", "Low confidence"} <= set(layers), layers
    # entropy layer: a colour-ramp overlay with its legend (0 .. ln 7 nats)
    at.radio(key="map_uncertainty").set_value("entropy").run()
    assert_ok(at)
    layers = fake.layers()
    assert isinstance(layers.get("Entropy"), ImageOverlay) and "Low confidence" not in layers, layers
    t = texts(at)
    assert "Predictive entropy" in t and "nats" in t and "ln 7 = 1.95" in t
    # disagreement with one view: said so, nothing drawn
    at.radio(key="map_uncertainty").set_value("disagreement").run()
    assert_ok(at)
    assert "Disagreement" not in fake.layers() and "Entropy" not in fake.layers()
    assert "needs at least 2 TTA views" in texts(at)
    at.radio(key="map_uncertainty").set_value("off").run()
    assert_ok(at)
    assert not {"Low confidence", "Entropy", "Disagreement"} & set(fake.layers())
    at.toggle(key="map_show_pred").set_value(False).run()
    assert_ok(at)
    assert "Prediction" not in fake.layers() and "Label" in fake.layers()
    # the result survives reruns and the TTA choice applies to the next prediction
    at.radio(key="map_tta").set_value("d4")
    at.button(key="map_predict").click().run()
    assert_ok(at)
    assert at.session_state["map_results"][SCENE_ID]["result"].tta == "d4"


def test_map_page_masks_outside_a_drawn_polygon(ws, fake_map):
    from seghz.geo.tiles import pixel_to_latlng

    info = scene_info(ws)
    rows, cols = np.array([20.0, 200.0, 120.0, 20.0]), np.array([30.0, 60.0, 220.0, 30.0])
    lat, lng = pixel_to_latlng(rows, cols, info)
    tri = {"type": "Polygon", "coordinates": [[[float(x), float(y)] for x, y in zip(lng, lat)]]}
    fake_map(feature(tri))
    at = app().run()
    assert_ok(at)
    at.button(key="map_predict").click().run()
    assert_ok(at)
    rec = at.session_state["map_results"][SCENE_ID]
    inside = rec["inside"]
    assert inside is not None and inside.shape == rec["result"].pred.shape and 0.3 < inside.mean() < 0.7
    df = at.dataframe[0].value
    assert int(df["pixels"].sum()) == int(inside.sum())  # only the polygon's pixels are counted
    assert abs(float(df["predicted share (%)"].sum()) - 100.0) < 1e-6


def test_map_page_region_outside_the_scene_shows_an_error(ws, fake_map):
    from seghz.geo.tiles import pixel_window_to_geojson

    info = scene_info(ws)
    fake_map(feature(pixel_window_to_geojson((-400, 600, 100, 100), info)))  # well off the image
    at = app().run()
    assert_ok(at)
    errors = "\n".join(e.value for e in at.error)
    assert "Cannot predict this region" in errors and "outside" in errors, errors
    # the scene by its name, not its image file ("lies outside scene town.tif")
    assert "outside scene 'Test town (synthetic)' (256x256 px)" in errors and "town.tif" not in errors, errors
    assert at.button(key="map_predict").disabled
    assert "map_results" not in at.session_state or SCENE_ID not in at.session_state["map_results"]


def test_map_page_without_drawing_asks_to_draw(ws, fake_map):
    fake_map(None)
    at = app().run()
    assert_ok(at)
    assert any("Draw a rectangle or polygon" in i.value for i in at.info)
    assert at.button(key="map_predict").disabled


def test_map_page_region_over_the_size_cap_shows_an_error(ws, fake_map, monkeypatch):
    import functools

    from seghz.geo.tiles import pixel_window_to_geojson
    from seghz.infer import region

    # a 256 px scene cannot exceed the real 4.2 Mpx cap: lower it for this run
    monkeypatch.setattr(region, "check_window", functools.partial(region.check_window, max_pixels=1000))
    fake_map(feature(pixel_window_to_geojson((0, 0, 64, 64), scene_info(ws))))
    at = app().run()
    assert_ok(at)
    errors = "\n".join(e.value for e in at.error)
    assert "Cannot predict this region" in errors and "over the cap" in errors, errors
    assert at.button(key="map_predict").disabled


def test_map_page_pixel_space_scene_counts_pixels(ws, fake_map):
    from seghz.data.io import raster_info, write_index_mask, write_rgb
    from seghz.demo import generate_scene
    from seghz.geo.tiles import pixel_window_to_geojson

    rgb, lbl = generate_scene(160, 3)
    write_rgb(ws.root / "scenes" / "plain.png", rgb[:, :128])
    write_index_mask(ws.root / "labels" / "plain_label.png", lbl[:, :128], HZ7)
    ws.add_scene("Plain picture", ws.root / "scenes" / "plain.png", "hz7", label_path=ws.root / "labels" / "plain_label.png",
                 scene_id="plain")
    info = raster_info(ws.scene_path("plain", "image"))
    assert not info.georeferenced
    fake = fake_map(feature(pixel_window_to_geojson((10, 20, 50, 60), info)))  # [col, -row] positions
    at = app().run()
    at.selectbox(key="map_scene").set_value("plain").run()
    assert_ok(at)
    assert fake.calls[-1]["key"] == "map_folium__plain"
    assert "rows 10–59, columns 20–79 (60×50 px" in texts(at)
    at.button(key="map_predict").click().run()
    assert_ok(at)
    res = at.session_state["map_results"]["plain"]["result"]
    assert res.window == (10, 20, 50, 60) and res.pixel_area_m2 is None
    df = at.dataframe[0].value
    assert "area (km²)" not in df.columns and int(df["pixels"].sum()) == 50 * 60
    assert abs(float(df["predicted share (%)"].sum()) - 100.0) < 1e-6
    assert {m.label: m.value for m in at.metric}["Area"] == f"{50 * 60:,} px"
    (s, w), (n, e) = fake.layers()["Prediction"].bounds
    assert (s, w, n, e) == (-60.0, 20.0, -10.0, 80.0)  # CRS.Simple: lat = -row, lng = col
    # the other scene keeps its own (empty) state
    at.selectbox(key="map_scene").set_value(SCENE_ID).run()
    assert_ok(at)
    assert SCENE_ID not in at.session_state["map_results"] and "plain" in at.session_state["map_results"]


def test_map_page_label_in_a_scheme_without_crosswalk_shows_an_error(ws, fake_map, tiny_map_checkpoint):
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from seghz.geo.tiles import pixel_window_to_geojson

    # the same 7-class weights, declared as a LoveDA model: hz7 labels have no crosswalk to loveda
    src, meta = tiny_map_checkpoint
    with safe_open(str(src), framework="pt") as f:
        raw = json.loads(f.metadata()["seghz"])
    raw["scheme"] = get_scheme("loveda").to_json()
    dst = ws.root / "checkpoints" / "loveda.safetensors"
    save_file(load_file(str(src)), str(dst), metadata={"seghz": json.dumps(raw)})
    cid = ws.register_checkpoint(dst, {**meta, "scheme": "loveda"}, checkpoint_id="tiny-loveda", name="loveda model")
    ws.set_active_checkpoint(cid)
    fake = fake_map(feature(pixel_window_to_geojson((0, 0, 64, 64), scene_info(ws))))
    at = app().run()
    at.button(key="map_predict").click().run()
    assert_ok(at)
    errors = "\n".join(e.value for e in at.error)
    assert "cannot be compared" in errors and "loveda" in errors, errors
    df = at.dataframe[0].value
    assert list(df["class"]) == list(get_scheme("loveda").names)  # the prediction is in the checkpoint's classes
    assert {m.label: m.value for m in at.metric}["Agreement with label"] == "–"
    at.toggle(key="map_show_label").set_value(True).run()
    assert_ok(at)
    assert "Label" not in fake.layers() and "Prediction" in fake.layers()


def _overlay_rgba(layer) -> np.ndarray:
    import base64
    import io

    from PIL import Image

    url = layer.url if hasattr(layer, "url") else layer.image
    assert url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGBA"))


def test_map_page_custom_views_merge_and_blend_reach_the_engine(ws, fake_map):
    from folium.raster_layers import ImageOverlay

    from seghz.data.io import read_image
    from seghz.geo.tiles import pixel_window_to_geojson
    from seghz.infer.engine import Predictor

    window = (32, 16, 64, 96)
    fake = fake_map(feature(pixel_window_to_geojson(window, scene_info(ws))))
    at = app().run()
    assert_ok(at)
    assert not at.multiselect  # no view picker unless TTA is custom
    at.radio(key="map_tta").set_value("custom").run()
    assert_ok(at)
    assert at.multiselect(key="map_tta_views").value == ["identity"]  # identity pre-selected
    at.multiselect(key="map_tta_views").select("lr")
    at.selectbox(key="map_merge").set_value("logits")
    at.selectbox(key="map_blend").set_value("gaussian").run()
    assert_ok(at)
    assert not at.button(key="map_predict").disabled
    at.button(key="map_predict").click().run()
    assert_ok(at)
    res = at.session_state["map_results"][SCENE_ID]["result"]
    assert res.tta == "custom" and res.views == ("identity", "lr")
    assert res.merge == "logits" and res.blend == "gaussian"
    assert "TTA custom (2 views: identity, lr), merge: mean of logits, blending: gaussian" in texts(at)

    # the same as running the engine directly with those views and settings
    pred, _ = Predictor.from_checkpoint(ws.checkpoint_path("tiny-map"), device="cpu")
    img = read_image(ws.scene_path(SCENE_ID, "image"), window=window)
    direct = pred.predict_full(img, ["identity", "lr"], merge="logits", blend="gaussian")
    assert np.allclose(res.confidence, direct.confidence, atol=1e-5)
    assert (res.pred == direct.mask).mean() > 0.999
    assert np.allclose(res.entropy, direct.entropy, atol=1e-4, equal_nan=True)
    assert np.allclose(res.disagreement, direct.disagreement, equal_nan=True)
    # ... and not what the identity view alone gives (the untrained net is not flip-invariant)
    alone = pred.predict_full(img, ["identity"], merge="logits", blend="gaussian")
    assert not np.allclose(res.confidence, alone.confidence, atol=1e-5)
    assert set(np.unique(res.disagreement)) <= {0.0, 0.5, 1.0}  # multiples of 1/2 views

    # disagreement layer: drawn, with its legend and the summary under the map
    at.radio(key="map_uncertainty").set_value("disagreement").run()
    assert_ok(at)
    layer = fake.layers().get("Disagreement")
    assert isinstance(layer, ImageOverlay), fake.layers()
    t = texts(at)
    assert "View disagreement" in t and "fraction of views" in t and "2 TTA views" in t
    frac = float((res.disagreement > 0).mean())
    assert f"views disagree on {frac * 100:.1f} % of pixels (2 views)" in t
    assert f"mean entropy {float(np.nanmean(res.entropy)):.3f} nats" in t
    rgba = _overlay_rgba(layer)
    assert rgba.shape[:2] == res.pred.shape  # north-up Web-Mercator demo scene: the overlay is the window itself
    assert ((rgba[..., 3] > 0) == (res.disagreement > 0)).all()  # agreeing pixels are transparent


def test_map_page_empty_custom_view_set_is_refused(ws, fake_map):
    from seghz.geo.tiles import pixel_window_to_geojson

    fake_map(feature(pixel_window_to_geojson((0, 0, 64, 64), scene_info(ws))))
    at = app().run()
    at.radio(key="map_tta").set_value("custom").run()
    at.multiselect(key="map_tta_views").unselect("identity").run()
    assert_ok(at)
    errors = "\n".join(e.value for e in at.error)
    assert "Choose at least one TTA view" in errors, errors
    assert at.button(key="map_predict").disabled
    at.run()
    assert_ok(at)
    assert SCENE_ID not in at.session_state["map_results"]
    # picking a view again enables it, and that view alone is run
    at.multiselect(key="map_tta_views").select("rot90").run()
    assert not any("Choose at least one TTA view" in e.value for e in at.error)
    assert not at.button(key="map_predict").disabled
    at.button(key="map_predict").click().run()
    assert_ok(at)
    assert at.session_state["map_results"][SCENE_ID]["result"].views == ("rot90",)


def test_map_page_entropy_layer_is_transparent_outside_a_polygon(ws, fake_map):
    from seghz.geo.tiles import pixel_to_latlng

    info = scene_info(ws)
    rows, cols = np.array([10.0, 120.0, 70.0, 10.0]), np.array([10.0, 30.0, 120.0, 10.0])
    lat, lng = pixel_to_latlng(rows, cols, info)
    fake = fake_map(feature({"type": "Polygon", "coordinates": [[[float(x), float(y)] for x, y in zip(lng, lat)]]}))
    at = app().run()
    at.radio(key="map_uncertainty").set_value("entropy")
    at.button(key="map_predict").click().run()
    assert_ok(at)
    rec = at.session_state["map_results"][SCENE_ID]
    inside = rec["inside"]
    assert inside is not None and 0.2 < inside.mean() < 0.8
    rgba = _overlay_rgba(fake.layers()["Entropy"])
    assert rgba.shape[:2] == inside.shape  # north-up Web-Mercator demo scene
    assert (rgba[..., 3][~inside] == 0).all() and (rgba[..., 3][inside] > 0).mean() > 0.99
    ent = rec["result"].entropy[inside]
    assert f"mean entropy {float(ent.mean()):.3f} nats" in texts(at)


def test_resolve_tta_modes_and_custom_lists():
    from seghz.infer.region import resolve_tta

    assert resolve_tta("none") == ("none", ("identity",))
    assert resolve_tta("d4")[0] == "d4" and len(resolve_tta("d4")[1]) == 8
    assert resolve_tta(["identity", "lr"]) == ("custom", ("identity", "lr"))
    assert resolve_tta(["transpose"]) == ("custom", ("diag",))  # old alias -> the seed's name
    with pytest.raises(ValueError, match="no TTA views"):
        resolve_tta([])
    with pytest.raises(ValueError, match="unknown TTA view"):
        resolve_tta(["identity", "spin"])
