"""Evaluation of many small scenes: :meth:`Predictor.predict_many` runs the windows of several scenes in one batch
(a split of 224² GID tiles ran one forward pass of batch 1 per scene), and ``evaluate_split`` uses it, reading the
next scenes in a background thread."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers_core import torch_one_thread  # noqa: F401 (fixture)

from seghz.classes import get_scheme
from seghz.errors import BadInputError, SegHZError
from seghz.infer.engine import Predictor, sliding_windows
from seghz.store import Workspace

pytestmark = pytest.mark.usefixtures("torch_one_thread")

C = 5
TILE = 64
HZ7 = get_scheme("hz7")


def _model(classes=C, seed=0):
    """A tiny random conv net with a strided stage and eval-mode batch norm (running statistics not trivial)."""
    torch.manual_seed(seed)
    m = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
        torch.nn.Conv2d(8, classes, 3, padding=1),
    )
    with torch.no_grad():
        bn = m[1]
        bn.running_mean.uniform_(-0.3, 0.3)
        bn.running_var.uniform_(0.5, 2.0)
    return m.eval()


class _OneByOne(torch.nn.Module):
    """The model run on each input of a batch alone: its output for one input cannot depend on the batch (a
    convolution's CPU kernel may differ with the batch size in the last bits), so any difference between
    predict_many and predict is the engine's."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return torch.cat([self.inner(x[i : i + 1]) for i in range(x.shape[0])])


def _predictor(bs=3, one_by_one=True, **kw):
    model = _OneByOne(_model()) if one_by_one else _model()
    return Predictor(model, C, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3), tile=TILE, overlap=0.25, batch_size=bs,
                     device="cpu", **kw)


def _images(sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]


# smaller than a window, equal to one, larger than one (several windows), the same shape in runs and alone
SIZES = [(64, 64), (64, 64), (40, 50), (40, 50), (40, 50), (100, 90), (64, 64), (17, 64), (64, 64), (64, 64),
         (64, 130), (30, 30)]


class _CountCalls:
    """Counts the model calls (and their batch sizes) of a predictor through its ``_model_call``."""

    def __init__(self, monkeypatch):
        self.sizes: list[int] = []
        real = Predictor._model_call

        def counted(pred, x, fn=None):
            self.sizes.append(int(x.shape[0]))
            return real(pred, x, fn)

        monkeypatch.setattr(Predictor, "_model_call", counted)


@pytest.mark.parametrize("tta", ["none", "flip", "d4"])
@pytest.mark.parametrize("bs", [1, 3, 4])
def test_predict_many_equals_predict_scene_by_scene(tta, bs):
    pred = _predictor(bs)
    imgs = _images(SIZES)
    many = list(pred.predict_many(iter(imgs), tta))  # any iterable: a generator is read lazily
    assert len(many) == len(imgs)
    for img, (mask, conf) in zip(imgs, many):
        ref_mask, ref_conf = pred.predict(img, tta)
        assert mask.dtype == np.uint8 and conf.dtype == np.float32
        assert mask.shape == conf.shape == img.shape[:2]
        np.testing.assert_array_equal(mask, ref_mask)  # bit for bit
        np.testing.assert_array_equal(conf, ref_conf)


@pytest.mark.parametrize("tta", ["none", "d4"])
def test_predict_many_with_a_batch_dependent_kernel_is_within_float_rounding(tta):
    """The plain model: its first convolution's CPU kernel differs in the last bits between batch sizes."""
    pred = _predictor(3, one_by_one=False)
    imgs = _images(SIZES, seed=5)
    for img, (mask, conf) in zip(imgs, pred.predict_many(imgs, tta)):
        ref_mask, ref_conf = pred.predict(img, tta)
        np.testing.assert_allclose(conf, ref_conf, rtol=0, atol=1e-6)
        assert np.mean(mask != ref_mask) <= 1e-3  # at most an argmax tie flips


@pytest.mark.parametrize("merge,blend", [("logits", "gaussian"), ("softmax", "cosine")])
def test_predict_many_follows_merge_and_blend(merge, blend):
    pred = _predictor(4, merge=merge, blend=blend)
    imgs = _images(SIZES[:6], seed=3)
    for img, (mask, conf) in zip(imgs, pred.predict_many(imgs, ["identity", "rot90", "diag"])):
        ref_mask, ref_conf = pred.predict(img, ["identity", "rot90", "diag"])
        np.testing.assert_array_equal(mask, ref_mask)
        np.testing.assert_array_equal(conf, ref_conf)


@pytest.mark.parametrize("tta,views", [("none", 1), ("flip", 2), ("d4", 8)])
def test_single_window_scenes_fill_the_batches(monkeypatch, tta, views):
    n, bs = 7, 3
    calls = _CountCalls(monkeypatch)
    pred = _predictor(bs)
    imgs = _images([(64, 64)] * n, seed=1)
    out = list(pred.predict_many(imgs, tta))
    assert len(out) == n
    assert len(calls.sizes) == math.ceil(n * views / bs)
    assert calls.sizes[:-1] == [bs] * (len(calls.sizes) - 1)  # full batches but the last
    calls.sizes.clear()
    for img in imgs:  # scene by scene: never fewer than one call per scene
        pred.predict(img, tta)
    assert len(calls.sizes) == n * math.ceil(views / bs)


def test_a_larger_scene_or_another_shape_closes_the_batch(monkeypatch):
    calls = _CountCalls(monkeypatch)
    pred = _predictor(4)
    # 2 of a window, 1 larger (one row of 3 windows: a batch of 3), 3 of another input shape (padded to 32², where 40² would
    # pad to the window's 64² and share its batches), 1 of the window's shape again
    sizes = [(64, 64), (64, 64), (64, 130), (30, 30), (30, 30), (30, 30), (64, 64)]
    assert len(sliding_windows(64, 130, TILE, 0.25)) == 3
    out = list(pred.predict_many(_images(sizes), "none"))
    assert [m.shape for m, _c in out] == sizes
    assert calls.sizes == [2, 3, 3, 1]


def test_predict_many_reports_progress_per_scene_and_can_be_cancelled():
    pred = _predictor(2)
    seen = []
    imgs = _images([(64, 64), (64, 64), (100, 100), (30, 30)])
    list(pred.predict_many(imgs, "none", progress=lambda i, f, m: seen.append((i, f))))
    assert [i for i, f in seen if f == 1.0] == [0, 1, 2, 3]
    assert all(0 < f <= 1 for _i, f in seen)
    seen.clear()  # with views: a report after every batch, the scenes in order, each scene's fraction growing
    list(pred.predict_many(imgs[:2], "d4", progress=lambda i, f, m: seen.append((i, f))))
    assert seen == [(0, 0.25), (0, 0.5), (0, 0.75), (0, 1.0), (1, 0.25), (1, 0.5), (1, 0.75), (1, 1.0)]
    from seghz.infer.engine import Cancelled

    with pytest.raises(Cancelled):
        list(pred.predict_many(imgs, "none", should_cancel=lambda: True))
    with pytest.raises(ValueError, match="H×W×3"):
        list(pred.predict_many([np.zeros((8, 8), np.uint8)]))


# ------------------------------------------------------------------------------------------ evaluate_split


class _SceneByScene:
    """The predictor seen through ``predict`` only: evaluate_split then scores the scenes one by one (the old loop)."""

    def __init__(self, inner):
        self.inner = inner
        self.tile, self.overlap = inner.tile, inner.overlap

    def predict(self, image, tta="none", progress=None, should_cancel=None):
        return self.inner.predict(image, tta, progress, should_cancel)


SCENE_SIZES = [256, 256, 200, 256, 300, 256, 256, 256, 180]  # the checkpoint's tile is 256


@pytest.fixture
def eval_ws(tmp_path):
    """A workspace with labelled val scenes of several sizes around the tile, and a tiny hz7 checkpoint ``tiny``."""
    from seghz.data.io import write_index_mask, write_rgb
    from seghz.data.scenes import import_scene
    from seghz.demo import generate_scene
    from seghz.models.checkpoint import save_checkpoint
    from seghz.models.registry import build_model

    ws = Workspace(tmp_path / "ws")
    src = tmp_path / "src"
    src.mkdir()
    for i, size in enumerate(SCENE_SIZES):
        rgb, lbl = generate_scene(size, 40 + i)
        write_rgb(src / f"{i}.png", rgb)
        write_index_mask(src / f"{i}_label.png", lbl, HZ7)
        import_scene(ws, src / f"{i}.png", src / f"{i}_label.png", scheme="hz7", name=f"scene {i:02d}", split="val",
                     synthetic=True)
    torch.manual_seed(0)
    model = build_model("FPN", "tu-mobilenetv3_small_050", HZ7.num_classes)
    meta = {"arch": "FPN", "encoder": "tu-mobilenetv3_small_050", "num_classes": HZ7.num_classes,
            "scheme": HZ7.to_json(), "normalization": {"mean": [0.5] * 3, "std": [0.5] * 3}, "tile_size": 256,
            "synthetic": True}
    path = ws.root / "checkpoints" / "tiny.safetensors"
    save_checkpoint(path, model, meta)
    ws.register_checkpoint(path, {**meta, "scheme": "hz7"}, checkpoint_id="tiny", name="tiny")
    return ws


def _loaded(ws, bs=4, one_by_one=True):
    pred, _ = Predictor.from_checkpoint(ws.checkpoint_path(ws.get_checkpoint("tiny")), "cpu", batch_size=bs)
    if one_by_one:  # bit-for-bit comparisons: the kernels cannot depend on the batch size (see _OneByOne)
        pred.model = _OneByOne(pred.model).eval()
    return pred


@pytest.mark.parametrize("tta", ["none", "d4"])
def test_evaluate_split_scores_as_scene_by_scene(eval_ws, tta):
    from seghz.evaluate import evaluate_split, label_for_checkpoint
    from seghz.metrics import confusion_matrix

    pred = _loaded(eval_ws)
    kept, fracs = [], []
    res = evaluate_split(eval_ws, "tiny", "val", tta, predictor=pred, use_cache=False,
                         on_prediction=lambda sid, p: kept.append((sid, p)),
                         progress=lambda f, m: fracs.append(f))
    kept_ref, fracs_ref = [], []
    ref = evaluate_split(eval_ws, "tiny", "val", tta, predictor=_SceneByScene(pred), use_cache=False,
                         on_prediction=lambda sid, p: kept_ref.append((sid, p)),
                         progress=lambda f, m: fracs_ref.append(f))
    assert res == ref  # confusion, per-scene confusion, calibration, scores: all of it
    scenes = [s for s in eval_ws.list_scenes("val") if s.label_path]
    assert [sid for sid, _p in kept] == [sid for sid, _p in kept_ref] == [s.id for s in scenes]
    for (_a, p), (_b, q) in zip(kept, kept_ref):
        np.testing.assert_array_equal(p, q)
    # and by hand: each scene's confusion is its own prediction against its own label
    for s, (_sid, p) in zip(scenes, kept):
        lbl = label_for_checkpoint(eval_ws.effective_label(s.id), s.scheme, "hz7")
        assert res["per_scene"][s.id] == confusion_matrix(p, lbl, HZ7.num_classes).tolist()
    assert fracs == sorted(fracs) and fracs[-1] == pytest.approx(1.0)
    assert len([f for f in fracs]) >= len(scenes)  # at least once per scene (the job's cancel checks ride on it)


def test_evaluate_split_with_the_plain_model_is_within_float_rounding(eval_ws):
    from seghz.evaluate import evaluate_split

    pred = _loaded(eval_ws, one_by_one=False)
    res = evaluate_split(eval_ws, "tiny", "val", "flip", predictor=pred, use_cache=False)
    ref = evaluate_split(eval_ws, "tiny", "val", "flip", predictor=_SceneByScene(pred), use_cache=False)
    assert list(res["per_scene"]) == list(ref["per_scene"])
    cm, cm_ref = np.asarray(res["confusion"]), np.asarray(ref["confusion"])
    assert np.abs(cm - cm_ref).sum() <= 2e-3 * cm_ref.sum()  # an argmax tie may flip, nothing more
    assert res["ece"] == pytest.approx(ref["ece"], abs=1e-5)


def test_evaluate_split_runs_single_window_scenes_in_full_batches(eval_ws, monkeypatch):
    from seghz.evaluate import evaluate_split

    pred = _loaded(eval_ws, bs=4)
    calls = _CountCalls(monkeypatch)
    ids = [s.id for s in eval_ws.list_scenes("val") if s.label_path and s.height == 256]
    assert len(ids) == 6
    res = evaluate_split(eval_ws, "tiny", "val", "none", predictor=pred, use_cache=False, scene_ids=ids)
    assert res["scenes"] == 6
    assert calls.sizes == [4, 2]  # ceil(6 / 4) forward passes; scene by scene it was 6 of batch 1
    calls.sizes.clear()
    evaluate_split(eval_ws, "tiny", "val", "none", predictor=_SceneByScene(pred), use_cache=False, scene_ids=ids)
    assert calls.sizes == [1] * 6


def test_a_damaged_image_in_the_middle_is_named_as_before(eval_ws):
    from seghz.evaluate import evaluate_split

    scenes = [s for s in eval_ws.list_scenes("val") if s.label_path]
    bad = scenes[4]
    path = eval_ws.scene_path(bad, "image")
    path.write_bytes(path.read_bytes()[:200])  # a truncated PNG
    pred = _loaded(eval_ws)
    errors, kept = [], []
    for p in (pred, _SceneByScene(pred)):
        got = []
        with pytest.raises(BadInputError) as ei:
            evaluate_split(eval_ws, "tiny", "val", "none", predictor=p, use_cache=False,
                           on_prediction=lambda sid, _p, got=got: got.append(sid))
        errors.append(str(ei.value))
        kept.append(got)
    assert errors[0] == errors[1]
    assert str(path) in errors[0]
    assert kept[0] == kept[1] == [s.id for s in scenes[:4]]  # the scenes before it are still scored, as before
    assert eval_ws.list_evaluations("tiny") == []  # nothing cached


def test_an_error_while_scoring_stops_the_reader(eval_ws):
    import threading

    from seghz.evaluate import evaluate_split

    pred = _loaded(eval_ws)

    def boom(sid, p):
        raise RuntimeError("drill-down store failed")

    with pytest.raises(RuntimeError, match="drill-down store failed"):
        evaluate_split(eval_ws, "tiny", "val", "none", predictor=pred, use_cache=False, on_prediction=boom)
    assert not [t for t in threading.enumerate() if t.name == "seghz-evaluate-read"]


class _OOMAbove(torch.nn.Module):
    """Runs out of (GPU) memory for batches larger than ``limit``."""

    def __init__(self, inner, limit):
        super().__init__()
        self.inner, self.limit, self.sizes = inner, limit, []

    def forward(self, x):
        self.sizes.append(int(x.shape[0]))
        if x.shape[0] > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (test)")
        return self.inner(x)


def test_predict_many_halves_the_batch_on_out_of_memory_then_raises():
    imgs = _images([(64, 64)] * 10)
    ref = [m for m, _ in _predictor(8).predict_many(iter(imgs), "flip")]
    oom = _OOMAbove(_OneByOne(_model()), 2)
    pred = Predictor(oom, C, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3), tile=TILE, overlap=0.25, batch_size=8, device="cpu")
    got = [m for m, _ in pred.predict_many(iter(imgs), "flip")]
    for a, b in zip(got, ref):
        np.testing.assert_array_equal(a, b)
    assert oom.sizes[:3] == [8, 4, 2] and set(oom.sizes[3:]) == {2}
    never = Predictor(_OOMAbove(_model(), 0), C, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3), tile=TILE, batch_size=4,
                      device="cpu")
    with pytest.raises(SegHZError, match="out of GPU memory even with a batch of 1"):
        list(never.predict_many(iter(imgs), "none"))
