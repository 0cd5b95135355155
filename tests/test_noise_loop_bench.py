"""Smoke test of bench/noise_loop_bench.py on a few real GID tiles (skipped without ../shared/data/gid15)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "gid15"
CKPT = ROOT / "checkpoints" / "gid15_hz7_unet_lite0.safetensors"


def test_apply_fixes_counts_fixed_noise():
    sys.path.insert(0, str(ROOT))
    from bench.noise_loop_bench import apply_fixes

    true = np.zeros((4, 4), np.uint8)
    noisy = true.copy()
    noisy[:2] = 1  # 8 noisy pixels
    noisy[3, 3] = 255  # ignored stays ignored
    true[3, 3] = 255
    tile = {"true": true, "noisy": noisy, "noise": (noisy != true) & (true != 255)}
    m = np.zeros((4, 4), bool)
    m[0] = True  # fixes 4 noisy pixels
    m2 = np.zeros((4, 4), bool)
    m2[2] = True  # reviews 4 clean pixels
    eff, fx = apply_fixes([tile], [(0, m), (0, m2)])
    assert fx["noisy_pixels_fixed"] == 4 and fx["noise_fraction_fixed"] == 0.5
    assert fx["pixels_reviewed"] == 8 and fx["precision_of_review"] == 0.5 and fx["noisy_fixed_per_item"] == 2
    assert (eff[0][0] == 0).all() and (eff[0][1] == 1).all() and eff[0][3, 3] == 255
    assert (tile["noisy"][0] == 1).all()  # the noisy label is not modified in place


@pytest.mark.skipif(not (DATA / "images").is_dir() or not CKPT.is_file(),
                    reason="GID-15 data (../shared/data/gid15) or the shipped checkpoint is absent")
def test_noise_loop_bench_tiny_run(tmp_path):
    out = tmp_path / "loop.json"
    cmd = [sys.executable, str(ROOT / "bench" / "noise_loop_bench.py"), "--tiles", "3", "--eval-tiles", "1",
           "--n", "2", "--draws", "1", "--tta", "none", "--max-pixels", "5000", "--steps", "5", "--json", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120, env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "gain/100" in proc.stdout
    rep = json.loads(out.read_text())
    assert not set(rep["train_tiles"]) & set(rep["eval_tiles"])
    assert len(rep["train_tiles"]) == 3 and len(rep["eval_tiles"]) == 1
    arms = {s["arm"] for s in rep["summary"]}
    assert arms == {"queue", "queue_heldout", "random_components"}
    assert set(rep["detector"]) == {"queue", "queue_heldout"}
    for s in rep["summary"]:
        assert 0 <= s["noise_fraction_fixed"] <= 1 and 0 <= s["miou"] <= 1
    assert 0 < rep["noise_rate"] < 1 and 0 <= rep["noisy_refit"]["miou"] <= 1
