"""The outside review of docs/remeasure.md (/work/notes/remeasure_review.md), items 4-10 and 13-19, on the benches.

CPU only, nothing timed: the ratio spread and its warnings are checked on hand-made per-round rates; noise_bench runs
in-process on a few synthetic 64² tiles with the shipped checkpoint (TTA none); the rest are pure functions.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CKPT = ROOT / "checkpoints" / "gid15_hz7_unet_lite0.safetensors"
GID = ROOT.parent / "shared" / "data" / "gid15"
needs_ckpt = pytest.mark.skipif(not CKPT.is_file(), reason="the shipped GID checkpoint is absent")
needs_gid = pytest.mark.skipif(not (GID / "images").is_dir() or not CKPT.is_file(),
                               reason="needs ../shared/data/gid15 and the shipped GID checkpoint")


def _folder(root: Path, n: int = 2, size: int = 64, label_size: dict | None = None) -> Path:
    """``n`` random 64² tiles with blocky gid15 labels (ids 1, 3, 6); ``label_size``: {index: side} to break one."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        cv2.imwrite(str(root / "images" / f"t{i}.png"), rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
        side = (label_size or {}).get(i, size)
        lbl = np.ones((side, side), np.uint8)
        lbl[: side // 2] = 3
        lbl[side * 5 // 8:, side * 5 // 8:] = 6
        cv2.imwrite(str(root / "labels" / f"t{i}.png"), lbl)
    return root


# ------------------------------------------------------------------------------------------ item 4: infer_bench


def test_ratios_are_computed_per_round_from_that_rounds_rates():
    from bench.infer_bench import round_ratios

    r = round_ratios({"raw": [2.0, 4.0], "engine_none": [1.0, 1.0], "engine_d4": [0.5, 0.25], "ttach_d4": [0.25, 0.25]},
                     overlap_factor=2.0)
    assert r["engine_vs_ideal"] == [1.0, 0.5]  # engine / (raw / overlap) in each round
    assert r["engine_d4_vs_ideal"] == [4.0, 1.0]  # engine_d4 / (raw / (8 * overlap))
    assert r["engine_vs_ttach_d4"] == [2.0, 1.0]
    assert "engine_vs_naive_none" not in r  # no naive rate, no ratio


def test_a_wildly_varying_ratio_is_flagged_not_to_be_quoted():
    """The review's three identical CPU runs gave engine_vs_ideal 29.05, 0.032 and 1.80."""
    from bench.infer_bench import ratio_warnings, spread

    s = spread([29.054, 0.032, 1.804])
    assert s["median"] == pytest.approx(1.804) and (s["min"], s["max"], s["rounds"]) == (0.032, 29.054, 3)
    assert s["q1"] <= s["median"] <= s["q3"]
    w = ratio_warnings({"engine_vs_ideal": s})
    assert len(w) == 1 and "engine_vs_ideal varied from 0.032 to 29.054" in w[0] and "do not quote" in w[0]
    # tight but implausible: the machine was loaded all along
    w = ratio_warnings({"engine_vs_ideal": spread([7.0, 7.1, 7.2])})
    assert len(w) == 1 and "outside the plausible range 0.3-5" in w[0]
    # a quiet machine: nothing to say
    assert ratio_warnings({"engine_vs_ideal": spread([1.21, 1.22, 1.23]),
                           "engine_vs_ttach_d4": spread([2.1, 2.13, 2.15])}) == []
    # one round: no spread to judge by
    w = ratio_warnings({"engine_vs_ideal": spread([1.22]), "engine_d4_vs_ideal": spread([1.48])})
    assert len(w) == 1 and "1 round only" in w[0] and "engine_vs_ideal, engine_d4_vs_ideal" in w[0]


def test_the_readme_figures_are_named_on_their_ratio_rows():
    from bench.infer_bench import CLAIMS, round_ratios

    rates = {k: [1.0] for k in ("raw", "engine_none", "engine_d4", "ttach_d4")}
    assert set(CLAIMS) <= set(round_ratios(rates, 1.0))
    assert "1.22" in CLAIMS["engine_vs_ideal"] and "1.48" in CLAIMS["engine_d4_vs_ideal"]
    assert "2.13" in CLAIMS["engine_vs_ttach_d4"]


# ------------------------------------------------------------------------------------------ items 5, 10, 15: noise_bench


def test_noise_bench_helpers():
    from bench.heldout import salted
    from bench.noise_bench import clean_scores, low_accuracy_warning, queue_text, tuning_stems

    stems = [f"s{i}" for i in range(60)]
    assert tuning_stems(stems) == sorted(stems, key=salted)[:40]
    q = {"items": 279, "prefix_items": 12, "prefix_pixels": 5000, "prefix_noisy_fraction": 0.931,
         "noisy_pixels_covered_by_queue": 0.955}
    line = queue_text(q)
    assert "{" not in line and "279 items" in line and "93.1 %" in line and "95.5 %" in line
    assert "fails on these tiles" in low_accuracy_warning({"miou_pct": 8.12})
    assert low_accuracy_warning({"miou_pct": 86.35}) is None
    true = np.array([[0, 1], [1, 255]], np.uint8)
    proba = np.zeros((2, 2, 2), np.float32)
    proba[0][true == 0] = 1
    proba[1][true != 0] = 1
    sc = clean_scores([{"true": true, "proba": proba}], ["a", "b"])
    assert sc["miou_pct"] == 100.0 and sc["pixels"] == 3  # the ignored pixel is left out


@needs_ckpt
def test_noise_bench_records_its_setup_and_the_models_clean_accuracy(tmp_path, capsys):
    from bench.noise_bench import main

    data = _folder(tmp_path / "mine", n=2)
    out = tmp_path / "noise.json"
    rc = main(["--data", str(data), "--stems", "all", "--scheme", "gid15", "--tta", "none", "--seed", "3",
               "--flip-fraction", "0.25", "--json", str(out)])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    rep = json.loads(out.read_text())
    assert rep["checkpoint"] == str(CKPT) and rep["seed"] == 3 and rep["flip_fraction"] == 0.25
    assert (rep["shift_fraction"], rep["scheme"], rep["stems"], rep["tta"]) == (0.5, "gid15", "all", "none")
    clean = rep["model_on_clean_labels"]
    assert 0 <= clean["miou_pct"] < 50  # random pictures: the model fails on them ...
    assert any("fails on these tiles" in w for w in rep["warnings"])  # ... and says so
    assert "WARNING: the checkpoint's mIoU on these tiles' clean labels" in cap.out
    assert f"mIoU {clean['miou_pct']:.2f} %" in cap.out
    assert "<- the claim's row (ours)" in cap.out and rep["claim"]["ours"] == "suspicion"
    queue_line = [ln for ln in cap.out.splitlines() if ln.startswith("queue:")]
    assert len(queue_line) == 1 and "{" not in queue_line[0]


@needs_ckpt
def test_noise_bench_checks_every_pair_before_predicting(tmp_path, capsys):
    from bench.noise_bench import main

    data = _folder(tmp_path / "bad", n=3, label_size={2: 32})
    rc = main(["--data", str(data), "--stems", "all", "--tta", "none"])
    err = capsys.readouterr().err
    assert rc == 2 and "predicted" not in err  # refused before any tile was predicted
    lines = [ln for ln in err.splitlines() if "label size" in ln]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "t2.png: label size 32x32 differs" in lines[0]


def test_a_missing_checkpoint_is_one_error_line_in_every_bench(tmp_path, capsys):
    from bench import experiments, noise_bench, noise_loop_bench

    data = _folder(tmp_path / "d", n=2)
    missing = str(tmp_path / "nonexist.safetensors")
    for main in (noise_bench.main, noise_loop_bench.main):
        rc = main(["--checkpoint", missing, "--data", str(data), "--stems", "all"])
        err = capsys.readouterr().err
        assert rc == 2 and err.startswith("error: ") and "nonexist.safetensors" in err and "Traceback" not in err
    rc = noise_bench.run_cli(lambda: experiments.main(["--checkpoint", missing, "--data", str(data), "--rows", "ce",
                                                       "--device", "cpu", "--out", str(tmp_path / "x.md")]))
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: --checkpoint: ") and "does not exist" in err


def test_run_cli_turns_refusals_into_error_lines_and_status_2(capsys):
    from bench.noise_bench import run_cli

    def refuse():
        raise SystemExit("unknown row(s) x")

    def refuse_prefixed():
        raise SystemExit("error: bad file")

    assert run_cli(refuse) == 2 and capsys.readouterr().err == "error: unknown row(s) x\n"
    assert run_cli(refuse_prefixed) == 2 and capsys.readouterr().err == "error: bad file\n"
    assert run_cli(lambda: {"a": 1}) == 0 and run_cli(lambda: 0) == 0


@needs_gid
def test_noise_bench_leaves_out_the_tuning_tiles(tmp_path, capsys):
    """By name (a folder of test tiles under their own names) and by content (renamed: with ../shared present)."""
    from bench.noise_bench import main, tuning_stems
    from seghz.models.checkpoint import read_metadata

    test = read_metadata(CKPT)["test_stems"]
    tuned = tuning_stems(test)
    other = sorted(set(test) - set(tuned))[:4]  # two kept tiles: the noise must change some pixels

    def folder(name, pairs):
        d = tmp_path / name
        (d / "images").mkdir(parents=True)
        (d / "labels").mkdir()
        for src, dst in pairs:
            shutil.copy(GID / "images" / f"{src}.png", d / "images" / f"{dst}.png")
            shutil.copy(GID / "labels" / f"{src}.png", d / "labels" / f"{dst}.png")
        return d

    cases = [(folder("named", [(s, s) for s in (*tuned[:2], *other[:2])]), other[:2], sorted(tuned[:2]), tuned[0]),
             (folder("renamed", [(tuned[2], "mine_a"), (other[2], "mine_b"), (other[3], "mine_c")]),
              ["mine_b", "mine_c"], ["mine_a"], f"mine_a (= {tuned[2]})")]
    for d, kept, dropped, said in cases:
        out = tmp_path / f"{d.name}.json"
        rc = main(["--data", str(d), "--stems", "all", "--tta", "none", "--json", str(out)])
        cap = capsys.readouterr()
        assert rc == 0, cap.err
        rep = json.loads(out.read_text())
        assert sorted(rep["tiles"]) == sorted(kept) and rep["tuning_tiles_left_out"] == dropped
        assert "the checkpoint's tuning tiles" in cap.err and said in cap.err


# ------------------------------------------------------------------------------------------ items 6, 9: noise_loop_bench


def test_loop_table_prints_points_na_for_one_draw_and_a_legend():
    from bench.noise_loop_bench import LEGEND, UNITS, pts, summary_table

    assert summary_table([]) == []  # --detector-only: no empty table header
    row = {"arm": "random_components", "n": 25, "draws": 1, "items": 25, "pixels_reviewed_per_item": 10836,
           "noisy_fixed_per_item": 2632, "noise_fraction_fixed": 0.192, "precision_of_review": 0.26, "miou": 0.6071,
           "gain": 0.0675, "gain_std": None, "gain_per_100_items": 0.27}
    lines = summary_table([row, {**row, "arm": "queue_heldout", "draws": 3, "gain_std": 0.048}])
    assert "gain/100" in lines[0] and lines[-1] == LEGEND
    assert "60.71" in lines[1] and "+6.75" in lines[1] and "+27.00" in lines[1] and "n/a" in lines[1]
    assert "0.0000" not in lines[1] and "4.80" in lines[2]
    assert "percentage points" in LEGEND and "gain/100" in LEGEND and "cleanlab n/a" in LEGEND
    assert pts(float("nan")) == "n/a" and pts(0.1428) == "14.28" and pts(-0.001, True) == "-0.10"
    assert "fraction" in UNITS["miou"] and "fraction" in UNITS["gain"]


# ------------------------------------------------------------------------------------------ item 17: train_bench


def test_train_bench_names_its_data_and_warns_on_few_steps(capsys):
    from bench.train_bench import _print, bench_warnings, data_text

    cfg = {"steps": 3, "warmup": 1, "data": "synthetic", "num_images": 32, "image_size": [512, 512],
           "recipe": "plain", "scheme": "hz7"}
    w = bench_warnings(cfg)
    assert len(w) == 1 and "only 3 timed step(s)" in w[0] and "steady-state" in w[0]
    assert bench_warnings({**cfg, "steps": 20}) == []
    text = data_text(cfg)
    assert "synthetic" in text and "7 classes" in text and "plain CE" in text
    assert "Dice" in data_text({**cfg, "recipe": "default"})
    report = {"rates": {"trainer": {"img_s": 1.0}, "bare": {"img_s": 2.0}}, "ratios": {"trainer_vs_bare": 0.5},
              "env": {"device_description": "cpu", "threads": 2, "loadavg": None}, "config": cfg, "warnings": w}
    a = argparse.Namespace(arch="Unet", encoder="e", crop=128, batch=2, device="cpu")
    _print(a, report)
    out = capsys.readouterr().out
    assert "data: synthetic" in out and "WARNING: only 3 timed step(s)" in out


# ------------------------------------------------------------------------------------------ items 3, 8: experiments


def test_experiments_writes_under_runs_unless_docs_are_named():
    from bench.experiments import build_parser

    out = build_parser().parse_args([]).out
    assert out == ROOT / "runs" / "experiments.md"
    assert (ROOT / "docs") not in out.parents
    assert build_parser().parse_args(["--out", "docs/experiments.md"]).out == Path("docs/experiments.md")


def test_experiments_shows_a_repeated_warning_once(capsys):
    from bench.experiments import warnings_once

    for _ in range(3):  # three runs on the same labels
        with warnings_once():
            warnings.warn("class(es) absent from the training labels: OpenArea", UserWarning, stacklevel=1)
            warnings.warn("class(es) absent from the training labels: OpenArea", UserWarning, stacklevel=1)
    err = capsys.readouterr().err
    assert err.count("absent from the training labels: OpenArea") == 1
    assert err.startswith("warning: class(es) absent")


def test_experiments_hands_the_trainer_writable_arrays(tmp_path):
    """Read-only images made torch.from_numpy warn ("NumPy array is not writable") for every full-tile crop."""
    from bench.experiments import load_pairs

    cv2.imwrite(str(tmp_path / "i.png"), np.zeros((32, 32, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "l.png"), np.ones((32, 32), np.uint8))
    ((img, lbl),) = load_pairs([(tmp_path / "i.png", tmp_path / "l.png")], "gid15")
    assert img.flags.writeable and lbl.flags.writeable and img.flags.c_contiguous
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.from_numpy(img)


# ------------------------------------------------------------------------------------------ items 10, 13: the page


def test_remeasure_page_says_where_to_run_and_which_rows_are_the_claims():
    text = " ".join((ROOT / "docs" / "remeasure.md").read_text().split())
    assert "from the repository root" in text and "installs `seghz` as a command" in text
    for name in ("engine_vs_ideal", "engine_d4_vs_ideal", "engine_vs_ttach_d4"):
        assert f"`{name}`" in text
    assert "--compile on" in text  # the 1.22 / 1.48 were measured with the compiled engine
    assert "at least 60 tiles" in text  # noise_loop_bench's documented command: 30 + 30
    assert "accurate on `DIR`" in text and "percentage points" in text


def test_leave_out_tuning_tiles_by_name_and_by_content(tmp_path, monkeypatch, capsys):
    """The helper noise_bench and noise_loop_bench share for --stems all."""
    import cv2

    import bench.noise_bench as nb

    test = [f"t{i:02d}" for i in range(50)]
    tuned = nb.tuning_stems(test)
    ours = tmp_path / "ours"
    (ours / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    pic = cv2.resize(rng.random((6, 6, 3)).astype(np.float32) * 255, (64, 64), interpolation=cv2.INTER_CUBIC)
    cv2.imwrite(str(ours / "images" / f"{tuned[5]}.png"), pic.astype(np.uint8))
    monkeypatch.setattr(nb, "DEFAULT_DATA", ours)
    monkeypatch.setattr(nb, "DEFAULT_CKPT", tmp_path / "none.safetensors")  # fall back to the given test_stems
    mine = tmp_path / "mine"
    mine.mkdir()
    cv2.imwrite(str(mine / "renamed.png"), np.ascontiguousarray(np.rot90(pic.astype(np.uint8))))
    cv2.imwrite(str(mine / "new.png"), (rng.random((64, 64, 3)) * 255).astype(np.uint8))
    tiles = [(tuned[0], mine / "x.png", None), ("renamed", mine / "renamed.png", None), ("new", mine / "new.png", None)]
    kept, left = nb.leave_out_tuning_tiles(tiles, test)
    assert [t[0] for t in kept] == ["new"] and left == {tuned[0]: tuned[0], "renamed": tuned[5]}
    assert f"renamed (= {tuned[5]})" in capsys.readouterr().err
    assert nb.leave_out_tuning_tiles(tiles, []) == (tiles, {})
