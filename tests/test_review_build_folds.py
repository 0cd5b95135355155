"""Held-out queue builds cross-fit by folds: one head per fold, not one per scene.

A scale review timed ``python -m seghz review build --split train`` at ~15 s per GID scene, 15.8 s of it refitting the
head on 8 "other" scenes drawn with a fixed seed: 477 near-identical refits. The candidate scenes are now split into
folds; each fold's head is fitted once, on scenes outside the fold, kept in memory, and scores every scene of the fold.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from test_heldout_real_scenes import Workbench, base_checkpoint  # noqa: F401  (fixture)

from seghz.review import crossfit
from seghz.review import plan as rp
from seghz.review import queue as rq

BIG = 1e4  # a head bias that makes one class win everywhere: the predicted map names the head that scored a scene


@pytest.fixture(autouse=True)
def _fresh_cache():
    crossfit.HEAD_CACHE.clear()
    yield
    crossfit.HEAD_CACHE.clear()


@pytest.fixture
def bench(tmp_path, base_checkpoint, monkeypatch):  # noqa: F811
    """A workbench whose held-out refit is recorded and replaced by a marked head: the n-th refit (0-based) writes the
    base checkpoint with class ``n`` winning everywhere."""
    import torch

    from seghz.models.checkpoint import load_checkpoint, save_checkpoint
    from seghz.train.refit import find_head

    b = Workbench(tmp_path, base_checkpoint)
    b.fits = []  # per refit: the ids of the scenes it was fitted on

    def marked(checkpoint, items, out_path, **kw):
        n = len(b.fits)
        b.fits.append(b.which(list(items)))
        model, meta = load_checkpoint(checkpoint)
        nc = int(meta["num_classes"])
        head = find_head(model, nc)
        with torch.no_grad():
            head.bias.zero_()
            head.bias[n % nc] = BIG
        save_checkpoint(out_path, model, meta)
        return out_path

    monkeypatch.setattr(crossfit, "held_out_head", marked)
    return b


def scored_by(q) -> int:
    """The refit (index into ``bench.fits``) whose marked head scored the queue's scene."""
    vals = np.unique(q.predicted)
    assert vals.size == 1, "a marked head predicts one class everywhere"
    return int(vals[0])


def test_a_build_of_n_scenes_refits_one_head_per_fold_not_per_scene(bench):
    ids = [bench.add(f"field {i}", synthetic=False) for i in range(7)]
    steps: list[tuple[float, str]] = []
    res = rp.build_queues(bench.ws, bench.cid, ids, held_out=True, predictor=bench.predictor,
                          progress=lambda f, m="": steps.append((f, m)))
    assert [b.status for b in res] == ["built"] * 7
    assert len(bench.fits) == crossfit.DEFAULT_FOLDS == 5  # not 7
    # the progress still advances, and says when it fits a fold's head
    fracs = [f for f, _ in steps]
    assert all(b >= a - 1e-9 for a, b in itertools.pairwise(fracs)) and fracs[-1] == pytest.approx(1.0)
    fitting = [m for _, m in steps if "fitting the held-out head of fold" in m]
    assert {m.split("fold ")[1].split(" ")[0] for m in fitting} == {f"{i}/5" for i in range(1, 6)}
    # the heads stay fitted for the process: a rebuild, or one scene's queue, refits nothing
    rp.build_queues(bench.ws, bench.cid, ids, held_out=True, predictor=bench.predictor)
    rq.build_queue(bench.ws, ids[3], bench.predictor, bench.cid, held_out=True, save=False)
    assert len(bench.fits) == 5


def test_no_scene_is_scored_by_a_head_fitted_on_it(bench):
    ids = [bench.add(f"field {i}", synthetic=False) for i in range(7)]
    demo = bench.add("demo (synthetic)", synthetic=True)  # never fitted on for a real scene
    rp.build_queues(bench.ws, bench.cid, ids, held_out=True, predictor=bench.predictor)
    assert len(bench.fits) == 5
    scored: dict[int, list[str]] = {}
    for sid in ids:
        q = rq.load_queue(bench.ws, sid)
        n = scored_by(q)  # the queue was really scored by the fold's refitted head
        assert sid not in bench.fits[n] and demo not in bench.fits[n]
        assert q.scoring == f"held-out head ({len(bench.fits[n])} scene(s))"
        scored.setdefault(n, []).append(sid)
    assert sorted(scored) == list(range(5))  # each head scores its own fold, none of the scenes it was fitted on
    assert all(not set(members) & set(bench.fits[n]) for n, members in scored.items())


@pytest.mark.parametrize("n", [2, 3, 5, 6, 11, 40])
def test_fold_fit_sets_partition_the_scenes_and_never_fit_a_fold_on_itself(n):
    ids = [f"s{i:02d}" for i in range(n)]
    plan = crossfit.fold_fit_sets(ids[::-1], 5, max_fit=8)  # the given order does not matter
    assert plan == crossfit.fold_fit_sets(ids, 5, max_fit=8)
    assert len(plan) == min(5, n)
    members = [m for ms, _ in plan for m in ms]
    assert sorted(members) == ids  # each scene in exactly one fold
    for ms, fit in plan:
        assert fit and not set(ms) & set(fit) and len(fit) == min(8, n - len(ms)) and fit == sorted(fit)
    if n <= 5:  # leave-one-out: each scene's head is fitted on all the others
        assert all(len(ms) == 1 and fit == [i for i in ids if i != ms[0]] for ms, fit in plan)
    with pytest.raises(ValueError, match="at least 2 scenes"):
        crossfit.fold_fit_sets(["a", "a"])


def test_a_label_saved_on_a_fit_scene_refits_only_the_heads_fitted_on_it(bench):
    ids = [bench.add(f"field {i}", synthetic=False) for i in range(7)]
    rp.build_queues(bench.ws, bench.cid, ids, held_out=True, predictor=bench.predictor)
    first = list(bench.fits)
    assert len(first) == 5
    edited = ids[0]
    px = np.zeros((48, 48), bool)
    px[:4, :4] = True
    bench.ws.save_label_edit(edited, 0, "Ann", "brush", pixels=px, values=2)
    rp.build_queues(bench.ws, bench.cid, ids, held_out=True, predictor=bench.predictor)
    again = bench.fits[5:]
    assert again == [f for f in first if edited in f]  # the folds, unchanged, are refitted where stale
    assert 0 < len(again) < 5  # the edited scene's own fold keeps its head


def test_a_fold_build_is_deterministic_and_independent_of_the_scene_order(tmp_path, base_checkpoint):  # noqa: F811
    """With the real refit: the same inputs give the same queues, whatever order the scenes are built in."""
    import torch

    torch.set_num_threads(1)
    b = Workbench(tmp_path, base_checkpoint)
    ids = [b.add(f"field {i}", synthetic=False) for i in range(3)]

    def build(order):
        crossfit.HEAD_CACHE.clear()
        return {sid: rq.build_queue(b.ws, sid, b.predictor, b.cid, held_out=True, held_out_folds=2, save=False)
                for sid in order}

    one, two = build(ids), build(ids[::-1])
    in_sample = rq.build_queue(b.ws, ids[0], b.predictor, b.cid, save=False)
    for sid in ids:
        assert one[sid].scoring == two[sid].scoring and one[sid].scoring.startswith("held-out head (")
        np.testing.assert_array_equal(one[sid].score, two[sid].score)
        np.testing.assert_array_equal(one[sid].predicted, two[sid].predicted)
        assert [it.key for it in one[sid].items] == [it.key for it in two[sid].items]
    assert not np.array_equal(one[ids[0]].score, in_sample.score)  # a refitted head really scored it


def test_a_single_real_scene_build_still_falls_back_with_its_warning(bench):
    airport = bench.add("Hangzhou airport (aligned)", synthetic=False)
    for c in "AB":
        bench.add(f"Demo farmland {c} (synthetic)", synthetic=True)
    logs: list[str] = []
    res = rp.build_queues(bench.ws, bench.cid, [airport], held_out=True, log=logs.append, predictor=bench.predictor)
    assert [b.status for b in res] == ["built"] and bench.fits == []
    want = ("in-sample (held-out asked, but there is no other real labelled hz7 scene to refit the head on; the 2 "
            "synthetic demo scene(s) are never used for a real scene)")
    assert rq.load_queue(bench.ws, airport).scoring == want and any(want in line for line in logs)
    assert rq.held_out_fold(bench.ws, bench.ws.get_scene(airport)) is None
