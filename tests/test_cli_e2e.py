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

from seghz.metrics import signed_pp

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


def test_compare_two_checkpoints_with_a_paired_bootstrap(gid_subset, tmp_path):
    """`seghz compare` scores both checkpoints on the same images (the reference's test or re-derived validation
    stems) and reports candidate − reference with its bootstrap interval; the validation stems are the ones
    `seghz train` chose; a folder that is not the training folder, or checkpoints of two schemes, are refused."""
    from seghz.classes import get_scheme
    from seghz.data.folders import holdout_split, load_folder
    from seghz.models.checkpoint import read_metadata

    d, _ = gid_subset
    cks = []
    for seed in (0, 1):
        ck = tmp_path / f"s{seed}.safetensors"
        run("train", "--images", d / "images", "--labels", d / "labels", "--scheme", "gid15", "--target-scheme", "hz7",
            "--out", ck, "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "2", "--crop-size", "64",
            "--weights", "none", "--val-count", "3", "--tile-size", "224", "--seed", str(seed))
        cks.append(ck)
    test = set(read_metadata(cks[0])["test_stems"])
    assert test  # one of the 12 tiles hashes into the test split

    same = tmp_path / "same.json"
    p = run("compare", "--checkpoint", cks[0], "--candidate", cks[0], "--images", d / "images", "--labels",
            d / "labels", "--scheme", "gid15", "--stems-from-checkpoint", "--rounds", "200", "--json", same)
    r = json.loads(same.read_text())
    assert set(r["images"]) == test and r["bootstrap"]["delta"] == 0 and r["bootstrap"]["rounds"] == 200
    assert len(test) == 1 and r["bootstrap"]["lo"] is None  # one image: no fake zero-width interval
    assert "candidate − reference: 0.00 (no interval from one image) mIoU" in p.stdout
    p = run("compare", "--checkpoint", cks[0], "--candidate", cks[0], "--images", d / "images", "--labels",
            d / "labels", "--scheme", "gid15", "--rounds", "0", ok=False)
    assert p.returncode == 2 and "--rounds must be at least 1" in p.stderr

    items = load_folder(d / "images", d / "labels", "gid15", "hz7")
    val = {it[0] for it in holdout_split(items, get_scheme("hz7").num_classes, 0.2, 3)["val"]}
    assert len(val) == 3
    two = tmp_path / "two.json"
    p = run("compare", "--checkpoint", cks[0], "--candidate", cks[1], "--images", d / "images", "--labels",
            d / "labels", "--scheme", "gid15", "--stems-from-checkpoint", "val", "--json", two)
    r = json.loads(two.read_text())
    assert set(r["images"]) == val
    b = r["bootstrap"]
    assert b["lo"] <= b["delta"] <= b["hi"] and b["scenes"] == 3 and 0 <= b["p_b_better"] <= 1
    assert f"reference {cks[0]}: mIoU {100 * b['a']:.2f}" in p.stdout
    pp = [signed_pp(100 * b[k], 2) for k in ("delta", "lo", "hi")]  # −1.23, never -0.00: as every table shows it
    assert f"candidate − reference: {pp[0]} [{pp[1]}, {pp[2]}] mIoU" in p.stdout
    for role, key in (("reference", "a"), ("candidate", "b")):
        ev = tmp_path / f"{role}.json"
        run("evaluate", "--checkpoint", cks[0] if role == "reference" else cks[1], "--images", d / "images", "--labels",
            d / "labels", "--scheme", "gid15", "--stems-from-checkpoint", "val", "--json", ev)
        assert json.loads(ev.read_text())["miou"] == pytest.approx(b[key]) == pytest.approx(r[role]["miou"])
        assert json.loads(ev.read_text())["images"] == 3
    assert b["delta"] == pytest.approx(b["b"] - b["a"]) and b["lo"] <= b["hi"]
    # the regression gate's verdict on the same numbers, under both rules
    drops = {c: d for c, d in b["per_class"].items() if d and d["delta"] is not None and d["delta"] < -0.02 - 1e-9}
    margin_v, interval_v = r["gate"]["margin"], r["gate"]["interval"]
    assert {o["class"] for o in margin_v["offending"]} == set(drops)
    assert {o["class"] for o in interval_v["offending"]} == {c for c, d in drops.items() if d["hi"] is None or d["hi"] < 0}
    assert margin_v["status"] == ("flagged" if drops else "pass") and margin_v["scenes"] == 3
    for rule, v in r["gate"].items():
        assert f"regression gate, rule '{rule}': {v['status'].upper()}" in p.stdout
    p = run("compare", "--checkpoint", cks[0], "--candidate", cks[1], "--images", d / "images", "--labels",
            d / "labels", "--scheme", "gid15", "--margin", "-0.1", ok=False)
    assert p.returncode == 2 and "--margin" in p.stderr

    assert set(read_metadata(cks[0])["val_stems"]) == val  # recorded by `seghz train`

    # a checkpoint from before the validation stems were recorded: they are re-derived from the folder, which must
    # be the one it trained on (same test split, same training pixels)
    from seghz.models.checkpoint import load_checkpoint, save_checkpoint

    model, meta = load_checkpoint(cks[0])
    old = tmp_path / "old.safetensors"
    save_checkpoint(old, model, {k: v for k, v in meta.items() if k != "val_stems"})
    again = tmp_path / "again.json"
    run("compare", "--checkpoint", old, "--candidate", cks[1], "--images", d / "images", "--labels", d / "labels",
        "--scheme", "gid15", "--stems-from-checkpoint", "val", "--json", again)
    assert set(json.loads(again.read_text())["images"]) == val
    # a candidate whose own recorded validation split does not hold these images may have trained on them
    leaky = tmp_path / "leaky.safetensors"
    save_checkpoint(leaky, model, {**meta, "val_stems": []})
    p = run("compare", "--checkpoint", cks[0], "--candidate", leaky, "--images", d / "images", "--labels", d / "labels",
            "--scheme", "gid15", "--stems-from-checkpoint", "val", "--rounds", "50")
    assert "warning: 3 of these 3 images are not in the candidate's recorded val split" in p.stderr
    dropped = min(x.stem for x in (d / "images").iterdir() if x.stem not in test | val)  # a training tile
    part = tmp_path / "part"
    for sub in ("images", "labels"):
        (part / sub).mkdir(parents=True)
        for f in (d / sub).iterdir():
            if f.stem != dropped:
                shutil.copy(f, part / sub / f.name)
    assert len(list((part / "images").iterdir())) == 11
    p = run("compare", "--checkpoint", old, "--candidate", cks[1], "--images", part / "images", "--labels",
            part / "labels", "--scheme", "gid15", "--stems-from-checkpoint", "val", ok=False)
    assert p.returncode == 2 and "cannot be re-derived" in p.stderr and str(old) in p.stderr
    assert "other class frequencies than recorded" in p.stderr
    notest = tmp_path / "notest"  # the test tile missing: the test split itself differs
    for sub in ("images", "labels"):
        (notest / sub).mkdir(parents=True)
        for f in (d / sub).iterdir():
            if f.stem not in test:
                shutil.copy(f, notest / sub / f.name)
    p = run("compare", "--checkpoint", old, "--candidate", cks[1], "--images", notest / "images", "--labels",
            notest / "labels", "--scheme", "gid15", "--stems-from-checkpoint", "val", ok=False)
    assert p.returncode == 2 and "its test split there has 0 image(s), 0 of them among the 1 recorded" in p.stderr
    # checkpoints of two schemes
    g = tmp_path / "g.safetensors"
    run("train", "--images", d / "images", "--labels", d / "labels", "--scheme", "gid15", "--out", g, "--epochs", "1",
        "--steps-per-epoch", "1", "--batch-size", "2", "--crop-size", "64", "--weights", "none", "--val-count", "0")
    p = run("compare", "--checkpoint", cks[0], "--candidate", g, "--images", d / "images", "--labels", d / "labels",
            "--scheme", "gid15", ok=False)
    assert p.returncode == 2 and "cannot be compared class by class" in p.stderr
