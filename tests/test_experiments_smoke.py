"""Smoke test of bench/experiments.py on a few real GID-15 tiles (skips without ../shared/data/gid15)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GID = ROOT.parent / "shared" / "data" / "gid15"
CKPT = ROOT / "checkpoints" / "gid15_hz7_unet_lite0.safetensors"

needs_gid = pytest.mark.skipif(not (GID / "images").is_dir() or not CKPT.is_file(),
                               reason="needs ../shared/data/gid15 and the shipped GID checkpoint (test_stems)")


def _run(row, seed, miou, miou_gt):
    return {"row": row, "seed": seed, "miou": miou, "miou_gt": miou_gt, "fwiou": 0.5, "oa": 0.6, "train_s": 10.0,
            "eval_s": 1.0, "per_class_iou": {"Water": miou_gt, "Road_land": None}, "final_loss": 1.0,
            "noise_dropped": None}


def test_summary_mean_sd_and_recovery_by_hand():
    sys.path.insert(0, str(ROOT))
    from bench.experiments import render, summarise

    runs = [_run("ce", 0, 0.60, 0.62), _run("ce", 1, 0.64, 0.66), _run("noisy_ce", 0, 0.40, 0.50),
            _run("noisy_ce", 1, 0.44, 0.50), _run("noisy_boot", 0, 0.52, 0.56), _run("noisy_boot", 1, 0.52, 0.60)]
    s = summarise(runs, ["ce", "noisy_ce", "noisy_boot"])
    assert s["ce"]["miou"] == pytest.approx(62.0) and s["ce"]["miou_sd"] == pytest.approx(2.0 ** 0.5 * 2)
    # recovery = (52 - 42) / (62 - 42); GT classes: (58 - 50) / (64 - 50)
    assert s["noisy_boot"]["recovery"] == pytest.approx(0.5) and s["noisy_boot"]["recovery_gt"] == pytest.approx(8 / 14)
    assert "recovery" not in s["ce"] and s["noisy_ce"]["recovery"] == pytest.approx(0.0)
    report = {"protocol": {"eval_tiles": 2, "train_tiles": 3, "train_stems_sha1": "a", "eval_stems_sha1": "b", "steps": 4,
                           "epochs": 2, "batch_size": 2, "crop": 64, "lr": 0.002, "flip_fraction": 0.3},
              "env": {"device": "cpu", "device_description": "X", "torch": "t", "threads": 1, "cpu_count": 2,
                      "loadavg": "1", "date": "d"}, "summary": s, "runs": runs, "rows": ["ce", "noisy_ce", "noisy_boot"],
              "seeds": [0, 1], "command": "python bench/experiments.py", "wall_s": 60.0, "eval_classes": ["Water"]}
    md = render(report, "x <!-- reading -->\nmy reading\n<!-- /reading --> y")
    assert "| baseline CE | 62.00 ± 2.83 | 64.00 ± 2.83 |" in md
    assert "| + hard bootstrapping β=0.8 | 52.00 ± 0.00 | 58.00 ± 2.83 | 50.00 ± 0.00 | 60.00 ± 0.00 | +0.50 | +0.57 |" in md
    assert "my reading" in md and "Water 62" in md


@needs_gid
def test_experiments_tiny_run_writes_markdown_and_json(tmp_path):
    out, js = tmp_path / "experiments.md", tmp_path / "experiments.json"
    out.write_text("old\n<!-- reading -->\nkept by hand\n<!-- /reading -->\n")
    cmd = [sys.executable, str(ROOT / "bench" / "experiments.py"), "--rows", "ce,noisy_ce,noisy_boot", "--seeds", "0",
           "--steps", "1", "--epochs", "1", "--batch-size", "2", "--crop", "32", "--train-tiles", "3",
           "--eval-tiles", "2", "--device", "cpu", "--threads", "1", "--out", str(out), "--json", str(js)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=170, check=False, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]

    rep = json.loads(js.read_text())
    assert rep["rows"] == ["ce", "noisy_ce", "noisy_boot"] and rep["seeds"] == [0]
    assert [(r["row"], r["seed"]) for r in rep["runs"]] == [("ce", 0), ("noisy_ce", 0), ("noisy_boot", 0)]
    p = rep["protocol"]
    assert (p["train_tiles"], p["eval_tiles"], p["steps"], p["crop"]) == (3, 2, 1, 32)
    for r in rep["runs"]:
        assert 0 <= r["miou"] <= 1 and 0 <= r["oa"] <= 1 and r["steps"] == 1
    assert rep["runs"][-1]["recipe"]["bootstrap"] == "hard"
    s = rep["summary"]
    assert s["ce"]["n"] == 1 and s["ce"]["miou_sd"] is None  # one seed: no sd
    assert "recovery" in s["noisy_boot"] and "recovery_gt" in s["noisy_boot"] and "recovery" not in s["ce"]
    assert rep["eval_classes"] and all(0 <= r["miou_gt"] <= 1 for r in rep["runs"])
    assert 0 < float(rep["noise_rate"]["0"]) < 1  # flipped components changed some training pixels

    md = out.read_text()
    assert "kept by hand" in md  # the hand-written reading survives regeneration
    assert "| baseline CE |" in md and "+ hard bootstrapping" in md and "recovery" in md
    assert rep["env"]["device_description"] in md and "python bench/experiments.py" in md

    # --resume keeps the finished runs (nothing is trained again)
    proc = subprocess.run(cmd + ["--resume"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "3 run(s) kept" in proc.stderr and "mIoU" not in proc.stdout
