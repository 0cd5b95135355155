"""Tests of the training recipe in seghz.train.trainer: loss options, noise-threshold logging, trusted masks,
NaN stop with the last good checkpoint kept, deterministic seeds, early stopping, config validation.

Runs tiny trainings (FPN + mobilenetv3_small_050, 32² crops, a couple of steps) on one CPU thread.
"""
from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from helpers_core import tiny_train_config, torch_one_thread  # noqa: F401 (fixture)

from seghz.models.checkpoint import read_metadata
from seghz.train import losses as losses_mod
from seghz.train import trainer as trainer_mod
from seghz.train.losses import noise_threshold
from seghz.train.trainer import TrainConfig, TrainDiverged, make_batch, train

pytestmark = pytest.mark.usefixtures("torch_one_thread")

SIZE = 32


def _scene(seed: int, classes=(0, 1, 2, 3, 4, 5, 6)) -> tuple[np.ndarray, np.ndarray]:
    rs = np.random.RandomState(seed)
    lbl = np.zeros((SIZE, SIZE), np.uint8)
    cls = list(classes)
    for i in range(4):  # four horizontal bands; the three training scenes cover all 7 classes
        lbl[i * 8 : (i + 1) * 8] = cls[(seed * 4 + i) % len(cls)]
    lbl[: 2 + seed % 3, : 3] = 255
    palette = np.array([[30, 60, 170], [20, 120, 220], [12, 150, 210], [6, 160, 100], [220, 220, 220], [250, 200, 50], [250, 250, 10]], np.float64)
    img = palette[np.where(lbl == 255, 0, lbl)] + rs.normal(0, 12, (SIZE, SIZE, 3))
    return np.clip(img, 0, 255).astype(np.uint8), lbl


@pytest.fixture(scope="module")
def data():
    tr = [_scene(s) for s in range(3)]
    va = [_scene(10)]
    return tr, va


def _cfg(**kw) -> TrainConfig:
    return tiny_train_config(SIZE, **kw)


OPTIONS = {
    "ce": {},
    "enet": {"class_weights": "enet"},
    "inverse": {"class_weights": "inverse"},
    "dice": {"dice": True, "dice_weight": 0.5},
    "smoothing": {"label_smoothing": 0.1},
    "noise_cos": {"noise_mask": "cos"},
    "noise_const_kept": {"noise_mask": "const", "noise_threshold": 1.0, "noise_denominator": "kept"},
    "ohem": {"ohem": True, "ohem_min_kept": 100},
    "consistency": {"consistency": True, "consistency_weight": 0.5},
    "forward": {"robust": "forward", "noise_rate": 0.2},
    "gce": {"robust": "gce", "gce_q": 0.5},
    "gce_warmup": {"robust": "gce", "gce_q": 0.5, "gce_warmup": 1.0},
}


@pytest.mark.parametrize("name", list(OPTIONS))
def test_each_loss_option_trains_and_logs(name, data, tmp_path):
    tr, va = data
    rows = []
    cfg = _cfg(**OPTIONS[name])
    res = train(cfg, tr, va, tmp_path / "m.safetensors", on_metrics=lambda s, e, r: rows.append(r))
    assert [r["epoch"] for r in rows] == [1, 2] and res["history"] == rows
    assert all(math.isfinite(r["loss"]) for r in rows)
    assert (tmp_path / "m.safetensors").exists()
    recipe = read_metadata(tmp_path / "m.safetensors")["recipe"]
    for k, v in OPTIONS[name].items():
        assert recipe[k] == v
    if name.startswith("noise"):
        expect = [noise_threshold(e, 2) for e in (1, 2)] if name == "noise_cos" else [1.0, 1.0]
        assert [r["noise_threshold"] for r in rows] == pytest.approx(expect)
        assert all(0.0 <= r["noise_dropped"] <= 1.0 for r in rows)
    else:
        assert "noise_threshold" not in rows[0]
    if name == "gce_warmup":  # 2 epochs, warm-up over all of them: CE in epoch 1, q = 0.5 · 1/2 in epoch 2
        assert [r["gce_q"] for r in rows] == pytest.approx([0.0, 0.25])
    else:
        assert "gce_q" not in rows[0]
    if name == "ohem":
        assert all(0.0 < r["ohem_kept"] <= 1.0 for r in rows)
    if name == "consistency":
        assert all(r["consistency_mse"] >= 0.0 for r in rows)


def test_cos_threshold_logged_every_epoch_matches_the_schedule(data, tmp_path):
    tr, _ = data
    res = train(_cfg(epochs=4, noise_mask="cos"), tr, [], tmp_path / "m.safetensors")
    got = [r["noise_threshold"] for r in res["history"]]
    assert got == pytest.approx([math.log(10) + 0.5 * math.log(10) * (1 + math.cos(math.pi * e / 4)) for e in range(1, 5)])
    assert got[-1] == pytest.approx(math.log(10))


def test_trusted_masks_optional_per_sample(data, tmp_path):
    tr, va = data
    # all pixels trusted with a tiny constant threshold: nothing may be dropped
    trusted = [(img, lbl, np.ones_like(lbl, bool)) for img, lbl in tr]
    res = train(_cfg(noise_mask="const", noise_threshold=1e-3), trusted, va, tmp_path / "a.safetensors")
    assert all(r["noise_dropped"] == 0.0 for r in res["history"])
    # mixed 2- and 3-tuples; untrusted pixels get dropped at that threshold
    mixed = [tr[0] + (np.zeros_like(tr[0][1], bool),), tr[1], tr[2]]
    res = train(_cfg(noise_mask="const", noise_threshold=1e-3), mixed, va, tmp_path / "b.safetensors")
    assert all(r["noise_dropped"] > 0.5 for r in res["history"])
    with pytest.raises(ValueError, match="trusted mask"):
        train(_cfg(), [tr[0] + (np.ones((3, 3), bool),)], [], tmp_path / "c.safetensors")


def test_make_batch_keeps_trusted_aligned_with_labels():
    img, lbl = _scene(4)
    lbl = lbl.copy()
    lbl[:, :5] = 3  # asymmetric so D4 views matter
    samples = [(img, lbl, lbl == 3)] * 6 + [(img, lbl)]
    rng = random.Random(5)
    norm = {"mean": [0.5] * 3, "std": [0.5] * 3}
    for _ in range(4):
        _, y, t = make_batch(samples, list(range(7)), SIZE, rng, norm, return_trusted=True)
        assert t.dtype == torch.bool and t.shape == y.shape
        assert torch.equal(t[:6], y[:6] == 3)
        assert not t[6].any()  # no mask -> nothing trusted
    x2, y2 = make_batch(samples, [0], SIZE, random.Random(0), norm)  # the two-value form stays
    assert x2.shape == (1, 3, SIZE, SIZE) and y2.shape == (1, SIZE, SIZE)


def test_nan_loss_stops_with_clear_error_and_keeps_last_good_checkpoint(data, tmp_path, monkeypatch):
    tr, va = data
    calls = {"n": 0}
    orig = losses_mod.SegLoss.model_loss

    def poisoned(self, model, x, y, trusted=None, k=None):
        loss, logits = orig(self, model, x, y, trusted, k)
        calls["n"] += 1
        return (loss * float("nan") if calls["n"] > 2 else loss), logits

    monkeypatch.setattr(losses_mod.SegLoss, "model_loss", poisoned)
    out = tmp_path / "m.safetensors"
    with pytest.raises(TrainDiverged, match=r"loss became nan at epoch 2.*last good checkpoint \(epoch 1\)"):
        train(_cfg(epochs=3, steps_per_epoch=2), tr, va, out)
    assert read_metadata(out)["metrics"]["epoch"] == 1
    # NaN in the very first step: no checkpoint at all, said so
    calls["n"] = 10
    with pytest.raises(TrainDiverged, match="no checkpoint was written"):
        train(_cfg(), tr, va, tmp_path / "none.safetensors")
    assert not (tmp_path / "none.safetensors").exists()


def test_late_loss_read_back_gives_the_same_run_and_the_same_nan_stop(data, tmp_path, monkeypatch):
    """On one CUDA device the loss is read back one step late (the GPU goes on meanwhile). Forced here on the CPU:
    the history, progress messages and checkpoint equal the immediate read-back's, and a NaN still stops the run
    naming its step, with the last good checkpoint kept."""
    tr, va = data
    runs = {}
    for lag in (0, 1):
        monkeypatch.setattr(trainer_mod, "_sync_lag", lambda cuda, dctx, lag=lag: lag)
        msgs: list[str] = []
        res = train(_cfg(epochs=2, steps_per_epoch=3, noise_mask="cos"), tr, va, tmp_path / f"l{lag}.safetensors",
                    progress=lambda f, m, msgs=msgs: msgs.append(m))
        runs[lag] = ([{k: v for k, v in r.items() if k != "seconds"} for r in res["history"]], msgs)
    assert runs[0] == runs[1]
    assert sum("step" in m and "loss" in m for m in runs[1][1]) == 6
    calls = {"n": 0}
    orig = losses_mod.SegLoss.model_loss

    def poisoned(self, model, x, y, trusted=None, k=None):
        loss, logits = orig(self, model, x, y, trusted, k)
        calls["n"] += 1
        return (loss * float("nan") if calls["n"] == 3 else loss), logits

    monkeypatch.setattr(losses_mod.SegLoss, "model_loss", poisoned)
    out = tmp_path / "m.safetensors"
    with pytest.raises(TrainDiverged, match=r"loss became nan at epoch 2, step 3;.*last good checkpoint \(epoch 1\)"):
        train(_cfg(epochs=3, steps_per_epoch=2), tr, va, out)
    assert read_metadata(out)["metrics"]["epoch"] == 1


def test_same_seed_same_run(data, tmp_path):
    tr, va = data
    cfg = {"epochs": 2, "steps_per_epoch": 2, "consistency": True, "noise_mask": "cos"}
    a = train(_cfg(**cfg), tr, va, tmp_path / "a.safetensors")["history"]
    b = train(_cfg(**cfg), tr, va, tmp_path / "b.safetensors")["history"]
    for ra, rb in zip(a, b):
        assert ra["loss"] == rb["loss"] and ra["val_miou"] == rb["val_miou"]
    c = train(_cfg(seed=1, **cfg), tr, va, tmp_path / "c.safetensors")["history"]
    assert c[0]["loss"] != a[0]["loss"]


def test_early_stopping_on_the_monitored_score(data, tmp_path, monkeypatch):
    tr, va = data
    seq = iter([0.5, 0.4, 0.45, 0.6, 0.7, 0.8])

    def fake_eval(pred, samples, names, tta="none"):
        v = next(seq)
        return {"miou": 0.1, "fwiou": v, "oa": 0.5, "per_class": {}}

    monkeypatch.setattr(trainer_mod, "evaluate_samples", fake_eval)
    res = train(_cfg(epochs=6, monitor="fwiou", patience=2), tr, va, tmp_path / "m.safetensors")
    assert res["stopped_early"] == 3 and len(res["history"]) == 3
    assert read_metadata(tmp_path / "m.safetensors")["metrics"]["epoch"] == 1
    seq2 = iter([0.5, 0.4, 0.45, 0.6])
    monkeypatch.setattr(trainer_mod, "evaluate_samples", lambda *a, **k: {"miou": 0.1, "fwiou": next(seq2), "oa": 0.5, "per_class": {}})
    res = train(_cfg(epochs=4, monitor="fwiou"), tr, va, tmp_path / "n.safetensors")  # no patience: all epochs
    assert res["stopped_early"] is None and len(res["history"]) == 4


def test_absent_class_warns_and_trains(tmp_path):
    """The warning is one progress (log) line naming the split, not a raw UserWarning as well (review fix)."""
    tr = [_scene(s, classes=(0, 1, 2)) for s in range(3)]
    said = []
    res = train(_cfg(class_weights="enet", epochs=1), tr, [], tmp_path / "m.safetensors",
                progress=lambda f, m: said.append(m))
    assert next(m for m in said if "training split" in m).startswith("warning: 4 of 7 classes have no pixel")
    assert math.isfinite(res["history"][0]["loss"])


def test_forward_correction_gets_the_classes_present_in_the_training_labels(tmp_path, monkeypatch):
    tr = [_scene(s, classes=(0, 1, 2)) for s in range(3)]  # classes 3..6 of hz7 are absent
    built = []
    real = trainer_mod.SegLoss

    def spy(*a, **k):
        built.append(k.get("present"))
        return real(*a, **k)

    monkeypatch.setattr(trainer_mod, "SegLoss", spy)
    res = train(_cfg(robust="forward", noise_rate=0.5, epochs=1), tr, [], tmp_path / "m.safetensors")
    assert math.isfinite(res["history"][0]["loss"])
    assert built[0].tolist() == [True, True, True, False, False, False, False]
    # K = 3 present classes: η must be below 2/3 (the scheme's 6/7 is not enough)
    with pytest.raises(ValueError, match="K = 3 present classes"):
        train(_cfg(robust="forward", noise_rate=0.7, epochs=1), tr, [], tmp_path / "n.safetensors")


@pytest.mark.parametrize("kw, msg", [
    ({"label_smoothing": 1.0}, r"label_smoothing.*\[0, 1\)"),
    ({"label_smoothing": -0.2}, "label_smoothing"),
    ({"noise_mask": "cosine"}, "noise_mask must be one of"),
    ({"noise_denominator": "some"}, "noise_denominator"),
    ({"class_weights": "median"}, "class_weights must be one of"),
    ({"ohem": True, "noise_mask": "cos"}, "only one"),
    ({"robust": "forward", "bootstrap": "hard"}, "cannot be combined with bootstrapping"),
    ({"robust": "gce", "gce_q": 0.0}, "gce_q"),
    ({"robust": "forward", "noise_rate": 0.9}, r"noise_rate η must be below \(K−1\)/K"),
    ({"robust": "huber"}, "robust .*must be one of"),
    ({"noise_p_start": 1.5}, "noise_p_start"),
    ({"monitor": "oa"}, "monitor must be one of"),
    ({"patience": 0}, "patience"),
    ({"steps_per_epoch": 0}, "steps_per_epoch"),
    ({"crop_size": 40}, "multiple of 32"),
])
def test_impossible_settings_are_rejected_with_clear_messages(kw, msg):
    with pytest.raises(ValueError, match=msg):
        _cfg(**kw).validate()


def test_empty_or_unlabelled_training_set(tmp_path):
    with pytest.raises(ValueError, match="no training samples"):
        train(_cfg(), [], [], tmp_path / "m.safetensors")
    img, lbl = _scene(0)
    with pytest.raises(ValueError, match="no labelled pixel"):
        train(_cfg(), [(img, np.full_like(lbl, 255))], [], tmp_path / "m.safetensors")


@pytest.mark.parametrize("opts", [{"sampler": "class_aware"}, {"augment": "device", "scale_min": 0.8, "scale_max": 1.2},
                                  {"augment": "device", "sampler": "class_aware", "sampler_classes": [5]}])
def test_sampler_and_device_augmentation_train(opts, data, tmp_path):
    tr, va = data
    res = train(_cfg(**opts), tr, va, tmp_path / "m.safetensors")
    assert (tmp_path / "m.safetensors").is_file() and len(res["history"]) == 2


def test_sampler_and_augment_settings_are_validated():
    for bad in ({"sampler": "buildings"}, {"augment": "gpu"}, {"scale_min": 1.5, "scale_max": 1.0},
                {"sampler_min_fraction": 2.0}):
        with pytest.raises(ValueError):
            _cfg(**bad).validate()


def test_cli_set_overrides_recipe_fields():
    from seghz.cli import _apply_sets
    from seghz.errors import SegHZError

    cfg = _cfg()
    _apply_sets(cfg, ["noise_mask=cos", "label_smoothing=0.1", "ohem=false", "sampler=class_aware", "patience=3",
                      "sampler-classes=[5]"])
    assert (cfg.noise_mask, cfg.label_smoothing, cfg.ohem, cfg.sampler, cfg.patience, cfg.sampler_classes) == \
        ("cos", 0.1, False, "class_aware", 3, [5])
    for bad in (["nope=1"], ["noise_mask"], ["label_smoothing=1.5"], ["sampler=everything"]):
        with pytest.raises(SegHZError):
            _apply_sets(_cfg(), bad)
