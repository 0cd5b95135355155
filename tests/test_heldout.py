"""bench/heldout.py and the benches' ``--stems all`` / ``--eval-data``: measuring on a folder of your own.

The selection rules are checked on tiny synthetic folders; the benches themselves run end to end on a few real GID
tiles copied under new names into a temporary folder (skipped without ../shared/data/gid15).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.heldout import folder_pairs, held_out, salted
from seghz.data.copies import byte_copies as duplicate_images

GID = ROOT.parent / "shared" / "data" / "gid15"
CKPT = ROOT / "checkpoints" / "gid15_hz7_unet_lite0.safetensors"
needs_gid = pytest.mark.skipif(not (GID / "images").is_dir() or not CKPT.is_file(),
                               reason="needs ../shared/data/gid15 and the shipped GID checkpoint (test_stems)")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _folder(root: Path, stems, ext=".png", label_for=None) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i, s in enumerate(stems):
        img = np.full((8, 8, 3), i, np.uint8)
        cv2.imwrite(str(root / "images" / f"{s}{ext}"), img)
        if label_for is None or s in label_for:
            cv2.imwrite(str(root / "labels" / f"{s}.png"), np.zeros((8, 8), np.uint8))
    return root


def test_test_stems_are_picked_in_salted_order(tmp_path):
    d = _folder(tmp_path / "d", ["a", "b", "c", "d", "e"])
    got = held_out(d, ["e", "a", "c", "zz"], "test")  # 'zz' is not in the folder: left out
    assert [s for s, _, _ in got] == sorted(["a", "c", "e"], key=salted)
    for s, img, lbl in got:
        assert img == d / "images" / f"{s}.png" and lbl == d / "labels" / f"{s}.png"


def test_all_takes_every_pair_of_a_foreign_folder_any_image_type(tmp_path):
    d = _folder(tmp_path / "d", ["x1", "x2", "x3"], ext=".jpg")
    got = held_out(d, ["a", "b"], "all")
    assert [s for s, _, _ in got] == sorted(["x1", "x2", "x3"], key=salted)
    assert all(img.suffix == ".jpg" for _, img, _ in got)
    # a folder holding only held-out tiles is fine too
    assert [s for s, _, _ in held_out(d, ["x1", "x2", "x3", "q"], "all")] == sorted(["x1", "x2", "x3"], key=salted)


def test_all_refuses_the_folder_the_checkpoint_trained_on(tmp_path):
    d = _folder(tmp_path / "gid", ["t1", "t2", "train1", "train2"])
    with pytest.raises(ValueError, match=r"holds 2 of the checkpoint's held-out test tiles .* and 2 other tiles"):
        held_out(d, ["t1", "t2"], "all")


def test_test_needs_test_stems_in_the_folder(tmp_path):
    d = _folder(tmp_path / "d", ["a", "b"])
    with pytest.raises(ValueError, match="records no test_stems"):
        held_out(d, [], "test")
    with pytest.raises(ValueError, match="none of the checkpoint's 2 held-out test stems"):
        held_out(d, ["q", "r"], "test")
    with pytest.raises(ValueError, match="which must be one of"):
        held_out(d, ["a"], "train")


def test_bad_folders_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"nowhere: needs an images/ and a labels/ folder"):
        folder_pairs(tmp_path / "nowhere")
    d = _folder(tmp_path / "d", ["a", "b"], label_for={"a"})
    with pytest.raises(ValueError, match=r"1 image\(s\) have no label with the same stem, e.g. 'b'"):
        held_out(d, [], "all")


def test_duplicate_images_finds_byte_copies_under_other_names(tmp_path):
    d = _folder(tmp_path / "d", ["a", "b", "c"])
    e = tmp_path / "e"
    e.mkdir()
    shutil.copy(d / "images" / "b.png", e / "renamed.png")
    cv2.imwrite(str(e / "other.png"), np.full((8, 8, 3), 200, np.uint8))
    a_files = sorted((d / "images").iterdir())
    assert duplicate_images(a_files, [e / "renamed.png", e / "other.png"]) == [(d / "images" / "b.png", e / "renamed.png")]
    assert duplicate_images(a_files, [e / "other.png"]) == []


def _copy_gid(stems, dest: Path, rename=lambda s: f"mine_{s}") -> Path:
    (dest / "images").mkdir(parents=True)
    (dest / "labels").mkdir()
    for s in stems:
        shutil.copy(GID / "images" / f"{s}.png", dest / "images" / f"{rename(s)}.png")
        shutil.copy(GID / "labels" / f"{s}.png", dest / "labels" / f"{rename(s)}.png")
    return dest


def _test_stems() -> list[str]:
    from seghz.models.checkpoint import read_metadata

    return sorted(read_metadata(CKPT)["test_stems"])


@needs_gid
def test_noise_bench_measures_a_folder_of_your_own(tmp_path):
    from bench.noise_bench import tuning_stems

    # not the weights' tuning tiles: noise_bench finds those even renamed and leaves them out
    stems = [s for s in _test_stems() if s not in set(tuning_stems(_test_stems()))][:4]
    mine = _copy_gid(stems, tmp_path / "mine")
    out = tmp_path / "noise.json"
    cmd = [sys.executable, str(ROOT / "bench" / "noise_bench.py"), "--data", str(mine), "--stems", "all",
           "--scheme", "gid15", "--tta", "none", "--json", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240, env=ENV, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rep = json.loads(out.read_text())
    assert sorted(rep["tiles"]) == sorted(f"mine_{s}" for s in stems)  # every tile, none kept for tuning
    assert rep["tuning_tiles"] == [] == rep["tuning_tiles_left_out"] and (rep["stems"], rep["scheme"]) == ("all", "gid15")
    assert 0 < rep["noise_rate"] < 1
    m = rep["methods"]["suspicion"]
    assert 0 <= m["precision_at_k"] <= 1 and m["auroc"] > 0.5  # the model finds injected flips better than chance
    assert "REPORTED tiles: 4 (tuning tiles excluded: 0)" in proc.stdout


@needs_gid
def test_noise_bench_refuses_its_own_training_folder_and_unknown_schemes(tmp_path):
    base = [sys.executable, str(ROOT / "bench" / "noise_bench.py"), "--tta", "none"]
    proc = subprocess.run(base + ["--data", str(GID), "--stems", "all"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env=ENV, check=False)
    assert proc.returncode == 2 and "looks like the folder the checkpoint trained on" in proc.stderr
    mine = _copy_gid(_test_stems()[:1], tmp_path / "mine")
    proc = subprocess.run(base + ["--data", str(mine), "--stems", "all", "--scheme", "nope"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env=ENV, check=False)
    assert proc.returncode == 2 and "unknown class scheme 'nope'" in proc.stderr


@needs_gid
def test_experiments_evaluates_on_eval_data_and_refuses_copies_of_training_tiles(tmp_path):
    from bench.experiments import split_stems

    train, _ = split_stems(GID, CKPT, 3, None)
    mine = _copy_gid(_test_stems()[:2], tmp_path / "mine")
    out, js = tmp_path / "exp.md", tmp_path / "exp.json"
    cmd = [sys.executable, str(ROOT / "bench" / "experiments.py"), "--rows", "ce", "--seeds", "0", "--steps", "1",
           "--epochs", "1", "--batch-size", "2", "--crop", "32", "--train-tiles", "3", "--device", "cpu",
           "--threads", "1", "--out", str(out), "--json", str(js), "--eval-scheme", "gid15", "--eval-data", str(mine)]
    # without --eval-scheme: refused (a wrong default scheme whose ids fit scored silently low)
    proc = subprocess.run(cmd[:-4] + cmd[-2:], cwd=ROOT, capture_output=True, text=True, timeout=120, env=ENV,
                          check=False)
    assert proc.returncode == 2 and "error: --eval-data needs --eval-scheme" in proc.stderr, proc.stderr[-2000:]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=170, env=ENV, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rep = json.loads(js.read_text())
    p = rep["protocol"]
    assert p["eval_data"] == "mine (gid15 -> hz7)" and p["eval_tiles"] == 2 and p["train_tiles"] == 3
    assert "tiles of the folder `mine (gid15 -> hz7)` given by `--eval-data`" in out.read_text()
    assert 0 <= rep["runs"][0]["miou"] <= 1

    # a renamed copy of a training tile in the evaluation folder is refused before any training
    _copy_gid(train[:1], tmp_path / "leaky", rename=lambda s: "innocent_name")
    proc = subprocess.run(cmd[:-1] + [str(tmp_path / "leaky")], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env=ENV, check=False)
    assert proc.returncode != 0 and "are copies of training tiles" in proc.stderr
    assert f"{train[0]}.png" in proc.stderr
    # the training folder itself is not an evaluation folder
    proc = subprocess.run(cmd[:-1] + [str(GID)], cwd=ROOT, capture_output=True, text=True, timeout=120, env=ENV,
                          check=False)
    assert proc.returncode != 0 and "is the training folder --data" in proc.stderr


@needs_gid
def test_benches_name_a_bad_label_file_without_a_traceback(tmp_path):
    mine = _copy_gid(_test_stems()[:2], tmp_path / "mine")
    bad = sorted((mine / "labels").iterdir())[0]
    lbl = cv2.imread(str(bad), cv2.IMREAD_UNCHANGED)
    lbl[0, 0] = 77  # no class of gid15 has id 77
    cv2.imwrite(str(bad), lbl)
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "noise_bench.py"), "--data", str(mine), "--stems",
                           "all", "--tta", "none"], cwd=ROOT, capture_output=True, text=True, timeout=240, env=ENV,
                          check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert bad.name in proc.stderr and "77" in proc.stderr
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "experiments.py"), "--rows", "ce", "--seeds", "0",
                           "--steps", "1", "--epochs", "1", "--crop", "32", "--batch-size", "2", "--train-tiles", "2",
                           "--device", "cpu", "--eval-scheme", "gid15", "--eval-data", str(mine), "--out",
                           str(tmp_path / "x.md")],
                          cwd=ROOT, capture_output=True, text=True, timeout=240, env=ENV, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and bad.name in proc.stderr
