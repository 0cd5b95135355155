"""Early-learning regularisation (issue 4): the term against hand-computed cases and its analytic gradient, the
recipe's refusals, and the trainer pulling the model towards the moving average of its weights."""
from __future__ import annotations

import math

import pytest
import torch
from helpers_core import halves_scene, tiny_train_config, torch_one_thread  # noqa: F401 (fixture)
from hypothesis import given, settings
from hypothesis import strategies as hst

from seghz.classes import IGNORE
from seghz.train.losses import ELR_FLOOR, LossConfig, SegLoss, elr_term
from seghz.train.trainer import TrainConfig, train

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _px(*cols):
    """1×C×1×P logits from P columns of C values."""
    return torch.tensor(cols, dtype=torch.float32).T.reshape(1, len(cols[0]), 1, len(cols))


def test_term_against_hand_computed_pixels_and_ignore():
    big = 40.0  # softmax of (big, 0) is one-hot to float precision
    logits = _px([0.0, 0.0], [math.log(3.0), 0.0], [0.0, 0.0])  # p = (.5, .5), (.75, .25), (.5, .5)
    teacher = _px([big, 0.0], [0.0, big], [big, 0.0])  # t = (1, 0), (0, 1), (1, 0)
    y = torch.tensor([[[0, 1, IGNORE]]])
    # ⟨p, t⟩ = 0.5 and 0.25 on the two labelled pixels; the ignored third pixel does not count
    want = (math.log(0.5) + math.log(0.75)) / 2
    assert float(elr_term(logits, teacher, y)) == pytest.approx(want, rel=1e-6)
    # a model that agrees completely with a one-hot teacher hits the floor, not −inf
    assert float(elr_term(_px([big, 0.0]), _px([big, 0.0]), torch.tensor([[[0]]]))) == pytest.approx(math.log(ELR_FLOOR))
    # nothing labelled: 0, not NaN
    assert float(elr_term(logits, teacher, torch.full((1, 1, 3), IGNORE))) == 0.0
    # the teacher's mass m scales t: ⟨p, m·t⟩ = 0.5 m and 0.25 m; m = 0 is no term at all
    want = (math.log(1 - 0.5 * 0.4) + math.log(1 - 0.25 * 0.4)) / 2
    assert float(elr_term(logits, teacher, y, mass=0.4)) == pytest.approx(want, rel=1e-6)
    assert float(elr_term(logits, teacher, y, mass=0.0)) == 0.0
    with pytest.raises(ValueError, match="mass"):
        elr_term(logits, teacher, y, mass=1.5)
    with pytest.raises(ValueError, match="teacher"):
        elr_term(logits, teacher[:, :, :, :2], y)


@settings(max_examples=30, deadline=None)
@given(hst.integers(0, 10_000), hst.integers(2, 6))
def test_gradient_raises_the_classes_the_teacher_believes_in_more_than_the_model(seed, c):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(2, c, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, c, 3, 3, generator=g, dtype=torch.float64) * 3
    y = torch.randint(0, c, (2, 3, 3), generator=g)
    y[0, 0, 0] = IGNORE
    elr_term(z, t, y).backward()
    p, q = torch.softmax(z.detach().float(), 1).double(), torch.softmax(t.float(), 1).double()
    dot = (p * q).sum(1, keepdim=True)
    want = -(p * q - dot * p) / (1 - dot) * (y != IGNORE).unsqueeze(1) / (y != IGNORE).sum()
    torch.testing.assert_close(z.grad, want, atol=1e-6, rtol=1e-4)
    # a descent step moves probability towards the teacher: ⟨p, t⟩ grows
    with torch.no_grad():
        p2 = torch.softmax(z - 0.5 * z.grad / z.grad.abs().max(), 1)
    valid = (y != IGNORE)
    assert ((p2 * q).sum(1)[valid].sum() > (p * q).sum(1)[valid].sum())


def test_model_loss_adds_lambda_times_the_term_against_the_teacher():
    torch.manual_seed(0)
    model, teacher = torch.nn.Conv2d(3, 4, 1), torch.nn.Conv2d(3, 4, 1)
    x, y = torch.randn(2, 3, 5, 5), torch.randint(0, 4, (2, 5, 5))
    plain = SegLoss(None, config=LossConfig())
    crit = SegLoss(None, config=LossConfig(elr=3.0, elr_warmup=0.0))  # the whole teacher from the first step
    base, _ = plain.model_loss(model, x, y)
    loss, _ = crit.model_loss(model, x, y, teacher=teacher)
    term = elr_term(model(x), teacher(x), y)
    assert float(loss.detach()) == pytest.approx(float(base.detach()) + 3.0 * float(term.detach()), rel=1e-6)
    assert float(crit.last_stats["elr"]) == pytest.approx(float(term), rel=1e-6)
    assert all(p.grad is None for p in teacher.parameters())  # the teacher gets no gradient
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    with pytest.raises(ValueError, match="needs a teacher"):
        crit.model_loss(model, x, y)


def test_the_teachers_mass_ramps_linearly_over_the_warm_up_then_holds():
    crit = SegLoss(None, config=LossConfig(elr=3.0, elr_warmup=0.25))  # 0.25 · 80 = 20 steps
    assert crit.elr_mass == 0.0  # before the first step: no teacher yet
    masses = []
    for step in (0, 5, 10, 20, 60):
        crit.set_progress(step, 80)
        masses.append(crit.elr_mass)
    assert masses == pytest.approx([0.0, 0.25, 0.5, 1.0, 1.0])
    # the loss uses the mass of the step
    torch.manual_seed(1)
    model, teacher = torch.nn.Conv2d(3, 4, 1), torch.nn.Conv2d(3, 4, 1)
    x, y = torch.randn(1, 3, 4, 4), torch.randint(0, 4, (1, 4, 4))
    crit.set_progress(10, 80)
    crit.model_loss(model, x, y, teacher=teacher)
    assert float(crit.last_stats["elr"]) == pytest.approx(float(elr_term(model(x), teacher(x), y, 0.5).detach()), rel=1e-6)
    assert float(crit.last_stats["elr_mass"]) == 0.5
    assert SegLoss(None, config=LossConfig(elr=3.0, elr_warmup=0.0)).elr_mass == 1.0


@pytest.mark.parametrize("bad, match", [
    ({"elr": -1.0}, "elr"), ({"elr": float("nan")}, "elr"), ({"elr": True}, "elr"),
    ({"elr": 3.0, "coteach": 0.3}, "co-teaching"), ({"elr_warmup": 1.5}, "elr_warmup"), ({"elr_warmup": -0.1}, "elr_warmup"),
])
def test_the_recipe_refuses_bad_or_conflicting_settings(bad, match):
    with pytest.raises(ValueError, match=match):
        LossConfig(**bad).validate()
    with pytest.raises(ValueError, match=match):
        TrainConfig(scheme="hz7", ema=0.1, **bad).validate()


def test_the_recipe_needs_the_moving_average_as_teacher():
    with pytest.raises(ValueError, match="ema > 0"):
        TrainConfig(scheme="hz7", elr=3.0).validate()
    TrainConfig(scheme="hz7", elr=3.0, ema=0.1).validate()


def test_trainer_logs_the_term_and_it_changes_the_run(tmp_path):
    tr, va = [halves_scene(0), halves_scene(1)], [halves_scene(2)]
    kw = {"epochs": 2, "steps_per_epoch": 2, "ema": 0.5}
    with_elr = train(tiny_train_config(32, elr=3.0, **kw), tr, va, tmp_path / "a" / "m.safetensors")
    without = train(tiny_train_config(32, **kw), tr, va, tmp_path / "b" / "m.safetensors")
    # the logged term is a mean of log(1 − ⟨p, m·t⟩): negative, above the floor; the mass ramps over 0.3 · 4 steps
    assert all(math.log(ELR_FLOOR) <= r["elr"] < 0 for r in with_elr["history"])
    assert [r["elr_mass"] for r in with_elr["history"]] == pytest.approx([(0 + 1 / 1.2) / 2, 1.0])
    assert all("elr" not in r for r in without["history"])
    # step 0 is the same in both runs (the teacher's mass is 0 then); from step 1 on (mass 1/1.2) the loss adds
    # 3 × the term, so the epoch means and the trained weights differ
    assert with_elr["history"][0]["loss"] != pytest.approx(without["history"][0]["loss"])
    from safetensors.torch import load_file

    a, b = load_file(str(tmp_path / "a" / "m.safetensors")), load_file(str(tmp_path / "b" / "m.safetensors"))
    assert a.keys() == b.keys() and any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())
