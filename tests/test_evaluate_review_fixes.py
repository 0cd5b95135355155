"""Fixes from a browser review of the Evaluate page (same prepared workspace as tests/test_pages.py: one 128 px
labelled val scene and one train scene, a tiny active hz7 checkpoint ``tiny-test``; no worker process is started).

1. The drill-down's "Windows to send to label review" showed the previous cell's windows (or none after another
   split): the selection now starts at the current cell's pre-selected windows whenever the cell or its windows
   change.
2. Tables showed a score truncated ("96.1%") where the metric tiles round it ("96.2 %"): both go through
   :func:`seghz.report.fmt_pct`.
3. A line pointing at a job shown under Compare checkpoints stayed (greyed) after the job ended while another job
   ran: every panel now redraws itself while any evaluation job is queued or running.
4. The TTA report expander closed itself on every rerun: it keeps its state, and opens for its job.
5. After Cancel, an old progress bar and a new one showed together: a submit message no longer moves the panel.
6. A hard-coded "about 3.5 min on a CPU": the estimate comes from this workspace's last background evaluation.
"""
from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import streamlit as st
from test_eval_bg_jobs import _no_worker, _shown_strings
from test_evaluate_job import job_running_in_a_stand_in
from test_pages import HZ7, assert_ok, texts, tiny_checkpoint, ws  # noqa: F401  (fixtures)
from test_pages_compare import _element, _register, app

from seghz import drilldown, report
from seghz.jobs import cancel_job
from seghz.jobs.worker import run_job

PAGE = "pages/2_Evaluate.py"


# ------------------------------------------------------------------------------------------------ 1. send selection


def _window_keys(at) -> list[str]:
    """The drill-down's windows in rank order, as the send multiselect's option keys (``scene:r0,c0,r1,c1``)."""
    (table,) = [d.value for d in at.dataframe if "rank" in d.value.columns]
    out = []
    for _, r in table.iterrows():
        r0, r1 = (int(v) for v in r["rows"].split("–"))
        c0, c1 = (int(v) for v in r["cols"].split("–"))
        out.append(f"{r['scene']}:{r0},{c0},{r1 + 1},{c1 + 1}")
    return out


def _preselected(at) -> list[str]:
    """The windows the send selection starts at (``seghz.drilldown.preselect_windows``): the top ones, at most 6, that
    each hold 5 % of the cell's pixels in the scenes searched (all the windows listed here), else the top one."""
    (table,) = [d.value for d in at.dataframe if "rank" in d.value.columns]
    keys, counts = _window_keys(at), [int(v) for v in table.iloc[:, -1]]
    return [k for k, c in zip(keys[:6], counts[:6]) if c >= 0.05 * sum(counts)] or keys[:1]


def _pick_cell(at, a: str, b: str) -> None:
    at.selectbox(key="eval_dd_true").set_value(a)
    at.selectbox(key="eval_dd_pred").set_value(b).run()
    assert_ok(at)


def _add_val_scene(ws, tmp_path, size: int = 512) -> None:  # noqa: F811
    from seghz.data.io import write_index_mask, write_rgb
    from seghz.data.scenes import import_scene
    from seghz.demo import generate_scene

    rgb, lbl = generate_scene(size, 5)
    write_rgb(tmp_path / "big.png", rgb)
    write_index_mask(tmp_path / "big_label.png", lbl, HZ7)
    import_scene(ws, tmp_path / "big.png", tmp_path / "big_label.png", scheme="hz7", name="big town", split="val",
                 synthetic=True)


def test_send_selection_follows_the_drilldown_cell(ws, tmp_path):  # noqa: F811
    """Cell A, then cell B: the selection is B's pre-selected windows (it stayed A's); the analyst's own pick stays
    across unrelated reruns; Send sends the windows of the cell shown."""
    _add_val_scene(ws, tmp_path)
    at = app(PAGE).run()
    at.button(key="eval_run").click().run()
    assert_ok(at)
    at.selectbox(key="eval_dd_window").set_value(128).run()
    assert_ok(at)
    ev = ws.list_evaluations("tiny-test")[0].result
    cm, names = np.asarray(ev["confusion"]), ev["classes"]
    cells = sorted(((i, j) for i, j in zip(*np.nonzero(cm)) if i != j), key=lambda c: -cm[c])
    tops = {}
    for i, j in cells[:10]:  # the top windows of the largest confusions, to find two cells that differ
        _pick_cell(at, names[i], names[j])
        tops[(names[i], names[j])] = _preselected(at)
    multi = [c for c, k in tops.items() if len(k) >= 2]
    assert multi, tops
    first = multi[0]
    second = next((c for c in tops if c != first and tops[c] != tops[first]), None)
    assert second is not None, tops

    _pick_cell(at, *first)
    assert at.multiselect(key="eval_dd_send_sel").value == tops[first]
    _pick_cell(at, *second)
    assert at.multiselect(key="eval_dd_send_sel").value == tops[second]  # not the first cell's windows

    # the analyst's own pick stays while the cell does not change
    mine = tops[second][:1]
    at.multiselect(key="eval_dd_send_sel").set_value(mine).run()
    at.slider(key="eval_bias_thr").set_value(7.5).run()
    assert_ok(at)
    assert at.multiselect(key="eval_dd_send_sel").value == mine
    # ... and Send sends that window of the cell shown
    at.sidebar.text_input(key="seghz_analyst").input("Eve").run()
    at.button(key="eval_dd_send").click().run()
    assert_ok(at)
    (item,) = drilldown.load_review_list(ws)
    assert (item["true"], item["predicted"]) == second
    assert f"{item['scene_id']}:{','.join(str(v) for v in item['bbox'])}" == mine[0]
    # back to the first cell: its top windows again
    _pick_cell(at, *first)
    assert at.multiselect(key="eval_dd_send_sel").value == tops[first]


def test_send_selection_after_another_split_is_that_splits_windows(ws):  # noqa: F811
    at = app(PAGE).run()
    at.sidebar.text_input(key="seghz_analyst").input("Eve").run()
    at.button(key="eval_run").click().run()
    assert_ok(at)
    val_keys = _window_keys(at)
    assert at.multiselect(key="eval_dd_send_sel").value == _preselected(at) == val_keys[:1]
    at.radio(key="eval_split").set_value("train").run()
    at.button(key="eval_run").click().run()
    assert_ok(at)
    train_keys = _window_keys(at)
    assert train_keys and train_keys != val_keys
    assert at.multiselect(key="eval_dd_send_sel").value == _preselected(at) == train_keys[:1]  # it was empty
    assert not at.button(key="eval_dd_send").disabled


# ------------------------------------------------------------------------------------------------ 2. percent rounding


def _inject_val_evaluation(ws, cid: str, miou: float) -> dict:  # noqa: F811
    """A cached no-TTA val evaluation of ``cid`` whose mIoU is ``miou`` (its other scores as computed)."""
    from seghz.metrics import scores

    cm = np.diag([100_000] * HZ7.num_classes)
    cm[1, 2], cm[3, 4] = 900, 300
    res = scores(cm, HZ7.names)
    dv = ws.data_version("val")
    (scene,) = [s for s in ws.list_scenes("val") if s.label_path]
    res.update(miou=miou, checkpoint_id=cid, split="val", tta="none", data_version=dv, scenes=1,
               per_scene={scene.id: cm.tolist()})
    ws.add_evaluation(cid, "val", False, dv, res)
    return res


def test_tables_round_scores_as_the_metric_tiles_do(ws, tiny_checkpoint):  # noqa: F811
    _path, meta = tiny_checkpoint
    ws.register_checkpoint(ws.root / "checkpoints" / "tiny.safetensors", {**meta, "scheme": "hz7"},
                           checkpoint_id="other-ck", name="other model")
    _inject_val_evaluation(ws, "tiny-test", 0.96186)
    _inject_val_evaluation(ws, "other-ck", 0.93)
    at = app(PAGE).run()
    assert_ok(at)
    assert {m.label: m.value for m in at.metric}["mIoU"] == "96.2 %"
    for key in ("eval_cmp_table", "eval_tta_table"):
        el = _element(at, key)
        shown = _shown_strings(el)
        assert "96.2 %" in shown and not [s for s in shown if s.startswith("96.1")], (key, shown)
    (summary,) = [d for d in at.dataframe if list(d.value.columns) == ["mIoU", "fwIoU", "OA", "mAcc"]]
    assert _shown_strings(summary)[0] == "96.2 %"
    # every score column of the page's tables: the tiles' text, never the "percent" column format (a column format
    # would override the text)
    for d in at.dataframe:
        cfg = json.loads(d.proto.columns or "{}")
        assert not [c for c, v in cfg.items() if (v.get("type_config") or {}).get("format") == "percent"], cfg
    (per_class,) = [d for d in at.dataframe if "Acc (recall)" in d.value.columns]
    frame = per_class.value
    shown = _shown_strings(per_class)
    ncol = len(frame.columns)
    iou_col = list(frame.columns).index("IoU")
    assert [shown[r * ncol + iou_col] for r in range(len(frame))] == [report.fmt_pct(v) for v in frame["IoU"]]


# ------------------------------------------------------------------------------------------------ 3. panels poll


def _spy_fragments(monkeypatch) -> list[tuple[str, object]]:
    """Record (function name, run_every) of each st.fragment the page declares."""
    real = st.fragment
    calls: list[tuple[str, object]] = []

    def spy(func=None, *, run_every=None, **kw):
        if func is None:
            def deco(f):
                calls.append((f.__name__, run_every))
                return real(f, run_every=run_every, **kw)
            return deco
        calls.append((func.__name__, run_every))
        return real(func, run_every=run_every, **kw)

    monkeypatch.setattr(st, "fragment", spy)
    return calls


def _top_panel(at):
    """The panel under the evaluation buttons: its fragment's block, after the caption on the pixels to score and
    the slot of the submit message."""
    items = [c for _i, c in sorted(at._tree.children[0].children.items())]
    i = next(k for k, c in enumerate(items) if getattr(c, "type", None) == "caption" and "Mpx" in c.value)
    assert getattr(items[i + 1], "type", None) == "empty"  # the message slot, there in every run
    return items[i + 2]


def _kinds(node) -> list[str]:
    return [getattr(c, "type", None) for _i, c in sorted(node.children.items())]


def test_the_top_panel_keeps_redrawing_while_a_comparison_job_runs(ws, tiny_checkpoint, monkeypatch):  # noqa: F811
    """Train on top and in the comparison, "Evaluate 2 missing on train": the top points at its job under Compare
    checkpoints. Once that job is done the line goes and the result shows; while the other job runs the top panel
    still redraws itself (it did not: a line it had drawn could stay, greyed, until the next job ended)."""
    _no_worker(monkeypatch)
    _path, meta = tiny_checkpoint
    _register(ws, "cmp-b", 2, {"epochs": 20}, meta)
    calls = _spy_fragments(monkeypatch)
    at = app(PAGE).run()
    at.radio(key="eval_split").set_value("train").run()
    at.radio(key="eval_cmp_split").set_value("train").run()
    assert_ok(at)
    at.button(key="eval_cmp_run").click().run()
    assert_ok(at)
    jobs = {j.config["checkpoint_id"]: j.id for j in ws.list_jobs()}
    assert set(jobs) == {"tiny-test", "cmp-b"}
    line = f"(job `{jobs['tiny-test']}`, queued) is shown with its progress and Cancel under **Compare checkpoints**"
    assert line in texts(at)
    (box,) = _top_panel(at).children.values()
    assert any(line in str(getattr(c, "value", "")) for c in box.children.values())
    assert run_job(ws, jobs["tiny-test"]) == 0  # the page's own evaluation is done; cmp-b's is still queued
    calls.clear()
    at.run()
    assert_ok(at)
    assert "is shown with its progress and Cancel under" not in texts(at)
    assert {m.label for m in at.metric} >= {"mIoU", "OA"}
    # nothing to show: an empty slot where the line was, not a container (the browser keeps a container's previous
    # elements, greyed, until the page's run ends, and the drill-down below can take a while)
    assert _kinds(_top_panel(at)) == ["empty"]
    polls = dict(calls)
    assert polls["background_panel"] == 2 and polls["compare_jobs_panel"] == 2, calls
    # nothing queued or running: no panel polls
    cancel_job(ws, jobs["cmp-b"])
    calls.clear()
    at.run()
    assert_ok(at)
    assert all(every is None for _name, every in calls), calls


# ------------------------------------------------------------------------------------------------ 4. TTA expander


def _tta_expander(at):
    (exp,) = [e for e in at.expander if e.label.startswith("TTA report")]
    return exp


def test_the_tta_report_stays_open_for_its_job(ws, monkeypatch):  # noqa: F811
    _no_worker(monkeypatch)
    at = app(PAGE).run()
    assert_ok(at)
    assert not _tta_expander(at).proto.expanded  # closed until the analyst opens it
    at.button(key="eval_tta_run").click().run()
    assert_ok(at)
    (job,) = ws.list_jobs()
    assert _tta_expander(at).proto.expanded  # it was closed: its progress and Cancel were hidden
    assert "open **TTA report** below" not in texts(at)  # it is open: no line pointing at it
    at.run()  # reruns (a poll that ends in a page rerun, another widget) keep it open
    assert_ok(at)
    assert _tta_expander(at).proto.expanded
    at.radio(key="eval_tta").set_value("d4").run()
    assert_ok(at)
    assert _tta_expander(at).proto.expanded
    at.radio(key="eval_tta").set_value("none").run()
    at.radio(key="eval_split").set_value("train").run()  # another split: the analyst's state is kept
    assert_ok(at)
    assert _tta_expander(at).proto.expanded
    at.radio(key="eval_split").set_value("val").run()
    at.button(key=f"eval_tta_cancel_{job.id}").click().run()
    assert_ok(at)
    assert ws.get_job(job.id).status == "cancelled" and _tta_expander(at).proto.expanded

    # coming back to the page while a report runs: open, with its progress
    again = ws.create_job("tta_report", {"checkpoint_id": "tiny-test", "split": "val"})
    back = app(PAGE).run()
    assert_ok(back)
    assert _tta_expander(back).proto.expanded and back.button(key=f"eval_tta_cancel_{again}")
    # closed by the analyst during that job (what its on_change records): it stays closed, a line points at it
    back.session_state["eval_tta_open"] = False
    back.session_state["eval_tta_closed_on"] = again
    back.run()
    assert_ok(back)
    assert not _tta_expander(back).proto.expanded
    assert f"(job `{again}`): open **TTA report** below for its progress and Cancel" in texts(back)


# ------------------------------------------------------------------------------------------------ 5. one progress bar


def _path_of(at, want) -> tuple[int, ...]:
    """The place (indices from the page's root) of the one element ``want(node)`` picks."""
    found = []

    def walk(node, path):
        for i, child in sorted(getattr(node, "children", {}).items()):
            if want(child):
                found.append(path + (i,))
            walk(child, path + (i,))

    walk(at._tree, ())
    assert len(found) == 1, found
    return found[0]


def _progress_of(job_id: str):
    return lambda n: getattr(n, "type", None) == "progress" and f"`{job_id}`" in n.proto.text


def test_the_tta_progress_bar_keeps_its_place_after_cancel(ws, monkeypatch):  # noqa: F811
    """Submit (a message above the panel), then Cancel of the running job: the page reran with the bar one element
    higher, and the old one stayed (greyed) below it until the run ended."""
    _no_worker(monkeypatch)
    at = app(PAGE).run()
    at.button(key="eval_tta_run").click().run()
    assert_ok(at)
    (job,) = ws.list_jobs()
    assert any("TTA report job" in s.value for s in at.success)
    before = _path_of(at, _progress_of(job.id))
    with job_running_in_a_stand_in(ws, monkeypatch, job.id, "cancelled"):
        at.button(key=f"eval_tta_cancel_{job.id}").click().run()
        assert_ok(at)
        assert ws.get_job(job.id).cancel_requested and ws.get_job(job.id).status == "running"
        assert not at.success  # the message went
        assert _path_of(at, _progress_of(job.id)) == before


def test_the_background_progress_bar_keeps_its_place_after_submit(ws, monkeypatch):  # noqa: F811
    _no_worker(monkeypatch)
    at = app(PAGE).run()
    at.button(key="eval_bg").click().run()
    assert_ok(at)
    (job,) = ws.list_jobs()
    before = _path_of(at, _progress_of(job.id))
    at.run()
    assert_ok(at)
    assert not at.success and _path_of(at, _progress_of(job.id)) == before


# ------------------------------------------------------------------------------------------------ 6. time estimate


def test_the_time_estimate_comes_from_this_workspaces_last_evaluation(ws):  # noqa: F811
    at = app(PAGE).run()
    at.radio(key="eval_tta").set_value("d4").run()
    assert_ok(at)
    t = texts(at)
    assert "3.5 min" not in t and "at the pace of" not in t  # nothing has run here: no duration is claimed
    assert "**Run in the background** is suggested: TTA d4 runs every window 8× (0.02 Mpx of labelled scenes × 8 " \
           "views), and an inline run is lost" in t
    # a background evaluation of val without TTA (16,384 px × 1 view) took 10 s here: d4 is 8× the work, ~80 s
    jid = ws.create_job("evaluate", {"checkpoint_id": "tiny-test", "split": "val", "tta": "none"})
    start = datetime.now(UTC) - timedelta(minutes=5)
    ws.update_job(jid, status="done", started_at=start.isoformat(), finished_at=(start + timedelta(seconds=10)).isoformat(),
                  result={"checkpoint_id": "tiny-test", "split": "val", "tta": "none", "cached": False})
    at.run()
    assert_ok(at)
    assert "× 8 views; about 1 min 20 s at the pace of the last background evaluation here)" in texts(at)


@pytest.mark.parametrize("status,result", [("failed", None),
                                           ("done", {"split": "val", "tta": "none", "cached": True})])
def test_no_estimate_from_a_job_that_scored_nothing(ws, status, result):  # noqa: F811
    jid = ws.create_job("evaluate", {"checkpoint_id": "tiny-test", "split": "val", "tta": "none"})
    start = datetime.now(UTC) - timedelta(minutes=5)
    ws.update_job(jid, status=status, started_at=start.isoformat(),
                  finished_at=(start + timedelta(seconds=3)).isoformat(), result=result)
    at = app(PAGE).run()
    at.radio(key="eval_tta").set_value("d4").run()
    assert_ok(at)
    assert "at the pace of" not in texts(at)
