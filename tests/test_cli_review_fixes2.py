"""CLI fixes from a second analyst's review: no command overwrites its own input or a registered model, counts and
ids say what they mean, Ctrl-C is one line, the gate says when a model is judged on scenes it learned from, and
errors name what is wrong.

In-process calls of :func:`seghz.cli.main` (one subprocess for Ctrl-C) on tiny synthetic files: the shipped demo
checkpoint, or a small FPN/MobileNetV3 model saved by the test (fast on the CPU)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from seghz.classes import get_scheme
from seghz.cli import main
from seghz.data.io import write_index_mask, write_rgb
from seghz.store import Workspace

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "checkpoints" / "demo_hz7.safetensors"
HZ7 = get_scheme("hz7")


def _err(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def _pair(folder: Path, stem: str, size=(64, 64), seed: int = 0) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed + len(stem))
    img, lbl = folder / "images" / f"{stem}.png", folder / "labels" / f"{stem}.png"
    write_rgb(img, rng.integers(0, 255, (*size, 3), dtype=np.uint8))
    write_index_mask(lbl, rng.integers(1, 8, size, dtype=np.uint8))  # hz7 ids 1..7
    return img, lbl


def _small_ckpt(path: Path, **extra) -> Path:
    """A small FPN model (tile 64), with extra metadata (test_stems, parent, recipe ...)."""
    from seghz.models.checkpoint import save_checkpoint
    from seghz.models.registry import build_model

    torch.manual_seed(0)
    m = build_model("FPN", "tu-mobilenetv3_small_050", HZ7.num_classes)
    meta = {"arch": "FPN", "encoder": "tu-mobilenetv3_small_050", "num_classes": HZ7.num_classes,
            "scheme": HZ7.to_json(), "normalization": {"mean": [0.5] * 3, "std": [0.5] * 3}, "tile_size": 64,
            "metrics": {"val": {"miou": 0.5}}, **extra}
    return save_checkpoint(path, m, meta)


def _geotiff(path: Path, rgba: np.ndarray) -> Path:
    import rasterio
    from rasterio.transform import from_origin

    h, w, c = rgba.shape
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=c, dtype="uint8", crs="EPSG:3857",
                       transform=from_origin(13522000, 3650000, 1.0, 1.0),
                       **({"photometric": "RGB", "alpha": "YES"} if c == 4 else {})) as ds:
        ds.write(np.moveaxis(rgba, 2, 0))
    return path


# 1 ------------------------------------------------------------------------------------------------------------------
def test_predict_and_predict_scene_refuse_to_overwrite_their_input(tmp_path, capsys):
    img, _ = _pair(tmp_path, "a")
    _pair(tmp_path, "b")
    before = {p.name: p.read_bytes() for p in (tmp_path / "images").iterdir()}
    ck = ["--checkpoint", str(DEMO), "--device", "cpu"]
    assert main(["predict", *ck, "--input", str(tmp_path / "images"), "--output", str(tmp_path / "images")]) == 2
    err = _err(capsys)
    assert f"{tmp_path / 'images'}: --output is the input folder" in err
    # the same folder through a symlink
    (tmp_path / "alias").symlink_to(tmp_path / "images")
    assert main(["predict", *ck, "--input", str(tmp_path / "images"), "--output", str(tmp_path / "alias")]) == 2
    assert "is the input folder" in _err(capsys)
    assert main(["predict", *ck, "--input", str(img), "--output", str(img)]) == 2
    assert f"{img}: --output would overwrite the input image" in _err(capsys)
    os.link(img, tmp_path / "hard.png")  # a hard link: another name, the same file
    assert main(["predict", *ck, "--input", str(img), "--output", str(tmp_path / "hard.png")]) == 2
    assert f"(the same file as {img})" in _err(capsys)
    assert {p.name: p.read_bytes() for p in (tmp_path / "images").iterdir()} == before
    tif = _geotiff(tmp_path / "g.tif", np.full((64, 64, 3), 90, np.uint8))
    raw = tif.read_bytes()
    assert main(["predict-scene", *ck, "--input", str(tif), "--output", str(tif)]) == 2
    assert f"{tif}: --output would overwrite the input image" in _err(capsys)
    assert main(["predict-scene", *ck, "--input", str(tif), "--output", str(tmp_path / "o.tif"), "--png",
                 str(tif)]) == 2
    assert tif.read_bytes() == raw and not (tmp_path / "o.tif").exists()
    # another folder is fine
    assert main(["predict", *ck, "--input", str(tmp_path / "images"), "--output", str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.png"]


# 2 ------------------------------------------------------------------------------------------------------------------
def test_train_out_never_replaces_a_registered_checkpoint_and_needs_overwrite_for_a_file(tmp_path, capsys,
                                                                                           monkeypatch):
    import seghz.train.trainer as trainer_mod

    _pair(tmp_path, "a")
    ws = tmp_path / "ws"
    src = tmp_path / "model.safetensors"
    shutil.copy(DEMO, src)
    assert main(["--workspace", str(ws), "checkpoints", "add", str(src)]) == 0
    cid = Workspace(ws).list_checkpoints()[0].id
    capsys.readouterr()
    calls = []
    monkeypatch.setattr(trainer_mod, "train", lambda *a, **k: calls.append(a[2]) or {
        "resumed_from": None, "checkpoint": str(a[2]), "best_val": None, "state": None})
    base = ["--workspace", str(ws), "train", "--images", str(tmp_path / "images"), "--labels", str(tmp_path / "labels"),
            "--scheme", "hz7", "--test-fraction", "0", "--val-count", "0", "--out"]
    active = ws / "checkpoints" / "model.safetensors"
    raw = active.read_bytes()
    for extra in ([], ["--overwrite"], ["--resume"], ["--resume", "--overwrite"]):
        assert main([*base, str(active), *extra]) == 2
        err = _err(capsys)
        assert f"is the weights file of checkpoint '{cid}'" in err and "pick another --out path" in err
    (tmp_path / "alias.safetensors").symlink_to(active)  # another name of the same file
    assert main([*base, str(tmp_path / "alias.safetensors"), "--overwrite"]) == 2
    assert f"checkpoint '{cid}'" in _err(capsys)
    assert active.read_bytes() == raw and calls == []
    other = tmp_path / "old_run.safetensors"
    other.write_bytes(b"an earlier run")
    assert main([*base, str(other)]) == 2
    assert f"{other}: exists already; give another --out path, --resume" in _err(capsys)
    assert main([*base, str(other), "--resume"]) == 2  # no training state of that run to continue
    assert "finds no training state" in _err(capsys)
    assert calls == []
    (tmp_path / "old_run.state.safetensors").write_bytes(b"state")
    assert main([*base, str(other), "--resume"]) == 0
    assert main([*base, str(other), "--overwrite"]) == 0
    assert main([*base, str(tmp_path / "new.safetensors")]) == 0
    assert len(calls) == 3


def test_docs_stage1_example_cannot_clobber_the_shipped_model():
    text = (ROOT / "docs" / "checkpoints.md").read_text()
    assert "--out checkpoints/gid15_hz7_unet_lite0.safetensors" not in text


# 3 ------------------------------------------------------------------------------------------------------------------
def test_compare_counts_only_the_images_it_scores(tmp_path, capsys):
    for stem in ("a", "b"):
        _pair(tmp_path, stem)
    ref = _small_ckpt(tmp_path / "ref.safetensors", test_stems=["a", "b"] + [f"gone{i}" for i in range(40)])
    cand = _small_ckpt(tmp_path / "cand.safetensors", test_stems=["a"])
    assert main(["compare", "--checkpoint", str(ref), "--candidate", str(cand), "--images", str(tmp_path / "images"),
                 "--labels", str(tmp_path / "labels"), "--scheme", "hz7", "--stems-from-checkpoint", "--rounds", "50",
                 "--device", "cpu"]) == 0
    err = _err(capsys)
    assert "warning: 1 of these 2 images are not in the candidate's recorded test split" in err, err


# 4 ------------------------------------------------------------------------------------------------------------------
def test_ctrl_c_is_one_line_and_exit_130(tmp_path):
    big = tmp_path / "big.png"
    write_rgb(big, np.random.default_rng(0).integers(0, 255, (3072, 3072, 3), dtype=np.uint8))
    out = tmp_path / "out.tif"
    # `python -m seghz`, with Python's own Ctrl-C handler even where a background shell started us with SIGINT ignored
    run = "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); from seghz.cli import entry; entry()"
    p = subprocess.Popen([sys.executable, "-c", run, "predict-scene", "--checkpoint", str(DEMO), "--input", str(big),
                          "--output", str(out), "--device", "cpu", "--compile", "off"],
                         stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=tmp_path,
                         env={**os.environ, "HF_HUB_OFFLINE": "1", "SEGHZ_DEBUG": ""})
    try:
        first = p.stderr.readline()  # the first progress line: the scene is being predicted
        assert first.startswith("predict-scene:"), first
        time.sleep(0.5)
        p.send_signal(signal.SIGINT)
        _, rest = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    err = first + rest
    assert p.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert err.strip().splitlines()[-1] == "interrupted: no output written (the temporary files were removed)"
    assert not out.exists() and not [f for f in tmp_path.iterdir() if f.name.startswith(".out.tif")]


def test_ctrl_c_in_train_says_what_is_kept(tmp_path, capsys, monkeypatch):
    import seghz.train.trainer as trainer_mod

    _pair(tmp_path, "a")

    def stop(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer_mod, "train", stop)
    assert main(["train", "--images", str(tmp_path / "images"), "--labels", str(tmp_path / "labels"), "--scheme", "hz7",
                 "--test-fraction", "0", "--val-count", "0", "--out", str(tmp_path / "m.safetensors")]) == 130
    err = _err(capsys)
    assert err.strip().splitlines()[-1] == ("interrupted: the best checkpoint and the training state of the last finished epoch are "
                           "kept, if one finished (--resume continues the run)")


# 5 ------------------------------------------------------------------------------------------------------------------
def _val_workspace(tmp_path, capsys) -> tuple[Path, list[str]]:
    ws = tmp_path / "ws"
    for stem in ("v1", "v2"):
        img, lbl = _pair(tmp_path / "src", stem, seed=int(stem[1:]))  # two different images
        assert main(["--workspace", str(ws), "import", "--image", str(img), "--label", str(lbl), "--scheme", "hz7",
                     "--split", "val", "--name", stem]) == 0
    capsys.readouterr()
    return ws, [s.id for s in Workspace(ws).list_scenes("val")]


def test_gate_warns_when_a_model_learned_from_the_scenes_it_is_judged_on(tmp_path, capsys):
    ws, val_ids = _val_workspace(tmp_path, capsys)
    w = Workspace(ws)
    from seghz.models.checkpoint import read_metadata

    a = _small_ckpt(ws / "checkpoints" / "a.safetensors")
    b = _small_ckpt(ws / "checkpoints" / "b.safetensors")
    w.register_checkpoint(a, {**read_metadata(a), "scheme": "hz7"}, checkpoint_id="act", train_scenes=[val_ids[0]])
    w.register_checkpoint(b, {**read_metadata(b), "scheme": "hz7"}, checkpoint_id="cand", train_scenes=[])
    w.set_active_checkpoint("act")
    main(["--workspace", str(ws), "checkpoints", "gate", "cand", "--compute"])
    err = _err(capsys)
    assert (f"WARNING: the active model 'act' learned from 1 of the 2 'val' scene(s) the gate scores it on "
            f"({val_ids[0]})") in err and "the verdict favours it" in err
    assert "the candidate 'cand'" not in err


def test_gate_warns_when_val_scenes_copy_a_models_recorded_training_images(tmp_path, capsys):
    ws, _ = _val_workspace(tmp_path, capsys)
    w = Workspace(ws)
    from seghz.models.checkpoint import read_metadata

    shutil.copy(tmp_path / "src" / "images" / "v1.png", tmp_path / "src" / "images" / "held.png")
    # registered from a file: no recorded training scenes, but a recorded training folder holding the val images
    a = _small_ckpt(ws / "checkpoints" / "a.safetensors", test_stems=["held"],
                    recipe={"extra": {"data": {"images": str(tmp_path / "src" / "images")}}})
    b = _small_ckpt(ws / "checkpoints" / "b.safetensors")
    w.register_checkpoint(a, {**read_metadata(a), "scheme": "hz7"}, checkpoint_id="shipped")
    w.register_checkpoint(b, {**read_metadata(b), "scheme": "hz7"}, checkpoint_id="cand", train_scenes=[])
    w.set_active_checkpoint("shipped")
    main(["--workspace", str(ws), "checkpoints", "gate", "cand", "--compute"])
    err = _err(capsys)
    assert ("WARNING: 2 of the 2 'val' scene image(s) are copies of images the active model 'shipped' trained on"
            in err), err


# 6 ------------------------------------------------------------------------------------------------------------------
def test_noise_rank_json_has_indices_and_the_schemes_ids_and_takes_flip(tmp_path, capsys):
    for stem in ("a", "b"):
        _pair(tmp_path, stem)
    ck = _small_ckpt(tmp_path / "m.safetensors")
    q = tmp_path / "q.json"
    assert main(["noise-rank", "--checkpoint", str(ck), "--images", str(tmp_path / "images"), "--labels",
                 str(tmp_path / "labels"), "--scheme", "hz7", "--tta", "flip", "--scores", str(tmp_path / "s"),
                 "--json", str(q), "--top-fraction", "0.2", "--device", "cpu"]) == 0
    items = json.loads(q.read_text())
    assert items
    for it in items:
        assert HZ7.names[it["label_index"]] == it["label_class"] and HZ7.ids[it["label_index"]] == it["label_id"]
        assert HZ7.names[it["predicted_index"]] == it["predicted_class"]
        assert HZ7.ids[it["predicted_index"]] == it["predicted_id"]
    assert any(it["label_id"] != it["label_index"] for it in items)  # hz7 ids count from 1


# 7 ------------------------------------------------------------------------------------------------------------------
def test_errors_say_folder_file_and_truncated(tmp_path, capsys):
    img, _ = _pair(tmp_path, "a")
    assert main(["predict-scene", "--checkpoint", str(DEMO), "--input", str(tmp_path / "images"), "--output",
                 str(tmp_path / "o.tif")]) == 2
    err = _err(capsys)
    assert f"{tmp_path / 'images'}: is a folder" in err and "python -m seghz predict" in err
    assert main(["evaluate", "--checkpoint", str(DEMO), "--images", str(img), "--labels", str(tmp_path / "labels"),
                 "--scheme", "hz7"]) == 2
    assert f"{img}: is a file, not a folder" in _err(capsys)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(DEMO.read_bytes()[: DEMO.stat().st_size // 2])
    assert main(["info", "--checkpoint", str(cut)]) == 2
    err = _err(capsys)
    assert f"{cut}: the checkpoint file is truncated or damaged" in err and "not a SegHZ checkpoint" not in err
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint at all")
    assert main(["info", "--checkpoint", str(junk)]) == 2
    assert "not a SegHZ checkpoint" in _err(capsys)


# 8 ------------------------------------------------------------------------------------------------------------------
def test_registry_rollback_promote_and_add_parent(tmp_path, capsys):
    ws = tmp_path / "ws"
    w = ["--workspace", str(ws)]
    one = _small_ckpt(tmp_path / "one.safetensors")
    two = _small_ckpt(tmp_path / "two.safetensors", run="two")  # other bytes than one's
    assert main([*w, "checkpoints", "add", str(one), "--name", "one"]) == 0
    assert main([*w, "checkpoints", "add", str(two), "--name", "two"]) == 0
    ids = {c.name: c.id for c in Workspace(ws).list_checkpoints()}
    # a file whose metadata says it was fine-tuned from 'two' (the path `seghz train --parent` records)
    child = _small_ckpt(tmp_path / "child.safetensors", parent=str(ws / "checkpoints" / "two.safetensors"))
    capsys.readouterr()
    assert main([*w, "checkpoints", "add", str(child), "--parent", ids["one"]]) == 2
    err = _err(capsys)
    assert f"--parent '{ids['one']}'" in err and f"checkpoint '{ids['two']}'" in err
    assert not (ws / "checkpoints" / "child.safetensors").exists()
    byid = _small_ckpt(tmp_path / "byid.safetensors", parent_id=ids["two"])
    assert main([*w, "checkpoints", "add", str(byid), "--parent", ids["one"]]) == 2
    assert f"('{ids['two']}')" in _err(capsys)
    assert main([*w, "checkpoints", "add", str(child), "--parent", ids["two"], "--name", "child"]) == 0
    assert Workspace(ws).get_checkpoint(_id_of(ws, "child")).parent_id == ids["two"]

    assert main([*w, "checkpoints", "promote", ids["one"]]) == 0
    capsys.readouterr()
    assert main([*w, "checkpoints", "rollback", "--analyst", "Ann"]) == 2  # the first promotion: nothing before it
    assert "nothing to roll back" in _err(capsys)
    # override without a name: refused before the gate runs (no verdict table printed)
    assert main([*w, "checkpoints", "promote", ids["two"], "--override", "--reason", "x"]) == 2
    out_err = capsys.readouterr()
    assert "--analyst NAME" in out_err.err and out_err.out == ""
    assert main([*w, "checkpoints", "promote", ids["two"], "--no-compute", "--override", "--analyst", "Ann",
                 "--reason", "field test"]) == 0
    capsys.readouterr()
    assert main([*w, "checkpoints", "rollback"]) == 2
    assert "give --analyst NAME" in _err(capsys)
    assert Workspace(ws).active_checkpoint().id == ids["two"]
    assert main([*w, "checkpoints", "rollback", "--analyst", "Bo", "--reason", "worse on roads"]) == 0
    p = Workspace(ws).promotion_history()[0]
    assert (p.action, p.analyst, p.reason) == ("rollback", "Bo", "worse on roads")


def _id_of(ws: Path, name: str) -> str:
    return next(c.id for c in Workspace(ws).list_checkpoints() if c.name == name)


# 9 ------------------------------------------------------------------------------------------------------------------
def test_predict_scene_tags_name_the_checkpoint_and_tta(tmp_path, capsys):
    import rasterio

    tif = _geotiff(tmp_path / "g.tif", np.full((64, 64, 3), 120, np.uint8))
    ck = _small_ckpt(tmp_path / "m.safetensors")
    for tta, label in (("flip", "flip"), ("identity,lr", "custom-identity+lr")):
        out = tmp_path / f"o_{label}.tif"
        assert main(["predict-scene", "--checkpoint", str(ck), "--input", str(tif), "--output", str(out), "--tta", tta,
                     "--device", "cpu"]) == 0
        with rasterio.open(out) as ds:
            tags = ds.tags()
            assert ds.tags(1)["scheme"] == "hz7"
        assert tags["SEGHZ_CHECKPOINT"] == str(ck.resolve()) and tags["SEGHZ_TTA"] == label
        assert tags["SEGHZ_SCHEME"] == "hz7" and "SEGHZ_WRITTEN_AT" in tags


# 10 -----------------------------------------------------------------------------------------------------------------
def test_vectors_of_an_unlabelled_scene_a_tiny_tile_and_a_read_only_info(tmp_path, capsys, monkeypatch):
    ws = tmp_path / "ws"
    img, _ = _pair(tmp_path, "a")
    assert main(["--workspace", str(ws), "import", str(img), "--name", "bare"]) == 0
    sid = Workspace(ws).list_scenes()[0].id
    capsys.readouterr()
    out = tmp_path / "l.geojson"
    assert main(["--workspace", str(ws), "vectors", "--scene", sid, "--what", "label", "--out", str(out)]) == 2
    assert f"scene '{sid}': has no label" in _err(capsys) and not out.exists()
    for tile in ("7", "100"):
        assert main(["predict-scene", "--checkpoint", str(DEMO), "--input", str(img), "--output",
                     str(tmp_path / "o.tif"), "--tile", tile]) == 2
        assert f"--tile {tile}: the model window must be a multiple of 32" in _err(capsys)
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.delenv("SEGHZ_WORKSPACE", raising=False)
    assert main(["--workspace", str(empty), "info"]) == 0
    assert "no workspace at" in capsys.readouterr().out
    assert list(empty.iterdir()) == []


# 11 -----------------------------------------------------------------------------------------------------------------
def test_predict_leaves_nodata_out_like_predict_scene(tmp_path, capsys):
    import csv

    from seghz.data.io import read_index_mask

    rgba = np.random.default_rng(1).integers(0, 255, (64, 96, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    rgba[:, :40, 3] = 0  # the left 40 columns are nodata
    tif = _geotiff(tmp_path / "rgba.tif", rgba)
    ck = _small_ckpt(tmp_path / "m.safetensors")
    out = tmp_path / "p.png"
    assert main(["predict", "--checkpoint", str(ck), "--input", str(tif), "--output", str(out), "--areas",
                 "--device", "cpu"]) == 0
    mask = read_index_mask(out)
    assert (mask[:, :40] == 255).all() and (mask[:, 40:] < HZ7.num_classes).all()
    with open(out.with_suffix(".csv")) as f:
        rows = list(csv.DictReader(f))
    assert sum(int(r["pixels"]) for r in rows) == 64 * 56
    assert main(["predict-scene", "--checkpoint", str(ck), "--input", str(tif), "--output", str(tmp_path / "s.tif"),
                 "--device", "cpu"]) == 0
    import rasterio

    with rasterio.open(tmp_path / "s.tif") as ds:
        assert ((ds.read(1) == 255) == (mask == 255)).all()


def test_import_of_a_known_image_is_refused_or_named_and_allowed_on_request(tmp_path, capsys):
    """The review: ``import --image`` had no duplicate check (three river_2 scenes), and a folder import's summary
    named one example ("e.g. …") of what it skipped."""
    ws = tmp_path / "ws"
    img, lbl = _pair(tmp_path, "river_2")
    base = ["--workspace", str(ws), "import", "--image", str(img), "--label", str(lbl), "--scheme", "hz7"]
    assert main(base) == 0
    capsys.readouterr()
    assert main(base) == 2
    err = _err(capsys)
    assert "river_2" in err and len(Workspace(ws).list_scenes()) == 1
    assert main([*base, "--allow-duplicate"]) == 0
    assert len(Workspace(ws).list_scenes()) == 2
    # a folder holding two known images and a new one: both skipped pairs are listed, not "e.g." one
    _pair(tmp_path, "lake_10", seed=5)
    (tmp_path / "images" / "b.png").write_bytes(img.read_bytes())
    (tmp_path / "labels" / "b.png").write_bytes(lbl.read_bytes())
    capsys.readouterr()
    assert main(["--workspace", str(ws), "import", "--images", str(tmp_path / "images"), "--labels",
                 str(tmp_path / "labels"), "--scheme", "hz7"]) == 0
    out = capsys.readouterr().out
    assert "imported 1 scene(s)" in out and "e.g." not in out
    assert "skipped 2 pair(s)" in out and "b.png" in out and "river_2.png" in out


def test_progress_prints_a_warning_in_full_once(capsys):
    from seghz.cli import _tqdm_progress

    cb = _tqdm_progress("train", stream=sys.stdout)  # not a terminal: plain lines
    long = "warning: 3 of 7 classes have no pixel in the training split's labels: " + ", ".join(HZ7.names)
    for f in (0.0, 0.05, 0.5):
        cb(f, long)
    cb(1.0, "done")
    out = capsys.readouterr().out
    assert out.count(long) == 1  # in full (the bar's text is cut to 60 characters), once
