"""Browser review of the Evaluate page: (1) one scene of a split could not be scored (the airport's 10.7 % hid behind
the split's 18.4 %, its own score only in an expander under Class frequencies); (2) the drill-down re-predicted whole
scenes behind a bare spinner, > 10 min after a d4 background evaluation had just predicted them.

Same prepared workspace as tests/test_pages.py (one 128 px labelled val scene "val town", one train scene "train farm"
and a tiny active hz7 checkpoint ``tiny-test``); a second train scene is imported here.
"""
from __future__ import annotations

import numpy as np
import pytest
from test_pages import HZ7, app, assert_ok, texts, tiny_checkpoint, ws  # noqa: F401  (fixtures)

from seghz import drilldown
from seghz.evaluate import evaluate_split, scene_scope
from seghz.jobs import ProgressReporter, runner
from seghz.jobs.kinds import evaluate_job, evaluation_key, submit_evaluation_job
from seghz.jobs.worker import run_job


def _add_train_scene(ws, tmp_path, name="train airport", seed=23, size=160):  # noqa: F811
    from seghz.data.io import write_index_mask, write_rgb
    from seghz.data.scenes import import_scene
    from seghz.demo import generate_scene

    rgb, lbl = generate_scene(size, seed)
    write_rgb(tmp_path / f"{seed}.png", rgb)
    write_index_mask(tmp_path / f"{seed}_label.png", lbl, HZ7)
    import_scene(ws, tmp_path / f"{seed}.png", tmp_path / f"{seed}_label.png", scheme="hz7", name=name, split="train",
                 synthetic=True)
    return next(s for s in ws.list_scenes("train") if s.name == name)


@pytest.fixture
def two(ws, tmp_path):  # noqa: F811
    """The workspace with two labelled train scenes: (farm, airport)."""
    air = _add_train_scene(ws, tmp_path)
    farm = next(s for s in ws.list_scenes("train") if s.name == "train farm")
    drilldown.clear_prediction_cache()
    yield farm, air
    drilldown.clear_prediction_cache()


def test_a_scene_subset_is_cached_apart_from_the_whole_split(ws, two):  # noqa: F811
    farm, air = two
    dv = ws.data_version("train")
    whole = evaluate_split(ws, "tiny-test", "train")
    assert whole["scenes"] == 2 and "scene_ids" not in whole
    one = evaluate_split(ws, "tiny-test", "train", scene_ids=[air.id])  # not served from the whole split's row
    assert one["scenes"] == 1 and one["scene_ids"] == [air.id] and list(one["per_scene"]) == [air.id]
    assert one["confusion"] == whole["per_scene"][air.id]
    # the whole split's row is still what split-wide readers get, and the subset has its own
    assert ws.find_evaluation("tiny-test", "train", False, dv).result["scenes"] == 2
    sub = ws.find_evaluation("tiny-test", scene_scope("train", [air.id]), False, ws.data_version("train", [air.id]))
    assert sub is not None and sub.result["scene_ids"] == [air.id]
    assert scene_scope("train", [air.id]) != scene_scope("train", [farm.id]) != "train"
    # every scene chosen is the whole split (its cached row, no new one)
    n = len(ws.list_evaluations("tiny-test"))
    assert evaluate_split(ws, "tiny-test", "train", scene_ids=[air.id, farm.id])["scenes"] == 2
    assert len(ws.list_evaluations("tiny-test")) == n
    with pytest.raises(Exception, match="not labelled scenes"):
        evaluate_split(ws, "tiny-test", "train", scene_ids=["nope"])


def test_evaluate_page_scores_chosen_scenes_and_shows_per_scene_scores_near_the_headline(ws, two):  # noqa: F811
    _farm, air = two
    at = app("pages/2_Evaluate.py").run()
    at.radio(key="eval_split").set_value("train").run()
    assert_ok(at)
    ms = at.multiselect(key="eval_scenes_train")
    assert ms.value == [] and not ms.disabled
    # option texts do not change from run to run (the browser sends the text back)
    assert list(ms.options) == list(app("pages/2_Evaluate.py").run().radio(key="eval_split").set_value("train")
                                    .run().multiselect(key="eval_scenes_train").options)
    at.button(key="eval_run").click().run()
    assert_ok(at)
    whole = ws.find_evaluation("tiny-test", "train", False, ws.data_version("train")).result
    per_scene = at.dataframe[0].value  # the page's first table, above the confusion matrix and per-class tables
    assert "labelled px" in per_scene.columns and "mIoU" in per_scene.columns
    assert sorted(per_scene["name"]) == ["train airport", "train farm"]
    assert "2 labelled scene(s) of the **train** split" in texts(at)

    at.multiselect(key="eval_scenes_train").set_value([air.id]).run()
    assert_ok(at)
    assert "No cached result" in texts(at)  # never served from the whole split's evaluation
    assert not [m for m in at.metric if m.label == "mIoU"]
    at.button(key="eval_run").click().run()
    assert_ok(at)
    assert "1 chosen labelled scene(s) of the **train** split (train airport)" in texts(at)
    air_miou = per_scene.loc[per_scene["name"] == "train airport", "mIoU"].item()
    assert {m.label: m.value for m in at.metric}["mIoU"] == f"{100 * air_miou:.1f} %"
    assert "labelled px" not in at.dataframe[0].value.columns  # one scene: the headline is its score
    # the whole split's cached evaluation is untouched
    assert ws.find_evaluation("tiny-test", "train", False, ws.data_version("train")).result == whole
    at.multiselect(key="eval_scenes_train").set_value([]).run()
    assert_ok(at)
    assert {m.label: m.value for m in at.metric}["mIoU"] == f"{100 * whole['miou']:.1f} %"


def test_background_evaluation_of_chosen_scenes(ws, two, monkeypatch):  # noqa: F811
    _farm, air = two
    monkeypatch.setattr(runner, "start_worker", lambda w, job_id: None)
    at = app("pages/2_Evaluate.py").run()
    at.radio(key="eval_split").set_value("train").run()
    at.multiselect(key="eval_scenes_train").set_value([air.id]).run()
    at.button(key="eval_bg").click().run()
    assert_ok(at)
    (job,) = ws.list_jobs()
    assert job.config == {"checkpoint_id": "tiny-test", "split": "train", "tta": "none", "force": False,
                          "scene_ids": [air.id]}
    assert at.button(key="eval_bg").disabled and at.button(key=f"eval_bg_cancel_{job.id}")
    # the whole split's job is another job
    assert evaluation_key("evaluate", job.config) != evaluation_key("evaluate", {**job.config, "scene_ids": None})
    _jid, new = submit_evaluation_job(ws, "evaluate", {"checkpoint_id": "tiny-test", "split": "train", "tta": "none"})
    assert new
    assert run_job(ws, job.id) == 0
    done = ws.get_job(job.id)
    assert done.status == "done" and done.result["scenes"] == 1 and done.result["scene_ids"] == [air.id]
    assert ws.find_evaluation("tiny-test", "train", False, ws.data_version("train")) is None
    at.run()
    assert_ok(at)
    assert "1 chosen labelled scene(s) of the **train** split (train airport)" in texts(at)
    # a label saved on a scene outside the chosen ones leaves the subset's result shown, not "stale, run again"
    _no_predict(monkeypatch)
    ws.save_label_edit(_farm.id, ws.latest_label_version(_farm.id), "Ann", "brush", pixels=np.arange(5), values=1)
    at.run()
    assert_ok(at)
    assert not at.error, [e.value for e in at.error]
    assert f"data version `{ws.data_version('train', [air.id])}`" in texts(at)


def _no_predict(monkeypatch):
    from seghz.infer.engine import Predictor

    def boom(self, *a, **k):
        raise RuntimeError("predicted again")

    monkeypatch.setattr(Predictor, "predict", boom)
    monkeypatch.setattr(Predictor, "predict_many", boom)  # small scenes are predicted in shared batches


def test_the_drilldown_reuses_the_predictions_of_the_background_evaluation(ws, two, monkeypatch):  # noqa: F811
    config = {"checkpoint_id": "tiny-test", "split": "train", "tta": "d4", "force": False}
    jid = ws.create_job("evaluate", config)
    evaluate_job(ws, jid, config, ProgressReporter(ws, jid))
    drilldown.clear_prediction_cache()  # the worker's memory is not the page's: only what it saved on disk counts
    for s in two:
        assert drilldown.has_scene_prediction(ws, "tiny-test", s.id, "d4")
    _no_predict(monkeypatch)
    at = app("pages/2_Evaluate.py").run()
    at.radio(key="eval_split").set_value("train").run()
    at.radio(key="eval_tta").set_value("d4").run()
    assert_ok(at)
    assert not at.error, [e.value for e in at.error]
    assert len(_dd_table(at)[0]) > 0


def test_a_long_drilldown_prediction_asks_first_and_shows_scene_progress(ws, two, monkeypatch):  # noqa: F811
    import ui.evaluate_drilldown as dd

    monkeypatch.setattr(runner, "start_worker", lambda w, job_id: None)
    evaluate_split(ws, "tiny-test", "train", "d4")  # cached as before: no prediction kept
    drilldown.clear_prediction_cache()
    monkeypatch.setattr(dd, "BACKGROUND_PX_VIEWS", 1000)
    at = app("pages/2_Evaluate.py").run()
    at.radio(key="eval_split").set_value("train").run()
    at.radio(key="eval_tta").set_value("d4").run()
    assert_ok(at)
    assert "Predicting here blocks the page" in texts(at)
    assert not _dd_table(at)  # nothing predicted yet

    # in the background: a job of the drill-down's scenes; its progress shows in the drill-down; its predictions
    # are then reused (nothing predicted in the page)
    at.button(key="eval_dd_bg").click().run()
    assert_ok(at)
    (job,) = ws.list_jobs()
    assert job.config["purpose"] == "drilldown" and job.config["force"] and job.config["tta"] == "d4"
    assert set(job.config["scene_ids"]) <= {s.id for s in two}
    assert any("background prediction for the drill-down" in p.proto.text for p in at.get("progress"))
    assert not [c for c in at.caption if "Also running in the background" in c.value]  # not listed twice
    assert run_job(ws, job.id) == 0
    drilldown.clear_prediction_cache()
    with monkeypatch.context() as m:
        _no_predict(m)
        at.run()
        assert_ok(at)
        assert not at.error, [e.value for e in at.error]
        assert len(_dd_table(at)[0]) > 0

    # predicting now: after a confirmation, with a progress bar per scene (scene k of n, its pixels)
    import shutil

    shutil.rmtree(ws.root / drilldown.PRED_DIR)
    drilldown.clear_prediction_cache()
    seen = []
    real = drilldown.scene_prediction

    def spy(w, cid, sid, tta, predictor, progress=None):
        seen.append(progress)
        return real(w, cid, sid, tta, predictor, progress=progress)

    monkeypatch.setattr(drilldown, "scene_prediction", spy)
    shown = []
    monkeypatch.setattr(dd.st, "progress", lambda *a, **k: shown.append(k.get("text")) or _Bar(shown))
    at.run()
    assert "Predicting here blocks the page" in texts(at) and not seen
    at.button(key="eval_dd_now").click().run()
    assert_ok(at)
    assert seen and all(p is not None for p in seen)
    assert any("predicting scene 1 of" in (t or "") and "px × 8 views" in (t or "") for t in shown), shown
    assert len(_dd_table(at)[0]) > 0


def _dd_table(at):
    return [d.value for d in at.dataframe if "rank" in d.value.columns]


class _Bar:
    def __init__(self, shown):
        self.shown = shown

    def progress(self, value, text=None):
        assert 0.0 <= value <= 1.0
        self.shown.append(text)

    def empty(self):
        pass


def test_saved_predictions_round_trip(ws):  # noqa: F811
    drilldown.clear_prediction_cache()
    sid = ws.list_scenes("val")[0].id
    pred = (np.arange(128 * 128) % 7).reshape(128, 128).astype(np.uint8)
    assert not drilldown.has_scene_prediction(ws, "tiny-test", sid, "none")
    drilldown.save_scene_prediction(ws, "tiny-test", sid, "none", pred)
    drilldown.clear_prediction_cache()
    assert drilldown.has_scene_prediction(ws, "tiny-test", sid, "none")
    assert not drilldown.has_scene_prediction(ws, "tiny-test", sid, "d4")
    assert np.array_equal(drilldown.cached_scene_prediction(ws, "tiny-test", sid, "none"), pred)
