"""`seghz checkpoints`: the workspace's checkpoint registry from the shell (list, add, gate, promote, rollback,
history), end to end on tiny real models and synthetic scenes (in-process, on the CPU).

The validation labels are the reference model's own predictions, so it scores an IoU of 1 on every class it
predicts; a copy of it must pass the gate with zero deltas, and a model that predicts one class everywhere must be
flagged under both rules (it loses those classes in every scene, so the drops are beyond the tile noise)."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from seghz.classes import get_scheme
from seghz.cli import main

HZ7 = get_scheme("hz7")


def _meta() -> dict:
    return {"arch": "FPN", "encoder": "tu-mobilenetv3_small_050", "num_classes": HZ7.num_classes,
            "scheme": HZ7.to_json(), "normalization": {"mean": [0.5] * 3, "std": [0.5] * 3}, "tile_size": 128,
            "metrics": {"val": {"miou": 0.5, "fwiou": 0.5, "oa": 0.5, "per_class_iou": {}}, "epoch": 1},
            "synthetic": True}


def _model(constant_class: int | None = None):
    from seghz.models.registry import build_model

    torch.manual_seed(0)
    m = build_model("FPN", "tu-mobilenetv3_small_050", HZ7.num_classes)
    if constant_class is not None:  # the last conv decides: zero weights, one class's bias up
        last = [mod for mod in m.modules() if isinstance(mod, torch.nn.Conv2d)][-1]
        with torch.no_grad():
            last.weight.zero_()
            last.bias.zero_()
            last.bias[constant_class] = 10.0
    return m


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from seghz.data.io import read_image, write_index_mask
    from seghz.infer.engine import Predictor
    from seghz.models.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("cks")
    ref, twin, flat = root / "ref.safetensors", root / "twin.safetensors", root / "flat.safetensors"
    save_checkpoint(ref, _model(), _meta())
    save_checkpoint(twin, _model(), _meta())
    save_checkpoint(flat, _model(constant_class=2), _meta())
    data = root / "demo"
    assert main(["demo-data", "--out", str(data), "--seeds", "1", "2", "3", "4", "--size", "128"]) == 0
    pred, _ = Predictor.from_checkpoint(ref, device="cpu")
    ws = root / "ws"
    for img in sorted((data / "images").glob("*.png")):
        mask, _ = pred.predict(read_image(img))
        lbl = root / "lbl" / img.name
        write_index_mask(lbl, HZ7.index_to_ids(mask))
        assert main(["--workspace", str(ws), "import", "--image", str(img), "--label", str(lbl), "--scheme", "hz7",
                     "--split", "val", "--name", img.stem]) == 0
    return root, ws, ref, twin, flat


def _id(out: str) -> str:
    return re.search(r"registered (\S+) ", out).group(1)


def test_registry_from_the_shell(setup, capsys, tmp_path):
    _, ws, ref, twin, flat = setup
    w = ["--workspace", str(ws)]
    assert main([*w, "checkpoints", "list"]) == 0
    assert "no checkpoints registered" in capsys.readouterr().out

    assert main([*w, "checkpoints", "add", str(ref), "--name", "reference"]) == 0
    rid = _id(capsys.readouterr().out)
    assert (ws / "checkpoints" / "ref.safetensors").read_bytes() == ref.read_bytes()  # copied in
    assert main([*w, "checkpoints", "add", str(ref)]) == 2  # the copy exists: refused, nothing overwritten
    assert "exists already" in capsys.readouterr().err
    bogus = tmp_path / "bogus.safetensors"
    bogus.write_bytes(b"not a checkpoint")
    assert main([*w, "checkpoints", "add", str(bogus)]) == 2
    assert str(bogus) in capsys.readouterr().err
    assert main([*w, "checkpoints", "add", str(twin), "--parent", "nope"]) == 2
    assert "nope" in capsys.readouterr().err and not (ws / "checkpoints" / "twin.safetensors").exists()
    assert main([*w, "checkpoints", "add", str(twin), "--name", "twin", "--parent", rid, "--no-copy"]) == 0
    tid = _id(capsys.readouterr().out)
    assert main([*w, "checkpoints", "add", str(flat), "--name", "flat", "--parent", rid]) == 0
    fid = _id(capsys.readouterr().out)

    assert main([*w, "checkpoints", "promote", rid]) == 0  # nothing active yet: passes
    assert f"active model: {rid}" in capsys.readouterr().out
    assert main([*w, "checkpoints", "list"]) == 0
    listing = capsys.readouterr().out
    assert re.search(rf"^\* {re.escape(rid)}", listing, re.MULTILINE) and re.search(rf"^  {re.escape(fid)}", listing, re.MULTILINE)

    # no scores on the validation split yet: unknown, exit 1
    assert main([*w, "checkpoints", "gate", tid]) == 1
    assert "UNKNOWN" in capsys.readouterr().out
    # scored scene by scene: the copy passes with zero deltas and zero-width intervals
    j = tmp_path / "twin.json"
    assert main([*w, "checkpoints", "gate", tid, "--compute", "--rule", "interval", "--json", str(j)]) == 0
    v = json.loads(j.read_text())
    assert v["status"] == "pass" and v["scenes"] == 4 and v["rule"] == "interval"
    compared = [r for r in v["rows"] if not r["excluded"]]
    assert compared and all(r["delta"] == 0 and r["lo"] == r["hi"] == 0 for r in compared)
    assert all(r["active_iou"] == pytest.approx(1.0) for r in compared)  # the labels are its predictions
    # one class everywhere: flagged under both rules, and promotion refused without an override
    j = tmp_path / "flat.json"
    for rule in ("margin", "interval"):
        assert main([*w, "checkpoints", "gate", fid, "--compute", "--rule", rule, "--json", str(j)]) == 1
        v = json.loads(j.read_text())
        assert v["status"] == "flagged" and v["scenes"] == 4
        lost = {r["class"] for r in compared if r["class"] != HZ7.names[2]}
        assert lost and lost <= {o["class"] for o in v["offending"]}
        assert all(o["hi"] < 0 for o in v["offending"])
    out = capsys.readouterr().out
    assert "regression gate (interval rule, margin 2.0 pp): FLAGGED" in out and "beyond the tile noise" in out
    assert re.search(r"Water\s+100\.0 %\s+0\.0 %\s+−100\.0 pp\s+\[−100\.0, −100\.0\] pp\s+OFFENDING", out)
    assert main([*w, "checkpoints", "promote", fid]) == 1
    assert "was not promoted" in capsys.readouterr().err
    assert main([*w, "checkpoints", "promote", fid, "--override", "--analyst", "Ann"]) == 2
    assert "reason" in capsys.readouterr().err
    assert main([*w, "checkpoints", "promote", fid, "--override", "--analyst", "Ann", "--reason", "field test"]) == 0
    assert "gate overridden, recorded" in capsys.readouterr().out

    assert main([*w, "checkpoints", "history"]) == 0
    hist = capsys.readouterr().out
    assert "Ann" in hist and "field test" in hist and "flagged" in hist
    assert main([*w, "checkpoints", "rollback", "--analyst", "Ann", "--reason", "too coarse"]) == 0
    assert f"active model: {rid} (rolled back)" in capsys.readouterr().out
    assert main([*w, "checkpoints", "rollback", "--analyst", "Ann"]) == 2  # the first promotion has nothing before it
    assert "nothing to roll back" in capsys.readouterr().err
    assert np.isfinite(json.loads(j.read_text())["margin"])
