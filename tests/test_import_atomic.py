"""Folder imports are all or nothing, and importing a folder again adds only what is new.

``import_folder`` checks every pair (image header/bands/size, the label decoded in its scheme, the sizes agree)
before writing anything, and removes the scenes it made when a later step fails; pairs whose image is already a
scene of the workspace (same source file, same scheme) are skipped and listed in the result's ``skipped``.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seghz.data.scenes import FolderImport, import_folder, import_scene
from seghz.errors import BadInputError
from seghz.store import Workspace

STEMS = ("dry_cropland_13", "garden_7", "lake_26", "river_4")


def _png(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    path.write_bytes(buf.getvalue())
    return path


def _folder(root: Path, h=20, w=21) -> tuple[Path, Path]:
    """images/ + labels/ of four pairs; labels are gid15 id masks (0..14, 15 = unlabelled)."""
    rng = np.random.default_rng(0)
    for k, stem in enumerate(STEMS):
        _png(root / "images" / f"{stem}.png", rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        lbl = rng.integers(0, 15, (h, w)).astype(np.uint8)
        lbl[0, 0] = 15
        _png(root / "labels" / f"{stem}.png", lbl)
    return root / "images", root / "labels"


def _state(ws: Workspace):
    """What a folder import could change: the scene rows and the files under scenes/."""
    files = sorted(str(p.relative_to(ws.root)) for p in (ws.root / "scenes").rglob("*"))
    return [(s.id, s.name, s.split, s.source) for s in ws.list_scenes()], files


@pytest.fixture
def ws(tmp_path) -> Workspace:
    w = Workspace(tmp_path / "ws")
    # a scene that was there before: it must survive a failed import untouched
    import_scene(w, _png(tmp_path / "other" / "before.png", np.zeros((8, 9, 3), np.uint8)), scheme="hz7")
    return w


def test_bad_third_pair_leaves_the_workspace_unchanged(ws, tmp_path):
    di, dl = _folder(tmp_path / "data")
    bad = _png(dl / "lake_26.png", np.zeros((20, 22), np.uint8))  # 22x20 label for a 21x20 image (3rd pair)
    before = _state(ws)
    seen = []
    with pytest.raises(BadInputError) as ei:
        import_folder(ws, di, dl, scheme="gid15", target_scheme="hz7", progress=lambda f, m: seen.append(m))
    msg = str(ei.value)
    assert ei.value.source == str(bad) and str(bad) in msg
    assert "label size 22x20 differs from image lake_26.png size 21x20" in msg
    assert "pair 3 of 4" in msg and "nothing was imported" in msg
    assert _state(ws) == before
    assert seen == ["checked dry_cropland_13.png", "checked garden_7.png"]  # it stopped while checking
    # fixed: the whole folder comes in once, with no "-2" duplicates
    _png(bad, np.zeros((20, 21), np.uint8))
    scenes = import_folder(ws, di, dl, scheme="gid15", target_scheme="hz7")
    assert sorted(s.id for s in scenes) == sorted(STEMS)
    assert scenes.skipped == []


@pytest.mark.parametrize("what", ["label_value", "image_bands", "missing_label"])
def test_other_bad_third_pairs_are_found_before_writing(ws, tmp_path, what):
    di, dl = _folder(tmp_path / "data")
    if what == "label_value":  # 200 is no gid15 id
        bad = _png(dl / "lake_26.png", np.full((20, 21), 200, np.uint8))
        words = ["[200]", "gid15"]
    elif what == "image_bands":
        bad = _png(di / "lake_26.png", np.zeros((20, 21), np.uint8))
        words = ["1 band"]
    else:
        bad = dl
        (dl / "lake_26.png").unlink()
        words = ["lake_26"]
    before = _state(ws)
    with pytest.raises(BadInputError) as ei:
        import_folder(ws, di, dl, scheme="gid15", target_scheme="hz7")
    assert str(bad) in str(ei.value) and all(w in str(ei.value) for w in words), str(ei.value)
    assert _state(ws) == before


def test_failure_while_writing_rolls_back_the_scenes_made(ws, tmp_path):
    """A truncated PNG passes the header check and fails only when read in full: the pairs written before it are
    removed again."""
    di, dl = _folder(tmp_path / "data")
    data = (di / "lake_26.png").read_bytes()
    (di / "lake_26.png").write_bytes(data[: len(data) // 2])
    before = _state(ws)
    with pytest.raises(BadInputError) as ei:
        import_folder(ws, di, dl, scheme="gid15", target_scheme="hz7")
    assert str(di / "lake_26.png") in str(ei.value) and "nothing was imported" in str(ei.value)
    assert _state(ws) == before


def test_reimport_imports_nothing_new_and_says_so(ws, tmp_path, monkeypatch):
    di, dl = _folder(tmp_path / "data")
    first = import_folder(ws, di, dl, scheme="gid15", target_scheme="hz7")
    assert isinstance(first, FolderImport) and len(first) == 4 and first.skipped_count == 0
    assert {s.source for s in first} == {str((di / f"{s}.png").resolve()) for s in STEMS}  # absolute sources
    after_first = _state(ws)
    again = import_folder(ws, di, dl, scheme="gid15", target_scheme="hz7")
    assert list(again) == [] and again.skipped_count == 4
    assert sorted((p.name, sid) for p, sid in again.skipped) == sorted(
        (f"{s}.png", s) for s in STEMS)
    assert _state(ws) == after_first  # no dry_cropland_13-2
    # the same folder named by a relative path is the same source
    monkeypatch.chdir(tmp_path)
    rel = import_folder(ws, Path("data/images"), Path("data/labels"), scheme="gid15", target_scheme="hz7")
    assert list(rel) == [] and rel.skipped_count == 4
    # into another scheme it is a different dataset of the same images: imported
    other = import_folder(ws, di, dl, scheme="gid15")
    assert len(other) == 4 and other.skipped_count == 0
    assert {s.scheme for s in other} == {"gid15"}


def test_reimport_adds_only_new_pairs(ws, tmp_path):
    """``limit`` counts pairs still to import, so a folder can come in a few pairs at a time."""
    di, dl = _folder(tmp_path / "data")
    a = import_folder(ws, di, dl, scheme="gid15", target_scheme="hz7", limit=2)
    assert [s.name for s in a] == list(STEMS[:2]) and a.skipped_count == 0
    b = import_folder(ws, di, dl, scheme="gid15", target_scheme="hz7")
    assert sorted(s.name for s in b) == list(STEMS[2:]) and b.skipped_count == 2
    names = [s.name for s in ws.list_scenes() if s.scheme == "hz7" and s.name in STEMS]
    assert sorted(names) == sorted(STEMS)


def test_single_scene_import_is_counted_as_imported(ws, tmp_path):
    """A pair whose image came in by ``import --image`` (source = that path) is not imported again."""
    di, dl = _folder(tmp_path / "data")
    one = import_scene(ws, di / "garden_7.png", dl / "garden_7.png", scheme="gid15", target_scheme="hz7")
    res = import_folder(ws, di, dl, scheme="gid15", target_scheme="hz7")
    assert res.skipped == [(di / "garden_7.png", one.id)] and len(res) == 3


def test_cli_bad_third_pair_exits_2_and_imports_nothing(ws, tmp_path, capsys):
    from seghz.cli import main

    di, dl = _folder(tmp_path / "data")
    bad = _png(dl / "lake_26.png", np.zeros((20, 22), np.uint8))
    before = _state(ws)
    rc = main(["--workspace", str(ws.root), "import", "--images", str(di), "--labels", str(dl), "--scheme", "gid15",
               "--target-scheme", "hz7"])
    err = capsys.readouterr().err
    assert rc == 2 and str(bad) in err and "nothing was imported" in err
    assert _state(ws) == before
