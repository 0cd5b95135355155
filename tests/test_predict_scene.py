"""Whole-scene streamed prediction into a GeoTIFF (seghz.infer.scene, ``python -m seghz predict-scene``)."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from seghz.classes import get_scheme
from seghz.data.io import read_image
from seghz.infer.engine import Cancelled, Predictor, shard_rows, window_rows
from seghz.infer.scene import predict_scene, uncertainty_path

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
HZ7 = get_scheme("hz7")
H, W = 700, 900
# EPSG:3857 near 120.15E 30.25N, 2 m pixels
X0, Y0 = 13375000.0, 3536000.0


def _image(seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    base = np.stack([(xx * 255 // W), (yy * 255 // H), ((xx + yy) % 256)], -1).astype(np.int32)
    return np.clip(base + rng.integers(-40, 40, (H, W, 3)), 0, 255).astype(np.uint8)


def _write_tif(path: Path, img: np.ndarray, *, alpha: np.ndarray | None = None, nodata=None, geo=True) -> Path:
    bands = [img[..., i] for i in range(3)] + ([alpha] if alpha is not None else [])
    prof = {"driver": "GTiff", "width": img.shape[1], "height": img.shape[0], "count": len(bands), "dtype": "uint8"}
    if geo:
        prof.update(crs="EPSG:3857", transform=from_origin(X0, Y0, 2.0, 2.0))
    if nodata is not None:
        prof["nodata"] = nodata
    if alpha is not None:
        prof["photometric"] = "RGB"
        prof["alpha"] = "YES"
    with rasterio.open(path, "w", **prof) as ds:
        ds.write(np.stack(bands))
    return path


def _pointwise(tile=128) -> Predictor:
    torch.manual_seed(0)
    m = torch.nn.Conv2d(3, HZ7.num_classes, 1)
    return Predictor(m, HZ7.num_classes, (0.5,) * 3, (0.5,) * 3, tile=tile, overlap=0.25, batch_size=4, device="cpu",
                     scheme=HZ7)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    d = tmp_path_factory.mktemp("scene")
    img = _image()
    return img, _write_tif(d / "big.tif", img)


def test_output_keeps_geo_and_colours(scene, tmp_path):
    _, src = scene
    out = tmp_path / "out.tif"
    s = predict_scene(_pointwise(), src, out, png=tmp_path / "p.png", areas_csv=tmp_path / "a.csv")
    with rasterio.open(src) as a, rasterio.open(out) as b:
        assert (b.width, b.height, b.count, b.dtypes[0]) == (W, H, 1, "uint8")
        assert b.crs == a.crs and b.transform == a.transform
        assert b.nodata == 255
        cmap = b.colormap(1)
        for i, c in enumerate(HZ7.colors):
            assert cmap[i][:3] == tuple(c)
        assert b.profile.get("compress", "").lower() == "deflate" and b.profile.get("tiled")
    # one piece per window row and column block (a block is written as soon as the windows touching it are done)
    assert len(window_rows(H, 128, 0.25)) == 7 and s["pixel_area_m2"] > 0
    assert s["strips_this_rank"] == 7 * len(window_rows(W, 128, 0.25))
    with open(tmp_path / "a.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["class"] for r in rows] == list(HZ7.names)
    assert abs(sum(float(r["percent"]) for r in rows) - 100) < 1e-6
    assert sum(int(r["pixels"]) for r in rows) == H * W
    assert all(float(r["km2"]) >= 0 for r in rows)
    # 2 m Web-Mercator pixels at 30.25N are ~ (2 cos 30.25°)² m² on the ground
    assert abs(s["pixel_area_m2"] - (2 * np.cos(np.radians(30.25))) ** 2) < 0.05
    png = read_image(tmp_path / "p.png")
    assert png.shape == (H, W, 3)
    assert not list(tmp_path.glob(".*"))  # no temporaries left


def _conv(tile=128, overlap=0.25) -> Predictor:
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 5, padding=2), torch.nn.ReLU(), torch.nn.Conv2d(8, HZ7.num_classes, 5, padding=2))
    return Predictor(m.eval(), HZ7.num_classes, (0.5,) * 3, (0.5,) * 3, tile=tile, overlap=overlap, batch_size=3, device="cpu",
                     scheme=HZ7)


@pytest.mark.parametrize("tile,overlap,tta", [(128, 0.25, "none"), (96, 0.5, "flip"), (64, 0.0, "none"), (1024, 0.25, "none")])
def test_streamed_scene_equals_whole_image(scene, tmp_path, tile, overlap, tta):
    """Window rows streamed from the file give the in-memory whole-image result bit for bit (context-using model)."""
    img, src = scene
    p = _conv(tile, overlap)
    out = tmp_path / "o.tif"
    predict_scene(p, src, out, tta=tta, uncertainty=True)
    want = p.predict_full(img, tta)
    with rasterio.open(out) as ds:
        assert np.array_equal(ds.read(1), want.mask)
    with rasterio.open(uncertainty_path(out)) as ds:
        u = ds.read()
    assert u[0].tobytes() == want.confidence.tobytes() and u[1].tobytes() == want.entropy.tobytes()


def test_nodata_and_alpha_become_255(tmp_path):
    img = _image(1)
    alpha = np.full((H, W), 255, np.uint8)
    alpha[:, :300] = 0  # whole window columns and part of the next
    alpha[600:, 800:] = 0
    src = _write_tif(tmp_path / "alpha.tif", img, alpha=alpha)
    out = tmp_path / "o.tif"
    p = _pointwise()
    calls = []
    p.model.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    s = predict_scene(p, src, out, uncertainty=True, areas_csv=tmp_path / "a.csv")
    # windows entirely in the nodata columns are never run: 128-px windows at stride 96 → columns 0, 96 skipped
    cols = [c for c in range(0, W - 128, 96)] + [W - 128]
    run = [c for c in cols if c + 128 > 300]
    assert sum(calls) == len(window_rows(H, 128, 0.25)) * len(run)
    with rasterio.open(out) as ds:
        m = ds.read(1)
    assert (m[alpha == 0] == 255).all() and (m[alpha > 0] < 7).all()
    assert s["nodata_pixels"] == int((alpha == 0).sum())
    with open(tmp_path / "a.csv") as f:
        assert abs(sum(float(r["percent"]) for r in csv.DictReader(f)) - 100) < 1e-6

    img2 = img.copy()
    img2[:100, :100] = 0
    src2 = _write_tif(tmp_path / "nd.tif", img2, nodata=0, geo=False)
    predict_scene(_pointwise(), src2, tmp_path / "o2.tif")
    with rasterio.open(tmp_path / "o2.tif") as ds:
        m2 = ds.read(1)
        assert ds.crs is None
    assert (m2[:100, :100] == 255).all() and (m2[100:, 100:] < 7).all()


def test_uncertainty_bands(scene, tmp_path):
    _, src = scene
    out = tmp_path / "o.tif"
    predict_scene(_pointwise(), src, out, tta="flip", uncertainty=True)
    with rasterio.open(uncertainty_path(out)) as ds:
        assert ds.count == 3 and ds.dtypes[0] == "float32"
        assert ds.descriptions == ("confidence", "entropy", "disagreement")
        conf, ent, dis = ds.read()
    assert conf.shape == (H, W) and (conf > 0).all() and (conf <= 1 + 1e-6).all()
    assert np.isfinite(ent).all() and (ent >= 0).all() and np.isfinite(dis).all()


def test_cancel_leaves_nothing(scene, tmp_path):
    _, src = scene
    out = tmp_path / "o.tif"
    calls = {"n": 0}

    def cancel():
        calls["n"] += 1
        return calls["n"] > 5

    with pytest.raises(Cancelled):
        predict_scene(_pointwise(), src, out, uncertainty=True, png=tmp_path / "p.png",
                      areas_csv=tmp_path / "a.csv", should_cancel=cancel)
    assert list(tmp_path.iterdir()) == []


def test_bad_inputs(tmp_path):
    from seghz.errors import BadInputError

    with pytest.raises(BadInputError):
        predict_scene(_pointwise(), tmp_path / "missing.tif", tmp_path / "o.tif")
    gray = tmp_path / "gray.tif"
    with rasterio.open(gray, "w", driver="GTiff", width=50, height=40, count=1, dtype="uint8") as ds:
        ds.write(np.zeros((1, 40, 50), np.uint8))
    with pytest.raises(BadInputError, match="1 band"):
        predict_scene(_pointwise(), gray, tmp_path / "o.tif")
    assert not (tmp_path / "o.tif").exists()


# ---------------------------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    from seghz.models.checkpoint import save_checkpoint
    from seghz.models.registry import build_model

    torch.manual_seed(0)
    model = build_model("Segformer", "tu-efficientnet_lite0", HZ7.num_classes)
    meta = {"arch": "Segformer", "encoder": "tu-efficientnet_lite0", "num_classes": HZ7.num_classes,
            "scheme": HZ7.to_json(), "normalization": {"mean": [0.5] * 3, "std": [0.5] * 3}, "tile_size": 256}
    return save_checkpoint(tmp_path_factory.mktemp("ck") / "tiny.safetensors", model, meta)


def _cli(*args, module=("-m", "seghz"), timeout=300):
    env = {"HF_HUB_OFFLINE": "1", "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT),
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *module, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          check=False, timeout=timeout, env=env)


def test_cli_predict_scene(scene, tiny_ckpt, tmp_path):
    _, src = scene
    out = tmp_path / "cli.tif"
    p = _cli("predict-scene", "--checkpoint", tiny_ckpt, "--input", src, "--output", out, "--compile", "off",
             "--areas", tmp_path / "a.csv", "--png", tmp_path / "p.png", "--device", "cpu")
    assert p.returncode == 0, p.stdout + p.stderr
    with rasterio.open(out) as ds:
        assert (ds.width, ds.height) == (W, H) and ds.crs.to_epsg() == 3857
        assert ds.read(1).max() < 7
    assert (tmp_path / "a.csv").is_file() and (tmp_path / "p.png").is_file()
    for args in (["--input", tmp_path / "nope.tif"], ["--input", src, "--checkpoint", tmp_path / "nope.safetensors"]):
        base = {"--checkpoint": tiny_ckpt, "--input": src}
        base.update(dict(zip(args[::2], args[1::2])))
        q = _cli("predict-scene", *[x for kv in base.items() for x in kv], "--output", tmp_path / "bad.tif")
        assert q.returncode == 2 and "error:" in q.stderr
    gray = tmp_path / "gray.tif"
    with rasterio.open(gray, "w", driver="GTiff", width=50, height=40, count=2, dtype="uint8") as ds:
        ds.write(np.zeros((2, 40, 50), np.uint8))
    q = _cli("predict-scene", "--checkpoint", tiny_ckpt, "--input", gray, "--output", tmp_path / "bad.tif")
    assert q.returncode == 2 and "2 band" in q.stderr
    assert not (tmp_path / "bad.tif").exists()


def test_torchrun_two_ranks_equals_one(scene, tiny_ckpt, tmp_path):
    _, src = scene
    one, two = tmp_path / "one.tif", tmp_path / "two.tif"
    common = ["--checkpoint", tiny_ckpt, "--input", src, "--tile", "128", "--device", "cpu", "--uncertainty", "--tta", "identity,rot90"]
    p = _cli("predict-scene", *common, "--output", one)
    assert p.returncode == 0, p.stderr
    q = _cli("--standalone", "--nproc-per-node", "2", "-m", "seghz", "predict-scene", *common, "--output", two,
             module=("-m", "torch.distributed.run"), timeout=120)
    assert q.returncode == 0, q.stdout + q.stderr
    with rasterio.open(one) as a, rasterio.open(two) as b:
        assert a.read(1).tobytes() == b.read(1).tobytes()
        assert a.transform == b.transform and a.crs == b.crs
    with rasterio.open(uncertainty_path(one)) as a, rasterio.open(uncertainty_path(two)) as b:
        assert a.read().tobytes() == b.read().tobytes()
    assert not list(tmp_path.glob(".*"))


@pytest.mark.parametrize("world", [2, 3, 5])
def test_shards_join_into_the_whole(world):
    """Rank row ranges are contiguous, cover the image and start on window rows (in-process check of the split)."""
    for h, tile, ov in [(700, 128, 0.25), (50, 128, 0.25), (1000, 64, 0.5)]:
        spans = [shard_rows(h, tile, ov, r, world) for r in range(world)]
        assert spans[0][0] == 0 and spans[-1][1] == h
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
        starts = set(window_rows(h, tile, ov)) | {h}
        assert all(y0 in starts or y0 == y1 for y0, y1 in spans)


def test_rank_rows_equal_the_whole(scene):
    """Streaming only some rows (as a rank does) gives exactly those rows of the whole-image run."""
    img, _ = scene
    p = _conv(96, 0.5)
    want = p.predict_full(img, "flip")
    read = lambda a, b: (img[a:b], None)
    for world in (2, 3):
        got = []
        for r in range(world):
            y0, y1 = shard_rows(H, 96, 0.5, r, world)
            if y0 < y1:
                got += [st.result().mask for st in p.stream(H, W, read, "flip", rows=(y0, y1))]
        assert np.concatenate(got).tobytes() == want.mask.tobytes()


def test_compile_auto_turns_on_where_the_first_compile_pays(monkeypatch):
    """--compile auto: jobs of >= 0.15 Gpx (CPU) / 14 Gpx (CUDA) of window input × views; never without a C++
    compiler; on / off as asked."""
    from types import SimpleNamespace

    import seghz.data.io as io_mod
    import seghz.infer.engine as engine_mod
    from seghz.cli import _want_compile
    from seghz.infer.engine import CPU_COMPILE_MIN_PX, CUDA_COMPILE_MIN_PX

    side = {"v": 0}
    monkeypatch.setattr(io_mod, "raster_info", lambda path: SimpleNamespace(height=side["v"], width=side["v"]))
    monkeypatch.setattr(engine_mod, "compiler_available", lambda: True)
    cpu = SimpleNamespace(_cuda=False, tile=512, overlap=0.25)
    gpu = SimpleNamespace(_cuda=True, tile=1024, overlap=0.25)
    # CPU: 512² windows at stride 384; n² windows × 512² px × views against 1.5e8 (≈ 572 window-views)
    side["v"] = 512 + 384 * 23  # 24 × 24 = 576 windows: pays without TTA
    assert 576 * 512 ** 2 >= CPU_COMPILE_MIN_PX and _want_compile("auto", cpu, "x.tif")
    assert not _want_compile("auto", gpu, "x.tif")
    side["v"] = 512 + 384 * 8  # 81 windows: only with D4 (648 window-views), not with 2 views or none
    assert not _want_compile("auto", cpu, "x.tif") and not _want_compile("auto", cpu, "x.tif", views=2)
    assert _want_compile("auto", cpu, "x.tif", views=8)
    side["v"] = 512 + 384 * 7  # 64 windows × 8 views = 512 window-views: below
    assert not _want_compile("auto", cpu, "x.tif", views=8)
    assert _want_compile("on", cpu, "x.tif") and not _want_compile("off", cpu, "x.tif")
    # CUDA: 1024² windows at stride 768; n² windows × 1024² px × views against 14e9
    n = 116  # 116² × 1024² = 14.1e9 px: pays without TTA; 82 per side (7.05e9 px) only with 2+ views
    side["v"] = 1024 + 768 * (n - 1)
    assert n * n * 1024 ** 2 >= CUDA_COMPILE_MIN_PX and _want_compile("auto", gpu, "x.tif")
    side["v"] = 1024 + 768 * 81
    assert not _want_compile("auto", gpu, "x.tif") and _want_compile("auto", gpu, "x.tif", views=8)
    assert _want_compile("auto", gpu, "x.tif", views=2) and not _want_compile("auto", gpu, "x.tif", views=1)
    # under torchrun each rank compiles for its share of the windows: 2 ranks need twice the scene
    assert not _want_compile("auto", gpu, "x.tif", views=2, world=2) and _want_compile("auto", gpu, "x.tif", views=8, world=2)
    side["v"] = 512 + 384 * 11  # 144 windows × 8 views = 1152 window-views: 576 per rank with 2 ranks, 288 with 4
    assert _want_compile("auto", cpu, "x.tif", views=8, world=2) and not _want_compile("auto", cpu, "x.tif", views=8, world=4)
    monkeypatch.setattr(engine_mod, "compiler_available", lambda: False)
    side["v"] = 512 + 384 * 23
    assert not _want_compile("auto", cpu, "x.tif") and _want_compile("on", cpu, "x.tif")
