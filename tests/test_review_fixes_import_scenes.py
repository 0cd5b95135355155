"""Imports recognise a pair by its image's content, not its path, and never skip a different label silently.

The analyst imported 21 GID tiles from a copy in another folder, then the whole folder: 20 scenes came in twice
(``lake_10`` in train, ``lake_10-2`` in val: one picture on both sides of a split). ``industrial_land_1`` had come in
before by ``import --image ... --label <a model prediction>`` and the folder import skipped it by its path, so its
real label was never imported, and the summary named one example ("e.g. arbor_woodland_1.png"). Single-pair
imports had no duplicate check at all.
"""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seghz.data.scenes import SOURCE_RECORD, DuplicateImportError, FolderImport, LabelConflictError, import_folder, import_scene
from seghz.store import Workspace

STEMS = ("industrial_land_1", "lake_10", "river_4", "garden_7", "pond_2", "shrub_3")


def _png(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    path.write_bytes(buf.getvalue())
    return path


def _folder(root: Path, stems=STEMS, h=12, w=13) -> tuple[Path, Path]:
    """images/ + labels/ (gid15 id masks) of distinct random tiles."""
    rng = np.random.default_rng(7)
    for stem in stems:
        _png(root / "images" / f"{stem}.png", rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        _png(root / "labels" / f"{stem}.png", rng.integers(0, 15, (h, w)).astype(np.uint8))
    return root / "images", root / "labels"


def _copy_some(di: Path, dl: Path, dst: Path, stems) -> tuple[Path, Path]:
    for sub, src in (("images", di), ("labels", dl)):
        (dst / sub).mkdir(parents=True, exist_ok=True)
        for s in stems:
            shutil.copyfile(src / f"{s}.png", dst / sub / f"{s}.png")
    return dst / "images", dst / "labels"


@pytest.fixture
def ws(tmp_path) -> Workspace:
    return Workspace(tmp_path / "ws")


def _by_name(ws) -> dict[str, list]:
    out: dict[str, list] = {}
    for s in ws.list_scenes():
        out.setdefault(s.name, []).append(s)
    return out


def test_a_copy_of_the_folder_elsewhere_is_recognised_by_content(ws, tmp_path):
    di, dl = _folder(tmp_path / "gid15")
    ci, cl = _copy_some(di, dl, tmp_path / "copy", STEMS[:4])
    first = import_folder(ws, ci, cl, scheme="gid15", val_count=1)
    assert len(first) == 4 and first.skipped_count == 0 and first.report_path is None
    for s in first:  # the content is recorded at import
        rec = json.loads((ws.scene_path(s, "image").parent / SOURCE_RECORD).read_text())
        assert rec["sha1"] and rec["label"].endswith(f"{s.name}.png") and rec["label_sha1"]
    full = import_folder(ws, di, dl, scheme="gid15", val_count=1)
    assert sorted(s.name for s in full) == sorted(STEMS[4:])  # only the two new tiles
    assert full.skipped_count == 4 and full.conflicts == []
    names = _by_name(ws)
    assert all(len(v) == 1 for v in names.values()), {k: [s.id for s in v] for k, v in names.items()}  # no lake_10-2
    assert "lake_10-2" not in {s.id for s in ws.list_scenes()}
    lines = full.summary_lines()
    assert "e.g." not in "\n".join(lines)
    for stem in STEMS[:4]:  # every skipped file is named, with the scene holding it
        assert any(line.strip().startswith(f"{stem}.png: already scene '{stem}'") and "same label" in line
                   for line in lines), lines
    listed = full.report_path.read_text()
    assert all(f"{s}.png" in listed for s in STEMS[:4])


def test_a_known_image_with_another_label_is_a_conflict_not_a_silent_skip(ws, tmp_path, caplog):
    di, dl = _folder(tmp_path / "gid15")
    pred = _png(tmp_path / "preds" / "industrial_land_1_pred.png", np.full((12, 13), 3, np.uint8))  # a model's output
    one = import_scene(ws, di / "industrial_land_1.png", pred, scheme="gid15", name="industrial_land_1")
    caplog.set_level("WARNING")
    res = import_folder(ws, di, dl, scheme="gid15", val_count=1)
    assert "industrial_land_1" not in [s.name for s in res]  # nothing imported for it ...
    assert res.skipped == [(di / "industrial_land_1.png", one.id)] and res.conflicts == [di / "industrial_land_1.png"]
    why = res.reasons[di / "industrial_land_1.png"]
    # ... but it says so: which scene holds the image, with which label, and how they differ
    assert f"scene 'industrial_land_1' ({one.id}" in why and "different label" in why and str(pred) in why
    assert "px" in why and "differ" in why
    assert "DIFFERENT label" in res.summary_lines()[0] and any(why in line for line in res.summary_lines())
    assert any("industrial_land_1" in r.getMessage() and "different label" in r.getMessage() for r in caplog.records)
    # asked for on purpose, the pair comes in
    again = import_folder(ws, di, dl, scheme="gid15", allow_duplicate=True, val_count=1)
    assert "industrial_land_1" in [s.name for s in again]


def test_single_pair_import_checks_too_when_asked(ws, tmp_path):
    di, dl = _folder(tmp_path / "gid15")
    a = import_scene(ws, di / "lake_10.png", dl / "lake_10.png", scheme="gid15", allow_duplicate=False)
    copy = tmp_path / "elsewhere" / "renamed.png"
    copy.parent.mkdir()
    shutil.copyfile(di / "lake_10.png", copy)
    with pytest.raises(DuplicateImportError) as same:  # the same pair again, under another name
        import_scene(ws, copy, dl / "lake_10.png", scheme="gid15", allow_duplicate=False)
    assert not isinstance(same.value, LabelConflictError) and same.value.scene_id == a.id
    other = _png(tmp_path / "pred.png", np.zeros((12, 13), np.uint8))
    with pytest.raises(LabelConflictError) as conflict:
        import_scene(ws, copy, other, scheme="gid15", allow_duplicate=False)
    msg = str(conflict.value)
    assert f"'{a.name}' ({a.id}" in msg and str(dl / "lake_10.png") in msg and str(other) in msg
    assert "nothing was imported" in msg and "--allow-duplicate" in msg
    assert [s.id for s in ws.list_scenes()] == [a.id]
    # the escape hatch (and the library default, for aligned imports) imports it
    b = import_scene(ws, copy, other, scheme="gid15")
    assert b.id != a.id and len(ws.list_scenes()) == 2
    # another output scheme is another data set of the same images
    c = import_scene(ws, copy, dl / "lake_10.png", scheme="gid15", target_scheme="hz7", allow_duplicate=False)
    assert c.scheme == "hz7"


def test_scenes_imported_before_contents_were_recorded(ws, tmp_path):
    """No ``source.json``: the same source path, or a copy of the file still at the recorded path, is recognised."""
    di, dl = _folder(tmp_path / "gid15")
    ci, cl = _copy_some(di, dl, tmp_path / "copy", STEMS[:2])
    old = import_folder(ws, ci, cl, scheme="gid15", val_count=0)
    for s in old:
        (ws.scene_path(s, "image").parent / SOURCE_RECORD).unlink()
    res = import_folder(ws, di, dl, scheme="gid15", val_count=1)
    assert sorted(p.name for p, _ in res.skipped) == sorted(f"{s}.png" for s in STEMS[:2])
    assert all("the file it was imported from" in res.reasons[p] for p, _ in res.skipped)
    again = import_folder(ws, ci, cl, scheme="gid15", val_count=0)  # same path as recorded
    assert list(again) == [] and again.skipped_count == 2


def test_many_skipped_pairs_name_the_full_list(ws, tmp_path):
    stems = [f"tile_{i}" for i in range(8)]
    di, dl = _folder(tmp_path / "d", stems)
    import_folder(ws, di, dl, scheme="gid15", val_count=1)
    res = import_folder(ws, di, dl, scheme="gid15", val_count=1)
    assert isinstance(res, FolderImport) and res.skipped_count == 8
    lines = res.summary_lines(limit=3)
    assert lines[0].startswith("skipped 8 pair(s)") and len(lines) == 1 + 3 + 1
    assert "5 more" in lines[-1] and str(res.report_path) in lines[-1]
    text = res.report_path.read_text()
    assert all(f"{s}.png: already scene" in text for s in stems)
    assert len(res.summary_lines()) == 1 + 8 + 1  # under the limit: every one, and where they are kept
