"""Tests of seghz.review.noise_matrix (the label-noise matrix counted on reviewed pixels) and its use by the train
job (``noise_from_review``): counts against hand-made edits, the refusals, and a real (tiny) training job."""
from __future__ import annotations

import json

import numpy as np
import pytest

from seghz.data.io import write_index_mask, write_rgb
from seghz.jobs.kinds import noise_matrix_for, train_job
from seghz.jobs.runner import ProgressReporter
from seghz.review.noise_matrix import review_noise
from seghz.store import Workspace
from seghz.train.losses import estimate_transition

H = W = 64


def _scene(ws: Workspace, name: str, label: np.ndarray, split: str = "train") -> str:
    rng = np.random.default_rng(len(name))
    folder = ws.root / "scenes" / name
    write_rgb(folder / "image.png", rng.integers(0, 255, (H, W, 3), dtype=np.uint8))
    write_index_mask(folder / "label.png", label)
    return ws.add_scene(name, folder / "image.png", "hz7", label_path=folder / "label.png", split=split,
                        scene_id=name).id


def _given() -> np.ndarray:
    lbl = np.zeros((H, W), np.uint8)  # left half class 0, right half class 2
    lbl[:, W // 2:] = 2
    return lbl


@pytest.fixture
def ws(tmp_path) -> Workspace:
    return Workspace(tmp_path / "ws")


def test_review_noise_counts_corrections_and_confirmations_of_the_split(ws):
    a = _scene(ws, "a", _given())
    _scene(ws, "b", _given())  # never reviewed: does not count
    _scene(ws, "v", _given(), split="val")  # another split: does not count
    # scene a: the top-left 16×32 block of "0" is really class 3 (corrected); the rest of the top 32 rows confirmed
    fix = np.zeros((H, W), bool)
    fix[:16, :32] = True
    conf = np.zeros((H, W), bool)
    conf[:32] = True
    conf &= ~fix
    ws.save_label_edit(a, 0, "ana", "brush", pixels=np.flatnonzero(fix), values=3, confirm=conf)
    ws.save_label_edit("v", 0, "ana", "brush", pixels=np.arange(10), values=5)
    rn = review_noise(ws, "train", "hz7")
    assert rn.scenes == 1 and rn.reviewed_px == 32 * 64 and rn.corrected_px == 16 * 32
    want = np.zeros((7, 7), int)
    want[0, 0], want[3, 0], want[2, 2] = 16 * 32, 16 * 32, 32 * 32
    assert np.array_equal(rn.counts, want)
    given, reviewed = _given(), ws.effective_label(a)
    t, _ = estimate_transition([given], [reviewed], 7, masks=[ws.trusted_mask(a)])
    assert np.allclose(rn.transition, t)
    # class 3 was given as 0 in its one reviewed region: shrunk towards the pooled rate (1/4), not "always wrong"
    lam = 1 / 21
    assert rn.transition[3, 0] == pytest.approx((lam + (1 - lam) * 0.125) / 1.004, rel=1e-6)  # 4 zeros floored at 1e-3
    assert rn.transition[3, 3] == pytest.approx((1 - lam) * 0.75 / 1.004, rel=1e-6)
    assert rn.problems() == []


def test_reviews_that_only_corrected_are_refused(ws):
    a = _scene(ws, "a", _given())
    fix = np.zeros((H, W), bool)
    fix[:16, :16] = True
    ws.save_label_edit(a, 0, "ana", "brush", pixels=np.flatnonzero(fix), values=3)
    with pytest.raises(ValueError, match=r"cannot count the label-noise matrix .* 'train' split: 100% of the 256 "
                                         r"reviewed pixels were corrected"):
        noise_matrix_for(ws, {"noise_from_review": True, "robust": "forward"}, "hz7")


def test_noise_matrix_for_refusals_and_the_honest_case(ws):
    assert noise_matrix_for(ws, {"robust": "forward"}, "hz7") is None  # not asked for
    with pytest.raises(ValueError, match="set robust='forward'"):
        noise_matrix_for(ws, {"noise_from_review": True}, "hz7")
    a = _scene(ws, "a", _given())
    with pytest.raises(ValueError, match="no reviewed pixels"):
        noise_matrix_for(ws, {"noise_from_review": True, "robust": "forward"}, "hz7")
    # a whole reviewed tile: one block of "0" was really 2 (1/4 of class 2's reviewed pixels), the rest confirmed
    fix = np.zeros((H, W), bool)
    fix[:32, :16] = True
    ws.save_label_edit(a, 0, "ana", "brush", pixels=np.flatnonzero(fix), values=2, confirm=~fix)
    logs: list[str] = []
    m = noise_matrix_for(ws, {"noise_from_review": True, "robust": "forward"}, "hz7", logs.append)
    t = np.array(m)
    assert t.shape == (7, 7) and np.allclose(t.sum(1), 1)
    assert 0.85 < t[0, 0] < 0.9 and 0.85 < t[2, 2] < 0.9 and t[2, 0] > 0.1  # class 2 was sometimes given as 0
    assert t[1, 1] == 1.0  # never reviewed: identity row
    assert "from 4096 reviewed pixels of 1 scene(s) (512 corrected)" in logs[0]


def test_train_job_uses_the_reviewed_noise_matrix(ws):
    a = _scene(ws, "a", _given())
    fix = np.zeros((H, W), bool)
    fix[:32, :16] = True
    ws.save_label_edit(a, 0, "ana", "brush", pixels=np.flatnonzero(fix), values=2, confirm=~fix)
    cfg = {"scheme": "hz7", "arch": "Unet", "encoder": "resnet18", "encoder_weights": None, "epochs": 1,
           "batch_size": 2, "crop_size": 32, "steps_per_epoch": 1, "tile_size": 64, "device": "cpu",
           "class_weights": "none", "dice": False, "robust": "forward", "noise_from_review": True}
    jid = ws.create_job("train", cfg)
    ws.update_job(jid, status="running")
    res = train_job(ws, jid, cfg, ProgressReporter(ws, jid))
    ck = ws.get_checkpoint(res["checkpoint_id"])
    recipe = ck.recipe if isinstance(ck.recipe, dict) else json.loads(ck.recipe)
    t = np.array(recipe["noise_transition"])
    assert t.shape == (7, 7) and t[2, 0] > 0.1 and t[1, 1] == 1.0
    assert any("noise matrix from 4096 reviewed pixels" in line for line in (ws.path(ws.get_job(jid).log_path)).read_text().splitlines())


def test_review_noise_at_a_snapshot_ignores_reviews_saved_after_it(ws):
    """A training job counts its noise matrix on the reviews of its own label snapshot: a correction saved after
    the snapshot (while the job loads) is neither in the labels it trains on nor in the matrix. Before, the matrix
    read the live latest versions."""
    from seghz.jobs.kinds import label_snapshot

    a = _scene(ws, "a", _given())
    fix = np.zeros((H, W), bool)
    fix[:32, :16] = True
    ws.save_label_edit(a, 0, "ana", "brush", pixels=np.flatnonzero(fix), values=2, confirm=~fix)
    snap = label_snapshot(ws, ["train", "val"])
    before = review_noise(ws, "train", "hz7", snapshot=snap)
    # saved after the snapshot: another 16 columns of "0" corrected to class 3
    late = np.zeros((H, W), bool)
    late[32:, :16] = True
    ws.save_label_edit(a, 1, "bo", "brush", pixels=np.flatnonzero(late), values=3)
    live = review_noise(ws, "train", "hz7")
    assert live.counts[3, 0] == 32 * 16  # the live count sees the late correction
    at_snap = review_noise(ws, "train", "hz7", snapshot=snap)
    assert np.array_equal(at_snap.counts, before.counts) and at_snap.counts[3, 0] == 0
    assert np.allclose(at_snap.transition, before.transition)
    m = noise_matrix_for(ws, {"noise_from_review": True, "robust": "forward"}, "hz7", snapshot=snap)
    assert np.allclose(np.array(m), before.transition.round(6))
