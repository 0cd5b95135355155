"""Tests of seghz.train.calibrate: the clean prior behind noisy label frequencies, argmax-frequency matching, and a
calibrated checkpoint (only the classifier's bias moves)."""
from __future__ import annotations

import numpy as np
import pytest
from helpers_core import torch_one_thread  # noqa: F401 (fixture)
from hypothesis import given, settings
from hypothesis import strategies as st

from seghz.classes import get_scheme
from seghz.train.calibrate import ABSENT_BIAS, calibrate_checkpoint, clean_prior, match_argmax_prior
from seghz.train.losses import forward_transition

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_clean_prior_by_hand():
    f = np.array([0.5, 0.3, 0.2, 0.0])
    assert np.allclose(clean_prior(f), f)  # trusted labels: their own frequencies
    # symmetric noise η 0.3 among the 3 present classes: π̃ = 0.15 + 0.55 π  ->  π = (π̃ − 0.15) / 0.55
    t = forward_transition(4, 0.3, f > 0).numpy()
    assert np.allclose(clean_prior(f, t), [0.35 / 0.55, 0.15 / 0.55, 0.05 / 0.55, 0.0])
    # a label distribution the noise cannot produce: negative solutions are clipped and the rest renormalised
    assert np.allclose(clean_prior(np.array([0.9, 0.05, 0.05, 0.0]), t), [1, 0, 0, 0])
    # ... unless a floor keeps every labelled class: at least min_share of its label share, then renormalised
    got = clean_prior(np.array([0.9, 0.05, 0.05, 0.0]), t, min_share=0.2)
    want = np.array([0.75 / 0.55, 0.01, 0.01, 0])  # (0.9 − 0.15) / 0.55 for class 0; 0.2 × 0.05 for classes 1, 2
    assert np.allclose(got, want / want.sum())
    # the noisy frequencies of a known prior map back to it
    pi = np.array([0.6, 0.3, 0.1, 0.0])
    assert np.allclose(clean_prior(t.T @ pi, t), pi)
    with pytest.raises(ValueError, match="not all 0"):
        clean_prior(np.zeros(3))
    with pytest.raises(ValueError, match="noise matrix is"):
        clean_prior(f, np.eye(3))


def test_match_argmax_prior_restores_a_class_the_model_never_predicts():
    rng = np.random.default_rng(0)
    k, n = 4, 20_000
    true = rng.choice(k, n, p=[0.5, 0.3, 0.15, 0.05])
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), true] += 2.0  # informative scores ...
    logits[:, 3] -= 4.0  # ... but class 3 is pushed below every other class: never predicted
    log_p = logits - np.logaddexp.reduce(logits, 1, keepdims=True)
    before = np.bincount(log_p.argmax(1), minlength=k) / n
    assert before[3] < 0.005
    b = match_argmax_prior(log_p, np.array([0.5, 0.3, 0.15, 0.05]))
    after = np.bincount((log_p + b).argmax(1), minlength=k) / n
    assert np.allclose(after, [0.5, 0.3, 0.15, 0.05], rtol=0.02)
    assert abs(b.mean()) < 1e-9 and b[3] > 2  # class 3's threshold moved down by far the most
    recall3 = ((log_p + b).argmax(1)[true == 3] == 3).mean()
    assert recall3 > 0.5  # its scores still ranked its pixels: they come back


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(2, 6), absent=st.integers(0, 1))
def test_match_argmax_prior_hits_any_reachable_prior(seed, k, absent):
    rng = np.random.default_rng(seed)
    n = 5000
    logits = rng.normal(0, 2, (n, k + absent))
    target = np.append(rng.dirichlet(np.ones(k)) * 0.9 + 0.1 / k, [0.0] * absent)
    b = match_argmax_prior(logits, target, iters=600)
    f = np.bincount((logits + b).argmax(1), minlength=k + absent) / n
    assert np.abs(f[:k] - target[:k]).max() <= 0.01 * target[:k].max() + 2 / n
    if absent:
        assert b[-1] == ABSENT_BIAS and f[-1] == 0


def test_match_argmax_prior_refuses_bad_input():
    with pytest.raises(ValueError, match="N×3"):
        match_argmax_prior(np.zeros((5, 2)), np.ones(3))
    with pytest.raises(ValueError, match="not all 0"):
        match_argmax_prior(np.zeros((5, 3)), np.zeros(3))


def test_calibrated_checkpoint_moves_only_the_classifier_bias(tmp_path):
    import torch
    from safetensors.torch import load_file

    from seghz.models.checkpoint import read_metadata, save_checkpoint
    from seghz.models.registry import build_model

    hz7 = get_scheme("hz7")
    torch.manual_seed(0)
    model = build_model("Unet", "resnet18", hz7.num_classes, encoder_weights=None)
    ck = tmp_path / "m.safetensors"
    save_checkpoint(ck, model, {"arch": "Unet", "encoder": "resnet18", "num_classes": hz7.num_classes,
                                "scheme": hz7.to_json(), "normalization": {"mean": [0.5] * 3, "std": [0.5] * 3},
                                "tile_size": 64, "recipe": {"epochs": 1}})
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(3)]
    labels = [rng.integers(0, 7, (64, 64)).astype(np.uint8) for _ in range(3)]
    labels[0][:8] = 255
    target = np.array([0.3, 0, 0.3, 0.2, 0, 0.1, 0.1])
    out = tmp_path / "cal.safetensors"
    info = calibrate_checkpoint(ck, images, labels, target, out, pixels=3000)
    assert info["pixels"] == 3000 and info["freqs_after"][1] == 0 and info["freqs_after"][4] == 0
    err_before = np.abs(np.array(info["freqs_before"]) - target).sum()
    err_after = np.abs(np.array(info["freqs_after"]) - target).sum()
    assert err_after < 0.05 < err_before
    a, b = load_file(str(ck)), load_file(str(out))
    changed = [k for k in a if not torch.equal(a[k], b[k])]
    assert changed == ["segmentation_head.0.bias"]
    assert torch.allclose(b[changed[0]] - a[changed[0]], torch.tensor(info["bias"], dtype=torch.float32), atol=1e-5)
    meta = read_metadata(out)
    assert meta["recipe"]["epochs"] == 1 and meta["recipe"]["calibrated_prior"]["target"] == target.tolist()
