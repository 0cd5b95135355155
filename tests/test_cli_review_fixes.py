"""CLI behaviours a review on real data asked for: one clear line instead of a traceback or a silent wrong result.

In-process calls of :func:`seghz.cli.main` on synthetic files (the demo checkpoint, tiny images), plus one case
on real GID tiles (skipped without ../shared/data/gid15).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from seghz.cli import main
from seghz.data.io import write_index_mask, write_rgb
from seghz.store import Workspace

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "checkpoints" / "demo_hz7.safetensors"
GID_CK = ROOT / "checkpoints" / "gid15_hz7_unet_lite0.safetensors"
GID = ROOT.parent / "shared" / "data" / "gid15"


def _pair(folder: Path, stem: str, size=(64, 64)) -> tuple[Path, Path]:
    rng = np.random.default_rng(len(stem))
    img, lbl = folder / "images" / f"{stem}.png", folder / "labels" / f"{stem}.png"
    write_rgb(img, rng.integers(0, 255, (*size, 3), dtype=np.uint8))
    write_index_mask(lbl, np.ones(size, np.uint8))  # hz7 id 1 = Water
    return img, lbl


def _err(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_predict_refuses_a_non_png_output_and_unknown_schemes_read_plainly(tmp_path, capsys):
    img, _ = _pair(tmp_path, "a")
    assert main(["predict", "--checkpoint", str(DEMO), "--input", str(img), "--output", str(tmp_path / "x.tif")]) == 2
    assert "predict writes a palette PNG" in _err(capsys) and not (tmp_path / "x.tif").exists()
    # an unknown scheme is called unknown (not "no crosswalk"), without the quotes of a KeyError
    assert main(["evaluate", "--checkpoint", str(DEMO), "--images", str(tmp_path / "images"), "--labels",
                 str(tmp_path / "labels"), "--scheme", "gid16"]) == 2
    err = _err(capsys)
    assert err.startswith("error: unknown class scheme 'gid16'; known:") and "crosswalk" not in err


def test_bad_option_values_and_a_missing_gpu_are_one_line(tmp_path, capsys, monkeypatch):
    import torch

    _pair(tmp_path, "a")
    args = ["evaluate", "--checkpoint", str(DEMO), "--images", str(tmp_path / "images"), "--labels",
            str(tmp_path / "labels"), "--scheme", "hz7"]
    assert main(args + ["--batch-size", "0"]) == 2
    assert "batch_size must be a positive integer" in _err(capsys)
    monkeypatch.setenv("SEGHZ_DEBUG", "1")  # the traceback, for a bug report
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        main(args + ["--batch-size", "0"])
    monkeypatch.delenv("SEGHZ_DEBUG")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(args + ["--device", "cuda"]) == 2
    assert "--device cuda: torch sees no CUDA GPU here" in _err(capsys)


def test_import_names_its_scenes_refuses_folder_only_flags_and_info_lists_scenes(tmp_path, capsys):
    ws = tmp_path / "ws"
    img, lbl = _pair(tmp_path, "one")
    assert main(["--workspace", str(ws), "import", "--image", str(img), "--label", str(lbl), "--scheme", "hz7",
                 "--name", "Field one"]) == 0
    out = capsys.readouterr().out
    sid = Workspace(ws).list_scenes()[0].id
    assert f"  {sid}  Field one  (none, 64x64 px)" in out
    assert main(["--workspace", str(ws), "import", "--images", str(tmp_path / "images"), "--labels",
                 str(tmp_path / "labels"), "--scheme", "hz7", "--split", "val"]) == 2
    assert "--name and --split are for one --image" in _err(capsys)
    assert main(["--workspace", str(ws), "info"]) == 0
    assert f"scene {sid}: Field one (none, 64x64 px, hz7, pixel space)" in capsys.readouterr().out


def test_vectors_checks_its_folder_and_warns_about_pixel_coordinates(tmp_path, capsys):
    ws = tmp_path / "ws"
    img, lbl = _pair(tmp_path, "one")
    main(["--workspace", str(ws), "import", "--image", str(img), "--label", str(lbl), "--scheme", "hz7"])
    sid = Workspace(ws).list_scenes()[0].id
    capsys.readouterr()
    assert main(["--workspace", str(ws), "vectors", "--scene", sid, "--out", str(tmp_path / "no" / "x.geojson")]) == 2
    assert "folder" in _err(capsys) and not (tmp_path / "no").exists()
    assert main(["--workspace", str(ws), "vectors", "--scene", sid, "--what", "label", "--out",
                 str(tmp_path / "l.geojson")]) == 0
    err = _err(capsys)
    assert "warning: the scene has no CRS, so the positions are pixels" in err
    assert json.loads((tmp_path / "l.geojson").read_text())["features"][0]["properties"]["class"] == "Water"
    assert "-0.0" not in (tmp_path / "l.geojson").read_text()  # row 0 is 0, not -0.0
    assert main(["--workspace", str(ws), "vectors", "--scene", sid, "--out", str(tmp_path / "c.geojson")]) == 0
    assert "holds no corrections" in _err(capsys)


def test_checkpoint_registry_messages(tmp_path, capsys):
    ws = tmp_path / "ws"
    assert main(["--workspace", str(ws), "checkpoints", "history"]) == 0
    assert "no promotions or rollbacks recorded" in capsys.readouterr().out
    src = tmp_path / "demo.safetensors"
    shutil.copy(DEMO, src)
    assert main(["--workspace", str(ws), "checkpoints", "add", str(src)]) == 0
    cid = Workspace(ws).list_checkpoints()[0].id
    capsys.readouterr()
    assert main(["--workspace", str(ws), "checkpoints", "add", str(src)]) == 2
    assert f"registered as '{cid}'" in _err(capsys)
    assert main(["--workspace", str(ws), "checkpoints", "list"]) == 0
    assert "each checkpoint's own validation data" in capsys.readouterr().out
    # promote takes the rule like gate does (no active model yet: it promotes)
    assert main(["--workspace", str(ws), "checkpoints", "promote", cid, "--rule", "interval", "--no-compute"]) == 0
    assert f"active model: {cid}" in capsys.readouterr().out


@pytest.mark.skipif(not (GID / "images").is_dir() or not GID_CK.is_file(), reason="needs ../shared/data/gid15")
def test_evaluate_with_checkpoint_stems_on_a_folder_holding_none_of_them_is_an_error(tmp_path, capsys):
    for sub in ("images", "labels"):
        (tmp_path / sub).mkdir()
    stem = sorted((GID / "images").glob("*.png"))[0].stem
    for sub in ("images", "labels"):
        shutil.copy(GID / sub / f"{stem}.png", tmp_path / sub / "renamed.png")
    assert main(["evaluate", "--checkpoint", str(GID_CK), "--images", str(tmp_path / "images"), "--labels",
                 str(tmp_path / "labels"), "--scheme", "gid15", "--stems-from-checkpoint"]) == 2
    assert "none of its 1 image(s) is among the 125 stems of the checkpoint's test split" in _err(capsys)


def test_info_of_a_checkpoint_is_one_line_per_key_and_a_folder_is_not_a_checkpoint(tmp_path, capsys):
    assert main(["info", "--checkpoint", str(DEMO)]) == 0
    out = capsys.readouterr().out.splitlines()
    scheme = next(line for line in out if line.startswith("scheme: "))
    assert '"names": ["Water", "OpenArea"' in scheme and len(out) < 30
    assert main(["info", "--checkpoint", str(tmp_path)]) == 2
    assert "is a folder, not a checkpoint file" in _err(capsys)


def test_predict_scene_refuses_a_zero_tile(tmp_path, capsys):
    from seghz.data.io import write_rgb

    src = tmp_path / "scene.png"
    write_rgb(src, np.zeros((64, 64, 3), np.uint8))
    assert main(["predict-scene", "--checkpoint", str(DEMO), "--input", str(src), "--output", str(tmp_path / "o.tif"),
                 "--tile", "0", "--device", "cpu"]) == 2
    assert "--tile 0: the model window must be a multiple of 32" in _err(capsys) and not (tmp_path / "o.tif").exists()


def test_help_states_the_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    out = capsys.readouterr().out
    assert "--tta {none,flip,d4}  default: none" in out
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "default: 30" in out and "(default: lite0-imagenet)" in out and "--seed SEED           default: 0" in out
    assert "default: None" not in out and "default: False" not in out


def test_info_does_not_create_a_workspace_and_lists_stems_on_request(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SEGHZ_WORKSPACE", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["info"]) == 0
    assert f"no workspace at {tmp_path / 'workspace'}" in capsys.readouterr().out
    assert not (tmp_path / "workspace").exists()
    assert main(["info", "--checkpoint", str(GID_CK)]) == 0
    out = capsys.readouterr().out
    assert "test_stems: 125 stems (--stems lists them)" in out and "  artificial_grassland_71" not in out
    assert main(["info", "--checkpoint", str(GID_CK), "--stems"]) == 0
    listed = [ln.strip() for ln in capsys.readouterr().out.splitlines() if ln.startswith("  ")]
    from seghz.models.checkpoint import read_metadata

    assert listed == sorted(read_metadata(GID_CK)["test_stems"])  # the shipped file records no val stems
