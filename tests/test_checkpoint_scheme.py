"""One shape of a checkpoint's ``scheme`` metadata: the full block (name, names, ids, colours).

``save_checkpoint`` stores a registered scheme name as its block; ``read_metadata`` (and so ``load_checkpoint``)
turns a legacy file's bare name into the block, so every caller that indexes ``meta["scheme"]["names"]`` works;
an unknown name or any other value is a CheckpointError naming the file. End to end: ``python -m seghz evaluate``
on a checkpoint saved with a name string."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_core import files_in, torch_one_thread  # noqa: F401 (fixture)

from seghz.classes import get_scheme
from seghz.errors import CheckpointError
from seghz.models.checkpoint import (
    FORMAT,
    checkpoint_scheme,
    load_checkpoint,
    read_metadata,
    read_safetensors_meta,
    save_checkpoint,
    scheme_meta,
    write_safetensors,
)

pytestmark = pytest.mark.usefixtures("torch_one_thread")

ROOT = Path(__file__).resolve().parents[1]
HZ7 = get_scheme("hz7")
ARCH, ENC = "FPN", "tu-mobilenetv3_small_050"


def _tiny_model():
    from seghz.models.registry import build_model

    torch.manual_seed(0)
    return build_model(ARCH, ENC, HZ7.num_classes).eval()


def _meta(scheme) -> dict:
    return {"arch": ARCH, "encoder": ENC, "scheme": scheme, "num_classes": HZ7.num_classes,
            "normalization": {"mean": [0.5] * 3, "std": [0.5] * 3}, "tile_size": 64}


def _write_legacy(path: Path, model: torch.nn.Module, scheme) -> Path:
    """A checkpoint file as older code wrote it: the metadata's scheme stored as given (e.g. a bare name)."""
    meta = {**_meta(scheme), "format": FORMAT, "created_at": "2024-01-01T00:00:00+00:00"}
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    return write_safetensors(path, state, {"seghz": json.dumps(meta)})


def _raw_scheme(path: Path):
    """What the file itself holds under 'scheme' (no normalisation)."""
    return read_safetensors_meta(path, "seghz", CheckpointError, "checkpoint")["scheme"]


def test_save_with_a_scheme_name_stores_the_full_block(tmp_path):
    meta = _meta("hz7")
    p = save_checkpoint(tmp_path / "named.safetensors", torch.nn.Linear(2, 2), meta)
    assert _raw_scheme(p) == scheme_meta(HZ7)  # the file holds the block, not the name
    assert read_metadata(p)["scheme"] == scheme_meta(HZ7)
    assert meta["scheme"] == "hz7"  # the caller's dict is left alone
    # a block is stored as given
    p2 = save_checkpoint(tmp_path / "block.safetensors", torch.nn.Linear(2, 2), _meta(scheme_meta(HZ7)))
    assert _raw_scheme(p2) == scheme_meta(HZ7)


def test_legacy_name_string_is_read_as_the_block(tmp_path):
    model = _tiny_model()
    p = _write_legacy(tmp_path / "legacy.safetensors", model, "hz7")
    assert _raw_scheme(p) == "hz7"
    meta = read_metadata(p)
    assert meta["scheme"] == scheme_meta(HZ7)
    assert meta["scheme"]["names"] == list(HZ7.names) and meta["scheme"]["name"] == "hz7"
    loaded, lmeta = load_checkpoint(p)
    assert lmeta["scheme"] == scheme_meta(HZ7) and loaded.state_dict().keys() == model.state_dict().keys()
    assert checkpoint_scheme(lmeta) == HZ7


def test_unknown_scheme_name_is_an_error_naming_the_file(tmp_path):
    p = _write_legacy(tmp_path / "odd.safetensors", torch.nn.Linear(2, 2), "no_such_scheme")
    with pytest.raises(CheckpointError, match=r"odd\.safetensors.*unknown class scheme 'no_such_scheme'.*hz7"):
        read_metadata(p)
    with pytest.raises(CheckpointError, match=r"odd\.safetensors.*no_such_scheme"):
        load_checkpoint(p)
    with pytest.raises(CheckpointError, match=r"new\.safetensors.*unknown class scheme 'no_such_scheme'"):
        save_checkpoint(tmp_path / "new.safetensors", torch.nn.Linear(2, 2), _meta("no_such_scheme"))
    assert not (tmp_path / "new.safetensors").exists()


@pytest.mark.parametrize("bad", [7, ["hz7"], None, {"names": ["a", "b"]}, {"name": "x", "names": []},
                                 {"name": "x", "names": "ab"}])
def test_other_scheme_values_are_errors_naming_the_file(tmp_path, bad):
    p = _write_legacy(tmp_path / "weird.safetensors", torch.nn.Linear(2, 2), bad)
    with pytest.raises(CheckpointError, match=r"weird\.safetensors.*'scheme'"):
        read_metadata(p)
    d = tmp_path / "out"
    with pytest.raises(CheckpointError, match=r"never\.safetensors.*'scheme'"):
        save_checkpoint(d / "never.safetensors", torch.nn.Linear(2, 2), _meta(bad))
    assert not d.exists() or files_in(d) == []


# ------------------------------------------------------------------- `python -m seghz evaluate` end to end


def _folder(root: Path) -> tuple[Path, Path]:
    from seghz.data.io import write_index_mask, write_rgb

    rng = np.random.default_rng(5)
    images, labels = root / "images", root / "labels"
    for i in range(2):
        idx = np.zeros((64, 64), np.uint8)
        idx[:, 32:] = 5  # Buildings
        idx[40:, :] = 0  # Water
        img = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
        write_rgb(images / f"t{i}.png", img)
        ids = np.asarray(HZ7.ids, np.uint8)[idx]  # label files hold the scheme's file ids
        write_index_mask(labels / f"t{i}.png", ids)
    return images, labels


@pytest.mark.parametrize("how", ["legacy_file", "save_checkpoint"])
def test_cli_evaluate_on_a_checkpoint_saved_with_a_scheme_name(tmp_path, how):
    model = _tiny_model()
    ck = tmp_path / "ck" / "named.safetensors"
    if how == "legacy_file":
        _write_legacy(ck, model, "hz7")
    else:
        save_checkpoint(ck, model, _meta("hz7"))
    images, labels = _folder(tmp_path / "data")
    out = tmp_path / "eval.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    p = subprocess.run([sys.executable, "-m", "seghz", "evaluate", "--checkpoint", str(ck), "--images", str(images),
                        "--labels", str(labels), "--scheme", "hz7", "--tta", "none", "--device", "cpu",
                        "--json", str(out)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
                       check=False)
    assert p.returncode == 0, p.stderr
    assert "TypeError" not in p.stderr
    r = json.loads(out.read_text())
    assert r["scheme"] == "hz7" and r["classes"] == list(HZ7.names) and r["images"] == 2
    # every labelled pixel was scored: 2 images of 64 x 64
    assert sum(map(sum, r["confusion"])) == 2 * 64 * 64
    assert sum(r["per_class"][n]["support"] for n in HZ7.names) == 2 * 64 * 64
