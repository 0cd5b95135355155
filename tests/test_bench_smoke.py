"""Smoke test of bench/infer_bench.py: the tiniest scene through a subprocess, then the JSON's shape."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_infer_bench_tiny_writes_json_with_positive_rates(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [
        sys.executable,
        str(ROOT / "bench" / "infer_bench.py"),
        "--device",
        "cpu",
        "--size",
        "tiny",
        "--repeats",
        "1",
        "--threads",
        "2",
        "--compile",
        "off",
        "--json",
        str(out),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "engine_vs_ideal" in proc.stdout

    rep = json.loads(out.read_text())
    assert {"config", "env", "rates", "ratios", "peak_rss_mb", "wall_s"} <= rep.keys()
    assert rep["config"]["scene"] == 256 and rep["config"]["tile"] == 128
    assert rep["config"]["windows"] >= 1 and rep["config"]["overlap_factor"] >= 1.0
    assert {"device_description", "torch", "date"} <= rep["env"].keys()
    assert rep["env"]["device_description"]

    rates = rep["rates"]
    for key in ("raw", "engine_none", "engine_d4", "naive_none", "naive_d4"):
        assert rates[key]["mp_s"] > 0, key
        assert rates[key]["median_s"] > 0, key
    # ttach is a listed requirement; if it is missing the bench records a skip instead of a rate
    assert rates["ttach_d4"].get("mp_s", 0) > 0 or rates["ttach_d4"].get("skipped") == "ttach unavailable"

    ratios = rep["ratios"]
    for key in ("engine_vs_ideal", "engine_d4_vs_ideal", "engine_vs_naive_none", "engine_vs_naive_d4"):
        assert ratios[key] > 0, key
    if "mp_s" in rates["ttach_d4"]:
        assert ratios["engine_vs_ttach_d4"] > 0
    assert rep["peak_rss_mb"] > 0

    assert rates["naive_d4"]["max_abs_diff_vs_engine"] < 1e-4  # the naive loop is the same computation

    # each ratio comes with its spread over the rounds; one round is flagged: nothing to judge it by
    sp = rep["ratio_spread"]
    assert set(sp) == set(ratios) and sp["engine_vs_ideal"]["rounds"] == 1 == rep["config"]["rounds"]
    assert sp["engine_vs_ideal"]["median"] == ratios["engine_vs_ideal"]
    assert rates["raw"]["forwards_per_round"] >= 1 and len(rates["raw"]["times_s"]) == 1  # raw measured in the round
    assert any("1 round only" in w for w in rep["warnings"]) and "WARNING: " in proc.stdout
    assert "README 1.22" in proc.stdout  # the claim's row is named


def test_infer_bench_stream_runs_predict_scene_and_reports_child_rss(tmp_path):
    """--stream: synthetic GeoTIFF → python -m seghz predict-scene in a child → wall time, MP/s, child peak RSS."""
    out = tmp_path / "stream.json"
    cmd = [sys.executable, str(ROOT / "bench" / "infer_bench.py"), "--device", "cpu", "--size", "tiny", "--stream",
           "--scene", "300", "--threads", "1", "--compile", "off", "--workdir", str(tmp_path / "w"), "--json", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rep = json.loads(out.read_text())
    assert rep["config"]["scene"] == 300 and rep["rates"]["predict_scene"]["mp_s"] > 0
    assert rep["peak_rss_mb_predict_scene"] > 50  # the child's own peak (torch alone is > 50 MB)
    import rasterio

    with rasterio.open(tmp_path / "w" / "synthetic_300_classes.tif") as ds:
        assert (ds.width, ds.height) == (300, 300) and ds.crs.to_epsg() == 3857
        assert ds.read(1).max() < 7
