"""Speed-ups found by the scale review, held to the behaviour they replaced.

* ``Scheme.decode_rgb`` looks colours up by binary search instead of sorting every pixel: same masks, same errors;
* ``write_rgb`` writes PNGs at a fast zlib level: still lossless;
* ``propose_val`` caches each scene's class distribution per label version: same proposals, never a stale one;
* ``import seghz.scene_splits`` no longer imports torch (light CLI commands);
* a folder import names a scene after its telling folder when its file stem names another picture too.
"""
from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from seghz import scene_splits
from seghz.classes import IGNORE, Scheme, get_scheme
from seghz.data.folders import scene_names
from seghz.data.io import write_index_mask, write_rgb
from seghz.data.splits import class_distribution
from seghz.errors import BadInputError, SchemeMismatchError
from seghz.evaluate import label_for_checkpoint
from seghz.store import Workspace

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------ decode_rgb


def _old_decode_rgb(self: Scheme, rgb: np.ndarray, source: str = "<array>") -> np.ndarray:
    """decode_rgb as it was before the speed-up (np.unique over every pixel): the reference."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise BadInputError(source, f"an RGB palette mask needs 3 channels, got shape {rgb.shape}")
    if rgb.dtype != np.uint8 and rgb.size and (rgb[..., :3].min() < 0 or rgb[..., :3].max() > 255):
        raise BadInputError(source, f"palette mask values must be 0..255 per channel, found {rgb.min()}..{rgb.max()}")
    rgb = rgb[..., :3].astype(np.uint32)
    code = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    keys, inv = np.unique(code.ravel(), return_inverse=True)
    table = {}
    for i, c in enumerate(self.colors):
        table[(c[0] << 16) | (c[1] << 8) | c[2]] = i
    unl = [(c[0] << 16) | (c[1] << 8) | c[2] for c in self.unlabelled_colors]
    if self.unlabelled_ids and not self.unlabelled_colors:
        unl.append(0)
    mapped = np.empty(len(keys), np.int32)
    for k, key in enumerate(keys.tolist()):
        if key in table:
            mapped[k] = table[key]
        elif key in unl:
            mapped[k] = IGNORE
        else:
            mapped[k] = -1
    out = mapped[inv].reshape(code.shape)
    bad = out < 0
    if bad.any():
        ys, xs = np.nonzero(bad)
        y, x = int(ys[0]), int(xs[0])
        col = tuple(int(v) for v in rgb[y, x])
        raise BadInputError(source, f"{int(bad.sum())} pixel(s) have colours that are not in scheme '{self.name}'; "
                                    f"first at row {y}, col {x} with RGB {col}")
    return out.astype(np.uint8)


def _outcome(fn, *args, **kw):
    try:
        out = fn(*args, **kw)
    except BadInputError as e:
        return ("error", e.source, str(e))
    return ("ok", out.dtype, out.shape, out.tobytes())


COLOUR = st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255))
# few distinct values per channel, so palettes share colours with each other, with black and with "unknown" ones
NEAR = st.tuples(*[st.sampled_from([0, 1, 2, 254, 255])] * 3)


@st.composite
def palette_and_mask(draw):
    n = draw(st.integers(1, 8))
    colours = tuple(draw(st.one_of(COLOUR, NEAR)) for _ in range(n))  # duplicates allowed: the later class wins
    unl_colours = tuple(draw(st.lists(st.one_of(COLOUR, NEAR), max_size=2)))
    unl_ids = tuple(draw(st.sampled_from([(), (0,), (255,)])))
    scheme = Scheme("rand", "rand", tuple(f"c{i}" for i in range(n)), tuple(range(1, n + 1)), colours, unl_ids,
                    unl_colours)
    h, w = draw(st.integers(0, 9)), draw(st.integers(1, 9))
    choices = list(colours) + list(unl_colours) + [(0, 0, 0)]
    known = draw(st.lists(st.sampled_from(choices), min_size=h * w, max_size=h * w))
    rgb = np.array(known, np.uint8).reshape(h, w, 3)
    for _ in range(draw(st.integers(0, 3))):  # a few pixels of any colour: often unknown to the scheme
        if h:
            rgb[draw(st.integers(0, h - 1)), draw(st.integers(0, w - 1))] = draw(st.one_of(COLOUR, NEAR))
    bands = draw(st.sampled_from([3, 4]))
    if bands == 4:
        rgb = np.concatenate([rgb, np.full((h, w, 1), 7, np.uint8)], axis=2)
    dtype = draw(st.sampled_from([np.uint8, np.uint8, np.int16, np.float32]))
    return scheme, rgb.astype(dtype)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(palette_and_mask())
def test_decode_rgb_equals_the_old_implementation_on_random_palettes(case):
    scheme, rgb = case
    assert _outcome(scheme.decode_rgb, rgb, source="m.png") == _outcome(_old_decode_rgb, scheme, rgb, source="m.png")


@pytest.mark.parametrize("name", ["hz7", "hz20", "dubai", "loveda", "gid15"])
def test_decode_rgb_equals_the_old_implementation_on_the_shipped_schemes(name):
    s = get_scheme(name)
    rng = np.random.default_rng(3)
    idx = rng.integers(0, s.num_classes, (40, 50)).astype(np.uint8)
    rgb = s.colorize(idx)
    rgb[rng.random((40, 50)) < 0.05] = 0  # black: unlabelled in some schemes, unknown in others
    assert _outcome(s.decode_rgb, rgb) == _outcome(_old_decode_rgb, s, rgb)
    rgb[7, 9] = rgb[30, 2] = (3, 1, 4)  # unknown: the same error, count and first position
    new, old = _outcome(s.decode_rgb, rgb, source="x.png"), _outcome(_old_decode_rgb, s, rgb, source="x.png")
    assert new == old and new[0] == "error" and "(3, 1, 4)" in new[2]


def test_decode_rgb_does_not_sort_the_pixels(monkeypatch):
    """The lookup is per colour of the scheme, not a sort of millions of pixels (np.unique was 4.8 s of a
    9-scene Dubai import)."""
    s = get_scheme("dubai")
    rgb = s.colorize(np.random.default_rng(0).integers(0, s.num_classes, (64, 64)).astype(np.uint8))
    expect = _old_decode_rgb(s, rgb)

    def no_unique(*a, **k):
        raise AssertionError("np.unique over the pixels")

    monkeypatch.setattr(np, "unique", no_unique)
    np.testing.assert_array_equal(s.decode_rgb(rgb), expect)


# ------------------------------------------------------------------------------------------------ write_rgb


def _zlib_levels(png: bytes) -> set[int]:
    """FLEVEL (0 fastest .. 3 best) of the zlib stream in a PNG's IDAT chunks."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    while pos < len(png):
        n, kind = struct.unpack(">I4s", png[pos:pos + 8])
        if kind == b"IDAT":
            idat += png[pos + 8:pos + 8 + n]
        pos += 12 + n
    zlib.decompress(idat)  # a whole, valid stream
    return {idat[1] >> 6}


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(0, 2**32 - 1), st.sampled_from(["noise", "flat", "ramp"]))
def test_write_rgb_png_round_trips_losslessly_at_a_fast_level(tmp_path_factory, h, w, seed, kind):
    rng = np.random.default_rng(seed)
    if kind == "noise":
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    elif kind == "flat":
        rgb = np.full((h, w, 3), rng.integers(0, 256, 3), np.uint8)
    else:
        rgb = (np.arange(h * w * 3) % 256).astype(np.uint8).reshape(h, w, 3)
    p = tmp_path_factory.mktemp("png") / "x.png"
    write_rgb(p, rgb)
    with Image.open(p) as im:
        assert im.format == "PNG" and im.mode == "RGB"
        back = np.asarray(im)
    np.testing.assert_array_equal(back, rgb)
    assert _zlib_levels(p.read_bytes()) == {0}  # zlib's "fastest" class (the old default level 6 reads 2)


def test_write_rgb_still_writes_jpeg_by_suffix(tmp_path):
    rgb = np.full((16, 16, 3), 120, np.uint8)
    write_rgb(tmp_path / "x.jpg", rgb)
    with Image.open(tmp_path / "x.jpg") as im:
        assert im.format == "JPEG"
        assert np.abs(np.asarray(im).astype(int) - 120).max() <= 2


def test_write_rgb_round_trips_a_real_dubai_tile(tmp_path):
    src = ROOT.parent / "shared" / "data" / "dubai" / "Tile 8" / "images" / "image_part_008.jpg"
    if not src.is_file():
        pytest.skip(f"real data not here: {src}")
    with Image.open(src) as im:
        rgb = np.asarray(im.convert("RGB"))
    write_rgb(tmp_path / "t.png", rgb)
    with Image.open(tmp_path / "t.png") as im:
        np.testing.assert_array_equal(np.asarray(im), rgb)


# ------------------------------------------------------------------------------------------------ propose_val

S = 12


def _add(w: Workspace, sid: str, split: str, scheme: str, mask: np.ndarray | None) -> None:
    folder = w.root / "scenes" / sid
    img = folder / "image.png"
    write_rgb(img, np.random.default_rng(len(sid)).integers(0, 255, (S, S, 3), dtype=np.uint8))
    lbl = None
    if mask is not None:
        lbl = folder / "label.png"
        write_index_mask(lbl, mask)
    w.add_scene(sid, img, scheme, label_path=lbl, split=split, scene_id=sid)


def _random_mask(rng: np.random.Generator, nc: int) -> np.ndarray:
    classes = rng.choice(nc, size=int(rng.integers(1, 5)), replace=False)
    mask = classes[rng.integers(0, len(classes), (S, S))].astype(np.uint8)
    mask[rng.random((S, S)) < 0.1] = IGNORE
    return mask


@pytest.fixture
def mixed(tmp_path) -> Workspace:
    """16 gid15 scenes of random classes (train/val/test), one hz7 scene (maps to hz7, not to gid15), one without
    a label, one whose every pixel is ignore."""
    rng = np.random.default_rng(11)
    w = Workspace(tmp_path / "ws")
    for i in range(16):
        _add(w, f"g{i:02d}", ("train", "train", "val", "test")[i % 4], "gid15", _random_mask(rng, 15))
    _add(w, "h7", "train", "hz7", _random_mask(rng, 7))
    _add(w, "nolabel", "train", "gid15", None)
    _add(w, "blank", "val", "gid15", np.full((S, S), IGNORE, np.uint8))
    return w


def _reference(ws: Workspace, k: int, scheme: str, pool: Sequence[str] = ("train", "val"),
               prefer_unlearned: bool = True) -> scene_splits.ValProposal:
    """The proposal recomputed the straightforward way: every label read, one get_scene per question."""
    from seghz.classes import get_scheme as gs

    nc = gs(scheme).num_classes
    ids, dists, skipped = [], [], {}
    versions = ws.latest_label_versions()
    for s in ws.list_scenes():
        if s.split not in pool:
            continue
        if not s.label_path and versions.get(s.id, 0) == 0:
            skipped[s.id] = "no label and no correction"
            continue
        try:
            lbl = label_for_checkpoint(ws.effective_label(s.id), s.scheme, scheme)
        except (SchemeMismatchError, KeyError) as e:
            skipped[s.id] = f"its scheme {s.scheme} does not map to {scheme} ({e})"
            continue
        d = class_distribution(lbl, nc)
        if d.sum() == 0:
            skipped[s.id] = "every pixel is ignore (255)"
            continue
        ids.append(s.id)
        dists.append(d)
    if len(ids) < k + 1:
        raise ValueError("too few scenes")
    split_of = {s.id: ws.get_scene(s.id).split for s in ws.list_scenes()}  # one get_scene per question
    return scene_splits._proposal(ws, scheme, k, ids, dists, skipped, split_of, prefer_unlearned)


def _no_label_reads(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("a label was read although its class distribution is cached")

    monkeypatch.setattr(Workspace, "_compose", boom)
    monkeypatch.setattr(Workspace, "effective_label", boom)


@pytest.mark.parametrize("scheme", ["gid15", "hz7"])
def test_the_proposal_equals_the_straightforward_recomputation_cold_and_cached(mixed, scheme, monkeypatch):
    for k in (1, 3, 5):
        assert scene_splits.propose_val(mixed, k, scheme) == _reference(mixed, k, scheme)
    p = scene_splits.propose_val(mixed, 4, scheme)
    if scheme == "gid15":
        assert "h7" in p.skipped and "does not map to gid15" in p.skipped["h7"]
    assert p.skipped["nolabel"] == "no label and no correction" and "blank" in p.skipped
    plain = _reference(mixed, 4, scheme, prefer_unlearned=False)
    with monkeypatch.context() as m:  # cached: no label is read again, the same proposal comes out
        _no_label_reads(m)
        assert scene_splits.propose_val(mixed, 4, scheme) == p
        assert scene_splits.propose_val(mixed, 4, scheme, prefer_unlearned=False) == plain


def test_a_saved_label_is_never_served_from_an_old_histogram(mixed, monkeypatch):
    before = scene_splits.propose_val(mixed, 2, "gid15")
    # give a train scene that was not chosen every class in equal parts: it must become the first pick
    sid = next(s for s in ("g00", "g01", "g04", "g05") if s not in before.chosen)
    even = (np.arange(S * S) % 15).astype(np.uint8).reshape(S, S)
    mixed.save_label_version(sid, even, 0, "Ann", "brush")
    reads = []
    real = Workspace._compose
    monkeypatch.setattr(Workspace, "_compose", lambda self, conn, scene, *a, **k: (
        reads.append(scene.id), real(self, conn, scene, *a, **k))[1])
    after = scene_splits.propose_val(mixed, 2, "gid15")
    assert reads == [sid]  # only the changed scene is read again
    assert after == _reference(mixed, 2, "gid15") and after.chosen[0] == sid
    # undo: version 2, the old label again -- a new key, so recomputed, not the version-1 histogram
    mixed.undo_label_edit(sid, "Ann")
    assert scene_splits.propose_val(mixed, 2, "gid15") == _reference(mixed, 2, "gid15") == before


def test_a_scene_imported_again_under_its_id_is_not_served_the_old_histogram(mixed):
    scene_splits.propose_val(mixed, 2, "gid15")
    old = mixed.effective_label("g00")
    mixed.delete_scene("g00")
    new = np.full((S, S), 14, np.uint8)
    new[: S // 2] = 13
    assert not np.array_equal(old, new)
    _add(mixed, "g00", "train", "gid15", new)
    p = scene_splits.propose_val(mixed, 2, "gid15")
    assert p == _reference(mixed, 2, "gid15")


def test_a_damaged_cache_file_is_ignored_and_replaced(mixed):
    expect = _reference(mixed, 3, "gid15")
    cache = mixed.root / scene_splits.DISTRIBUTION_CACHE
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text("{not json")
    assert scene_splits.propose_val(mixed, 3, "gid15") == expect
    data = json.loads(cache.read_text())
    assert data["format"] == 1 and len(data["entries"]) == 14  # the 12 gid15 scenes of train/val, h7, blank
    for bad in ("garbage", [0.5, 0.5], None):  # entries under the right key but with unusable values: read again
        cache.write_text(json.dumps({"format": 1, "entries": {k: {"key": v["key"], "dist": bad}
                                                              for k, v in data["entries"].items()}}))
        assert scene_splits.propose_val(mixed, 3, "gid15") == expect


def test_planned_moves_still_name_an_unknown_scene(mixed):
    from seghz.store import NotFoundError

    assert scene_splits.planned_moves(mixed, {"g00": "val", "g02": "val"}) == {"g00": ("train", "val")}
    with pytest.raises(NotFoundError, match="nope"):
        scene_splits.planned_moves(mixed, {"g00": "val", "nope": "val"})


# ------------------------------------------------------------------------------------------------ imports


def test_importing_scene_splits_does_not_import_torch():
    code = "import sys, seghz.scene_splits, seghz.evaluate; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_tta_key_still_works_with_the_engine_imported_late():
    from seghz.evaluate import tta_key, tta_views_of

    assert tta_key(["identity"]) == "none" and tta_key("flip_lr") == "lr" and tta_views_of("lr,ud") == ["lr", "ud"]
    with pytest.raises(ValueError, match="unknown TTA spec"):
        tta_key("sideways")


# ------------------------------------------------------------------------------------------------ scene names


def test_repeated_stems_get_the_folder_that_tells_them_apart(tmp_path):
    tiles = [tmp_path / "dubai" / f"Tile {n}" / "images" for n in (1, 2, 3)]
    files = [t / f"image_part_00{i}.jpg" for t in tiles for i in (1, 2)]
    # one import holding the same stems in several folders
    names = scene_names(files)
    assert names == [f"Tile {n}/image_part_00{i}" for n in (1, 2, 3) for i in (1, 2)]
    assert len(set(names)) == len(names)
    # imports one tile at a time: the first keeps its stems, later ones say their tile
    assert scene_names(files[:2]) == ["image_part_001", "image_part_002"]
    taken = {"image_part_001": [str(files[0])], "image_part_002": [str(files[1])]}
    assert scene_names(files[2:4], taken) == ["Tile 2/image_part_001", "Tile 2/image_part_002"]
    taken["image_part_001"].append(str(files[2]))
    assert scene_names(files[4:5], taken) == ["Tile 3/image_part_001"]


def test_names_without_repeats_and_the_same_folder_again_keep_the_stem(tmp_path):
    files = [tmp_path / "gid" / "images" / f"{s}.png" for s in ("lake_1", "river_2")]
    assert scene_names(files) == ["lake_1", "river_2"]
    assert scene_names(files, {"lake_1": [str(files[0])], "pond_3": ["/elsewhere/pond_3.png"]}) == ["lake_1", "river_2"]
    # a scene of that name from an upload (no folder known): the file's own folder tells it apart
    assert scene_names(files[:1], {"lake_1": ["an upload"]}) == ["images/lake_1"]


def test_folder_imports_of_repeated_stems_name_each_scene_by_its_tile(tmp_path):
    """import_folder names a stem seen in another tile after the tile (Dubai: eight 'image_part_001' became
    indistinguishable in every scene picker), keeps plain stems for the first tile, and gives each its own split."""
    from seghz.data.scenes import import_folder

    ws = Workspace(tmp_path / "ws")
    rng = np.random.default_rng(0)
    for t in (1, 2):
        for i in range(1, 6):
            img = tmp_path / "dubai" / f"Tile {t}" / "images" / f"image_part_00{i}.png"
            write_rgb(img, rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
            write_index_mask(tmp_path / "dubai" / f"Tile {t}" / "masks" / f"image_part_00{i}.png",
                             rng.integers(0, 7, (16, 16)).astype(np.uint8))
    for t in (1, 2):
        import_folder(ws, tmp_path / "dubai" / f"Tile {t}" / "images", tmp_path / "dubai" / f"Tile {t}" / "masks",
                      scheme="hz7", val_count=1)
    names = sorted(s.name for s in ws.list_scenes())
    assert names == sorted([f"image_part_00{i}" for i in range(1, 6)] + [f"Tile 2/image_part_00{i}" for i in range(1, 6)])
    assert len({s.id for s in ws.list_scenes()}) == 10
    # the same tile imported again is known (by content), not renamed into more scenes
    import_folder(ws, tmp_path / "dubai" / "Tile 2" / "images", tmp_path / "dubai" / "Tile 2" / "masks",
                  scheme="hz7", val_count=1)
    assert len(ws.list_scenes()) == 10
