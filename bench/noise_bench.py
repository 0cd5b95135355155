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
checkpoint's; no tuning tiles are reserved then), less any tile that is one of the shipped weights' 40 tuning tiles
(by name, or by content when ``../shared/data/gid15`` is present): :data:`DEFAULT_WEIGHTS` were tuned on them.

Every pair is checked (image header, label read, sizes) before any tile is predicted. The output names the
checkpoint, seed, noise fractions, scheme, stems and TTA (JSON keys of the same names), and the checkpoint's own
mIoU on the folder's CLEAN labels (``model_on_clean_labels``, from the same probabilities): below 50 % the model
fails on these tiles and the noise-finding numbers measure nothing useful. The claim of the README is the
``suspicion`` row's P@k against cleanlab's pixel-score ranking on the same probabilities.

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

from bench.heldout import add_data_arguments, held_out, near_copies, salted, trained_images
from seghz.classes import IGNORE, get_scheme
from seghz.data.io import check_image, read_image, read_label
from seghz.errors import BadInputError, CheckpointError
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
TUNE_TILES = 40  # the first 40 test tiles in salted order: DEFAULT_WEIGHTS were tuned on them (--mode tune)
LOW_MIOU_PCT = 50.0  # below this clean mIoU the checkpoint fails on the tiles and the noise numbers mean nothing
CLAIM = {"ours": "suspicion", "cleanlab": "pixel_scores", "ours_p_at_k": 0.921, "cleanlab_p_at_k": 0.913,
         "where": "README / docs/benchmarks.md: 84 held-out GID tiles, TTA d4, seeds 0, 1, 2 (mean)"}


# ----------------------------------------------------------------------------- command-line errors

def fail(message: str) -> int:
    """Print ``error: message`` on a line of its own on stderr; the exit status of a refusal (2, as the CLI's)."""
    print(f"error: {message}", file=sys.stderr)
    return 2


def run_cli(main_fn) -> int:
    """Run a bench's ``main``: a SystemExit with a message, or a bad input / checkpoint error, becomes one
    ``error: ...`` line on stderr and exit status 2, like ``python -m seghz``; anything else returns main's status."""
    try:
        rc = main_fn()
    except SystemExit as e:
        if isinstance(e.code, str):
            return fail(e.code.removeprefix("error: "))
        raise
    except (BadInputError, CheckpointError) as e:
        return fail(str(e))
    return rc if isinstance(rc, int) else 0


def tuning_stems(test_stems, n: int = TUNE_TILES) -> list[str]:
    """The checkpoint's tuning tiles: the first ``n`` of its ``test_stems`` in salted order (none of the first 40 is
    a copy of a training tile, so this equals ``held_out(data, test_stems, "test")[:n]`` on ../shared/data/gid15)."""
    return sorted(test_stems, key=salted)[:n]


def leave_out_tuning_tiles(tiles, test_stems) -> tuple[list, dict[str, str]]:
    """``--stems all``: the suspicion weights were tuned on the shipped checkpoint's first 40 test tiles (``test_stems``
    is the fallback when that file is absent), so a folder's tiles
    that are those (by name, or by content when our copy of them is here) are left out, and stderr names them.
    Returns (the other tiles, ``{left-out stem: the tuning stem it is}``)."""
    if DEFAULT_CKPT.is_file():  # the tuning tiles are the *shipped* checkpoint's, whatever --checkpoint says
        from seghz.models.checkpoint import read_metadata

        test_stems = read_metadata(DEFAULT_CKPT).get("test_stems") or test_stems
    if not test_stems:
        return list(tiles), {}
    tuned = tuning_stems(test_stems)
    left_out = {s: s for s, _, _ in tiles if s in set(tuned)}
    ours = [q for q in (DEFAULT_DATA / "images" / f"{s}.png" for s in tuned) if q.is_file()]
    if ours:
        by_img = {img: s for s, img, _ in tiles if s not in left_out}
        for src, cp in near_copies(ours, list(by_img)):
            left_out[by_img[cp]] = src.stem
    if left_out:
        print(f"left out {len(left_out)} tile(s) that are the checkpoint's tuning tiles (the first {TUNE_TILES} of its "
              "test tiles in salted order; the suspicion weights were tuned on them): "
              + ", ".join(k if k == v else f"{k} (= {v})" for k, v in sorted(left_out.items())), file=sys.stderr)
    return [t for t in tiles if t[0] not in left_out], left_out


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
    ``shift_px`` (inclusive range, elliptic kernel) into their neighbours.

    A component is its id in one component map per (label, class) and its bounding box, and a dilation is done in
    the box grown by its radius (the same pixels: the component is empty outside its box). A full-size mask per
    component, as before, ran a 24 GB machine out of memory on Dubai's 2000-px images (1000-3000 components each);
    the random draws, their order and the result are the same as then."""
    comps: list[tuple[int, int, int, tuple[int, int, int, int]]] = []
    cmaps: dict[tuple[int, int], np.ndarray] = {}
    for t, label in enumerate(labels):
        valid = label != IGNORE
        for c in np.unique(label[valid]):
            n, lab, st, _ = cv2.connectedComponentsWithStats((label == c).astype(np.uint8), connectivity=8)
            cmaps[t, int(c)] = lab.astype(np.uint16) if n < 65535 else lab
            comps += [(t, int(c), j, tuple(int(v) for v in st[j, :4])) for j in range(1, n)]
    noisy = [lb.copy() for lb in labels]
    if not comps:
        return noisy
    order = rng.permutation(len(comps))
    nflip = round(flip_fraction * len(comps))
    flips, rest = order[:nflip], order[nflip:]
    shifts = rest[: round(shift_fraction * len(rest))]
    for i in flips:
        t, c, j, (x, y, w, h) = comps[i]
        others = [k for k in classes if k != c]
        if others:
            win = np.s_[y:y + h, x:x + w]
            noisy[t][win][cmaps[t, c][win] == j] = rng.choice(others)
    for i in shifts:
        t, c, j, (x, y, w, h) = comps[i]
        r = int(rng.integers(shift_px[0], shift_px[1] + 1))
        hh, ww = labels[t].shape
        win = np.s_[max(0, y - r):min(hh, y + h + r), max(0, x - r):min(ww, x + w + r)]
        m = cmaps[t, c][win] == j
        ker = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        band = cv2.dilate(m.astype(np.uint8), ker).astype(bool) & ~m & (labels[t][win] != IGNORE)
        noisy[t][win][band] = c
    return noisy

# ----------------------------------------------------------------------------- data

def check_pairs(chosen: list[tuple[str, Path, Path]], src_scheme, ck_scheme: str) -> list[np.ndarray]:
    """Check every ``(stem, image, label)`` pair before anything is predicted: the image's header
    (:func:`seghz.data.io.check_image`), the label read in ``src_scheme`` and crosswalked to ``ck_scheme``, and their
    sizes. Returns the crosswalked labels; raises BadInputError naming the first bad file."""
    labels = []
    for _, image, label in chosen:
        info = check_image(image)
        true = label_for_checkpoint(read_label(label, src_scheme), src_scheme.name, ck_scheme)
        if true.shape != (info.height, info.width):
            raise BadInputError(label, f"label size {true.shape[1]}x{true.shape[0]} differs from image {image.name} "
                                       f"size {info.width}x{info.height}")
        labels.append(true)
    return labels


def load_tiles(args, chosen: list[tuple[str, Path, Path]], pred, src_scheme, ck_scheme: str, classes: list[int] | None,
               labels: list[np.ndarray] | None = None):
    """Predict each ``(stem, image, label)`` tile once (cached in ``--cache``), crosswalk its label and inject noise.
    ``labels``: the crosswalked labels from :func:`check_pairs` (checked and read here when not given)."""
    if labels is None:
        labels = check_pairs(chosen, src_scheme, ck_scheme)
    tiles = []
    cache_dir = Path(args.cache) / _cache_tag(args.data) if args.cache else None
    try:
        for i, ((stem, image, _), true) in enumerate(zip(chosen, labels)):
            img = read_image(image)
            if true.shape != img.shape[:2]:  # check_pairs compared the header's size; the pixels must agree
                raise BadInputError(image, f"image size {img.shape[1]}x{img.shape[0]} differs from its label's "
                                           f"{true.shape[1]}x{true.shape[0]}")
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
    finally:
        print(file=sys.stderr)  # end the progress line: an error message starts on a line of its own
    return tiles, add_noise(tiles, args.seed, args.flip_fraction, args.shift_fraction, classes)


def clean_scores(tiles: list[dict], names) -> dict:
    """The checkpoint's own scores on the tiles' CLEAN labels (argmax of the probabilities every method ranks), in %."""
    from seghz.metrics import confusion_matrix, scores

    nc = tiles[0]["proba"].shape[0]
    cm = np.zeros((nc, nc), np.int64)
    for t in tiles:
        cm += confusion_matrix(t["proba"].argmax(0), t["true"], nc)
    sc = scores(cm, list(names))
    pct = lambda v: None if v is None else round(100 * v, 2)
    return {"miou_pct": pct(sc["miou"]), "oa_pct": pct(sc["oa"]),
            "per_class_iou_pct": {k: pct(v["iou"]) for k, v in sc["per_class"].items() if v["iou"] is not None},
            "pixels": int(cm.sum())}


def low_accuracy_warning(clean: dict, threshold: float = LOW_MIOU_PCT) -> str | None:
    """The warning for a checkpoint that fails on the tiles (clean mIoU below ``threshold`` %), else None."""
    m = clean.get("miou_pct")
    if m is None or m >= threshold:
        return None
    return (f"the checkpoint's mIoU on these tiles' clean labels is {m:.2f} % (< {threshold:.0f} %): the model fails on "
            "these tiles; noise-finding numbers measure nothing useful here")


def queue_text(q: dict) -> str:
    """One readable line for :func:`queue_metrics`."""
    return (f"queue: {q['items']} items; the top {q['prefix_items']} cover {q['prefix_pixels']} suspicious px (as many as "
            f"the noisy px), {q['prefix_noisy_fraction'] * 100:.1f} % of them noisy; the whole queue covers "
            f"{q['noisy_pixels_covered_by_queue'] * 100:.1f} % of the noisy px")


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
                    help=f"tiles reserved for tuning, never reported (default {TUNE_TILES} with --stems test, 0 with "
                         "--stems all: the weights were tuned on our tiles already, and any of those in the folder "
                         "is left out)")
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
        return fail(f"no data at {data} (an images/ and a labels/ folder; ../shared/data is not part of a fresh "
                    "clone); nothing to measure")
    import torch

    from seghz.classes import crosswalk_path
    from seghz.infer.engine import Predictor
    from seghz.models.checkpoint import read_metadata

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2") or 2))
    left_out: dict[str, str] = {}
    try:
        meta = read_metadata(args.checkpoint)  # a missing or bad checkpoint: one line, no traceback
        src_scheme = get_scheme(args.scheme)
        if args.scheme != meta["scheme"]["name"] and crosswalk_path(args.scheme, meta["scheme"]["name"]) is None:
            raise ValueError(f"no crosswalk from scheme '{args.scheme}' to the checkpoint's '{meta['scheme']['name']}'")
        test_stems = meta.get("test_stems") or []
        # a folder of "new" tiles must not hold copies of the tiles the checkpoint trained on (ours: DEFAULT_DATA)
        trained = trained_images(DEFAULT_DATA, test_stems) if args.stems == "all" else []
        tiles_all = held_out(data, test_stems, args.stems, trained_on=trained)
        if args.stems == "all":
            tiles_all, left_out = leave_out_tuning_tiles(tiles_all, test_stems)
    except (ValueError, KeyError) as e:  # a bad folder, scheme or checkpoint (get_scheme raises KeyError)
        return fail(e.args[0] if isinstance(e, KeyError) else str(e))
    n_tune = args.tune_tiles if args.tune_tiles is not None else (TUNE_TILES if args.stems == "test" else 0)
    tune_set = tiles_all[:n_tune]
    rest = tiles_all[n_tune:]
    report_set = rest[: args.tiles] if args.tiles is not None else rest
    chosen = tune_set if args.mode == "tune" else report_set
    tune_stems = [t[0] for t in tune_set]
    if not chosen:
        return fail(f"no tiles left: {len(tiles_all) + len(left_out)} tiles ({args.stems}), {len(left_out)} left out "
                    f"as tuning tiles, {n_tune} reserved for tuning")
    try:
        labels = check_pairs(chosen, src_scheme, meta["scheme"]["name"])  # every file checked before predicting
        pred, meta = Predictor.from_checkpoint(args.checkpoint, args.device)
    except (ValueError, OSError) as e:  # a bad file or checkpoint: its name and problem, no traceback
        return fail(str(e))
    ck_scheme = meta["scheme"]["name"]
    names = meta["scheme"]["names"]
    t0 = time.perf_counter()
    try:
        tiles, classes = load_tiles(args, chosen, pred, src_scheme, ck_scheme, None, labels)
    except (ValueError, OSError) as e:  # a bad file: its name and problem, no traceback
        return fail(str(e))
    t_pred = time.perf_counter() - t0
    if not any(t["noise"].any() for t in tiles):
        return fail(f"the injected noise changed no labelled pixel of these {len(tiles)} tile(s) (too few label "
                    "components to flip or shift at these fractions); measure on more tiles")
    clean = clean_scores(tiles, names)
    warns = [w for w in [low_accuracy_warning(clean)] if w]
    setup = {"checkpoint": str(args.checkpoint), "data": str(data), "scheme": args.scheme, "stems": args.stems,
             "tta": args.tta, "seed": args.seed, "flip_fraction": args.flip_fraction,
             "shift_fraction": args.shift_fraction, "tau": args.tau, "device": args.device}
    print(f"checkpoint {args.checkpoint}; data {data} (labels read as {args.scheme} -> {ck_scheme}, stems {args.stems}); "
          f"TTA {args.tta}; noise seed {args.seed}: {args.flip_fraction * 100:g} % of components flipped, "
          f"{args.shift_fraction * 100:g} % of the rest shifted")
    print(f"the checkpoint on the CLEAN labels of these {len(tiles)} tiles: mIoU {clean['miou_pct']:.2f} %, "
          f"OA {clean['oa_pct']:.2f} %")
    for w in warns:
        print(f"WARNING: {w}")

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
        out = {"mode": "tune", **setup, "tiles": [t["stem"] for t in tiles], "model_on_clean_labels": clean,
               "warnings": warns, **res}
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
        cl = res["cleanlab"]
        ours = res["methods"][CLAIM["ours"]]["precision_at_k"]
        theirs = cl[CLAIM["cleanlab"]]["precision_at_k"] if "skipped" not in cl else None
        claim = {**CLAIM, "here_ours_p_at_k": ours, "here_cleanlab_p_at_k": theirs}
        out = {"mode": "report", **setup, "tiles": [t["stem"] for t in tiles], "tuning_tiles": tune_stems,
               "tuning_tiles_left_out": sorted(left_out), "model_on_clean_labels": clean, "warnings": warns,
               "claim": claim, **res, "weights": w.__dict__, "classes_for_flips": [names[c] for c in classes],
               "seconds": {"predict": round(t_pred, 1), "evaluate": round(t_eval, 1)}}
        print(f"REPORTED tiles: {len(tiles)} (tuning tiles excluded: {len(tune_stems) + len(left_out)})")
        print(f"noisy pixels {res['noisy_pixels']}/{res['pixels']} (random precision@k = {res['noise_rate']:.3f})")
        print(f"{'method':<26} {'P@k':>7} {'R@k':>7} {'AUROC':>7}")
        for k, m in res["methods"].items():
            mark = "  <- the claim's row (ours)" if k == CLAIM["ours"] else ""
            print(f"{k:<26} {m['precision_at_k']:7.4f} {m['recall_at_k']:7.4f} {m['auroc']:7.4f}{mark}")
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
            print(f"cleanlab pixel_scores ranking: P@k {p['precision_at_k']:.4f}  AUROC {p['auroc']:.4f}  <- the claim's row (cleanlab)")
        print(f"the claim ({CLAIM['where']}): suspicion P@k {CLAIM['ours_p_at_k']} vs cleanlab pixel_scores ranking "
              f"P@k {CLAIM['cleanlab_p_at_k']} on the same probabilities; here {ours:.4f} vs "
              + (f"{theirs:.4f}" if theirs is not None else "n/a (cleanlab not installed)"))
        print(queue_text(res["queue"]))
        for w_ in warns:  # repeated under the numbers it is about
            print(f"WARNING: {w_}")
    out.update(date=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))
    write_report(args.json, out, "bench/noise_bench.py", argv)
    return 0


def write_report(path: str | None, out: dict, script: str, argv: list[str] | None) -> None:
    """Add the machine, its CPU count and the command line to a bench's JSON report ``out``, and write it to ``path``
    (nothing when None)."""
    out.update(machine=platform.processor() or platform.machine(), cpus=os.cpu_count(),
               command=f"python {script} " + " ".join(sys.argv[1:] if argv is None else argv))
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
