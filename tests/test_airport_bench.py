"""Smoke test of bench/airport_bench.py on the real airport sample: align, split west/east, evaluate the shipped
model, refit its head and train a tiny hz11 model on the west half; the east half stays held out."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "hangzhou_airport"
pytestmark = pytest.mark.skipif(not (DATA / "A_label.png").is_file(),
                                reason=f"real airport sample not found at {DATA} (../shared/data is not in the repo)")


def test_airport_bench_trains_on_the_west_and_scores_the_east(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    sys.modules.pop("bench.airport_bench", None)
    from bench import airport_bench
    from seghz.classes import get_scheme

    out = tmp_path / "airport.json"
    rc = airport_bench.main(["--tta", "none", "--train-steps", "6", "--schemes", "hz11", "--batch-size", "2",
                             "--crop", "128", "--val-rows", "128", "--json", str(out)])
    assert rc == 0
    rep = json.loads(out.read_text())
    fit, test = rep["fit_columns"], rep["test_columns"]
    assert fit[1] < test[0]  # a gap between the fitting and the held-out columns
    r = rep["trained_west"]["hz11"]
    assert r["steps"] == 6 and 0.0 <= r["miou"] <= 1.0 and 0.0 <= r["oa"] <= 1.0
    assert set(r["iou"]) <= set(get_scheme("hz11").names)
    assert "OpenArea" in r["iou"]  # hz11 merges the two OpenArea classes of hz20; the airport has them
    assert r["val_rows"][0] > r["train_rows"][1]  # validation rows are below the training rows, after a gap
    for k in ("zero_shot", "head_refit"):
        assert 0.0 <= rep[k]["miou"] <= 1.0
