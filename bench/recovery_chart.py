#!/usr/bin/env python
"""Issue 4's noise-recovery results as one picture: ``docs/recovery.svg``.

Every noise-robust recipe measured against clean and noisy CE of the same seeds, one panel per protocol, each
recipe's **paired recovery** (:func:`bench.experiments.paired_recovery`: mean gain over noisy CE ÷ mean noise
cost, on the seeds where the recipe and both baselines ran) as a diamond with ± one standard error, and each
seed's own recovery as a dot. The dashed line is the issue's target (0.5). Nothing is typed in: the numbers come
from the run JSONs of ``docs/``.

    python bench/recovery_chart.py                    # docs/recovery.svg from the default sources
    python bench/recovery_chart.py --out /tmp/r.svg

Sources (``--panel TITLE=JSON[,JSON...]`` replaces them): the GPU protocol (``bench/experiments.py`` report,
``runs`` with ``row``/``seed``/``miou``), the CPU proxy (``bench/noise_epochs.py`` collections, ``runs`` with
``name``/``seed``/``labels``/``recipe_overrides``/``miou_final``; only runs of one environment belong together)
and the CPU-scale table (``docs/experiments.json``, GT-class mIoU).
"""
from __future__ import annotations

import argparse
import html
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.experiments import ROWS, paired_recovery

RUNS = ROOT / "docs" / "experiments_runs"
DEFAULT_PANELS = [
    ("H200, study budget: Unet-Lite0 from ImageNet (the app's default), 4000 × 16 × 224² (session 18)",
     [RUNS / "gpu_h200_lite0_s18.json"], "miou"),
    ("H200, study budget: Unet-resnet34 from scratch, 4000 × 16 × 224² (sessions 9, 12)",
     [RUNS / "gpu_h200_4000steps.json"], "miou"),
    ("CPU proxy: Unet-Lite0 ImageNet, 128 tiles, 800 × 8 × 128² (sessions 11, 14–17; one environment)",
     [RUNS / "cpu_proxy_s14.json", RUNS / "cpu_proxy_s15.json", RUNS / "cpu_proxy_s16.json", RUNS / "cpu_proxy_s17.json",
      RUNS / "cpu_proxy_s11.json"],
     "miou"),
    ("CPU-scale table: Unet-Lite0 ImageNet, 489 tiles, 56 × 8 × 160² (GT-class mIoU)",
     [ROOT / "docs" / "experiments.json"], "miou_gt"),
]
# proxy recipe overrides (as JSON, keys sorted) -> a row name of bench/experiments.py where one matches
_PROXY_KNOWN = {json.dumps({k: v for k, v in ROWS[r][1].items()}, sort_keys=True): r for r in ROWS}


def _proxy_row(run: dict) -> str | None:
    """The experiments.py-style row of one ``bench/noise_epochs.py`` run: ``ce`` / ``noisy_ce`` / ``noisy_<row>``
    (a recipe of :data:`bench.experiments.ROWS`), or ``noisy_{json overrides}`` for any other; None for a clean
    run with a recipe (no such baseline here) or a run of another protocol (from scratch, other step counts)."""
    ov = run.get("recipe_overrides") or {}
    if run.get("init", "imagenet") != "imagenet" or int(run.get("steps", 800)) != 800:
        return None
    if run.get("labels") == "clean":
        return "ce" if not ov else None
    if not ov:
        return "noisy_ce"
    key = json.dumps(ov, sort_keys=True)
    return f"noisy_{_PROXY_KNOWN.get(key, key)}"


def load_runs(paths: list[Path], metric: str) -> list[dict]:
    """``{"row", "seed", metric}`` runs from report or proxy JSONs; a (row, seed) met twice keeps the first."""
    out: dict[tuple[str, int], dict] = {}
    for p in paths:
        d = json.loads(Path(p).read_text())
        for r in d.get("runs", []):
            if "row" in r:  # a run without the metric is left out: two metrics must not meet in one pairing
                row, val = r["row"], r.get(metric)
            else:
                row, val = _proxy_row(r), r.get("miou_final")
            if row is None or val is None:
                continue
            out.setdefault((row, int(r["seed"])), {"row": row, "seed": int(r["seed"]), metric: float(val)})
    return list(out.values())


def label_of(row: str, short: bool = True, limit: int = 64) -> str:
    """A label for a noisy row: the experiments.py label (``short``: without its parenthesis), else its
    overrides; cut to ``limit`` characters."""
    key = row[len("noisy_"):]
    if key in ROWS:
        text = ROWS[key][0].lstrip("+ ")
        text = text.split(" (")[0] if short else text
    else:
        try:
            text = ", ".join(f"{k}={v}" for k, v in json.loads(key).items())
        except ValueError:
            text = key
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def panel_points(runs: list[dict], metric: str) -> list[dict]:
    """One entry per noisy recipe with a pairing: ``{"row", "label", "recovery", "se", "per_seed", "seeds"}``,
    best recovery first."""
    rows = sorted({r["row"] for r in runs if r["row"].startswith("noisy_") and r["row"] != "noisy_ce"})
    pts = []
    for row in rows:
        pr = paired_recovery(runs, row, metric)
        if pr and pr.get("recovery") is not None:
            pts.append({"row": row, "label": label_of(row), **pr})
    shorts = [p["label"] for p in pts]
    for p in pts:  # two recipes with one short label (noise-mask variants, say) get their full labels
        if shorts.count(p["label"]) > 1:
            p["label"] = label_of(p["row"], short=False)
    return sorted(pts, key=lambda p: -p["recovery"])


def render_svg(panels: list[tuple[str, list[dict]]], lo: float = -1.5, hi: float = 1.0, width: int = 980) -> str:
    """The chart: one panel per ``(title, points)``; x from ``lo`` to ``hi`` (values beyond are drawn at the edge
    with an arrow mark)."""
    left, right, row_h, head = 440, 30, 22, 46
    plot_w = width - left - right

    def x(v: float) -> float:
        return left + (min(max(v, lo), hi) - lo) / (hi - lo) * plot_w

    parts, y = [], 10
    for title, pts in panels:
        top = y + head
        h = max(1, len(pts)) * row_h
        parts.append(f'<text x="10" y="{y + 18}" font-weight="bold">{html.escape(title)}</text>')
        parts.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{h}" fill="#fafafa" stroke="#ccc"/>')
        t = lo
        while t <= hi + 1e-9:
            parts.append(f'<line x1="{x(t):.1f}" y1="{top}" x2="{x(t):.1f}" y2="{top + h}" stroke="#e4e4e4"/>')
            parts.append(f'<text x="{x(t):.1f}" y="{top - 6}" text-anchor="middle" font-size="11" fill="#555">{t:+.1f}</text>')
            t = round(t + 0.5, 6)
        parts.append(f'<line x1="{x(0):.1f}" y1="{top}" x2="{x(0):.1f}" y2="{top + h}" stroke="#888"/>')
        parts.append(f'<line x1="{x(0.5):.1f}" y1="{top}" x2="{x(0.5):.1f}" y2="{top + h}" stroke="#2a9d3a" '
                     f'stroke-dasharray="5,3" stroke-width="2"/>')
        if not pts:
            parts.append(f'<text x="{left + 8}" y="{top + 15}" font-size="12" fill="#888">no paired runs</text>')
        for i, p in enumerate(pts):
            cy = top + i * row_h + row_h / 2
            n = len(p["seeds"])
            lab = f'{p["label"]} ({n} seed{"s" if n > 1 else ""})'
            parts.append(f'<text x="{left - 8}" y="{cy + 4:.1f}" text-anchor="end" font-size="11.5">{html.escape(lab)}</text>')
            for v in p["per_seed"]:
                if v is not None:
                    parts.append(f'<circle class="seed" cx="{x(v):.1f}" cy="{cy:.1f}" r="3" fill="#9bb7d4"/>')
            if p["se"] is not None:
                parts.append(f'<line x1="{x(p["recovery"] - p["se"]):.1f}" y1="{cy:.1f}" '
                             f'x2="{x(p["recovery"] + p["se"]):.1f}" y2="{cy:.1f}" stroke="#1f4e79" stroke-width="2"/>')
            cx = x(p["recovery"])
            colour = "#2a9d3a" if p["recovery"] >= 0.5 else "#1f4e79"
            parts.append(f'<path class="mean" data-row="{html.escape(p["row"])}" data-recovery="{p["recovery"]:.4f}" '
                         f'd="M{cx - 5:.1f},{cy:.1f} L{cx:.1f},{cy - 5:.1f} L{cx + 5:.1f},{cy:.1f} L{cx:.1f},{cy + 5:.1f} Z" '
                         f'fill="{colour}"/>')
            if not lo <= p["recovery"] <= hi:
                parts.append(f'<text x="{cx + (8 if p["recovery"] > hi else -8):.1f}" y="{cy + 4:.1f}" font-size="11" '
                             f'text-anchor="{"start" if p["recovery"] > hi else "end"}">{p["recovery"]:+.2f}</text>')
        y = top + h + 16
    legend = (f'<text x="10" y="{y + 6}" font-size="11" fill="#333">x: share of the noise cost recovered, paired with '
              f'clean and noisy CE of the same seeds. Diamond: paired recovery = mean gain over noisy CE ÷ mean cost '
              f'(clean − noisy), ± 1 SE; dots: single seeds</text><text x="10" y="{y + 22}" font-size="11" fill="#333">(values past the axis '
              f'are drawn at its edge); dashed green: the issue\'s 0.5 target. Generated by bench/recovery_chart.py '
              f'from the run JSONs in docs/.</text>')
    total = y + 34
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{total}" viewBox="0 0 {width} {total}" '
            f'font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>{"".join(parts)}{legend}</svg>\n')


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "recovery.svg")
    ap.add_argument("--panel", action="append", default=[],
                    help="TITLE=JSON[,JSON...][@metric] (repeatable; replaces the default panels; metric miou or miou_gt)")
    a = ap.parse_args(argv)
    specs = DEFAULT_PANELS
    if a.panel:
        specs = []
        for spec in a.panel:
            title, _, rest = spec.partition("=")
            files, _, metric = rest.partition("@")
            if not title or not files:
                raise SystemExit(f"--panel {spec!r}: expected TITLE=JSON[,JSON...][@metric]")
            specs.append((title, [Path(f) for f in files.split(",")], metric or "miou"))
    panels = []
    for title, paths, metric in specs:
        missing = [str(p) for p in paths if not Path(p).is_file()]
        if missing:
            raise SystemExit(f"{', '.join(missing)}: run JSON not found")
        pts = panel_points(load_runs(paths, metric), metric)
        panels.append((title, pts))
        for p in pts:
            print(f"{title[:24]:24s} {p['row']:40s} {p['recovery']:+.2f} ± {p['se'] if p['se'] is not None else float('nan'):.2f} "
                  f"({len(p['seeds'])} seeds)")
    a.out.write_text(render_svg(panels))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
