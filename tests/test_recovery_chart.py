"""bench/recovery_chart.py: runs of both JSON shapes are paired as bench/experiments.py pairs them, and the SVG puts
each recipe's diamond where its recovery is."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import recovery_chart as rc


def _proxy(name, seed, labels, overrides, miou, **kw):
    return {"name": name, "seed": seed, "steps": 800, "init": "imagenet", "labels": labels,
            "recipe_overrides": overrides, "miou_final": miou, **kw}


@pytest.fixture
def sources(tmp_path):
    proxy = {"runs": [
        _proxy("clean_s0", 0, "clean", {}, 0.60), _proxy("clean_s1", 1, "clean", {}, 0.70),
        _proxy("noisy_s0", 0, "noisy", {}, 0.40), _proxy("noisy_s1", 1, "noisy", {}, 0.60),
        _proxy("cot_s0", 0, "noisy", {"coteach": 0.3}, 0.50), _proxy("cot_s1", 1, "noisy", {"coteach": 0.3}, 0.58),
        _proxy("odd_s0", 0, "noisy", {"robust": "gce", "gce_q": 0.5}, 0.45),
        _proxy("scratch_s0", 0, "noisy", {"coteach": 0.3}, 0.99, init="scratch"),  # another protocol: left out
        _proxy("long_s0", 0, "noisy", {"coteach": 0.3}, 0.99, steps=1600),  # another protocol: left out
        _proxy("cw_clean_s0", 0, "clean", {"class_weights": "enet"}, 0.99),  # no clean baseline row: left out
    ]}
    again = {"runs": [_proxy("noisy_s0", 0, "noisy", {}, 0.11)]}  # a re-run: the first source's value stays
    report = {"runs": [
        {"row": "ce", "seed": 0, "miou": 0.80, "miou_gt": 0.82},
        {"row": "noisy_ce", "seed": 0, "miou": 0.60, "miou_gt": 0.62},
        {"row": "noisy_nm_cos", "seed": 0, "miou": 0.62, "miou_gt": 0.66},
        {"row": "noisy_nm_kept", "seed": 0, "miou": 0.75, "miou_gt": 0.80},
        {"row": "noisy_nm_const", "seed": 0, "miou": 0.20, "miou_gt": 0.22},
        {"row": "noisy_ls", "seed": 0, "miou": 0.70},  # no GT-class mIoU: left out of a miou_gt panel
    ]}
    paths = {}
    for name, d in (("proxy", proxy), ("again", again), ("report", report)):
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(json.dumps(d))
    return paths


def test_proxy_runs_map_to_experiment_rows(sources):
    runs = {(r["row"], r["seed"]): r["miou"] for r in rc.load_runs([sources["proxy"], sources["again"]], "miou")}
    assert runs[("ce", 0)] == 0.60 and runs[("noisy_ce", 0)] == 0.40  # the later re-run does not replace it
    assert runs[("noisy_coteach", 1)] == 0.58  # overrides equal to a ROWS recipe take its key
    odd = [k for k in runs if k[0].startswith("noisy_{")]
    assert odd == [('noisy_{"gce_q": 0.5, "robust": "gce"}', 0)]
    assert len(runs) == 7  # scratch, 1600-step and clean-with-a-recipe runs are not paired here


def test_paired_recovery_per_panel_by_hand(sources):
    pts = {p["row"]: p for p in rc.panel_points(rc.load_runs([sources["proxy"]], "miou"), "miou")}
    cot = pts["noisy_coteach"]
    # gains 10 and -2 points over costs 20 and 10: mean 4 / mean 15
    assert cot["recovery"] == pytest.approx(4 / 15) and cot["per_seed"] == pytest.approx([0.5, -0.2])
    assert cot["se"] == pytest.approx((((10 - 4) ** 2 + (-2 - 4) ** 2) / 1) ** 0.5 / 2 ** 0.5 / 15)
    odd = pts['noisy_{"gce_q": 0.5, "robust": "gce"}']
    assert odd["recovery"] == pytest.approx(0.25) and odd["se"] is None and odd["label"] == "gce_q=0.5, robust=gce"
    gt = {p["row"]: p["recovery"] for p in rc.panel_points(rc.load_runs([sources["report"]], "miou_gt"), "miou_gt")}
    assert gt["noisy_nm_kept"] == pytest.approx(18 / 20) and gt["noisy_nm_const"] == pytest.approx(-2.0)
    assert "noisy_ls" not in gt  # its plain mIoU does not stand in for the missing metric


def test_svg_places_each_diamond_at_its_recovery(sources):
    pts = rc.panel_points(rc.load_runs([sources["report"]], "miou"), "miou")
    assert [p["row"] for p in pts] == ["noisy_nm_kept", "noisy_ls", "noisy_nm_cos", "noisy_nm_const"]  # best first
    labels = [p["label"] for p in pts]
    nm = [lb for p, lb in zip(pts, labels) if p["row"].startswith("noisy_nm")]
    assert len(set(nm)) == 3 and all(lb.startswith("noise mask (") for lb in nm)  # one short name: full ones
    svg = rc.render_svg([("panel", pts)], lo=-1.5, hi=1.0, width=980)
    marks = re.findall(r'data-row="([^"]+)" data-recovery="([^"]+)" d="M([\d.]+),', svg)
    assert [m[0] for m in marks] == [p["row"] for p in pts]
    left, plot_w = 440, 980 - 440 - 30
    for (_row, rec, x0), p in zip(marks, pts):
        assert float(rec) == pytest.approx(p["recovery"], abs=1e-4)
        want = left + (min(max(p["recovery"], -1.5), 1.0) + 1.5) / 2.5 * plot_w
        assert float(x0) + 5 == pytest.approx(want, abs=0.11)
    assert "-2.00" in svg  # a mean past the axis is drawn at its edge with its value written beside it
    assert svg.count('stroke="#2a9d3a"') == 1 and 'fill="#2a9d3a"' in svg  # the target line; nm_kept (0.75) meets it


def test_cli_writes_the_chart_and_names_a_missing_source(tmp_path, sources):
    out = tmp_path / "r.svg"
    assert rc.main(["--out", str(out), "--panel", f"P={sources['proxy']}", "--panel", f"Q={sources['report']}@miou_gt"]) == 0
    assert out.read_text().count('class="mean"') == 5  # proxy: coteach, odd; report (GT): nm_kept, nm_cos, nm_const
    with pytest.raises(SystemExit, match="nope.json: run JSON not found"):
        rc.main(["--out", str(out), "--panel", f"P={tmp_path / 'nope.json'}"])


@pytest.mark.skipif(not (REPO / "docs" / "experiments_runs" / "gpu_h200_4000steps.json").is_file(),
                    reason="the shipped run JSONs are absent")
def test_shipped_chart_is_current(tmp_path):
    """docs/recovery.svg is what the script makes of the run JSONs in docs/ (re-run it after adding runs)."""
    out = tmp_path / "r.svg"
    rc.main(["--out", str(out)])
    assert out.read_text() == (REPO / "docs" / "recovery.svg").read_text()
