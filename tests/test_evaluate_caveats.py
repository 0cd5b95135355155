"""What `seghz evaluate` says about its own numbers: the bootstrap interval of mIoU over the images, classes whose
IoU cannot mean what it seems (never trained on; no label class maps to them), the mIoU without them, the label
scheme and crosswalk, and a warning when the images are copies of the checkpoint's training images."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from seghz.evaluate import caveat_lines, class_caveats
from seghz.metrics import miou_batch, scene_bootstrap, scores

ROOT = Path(__file__).resolve().parents[1]
GID = ROOT.parent / "shared" / "data" / "gid15"
DUBAI = ROOT.parent / "shared" / "data" / "dubai"
CKPT = ROOT / "checkpoints" / "gid15_hz7_unet_lite0.safetensors"
HZ7 = ["Water", "OpenArea", "Green_land", "Forest", "Reflection_Glass_Curtainwall", "Buildings", "Road_land"]


def test_scene_bootstrap_interval_brackets_the_point_and_shrinks_with_more_scenes():
    rng = np.random.default_rng(0)

    def scenes(n):
        out = []
        for _ in range(n):
            cm = np.diag(rng.integers(50, 100, 3)).astype(np.int64)
            cm[0, 1] += rng.integers(0, 40)
            cm[2, 1] += rng.integers(0, 40)
            out.append(cm)
        return np.stack(out)

    few, many = scenes(8), scenes(200)
    b8, b200 = scene_bootstrap(few, rounds=500), scene_bootstrap(many, rounds=500)
    for cms, b in ((few, b8), (many, b200)):
        assert b["miou"] == pytest.approx(float(miou_batch(cms.sum(0))))
        assert b["lo"] <= b["miou"] <= b["hi"]
    assert (b200["hi"] - b200["lo"]) < (b8["hi"] - b8["lo"])
    assert scene_bootstrap(few, rounds=500) == b8  # seeded
    one = scene_bootstrap(few[:1])
    assert one["lo"] is None and one["hi"] is None and one["scenes"] == 1
    same = scene_bootstrap(np.stack([few[0]] * 5), rounds=50)
    assert same["lo"] == pytest.approx(same["hi"]) == pytest.approx(same["miou"])  # identical scenes: no spread
    with pytest.raises(ValueError, match="at least one scene"):
        scene_bootstrap(np.zeros((0, 3, 3)))


def _cm(entries, n=7):
    cm = np.zeros((n, n), np.int64)
    for (t, p), v in entries.items():
        cm[HZ7.index(t), HZ7.index(p)] = v
    return cm


def test_class_caveats_dubai_labels_on_a_gid_model():
    # Dubai has no forest (nothing maps to Forest) and the GID model never saw OpenArea ("land")
    cm = _cm({("Water", "Water"): 80, ("Water", "Forest"): 20, ("OpenArea", "Green_land"): 50,
              ("Buildings", "Buildings"): 60, ("Road_land", "Road_land"): 30, ("Road_land", "Buildings"): 10})
    sc = scores(cm, HZ7)
    tf = [0.2, 0.0, 0.4, 0.1, 0.0, 0.2, 0.1]
    cv = class_caveats(sc, tf, "dubai", "hz7")
    assert cv["untrained"] == ["OpenArea"] and cv["unexpressible"] == ["Forest"]
    kept = [sc["per_class"][n]["iou"] for n in ("Water", "Green_land", "Buildings", "Road_land")]
    assert cv["miou_comparable"] == pytest.approx(np.mean(kept))
    assert sc["miou"] < cv["miou_comparable"]
    lines = caveat_lines({**sc, **cv, "label_scheme": "dubai", "images": 1})
    assert any(ln.startswith("note: OpenArea: 50 labelled px, but the checkpoint saw no pixel of it") for ln in lines)
    assert any("note: Forest: no class of the label scheme 'dubai' maps to it; its 20 predicted px" in ln for ln in lines)
    assert any(ln.startswith("mIoU over the classes both the labels and the checkpoint know: ") for ln in lines)
    # same scheme, every class trained: nothing to say; unknown training frequencies: no untrained classes
    cv2 = class_caveats(sc, None, "hz7", "hz7")
    assert cv2 == {"untrained": [], "unexpressible": [], "miou_comparable": pytest.approx(sc["miou"])}


def test_a_very_low_score_without_caveats_hints_at_the_scheme():
    sc = scores(_cm({("Water", "Buildings"): 90, ("Water", "Water"): 5, ("Buildings", "Water"): 50}), HZ7)
    lines = caveat_lines({**sc, **class_caveats(sc, None, "gid15", "hz7"), "label_scheme": "gid15", "images": 1})
    assert any("check that --scheme (gid15) is the scheme of the label files" in ln for ln in lines)


needs_data = pytest.mark.skipif(not (GID / "images").is_dir() or not CKPT.is_file(),
                                reason="needs ../shared/data/gid15 and the shipped GID checkpoint")


def _run(args, cwd):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "seghz", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=env, check=False)


@needs_data
def test_evaluate_warns_on_copies_of_training_tiles_and_says_what_it_measured(tmp_path):
    import cv2

    from seghz.models.checkpoint import read_metadata

    test = set(read_metadata(CKPT)["test_stems"])
    # two training tiles with texture (a near-uniform tile is only ever matched byte for byte)
    train = [s for s in sorted(p.stem for p in (GID / "images").glob("*.png") if p.stem not in test)
             if cv2.imread(str(GID / "images" / f"{s}.png"), cv2.IMREAD_GRAYSCALE).std() > 25][:2]
    held = sorted(test)[:2]
    d = tmp_path / "mine"
    (d / "images").mkdir(parents=True)
    (d / "labels").mkdir()
    for i, s in enumerate(train + held):
        img = cv2.imread(str(GID / "images" / f"{s}.png"))
        if s in train:  # re-encoded as JPEG and turned: still a copy
            img = np.ascontiguousarray(np.rot90(img))
            lbl = np.ascontiguousarray(np.rot90(cv2.imread(str(GID / "labels" / f"{s}.png"), cv2.IMREAD_UNCHANGED)))
            cv2.imwrite(str(d / "images" / f"t{i}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
            cv2.imwrite(str(d / "labels" / f"t{i}.png"), lbl)
        else:
            shutil.copy(GID / "images" / f"{s}.png", d / "images" / f"t{i}.png")
            shutil.copy(GID / "labels" / f"{s}.png", d / "labels" / f"t{i}.png")
    out = tmp_path / "e.json"
    p = _run(["evaluate", "--checkpoint", CKPT, "--images", d / "images", "--labels", d / "labels", "--scheme",
              "gid15", "--tta", "none", "--json", out], cwd=tmp_path)  # run from elsewhere: paths resolve
    assert p.returncode == 0, p.stderr
    assert "WARNING: 2 of the 4 image(s) are copies of images the checkpoint trained on" in p.stderr
    assert f"t0.jpg = {train[0]}.png" in p.stderr
    assert f"checkpoint {CKPT} (hz7); labels read as gid15 -> hz7" in p.stdout
    assert "% interval over the 4 images (scene bootstrap, 2000 rounds)" in p.stdout
    r = json.loads(out.read_text())
    assert r["label_scheme"] == "gid15" and r["scheme"] == "hz7"
    assert r["miou_interval"]["lo"] <= r["miou"] <= r["miou_interval"]["hi"]
    # held-out tiles only: no warning
    for f in list((d / "images").glob("*.jpg")):
        f.unlink()
        (d / "labels" / f"{f.stem}.png").unlink()
    p = _run(["evaluate", "--checkpoint", CKPT, "--images", d / "images", "--labels", d / "labels", "--scheme",
              "gid15", "--tta", "none"], cwd=tmp_path)
    assert p.returncode == 0 and "WARNING" not in p.stderr, p.stderr


@pytest.mark.skipif(not DUBAI.is_dir() or not CKPT.is_file(), reason="needs ../shared/data/dubai and the GID checkpoint")
def test_evaluate_on_dubai_names_the_classes_it_cannot_score(tmp_path):
    import cv2

    tile = min(p for p in DUBAI.iterdir() if p.is_dir())
    img_p = min((tile / "images").iterdir())
    lbl_p = tile / "masks" / f"{img_p.stem}.png"
    d = tmp_path / "dub"
    (d / "images").mkdir(parents=True)
    (d / "labels").mkdir()
    cv2.imwrite(str(d / "images" / "a.png"), cv2.resize(cv2.imread(str(img_p)), None, fx=0.25, fy=0.25,
                                                        interpolation=cv2.INTER_AREA))
    lbl = cv2.imread(str(lbl_p), cv2.IMREAD_COLOR)
    cv2.imwrite(str(d / "labels" / "a.png"), cv2.resize(lbl, None, fx=0.25, fy=0.25, interpolation=cv2.INTER_NEAREST))
    out = tmp_path / "d.json"
    p = _run(["evaluate", "--checkpoint", CKPT, "--images", d / "images", "--labels", d / "labels", "--scheme",
              "dubai", "--tta", "none", "--json", out], cwd=ROOT)
    assert p.returncode == 0, p.stderr
    r = json.loads(out.read_text())
    assert "labels read as dubai -> hz7" in p.stdout
    assert "Forest" not in [n for n in r["per_class"] if r["per_class"][n]["support"] > 0]
    if r["per_class"]["OpenArea"]["support"]:
        assert "OpenArea" in r["untrained"] and "note: OpenArea:" in p.stdout
    if r["per_class"]["Forest"]["predicted"]:
        assert "Forest" in r["unexpressible"] and "note: Forest: no class of the label scheme 'dubai'" in p.stdout
    assert r["untrained"] or r["unexpressible"]  # a GID model on Dubai labels meets at least one of them
    assert r["miou_comparable"] is None or r["miou_comparable"] >= r["miou"]


def test_evaluate_notes_non_8bit_images_without_rasterio_warnings(tmp_path):
    import warnings

    import rasterio

    from seghz.data.io import write_index_mask, write_rgb

    demo = ROOT / "checkpoints" / "demo_hz7.safetensors"
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    rng = np.random.default_rng(0)
    write_rgb(tmp_path / "images" / "a.png", rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # writing it without a geotransform warns too; that is not under test
        with rasterio.open(tmp_path / "images" / "b.tif", "w", driver="GTiff", width=64, height=64, count=3,
                           dtype="uint16") as ds:  # a pixel-space 16-bit TIFF
            ds.write(rng.integers(0, 4096, (3, 64, 64), dtype=np.uint16))
    for s in ("a", "b"):
        write_index_mask(tmp_path / "labels" / f"{s}.png", np.ones((64, 64), np.uint8))
    p = _run(["evaluate", "--checkpoint", demo, "--images", tmp_path / "images", "--labels", tmp_path / "labels",
              "--scheme", "hz7", "--tta", "none"], cwd=ROOT)
    assert p.returncode == 0, p.stderr
    assert "note: 1 image(s) are not 8-bit (e.g. b.tif): each is stretched from its 2nd-98th percentile" in p.stderr
    assert "NotGeoreferencedWarning" not in p.stderr and "Warning" not in p.stderr
    assert "labels in hz7" in p.stdout and "scored 2 image(s)" in p.stdout
