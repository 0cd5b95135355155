"""Region-wise label refinement from the model's early-learning predictions (seghz.train.refine, issue 4).

Hand-computed refine_labels cases on synthetic probability maps, the refinement schedule, the batched prediction,
config validation, and tiny CPU trainings (FPN + mobilenetv3_small_050) on a colour-coded data set where one red
square is labelled green: the refinement must correct it, resume must continue with the same refined labels, and
every refinement must start from the original labels.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_core import DDP_FLIPPED_SQUARE_HEAD, colour_scene, run_two_gloo_ranks, tiny_train_config, torch_one_thread  # noqa: F401 (fixture)

from seghz.train import refine as refine_mod
from seghz.train import trainer as trainer_mod
from seghz.train.augment import preload
from seghz.train.form import form_state_from_config
from seghz.train.refine import (
    RefineParams,
    component_table,
    confident_noise_rates,
    drop_components,
    iter_probs,
    predict_probs,
    refine_epochs,
    refine_labels,
    select_drops,
)
from seghz.train.state import TrainStateError, read_state_info, state_path
from seghz.train.trainer import TrainCancelled, TrainConfig, refine_path, train

pytestmark = pytest.mark.usefixtures("torch_one_thread")

REPO = Path(__file__).resolve().parents[1]
C = 3


def _probs(h: int, w: int, base=(0.9, 0.05, 0.05)) -> np.ndarray:
    p = np.empty((C, h, w), np.float32)
    for c in range(C):
        p[c] = base[c]
    return p


def _set(p: np.ndarray, win, vals) -> None:
    for c in range(C):
        p[c][win] = vals[c]


NO_PIXEL_RULE = RefineParams(min_px=16, conf=0.5, keep=0.2, ignore_conf=None)


# ---------------------------------------------------------------- refine_labels: hand-computed cases


def test_flipped_square_is_relabelled_exactly():
    given = np.zeros((20, 20), np.uint8)
    given[2:8, 2:8] = 1  # a flipped component: truly class 0
    p = _probs(20, 20)  # the model says 0 everywhere (p0 = 0.9, p1 = 0.05)
    out, st = refine_labels(given, p, None, RefineParams())
    assert (out == 0).all()
    assert st == {"labelled": 400, "relabelled": 36, "ignored": 0, "regions": 1}
    assert (given[2:8, 2:8] == 1).all()  # the input is not modified


def test_region_below_min_px_is_not_relabelled_but_the_pixel_rule_may_ignore_it():
    given = np.zeros((20, 20), np.uint8)
    given[2:5, 2:5] = 1  # 9 px < 16
    given[10:14, 10:14] = 1  # 16 px == min_px: relabelled
    p = _probs(20, 20)
    out, st = refine_labels(given, p, None, NO_PIXEL_RULE)
    assert (out[2:5, 2:5] == 1).all() and (out[10:14, 10:14] == 0).all()
    assert st["relabelled"] == 16 and st["ignored"] == 0
    # pixel rule: p(given) = 0.02 < 0.05 and max p = 0.95 >= 0.9 -> ignore (not relabelled)
    _set(p, np.s_[2:5, 2:5], (0.95, 0.02, 0.03))
    out, st = refine_labels(given, p, None, RefineParams(min_px=16, ignore_conf=0.9))
    assert (out[2:5, 2:5] == 255).all() and (out[10:14, 10:14] == 0).all()
    assert st["ignored"] == 9 and st["relabelled"] == 16
    # max p 0.95 < ignore_conf 0.96: kept
    out, _ = refine_labels(given, p, None, RefineParams(min_px=16, ignore_conf=0.96))
    assert (out[2:5, 2:5] == 1).all()


def test_keep_and_conf_thresholds_are_on_the_region_means():
    given = np.zeros((20, 20), np.uint8)
    given[2:8, 2:8] = 1
    p = _probs(20, 20)
    _set(p, np.s_[2:8, 2:8], (0.55, 0.25, 0.20))  # argmax 0, but mean p[given] = 0.25 >= keep 0.2: untouched
    out, st = refine_labels(given, p, None, NO_PIXEL_RULE)
    assert (out == given).all() and st["relabelled"] == 0
    _set(p, np.s_[2:8, 2:8], (0.45, 0.15, 0.40))  # mean p[new] = 0.45 < conf 0.5: untouched
    out, _ = refine_labels(given, p, None, NO_PIXEL_RULE)
    assert (out == given).all()
    # half the region is confident (0.9 / 0.05), half weak (0.4 / 0.3): mean p0 = 0.65 >= 0.5 and mean p1 = 0.175 <
    # 0.2, so the WHOLE region changes (a per-pixel rule would keep the weak half)
    _set(p, np.s_[2:8, 2:8], (0.9, 0.05, 0.05))
    _set(p, np.s_[2:8, 5:8], (0.4, 0.3, 0.3))
    out, st = refine_labels(given, p, None, NO_PIXEL_RULE)
    assert (out == 0).all() and st["relabelled"] == 36
    # keep = 0.17 < 0.175: untouched
    out, _ = refine_labels(given, p, None, RefineParams(min_px=16, conf=0.5, keep=0.17, ignore_conf=None))
    assert (out == given).all()


def test_trusted_and_ignore_pixels_are_never_changed():
    given = np.zeros((20, 20), np.uint8)
    given[2:8, 2:8] = 1
    given[15:20, :] = 255
    trusted = np.zeros((20, 20), bool)
    trusted[2:8, 2:5] = True  # the left half of the flipped square is trusted (18 px); the right half is 18 px
    p = _probs(20, 20, (0.96, 0.02, 0.02))  # the pixel rule would ignore any pixel labelled 1
    out, st = refine_labels(given, p, trusted, RefineParams())
    assert (out[2:8, 2:5] == 1).all()  # trusted: kept
    assert (out[2:8, 5:8] == 0).all()  # the untrusted rest: relabelled
    assert (out[15:20] == 255).all()  # ignore stays ignore although the model is sure it is class 0
    assert st == {"labelled": 300, "relabelled": 18, "ignored": 0, "regions": 1}


def test_merged_component_only_the_flipped_part_is_relabelled():
    """A real class-2 field (left) and, touching it, a square of true class 0 flipped to 2: one given component of
    class 2. The model calls the square 0 and the field 2, so only the square changes."""
    given = np.zeros((20, 20), np.uint8)
    given[:, :8] = 2  # real class-2 field
    given[5:11, 8:14] = 2  # flipped square, 8-connected to the field: one component of class 2
    p = _probs(20, 20)
    _set(p, np.s_[:, :8], (0.05, 0.05, 0.9))
    out, st = refine_labels(given, p, None, RefineParams())
    expect = np.zeros((20, 20), np.uint8)
    expect[:, :8] = 2
    assert (out == expect).all()
    assert st["relabelled"] == 36 and st["regions"] == 1


def test_two_pieces_of_one_component_are_decided_separately():
    given = np.full((20, 20), 1, np.uint8)  # one component of class 1
    p = _probs(20, 20, (0.05, 0.9, 0.05))
    _set(p, np.s_[0:5, 0:5], (0.9, 0.05, 0.05))  # 25 px called 0, confident
    _set(p, np.s_[10:15, 10:15], (0.6, 0.3, 0.1))  # 25 px called 0, but p[1] = 0.3 >= keep
    out, st = refine_labels(given, p, None, NO_PIXEL_RULE)
    assert (out[0:5, 0:5] == 0).all() and (out[10:15, 10:15] == 1).all()
    assert st["relabelled"] == 25 and st["regions"] == 1


def test_refinement_starts_from_the_given_labels_each_time():
    given = np.zeros((20, 20), np.uint8)
    given[2:8, 2:8] = 1
    p1 = _probs(20, 20)
    first, _ = refine_labels(given, p1, None, NO_PIXEL_RULE)
    assert (first == 0).all()
    p2 = _probs(20, 20, (0.05, 0.9, 0.05))  # a later model agrees with the given label 1 there... and everywhere
    _set(p2, np.s_[8:20, :], (0.3, 0.3, 0.4))
    second, _ = refine_labels(given, p2, None, NO_PIXEL_RULE)
    assert (second[2:8, 2:8] == 1).all()  # back to the given label: the first refinement does not carry over
    with pytest.raises(ValueError, match="match"):
        refine_labels(given, p1[:, :10], None)
    with pytest.raises(ValueError, match="class index"):
        refine_labels(np.full((20, 20), 3, np.uint8), p1, None)


@pytest.mark.parametrize(("epochs", "start", "every", "expect"), [
    (10, 0.4, 1, [4, 5, 6, 7, 8, 9]), (10, 0.4, 2, [4, 6, 8]), (4, 0.5, 1, [2, 3]), (5, 0.5, 1, [3, 4]),
    (1, 0.4, 1, []), (3, 0.0, 1, [1, 2]), (6, 0.9, 1, []),
])
def test_refine_epochs(epochs, start, every, expect):
    assert refine_epochs(epochs, start, every) == expect


# ---------------------------------------------------------------- prediction


class _ColourNet(torch.nn.Module):
    """A 1×1 conv 'model' (3 classes) with a BatchNorm, to see the train/eval mode switch."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(3)

    def forward(self, x):
        return self.bn(self.conv(x))


def test_predict_probs_batched_flip_and_large_images():
    model = _ColourNet().train()
    norm = {"mean": [0.5] * 3, "std": [0.5] * 3}
    rs = np.random.RandomState(0)
    imgs = [rs.randint(0, 256, (40, 50, 3), np.uint8) for _ in range(3)] + [rs.randint(0, 256, (70, 70, 3), np.uint8)]
    got = dict(iter_probs(model, imgs, norm, "cpu", batch_size=2, max_side=64, tile=64))
    assert model.training and sorted(got) == [0, 1, 2, 3]
    for i, img in enumerate(imgs):
        p = got[i]
        assert p.shape == (3, *img.shape[:2]) and p.dtype == np.float32
        assert np.allclose(p.sum(0), 1, atol=1e-5)
    # reference for a batched one: eval model on the (padded) image and its flip
    model.eval()
    x = torch.from_numpy(imgs[1]).permute(2, 0, 1)[None].float() / 255
    x = torch.nn.functional.pad((x - 0.5) / 0.5, (0, 14, 0, 24), mode="reflect")
    with torch.no_grad():
        ref = (model(x).softmax(1) + model(x.flip(3)).softmax(1).flip(3))[0, :, :40, :50] / 2
    model.train()
    assert np.allclose(got[1], ref.numpy(), atol=1e-5)
    one = predict_probs(model, imgs[1], norm, "cpu", flip=False)
    assert model.training and not np.allclose(one, got[1], atol=1e-4)  # no flip: another average


# ---------------------------------------------------------------- drop_components: hand-computed cases

DROP = RefineParams(min_px=16, rule="drop", max_drop=1.0)  # no class quota in the hand cases


def test_drop_ignores_a_whole_component_the_model_pools_to_another_class():
    given = np.zeros((20, 20), np.uint8)
    given[2:8, 2:8] = 1  # a flipped component: truly class 0
    p = _probs(20, 20)
    _set(p, np.s_[2:8, 2:5], (0.3, 0.6, 0.1))  # the model agrees with the given class on half of it ...
    # ... and not on the other half (0.9 / 0.05): component means p0 = 0.6, p1 = 0.325 -> class 0 wins: dropped
    out, st = drop_components(given, p, None, DROP)
    expect = np.zeros((20, 20), np.uint8)
    expect[2:8, 2:8] = 255
    assert (out == expect).all()
    assert st == {"labelled": 400, "relabelled": 0, "ignored": 36, "regions": 1}
    assert (given[2:8, 2:8] == 1).all()  # the input is not modified


def test_drop_keeps_a_component_whose_mean_still_prefers_its_class():
    """Pixel-wise the model disagrees on 16 of 36 pixels, but pooled over the component the given class wins."""
    given = np.zeros((20, 20), np.uint8)
    given[2:8, 2:8] = 1
    p = _probs(20, 20)
    _set(p, np.s_[2:8, 2:8], (0.1, 0.8, 0.1))
    _set(p, np.s_[2:6, 2:6], (0.55, 0.4, 0.05))  # 16 px called 0; means: p1 = (20·0.8 + 16·0.4)/36 = 0.62 > p0
    out, st = drop_components(given, p, None, DROP)
    assert (out == given).all() and st["ignored"] == 0 and st["regions"] == 0


def test_drop_min_px_trusted_and_ignore():
    given = np.zeros((20, 20), np.uint8)
    given[2:8, 2:8] = 1  # 36 px, flipped
    given[12:15, 12:15] = 2  # 9 px, flipped, below min_px: kept
    given[17:20, :] = 255
    trusted = np.zeros((20, 20), bool)
    trusted[2:8, 2:4] = True  # 12 trusted px of the flipped square: never dropped
    p = _probs(20, 20, (0.96, 0.02, 0.02))
    out, st = drop_components(given, p, trusted, DROP)
    assert (out[2:8, 2:4] == 1).all() and (out[2:8, 4:8] == 255).all()
    assert (out[12:15, 12:15] == 2).all()
    assert (out[17:20] == 255).all() and (out[:17] != 255).sum() == 17 * 20 - 24
    assert st == {"labelled": 340, "relabelled": 0, "ignored": 24, "regions": 1}


def test_drop_decides_each_component_of_a_class_separately():
    given = np.zeros((20, 20), np.uint8)
    given[1:6, 1:6] = 2  # component A of class 2: the model agrees
    given[12:18, 12:18] = 2  # component B of class 2 (not 8-connected to A): the model calls it 1
    p = _probs(20, 20)
    _set(p, np.s_[1:6, 1:6], (0.1, 0.1, 0.8))
    _set(p, np.s_[12:18, 12:18], (0.1, 0.7, 0.2))
    out, st = drop_components(given, p, None, DROP)
    assert (out[1:6, 1:6] == 2).all() and (out[12:18, 12:18] == 255).all()
    assert st["regions"] == 1 and st["ignored"] == 36


def test_drop_quota_keeps_each_class_from_collapsing():
    """Class 1 holds 100 labelled px in three components; the model prefers class 0 on two of them. With a quota
    of half the class, only the most doubted one (lowest p1 / p0) goes."""
    given = np.zeros((30, 30), np.uint8)
    given[1:7, 1:7] = 1  # A: 36 px, p1 / p0 = 0.05 / 0.9
    given[10:16, 10:16] = 1  # B: 36 px, p1 / p0 = 0.3 / 0.6 = 0.5
    given[20:24, 20:27] = 1  # C: 28 px, the model agrees
    p = _probs(30, 30)
    _set(p, np.s_[10:16, 10:16], (0.6, 0.3, 0.1))
    _set(p, np.s_[20:24, 20:27], (0.1, 0.8, 0.1))
    half = RefineParams(min_px=16, rule="drop", max_drop=0.5)
    out, st = drop_components(given, p, None, half)
    assert (out[1:7, 1:7] == 255).all() and (out[10:16, 10:16] == 1).all() and (out[20:24, 20:27] == 1).all()
    assert st["regions"] == 1 and st["ignored"] == 36
    out, st = drop_components(given, p, None, DROP)  # no quota: both doubted components go
    assert (out[10:16, 10:16] == 255).all() and st["regions"] == 2 and st["ignored"] == 72
    # the quota is per class: class 0 (800 px, none doubted) does not lend its share to class 1
    assert (out == 0).sum() == (given == 0).sum()


def test_drop_relabels_only_the_confident_components_when_asked():
    """With ``relabel_conf`` a doubted component whose top class reaches it takes that class; a doubted but
    unconfident one is still ignored; the quota counts both."""
    given = np.zeros((20, 20), np.uint8)
    given[1:7, 1:7] = 1  # the model: class 0 at 0.9 -> relabelled to 0
    given[10:16, 10:16] = 2  # the model: class 1 at 0.45 (p2 = 0.2) -> ignored
    p = _probs(20, 20)
    _set(p, np.s_[10:16, 10:16], (0.35, 0.45, 0.2))
    out, st = drop_components(given, p, None, RefineParams(min_px=16, rule="drop", max_drop=1.0, relabel_conf=0.6))
    assert (out[1:7, 1:7] == 0).all() and (out[10:16, 10:16] == 255).all()
    assert st == {"labelled": 400, "relabelled": 36, "ignored": 36, "regions": 2}
    trusted = np.zeros((20, 20), bool)
    trusted[1:7, 1:4] = True
    out, _ = drop_components(given, p, trusted, RefineParams(min_px=16, rule="drop", max_drop=1.0, relabel_conf=0.6))
    assert (out[1:7, 1:4] == 1).all() and (out[1:7, 4:7] == 0).all()  # trusted pixels keep their label


def test_select_drops_orders_by_doubt_and_respects_each_class_quota():
    doubts = [("a", 1, 30, 0.4), ("b", 1, 30, 0.1), ("c", 1, 30, 0.2), ("d", 2, 10, 0.9)]
    assert select_drops(doubts, {1: 100, 2: 10}, 0.6) == {"b", "c"}  # 60 of 100; "a" would make 90
    assert select_drops(doubts, {1: 100, 2: 10}, 1.0) == {"a", "b", "c", "d"}
    assert select_drops(doubts, {1: 100, 2: 10}, 0.25) == set()  # a single 30-px component exceeds 25 px


def test_refine_samples_drop_quota_is_over_the_whole_training_set(monkeypatch):
    """Image 0 holds only a doubted class-1 component (36 px), image 1 a less doubted one (36 px) and an agreed one
    (28 px): 100 px of class 1 in all. The quota of half of the class is taken over both images: image 0's
    component goes (36 ≤ 50 although it is all of image 0's class 1), image 1's does not (72 > 50)."""
    g0 = np.zeros((20, 20), np.uint8)
    g0[1:7, 1:7] = 1
    g1 = np.zeros((20, 20), np.uint8)
    g1[1:7, 1:7] = 1
    g1[10:14, 10:17] = 1
    p0 = _probs(20, 20)  # image 0: p1 / p0 = 0.05 / 0.9 on the component
    p1 = _probs(20, 20)
    _set(p1, np.s_[1:7, 1:7], (0.6, 0.3, 0.1))  # ratio 0.5
    _set(p1, np.s_[10:14, 10:17], (0.1, 0.8, 0.1))
    probs = {0: p0, 1: p1}
    monkeypatch.setattr(refine_mod, "iter_probs", lambda model, images, *a, **kw: ((i, probs[i]) for i in range(len(images))))
    img = np.zeros((20, 20, 3), np.uint8)
    out, st = refine_mod.refine_samples(None, [(img, g0), (img, g1)], {}, "cpu", RefineParams(min_px=16, rule="drop"))
    assert (out[0][1:7, 1:7] == 255).all() and (out[0] != 255).sum() == 400 - 36
    assert (out[1] == g1).all()
    assert st["ignored"] == 36 and st["regions"] == 1 and st["relabelled"] == 0
    assert st["refine_ignored_px"] == pytest.approx(36 / 800) and st["refined_px"] == 0


# ---------------------------------------------------------------- confident-learning quota (quota="noise")


def test_confident_noise_rates_by_hand():
    """Two classes, five 10-px components. Thresholds (mean self-confidence): t0 = (0.9 + 0.8 + 0.2) / 3 = 0.633,
    t1 = (0.9 + 0.7) / 2 = 0.8. Class 0: two components confidently 0, one ([0.2, 0.8]) confidently 1 (0.8 ≥ t1) ->
    rate 10 / 30. Class 1: [0.1, 0.9] confidently 1; [0.3, 0.7] reaches no threshold and is not counted -> rate 0."""
    g = np.array([0, 0, 0, 1, 1])
    px = np.full(5, 10.0)
    mean = np.array([[0.9, 0.1], [0.8, 0.2], [0.2, 0.8], [0.1, 0.9], [0.3, 0.7]])
    assert confident_noise_rates(g, px, mean, 2) == pytest.approx([1 / 3, 0.0])
    # pixel weights count: the off-diagonal component weighs 30 px -> 30 / 50; t1 is unchanged (class 1's own)
    assert confident_noise_rates(g, np.array([10, 10, 30, 10, 10.0]), mean, 2)[0] == pytest.approx(30 / 50)
    # a component confident in two classes counts for the more probable one. Given 0: A [0.4, 0.3, 0.3],
    # B [0.42, 0.5, 0.08], C [0.38, 0.31, 0.31] -> t0 = 0.4; given 1: D [0.2, 0.5, 0.3] -> t1 = 0.5; class 2 has no
    # component (threshold never reached). A -> (0, 0); B reaches t0 and t1 and counts for 1; C reaches none.
    g3 = np.array([0, 0, 0, 1])
    m3 = np.array([[0.4, 0.3, 0.3], [0.42, 0.5, 0.08], [0.38, 0.31, 0.31], [0.2, 0.5, 0.3]])
    assert confident_noise_rates(g3, np.full(4, 5.0), m3, 3) == pytest.approx([0.5, 0.0, 0.0])


def _noise_scene():
    """Class 0 holds 70 px in three components (A agreed, B flipped and confidently class 1, D doubted but not
    confidently anything); class 1 one agreed component. Means: A [0.9, 0.1] 40 px, B [0.2, 0.8] 20 px,
    D [0.45, 0.55] 10 px, C (class 1) [0.2, 0.8] 40 px."""
    given = np.full((30, 30), 255, np.uint8)
    given[0:4, 0:10] = 0  # A, 40 px
    given[10:14, 0:5] = 0  # B, 20 px
    given[20:22, 0:5] = 0  # D, 10 px
    given[10:14, 20:30] = 1  # C, 40 px
    p = np.zeros((2, 30, 30), np.float32)
    for win, v in ((np.s_[0:4, 0:10], (0.9, 0.1)), (np.s_[10:14, 0:5], (0.2, 0.8)), (np.s_[20:22, 0:5], (0.45, 0.55)),
                   (np.s_[10:14, 20:30], (0.2, 0.8))):
        p[0][win], p[1][win] = v
    return given, p


def test_component_table_lists_every_component():
    given, p = _noise_scene()
    g, px, mean = component_table(given, p, None, 5)
    order = np.lexsort((px, g))
    assert g[order].tolist() == [0, 0, 0, 1] and px[order].tolist() == [10, 20, 40, 40]
    assert mean[order] == pytest.approx(np.array([[0.45, 0.55], [0.2, 0.8], [0.9, 0.1], [0.2, 0.8]]))
    g, px, _ = component_table(given, p, None, 15)  # min_px drops D
    assert sorted(px.tolist()) == [20, 40, 40]


def test_drop_noise_quota_follows_the_estimated_noise_rate():
    """t0 = (40·0.9 + 20·0.2 + 10·0.45) / 70 = 0.636, t1 = 0.8. Class 0: A counted as 0, B as 1 (0.8 ≥ t1), D not
    counted (0.55 < t1, 0.45 < t0) -> estimated rate 20 / 60 = 1/3 of class 0's 70 px = 23.3 px: B (the most doubted,
    20 px) goes, D (10 more) does not fit. The fixed half-class quota (35 px) drops both."""
    given, p = _noise_scene()
    fixed = RefineParams(min_px=5, rule="drop", max_drop=0.5)
    out, st = drop_components(given, p, None, fixed)
    assert (out[10:14, 0:5] == 255).all() and (out[20:22, 0:5] == 255).all() and st["regions"] == 2
    noise = RefineParams(min_px=5, rule="drop", max_drop=0.5, quota="noise")
    out, st = drop_components(given, p, None, noise)
    assert (out[10:14, 0:5] == 255).all() and (out[20:22, 0:5] == 0).all() and (out[0:4, 0:10] == 0).all()
    assert st["regions"] == 1 and st["ignored"] == 20
    # the estimate is capped at max_drop: with 0.2 (14 px) B no longer fits, and the greedy order takes D (10 px)
    out, st = drop_components(given, p, None, RefineParams(min_px=5, rule="drop", max_drop=0.2, quota="noise"))
    assert (out[10:14, 0:5] == 0).all() and (out[20:22, 0:5] == 255).all() and st["regions"] == 1


def test_select_drops_takes_one_quota_per_class():
    doubts = [("a", 1, 30, 0.4), ("b", 1, 30, 0.1), ("d", 2, 10, 0.9)]
    assert select_drops(doubts, [0, 100, 10], np.array([0.0, 0.3, 1.0])) == {"b", "d"}
    assert select_drops(doubts, [0, 100, 10], np.array([0.0, 0.6, 0.5])) == {"a", "b"}
    assert select_drops(doubts, [0, 100, 10], np.array(0.6)) == {"a", "b"}  # a 0-d array: one quota for all (d: 10 > 6)


def test_select_drops_max_ratio_keeps_the_narrowly_doubted():
    """Only components whose p(given) / p(top) is below max_ratio may go; the quota then applies to those."""
    doubts = [("a", 1, 30, 0.4), ("b", 1, 30, 0.1), ("c", 1, 30, 0.2), ("d", 2, 10, 0.9)]
    assert select_drops(doubts, {1: 100, 2: 10}, 1.0, max_ratio=0.3) == {"b", "c"}
    assert select_drops(doubts, {1: 100, 2: 10}, 1.0, max_ratio=0.4) == {"b", "c"}  # 0.4 is not below 0.4
    assert select_drops(doubts, {1: 100, 2: 10}, 0.3, max_ratio=0.15) == {"b"}
    assert select_drops(doubts, {1: 100, 2: 10}, 1.0, max_ratio=0.05) == set()


def test_drop_max_ratio_in_drop_components():
    """Class 1: A (p1 / p0 = 0.05 / 0.9 = 0.056) and B (0.3 / 0.6 = 0.5) are both doubted; with max_ratio 0.5 only A
    goes, B (exactly 0.5) stays."""
    given = np.zeros((30, 30), np.uint8)
    given[1:7, 1:7] = 1
    given[10:16, 10:16] = 1
    p = _probs(30, 30)
    _set(p, np.s_[10:16, 10:16], (0.6, 0.3, 0.1))
    out, st = drop_components(given, p, None, RefineParams(min_px=16, rule="drop", max_drop=1.0, max_ratio=0.5))
    assert (out[1:7, 1:7] == 255).all() and (out[10:16, 10:16] == 1).all() and st["regions"] == 1
    out, st = drop_components(given, p, None, RefineParams(min_px=16, rule="drop", max_drop=1.0, max_ratio=0.51))
    assert st["regions"] == 2


def test_noise_quota_counts_only_the_judged_pixels():
    """Half of A (20 of its 40 px) is trusted. The estimate is over untrusted pixels of the judged components:
    t0 = (20·0.9 + 20·0.2 + 10·0.45) / 50 = 0.53; A (20 px) counts as 0, B (20 px) as 1, D is not counted -> rate
    20 / 40 = 0.5 of the 50 judged px = 25 px (not 0.5 of class 0's 70 labelled px = 35). B (20) goes; D (10 more,
    30 > 25) stays."""
    given, p = _noise_scene()
    trusted = np.zeros(given.shape, bool)
    trusted[0:2, 0:10] = True
    caps, rates = refine_mod.drop_caps(RefineParams(min_px=5, rule="drop", max_drop=1.0, quota="noise"),
                                       [component_table(given, p, trusted, 5)], 2, [70, 40])
    assert rates == pytest.approx([0.5, 0.0]) and caps == pytest.approx([25 / 70, 0.0])
    out, st = drop_components(given, p, trusted, RefineParams(min_px=5, rule="drop", max_drop=1.0, quota="noise"))
    assert (out[10:14, 0:5] == 255).all() and (out[20:22, 0:5] == 0).all() and st["ignored"] == 20
    assert refine_mod.drop_caps(RefineParams(rule="drop", max_drop=0.4), [], 2, [70, 40]) == (0.4, None)


def test_refine_samples_noise_quota_over_the_training_set(monkeypatch):
    """The confident joint is pooled over all images: image 0 alone has B (confidently class 1), image 1 has the
    thresholds' other components. The rates come back with the totals."""
    given, p = _noise_scene()
    g0, g1 = given.copy(), given.copy()
    g0[0:4, 0:10] = 255
    g0[20:22, 0:5] = 255
    g0[10:14, 20:30] = 255  # image 0: only B
    g1[10:14, 0:5] = 255  # image 1: everything but B
    monkeypatch.setattr(refine_mod, "iter_probs", lambda model, images, *a, **kw: ((i, p) for i in range(len(images))))
    img = np.zeros((30, 30, 3), np.uint8)
    out, st = refine_mod.refine_samples(None, [(img, g0), (img, g1)], {}, "cpu",
                                        RefineParams(min_px=5, rule="drop", max_drop=0.5, quota="noise"))
    assert (out[0][10:14, 0:5] == 255).all() and (out[1] == g1).all()
    assert st["noise_rates"] == pytest.approx([1 / 3, 0.0], abs=1e-4) and st["regions"] == 1


def test_drop_rejects_bad_shapes():
    with pytest.raises(ValueError, match="labels must be H×W"):
        drop_components(np.zeros((2, 4, 4), np.uint8), _probs(4, 4))
    with pytest.raises(ValueError, match="probs must be C×H×W"):
        drop_components(np.zeros((4, 4), np.uint8), _probs(4, 5))
    with pytest.raises(ValueError, match="class index >= 3"):
        drop_components(np.full((4, 4), 3, np.uint8), _probs(4, 4))


def test_refine_params_pick_the_rule_from_the_config():
    assert RefineParams.of(TrainConfig(scheme="hz7", refine="drop")).rule == "drop"
    assert RefineParams.of(TrainConfig(scheme="hz7", refine="region")).rule == "region"
    assert RefineParams.of(TrainConfig(scheme="hz7", refine="drop")).quota == "fixed"
    assert RefineParams.of(TrainConfig(scheme="hz7", refine="drop", refine_quota="noise")).quota == "noise"
    assert RefineParams.of(TrainConfig(scheme="hz7", refine="drop")).max_ratio == 1.0
    assert RefineParams.of(TrainConfig(scheme="hz7", refine="drop", refine_drop_ratio=0.5)).max_ratio == 0.5
    # the first refinement: the rule's default unless set
    assert refine_mod.refine_start(TrainConfig(scheme="hz7", refine="drop")) == 0.1
    assert refine_mod.refine_start(TrainConfig(scheme="hz7", refine="region")) == 0.4
    assert refine_mod.refine_start(TrainConfig(scheme="hz7", refine="drop", refine_start=0.3)) == 0.3
    assert refine_epochs(10, refine_mod.refine_start(TrainConfig(scheme="hz7", refine="drop"))) == list(range(1, 10))


# ---------------------------------------------------------------- config


@pytest.mark.parametrize(("kw", "msg"), [
    ({"refine": "pixel"}, "unknown refine 'pixel'"),
    ({"refine_start": 1.0}, r"refine_start must be a fraction of the epochs in \[0, 1\)"),
    ({"refine_start": -0.1}, "refine_start"),
    ({"refine_every": 0}, "refine_every must be an integer >= 1"),
    ({"refine_every": 1.5}, "refine_every"),
    ({"refine_conf": 0.0}, r"refine_conf .* must be in \(0, 1\]"),
    ({"refine_conf": 1.5}, "refine_conf"),
    ({"refine_keep": 0}, r"refine_keep .* must be in \(0, 1\]"),
    ({"refine_min_px": 0}, "refine_min_px must be an integer >= 1"),
    ({"refine_min_px": 2.5}, "refine_min_px"),
    ({"refine_ignore_conf": 0.0}, "refine_ignore_conf must be in"),
    ({"refine_max_drop": 0.0}, r"refine_max_drop .* must be in \(0, 1\]"),
    ({"refine_max_drop": 1.5}, "refine_max_drop"),
    ({"refine_relabel_conf": 0.0}, r"refine_relabel_conf must be in \(0, 1\] or None"),
    ({"refine_quota": "auto"}, "unknown refine_quota 'auto'; use one of fixed, noise"),
    ({"refine_drop_ratio": 0.0}, r"refine_drop_ratio .* must be in \(0, 1\]"),
    ({"refine_drop_ratio": 1.5}, "refine_drop_ratio"),
    ({"refine_drop_ratio": True}, "refine_drop_ratio"),
    ({"refine": "region", "refine_quota": "noise"}, "refine_quota='noise' applies to refine='drop' only"),
    ({"refine_relabel_conf": "yes"}, "refine_relabel_conf"),
    ({"refine_ignore_conf": "high"}, "refine_ignore_conf"),
])
def test_config_validation(kw, msg):
    with pytest.raises(ValueError, match=msg):
        TrainConfig(scheme="hz7", **kw).validate()
    TrainConfig(scheme="hz7", refine="region", refine_ignore_conf=None).validate()  # valid


def test_form_maps_the_refine_option():
    state, notes = form_state_from_config({"refine": "region"}, active_id=None)
    assert state["train_refine"] == "region" and not notes
    state, notes = form_state_from_config({"refine": "drop"}, active_id=None)
    assert state["train_refine"] == "drop" and not notes
    state, notes = form_state_from_config({"refine": "bogus"}, active_id=None)
    assert "train_refine" not in state and notes


# ---------------------------------------------------------------- training

S = 64
SQUARE = np.s_[8:24, 8:24]


@pytest.fixture(scope="module")
def noisy():
    """4 colour-coded scenes; in scene 0 a red 16×16 square (true class 2) is labelled green (5)."""
    tr = [colour_scene(i, S) for i in range(4)]
    img, lbl = tr[0]
    lbl = lbl.copy()
    lbl[SQUARE] = 5
    tr[0] = (img, lbl)
    return tr


def _rcfg(**kw) -> TrainConfig:
    base = {"epochs": 4, "steps_per_epoch": 8, "batch_size": 4, "lr": 1e-2, "refine": "region", "refine_start": 0.5}
    return tiny_train_config(S, **{**base, **kw})


def _check_corrected(res, tr):
    r = res["refined_labels"]
    assert r is not None and len(r) == len(tr)
    assert (r[0][SQUARE] == 2).all(), np.bincount(r[0][SQUARE].ravel())  # the flipped square is corrected
    other = np.ones((S, S), bool)
    other[SQUARE] = False
    for i, (a, s) in enumerate(zip(r, tr)):
        changed = (a != s[1]) & (other if i == 0 else True)
        assert changed.mean() < 0.03, (i, changed.mean())  # little else changes


@pytest.mark.filterwarnings("ignore:class\\(es\\) absent")
def test_training_refines_a_flipped_square(noisy, tmp_path):
    rows = []
    res = train(_rcfg(), noisy, [], tmp_path / "m.safetensors", on_metrics=lambda s, e, r: rows.append(r))
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    for r in rows:  # refinement at the end of epochs 2 and 3 (start 0.5 of 4; never after the last)
        assert (("refined_px" in r) == (r["epoch"] in (2, 3))) and (("refine_ignored_px" in r) == (r["epoch"] in (2, 3)))
    last = rows[2]
    assert 256 / (4 * S * S) <= last["refined_px"] < 0.05 and 0 <= last["refine_ignored_px"] < 0.02
    assert res["refine_epoch"] == 3
    _check_corrected(res, noisy)
    # the refined labels of the latest refinement sit next to the state, which names them
    info = read_state_info(state_path(tmp_path / "m.safetensors"))["loop"]
    assert info["refine_epoch"] == 3 and info["refine_digest"] == refine_mod.labels_digest(res["refined_labels"])
    assert refine_path(tmp_path / "m.safetensors").is_file()
    # the recipe in the checkpoint carries the refine fields
    from seghz.models.checkpoint import read_metadata

    assert read_metadata(tmp_path / "m.safetensors")["recipe"]["refine"] == "region"


@pytest.mark.filterwarnings("ignore:class\\(es\\) absent")
@pytest.mark.parametrize("quota", ["fixed", "noise"])
def test_training_drops_a_flipped_square(noisy, tmp_path, quota):
    """refine="drop": the flipped square (red labelled green) is ignored as a whole, nothing is relabelled, and the
    correct components stay — with the fixed half-class quota and with the confident-learning estimate."""
    msgs = []
    res = train(_rcfg(refine="drop", refine_quota=quota), noisy, [], tmp_path / "m.safetensors",
                progress=lambda f, m: msgs.append(m))
    r = res["refined_labels"]
    assert r is not None and res["refine_epoch"] == 3
    assert (r[0][SQUARE] == 255).all()
    for i, (a, s) in enumerate(zip(r, noisy)):
        changed = a != s[1]
        if i == 0:
            changed[SQUARE] = False
        assert not changed.any(), (i, int(changed.sum()))  # every correct component is kept whole
    last = [row for row in res["history"] if "refine_ignored_px" in row][-1]
    assert last["refined_px"] == 0 and last["refine_ignored_px"] == pytest.approx(256 / (4 * S * S))
    said = [m for m in msgs if "refined labels" in m]
    assert said and all(("estimated label noise" in m) == (quota == "noise") for m in said)


@pytest.mark.filterwarnings("ignore:class\\(es\\) absent")
def test_no_refinement_by_default(noisy, tmp_path):
    res = train(_rcfg(refine="none", epochs=2, steps_per_epoch=1), noisy, [], tmp_path / "m.safetensors")
    assert res["refined_labels"] is None and res["refine_epoch"] is None
    assert all("refined_px" not in r for r in res["history"])
    assert not refine_path(tmp_path / "m.safetensors").exists()


@pytest.mark.filterwarnings("ignore:class\\(es\\) absent")
def test_every_refinement_starts_from_the_original_labels_and_batches_use_the_refined_ones(noisy, tmp_path, monkeypatch):
    seen_labels: list[list[np.ndarray]] = []
    real = trainer_mod.refine_samples

    def spy(model, samples, *a, **kw):
        seen_labels.append([s[1] for s in samples])
        return real(model, samples, *a, **kw)

    batches: list[list[np.ndarray]] = []
    real_batch = trainer_mod.slot_batch

    def spy_batch(samples, *a, **kw):
        batches.append([s[1] for s in samples])
        return real_batch(samples, *a, **kw)

    monkeypatch.setattr(trainer_mod, "refine_samples", spy)
    monkeypatch.setattr(trainer_mod, "slot_batch", spy_batch)
    res = train(_rcfg(), noisy, [], tmp_path / "m.safetensors")
    assert len(seen_labels) == 2
    for labels in seen_labels:
        assert all(a is s[1] for a, s in zip(labels, noisy))  # the given arrays themselves, each time
    assert len(batches) == 32
    assert all(a is s[1] for b in batches[:16] for a, s in zip(b, noisy))  # epochs 1-2: the given labels
    assert all(not (b[0] == noisy[0][1]).all() for b in batches[16:])  # epochs 3-4: the refined ones
    assert all(a is r for a, r in zip(batches[-1], res["refined_labels"]))


def test_apply_refined_updates_preloaded_labels(noisy):
    pre = preload(noisy, "cpu", max_bytes=1 << 30)
    labels = [np.full(s[1].shape, 3, np.uint8) for s in noisy]
    cur = trainer_mod._apply_refined(noisy, labels, pre)
    assert all(c[0] is s[0] and c[1] is lb for c, s, lb in zip(cur, noisy, labels))
    assert (pre.labels == 3).all() and (pre.images.numpy() == np.stack([s[0] for s in noisy])).all()


@pytest.mark.filterwarnings("ignore:class\\(es\\) absent")
def test_training_with_device_augmentation_and_preloaded_labels(noisy, tmp_path, monkeypatch):
    monkeypatch.setattr(trainer_mod, "default_budget", lambda device: 1 << 30)
    seen = []
    real = trainer_mod._apply_refined

    def spy(samples, labels, pre):
        seen.append(pre)
        return real(samples, labels, pre)

    monkeypatch.setattr(trainer_mod, "_apply_refined", spy)
    res = train(_rcfg(augment="device", steps_per_epoch=12, epochs=4), noisy, [], tmp_path / "m.safetensors")
    assert len(seen) == 2 and seen[-1] is not None  # the preloaded labels were updated
    assert (seen[-1].labels[0, 8:24, 8:24] == torch.from_numpy(res["refined_labels"][0][SQUARE])).all()
    assert all("refined_px" in r for r in res["history"][1:3])


@pytest.mark.filterwarnings("ignore:class\\(es\\) absent")
def test_resume_continues_with_the_same_refined_labels(noisy, tmp_path):
    full = train(_rcfg(), noisy, [], tmp_path / "a" / "m.safetensors")

    out = tmp_path / "b" / "m.safetensors"
    calls = {"n": 0}

    def cancel_in_epoch_3():  # 8 steps per epoch: call 17 is the first step of epoch 3 (after the refinement of 2)
        calls["n"] += 1
        return calls["n"] == 18

    with pytest.raises(TrainCancelled):
        train(_rcfg(), noisy, [], out, should_cancel=cancel_in_epoch_3)
    loop = read_state_info(state_path(out))["loop"]
    assert loop["epoch"] == 2 and loop["refine_epoch"] == 2
    res = train(_rcfg(resume=True), noisy, [], out)
    assert res["resumed_from"] == 2 and res["refine_epoch"] == 3
    for ra, rb in zip(full["history"], res["history"]):
        for k in ("loss", "refined_px", "refine_ignored_px"):
            assert (k in ra) == (k in rb), k
            if k in ra:
                assert ra[k] == pytest.approx(rb[k], rel=1e-6, abs=1e-9), k
    for a, b in zip(full["refined_labels"], res["refined_labels"]):
        assert (a == b).all()

    # the refined-labels file is gone or damaged: the refinement was at the saved epoch, so it is recomputed from the
    # saved weights (those it came from)
    for how in ("missing", "damaged"):
        out_c = tmp_path / how / "m.safetensors"
        calls["n"] = 0
        with pytest.raises(TrainCancelled):
            train(_rcfg(), noisy, [], out_c, should_cancel=cancel_in_epoch_3)
        if how == "missing":
            refine_path(out_c).unlink()
        else:
            refine_path(out_c).write_bytes(b"not a safetensors file")
        res_c = train(_rcfg(resume=True), noisy, [], out_c)
        assert [r["loss"] for r in res_c["history"]] == pytest.approx([r["loss"] for r in full["history"]], rel=1e-6)
        for a, b in zip(full["refined_labels"], res_c["refined_labels"]):
            assert (a == b).all()


@pytest.mark.filterwarnings("ignore:class\\(es\\) absent")
def test_resume_refuses_without_the_labels_of_an_earlier_refinement(noisy, tmp_path):
    out = tmp_path / "m.safetensors"
    calls = {"n": 0}

    def cancel_in_epoch_3():  # 4 steps per epoch: call 9 is the first step of epoch 3
        calls["n"] += 1
        return calls["n"] == 9

    kw = {"epochs": 5, "steps_per_epoch": 4, "refine_start": 0.2, "refine_every": 2}  # refinements after 1 and 3
    with pytest.raises(TrainCancelled):
        train(_rcfg(**kw), noisy, [], out, should_cancel=cancel_in_epoch_3)
    loop = read_state_info(state_path(out))["loop"]
    assert loop["epoch"] == 2 and loop["refine_epoch"] == 1
    saved = refine_path(out).read_bytes()
    refine_path(out).unlink()
    with pytest.raises(TrainStateError, match="refined labels of epoch 1 .* missing"):
        train(_rcfg(**kw, resume=True), noisy, [], out)
    refine_path(out).write_bytes(saved)
    res = train(_rcfg(**kw, resume=True), noisy, [], out)
    assert res["resumed_from"] == 2 and res["refine_epoch"] == 3


DDP_DRIVER = DDP_FLIPPED_SQUARE_HEAD.replace("{n}", "4") + r'''
from seghz.train.refine import labels_digest
cfg = tiny_train_config(S, epochs=3, steps_per_epoch=6, batch_size=2, lr=1e-2, refine="region", refine_start=0.3)
res = train(cfg, tr, [], sys.argv[1])
print_json_line({{"rank": int(os.environ["RANK"]), "digest": labels_digest(res["refined_labels"]),
                 "rows": [{{k: r.get(k) for k in ("epoch", "refined_px", "refine_ignored_px")}} for r in res["history"]],
                 "square": int((res["refined_labels"][0][8:24, 8:24] == 2).sum())}})
'''


def test_ddp_ranks_train_on_rank_0s_refined_labels(tmp_path):
    outs = run_two_gloo_ranks(DDP_DRIVER, tmp_path, str(tmp_path / "m.safetensors"))
    assert [o["rank"] for o in outs] == [0, 1]
    assert outs[0]["digest"] == outs[1]["digest"]  # identical labels on both ranks
    assert outs[0]["rows"] == outs[1]["rows"]  # and the same refine stats in both histories
    assert [r["epoch"] for r in outs[0]["rows"] if r["refined_px"] is not None] == [1, 2]
    assert outs[0]["digest"] == read_state_info(state_path(tmp_path / "m.safetensors"))["loop"]["refine_digest"]


def test_json_objects_survives_two_ranks_lines_run_together():
    """The CI failure this guards against: rank 1's line started right after rank 0's text, before its newline."""
    from helpers_core import json_objects

    text = 'noise\n{"rank": 0, "a": [1, {"b": "}"}]}{"rank": 1, "a": []}\n\n{"rank": 2}\nWARNING {"x": 1}\n'
    assert json_objects(text) == [{"rank": 0, "a": [1, {"b": "}"}]}, {"rank": 1, "a": []}, {"rank": 2}]
