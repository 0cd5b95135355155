"""The regression gate's text in percentage points (the numbers stay fractions), and the Train page's training
curves with markers (a one-epoch job's curves are single points).

Hand-computed case: the active model's Buildings IoU is 0.800, the candidate's 0.753: a drop of 0.047, shown as
"−4.7 pp" (a typographic minus) against the default margin 0.02, shown as "2.0 pp".
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from seghz import candidate, gate
from seghz.store import Workspace

REPO = Path(__file__).resolve().parents[1]
ACTIVE = {"Buildings": {"iou": 0.800, "support": 100}, "Roads": {"iou": 0.500, "support": 100}}
CAND = {"Buildings": {"iou": 0.753, "support": 100}, "Roads": {"iou": 0.510, "support": 100}}


# ------------------------------------------------------------------------------------------------ gate text


def test_pp_formatters():
    assert gate.fmt_delta_pp(-0.047) == "−4.7 pp"  # U+2212, as the texts print it
    assert gate.fmt_delta_pp(0.012) == "+1.2 pp"
    assert gate.fmt_delta_pp(-0.0004) == gate.fmt_delta_pp(0.0) == "0.0 pp"  # never "−0.0"
    assert gate.fmt_delta_pp(None) == gate.fmt_delta_pp(float("nan")) == "—"
    assert gate.fmt_delta_pp(-0.047, unit=False) == "−4.7"
    assert gate.fmt_margin_pp(0.02) == "2.0 pp" and gate.fmt_margin_pp(0.005) == "0.5 pp"
    assert gate.fmt_margin_pp(0.0025) == "0.25 pp" and gate.fmt_margin_pp(0.0) == "0.0 pp"
    # a drop just beyond the margin is never shown as equal to it
    assert gate.fmt_delta_pp(-0.0204) == "−2.0 pp"
    assert gate.fmt_delta_pp(-0.0204, margin=0.02) == "−2.04 pp"
    assert gate.fmt_delta_pp(-0.047, margin=0.02) == "−4.7 pp" and gate.fmt_delta_pp(-0.02, margin=0.02) == "−2.0 pp"


def test_flagged_verdict_text_in_pp_numbers_in_fractions():
    v = gate.compare(ACTIVE, CAND)
    assert v.status == "flagged" and v.offending_classes == ["Buildings"]
    # the stored numbers are unchanged: fractions
    assert v.margin == 0.02 and v.offending[0]["delta"] == pytest.approx(-0.047)
    assert v.to_dict()["rows"][0]["delta"] == pytest.approx(-0.047)
    assert v.message == ("1 of 2 compared class(es) lost more IoU against the active model than the margin allows: "
                         "Buildings −4.7 pp (margin 2.0 pp).")
    banner = candidate.gate_verdict_text(v, "old model")
    assert banner == f"Gate verdict: **FLAGGED** (active model: old model) — {v.message}"
    assert "Buildings −4.7 pp (margin 2.0 pp)" in banner and "0.047" not in banner and "0.020" not in banner
    # the refused promotion says it the same way
    assert "Buildings −4.7 pp (margin 2.0 pp)" in str(gate.GateRefused(v))


def test_pass_and_interval_texts_in_pp():
    v = gate.compare(ACTIVE, CAND, margin=0.05)
    assert v.passed and v.message == ("no class lost more than 5.0 pp of IoU against the active model "
                                      "(2 class(es) compared).")
    spans = {"level": 0.95, "scenes": 30,
             "per_class": {"Buildings": {"lo": -0.081, "hi": 0.012}, "Roads": {"lo": -0.01, "hi": 0.03}}}
    v = gate.compare(ACTIVE, CAND, intervals=spans)
    assert "Buildings −4.7 [−8.1, +1.2] pp (margin 2.0 pp)." in v.message
    assert "holds 0): Buildings −4.7 [−8.1, +1.2] pp; the 'interval' gate rule" in v.message
    assert list(gate.verdict_table(v)["interval"]) == ["[−8.1, +1.2] pp", "[−1.0, +3.0] pp"]
    v = gate.compare(ACTIVE, CAND, intervals=spans, rule="interval")
    assert v.passed and "no class lost more than 2.0 pp of IoU against the active model beyond the tile noise" in v.message


def test_styled_table_shows_percent_and_pp():
    v = gate.compare(ACTIVE, CAND)
    df = gate.verdict_table(v)
    assert df["Δ IoU"].tolist() == pytest.approx([-0.047, 0.010])  # the frame keeps fractions
    html = gate.styled_verdict_table(v).to_html()
    for text in ("80.0 %", "75.3 %", "−4.7 pp", "+1.0 pp"):
        assert text in html, text
    assert "-0.047" not in html and "0.753" not in html


def test_a_delta_shown_as_zero_gets_no_sign_colour():
    """A drop of 0.04 pp shows as "0.0 pp"; it used to be orange (the colour of a drop), which hinted at a sign
    the text does not show. A real drop keeps its orange, a rise its green."""
    v = gate.compare({"Buildings": 0.8, "Roads": 0.5, "Water": 0.6},
                     {"Buildings": 0.7996, "Roads": 0.49, "Water": 0.61})
    styler = gate.styled_verdict_table(v)
    styler._compute()
    di = list(styler.data.columns).index("Δ IoU")
    css = {styler.data.iloc[r]["class"]: "; ".join(f"{k}: {v}" for k, v in styler.ctx[(r, di)])
           for r in range(len(styler.data))}
    assert "0.0 pp" in styler.to_html()
    assert "color" not in css["Buildings"], css
    assert "#c77700" in css["Roads"] and "#1b7a1b" in css["Water"], css


def test_cli_prints_the_gate_in_pp(capsys):
    from seghz.cli import _print_verdict

    v = gate.compare(ACTIVE, CAND)
    _print_verdict(v)
    out = capsys.readouterr().out
    assert out.startswith("regression gate (margin rule, margin 2.0 pp): FLAGGED — 1 of 2 compared class(es)")
    assert "Buildings −4.7 pp (margin 2.0 pp)." in out
    assert re.search(r"Buildings\s+80\.0 %\s+75\.3 %\s+−4\.7 pp\s+—\s+OFFENDING", out), out
    assert re.search(r"Roads\s+50\.0 %\s+51\.0 %\s+\+1\.0 pp\s+—\s+ok", out), out
    assert "0.047" not in out and "0.020" not in out


def _banner_script():
    from types import SimpleNamespace

    from seghz import gate
    from ui.candidates import show_gate_verdict

    active = {"Buildings": {"iou": 0.800, "support": 100}, "Roads": {"iou": 0.500, "support": 100}}
    cand = {"Buildings": {"iou": 0.753, "support": 100}, "Roads": {"iou": 0.510, "support": 100}}
    show_gate_verdict(gate.compare(active, cand), SimpleNamespace(name="old model"), key="tbl")


def test_show_gate_verdict_banner_and_caption_in_pp():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_function(_banner_script, default_timeout=30).run()
    assert not at.exception, [e.value for e in at.exception]
    (banner,) = [e.value for e in at.error]
    assert banner.startswith("Gate verdict: **FLAGGED** (active model: old model) — ")
    assert banner.endswith("Buildings −4.7 pp (margin 2.0 pp).")
    assert [c.value for c in at.caption] == ["Offending classes: **Buildings** (−4.7 pp) — margin 2.0 pp of IoU."]


# ------------------------------------------------------------------------------------------------ training curves


def _values(v) -> list:
    """A trace's x or y from a figure's JSON: a list, or plotly's typed array ``{"dtype", "bdata"}`` (base64)."""
    if isinstance(v, dict) and "bdata" in v:
        import base64

        import numpy as np

        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"])).tolist()
    return list(v)


@pytest.fixture
def one_epoch_job(tmp_path, monkeypatch):
    """A workspace with a finished training job (no checkpoint) that logged one epoch: one point per curve."""
    ws = Workspace(tmp_path / "ws")
    jid = ws.create_job("train", {"epochs": 1, "scheme": "hz7", "name": "one epoch"})
    ws.add_job_metrics(jid, 4, 1, {"loss": 0.9, "lr": 1e-3, "val_miou": 0.41, "val_fwiou": 0.52,
                                   "val_iou/Buildings": 0.3, "val_iou/Water": 0.6})
    ws.update_job(jid, status="done", progress=1.0, result={})
    monkeypatch.syspath_prepend(str(REPO))
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("SEGHZ_WORKSPACE", str(ws.root))
    monkeypatch.setenv("SEGHZ_NO_DEMO", "1")
    return ws, jid


def test_train_page_one_epoch_curves_have_visible_markers(one_epoch_job):
    _, jid = one_epoch_job
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "pages/4_Train.py"), default_timeout=30).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="train_job_sel").value == jid
    (chart,) = [c for c in at.get("plotly_chart") if c.key == f"train_curves_{jid}"]
    spec = json.loads(chart.proto.spec)
    traces = spec["data"]
    names = [t["name"] for t in traces]
    assert names == ["loss", "learning rate", "IoU Buildings", "IoU Water", "val mIoU", "val fwIoU"]
    for t in traces:
        assert len(_values(t["x"])) == len(_values(t["y"])) == 1, t["name"]  # one epoch: one point
        assert "markers" in t["mode"] and "lines" in t["mode"], (t["name"], t["mode"])
        assert t.get("marker", {}).get("size", 6) >= 4, t["name"]  # a point big enough to see
    layout = spec["layout"]
    axes = [k for k in layout if re.fullmatch(r"xaxis\d*", k)]
    assert len(axes) == 3 and all(layout[k]["title"]["text"] == "epoch" for k in axes), axes
