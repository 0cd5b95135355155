"""A training or refit job reads the labels of one moment and records exactly that moment's data version.

Before: ``_samples`` read a scene's effective label and its trusted mask in two separate snapshots, and
``train_job`` / ``refit_job`` computed the data version after loading. A correction saved while the job loaded (a
queue verdict, a brush save) could leave the job training on the old label while protecting the new pixels as
trusted, and record a data version claiming the correction was included -- so the "labels changed since" check
(seghz/candidate.py) stayed silent. Now the label versions (and data versions) are taken first and every label and
trusted mask is read at those versions. Each test injects a save between the job's reads (deterministically, via
the job's own image read) and checks the correction is wholly out of the samples and the recorded data version is
the one before the save.
"""
from __future__ import annotations

import numpy as np
import pytest
from test_train_job_followups import CFG
from test_train_job_followups import _scene as scene_of

from seghz.jobs import kinds
from seghz.jobs.runner import ProgressReporter
from seghz.store import Workspace

H = W = 48
NEW = 4  # class the injected correction paints


class _Stop(Exception):
    """Raised by the faked trainer once it has seen what the job gives it."""


def _scene(ws: Workspace, name: str, split: str) -> str:
    return scene_of(ws, name, split, size=H)


@pytest.fixture
def ws(tmp_path) -> Workspace:
    w = Workspace(tmp_path / "ws")
    for name in ("a", "b"):
        _scene(w, name, "train")
    _scene(w, "v", "val")
    # an earlier confirmation on "a", so the scene is already "reviewed" before the race
    w.save_label_edit("a", 0, "Bo", "brush", confirm=np.arange(W))
    return w


def _fix_mask() -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[10:20, 5:40] = True
    return m


def _save_during_loading(monkeypatch, ws: Workspace, scene_id: str) -> dict:
    """Make the first image read of the job (between its label reads) save Ann's correction on ``scene_id``."""
    fired: dict = {}
    real = kinds.read_image

    def read_image(path, *a, **k):
        if not fired:
            fired["version"] = ws.save_label_edit(scene_id, ws.latest_label_version(scene_id), "Ann", "queue-relabel",
                                                  pixels=np.flatnonzero(_fix_mask()), values=NEW)
        return real(path, *a, **k)

    monkeypatch.setattr(kinds, "read_image", read_image)
    return fired


def _wholly_in_or_out(lbl: np.ndarray, trusted: np.ndarray) -> str:
    m = _fix_mask()
    in_label, in_trusted = (lbl[m] == NEW).all(), trusted[m].all()
    out_label, out_trusted = not (lbl[m] == NEW).any(), not trusted[m].any()
    assert (in_label and in_trusted) or (out_label and out_trusted), (
        f"half a correction: {int((lbl[m] == NEW).sum())} of {int(m.sum())} px hold it in the label, "
        f"{int(trusted[m].sum())} are trusted")
    return "in" if in_label else "out"


@pytest.mark.parametrize("target", ["a", "b"])
def test_samples_hold_a_correction_saved_while_loading_wholly_or_not_at_all(ws, monkeypatch, target):
    fired = _save_during_loading(monkeypatch, ws, target)
    samples = kinds._samples(ws, "train", "hz7", trusted=True)
    assert fired, "the save was injected"
    ids = [s.id for s in kinds.labelled_scenes(ws, "train")]
    _img, lbl, trusted = samples[ids.index(target)]
    _wholly_in_or_out(lbl, trusted)
    # every sample is the label (and trusted mask) of one stored version
    for sid, (_i, lb, tr) in zip(ids, samples, strict=True):
        assert any(np.array_equal(lb, ws.effective_label(sid, v)) and np.array_equal(tr, ws.trusted_mask(sid, v))
                   for v in range(ws.latest_label_version(sid) + 1))


def test_samples_read_each_scene_at_the_snapshot_version(ws):
    snap = kinds.label_snapshot(ws, ["train"])
    v = ws.save_label_edit("b", 0, "Ann", "brush", pixels=np.flatnonzero(_fix_mask()), values=NEW)
    assert v == 1 and snap.version("b") == 0 and snap.version("a") == 1
    samples = dict(zip([s.id for s in snap.labelled("train")], kinds._samples(ws, "train", "hz7", trusted=True,
                                                                               snapshot=snap), strict=True))
    assert np.array_equal(samples["b"][1], ws.effective_label("b", 0)) and not samples["b"][2].any()
    assert samples["a"][2][0].all()  # a's confirmation (version 1) is in
    assert snap.data_versions["train"] != ws.data_version("train")


def test_snapshot_data_version_matches_its_versions_when_a_save_lands_between_reads(ws, monkeypatch):
    real = Workspace.data_version
    fired: list[int] = []

    def data_version(self, split=None):
        out = real(self, split)
        if not fired:  # a save right after the data version was read: the snapshot must read again
            fired.append(self.save_label_edit("b", self.latest_label_version("b"), "Ann", "brush",
                                              pixels=np.flatnonzero(_fix_mask()), values=NEW))
        return out

    monkeypatch.setattr(Workspace, "data_version", data_version)
    snap = kinds.label_snapshot(ws, ["train"])
    monkeypatch.setattr(Workspace, "data_version", real)
    assert fired and snap.version("b") == fired[0]
    assert snap.data_versions["train"] == ws.data_version("train")


@pytest.mark.parametrize("target", ["a", "v"])
def test_train_job_records_the_data_version_of_the_labels_it_trained_on(ws, monkeypatch, target):
    dv_train, dv_val = ws.data_version("train"), ws.data_version("val")
    fired = _save_during_loading(monkeypatch, ws, target)
    seen: dict = {}

    def fake_train(cfg, tr, va, out, **kw):
        seen.update(tr=tr, va=va, meta=kw["meta_extra"])
        raise _Stop

    monkeypatch.setattr(kinds, "train", fake_train)
    jid = ws.create_job("train", CFG)
    with pytest.raises(_Stop):
        kinds.train_job(ws, jid, CFG, ProgressReporter(ws, jid))
    assert fired
    meta = seen["meta"]
    if target == "a":
        _img, lbl, trusted = seen["tr"][[s.id for s in kinds.labelled_scenes(ws, "train")].index("a")]
        where = _wholly_in_or_out(lbl, trusted)
    else:
        _img, lbl = seen["va"][0]
        where = "in" if (lbl[_fix_mask()] == NEW).all() else "out"
        assert where == "in" or not (lbl[_fix_mask()] == NEW).any()
    if where == "out":  # the correction came after the snapshot: the checkpoint says so ("labels changed since")
        assert (meta["data_version"], meta["val_data_version"]) == (dv_train, dv_val)
        assert ws.data_version("train" if target == "a" else "val") != (dv_train if target == "a" else dv_val)
    else:
        assert (meta["data_version"], meta["val_data_version"]) == (ws.data_version("train"), ws.data_version("val"))
    assert meta["train_scenes"] == ["a", "b"]


def test_refit_job_records_the_data_version_of_the_labels_it_read(ws, monkeypatch):
    from seghz.models import checkpoint as ckpt
    from seghz.train import refit as refit_mod

    f = ws.root / "checkpoints" / "parent.pt"
    f.write_bytes(b"weights")
    cid = ws.register_checkpoint(f, {"arch": "Unet", "encoder": "resnet18", "scheme": "hz7"}, checkpoint_id="parent")
    monkeypatch.setattr(ckpt, "read_metadata", lambda p: {"scheme": {"name": "hz7"}})
    dv_before = ws.data_version()
    fired = _save_during_loading(monkeypatch, ws, "a")  # lands after the labels were read, before the fit
    seen: dict = {}

    def fake_refit(parent_path, items, out, rcfg, **kw):
        seen.update(items=items, meta=kw["meta_extra"])
        raise _Stop

    monkeypatch.setattr(refit_mod, "refit_head", fake_refit)
    jid = ws.create_job("refit", {"checkpoint_id": cid})
    with pytest.raises(_Stop):
        kinds.refit_job(ws, jid, {"checkpoint_id": cid}, ProgressReporter(ws, jid))
    assert fired
    assert seen["meta"]["data_version"] == dv_before != ws.data_version()
    corrected = seen["items"][0].corrected  # scene "a": its confirmed first row, not Ann's later correction
    assert (corrected[0] != 255).all() and not (corrected[_fix_mask()] == NEW).any()


def test_snapshot_scene_is_the_scene_as_the_snapshot_saw_it(ws):
    """A refit looks its chosen scenes up in its snapshot, not live: a scene moved to another split after the
    snapshot keeps the split the snapshot read (the labels and data version are of that moment), and a scene the
    snapshot does not hold is named in a clear error."""
    snap = kinds.label_snapshot(ws, [None])
    ws.move_scenes({"b": "val"})
    assert snap.scene("b").split == "train" and ws.get_scene("b").split == "val"
    with pytest.raises(ValueError, match="'nope' is not in the workspace's scenes"):
        snap.scene("nope")
    only_train = kinds.label_snapshot(ws, ["train"])
    with pytest.raises(ValueError, match="of the 'train' split"):
        only_train.scene("v")

