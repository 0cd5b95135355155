#!/usr/bin/env python
"""Evaluation of many small scenes: scene by scene (the old ``evaluate_split`` loop) vs windows of several scenes in one
batch (``Predictor.predict_many``, read one scene ahead in a thread), side by side in one run.

Imports ``--gid`` GID-15 tiles of 224² (every k-th of ``../shared/data/gid15``, sorted by stem) and ``--dubai`` Dubai
images (the first of each ``Tile N``, several windows each) as the ``val`` split of a temporary workspace, registers
the shipped checkpoint and, for each TTA spec, times

* ``before``: the loop ``evaluate_split`` ran until now, written out here: read a scene's image and label, then
  ``Predictor.predict`` it, one scene after the other;
* ``after``: ``seghz.evaluate.evaluate_split(..., use_cache=False)``.

Rounds alternate the order (before/after, after/before) so load drift on a shared machine hits both; the best time of
each is reported with scenes/s and the ratio before/after, and every round checks that both give the same per-scene
confusion matrices (and reports the largest ECE difference).

    python bench/eval_batch_bench.py --gid 60 --tta none d4 --rounds 2 --json /tmp/eval_batch.json
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np

DATA = ROOT.parent / "shared" / "data"
CHECKPOINT = ROOT / "checkpoints" / "gid15_hz7_unet_lite0.safetensors"


def build_workspace(root: Path, gid: int, dubai: int):
    """A workspace at ``root`` with ``gid`` GID tiles and ``dubai`` Dubai images in ``val``, and the checkpoint ``ck``."""
    import shutil

    from seghz.data.scenes import import_scene
    from seghz.errors import BadInputError
    from seghz.models.checkpoint import read_metadata
    from seghz.store import Workspace

    ws = Workspace(root)
    stems = sorted(p.stem for p in (DATA / "gid15" / "images").glob("*.png"))
    if gid > len(stems):
        raise BadInputError(DATA / "gid15", f"has {len(stems)} tiles, {gid} asked")
    step = max(1, len(stems) // max(1, gid))
    for stem in stems[::step][:gid]:
        import_scene(ws, DATA / "gid15" / "images" / f"{stem}.png", DATA / "gid15" / "labels" / f"{stem}.png",
                     scheme="gid15", name=f"gid {stem}", split="val")
    for n in range(1, dubai + 1):
        d = DATA / "dubai" / f"Tile {n}"
        img = min((d / "images").glob("*.jpg"))
        import_scene(ws, img, d / "masks" / f"{img.stem}.png", scheme="dubai", name=f"dubai {n} {img.stem}",
                     split="val")
    dst = ws.root / "checkpoints" / CHECKPOINT.name
    shutil.copyfile(CHECKPOINT, dst)
    ws.register_checkpoint(dst, read_metadata(dst), checkpoint_id="ck", name="shipped GID checkpoint")
    return ws


def scene_by_scene(ws, predictor, tta: str) -> dict:
    """The old loop of ``evaluate_split``: per scene, read, predict, score (the per-scene confusion and calibration)."""
    from seghz.data.io import read_image
    from seghz.evaluate import label_for_checkpoint, tta_views_of
    from seghz.metrics import add_calibration, calibration_counts, confusion_matrix, evaluation_scores
    from seghz.models.checkpoint import checkpoint_scheme, read_metadata

    scheme = checkpoint_scheme(read_metadata(ws.checkpoint_path(ws.get_checkpoint("ck"))))
    nc = len(scheme.names)
    total, per_scene, calib = np.zeros((nc, nc), np.int64), {}, None
    for s in [s for s in ws.list_scenes("val") if s.label_path]:
        img = read_image(ws.scene_path(s, "image"))
        lbl = label_for_checkpoint(ws.effective_label(s.id), s.scheme, scheme.name)
        pred, conf = predictor.predict(img, tta_views_of(tta))
        cm = confusion_matrix(pred, lbl, nc)
        per_scene[s.id] = cm.tolist()
        total += cm
        calib = add_calibration(calib, calibration_counts(pred, conf, lbl, nc))
    res = evaluation_scores(total, list(scheme.names), calib)
    res["per_scene"] = per_scene
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gid", type=int, default=60, help="GID-15 tiles of 224² (default 60)")
    ap.add_argument("--dubai", type=int, default=0, help="Dubai images, several windows each (default 0, at most 8)")
    ap.add_argument("--tta", nargs="+", default=["none", "d4"])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--device", default=None)
    ap.add_argument("--batch-size", type=int, default=None, help="default: the predictor's own (2 at tile 512 on CPU)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from seghz.evaluate import evaluate_split
    from seghz.infer.engine import Predictor

    out = {"date": _dt.date.today().isoformat(), "machine": f"{platform.processor() or platform.machine()}, "
           f"{os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads",
           "gid": args.gid, "dubai": args.dubai, "runs": {}}
    with tempfile.TemporaryDirectory(prefix="seghz_eval_batch_") as tmp:
        t0 = time.perf_counter()
        ws = build_workspace(Path(tmp) / "ws", args.gid, min(8, args.dubai))
        n = len([s for s in ws.list_scenes("val") if s.label_path])
        print(f"workspace: {n} val scenes imported in {time.perf_counter() - t0:.1f} s", flush=True)
        pred, _ = Predictor.from_checkpoint(ws.checkpoint_path(ws.get_checkpoint("ck")), args.device,
                                            batch_size=args.batch_size)
        print(f"predictor: {pred.device}, tile {pred.tile}, batch {pred.resolve_batch_size()}", flush=True)
        pred.predict(np.zeros((224, 224, 3), np.uint8))  # warm-up (allocator, kernels)
        for tta in args.tta:
            times = {"before": [], "after": []}
            same, ece_diff = True, 0.0
            for r in range(args.rounds):
                results = {}
                for which in (("before", "after") if r % 2 == 0 else ("after", "before")):
                    t = time.perf_counter()
                    if which == "before":
                        results[which] = scene_by_scene(ws, pred, tta)
                    else:
                        results[which] = evaluate_split(ws, "ck", "val", tta, predictor=pred, use_cache=False)
                    times[which].append(time.perf_counter() - t)
                    print(f"  {tta:>5} round {r + 1} {which:>6}: {times[which][-1]:7.1f} s", flush=True)
                same &= results["before"]["per_scene"] == results["after"]["per_scene"]
                ece_diff = max(ece_diff, abs(results["before"]["ece"] - results["after"]["ece"]))
            b, a = min(times["before"]), min(times["after"])
            row = {"before_s": round(b, 2), "after_s": round(a, 2), "before_scenes_s": round(n / b, 2),
                   "after_scenes_s": round(n / a, 2), "ratio": round(b / a, 3), "rounds": args.rounds,
                   "all_s": {k: [round(x, 2) for x in v] for k, v in times.items()},
                   "confusion_identical": bool(same), "max_ece_diff": ece_diff}
            out["runs"][tta] = row
            print(f"{tta:>5}: {n} scenes  before {b:7.1f} s ({n / b:5.2f} scenes/s)  after {a:7.1f} s "
                  f"({n / a:5.2f} scenes/s)  ratio {b / a:4.2f}x  per-scene confusion identical: {same}  "
                  f"max |ECE diff| {ece_diff:.2e}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
