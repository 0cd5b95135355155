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


# ------------------------------------------------------------------------------------------------ one model per build
# A rebuild with every head cached still took 2.2 s/scene on 20 GID scenes, ~0.8 s of it loading the checkpoint again
# for each scene's held-out predictor; and the progress bar stood still inside a scene while a fold head was fitted.


class _Loads:
    n = 0


@pytest.fixture
def varied(tmp_path, base_checkpoint, monkeypatch):  # noqa: F811
    """A workbench whose n-th held-out refit perturbs the base head at random (seed n): odd refits only the bias,
    even ones the weight too, so two folds' deltas change different tensors. Every checkpoint load (the refit's
    included) is counted in ``loads.n``; ``fail_fit``: the refit index that raises instead."""
    import torch

    import seghz.models.checkpoint as ckmod
    from seghz.train.refit import find_head

    b = Workbench(tmp_path, base_checkpoint)
    b.fits, b.fail_fit, b.loads = [], None, _Loads()
    real_load = ckmod.load_checkpoint

    def counted(*a, **kw):
        b.loads.n += 1
        return real_load(*a, **kw)

    def perturbed(checkpoint, items, out_path, **kw):
        n = len(b.fits)
        b.fits.append(b.which(list(items)))
        if n == b.fail_fit:
            raise ValueError(f"refit {n} broke")
        model, meta = ckmod.load_checkpoint(checkpoint)
        head = find_head(model, int(meta["num_classes"]))
        g = torch.Generator().manual_seed(n)
        with torch.no_grad():
            head.bias.add_(torch.randn(head.bias.shape, generator=g) * 3)
            if n % 2 == 0:
                head.weight.add_(torch.randn(head.weight.shape, generator=g))
        ckmod.save_checkpoint(out_path, model, meta)
        return out_path

    monkeypatch.setattr(ckmod, "load_checkpoint", counted)
    monkeypatch.setattr(crossfit, "held_out_head", perturbed)
    return b


def _same_queue(a, b, saved: bool = False) -> None:
    """Equal queues; ``saved``: ``a`` was read back from its file (the score map is stored as float16)."""
    assert a.scoring == b.scoring
    np.testing.assert_array_equal(a.score, b.score.astype(np.float16).astype(np.float32) if saved else b.score)
    np.testing.assert_array_equal(a.predicted, b.predicted)
    assert [(it.key, it.score) for it in a.items] == [(it.key, it.score) for it in b.items]


def test_a_build_loads_the_checkpoint_per_fold_fit_not_per_scene(varied):
    ids = [varied.add(f"field {i}", synthetic=False) for i in range(12)]
    res = rp.build_queues(varied.ws, varied.cid, ids, held_out=True)  # the "queues" job: no predictor given
    assert [b.status for b in res] == ["built"] * 12
    assert all(rq.load_queue(varied.ws, sid).scoring.startswith("held-out head (") for sid in ids)
    assert len(varied.fits) == 5
    assert varied.loads.n <= 5 + 1  # the build's model and the 5 refits; was 1 + 12 + 5
    varied.loads.n = 0  # heads cached: a rebuild loads the checkpoint once, the other ways in too
    rp.build_queues(varied.ws, varied.cid, ids, held_out=True)
    assert varied.loads.n == 1
    varied.loads.n = 0
    rp.build_queues(varied.ws, varied.cid, ids, held_out=True, predictor=varied.predictor)
    assert varied.loads.n == 1  # the given predictor is not touched: one model for the held-out heads
    varied.loads.n = 0
    assert sorted(rq.rerank_queues(varied.ws, varied.cid)) == sorted(ids)
    assert varied.loads.n == 1 and len(varied.fits) == 5


def test_queues_are_bit_identical_with_and_without_the_shared_model(varied):
    from seghz.infer.engine import Predictor

    ids = []
    for i in range(8):  # train (held-out) and val (in-sample) interleaved: the shared model goes back to its base
        ids.append(varied.add(f"field {i}", synthetic=False, split="train" if i % 3 else "val"))
    rp.build_queues(varied.ws, varied.cid, ids)  # held_out=None: the Labels page's default per scene
    shared = {sid: rq.load_queue(varied.ws, sid) for sid in ids}
    given = rp.build_queues(varied.ws, varied.cid, ids[::-1], predictor=varied.predictor)
    assert {b.status for b in given} == {"built"}
    n_fits = len(varied.fits)
    assert n_fits >= 3  # the folds holding a train scene (a fold may hold only val scenes)
    ck = varied.ws.checkpoint_path(varied.ws.get_checkpoint(varied.cid))
    own, _ = Predictor.from_checkpoint(ck, "cpu")
    one = rq.HeldOutBuild(own=own, checkpoint=ck)  # the heads swapped into the build's own model, unsaved (float32)
    for sid in ids:
        fresh, _ = Predictor.from_checkpoint(ck, "cpu")  # as before: a model loaded for this scene alone
        held = varied.ws.get_scene(sid).split == "train"
        alone = rq.build_queue(varied.ws, sid, fresh, varied.cid, held_out=held, save=False)
        _same_queue(rq.build_queue(varied.ws, sid, own, varied.cid, held_out=held, save=False, held_out_build=one),
                    alone)
        _same_queue(shared[sid], alone, saved=True)
        _same_queue(rq.load_queue(varied.ws, sid), alone, saved=True)
        if held:  # a perturbed head really scored it
            assert alone.scoring.startswith("held-out head (")
            assert not np.array_equal(alone.score, rq.build_queue(varied.ws, sid, fresh, varied.cid, save=False).score)
    assert len(varied.fits) == n_fits  # the scene-by-scene builds took the cached heads


def test_the_fold_heads_are_fitted_first_and_the_bar_moves_while_they_are(varied):
    ids = [varied.add(f"field {i}", synthetic=False) for i in range(7)]
    steps: list[tuple[float, str]] = []
    res = rp.build_queues(varied.ws, varied.cid, ids, held_out=True, progress=lambda f, m="": steps.append((f, m)))
    assert [b.status for b in res] == ["built"] * 7
    fracs = [f for f, _ in steps]
    assert all(b >= a - 1e-9 for a, b in itertools.pairwise(fracs)) and fracs[-1] == pytest.approx(1.0)
    first_scene = next(k for k, (_, m) in enumerate(steps) if m.startswith("scene "))
    fitting = [k for k, (_, m) in enumerate(steps) if "fitting the held-out head of fold" in m]
    assert {steps[k][1].split("fold ")[1].split(" ")[0] for k in fitting} == {f"{i}/5" for i in range(1, 6)}
    assert max(fitting) < first_scene  # every head before any scene
    done = [f for f, m in steps[:first_scene] if m.startswith("held-out head ") and m.endswith(": done")]
    assert len(done) == 5 and all(b > a for a, b in itertools.pairwise([0.0, *done]))
    assert done[-1] < 1.0 and steps[first_scene][0] == pytest.approx(done[-1])
    assert not any("fitting" in m for _, m in steps[first_scene:])  # no scene fits a head any more


def test_a_stop_while_the_heads_are_fitted_writes_no_queue(varied):
    ids = [varied.add(f"field {i}", synthetic=False) for i in range(7)]
    asked = []

    def should_stop() -> bool:
        asked.append(1)
        return len(varied.fits) >= 2

    res = rp.build_queues(varied.ws, varied.cid, ids, held_out=True, should_stop=should_stop)
    assert [b.status for b in res] == ["stopped"] * 7 and len(varied.fits) == 2
    assert all(rq.load_queue(varied.ws, sid) is None for sid in ids)


def test_a_head_that_cannot_be_fitted_fails_its_fold_once(varied):
    ids = [varied.add(f"field {i}", synthetic=False) for i in range(12)]
    varied.fail_fit = 1
    logs: list[str] = []
    res = rp.build_queues(varied.ws, varied.cid, ids, held_out=True, log=logs.append)
    assert len(varied.fits) == 5  # tried once, not once per scene of its fold
    failed = [b for b in res if b.status == "failed"]
    assert failed and all(b.message == "refit 1 broke" for b in failed)
    assert len(failed) < 12 and all(b.status == "built" for b in res if b not in failed)
    assert any("was not fitted: refit 1 broke" in line for line in logs)


def test_head_swap_restores_the_base_bit_for_bit():
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(4, 5, 1))
    base = {k: v.clone() for k, v in model.state_dict().items()}
    a = {"1.weight": torch.randn(5, 4, 1, 1), "1.bias": torch.randn(5)}
    b = {"1.bias": torch.randn(5)}
    swap = crossfit.HeadSwap(model)
    swap.use(a)
    swap.use(b)  # a's weight goes back to the base: the model is base + b, not base + a + b
    for k, v in model.state_dict().items():
        assert torch.equal(v, b.get(k, base[k])), k
    swap.restore()
    assert all(torch.equal(v, base[k]) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="lacks"):
        swap.use({"2.weight": torch.zeros(1)})
    assert all(torch.equal(v, base[k]) for k, v in model.state_dict().items())
