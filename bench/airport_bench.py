#!/usr/bin/env python
"""The aligned Xiaoshan airport scene as a real Hangzhou example (issue 6): mIoU (hz7) on a held-out part of it.

1. Align ``A_label.png`` (hz20) to ``B_sat.jpeg`` automatically (:func:`seghz.geo.align.auto_align`), warp the label
   onto the image grid (nearest neighbour, outside = 255), crosswalk hz20 → hz7.
2. Split the image by columns: the WEST part (``--fit-fraction`` of the width) may be used for fitting, the EAST part
   after a ``--gap`` px strip is held out; nothing of the east part is seen before evaluation.
3. Evaluate on the east part: (a) the shipped GID-15 → hz7 model as is (a domain transfer: Gaofen-2 training
   imagery, Baidu test imagery); (b) the same model after the in-app fast head refit on the west part's labels
   (:func:`seghz.train.refit.refit_head`, what an analyst gets from "Fast head refit" in seconds); (c) with
   ``--train-steps N`` (> 0), a model TRAINED on the west part in each of ``--schemes`` (default hz7 and hz11: the
   label is hz20, merged by the scheme registry) with the shipped default recipe (Unet + ImageNet Lite0, CE with
   1/ln(1.02+f) weights + Dice), N steps of ``--batch-size`` random ``--crop`` crops; its bottom ``--val-rows`` rows
   (after a gap) pick the best epoch, the rest trains. The east part is never seen.

    python bench/airport_bench.py --json /tmp/airport.json

Skips (exit 2) when ../shared/data/hangzhou_airport is absent. Never writes any of the data into the repository.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np

DATA = ROOT.parent / "shared" / "data" / "hangzhou_airport"
CKPT = ROOT / "checkpoints" / "gid15_hz7_unet_lite0.safetensors"


def evaluate(pred: np.ndarray, label: np.ndarray, names: list[str]) -> dict:
    from seghz.metrics import confusion_matrix, scores

    s = scores(confusion_matrix(pred, label, len(names)), names)
    present = [n for n, v in s["per_class"].items() if v["support"]]
    iou = {n: s["per_class"][n]["iou"] for n in present}
    return {"miou": float(s["miou"]), "miou_gt_classes": float(np.mean(list(iou.values()))) if iou else None,
            "fwiou": float(s["fwiou"]), "oa": float(s["oa"]), "iou": iou}


def train_west(scheme: str, image: np.ndarray, warped20: np.ndarray, cut: int, east0: int, a, workdir: Path) -> dict:
    """(c): train ``scheme`` on the west part (bottom ``a.val_rows`` rows = validation), evaluate on the east part."""
    from seghz.classes import get_scheme
    from seghz.evaluate import label_for_checkpoint
    from seghz.infer.engine import Predictor
    from seghz.train.trainer import TrainConfig, train

    names = list(get_scheme(scheme).names)
    lbl = label_for_checkpoint(warped20, "hz20", scheme)
    h = image.shape[0]
    v0 = h - a.val_rows
    tr = (np.ascontiguousarray(image[: v0 - a.gap, :cut]), np.ascontiguousarray(lbl[: v0 - a.gap, :cut]))
    va = (np.ascontiguousarray(image[v0:, :cut]), np.ascontiguousarray(lbl[v0:, :cut]))
    epochs = 6
    cfg = TrainConfig(scheme=scheme, epochs=epochs, steps_per_epoch=max(1, a.train_steps // epochs),
                      batch_size=a.batch_size, crop_size=a.crop, device=a.device, seed=a.seed, tile_size=512)
    out = workdir / f"west_{scheme}.safetensors"
    t = time.perf_counter()
    res = train(cfg, [tr], [va], out, progress=lambda f, m: print(f"  [{scheme}] {m}", flush=True)
                if m and "epoch" in m else None)
    pred, _ = Predictor.from_checkpoint(out, a.device)
    r = evaluate(pred.predict_full(np.ascontiguousarray(image[:, east0:]), a.tta).mask, lbl[:, east0:], names)
    best_epoch = max(res["history"], key=lambda row: row.get("val_miou", -1)).get("epoch") if res["history"] else None
    r.update(steps=cfg.steps_per_epoch * epochs, best_epoch=best_epoch, seconds=round(time.perf_counter() - t, 1),
             train_rows=[0, v0 - a.gap], val_rows=[v0, h], batch_size=a.batch_size, crop=a.crop, seed=a.seed)
    return r


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--checkpoint", default=str(CKPT))
    ap.add_argument("--fit-fraction", type=float, default=0.5)
    ap.add_argument("--gap", type=int, default=32, help="px between the fit and the held-out part")
    ap.add_argument("--tta", default="d4", choices=["none", "d4"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--train-steps", type=int, default=0, help="(c) train a model on the west part (0: skip)")
    ap.add_argument("--schemes", default="hz7,hz11", help="(c) schemes to train and evaluate in")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--val-rows", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    data = Path(a.data)
    if not (data / "A_label.png").is_file():
        print(f"airport data not found at {data}; nothing to measure", file=sys.stderr)
        return 2
    import torch

    from seghz.evaluate import label_for_checkpoint
    from seghz.geo.align import auto_align, warp_label
    from seghz.geo.align_scene import load_pair
    from seghz.infer.engine import Predictor
    from seghz.models.checkpoint import read_metadata
    from seghz.train.refit import RefitConfig, RefitItem, refit_head

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2") or 2))
    t0 = time.perf_counter()
    label20, image = load_pair(data / "A_label.png", data / "B_sat.jpeg", "hz20")
    al = auto_align(label20, image)
    warped = warp_label(label20, al.M, image.shape[:2])
    meta = read_metadata(a.checkpoint)
    names = list(meta["scheme"]["names"])
    lbl = label_for_checkpoint(warped, "hz20", meta["scheme"]["name"])
    t_align = time.perf_counter() - t0
    w = image.shape[1]
    cut = int(w * a.fit_fraction)
    east0 = cut + a.gap
    fit_img, fit_lbl = image[:, :cut], lbl[:, :cut]
    test_img, test_lbl = image[:, east0:], lbl[:, east0:]
    pred, _ = Predictor.from_checkpoint(a.checkpoint, a.device)
    zero = evaluate(pred.predict_full(test_img, a.tta).mask, test_lbl, names)
    with tempfile.TemporaryDirectory(prefix="airport_") as d:
        out = Path(d) / "refit.safetensors"
        t1 = time.perf_counter()
        refit_head(a.checkpoint, [RefitItem(np.ascontiguousarray(fit_img), corrected=np.ascontiguousarray(fit_lbl))],
                   out, RefitConfig(steps=100, max_corrected=60_000, context_per_class=0, tile=512, device=a.device))
        t_refit = time.perf_counter() - t1
        pred2, _ = Predictor.from_checkpoint(out, a.device)
        refit = evaluate(pred2.predict_full(np.ascontiguousarray(test_img), a.tta).mask, test_lbl, names)
        trained = {}
        for sch in [x for x in a.schemes.split(",") if x] if a.train_steps > 0 else []:
            trained[sch] = train_west(sch, image, warped, cut, east0, a, Path(d))
    share = {n: float((test_lbl == i).mean()) for i, n in enumerate(names)}
    print(f"airport {image.shape[1]}x{image.shape[0]} px, alignment {al.method} "
          f"({t_align:.1f} s); held-out east part {test_img.shape[1]}x{test_img.shape[0]} px, "
          f"{100 * float((test_lbl != 255).mean()):.1f} % labelled")
    print("class shares (held-out): " + ", ".join(f"{n} {100 * v:.1f} %" for n, v in share.items() if v > 0))
    for name, r in (("shipped GID model (zero-shot)", zero), ("after head refit on the west part", refit)):
        print(f"{name:<36} mIoU {r['miou']:.4f} (GT classes {r['miou_gt_classes']:.4f})  fwIoU {r['fwiou']:.4f}  OA {r['oa']:.4f}  "
              + " ".join(f"{k} {v:.2f}" for k, v in r["iou"].items()))
    for sch, r in trained.items():
        print(f"trained on the west part, {sch:<5} ({r['steps']} steps, best epoch {r['best_epoch']}, {r['seconds']:.0f} s) "
              f"mIoU {r['miou']:.4f} (GT classes {r['miou_gt_classes']:.4f})  fwIoU {r['fwiou']:.4f}  OA {r['oa']:.4f}  "
              + " ".join(f"{k} {v:.2f}" for k, v in r["iou"].items()))
    print(f"head refit {t_refit:.1f} s; total {time.perf_counter() - t0:.1f} s")
    if a.json:
        Path(a.json).write_text(json.dumps({
            "zero_shot": zero, "head_refit": refit, "trained_west": trained, "held_out_shares": share, "tta": a.tta,
            "fit_columns": [0, cut], "test_columns": [east0, w], "seconds": round(time.perf_counter() - t0, 1),
            "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "command": "python bench/airport_bench.py " + " ".join(sys.argv[1:] if argv is None else argv)}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
