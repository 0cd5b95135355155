#!/usr/bin/env python
"""Training throughput bench: the full trainer (data pipeline included) vs the bare model step, side by side.

(a) ``trainer``  :func:`seghz.train.trainer.train` for ``--warmup + --steps`` steps of one epoch, no validation;
                 images/s over the last ``--steps`` steps, timed by the trainer's per-step progress callback
                 (random crop, D4 view, colour jitter, host→device copy, loss, backward, AdamW + OneCycle, all as
                 the trainer does them). The end-of-epoch checkpoint write is outside the timed window and
                 reported separately (``trainer_total_s``).
(b) ``bare``     the same architecture, forward + CE + backward + AdamW step on preloaded random tensors already on
                 the device (channels_last like the trainer; CUDA: bf16 autocast, CPU: fp32), timed after warm-up
                 with a device synchronisation at both ends.
(c) ``bare_contiguous`` (``--compare-contiguous``) the bare step with contiguous (NCHW) weights and batches, the
                 trainer's layout on the CPU before 2026-11-28; printed as ``channels_last_vs_contiguous``.

By default each measurement runs in its own child process (``--isolate``), bare step first, alternating for
``--repeats`` rounds; the median rate of each is reported (on a shared 2-core CPU the second measurement of one
process ran ~20 % slower than the same one alone, whichever it was).

Ratio printed: ``trainer_vs_bare = trainer img/s / bare img/s`` (the issue's GPU target: >= 0.85).

Data: ``--data synthetic`` (default: ``--num-images`` random-block scenes of ``--image-size``², 7 classes) or
``--data gid`` (the first ``--num-images`` 224² GID-15 tiles of ../shared/data/gid15, scheme gid15). The output
names the data and the trainer's loss recipe, and warns (JSON ``warnings``) when fewer than 10 steps are timed: the
ratio is then dominated by start-up and per-run overheads, not the steady state.

    python bench/train_bench.py --device cpu --arch Unet --encoder tu-efficientnet_lite0 --crop 128 --batch 4 \
        --steps 5 --json /tmp/train_bench.json
    python bench/train_bench.py --device cuda --crop 512 --batch 16 --encoder resnet34 --steps 50
"""
from __future__ import annotations

import argparse
import dataclasses
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
import torch
import torch.nn.functional as F

from seghz.classes import get_scheme
from seghz.devices import device_description
from seghz.models.registry import build_model

GID_DIR = ROOT.parent / "shared" / "data" / "gid15"
MIN_STEADY_STEPS = 10  # fewer timed steps: the ratio is not a steady-state one
RECIPES = {"plain": "plain CE, no class weights, no Dice (the bare step's loss)",
           "default": "the trainer's default recipe: ENet class weights + Dice (the bare step: plain CE)"}


def fail(message: str) -> int:
    """``error: message`` on a line of its own on stderr; exit status 2 (as ``python -m seghz``)."""
    print(f"error: {message}", file=sys.stderr)
    return 2


def data_text(config: dict) -> str:
    """What the bench trained on, in words (from the report's ``config``)."""
    n, (h, w) = config["num_images"], config["image_size"]
    if config["data"] == "gid":
        what = f"the first {n} GID-15 tiles of {GID_DIR} ({w}x{h}, scheme {config['scheme']})"
    else:
        what = (f"synthetic: {n} random-block scenes of {w}x{h}, {get_scheme(config['scheme']).num_classes} classes "
                f"(scheme {config['scheme']}; speed does not depend on the data)")
    return f"data: {what}; trainer loss: {RECIPES.get(config['recipe'], config['recipe'])}"


def bench_warnings(config: dict) -> list[str]:
    """Why the ratio should not be quoted as a steady-state figure."""
    out = []
    if config["steps"] < MIN_STEADY_STEPS:
        out.append(f"only {config['steps']} timed step(s) (--steps; {config['warmup']} warm-up): the ratio is dominated "
                   f"by start-up and per-run overheads, not a steady-state ratio; use --steps {MIN_STEADY_STEPS} or more "
                   "(default 20)")
    return out


def synthetic_samples(n: int, size: int, nc: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """n RGB uint8 scenes of 32-px class blocks (colour per class + noise) with their labels."""
    rng = np.random.default_rng(seed)
    pal = rng.integers(20, 235, (nc, 3)).astype(np.float32)
    out = []
    g = -(-size // 32)
    for _ in range(n):
        lbl = np.kron(rng.integers(0, nc, (g, g)), np.ones((32, 32), np.int64))[:size, :size].astype(np.uint8)
        img = pal[lbl] + rng.normal(0, 10, (size, size, 3)).astype(np.float32)
        out.append((np.clip(img, 0, 255).astype(np.uint8), lbl))
    return out


def gid_samples(n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from seghz.data.io import list_pairs, read_pair

    if not GID_DIR.exists():
        raise SystemExit(f"--data gid needs {GID_DIR} (absent)")
    scheme = get_scheme("gid15")
    return [read_pair(i, lb, scheme) for i, lb in list_pairs(GID_DIR / "images", GID_DIR / "labels")[:n]]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bench_trainer(a, samples, scheme: str, device: str) -> dict:
    from seghz.train.trainer import TrainConfig, train

    known = {f.name for f in dataclasses.fields(TrainConfig)}
    want = {
        "scheme": scheme, "arch": a.arch, "encoder": a.encoder, "encoder_weights": None, "epochs": 1,
        "batch_size": a.batch, "crop_size": a.crop, "steps_per_epoch": a.warmup + a.steps, "device": device,
        "tile_size": a.crop, "seed": 0, "class_weights": "none" if a.recipe == "plain" else "enet",
        "dice": a.recipe != "plain", "amp": device.startswith("cuda"),
    }
    cfg = TrainConfig(**{k: v for k, v in want.items() if k in known})
    stamps: list[float] = []

    def progress(frac: float, msg: str) -> None:
        if msg.startswith("epoch") and "step" in msg:
            stamps.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        train(cfg, samples, [], Path(d) / "bench.safetensors", progress=progress)
        total = time.perf_counter() - t0
    if len(stamps) < a.warmup + a.steps:
        # the trainer did not report every step: fall back to the whole run (warm-up and save included)
        return {"img_s": a.batch * (a.warmup + a.steps) / total, "timed": "whole run", "total_s": total,
                "steps_reported": len(stamps)}
    t_a, t_b = stamps[a.warmup - 1] if a.warmup else t0, stamps[a.warmup + a.steps - 1]
    return {"img_s": a.batch * a.steps / (t_b - t_a), "step_s": (t_b - t_a) / a.steps, "timed": "per-step callbacks",
            "total_s": total, "first_steps_s": (t_a - t0)}


def bench_bare(a, nc: int, device: str, channels_last: bool = True) -> dict:
    torch.manual_seed(0)
    cuda = device.startswith("cuda")
    model = build_model(a.arch, a.encoder, nc).to(device).train()
    x = torch.randn(a.batch, 3, a.crop, a.crop, device=device)
    y = torch.randint(0, nc, (a.batch, a.crop, a.crop), device=device)
    if channels_last:  # as the trainer runs it, on every device
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            out = model(x)
            if isinstance(out, tuple):
                out = out[0]
            loss = F.cross_entropy(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(a.warmup):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    _sync(device)
    dt = time.perf_counter() - t0
    return {"img_s": a.batch * a.steps / dt, "step_s": dt / a.steps, "amp": "bf16" if cuda else "fp32",
            "channels_last": channels_last}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)  # _isolated strips flags by their full names
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--arch", default="Unet")
    p.add_argument("--encoder", default="tu-efficientnet_lite0")
    p.add_argument("--crop", type=int, default=512)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=20, help="timed steps (after --warmup)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--data", choices=["synthetic", "gid"], default="synthetic")
    p.add_argument("--num-images", type=int, default=32)
    p.add_argument("--image-size", type=int, default=None, help="synthetic scene side (default max(crop, 256) * 2)")
    p.add_argument("--recipe", choices=["plain", "default"], default="plain",
                   help="trainer loss: plain CE (same loss as the bare step) or the default recipe (enet weights + Dice)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--skip", choices=["none", "trainer", "bare"], default="none")
    p.add_argument("--compare-contiguous", action="store_true",
                   help="also time the bare step with contiguous (NCHW) tensors, side by side with channels_last")
    p.add_argument("--only-contiguous", action="store_true", help=argparse.SUPPRESS)  # child of --isolate
    p.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=True,
                   help="measure the trainer and the bare step in separate child processes (default on)")
    p.add_argument("--repeats", type=int, default=1, help="isolated rounds (bare, trainer) to take the median of")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    if a.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device")
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.steps < 1 or a.warmup < 0 or a.crop % 32 or a.batch < 1:
        raise SystemExit("--steps >= 1, --warmup >= 0, --batch >= 1 and --crop a multiple of 32")
    if a.only_contiguous and a.isolate:
        raise SystemExit("--only-contiguous is internal to --isolate's child processes (use --compare-contiguous)")

    t_all = time.perf_counter()
    # isolated: every part in its own child (with --compare-contiguous too, else the second layout measured in one
    # process pays that process's slowdown and the ratio is biased)
    if a.isolate and (a.skip == "none" or a.compare_contiguous):
        return _isolated(a, list(sys.argv[1:] if argv is None else argv), t_all)
    if a.data == "gid":
        samples, scheme = gid_samples(a.num_images), "gid15"
    else:
        size = a.image_size or max(a.crop, 256) * 2
        scheme = "hz7"
        samples = synthetic_samples(a.num_images, size, get_scheme(scheme).num_classes)
    nc = get_scheme(scheme).num_classes
    rates: dict[str, dict] = {}
    if a.skip != "trainer":
        rates["trainer"] = bench_trainer(a, samples, scheme, a.device)
    if a.only_contiguous:
        rates["bare_contiguous"] = bench_bare(a, nc, a.device, channels_last=False)
    else:
        if a.skip != "bare":
            rates["bare"] = bench_bare(a, nc, a.device)
        if a.compare_contiguous:
            rates["bare_contiguous"] = bench_bare(a, nc, a.device, channels_last=False)
    ratios = _ratios(rates)
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    report = {
        "config": {"device": a.device, "arch": a.arch, "encoder": a.encoder, "crop": a.crop, "batch": a.batch,
                   "steps": a.steps, "warmup": a.warmup, "data": a.data, "num_images": len(samples),
                   "image_size": list(samples[0][0].shape[:2]), "recipe": a.recipe, "scheme": scheme,
                   "isolate": False, "repeats": 1},
        "env": {"device_description": device_description(a.device), "torch": torch.__version__,
                "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "loadavg": load,
                "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"), "python": platform.python_version()},
        "rates": rates, "ratios": ratios, "wall_s": time.perf_counter() - t_all,
    }
    report["warnings"] = bench_warnings(report["config"])
    _print(a, report)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(report, indent=2))
    return report


def _isolated(a, argv: list[str], t_all: float) -> dict:
    """Run each part in a child process (``--no-isolate --skip <other>``), ``--repeats`` rounds; merge medians."""
    import statistics
    import subprocess

    base = []
    skip_next = False
    for x in argv:  # drop our own --json/--isolate/--repeats
        if skip_next:
            skip_next = False
            continue
        if x in ("--json", "--repeats", "--skip"):
            skip_next = True
            continue
        if x.startswith(("--json=", "--repeats=", "--skip=")) or x in ("--isolate", "--no-isolate", "--compare-contiguous"):
            continue
        base.append(x)
    parts = [] if a.skip == "bare" else [("bare", ["--skip", "trainer"])]
    if a.compare_contiguous:
        parts.append(("bare_contiguous", ["--skip", "trainer", "--only-contiguous"]))
    if a.skip != "trainer":
        parts.append(("trainer", ["--skip", "bare"]))
    runs: dict[str, list[dict]] = {part: [] for part, _ in parts}
    report = None
    with tempfile.TemporaryDirectory() as d:
        for r in range(max(1, a.repeats)):
            for part, flags in parts:
                out = Path(d) / f"{part}{r}.json"
                cmd = [sys.executable, str(Path(__file__).resolve()), *base, "--no-isolate", *flags, "--json", str(out)]
                proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if proc.returncode != 0:
                    raise SystemExit(f"{part} measurement failed:\n{proc.stderr[-3000:]}")
                child = json.loads(out.read_text())
                runs[part].append(child["rates"][part])
                report = report or child
    rates = {}
    for part, rs in runs.items():
        med = statistics.median(x["img_s"] for x in rs)
        rates[part] = {**min(rs, key=lambda x: abs(x["img_s"] - med)), "img_s": med, "runs_img_s": [x["img_s"] for x in rs]}
    report["rates"] = rates
    report["ratios"] = _ratios(rates)
    report["config"].update(isolate=True, repeats=max(1, a.repeats))
    report["warnings"] = bench_warnings(report["config"])
    try:
        report["env"]["loadavg"] = os.getloadavg()
    except OSError:
        pass
    report["wall_s"] = time.perf_counter() - t_all
    _print(a, report)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(report, indent=2))
    return report


def _ratios(rates: dict[str, dict]) -> dict[str, float]:
    out = {}
    if "trainer" in rates and "bare" in rates:
        out["trainer_vs_bare"] = rates["trainer"]["img_s"] / rates["bare"]["img_s"]
    if "bare" in rates and "bare_contiguous" in rates:
        out["channels_last_vs_contiguous"] = rates["bare"]["img_s"] / rates["bare_contiguous"]["img_s"]
    return out


def _print(a, report: dict) -> None:
    rates, ratios = report["rates"], report["ratios"]
    load = report["env"].get("loadavg")
    tr, ba = rates.get("trainer", {}), rates.get("bare", {})
    fmt = lambda r: f"{r['img_s']:.2f}" if r else "-"
    print(f"{a.arch}/{a.encoder} crop {a.crop} batch {a.batch} on {a.device} ({report['env']['device_description']}, "
          f"{report['env']['threads']} threads, load {load and ', '.join(f'{v:.2f}' for v in load)})")
    print(f"{'':10s}{'img/s':>10s}")
    print(f"{'trainer':10s}{fmt(tr):>10s}")
    print(f"{'bare':10s}{fmt(ba):>10s}")
    if "bare_contiguous" in rates:
        print(f"{'bare NCHW':10s}{fmt(rates['bare_contiguous']):>10s}")
    for name, value in ratios.items():
        print(f"{name} {value:.3f}")
    print(data_text(report["config"]))
    for w in report.get("warnings", []):
        print(f"WARNING: {w}")


def _cli() -> int:
    try:
        main()
    except SystemExit as e:  # a refusal: one "error: ..." line and status 2, like python -m seghz
        if isinstance(e.code, str):
            return fail(e.code.removeprefix("error: "))
        raise
    return 0


if __name__ == "__main__":
    raise SystemExit(_cli())
