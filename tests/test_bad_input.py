"""Bad-input suite: every kind of bad file a user can hand SegHZ, through its public entry points (scene import,
folder import/dataset, region selection, checkpoint loading, the CLI), gives a clear error naming the file and the
problem -- or, where the input is usable, a documented behaviour. docs/bad_input.md has the table (one row per
input, naming the test here). Plus hypothesis fuzzing of the raster reader and the palette decoder.

The raster reader's own cases (truncated PNG/JPEG/GeoTIFF, 0-byte, 2-band, RGBA, 16-bit stretch, unknown colour,
size mismatch) are unit-tested in tests/test_io.py, and the crafted pickle against read_metadata/load_checkpoint in
tests/test_checkpoint.py; here the same inputs go through the entry points an analyst actually uses.
"""
from __future__ import annotations

import dataclasses
import io
import pickle
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from seghz.classes import get_scheme, scheme_names
from seghz.data.folders import load_folder
from seghz.data.io import raster_info, read_image, read_label
from seghz.data.scenes import import_folder, import_scene, register_shipped_checkpoints
from seghz.errors import BadInputError, CheckpointError, RegionError, SchemeMismatchError
from seghz.store import Workspace

HZ7 = get_scheme("hz7")


def _rgb(h=16, w=20, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _encode(arr: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **kw)
    return buf.getvalue()


def _put(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _geotiff(path: Path, arr_bhw: np.ndarray, dtype: str = "uint8", origin=(13_370_000.0, 3_540_000.0)) -> Path:
    import rasterio
    from rasterio.transform import Affine

    b, h, w = arr_bhw.shape
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=b, dtype=dtype, crs="EPSG:3857",
                       transform=Affine(1.0, 0.0, origin[0], 0.0, -1.0, origin[1])) as ds:
        ds.write(arr_bhw.astype(dtype))
    return path


def _label_png(path: Path, index: np.ndarray) -> Path:
    return _put(path, _encode(HZ7.index_to_ids(index.astype(np.uint8)).astype(np.uint8), "PNG"))


@pytest.fixture
def ws(tmp_path) -> Workspace:
    return Workspace(tmp_path / "ws")


def _raises_naming(exc, path, *words, call):
    """``call()`` raises ``exc`` whose message names ``path`` (its file name) and holds every one of ``words``."""
    with pytest.raises(exc) as ei:
        call()
    msg = str(ei.value)
    assert Path(path).name in msg, msg
    for w in words:
        assert w in msg, (w, msg)
    return msg


def _no_scene_left(ws: Workspace) -> None:
    assert ws.list_scenes() == []
    assert list((ws.root / "scenes").iterdir()) == []  # a refused import leaves no folder behind


# ------------------------------------------------------------------------------------------- imagery


@pytest.mark.parametrize("fmt,ext", [("PNG", ".png"), ("JPEG", ".jpg"), ("TIFF", ".tif")])
def test_truncated_image_is_refused_on_import(ws, tmp_path, fmt, ext):
    if fmt == "TIFF":
        data = _geotiff(tmp_path / "full.tif", _rgb(64, 64).transpose(2, 0, 1)).read_bytes()
    else:
        data = _encode(_rgb(64, 64), fmt)
    p = _put(tmp_path / f"cut{ext}", data[: len(data) * 2 // 3])
    msg = _raises_naming(BadInputError, p, call=lambda: import_scene(ws, p, scheme="hz7"))
    assert any(w in msg for w in ("truncated", "not a readable")), msg
    _no_scene_left(ws)


def test_one_band_imagery_is_refused_four_band_drops_alpha(ws, tmp_path):
    one = _geotiff(tmp_path / "gray.tif", _rgb()[None, ..., 0])
    _raises_naming(BadInputError, one, "1 band", "RGB", call=lambda: import_scene(ws, one, scheme="hz7"))
    _no_scene_left(ws)
    gray_png = _put(tmp_path / "gray.png", _encode(_rgb()[..., 0], "PNG"))
    _raises_naming(BadInputError, gray_png, "1 band", call=lambda: import_scene(ws, gray_png, scheme="hz7"))
    rgba = np.dstack([_rgb(), np.full((16, 20), 128, np.uint8)])
    four = _put(tmp_path / "rgba.png", _encode(rgba, "PNG"))
    scene = import_scene(ws, four, scheme="hz7")
    np.testing.assert_array_equal(read_image(ws.scene_path(scene, "image")), rgba[..., :3])
    four_tif = _geotiff(tmp_path / "rgbn.tif", rgba.transpose(2, 0, 1))
    scene = import_scene(ws, four_tif, scheme="hz7")
    assert read_image(ws.scene_path(scene, "image")).shape == (16, 20, 3)


def test_16bit_imagery_is_stretched_or_refused_when_single_band(ws, tmp_path):
    arr = (np.random.default_rng(1).integers(0, 4096, (3, 16, 20))).astype(np.uint16)
    p = _geotiff(tmp_path / "u16.tif", arr, "uint16")
    scene = import_scene(ws, p, scheme="hz7")
    img = read_image(ws.scene_path(scene, "image"))
    assert img.dtype == np.uint8 and img.shape == (16, 20, 3) and img.max() == 255 and img.min() == 0
    p16 = tmp_path / "u16_gray.png"
    Image.fromarray(arr[0]).save(p16)  # 16-bit greyscale PNG (mode I;16)
    _raises_naming(BadInputError, p16, "1 band", call=lambda: import_scene(ws, p16, scheme="hz7"))


def test_zero_pixel_image_is_refused(ws, tmp_path):
    empty = _put(tmp_path / "empty.png", b"")
    _raises_naming(BadInputError, empty, call=lambda: import_scene(ws, empty, scheme="hz7"))
    _raises_naming(BadInputError, empty, "empty (0 bytes)", call=lambda: read_image(empty))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    zero = _put(tmp_path / "zero_by_zero.png", b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 0, 0, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    _raises_naming(BadInputError, zero, call=lambda: import_scene(ws, zero, scheme="hz7"))
    _raises_naming(BadInputError, zero, call=lambda: read_image(zero))
    _no_scene_left(ws)


# ------------------------------------------------------------------------------------------- labels


def test_label_with_unknown_palette_colour(ws, tmp_path):
    img = _put(tmp_path / "img" / "t1.png", _encode(_rgb(), "PNG"))
    rgb = HZ7.colorize(np.zeros((16, 20), np.uint8))
    rgb[3, 7] = (1, 2, 3)
    lbl = _put(tmp_path / "lbl" / "t1.png", _encode(rgb, "PNG"))
    for call in (lambda: import_scene(ws, img, lbl, scheme="hz7"),
                 lambda: import_folder(ws, img.parent, lbl.parent, scheme="hz7"),
                 lambda: load_folder(img.parent, lbl.parent, "hz7")):
        msg = _raises_naming(BadInputError, lbl, "not in scheme 'hz7'", "row 3, col 7", "(1, 2, 3)", call=call)
        assert str(lbl.parent) in msg  # the full path, not just the stem
    _no_scene_left(ws)


def test_label_image_size_mismatch(ws, tmp_path):
    img = _put(tmp_path / "img" / "t1.png", _encode(_rgb(16, 20), "PNG"))
    lbl = _label_png(tmp_path / "lbl" / "t1.png", np.zeros((16, 21), np.uint8))
    for call in (lambda: import_scene(ws, img, lbl, scheme="hz7"), lambda: load_folder(img.parent, lbl.parent, "hz7")):
        _raises_naming(BadInputError, lbl, "21x16", "20x16", call=call)
    _no_scene_left(ws)


def test_empty_folders(ws, tmp_path):
    di, dl = tmp_path / "images", tmp_path / "labels"
    di.mkdir()
    dl.mkdir()
    for call in (lambda: import_folder(ws, di, dl, scheme="hz7"), lambda: load_folder(di, dl, "hz7")):
        _raises_naming(BadInputError, di, "no images", call=call)
    _put(di / "a.png", _encode(_rgb(), "PNG"))
    _raises_naming(BadInputError, dl, "no label files", call=lambda: import_folder(ws, di, dl, scheme="hz7"))
    _no_scene_left(ws)


def test_cli_import_reports_bad_input_and_exits_2(ws, tmp_path, capsys):
    from seghz.cli import main

    p = _put(tmp_path / "cut.png", _encode(_rgb(64, 64), "PNG")[:200])
    assert main(["--workspace", str(ws.root), "import", "--image", str(p), "--scheme", "hz7"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "cut.png" in err and "Traceback" not in err
    _no_scene_left(ws)


# ------------------------------------------------------------------------------------------- regions


def test_region_over_the_cap_and_outside_every_scene(ws, tmp_path):
    from seghz.geo.tiles import geojson_to_pixel_window
    from seghz.infer.region import MAX_REGION_PIXELS, check_window

    img = _geotiff(tmp_path / "geo.tif", _rgb(64, 64).transpose(2, 0, 1))
    scene = import_scene(ws, img, scheme="hz7", name="Geo")
    big = dataclasses.replace(scene, width=20_000, height=20_000)
    msg = str(pytest.raises(RegionError, check_window, big, (0, 0, 10_000, 10_000)).value)
    assert "over the cap" in msg and f"{MAX_REGION_PIXELS / 1e6:.1f} Mpx" in msg
    msg = str(pytest.raises(RegionError, check_window, scene, (500, 500, 10, 10)).value)
    assert "outside scene 'Geo'" in msg
    info = raster_info(ws.scene_path(scene, "image"))
    far = {"type": "Polygon", "coordinates": [[[0.0, 0.0], [0.01, 0.0], [0.01, 0.01], [0.0, 0.01], [0.0, 0.0]]]}
    msg = str(pytest.raises(RegionError, geojson_to_pixel_window, far, info).value)
    assert "lies outside scene image.tif" in msg
    assert check_window(scene, (-5, -5, 10, 10)) == (0, 0, 5, 5)  # partly inside: clipped, not refused


# ------------------------------------------------------------------------------------------- checkpoints


def _checkpoint(path: Path, scheme: str) -> Path:
    from torch import nn

    from seghz.models.checkpoint import save_checkpoint, scheme_meta

    sch = get_scheme(scheme)
    return save_checkpoint(path, nn.Linear(2, 2), {"arch": "Segformer", "encoder": "tu-efficientnet_lite0",
                                                   "scheme": scheme_meta(sch), "num_classes": sch.num_classes})


def test_checkpoint_of_another_scheme(tmp_path, capsys):
    from seghz.cli import main
    from seghz.evaluate import label_for_checkpoint

    ck = _checkpoint(tmp_path / "dubai_model.safetensors", "dubai")
    rc = main(["train", "--images", str(tmp_path), "--labels", str(tmp_path), "--scheme", "hz7",
               "--out", str(tmp_path / "out.safetensors"), "--parent", str(ck)])
    err = capsys.readouterr().err
    assert rc == 2 and "dubai_model.safetensors" in err and "'dubai'" in err and "'hz7'" in err, err
    assert not (tmp_path / "out.safetensors").exists()
    with pytest.raises(SchemeMismatchError, match="hz7.*dubai|dubai.*hz7"):
        label_for_checkpoint(np.zeros((4, 4), np.uint8), "hz7", "dubai")


class _Evil:
    """Unpickling this writes ``marker``: a stand-in for any code a crafted checkpoint could run."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def _entry_points(tmp_path: Path):
    """(name, call(path)) for every way SegHZ loads a checkpoint or training state from a file."""
    from seghz.cli import main
    from seghz.infer.engine import Predictor
    from seghz.models.checkpoint import load_checkpoint, read_metadata
    from seghz.train.state import load_train_state, read_state_info

    def cli(*args):
        def run(p):
            rc = main([*args] if p is None else [*args, "--checkpoint", str(p)])
            assert rc == 2, f"CLI returned {rc}"
            raise CheckpointError("(CLI exit 2)")  # the file name is checked in what the CLI printed
        return run

    def shipped(p):
        ws = Workspace(tmp_path / "ws_shipped")
        assert register_shipped_checkpoints(ws, p.parent) is False  # skipped with a warning, nothing registered
        assert ws.list_checkpoints() == []
        raise CheckpointError(f"{p}: skipped")

    out = tmp_path / "pred.png"
    img = _put(tmp_path / "in.png", _encode(_rgb(), "PNG"))
    return [
        ("read_metadata", read_metadata),
        ("load_checkpoint", load_checkpoint),
        ("Predictor.from_checkpoint", lambda p: Predictor.from_checkpoint(p, "cpu")),
        ("read_state_info", read_state_info),
        ("load_train_state", load_train_state),
        ("cli info", cli("info")),
        ("cli predict", cli("predict", "--input", str(img), "--output", str(out))),
        ("cli train --parent", lambda p: cli("train", "--images", str(tmp_path), "--labels", str(tmp_path), "--scheme",
                                             "hz7", "--out", str(tmp_path / "o.safetensors"), "--parent", str(p))(None)),
        ("register_shipped_checkpoints", shipped),
    ]


@pytest.mark.parametrize("name,kind", [("evil.pt", "pickle"), ("evil.pth", "torch"), ("evil.ckpt", "pickle"),
                                       ("evil.safetensors", "torch"), ("evil.safetensors", "pickle")])
def test_crafted_pickle_never_runs_through_any_entry_point(tmp_path, capsys, name, kind):
    import torch

    from seghz.train.state import TrainStateError

    marker = tmp_path / "pwned_marker"
    p = tmp_path / "ck" / name
    p.parent.mkdir()
    if kind == "torch":
        torch.save({"state_dict": _Evil(marker)}, p)
    else:
        p.write_bytes(pickle.dumps({"state_dict": _Evil(marker)}))
    for label, call in _entry_points(tmp_path):
        with pytest.raises((CheckpointError, TrainStateError)) as ei:
            call(p)
        msg = str(ei.value) + capsys.readouterr().err
        assert name in msg, (label, msg)
        assert "not a safetensors file" in msg or "skipped" in msg or "CLI exit 2" in msg, (label, msg)
        assert not marker.exists(), f"{label} ran code from a pickle"


# ------------------------------------------------------------------------------------------- names


def test_file_names_with_dot_dot_stay_inside_the_workspace(ws, tmp_path):
    img = _put(tmp_path / "img.png", _encode(_rgb(), "PNG"))
    scene = import_scene(ws, img, scheme="hz7", name="../../../etc/passwd")
    assert scene.id == "etc-passwd" and scene.name == "../../../etc/passwd"
    assert ws.scene_path(scene, "image").resolve().is_relative_to(ws.root / "scenes")
    outside = _put(ws.root.parent / "outside.png", _encode(_rgb(), "PNG"))
    _raises_naming(BadInputError, "../outside.png", "inside the workspace",
                   call=lambda: ws.add_scene("x", "../outside.png", "hz7"))
    _raises_naming(BadInputError, outside, "inside the workspace", call=lambda: ws.add_scene("x", outside, "hz7"))
    with pytest.raises(ValueError, match="not a safe slug"):
        ws.add_scene("x", ws.scene_path(scene, "image"), "hz7", scene_id="../evil")
    assert [s.id for s in ws.list_scenes()] == ["etc-passwd"]


def test_unicode_names(ws, tmp_path):
    di, dl = tmp_path / "影像 ✓", tmp_path / "标签"
    _put(di / "西湖 2019.png", _encode(_rgb(), "PNG"))
    _label_png(dl / "西湖 2019.png", np.ones((16, 20), np.uint8))
    _put(di / "Zürich.png", _encode(_rgb(seed=2), "PNG"))
    _label_png(dl / "Zürich.png", np.zeros((16, 20), np.uint8))
    scenes = import_folder(ws, di, dl, scheme="hz7")
    ids = sorted(s.id for s in scenes)
    assert ids == ["2019", "zurich"], ids  # NFKD-folded to ASCII; characters with no ASCII form are dropped
    assert {s.name for s in scenes} == {"西湖 2019", "Zürich"}
    for s in scenes:
        assert ws.effective_label(s.id).shape == (16, 20)
    only_cjk = import_scene(ws, di / "西湖 2019.png", scheme="hz7", name="西湖")
    assert only_cjk.id.startswith("scene-") and only_cjk.name == "西湖"  # nothing ASCII left: a hash keeps it distinct
    bad = _put(tmp_path / "坏 ✗.png", _encode(_rgb(), "PNG")[:100])
    _raises_naming(BadInputError, bad, call=lambda: import_scene(ws, bad, scheme="hz7"))


# ------------------------------------------------------------------------------------------- fuzzing

# derandomize: CI runs the same examples every time (a failure is reproducible, never a flake)
_FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.too_slow])


def _seeds() -> dict[str, bytes]:
    rgb = _rgb(8, 8)
    with tempfile.TemporaryDirectory() as d:
        tif = _geotiff(Path(d) / "s.tif", rgb.transpose(2, 0, 1)).read_bytes()
    return {".png": _encode(rgb, "PNG"), ".jpg": _encode(rgb, "JPEG"), ".tif": tif,
            ".bmp": _encode(rgb, "BMP")}


SEEDS = _seeds()


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory) -> Path:
    """A folder for fuzz files, with the reader's pixel cap lowered for the module: a mutated header may claim a
    huge size, and under the real cap (30000 x 30000) Pillow would allocate gigabytes before finding the data cut."""
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = 4096 * 4096
    yield tmp_path_factory.mktemp("fuzz")
    Image.MAX_IMAGE_PIXELS = old


@st.composite
def _mutated(draw):
    ext = draw(st.sampled_from(sorted(SEEDS)))
    data = bytearray(SEEDS[ext])
    how = draw(st.sampled_from(["flip", "truncate", "random"]))
    if how == "flip":
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    elif how == "truncate":
        data = data[: draw(st.integers(0, len(data) - 1))]
    else:
        data = bytearray(draw(st.binary(max_size=512)))
    return ext, bytes(data)


@_FUZZ
@given(case=_mutated())
def test_fuzz_raster_reader_only_raises_bad_input(fuzz_dir, case):
    ext, data = case
    p = _put(fuzz_dir / f"fuzz{ext}", data)
    for read in (read_image, lambda q: read_label(q, HZ7), raster_info):
        try:
            out = read(p)
        except BadInputError as e:
            assert "fuzz" + ext in str(e)
            continue
        if isinstance(out, np.ndarray):
            assert out.dtype == np.uint8 and out.size > 0


_SCHEMES = sorted(scheme_names())


@_FUZZ
@given(st.sampled_from(_SCHEMES), st.data())
def test_fuzz_palette_decoder_round_trips_and_only_raises_bad_input(name, data):
    sch = get_scheme(name)
    h, w = data.draw(st.integers(1, 12)), data.draw(st.integers(1, 12))
    choices = list(range(sch.num_classes)) + ([255] if sch.unlabelled_ids or sch.unlabelled_colors else [])
    index = np.array(data.draw(st.lists(st.sampled_from(choices), min_size=h * w, max_size=h * w)), np.uint8).reshape(h, w)
    np.testing.assert_array_equal(sch.decode_rgb(sch.colorize(index), source="rt.png"), index)
    # arbitrary arrays: decoded or refused with BadInputError, nothing else
    dtype = data.draw(st.sampled_from([np.uint8, np.int16, np.int32, np.float32]))
    shape = data.draw(st.sampled_from([(h, w), (h, w, 1), (h, w, 3), (h, w, 4), (0, w, 3), (h, w, 2)]))
    vals = data.draw(st.lists(st.integers(-300, 600), min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
    arr = np.array(vals).reshape(shape).astype(dtype)
    try:
        out = sch.decode_rgb(arr, source="fuzz.png")
        assert out.shape == shape[:2] and out.dtype == np.uint8
    except BadInputError as e:
        assert "fuzz.png" in str(e)
    try:
        out = sch.ids_to_index(arr[..., 0] if arr.ndim == 3 else arr, source="ids.png")
        assert out.dtype == np.uint8
    except BadInputError as e:
        assert "ids.png" in str(e)

