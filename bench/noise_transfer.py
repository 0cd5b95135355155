#!/usr/bin/env python
"""Do the suspicion defaults transfer? Noisy-label detection on Dubai tiles with a model trained here.

:data:`seghz.review.suspicion.DEFAULT_WEIGHTS` (loss + 0.1 TTA vote, same-label smoothing radius 10 px, mix 0.9)
were tuned on GID-15 (≈4 m/px, 224-px tiles) by ``bench/noise_bench.py --mode tune``. This bench asks whether they
hold on imagery they were not tuned on, at other pixel sizes:

1. **Model.** A small model (Unet, EfficientNet-Lite0 ImageNet encoder) is trained with the repo's own trainer
   (:func:`seghz.train.trainer.train`) on the CLEAN labels of Dubai tiles 1–6 (``--train-tiles``; the last image of
   every other one of them validates), on the CPU within a fixed step budget. ``--checkpoint`` skips the training.
2. **Probabilities.** Dubai tiles 7–8 (``--test-tiles``, never trained on) are predicted once per TTA mode
   (``--tta``, default none); the model's mIoU on their clean labels is printed (a weak model makes every number below weak).
3. **Views.** Each prediction is measured at several pixel grids: ``--scales 1,2,4`` averages the probabilities, the
   TTA disagreement and (by majority) the labels over f×f blocks, i.e. the same scenes at an f× coarser pixel size
   with a model of the same quality; ``--tile-views 224`` also cuts the native grid into 224-px tiles (GID's tile
   size: components cut at tile borders, smoothing windows clipped there).
4. **Noise** (per view, per ``--seeds``): :func:`bench.noise_bench.add_noise`, i.e. the GID bench's injection:
   ``--flip-fraction`` of all 8-connected label components flipped to another class present, ``--shift-fraction`` of
   the rest dilated by 2–4 px (of the view's grid).
5. **Methods**, every one ranking the same probabilities: plain loss ``−ln p(label)``; the default suspicion score;
   the default with the smoothing radius replaced (``--radii``; 0 = no smoothing); cleanlab's pixel scores
   (``cleanlab.segmentation.rank.get_label_quality_scores``) and ``find_label_issues`` (a mask), skipped with a note
   when cleanlab is not importable. Metrics (:func:`bench.noise_bench.method_metrics`, as the GID bench): P@k and
   AUROC over the labelled pixels, k = the number of noisy pixels.

cleanlab needs equal-sized images: each image is cropped (top-left) to a multiple of the patch size ``256 / f`` and
cleanlab gets the stack of patches; every method is measured on exactly those cropped pixels (our scores are
computed on the whole cropped image, so smoothing windows are not clipped at patch borders).

    python bench/noise_transfer.py --workdir /tmp/nt --json /tmp/noise_transfer.json    # ≈ 41 min on the 2-core CPU
    # more noise draws on the same probabilities (cached in --workdir; ≈ 10 min a seed):
    python bench/noise_transfer.py --workdir /tmp/nt --checkpoint /tmp/nt/dubai_transfer.safetensors --seeds 1,2
    # diagnosis: component flips only / boundary shifts only
    python bench/noise_transfer.py --workdir /tmp/nt --checkpoint /tmp/nt/dubai_transfer.safetensors --shift-fraction 0
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import cv2
import numpy as np

from bench.noise_bench import (
    add_noise,
    clean_scores,
    fail,
    low_accuracy_warning,
    method_metrics,
    run_cleanlab,
    run_cli,
    write_report,
)
from seghz.classes import IGNORE, get_scheme
from seghz.data.io import check_image, list_pairs, read_image, read_label
from seghz.errors import BadInputError
from seghz.review.suspicion import DEFAULT_WEIGHTS, SuspicionWeights

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "dubai"
GID_DATA = ROOT.parent / "shared" / "data" / "gid15"
SCHEME = "dubai"
PATCH = 256  # cleanlab patch side at scale 1 (PATCH // f at scale f)


# ----------------------------------------------------------------------------- data

def parse_ints(text: str, what: str) -> list[int]:
    """``"1-6"`` / ``"7,8"`` / ``"0,5,10"`` -> ints; a clear error otherwise."""
    out: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part[1:]:
                a, b = part.split("-", 1)
                out += list(range(int(a), int(b) + 1))
            elif part:
                out.append(int(part))
    except ValueError:
        raise SystemExit(f"error: {what} must be integers like '1-6' or '7,8', got '{text}'") from None
    if not out:
        raise SystemExit(f"error: {what} is empty")
    return out


def tile_pairs(data: Path, tiles: list[int]) -> list[tuple[str, Path, Path]]:
    """``(name, image, mask)`` of every image of Dubai's ``Tile N`` folders (``images/*.jpg`` with ``masks/*.png``)."""
    out = []
    for n in tiles:
        d = data / f"Tile {n}"
        if not (d / "images").is_dir() or not (d / "masks").is_dir():
            raise BadInputError(d, "needs an images/ and a masks/ folder (the Dubai layout 'Tile N/images', 'Tile N/masks')")
        pairs = list_pairs(d / "images", d / "masks")
        if not pairs:
            raise BadInputError(d, "no image/mask pair (files are paired by stem)")
        out += [(f"t{n}_{img.stem}", img, lbl) for img, lbl in pairs]
    return out


def read_pairs(pairs, scheme) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Read and check every pair (image header, label colours, sizes) before anything is trained or predicted."""
    out = []
    for name, img_p, lbl_p in pairs:
        info = check_image(img_p)
        lbl = read_label(lbl_p, scheme)  # an unknown colour: BadInputError naming the file
        if lbl.shape != (info.height, info.width):
            raise BadInputError(lbl_p, f"mask size {lbl.shape[1]}x{lbl.shape[0]} differs from image {img_p.name} "
                                       f"size {info.width}x{info.height}")
        out.append((name, img_p, lbl))
    return out


# ----------------------------------------------------------------------------- model

def train_model(args, train_pairs, out: Path) -> dict:
    """Train on the clean labels of ``train_pairs`` (the last image of every other training tile validates)."""
    from seghz.train.trainer import TrainCancelled, TrainConfig, train

    by_tile: dict[str, list] = {}
    for name, img_p, lbl in train_pairs:
        by_tile.setdefault(name.split("_", 1)[0], []).append((name, img_p, lbl))
    val_names = {max(v)[0] for i, (_, v) in enumerate(sorted(by_tile.items())) if i % 2 == 1}
    train_s, val_s = [], []
    for name, img_p, lbl in train_pairs:
        (val_s if name in val_names else train_s).append((read_image(img_p), lbl))
    epochs = max(1, args.epochs)
    cfg = TrainConfig(scheme=SCHEME, epochs=epochs, steps_per_epoch=max(1, args.train_steps // epochs),
                      batch_size=args.batch_size, crop_size=args.crop, device="cpu", seed=args.train_seed,
                      tile_size=512)
    t = time.perf_counter()
    def on_metrics(step, epoch, row):
        print(f"  train: epoch {epoch}/{epochs} (step {step}): loss {row.get('loss', float('nan')):.3f}, val mIoU "
              f"{row.get('val_miou', float('nan')):.3f}, {row.get('seconds', 0):.0f} s so far", file=sys.stderr, flush=True)

    rows: list[dict] = []
    out.unlink(missing_ok=True)  # a checkpoint left by an earlier run must not stand in for this one
    deadline = t + 60 * args.train_minutes
    try:
        res = train(cfg, train_s, val_s, out, on_metrics=lambda s, e, r: (rows.append(dict(r)), on_metrics(s, e, r)),
                    should_cancel=lambda: time.perf_counter() > deadline)
        hist, cut_short = res["history"], False
    except TrainCancelled:  # the time cap: the best checkpoint of the finished epochs stands
        if not out.is_file():
            raise SystemExit(f"error: the training finished no epoch within --train-minutes {args.train_minutes:g}; "
                             "give it more time or fewer --train-steps per epoch") from None
        hist, cut_short = rows, True
        print(f"  train: stopped at the {args.train_minutes:g}-min cap after {len(rows)} of {epochs} epochs; using the "
              "best checkpoint so far", file=sys.stderr, flush=True)
    return {"checkpoint": str(out), "seconds": round(time.perf_counter() - t, 1), "train_images": len(train_s),
            "val_images": sorted(val_names), "steps": cfg.steps_per_epoch * epochs, "epochs": epochs,
            "batch_size": cfg.batch_size, "crop": cfg.crop_size, "arch": f"{cfg.arch}/{cfg.encoder}",
            "val_miou_by_epoch": [round(float(r["val_miou"]), 4) for r in hist if r.get("val_miou") is not None],
            "epochs_done": len(hist), "steps_done": len(hist) * cfg.steps_per_epoch, "stopped_at_time_cap": cut_short}


def predict(pred, test, tta: str, cache: Path) -> list[dict]:
    """Probabilities and TTA disagreement of every test image (cached per image and TTA in ``cache``)."""
    tiles = []
    for i, (name, img_p, lbl) in enumerate(test):
        f = cache / f"{name}_{tta}.npz"
        if f.is_file():
            z = np.load(f)
            proba, dis = z["proba"], z["disagreement"]
        else:
            img = read_image(img_p)
            res = pred.predict_full(img, tta, return_proba=True)
            proba, dis = res.proba.astype(np.float32), res.disagreement.astype(np.float32)
            np.savez(f, proba=proba, disagreement=dis)
        tiles.append({"stem": name, "true": lbl, "proba": proba, "dis": np.nan_to_num(dis)})
        print(f"\r  predicted {i + 1}/{len(test)} (tta {tta})", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return tiles


# ----------------------------------------------------------------------------- views

def block_view(t: dict, f: int, nc: int) -> dict:
    """The tile on an f× coarser grid: block means of the probabilities and disagreement, block majority of the
    label (ignore wins only where it is the majority of the block's pixels)."""
    if f == 1:
        return {k: t[k] for k in ("stem", "true", "proba", "dis")}
    h, w = (t["true"].shape[0] // f) * f, (t["true"].shape[1] // f) * f
    def mean(a):  # (..., h, w) -> (..., h/f, w/f)
        a = a[..., :h, :w]
        return a.reshape(*a.shape[:-2], h // f, f, w // f, f).mean(axis=(-3, -1), dtype=np.float32)
    lbl = t["true"][:h, :w]
    counts = np.stack([mean((lbl == c).astype(np.float32)) for c in [*range(nc), IGNORE]])
    arg = counts.argmax(0)
    true = np.where(arg == nc, IGNORE, arg).astype(np.uint8)
    return {"stem": t["stem"], "true": true, "proba": mean(t["proba"]), "dis": mean(t["dis"])}


def crop_to(t: dict, p: int) -> dict:
    h, w = (t["true"].shape[0] // p) * p, (t["true"].shape[1] // p) * p
    return {"stem": t["stem"], "true": t["true"][:h, :w], "proba": t["proba"][:, :h, :w], "dis": t["dis"][:h, :w]}


def cut(t: dict, p: int, keys=("true", "proba", "dis", "noisy", "noise")) -> list[dict]:
    """The p×p patches of a tile whose sides are multiples of p (views, not copies)."""
    h, w = t["true"].shape
    out = []
    for r in range(0, h, p):
        for c in range(0, w, p):
            d = {"stem": f"{t['stem']}_{r}_{c}"}
            for k in keys:
                if k in t:
                    d[k] = t[k][..., r:r + p, c:c + p]
            out.append(d)
    return out


def make_view(full: list[dict], f: int, tile: int | None, nc: int) -> tuple[list[dict], int]:
    """(the tiles the methods score, the cleanlab patch side) of one view."""
    if tile:
        tiles = [p for t in full for p in cut(crop_to(block_view(t, f, nc), tile), tile, ("true", "proba", "dis"))]
        return [p for p in tiles if (p["true"] != IGNORE).any()], tile
    p = max(32, PATCH // f)
    return [crop_to(block_view(t, f, nc), p) for t in full], p


def component_scale(labels: list[np.ndarray]) -> dict:
    """Size of the label components (8-connected, per class): pixel-weighted median area and its equivalent
    diameter 2·sqrt(area/π), in pixels (a flipped component is one noise region of that size)."""
    areas = []
    for lb in labels:
        for c in np.unique(lb[lb != IGNORE]):
            _, _, st, _ = cv2.connectedComponentsWithStats((lb == c).astype(np.uint8), connectivity=8)
            areas += st[1:, cv2.CC_STAT_AREA].tolist()
    a = np.sort(np.asarray(areas, np.float64))
    if a.size == 0:
        return {"components": 0}
    cw = np.cumsum(a) / a.sum()
    med = float(a[np.searchsorted(cw, 0.5)])
    return {"components": int(a.size), "median_area_px": float(np.median(a)),
            "pixel_weighted_median_area_px": med, "pixel_weighted_median_diameter_px": round(2 * np.sqrt(med / np.pi), 1)}


def gid_component_scale() -> dict | None:
    """The same statistic on the GID-15 tiles (labels crosswalked to hz7, as noise_bench measures), for comparison."""
    if not (GID_DATA / "labels").is_dir():
        return None
    from seghz.evaluate import label_for_checkpoint

    sch = get_scheme("gid15")
    labels = [label_for_checkpoint(read_label(p, sch), "gid15", "hz7") for p in sorted((GID_DATA / "labels").glob("*.png"))]
    return component_scale(labels)


# ----------------------------------------------------------------------------- noise

# ----------------------------------------------------------------------------- measuring

def measure(tiles: list[dict], patch: int, seed: int, args, with_cleanlab: bool) -> dict:
    add_noise(tiles, seed, args.flip_fraction, args.shift_fraction)
    ws = {f"suspicion_r{r}": SuspicionWeights(DEFAULT_WEIGHTS.loss, DEFAULT_WEIGHTS.cl, DEFAULT_WEIGHTS.tta, r,
                                              DEFAULT_WEIGHTS.smooth_mix) for r in args.radii}
    ws[f"suspicion_r{DEFAULT_WEIGHTS.smooth_radius}"] = DEFAULT_WEIGHTS  # the default row is the default object
    cl = None
    if with_cleanlab:
        patches = [p for t in tiles for p in cut(t, patch, ("proba", "noisy", "noise"))]
        cl = run_cleanlab(patches)
    extra = cl["find_label_issues"]["flagged"] if cl and "skipped" not in cl else None
    methods = method_metrics(tiles, ws, args.tau, extra)
    for t in tiles:
        t.pop("sig", None)
    truth_n = int(sum(t["noise"].sum() for t in tiles))
    valid_n = int(sum((t["noisy"] != IGNORE).sum() for t in tiles))
    return {"seed": seed, "pixels": valid_n, "noisy_pixels": truth_n, "noise_rate": truth_n / max(valid_n, 1),
            "methods": methods, "cleanlab": cl}


def row_names(radii) -> list[str]:
    return ["loss"] + [f"suspicion_r{r}" for r in radii] + ["cleanlab_pixel_scores"]


def summarise(runs: list[dict], radii) -> dict:
    """Mean (and min/max) over the noise seeds of P@k and AUROC per method."""
    out = {}
    for name in row_names(radii):
        vals = []
        for r in runs:
            if name == "cleanlab_pixel_scores":
                cl = r["cleanlab"]
                if cl and "skipped" not in cl:
                    vals.append(cl["pixel_scores"])
            elif name in r["methods"]:
                vals.append(r["methods"][name])
        if vals:
            p = [v["precision_at_k"] for v in vals]
            a = [v["auroc"] for v in vals]
            out[name] = {"p_at_k": float(np.mean(p)), "p_at_k_min": min(p), "p_at_k_max": max(p), "auroc": float(np.mean(a))}
    return out


def view_label(f: int, tile: int | None) -> str:
    return f"x{f}" + (f"/{tile}px tiles" if tile else "")


def print_table(results: list[dict], radii) -> None:
    cols = [(r["tta"], r["view"]) for r in results]
    head = f"{'method':<24}" + "".join(f" {tta + ' ' + v:>24}" for tta, v in cols)
    print(head)
    print(f"{'':<24}" + "".join(f" {'P@k / AUROC':>24}" for _ in cols))
    default = f"suspicion_r{DEFAULT_WEIGHTS.smooth_radius}"
    for name in row_names(radii):
        cells = []
        for r in results:
            m = r["summary"].get(name)
            cells.append(f"{m['p_at_k']:.4f} / {m['auroc']:.4f}" if m else "n/a")
        mark = "  <- default" if name == default else ""
        label = "suspicion r=0 (no smooth)" if name == "suspicion_r0" else name
        print(f"{label:<24}" + "".join(f" {c:>24}" for c in cells) + mark)
    best = []
    for r in results:
        rs = {k: v for k, v in r["summary"].items() if k.startswith("suspicion_r")}
        k = max(rs, key=lambda n: rs[n]["p_at_k"])
        best.append(f"r={k.removeprefix('suspicion_r')} ({rs[k]['p_at_k'] - rs[default]['p_at_k']:+.4f})")
    print(f"{'best radius (vs default)':<24}" + "".join(f" {b:>24}" for b in best))
    print(f"{'noise rate (random P@k)':<24}" + "".join(f" {r['noise_rate']:>24.3f}" for r in results))
    print(f"{'component diam. px':<24}" + "".join(f" {r['component_scale'].get('pixel_weighted_median_diameter_px', 'n/a'):>24}"
                                               for r in results))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="the Dubai folder ('Tile N/images', 'Tile N/masks')")
    ap.add_argument("--train-tiles", default="1-6")
    ap.add_argument("--test-tiles", default="7,8")
    ap.add_argument("--checkpoint", help="a trained dubai-scheme checkpoint (skips the training)")
    ap.add_argument("--workdir", help="where the trained checkpoint and the cached probabilities go (default: a new "
                                      "temporary folder, kept and printed)")
    ap.add_argument("--train-steps", type=int, default=120,
                    help="optimiser steps of the CPU training (5.7-12 s each on the 2-core dev machine, by its load)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--train-minutes", type=float, default=20.0,
                    help="time cap of the training: stop there (mid-epoch) and use the best checkpoint of the finished epochs")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--crop", type=int, default=224)
    ap.add_argument("--train-seed", type=int, default=0)
    ap.add_argument("--tta", default="none", help="comma-separated TTA modes to predict with (none, flip, d4); d4 is "
                    "8 passes: ≈ 75 min for tiles 7-8 on the 2-core CPU")
    ap.add_argument("--scales", default="1,2,4", help="block-averaging factors (1 = native pixel grid)")
    ap.add_argument("--tile-views", default="224", help="also cut the native grid into tiles of these sizes (0: none)")
    ap.add_argument("--radii", default="0,5,10,20,40,80", help="smoothing radii in px of the view's grid")
    ap.add_argument("--seeds", default="0", help="noise seeds, comma-separated (the table shows their mean; each seed "
                    "costs ≈ 10-20 min on the 2-core CPU)")
    ap.add_argument("--flip-fraction", type=float, default=0.3)
    ap.add_argument("--shift-fraction", type=float, default=0.5)
    ap.add_argument("--tau", type=float, default=float(np.log(10.0)))
    ap.add_argument("--no-cleanlab", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()

    data = Path(args.data)
    if not data.is_dir():
        return fail(f"no Dubai data at {data} (../shared/data is not part of a fresh clone); nothing to measure")
    args.radii = sorted(set(parse_ints(args.radii, "--radii")) | {DEFAULT_WEIGHTS.smooth_radius})
    if any(r < 0 for r in args.radii):
        return fail("--radii must be >= 0")
    scales = parse_ints(args.scales, "--scales")
    tile_views = [t for t in parse_ints(args.tile_views, "--tile-views") if t > 0]
    seeds = parse_ints(args.seeds, "--seeds")
    ttas = [s.strip() for s in args.tta.split(",") if s.strip()]
    if any(s not in ("none", "flip", "d4") for s in ttas) or not ttas:
        return fail(f"--tta takes none, flip or d4 (comma-separated), got '{args.tta}'")
    if any(f < 1 for f in scales):
        return fail("--scales must be >= 1")
    train_tiles, test_tiles = parse_ints(args.train_tiles, "--train-tiles"), parse_ints(args.test_tiles, "--test-tiles")
    if set(train_tiles) & set(test_tiles):
        return fail(f"--train-tiles and --test-tiles overlap: {sorted(set(train_tiles) & set(test_tiles))}")

    import torch

    from seghz.infer.engine import Predictor
    from seghz.models.checkpoint import read_metadata

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2") or 2))
    scheme = get_scheme(SCHEME)
    names = list(scheme.names)
    nc = len(names)
    test = read_pairs(tile_pairs(data, test_tiles), scheme)
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="noise_transfer_"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"workdir {work}", file=sys.stderr)
    if args.checkpoint:
        ckpt = Path(args.checkpoint)
        meta = read_metadata(ckpt)
        if meta["scheme"]["name"] != SCHEME:
            return fail(f"{ckpt}: a '{meta['scheme']['name']}' checkpoint; this bench needs one trained on '{SCHEME}'")
        training = {"checkpoint": str(ckpt), "trained_here": False}
    else:
        train_pairs = read_pairs(tile_pairs(data, train_tiles), scheme)
        ckpt = work / "dubai_transfer.safetensors"
        print(f"training on {len(train_pairs)} images of tiles {train_tiles} ({args.train_steps} steps)...", file=sys.stderr)
        training = {**train_model(args, train_pairs, ckpt), "trained_here": True}
    pred, meta = Predictor.from_checkpoint(ckpt, "cpu")
    cache = work / f"proba_{'-'.join(map(str, test_tiles))}"
    cache.mkdir(exist_ok=True)
    with_cl = not args.no_cleanlab
    gid_scale = gid_component_scale()

    results, clean, seconds = [], {}, {"train": training.get("seconds")}
    for tta in ttas:
        t0 = time.perf_counter()
        full = predict(pred, test, tta, cache)
        seconds[f"predict_{tta}"] = round(time.perf_counter() - t0, 1)
        clean[tta] = clean_scores(full, names)
        views = [(f, None) for f in scales] + [(1, tile) for tile in tile_views]
        for f, tile in views:
            t0 = time.perf_counter()
            tiles, patch = make_view(full, f, tile, nc)
            scale = component_scale([t["true"] for t in tiles])
            runs = []
            for seed in seeds:
                runs.append(measure(tiles, patch, seed, args, with_cl))
                for t in tiles:
                    t.pop("noisy", None), t.pop("noise", None)
            summ = summarise(runs, args.radii)
            results.append({"tta": tta, "view": view_label(f, tile), "scale": f, "tile": tile, "images": len(tiles),
                            "pixels": runs[0]["pixels"], "noise_rate": float(np.mean([r["noise_rate"] for r in runs])),
                            "component_scale": scale, "summary": summ, "runs": runs,
                            "seconds": round(time.perf_counter() - t0, 1)})
            print(f"  measured tta {tta} view {view_label(f, tile)} in {results[-1]['seconds']} s", file=sys.stderr, flush=True)
        del full

    wall = time.perf_counter() - t_start
    warns = [w for w in (low_accuracy_warning(c) for c in clean.values()) if w]
    print(f"Dubai: model {training.get('arch', '')} trained on clean labels of tiles {train_tiles}"
          + (f" ({training['steps_done']} of {training['steps']} steps, {training['seconds']:.0f} s)" if training.get("trained_here") else f" ({ckpt})"))
    for tta, c in clean.items():
        print(f"the model on the CLEAN labels of tiles {test_tiles} ({len(test)} images), tta {tta}: mIoU {c['miou_pct']:.2f} %, "
              f"OA {c['oa_pct']:.2f} %; per class IoU " + ", ".join(f"{k} {v:.1f}" for k, v in c["per_class_iou_pct"].items()))
    print(f"noise: {args.flip_fraction * 100:g} % of components flipped, {args.shift_fraction * 100:g} % of the rest dilated "
          f"2-4 px; seeds {seeds} (mean shown); xF = F×F block average (an F× coarser pixel); radii in px of that grid; "
          "suspicion rows = DEFAULT_WEIGHTS with that smoothing radius (mix 0.9)")
    print_table(results, args.radii)
    if gid_scale:
        print(f"GID-15 (where the defaults were tuned, 224-px tiles, hz7): component diam. px "
              f"{gid_scale['pixel_weighted_median_diameter_px']} (pixel-weighted median)")
    if with_cl and results and results[0]["runs"][0]["cleanlab"] and "skipped" in results[0]["runs"][0]["cleanlab"]:
        print(f"cleanlab: {results[0]['runs'][0]['cleanlab']['skipped']}")
    for w in warns:
        print(f"WARNING: {w}")
    print(f"wall time {wall / 60:.1f} min")
    out = {"date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"), "data": str(data),
           "train_tiles": train_tiles, "test_tiles": test_tiles, "test_images": [n for n, _, _ in test],
           "training": training, "model_on_clean_labels": clean, "warnings": warns,
           "defaults": DEFAULT_WEIGHTS.__dict__, "radii": args.radii, "seeds": seeds,
           "flip_fraction": args.flip_fraction, "shift_fraction": args.shift_fraction, "tau": args.tau,
           "gid_component_scale": gid_scale, "results": results, "seconds": {**seconds, "wall": round(wall, 1)}}
    write_report(args.json, out, "bench/noise_transfer.py", argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
