"""The workspace-wide review plan (seghz.review.plan): queues built for many scenes, their pending items ranked
across scenes with a time budget, the review pace from the verdict log, the "queues" job, the CLI and the Labels
page's panel.

Two workspaces: a synthetic one (48 px hz7 scenes whose image encodes the "true" class, scored by a fake predictor
that believes the image, so each wrong label block becomes exactly one queue item of known size), and the prepared
workspace of tests/test_pages.py (two 128 px scenes, the tiny real checkpoint ``tiny-test``) for the job, the CLI's
build and the page.
"""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from test_pages import app, assert_ok, texts, tiny_checkpoint, ws  # noqa: F401  (fixtures)

import ui.common
from seghz import cli
from seghz.classes import get_scheme
from seghz.jobs import ProgressReporter, cancel_job, load_job_kinds, runner
from seghz.jobs.kinds import queues_identity, queues_job, submit_queues_job
from seghz.jobs.worker import run_job
from seghz.review import plan as rp
from seghz.review import queue as rq
from seghz.store import NotFoundError, Workspace

HZ7 = get_scheme("hz7")
H = 48


class ImagePredictor:
    """Confidently predicts the class written in the image's red channel (value // 30). An image whose green channel
    is all 255 stands for a tile that cannot be read: OSError."""

    def __init__(self):
        self.calls = 0

    def predict_full(self, image, tta="none", progress=None, return_proba=False, **kw):
        self.calls += 1
        if (image[..., 1] == 255).all():
            raise OSError("tile unreadable (test)")
        truth = (image[..., 0] // 30).astype(np.int64)
        for k in range(3):
            if progress is not None:
                progress(k / 2, f"window {k + 1}/3")
        proba = np.full((HZ7.num_classes, *truth.shape), 0.01 / (HZ7.num_classes - 1), np.float32)
        np.put_along_axis(proba, truth[None], 0.99, 0)
        return SimpleNamespace(proba=proba, disagreement=np.zeros(truth.shape, np.float32),
                               mask=truth.astype(np.uint8))


# scene -> (width, wrong label blocks (row0, col0, row1, col1)); every block is labelled class 3 where the image says 0
SCENES = {
    "a": (48, [(2, 2, 8, 8), (30, 2, 33, 5)]),  # 36 px and 9 px
    "b": (96, [(10, 10, 20, 20)]),  # 100 px (a scene twice as wide: twice the progress share)
    "c": (48, [(20, 4, 25, 9)]),  # 25 px
}


def _scene(tmp, w, key, width, blocks, *, scheme="hz7", split="train", broken=False):
    from seghz.data.io import write_index_mask, write_rgb
    from seghz.data.scenes import import_scene

    truth = np.zeros((H, width), np.uint8)
    truth[:, width // 2:] = 1
    lbl = truth.copy()
    for r0, c0, r1, c1 in blocks:
        lbl[r0:r1, c0:c1] = 3
    rgb = np.zeros((H, width, 3), np.uint8)
    rgb[..., 0] = truth * 30
    rgb[..., 1] = 255 if broken else 7
    write_rgb(tmp / f"{key}.png", rgb)
    write_index_mask(tmp / f"{key}_lbl.png", lbl, get_scheme(scheme))
    return import_scene(w, tmp / f"{key}.png", tmp / f"{key}_lbl.png", scheme=scheme, name=f"scene {key}",
                        split=split).id


@pytest.fixture
def synth(tmp_path):
    """A workspace with scenes a, b, c (hz7, train), an hz7 scene in val, a broken tile, a gid15 scene, and a fake
    registered hz7 checkpoint "fake" (never loaded: the tests give the predictor)."""
    w = Workspace(tmp_path / "ws")
    ids = {k: _scene(tmp_path, w, k, wd, bl) for k, (wd, bl) in SCENES.items()}
    ids["v"] = _scene(tmp_path, w, "v", 48, [(40, 40, 44, 44)], split="val")  # 16 px
    ids["bad"] = _scene(tmp_path, w, "bad", 48, [(2, 2, 6, 6)], broken=True)
    ids["g"] = _scene(tmp_path, w, "g", 48, [], scheme="gid15")
    ck = w.root / "checkpoints" / "fake.safetensors"
    ck.parent.mkdir(parents=True, exist_ok=True)
    ck.write_bytes(b"fake")
    w.register_checkpoint(ck, {"arch": "FPN", "encoder": "x", "scheme": "hz7"}, checkpoint_id="fake")
    w.set_active_checkpoint("fake")
    return w, ids


def _build(w, ids, keys=("a", "b", "c", "v"), **kw):
    return rp.build_queues(w, "fake", [ids[k] for k in keys], held_out=False, predictor=ImagePredictor(), **kw)


# ------------------------------------------------------------------------------------------------ build_queues


def test_build_queues_builds_skips_other_schemes_and_logs_a_failing_scene(synth):
    w, ids = synth
    lines, prog = [], []
    res = rp.build_queues(w, "fake", [ids[k] for k in ("a", "g", "bad", "b")], held_out=False,
                          predictor=ImagePredictor(), log=lines.append, progress=lambda f, m="": prog.append((f, m)))
    assert [(b.scene_id, b.status) for b in res] == [(ids["a"], "built"), (ids["g"], "skipped"),
                                                     (ids["bad"], "failed"), (ids["b"], "built")]
    assert res[0].items == 2 and res[3].items == 1
    assert "gid15" in res[1].message and any(ids["g"] in ln and "gid15" in ln for ln in lines)
    assert "tile unreadable" in res[2].message and any(ids["bad"] in ln and "not built" in ln for ln in lines)
    assert rq.load_queue(w, ids["bad"]) is None and rq.load_queue(w, ids["g"]) is None
    assert {it.bbox for it in rq.load_queue(w, ids["a"]).items} == set(SCENES["a"][1])
    # progress never goes back, ends at 1, and is weighted by pixels: a (48×48) done = 1/4 of a + bad + b
    fracs = [f for f, _ in prog]
    assert fracs == sorted(fracs) and fracs[-1] == pytest.approx(1.0)
    done = [f for f, m in prog if m.endswith(": done")]
    assert done[0] == pytest.approx(48 * 48 / (48 * 48 * 2 + 48 * 96))


def test_build_queues_stops_between_and_inside_scenes_writing_nothing_half_done(synth):
    w, ids = synth
    asked = []

    def should_stop() -> bool:  # lets scene a through, then asks to stop inside scene b
        asked.append(1)
        return rq.load_queue(w, ids["a"]) is not None

    res = _build(w, ids, ("a", "b", "c"), should_stop=should_stop)
    assert [b.status for b in res] == ["built", "stopped", "stopped"]
    assert rq.load_queue(w, ids["b"]) is None and rq.load_queue(w, ids["c"]) is None
    with pytest.raises(NotFoundError):
        rp.build_queues(w, "nope", [ids["a"]], predictor=ImagePredictor())


# ------------------------------------------------------------------------------------------------ the plan


def test_plan_ranks_every_pending_item_across_scenes_by_score(synth):
    w, ids = synth
    _build(w, ids, ("a", "b", "c"))
    plan = rp.review_plan(w, split="train", active_id="fake", seconds_per_item=20)
    # score = mean suspicion × pixels, the same confident error everywhere: b's 100 px, a's 36, c's 25, a's 9
    assert [(r.scene_id, r.pixels) for r in plan.items] == [(ids["b"], 100), (ids["a"], 36), (ids["c"], 25),
                                                            (ids["a"], 9)]
    scores = [r.score for r in plan.items]
    assert scores == sorted(scores, reverse=True)
    assert [r.rank for r in plan.items] == [1, 2, 3, 4]
    assert [r.cumulative_s for r in plan.items] == [20, 40, 60, 80] and plan.total_s == 80
    top = plan.items[0]
    assert (top.label_class, top.predicted_class, top.bbox) == (HZ7.names[3], HZ7.names[0], (10, 10, 20, 20))
    assert top.key == f"{ids['b']}:10,10,20,20" and top.split == "train" and not top.stale
    # which scene next: best score first, with pending items, pixels and minutes
    assert [s.scene_id for s in plan.scenes] == [ids["b"], ids["a"], ids["c"]]
    a = plan.scenes[1]
    assert (a.pending, a.pending_px, a.est_minutes) == (2, 45, pytest.approx(40 / 60))
    # labelled train scenes without a queue (the broken tile, the gid15 one; not the val scene); split None adds v
    assert set(plan.no_queue) == {ids["bad"], ids["g"]}
    every = rp.review_plan(w, split=None, active_id="fake", seconds_per_item=20)
    assert set(every.no_queue) == {ids["bad"], ids["v"], ids["g"]} and every.total_items == 4


def test_judged_items_leave_the_plan_and_a_label_edit_makes_a_queue_stale_and_ranked_last(synth):
    w, ids = synth
    _build(w, ids, ("a", "b", "c"))
    q = rq.load_queue(w, ids["b"])
    rq.apply_action(w, q, q.items[0], "accept", "Ann")
    plan = rp.review_plan(w, split="train", active_id="fake", seconds_per_item=20)
    assert [(r.scene_id, r.pixels) for r in plan.items] == [(ids["a"], 36), (ids["c"], 25), (ids["a"], 9)]
    assert not any(r.stale for r in plan.items)  # a verdict alone does not make the queue stale
    b = next(s for s in plan.scenes if s.scene_id == ids["b"])
    assert (b.pending, b.top_score, b.stale) == (0, None, False)

    # a brush edit on scene a (not one of its queue's verdicts): a's queue is out of date, its items go last
    edit = np.zeros((H, 48), bool)
    edit[44:46, 40:46] = True
    w.save_label_edit(ids["a"], 0, "Bob", "brush", pixels=edit, values=2)
    plan = rp.review_plan(w, split="train", active_id="fake", seconds_per_item=20)
    assert [(r.scene_id, r.pixels, r.stale) for r in plan.items] == [(ids["c"], 25, False), (ids["a"], 36, True),
                                                                     (ids["a"], 9, True)]
    a = next(s for s in plan.scenes if s.scene_id == ids["a"])
    assert a.stale and "12 label px changed" in a.stale_reason and plan.stale_items == 2
    assert plan.scenes[-1].scene_id == ids["a"]  # stale scenes after fresh ones
    # another active model makes every queue out of date, and says which
    plan = rp.review_plan(w, split="train", active_id="other", seconds_per_item=20)
    assert all(r.stale for r in plan.items)
    assert "built with fake, the active model is other" in plan.scenes[0].stale_reason
    assert set(rp.scenes_needing_queues(w, "train", checkpoint_id="fake", active_id="fake")) == {ids["a"], ids["bad"]}
    assert ids["g"] in rp.scenes_needing_queues(w, "train", active_id="fake")  # any scheme without a checkpoint


def test_the_plan_reads_a_queue_without_its_maps_and_finds_the_same_items(synth):
    w, ids = synth
    _build(w, ids, ("a",))
    full, light = rq.load_queue(w, ids["a"]), rq.load_queue(w, maps=False, scene_id=ids["a"])
    assert light.shape == full.shape == (H, 48) and light.label_version == full.label_version
    assert [(it.key, it.score, it.pixels) for it in light.items] == [(it.key, it.score, it.pixels) for it in full.items]
    assert all(np.array_equal(x.indices, y.indices) for x, y in zip(light.items, full.items, strict=True))
    assert light.predicted.strides == (0, 0)  # a stand-in: the class map was never decompressed
    assert rq.load_queue(w, maps=False, scene_id=ids["b"]) is None  # none built
    rq.review_dir(w, ids["b"]).mkdir(parents=True)
    (rq.review_dir(w, ids["b"]) / "queue.npz").write_bytes(b"not a zip")
    assert rq.load_queue(w, maps=False, scene_id=ids["b"]) is None


def test_the_cache_is_reused_until_the_scene_changes(synth, monkeypatch):
    w, ids = synth
    _build(w, ids, ("a", "b"))
    cache: dict = {}
    first = rp.review_plan(w, split="train", active_id="fake", seconds_per_item=20, cache=cache)
    calls = []
    real = rp.scene_state
    monkeypatch.setattr(rp, "scene_state", lambda *a, **k: calls.append(a[1].id) or real(*a, **k))
    again = rp.review_plan(w, split="train", active_id="fake", seconds_per_item=20, cache=cache)
    assert calls == []  # nothing changed: every scene's state (a queue or none) comes from the cache
    assert [r.key for r in again.items] == [r.key for r in first.items]
    q = rq.load_queue(w, ids["a"])
    rq.apply_action(w, q, q.items[0], "ignore", "Ann")
    calls.clear()
    after = rp.review_plan(w, split="train", active_id="fake", seconds_per_item=20, cache=cache)
    assert ids["a"] in calls and ids["b"] not in calls
    assert after.total_items == first.total_items - 1


def test_the_budget_keeps_the_items_whose_cumulative_time_fits(synth):
    w, ids = synth
    _build(w, ids, ("a", "b", "c"))
    for budget, n in ((0, 0), (19, 0), (20, 1), (50, 2), (60, 3), (3600, 4)):
        plan = rp.review_plan(w, split="train", active_id="fake", budget_s=budget, seconds_per_item=20)
        assert len(plan.items) == n and plan.total_items == 4 and plan.cut == 4 - n, budget
        assert all(r.cumulative_s <= budget for r in plan.items)
    with pytest.raises(ValueError, match="positive"):
        rp.review_plan(w, seconds_per_item=0)


# ------------------------------------------------------------------------------------------------ review pace


def _write_verdicts(w, scene_id, rows):
    d = rq.review_dir(w, scene_id)
    d.mkdir(parents=True, exist_ok=True)
    (d / "verdicts.json").write_text(json.dumps([{"scene_id": scene_id, "analyst": who, "action": "confirm",
                                                  "time": f"2024-05-01T{t}+00:00"} for who, t in rows]))


def test_seconds_per_item_is_the_median_gap_within_a_scene_breaks_dropped(synth):
    w, ids = synth
    pace = rp.seconds_per_item(w)
    assert pace.seconds == rp.DEFAULT_SECONDS_PER_ITEM and pace.gaps == 0 and pace.source.startswith("default")
    # Ann in scene a: gaps 10, 12, 14 s, then a 20 min break (dropped), then 16 s; her clock in scene b: 30 s, and
    # the jump from her last verdict in a to her first in b is no item's time
    _write_verdicts(w, ids["a"], [("Ann", "10:00:00"), ("Ann", "10:00:10"), ("Ann", "10:00:22"), ("Ann", "10:00:36"),
                                  ("Ann", "10:20:36"), ("Ann", "10:20:52")])
    _write_verdicts(w, ids["b"], [("Ann", "11:00:00"), ("Ann", "11:00:30"), ("Bob", "11:00:31"), ("Bob", "11:02:31"),
                                  ("Bob", "11:04:31")])
    assert sorted(rp.verdict_gaps(w)) == [10, 12, 14, 16, 30, 120, 120]
    pace = rp.seconds_per_item(w)
    assert pace.seconds == 16 and pace.gaps == 7 and "median of 7 gaps" in pace.source
    assert rp.seconds_per_item(w, "Ann").seconds == 14  # her own five gaps: 10, 12, 14, 16, 30
    assert rp.seconds_per_item(w, "Bob").seconds == 16  # two gaps are too few: everyone's
    plan = rp.review_plan(w, split="train", active_id="fake")
    assert plan.seconds_per_item == 16 and "median" in plan.pace_source


def test_parse_duration():
    assert rp.parse_duration("30m") == 1800 and rp.parse_duration("1h30m") == 5400
    assert rp.parse_duration("90s") == 90 and rp.parse_duration("45") == 2700 and rp.parse_duration("2 min") == 120
    for bad in ("soon", "30x", "m30", ""):
        with pytest.raises(ValueError, match="cannot read the duration"):
            rp.parse_duration(bad)
    assert rp.fmt_minutes(90) == "1.5 min" and rp.fmt_minutes(3599.9) == "1 h 00 min"


# ------------------------------------------------------------------------------------------------ CLI


def test_cli_review_plan_prints_the_ranking_and_writes_json(synth, tmp_path, capsys):
    w, ids = synth
    _build(w, ids, ("a", "b", "c"))
    out = tmp_path / "plan" / "plan.json"
    code = cli.main(["--workspace", str(w.root), "review", "plan", "--budget", "1m", "--seconds-per-item", "20",
                     "--json", str(out)])
    text = capsys.readouterr().out
    assert code == 0
    data = json.loads(out.read_text())
    assert [(i["scene_id"], i["pixels"], i["cumulative_s"]) for i in data["items"]] == [
        (ids["b"], 100, 20), (ids["a"], 36, 40), (ids["c"], 25, 60)]
    assert data["total_items"] == 4 and data["items_in_budget"] == 3 and data["budget_s"] == 60
    assert data["items"][0]["bbox"] == [10, 10, 20, 20] and data["items"][0]["stale"] is False
    assert data["no_queue"]["count"] == 2 and set(data["no_queue"]["scene_ids"]) == {ids["bad"], ids["g"]}
    assert data["split"] == "train"
    assert [s["scene_id"] for s in data["scenes"]] == [ids["b"], ids["a"], ids["c"]]
    assert "1.0 min" in text and "scene b" in text and "3 item(s) fit, 1 left for later" in text
    assert "2 labelled scene(s) without a queue" in text
    # bad values: a clear message on stderr, exit 2
    assert cli.main(["--workspace", str(w.root), "review", "plan", "--budget", "soon"]) == 2
    assert "cannot read the duration 'soon'" in capsys.readouterr().err


def test_cli_review_build_in_the_foreground(ws, capsys):  # noqa: F811
    train = ws.list_scenes("train")[0].id
    code = cli.main(["--workspace", str(ws.root), "review", "build", "--in-sample", "--threshold", "0.05"])
    io = capsys.readouterr()
    assert code == 0, io.err
    q = rq.load_queue(ws, train)
    assert q is not None and q.checkpoint_id == "tiny-test" and q.scoring == "in-sample" and q.threshold == 0.05
    assert [s.id for s in ws.list_scenes("val") if rq.load_queue(ws, s.id)] == []  # --split train by default
    assert "1 queue(s) built" in io.out and "review build" in io.err
    assert cli.main(["--workspace", str(ws.root), "review", "build"]) == 0  # fresh: nothing to do
    assert "nothing to build" in capsys.readouterr().out
    assert cli.main(["--workspace", str(ws.root), "review", "build", "--scenes", "nope"]) == 2
    assert "nope" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ the job


def test_queues_job_builds_records_the_checkpoint_and_is_not_submitted_twice(ws, monkeypatch):  # noqa: F811
    assert load_job_kinds()["queues"] is queues_job
    ids = [s.id for s in ws.list_scenes()]
    jid = ws.create_job("queues", {"scenes": ids, "held_out": False, "threshold": 0.05})
    assert run_job(ws, jid) == 0
    job = ws.get_job(jid)
    assert job.status == "done", job.message
    assert job.config["checkpoint_id"] == "tiny-test"  # the active one taken is recorded (archive guard)
    assert sorted(job.result["built"]) == sorted(ids) and job.result["failed"] == []
    assert all(rq.load_queue(ws, s).checkpoint_id == "tiny-test" for s in ids)
    assert "built the noise queue of scene" in ws.path(job.log_path).read_text()
    # nothing left to build by default: refused with a reason; a rebuild of named scenes is submitted once
    monkeypatch.setattr(runner, "start_worker", lambda w, job_id: None)  # no worker process
    with pytest.raises(ValueError, match="fresh queue"):
        submit_queues_job(ws, {})
    cfg = {"scenes": ids[:1], "threshold": 0.3}
    first, created = submit_queues_job(ws, cfg)
    again, created2 = submit_queues_job(ws, dict(cfg))
    assert created and not created2 and again == first
    assert ws.get_job(first).config["checkpoint_id"] == "tiny-test" and ws.get_job(first).config["held_out"] is None
    other, created3 = submit_queues_job(ws, {**cfg, "threshold": 0.4})
    assert created3 and other != first
    assert queues_identity({"scenes": ["b", "a"]}) == queues_identity({"scenes": ["a", "b"], "threshold": 0.5})
    with pytest.raises(ValueError, match="unknown TTA"):
        submit_queues_job(ws, {**cfg, "tta": "sideways"})


def test_queues_job_honours_a_cancel_and_writes_no_half_built_queue(ws, monkeypatch):  # noqa: F811
    ids = [s.id for s in ws.list_scenes()]
    config = {"scenes": ids, "held_out": False}
    jid = ws.create_job("queues", dict(config))
    cancel_job(ws, jid)
    with pytest.raises(Exception, match="cancelled"):
        queues_job(ws, jid, dict(config), ProgressReporter(ws, jid))
    ws.update_job(jid, status="cancelled")  # as its worker records it
    real = ProgressReporter.update

    def cancel_on_first_update(self, fraction, message=""):
        cancel_job(self.ws, self.job_id)
        real(self, fraction, message)

    monkeypatch.setattr(ProgressReporter, "update", cancel_on_first_update)
    monkeypatch.setattr(runner, "CANCEL_POLL_S", 0.0)
    jid = ws.create_job("queues", dict(config))
    assert run_job(ws, jid) == 0
    job = ws.get_job(jid)
    assert job.status == "cancelled" and job.result is None
    assert all(rq.load_queue(ws, s) is None for s in ids)


# ------------------------------------------------------------------------------------------------ the page


def _fake_canvas(**kw):
    return SimpleNamespace(image_data=None, json_data=None)


def test_labels_page_review_plan_lists_scenes_and_items_and_open_switches_scene(ws, monkeypatch):  # noqa: F811
    monkeypatch.setattr(ui.common, "canvas", _fake_canvas)
    monkeypatch.setattr(runner, "start_worker", lambda w, job_id: None)  # no worker process
    train = ws.list_scenes("train")[0]
    val = ws.list_scenes("val")[0]
    at = app("pages/3_Labels.py").run()
    assert_ok(at)
    assert "Review plan — all scenes" in [e.label for e in at.expander]
    assert "No scene of this choice has a noise queue yet." in texts(at)
    # build: a background job for the train scene without a queue (the Noise queue section's threshold)
    at.slider(key="lbl_q_threshold").set_value(0.05).run()
    btn = at.button(key="lbl_plan_build")
    assert btn.label == "Build queues for 1 scene(s) without one"
    btn.click().run()
    assert_ok(at)
    jobs = [j for j in ws.list_jobs() if j.kind == "queues"]
    assert len(jobs) == 1 and jobs[0].config["scenes"] == [train.id] and jobs[0].config["threshold"] == 0.05
    assert any("Queue build job" in s.value for s in at.success)
    assert any(b.key == f"lbl_plan_cancel_{jobs[0].id}" for b in at.button)  # progress and Cancel while queued
    assert at.button(key="lbl_plan_build").disabled
    ws.update_job(jobs[0].id, status="cancelled")

    rp.build_queues(ws, "tiny-test", [train.id, val.id], threshold=0.05, held_out=False)
    at = app("pages/3_Labels.py").run()
    assert_ok(at)
    at.radio(key="lbl_plan_split").set_value("all").run()
    assert_ok(at)
    items = next(d.value for d in at.dataframe if "cum. min" in d.value.columns)
    plan = rp.review_plan(ws, split=None, active_id="tiny-test", budget_s=1800)
    assert len(items) == len(plan.items) > 0
    assert list(items["score"]) == sorted(items["score"], reverse=True)
    assert set(items["scene"]) <= {train.name, val.name}
    assert "s an item" in texts(at) and "default" in texts(at)  # the pace and where it comes from
    shown = at.selectbox(key="lbl_scene").value
    other = val.id if shown == train.id else train.id
    at.button(key=f"lbl_plan_open_{other}").click().run()
    assert_ok(at)
    assert at.selectbox(key="lbl_scene").value == other
    assert at.button(key="lbl_q_build") is not None  # the scene's noise queue section is there
    assert any(b.key.startswith("lbl_q_confirm_") for b in at.button if b.key)  # with its items
    # the budget cuts the item table: 60 s at the default 20 s an item
    assert plan.total_items > 3
    at.number_input(key="lbl_plan_budget").set_value(1).run()
    assert_ok(at)
    items = next(d.value for d in at.dataframe if "cum. min" in d.value.columns)
    assert list(items["rank"]) == [1, 2, 3] and list(items["cum. min"]) == [0.3, 0.7, 1.0]
