"""Cross-fitted label cleaning before training (seghz.train.clean, ``TrainConfig.clean="crossfit"``, issue 4).

Hand cases for the fold split and the doubt rule, and tiny CPU trainings on colour-coded scenes (the colour gives
the class) where in one scene a red square is labelled green: the fold model that never saw that scene must call the
square red, so the cleaned labels correct (or drop) it, the final model trains on them, the cleaning's budget is
part of the run's, and a resumed run reuses the cleaned labels instead of training the fold models again.
"""
from __future__ import annotations

import numpy as np
import pytest
from helpers_core import DDP_FLIPPED_SQUARE_HEAD, colour_scene, run_two_gloo_ranks, tiny_train_config, torch_one_thread  # noqa: F401 (fixture)
from hypothesis import given, settings
from hypothesis import strategies as st

from seghz.classes import IGNORE
from seghz.train import clean as clean_mod
from seghz.train.clean import doubt_ignore, fold_of, total_steps
from seghz.train.refine import RefineParams
from seghz.train.trainer import TrainConfig, clean_path, train

pytestmark = pytest.mark.usefixtures("torch_one_thread")
S = 64
SQUARE = np.s_[8:24, 8:24]


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 60), folds=st.integers(2, 6), seed=st.integers(0, 10))
def test_folds_partition_the_images_evenly_and_depend_on_the_seed_only(n, folds, seed):
    if n < folds:
        with pytest.raises(ValueError, match="at least"):
            fold_of(n, folds, seed)
        return
    f = fold_of(n, folds, seed)
    assert f == fold_of(n, folds, seed) and set(f) == set(range(folds))
    sizes = np.bincount(f, minlength=folds)
    assert sizes.max() - sizes.min() <= 1


def test_one_fold_is_refused():
    with pytest.raises(ValueError, match="2 folds"):
        fold_of(10, 1, 0)


def _probs(h, w, base=(0.8, 0.1, 0.1)):
    return np.broadcast_to(np.asarray(base, np.float32)[:, None, None], (3, h, w)).copy()


def test_doubt_rule_ignores_unlikely_regions_without_a_confident_alternative():
    given_ = np.zeros((20, 20), np.uint8)
    p = _probs(20, 20)
    # a 5×5 piece the model calls class 1 with p 0.45 (not confident) while p(given 0) = 0.1 < keep: doubtful
    p[:, 2:7, 2:7] = np.array([0.1, 0.45, 0.45], np.float32)[:, None, None]
    # a 5×5 piece called class 2 but p(given) 0.3 >= keep: kept
    p[:, 10:15, 10:15] = np.array([0.3, 0.2, 0.5], np.float32)[:, None, None]
    # a 2×2 doubtful piece below min_px: kept
    p[:, 17:19, 17:19] = np.array([0.1, 0.45, 0.45], np.float32)[:, None, None]
    params = RefineParams(min_px=16, conf=0.5, keep=0.2, ignore_conf=None)
    out = doubt_ignore(given_, given_.copy(), p, None, params)
    assert (out[2:7, 2:7] == IGNORE).all()
    assert (out[10:15, 10:15] == 0).all() and (out[17:19, 17:19] == 0).all()
    assert int((out == IGNORE).sum()) == 25
    trusted = np.zeros((20, 20), bool)
    trusted[2:7, 2:7] = True
    assert not (doubt_ignore(given_, given_.copy(), p, trusted, params) == IGNORE).any()
    relabelled = given_.copy()
    relabelled[2:7, 2:7] = 1  # already changed by the relabel rule: left alone
    assert (doubt_ignore(given_, relabelled, p, None, params)[2:7, 2:7] == 1).all()


def test_config_validation():
    for kw, msg in (({"clean": "magic"}, "unknown clean"), ({"clean_folds": 1}, "clean_folds"),
                    ({"clean_share": 1.0}, "clean_share"), ({"clean_conf": 0.0}, "clean_conf"),
                    ({"clean_keep": 1.5}, "clean_keep"), ({"clean": "crossfit", "refine": "region"}, "choose one")):
        with pytest.raises(ValueError, match=msg):
            TrainConfig(scheme="hz7", **kw).validate()


@pytest.fixture(scope="module")
def noisy():
    """6 colour-coded scenes; in scene 0 a red 16×16 square (true class 2) is labelled green (5)."""
    tr = [colour_scene(i, S) for i in range(6)]
    img, lbl = tr[0]
    lbl = lbl.copy()
    lbl[SQUARE] = 5
    tr[0] = (img, lbl)
    return tr


def _ccfg(**kw):
    base = {"epochs": 2, "steps_per_epoch": 24, "batch_size": 4, "lr": 1e-2, "clean": "crossfit", "clean_folds": 2}
    return tiny_train_config(S, **{**base, **kw})


@pytest.mark.filterwarnings("ignore:class\\(es\\) absent")
def test_crossfit_cleans_a_flipped_square_and_the_final_model_trains_on_the_cleaned_labels(noisy, tmp_path, monkeypatch):
    seen = []
    real = clean_mod.crossfit_clean

    def spy(cfg, samples, **kw):
        cleaned, stats = real(cfg, samples, **kw)
        seen.append(cleaned)
        return cleaned, stats

    monkeypatch.setattr(clean_mod, "crossfit_clean", spy)
    trained_on = []
    import seghz.train.trainer as trainer_mod

    real_train = trainer_mod._train

    def spy_train(cfg, dctx, device, samples, *a, **kw):
        trained_on.append((cfg, samples))
        return real_train(cfg, dctx, device, samples, *a, **kw)

    monkeypatch.setattr(trainer_mod, "_train", spy_train)
    cfg = _ccfg()
    res = train(cfg, noisy, [], tmp_path / "m.safetensors")
    (cleaned,) = seen
    lab0 = cleaned[0][1]
    sq = lab0[SQUARE]
    assert ((sq == 2) | (sq == IGNORE)).mean() > 0.9, np.bincount(sq.ravel())  # corrected or dropped, not kept green
    other = np.ones((S, S), bool)
    other[SQUARE] = False
    for i, ((_, a, *_), (_, b)) in enumerate(zip(cleaned, noisy)):
        assert ((a != b) & (other if i == 0 else True)).mean() < 0.05, i  # little else changes
    # the 2 fold models come first, then the final model on the cleaned labels, with the steps left
    final_cfg, final_samples = trained_on[-1]
    assert len(trained_on) == 3 and [s[1] for s in final_samples] == [c[1] for c in cleaned]
    steps = total_steps(cfg, noisy)
    assert final_cfg.steps_per_epoch * final_cfg.epochs == steps // 2
    assert sum(c.steps_per_epoch * c.epochs for c, _ in trained_on[:2]) == steps // 2
    assert res["clean"]["clean_relabelled_px"] + res["clean"]["clean_ignored_px"] > 0
    assert len(res["clean"]["clean_folds"]) == 2
    assert clean_path(tmp_path / "m.safetensors").is_file()
    assert not (tmp_path / ".m.safetensors.crossfit").exists()  # the fold checkpoints are removed
    from seghz.models.checkpoint import read_metadata

    meta = read_metadata(tmp_path / "m.safetensors")
    assert meta["recipe"]["clean"] == "crossfit" and "clean_relabelled_px" in meta["clean"]


@pytest.mark.filterwarnings("ignore:class\\(es\\) absent")
def test_resume_reuses_the_cleaned_labels(noisy, tmp_path, monkeypatch):
    out = tmp_path / "m.safetensors"
    from seghz.train.trainer import TrainCancelled

    calls = {"n": 0}

    def stop_in_final(f, m):
        if m.startswith("epoch 2/"):
            calls["n"] += 1
            if calls["n"] == 1:
                raise TrainCancelled("stop")

    with pytest.raises(TrainCancelled):
        train(_ccfg(), noisy, [], out, progress=stop_in_final)
    assert clean_path(out).is_file()

    def boom(*a, **k):
        raise AssertionError("fold models trained again")

    monkeypatch.setattr(clean_mod, "crossfit_clean", boom)
    res = train(_ccfg(resume=True), noisy, [], out)
    assert res["clean"]["reused"] == str(clean_path(out))


@pytest.mark.filterwarnings("ignore:class\\(es\\) absent")
def test_progress_covers_cleaning_then_training_once_and_a_cancel_stops_the_fold_models(noisy, tmp_path):
    fr: list[tuple[float, str]] = []
    train(_ccfg(), noisy, [], tmp_path / "m.safetensors", progress=lambda f, m: fr.append((f, m)))
    cleaning = [f for f, m in fr if m.startswith("cleaning")]
    final = [f for f, m in fr if not m.startswith("cleaning")]
    assert cleaning and final and max(cleaning) <= 0.5 + 1e-9 and min(final) >= 0.5 - 1e-9
    assert all(0.0 <= f <= 1.0 for f, _ in fr) and fr[-1][0] == pytest.approx(1.0)
    from seghz.train.trainer import TrainCancelled

    asked = {"n": 0}

    def cancel_soon():
        asked["n"] += 1
        return asked["n"] > 3  # during the first fold model

    with pytest.raises(TrainCancelled):
        train(_ccfg(), noisy, [], tmp_path / "c.safetensors", should_cancel=cancel_soon)
    assert not (tmp_path / "c.safetensors").exists() and not clean_path(tmp_path / "c.safetensors").exists()


DDP_DRIVER = DDP_FLIPPED_SQUARE_HEAD.replace("{n}", "6") + r'''
cfg = tiny_train_config(S, epochs=2, steps_per_epoch=12, batch_size=2, lr=1e-2, clean="crossfit")
res = train(cfg, tr, [], sys.argv[1])
print_json_line({{"rank": int(os.environ["RANK"]), "digest": res["clean"]["labels_digest"]}})
'''


def test_ddp_ranks_train_on_rank_0s_cleaned_labels(tmp_path):
    from seghz.train.refine import labels_digest
    from seghz.train.trainer import _read_clean

    outs = run_two_gloo_ranks(DDP_DRIVER, tmp_path, str(tmp_path / "m.safetensors"))
    assert [o["rank"] for o in outs] == [0, 1] and outs[0]["digest"] == outs[1]["digest"]
    tr = [(np.zeros((S, S, 3), np.uint8), np.zeros((S, S), np.uint8))] * 6  # shapes only, for the reader
    saved = _read_clean(clean_path(tmp_path / "m.safetensors"), tr)
    assert saved is not None and labels_digest(saved) == outs[0]["digest"]
    assert (saved[0][SQUARE] != 5).mean() > 0.9  # the flipped square was cleaned on rank 0's judgement
    assert not (tmp_path / ".m.safetensors.crossfit").exists()


def test_form_maps_the_clean_option():
    from seghz.train.form import form_state_from_config

    state, notes = form_state_from_config({"clean": "crossfit"}, active_id=None)
    assert state["train_clean"] == "crossfit" and not notes
    state, notes = form_state_from_config({"clean": "bogus"}, active_id=None)
    assert "train_clean" not in state and notes
