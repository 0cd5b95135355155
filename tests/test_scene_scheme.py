"""The class scheme of a whole-scene prediction (seghz.infer.scene.resolve_scheme): taken from the checkpoint
metadata or given, never guessed from the class count (hz7 and loveda both have 7 classes)."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from seghz.classes import get_scheme
from seghz.infer.engine import Predictor
from seghz.infer.scene import SceneError, predict_scene, resolve_scheme

torch.set_num_threads(1)
HZ7, LOVEDA = get_scheme("hz7"), get_scheme("loveda")


def test_the_two_seven_class_schemes_differ():
    # the premise of the bug: same class count, different names and colours
    assert HZ7.num_classes == LOVEDA.num_classes == 7
    assert HZ7.names != LOVEDA.names and HZ7.colors != LOVEDA.colors


def _pointwise(num_classes=7, scheme=None) -> Predictor:
    torch.manual_seed(0)
    return Predictor(torch.nn.Conv2d(3, num_classes, 1), num_classes, (0.5,) * 3, (0.5,) * 3, tile=64,
                     batch_size=2, device="cpu", scheme=scheme)


def _scene(path, h=70, w=90):
    img = np.random.default_rng(0).integers(0, 256, (3, h, w), dtype=np.uint8)
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=3, dtype="uint8", crs="EPSG:3857",
                       transform=from_origin(13375000.0, 3536000.0, 2.0, 2.0)) as ds:
        ds.write(img)
    return path


def test_unknown_scheme_is_an_error_not_a_guess(tmp_path):
    with pytest.raises(SceneError) as ei:
        resolve_scheme(_pointwise(), None)
    msg = str(ei.value)
    assert "not known" in msg and "hz7" in msg and "loveda" in msg and "scheme=" in msg
    # predict_scene refuses before writing anything
    src = _scene(tmp_path / "s.tif")
    with pytest.raises(SceneError, match="not known"):
        predict_scene(_pointwise(), src, tmp_path / "o.tif")
    assert not (tmp_path / "o.tif").exists() and not list(tmp_path.glob(".*"))
    # a class count no registered scheme has: still an error (no made-up class names)
    with pytest.raises(SceneError, match="3-class model is not known"):
        resolve_scheme(_pointwise(3), None)


def test_given_or_own_scheme_is_used_and_checked():
    assert resolve_scheme(_pointwise(), "loveda") is LOVEDA
    assert resolve_scheme(_pointwise(), HZ7) is HZ7
    assert resolve_scheme(_pointwise(scheme=LOVEDA), None) is LOVEDA
    assert resolve_scheme(_pointwise(scheme=LOVEDA), "loveda") is LOVEDA
    with pytest.raises(SceneError, match="other classes"):  # the caller's scheme contradicts the checkpoint's
        resolve_scheme(_pointwise(scheme=LOVEDA), "hz7")
    with pytest.raises(SceneError, match="unknown class scheme 'nope'"):
        resolve_scheme(_pointwise(), "nope")
    with pytest.raises(SceneError, match="has 15 classes, the model 7"):
        resolve_scheme(_pointwise(), "gid15")


@pytest.fixture(scope="module")
def loveda_ckpt(tmp_path_factory):
    from seghz.models.checkpoint import save_checkpoint
    from seghz.models.registry import build_model

    torch.manual_seed(0)
    model = build_model("Segformer", "tu-efficientnet_lite0", LOVEDA.num_classes)
    meta = {"arch": "Segformer", "encoder": "tu-efficientnet_lite0", "num_classes": LOVEDA.num_classes,
            "scheme": LOVEDA.to_json(), "normalization": {"mean": [0.5] * 3, "std": [0.5] * 3}, "tile_size": 64}
    return save_checkpoint(tmp_path_factory.mktemp("ck") / "loveda.safetensors", model, meta)


def test_loveda_checkpoint_without_explicit_scheme_gets_loveda_names_and_colours(loveda_ckpt, tmp_path):
    pred, _ = Predictor.from_checkpoint(loveda_ckpt, "cpu", batch_size=2)
    assert pred.scheme is not None and pred.scheme.name == "loveda" and pred.scheme.names == LOVEDA.names
    src = _scene(tmp_path / "s.tif")
    out = tmp_path / "o.tif"
    s = predict_scene(pred, src, out, areas_csv=tmp_path / "a.csv")  # no scheme= : from the checkpoint
    assert s["scheme"] == "loveda"
    with open(tmp_path / "a.csv") as f:
        assert [r["class"] for r in csv.DictReader(f)] == list(LOVEDA.names)
    with rasterio.open(out) as ds:
        cmap = ds.colormap(1)
        assert [cmap[i][:3] for i in range(7)] == [tuple(c) for c in LOVEDA.colors]
        assert ds.tags(1)["scheme"] == "loveda" and ds.tags(1)["classes"] == ",".join(LOVEDA.names)
