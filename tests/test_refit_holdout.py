"""The Labels page's head refit and retrain: held-out splits stay held out, no duplicate jobs, and the TTA report
job's progress counted in view passes (findings 1-3 of an analyst's browser review).

1. The refit gathered reviewed pixels from every scene, then was gated and scored on the 'val' split: the everyday
   loop (Evaluate on val → send to label review → correct on Labels) fitted the head on exactly the pixels it was
   judged on. Its corrections and its context sample now come from the training split only (as the full
   retrain's); what was left out is logged and counted in the job result, and a refit with nothing left fails
   with a message that says why and what to do.
2. Two clicks ~2 s apart on "Fast head refit" / "Full retrain" queued two identical jobs; the second now names the
   first (``kinds.submit_retrain_job``: one write transaction).
3. The "tta_report" job reported rows done / rows, but row k runs k views (36 view passes for a full D4 report):
   its progress is now weighted by views.

Same prepared workspace as tests/test_pages.py (a 128 px labelled 'val town' scene, a 128 px labelled
'train farm' scene, a tiny active hz7 checkpoint ``tiny-test``); no worker process is started.
"""
from __future__ import annotations

import numpy as np
import pytest
from test_pages import HZ7, app, assert_ok, fake_canvas_factory, tiny_checkpoint, ws  # noqa: F401  (fixtures)

import ui.common
from seghz import compare
from seghz.jobs import runner
from seghz.jobs.kinds import refit_job, same_job, submit_retrain_job, tta_progress_weights, tta_report_job
from seghz.jobs.runner import ProgressReporter
from seghz.models.checkpoint import read_metadata

CONFIG = {"checkpoint_id": "tiny-test", "name": "tiny test model head refit", "origin": "labels"}


def _scenes(ws):  # noqa: F811
    (val,) = ws.list_scenes("val")
    (train,) = ws.list_scenes("train")
    return val, train


def _correct(ws, scene, rows: slice, cls: str = "Water") -> int:  # noqa: F811
    """Paint a block of ``scene`` with ``cls`` (a saved brush edit); its reviewed pixel count."""
    fix = np.zeros((scene.height, scene.width), bool)
    fix[rows, :64] = True
    ws.save_label_edit(scene.id, ws.latest_label_version(scene.id), "Ann", "brush", pixels=np.flatnonzero(fix),
                       values=HZ7.names.index(cls))
    return int(ws.trusted_mask(scene.id).sum())


def _log(ws, jid) -> str:  # noqa: F811
    return ws.path(ws.get_job(jid).log_path).read_text()


# ------------------------------------------------------------------------------------------------ 1. held out


def test_the_refit_fits_only_the_training_scenes_reviewed_pixels(ws):  # noqa: F811
    val, train = _scenes(ws)
    n_val = _correct(ws, val, slice(0, 32))  # the loop's val pixels: sent to review from Evaluate, corrected
    n_train = _correct(ws, train, slice(64, 80))
    assert n_val == 32 * 64 and n_train == 16 * 64
    jid = ws.create_job("refit", CONFIG)
    res = refit_job(ws, jid, CONFIG, ProgressReporter(ws, jid))
    # only the train scene's reviewed pixels are fitted on; the val scene's are counted as held out
    assert res["counts"]["corrected_available"] == n_train
    assert res["held_out_reviewed_pixels"] == n_val and res["held_out_scenes"] == 1
    assert res["held_out"] == {"val": {"scenes": [val.id], "reviewed_pixels": n_val}}
    assert res["train_split"] == "train" and res["val_split"] == "val"
    meta = read_metadata(ws.checkpoint_path(ws.get_checkpoint(res["checkpoint_id"])))
    assert meta["refit_scenes"] == [train.id] and meta["refit_train_split"] == "train"
    assert ws.get_checkpoint(res["checkpoint_id"]).train_scenes == (train.id,)  # what the head learned from
    log = _log(ws, jid)
    assert ("left out 2 048 reviewed pixels on 1 val scene(s) (" + val.id + "): the regression gate and the "
            "before/after table score on 'val'") in log
    assert f"{n_train} reviewed pixels (corrected or confirmed) in 1 scene(s)" in log
    # the context sample: the corrected train scene only, never the val scene's labels
    assert "1 scene(s) in the refit (1 giving context labels)" in log


def test_a_refit_with_every_correction_on_held_out_scenes_fails_and_says_what_to_do(ws):  # noqa: F811
    val, train = _scenes(ws)
    _correct(ws, val, slice(0, 32))
    ws.set_split(train.id, "test")
    _correct(ws, train, slice(0, 16))
    n_ckpts = len(ws.list_checkpoints())
    jid = ws.create_job("refit", CONFIG)
    with pytest.raises(ValueError) as e:
        refit_job(ws, jid, CONFIG, ProgressReporter(ws, jid))
    msg = str(e.value)
    assert "nothing to refit on: all 3 072 reviewed pixels are on scenes outside the 'train' split" in msg
    assert f"2 048 on 1 val scene(s) ({val.id})" in msg and f"1 024 on 1 test scene(s) ({train.id})" in msg
    assert "Correct or confirm pixels on a 'train' scene" in msg and "move it to the 'train' split" in msg
    assert len(ws.list_checkpoints()) == n_ckpts  # nothing registered
    log = _log(ws, jid)
    assert "left out 1 024 reviewed pixels on 1 test scene(s)" in log and "held out for the final score" in log


def test_unassigned_scenes_are_left_out_like_the_full_retrain_leaves_them_out(ws):  # noqa: F811
    _, train = _scenes(ws)
    ws.set_split(train.id, "none")
    _correct(ws, train, slice(0, 16))
    jid = ws.create_job("refit", CONFIG)
    with pytest.raises(ValueError, match="all 1 024 reviewed pixels are on scenes outside the 'train' split"):
        refit_job(ws, jid, CONFIG, ProgressReporter(ws, jid))
    assert ("left out 1 024 reviewed pixels on 1 unassigned scene(s) (" + train.id + "): like the full retrain, the "
            "refit trains on the 'train' split only") in _log(ws, jid)


@pytest.mark.parametrize("extra, text", [({"train_split": "val"}, "cannot train on the 'val' split"),
                                         ({"train_split": "test"}, "cannot train on the 'test' split"),
                                         ({"context_split": "val"}, "context labels come from its training split")])
def test_a_refit_config_naming_a_held_out_split_for_training_is_refused(ws, extra, text):  # noqa: F811
    _, train = _scenes(ws)
    _correct(ws, train, slice(0, 16))
    config = {**CONFIG, **extra}
    jid = ws.create_job("refit", config)
    with pytest.raises(ValueError, match=text):
        refit_job(ws, jid, config, ProgressReporter(ws, jid))


def test_the_labels_page_says_a_val_scenes_corrections_are_the_yardstick(ws, monkeypatch):  # noqa: F811
    val, train = _scenes(ws)
    monkeypatch.setattr(ui.common, "canvas", fake_canvas_factory([]))
    at = app("pages/3_Labels.py").run()
    at.selectbox(key="lbl_scene").set_value(val.id).run()
    assert_ok(at)
    assert any("in the **val** split: its corrections are not used by the refit or the retrain" in c.value
               and "yardstick" in c.value for c in at.caption)
    at.selectbox(key="lbl_scene").set_value(train.id).run()
    assert_ok(at)
    assert not any("its corrections are not used" in c.value for c in at.caption)


# ------------------------------------------------------------------------------------------------ 2. duplicates


def test_a_second_identical_refit_or_retrain_returns_the_queued_job(ws, monkeypatch):  # noqa: F811
    monkeypatch.setattr(runner, "start_worker", lambda w, job_id: None)  # no worker process
    first, created = submit_retrain_job(ws, "refit", CONFIG)
    assert created
    again, created = submit_retrain_job(ws, "refit", {**CONFIG, "name": "renamed", "submitted_at": "now"})
    assert (again, created) == (first, False)
    assert [j.id for j in ws.list_jobs()] == [first]
    # another parent or another setting is another job; so is a full retrain from the same checkpoint
    other, created = submit_retrain_job(ws, "refit", {**CONFIG, "checkpoint_id": "other-ckpt"})
    assert created and other != first
    train_cfg = {"parent_checkpoint_id": "tiny-test", "epochs": 2, "name": "a", "origin": "labels"}
    t1, c1 = submit_retrain_job(ws, "train", train_cfg)
    t2, c2 = submit_retrain_job(ws, "train", {**train_cfg, "name": "b"})
    t3, c3 = submit_retrain_job(ws, "train", {**train_cfg, "epochs": 3})
    assert c1 and (t2, c2) == (t1, False) and c3 and t3 != t1
    # once the first is finished, the same refit can be submitted again
    ws.update_job(first, status="done")
    again, created = submit_retrain_job(ws, "refit", CONFIG)
    assert created and again != first
    with pytest.raises(ValueError, match="not a retrain job kind"):
        submit_retrain_job(ws, "evaluate", {})
    job = ws.get_job(t1)
    assert same_job("train", {**train_cfg, "name": "zzz"})(job) and not same_job("refit", train_cfg)(job)


def test_clicking_the_labels_refit_button_twice_makes_one_job(ws, monkeypatch):  # noqa: F811
    monkeypatch.setattr(ui.common, "canvas", fake_canvas_factory([]))
    monkeypatch.setattr(runner, "start_worker", lambda w, job_id: None)  # no worker process
    at = app("pages/3_Labels.py").run()
    at.button(key="lbl_rt_refit").click().run()
    assert_ok(at)
    (job,) = ws.list_jobs()
    assert job.kind == "refit" and any("Head refit job" in s.value for s in at.success)
    at.button(key="lbl_rt_refit").click().run()
    assert_ok(at)
    assert [j.id for j in ws.list_jobs()] == [job.id]
    assert any(f"already running (job `{job.id}`)" in i.value for i in at.info)


# ------------------------------------------------------------------------------------------------ 3. TTA progress


class Recorder:
    """A stand-in for the job's ProgressReporter: records every progress value and message."""

    def __init__(self):
        self.values: list[tuple[float, str]] = []

    def update(self, fraction: float, message: str = "") -> None:
        self.values.append((float(fraction), message))

    def check_cancel(self, force: bool = False) -> None:
        pass

    def log(self, line: str) -> None:
        pass


def _fake_scoring(monkeypatch, calls: list[str]):
    """No model, no scoring: each row reports half-way and done through its progress callback."""
    from seghz.infer.engine import Predictor

    def fake_evaluate_split(ws, cid, split, spec, predictor=None, progress=None, **kw):  # noqa: F811
        calls.append(spec)
        progress(0.5, "half")
        progress(1.0, "done")
        return {}

    monkeypatch.setattr("seghz.evaluate.evaluate_split", fake_evaluate_split)
    monkeypatch.setattr(Predictor, "from_checkpoint", lambda *a, **k: (None, None))


def _at(values, message: str) -> float:
    return next(v for v, m in values if m == message)


def test_tta_report_progress_is_proportional_to_view_passes(ws, monkeypatch):  # noqa: F811
    calls: list[str] = []
    _fake_scoring(monkeypatch, calls)
    rec = Recorder()
    tta_report_job(ws, "job", {"checkpoint_id": "tiny-test", "split": "val"}, rec)  # full D4, nothing cached
    assert len(calls) == 8
    v = [f for f, _ in rec.values]
    assert v == sorted(v), v  # monotone
    assert _at(rec.values, "baseline (identity): scoring") == 0
    assert _at(rec.values, "+lr: scoring") == pytest.approx(0.99 * 1 / 36)  # the baseline row: 1 of 36 view passes
    assert _at(rec.values, "+tb: scoring") == pytest.approx(0.99 * 3 / 36)
    assert _at(rec.values, "+rot270: half") == pytest.approx(0.99 * (28 + 4) / 36)  # within a row: its own progress
    assert _at(rec.values, "+rot270: done") == pytest.approx(0.99)


def test_tta_report_progress_skips_cached_rows(ws, monkeypatch):  # noqa: F811
    calls: list[str] = []
    _fake_scoring(monkeypatch, calls)
    real = compare.tta_report

    def baseline_cached(*a, **k):
        t = real(*a, **k)
        t.loc[0, "mIoU"] = 0.5
        return t

    monkeypatch.setattr(compare, "tta_report", baseline_cached)
    rec = Recorder()
    res = tta_report_job(ws, "job", {"checkpoint_id": "tiny-test", "split": "val"}, rec)
    assert (res["reused"], res["computed"]) == (1, 7) and calls[0] == "flip"
    assert _at(rec.values, "+lr: scoring") == 0
    assert _at(rec.values, "+tb: scoring") == pytest.approx(0.99 * 2 / 35)  # 35 views left to compute
    assert _at(rec.values, "+lr: half") == pytest.approx(0.99 * 1 / 35)
    specs = compare.cumulative_tta_specs(None)
    assert tta_progress_weights(specs, [False] * 8) == pytest.approx([k / 36 for k in range(1, 9)])
    assert tta_progress_weights(specs, [True] * 8) == [0.0] * 8
