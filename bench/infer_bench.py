#!/usr/bin/env python
"""Inference throughput bench: raw model rate vs the engine's scene rate vs a naive loop vs ttach.

One run builds one randomly initialised model (eval mode, ``torch.no_grad``) and one synthetic RGB
scene, then measures, with warm-up and ``time.perf_counter`` (median of repeats where cheap):

(a) ``raw``       batched forward only (``--batch-size`` tile-sized random inputs), MP/s of input;
(b) ``engine``    ``Predictor.predict_proba(scene, tta)`` for tta "none" and "d4", MP/s of scene;
(c) ``naive``     a reference written here: the same windows, batch 1, window by window, TTA views
                  one after another, softmax averaged over views and overlapping windows;
(d) ``ttach``     ``ttach.SegmentationTTAWrapper(model, d4_transform(), merge_mode="mean")`` at
                  batch 1 over the same windows (it averages logits; softmax is applied after).

Ratios printed:
    overlap_factor      = pixels covered by all windows / scene pixels
    engine_vs_ideal     = engine_none / (raw / overlap_factor)
    engine_d4_vs_ideal  = engine_d4 / (raw / (8 * overlap_factor))
    engine_vs_naive     = engine_<tta> / naive_<tta>   (none and d4)
    engine_vs_ttach     = engine_d4 / ttach_d4

    python bench/infer_bench.py --device cpu --size small --json /tmp/bench.json

Add a scene size by adding one entry to :data:`SIZES`.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np
import torch

from seghz.infer.engine import Predictor
from seghz.models.registry import IMAGENET_MEAN, IMAGENET_STD, build_model

# name: (scene side px, tile px, default encoder, default repeats)
SIZES: dict[str, tuple[int, int, str, int]] = {
    "tiny": (256, 128, "tu-efficientnet_lite0", 1),
    "small": (768, 256, "tu-efficientnet_lite0", 3),  # 16 windows: fits < 1 min on 2 cores
    "medium": (4096, 512, "resnet34", 3),
    "large": (8192, 1024, "resnet34", 1),
    "xlarge": (20000, 1024, "resnet34", 1),  # the 20000² case (needs ~11 GB RAM for probabilities at 7 classes)
}


def _windows(height: int, width: int, tile: int, overlap: float):
    """The engine's window grid; a local copy of the same rule if the engine no longer exports it."""
    try:
        from seghz.infer.engine import sliding_windows

        return sliding_windows(height, width, tile, overlap)
    except ImportError:  # pragma: no cover
        stride = max(1, math.ceil(tile * (1 - overlap)))

        def starts(size):
            if size <= tile:
                return [0]
            n = math.ceil((size - tile) / stride) + 1
            return sorted({min(i * stride, size - tile) for i in range(n)})

        th, tw = min(tile, height), min(tile, width)
        return [(r, c, th, tw) for r in starts(height) for c in starts(width)]


def _d4_views():
    """(forward, inverse) pairs for the 8 D4 symmetries, written here so the naive reference is independent."""
    return [
        (lambda x: x, lambda y: y),
        (lambda x: torch.rot90(x, 1, (2, 3)), lambda y: torch.rot90(y, -1, (2, 3))),
        (lambda x: torch.rot90(x, 2, (2, 3)), lambda y: torch.rot90(y, -2, (2, 3))),
        (lambda x: torch.rot90(x, 3, (2, 3)), lambda y: torch.rot90(y, -3, (2, 3))),
        (lambda x: x.flip(3), lambda y: y.flip(3)),
        (lambda x: x.flip(2), lambda y: y.flip(2)),
        (lambda x: x.transpose(2, 3), lambda y: y.transpose(2, 3)),
        (lambda x: x.transpose(2, 3).flip((2, 3)), lambda y: y.flip((2, 3)).transpose(2, 3)),
    ]


def _pkg_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn, device: str, repeats: int, budget_s: float):
    """Run ``fn`` up to ``repeats`` times (at least once, stopping early once ``budget_s`` is spent).

    Returns (median seconds, list of seconds, last result)."""
    times, out = [], None
    t_all = time.perf_counter()
    for i in range(max(1, repeats)):
        out = None  # free the previous result before the next run
        _sync(device)
        t0 = time.perf_counter()
        out = fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - t_all > budget_s:
            break
    return statistics.median(times), times, out


def _to_tensor(img: np.ndarray, mean, std) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255)
    return (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


@torch.no_grad()
def naive_predict(model, image, num_classes, mean, std, wins, device, views) -> np.ndarray:
    """Reference: batch 1, window by window, view by view; mean softmax over views and windows."""
    h, w = image.shape[:2]
    out = np.zeros((num_classes, h, w), np.float32)
    cnt = np.zeros((h, w), np.float32)
    xt = _to_tensor(image, mean, std)
    for r, c, th, tw in wins:
        x = xt[None, :, r : r + th, c : c + tw].contiguous().to(device)
        acc = None
        for fwd, inv in views:
            y = inv(model(fwd(x)).float().softmax(1))
            acc = y if acc is None else acc + y
        out[:, r : r + th, c : c + tw] += (acc / len(views))[0].cpu().numpy()
        cnt[r : r + th, c : c + tw] += 1
    return out / cnt[None]


@torch.no_grad()
def ttach_predict(wrapper, image, num_classes, mean, std, wins, device) -> np.ndarray:
    """ttach's D4 wrapper at batch 1 over the same windows (mean of logits, softmax after)."""
    h, w = image.shape[:2]
    out = np.zeros((num_classes, h, w), np.float32)
    cnt = np.zeros((h, w), np.float32)
    xt = _to_tensor(image, mean, std)
    for r, c, th, tw in wins:
        x = xt[None, :, r : r + th, c : c + tw].contiguous().to(device)
        p = wrapper(x).float().softmax(1)[0].cpu().numpy()
        out[:, r : r + th, c : c + tw] += p
        cnt[r : r + th, c : c + tw] += 1
    return out / cnt[None]


def device_description(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto")
    p.add_argument("--size", choices=list(SIZES), default="small")
    p.add_argument("--arch", default="Unet")
    p.add_argument("--encoder", default=None, help="default: tu-efficientnet_lite0 for tiny/small, resnet34 otherwise")
    p.add_argument("--num-classes", type=int, default=7)
    p.add_argument("--tile", type=int, default=None, help="window side (multiple of 32); default per size")
    p.add_argument("--scene", type=int, default=None, help="scene side in px; default per size")
    p.add_argument("--overlap", type=float, default=0.25)
    p.add_argument("--batch-size", type=int, default=4, help="engine batch size and raw-rate batch")
    p.add_argument("--repeats", type=int, default=None, help="max repeats per scene measurement (median); default per size")
    p.add_argument(
        "--budget-s", type=float, default=20.0, help="no further round of scene measurements once this many seconds are spent"
    )
    p.add_argument(
        "--check-max", type=int, default=8192, help="compare outputs against the engine only for scenes up to this side"
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads; default = usable cores")
    p.add_argument("--skip", default="", help="comma list of parts to skip: naive,ttach,d4")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", dest="json_out", default=None, help="write every figure to this JSON file")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    a = parse_args(argv)
    side, tile, enc, reps = SIZES[a.size]
    side = a.scene or side
    tile = a.tile or tile
    encoder = a.encoder or (enc if a.arch == "Unet" or a.size in ("tiny", "small") else "resnet34")
    repeats = a.repeats or reps
    skip = {s.strip() for s in a.skip.split(",") if s.strip()}
    if tile % 32:
        raise SystemExit(f"--tile must be a multiple of 32 (got {tile})")
    device = "cuda" if a.device == "auto" and torch.cuda.is_available() else ("cpu" if a.device == "auto" else a.device)
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch.cuda.is_available() is False")
    threads = a.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    torch.manual_seed(a.seed)

    model = build_model(a.arch, encoder, a.num_classes).to(device).eval()
    rng = np.random.default_rng(a.seed)
    scene = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    wins = _windows(side, side, tile, a.overlap)
    covered = sum(th * tw for _, _, th, tw in wins)
    overlap_factor = covered / (side * side)
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    pred = Predictor(model, a.num_classes, mean, std, tile=tile, overlap=a.overlap, batch_size=a.batch_size, device=device)
    views_d4 = _d4_views()
    t_start = time.perf_counter()
    res: dict = {}

    # ---- (a) raw model rate
    with torch.no_grad():
        xb = torch.randn(a.batch_size, 3, tile, tile, device=device)
        for _ in range(2):
            model(xb)
        med, times, _ = _timed(lambda x=xb: model(x), device, 5, a.budget_s)
    res["raw"] = {"mp_s": a.batch_size * tile * tile / med / 1e6, "median_s": med, "times_s": times, "batch": a.batch_size}
    del xb

    # warm-up the scene paths on one window-sized crop
    crop = scene[:tile, :tile]
    pred.predict_proba(crop, "none")

    # Scene-level measurements run interleaved, one of each per round, so that load from other
    # processes on a shared machine hits every method alike; medians over rounds.
    jobs = [("engine_none", lambda: pred.predict_proba(scene, "none"))]
    if "naive" not in skip:
        jobs.append(("naive_none", lambda: naive_predict(model, scene, a.num_classes, mean, std, wins, device, views_d4[:1])))
    if "d4" not in skip:
        pred.predict_proba(crop, "d4")
        jobs.append(("engine_d4", lambda: pred.predict_proba(scene, "d4")))
        if "naive" not in skip:
            jobs.append(("naive_d4", lambda: naive_predict(model, scene, a.num_classes, mean, std, wins, device, views_d4)))
        if "ttach" not in skip:
            try:
                import ttach

                wrapper = ttach.SegmentationTTAWrapper(model, ttach.aliases.d4_transform(), merge_mode="mean").eval()
                res["ttach_version"] = _pkg_version("ttach")
                ttach_predict(wrapper, crop, a.num_classes, mean, std, _windows(tile, tile, tile, a.overlap), device)
                jobs.append(("ttach_d4", lambda: ttach_predict(wrapper, scene, a.num_classes, mean, std, wins, device)))
            except ImportError:
                res["ttach_d4"] = {"skipped": "ttach unavailable"}
    check = side <= a.check_max  # keep the engine's outputs of round 0 to compare the others against
    times: dict[str, list[float]] = {k: [] for k, _ in jobs}
    diffs: dict[str, float] = {}
    ref: dict[str, np.ndarray] = {}
    t_rounds = time.perf_counter()
    for rnd in range(max(1, repeats)):
        for key, fn in jobs:
            _sync(device)
            t0 = time.perf_counter()
            out = fn()
            _sync(device)
            times[key].append(time.perf_counter() - t0)
            if rnd == 0 and check:
                tta = key.rsplit("_", 1)[1]
                if key.startswith("engine"):
                    ref[tta] = out
                elif tta in ref:
                    diffs[key] = float(np.abs(out - ref[tta]).max())
            del out
        ref.clear()
        if time.perf_counter() - t_rounds > a.budget_s:
            break
    scene_mp = side * side / 1e6
    for key, ts in times.items():
        med = statistics.median(ts)
        res[key] = {"mp_s": scene_mp / med, "median_s": med, "times_s": ts}
        if key in diffs:
            # naive must match the engine to float rounding; ttach averages logits (engine: softmax), so it differs a little
            res[key]["max_abs_diff_vs_engine"] = diffs[key]

    # ---- ratios
    raw = res["raw"]["mp_s"]
    ratios = {"engine_vs_ideal": res["engine_none"]["mp_s"] / (raw / overlap_factor)}
    if "engine_d4" in res:
        ratios["engine_d4_vs_ideal"] = res["engine_d4"]["mp_s"] / (raw / (8 * overlap_factor))
    if "naive_none" in res:
        ratios["engine_vs_naive_none"] = res["engine_none"]["mp_s"] / res["naive_none"]["mp_s"]
    if "naive_d4" in res:
        ratios["engine_vs_naive_d4"] = res["engine_d4"]["mp_s"] / res["naive_d4"]["mp_s"]
    if "mp_s" in res.get("ttach_d4", {}):
        ratios["engine_vs_ttach_d4"] = res["engine_d4"]["mp_s"] / res["ttach_d4"]["mp_s"]

    load = os.getloadavg()
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    report = {
        "config": {
            "size": a.size,
            "scene": side,
            "tile": tile,
            "overlap": a.overlap,
            "arch": a.arch,
            "encoder": encoder,
            "num_classes": a.num_classes,
            "batch_size": a.batch_size,
            "repeats": repeats,
            "threads": threads,
            "device": device,
            "windows": len(wins),
            "overlap_factor": overlap_factor,
            "scene_mp": scene_mp,
            "command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
        },
        "env": {
            "device_description": device_description(device),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "loadavg_1_5_15_at_end": load,
            "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        },
        "rates": res,
        "ratios": ratios,
        "peak_rss_mb": peak_rss_mb,
        "wall_s": time.perf_counter() - t_start,
    }
    if device.startswith("cuda"):
        report["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20

    # ---- table
    c = report["config"]
    print(
        f"# {c['arch']}/{c['encoder']}  scene {side}x{side}  tile {tile}  overlap {a.overlap}  windows {len(wins)}  "
        f"overlap_factor {overlap_factor:.3f}  batch {a.batch_size}  device {device} ({report['env']['device_description']})  "
        f"threads {threads}  torch {torch.__version__}"
    )
    print(f"{'measurement':<14}{'MP/s':>10}{'median s':>11}  runs  note")
    notes = {
        "raw": "model forward only, MP of input",
        "engine_none": "Predictor.predict_proba tta=none",
        "engine_d4": "Predictor.predict_proba tta=d4",
        "naive_none": "batch 1, window by window",
        "naive_d4": "batch 1, views one after another",
        "ttach_d4": "ttach SegmentationTTAWrapper d4, batch 1",
    }
    for k, v in res.items():
        if not isinstance(v, dict):
            continue
        if "mp_s" not in v:
            print(f"{k:<14}{'-':>10}{'-':>11}     -  {v}")
            continue
        extra = f"  (max|Δp| vs engine {v['max_abs_diff_vs_engine']:.1e})" if "max_abs_diff_vs_engine" in v else ""
        print(f"{k:<14}{v['mp_s']:>10.3f}{v['median_s']:>11.3f}  {len(v['times_s']):>4}  {notes.get(k, '')}{extra}")
    for k, v in ratios.items():
        print(f"{k:<22}{v:>8.3f}")
    print(
        f"peak_rss_mb           {peak_rss_mb:>8.0f}"
        + (f"   peak_cuda_mb {report['peak_cuda_mb']:.0f}" if "peak_cuda_mb" in report else "")
    )
    print(f"wall_s                {report['wall_s']:>8.1f}   loadavg(1,5,15) at end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")

    if a.json_out:
        Path(a.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json_out).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
