"""CLI end to end on real GID-15 tiles: import -> predict -> evaluate -> train one short epoch -> evaluate."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
GID = ROOT.parent / "shared" / "data" / "gid15"
pytestmark = pytest.mark.skipif(not GID.is_dir(), reason="../shared/data/gid15 is absent (real data is not shipped)")


def run(*args, cwd=ROOT, ok=True):
    p = subprocess.run([sys.executable, "-m", "seghz", *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=600,
                       env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    if ok:
        assert p.returncode == 0, p.stdout + p.stderr
    return p


@pytest.fixture(scope="module")
def gid_subset(tmp_path_factory):
    d = tmp_path_factory.mktemp("gid")
    stems = sorted(p.stem for p in (GID / "images").glob("*.png"))[::40][:12]
    for sub in ("images", "labels"):
        (d / sub).mkdir()
        for s in stems:
            shutil.copy(GID / sub / f"{s}.png", d / sub / f"{s}.png")
    return d, stems


def test_import_predict_evaluate_train(gid_subset, tmp_path):
    d, stems = gid_subset
    ws = tmp_path / "ws"
    out = run("--workspace", ws, "import", "--images", d / "images", "--labels", d / "labels", "--scheme", "gid15",
              "--target-scheme", "hz7", "--val-count", "2")
    assert "imported 12 scene(s)" in out.stdout
    info = run("--workspace", ws, "info")
    assert '"total": 12' in info.stdout
    assert "device: cpu" in info.stdout or "device: cuda" in info.stdout  # the troubleshooting check

    ck = tmp_path / "m.safetensors"
    tr = run("train", "--images", d / "images", "--labels", d / "labels", "--scheme", "gid15", "--target-scheme", "hz7",
             "--out", ck, "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "2", "--crop-size", "64",
             "--weights", "none", "--val-count", "2", "--tile-size", "224")
    assert ck.is_file(), tr.stderr

    pred_dir = tmp_path / "pred"
    run("predict", "--checkpoint", ck, "--input", d / "images", "--output", pred_dir, "--color", "--areas")
    masks = sorted(pred_dir.glob("*[!r].png"))
    assert {p.stem for p in pred_dir.glob("*.csv")} == set(stems)
    m = np.asarray(Image.open(pred_dir / f"{stems[0]}.png"))
    assert m.shape == (224, 224) and m.max() < 7 and masks

    js = tmp_path / "e.json"
    ev = run("evaluate", "--checkpoint", ck, "--images", d / "images", "--labels", d / "labels", "--scheme", "gid15",
             "--tta", "d4", "--json", js)
    assert "mIoU" in ev.stdout
    res = json.loads(js.read_text())
    assert set(res) >= {"miou", "fwiou", "oa", "per_class", "confusion", "classes"}
    assert res["classes"][0] == "Water" and len(res["confusion"]) == 7
    cm = np.array(res["confusion"])
    # every labelled pixel (GID 15 = unlabelled -> ignore) is counted exactly once
    lbl = np.concatenate([np.asarray(Image.open(d / "labels" / f"{s}.png")).ravel() for s in stems])
    assert cm.sum() == int((lbl != 15).sum())
    assert 0 <= res["miou"] <= 1 and set(res["per_class"]["Water"]) >= {"iou", "acc"}
    # the calibration counts cover the same pixels; the ECE printed is the one the counts give
    from seghz.metrics import calibration_report

    assert np.asarray(res["calibration"]["count"]).sum() == cm.sum()
    assert res["ece"] == pytest.approx(calibration_report(res["calibration"])["ece"])
    assert f"ECE {res['ece'] * 100:.2f}" in ev.stdout

    # fine-tune from that checkpoint for one more short epoch and evaluate again
    ck2 = tmp_path / "m2.safetensors"
    run("train", "--images", d / "images", "--labels", d / "labels", "--scheme", "gid15", "--target-scheme", "hz7",
        "--out", ck2, "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "2", "--crop-size", "64",
        "--parent", ck, "--val-count", "2", "--tile-size", "224")
    run("evaluate", "--checkpoint", ck2, "--images", d / "images", "--labels", d / "labels", "--scheme", "gid15")


def test_evaluate_bad_inputs(gid_subset, tmp_path):
    d, _ = gid_subset
    # a checkpoint trained in gid15 cannot be scored on hz7 labels: there is no hz7 -> gid15 crosswalk
    ck = tmp_path / "g.safetensors"
    run("train", "--images", d / "images", "--labels", d / "labels", "--scheme", "gid15", "--out", ck, "--epochs", "1",
        "--steps-per-epoch", "1", "--batch-size", "2", "--crop-size", "64", "--weights", "none", "--val-count", "0")
    hz = tmp_path / "hzlabels"
    hz.mkdir()
    for p in (d / "labels").iterdir():
        Image.fromarray(np.ones((224, 224), np.uint8)).save(hz / p.name)
    p = run("evaluate", "--checkpoint", ck, "--images", d / "images", "--labels", hz, "--scheme", "hz7", ok=False)
    assert p.returncode == 2 and "no crosswalk from scheme 'hz7' to 'gid15'" in p.stderr
    # a non-checkpoint file
    p = run("evaluate", "--checkpoint", d / "images" / next((d / "images").iterdir()).name, "--images", d / "images",
            "--labels", d / "labels", "--scheme", "gid15", ok=False)
    assert p.returncode == 2 and "not a SegHZ checkpoint" in p.stderr
    # an empty folder
    empty = tmp_path / "empty"
    empty.mkdir()
    p = run("evaluate", "--checkpoint", ck, "--images", empty, "--labels", d / "labels", "--scheme", "gid15", ok=False)
    assert p.returncode == 2 and "holds no images" in p.stderr and str(empty) in p.stderr
