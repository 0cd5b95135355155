"""Co-teaching (issue 4): the peer's small-loss selection against hand-computed cases, the forget-rate ramp, the pair
loss, the recipe's refusals, and the trainer with a peer network (checkpoint = the model, state = both, resume)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers_core import tiny_train_config, torch_one_thread  # noqa: F401 (fixture)
from hypothesis import given, settings
from hypothesis import strategies as hst

from seghz.classes import IGNORE
from seghz.train.losses import LossConfig, SegLoss, coteach_keep
from seghz.train.state import load_train_state, state_path
from seghz.train.trainer import TrainCancelled, TrainConfig, train

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _t(rows, dtype=torch.float32):
    return torch.tensor([rows], dtype=dtype)  # 1×H×W


def test_keep_drops_the_peers_largest_losses_within_each_class():
    nll = _t([[0.1, 0.9, 0.5, 2.0],
              [0.3, 0.2, 0.8, 0.4]])
    y = _t([[0, 0, 0, 0],
            [1, 1, 1, IGNORE]], torch.long)
    valid = y != IGNORE
    # class 0: 4 px, floor(0.5·4) = 2 leave: 2.0 and 0.9; class 1: 3 px, floor(1.5) = 1 leaves: 0.8
    keep = coteach_keep(nll, y, valid, 0.5)
    assert keep.tolist() == [[[True, False, True, False],
                              [True, True, False, False]]]
    # one group over the batch: 7 px, 3 leave: 2.0, 0.9, 0.8 (here the same pixels)
    assert coteach_keep(nll, y, valid, 0.5, per_class=False).tolist() == keep.tolist()
    # where the two rules differ: class 1's losses all above class 0's -> the batch rule takes them all
    nll2 = _t([[0.1, 0.2, 0.3, 0.4],
               [5.0, 6.0, 7.0, 0.0]])
    assert coteach_keep(nll2, y, valid, 3 / 7, per_class=False).tolist() == [[[True, True, True, True],
                                                                             [False, False, False, False]]]
    assert coteach_keep(nll2, y, valid, 3 / 7).tolist() == [[[True, True, True, False],  # 1 of 4, 1 of 3
                                                           [True, True, False, False]]]


def test_keep_never_drops_trusted_pixels_and_rate_zero_keeps_all():
    nll = _t([[4.0, 3.0, 2.0, 1.0]])
    y = _t([[2, 2, 2, 2]], torch.long)
    valid = y != IGNORE
    trusted = _t([[True, False, False, False]], torch.bool)
    # judged: 3 px (not the trusted 4.0); floor(0.7·3) = 2 leave: 3.0 and 2.0
    assert coteach_keep(nll, y, valid, 0.7, trusted).tolist() == [[[True, False, False, True]]]
    assert coteach_keep(nll, y, valid, 0.0).tolist() == [[[True] * 4]]
    with pytest.raises(ValueError, match="forget rate"):
        coteach_keep(nll, y, valid, 1.0)


@settings(max_examples=40, deadline=None)
@given(hst.integers(0, 10_000), hst.floats(0.0, 0.95), hst.booleans())
def test_keep_leaves_exactly_the_floor_of_each_groups_share(seed, rate, per_class):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (2, 5, 6), generator=g)
    y[torch.rand(y.shape, generator=g) < 0.2] = IGNORE
    nll = torch.rand(y.shape, generator=g)
    valid = y != IGNORE
    keep = coteach_keep(nll, y, valid, rate, per_class=per_class)
    assert not (keep & ~valid).any()
    groups = [valid & (y == c) for c in range(4)] if per_class else [valid]
    for grp in groups:
        n = int(grp.sum())
        left = grp & ~keep
        assert int(left.sum()) == math.floor(rate * n)
        if left.any() and (grp & keep).any():  # everything left out is at least as hard as everything kept
            assert nll[left].min() >= nll[grp & keep].max()


def test_the_forget_rate_ramps_linearly_then_holds():
    crit = SegLoss(None, config=LossConfig(coteach=0.3, coteach_ramp=0.25))
    assert [round(crit.set_progress(s, 100), 6) for s in (0, 5, 10, 25, 80)] == [0.0, 0.06, 0.12, 0.3, 0.3]
    assert SegLoss(None, config=LossConfig()).set_progress(50, 100) == 0.0  # off


class _Fixed(torch.nn.Module):
    """A 'network' whose logits are fixed (plus a learnable 0 so it has a gradient)."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits
        self.b = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return self.logits + self.b


def test_pair_loss_counts_for_each_network_the_pixels_its_peer_finds_easiest():
    # 1×2×1×4 logits for 2 classes, labels all 0: p(0) = sigmoid(l0 - l1)
    la = torch.tensor([[[[2.0, 0.0, -1.0, 1.0]], [[0.0, 0.0, 0.0, 0.0]]]])
    lb = torch.tensor([[[[-3.0, 3.0, 0.0, 1.0]], [[0.0, 0.0, 0.0, 0.0]]]])
    y = torch.zeros((1, 1, 4), dtype=torch.long)
    ce_a = -torch.log_softmax(la, 1)[0, 0, 0]
    ce_b = -torch.log_softmax(lb, 1)[0, 0, 0]
    crit = SegLoss(None, config=LossConfig(coteach=0.5, coteach_ramp=1.0))
    crit.set_progress(1, 2)  # rate 0.5 · 1/2 = 0.25 -> 1 of the 4 pixels leaves each network's loss
    loss, logits = crit.pair_loss(_Fixed(la), _Fixed(lb), torch.zeros(1, 3, 1, 4), y)
    # B finds pixel 0 hardest (l0 = -3) -> A trains on pixels 1-3; A finds pixel 2 hardest -> B trains on 0, 1, 3
    want = 0.5 * (ce_a[[1, 2, 3]].mean() + ce_b[[0, 1, 3]].mean())
    torch.testing.assert_close(loss, want)
    torch.testing.assert_close(logits, la)
    assert float(crit.last_stats["coteach_dropped"]) == pytest.approx(0.25)
    assert float(crit.last_stats["coteach_disagree"]) == pytest.approx(0.5)  # pixels 0 and 2
    crit.set_progress(0, 2)  # rate 0: each network's plain CE
    loss0, _ = crit.pair_loss(_Fixed(la), _Fixed(lb), torch.zeros(1, 3, 1, 4), y)
    torch.testing.assert_close(loss0, 0.5 * (ce_a.mean() + ce_b.mean()))


@pytest.mark.parametrize("bad, match", [
    ({"coteach": 1.0}, "coteach"), ({"coteach": -0.1}, "coteach"), ({"coteach": True}, "coteach"),
    ({"coteach": 0.3, "coteach_ramp": 0.0}, "coteach_ramp"), ({"coteach": 0.3, "coteach_select": "x"}, "coteach_select"),
    ({"coteach": 0.3, "noise_mask": "cos"}, "noise mask"), ({"coteach": 0.3, "ohem": True}, "OHEM"),
    ({"coteach": 0.3, "robust": "gce"}, "robust='gce'"), ({"coteach": 0.3, "consistency": True}, "consistency"),
    ({"coteach": 0.3, "bootstrap": "hard"}, "bootstrapping"),
])
def test_the_recipe_refuses_bad_or_conflicting_settings(bad, match):
    with pytest.raises(ValueError, match=match):
        LossConfig(**bad).validate()
    with pytest.raises(ValueError, match=match):
        TrainConfig(scheme="hz7", **bad).validate()


def _scene(seed: int, size: int = 32):
    rs = np.random.RandomState(seed)
    lbl = np.zeros((size, size), np.uint8)
    lbl[:, size // 2:] = 5
    lbl[: size // 4, : size // 4] = 2
    img = np.clip(lbl[..., None] * 30 + rs.normal(60, 10, (size, size, 3)), 0, 255).astype(np.uint8)
    return img, lbl


def test_trainer_keeps_the_model_in_the_checkpoint_both_networks_in_the_state_and_resumes_exactly(tmp_path):
    from safetensors.torch import load_file

    tr, va = [_scene(0), _scene(1), _scene(2)], [_scene(3)]
    kw = {"epochs": 3, "steps_per_epoch": 2, "coteach": 0.4, "coteach_ramp": 0.5, "dice": True}
    a = tmp_path / "a" / "m.safetensors"
    full = train(tiny_train_config(32, **kw), tr, va, a)
    # ramp over 0.5 · 6 = 3 steps; each epoch logs the rate of its last step (steps 1, 3, 5 of 0-5)
    assert [r["coteach_rate"] for r in full["history"]] == pytest.approx([0.4 / 3, 0.4, 0.4])
    assert all(0 < r["coteach_dropped"] <= 0.4 + 1e-6 for r in full["history"][1:])
    ts = load_train_state(state_path(a))
    ck = load_file(str(a))
    assert set(ts.model) == {f"model.{k}" for k in ck} | {f"peer.{k}" for k in ck}
    floats = [k for k in ck if ck[k].is_floating_point()]
    assert any(not torch.equal(ts.model[f"model.{k}"], ts.model[f"peer.{k}"]) for k in floats)  # two networks
    # resume after epoch 1 reproduces the uninterrupted run
    b = tmp_path / "b" / "m.safetensors"
    with pytest.raises(TrainCancelled, match="epoch 2"):
        train(tiny_train_config(32, **kw), tr, va, b, should_cancel=_cancel_at(3))
    res = train(tiny_train_config(32, **kw, resume=True), tr, va, b)
    assert res["resumed_from"] == 1
    for ra, rb in zip(full["history"], res["history"]):
        assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-6, abs=1e-7)
    sa, sb = load_file(str(state_path(a))), load_file(str(state_path(b)))
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], atol=1e-6, rtol=1e-6, msg=k)


def _cancel_at(n: int):
    calls = {"n": 0}

    def cancel() -> bool:
        calls["n"] += 1
        return calls["n"] == n  # asked before each step: n = 3 is the first step of epoch 2

    return cancel


def test_a_pretrained_peer_shares_the_encoder_and_gets_its_own_decoder():
    from seghz.train.trainer import _make_peer

    cfg = tiny_train_config(32, encoder_weights=None)
    from seghz.models.registry import build_model

    torch.manual_seed(0)
    model = build_model(cfg.arch, cfg.encoder, 7)
    fresh = _make_peer(cfg, model, 7, "cpu")
    enc = [k for k in model.state_dict() if k.startswith("encoder.") and model.state_dict()[k].is_floating_point()]
    assert any(not torch.equal(model.state_dict()[k], fresh.state_dict()[k]) for k in enc)  # scratch: own encoder
    cfg.parent_checkpoint = "parent.safetensors"  # treated as given weights: encoder shared, decoder re-drawn
    shared = _make_peer(cfg, model, 7, "cpu")
    sd, ps = model.state_dict(), shared.state_dict()
    assert all(torch.equal(sd[k], ps[k]) for k in enc)
    dec = [k for k in sd if not k.startswith("encoder.") and k.endswith("weight") and sd[k].dim() == 4]
    assert dec and all(not torch.equal(sd[k], ps[k]) for k in dec)


def test_coteaching_under_ddp_is_refused_before_anything_is_trained(tmp_path, monkeypatch):
    from seghz.train import trainer as trainer_mod

    monkeypatch.setattr(trainer_mod, "_dist_setup", lambda cfg: (trainer_mod._Dist(world=2, rank=0), "cpu"))
    out = tmp_path / "m.safetensors"
    with pytest.raises(ValueError, match="does not run under DDP"):
        train(tiny_train_config(32, coteach=0.3), [_scene(0)], [], out)
    assert not out.parent.exists() or not any(out.parent.iterdir())
