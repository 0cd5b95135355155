"""Held-out scoring of the noise queue picks its scenes: real scenes only for a real scene, never another scheme.

An analyst built the held-out queue of the real Hangzhou airport scene in a workspace that also held the synthetic
demo scenes: the head was refitted on the demo scenes alone, and the #1 item was a correctly labelled field flagged as
"Road_land". A real scene's held-out head is refitted on the other REAL labelled scenes of its scheme; without any
(or with too few labelled pixels there) the scene is scored in-sample and the queue's ``scoring`` says why.
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from seghz.classes import IGNORE, get_scheme
from seghz.errors import BadInputError
from seghz.review import crossfit
from seghz.review import queue as rq
from seghz.store import Workspace

HZ7 = get_scheme("hz7")
LOVEDA = get_scheme("loveda")
S = 48


@pytest.fixture(scope="module")
def base_checkpoint(tmp_path_factory):
    """An untrained Segformer/Lite0 hz7 checkpoint (fast on 48 px scenes)."""
    import torch

    from seghz.models.checkpoint import save_checkpoint
    from seghz.models.registry import build_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ck") / "base.safetensors"
    save_checkpoint(path, build_model("Segformer", "tu-efficientnet_lite0", HZ7.num_classes),
                    {"arch": "Segformer", "encoder": "tu-efficientnet_lite0", "num_classes": HZ7.num_classes,
                     "scheme": HZ7.to_json(), "normalization": {"mean": [0.5] * 3, "std": [0.5] * 3},
                     "tile_size": 64})
    return path


class Workbench:
    """A workspace of small scenes, each image unique (so the images a head was refitted on name their scenes)."""

    def __init__(self, root, checkpoint):
        from seghz.infer.engine import Predictor

        self.root, self.ws = root, Workspace(root / "ws")
        (root / "src").mkdir()
        dst = self.ws.root / "checkpoints" / "base.safetensors"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(checkpoint, dst)
        self.cid = self.ws.register_checkpoint(dst, {"arch": "Segformer", "encoder": "tu-efficientnet_lite0",
                                                     "scheme": "hz7"}, checkpoint_id="base")
        self.predictor, _ = Predictor.from_checkpoint(dst, "cpu")
        self.images: dict[str, np.ndarray] = {}
        self.n = 0

    def add(self, name, *, synthetic, scheme="hz7", split="train", labelled_px=None, labelled=True):
        from seghz.data.io import write_index_mask, write_rgb
        from seghz.data.scenes import import_scene

        self.n += 1
        rgb = np.random.default_rng(self.n).integers(0, 255, (S, S, 3), dtype=np.uint8)
        lbl = np.zeros((S, S), np.uint8)
        lbl[:, S // 2:] = 1
        lbl[: S // 3, : S // 3] = 3
        if labelled_px is not None:  # only the first ``labelled_px`` pixels labelled, the rest ignored
            flat = lbl.reshape(-1)
            flat[labelled_px:] = IGNORE
        write_rgb(self.root / "src" / f"{self.n}.png", rgb)
        write_index_mask(self.root / "src" / f"{self.n}_label.png", lbl, get_scheme(scheme))
        s = import_scene(self.ws, self.root / "src" / f"{self.n}.png",
                         self.root / "src" / f"{self.n}_label.png" if labelled else None,
                         scheme=scheme, name=name, split=split, synthetic=synthetic)
        self.images[s.id] = rgb
        return s.id

    def which(self, fit) -> list[str]:
        """The ids of the scenes whose images are in a held-out refit's ``(image, label)`` items."""
        out = [sid for sid, img in self.images.items() if any(np.array_equal(img, it[0]) for it in fit)]
        assert len(out) == len(fit), "every refit image is one of the workspace's scenes"
        return sorted(out)


@pytest.fixture
def bench(tmp_path, base_checkpoint, monkeypatch):
    """The workbench, with the held-out refit recorded (and skipped: the base checkpoint stands in for its head)."""
    b = Workbench(tmp_path, base_checkpoint)
    b.fits = []

    def recorded(checkpoint, items, out_path, **kw):
        b.fits.append(list(items))
        shutil.copyfile(checkpoint, out_path)
        return out_path

    monkeypatch.setattr(crossfit, "held_out_head", recorded)
    return b


def test_a_real_scene_is_held_out_with_real_scenes_only(bench):
    airport = bench.add("Hangzhou airport (aligned)", synthetic=False)
    demos = [bench.add(f"Demo farmland {c} (synthetic)", synthetic=True) for c in "ABC"]
    other_real = bench.add("real field", synthetic=False)
    bench.add("loveda tile", synthetic=False, scheme="loveda")  # real, but another scheme
    q = rq.build_queue(bench.ws, airport, bench.predictor, bench.cid, held_out=True)
    assert len(bench.fits) == 1 and bench.which(bench.fits[0]) == [other_real]
    assert q.scoring == "held-out head (1 scene(s))"
    assert rq.load_queue(bench.ws, airport).scoring == q.scoring
    # a synthetic scene still uses every other labelled scene of its scheme, real ones included, never loveda
    rq.build_queue(bench.ws, demos[0], bench.predictor, bench.cid, held_out=True, save=False)
    assert bench.which(bench.fits[1]) == sorted([airport, demos[1], demos[2], other_real])
    assert [s.id for s in rq.held_out_fit_scenes(bench.ws, bench.ws.get_scene(airport))] == [other_real]


def test_a_real_scene_with_only_synthetic_neighbours_falls_back_to_in_sample_and_says_why(bench):
    airport = bench.add("Hangzhou airport (aligned)", synthetic=False)
    for c in "ABC":
        bench.add(f"Demo farmland {c} (synthetic)", synthetic=True)
    bench.add("loveda tile", synthetic=False, scheme="loveda")  # a real scene of another scheme does not count
    q = rq.build_queue(bench.ws, airport, bench.predictor, bench.cid, held_out=True)
    assert bench.fits == []  # no head was refitted, on the demo scenes or anything else
    assert q.scoring.startswith("in-sample (held-out asked")
    assert "no other real labelled hz7 scene" in q.scoring and "3 synthetic demo scene(s)" in q.scoring
    assert "never used for a real scene" in q.scoring
    assert rq.held_out_fit_scenes(bench.ws, bench.ws.get_scene(airport)) == []
    q_in = rq.build_queue(bench.ws, airport, bench.predictor, bench.cid, save=False)
    assert q_in.scoring == "in-sample"
    np.testing.assert_array_equal(q.predicted, q_in.predicted)  # scored by the model as trained
    np.testing.assert_array_equal(q.score, q_in.score)
    assert rq.load_queue(bench.ws, airport).scoring == q.scoring  # recorded with the queue, for the Labels page
    # a re-rank (after a retrain) asks for held-out scoring again: still no real scene, still said
    assert rq.rerank_queues(bench.ws, bench.cid, device="cpu") == [airport]
    assert rq.load_queue(bench.ws, airport).scoring == q.scoring and bench.fits == []
    # once another real scene is labelled, the same rebuild is held out with it
    real = bench.add("real field", synthetic=False)
    assert rq.rerank_queues(bench.ws, bench.cid, device="cpu") == [airport]
    assert rq.load_queue(bench.ws, airport).scoring == "held-out head (1 scene(s))"
    assert bench.which(bench.fits[0]) == [real]


def test_a_real_scene_alone_falls_back_and_the_review_build_logs_it(bench):
    from seghz.review import plan as rp

    airport = bench.add("Hangzhou airport (aligned)", synthetic=False)
    logs: list[str] = []
    res = rp.build_queues(bench.ws, bench.cid, [airport], log=logs.append, predictor=bench.predictor)
    assert [b.status for b in res] == ["built"]  # a training scene: held-out by default, not refused
    q = rq.load_queue(bench.ws, airport)
    assert q.scoring == "in-sample (held-out asked, but there is no other real labelled hz7 scene to refit the head on)"
    assert any(q.scoring in line for line in logs)


def test_too_few_real_labelled_pixels_fall_back_too(bench):
    airport = bench.add("Hangzhou airport (aligned)", synthetic=False)
    bench.add("Demo farmland A (synthetic)", synthetic=True)
    bench.add("barely labelled", synthetic=False, labelled_px=100)
    q = rq.build_queue(bench.ws, airport, bench.predictor, bench.cid, held_out=True)
    assert bench.fits == []
    assert q.scoring.startswith("in-sample (held-out asked") and "hold only 100 labelled px" in q.scoring
    assert f"at least {rq.MIN_HELD_OUT_PIXELS:,}" in q.scoring and "1 synthetic demo scene(s)" in q.scoring


def test_a_synthetic_scene_keeps_using_the_other_scenes(bench):
    demo = bench.add("Demo town (synthetic)", synthetic=True, split="val")
    with pytest.raises(BadInputError, match="OTHER labelled scene"):  # alone: refused, as before
        rq.build_queue(bench.ws, demo, bench.predictor, bench.cid, held_out=True)
    others = [bench.add(f"Demo farmland {c} (synthetic)", synthetic=True) for c in "AB"]
    bench.add("loveda demo", synthetic=True, scheme="loveda")
    q = rq.build_queue(bench.ws, demo, bench.predictor, bench.cid, held_out=True)
    assert q.scoring == "held-out head (2 scene(s))" and bench.which(bench.fits[0]) == sorted(others)


def test_the_refit_scenes_follow_the_scored_scene_scheme(bench):
    hz_real = bench.add("hz7 real", synthetic=False)
    hz_demo = bench.add("hz7 demo", synthetic=True)
    lv_a = bench.add("loveda A", synthetic=False, scheme="loveda")
    lv_b = bench.add("loveda B", synthetic=False, scheme="loveda")
    lv_demo = bench.add("loveda demo", synthetic=True, scheme="loveda")
    bench.add("loveda unlabelled", synthetic=False, scheme="loveda", labelled=False)  # nothing to fit on
    get = bench.ws.get_scene
    assert [s.id for s in rq.held_out_fit_scenes(bench.ws, get(lv_a))] == [lv_b]
    assert sorted(s.id for s in rq.held_out_fit_scenes(bench.ws, get(lv_demo))) == sorted([lv_a, lv_b])
    assert [s.id for s in rq.held_out_fit_scenes(bench.ws, get(hz_demo))] == [hz_real]
    assert rq.held_out_fit_scenes(bench.ws, get(hz_real)) == []


def test_the_labels_page_warns_when_a_queue_fell_back_to_in_sample():
    from streamlit.testing.v1 import AppTest

    def page(scoring: str) -> None:
        from types import SimpleNamespace

        import ui.labels as lui

        q = SimpleNamespace(checkpoint_id="ck", scoring=scoring, tta="none", threshold=0.5, label_version=0,
                            created_at="2026-11-29T08:00:00", items=[])
        lui.show_queue_built(q, SimpleNamespace(verdict_px=0, label_stale=False), 0, 0)

    fallback = ("in-sample (held-out asked, but there is no other real labelled hz7 scene to refit the head on; the 3 "
                "synthetic demo scene(s) are never used for a real scene)")
    at = AppTest.from_function(page, args=(fallback,)).run()
    assert any("Scored in-sample, not held-out" in w.value for w in at.warning)
    assert fallback in at.caption[0].value
    for plain in ("in-sample", "held-out head (2 scene(s))"):
        at = AppTest.from_function(page, args=(plain,)).run()
        assert not at.warning
