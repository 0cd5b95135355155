"""What a training job does after its last step: a late cancel still cancels it (nothing registered), and the
analyst's noise queues are re-ranked only when the new checkpoint became the active model.

Real (tiny) training jobs on two synthetic scenes; the queue re-ranking itself is recorded, not run (it is
tested in tests/test_review_queue.py).
"""
from __future__ import annotations

import numpy as np
import pytest

import seghz.review.queue as rq
from seghz.data.io import write_index_mask, write_rgb
from seghz.jobs import kinds
from seghz.jobs.runner import JobCancelled, ProgressReporter
from seghz.store import Workspace

H = W = 64
CFG = {"scheme": "hz7", "arch": "Unet", "encoder": "resnet18", "encoder_weights": None, "epochs": 1, "batch_size": 2,
       "crop_size": 32, "steps_per_epoch": 1, "tile_size": 64, "device": "cpu", "class_weights": "none",
       "dice": False}


def _scene(ws: Workspace, name: str, split: str, size: int = H) -> str:
    """A size×size scene: random image, label class 2 on its right half, class 0 on its left."""
    rng = np.random.default_rng(len(name))
    folder = ws.root / "scenes" / name
    write_rgb(folder / "image.png", rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    lbl = np.zeros((size, size), np.uint8)
    lbl[:, size // 2:] = 2
    write_index_mask(folder / "label.png", lbl)
    return ws.add_scene(name, folder / "image.png", "hz7", label_path=folder / "label.png", split=split,
                        scene_id=name).id


@pytest.fixture
def ws(tmp_path) -> Workspace:
    w = Workspace(tmp_path / "ws")
    _scene(w, "a", "train")
    _scene(w, "v", "val")
    return w


@pytest.fixture
def reranked(monkeypatch) -> list[str]:
    calls: list[str] = []
    monkeypatch.setattr(rq, "rerank_queues", lambda ws, cid, **kw: calls.append(cid) or ["a"])
    return calls


def _log(ws, jid) -> str:
    return ws.path(ws.get_job(jid).log_path).read_text()


def test_a_cancel_during_the_final_save_cancels_the_job_and_registers_nothing(ws, monkeypatch, reranked):
    real_train = kinds.train
    jid = ws.create_job("train", CFG)
    ws.update_job(jid, status="running")

    def train_then_cancel(*a, **kw):  # the analyst presses Cancel while the last validation/save runs
        out = real_train(*a, **kw)
        ws.request_cancel(jid)
        return out

    monkeypatch.setattr(kinds, "train", train_then_cancel)
    progress = ProgressReporter(ws, jid)
    progress.check_cancel()  # a recent poll: only a forced read can see the late cancel
    with pytest.raises(JobCancelled):
        kinds.train_job(ws, jid, CFG, progress)
    assert ws.list_checkpoints() == [] and reranked == []
    assert (ws.root / "checkpoints" / f"{jid}.safetensors").is_file()  # kept, as after a cancel mid-epoch
    assert "cancelled after training" in _log(ws, jid) and "not registered" in _log(ws, jid)


def test_a_candidate_that_is_not_promoted_leaves_the_queues_with_the_active_model(ws, reranked):
    first = ws.create_job("train", {**CFG, "auto_promote": True})
    ws.update_job(first, status="running")
    res1 = kinds.train_job(ws, first, {**CFG, "auto_promote": True}, ProgressReporter(ws, first))
    assert res1["promoted"] and ws.active_checkpoint().id == res1["checkpoint_id"]
    assert reranked == [res1["checkpoint_id"]] and res1["queues_reranked"] == ["a"]  # active now: re-ranked

    second = ws.create_job("train", CFG)  # no auto-promotion: a candidate only
    ws.update_job(second, status="running")
    res2 = kinds.train_job(ws, second, CFG, ProgressReporter(ws, second))
    assert not res2["promoted"] and res2["queues_reranked"] == []
    assert res1["val_split"] == res2["val_split"] == CFG.get("val_split", "val")  # the split the gate scored on
    assert reranked == [res1["checkpoint_id"]]  # not called again
    assert (f"the saved noise queues stay with the active model {res1['checkpoint_id']}; promote "
            f"{res2['checkpoint_id']}") in _log(ws, second)
