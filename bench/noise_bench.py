#!/usr/bin/env python
"""Noisy-label detection bench on real data: injected noise in held-out GID-15 tiles.

Setup (issue 5, "Measured on real data"): the held-out test tiles of the shipped GID model
(``test_stems`` in its metadata, never trained on) are read, their gid15 labels crosswalked to hz7 (what
the checkpoint predicts), and noise is injected per tile:

* **flips**: 30 % of the 8-connected label components (per class, drawn at random over all the components
  of the chosen tiles) get a random other class among those present in the tiles' labels;
* **boundary shifts**: of the remaining components, ``--shift-fraction`` (default 0.5) are dilated by 2–4 px
  (elliptic kernel) into their neighbours (the band takes the component's class; ignored pixels stay ignored).

The noise mask is ``noisy label != true label`` over the non-ignored pixels. One model pass per tile
(``--tta``) gives the probabilities and TTA disagreement that EVERY method below ranks:

* ``suspicion``: :func:`seghz.review.suspicion.suspicion_score` with :data:`DEFAULT_WEIGHTS`, class thresholds
  over all reported tiles (and ablations: each signal alone, no smoothing);
* ``loss``: plain loss ranking ``−ln p(noisy label)``;
* ``cleanlab``: ``cleanlab.segmentation.filter.find_label_issues`` (a boolean mask: precision/recall at its own
  count) and ``cleanlab.segmentation.rank.get_label_quality_scores`` pixel scores (ranked, lowest first).
  Skipped with a note when cleanlab is not importable. cleanlab needs every pixel in 0..K−1: ignored pixels
  are given the model's argmax there, and are excluded from every metric.

Metrics over the non-ignored pixels of the reported tiles: precision@k and recall@k with k = the number of
noisy pixels (equal by construction), and AUROC (ties get average ranks).

Tiles (:mod:`bench.heldout`): the test stems are ordered by a salted SHA-1 of the stem; the first ``--tune-tiles``
form the TUNING subset (``--mode tune`` grid-searches the mix there), the next ``--tiles`` are REPORTED. The two
never overlap. **On your own data**: ``--data DIR --stems all --scheme NAME`` measures every tile of a folder the
checkpoint never saw (``images/`` and ``labels/`` paired by stem, labels in any scheme with a crosswalk to the
checkpoint's; no tuning tiles are reserved then).

    python bench/noise_bench.py --tiles 85 --tta d4 --json /tmp/noise.json
    python bench/noise_bench.py --mode tune --tune-tiles 40 --tta d4
    python bench/noise_bench.py --data /path/to/heldout --stems all --scheme gid15 --tta d4 --device cuda --json out.json
"""
from __future__ import annotations

import argparse
import datetime as _dt
import itertools
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import cv2
import numpy as np

from bench.heldout import add_data_arguments, held_out, trained_images
from seghz.classes import IGNORE, get_scheme
from seghz.data.io import read_image, read_label
from seghz.evaluate import label_for_checkpoint
from seghz.review.suspicion import (
    DEFAULT_WEIGHTS,
    ClassThresholds,
    SuspicionWeights,
    combine,
    group_components,
    signals,
)

DEFAULT_CKPT = ROOT / "checkpoints" / "gid15_hz7_unet_lite0.safetensors"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "gid15"


# ----------------------------------------------------------------------------- metrics

def _avg_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x`` (ascending), ties sharing their average rank."""
    order = np.argsort(x, kind="stable")
    xs = x[order]
    starts = np.r_[0, np.flatnonzero(np.diff(xs)) + 1]
    ends = np.r_[starts[1:], xs.size]
    avg = (starts + ends + 1) / 2.0
    ranks = np.empty(x.size, np.float64)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def auroc(score: np.ndarray, truth: np.ndarray) -> float:
    """Area under the ROC curve of ``score`` (higher = positive) for boolean ``truth`` (Mann–Whitney U)."""
    pos = int(truth.sum())
    neg = truth.size - pos
    if pos == 0 or neg == 0:
        return float("nan")
    r = _avg_ranks(score.astype(np.float64))
    return float((r[truth].sum() - pos * (pos + 1) / 2) / (pos * neg))


def at_k(score: np.ndarray, truth: np.ndarray, k: int) -> dict:
    """precision@k and recall@k: the k highest scores (ties broken by position) against ``truth``."""
    top = np.argpartition(-score, k - 1)[:k] if k < score.size else np.arange(score.size)
    hit = int(truth[top].sum())
    return {"precision_at_k": hit / k, "recall_at_k": hit / max(int(truth.sum()), 1)}


def ranking_metrics(score: np.ndarray, truth: np.ndarray) -> dict:
    k = int(truth.sum())
    return {**at_k(score, truth, k), "auroc": auroc(score, truth), "k": k}


def mask_metrics(pred: np.ndarray, truth: np.ndarray) -> dict:
    n = int(pred.sum())
    hit = int((pred & truth).sum())
    return {"flagged": n, "precision": hit / n if n else float("nan"), "recall": hit / max(int(truth.sum()), 1)}


# ----------------------------------------------------------------------------- noise

def inject_noise(labels: list[np.ndarray], rng: np.random.Generator, classes: list[int], flip_fraction: float = 0.3,
                 shift_fraction: float = 0.3, shift_px: tuple[int, int] = (2, 4)) -> list[np.ndarray]:
    """Noisy copies of class-index labels (255 kept): component flips, then boundary shifts (dilations).

    Components are the 8-connected regions of each class of each label; ``flip_fraction`` of ALL the
    components of the set (GID tiles hold 1-9 components each, so per-tile rounding would be meaningless) get
    a random other class from ``classes``; ``shift_fraction`` of the remaining ones are dilated by
    ``shift_px`` (inclusive range, elliptic kernel) into their neighbours."""
    comps: list[tuple[int, int, np.ndarray]] = []
    for t, label in enumerate(labels):
        valid = label != IGNORE
        for c in np.unique(label[valid]):
            n, lab = cv2.connectedComponents((label == c).astype(np.uint8), connectivity=8)
            comps += [(t, int(c), lab == j) for j in range(1, n)]
    noisy = [lb.copy() for lb in labels]
    if not comps:
        return noisy
    order = rng.permutation(len(comps))
    nflip = round(flip_fraction * len(comps))
    flips, rest = order[:nflip], order[nflip:]
    shifts = rest[: round(shift_fraction * len(rest))]
    for i in flips:
        t, c, m = comps[i]
        others = [k for k in classes if k != c]
        if others:
            noisy[t][m] = rng.choice(others)
    for i in shifts:
        t, c, m = comps[i]
        r = int(rng.integers(shift_px[0], shift_px[1] + 1))
        ker = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        band = cv2.dilate(m.astype(np.uint8), ker).astype(bool) & ~m & (labels[t] != IGNORE)
        noisy[t][band] = c
    return noisy


# ----------------------------------------------------------------------------- data

def load_tiles(args, chosen: list[tuple[str, Path, Path]], pred, src_scheme, ck_scheme: str, classes: list[int] | None):
    """Predict each ``(stem, image, label)`` tile once (cached in ``--cache``), crosswalk its label and inject noise."""
    tiles = []
    cache_dir = Path(args.cache) / _cache_tag(args.data) if args.cache else None
    for i, (stem, image, label) in enumerate(chosen):
        img = read_image(image)
        true = label_for_checkpoint(read_label(label, src_scheme), src_scheme.name, ck_scheme)
        if true.shape != img.shape[:2]:
            raise SystemExit(f"{label}: label size {true.shape[1]}x{true.shape[0]} differs from its image "
                             f"{image.name} ({img.shape[1]}x{img.shape[0]})")
        cache = cache_dir / f"{stem}_{args.tta}.npz" if cache_dir is not None else None
        if cache is not None and cache.is_file():
            z = np.load(cache)
            proba, dis = z["proba"], z["disagreement"]
        else:
            res = pred.predict_full(img, args.tta, return_proba=True)
            proba, dis = res.proba.astype(np.float32), res.disagreement.astype(np.float32)
            if cache is not None:
                cache.parent.mkdir(parents=True, exist_ok=True)
                np.savez(cache, proba=proba, disagreement=dis)
        tiles.append({"stem": stem, "true": true, "proba": proba, "dis": dis})
        print(f"\r  predicted {i + 1}/{len(chosen)}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return tiles, add_noise(tiles, args.seed, args.flip_fraction, args.shift_fraction, classes)


def _cache_tag(data) -> str:
    """The cache subfolder of a data folder: tiles of two folders may share a stem."""
    import hashlib

    p = Path(data).resolve()
    return f"{p.name}-{hashlib.sha1(str(p).encode()).hexdigest()[:8]}"


def add_noise(tiles: list[dict], seed: int, flip_fraction: float, shift_fraction: float,
              classes: list[int] | None = None) -> list[int]:
    """Give every tile ``noisy`` (its ``true`` label with :func:`inject_noise`) and ``noise`` (the changed labelled
    pixels); flips go to the ``classes`` present in the tiles' labels unless given. Returns the classes used."""
    if classes is None:
        classes = sorted({int(c) for t in tiles for c in np.unique(t["true"]) if c != IGNORE})
    noisy = inject_noise([t["true"] for t in tiles], np.random.default_rng(seed), classes, flip_fraction, shift_fraction)
    for t, nz in zip(tiles, noisy):
        t["noisy"] = nz
        t["noise"] = (nz != t["true"]) & (t["true"] != IGNORE)
    return classes


def method_metrics(tiles: list[dict], weights_list: dict[str, SuspicionWeights], tau: float,
                   extra_k: int | None = None) -> dict[str, dict]:
    """Ranking metrics per method over the valid pixels of every tile (one method's scores in memory at a time);
    with ``extra_k`` also precision/recall at that many pixels (``*_at_extra_k``)."""
    nc = tiles[0]["proba"].shape[0]
    acc = ClassThresholds(nc)
    for t in tiles:
        acc.update(t["proba"], t["noisy"])
    thr = acc.thresholds()
    for t in tiles:
        t["sig"] = signals(t["proba"], t["noisy"], t["dis"], thresholds=thr, tau=tau)
    truth = np.concatenate([t["noise"][t["sig"]["valid"]] for t in tiles])
    def metrics(sc):
        m = ranking_metrics(sc, truth)
        if extra_k:
            m.update({f"{k}_at_extra_k": v for k, v in at_k(sc, truth, extra_k).items()}, extra_k=extra_k)
        return m

    out = {"loss": metrics(np.concatenate([t["sig"]["nll"][t["sig"]["valid"]] for t in tiles]))}
    for name, w in weights_list.items():
        out[name] = metrics(np.concatenate([combine(t["sig"], t["noisy"], w)[t["sig"]["valid"]] for t in tiles]))
    return out


def run_cleanlab(tiles: list[dict]) -> dict:
    try:
        import cleanlab
        from cleanlab.segmentation.filter import find_label_issues
        from cleanlab.segmentation.rank import get_label_quality_scores
    except ImportError as e:
        return {"skipped": f"cleanlab not importable ({e}); pip install 'cleanlab>=2.8' to compare"}
    probs = np.stack([t["proba"] for t in tiles])
    labels = np.stack([np.where(t["noisy"] == IGNORE, t["proba"].argmax(0), t["noisy"]) for t in tiles]).astype(np.int64)
    valid = np.stack([t["noisy"] != IGNORE for t in tiles])
    truth = np.concatenate([t["noise"][t["noisy"] != IGNORE] for t in tiles])
    t0 = time.perf_counter()
    issues = find_label_issues(labels, probs, n_jobs=1, verbose=False)
    t1 = time.perf_counter()
    _, pix = get_label_quality_scores(labels, probs, n_jobs=1, verbose=False)
    t2 = time.perf_counter()
    res = {"version": cleanlab.__version__,
           "find_label_issues": {**mask_metrics(issues[valid], truth), "seconds": round(t1 - t0, 2)},
           "pixel_scores": {**ranking_metrics(-pix[valid].astype(np.float64), truth), "seconds": round(t2 - t1, 2)}}
    return res


def queue_metrics(tiles: list[dict], weights: SuspicionWeights, names) -> dict:
    """The component queue: of the suspicious pixels in the top items (taken until they cover k pixels), the
    fraction that is noisy; and the fraction of the noisy pixels that the whole queue covers. An item's pixels
    are taken as the suspicious same-label pixels of its bbox not claimed by a higher item (exact unless the
    bbox of a high item holds part of a lower item)."""
    nc = tiles[0]["proba"].shape[0]
    acc = ClassThresholds(nc)
    for t in tiles:
        acc.update(t["proba"], t["noisy"])
    items, scores = [], {}
    for t in tiles:
        s = scores[t["stem"]] = combine(t["sig"], t["noisy"], weights)
        items += group_components(s, t["noisy"], t["sig"]["argmax"], stem=t["stem"], names=names, class_freq=acc.frequencies())
    items.sort(key=lambda it: -it.score)
    by_stem = {t["stem"]: t for t in tiles}
    k = int(sum(t["noise"].sum() for t in tiles))
    covered = hit = 0
    in_queue = 0
    prefix_items = None
    claimed = {t["stem"]: np.zeros(t["noisy"].shape, bool) for t in tiles}
    for n, it in enumerate(items):
        t = by_stem[it.stem]
        r0, c0, r1, c1 = it.bbox
        cl = claimed[it.stem][r0:r1, c0:c1]  # a view: pixels are counted once (bboxes may overlap)
        sel = (scores[it.stem][r0:r1, c0:c1] >= 0.5) & (t["noisy"][r0:r1, c0:c1] == it.label_id) & ~cl
        cl |= sel
        got = int((sel & t["noise"][r0:r1, c0:c1]).sum())
        in_queue += got
        if prefix_items is None:
            covered += int(sel.sum())
            hit += got
            if covered >= k:
                prefix_items = n + 1
    return {"items": len(items), "prefix_items": prefix_items or len(items), "prefix_pixels": covered,
            "prefix_noisy_fraction": hit / max(covered, 1), "noisy_pixels_covered_by_queue": in_queue / max(k, 1)}


def evaluate(tiles, weights_list, tau, with_cleanlab=True) -> dict:
    truth = np.concatenate([t["noise"][t["noisy"] != IGNORE] for t in tiles])
    cl = run_cleanlab(tiles) if with_cleanlab else None
    extra = cl["find_label_issues"]["flagged"] if cl and "skipped" not in cl else None
    res = {"pixels": int(truth.size), "noisy_pixels": int(truth.sum()), "noise_rate": float(truth.mean()),
           "methods": method_metrics(tiles, weights_list, tau, extra)}
    if cl is not None:
        res["cleanlab"] = cl
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", default=str(DEFAULT_CKPT))
    add_data_arguments(ap, DEFAULT_DATA)
    ap.add_argument("--tiles", type=int, default=None, help="reported tiles (after the tuning ones; default: all the rest)")
    ap.add_argument("--tune-tiles", type=int, default=None,
                    help="tiles reserved for tuning, never reported (default 40 with --stems test, 0 with --stems all: "
                         "the weights were tuned on our tiles already)")
    ap.add_argument("--mode", choices=["report", "tune"], default="report")
    ap.add_argument("--tta", choices=["none", "flip", "d4"], default="d4")
    ap.add_argument("--tau", type=float, default=float(np.log(10.0)), help="noise-mask threshold in nats")
    ap.add_argument("--flip-fraction", type=float, default=0.3)
    ap.add_argument("--shift-fraction", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", help="folder to cache predicted probabilities (per stem and TTA)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json")
    args = ap.parse_args(argv)

    data = Path(args.data)
    if not (data / "images").is_dir():
        print(f"no data at {data} (an images/ and a labels/ folder; ../shared/data is not part of a fresh clone); "
              "nothing to measure", file=sys.stderr)
        return 2
    import torch

    from seghz.classes import crosswalk_path
    from seghz.infer.engine import Predictor
    from seghz.models.checkpoint import read_metadata

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2") or 2))
    meta = read_metadata(args.checkpoint)
    try:
        src_scheme = get_scheme(args.scheme)
        if args.scheme != meta["scheme"]["name"] and crosswalk_path(args.scheme, meta["scheme"]["name"]) is None:
            raise ValueError(f"no crosswalk from scheme '{args.scheme}' to the checkpoint's '{meta['scheme']['name']}'")
        test_stems = meta.get("test_stems") or []
        # a folder of "new" tiles must not hold copies of the tiles the checkpoint trained on (ours: DEFAULT_DATA)
        trained = trained_images(DEFAULT_DATA, test_stems) if args.stems == "all" else []
        tiles_all = held_out(data, test_stems, args.stems, trained_on=trained)
    except (ValueError, KeyError) as e:  # a bad folder or scheme (get_scheme raises KeyError)
        print(f"error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 2
    n_tune = args.tune_tiles if args.tune_tiles is not None else (40 if args.stems == "test" else 0)
    tune_set = tiles_all[:n_tune]
    rest = tiles_all[n_tune:]
    report_set = rest[: args.tiles] if args.tiles is not None else rest
    chosen = tune_set if args.mode == "tune" else report_set
    tune_stems = [t[0] for t in tune_set]
    if not chosen:
        print(f"no tiles left: {len(tiles_all)} tiles ({args.stems}), {n_tune} reserved for tuning", file=sys.stderr)
        return 2
    pred, meta = Predictor.from_checkpoint(args.checkpoint, args.device)
    ck_scheme = meta["scheme"]["name"]
    names = meta["scheme"]["names"]
    t0 = time.perf_counter()
    try:
        tiles, classes = load_tiles(args, chosen, pred, src_scheme, ck_scheme, None)
    except (ValueError, OSError) as e:  # a bad file: its name and problem, no traceback
        print(f"\nerror: {e}", file=sys.stderr)
        return 2
    t_pred = time.perf_counter() - t0

    if args.mode == "tune":
        # stage 1: the signal weights without smoothing; stage 2: smoothing for the 3 best weightings
        grid, seen = {}, set()
        for wl, wc, wt in itertools.product([1, 0.5], [0, 0.1, 0.25, 0.5], [0, 0.1, 0.25, 0.5]):
            w = SuspicionWeights(wl, wc, wt, 0)
            if w.normalised() not in seen:  # (1, 0, 0) and (0.5, 0, 0) are one weighting
                seen.add(w.normalised())
                grid[f"l{wl}_c{wc}_t{wt}_r0"] = w
        res = evaluate(tiles, grid, args.tau, with_cleanlab=False)
        best = sorted(grid, key=lambda k: -res["methods"][k]["precision_at_k"])[:3]
        grid2 = {f"{k[:-3]}_r{r}_a{a}": SuspicionWeights(grid[k].loss, grid[k].cl, grid[k].tta, r, a)
                 for k in best for r, a in itertools.product([3, 5, 7, 10], [0.5, 0.75, 0.9])}
        res2 = evaluate(tiles, grid2, args.tau, with_cleanlab=False)
        res["methods"].update(res2["methods"])
        rows = sorted(res["methods"].items(), key=lambda kv: (-kv[1]["precision_at_k"], -kv[1]["auroc"]))
        print(f"TUNING subset: {len(tiles)} tiles, {res['noisy_pixels']}/{res['pixels']} noisy ({res['noise_rate']:.3f})")
        for k, m in rows[:25]:
            print(f"{k:<28} p@k {m['precision_at_k']:.4f}  AUROC {m['auroc']:.4f}")
        print(f"{'loss':<28} p@k {res['methods']['loss']['precision_at_k']:.4f}  AUROC {res['methods']['loss']['auroc']:.4f}")
        out = {"mode": "tune", "tiles": [t["stem"] for t in tiles], **res}
    else:
        w = DEFAULT_WEIGHTS
        ws = {
            "suspicion": w,
            "suspicion_no_smoothing": SuspicionWeights(w.loss, w.cl, w.tta, 0),
            "loss_signal_only": SuspicionWeights(1, 0, 0, 0),
            "cl_signal_only": SuspicionWeights(0, 1, 0, 0),
            "tta_signal_only": SuspicionWeights(0, 0, 1, 0),
        }
        t1 = time.perf_counter()
        res = evaluate(tiles, ws, args.tau)
        res["queue"] = queue_metrics(tiles, w, names)
        t_eval = time.perf_counter() - t1
        out = {"mode": "report", "data": str(data), "scheme": args.scheme, "stems": args.stems,
               "tiles": [t["stem"] for t in tiles], "tuning_tiles": tune_stems, **res,
               "weights": w.__dict__, "tau": args.tau, "tta": args.tta, "classes_for_flips": [names[c] for c in classes],
               "seconds": {"predict": round(t_pred, 1), "evaluate": round(t_eval, 1)}}
        print(f"REPORTED tiles: {len(tiles)} (tuning tiles excluded: {len(tune_stems)}), TTA {args.tta}")
        print(f"noisy pixels {res['noisy_pixels']}/{res['pixels']} (random precision@k = {res['noise_rate']:.3f})")
        print(f"{'method':<26} {'P@k':>7} {'R@k':>7} {'AUROC':>7}")
        for k, m in res["methods"].items():
            print(f"{k:<26} {m['precision_at_k']:7.4f} {m['recall_at_k']:7.4f} {m['auroc']:7.4f}")
        cl = res["cleanlab"]
        if "skipped" in cl:
            print(f"cleanlab: {cl['skipped']}")
        else:
            f = cl["find_label_issues"]
            print(f"cleanlab {cl['version']} find_label_issues: flagged {f['flagged']}  precision {f['precision']:.4f}  recall {f['recall']:.4f}")
            for name in ("suspicion", "loss"):
                m = res["methods"][name]
                print(f"  {name} at cleanlab's count ({f['flagged']} px): precision {m['precision_at_k_at_extra_k']:.4f}  "
                      f"recall {m['recall_at_k_at_extra_k']:.4f}")
            p = cl["pixel_scores"]
            print(f"cleanlab pixel_scores ranking: P@k {p['precision_at_k']:.4f}  AUROC {p['auroc']:.4f}")
        print(f"queue: {res['queue']}")
    out.update(date=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"), machine=platform.processor() or platform.machine(),
               cpus=os.cpu_count(), command="python bench/noise_bench.py " + " ".join(sys.argv[1:] if argv is None else argv))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
