"""Fast head-only refit (seghz.train.refit) and the ``refit`` job kind.

A tiny Unet (tu-mobilenetv3_small_050, 3×3 classifier) is trained for 40 Adam steps on four 64² synthetic scenes
of 16-px class blocks with well separated colours; then two classes' head rows are swapped and the refit must
repair it from 15 corrected pixels per class. Runs on one CPU thread.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import torch
import torch.nn.functional as F
from helpers_core import torch_one_thread  # noqa: F401 (fixture)

from seghz.classes import get_scheme
from seghz.models.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from seghz.models.registry import build_model
from seghz.train.refit import (
    HeadNotFound,
    RefitConfig,
    RefitItem,
    _Pick,
    extract_features,
    find_head,
    fit_linear_head,
    refit_head,
)

pytestmark = pytest.mark.usefixtures("torch_one_thread")

ENC = "tu-mobilenetv3_small_050"
NC = 7
NORM = {"mean": [0.5] * 3, "std": [0.5] * 3}
PAL = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200], [200, 200, 30], [200, 30, 200], [30, 200, 200], [128, 128, 128]], float)
A, B = 0, 1  # the two classes whose head rows get swapped


def scene(seed: int, size: int = 64, block: int = 16) -> tuple[np.ndarray, np.ndarray]:
    rs = np.random.RandomState(seed)
    g = size // block
    lbl = np.kron(rs.randint(0, NC, (g, g)), np.ones((block, block), int)).astype(np.uint8)
    if seed < 4:  # the training scenes hold every class
        lbl[:block, :block * 4] = np.repeat(np.arange(4), block)[None]
        lbl[block:2 * block, :block * 3] = np.repeat(np.arange(4, 7), block)[None]
    img = PAL[lbl] + rs.normal(0, 12, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8), lbl


def _tensors(data):
    x = torch.stack([(torch.from_numpy(i).permute(2, 0, 1).float() / 255 - 0.5) / 0.5 for i, _ in data])
    return x, torch.stack([torch.from_numpy(lb).long() for _, lb in data])


def per_class_acc(model, data) -> np.ndarray:
    x, y = _tensors(data)
    with torch.no_grad():
        p = model.eval()(x).argmax(1)
    return np.array([float((p[y == c] == c).float().mean()) if (y == c).any() else np.nan for c in range(NC)])


def _meta(arch: str) -> dict:
    return {"arch": arch, "encoder": ENC, "num_classes": NC, "scheme": get_scheme("hz7").to_json(), "normalization": NORM,
            "recipe": {"kind": "test"}}


@pytest.fixture(scope="module")
def data():
    return [scene(s) for s in range(4)], [scene(100 + s) for s in range(3)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data, torch_one_thread):  # noqa: F811 (one thread while training)
    """(good checkpoint, scrambled checkpoint) of a tiny trained Unet."""
    tr, _ = data
    torch.manual_seed(0)
    m = build_model("Unet", ENC, NC)
    x, y = _tensors(tr)
    opt = torch.optim.Adam(m.parameters(), 3e-3)
    m.train()
    for _ in range(40):
        k = int(torch.randint(0, 4, (1,)))
        loss = F.cross_entropy(m(torch.rot90(x, k, (2, 3))), torch.rot90(y, k, (1, 2)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    d = tmp_path_factory.mktemp("refit")
    good = save_checkpoint(d / "good.safetensors", m.eval(), _meta("Unet"))
    h = m.segmentation_head[0]
    with torch.no_grad():
        h.weight[[A, B]] = h.weight[[B, A]].clone()
        h.bias[[A, B]] = h.bias[[B, A]].clone()
    bad = save_checkpoint(d / "scrambled.safetensors", m, _meta("Unet"))
    return good, bad


def _corrections(seed: int = 50, per_class: int = 15, classes=(A, B)):
    img, lbl = scene(seed)
    rs = np.random.RandomState(0)
    sparse = np.full_like(lbl, 255)
    for c in classes:
        idx = np.flatnonzero(lbl.ravel() == c)
        assert len(idx), f"scene {seed} lacks class {c}"
        sparse.ravel()[rs.choice(idx, min(per_class, len(idx)), replace=False)] = c
    return img, sparse, lbl


def test_scrambled_head_is_wrong_and_refit_repairs_it(trained, data, tmp_path):
    good, bad = trained
    _, va = data
    acc_good = per_class_acc(load_checkpoint(good)[0], va)
    acc_bad = per_class_acc(load_checkpoint(bad)[0], va)
    assert acc_good[[A, B]].min() > 0.9  # the tiny model learned the classes
    assert acc_bad[[A, B]].max() < 0.1  # swapping the rows swaps the predictions

    img, sparse, lbl = _corrections()
    res = refit_head(bad, [RefitItem(img, sparse, lbl)] + [RefitItem(i, None, lb) for i, lb in data[0]], tmp_path / "r.safetensors")
    assert res.counts["corrected_used"] == 30 and res.counts["corrected_per_class"][:2] == [15, 15]
    assert res.fit["before"]["corrected_acc"] < 0.1 and res.fit["after"]["corrected_acc"] == 1.0
    acc_new = per_class_acc(load_checkpoint(res.checkpoint)[0], va)
    assert acc_new[[A, B]].min() > 0.9, acc_new
    assert np.all(acc_new >= acc_good - 0.1), (acc_new, acc_good)


def test_only_the_head_changes_bit_for_bit(trained, tmp_path):
    _, bad = trained
    img, sparse, lbl = _corrections()
    res = refit_head(bad, [(img, sparse, lbl)], tmp_path / "r.safetensors", RefitConfig(steps=50))
    old = load_checkpoint(bad)[0].state_dict()
    new = load_checkpoint(res.checkpoint)[0].state_dict()
    assert old.keys() == new.keys()
    head_keys = {"segmentation_head.0.weight", "segmentation_head.0.bias"}
    for k in old:
        if k in head_keys:
            assert not torch.equal(old[k], new[k]), k
        else:
            assert torch.equal(old[k], new[k]), k  # bit-identical, BatchNorm statistics included


def test_untouched_classes_survive_thanks_to_the_context_sample(trained, data, tmp_path):
    """With the class-balanced sample of existing labels, classes without corrections keep their accuracy; without
    it (and with every head row trainable) they lose ground to the corrected class."""
    good, bad = trained
    tr, va = data
    img, sparse, lbl = _corrections(classes=(A, B))
    acc_good = per_class_acc(load_checkpoint(good)[0], va)
    others = [c for c in range(NC) if c not in (A, B)]

    res = refit_head(bad, [RefitItem(img, sparse, lbl)] + [RefitItem(i, None, lb) for i, lb in tr], tmp_path / "ctx.safetensors")
    assert min(res.counts["context_per_class"]) > 0  # every class sampled
    acc_ctx = per_class_acc(load_checkpoint(res.checkpoint)[0], va)
    assert np.all(acc_ctx[others] >= acc_good[others] - 0.05), (acc_ctx, acc_good)

    # corrections of class A only (B's row still holds A's old weights)
    only_a = np.where(sparse == A, A, 255).astype(np.uint8)
    free = RefitConfig(freeze_absent=False, weight_decay=0.0)
    bare = refit_head(bad, [RefitItem(img, only_a, None)], tmp_path / "bare.safetensors", RefitConfig(**{**free.__dict__, "context_per_class": 0}))
    acc_bare = per_class_acc(load_checkpoint(bare.checkpoint)[0], va)
    keep = refit_head(bad, [RefitItem(img, only_a, lbl)] + [RefitItem(i, None, lb) for i, lb in tr], tmp_path / "keep.safetensors", free)
    acc_keep = per_class_acc(load_checkpoint(keep.checkpoint)[0], va)
    assert acc_bare[A] > 0.9 and acc_keep[A] > 0.9
    assert acc_bare[B] < 0.1 and acc_keep[B] > 0.9, (acc_bare, acc_keep)  # B is only repaired by the existing labels
    assert np.all(acc_keep[others] >= acc_good[others] - 0.1), (acc_keep, acc_good)
    # without the context sample the untouched classes lose ground (here the grey class 6 drops to 0.55–0.60 against
    # 0.78 with it; the exact values move with the numeric libraries' build, so the margin is 0.1, not 0.2)
    assert acc_bare[others].min() < acc_keep[others].min() - 0.1, (acc_bare, acc_keep)


def test_saved_checkpoint_loads_and_records_its_parent(trained, tmp_path):
    _, bad = trained
    img, sparse, lbl = _corrections()
    res = refit_head(bad, [(img, sparse, lbl)], tmp_path / "child.safetensors", RefitConfig(steps=20), parent_id="scrambled-1",
                     meta_extra={"note": "x"})
    meta = read_metadata(res.checkpoint)
    assert meta["parent"] == str(bad) and meta["parent_id"] == "scrambled-1"
    assert meta["recipe"]["kind"] == "head_refit" and meta["recipe"]["corrected_used"] == 30
    assert meta["recipe"]["config"]["steps"] == 20 and meta["recipe"]["parent_recipe"] == {"kind": "test"}
    assert meta["arch"] == "Unet" and meta["normalization"] == NORM and meta["note"] == "x"
    model, _ = load_checkpoint(res.checkpoint)
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, NC, 32, 32)


@pytest.mark.parametrize("arch,enc", [("Unet", ENC), ("FPN", ENC), ("PSPNet", ENC), ("HRNetOCR", "tu-hrnet_w18_small"),
                                      ("HRNetPSP", "tu-hrnet_w18_small")])
def test_gathered_features_reproduce_the_head_output(arch, enc):
    """For 3×3 heads (Unet, PSPNet), stride-4/8 heads (FPN, PSPNet, HRNetOCR): X·Wᵀ + b equals the head's own
    output at the sampled positions, and non-multiple-of-32 windows are padded like the engine does."""
    torch.manual_seed(0)
    kw = {"HRNetOCR": {"ocr_mid_channels": 32, "ocr_key_channels": 16}, "HRNetPSP": {"bottleneck_channels": 32}}.get(arch, {})
    model = build_model(arch, enc, NC, **kw).eval()
    head = find_head(model, NC)
    if arch.startswith("HRNet"):
        assert head is (model.head.cls if arch == "HRNetOCR" else model.cls)
    else:
        assert head is model.segmentation_head[0]
    img = np.random.RandomState(1).randint(0, 255, (70, 50, 3), np.uint8)
    rows, cols = np.array([0, 5, 33, 69, 40]), np.array([0, 49, 17, 3, 30])
    pick = _Pick(0, (0, 0, 70, 50), rows, cols, np.zeros(5, np.int64), np.zeros(5, np.int8))
    X = extract_features(model, head, [RefitItem(img)], [pick], NORM, "cpu")
    outs = {}
    hook = head.register_forward_hook(lambda m, i, o: outs.setdefault("o", o))
    x = (torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255 - 0.5) / 0.5
    with torch.no_grad():
        model(F.pad(x, (0, 14, 0, 26), mode="reflect"))  # 70×50 → 96×64, as in extract_features
    hook.remove()
    o = outs["o"]
    fh, fw = o.shape[-2:]
    want = o[0, :, torch.from_numpy(rows * fh // 96), torch.from_numpy(cols * fw // 64)].T
    got = X @ head.weight.reshape(NC, -1).T + head.bias
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_find_head_fails_clearly_without_a_classifier():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Conv2d(8, 4, 1))
    with pytest.raises(HeadNotFound, match="no 1×1 Conv2d with 7 output channels"):
        find_head(net, NC)


def test_fit_keeps_absent_rows_and_decays_toward_old_weights():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(200, 5, generator=g)
    y = (X[:, 0] > 0).long()
    W0, b0 = torch.randn(3, 5, generator=g), torch.zeros(3)
    sw = torch.full((200,), 1 / 200)
    W, b, _ = fit_linear_head(X, y, sw, W0, b0, RefitConfig(steps=50), trainable=torch.tensor([True, True, False]))
    assert torch.equal(W[2], W0[2]) and b[2] == b0[2]
    assert ((X @ W.T + b).argmax(1) == y).float().mean() > 0.95
    W_hi, _, _ = fit_linear_head(X, y, sw, W0, b0, RefitConfig(steps=50, weight_decay=100.0))
    assert (W_hi - W0).norm() < 0.05 * (W - W0).norm()  # strong decay keeps the old head


def test_nothing_to_refit_on_is_an_error(trained, tmp_path):
    _, bad = trained
    img, _, lbl = _corrections()
    with pytest.raises(ValueError, match="no corrected pixel"):
        refit_head(bad, [(img, np.full_like(lbl, 255), lbl)], tmp_path / "x.safetensors")
    with pytest.raises(ValueError, match="shape"):
        refit_head(bad, [(img, lbl[:10])], tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()


def test_refit_job_uses_the_workspace_corrections_and_registers_the_child(trained, data, tmp_path):
    from seghz.data.io import write_index_mask, write_rgb
    from seghz.jobs.kinds import refit_job
    from seghz.jobs.runner import ProgressReporter
    from seghz.store import Workspace

    _, bad = trained
    tr, va = data
    ws = Workspace(tmp_path / "ws")
    cid = ws.register_checkpoint(bad, read_metadata(bad) | {"scheme": "hz7"}, name="scrambled")
    for k, (img, lbl) in enumerate(tr + [scene(50)]):
        d = ws.root / "scenes" / f"s{k}"
        write_rgb(d / "image.png", img)
        lab = None
        if k < 4:
            lab = d / "label.png"
            write_index_mask(lab, lbl)
        # s4: an unlabelled training scene (the refit, like the full retrain, trains on the train split only)
        ws.add_scene(f"S{k}", d / "image.png", "hz7", label_path=lab, split="train", scene_id=f"s{k}")
    _, sparse, _ = _corrections()  # the analyst labels 15 pixels each of A and B on the unlabelled scene s4
    ws.save_label_version("s4", sparse, 0, analyst="tester", tool="brush")

    job = ws.create_job("refit", {"checkpoint_id": cid})
    out = refit_job(ws, job, {"checkpoint_id": cid, "name": "fixed"}, ProgressReporter(ws, job))
    assert out["source"] == "corrections" and out["counts"]["corrected_used"] == 30
    assert out["corrected_acc_before"] < 0.1 and out["corrected_acc_after"] == 1.0
    child = ws.get_checkpoint(out["checkpoint_id"])
    assert child.parent_id == cid and child.name == "fixed" and child.job_id == job
    meta = read_metadata(ws.checkpoint_path(child))
    assert meta["recipe"]["kind"] == "head_refit" and meta["parent_id"] == cid and meta["refit_scenes"] == ["s4"]
    acc = per_class_acc(load_checkpoint(ws.checkpoint_path(child))[0], va)
    assert acc[[A, B]].min() > 0.9, acc


def test_refit_job_counts_confirmed_pixels_as_reviewed(trained, data, tmp_path):
    """A window the analyst confirmed without changing anything is reviewed evidence for every class in it."""
    from seghz.data.io import write_index_mask, write_rgb
    from seghz.jobs.kinds import refit_job
    from seghz.jobs.runner import ProgressReporter
    from seghz.store import Workspace

    _, bad = trained
    tr, _ = data
    ws = Workspace(tmp_path / "ws")
    cid = ws.register_checkpoint(bad, read_metadata(bad) | {"scheme": "hz7"}, name="scrambled")
    for k, (img, lbl) in enumerate(tr):
        d = ws.root / "scenes" / f"s{k}"
        write_rgb(d / "image.png", img)
        write_index_mask(d / "label.png", lbl)
        ws.add_scene(f"S{k}", d / "image.png", "hz7", label_path=d / "label.png", split="train", scene_id=f"s{k}")
    lbl0 = tr[0][1]
    window = np.zeros(lbl0.shape, bool)
    window[: lbl0.shape[0] // 2] = True  # the analyst reviewed the top half of s0 and found nothing to change
    ws.save_label_edit("s0", 0, "tester", "confirm-window", confirm=window)
    job = ws.create_job("refit", {"checkpoint_id": cid})
    out = refit_job(ws, job, {"checkpoint_id": cid, "context_split": None}, ProgressReporter(ws, job))
    assert out["source"] == "corrections"
    assert out["counts"]["corrected_available"] == int((window & (lbl0 != 255)).sum())
    assert out["corrected_acc_after"] > out["corrected_acc_before"]
    log = (ws.path(ws.get_job(job).log_path)).read_text()
    assert f"{int((window & (lbl0 != 255)).sum())} reviewed pixels (corrected or confirmed) in 1 scene(s)" in log


# ------------------------------------------------------------------------------------------------ windows and pixels


@settings(max_examples=80, deadline=None)
@given(h=st.integers(1, 1400), w=st.integers(1, 1400), tile=st.sampled_from([32, 64, 100, 512]))
def test_the_windows_own_every_pixel_exactly_once(h, w, tile):
    from seghz.train.refit import _owned, _windows

    hits = np.zeros((h, w), np.int32)
    for (r, c, th, tw), (r0, r1, c0, c1) in zip(_windows(h, w, tile), _owned(h, w, tile), strict=True):
        assert 0 <= r0 < r1 <= th and 0 <= c0 < c1 <= tw  # a window samples only inside itself
        hits[r + r0:r + r1, c + c0:c + c1] += 1
    assert (hits == 1).all()


def test_reviewed_pixels_in_overlapping_windows_are_counted_once():
    """The analyst's review: 27,571 reviewed pixels were shown as 31,478 "sampled": 1280 rows at tile 512 gave
    windows at rows 0, 512 and 768, and the pixels of rows 768–1023 were collected by two windows."""
    from seghz.train.refit import _plan

    rng = np.random.default_rng(0)
    h, w, nc = 1280, 600, 4
    corrected = np.full((h, w), 255, np.uint8)
    corrected[700:1100, 100:160] = rng.integers(0, nc, (400, 60))  # straddles the overlap of rows 768–1023
    labels = rng.integers(0, nc, (h, w)).astype(np.uint8)
    item = RefitItem(np.zeros((h, w, 3), np.uint8), corrected, labels)
    cfg = RefitConfig(max_corrected=10**9, context_per_class=10**9, max_windows=100)
    picks, counts = _plan([item], nc, cfg, np.random.default_rng(0))
    assert counts["corrected_available"] == counts["corrected_used"] == 400 * 60
    assert counts["context_available"] == h * w - 400 * 60
    seen = np.zeros((h, w), np.int32)
    for p in picks:
        r, c = p.win[0], p.win[1]
        np.add.at(seen, (r + p.rows, c + p.cols), 1)
    assert seen.max() == 1 and seen.sum() == h * w
