"""Shared helpers for the core-module tests (classes, io, metrics, infer, splits, losses, checkpoint, demo).

Import as ``from helpers_core import ...`` (pytest puts ``tests/`` on ``sys.path``).
"""
from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
HZ_DIR = SHARED_DATA / "hangzhou_airport"
GID_DIR = SHARED_DATA / "gid15"


def need_shared(path: Path) -> Path:
    """Skip the calling test unless ``path`` (inside ../shared/data) exists."""
    if not path.exists():
        pytest.skip(f"real sample data not available: {path} is absent (../shared/data is not part of a fresh clone)")
    return path


def read_palette_csv(path: Path) -> list[tuple[str, tuple[int, int, int]]]:
    """Rows ``name,R,G,B`` of a study palette CSV, in file order (file id = row number + 1)."""
    rows = []
    with open(path, newline="") as f:
        for row in csv.reader(f):
            if not row or not row[0].strip():
                continue
            rows.append((row[0].strip(), (int(row[1]), int(row[2]), int(row[3]))))
    return rows


def encode(arr: np.ndarray, fmt: str) -> bytes:
    """Encode an array with Pillow into the bytes of a PNG / JPEG file."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def files_in(folder: Path) -> list[str]:
    """Names of all entries of a folder (hidden ones included), sorted."""
    return sorted(p.name for p in Path(folder).iterdir())


@pytest.fixture(scope="module", autouse=False)
def torch_one_thread():
    """Run torch on one thread for the module, then restore the old setting.

    The test machine has 2 cores shared with training jobs; torch's 2-thread pool spin-waits under that
    contention and makes tiny convolutions ~100x slower.
    """
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def tiny_train_config(size: int = 32, **kw):
    """A TrainConfig for tiny CPU trainings in tests: FPN + mobilenetv3_small_050, size² crops, 2 epochs of 1 step."""
    from seghz.train.trainer import TrainConfig

    base = {"scheme": "hz7", "arch": "FPN", "encoder": "tu-mobilenetv3_small_050", "encoder_weights": None, "epochs": 2,
            "batch_size": 2, "crop_size": size, "steps_per_epoch": 1, "tile_size": size, "device": "cpu",
            "class_weights": "none", "dice": False, "lr": 1e-3}
    base.update(kw)
    return TrainConfig(**base)


def colour_folder(root: Path, n: int = 4, size: int = 48) -> tuple[Path, Path]:
    """Images whose colour gives the class (red = 2, green = 5, blue = 0). In image 0 the red half is a slightly
    darker red, and labelled 5: a label flip that a head fitted on image 0 itself can learn (dark red → 5) but a
    head fitted on the other images cannot (dark red looks like red → 2)."""
    from seghz.classes import get_scheme
    from seghz.data.io import write_index_mask, write_rgb

    hz7 = get_scheme("hz7")
    for i in range(n):
        img = np.zeros((size, size, 3), np.uint8)
        lbl = np.zeros((size, size), np.uint8)
        img[: size // 2] = (200, 30, 30)
        lbl[: size // 2] = 2
        img[size // 2:, : size // 2] = (30, 190, 40)
        lbl[size // 2:, : size // 2] = 5
        img[size // 2:, size // 2:] = (30, 40, 200)
        if i == 0:
            img[: size // 2] = (165, 25, 25)
            lbl[: size // 2] = 5  # the noise
        write_rgb(root / "images" / f"c{i}.png", img)
        write_index_mask(root / "labels" / f"c{i}.png", hz7.index_to_ids(lbl, unlabelled=0))
    return root / "images", root / "labels"


def halves_scene(seed: int, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """A noisy RGB scene whose right half is class 5 and left half class 0 (brightness follows the class), and its
    label: two classes a tiny model learns in a few steps."""
    rs = np.random.RandomState(seed)
    lbl = np.zeros((size, size), np.uint8)
    lbl[:, size // 2:] = 5
    img = np.clip(lbl[..., None] * 30 + rs.normal(60, 10, (size, size, 3)), 0, 255).astype(np.uint8)
    return img, lbl


def wait_for(pred, what: str, timeout: float = 30.0):
    """Poll ``pred`` every 50 ms until it returns something truthy (returned); fail the test after ``timeout`` s."""
    import time

    import pytest

    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def colour_scene(i: int, size: int = 64):
    """A colour-coded scene for label-noise tests: the colour gives the class (top half red = 2, bottom-left green
    = 5, bottom-right blue = 0), plus Gaussian noise seeded by ``i``. Returns (RGB uint8, class index uint8)."""
    import numpy as np

    rs = np.random.RandomState(i)
    img = np.zeros((size, size, 3), np.float64)
    lbl = np.zeros((size, size), np.uint8)
    img[:] = (30, 40, 200)
    img[: size // 2] = (200, 30, 30)
    lbl[: size // 2] = 2
    img[size // 2 :, : size // 2] = (30, 190, 40)
    lbl[size // 2 :, : size // 2] = 5
    return np.clip(img + rs.normal(0, 8, img.shape), 0, 255).astype(np.uint8), lbl


# The head of a torchrun driver script that trains on a flipped-square set (pass it to :func:`run_two_gloo_ranks`
# with the test's own lines after it): ``train``, ``S`` and ``tr``, a list of ``{n}`` colour scenes whose first label
# has a 16-pixel square flipped to class 5, are defined.
DDP_FLIPPED_SQUARE_HEAD = r'''
import json, os, sys
import numpy as np, torch
sys.path.insert(0, {tests!r})
torch.set_num_threads(1)
from ddp_train_driver import patch_trainer
from helpers_core import colour_scene, print_json_line, tiny_train_config
from seghz.train.trainer import train
patch_trainer()
S = 64
tr = [colour_scene(i, S) for i in range({n})]
tr[0][1][8:24, 8:24] = 5
'''


def run_two_gloo_ranks(script: str, tmp_path, *args: str, timeout: int = 300) -> list[dict]:
    """Run ``script`` (Python text formatted with ``tests`` = this folder, so ``{tests!r}``) under ``torchrun --nproc-per-node 2`` on
    the CPU and return the JSON lines it printed (one dict per line starting with ``{``), sorted by ``"rank"``.
    Skips when torch has no gloo backend; fails with the ranks' stderr when the run fails."""
    import os
    import subprocess
    import sys

    import pytest
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    drv = Path(tmp_path) / "drv.py"
    # the script ends as the CLI does under torchrun: without the C++ teardown that could abort a finished rank
    drv.write_text(script.format(tests=str(Path(__file__).parent)) + "\nfrom seghz.cli import end_process\nend_process(0)\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-W", "ignore", "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(drv), *args]
    proc = subprocess.run(cmd, check=False, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return sorted(json_objects(proc.stdout), key=lambda d: d["rank"])


def json_objects(text: str) -> list[dict]:
    """Every JSON object in ``text`` that starts a line, also when two ranks' lines ran together on one line (the
    ranks share the pipe; with unbuffered output a print's text and its newline are separate writes)."""
    import json

    dec = json.JSONDecoder()
    out: list[dict] = []
    for ln in text.splitlines():
        i = 0
        while ln.startswith("{", i):
            obj, i = dec.raw_decode(ln, i)
            out.append(obj)
    return out


def print_json_line(obj: dict) -> None:
    """Print ``obj`` as one JSON line in a single write, so ranks sharing stdout cannot split it."""
    import json

    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()
