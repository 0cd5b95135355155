#!/usr/bin/env python
"""Inference throughput bench: raw model rate vs the engine's scene rate vs a naive loop vs ttach.

One run builds one randomly initialised model (eval mode, ``torch.no_grad``) and one synthetic RGB
scene, then measures, with warm-up and ``time.perf_counter`` (median of repeats where cheap):

(a) ``raw``       batched forward only (``--batch-size`` tile-sized random inputs), MP/s of input;
(b) ``engine``    ``Predictor.predict_proba(scene, tta)`` for tta "none" and "d4", MP/s of scene; with
                  ``--compile on`` (default where a C++ compiler exists, CPU) the engine runs its
                  ``torch.compile``d model, and ``engine_eager_*`` repeat the runs without compiling;
(c) ``naive``     a reference written here: the same windows, batch 1, window by window, TTA views
                  one after another, softmax averaged over views and overlapping windows;
(d) ``ttach``     ``ttach.SegmentationTTAWrapper(model, d4_transform(), merge_mode="mean")`` at
                  batch 1 over the same windows (it averages logits; softmax is applied after).

Ratios printed:
    overlap_factor      = pixels covered by all windows / scene pixels
    engine_vs_ideal     = engine_none / (raw / overlap_factor)      (raw = the plain eager model)
    engine_vs_ideal_same_model = engine_none / (raw_compiled / overlap_factor)  (pipeline cost alone)
    engine_d4_vs_ideal  = engine_d4 / (raw / (8 * overlap_factor))
    engine_vs_naive     = engine_<tta> / naive_<tta>   (none and d4)
    engine_vs_ttach     = engine_d4 / ttach_d4

Every measurement runs once per ROUND, all of them interleaved (``raw`` too: as many batched forwards as the engine
runs batches, right before the engine; every other round in reverse order), so that load drift on a shared machine
hits the raw model and the engine alike. Each ratio is computed per round from that round's rates; the ratio
reported is the median over the rounds (``--repeats``, default 3; ``--budget-s`` stops new rounds only after 3),
with its spread (min–max and interquartile range: JSON ``ratio_spread``). A WARNING is printed (JSON ``warnings``)
when a ratio's spread is wide (max − min > 50 % of the median), when it rests on one round, or when a ratio against
the ideal is outside 0.3–5 (engine vs ttach: 0.5–20): the machine was probably loaded and the number should not be
quoted.

The README's "1.22 / 1.48 (D4) and 2.13×" are the printed ratios ``engine_vs_ideal``, ``engine_d4_vs_ideal`` (H200,
``--size large --compile on``) and ``engine_vs_ttach_d4`` (engine D4 vs ttach D4; measured with the eager engine,
printed as ``engine_eager_vs_ttach_d4`` when ``--compile on``).

    python bench/infer_bench.py --device cpu --size small --json /tmp/bench.json

``--size xlarge`` (or ``--stream``) measures the whole-scene path instead: it writes a synthetic
GeoTIFF of the scene size to ``--workdir`` strip by strip, saves the random model as a checkpoint, runs
``python -m seghz predict-scene`` on it in a child process and reports its wall time, MP/s and peak
RSS (the child's ``ru_maxrss``), next to the raw model rate.

Add a scene size by adding one entry to :data:`SIZES`.
"""

from __future__ import annotations

import argparse
import contextlib
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

from seghz.devices import device_description
from seghz.infer.engine import Predictor, compiler_available
from seghz.models.registry import IMAGENET_MEAN, IMAGENET_STD, build_model

# name: (scene side px, tile px, default encoder, default rounds)
SIZES: dict[str, tuple[int, int, str, int]] = {
    "tiny": (256, 128, "tu-efficientnet_lite0", 3),
    "small": (640, 256, "tu-efficientnet_lite0", 3),  # 9 windows: about a minute a round on 2 cores
    "medium": (4096, 512, "resnet34", 3),
    "large": (8192, 1024, "resnet34", 3),
    "xlarge": (20000, 1024, "resnet34", 1),  # the 20000² case: streamed from a GeoTIFF by predict-scene (peak RSS)
}
MIN_ROUNDS = 3  # --budget-s never stops the rounds before this many (a ratio needs a spread)
MAX_REL_SPREAD = 0.5  # a ratio whose max − min exceeds this share of its median is flagged
# plausible ranges of the ratios (outside: the machine was loaded or a measurement failed); "*_vs_ideal" by default
PLAUSIBLE: dict[str, tuple[float, float]] = {"engine_vs_ttach_d4": (0.5, 20.0), "engine_eager_vs_ttach_d4": (0.5, 20.0)}
IDEAL_RANGE = (0.3, 5.0)
# the README's figures, by printed ratio
CLAIMS = {"engine_vs_ideal": "README 1.22 (H200, --size large --compile on)",
          "engine_d4_vs_ideal": "README 1.48 (H200, --size large --compile on)",
          "engine_vs_ttach_d4": "README 2.13x (H200, eager engine: engine_eager_vs_ttach_d4 with --compile on)"}


def plausible_range(name: str) -> tuple[float, float] | None:
    """The range outside which ratio ``name`` is implausible (None: no range known)."""
    if name in PLAUSIBLE:
        return PLAUSIBLE[name]
    return IDEAL_RANGE if "_vs_ideal" in name else None


def spread(values: list[float]) -> dict:
    """Median, min, max and quartiles of one ratio's per-round values."""
    v = np.asarray(values, np.float64)
    q1, med, q3 = (float(x) for x in np.percentile(v, [25, 50, 75]))
    return {"median": med, "min": float(v.min()), "max": float(v.max()), "q1": q1, "q3": q3, "rounds": int(v.size),
            "values": [float(x) for x in v]}


def ratio_warnings(spreads: dict[str, dict], max_rel_spread: float = MAX_REL_SPREAD) -> list[str]:
    """WARNING lines for ratios that must not be quoted: a wide spread over the rounds, one round only, or a median
    outside the ratio's plausible range (:func:`plausible_range`)."""
    out = []
    single = [k for k, s in spreads.items() if s["rounds"] < 2]
    if single:
        out.append(f"{', '.join(single)}: measured in 1 round only, so there is no spread to judge them by; "
                   f"do not quote them (run --repeats {MIN_ROUNDS} or more)")
    for name, s in spreads.items():
        med, lo, hi = s["median"], s["min"], s["max"]
        if s["rounds"] >= 2 and hi - lo > max_rel_spread * abs(med):
            out.append(f"{name} varied from {lo:.3f} to {hi:.3f} over {s['rounds']} rounds (median {med:.3f}; spread "
                       f"> {max_rel_spread * 100:.0f} % of it): the machine was probably loaded; do not quote this number")
        rng = plausible_range(name)
        if rng is not None and not rng[0] <= med <= rng[1]:
            out.append(f"{name} = {med:.3f} is outside the plausible range {rng[0]:g}-{rng[1]:g}: the machine was "
                       "probably loaded (or one measurement stalled); do not quote this number")
    return out


def round_ratios(rates: dict[str, list[float]], overlap_factor: float) -> dict[str, list[float]]:
    """Every ratio, once per round, from ``rates`` (MP/s per measurement key, one value per round)."""
    def per(num: str, den: str, scale: float = 1.0) -> list[float] | None:
        if num not in rates or den not in rates:
            return None
        return [n / (d / scale) for n, d in zip(rates[num], rates[den])]

    of = overlap_factor
    pairs = {
        "engine_vs_ideal": ("engine_none", "raw", of),
        "engine_d4_vs_ideal": ("engine_d4", "raw", 8 * of),
        "engine_vs_naive_none": ("engine_none", "naive_none", 1.0),
        "engine_vs_naive_d4": ("engine_d4", "naive_d4", 1.0),
        "engine_vs_ttach_d4": ("engine_d4", "ttach_d4", 1.0),
        "engine_vs_ideal_same_model": ("engine_none", "raw_compiled", of),
        "engine_full_vs_ideal": ("engine_full_none", "raw", of),
        "engine_full_d4_vs_ideal": ("engine_full_d4", "raw", 8 * of),
        "engine_eager_vs_ideal": ("engine_eager_none", "raw", of),
        "engine_eager_d4_vs_ideal": ("engine_eager_d4", "raw", 8 * of),
        "engine_eager_vs_ttach_d4": ("engine_eager_d4", "ttach_d4", 1.0),
    }
    out = {}
    for name, (num, den, scale) in pairs.items():
        v = per(num, den, scale)
        if v:
            out[name] = v
    return out


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


def _amp(device: str):
    """The engine's arithmetic on CUDA (bf16 autocast), so that raw, naive and ttach are compared with the engine at
    the same precision; a no-op on the CPU (fp32 everywhere). The model is channels_last on both, as in the engine."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else contextlib.nullcontext()


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
            with _amp(device):
                y = model(fwd(x))
            y = inv(y.float().softmax(1))
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
        with _amp(device):
            y = wrapper(x)
        p = y.float().softmax(1)[0].cpu().numpy()
        out[:, r : r + th, c : c + tw] += p
        cnt[r : r + th, c : c + tw] += 1
    return out / cnt[None]


def write_synthetic_geotiff(path: Path, side: int, seed: int = 0, strip: int = 1024) -> Path:
    """A side×side RGB GeoTIFF (EPSG:3857, 1 m pixels, tiled + deflate) written strip by strip, never whole in RAM."""
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(seed)
    prof = {"driver": "GTiff", "width": side, "height": side, "count": 3, "dtype": "uint8", "crs": "EPSG:3857",
            "transform": from_origin(13375000.0, 3536000.0, 1.0, 1.0), "tiled": True, "blockxsize": 512,
            "blockysize": 512, "compress": "deflate"}
    tmp = path.with_name(path.name + ".tmp")
    xx = np.arange(side, dtype=np.float32)[None, :]
    with rasterio.open(tmp, "w", **prof) as ds:
        for r in range(0, side, strip):
            h = min(strip, side - r)
            yy = np.arange(r, r + h, dtype=np.float32)[:, None]
            fields = [np.sin(xx / 97.0 + k) * np.cos(yy / 131.0 - k) for k in range(3)]
            noise = rng.integers(-12, 13, (3, h, side), dtype=np.int16)
            bands = np.stack([(127 + 100 * f).astype(np.int16) for f in fields]) + noise
            ds.write(np.clip(bands, 0, 255).astype(np.uint8), window=rasterio.windows.Window(0, r, side, h))
    os.replace(tmp, path)
    return path


def stream_bench(a, model, device, encoder, tile, side, threads, use_compile, res, t_start) -> dict:
    """predict-scene over a synthetic side² GeoTIFF in a child process: wall time, MP/s, peak RSS."""
    import subprocess
    import tempfile

    from seghz.classes import get_scheme
    from seghz.models.checkpoint import save_checkpoint

    work = Path(a.workdir) if a.workdir else Path(tempfile.mkdtemp(prefix="seghz_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    src = work / f"synthetic_{side}.tif"
    t0 = time.perf_counter()
    if not src.is_file():
        write_synthetic_geotiff(src, side, a.seed)
    write_s = time.perf_counter() - t0
    scheme = next((get_scheme(n) for n in ("hz7", "gid15", "hz20") if get_scheme(n).num_classes == a.num_classes), None)
    if scheme is None:
        raise SystemExit(f"--stream needs a class count of a registered scheme (7, 15 or 20), got {a.num_classes}")
    meta = {"arch": a.arch, "encoder": encoder, "num_classes": a.num_classes, "scheme": scheme.to_json(),
            "normalization": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}, "tile_size": tile}
    ckpt = save_checkpoint(work / "bench_model.safetensors", model.cpu(), meta)
    out = work / f"synthetic_{side}_classes.tif"
    cmd = [sys.executable, "-m", "seghz", "predict-scene", "--checkpoint", str(ckpt), "--input", str(src), "--output",
           str(out), "--tta", a.tta, "--tile", str(tile), "--overlap", str(a.overlap), "--device", device,
           "--batch-size", str(a.batch_size), "--compile", "on" if use_compile else "off"]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"predict-scene failed ({p.returncode}):\n{p.stderr[-3000:]}")
    child_rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    summary = {}
    for line in p.stderr.splitlines():
        if line.startswith("{"):
            summary = json.loads(line)
    wins = _windows(side, side, tile, a.overlap)
    overlap_factor = sum(th * tw for _, _, th, tw in wins) / (side * side)
    views = 8 if a.tta == "d4" else (2 if a.tta == "flip" else 1)
    scene_mp = side * side / 1e6
    rate = scene_mp / wall
    res["predict_scene"] = {"mp_s": rate, "median_s": wall, "times_s": [wall], "compile_s": summary.get("compile_seconds"),
                            "seconds_in_predict_scene": summary.get("seconds")}
    ideal = res["raw"]["mp_s"] / (views * overlap_factor)
    report = {
        "config": {"size": a.size, "scene": side, "tile": tile, "overlap": a.overlap, "arch": a.arch, "encoder": encoder,
                   "num_classes": a.num_classes, "batch_size": a.batch_size, "threads": threads, "device": device,
                   "tta": a.tta, "compile": use_compile, "windows": len(wins), "overlap_factor": overlap_factor,
                   "scene_mp": scene_mp, "command": " ".join(cmd)},
        "env": {"device_description": device_description(device), "torch": torch.__version__,
                "python": platform.python_version(), "cpu_count": os.cpu_count(), "loadavg_1_5_15_at_end": os.getloadavg(),
                "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")},
        "rates": res,
        "ratios": {"predict_scene_vs_ideal": rate / ideal},
        "peak_rss_mb_predict_scene": child_rss_mb,
        "synthetic_tif_write_s": write_s,
        "wall_s": time.perf_counter() - t_start,
    }
    print(f"# predict-scene {side}x{side} tile {tile} overlap {a.overlap} tta {a.tta} {a.arch}/{encoder} device {device} "
          f"({report['env']['device_description']}) threads {threads} compile {use_compile}")
    print(f"raw model            {res['raw']['mp_s']:>8.3f} MP/s")
    print(f"predict-scene        {rate:>8.3f} MP/s  wall {wall:.1f} s (compile {summary.get('compile_seconds')} s)")
    print(f"predict_scene_vs_ideal {rate / ideal:>6.3f}")
    print(f"peak RSS of predict-scene {child_rss_mb:.0f} MB")
    if a.json_out:
        Path(a.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json_out).write_text(json.dumps(report, indent=2))
    return report


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
    p.add_argument("--batch-size", type=int, default=None,
                   help="engine batch size and raw-rate batch (default 4; --stream: the engine's automatic choice)")
    p.add_argument("--repeats", type=int, default=None,
                   help=f"rounds of interleaved measurements (medians and spreads over them); default {MIN_ROUNDS}")
    p.add_argument(
        "--budget-s", type=float, default=None,
        help=f"no further round once this many seconds are spent, but never before {MIN_ROUNDS} rounds "
             "(default 10 for small, else 20)",
    )
    p.add_argument("--compile", choices=["auto", "on", "off"], default="auto",
                   help="engine with torch.compile (auto: on for CPU when a C++ compiler exists)")
    p.add_argument("--stream", action="store_true", help="measure predict-scene on a synthetic GeoTIFF (default for xlarge)")
    p.add_argument("--workdir", default=None, help="where --stream writes its GeoTIFFs (default: a temporary folder)")
    p.add_argument("--tta", default="none", help="TTA of the --stream run")
    p.add_argument(
        "--check-max", type=int, default=8192, help="compare outputs against the engine only for scenes up to this side"
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads; default = usable cores")
    p.add_argument("--skip", default="", help="comma list of parts to skip: naive,ttach,d4,full")
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

    budget = a.budget_s if a.budget_s is not None else (10.0 if a.size == "small" else 20.0)
    stream = a.stream or a.size == "xlarge"
    if a.batch_size is None and device == "cpu":  # CPU stream: the engine's own choice
        a.batch_size = Predictor(torch.nn.Identity(), 1, (0.5,) * 3, (0.5,) * 3, tile=tile, batch_size=None,
                                 device=device).resolve_batch_size() if stream else 4
    use_compile = a.compile == "on" or (a.compile == "auto" and device == "cpu" and compiler_available())

    model = build_model(a.arch, encoder, a.num_classes).to(device).eval()
    model = model.to(memory_format=torch.channels_last)  # as the engine runs it on every device (see _amp)
    if device == "cuda" and a.batch_size is None:  # batch: the engine's choice from free memory
        a.batch_size = Predictor(model, a.num_classes, (0.5,) * 3, (0.5,) * 3, tile=tile, batch_size=None,
                                 device=device).resolve_batch_size()
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    t_start = time.perf_counter()
    load_start = os.getloadavg()
    res: dict = {}

    # ---- (a) raw model rate (the scene path measures it again inside every round, next to the engine)
    xb = torch.randn(a.batch_size, 3, tile, tile, device=device)
    xb = xb.contiguous(memory_format=torch.channels_last)

    @torch.no_grad()
    def raw_fwd(x=xb):
        with _amp(device):
            return model(x)

    for _ in range(2):
        raw_fwd()
    if stream:
        med, times, _ = _timed(raw_fwd, device, 5, budget)
        res["raw"] = {"mp_s": a.batch_size * tile * tile / med / 1e6, "median_s": med, "times_s": times,
                      "batch": a.batch_size}
        return stream_bench(a, model, device, encoder, tile, side, threads, use_compile, res, t_start)

    rng = np.random.default_rng(a.seed)
    scene = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    wins = _windows(side, side, tile, a.overlap)
    covered = sum(th * tw for _, _, th, tw in wins)
    overlap_factor = covered / (side * side)
    pred = Predictor(model, a.num_classes, mean, std, tile=tile, overlap=a.overlap, batch_size=a.batch_size, device=device,
                     compile=use_compile)
    eager = Predictor(model, a.num_classes, mean, std, tile=tile, overlap=a.overlap, batch_size=a.batch_size,
                      device=device) if use_compile else None
    views_d4 = _d4_views()

    # warm-up the scene paths on one window-sized crop
    crop = scene[:tile, :tile]
    pred.predict_proba(scene, "none")  # warm-up on the scene itself: compiles, with the scene's batch shape
    scene_mp = side * side / 1e6
    # MP of work per call of each job: the scene for the scene paths, the batches' input for the raw forwards
    n_raw = max(1, math.ceil(len(wins) / a.batch_size))  # as many batched forwards as the engine runs without TTA

    def raw_round():
        for _ in range(n_raw):
            raw_fwd()

    work = {"raw": n_raw * a.batch_size * tile * tile / 1e6}
    batches = {"raw": (n_raw, a.batch_size)}
    jobs = [("raw", raw_round)]
    if use_compile:
        res["compile"] = {"seconds": pred.compile_seconds, "error": pred.compile_error}
        fn = pred._compiled_fn()
        if fn is not None:
            cbs = pred._compiled_bs or a.batch_size
            xc = torch.randn(cbs, 3, tile, tile, device=device)
            n_rc = max(1, math.ceil(len(wins) / cbs))

            @torch.no_grad()
            def raw_compiled_round(x=xc, n=n_rc):  # as the engine calls it: channels_last, its autocast, its graph
                for _ in range(n):
                    pred._model_call(x, fn)

            raw_compiled_round()
            work["raw_compiled"] = n_rc * cbs * tile * tile / 1e6
            batches["raw_compiled"] = (n_rc, cbs)
            jobs.append(("raw_compiled", raw_compiled_round))

    # Every measurement runs interleaved, one of each per round (the raw forwards right before the engine), so that
    # load from other processes on a shared machine hits every method alike; ratios per round, medians over rounds.
    jobs.append(("engine_none", lambda: pred.predict_proba(scene, "none")))
    if eager is not None:
        jobs.append(("engine_eager_none", lambda: eager.predict_proba(scene, "none")))
    if "full" not in skip:  # mask + confidence + entropy + view disagreement: what the Map page and predict-scene use
        jobs.append(("engine_full_none", lambda: pred.predict_full(scene, "none")))
    if "naive" not in skip:
        jobs.append(("naive_none", lambda: naive_predict(model, scene, a.num_classes, mean, std, wins, device, views_d4[:1])))
    if "d4" not in skip:
        pred.predict_proba(crop, "d4")
        jobs.append(("engine_d4", lambda: pred.predict_proba(scene, "d4")))
        if "full" not in skip:
            jobs.append(("engine_full_d4", lambda: pred.predict_full(scene, "d4")))
        if eager is not None:
            jobs.append(("engine_eager_d4", lambda: eager.predict_proba(scene, "d4")))
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
    agree: dict[str, float] = {}  # share of pixels whose argmax equals the engine's (bf16 on CUDA flips near-ties)
    ref: dict[str, np.ndarray] = {}
    t_rounds = time.perf_counter()
    for rnd in range(max(1, repeats)):
        # every other round in reverse order: a drifting load then favours no method
        for key, fn in (jobs if rnd % 2 == 0 else jobs[::-1]):
            _sync(device)
            t0 = time.perf_counter()
            out = fn()
            _sync(device)
            times[key].append(time.perf_counter() - t0)
            if rnd == 0 and check and not key.startswith("raw"):
                tta = key.rsplit("_", 1)[1]
                if key.startswith("engine_full"):
                    if tta in ref:  # the full outputs' mask against the argmax of the engine's probabilities
                        agree[key] = float((out.mask == ref[tta].argmax(0)).mean())
                elif key.startswith("engine_eager"):
                    diffs[key] = float(np.abs(out - ref[tta]).max()) if tta in ref else float("nan")
                    agree[key] = float((out.argmax(0) == ref[tta].argmax(0)).mean()) if tta in ref else float("nan")
                elif key.startswith("engine"):
                    ref[tta] = out
                elif tta in ref:
                    diffs[key] = float(np.abs(out - ref[tta]).max())
                    agree[key] = float((out.argmax(0) == ref[tta].argmax(0)).mean())
            del out
        ref.clear()
        if rnd + 1 >= MIN_ROUNDS and time.perf_counter() - t_rounds > budget:
            break
    rates_by_round = {key: [work.get(key, scene_mp) / t for t in ts] for key, ts in times.items()}
    for key, ts in times.items():
        if key in batches:  # the raw rows: seconds per batched forward, as before
            n, bs = batches[key]
            per = [t / n for t in ts]
            med = statistics.median(per)
            res[key] = {"mp_s": bs * tile * tile / med / 1e6, "median_s": med, "times_s": per, "batch": bs,
                        "forwards_per_round": n}
            continue
        med = statistics.median(ts)
        res[key] = {"mp_s": scene_mp / med, "median_s": med, "times_s": ts}
        if key in diffs:
            # naive must match the engine to float rounding; ttach averages logits (engine: softmax), so it differs a little
            res[key]["max_abs_diff_vs_engine"] = diffs[key]
        if key in agree:
            res[key]["argmax_agreement_vs_engine"] = agree[key]

    # ---- ratios: per round (that round's rates), then the median and spread over the rounds
    by_round = round_ratios(rates_by_round, overlap_factor)
    ratio_spread = {k: spread(v) for k, v in by_round.items()}
    ratios = {k: s["median"] for k, s in ratio_spread.items()}
    warns = ratio_warnings(ratio_spread)
    usable = len(os.sched_getaffinity(0))
    if device == "cpu" and load_start[0] > usable:
        warns.insert(0, f"load average {load_start[0]:.2f} at the start on {usable} usable core(s): other processes "
                        "compete for the CPU, so the rates and ratios are unreliable")

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
            "compile": use_compile,
            "repeats": repeats,
            "rounds": len(times["engine_none"]),
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
            "loadavg_1_5_15_at_start": load_start,
            "loadavg_1_5_15_at_end": load,
            "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        },
        "rates": res,
        "ratios": ratios,
        "ratio_spread": ratio_spread,
        "warnings": warns,
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
    print(f"{'measurement':<17}{'MP/s':>10}{'median s':>11}  runs  note")
    notes = {
        "raw": "model forward only, MP of input",
        "engine_none": "Predictor.predict_proba tta=none",
        "engine_d4": "Predictor.predict_proba tta=d4",
        "raw_compiled": "the engine's compiled model, forward only",
        "engine_eager_none": "engine without torch.compile, tta=none",
        "engine_eager_d4": "engine without torch.compile, tta=d4",
        "naive_none": "batch 1, window by window",
        "naive_d4": "batch 1, views one after another",
        "ttach_d4": "ttach SegmentationTTAWrapper d4, batch 1",
        "engine_full_none": "Predictor.predict_full tta=none (mask, confidence, entropy, disagreement)",
        "engine_full_d4": "Predictor.predict_full tta=d4 (mask, confidence, entropy, disagreement)",
    }
    for k, v in res.items():
        if not isinstance(v, dict):
            continue
        if "mp_s" not in v:
            if k == "compile":
                print(f"{'compile':<14}{'-':>10}{v['seconds']:>11.1f}     1  first compiled call (s){' — failed: ' + v['error'] if v['error'] else ''}")
                continue
            print(f"{k:<14}{'-':>10}{'-':>11}     -  {v}")
            continue
        extra = f"  (max|Δp| vs engine {v['max_abs_diff_vs_engine']:.1e})" if "max_abs_diff_vs_engine" in v else ""
        if "argmax_agreement_vs_engine" in v:
            extra += f"  (argmax = engine's on {v['argmax_agreement_vs_engine'] * 100:.3f} % of pixels)"
        print(f"{k:<17}{v['mp_s']:>10.3f}{v['median_s']:>11.3f}  {len(v['times_s']):>4}  {notes.get(k, '')}{extra}")
    print(f"{'ratio (median of rounds)':<27}{'median':>8}{'min-max':>17}{'IQR':>17}  rounds  claim")
    for k, v in ratios.items():
        sp = ratio_spread[k]
        print(f"{k:<27}{v:>8.3f}{sp['min']:>8.3f}-{sp['max']:<8.3f}{sp['q1']:>8.3f}-{sp['q3']:<8.3f}  {sp['rounds']:>5}  "
              f"{CLAIMS.get(k, '')}".rstrip())
    print(
        f"peak_rss_mb           {peak_rss_mb:>8.0f}"
        + (f"   peak_cuda_mb {report['peak_cuda_mb']:.0f}" if "peak_cuda_mb" in report else "")
    )
    print(f"wall_s                {report['wall_s']:>8.1f}   loadavg(1,5,15) at start {load_start[0]:.2f} "
          f"{load_start[1]:.2f} {load_start[2]:.2f}, at end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    for w in warns:
        print(f"WARNING: {w}")

    if a.json_out:
        Path(a.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json_out).write_text(json.dumps(report, indent=2))
    return report


def _cli() -> int:
    try:
        main()
    except SystemExit as e:  # a refusal: one "error: ..." line on stderr and status 2, like python -m seghz
        if isinstance(e.code, str):
            print(f"error: {e.code.removeprefix('error: ')}", file=sys.stderr)
            return 2
        raise
    return 0


if __name__ == "__main__":
    raise SystemExit(_cli())
