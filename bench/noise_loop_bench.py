#!/usr/bin/env python
"""Loop check of the noise queue (issue 5): fix the top-N queue items, retrain, mIoU gained vs fixing random items.

A "retrain" that fits a CPU: the fast head-only refit (:func:`seghz.train.refit.refit_head`, backbone and decoder
frozen). Steps, on held-out GID-15 test tiles of the shipped model (same salted order and noise injection as
``bench/noise_bench.py``; its first ``--tune-tiles`` tuning tiles are skipped):

1. **noisy training**: noise is injected into the labels of ``--tiles`` TRAINING tiles (30 % component flips +
   boundary shifts, :func:`bench.noise_bench.inject_noise`) and the shipped model's head is refitted on those noisy
   labels (every labelled pixel is a fit target, class-balanced subsample of ``--max-pixels``). Only the head
   absorbs the noise; the features are still the ones learned on clean labels.
2. **queue**: that noisy model predicts the training tiles (``--tta``); the suspicion score
   (:data:`DEFAULT_WEIGHTS`) against the noisy labels is grouped into queue items
   (:func:`seghz.review.suspicion.group_components`), ranked by score × area.
3. **analyst**: the top-N items (N in ``--n``) are fixed with the TRUE labels (an item's pixels: the suspicious
   same-label pixels of its bbox not claimed by a higher item, as in ``noise_bench.queue_metrics``). Baselines,
   each the mean over ``--draws`` random draws: N random components of the noisy label map (what an analyst would
   review without a model; a whole component is fixed) and N random queue items (the queue without its order).
4. **retrain**: the shipped model's head is refitted again, same config and seed, on the noisy labels with the
   fixes applied.
5. **evaluate**: mIoU (hz7) on the CLEAN labels of ``--eval-tiles`` EVALUATION tiles, disjoint from the training
   tiles, no TTA.

Reported per arm: mIoU, gain over the noisy model, gain per 100 items, noisy pixels fixed (per item and as a fraction
of all the injected noise), pixels reviewed per item. Reference rows: the shipped model (never saw the noise) and
the "oracle" refit on the clean training labels (every noisy pixel fixed). The printed mIoU and gains are in
percentage points (mIoU 82.0 = 0.820); the JSON keeps fractions of 1 (its ``units`` says so).

Tiles needed: ``--tiles`` + ``--eval-tiles`` after the tuning tiles (40 with ``--stems test``, 0 with ``--stems
all``): the defaults need 60 tiles in a folder of your own.

    python bench/noise_loop_bench.py --json /tmp/loop.json
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import cv2
import numpy as np

from bench.heldout import add_data_arguments, held_out, trained_images
from bench.noise_bench import (
    DEFAULT_CKPT,
    DEFAULT_DATA,
    TUNE_TILES,
    add_noise,
    fail,
    leave_out_tuning_tiles,
    method_metrics,
    run_cleanlab,
    run_cli,
)
from seghz.classes import IGNORE, get_scheme
from seghz.data.io import read_pair
from seghz.evaluate import label_for_checkpoint
from seghz.metrics import confusion_matrix, scores
from seghz.review.crossfit import fold_assignment, held_out_head
from seghz.review.suspicion import DEFAULT_WEIGHTS, ClassThresholds, combine, group_components


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


UNITS = {"miou": "fraction of 1 (printed x100 as percent)", "oa": "fraction of 1",
         "gain": "fraction of 1 of mIoU (printed x100 as percentage points)",
         "gain_per_100_items": "fraction of 1 of mIoU per 100 items reviewed (printed x100 as points)",
         "gain_std": "fraction of 1 (sd over the random draws, ddof 0; null with one draw and for the queue arms)",
         "precision_at_k": "fraction of 1", "noise_fraction_fixed": "fraction of 1"}
LEGEND = ("mIoU and gain in percentage points; gain = mIoU - the noisy refit's mIoU; gain/100 = gain per 100 items "
          "reviewed; ±sd = sd of the gain over the random draws (n/a: one draw, or a queue arm, which has no draws); "
          "cleanlab n/a = cleanlab not installed (pip install 'cleanlab>=2.8')")


def pts(v: float | None, signed: bool = False) -> str:
    """A fraction of 1 as percentage points (``0.0675`` -> ``+6.75``); ``n/a`` for None/NaN."""
    if v is None or math.isnan(v):
        return "n/a"
    return f"{100 * v:+.2f}" if signed else f"{100 * v:.2f}"


def summary_table(summary: list[dict]) -> list[str]:
    """The printed arm table (mIoU and gains in percentage points); no lines at all without arms."""
    if not summary:
        return []
    head = (f"{'arm':<19}{'N':>5}{'items':>6}{'px/item':>9}{'noisy fixed/item':>17}{'noise fixed':>12}{'rev. prec':>10}"
            f"{'mIoU':>8}{'gain':>8}{'±sd':>7}{'gain/100':>10}")
    lines = [head]
    for s in summary:
        sd = s.get("gain_std")
        lines.append(f"{s['arm']:<19}{s['n']:>5}{s['items']:>6.0f}{s['pixels_reviewed_per_item']:>9.0f}"
                     f"{s['noisy_fixed_per_item']:>17.0f}{s['noise_fraction_fixed']:>12.3f}{s['precision_of_review']:>10.3f}"
                     f"{pts(s['miou']):>8}{pts(s['gain'], True):>8}{pts(sd):>7}{pts(s['gain_per_100_items'], True):>10}")
    lines.append(LEGEND)
    return lines


# ----------------------------------------------------------------------------- items

def queue_item_masks(tiles: list[dict], items, score: dict[str, np.ndarray], threshold: float = 0.5) -> list[tuple[int, np.ndarray]]:
    """(tile index, full-size bool mask) per queue item, in queue order: the suspicious same-label pixels of the
    item's bbox not claimed by a higher item (the definition of ``noise_bench.queue_metrics``)."""
    idx = {t["stem"]: i for i, t in enumerate(tiles)}
    claimed = {t["stem"]: np.zeros(t["noisy"].shape, bool) for t in tiles}
    out = []
    for it in items:
        t = tiles[idx[it.stem]]
        r0, c0, r1, c1 = it.bbox
        m = np.zeros(t["noisy"].shape, bool)
        sl = np.s_[r0:r1, c0:c1]
        m[sl] = (score[it.stem][sl] >= threshold) & (t["noisy"][sl] == it.label_id) & ~claimed[it.stem][sl]
        claimed[it.stem] |= m
        out.append((idx[it.stem], m))
    return out


def label_components(tiles: list[dict]) -> list[tuple[int, np.ndarray]]:
    """(tile index, bool mask) of every 8-connected component of each class of the NOISY label maps."""
    out = []
    for i, t in enumerate(tiles):
        lb = t["noisy"]
        for c in np.unique(lb[lb != IGNORE]):
            n, lab = cv2.connectedComponents((lb == c).astype(np.uint8), connectivity=8)
            out += [(i, lab == j) for j in range(1, n)]
    return out


def apply_fixes(tiles: list[dict], fixes: list[tuple[int, np.ndarray]]) -> tuple[list[np.ndarray], dict]:
    """Effective labels = noisy labels with the fixed pixels set to the true labels; and what the fixes did."""
    eff = [t["noisy"].copy() for t in tiles]
    reviewed = 0
    for i, m in fixes:
        eff[i][m] = tiles[i]["true"][m]
        reviewed += int(m.sum())
    noisy_total = int(sum(t["noise"].sum() for t in tiles))
    left = int(sum(((e != t["true"]) & (t["true"] != IGNORE)).sum() for e, t in zip(eff, tiles)))
    fixed = noisy_total - left
    n = max(len(fixes), 1)
    return eff, {"items": len(fixes), "pixels_reviewed": reviewed, "pixels_reviewed_per_item": reviewed / n,
                 "noisy_pixels_fixed": fixed, "noisy_fixed_per_item": fixed / n,
                 "noise_fraction_fixed": fixed / max(noisy_total, 1), "noise_fraction_fixed_per_100_items": 100 * fixed / max(noisy_total, 1) / n,
                 "precision_of_review": fixed / max(reviewed, 1)}


# ----------------------------------------------------------------------------- refit + evaluation

def refit_and_eval(ckpt: str, train: list[dict], labels: list[np.ndarray], evals: list[dict], cfg, workdir: Path, tag: str,
                   device: str) -> dict:
    from seghz.train.refit import RefitItem, refit_head

    out = workdir / f"{tag}.safetensors"
    t0 = time.perf_counter()
    res = refit_head(ckpt, [RefitItem(t["image"], corrected=lb) for t, lb in zip(train, labels)], out, cfg)
    t1 = time.perf_counter()
    ev = evaluate_checkpoint(str(out), evals, device)
    ev.update(refit_seconds=round(t1 - t0, 2), eval_seconds=round(time.perf_counter() - t1, 2),
              fit_pixels=res.counts["corrected_used"])
    return ev


def evaluate_checkpoint(ckpt: str, evals: list[dict], device: str, predictor=None) -> dict:
    from seghz.infer.engine import Predictor

    pred = predictor if predictor is not None else Predictor.from_checkpoint(ckpt, device)[0]
    nc = len(evals[0]["names"])
    cm = np.zeros((nc, nc), np.int64)
    for t in evals:
        cm += confusion_matrix(pred.predict_full(t["image"], "none").mask, t["true"], nc)
    s = scores(cm, evals[0]["names"])
    return {"miou": float(s["miou"]), "oa": float(s["oa"])}


# ----------------------------------------------------------------------------- main

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", default=str(DEFAULT_CKPT))
    add_data_arguments(ap, DEFAULT_DATA)
    ap.add_argument("--tiles", type=int, default=30, help="training tiles (noisy labels, the queue comes from them)")
    ap.add_argument("--eval-tiles", type=int, default=30, help="evaluation tiles (clean labels; disjoint from training)")
    ap.add_argument("--tune-tiles", type=int, default=None,
                    help="noise_bench's tuning tiles, skipped (default 40 with --stems test, 0 with --stems all)")
    ap.add_argument("--n", default="25,50,100,200", help="comma-separated numbers of items reviewed")
    ap.add_argument("--draws", type=int, default=3, help="random draws per N for the random arms")
    ap.add_argument("--random", default="components", help="random arms: components, queue (comma-separated)")
    ap.add_argument("--tta", choices=["none", "flip", "d4"], default="d4", help="TTA of the queue's predictions")
    ap.add_argument("--scoring", default="in-sample,held-out",
                    help="queues to test: in-sample (the noisy model scores its own training labels) and/or held-out "
                         "(each fold scored by a head refitted on the other folds' noisy labels, seghz.review.crossfit)")
    ap.add_argument("--folds", type=int, default=2, help="folds of the held-out scoring")
    ap.add_argument("--detector-only", action="store_true",
                    help="stop after the detectors (pixel P@k / AUROC of ours, plain loss and cleanlab on the same "
                         "probabilities of the noise-trained model); no fixing/retraining arms")
    ap.add_argument("--tau", type=float, default=float(np.log(10.0)))
    ap.add_argument("--flip-fraction", type=float, default=0.3)
    ap.add_argument("--shift-fraction", type=float, default=0.5)
    ap.add_argument("--max-pixels", type=int, default=40_000, help="fit pixels per refit (class-balanced subsample)")
    ap.add_argument("--steps", type=int, default=50, help="L-BFGS iterations per refit")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json")
    args = ap.parse_args(argv)

    data = Path(args.data)
    if not (data / "images").is_dir():
        return fail(f"no data at {data} (an images/ and a labels/ folder; ../shared/data is not part of a fresh "
                    "clone); nothing to measure")
    import torch

    from seghz.infer.engine import Predictor
    from seghz.models.checkpoint import read_metadata
    from seghz.train.refit import RefitConfig

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2") or 2))
    t_start = time.perf_counter()
    try:
        meta = read_metadata(args.checkpoint)  # a missing or bad checkpoint: one line, no traceback
        ck_scheme = meta["scheme"]["name"]
        names = list(meta["scheme"]["names"])
        src = get_scheme(args.scheme)
        label_for_checkpoint(np.zeros((1, 1), np.uint8), src.name, ck_scheme)  # raises when no crosswalk exists
        test_stems = meta.get("test_stems") or []
        # a folder of "new" tiles must not hold copies of the tiles the checkpoint trained on (ours: DEFAULT_DATA)
        trained = trained_images(DEFAULT_DATA, test_stems) if args.stems == "all" else []
        tiles_all = held_out(data, test_stems, args.stems, trained_on=trained)
        if args.stems == "all":  # the suspicion weights were tuned on the checkpoint's first 40 test tiles
            tiles_all, _ = leave_out_tuning_tiles(tiles_all, test_stems)
    except (ValueError, KeyError) as e:  # a bad folder, scheme or checkpoint (get_scheme raises KeyError)
        return fail(e.args[0] if isinstance(e, KeyError) else str(e))
    n_tune = args.tune_tiles if args.tune_tiles is not None else (TUNE_TILES if args.stems == "test" else 0)
    rest = tiles_all[n_tune:]
    train_set, eval_set = rest[: args.tiles], rest[args.tiles: args.tiles + args.eval_tiles]
    if len(train_set) < args.tiles or not eval_set:
        return fail(f"not enough held-out tiles: {len(rest)} after the {n_tune} tuning ones, asked {args.tiles} + "
                    f"{args.eval_tiles} (--tiles + --eval-tiles; this folder holds {len(tiles_all)})")
    assert not {t[0] for t in train_set} & {t[0] for t in eval_set}

    def load(stem, image, label):
        img, lbl = read_pair(image, label, src)  # sizes checked
        return {"stem": stem, "image": img, "true": label_for_checkpoint(lbl, src.name, ck_scheme), "names": names}

    try:  # every tile read and checked before anything is predicted
        train = [load(*t) for t in train_set]
        evals = [load(*t) for t in eval_set]
    except (ValueError, OSError) as e:  # a bad file: its name and problem, no traceback
        return fail(str(e))
    add_noise(train, args.seed, args.flip_fraction, args.shift_fraction)
    valid_px = int(sum((t["true"] != IGNORE).sum() for t in train))
    noisy_px = int(sum(t["noise"].sum() for t in train))
    _log(f"train {len(train)} tiles ({noisy_px}/{valid_px} noisy px), eval {len(evals)} tiles")

    cfg = RefitConfig(steps=args.steps, max_corrected=args.max_pixels, context_per_class=0, max_windows=len(train),
                      tile=256, seed=args.seed, device=args.device)
    ns = [int(x) for x in args.n.split(",") if x.strip()]
    arms_random = [a.strip() for a in args.random.split(",") if a.strip()]
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="noise_loop_") as tmp:
        work = Path(tmp)
        shipped = evaluate_checkpoint(args.checkpoint, evals, args.device)
        _log(f"shipped model: mIoU {pts(shipped['miou'])} %")
        # 1. noisy training
        base = refit_and_eval(args.checkpoint, train, [t["noisy"] for t in train], evals, cfg, work, "noisy", args.device)
        _log(f"noisy refit: mIoU {pts(base['miou'])} % ({base['refit_seconds']} s refit)")
        oracle = refit_and_eval(args.checkpoint, train, [t["true"] for t in train], evals, cfg, work, "oracle", args.device)
        _log(f"oracle (clean) refit: mIoU {pts(oracle['miou'])} %")
        # 2. the queues from the noisy model: in-sample, and held-out heads (seghz.review.crossfit)
        scorings = [x.strip() for x in args.scoring.split(",") if x.strip()]
        noisy_pred, _ = Predictor.from_checkpoint(str(work / "noisy.safetensors"), args.device)
        queues, dets, n_items = {}, {}, {}
        for scoring in scorings:
            if scoring == "in-sample":
                pred_of = {i: noisy_pred for i in range(len(train))}
                name = "queue"
            elif scoring == "held-out":
                folds = fold_assignment(len(train), args.folds, args.seed)
                pred_of = {}
                t0 = time.perf_counter()
                for f, members in enumerate(folds):
                    fit = [(t["image"], t["noisy"]) for i, t in enumerate(train) if i not in members]
                    path = held_out_head(args.checkpoint, fit, work / f"heldout{f}.safetensors", max_images=len(fit),
                                         max_pixels=args.max_pixels, steps=args.steps, tile=256, seed=args.seed,
                                         device=args.device)
                    p_f = Predictor.from_checkpoint(str(path), args.device)[0]
                    pred_of.update({i: p_f for i in members})
                _log(f"held-out heads ({args.folds} folds): {time.perf_counter() - t0:.1f} s")
                name = "queue_heldout"
            else:
                raise SystemExit(f"unknown --scoring {scoring!r}: use in-sample, held-out")
            for i, t in enumerate(train):
                r = pred_of[i].predict_full(t["image"], args.tta, return_proba=True)
                t["proba"], t["dis"] = r.proba.astype(np.float32), r.disagreement.astype(np.float32)
            det = dets[name] = method_metrics(train, {"suspicion": DEFAULT_WEIGHTS}, args.tau)
            det["cleanlab"] = run_cleanlab(train)
            acc = ClassThresholds(len(names))
            for t in train:
                acc.update(t["proba"], t["noisy"])
            items, score = [], {}
            for t in train:
                s_ = score[t["stem"]] = combine(t["sig"], t["noisy"], DEFAULT_WEIGHTS)
                items += group_components(s_, t["noisy"], t["sig"]["argmax"], stem=t["stem"], names=names,
                                          class_freq=acc.frequencies())
            items.sort(key=lambda it: (-it.score, it.stem, it.bbox))
            queues[name] = queue_item_masks(train, items, score)
            n_items[name] = len(items)
            cl = det["cleanlab"].get("pixel_scores")
            cl_pk = f"{cl['precision_at_k']:.4f}" if cl else "n/a (not installed)"
            _log(f"{scoring} scoring: suspicion P@k {det['suspicion']['precision_at_k']:.4f} (loss "
                 f"{det['loss']['precision_at_k']:.4f}, cleanlab {cl_pk}), "
                 f"AUROC {det['suspicion']['auroc']:.4f}; {len(items)} items")
            for t in train:  # free memory
                t.pop("proba"), t.pop("dis"), t.pop("sig")
        comps = label_components(train)
        if args.detector_only:
            ns = []

        def arm(name, n, fixes, draw=None):
            eff, fx = apply_fixes(train, fixes)
            ev = refit_and_eval(args.checkpoint, train, eff, evals, cfg, work, f"{name}_{n}_{draw}", args.device)
            row = {"arm": name, "n": n, "draw": draw, **fx, **ev, "gain": ev["miou"] - base["miou"],
                   "gain_per_100_items": 100 * (ev["miou"] - base["miou"]) / max(fx["items"], 1)}
            _log(f"  {name:<18} N={n:<4} draw={draw}  items {fx['items']:<4} fixed {fx['noise_fraction_fixed']:.3f} "
                 f"mIoU {pts(ev['miou'])} ({pts(row['gain'], True)} points)")
            rows.append(row)

        for n in ns:
            for name, qm in queues.items():
                arm(name, n, qm[:n])
            for d in range(args.draws):
                rng = np.random.default_rng([args.seed, n, d, 1])
                if "components" in arms_random:
                    pick = rng.choice(len(comps), min(n, len(comps)), replace=False)
                    arm("random_components", n, [comps[i] for i in pick], d)
                if "queue" in arms_random and "queue" in queues:
                    qm = queues["queue"]
                    pick = rng.choice(len(qm), min(n, len(qm)), replace=False)
                    arm("random_queue_items", n, [qm[i] for i in sorted(pick)], d)
    seconds = round(time.perf_counter() - t_start, 1)

    keys = ("items", "pixels_reviewed_per_item", "noisy_fixed_per_item", "noise_fraction_fixed",
            "noise_fraction_fixed_per_100_items", "precision_of_review", "miou", "gain", "gain_per_100_items")
    summary = []
    for n in ns:
        for name in list(queues) + [f"random_{a}" if a != "queue" else "random_queue_items" for a in arms_random]:
            rs = [r for r in rows if r["arm"] == name and r["n"] == n]
            if rs:
                s = {"arm": name, "n": n, "draws": len(rs), **{k: float(np.mean([r[k] for r in rs])) for k in keys}}
                # sd over the random draws; None with one draw (and for the queue arms, which have no draws)
                s["gain_std"] = float(np.std([r["gain"] for r in rs])) if len(rs) > 1 else None
                summary.append(s)

    print(f"train {len(train)} tiles ({noisy_px}/{valid_px} = {noisy_px / valid_px:.3f} noisy), eval {len(evals)} tiles (clean)")
    for name, det in dets.items():
        cl = det["cleanlab"]
        cl_txt = (f"cleanlab pixel scores P@k {cl['pixel_scores']['precision_at_k']:.4f}, find_label_issues precision "
                  f"{cl['find_label_issues']['precision']:.4f} / recall {cl['find_label_issues']['recall']:.4f}"
                  if "pixel_scores" in cl else f"cleanlab: {cl.get('skipped', 'n/a')}")
        print(f"{name} detector ({args.tta}): suspicion P@k {det['suspicion']['precision_at_k']:.4f}, AUROC "
              f"{det['suspicion']['auroc']:.4f}, loss P@k {det['loss']['precision_at_k']:.4f}; {cl_txt}; "
              f"{n_items[name]} items")
    print(f"{len(comps)} label components")
    print(f"mIoU (%) on eval tiles: shipped {pts(shipped['miou'])} | noisy refit {pts(base['miou'])} | "
          f"oracle clean refit {pts(oracle['miou'])}")
    for line in summary_table(summary):
        print(line)
    print(f"total {seconds} s")

    if args.json:
        out = {"units": UNITS, "checkpoint": str(args.checkpoint), "data": str(data), "scheme": args.scheme,
               "stems": args.stems,
               "train_tiles": [t[0] for t in train_set], "eval_tiles": [t[0] for t in eval_set],
               "tuning_tiles_skipped": n_tune,
               "pixels": valid_px, "noisy_pixels": noisy_px, "noise_rate": noisy_px / valid_px,
               "detector": dets, "queue_items": n_items, "label_components": len(comps),
               "shipped": shipped, "noisy_refit": base, "oracle_refit": oracle, "summary": summary, "runs": rows,
               "config": {"refit": {k: getattr(cfg, k) for k in ("steps", "max_corrected", "context_per_class", "weight_decay", "tile", "seed")},
                          "tta": args.tta, "tau": args.tau, "flip_fraction": args.flip_fraction,
                          "shift_fraction": args.shift_fraction, "seed": args.seed, "draws": args.draws,
                          "scoring": scorings, "folds": args.folds},
               "seconds": seconds, "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
               "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
               "threads": torch.get_num_threads(),
               "command": "python bench/noise_loop_bench.py " + " ".join(sys.argv[1:] if argv is None else argv)}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
