"""Tests of the label store (seghz.store): sparse correction layers with provenance, effective label and pixel
status, undo/redo per analyst, export, merge-or-conflict on stale saves (two processes), durability under
kill -9, migration of whole-mask PNG versions written by older SegHZ, and bad input."""
from __future__ import annotations

import hashlib
import importlib.util
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from seghz.data.io import read_index_mask, write_index_mask, write_rgb
from seghz.errors import BadInputError, ConflictError
from seghz.store import (
    ANALYST_MAX,
    PIXEL_CONFIRMED,
    PIXEL_CORRECTED,
    PIXEL_IGNORED,
    PIXEL_ORIGINAL,
    SCHEMA_VERSION,
    EmptyEditError,
    NotFoundError,
    Workspace,
    read_label_layer,
)

REPO = Path(__file__).resolve().parents[1]
H, W = 24, 32
ENV = dict(os.environ, OMP_NUM_THREADS="1",
           PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))


def _scene_files(root: Path, folder: str = "s", size=(H, W)):
    rng = np.random.default_rng(0)
    img = root / "scenes" / folder / "image.png"
    write_rgb(img, rng.integers(0, 255, (*size, 3), dtype=np.uint8))
    lbl = root / "scenes" / folder / "label.png"
    mask = rng.integers(0, 7, size, dtype=np.uint8)
    mask[0, :4] = 255
    write_index_mask(lbl, mask)
    return img, lbl


@pytest.fixture
def ws(tmp_path) -> Workspace:
    w = Workspace(tmp_path / "ws")
    img, lbl = _scene_files(w.root)
    w.add_scene("S", img, "hz7", label_path=lbl, split="train", scene_id="s")
    return w


def _flip(mask: np.ndarray, rows: slice, cols: slice) -> np.ndarray:
    out = mask.copy()
    out[rows, cols] = (out[rows, cols] + 1) % 7
    return out


# ------------------------------------------------------------------------------------------------ layers


def test_versions_are_sparse_layers_with_provenance(ws):
    orig_file = ws.scene_path("s", "label")
    orig_bytes = orig_file.read_bytes()
    original = ws.effective_label("s", 0)
    edit = _flip(original, slice(2, 4), slice(5, 9))
    edit[0, 0] = 3  # an ignored pixel gets a class
    v = ws.save_label_version("s", edit, 0, "  Zoë Ünal ", "brush", reason="  屋顶被标成道路  ")
    assert v == 1
    h = ws.label_history("s")[0]
    assert (h.kind, h.analyst, h.tool, h.reason, h.n_changed, h.n_confirmed) == (
        "layer", "Zoë Ünal", "brush", "屋顶被标成道路", 9, 0)
    assert h.parent_version == h.base_version == 0 and h.checkpoint_id is None and not h.undone
    assert datetime.fromisoformat(h.created_at).utcoffset().total_seconds() == 0  # UTC ISO time
    f = ws.root / h.path
    assert f.name == "v0001.npz" and h.sha256 == hashlib.sha256(f.read_bytes()).hexdigest()
    layer = ws.label_layer("s", 1)
    assert layer.indices.size == 9 and layer.confirm.size == 0
    np.testing.assert_array_equal(layer.indices, np.flatnonzero(edit != original))
    np.testing.assert_array_equal(layer.values, edit.ravel()[layer.indices])
    with np.load(f, allow_pickle=False) as z:  # plain arrays, no pickled objects
        assert set(z.files) == {"format", "shape", "indices", "values", "confirm"}
        assert z["indices"].dtype == np.int32 and z["values"].dtype == np.uint8
    np.testing.assert_array_equal(ws.effective_label("s"), edit)
    np.testing.assert_array_equal(ws.effective_label("s", 0), original)
    assert orig_file.read_bytes() == orig_bytes  # the original is immutable


def test_active_checkpoint_is_recorded_by_default(ws):
    f = ws.root / "checkpoints" / "m.pt"
    f.write_bytes(b"x")
    cid = ws.register_checkpoint(f, {"arch": "unet", "encoder": "r18", "scheme": "hz7", "metrics": {}},
                                 checkpoint_id="m1")
    ws.set_active_checkpoint(cid)
    m = ws.effective_label("s")
    ws.save_label_version("s", _flip(m, slice(0, 1), slice(5, 6)), 0, "ann", "brush")
    ws.save_label_version("s", _flip(m, slice(1, 2), slice(5, 6)), 1, "ann", "accept-prediction", checkpoint_id="other")
    assert [h.checkpoint_id for h in ws.label_history("s")] == ["m1", "other"]


def test_sparse_edit_status_and_trusted_mask(ws):
    original = ws.effective_label("s", 0)
    shape = original.shape
    paint = np.zeros(shape, bool)
    paint[5:7, 5:10] = True
    target = 2
    v1 = ws.save_label_edit("s", 0, "ann", "brush", pixels=paint, values=target)
    eff = ws.effective_label("s", v1)
    assert (eff[5:7, 5:10] == target).all()
    n_real = int(np.count_nonzero(original[5:7, 5:10] != target))
    h = ws.label_history("s")[0]
    assert (h.n_changed, h.n_confirmed) == (n_real, 10 - n_real)  # pixels already holding the class: confirmed
    confirm = np.zeros(shape, bool)
    confirm[10:12, 10:12] = True
    flat = np.array([20 * W + 20, 21 * W + 21])
    back = original.ravel()[flat]  # set back to the original value -> confirmed
    v2 = ws.save_label_edit("s", v1, "bob", "confirm", confirm=confirm)
    v3 = ws.save_label_edit("s", v2, "bob", "ignore-brush", pixels=np.array([15 * W + 3]), values=255)
    ws.save_label_edit("s", v3, "ann", "brush", pixels=flat, values=(back + 1) % 7)
    v5 = ws.save_label_edit("s", ws.latest_label_version("s"), "cat", "brush", pixels=flat, values=back)
    eff, st = ws.label_and_status("s", v5)
    np.testing.assert_array_equal(st, ws.pixel_status("s"))
    assert st.dtype == np.uint8 and set(np.unique(st).tolist()) <= {0, 1, 2, 255}
    changed = (original[5:7, 5:10] != target) & (original[5:7, 5:10] != 255)
    assert (st[5:7, 5:10][changed] == PIXEL_CORRECTED).all()
    assert (st[5:7, 5:10][~changed & (original[5:7, 5:10] == target)] == PIXEL_CONFIRMED).all()
    assert (st[10:12, 10:12] == PIXEL_CONFIRMED).all() and (eff[10:12, 10:12] == original[10:12, 10:12]).all()
    assert st[15, 3] == PIXEL_IGNORED and eff[15, 3] == 255
    assert (st[0, :4] == PIXEL_IGNORED).all()  # ignored in the original
    assert st[20, 20] == st[21, 21] == PIXEL_CONFIRMED and eff[20, 20] == back[0]
    assert st[22, 22] == PIXEL_ORIGINAL
    trusted = ws.trusted_mask("s")
    np.testing.assert_array_equal(trusted, (st == PIXEL_CORRECTED) | (st == PIXEL_CONFIRMED))
    assert not trusted[15, 3] and trusted[10, 10] and not trusted[22, 22]
    # the status of an older version is still available
    assert (ws.pixel_status("s", v1)[10:12, 10:12] == PIXEL_ORIGINAL).all()
    assert (ws.pixel_status("s", 0) == np.where(original == 255, 255, 0)).all()


# ------------------------------------------------------------------------------------------------ undo / redo


def test_undo_redo_per_analyst_keeps_history_and_files(ws):
    original = ws.effective_label("s", 0)
    a1 = ws.save_label_version("s", _flip(original, slice(1, 3), slice(0, 4)), 0, "alice", "brush")
    b2 = ws.save_label_version("s", _flip(ws.effective_label("s"), slice(5, 7), slice(0, 4)), a1, "bob", "brush")
    m3 = ws.effective_label("s")
    m3[1:3, 0:4] = 6  # alice paints over her own earlier pixels
    a3 = ws.save_label_version("s", m3, b2, "alice", "brush")
    states = {v: ws.effective_label("s", v) for v in (0, a1, b2, a3)}
    assert ws.undo_redo_state("s", "alice") == (a3, None)

    u4 = ws.undo_label_edit("s", "alice", reason="oops")
    np.testing.assert_array_equal(ws.effective_label("s"), states[b2])
    u5 = ws.undo_label_edit("s", "alice")
    expect = states[0].copy()
    expect[5:7, 0:4] = states[b2][5:7, 0:4]  # bob's layer stays
    np.testing.assert_array_equal(ws.effective_label("s"), expect)
    with pytest.raises(NotFoundError, match="'alice' has no label edit to undo"):
        ws.undo_label_edit("s", "alice")
    assert ws.undo_redo_state("s", "alice") == (None, a1) and ws.undo_redo_state("s", "bob") == (b2, None)

    r6 = ws.redo_label_edit("s", "alice")  # re-applies a1 (the last undone)
    np.testing.assert_array_equal(ws.effective_label("s"), states[b2])
    r7 = ws.redo_label_edit("s", "alice")  # then a3
    np.testing.assert_array_equal(ws.effective_label("s"), states[a3])
    with pytest.raises(NotFoundError, match="nothing|no label edit to redo"):
        ws.redo_label_edit("s", "alice")
    assert [u4, u5, r6, r7] == [4, 5, 6, 7] and ws.latest_label_version("s") == 7

    for v, m in states.items():  # every earlier version still reads the same
        np.testing.assert_array_equal(ws.effective_label("s", v), m)
    hist = ws.label_history("s")
    assert [(h.version, h.kind, h.analyst, h.target_version) for h in hist] == [
        (1, "layer", "alice", None), (2, "layer", "bob", None), (3, "layer", "alice", None),
        (4, "undo", "alice", 3), (5, "undo", "alice", 1), (6, "redo", "alice", 1), (7, "redo", "alice", 3)]
    assert hist[3].reason == "oops" and hist[3].n_changed == int(np.count_nonzero(states[a3] != states[b2])) and not any(h.undone for h in hist)
    assert [h.version for h in ws.label_history("s", analyst="bob")] == [2]
    assert sorted(p.name for p in (ws.root / "labels/s").glob("v*.npz")) == ["v0001.npz", "v0002.npz", "v0003.npz"]

    # a new save clears the analyst's redo list; undone layers are flagged in the history
    ws.undo_label_edit("s", "alice")
    assert [h.undone for h in ws.label_history("s")][:3] == [False, False, True]
    ws.save_label_version("s", _flip(ws.effective_label("s"), slice(20, 21), slice(20, 21)),
                          ws.latest_label_version("s"), "alice", "brush")
    assert ws.undo_redo_state("s", "alice")[1] is None
    with pytest.raises(NotFoundError, match="redo"):
        ws.redo_label_edit("s", "alice")
    assert ws.undo_redo_state("s", "carol") == (None, None)


# ------------------------------------------------------------------------------------------------ concurrency


def test_stale_save_merges_when_disjoint_and_conflicts_when_overlapping(ws):
    base = ws.effective_label("s")
    a = _flip(base, slice(0, 4), slice(0, 8))
    b = _flip(base, slice(10, 14), slice(0, 8))
    assert ws.save_label_version("s", a, 0, "alice", "brush") == 1
    with pytest.raises(ConflictError, match="version 0.*latest is version 1"):  # the legacy API is strict by default
        ws.save_label_version("s", b, 0, "bob", "brush")
    assert ws.save_label_version("s", b, 0, "bob", "brush", merge=True) == 2
    merged = base.copy()
    merged[0:4, 0:8], merged[10:14, 0:8] = a[0:4, 0:8], b[10:14, 0:8]
    np.testing.assert_array_equal(ws.effective_label("s"), merged)
    h = ws.label_history("s")[1]
    assert (h.base_version, h.parent_version) == (0, 1)

    c = base.copy()
    c[2:12, 0:2] = 5  # overlaps alice's and bob's regions
    overlap = int(np.count_nonzero((c != base)[0:4, 0:8])) + int(np.count_nonzero((c != base)[10:14, 0:8]))
    with pytest.raises(ConflictError) as err:
        ws.save_label_edit("s", 0, "carol", "brush", pixels=c != base, values=c)
    msg = str(err.value)
    assert "scene 's'" in msg and "version 0" in msg and "version 2" in msg and f"{overlap} of the edit's" in msg
    assert "'alice'" in msg and "'bob'" in msg
    assert (err.value.scene_id, err.value.base_version, err.value.latest_version, err.value.overlap) == ("s", 0, 2, overlap)
    assert ws.latest_label_version("s") == 2

    # a confirmation also counts as touching a pixel, and so does an undo since the base
    with pytest.raises(ConflictError, match="1 of the edit's 1"):
        ws.save_label_edit("s", 1, "dan", "confirm", confirm=np.array([12 * W + 3]))
    ws.undo_label_edit("s", "alice")
    with pytest.raises(ConflictError, match="v3 by 'alice'"):
        ws.save_label_edit("s", 2, "dan", "brush", pixels=np.array([1 * W + 1]), values=(base[1, 1] + 1) % 7)
    assert ws.save_label_edit("s", 2, "dan", "brush", pixels=np.array([20 * W + 1]), values=(base[20, 1] + 1) % 7) == 4


_SAVER = """
import pathlib, sys, time
import numpy as np
from seghz.errors import ConflictError
from seghz.store import Workspace
root, tag, r0, r1 = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
ws = Workspace(root)
base = ws.latest_label_version("s")
mask = ws.effective_label("s", base).copy()
mask[r0:r1] = (mask[r0:r1] + 1) % 7
pathlib.Path(root, "ready-" + tag).touch()
deadline = time.monotonic() + 30
while not pathlib.Path(root, "go").exists():
    if time.monotonic() > deadline:
        sys.exit(5)
    time.sleep(0.002)
try:
    v = ws.save_label_edit("s", base, tag, "brush", pixels=np.arange(r0 * mask.shape[1], r1 * mask.shape[1]),
                           values=mask[r0:r1].ravel())
except ConflictError as e:
    print("CONFLICT", e)
    sys.exit(3)
print("SAVED", v)
"""


def _race(ws: Workspace, jobs: dict[str, tuple[int, int]]) -> dict[str, tuple[int, str]]:
    for f in ws.root.glob("ready-*"):
        f.unlink()
    (ws.root / "go").unlink(missing_ok=True)
    procs = {t: subprocess.Popen([sys.executable, "-c", _SAVER, str(ws.root), t, str(a), str(b)], env=ENV,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for t, (a, b) in jobs.items()}
    deadline = time.monotonic() + 60
    while not all((ws.root / f"ready-{t}").exists() for t in procs):
        assert time.monotonic() < deadline, "saver processes did not get ready"
        assert all(p.poll() is None for p in procs.values()), [p.communicate()[0] for p in procs.values()]
        time.sleep(0.01)
    (ws.root / "go").touch()
    return {t: (p.wait(timeout=60), p.communicate()[0]) for t, p in procs.items()}


def test_two_processes_disjoint_edits_merge_overlapping_conflict(ws):
    base = ws.effective_label("s")
    out = _race(ws, {"p1": (0, 5), "p2": (10, 15)})
    assert {t: c for t, (c, _) in out.items()} == {"p1": 0, "p2": 0}, out
    expect = base.copy()
    expect[0:5] = (base[0:5] + 1) % 7
    expect[10:15] = (base[10:15] + 1) % 7
    np.testing.assert_array_equal(ws.effective_label("s"), expect)
    assert sorted(h.analyst for h in ws.label_history("s")) == ["p1", "p2"]

    out = _race(ws, {"q1": (3, 8), "q2": (5, 9)})  # rows 5..7 overlap: 3 rows x 32 px
    codes = sorted(c for c, _ in out.values())
    assert codes == [0, 3], out
    loser = next(t for t, (c, _) in out.items() if c == 3)
    winner = next(t for t, (c, _) in out.items() if c == 0)
    msg = out[loser][1]
    assert "scene 's'" in msg and "version 2" in msg and "version 3" in msg and f"'{winner}'" in msg
    assert f"{3 * W} of the edit's" in msg
    assert ws.latest_label_version("s") == 3


# ------------------------------------------------------------------------------------------------ durability

_CHURN = """
import hashlib, os, pathlib, sys, time
import numpy as np
from seghz.store import EmptyEditError, NotFoundError, Workspace
root, ack, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
ws = Workspace(root)
rng = np.random.default_rng(seed)
_fsync = os.fsync
def slow_fsync(fd):  # widen the window between writing a layer's temp file, renaming it and committing its row
    time.sleep(float(rng.random()) * 0.01)
    _fsync(fd)
os.fsync = slow_fsync
pathlib.Path(ack + ".ready").touch()
while True:
    v = ws.latest_label_version("s")
    op = rng.random()
    try:
        if op < 0.15:
            nv = ws.undo_label_edit("s", "killme")
        elif op < 0.25:
            nv = ws.redo_label_edit("s", "killme")
        else:
            m = ws.effective_label("s", v)
            k = rng.integers(0, m.size, size=int(rng.integers(1, 30)))
            m.ravel()[k] = rng.integers(0, 7, size=k.size)
            nv = ws.save_label_version("s", m, v, "killme", "brush", reason="durability ✓")
    except (EmptyEditError, NotFoundError):
        continue
    digest = hashlib.sha256(ws.effective_label("s", nv).tobytes()).hexdigest()
    with open(ack, "a") as f:
        f.write(f"{nv} {digest}\\n")
        f.flush()
        os.fsync(f.fileno())
"""


def test_kill9_during_saves_loses_nothing_acknowledged(ws):
    ack = ws.root.parent / "acks.txt"
    rng = random.Random(1234)
    acked: dict[int, str] = {}
    for it in range(6):
        Path(str(ack) + ".ready").unlink(missing_ok=True)
        p = subprocess.Popen([sys.executable, "-c", _CHURN, str(ws.root), str(ack), str(it)], env=ENV,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not Path(str(ack) + ".ready").exists():
            assert p.poll() is None, p.communicate()[0]
            assert time.monotonic() < deadline
            time.sleep(0.005)
        time.sleep(rng.uniform(0.05, 0.6))
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=30)
        assert p.returncode == -signal.SIGKILL, p.communicate()[0]

        for line in ack.read_text().splitlines(keepends=True):
            if line.endswith("\n"):  # a line cut by the kill was never acknowledged
                v, digest = line.split()
                acked[int(v)] = digest
        reopened = Workspace(ws.root)
        with reopened.connect() as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        hist = reopened.label_history("s")
        latest = reopened.latest_label_version("s")
        assert [h.version for h in hist] == list(range(1, latest + 1))
        assert acked and max(acked) <= latest
        for v, digest in acked.items():
            assert hashlib.sha256(reopened.effective_label("s", v).tobytes()).hexdigest() == digest, (it, v)
        for h in hist:  # every committed version loads and its file is whole
            reopened.effective_label("s", h.version)
            if h.kind == "layer":
                read_label_layer(reopened.root / h.path, (H, W), h.sha256)
        referenced = {Path(h.path).name for h in hist if h.path}
        stray = [f.name for f in (ws.root / "labels/s").iterdir() if f.name not in referenced]
        assert all(f.endswith((".tmp", ".npz")) for f in stray), stray
    assert len(acked) >= 6  # the loop really saved between kills
    # the store still accepts saves
    ws.save_label_version("s", _flip(ws.effective_label("s"), slice(0, 1), slice(0, 1)),
                          ws.latest_label_version("s"), "after", "brush")


def test_orphan_and_temp_files_are_never_versions(ws):
    d = ws.root / "labels/s"
    d.mkdir(parents=True, exist_ok=True)
    (d / ".v0001.npz.abc.tmp").write_bytes(b"torn")
    (d / "v0001.npz").write_bytes(b"orphan from a crash before the row committed")
    assert ws.latest_label_version("s") == 0 and ws.label_history("s") == []
    m = _flip(ws.effective_label("s"), slice(3, 4), slice(3, 6))
    assert ws.save_label_version("s", m, 0, "ann", "brush") == 1  # replaces the orphan atomically
    np.testing.assert_array_equal(ws.effective_label("s"), m)


def test_damaged_layer_file_is_reported(ws):
    m = _flip(ws.effective_label("s"), slice(3, 4), slice(3, 6))
    ws.save_label_version("s", m, 0, "ann", "brush")
    f = ws.root / "labels/s/v0001.npz"
    f.write_bytes(f.read_bytes()[:-7])
    with pytest.raises(BadInputError, match="v0001.npz.*damaged"):
        ws.effective_label("s")
    np.testing.assert_array_equal(ws.effective_label("s", 0), read_index_mask(ws.scene_path("s", "label")))


# ------------------------------------------------------------------------------------------------ legacy


def _legacy_save(ws: Workspace, version: int, mask: np.ndarray, analyst: str) -> None:
    """Store a label version exactly as SegHZ up to schema 2 did: a whole-mask palette PNG plus its row."""
    from seghz.classes import get_scheme

    rel = f"labels/s/v{version:04d}.png"
    write_index_mask(ws.root / rel, mask, get_scheme("hz7"))
    prev = ws.effective_label("s", 0) if version == 1 else read_index_mask(ws.root / f"labels/s/v{version - 1:04d}.png")
    with sqlite3.connect(ws.db_path) as conn:
        conn.execute(
            "INSERT INTO label_versions (scene_id, version, parent_version, path, analyst, tool, checkpoint_id, "
            "reason, n_changed, created_at) VALUES ('s', ?, ?, ?, ?, 'brush', NULL, 'old', ?, '2024-01-01T00:00:00.000+00:00')",
            (version, version - 1, rel, analyst, int(np.count_nonzero(mask != prev))))


def _downgrade_to_schema_2(ws: Workspace) -> None:
    with sqlite3.connect(ws.db_path) as conn:
        conn.execute("DROP INDEX label_versions_analyst")
        for col in ("kind", "target_version", "base_version", "n_confirmed", "sha256"):
            conn.execute(f"ALTER TABLE label_versions DROP COLUMN {col}")
        conn.execute("UPDATE schema_version SET version = 2")


def _check_legacy_workspace(root: Path, v1: np.ndarray, v2: np.ndarray) -> None:
    ws = Workspace(root)  # migrates to the current schema
    assert ws.schema_version() == SCHEMA_VERSION
    original = ws.effective_label("s", 0)
    np.testing.assert_array_equal(ws.effective_label("s", 1), v1)
    np.testing.assert_array_equal(ws.effective_label("s"), v2)
    assert [(h.version, h.kind, h.analyst) for h in ws.label_history("s")] == [(1, "full", "ann"), (2, "full", "bob")]
    st = ws.pixel_status("s")
    assert ((st == PIXEL_CORRECTED) == ((v2 != original) & (v2 != 255))).all()
    np.testing.assert_array_equal(ws.label_layer("s", 2).indices, np.flatnonzero(v2 != v1))
    # new layers stack on top; a legacy version can be undone by its analyst
    v3 = ws.save_label_version("s", _flip(v2, slice(20, 22), slice(0, 3)), 2, "ann", "brush")
    ws.undo_label_edit("s", "bob")
    expect = _flip(v2, slice(20, 22), slice(0, 3))
    expect[v2 != v1] = v1[v2 != v1]
    np.testing.assert_array_equal(ws.effective_label("s"), expect)
    ws.undo_label_edit("s", "ann")  # ann's newest layer in effect: v3
    ws.undo_label_edit("s", "ann")  # then her legacy v1
    np.testing.assert_array_equal(ws.effective_label("s"), original)
    np.testing.assert_array_equal(ws.effective_label("s", v3), _flip(v2, slice(20, 22), slice(0, 3)))
    assert (root / "labels/s/v0001.png").is_file() and (root / "labels/s/v0002.png").is_file()


def test_legacy_whole_mask_versions_keep_working(tmp_path):
    ws = Workspace(tmp_path / "old")
    img, lbl = _scene_files(ws.root)
    ws.add_scene("S", img, "hz7", label_path=lbl, split="train", scene_id="s")
    _downgrade_to_schema_2(ws)
    original = read_index_mask(lbl)
    v1 = _flip(original, slice(2, 6), slice(3, 9))
    v2 = v1.copy()
    v2[10, 10], v2[11, 11] = 255, (v1[11, 11] + 1) % 7
    _legacy_save(ws, 1, v1, "ann")
    _legacy_save(ws, 2, v2, "bob")
    _check_legacy_workspace(ws.root, v1, v2)


LEGACY_COMMIT = "a13e2a4"  # last commit whose seghz/store.py wrote whole-mask PNG versions (schema 2)


def test_workspace_written_by_the_previous_code_opens(tmp_path, monkeypatch):
    try:
        src = subprocess.run(["git", "show", f"{LEGACY_COMMIT}:seghz/store.py"], cwd=REPO, capture_output=True,
                             text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        pytest.skip("git is not available")
    if src.returncode != 0 or "SCHEMA_VERSION = 2" not in src.stdout:
        pytest.skip(f"commit {LEGACY_COMMIT} is not in this checkout")
    path = tmp_path / "legacy_store.py"
    path.write_text(src.stdout)
    spec = importlib.util.spec_from_file_location("legacy_store", path)
    legacy = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "legacy_store", legacy)  # dataclasses look their module up
    spec.loader.exec_module(legacy)
    old = legacy.Workspace(tmp_path / "old")
    img, lbl = _scene_files(old.root)
    old.add_scene("S", img, "hz7", label_path=lbl, split="train", scene_id="s")
    original = old.effective_label("s")
    v1 = _flip(original, slice(2, 6), slice(3, 9))
    v2 = v1.copy()
    v2[10, 10], v2[11, 11] = 255, (v1[11, 11] + 1) % 7
    assert old.save_label_version("s", v1, 0, "ann", "brush") == 1
    assert old.save_label_version("s", v2, 1, "bob", "brush") == 2
    assert old.schema_version() == 2
    _check_legacy_workspace(old.root, v1, v2)


# ------------------------------------------------------------------------------------------------ export


def test_export_png_and_geotiff_with_the_scene_crs(tmp_path):
    import rasterio
    from rasterio.transform import Affine

    ws = Workspace(tmp_path / "geo")
    path = ws.root / "scenes" / "g" / "img.tif"
    path.parent.mkdir(parents=True)
    tr = Affine(0.5, 0.0, 500000.0, 0.0, -0.5, 3300000.0)
    with rasterio.open(path, "w", driver="GTiff", width=W, height=H, count=3, dtype="uint8", crs="EPSG:32650",
                       transform=tr) as ds:
        ds.write(np.zeros((3, H, W), np.uint8))
    lbl = ws.root / "scenes" / "g" / "label.png"
    write_index_mask(lbl, np.random.default_rng(1).integers(0, 7, (H, W), dtype=np.uint8))
    ws.add_scene("g", path, "hz7", label_path=lbl, scene_id="g")
    m = _flip(ws.effective_label("g"), slice(0, 5), slice(0, 5))
    ws.save_label_version("g", m, 0, "ann", "brush")

    out = ws.export_label("g", tmp_path / "out" / "g_v1.tif")
    with rasterio.open(out) as ds:
        assert ds.crs.to_string() == "EPSG:32650" and tuple(ds.transform)[:6] == pytest.approx(tuple(tr)[:6])
        assert ds.count == 1 and ds.dtypes[0] == "uint8" and ds.nodata == 255
        np.testing.assert_array_equal(ds.read(1), m)
        # what the file is, for a GIS user: the band's classes, the scene and the label version
        assert ds.descriptions == ("class",)
        from seghz.classes import get_scheme

        assert ds.tags(1) == {"scheme": "hz7", "classes": ",".join(get_scheme("hz7").names)}
        tags = ds.tags()
        assert (tags["SEGHZ_SCENE"], tags["SEGHZ_LABEL_VERSION"], tags["SEGHZ_SPLIT"]) == ("g", "1", "none")
        assert tags["SEGHZ_LABEL_SAVED_BY"] == "ann" and tags["SEGHZ_SCHEME"] == "hz7" and "SEGHZ_WRITTEN_AT" in tags
    with rasterio.open(ws.export_label("g", tmp_path / "out" / "g_v0.tif", version=0)) as ds:
        assert ds.tags()["SEGHZ_LABEL_VERSION"] == "0" and "SEGHZ_LABEL_SAVED_BY" not in ds.tags()  # the original
    png = ws.export_label("g", tmp_path / "out" / "g_v0.png", version=0)
    np.testing.assert_array_equal(read_index_mask(png), ws.effective_label("g", 0))
    with pytest.raises(BadInputError, match="scene 'g'.*use .png or .tif"):
        ws.export_label("g", tmp_path / "out" / "g.jpg")
    with pytest.raises(NotFoundError, match="no label version 9"):
        ws.export_label("g", tmp_path / "out" / "g9.png", version=9)
    assert not list((tmp_path / "out").glob(".*tmp*"))


# ------------------------------------------------------------------------------------------------ bad input


def test_bad_input_is_refused_with_clear_errors(ws):
    m = ws.effective_label("s")
    edit = _flip(m, slice(0, 2), slice(5, 9))
    with pytest.raises(BadInputError, match=r"scene 's'.*mask shape \(24, 31\)"):
        ws.save_label_version("s", edit[:, 1:], 0, "ann", "brush")
    with pytest.raises(BadInputError, match=r"scene 's'.*pixels mask shape \(3, 3\)"):
        ws.save_label_edit("s", 0, "ann", "brush", pixels=np.ones((3, 3), bool), values=1)
    bad = edit.copy()
    bad[4, 4] = 9
    with pytest.raises(BadInputError, match=r"scene 's'.*\[9\].*not class indices"):
        ws.save_label_version("s", bad, 0, "ann", "brush")
    with pytest.raises(BadInputError, match=r"scene 's'.*class id\(s\) \[7\].*scheme 'hz7'"):
        ws.save_label_edit("s", 0, "ann", "brush", pixels=np.array([3]), values=7)
    with pytest.raises(BadInputError, match=r"scene 's'.*outside the scene"):
        ws.save_label_edit("s", 0, "ann", "brush", pixels=np.array([H * W]), values=1)
    with pytest.raises(BadInputError, match="more than once"):
        ws.save_label_edit("s", 0, "ann", "brush", pixels=np.array([3, 3]), values=np.array([1, 2]))
    # empty strokes create no version
    with pytest.raises(EmptyEditError, match="scene 's'.*changes no pixel.*no version was created"):
        ws.save_label_version("s", m, 0, "ann", "brush")
    with pytest.raises(EmptyEditError, match="scene 's'"):
        ws.save_label_edit("s", 0, "ann", "brush", pixels=np.zeros((H, W), bool), values=1)
    with pytest.raises(EmptyEditError, match="scene 's'"):
        ws.save_label_edit("s", 0, "ann", "brush", pixels=np.zeros(0, np.int64), values=np.zeros(0, np.uint8))
    # analyst names
    for name in ("", "   ", None):
        with pytest.raises(BadInputError, match="scene 's'.*analyst's name"):
            ws.save_label_version("s", edit, 0, name, "brush")
    with pytest.raises(BadInputError, match=f"scene 's'.*65 characters long; at most {ANALYST_MAX}"):
        ws.save_label_version("s", edit, 0, "x" * 65, "brush")
    with pytest.raises(BadInputError, match="control characters"):
        ws.save_label_version("s", edit, 0, "ann\nbob", "brush")
    with pytest.raises(BadInputError, match="tool"):
        ws.save_label_version("s", edit, 0, "ann", "")
    with pytest.raises(BadInputError, match="scene 's'.*analyst's name"):
        ws.undo_label_edit("s", "")
    with pytest.raises(ConflictError, match="based on label version 3, which does not exist"):
        ws.save_label_version("s", edit, 3, "ann", "brush")
    with pytest.raises(NotFoundError, match="scene 'nope'"):
        ws.save_label_edit("nope", 0, "ann", "brush", pixels=np.array([1]), values=1)
    assert ws.latest_label_version("s") == 0 and ws.label_history("s") == []

    # Unicode names (up to 64 characters of any script) and reasons work
    name = "李" * ANALYST_MAX
    v = ws.save_label_version("s", edit, 0, name, "brush", reason="Überprüft: 道路 → 建筑 ✓")
    v = ws.save_label_edit("s", v, "Zoë", "confirm", confirm=np.array([7 * W + 7]), reason="ok 👍")
    hist = ws.label_history("s")
    assert [(h.analyst, h.reason) for h in hist] == [(name, "Überprüft: 道路 → 建筑 ✓"), ("Zoë", "ok 👍")]
    assert ws.label_history("s", analyst="Zoe\u0308")[0].version == v  # NFC: the same name typed decomposed
    assert ws.undo_label_edit("s", name) == v + 1


def test_training_samples_carry_trusted_masks(ws, tmp_path):
    """The train job's samples: effective labels (crosswalked) with the trusted mask of corrected/confirmed pixels;
    a scene labelled only by corrections is included."""
    from seghz.jobs.kinds import _samples

    paint = np.zeros((H, W), bool)
    paint[3:6, 4:9] = True
    ws.save_label_edit("s", 0, "ann", "brush", pixels=paint, values=3)
    img, _ = _scene_files(ws.root, "u")
    ws.add_scene("U", img, "hz7", split="train", scene_id="u")  # no original label
    assert [len(x) for x in _samples(ws, "train", "hz7")] == [2]  # the unlabelled scene has no edits yet
    ws.save_label_edit("u", 0, "ann", "brush", pixels=paint, values=1)
    got = _samples(ws, "train", "hz7", trusted=True)
    assert len(got) == 2
    for _img, lbl, tr in got:
        assert tr.dtype == bool and np.array_equal(tr, paint)
        assert (lbl[paint] != 255).all()
    u = [g for g in got if (g[1] != 255).sum() == paint.sum()]
    assert len(u) == 1 and (u[0][1][paint] == 1).all()
