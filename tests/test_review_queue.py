"""Noise queue of a scene (seghz.review.queue): building, actions as sparse edits, remembered verdicts."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from seghz.classes import IGNORE, get_scheme
from seghz.errors import BadInputError, ConflictError
from seghz.review import queue as rq
from seghz.store import PIXEL_CONFIRMED, PIXEL_CORRECTED, PIXEL_IGNORED, PIXEL_ORIGINAL, Workspace

HZ7 = get_scheme("hz7")
H = W = 48


class FakePredictor:
    """Confidently predicts ``truth`` (the class map the model believes in)."""

    def __init__(self, truth: np.ndarray):
        self.truth, self.calls = truth, []

    def predict_full(self, image, tta="none", progress=None, return_proba=False, **kw):
        self.calls.append((tta, return_proba))
        pred = np.where(self.truth == IGNORE, 0, self.truth).astype(np.int64)
        proba = np.full((HZ7.num_classes, H, W), 0.01 / (HZ7.num_classes - 1), np.float32)
        np.put_along_axis(proba, pred[None], 0.99, 0)
        return SimpleNamespace(proba=proba, disagreement=np.zeros((H, W), np.float32), mask=pred.astype(np.uint8))


# wrong label blocks (row0, col0, row1, col1) -> the wrong class in the label; the model predicts the truth
A, B, C, D = (5, 5, 11, 11), (30, 30, 35, 38), (20, 2, 26, 9), (12, 40, 20, 46)
BLOCKS = {A: 3, B: 4, C: 5, D: 2}


@pytest.fixture
def scene(tmp_path):
    from seghz.data.io import write_index_mask, write_rgb
    from seghz.data.scenes import import_scene

    ws = Workspace(tmp_path / "ws")
    truth = np.zeros((H, W), np.uint8)  # class 0 left half, class 1 right half
    truth[:, W // 2:] = 1
    truth[40:, :8] = IGNORE
    lbl = truth.copy()
    for (r0, c0, r1, c1), k in BLOCKS.items():
        lbl[r0:r1, c0:c1] = k
    rgb = np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)
    write_rgb(tmp_path / "img.png", rgb)
    write_index_mask(tmp_path / "lbl.png", lbl, HZ7)
    s = import_scene(ws, tmp_path / "img.png", tmp_path / "lbl.png", scheme="hz7", name="q scene", split="train")
    ck = tmp_path / "ws" / "checkpoints" / "fake.safetensors"
    ck.parent.mkdir(parents=True, exist_ok=True)
    ck.write_bytes(b"fake")
    cid = ws.register_checkpoint(ck, {"arch": "FPN", "encoder": "x", "scheme": "hz7"}, checkpoint_id="fake")
    return ws, s.id, cid, FakePredictor(truth), lbl


def build(ws, sid, cid, pred):
    return rq.build_queue(ws, sid, pred, cid, tta="none", min_pixels=4)


def item(q, bbox):
    return next(it for it in q.items if it.bbox == bbox)


def test_build_finds_the_wrong_components_with_their_pixels(scene):
    ws, sid, cid, pred, lbl = scene
    q = build(ws, sid, cid, pred)
    assert pred.calls == [("none", True)]
    assert {it.bbox for it in q.items} == set(BLOCKS)
    a = item(q, A)
    assert a.pixels == 36 and a.indices.size == 36 and a.label_id == 3 and a.predicted_id == 0
    assert a.predicted_class == HZ7.names[0] and a.label_class == HZ7.names[3]
    m = a.mask((H, W))
    assert m[5:11, 5:11].all() and m.sum() == 36
    np.testing.assert_array_equal(a.crop_mask((3, 4, 10, 20), W), m[3:13, 4:24])
    assert q.label_version == 0 and q.checkpoint_id == cid and q.predicted.shape == (H, W)
    assert np.isneginf(q.score[lbl == IGNORE]).all()
    # cached on disk and read back the same
    q2 = rq.load_queue(ws, sid)
    assert q2 is not None and [it.key for it in q2.items] == [it.key for it in q.items]
    np.testing.assert_array_equal(q2.items[0].indices, q.items[0].indices)
    np.testing.assert_array_equal(q2.predicted, q.predicted)
    rq.clear_queue(ws, sid)
    assert rq.load_queue(ws, sid) is None


def test_actions_save_the_right_sparse_edits_and_statuses(scene):
    ws, sid, cid, pred, lbl = scene
    q = build(ws, sid, cid, pred)

    v1 = rq.apply_action(ws, q, item(q, A), "confirm", "Ann")
    h = ws.label_history(sid)[-1]
    assert (h.version, h.tool, h.analyst, h.n_changed, h.n_confirmed, h.checkpoint_id) == (
        v1, "queue-confirm", "Ann", 0, 36, cid)
    st = ws.pixel_status(sid)
    assert (st[5:11, 5:11] == PIXEL_CONFIRMED).all() and (st[:5] == PIXEL_ORIGINAL).all()
    assert ws.trusted_mask(sid)[5:11, 5:11].all()
    np.testing.assert_array_equal(ws.effective_label(sid), lbl)

    # all built on version 0: each later action merges on top of the earlier ones (disjoint pixels)
    v2 = rq.apply_action(ws, q, item(q, B), "accept", "Ann")
    assert v2 == v1 + 1 and ws.label_history(sid)[-1].tool == "queue-accept"
    rq.apply_action(ws, q, item(q, C), "relabel", "Bob", class_index=6)
    assert ws.label_history(sid)[-1].tool == "queue-relabel"
    rq.apply_action(ws, q, item(q, D), "ignore", "Bob")
    assert ws.label_history(sid)[-1].tool == "queue-ignore"
    eff, st = ws.effective_label(sid), ws.pixel_status(sid)
    assert (eff[30:35, 30:38] == 1).all() and (st[30:35, 30:38] == PIXEL_CORRECTED).all()
    assert (eff[20:26, 2:9] == 6).all() and (st[20:26, 2:9] == PIXEL_CORRECTED).all()
    assert (eff[12:20, 40:46] == IGNORE).all() and (st[12:20, 40:46] == PIXEL_IGNORED).all()
    assert int(np.count_nonzero(eff != lbl)) == 40 + 42 + 48  # nothing outside the components changed
    log = rq.verdicts(ws, sid)
    assert [e["action"] for e in log] == ["confirm", "accept", "relabel", "ignore"]
    assert log[2]["class_index"] == 6 and log[0]["bbox"] == list(A) and log[0]["label_version"] == v1
    assert rq.pending_items(ws, q) == []

    with pytest.raises(ValueError):
        rq.action_edit(q, item(q, A), "relabel")
    with pytest.raises(ValueError):
        rq.action_edit(q, item(q, A), "delete")


def test_judged_items_do_not_come_back_unless_the_label_changed(scene):
    ws, sid, cid, pred, _lbl = scene
    q = build(ws, sid, cid, pred)
    a = item(q, A)
    assert a.key in {it.key for it in rq.pending_items(ws, q)}
    rq.apply_action(ws, q, a, "confirm", "Ann")
    assert a.key not in {it.key for it in rq.pending_items(ws, q)}
    # a rebuilt queue (e.g. after a retrain) still flags the region: it stays out; the others stay in
    q2 = build(ws, sid, cid, pred)
    assert any(it.bbox == A for it in q2.items)
    assert {it.bbox for it in rq.pending_items(ws, q2)} == {B, C, D}

    # someone changes some of those label pixels: that part comes back
    px = np.zeros((H, W), bool)
    px[5:11, 5:8] = True
    ws.save_label_edit(sid, ws.latest_label_version(sid), "Bob", "brush", pixels=px, values=2)
    q3 = build(ws, sid, cid, pred)
    pend = {it.bbox for it in rq.pending_items(ws, q3)}
    assert (5, 5, 11, 8) in pend and (5, 8, 11, 11) not in pend  # the untouched confirmed part stays judged


def test_undo_of_an_accept_brings_the_item_back(scene):
    ws, sid, cid, pred, _lbl = scene
    q = build(ws, sid, cid, pred)
    b = item(q, B)
    rq.apply_action(ws, q, b, "accept", "Ann")
    assert b.key not in {it.key for it in rq.pending_items(ws, q)}
    ws.undo_label_edit(sid, "Ann")
    assert b.key in {it.key for it in rq.pending_items(ws, q)}


def test_action_on_pixels_changed_since_the_build_conflicts(scene):
    ws, sid, cid, pred, _lbl = scene
    q = build(ws, sid, cid, pred)
    px = np.zeros((H, W), bool)
    px[6, 6] = True
    ws.save_label_edit(sid, 0, "Bob", "brush", pixels=px, values=2)
    with pytest.raises(ConflictError):
        rq.apply_action(ws, q, item(q, A), "accept", "Ann")
    assert rq.verdicts(ws, sid) == []
    rq.apply_action(ws, q, item(q, B), "accept", "Ann")  # disjoint: merged
    assert ws.latest_label_version(sid) == 2


def test_scheme_mismatch_is_refused(scene):
    ws, sid, _cid, pred, _lbl = scene
    ck = ws.root / "checkpoints" / "other.safetensors"
    ck.write_bytes(b"x")
    other = ws.register_checkpoint(ck, {"arch": "FPN", "encoder": "x", "scheme": "gid15"}, checkpoint_id="other")
    with pytest.raises(ValueError, match="gid15"):
        rq.build_queue(ws, sid, pred, other)


def test_display_helpers():
    r, c, h, w = rq.crop_window(A, (H, W))
    assert r <= 5 and c <= 5 and r + h >= 11 and c + w >= 11 and h >= 24 and r + h <= H
    comp = rq.composite([np.zeros((h, w, 3), np.uint8)] * 4, size=64, gap=4)
    assert comp.shape == (64, 4 * 64 + 12, 3)
    # 2 × 2: panel i at row i // 2, column i % 2, white gaps between
    panels = [np.full((h, w, 3), 10 * (i + 1), np.uint8) for i in range(4)]
    grid = rq.composite(panels, size=64, gap=4, per_row=2)
    assert grid.shape == (2 * 64 + 4, 2 * 64 + 4, 3)
    assert [int(grid[r, c, 0]) for r, c in ((0, 0), (0, 70), (70, 0), (70, 70))] == [10, 20, 30, 40]
    assert (grid[64:68] == 255).all() and (grid[:, 64:68] == 255).all()
    assert rq.composite(panels[:3], size=64, per_row=2).shape == (132, 132, 3)  # the empty 4th cell stays white
    rgb, m = rq.score_rgb(np.array([[0.9, -np.inf], [0.1, 0.5]], np.float32))
    assert m.tolist() == [[True, False], [False, True]] and rgb.shape == (2, 2, 3)


def test_held_out_scoring_flags_a_flip_the_model_absorbed(tmp_path):
    """build_queue(held_out=True) scores the scene with the head refitted on the OTHER scenes' labels: the flip
    that the (noisy-trained) checkpoint learned is suspicious again; the scoring is recorded with the queue."""
    import torch
    from helpers_core import colour_folder

    from seghz.data.io import read_pair
    from seghz.data.scenes import import_scene
    from seghz.infer.engine import Predictor
    from seghz.models.checkpoint import save_checkpoint
    from seghz.models.registry import build_model
    from seghz.review.crossfit import held_out_head

    torch.set_num_threads(1)
    images, labels = colour_folder(tmp_path / "data", n=3)
    ws = Workspace(tmp_path / "ws")
    sids = [import_scene(ws, images / f"c{i}.png", labels / f"c{i}.png", scheme="hz7", name=f"c{i}", split="train").id
            for i in range(3)]
    torch.manual_seed(0)
    base = save_checkpoint(tmp_path / "base.safetensors", build_model("Segformer", "tu-efficientnet_lite0", HZ7.num_classes),
                           {"arch": "Segformer", "encoder": "tu-efficientnet_lite0", "num_classes": HZ7.num_classes,
                            "scheme": HZ7.to_json(), "normalization": {"mean": [0.5] * 3, "std": [0.5] * 3},
                            "tile_size": 64})
    pairs = [read_pair(images / f"c{i}.png", labels / f"c{i}.png", HZ7) for i in range(3)]
    noisy = held_out_head(base, pairs, ws.root / "checkpoints" / "noisy.safetensors", steps=100, tile=64)
    cid = ws.register_checkpoint(noisy, {"arch": "Segformer", "encoder": "tu-efficientnet_lite0", "scheme": "hz7"},
                                 checkpoint_id="noisy")
    pred, _ = Predictor.from_checkpoint(noisy, "cpu")
    flip = np.zeros((48, 48), bool)
    flip[:24] = True
    q_in = rq.build_queue(ws, sids[0], pred, cid, save=False)
    q_out = rq.build_queue(ws, sids[0], pred, cid, held_out=True)
    assert q_in.scoring == "in-sample" and q_out.scoring == "held-out head (2 scene(s))"
    assert q_out.score[flip].mean() > q_in.score[flip].mean() + 0.2
    top = q_out.items[0]
    assert top.bbox == (0, 0, 24, 48) and top.label_class == "Buildings" and top.predicted_class == "Green_land"
    assert rq.load_queue(ws, sids[0]).scoring == q_out.scoring  # persisted with the queue
    # after a retrain the saved queues are re-ranked with the new checkpoint, keeping TTA/threshold/scoring
    cid2 = ws.register_checkpoint(base, {"arch": "Segformer", "encoder": "tu-efficientnet_lite0", "scheme": "hz7"},
                                  checkpoint_id="retrained")
    logs: list[str] = []
    assert rq.rerank_queues(ws, cid2, device="cpu", log=logs.append) == [sids[0]]
    q2 = rq.load_queue(ws, sids[0])
    assert q2.checkpoint_id == "retrained" and q2.scoring == q_out.scoring and q2.tta == "none"
    assert any("re-ranked" in line for line in logs)
    # no other labelled scene of the scheme: a real scene is scored in-sample and says why (tests/
    # test_heldout_real_scenes.py), a synthetic one gets a clear error
    ws2 = Workspace(tmp_path / "ws2")
    s2 = import_scene(ws2, images / "c0.png", labels / "c0.png", scheme="hz7", name="alone", split="train",
                      synthetic=True)
    ck2 = ws2.register_checkpoint(noisy, {"arch": "Segformer", "encoder": "tu-efficientnet_lite0", "scheme": "hz7"},
                                  checkpoint_id="noisy")
    with pytest.raises(BadInputError, match="OTHER labelled scene"):
        rq.build_queue(ws2, s2.id, pred, ck2, held_out=True)
