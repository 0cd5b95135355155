"""Held-out images that are copies of images outside the hold-out: GID-15 has four byte-identical pairs under two
names, and the shipped checkpoint's test split holds one of them (``artificial_grassland_71`` = the training tile
``artificial_grassland_75``). Evaluations on a checkpoint's split leave such copies out and say so; the benches'
folders of "new" tiles are checked for copies of training tiles, re-encoded or turned ones included."""
from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_heldout import CKPT, GID, needs_gid  # the same data, checkpoint and skip reason (puts the repo on sys.path)

from bench.heldout import held_out, near_copies, trained_images
from seghz.cli import checkpoint_split_stems


def _texture(seed: int, size=(96, 128)) -> np.ndarray:
    """A photograph-like image: smooth random blobs plus fine noise, different for every seed."""
    rng = np.random.default_rng(seed)
    low = cv2.resize(rng.random((6, 8, 3)).astype(np.float32), size[::-1], interpolation=cv2.INTER_CUBIC)
    img = 40 + 170 * low + rng.normal(0, 6, (*size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _folder(root: Path, images: dict[str, np.ndarray]) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for stem, img in images.items():
        cv2.imwrite(str(root / "images" / f"{stem}.png"), img)
        cv2.imwrite(str(root / "labels" / f"{stem}.png"), np.zeros(img.shape[:2], np.uint8))
    return root


def test_checkpoint_split_leaves_out_copies_of_images_outside_it(tmp_path, capsys):
    a, b, c = _texture(1), _texture(2), _texture(3)
    d = _folder(tmp_path / "d", {"t1": a, "t2": b, "tr1": c, "tr2": a, "v1": b, "t3": c})
    meta = {"test_stems": ["t1", "t2", "t3"], "val_stems": ["v1"]}
    got = checkpoint_split_stems("ck", meta, d / "images", d / "labels", "gid15", "test")
    # t1 = tr2 and t3 = tr1 (training tiles); t2 = v1 is outside the test split too
    assert got == set()
    err = capsys.readouterr().err
    assert "left out 3 test image(s) identical to an image outside the test split" in err
    assert "t1 = tr2" in err and "t3 = tr1" in err
    meta = {"test_stems": ["t2", "v1"], "val_stems": ["v1"]}
    assert checkpoint_split_stems("ck", meta, d / "images", d / "labels", "gid15", "test") == {"t2", "v1"}
    assert capsys.readouterr().err == ""  # the two copies are both in the split: nothing leaks
    assert checkpoint_split_stems("ck", meta, d / "images", d / "labels", "gid15", "val") == set()
    assert "left out 1 val image(s)" in capsys.readouterr().err


def test_held_out_test_tiles_leave_out_copies(tmp_path, capsys):
    a, b, c = _texture(1), _texture(2), _texture(3)
    d = _folder(tmp_path / "d", {"t1": a, "t2": b, "tr1": a, "tr2": c})
    assert [s for s, _, _ in held_out(d, ["t1", "t2"], "test")] == ["t2"]
    assert "t1 = tr1" in capsys.readouterr().err
    d2 = _folder(tmp_path / "d2", {"t1": a, "tr1": a})
    with pytest.raises(ValueError, match="none of the checkpoint's 1 held-out test stems"):
        held_out(d2, ["t1"], "test")


def _variants(img: np.ndarray, tmp: Path) -> dict[str, Path]:
    out = {}
    _ok, jpg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 70])
    forms = {
        "jpeg70": cv2.imdecode(jpg, cv2.IMREAD_COLOR),
        "half": cv2.resize(img, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA),
        "x1.5": cv2.resize(img, None, fx=1.5, fy=1.5, interpolation=cv2.INTER_LINEAR),
        "rot90": np.ascontiguousarray(np.rot90(img)),
        "mirror": np.ascontiguousarray(img[:, ::-1]),
        "brighter": np.clip(img.astype(np.float32) * 1.15 + 12, 0, 255).astype(np.uint8),
    }
    for name, x in forms.items():
        p = tmp / f"{name}.png"
        cv2.imwrite(str(p), x)
        out[name] = p
    return out


def test_near_copies_finds_reencoded_rescaled_turned_and_brightened_copies(tmp_path):
    train = _folder(tmp_path / "train", {f"tr{i}": _texture(i) for i in range(6)})
    tr_files = sorted((train / "images").iterdir())
    (tmp_path / "v").mkdir()
    copies = _variants(_texture(4), tmp_path / "v")
    got = near_copies(tr_files, list(copies.values()))
    assert [(x.stem, y.stem) for x, y in got] == [("tr4", n) for n in copies]
    others = _folder(tmp_path / "others", {f"o{i}": _texture(100 + i) for i in range(6)})
    assert near_copies(tr_files, sorted((others / "images").iterdir())) == []
    # flat images: equal grey is a copy, 3 grey levels apart is not
    flat = _folder(tmp_path / "flat", {"f": np.full((32, 32, 3), 90, np.uint8), "g": np.full((32, 32, 3), 93, np.uint8)})
    f, g = (flat / "images" / "f.png"), (flat / "images" / "g.png")
    (tmp_path / "fc").mkdir()
    shutil.copy(f, tmp_path / "fc" / "same.png")
    assert near_copies([f], [tmp_path / "fc" / "same.png", g]) == [(f, tmp_path / "fc" / "same.png")]
    # a flat tile is only ever a byte copy: the same grey written as a JPEG (other bytes) is not a copy (open water,
    # cloud or nodata tiles look alike without being one another)
    cv2.imwrite(str(tmp_path / "fc" / "same.jpg"), np.full((32, 32, 3), 90, np.uint8))
    assert near_copies([f], [tmp_path / "fc" / "same.jpg"]) == []
    # a byte twin is named before a look-alike listed earlier
    tex = _texture(9)
    cv2.imwrite(str(tmp_path / "fc" / "look.png"), tex)
    _ok, jpg = cv2.imencode(".jpg", tex, [cv2.IMWRITE_JPEG_QUALITY, 95])
    (tmp_path / "fc" / "twin.jpg").write_bytes(jpg.tobytes())
    (tmp_path / "fc" / "copy_of_twin.jpg").write_bytes(jpg.tobytes())
    got = near_copies([tmp_path / "fc" / "look.png", tmp_path / "fc" / "twin.jpg"], [tmp_path / "fc" / "copy_of_twin.jpg"])
    assert got == [(tmp_path / "fc" / "twin.jpg", tmp_path / "fc" / "copy_of_twin.jpg")]


def test_held_out_all_refuses_copies_of_training_images(tmp_path):
    train = _folder(tmp_path / "train", {f"tr{i}": _texture(i) for i in range(4)} | {"t0": _texture(50)})
    mine = _folder(tmp_path / "mine", {"new1": _texture(77), "sneaky": np.ascontiguousarray(np.rot90(_texture(2)))})
    trained = trained_images(train, ["t0"])
    assert [p.stem for p in trained] == ["tr0", "tr1", "tr2", "tr3"]
    with pytest.raises(ValueError, match=r"1 image\(s\) are copies of images the checkpoint trained on, e.g. .*sneaky.png"
                                         r" = .*tr2.png"):
        held_out(mine, ["t0"], "all", trained_on=trained)
    assert [s for s, _, _ in held_out(mine, ["t0"], "all")] != []  # without the training images: not checked
    # a folder that does not hold every test stem is not the one the checkpoint was split from
    assert trained_images(train, ["t0", "elsewhere"]) == [] and trained_images(tmp_path / "none", ["t0"]) == []


@needs_gid
def test_gid_has_one_test_tile_that_is_a_training_tile(capsys):
    from seghz.models.checkpoint import read_metadata

    meta = read_metadata(CKPT)
    stems = checkpoint_split_stems(CKPT, meta, GID / "images", GID / "labels", "gid15", "test")
    assert set(meta["test_stems"]) - stems == {"artificial_grassland_71"} and len(stems) == 124
    assert "artificial_grassland_71 = artificial_grassland_75" in capsys.readouterr().err
    # the thumbnail check finds that pair and no other between the test tiles and the training tiles
    test_files = sorted(GID / "images" / f"{s}.png" for s in meta["test_stems"])
    got = near_copies(trained_images(GID, meta["test_stems"]), test_files)
    assert [(x.stem, y.stem) for x, y in got] == [("artificial_grassland_75", "artificial_grassland_71")]


def test_evaluating_a_checkpoints_own_validation_split_is_not_called_training(tmp_path, capsys):
    """`--stems-from-checkpoint val` scores validation tiles in the training folder itself: not copies of training
    images (the review saw "59 of the 59 image(s) are copies …: x.png = x.png"). A training tile scored in place is
    named as one."""
    from seghz.cli import _warn_training_copies

    d = _folder(tmp_path / "d", {"t1": _texture(1), "v1": _texture(2), "tr1": _texture(3)})
    legacy = {"recipe": {"extra": {"data": {"images": str(d / "images")}}}, "test_stems": ["t1"]}
    _warn_training_copies(tmp_path / "ck.safetensors", legacy, [d / "images" / "v1.png"], held={"v1"})
    assert capsys.readouterr().err == ""
    recorded = {**legacy, "val_stems": ["v1"]}
    _warn_training_copies(tmp_path / "ck.safetensors", recorded, [d / "images" / "v1.png"])
    assert capsys.readouterr().err == ""
    _warn_training_copies(tmp_path / "ck.safetensors", recorded, [d / "images" / "tr1.png", d / "images" / "t1.png"])
    err = capsys.readouterr().err
    assert "WARNING: 1 of the 2 image(s) are copies of images the checkpoint trained on" in err
    assert "tr1.png (a training image itself)" in err
    # the command line is where the folder is recorded for checkpoints without recipe.extra.data
    by_cmd = {"command": f"python -m seghz train --images '{d / 'images'}' --labels x", "test_stems": ["t1"],
              "val_stems": ["v1"]}
    _warn_training_copies(tmp_path / "ck.safetensors", by_cmd, [d / "images" / "tr1.png"])
    assert "tr1.png (a training image itself)" in capsys.readouterr().err


def test_the_copy_check_is_skipped_with_a_note_over_its_size_budget(tmp_path, capsys, monkeypatch):
    import seghz.data.copies as cp
    from seghz.cli import _warn_training_copies

    d = _folder(tmp_path / "d", {"t1": _texture(1), "tr1": _texture(3)})
    meta = {"recipe": {"extra": {"data": {"images": str(d / "images")}}}, "test_stems": ["t1"], "val_stems": []}
    assert cp.check_is_affordable([d / "images" / "tr1.png"])
    monkeypatch.setattr(cp, "CHECK_MAX_BYTES", 10)
    assert not cp.check_is_affordable([d / "images" / "tr1.png"])
    _warn_training_copies(tmp_path / "ck.safetensors", meta, [d / "images" / "tr1.png"])
    err = capsys.readouterr().err
    assert "note: not checked whether these images copy the checkpoint's training images (1 files" in err
    assert "WARNING" not in err
