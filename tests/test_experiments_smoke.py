"""Smoke test of bench/experiments.py on a few real GID-15 tiles (skips without ../shared/data/gid15)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
GID = ROOT.parent / "shared" / "data" / "gid15"
CKPT = ROOT / "checkpoints" / "gid15_hz7_unet_lite0.safetensors"

needs_gid = pytest.mark.skipif(not (GID / "images").is_dir() or not CKPT.is_file(),
                               reason="needs ../shared/data/gid15 and the shipped GID checkpoint (test_stems)")


def _run(row, seed, miou, miou_gt):
    return {"row": row, "seed": seed, "miou": miou, "miou_gt": miou_gt, "fwiou": 0.5, "oa": 0.6, "train_s": 10.0,
            "eval_s": 1.0, "per_class_iou": {"Water": miou_gt, "Road_land": None}, "final_loss": 1.0,
            "noise_dropped": None}


def test_summary_mean_sd_and_recovery_by_hand():
    sys.path.insert(0, str(ROOT))
    from bench.experiments import render, summarise

    runs = [_run("ce", 0, 0.60, 0.62), _run("ce", 1, 0.64, 0.66), _run("noisy_ce", 0, 0.40, 0.50),
            _run("noisy_ce", 1, 0.44, 0.50), _run("noisy_boot", 0, 0.52, 0.56), _run("noisy_boot", 1, 0.52, 0.60)]
    s = summarise(runs, ["ce", "noisy_ce", "noisy_boot"])
    assert s["ce"]["miou"] == pytest.approx(62.0) and s["ce"]["miou_sd"] == pytest.approx(2.0 ** 0.5 * 2)
    # recovery = (52 - 42) / (62 - 42); GT classes: (58 - 50) / (64 - 50)
    assert s["noisy_boot"]["recovery"] == pytest.approx(0.5) and s["noisy_boot"]["recovery_gt"] == pytest.approx(8 / 14)
    assert "recovery" not in s["ce"] and s["noisy_ce"]["recovery"] == pytest.approx(0.0)
    # paired on the GT classes: differences 6 and 10 over gaps 12 and 16 -> 8 / 14, per seed 0.5 and 0.625
    assert s["noisy_boot"]["paired_gt"]["recovery"] == pytest.approx(8 / 14)
    assert s["noisy_boot"]["paired_gt"]["per_seed"] == pytest.approx([0.5, 0.625])
    report = {"protocol": {"eval_tiles": 2, "train_tiles": 3, "train_stems_sha1": "a", "eval_stems_sha1": "b", "steps": 4,
                           "epochs": 2, "batch_size": 2, "crop": 64, "lr": 0.002, "flip_fraction": 0.3},
              "env": {"device": "cpu", "device_description": "X", "torch": "t", "threads": 1, "cpu_count": 2,
                      "loadavg": "1", "date": "d"}, "summary": s, "runs": runs, "rows": ["ce", "noisy_ce", "noisy_boot"],
              "seeds": [0, 1], "command": "python bench/experiments.py", "wall_s": 60.0, "eval_classes": ["Water"]}
    md = render(report, "x <!-- reading -->\nmy reading\n<!-- /reading --> y")
    assert "| baseline CE | 62.00 ± 2.83 | 64.00 ± 2.83 |" in md
    assert "| + hard bootstrapping β=0.8 | 52.00 ± 0.00 | 58.00 ± 2.83 | 50.00 ± 0.00 | 60.00 ± 0.00 | +0.50 | +0.57 |" in md
    assert "my reading" in md and "Water 62" in md


def test_paired_recovery_compares_a_row_with_its_own_seeds_baselines():
    sys.path.insert(0, str(ROOT))
    from bench.experiments import _fmt_paired, paired_recovery, render, summarise

    runs = [_run("ce", 0, 0.60, 0.60), _run("ce", 1, 0.64, 0.64), _run("ce", 2, 0.70, 0.70),
            _run("noisy_ce", 0, 0.40, 0.40), _run("noisy_ce", 1, 0.44, 0.44), _run("noisy_ce", 2, 0.60, 0.60),
            _run("noisy_drop", 0, 0.50, 0.50), _run("noisy_gce", 0, 0.52, 0.52), _run("noisy_gce", 1, 0.44, 0.44),
            _run("noisy_fwd", 3, 0.50, 0.50)]
    # one seed: (50 - 40) / (60 - 40) = 0.5, while the all-seed means give (50 - 48) / (64.67 - 48) = 0.12
    px = paired_recovery(runs, "noisy_drop")
    assert px["seeds"] == [0] and px["recovery"] == pytest.approx(0.5) and px["se"] is None
    # two seeds: differences 12 and 0 over gaps 20 and 20 -> 6 / 20 = 0.3, per seed 0.6 and 0.0,
    # SE = stdev(12, 0) / sqrt(2) / 20 = 0.3
    py = paired_recovery(runs, "noisy_gce")
    assert py["seeds"] == [0, 1] and py["recovery"] == pytest.approx(0.3) and py["se"] == pytest.approx(0.3)
    assert py["per_seed"] == pytest.approx([0.6, 0.0])
    assert paired_recovery(runs, "noisy_fwd") is None  # seed 3 has no baselines
    assert _fmt_paired(py) == "+0.30 ± 0.30 (s0 +0.60, s1 +0.00)"
    s = summarise(runs, ["ce", "noisy_ce", "noisy_drop", "noisy_gce", "noisy_fwd"])
    assert s["noisy_drop"]["recovery"] == pytest.approx((50 - 48) / (194 / 3 - 48))
    assert s["noisy_drop"]["paired"]["recovery"] == pytest.approx(0.5)
    assert "paired" not in s["noisy_ce"] and "paired" not in s["noisy_fwd"] and "paired" not in s["ce"]
    report = {"protocol": {"eval_tiles": 2, "train_tiles": 3, "train_stems_sha1": "a", "eval_stems_sha1": "b", "steps": 4,
                           "epochs": 2, "batch_size": 2, "crop": 64, "lr": 0.002, "flip_fraction": 0.3},
              "env": {"device": "cpu", "device_description": "X", "torch": "t", "threads": 1, "cpu_count": 2,
                      "loadavg": "1", "date": "d"}, "summary": s, "runs": runs,
              "rows": ["ce", "noisy_ce", "noisy_drop", "noisy_gce", "noisy_fwd"],
              "seeds": [0, 1, 2], "command": "c", "wall_s": 1.0, "eval_classes": ["Water"]}
    md = render(report, None)
    assert "paired recovery ± SE (per seed)" in md and "| +0.30 ± 0.30 (s0 +0.60, s1 +0.00) | +0.30 ± 0.30 |" in md
    assert s["noisy_gce"]["paired_gt"]["recovery"] == pytest.approx(0.3)  # _run's miou_gt equals its miou here
    # reviewed tiles: the recipe's gain beyond the reviews alone, still as a share of the noise cost
    runs += [_run("noisy_rv", 0, 0.44, 0.44), _run("noisy_rv", 1, 0.46, 0.46),
             _run("noisy_rv_fwd_est", 0, 0.48, 0.48), _run("noisy_rv_fwd_est", 1, 0.47, 0.47)]
    pv = paired_recovery(runs, "noisy_rv_fwd_est", base="noisy_rv")  # (4 + 1) / 2 / 20 = 0.125
    assert pv["recovery"] == pytest.approx(0.125) and pv["per_seed"] == pytest.approx([0.2, 0.05])
    assert paired_recovery(runs, "noisy_rv_fwd_est")["recovery"] == pytest.approx((8 + 3) / 2 / 20)
    rows = ["ce", "noisy_ce", "noisy_rv", "noisy_rv_fwd_est"]
    s = summarise(runs, rows)
    assert s["noisy_rv_fwd_est"]["paired_vs_rv"]["recovery"] == pytest.approx(0.125) and "paired_vs_rv" not in s["noisy_rv"]
    md = render({**report, "summary": s, "runs": runs, "rows": rows}, None)
    assert "Beyond the reviews" in md and "| +0.12 ± 0.07 (s0 +0.20, s1 +0.05) | +0.12 ± 0.07 |" in md


def test_own_noise_cost_tells_a_general_lift_from_noise_robustness():
    sys.path.insert(0, str(ROOT))
    from bench.experiments import own_noise_cost, render, summarise

    # CE: 60 clean / 40 noisy (cost 20); the refit lifts both by 10 (cost 20: recovery 0.5, nothing avoided);
    # label smoothing loses 2 clean and gains 5 noisy (cost 13: 35 % avoided)
    runs = [_run("ce", 0, 0.60, 0.60), _run("noisy_ce", 0, 0.40, 0.40), _run("refit", 0, 0.70, 0.70),
            _run("noisy_refit", 0, 0.50, 0.50), _run("ls", 0, 0.58, 0.58), _run("noisy_ls", 0, 0.45, 0.45),
            _run("noisy_gce", 0, 0.50, 0.50)]
    o = own_noise_cost(runs, "refit")
    assert o["seeds"] == [0] and o["cost"] == pytest.approx(20) and o["ce_cost"] == pytest.approx(20)
    assert o["avoided"] == pytest.approx(0.0)
    assert own_noise_cost(runs, "ls")["avoided"] == pytest.approx(1 - 13 / 20)
    assert own_noise_cost(runs, "gce") is None and own_noise_cost(runs, "ce") is None  # no clean run / the baseline
    rows = ["ce", "refit", "ls", "noisy_ce", "noisy_refit", "noisy_ls", "noisy_gce"]
    s = summarise(runs, rows)
    assert s["noisy_refit"]["recovery"] == pytest.approx(0.5) and s["noisy_refit"]["own_cost"]["avoided"] == pytest.approx(0)
    assert "own_cost" not in s["noisy_gce"]
    report = {"protocol": {"eval_tiles": 2, "train_tiles": 3, "train_stems_sha1": "a", "eval_stems_sha1": "b", "steps": 4,
                           "epochs": 2, "batch_size": 2, "crop": 64, "lr": 0.002, "flip_fraction": 0.3},
              "env": {"device": "cpu", "device_description": "X", "torch": "t", "threads": 1, "cpu_count": 2,
                      "loadavg": "1", "date": "d"}, "summary": s, "runs": runs, "rows": rows,
              "seeds": [0], "command": "c", "wall_s": 1.0, "eval_classes": ["Water"]}
    md = render(report, None)
    assert "The noise cost under the recipe itself" in md
    assert "| 20.00 | 20.00 | +0.00 | 20.00 | 20.00 | +0.00 | 1 |" in md and "| 13.00 | 20.00 | +0.35 |" in md


def test_posthoc_summary_pairs_adjusted_models_with_the_plain_baselines():
    sys.path.insert(0, str(ROOT))
    from bench.experiments import posthoc_runs, posthoc_summary

    def ph(run, **scores):
        return {**run, "posthoc": {m: {"miou": v, "miou_gt": v, "fwiou": v, "oa": v} for m, v in scores.items()}}

    # CE 60 / 40 (cost 20); thresholds moved: clean 62, noisy 52 -> recovery 0.6, cost 10 (half avoided)
    runs = [ph(_run("ce", 0, 0.60, 0.60), prior=0.62), ph(_run("noisy_ce", 0, 0.40, 0.40), prior=0.52),
            ph(_run("noisy_drop", 0, 0.45, 0.45), prior=0.50)]
    assert [x["row"] for x in posthoc_runs(runs)] == ["ce+prior", "noisy_ce+prior", "noisy_drop+prior"]
    s = posthoc_summary(runs)
    e = s["noisy_ce+prior"]
    assert e["miou_gt_before"] == pytest.approx(40) and e["miou_gt"] == pytest.approx(52)
    assert e["paired_gt"]["recovery"] == pytest.approx(0.6)
    assert e["own_cost"]["cost_gt"] == pytest.approx(10) and e["own_cost"]["avoided_gt"] == pytest.approx(0.5)
    assert s["noisy_drop+prior"]["paired_gt"]["recovery"] == pytest.approx(0.5) and "own_cost" not in s["noisy_drop+prior"]
    assert "paired_gt" not in s["ce+prior"]


@needs_gid
def test_posthoc_adjustments_are_scored_beside_the_run(tmp_path):
    js = tmp_path / "ph.json"
    cmd = [sys.executable, str(ROOT / "bench" / "experiments.py"), "--rows", "ce,noisy_ce", "--seeds", "0", "--steps", "1",
           "--epochs", "1", "--batch-size", "2", "--crop", "32", "--train-tiles", "6", "--reviewed-tiles", "3",
           "--eval-tiles", "2", "--posthoc", "prior,refit", "--device", "cpu", "--threads", "1",
           "--out", str(tmp_path / "ph.md"), "--json", str(js)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=200, check=False, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ce, noisy = json.loads(js.read_text())["runs"]
    for r in (ce, noisy):
        assert set(r["posthoc"]) == {"prior", "refit"}
        info = r["posthoc"]["prior"]["info"]
        assert np.abs(np.array(info["freqs_after"]) - np.array(info["target"])).max() < 0.02
        assert r["posthoc"]["refit"]["info"]["counts"]["corrected_used"] > 0
    assert "Post-hoc adjustments of the trained models" in (tmp_path / "ph.md").read_text()
    bad = subprocess.run(cmd[:-4] + ["--posthoc", "magic"], cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)
    assert bad.returncode != 0 and "unknown --posthoc method(s) magic" in bad.stderr


@needs_gid
def test_reviewed_tiles_rows_train_on_clean_trusted_tiles_and_count_their_matrix(tmp_path):
    js = tmp_path / "rv.json"
    cmd = [sys.executable, str(ROOT / "bench" / "experiments.py"), "--rows", "noisy_rv,noisy_rv_fwd_est,noisy_rv_refit",
           "--seeds", "0",
           "--steps", "1", "--epochs", "1", "--batch-size", "2", "--crop", "32", "--train-tiles", "6", "--reviewed-tiles",
           "3", "--eval-tiles", "2", "--device", "cpu", "--threads", "1", "--out", str(tmp_path / "rv.md"), "--json", str(js)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=170, check=False, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rep = json.loads(js.read_text())
    rv, fwd, refit = rep["runs"]
    # the refit row trains exactly as rv (same seed, same samples), then refits the head on the reviewed tiles
    assert refit["refit"]["before"]["miou"] == rv["miou"] and refit["refit"]["counts"]["corrected_used"] > 0
    assert refit["refit"]["fit"]["after"]["corrected_acc"] >= refit["refit"]["fit"]["before"]["corrected_acc"]
    assert rv["reviewed_tiles"] == fwd["reviewed_tiles"] == 3 and "reviewed_tiles" not in rep["protocol"]
    # half of the tiles reviewed: the training labels are less wrong than the noise draw made them
    assert 0 < rv["label_error"]["given"] < float(rep["noise_rate"]["0"])
    t = np.array(fwd["recipe"]["noise_transition"])
    assert t.shape == (7, 7) and np.allclose(t.sum(1), 1, atol=1e-5) and (np.diag(t) > 0).all()
    assert fwd["recipe"]["robust"] == "forward" and "noise_transition" not in rv["recipe"]
    assert "**Reviewed tiles** (rows `rv`): the first 3 training tiles" in (tmp_path / "rv.md").read_text()


@needs_gid
def test_experiments_tiny_run_writes_markdown_and_json(tmp_path):
    out, js = tmp_path / "experiments.md", tmp_path / "experiments.json"
    out.write_text("old\n<!-- reading -->\nkept by hand\n<!-- /reading -->\n")
    cmd = [sys.executable, str(ROOT / "bench" / "experiments.py"), "--rows", "ce,noisy_ce,noisy_boot", "--seeds", "0",
           "--steps", "1", "--epochs", "1", "--batch-size", "2", "--crop", "32", "--train-tiles", "3",
           "--eval-tiles", "2", "--device", "cpu", "--threads", "1", "--out", str(out), "--json", str(js)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=170, check=False, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]

    rep = json.loads(js.read_text())
    assert rep["rows"] == ["ce", "noisy_ce", "noisy_boot"] and rep["seeds"] == [0]
    assert [(r["row"], r["seed"]) for r in rep["runs"]] == [("ce", 0), ("noisy_ce", 0), ("noisy_boot", 0)]
    p = rep["protocol"]
    assert (p["train_tiles"], p["eval_tiles"], p["steps"], p["crop"]) == (3, 2, 1, 32)
    assert (p["init"], p["encoder_weights"]) == ("imagenet", "lite0-imagenet")  # the default --init
    assert all(r["init"] == "imagenet" for r in rep["runs"])
    for r in rep["runs"]:
        assert 0 <= r["miou"] <= 1 and 0 <= r["oa"] <= 1 and r["steps"] == 1
    assert rep["runs"][-1]["recipe"]["bootstrap"] == "hard"
    s = rep["summary"]
    assert s["ce"]["n"] == 1 and s["ce"]["miou_sd"] is None  # one seed: no sd
    assert "recovery" in s["noisy_boot"] and "recovery_gt" in s["noisy_boot"] and "recovery" not in s["ce"]
    assert rep["eval_classes"] and all(0 <= r["miou_gt"] <= 1 for r in rep["runs"])
    assert 0 < float(rep["noise_rate"]["0"]) < 1  # flipped components changed some training pixels

    md = out.read_text()
    assert "kept by hand" in md  # the hand-written reading survives regeneration
    assert "| baseline CE |" in md and "+ hard bootstrapping" in md and "recovery" in md
    assert rep["env"]["device_description"] in md and "python bench/experiments.py" in md

    # --resume keeps the finished runs (nothing is trained again)
    proc = subprocess.run(cmd + ["--resume"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "3 run(s) kept" in proc.stderr and "mIoU" not in proc.stdout


def test_every_row_builds_a_valid_train_config():
    """A typo in a row's overrides must fail here, not after a device run has started."""
    import types

    sys.path.insert(0, str(ROOT))
    from bench.experiments import ALL_ROWS, ROWS, train_config

    a = types.SimpleNamespace(init="scratch", steps=40, epochs=4, batch_size=2, crop=64, lr=2e-3, device="cpu",
                              encoder="resnet34")
    sym = np.full((7, 7), 0.05) + np.eye(7) * 0.65  # rows sum to 1: a stand-in for the counted matrix
    for row in ALL_ROWS:
        cfg = train_config(a, row, 0, sym.tolist() if row == "noisy_rv_fwd_est" else None)
        cfg.validate()
        for k, v in ROWS[row.removeprefix("noisy_")][1].items():
            assert getattr(cfg, k) == v, (row, k)
    assert train_config(a, "noisy_rv_fwd_est", 0, sym.tolist()).noise_transition == sym.tolist()
    with pytest.raises(SystemExit, match="--reviewed-tiles"):
        train_config(a, "noisy_rv_fwd_est", 0)
    assert not [r for r in ALL_ROWS if r.startswith("rv")]  # reviewed tiles only make sense with noisy labels
    assert train_config(a, "noisy_drop_late", 0).refine_start == 0.5
    assert train_config(a, "nm_kept", 0).noise_denominator == "kept" and train_config(a, "nm_cos", 0).noise_denominator == "all"
    assert train_config(a, "nm_const", 0).noise_threshold == pytest.approx(-np.log(0.01))


def test_epoch_keeper_keeps_each_epochs_checkpoint(tmp_path):
    """The trainer calls on_metrics(epoch e) just before writing epoch e's checkpoint: the file then holds e - 1."""
    sys.path.insert(0, str(ROOT))
    from bench.experiments import EpochKeeper

    ck = tmp_path / "run.safetensors"
    keep = EpochKeeper(ck, tmp_path)
    for e in (1, 2, 3):
        keep(step=e * 10, epoch=e, row={"loss": 1.0 / e})  # metrics of epoch e, before its checkpoint is written
        ck.write_text(f"weights after epoch {e}")
    kept = keep.finish(3)
    assert list(kept) == [1, 2, 3]
    assert [kept[e].read_text() for e in (1, 2, 3)] == [f"weights after epoch {e}" for e in (1, 2, 3)]


@needs_gid
def test_experiments_per_epoch_scores_every_epoch_and_the_last_is_the_run(tmp_path):
    js = tmp_path / "e.json"
    cmd = [sys.executable, str(ROOT / "bench" / "experiments.py"), "--rows", "noisy_ce", "--seeds", "0", "--steps", "2",
           "--epochs", "2", "--batch-size", "2", "--crop", "32", "--train-tiles", "3", "--eval-tiles", "2", "--device",
           "cpu", "--threads", "1", "--per-epoch", "--out", str(tmp_path / "e.md"), "--json", str(js)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=170, check=False, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = json.loads(js.read_text())["runs"][0]
    assert sorted(run["by_epoch"]) == ["1", "2"] and len(run["train_loss_by_epoch"]) == 2
    assert run["by_epoch"]["2"]["miou"] == pytest.approx(run["miou"], abs=1e-9)  # the last epoch = the scored weights
    assert run["by_epoch"]["2"]["per_class_iou"] == run["per_class_iou"]
    assert all(0 <= v["miou"] <= 1 for v in run["by_epoch"].values())
    assert "### mIoU after every epoch" in (tmp_path / "e.md").read_text()


def _args(init, steps=56):
    import types

    return types.SimpleNamespace(init=init, steps=steps, epochs=4, batch_size=8, crop=160, lr=2e-3, device="cpu",
                                 flip_fraction=0.3, encoder="tu-efficientnet_lite0")


def test_init_scratch_builds_a_randomly_initialised_encoder_and_is_part_of_the_protocol():
    import torch

    sys.path.insert(0, str(ROOT))
    from bench.experiments import _protocol, _same_protocol, train_config
    from seghz.classes import get_scheme
    from seghz.models.registry import build_model, lite0_state_dict

    nc = len(get_scheme("hz7").names)
    models = {}
    for init in ("imagenet", "scratch"):
        cfg = train_config(_args(init), "noisy_ce", seed=0)  # the TrainConfig run_one hands to train()
        assert cfg.encoder == "tu-efficientnet_lite0" and cfg.class_weights == "none"
        torch.manual_seed(0)  # as train() seeds before build_model
        models[init] = build_model(cfg.arch, cfg.encoder, nc, cfg.encoder_weights)
    assert train_config(_args("scratch"), "ce", 0).encoder_weights is None
    assert train_config(_args("imagenet"), "ce", 0).encoder_weights == "lite0-imagenet"
    enc = {k: m.encoder.model.state_dict() for k, m in models.items()}
    ref = lite0_state_dict()
    w = "conv_stem.weight"
    assert torch.equal(enc["imagenet"][w], ref[w])  # the shipped ImageNet weights
    assert not torch.equal(enc["scratch"][w], ref[w])
    differ = [k for k, v in enc["imagenet"].items() if v.is_floating_point() and not torch.equal(v, enc["scratch"][k])]
    assert len(differ) > 0.9 * sum(v.is_floating_point() for v in enc["imagenet"].values())
    # same seed: only the encoder differs, the decoder / head draw is the same
    dec = {k: dict(m.named_parameters()) for k, m in models.items()}
    for k, v in dec["imagenet"].items():
        if not k.startswith("encoder."):
            assert torch.equal(v, dec["scratch"][k]), k

    p_in, p_sc = (_protocol(_args(i), ["a", "b"], ["c"]) for i in ("imagenet", "scratch"))
    assert (p_in["init"], p_in["encoder_weights"]) == ("imagenet", "lite0-imagenet")
    assert (p_sc["init"], p_sc["encoder_weights"]) == ("scratch", None)
    # --resume: never mixes inits; a JSON written before --init existed (no "init" key) counts as an ImageNet run
    legacy = {k: v for k, v in p_in.items() if k != "init"}
    assert _same_protocol(p_in, p_in) and not _same_protocol(p_in, p_sc) and not _same_protocol(p_sc, p_in)
    assert _same_protocol(legacy, p_in) and not _same_protocol(legacy, p_sc) and not _same_protocol(None, p_in)


def test_compare_section_merges_reports_by_init_and_steps_and_refuses_other_splits():
    sys.path.insert(0, str(ROOT))
    from bench.experiments import _protocol, compare_entries, render, summarise

    base = _protocol(_args("imagenet"), ["a", "b"], ["c"])
    sc = _protocol(_args("scratch"), ["a", "b"], ["c"])
    runs = [_run("ce", 0, 0.40, 0.42), _run("ce", 1, 0.44, 0.46)]
    own = {"protocol": base, "env": {"device": "cpu", "device_description": "X", "torch": "t", "threads": 1,
                                     "cpu_count": 2, "loadavg": "1", "date": "d"},
           "runs": runs + [_run("noisy_ce", 0, 0.30, 0.30)], "rows": ["ce", "noisy_ce"], "seeds": [0, 1],
           "command": "main", "wall_s": 1.0, "eval_classes": ["Water"]}
    own["summary"] = summarise(own["runs"], own["rows"])
    # scratch runs split over two reports (one per seed) are merged into one (init, steps) group
    s0 = {"protocol": sc, "command": "scratch s0", "env": {"date": "t0"}, "runs": [_run("ce", 0, 0.30, 0.31)]}
    s1 = {"protocol": sc, "command": "scratch s1", "env": {"date": "t1"}, "runs": [_run("ce", 1, 0.34, 0.35)]}
    entries = compare_entries(base, [s1, s0])
    assert [(e["init"], e["steps"], len(e["runs"])) for e in entries] == [("scratch", 56, 2)]
    with pytest.raises(ValueError, match="two reports"):
        compare_entries(base, [s0, s0])
    with pytest.raises(ValueError, match="crop"):
        compare_entries(base, [{**s0, "protocol": {**sc, "crop": 224}}])
    own["compare"] = entries
    md = render(own, "<!-- reading -->\nkept\n<!-- /reading -->")
    assert "## Initialisation: ImageNet vs from scratch" in md and "kept" in md
    # clean CE: ImageNet 42.00 ± 2.83, scratch 32.00 ± 2.83, delta -10.00 (GT classes: 44 -> 33, -11.00)
    assert "| clean | 56 | ImageNet (shipped Lite0) | 42.00 ± 2.83 | 44.00 ± 2.83 |" in md
    assert "| clean | 56 | scratch (random) | 32.00 ± 2.83 | 33.00 ± 2.83 | 50.00 ± 0.00 | 60.00 ± 0.00 | -10.00 | -11.00 |" in md
    assert "| noisy (30 % flipped) | 56 | ImageNet (shipped Lite0) | 30.00 |" in md
    assert "`scratch s1`; `scratch s0`" in md and md.index("## Initialisation") < md.index("## Reading")


def test_noise_epochs_label_report_by_hand():
    """bench/noise_epochs.py's label report on a 1×2×4 case: truth, the noisy given labels, the rewritten ones."""
    sys.path.insert(0, str(ROOT))
    from bench.noise_epochs import label_report

    truth = [np.array([[0, 0, 1, 1], [1, 1, 255, 0]], np.uint8)]
    given = [np.array([[0, 1, 1, 1], [0, 1, 255, 0]], np.uint8)]  # 2 of 7 labelled px wrong
    final = [np.array([[0, 255, 1, 255], [0, 1, 255, 0]], np.uint8)]  # one wrong px caught, one correct px dropped
    r = label_report(truth, given, final, ["A", "B"])
    assert r["given_wrong"] == pytest.approx(2 / 7) and r["after_wrong"] == pytest.approx(1 / 7)
    assert r["after_ignored"] == pytest.approx(2 / 7) and r["correct_ignored"] == pytest.approx(1 / 5)
    assert r["wrong_caught"] == pytest.approx(1 / 2)
    assert r["true_class_kept"] == {"A": pytest.approx(2 / 3), "B": pytest.approx(2 / 4)}
