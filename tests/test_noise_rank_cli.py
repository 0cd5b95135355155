"""``python -m seghz noise-rank``: end to end on a tiny synthetic folder, bad inputs, and 3 real GID tiles."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_core import GID_DIR, colour_folder, need_shared

from seghz.classes import get_scheme
from seghz.cli import main
from seghz.data.io import write_index_mask, write_rgb

ROOT = Path(__file__).resolve().parents[1]
HZ7 = get_scheme("hz7")
QUEUE_KEYS = {"stem", "bbox", "pixels", "score", "label_class", "predicted_class", "label_id", "predicted_id",
              "label_index", "predicted_index"}


def _ckpt(path: Path, scheme: str) -> Path:
    from seghz.models.checkpoint import save_checkpoint
    from seghz.models.registry import build_model

    sch = get_scheme(scheme)
    torch.manual_seed(0)
    model = build_model("Segformer", "tu-efficientnet_lite0", sch.num_classes)
    meta = {"arch": "Segformer", "encoder": "tu-efficientnet_lite0", "num_classes": sch.num_classes,
            "scheme": sch.to_json(), "normalization": {"mean": [0.5] * 3, "std": [0.5] * 3}, "tile_size": 64}
    return save_checkpoint(path, model, meta)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    return _ckpt(tmp_path_factory.mktemp("ck") / "tiny.safetensors", "hz7")


def _folder(root: Path, sizes=((40, 56), (48, 48), (33, 70))) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(sizes):
        img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        lbl = np.zeros((h, w), np.uint8)
        lbl[: h // 2] = 2
        lbl[h // 2:, w // 2:] = 5
        lbl[:3, :4] = 255  # ignored
        write_rgb(root / "images" / f"t{i}.png", img)
        write_index_mask(root / "labels" / f"t{i}.png", HZ7.index_to_ids(lbl, unlabelled=0))
    return root / "images", root / "labels"


def _cli(*args, timeout=300):
    env = {"HF_HUB_OFFLINE": "1", "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT),
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "seghz", "noise-rank", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, check=False, timeout=timeout, env=env)


def _check_outputs(images: Path, labels: Path, scores: Path, queue_path: Path, read_label) -> list[dict]:
    stems = sorted(p.stem for p in images.iterdir())
    assert sorted(p.stem for p in scores.glob("*.npy")) == stems
    assert not list(scores.glob(".*"))  # no temporary files left
    for s in stems:
        sc = np.load(scores / f"{s}.npy")
        lbl = read_label(labels / f"{s}.png")
        assert sc.dtype == np.float32 and sc.shape == lbl.shape
        assert np.array_equal(np.isneginf(sc), lbl == 255)
        assert np.all(np.isfinite(sc[lbl != 255]))
    q = json.loads(queue_path.read_text())
    assert isinstance(q, list)
    for it in q:
        assert QUEUE_KEYS <= set(it)
        r0, c0, r1, c1 = it["bbox"]
        assert 0 <= r0 < r1 and 0 <= c0 < c1 and it["pixels"] <= (r1 - r0) * (c1 - c0)
        assert it["stem"] in stems
    assert [it["score"] for it in q] == sorted((it["score"] for it in q), reverse=True)
    return q


def test_noise_rank_end_to_end(tiny_ckpt, tmp_path):
    from seghz.data.io import read_label

    images, labels = _folder(tmp_path)
    scores, qp = tmp_path / "scores", tmp_path / "out" / "queue.json"
    p = _cli("--checkpoint", tiny_ckpt, "--images", images, "--labels", labels, "--scheme", "hz7", "--tta", "d4",
             "--scores", scores, "--json", qp, "--device", "cpu", "--min-pixels", "1", "--top-fraction", "0.2")
    assert p.returncode == 0, p.stdout + p.stderr
    q = _check_outputs(images, labels, scores, qp, lambda f: read_label(f, HZ7))
    assert q, "the top 20 % of the pixels must form queue items"
    assert {it["label_class"] for it in q} <= set(HZ7.names) and all(HZ7.names[it["label_index"]] == it["label_class"] for it in q)


def test_noise_rank_crosswalked_labels_in_process(tiny_ckpt, tmp_path):
    """Labels in loveda are crosswalked into the checkpoint's hz7 (in-process: no second interpreter)."""
    from seghz.classes import index_crosswalk
    from seghz.data.io import read_label

    lv = get_scheme("loveda")
    rng = np.random.default_rng(1)
    for i in range(2):
        write_rgb(tmp_path / "im" / f"s{i}.png", rng.integers(0, 255, (32, 40, 3), dtype=np.uint8))
        lab = rng.integers(0, lv.num_classes, (32, 40)).astype(np.uint8)
        write_index_mask(tmp_path / "lb" / f"s{i}.png", lv.index_to_ids(lab))
    torch.set_num_threads(1)
    rc = main(["noise-rank", "--checkpoint", str(tiny_ckpt), "--images", str(tmp_path / "im"), "--labels",
               str(tmp_path / "lb"), "--scheme", "loveda", "--scores", str(tmp_path / "sc"), "--json", str(tmp_path / "q.json"),
               "--device", "cpu"])
    assert rc == 0
    lut = index_crosswalk("loveda", "hz7")
    _check_outputs(tmp_path / "im", tmp_path / "lb", tmp_path / "sc", tmp_path / "q.json", lambda f: lut[read_label(f, lv)])


def test_noise_rank_bad_inputs(tiny_ckpt, tmp_path, capsys):
    images, labels = _folder(tmp_path / "ok")
    base = ["noise-rank", "--checkpoint", str(tiny_ckpt), "--scheme", "hz7", "--scores", str(tmp_path / "sc"), "--device", "cpu"]

    def run(*extra):
        rc = main([*base, *map(str, extra)])
        return rc, capsys.readouterr().err

    # no pairs: empty image folder
    (tmp_path / "empty").mkdir()
    rc, err = run("--images", tmp_path / "empty", "--labels", labels)
    assert rc == 2 and "error:" in err and str(tmp_path / "empty") in err and "no images" in err
    # a missing folder
    rc, err = run("--images", tmp_path / "nope", "--labels", labels)
    assert rc == 2 and str(tmp_path / "nope") in err and "does not exist" in err
    # images whose stems have no label
    (tmp_path / "other").mkdir()
    write_rgb(tmp_path / "other" / "zzz.png", np.zeros((8, 8, 3), np.uint8))
    rc, err = run("--images", tmp_path / "other", "--labels", labels)
    assert rc == 2 and "zzz" in err
    # size mismatch: the error names the label file
    bad = tmp_path / "badlabels"
    bad.mkdir()
    for p in labels.iterdir():
        (bad / p.name).write_bytes(p.read_bytes())
    write_index_mask(bad / "t1.png", np.ones((20, 21), np.uint8))
    rc, err = run("--images", images, "--labels", bad)
    assert rc == 2 and "t1.png" in err and "size" in err
    # unknown scheme, missing checkpoint
    rc, err = main([*base[:4], "nope", *base[5:], "--images", str(images), "--labels", str(labels)]), capsys.readouterr().err
    assert rc == 2 and "unknown class scheme 'nope'" in err
    rc, err = main(["noise-rank", "--checkpoint", str(tmp_path / "no.safetensors"), "--images", str(images), "--labels",
                    str(labels), "--scheme", "hz7", "--scores", str(tmp_path / "sc")]), capsys.readouterr().err
    assert rc == 2 and "no.safetensors" in err


def test_noise_rank_no_crosswalk(tmp_path, capsys):
    ck = _ckpt(tmp_path / "lv.safetensors", "loveda")
    images, labels = _folder(tmp_path / "d")
    rc = main(["noise-rank", "--checkpoint", str(ck), "--images", str(images), "--labels", str(labels), "--scheme", "hz7",
               "--scores", str(tmp_path / "sc"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and "no crosswalk from scheme 'hz7' to 'loveda'" in err
    assert not (tmp_path / "sc").exists()


def test_noise_rank_real_gid_tiles(tmp_path):
    """3 held-out GID-15 tiles through the shipped checkpoint (labels gid15 -> hz7)."""
    gid = need_shared(GID_DIR)
    ck = ROOT / "checkpoints" / "gid15_hz7_unet_lite0.safetensors"
    if not ck.is_file():
        pytest.skip(f"{ck} is absent")
    from seghz.data.io import read_label
    from seghz.evaluate import label_for_checkpoint
    from seghz.models.checkpoint import read_metadata

    stems = sorted(read_metadata(ck)["test_stems"])[:3]
    for sub in ("images", "labels"):
        (tmp_path / sub).mkdir()
        for s in stems:
            (tmp_path / sub / f"{s}.png").symlink_to(gid / sub / f"{s}.png")
    scores, qp = tmp_path / "scores", tmp_path / "q.json"
    p = _cli("--checkpoint", ck, "--images", tmp_path / "images", "--labels", tmp_path / "labels", "--scheme", "gid15",
             "--scores", scores, "--json", qp, "--device", "cpu")
    assert p.returncode == 0, p.stdout + p.stderr
    g = get_scheme("gid15")
    _check_outputs(tmp_path / "images", tmp_path / "labels", scores, qp,
                   lambda f: label_for_checkpoint(read_label(f, g), "gid15", "hz7"))


def test_noise_rank_cross_fit_finds_a_flip_the_model_has_absorbed(tiny_ckpt, tmp_path):
    """A model whose head was fitted on the noisy labels (in-sample) finds the flip less suspicious than
    ``--cross-fit 2`` (each image scored by a head fitted on the other fold's labels only)."""
    from seghz.data.io import list_pairs, read_pair
    from seghz.review.crossfit import fold_assignment, held_out_head

    torch.set_num_threads(1)
    images, labels = colour_folder(tmp_path)
    pairs = [read_pair(ip, lp, HZ7) for ip, lp in list_pairs(images, labels)]
    noisy_model = held_out_head(tiny_ckpt, pairs, tmp_path / "noisy.safetensors", steps=100, tile=64)
    runs = {}
    for name, extra in (("in-sample", []), ("cross-fit", ["--cross-fit", "2"])):
        sc = tmp_path / name
        rc = main(["noise-rank", "--checkpoint", str(noisy_model), "--images", str(images), "--labels", str(labels),
                   "--scheme", "hz7", "--scores", str(sc), "--json", str(tmp_path / f"{name}.json"), "--device", "cpu",
                   *extra])
        assert rc == 0
        runs[name] = np.load(sc / "c0.npy")
    flip = np.zeros((48, 48), bool)
    flip[:24] = True
    ins, cf = runs["in-sample"][flip].mean(), runs["cross-fit"][flip].mean()
    assert cf > ins + 0.2, f"cross-fit suspicion of the flip {cf:.3f} vs in-sample {ins:.3f}"
    assert np.median(runs["cross-fit"][~flip]) < 0.5  # the clean pixels stay unsuspicious
    # folds: every image in exactly one; too few images for the folds is a clear error
    folds = fold_assignment(7, 3)
    assert sorted(i for f in folds for i in f) == list(range(7)) and all(folds)
    with pytest.raises(ValueError, match="cannot be split"):
        fold_assignment(2, 3)
    with pytest.raises(ValueError, match="at least 2 folds"):
        fold_assignment(5, 1)
