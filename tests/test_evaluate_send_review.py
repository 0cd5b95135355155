"""The Evaluate drill-down's "Send to label review" and the time left of a background evaluation (same prepared
workspace as tests/test_pages.py: a 128 px labelled val scene, a train scene, the tiny active hz7 checkpoint
``tiny-test``; a 512 px val scene is added where several windows are needed; no worker process is started).

1. After a run that did not draw the drill-down (TTA d4 without a cached result: the page stops early), the browser
   had dropped the drill-down widgets' values while the server kept them. Drawn again, the pickers showed their
   defaults (Water, Water) and the window selection none, while the page showed the server's cell and windows; the
   click on Send then carried the browser's Water → Water, the selection restarted at that cell's top windows, and
   six correct (diagonal) windows were sent. The widgets now keep their values across such runs in the browser too
   (``persist_state``), Send acts on the cell and windows drawn when it was clicked (or refuses, saying why), and a
   diagonal cell offers no send at all.
2. Only the windows holding a meaningful share of the cell's pixels are pre-selected.
3. The time left of an evaluation grew as it ran: its progress counted scenes, so a small scene before a large one
   filled the bar far faster than the rest did.
"""
from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import numpy as np
import pytest
from streamlit.testing.v1.element_tree import _format_value_for_widget
from test_evaluate_review_fixes import _add_val_scene, _window_keys
from test_pages import HZ7, assert_ok, texts, tiny_checkpoint, ws  # noqa: F401  (fixtures)
from test_pages_compare import app

from seghz import drilldown, report
from seghz.drilldown import Window

PAGE = "pages/2_Evaluate.py"
DD_WIDGETS = ("eval_dd_true", "eval_dd_pred", "eval_dd_window", "eval_dd_scenes", "eval_dd_send_sel")


# ------------------------------------------------------------------------------------------------ the browser


def _widget_keys(at) -> set[str]:
    return {w.key for kind in ("selectbox", "radio", "multiselect", "number_input", "slider") for w in getattr(at, kind)
            if w.key}


def _as_the_browser_remounts(at, drawn_before: set[str]) -> None:
    """What the browser does with a widget a run did not draw: it drops the widget's state when that run ends
    (``WidgetStateManager.removeInactive``), and when a later run draws the widget again it shows, and sends back
    with the next interaction, the element's default (``options[default]``) unless that run sent the value itself
    (``set_value``). AppTest keeps the server's value instead: this puts the browser's value in its place."""
    for w in [*at.selectbox, *at.radio, *at.multiselect, *at.number_input, *at.slider]:
        if not w.key or w.key in drawn_before or w.proto.set_value or w.proto.disabled:
            continue
        if w.type in ("selectbox", "radio"):
            shown = w.options[w.proto.default]
            if w.index is not None and w.options[w.index] == shown:
                continue  # the browser's default is the server's value
            raw = type(w.value)(shown)  # the option's value, from its label (str, int: what the page's options are)
            assert _format_value_for_widget(w.format_func, raw) == shown, f"{w.key}: no value for the label {shown!r}"
            w.set_value(raw)
        elif w.type == "multiselect":
            assert not list(w.proto.default), "only a multiselect without a default is handled here"
            w.set_value([])
        elif w.type == "slider":
            w.set_value(w.proto.default[0])
        else:
            w.set_value(w.proto.default)


def _cell(at) -> tuple[str, str]:
    return at.selectbox(key="eval_dd_true").value, at.selectbox(key="eval_dd_pred").value


def _shown_cell(at) -> tuple[str, str] | None:
    """The cell the drill-down's caption names (what its table and thumbnails show)."""
    for c in at.caption:
        if " px labelled **" in c.value:
            a = c.value.split(" px labelled **")[1].split("**")[0]
            b = c.value.split(" are predicted **")[1].split("**")[0]
            return a, b
    return None


def _evaluated(ws, tmp_path):  # noqa: F811
    """The page after an inline evaluation of val (two scenes) with 128 px windows and an analyst name."""
    _add_val_scene(ws, tmp_path)
    at = app(PAGE).run()
    at.sidebar.text_input(key="seghz_analyst").input("Eve").run()
    at.button(key="eval_run").click().run()
    assert_ok(at)
    at.selectbox(key="eval_dd_window").set_value(128).run()
    assert_ok(at)
    return at


def _sent(ws) -> list[tuple[str, str, str]]:  # noqa: F811
    return [(e["true"], e["predicted"], f"{e['scene_id']}:{','.join(str(v) for v in e['bbox'])}")
            for e in drilldown.load_review_list(ws)]


# ------------------------------------------------------------------------------------------------ 1. send


def test_send_after_a_run_without_the_drilldown_acts_on_the_cell_shown(ws, tmp_path):  # noqa: F811
    """TTA none → d4 (no cached result: the drill-down is not drawn) → none, then Send: the windows of the cell shown
    are sent, not those of the pickers' defaults (Water → Water)."""
    at = _evaluated(ws, tmp_path)
    at.number_input(key="eval_dd_scenes").set_value(3).run()  # a value other than the defaults, kept too
    cell, chosen = _cell(at), at.multiselect(key="eval_dd_send_sel").value
    assert cell[0] != cell[1] and _shown_cell(at) == cell and chosen
    at.radio(key="eval_tta").set_value("d4").run()
    assert_ok(at)
    drawn = _widget_keys(at)
    assert not drawn & set(DD_WIDGETS)  # the page stopped before the drill-down
    at.radio(key="eval_tta").set_value("none").run()
    assert_ok(at)
    _as_the_browser_remounts(at, drawn)
    # what the browser shows is what the page computed
    assert _cell(at) == cell == _shown_cell(at)
    assert at.multiselect(key="eval_dd_send_sel").value == chosen
    assert at.selectbox(key="eval_dd_window").value == 128 and at.number_input(key="eval_dd_scenes").value == 3
    at.button(key="eval_dd_send").click().run()
    assert_ok(at)
    assert _shown_cell(at) == cell  # the drill-down did not jump to another cell
    assert _sent(ws) == [(*cell, k) for k in chosen]
    assert any(f"Sent {len(chosen)} window(s) of {cell[0]} → {cell[1]} to the label review: {len(chosen)} added."
               in s.value for s in at.success)


def test_send_refuses_when_the_cell_changed_with_the_click(ws, tmp_path):  # noqa: F811
    """A click that arrives with other picker values than the cell drawn (the browser showing another cell than the
    page, or a pick and a click in one rerun) sends nothing and says why."""
    at = _evaluated(ws, tmp_path)
    cell = _cell(at)
    other = next(n for n in HZ7.names if n not in cell)
    at.selectbox(key="eval_dd_pred").set_value(other)
    at.button(key="eval_dd_send").click().run()
    assert_ok(at)
    assert drilldown.load_review_list(ws) == []
    assert any("Nothing was sent" in w.value and f"{cell[0]} → {cell[1]}" in w.value for w in at.warning)


def test_send_refuses_without_windows_chosen(ws, tmp_path):  # noqa: F811
    at = _evaluated(ws, tmp_path)
    at.multiselect(key="eval_dd_send_sel").set_value([]).run()
    assert_ok(at)
    assert at.button(key="eval_dd_send").disabled
    # a click that arrives with an empty selection (the page drew one, the browser showed none) sends nothing
    at.multiselect(key="eval_dd_send_sel").set_value(_window_keys(at)[:1]).run()
    assert not at.button(key="eval_dd_send").disabled
    at.multiselect(key="eval_dd_send_sel").set_value([])
    at.button(key="eval_dd_send").click().run()
    assert_ok(at)
    assert drilldown.load_review_list(ws) == []
    assert any("Nothing was sent" in w.value and "no window is chosen" in w.value for w in at.warning)


def test_a_diagonal_cell_is_not_offered_for_review(ws):  # noqa: F811
    at = app(PAGE).run()
    at.sidebar.text_input(key="seghz_analyst").input("Eve").run()
    at.button(key="eval_run").click().run()
    ev = ws.list_evaluations("tiny-test")[0].result
    cm = np.asarray(ev["confusion"])
    a = int(np.argmax(np.diag(cm)))
    name = ev["classes"][a]
    at.selectbox(key="eval_dd_true").set_value(name)
    at.selectbox(key="eval_dd_pred").set_value(name).run()
    assert_ok(at)
    assert _shown_cell(at) == (name, name)
    keys = {b.key for b in at.button}
    assert "eval_dd_send" not in keys and "eval_dd_send_sel" not in _widget_keys(at)
    assert "correct" in texts(at) and "nothing to send for label review" in texts(at)
    with pytest.raises(ValueError, match="correct prediction"):
        drilldown.add_to_review_list(ws, [Window("s", (0, 0, 8, 8), 64)], true_class=name, pred_class=name,
                                     scheme="hz7", checkpoint_id="tiny-test")
    assert drilldown.load_review_list(ws) == []


def test_windows_to_send_keeps_only_the_windows_shown():
    shown = [Window("s", (0, 0, 128, 128), 90), Window("s", (0, 128, 128, 256), 40), Window("t", (0, 0, 64, 64), 5)]
    assert drilldown.windows_to_send(shown, ["t:0,0,64,64", "s:0,0,128,128", "u:0,0,1,1"]) == [shown[0], shown[2]]
    assert drilldown.windows_to_send(shown, []) == [] and drilldown.windows_to_send(shown, None) == []


# ------------------------------------------------------------------------------------------------ 2. pre-selection


def test_preselect_the_windows_holding_a_meaningful_share_of_the_cell():
    counts = [5000, 3000, 900, 85, 60, 22, 22]  # 9,089 px in all: 5 % is 454 px
    ws_ = [Window("s", (0, 128 * i, 128, 128 * (i + 1)), c) for i, c in enumerate(counts)]
    keys = [w.key() for w in ws_]
    assert drilldown.preselect_windows(ws_, sum(counts)) == keys[:3]  # not the ones with 22–85 px
    assert drilldown.preselect_windows(list(reversed(ws_)), sum(counts)) == keys[:3]  # ranked, whatever the order
    # at most six, even where more hold 5 % each
    even = [Window("s", (0, 128 * i, 128, 128 * (i + 1)), 100) for i in range(10)]
    assert drilldown.preselect_windows(even, 1000) == [w.key() for w in even[:6]]
    # spread thin (no window holds 5 %): the top one, so there is something to send
    thin = [Window("s", (0, 128 * i, 128, 128 * (i + 1)), 10 - i % 3) for i in range(40)]
    assert drilldown.preselect_windows(thin, sum(w.count for w in thin)) == [thin[0].key()]
    assert drilldown.preselect_windows([], 0) == []


def test_the_page_preselects_by_that_rule_and_says_so(ws, tmp_path):  # noqa: F811
    at = _evaluated(ws, tmp_path)
    ev = ws.list_evaluations("tiny-test")[0].result
    cm, names = np.asarray(ev["confusion"]), ev["classes"]
    cells = sorted(((i, j) for i, j in zip(*np.nonzero(cm)) if i != j), key=lambda c: -cm[c])
    seen_small = False
    for i, j in cells[:8]:
        at.selectbox(key="eval_dd_true").set_value(names[i])
        at.selectbox(key="eval_dd_pred").set_value(names[j]).run()
        assert_ok(at)
        (table,) = [d.value for d in at.dataframe if "rank" in d.value.columns]
        counts = [int(v) for v in table.iloc[:, -1]]
        keys = _window_keys(at)
        total = int(cm[i, j])  # both val scenes are searched: the windows hold all the cell's pixels
        assert sum(counts) == total
        want = [k for k, c in zip(keys[:6], counts[:6]) if c >= 0.05 * total] or keys[:1]
        sel = at.multiselect(key="eval_dd_send_sel")
        assert sel.value == want, (names[i], names[j], counts)
        seen_small |= len(keys) > len(want)
        assert "5 %" in sel.help and "at most 6" in sel.help
    assert seen_small, "some cell should have windows left out of the pre-selection"


# ------------------------------------------------------------------------------------------------ 3. time left


class _Clock:
    """A predictor stand-in that scores a scene in 20 steps, its clock advancing with the windows' pixels at a
    constant pace, and records (time, progress) of the evaluation at each step."""

    def __init__(self, pace_px_s: float, tile: int = 256, overlap: float = 0.25):
        self.tile, self.overlap, self.pace, self.t, self.seen = tile, overlap, pace_px_s, 0.0, []

    def predict(self, image, tta="none", progress=None):
        from seghz.infer.engine import sliding_windows

        h, w = image.shape[:2]
        work = sum(th * tw for _r, _c, th, tw in sliding_windows(h, w, self.tile, self.overlap))
        for k in range(20):
            self.t += work / 20 / self.pace
            if progress:
                progress((k + 1) / 20, f"window {k + 1}/20")
        return np.zeros((h, w), np.uint8), np.ones((h, w), np.float32)


@pytest.mark.parametrize("name,order", [("zz big town", [128, 512]), ("aa big town", [512, 128])])
def test_the_time_left_of_an_evaluation_does_not_grow_as_it_runs(ws, tmp_path, name, order):  # noqa: F811
    """Scenes of 128 and 512 px scored at a constant pace, in either order: the time left at each step (as the job
    panel computes it from the job's progress) is the true time left and never grows. Counted in scenes, with the
    small scene first it grew from 8 s to 22 s while the true time left fell from 112 s to 77 s."""
    from seghz.data.io import write_index_mask, write_rgb
    from seghz.data.scenes import import_scene
    from seghz.demo import generate_scene
    from seghz.evaluate import evaluate_split

    rgb, lbl = generate_scene(512, 5)
    write_rgb(tmp_path / "big.png", rgb)
    write_index_mask(tmp_path / "big_label.png", lbl, HZ7)
    import_scene(ws, tmp_path / "big.png", tmp_path / "big_label.png", scheme="hz7", name=name, split="val",
                 synthetic=True)
    scenes = [s for s in ws.list_scenes("val") if s.label_path]
    assert [s.height for s in scenes] == order  # the order evaluate_split scores them in
    start = datetime(2026, 1, 1, tzinfo=UTC)
    pred = _Clock(pace_px_s=5_000.0)
    evaluate_split(ws, "tiny-test", "val", "none", predictor=pred, use_cache=False,
                   progress=lambda f, m="": pred.seen.append((pred.t, 0.99 * f)))  # as the evaluate job reports it
    total = pred.t
    assert total > 100
    lefts = []
    for t, p in pred.seen:
        job = SimpleNamespace(status="running", cancel_requested=False, progress=p, started_at=start.isoformat(),
                              finished_at=None)
        left = report.job_time_left_s(job, start + timedelta(seconds=t))
        if left is not None:
            lefts.append(left)
            # within the 1 % of the bar the job keeps for its closing steps (it reports 0.99 × the fraction)
            assert left == pytest.approx(total - t, abs=0.011 * total), (t, p, left, total)
    assert len(lefts) >= 15
    assert all(b <= a + 1e-6 for a, b in itertools.pairwise(lefts)), lefts  # never grows at a constant pace


def test_scene_work_counts_the_windows_pixels():
    from seghz.evaluate import scene_work

    p = SimpleNamespace(tile=256, overlap=0.25)  # stride 192
    assert scene_work(128, 128, p) == 128 * 128  # one window, the scene's size
    assert scene_work(512, 512, p) == 9 * 256 * 256  # 3 × 3 overlapping windows
    assert scene_work(1024, 1024, p) == 25 * 256 * 256
    assert scene_work(300, 200, None) == 300 * 200  # a predictor that does not say how it tiles: the pixels
    assert scene_work(0, 0, p) == 1
