"""Tests of seghz.store: workspace layout, WAL index, scenes, label versions and conflicts, registries."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from seghz.data.io import write_index_mask, write_rgb
from seghz.errors import BadInputError, ConflictError
from seghz.store import SCHEMA_VERSION, NotFoundError, Workspace

REPO = Path(__file__).resolve().parents[1]
H, W = 24, 32


def _make_scene_files(ws: Workspace, folder: str, label: bool = True, size: tuple[int, int] = (H, W)):
    rng = np.random.default_rng(0)
    img = ws.root / "scenes" / folder / "image.png"
    write_rgb(img, rng.integers(0, 255, (*size, 3), dtype=np.uint8))
    if not label:
        return img, None
    lbl = ws.root / "scenes" / folder / "label.png"
    mask = rng.integers(0, 7, size, dtype=np.uint8)
    mask[0, :4] = 255
    write_index_mask(lbl, mask)
    return img, lbl


def _changed(mask: np.ndarray) -> np.ndarray:
    """A copy of ``mask`` with one pixel changed (an unchanged mask is an empty edit: no version)."""
    out = mask.copy()
    out[5, 5] = (out[5, 5] + 1) % 7
    return out


@pytest.fixture
def ws(tmp_path) -> Workspace:
    return Workspace(tmp_path / "ws")


@pytest.fixture
def scene(ws):
    img, lbl = _make_scene_files(ws, "s")
    return ws.add_scene("S", img, "hz7", label_path=lbl, split="train", scene_id="s", source="/data/s.tif")


def test_layout_wal_and_schema(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGHZ_WORKSPACE", str(tmp_path / "envws"))
    ws = Workspace()
    assert ws.root == (tmp_path / "envws").resolve()
    for sub in Workspace.SUBDIRS:
        assert (ws.root / sub).is_dir()
    with ws.connect() as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 10000
    raw = sqlite3.connect(ws.db_path)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # persistent in the file
    raw.close()
    assert ws.schema_version() == SCHEMA_VERSION == 5
    assert Workspace(ws.root).schema_version() == SCHEMA_VERSION  # reopening is idempotent


def test_newer_schema_is_refused(ws):
    with ws.transaction() as conn:
        conn.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(Exception, match="schema version 99"):
        Workspace(ws.root)


def test_scene_ids_are_safe_slugs(ws):
    img, lbl = _make_scene_files(ws, "a")
    for bad in ("../evil", "a/b", "", "..", "Evil", "a b"):
        with pytest.raises(ValueError, match="not a safe slug"):
            ws.add_scene("x", img, "hz7", scene_id=bad)
    s1 = ws.add_scene("../evil", img, "hz7", label_path=lbl)
    s2 = ws.add_scene("../evil", img, "hz7")
    with pytest.raises(BadInputError, match="scene id 'evil'.*already the id"):  # a given id is registered or fails
        ws.add_scene("x", img, "hz7", scene_id="evil")
    s3 = ws.add_scene("x", img, "hz7", scene_id="evil-3")
    assert (s1.id, s2.id, s3.id) == ("evil", "evil-2", "evil-3")
    assert ws.unique_scene_id("Evil!") == "evil-4"
    assert not (ws.root.parent / "evil").exists()


def test_add_scene_validates_files(ws, tmp_path):
    img, lbl = _make_scene_files(ws, "a")
    outside = tmp_path / "outside.png"
    write_rgb(outside, np.zeros((H, W, 3), np.uint8))
    with pytest.raises(BadInputError, match="inside the workspace"):
        ws.add_scene("o", outside, "hz7")
    with pytest.raises(BadInputError, match="does not exist"):
        ws.add_scene("m", ws.root / "scenes" / "missing.png", "hz7")
    small = ws.root / "scenes" / "a" / "small.png"
    write_index_mask(small, np.zeros((H - 1, W), np.uint8))
    with pytest.raises(BadInputError, match="differs from image"):
        ws.add_scene("a", img, "hz7", label_path=small)
    bad = ws.root / "scenes" / "a" / "bad.png"
    write_index_mask(bad, np.full((H, W), 9, np.uint8))
    with pytest.raises(BadInputError, match="not class indices 0..6"):
        ws.add_scene("a", img, "hz7", label_path=bad)
    with pytest.raises(KeyError, match="unknown class scheme"):
        ws.add_scene("a", img, "nope")
    with pytest.raises(ValueError, match="unknown split"):
        ws.add_scene("a", img, "hz7", split="training")
    assert ws.list_scenes() == []


def test_scene_round_trip_and_splits(ws, scene):
    assert scene.id == "s" and (scene.width, scene.height) == (W, H)
    assert scene.image_path == "scenes/s/image.png" and scene.label_path == "scenes/s/label.png"
    assert scene.crs is None and scene.transform is None and scene.synthetic is False
    assert ws.get_scene("s") == scene
    assert ws.scene_path(scene, "image") == ws.root / "scenes/s/image.png"
    assert ws.scene_path("s", "label") == ws.root / "scenes/s/label.png"
    img, _ = _make_scene_files(ws, "u", label=False)
    u = ws.add_scene("U", img, "hz7", synthetic=True)
    assert ws.scene_path(u, "label") is None and u.synthetic
    assert [s.id for s in ws.list_scenes("train")] == ["s"]
    ws.set_split("u", "val")
    assert [s.id for s in ws.list_scenes("val")] == ["u"]
    assert [s.id for s in ws.list_scenes()] == ["s", "u"]
    with pytest.raises(NotFoundError, match="scene 'zz'"):
        ws.get_scene("zz")
    with pytest.raises(NotFoundError):
        ws.set_split("zz", "val")


def test_georeferenced_scene_keeps_crs_and_transform(ws):
    import rasterio
    from rasterio.transform import Affine

    path = ws.root / "scenes" / "g" / "img.tif"
    path.parent.mkdir(parents=True)
    tr = Affine(0.0001, 0.0, 120.1, 0.0, -0.0001, 30.3)
    with rasterio.open(path, "w", driver="GTiff", width=W, height=H, count=3, dtype="uint8", crs="EPSG:4326", transform=tr) as ds:
        ds.write(np.zeros((3, H, W), np.uint8))
    s = ws.add_scene("g", path, "hz7")
    assert s.crs == "EPSG:4326"
    assert s.transform == pytest.approx(tuple(tr)[:6])


def test_label_versions(ws, scene):
    orig_file = ws.scene_path(scene, "label")
    orig_bytes = orig_file.read_bytes()
    original = ws.effective_label("s")
    assert ws.latest_label_version("s") == 0
    np.testing.assert_array_equal(ws.effective_label("s", 0), original)

    edit = original.copy()
    edit[2:6, 3:9] = 4
    n1 = int(np.count_nonzero(edit != original))
    assert ws.save_label_version("s", edit, 0, "ann", "brush", reason="fix roof") == 1
    edit2 = edit.copy()
    edit2[10, 10] = 255
    edit2[11, 11] = (edit[11, 11] + 1) % 7
    assert ws.save_label_version("s", edit2.astype(np.int64), 1, "bob", "accept", checkpoint_id="ck1") == 2

    assert ws.latest_label_version("s") == 2
    np.testing.assert_array_equal(ws.effective_label("s"), edit2)
    np.testing.assert_array_equal(ws.effective_label("s", 1), edit)
    np.testing.assert_array_equal(ws.effective_label("s", 0), original)
    assert (ws.root / "labels/s/v0001.npz").is_file() and (ws.root / "labels/s/v0002.npz").is_file()
    hist = ws.label_history("s")
    assert [(h.version, h.parent_version, h.analyst, h.tool, h.n_changed) for h in hist] == [
        (1, 0, "ann", "brush", n1),
        (2, 1, "bob", "accept", 2),
    ]
    assert hist[0].reason == "fix roof" and hist[1].checkpoint_id == "ck1"
    assert orig_file.read_bytes() == orig_bytes  # the original label is never touched
    with pytest.raises(NotFoundError, match="no label version 5"):
        ws.effective_label("s", 5)


def test_label_save_refuses_bad_input(ws, scene):
    m = ws.effective_label("s")
    for analyst in ("", "   "):
        with pytest.raises(ValueError, match="analyst"):
            ws.save_label_version("s", m, 0, analyst, "brush")
    with pytest.raises(BadInputError, match=r"mask shape \(24, 31\)"):
        ws.save_label_version("s", m[:, 1:], 0, "ann", "brush")
    bad = m.copy()
    bad[0, 0] = 7
    with pytest.raises(BadInputError, match="not class indices"):
        ws.save_label_version("s", bad, 0, "ann", "brush")
    with pytest.raises(BadInputError, match="uint8"):
        ws.save_label_version("s", m.astype(np.float32), 0, "ann", "brush")
    with pytest.raises(NotFoundError):
        ws.save_label_version("nope", m, 0, "ann", "brush")
    assert ws.latest_label_version("s") == 0


def test_conflicting_saves_keep_the_first(ws, scene):
    base = ws.effective_label("s")
    first, second = base.copy(), base.copy()
    first[:5] = 1
    second[:5] = 2
    assert ws.save_label_version("s", first, 0, "alice", "brush") == 1
    with pytest.raises(ConflictError) as err:
        ws.save_label_version("s", second, 0, "bob", "brush")
    msg = str(err.value)
    assert "scene 's'" in msg and "version 0" in msg and "version 1" in msg and "'alice'" in msg
    np.testing.assert_array_equal(ws.effective_label("s"), first)
    assert ws.latest_label_version("s") == 1
    assert not (ws.root / "labels/s/v0002.npz").exists()


def test_failed_file_write_leaves_old_state(ws, scene, monkeypatch):
    from seghz import store

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(store, "atomic_write_bytes", boom)
    edit = ws.effective_label("s")
    edit[3, 3] = (edit[3, 3] + 1) % 7
    with pytest.raises(OSError, match="disk full"):
        ws.save_label_version("s", edit, 0, "ann", "brush")
    assert ws.latest_label_version("s") == 0 and ws.label_history("s") == []


_SAVER = """
import pathlib, sys, time
from seghz.errors import ConflictError
from seghz.store import Workspace
root, tag, value = sys.argv[1], sys.argv[2], int(sys.argv[3])
ws = Workspace(root)
mask = ws.effective_label("s", 0).copy()
mask[:8] = value
pathlib.Path(root, "ready-" + tag).touch()
deadline = time.monotonic() + 20
while not pathlib.Path(root, "go").exists():
    if time.monotonic() > deadline:
        sys.exit(5)
    time.sleep(0.002)
try:
    ws.save_label_version("s", mask, 0, tag, "brush")
except ConflictError as e:
    print("CONFLICT", e)
    sys.exit(3)
print("SAVED")
"""


def test_two_processes_same_base_exactly_one_wins(ws, scene):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    procs = {
        tag: subprocess.Popen([sys.executable, "-c", _SAVER, str(ws.root), tag, str(val)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for tag, val in (("p1", 1), ("p2", 2))
    }
    deadline = time.monotonic() + 30
    while not all((ws.root / f"ready-{t}").exists() for t in procs):
        assert time.monotonic() < deadline, "saver processes did not get ready"
        assert all(p.poll() is None for p in procs.values()), [p.communicate()[0] for p in procs.values()]
        time.sleep(0.01)
    (ws.root / "go").touch()
    outs = {t: p.communicate(timeout=30) for t, p in procs.items()}
    codes = {t: p.returncode for t, p in procs.items()}
    assert sorted(codes.values()) == [0, 3], outs
    winner = next(t for t, c in codes.items() if c == 0)
    loser = next(t for t, c in codes.items() if c == 3)
    assert f"saved by '{winner}'" in outs[loser][0]
    hist = ws.label_history("s")
    assert [(h.version, h.analyst) for h in hist] == [(1, winner)]
    assert (ws.effective_label("s")[:8] == {"p1": 1, "p2": 2}[winner]).all()


def test_data_version_tracks_labels_and_membership(ws, scene):
    v0 = ws.data_version("train")
    assert v0 == ws.data_version("train") and len(v0) == 12
    empty_val = ws.data_version("val")
    ws.save_label_version("s", _changed(ws.effective_label("s")), 0, "ann", "brush")
    v1 = ws.data_version("train")
    assert v1 != v0
    assert ws.data_version("val") == empty_val
    ws.set_split("s", "val")
    assert ws.data_version("train") != v1 and ws.data_version("val") != empty_val


def test_unlabelled_scene_starts_all_ignore(ws):
    img, _ = _make_scene_files(ws, "u", label=False)
    ws.add_scene("U", img, "hz7", scene_id="u")
    m = ws.effective_label("u", 0)
    assert m.shape == (H, W) and (m == 255).all()
    m[3:5, 3:5] = 2
    assert ws.save_label_version("u", m, 0, "ann", "brush") == 1
    assert ws.label_history("u")[0].n_changed == 4


def test_delete_scene_removes_rows_and_files(ws, scene):
    ws.save_label_version("s", _changed(ws.effective_label("s")), 0, "ann", "brush")
    ws.delete_scene("s")
    assert ws.list_scenes() == []
    assert not (ws.root / "labels/s").exists() and not (ws.root / "scenes/s").exists()
    with ws.connect() as conn:
        assert conn.execute("SELECT COUNT(*) FROM label_versions").fetchone()[0] == 0


def test_checkpoints_and_active(ws, tmp_path):
    f = ws.root / "checkpoints" / "m1.pt"
    f.write_bytes(b"x")
    ext = tmp_path / "ext.pt"
    ext.write_bytes(b"y")
    meta = {"arch": "unet", "encoder": "resnet18", "scheme": "hz7", "metrics": {"miou": 0.5}}
    c1 = ws.register_checkpoint(f, meta, name="First model", note="n")
    c2 = ws.register_checkpoint(ext, {**meta, "parent_id": c1}, checkpoint_id="ext-1", job_id="job-1")
    assert c1.startswith("first-model-") and c2 == "ext-1"
    ck1, ck2 = ws.get_checkpoint(c1), ws.get_checkpoint(c2)
    assert ck1.path == "checkpoints/m1.pt" and ck1.metrics == {"miou": 0.5} and ck1.arch == "unet"
    assert ck2.path == str(ext.resolve()) and ck2.parent_id == c1 and ck2.job_id == "job-1"
    assert ws.checkpoint_path(c1) == f and ws.checkpoint_path(ck2) == ext.resolve()
    assert [c.id for c in ws.list_checkpoints()] == [c2, c1]
    assert ck1.scheme == "hz7"
    # a checkpoint file's metadata as read_metadata gives it: the whole scheme block; its name is what is kept
    block = {"name": "hz7", "names": ["a"] * 7, "colors": [[0, 0, 0]] * 7}
    assert ws.get_checkpoint(ws.register_checkpoint(f, {**meta, "scheme": block})).scheme == "hz7"
    with pytest.raises(ConflictError, match="already registered"):
        ws.register_checkpoint(ext, meta, checkpoint_id="ext-1")
    with pytest.raises(BadInputError, match="does not exist"):
        ws.register_checkpoint(tmp_path / "none.pt", meta)
    assert ws.active_checkpoint() is None
    ws.set_active_checkpoint(c2)
    assert ws.active_checkpoint().id == c2
    with pytest.raises(NotFoundError, match="checkpoint 'nope'"):
        ws.set_active_checkpoint("nope")
    assert ws.active_checkpoint().id == c2
    ws.set_active_checkpoint(None)
    assert ws.active_checkpoint() is None


def test_evaluations_cache(ws):
    f = ws.root / "checkpoints" / "m.pt"
    f.write_bytes(b"x")
    cid = ws.register_checkpoint(f, {})
    dv = ws.data_version("val")
    eid = ws.add_evaluation(cid, "val", True, dv, {"miou": 0.61})
    assert ws.find_evaluation(cid, "val", True, dv).result == {"miou": 0.61}
    assert ws.find_evaluation(cid, "val", False, dv) is None
    assert ws.find_evaluation(cid, "val", True, "other") is None
    ev = ws.list_evaluations(cid)
    assert [e.id for e in ev] == [eid] and ev[0].tta is True
    assert ws.list_evaluations("nope") == []


def test_job_rows_and_summary(ws, scene):
    jid = ws.create_job("train", {"epochs": 2})
    job = ws.get_job(jid)
    assert job.status == "queued" and job.config == {"epochs": 2} and job.log_path == f"jobs/{jid}.log"
    assert job.active and not job.cancel_requested
    ws.update_job(jid, status="running", progress=0.5, message="half")
    ws.add_job_metrics(jid, 1, 0, {"loss": 0.9, "acc": 0.2})
    ws.add_job_metrics(jid, 2, 0, {"loss": 0.7})
    rows = ws.job_metrics(jid)
    assert [(r["step"], r["key"], r["value"]) for r in rows] == [(1, "loss", 0.9), (1, "acc", 0.2), (2, "loss", 0.7)]
    assert not ws.cancel_requested(jid)
    ws.request_cancel(jid)
    assert ws.cancel_requested(jid)
    ws.update_job(jid, status="done", result={"ok": True})
    assert ws.get_job(jid).result == {"ok": True}
    with pytest.raises(ValueError, match="unknown field"):
        ws.update_job(jid, colour="red")
    with pytest.raises(ValueError, match="unknown status"):
        ws.update_job(jid, status="exploded")
    with pytest.raises(NotFoundError, match="job 'nope'"):
        ws.update_job("nope", progress=0.1)
    s = ws.summary()
    assert s["scenes"] == {"train": 1, "val": 0, "test": 0, "none": 0, "total": 1}
    assert s["jobs"]["done"] == 1 and s["jobs"]["queued"] == 0
    assert s["label_versions"] == 0 and s["checkpoints"] == 0 and s["active_checkpoint_id"] is None


# ------------------------------------------------------------------------------------------------ checkpoint registry


def _file(ws: Workspace, name: str) -> Path:
    f = ws.root / "checkpoints" / name
    f.write_bytes(b"x")
    return f


def test_registry_lineage_recipe_and_class_metrics(ws):
    meta = {"arch": "Unet", "encoder": "e", "scheme": "hz7", "recipe": {"epochs": 3, "lr": 0.002}, "data_version": "dvT"}
    a = ws.register_checkpoint(_file(ws, "a.pt"), meta, checkpoint_id="a")
    per_class = {"Buildings": {"iou": 0.5, "acc": 0.6, "precision": 0.7, "f1": 0.65, "support": 10},
                 "Water": {"iou": None, "acc": None, "precision": None, "f1": None, "support": 0}}
    b = ws.register_checkpoint(_file(ws, "b.pt"), {"scheme": "hz7"}, checkpoint_id="b", parent_id=a, data_version="dv1",
                               val_data_version="dvV", recipe={"epochs": 1}, val_metrics=per_class)
    c = ws.register_checkpoint(_file(ws, "c.pt"), {"scheme": "hz7", "parent_id": "b"}, checkpoint_id="c")
    ca, cb = ws.get_checkpoint(a), ws.get_checkpoint(b)
    assert ca.recipe == {"epochs": 3, "lr": 0.002} and ca.data_version == "dvT" and ca.val_data_version is None
    assert cb.parent_id == "a" and cb.data_version == "dv1" and cb.val_data_version == "dvV" and cb.recipe == {"epochs": 1}
    assert [k.id for k in ws.lineage(c)] == ["c", "b", "a"]
    assert ws.get_checkpoint(c).recipe == {}
    # per-class scores: stored at registration, looked up by (split, data version)
    got = ws.class_metrics(b, "val", "dvV")
    assert list(got) == ["Buildings", "Water"]
    assert got["Buildings"] == {"iou": 0.5, "acc": 0.6, "precision": 0.7, "f1": 0.65, "support": 10}
    assert got["Water"]["iou"] is None and got["Water"]["support"] == 0
    assert ws.class_metrics(b) == got and ws.class_metrics(b, "val", "other") == {} and ws.class_metrics(a) == {}
    ws.record_class_metrics(b, "val", "dvW", {"Buildings": 0.4, "Water": float("nan")})
    assert ws.class_metrics(b)["Buildings"]["iou"] == 0.4 and ws.class_metrics(b)["Water"]["iou"] is None
    assert ws.class_metrics_versions(b) == ["dvW", "dvV"]
    ws.record_class_metrics(b, "val", "dvW", {"Buildings": 0.45})  # replaces that version's rows
    assert ws.class_metrics(b, "val", "dvW") == {"Buildings": {"iou": 0.45, "acc": None, "precision": None, "f1": None,
                                                               "support": None}}
    with pytest.raises(NotFoundError):
        ws.record_class_metrics("nope", "val", "dv", {"A": 0.1})
    with pytest.raises(ValueError, match="val_data_version"):
        ws.register_checkpoint(_file(ws, "d.pt"), {}, val_metrics={"A": 0.1})


def test_lineage_stops_at_unknown_parent_and_cycles(ws):
    ws.register_checkpoint(_file(ws, "x.pt"), {"parent_id": "/somewhere/parent.safetensors"}, checkpoint_id="x")
    assert [k.id for k in ws.lineage("x")] == ["x"]
    ws.register_checkpoint(_file(ws, "p.pt"), {"parent_id": "q"}, checkpoint_id="p")
    ws.register_checkpoint(_file(ws, "q.pt"), {"parent_id": "p"}, checkpoint_id="q")
    assert [k.id for k in ws.lineage("p")] == ["p", "q"]


def test_promotion_history_and_repeated_rollback(ws):
    for n in "abc":
        ws.register_checkpoint(_file(ws, f"{n}.pt"), {}, checkpoint_id=n)
    with pytest.raises(NotFoundError, match="no active checkpoint"):
        ws.rollback()
    assert ws.rollback_target() is None
    ws.set_active_checkpoint("a", analyst="setup")
    with pytest.raises(NotFoundError, match="nothing to roll back"):
        ws.rollback()  # a was the first active model
    ws.record_activation("b", action="promote", analyst="Ann", verdict={"status": "pass", "offending": []})
    ws.record_activation("c", action="promote", analyst="Bob", reason="better roads", override=True,
                         verdict={"status": "flagged", "offending": [{"class": "Water", "delta": -0.1}]})
    hist = ws.promotion_history()
    assert [(p.action, p.from_id, p.to_id) for p in hist] == [("promote", "b", "c"), ("promote", "a", "b"), ("set", None, "a")]
    assert hist[0].override and hist[0].offending == ["Water"] and hist[0].verdict == "flagged" and hist[0].reason == "better roads"
    assert hist[2].verdict is None and hist[2].gate is None and hist[2].analyst == "setup"
    assert ws.rollback_target() == "b"
    assert ws.rollback(analyst="Ann").id == "b"
    assert ws.rollback_target() == "a"
    assert ws.rollback().id == "a"  # a second rollback walks further back
    assert ws.active_checkpoint().id == "a"
    hist = ws.promotion_history()
    assert [p.action for p in hist] == ["rollback", "rollback", "promote", "promote", "set"]
    assert hist[2].undone_by == hist[1].id and hist[3].undone_by == hist[0].id  # b→c undone first, then a→b
    assert ws.promotion_history(limit=2) == hist[:2]
    # promoting again after a rollback, then rolling back, returns to where we were
    ws.record_activation("c", action="promote")
    assert ws.rollback().id == "a"
    with pytest.raises(ValueError, match="unknown promotion action"):
        ws.record_activation("a", action="bogus")
    with pytest.raises(ConflictError, match="active checkpoint changed"):
        ws.record_activation("b", action="promote", expected_active="c")
    assert ws.active_checkpoint().id == "a"
    ws.set_active_checkpoint(None)
    assert ws.active_checkpoint() is None and ws.promotion_history()[0].to_id is None


def test_schema_migration_from_version_1_keeps_the_workspace(tmp_path):
    """A workspace index written by SegHZ schema version 1 (before the registry) opens, is migrated, keeps its rows."""
    import json

    from seghz.store import _MIGRATIONS

    root = tmp_path / "oldws"
    (root / "checkpoints").mkdir(parents=True)
    (root / "checkpoints" / "m.pt").write_bytes(b"x")
    raw = sqlite3.connect(root / "index.sqlite", isolation_level=None)
    raw.execute("PRAGMA journal_mode = WAL")
    for stmt in _MIGRATIONS[0]:  # the version-1 schema exactly as version-1 code created it
        raw.execute(stmt)
    raw.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    raw.execute("INSERT INTO schema_version (version) VALUES (1)")
    raw.execute("INSERT INTO checkpoints (id, path, name, created_at, metrics) VALUES "
                "('m', 'checkpoints/m.pt', 'old model', '2024-01-01T00:00:00.000+00:00', ?)", (json.dumps({"miou": 0.5}),))
    raw.execute("INSERT INTO settings (key, value) VALUES ('active_checkpoint_id', '\"m\"')")
    raw.execute("INSERT INTO evaluations (checkpoint_id, split, tta, data_version, created_at, result) "
                "VALUES ('m', 'val', 0, 'dv', '2024', '{\"miou\": 0.5}')")
    raw.close()

    ws = Workspace(root)
    assert ws.schema_version() == SCHEMA_VERSION
    ck = ws.get_checkpoint("m")
    assert ck.name == "old model" and ck.metrics == {"miou": 0.5}
    assert ck.recipe == {} and ck.data_version is None and ck.val_data_version is None and ck.train_scenes is None
    assert ck.archived_at is None and not ck.archived and [c.id for c in ws.list_checkpoints()] == ["m"]
    assert ws.active_checkpoint().id == "m"
    assert ws.find_evaluation("m", "val", False, "dv").result == {"miou": 0.5}
    assert ws.promotion_history() == [] and ws.rollback_target() is None
    # the new registry works on the migrated index
    n = ws.register_checkpoint(_file(ws, "n.pt"), {}, checkpoint_id="n", parent_id="m", recipe={"epochs": 2},
                               val_data_version="dv", val_metrics={"Buildings": 0.3})
    ws.record_activation(n, action="promote")
    assert ws.rollback().id == "m"
    assert ws.class_metrics(n)["Buildings"]["iou"] == 0.3
    # reopening is idempotent, and a half-applied migration (a column already there) does not break it
    with ws.transaction() as conn:
        conn.execute("UPDATE schema_version SET version = 1")
    ws2 = Workspace(root)
    assert ws2.schema_version() == SCHEMA_VERSION and ws2.get_checkpoint(n).recipe == {"epochs": 2}
    with ws2.connect() as conn:
        cols = [r[1] for r in conn.execute("PRAGMA table_info(checkpoints)")]
    assert cols.count("recipe") == 1 and "val_data_version" in cols
