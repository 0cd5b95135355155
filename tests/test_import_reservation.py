"""Two imports of one name never share a scene folder; deleting a scene never hits another scene's files.

Before: ``_scene_dir`` took the first id free in the index and removed any folder already there as an "orphan",
so an import B running while import A was between copying its files and registering them wiped A's folder and
wrote its own files there; ``add_scene`` then quietly registered A as ``plot-7-2`` with files in
``scenes/plot-7/`` (B's). Deleting one scene broke the other. Now an import reserves its id with an exclusive lock
on ``scenes/.<id>.import`` held until it is registered (a second import takes the next suffix), a folder is an
orphan only when unregistered, unreferenced and unreserved, ``add_scene`` registers the id it is given or fails,
and ``delete_scene`` moves its folders to trash names before it commits. Interleavings are forced with hooks,
threads and events, as in the reviewer's reproduction.
"""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from seghz.data import scenes as sc
from seghz.data.io import read_image, write_index_mask, write_rgb
from seghz.errors import BadInputError
from seghz.store import Workspace

H = W = 32


@pytest.fixture
def ws(tmp_path) -> Workspace:
    return Workspace(tmp_path / "ws")


@pytest.fixture
def src(tmp_path) -> dict:
    d = tmp_path / "src"
    d.mkdir()
    out = {}
    for k, (seed, cls) in enumerate(((0, 2), (1, 4))):
        rgb = np.random.default_rng(seed).integers(0, 255, (H, W, 3), np.uint8)
        write_rgb(d / f"{k}.png", rgb)
        write_index_mask(d / f"{k}_label.png", np.full((H, W), cls, np.uint8))
        lbl = sc._label_to_target(d / f"{k}_label.png", "hz7", None)  # the class indices an import stores
        assert len(np.unique(lbl)) == 1 and lbl[0, 0] != 255
        out[k] = (d / f"{k}.png", d / f"{k}_label.png", rgb, lbl)
    return out


def _import(ws, item, name="Plot 7"):
    return sc.import_scene(ws, item[0], item[1], scheme="hz7", name=name)


def _check_scene(ws, sid, item):
    assert np.array_equal(read_image(ws.scene_path(sid, "image")), item[2])
    assert np.array_equal(ws.effective_label(sid), item[3])
    folder = ws.root / "scenes" / sid
    assert ws.scene_path(sid, "image").parent == folder and ws.scene_path(sid, "label").parent == folder


def _no_reservations_left(ws):
    assert not list((ws.root / "scenes").glob(".*.import"))


def test_an_import_during_another_imports_registration_takes_the_next_id(ws, src, monkeypatch):
    """The reviewer's interleaving: B runs while A is between copying its files and add_scene."""
    real = Workspace.add_scene
    calls: list[str] = []

    def add_scene(self, *a, **k):
        calls.append(k.get("scene_id"))
        if len(calls) == 1:
            calls.append(_import(self, src[1]).id)  # import B, while A's files wait to be registered
        return real(self, *a, **k)

    monkeypatch.setattr(Workspace, "add_scene", add_scene)
    a = _import(ws, src[0])
    monkeypatch.setattr(Workspace, "add_scene", real)
    assert a.id == "plot-7" and calls == ["plot-7", "plot-7-2", "plot-7-2"]
    _check_scene(ws, "plot-7", src[0])
    _check_scene(ws, "plot-7-2", src[1])
    _no_reservations_left(ws)
    ws.delete_scene("plot-7-2")
    _check_scene(ws, "plot-7", src[0])
    assert not (ws.root / "scenes" / "plot-7-2").exists()


def test_two_threads_importing_one_name(ws, src, monkeypatch):
    """Import A (a thread) holds in add_scene; import B runs to the end meanwhile; then A registers."""
    real = Workspace.add_scene
    in_add, go = threading.Event(), threading.Event()
    out: dict = {}

    def add_scene(self, *a, **k):
        if threading.current_thread().name == "import-a":
            in_add.set()
            assert go.wait(30)
        return real(self, *a, **k)

    monkeypatch.setattr(Workspace, "add_scene", add_scene)

    def run_a():
        try:
            out["a"] = _import(ws, src[0]).id
        except BaseException as e:  # noqa: BLE001 - reported below
            out["error"] = e

    t = threading.Thread(target=run_a, name="import-a")
    t.start()
    assert in_add.wait(30)
    b = _import(ws, src[1])
    go.set()
    t.join(30)
    assert "error" not in out, out.get("error")
    assert (out["a"], b.id) == ("plot-7", "plot-7-2")
    _check_scene(ws, "plot-7", src[0])
    _check_scene(ws, "plot-7-2", src[1])
    ws.delete_scene("plot-7")
    _check_scene(ws, "plot-7-2", src[1])
    _no_reservations_left(ws)


def test_a_failed_import_removes_its_folder_and_reservation(ws, src, monkeypatch):
    def boom(self, *a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(Workspace, "add_scene", boom)
    with pytest.raises(OSError, match="disk full"):
        _import(ws, src[0])
    monkeypatch.undo()
    assert list((ws.root / "scenes").iterdir()) == []
    assert _import(ws, src[0]).id == "plot-7"


def test_an_interrupted_imports_folder_is_reused(ws, src):
    orphan = ws.root / "scenes" / "plot-7"
    orphan.mkdir()
    (orphan / "image.png").write_bytes(b"torn")
    assert _import(ws, src[0]).id == "plot-7"
    _check_scene(ws, "plot-7", src[0])


def test_a_folder_another_scene_keeps_files_in_is_not_an_orphan(ws, src):
    """A workspace from before the fix: scene x-2's files lie in scenes/x/ (id x unregistered)."""
    legacy = ws.root / "scenes" / "x"
    write_rgb(legacy / "image.png", src[1][2])
    ws.add_scene("X", legacy / "image.png", "hz7", scene_id="x-2")
    s = _import(ws, src[0], name="X")
    assert s.id == "x-3"
    assert np.array_equal(read_image(ws.scene_path("x-2", "image")), src[1][2])
    ws.delete_scene("x-3")
    ws.delete_scene("x-2")  # its file is removed, the emptied legacy folder too
    assert not legacy.exists()


def test_add_scene_registers_the_given_id_or_fails(ws, src):
    a = _import(ws, src[0])
    folder = ws.root / "scenes" / "elsewhere"
    write_rgb(folder / "image.png", src[1][2])
    with pytest.raises(BadInputError, match="scene id 'plot-7'.*already the id of scene 'Plot 7'"):
        ws.add_scene("Other", folder / "image.png", "hz7", scene_id=a.id)
    assert [s.id for s in ws.list_scenes()] == ["plot-7"]
    assert ws.add_scene("Plot 7", folder / "image.png", "hz7").id == "plot-7-2"  # no id given: a free one


def test_a_scene_imported_again_while_the_old_one_is_deleted_keeps_its_files(ws, src, monkeypatch):
    """Re-import (and a correction on it) in the gap between delete_scene's commit and its file removal."""
    import seghz.store as store_mod

    old = _import(ws, src[0])
    ws.save_label_edit(old.id, 0, "Ann", "brush", pixels=np.arange(10), values=1)
    real = store_mod.shutil.rmtree
    new: dict = {}

    def rmtree(path, *a, **k):
        if not new:
            new["scene"] = _import(ws, src[1])
            new["version"] = ws.save_label_edit(new["scene"].id, 0, "Bo", "brush", pixels=np.arange(5), values=3)
        return real(path, *a, **k)

    monkeypatch.setattr(store_mod.shutil, "rmtree", rmtree)
    ws.delete_scene(old.id)
    monkeypatch.setattr(store_mod.shutil, "rmtree", real)
    assert new["scene"].id == old.id == "plot-7" and new["version"] == 1
    assert np.array_equal(read_image(ws.scene_path("plot-7", "image")), src[1][2])
    want = src[1][3].copy().ravel()
    want[:5] = 3
    assert np.array_equal(ws.effective_label("plot-7").ravel(), want)
    leftovers = [p.name for d in ("scenes", "labels") for p in (ws.root / d).iterdir() if p.name.startswith(".trash")]
    assert leftovers == []


def test_a_failed_delete_leaves_the_scene_whole(ws, src, monkeypatch):
    import seghz.store as store_mod

    s = _import(ws, src[0])
    ws.save_label_edit(s.id, 0, "Ann", "brush", pixels=np.arange(10), values=1)
    before = ws.effective_label(s.id)
    real = store_mod.os.rename
    n = [0]

    def rename(a, b):
        n[0] += 1
        if n[0] == 2:
            raise OSError("device busy")
        return real(a, b)

    monkeypatch.setattr(store_mod.os, "rename", rename)
    with pytest.raises(OSError, match="device busy"):
        ws.delete_scene(s.id)
    monkeypatch.setattr(store_mod.os, "rename", real)
    assert ws.get_scene(s.id).id == s.id
    assert np.array_equal(ws.effective_label(s.id), before)
    _check_scene_files = [ws.scene_path(s.id, w).exists() for w in ("image", "label")]
    assert _check_scene_files == [True, True]
    ws.delete_scene(s.id)
    assert [p.name for p in Path(ws.root / "scenes").iterdir()] == []
    assert [p.name for p in Path(ws.root / "labels").iterdir()] == []


def test_trash_left_by_a_killed_delete_is_swept_once_old(ws, src):
    """A delete killed between its commit and its removal leaves ``.trash-*`` names; the next delete removes those
    older than an hour (a younger one may be a delete still running elsewhere, which may rename it back)."""
    import os

    keep = _import(ws, src[0], name="keep")
    gone = _import(ws, src[1], name="gone")
    old_dir = ws.root / "labels" / ".trash-0123456789ab-old"
    old_dir.mkdir(parents=True)
    (old_dir / "v0001.npz").write_bytes(b"x")
    old_file = ws.root / "scenes" / ".trash-0123456789ab-img.png"
    old_file.write_bytes(b"x")
    young = ws.root / "labels" / ".trash-ba9876543210-young"
    young.mkdir()
    hours_ago = __import__("time").time() - 2 * 3600
    for p in (old_dir, old_file):
        os.utime(p, (hours_ago, hours_ago))
    ws.delete_scene(gone.id)
    assert not old_dir.exists() and not old_file.exists() and young.exists()
    _check_scene(ws, keep.id, src[0])
    assert [s.id for s in ws.list_scenes()] == [keep.id]
