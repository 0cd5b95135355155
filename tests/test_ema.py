"""The moving average of the weights (seghz.train.ema) and its use by the trainer: the update rule against a hand
computation, the warm-up, the horizon → decay rule, the averaged weights as the checkpoint and as refine's judge."""
from __future__ import annotations

import pytest
import torch
from helpers_core import halves_scene, tiny_train_config, torch_one_thread  # noqa: F401 (fixture)

from seghz.train import trainer as trainer_mod
from seghz.train.ema import WeightEMA, ema_decay, warm_decay
from seghz.train.state import load_train_state, state_path
from seghz.train.trainer import TrainConfig, train

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))


def test_decay_from_horizon_and_warm_up():
    assert ema_decay(0.05, 4000) == pytest.approx(1 - 1 / 200)
    assert ema_decay(0.5, 10) == pytest.approx(0.8)
    assert ema_decay(0.01, 10) == 0.0  # a horizon under one step: the average is the live model
    with pytest.raises(ValueError, match="horizon must be > 0"):
        ema_decay(0.0, 100)
    assert warm_decay(0.999, 0) == pytest.approx(0.1)
    assert warm_decay(0.999, 8) == pytest.approx(0.5)
    assert warm_decay(0.9, 10_000) == 0.9


def test_update_matches_the_hand_computation_and_copies_integer_buffers():
    live = _net()
    ema = WeightEMA(live, decay=0.5)
    w0 = live[0].weight.detach().clone()
    assert not ema.module.training and not any(p.requires_grad for p in ema.module.parameters())
    with torch.no_grad():
        live[0].weight.add_(1.0)
        live[1].running_mean.fill_(2.0)
    live.train()
    live(torch.randn(2, 3, 4, 4))  # one BatchNorm step: num_batches_tracked 0 -> 1 (and running stats move)
    rm = live[1].running_mean.clone()
    d = ema.update(live)  # update 0: warm decay 0.1
    assert d == pytest.approx(0.1)
    torch.testing.assert_close(ema.module[0].weight, 0.1 * w0 + 0.9 * (w0 + 1.0))
    torch.testing.assert_close(ema.module[1].running_mean, 0.1 * torch.zeros(4) + 0.9 * rm)
    assert int(ema.module[1].num_batches_tracked) == 1
    for _ in range(30):  # decay reaches its cap 0.5; a fixed live model is approached geometrically
        d = ema.update(live)
    assert d == 0.5 and ema.updates == 31
    torch.testing.assert_close(ema.module[0].weight, live[0].weight, atol=1e-6, rtol=0)
    other = WeightEMA(_net(), 0.5)
    other.load_state_dict(ema.state_dict(), ema.updates)
    torch.testing.assert_close(other.module[0].weight, ema.module[0].weight)
    assert other.updates == 31
    with pytest.raises(ValueError, match="state-dict keys differ"):
        ema.update(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1)))


def test_the_checkpoint_holds_the_averaged_weights_and_they_judge_the_labels(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    judges = []
    real = trainer_mod.refine_samples

    def spy(model, *a, **k):
        judges.append(model)
        return real(model, *a, **k)

    monkeypatch.setattr(trainer_mod, "refine_samples", spy)
    out = tmp_path / "m.safetensors"
    cfg = tiny_train_config(32, epochs=3, steps_per_epoch=2, ema=0.5, refine="drop")
    train(cfg, [halves_scene(0), halves_scene(1)], [], out)  # no validation: every epoch is a new best, the last one is kept
    ck = load_file(str(out))
    ts = load_train_state(state_path(out))
    assert ts.ema is not None and ck.keys() == ts.ema.keys() == ts.model.keys()
    for k, v in ck.items():
        torch.testing.assert_close(v, ts.ema[k], rtol=0, atol=0)
    assert any(not torch.equal(ts.model[k], ts.ema[k]) for k in ck if ck[k].is_floating_point())
    assert judges and all(not m.training and not any(p.requires_grad for p in m.parameters()) for m in judges)


@pytest.mark.parametrize("bad", [-0.1, 1.5, True, "0.1"])
def test_ema_setting_is_checked(bad):
    with pytest.raises(ValueError, match="ema"):
        TrainConfig(scheme="hz7", ema=bad).validate()
