"""Smoke test of bench/train_bench.py: a tiny CPU configuration through a subprocess, then the JSON's shape."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_train_bench_tiny_writes_json_with_both_rates(tmp_path):
    out = tmp_path / "train_bench.json"
    cmd = [sys.executable, str(ROOT / "bench" / "train_bench.py"), "--device", "cpu", "--arch", "Unet",
           "--encoder", "tu-mobilenetv3_small_050", "--crop", "64", "--batch", "2", "--steps", "2", "--warmup", "1",
           "--num-images", "2", "--image-size", "96", "--threads", "1", "--json", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "trainer_vs_bare" in proc.stdout

    rep = json.loads(out.read_text())
    assert {"config", "env", "rates", "ratios", "wall_s"} <= rep.keys()
    cfg = rep["config"]
    assert (cfg["device"], cfg["arch"], cfg["crop"], cfg["batch"], cfg["steps"]) == ("cpu", "Unet", 64, 2, 2)
    assert cfg["image_size"] == [96, 96] and cfg["num_images"] == 2
    assert cfg["isolate"] is True and cfg["repeats"] == 1  # each part measured in its own child process
    assert len(rep["rates"]["trainer"]["runs_img_s"]) == len(rep["rates"]["bare"]["runs_img_s"]) == 1
    assert {"device_description", "torch", "threads", "loadavg", "date"} <= rep["env"].keys()
    assert rep["env"]["threads"] == 1
    for key in ("trainer", "bare"):
        assert rep["rates"][key]["img_s"] > 0, key
    assert rep["rates"]["trainer"]["timed"] == "per-step callbacks"  # the trainer reported every step
    assert rep["rates"]["bare"]["amp"] == "fp32"  # CPU trains in fp32
    ratio = rep["ratios"]["trainer_vs_bare"]
    assert abs(ratio - rep["rates"]["trainer"]["img_s"] / rep["rates"]["bare"]["img_s"]) < 1e-9 and ratio > 0
    # 2 timed steps are not a steady state: said in the output and the JSON; the data and loss are named
    assert any("only 2 timed step(s)" in w for w in rep["warnings"]) and "WARNING: only 2 timed step(s)" in proc.stdout
    assert "data: synthetic" in proc.stdout and "plain CE" in proc.stdout


def test_train_bench_compares_channels_last_with_contiguous_side_by_side(tmp_path):
    """--compare-contiguous adds the NCHW bare step, measured in its own child, and the ratio of the two layouts."""
    out = tmp_path / "train_bench.json"
    cmd = [sys.executable, str(ROOT / "bench" / "train_bench.py"), "--device", "cpu", "--arch", "Unet",
           "--encoder", "tu-mobilenetv3_small_050", "--crop", "64", "--batch", "2", "--steps", "2", "--warmup", "1",
           "--num-images", "2", "--image-size", "96", "--threads", "1", "--compare-contiguous", "--json", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180, check=False, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "channels_last_vs_contiguous" in proc.stdout and "bare NCHW" in proc.stdout

    rep = json.loads(out.read_text())
    rates = rep["rates"]
    assert set(rates) == {"trainer", "bare", "bare_contiguous"}
    assert rates["bare"]["channels_last"] is True and rates["bare_contiguous"]["channels_last"] is False
    assert len(rates["bare_contiguous"]["runs_img_s"]) == 1 and rates["bare_contiguous"]["img_s"] > 0
    ratio = rep["ratios"]["channels_last_vs_contiguous"]
    assert abs(ratio - rates["bare"]["img_s"] / rates["bare_contiguous"]["img_s"]) < 1e-9
    assert abs(rep["ratios"]["trainer_vs_bare"] - rates["trainer"]["img_s"] / rates["bare"]["img_s"]) < 1e-9


def test_layout_comparison_alone_still_isolates_each_layout(tmp_path):
    """--skip trainer --compare-contiguous: both layouts, each in its own child (runs_img_s comes from _isolated), no
    trainer; the internal child flag is refused at the top level."""
    out = tmp_path / "layouts.json"
    base = [sys.executable, str(ROOT / "bench" / "train_bench.py"), "--device", "cpu", "--arch", "Unet",
            "--encoder", "tu-mobilenetv3_small_050", "--crop", "64", "--batch", "2", "--steps", "1", "--warmup", "0",
            "--threads", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([*base, "--skip", "trainer", "--compare-contiguous", "--json", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=180, check=False, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rep = json.loads(out.read_text())
    assert set(rep["rates"]) == {"bare", "bare_contiguous"} and rep["config"]["isolate"] is True
    assert all(len(r["runs_img_s"]) == 1 for r in rep["rates"].values())
    assert set(rep["ratios"]) == {"channels_last_vs_contiguous"}
    bad = subprocess.run([*base, "--only-contiguous"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         check=False, env=env)
    assert bad.returncode != 0 and "internal" in bad.stderr
