#!/usr/bin/env python
"""One training run of the experiments' protocol, scored on the clean held-out tiles after EVERY epoch (issue 4).

``bench/experiments.py`` scores the model after the last step only; this script keeps each epoch's checkpoint and
scores them all, so a noise-robust recipe's whole course is visible (does noisy CE peak early and then memorise the
flips? when does a refinement start to pay?), and with a label-rewriting recipe it reports how wrong the final
training labels are against the clean ones, per true class. Same data, split, noise draw (seed ``1000 + seed``),
model and TrainConfig fields as :func:`bench.experiments.train_config` (Unet + Lite0 from the shipped ImageNet
weights, no class weights, no Dice); ``--extra`` adds TrainConfig overrides (JSON).

    python bench/noise_epochs.py --seed 0 --out /tmp/proxy/noisy
    python bench/noise_epochs.py --seed 0 --clean --out /tmp/proxy/clean
    python bench/noise_epochs.py --seed 0 --out /tmp/proxy/drop --extra '{"refine": "drop"}'

(the "CPU proxy" of docs/experiments.md: 128 training tiles, 800 steps × 8 × 128², 10 epochs; ≈ 12 min per run on
one core of a 2-core Xeon, three at a time.) Writes ``<out>/result.json`` and the per-epoch checkpoints
``<out>/e<k>.safetensors``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np

from bench.experiments import (
    DEFAULT_CKPT,
    DEFAULT_DATA,
    INITS,
    SCHEME,
    EpochKeeper,
    _read_labels,
    load,
    noisy_copy,
    score_epochs,
    split_stems,
)
from seghz.classes import IGNORE, get_scheme


def label_report(truth: list[np.ndarray], given: list[np.ndarray], final: list[np.ndarray], names: list[str]) -> dict:
    """How wrong the training labels are, given vs after the recipe rewrote them (fractions of the labelled px)."""
    t, g, f = np.stack(truth), np.stack(given), np.stack(final)
    lab = t != IGNORE
    right = lab & (g == t)
    out = {"given_wrong": float(((g != t) & lab).sum() / lab.sum()),
           "after_wrong": float(((f != t) & (f != IGNORE) & lab).sum() / lab.sum()),
           "after_ignored": float(((f == IGNORE) & lab).sum() / lab.sum()),
           "correct_ignored": float(((f == IGNORE) & right).sum() / max(1, right.sum())),
           "wrong_caught": float(((f != g) & lab & ~right).sum() / max(1, (lab & ~right).sum())),
           "true_class_kept": {}}
    for k, n in enumerate(names):
        m = lab & (t == k)
        if m.any():
            out["true_class_kept"][n] = float(((f == k) & m).sum() / m.sum())
    return out


def main(argv: list[str] | None = None) -> dict:
    import torch

    from seghz.train.trainer import TrainConfig, train

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-tiles", type=int, default=128)
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--flip-fraction", type=float, default=0.3)
    ap.add_argument("--clean", action="store_true", help="train on the clean labels (no noise)")
    ap.add_argument("--init", choices=list(INITS), default="imagenet")
    ap.add_argument("--encoder", default="tu-efficientnet_lite0")
    ap.add_argument("--extra", default="{}", help="TrainConfig overrides, JSON")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    if not a.data.is_dir():
        raise SystemExit(f"{a.data}: the GID-15 folder is missing (see ../shared/data/README.md)")
    torch.set_num_threads(a.threads)
    a.out.mkdir(parents=True, exist_ok=True)
    train_stems, eval_stems = split_stems(a.data, DEFAULT_CKPT, a.train_tiles, None)
    train_s, eval_s = load(a.data, train_stems), load(a.data, eval_stems)
    truth = [lb for _, lb in train_s]
    if not a.clean:
        train_s, _ = noisy_copy(train_s, a.seed, a.flip_fraction)
    # the plain-CE base of bench/experiments.py; --extra may override any of it (class weights, Dice, ...)
    base = dict(scheme=SCHEME, arch="Unet", encoder=a.encoder, epochs=a.epochs, batch_size=a.batch_size,
                crop_size=a.crop, lr=a.lr, seed=a.seed, device=a.device, tile_size=max(a.crop, 224),
                steps_per_epoch=-(-a.steps // a.epochs), encoder_weights=INITS[a.init], class_weights="none",
                dice=False)
    cfg = TrainConfig(**{**base, **json.loads(a.extra)})
    ck = a.out / "run.safetensors"
    keeper = EpochKeeper(ck, a.out, echo=True)
    t0 = time.perf_counter()
    res = train(cfg, train_s, [], ck, on_metrics=keeper)
    kept = keeper.finish(a.epochs)
    names = list(get_scheme(SCHEME).names)
    report = {"protocol": {**{k: v for k, v in vars(a).items() if k not in ("data", "out")}},
              "train_s": round(time.perf_counter() - t0, 1), "epochs": {}}
    final = res.get("refined_labels")
    if cfg.clean != "none":  # cross-fitted cleaning keeps its labels next to the checkpoint
        from seghz.train.trainer import clean_path

        final = _read_labels(clean_path(ck))
    if final is not None:
        report["labels"] = label_report(truth, [lb for _, lb in train_s], final, names)
        print("labels:", json.dumps(report["labels"]), flush=True)
    report["epochs"] = score_epochs(kept, eval_s, a.device, echo=True)
    (a.out / "result.json").write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
