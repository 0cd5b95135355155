#!/usr/bin/env python
"""How well a model's component verdicts find the flipped labels, per class and epoch (issue 4, component drop).

Reads a run folder of ``bench/noise_epochs.py`` (its ``result.json`` protocol and per-epoch checkpoints
``e<k>.safetensors``), rebuilds the run's training tiles and noise draw (same split, seed ``1000 + seed``), and for
each chosen epoch lets that checkpoint judge the label components of the *given* (noisy) labels the way
``TrainConfig.refine = "drop"`` does (mean flip-averaged probability per 8-connected component of ≥ ``min_px`` px;
doubted when another class is more probable; the most doubted first, at most ``max_drop`` of each class). Against the
clean labels it prints, per given class: the share of its labels that are wrong, the share of those flipped pixels
the verdict would drop ("caught"), the share of its correct pixels it would drop, the share of its judged pixels
that are doubted, and the pixel-weighted AUC of the component's mean p(given class) for telling flipped from
correct components (1 = every flipped component has a lower p than every correct one; 0.5 = no information; below
0.5 = the model has learned the class backwards).

    python bench/judge_report.py /tmp/proxy/drop --epochs 1,5,9
    python bench/judge_report.py /tmp/proxy/noisy --epochs 2,9 --json /tmp/judge_noisy.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import cv2
import numpy as np

from bench.experiments import DEFAULT_CKPT, DEFAULT_DATA, SCHEME, load, noisy_copy, split_stems
from seghz.classes import IGNORE, get_scheme


def weighted_auc(score: np.ndarray, w_pos: np.ndarray, w_neg: np.ndarray) -> float | None:
    """P(score of a positive < score of a negative), positives and negatives weighted (ties count half).
    Positives are the flipped pixels (they should score low), negatives the correct ones."""
    score, w_pos, w_neg = (np.asarray(a, dtype=np.float64) for a in (score, w_pos, w_neg))
    if w_pos.sum() <= 0 or w_neg.sum() <= 0:
        return None
    total = 0.0
    for s, wp in zip(score, w_pos):
        if wp > 0:
            total += wp * (w_neg[score > s].sum() + 0.5 * w_neg[score == s].sum())
    return float(total / (w_pos.sum() * w_neg.sum()))


def judge(given: list[np.ndarray], truth: list[np.ndarray], probs, nc: int, min_px: int, max_drop: float) -> dict:
    """The per-class report of one set of verdicts. ``probs``: iterable of ``(index, C×H×W probabilities)``."""
    from seghz.train.refine import _component_means, select_drops

    comps = []  # (key, g, px, wrong px, mean p(g), ratio, doubted)
    for i, p in probs:
        lb, tr = given[i], truth[i]
        for g, ids, px, mean in _component_means(lb, p, None, min_px):
            n, lab = cv2.connectedComponents((lb == g).astype(np.uint8), connectivity=8)
            wrong = np.bincount(lab[lab > 0], weights=(tr[lab > 0] != g) & (tr[lab > 0] != IGNORE), minlength=n)
            top = mean.max(0)
            for j, k in enumerate(ids):
                comps.append(((i, g, int(k)), g, float(px[j]), float(wrong[k]), float(mean[g, j]),
                              float(mean[g, j] / max(top[j], 1e-12)), bool(mean[:, j].argmax() != g)))
    counts = np.zeros(nc)
    for lb in given:
        counts += np.bincount(lb[lb != IGNORE].ravel(), minlength=nc)[:nc]
    chosen = select_drops([(c[0], c[1], c[2], c[5]) for c in comps if c[6]], counts, max_drop)
    out: dict = {"classes": {}}
    for g in range(nc):
        mine = [c for c in comps if c[1] == g]
        px = sum(c[2] for c in mine)
        wrong = sum(c[3] for c in mine)
        if not mine or px <= 0:
            continue
        right = px - wrong
        out["classes"][g] = {
            "judged_px": px, "wrong": wrong / px,
            "caught": sum(c[3] for c in mine if c[0] in chosen) / wrong if wrong else None,
            "correct_dropped": sum(c[2] - c[3] for c in mine if c[0] in chosen) / right if right else None,
            "doubted": sum(c[2] for c in mine if c[6]) / px,
            "auc": weighted_auc(np.array([c[4] for c in mine]), np.array([c[3] for c in mine]),
                                np.array([c[2] - c[3] for c in mine])),
        }
    wrong = sum(c[3] for c in comps)
    right = sum(c[2] for c in comps) - wrong
    out["caught"] = sum(c[3] for c in comps if c[0] in chosen) / max(wrong, 1)
    out["correct_dropped"] = sum(c[2] - c[3] for c in comps if c[0] in chosen) / max(right, 1)
    return out


def main(argv: list[str] | None = None) -> dict:
    import torch

    from seghz.models.checkpoint import load_checkpoint
    from seghz.train.refine import iter_probs

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a bench/noise_epochs.py output folder")
    ap.add_argument("--epochs", default="1,5,9", help="comma list of the epochs whose checkpoints judge")
    ap.add_argument("--min-px", type=int, default=16)
    ap.add_argument("--max-drop", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    if not a.data.is_dir():
        raise SystemExit(f"{a.data}: the GID-15 folder is missing (see ../shared/data/README.md)")
    res = a.run / "result.json"
    if not res.is_file():
        raise SystemExit(f"{res}: not found; pass a finished bench/noise_epochs.py output folder")
    proto = json.loads(res.read_text())["protocol"]
    if proto.get("clean"):
        raise SystemExit(f"{a.run}: a clean-label run has no flipped labels to judge")
    torch.set_num_threads(a.threads)
    stems, _ = split_stems(a.data, DEFAULT_CKPT, int(proto["train_tiles"]), None)
    samples = load(a.data, stems)
    truth = [lb for _, lb in samples]
    noisy, _ = noisy_copy(samples, int(proto["seed"]), float(proto["flip_fraction"]))
    given = [lb for _, lb in noisy]
    images = [im for im, _ in samples]
    names = list(get_scheme(SCHEME).names)
    report = {"run": str(a.run), "protocol": proto, "epochs": {}}
    for e in (int(x) for x in a.epochs.split(",")):
        ck = a.run / f"e{e}.safetensors"
        if not ck.is_file():
            raise SystemExit(f"{ck}: no checkpoint for epoch {e}")
        model, meta = load_checkpoint(ck, "cpu")
        rep = judge(given, truth, iter_probs(model, images, meta["normalization"], "cpu", flip=True), len(names),
                    a.min_px, a.max_drop)
        report["epochs"][e] = rep
        print(f"epoch {e}: flipped px caught {100 * rep['caught']:.1f} %, correct px dropped "
              f"{100 * rep['correct_dropped']:.1f} %")
        for g, c in rep["classes"].items():
            pct = lambda v: "—" if v is None else f"{100 * v:5.1f} %"
            auc = "—" if c["auc"] is None else f"{c['auc']:.2f}"
            print(f"  {names[g]:<12} wrong {pct(c['wrong'])}  caught {pct(c['caught'])}  correct dropped "
                  f"{pct(c['correct_dropped'])}  doubted {pct(c['doubted'])}  AUC {auc}")
    if a.json:
        a.json.write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
