"""Predicting an analyst's region of a workspace scene, with class areas in km² (or pixels)."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from seghz.data.io import read_image
from seghz.errors import RegionError
from seghz.geo.tiles import pixel_area_m2
from seghz.infer.engine import TTA_MODES, Predictor, tta_views
from seghz.store import Scene, Workspace

MAX_REGION_PIXELS = 2048 * 2048


@dataclass
class RegionResult:
    """A region prediction: window (row, col, h, w) in scene pixels, class mask, confidence, label crop."""

    scene_id: str
    window: tuple[int, int, int, int]
    pred: np.ndarray
    confidence: np.ndarray
    label: np.ndarray | None
    pixel_area_m2: float | None
    tta: str  # the TTA mode ("none", "flip", "d4") or "custom" for an analyst's list of views
    entropy: np.ndarray | None = None  # predictive entropy of the merged distribution (nats)
    disagreement: np.ndarray | None = None  # fraction of TTA views disagreeing with the consensus
    views: tuple[str, ...] = ("identity",)  # the TTA views that were run (canonical names, in order)
    merge: str | None = None  # how the views were merged ("softmax" | "logits")
    blend: str | None = None  # how overlapping windows were blended ("uniform" | "gaussian" | "cosine")

    @property
    def tta_description(self) -> str:
        """E.g. ``"none (1 view: identity)"`` or ``"custom (2 views: identity, lr)"``."""
        n = len(self.views)
        return f"{self.tta} ({n} view{'s' if n != 1 else ''}: {', '.join(self.views)})"


def resolve_tta(tta: str | Sequence[str]) -> tuple[str, tuple[str, ...]]:
    """(mode label, canonical view names) of a TTA choice: a mode name (``none``/``flip``/``d4``), one view name,
    or a list of view names (-> ``"custom"``). Raises ValueError for unknown names or an empty list."""
    names = tuple(name for name, *_ in tta_views(tta))
    if isinstance(tta, str):
        return (tta if tta in TTA_MODES else "custom"), names
    return "custom", names


def check_window(scene: Scene, window: tuple[int, int, int, int], max_pixels: int = MAX_REGION_PIXELS) -> tuple[int, int, int, int]:
    """Clip a window to the scene; raise RegionError when it is empty or larger than the cap."""
    r, c, h, w = (int(v) for v in window)
    r0, c0 = max(0, r), max(0, c)
    r1, c1 = min(scene.height, r + h), min(scene.width, c + w)
    if r1 <= r0 or c1 <= c0:
        raise RegionError(f"the region lies outside scene '{scene.name}' ({scene.width}x{scene.height} px)")
    if (r1 - r0) * (c1 - c0) > max_pixels:
        raise RegionError(
            f"the region is {(c1 - c0)}x{(r1 - r0)} px = {(r1 - r0) * (c1 - c0) / 1e6:.1f} Mpx, over the cap of "
            f"{max_pixels / 1e6:.1f} Mpx; draw a smaller region or run the whole scene with `python -m seghz predict`"
        )
    return r0, c0, r1 - r0, c1 - c0


def predict_region(
    ws: Workspace,
    scene: Scene,
    window: tuple[int, int, int, int],
    predictor: Predictor,
    tta: str | Sequence[str] = "none",
    progress: Callable[[float, str], None] | None = None,
    max_pixels: int = MAX_REGION_PIXELS,
    *,
    merge: str | None = None,
    blend: str | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> RegionResult:
    """Run the model on a window of a scene (read window-wise from GeoTIFFs).

    ``tta`` is a mode (``"none"``, ``"flip"``, ``"d4"``) or the analyst's list of view names
    (:data:`seghz.infer.engine.VIEW_NAMES`); ``merge``/``blend`` override the predictor's defaults. The result
    records the views, merge and blend that were run."""
    mode, views = resolve_tta(tta)  # validates before any pixel is read
    win = check_window(scene, window, max_pixels)
    merge = merge or getattr(predictor, "merge", None)
    blend = blend or getattr(predictor, "blend", None)
    img = read_image(ws.scene_path(scene, "image"), window=win)
    full = predictor.predict_full(img, tta if isinstance(tta, str) else list(views), progress=progress,
                                  should_cancel=should_cancel, merge=merge, blend=blend)
    label = None
    if scene.label_path:
        r, c, h, w = win
        label = ws.effective_label(scene.id)[r : r + h, c : c + w]
    return RegionResult(scene.id, win, full.mask, full.confidence, label,
                        pixel_area_m2(scene, win[0] + win[2] / 2, win[1] + win[3] / 2), mode, full.entropy,
                        full.disagreement, views, merge, blend)


# The affine of a pixel-space scene (no CRS) in the convention of the Map page and its GeoJSON exports
# (:data:`seghz.geo.vectors.PIXEL_COORDS`): x = column, y = -row, so a region's GeoTIFF and its polygons line up
# in a GIS (an identity transform put a window at (0, 0), its polygons at the window's offset).
PIXEL_SPACE_TRANSFORM = (1.0, 0.0, 0.0, 0.0, -1.0, 0.0)


def window_transform(transform: Sequence[float], window: tuple[int, int, int, int]) -> tuple[float, ...]:
    """The affine ``(a, b, c, d, e, f)`` of a ``(row, col, height, width)`` window of a raster with ``transform``:
    the same pixel size and rotation, origin moved to the window's top-left pixel corner."""
    a, b, c, d, e, f = (float(v) for v in list(transform)[:6])
    r, col = int(window[0]), int(window[1])
    return a, b, c + a * col + b * r, d, e, f + d * col + e * r


def region_geotiff(scene: Scene, window: tuple[int, int, int, int], mask: np.ndarray, scheme=None,
                   tags: dict | None = None) -> bytes:
    """A predicted region as GeoTIFF bytes: uint8 class indices (255 = outside the region / ignore), the scene's CRS
    and the window's transform (no CRS when the scene has none: then :data:`PIXEL_SPACE_TRANSFORM` shifted to the
    window, x = column, y = -row of the scene, as the GeoJSON export), colour table in ``scheme`` colours,
    class names as band tags, and as dataset tags the scene, the window (row, col, height, width) and ``tags``
    (the checkpoint and TTA that made it).

    Raises:
        ValueError: When ``mask`` is not ``height``×``width`` of the window.
    """
    import tempfile
    from pathlib import Path

    from seghz.data.io import write_index_mask_geotiff

    mask = np.asarray(mask)
    if mask.shape != (int(window[2]), int(window[3])):
        raise ValueError(f"mask {mask.shape} does not match the window {tuple(window[2:])}")
    georef = scene.crs and scene.transform is not None
    with tempfile.TemporaryDirectory(prefix="seghz-region-") as d:
        out = Path(d) / "region.tif"
        write_index_mask_geotiff(out, mask, scene.crs if georef else None,
                                 window_transform(scene.transform if georef else PIXEL_SPACE_TRANSFORM, window),
                                 scheme,
                                 tags={"scene": scene.id, "window": ",".join(str(int(v)) for v in window),
                                       **(tags or {})})
        return out.read_bytes()


def drawn_window(scene: Scene, geometry, info) -> tuple[int, int, int, int]:
    """The scene pixel window ``(row, col, height, width)`` of a drawn region
    (:func:`seghz.geo.tiles.geojson_to_pixel_window`), its errors naming the scene by its display name
    (``scene 'Demo town (synthetic)'``), not its image file."""
    from seghz.geo.tiles import geojson_to_pixel_window

    return geojson_to_pixel_window(geometry, info, name=scene.name)


def too_big_window(scene: Scene, geometry, info) -> tuple[int, int, int, int] | None:
    """The pixel window of a drawn region when it is valid but over the inline cap (:data:`MAX_REGION_PIXELS`), so it
    can run as a background job; None when the region is fine inline or unusable (e.g. outside the scene)."""
    try:
        w = check_window(scene, drawn_window(scene, geometry, info), max_pixels=2**62)
    except RegionError:
        return None
    return w if w[2] * w[3] > MAX_REGION_PIXELS else None


SMALL_AREA_M2 = 1e6  # below 1 km², areas read in m² ("15,625 m²", not "0.0156 km²"; "0.000 km²" and a "5μ" axis for a few px)


def area_unit(total_m2: float) -> tuple[str, float, int]:
    """``(unit, m² per unit, decimals)`` to show areas of a region whose total area is ``total_m2``: m² below
    :data:`SMALL_AREA_M2` (to the cm², 2 decimals), km² otherwise (to the m², 6 decimals)."""
    if total_m2 < SMALL_AREA_M2:
        return "m²", 1.0, 2
    return "km²", 1e6, 6


def format_area(m2: float) -> str:
    """An area in the unit of :func:`area_unit`: ``"30.0 m²"``, ``"15,625 m²"``, ``"4.210 km²"``."""
    unit, per, _ = area_unit(m2)
    v = m2 / per
    if unit == "m²":
        return f"{v:,.0f} m²" if v >= 100 else f"{v:,.1f} m²"
    return f"{v:,.3f} km²"


def tta_label(mode: str, views: Sequence[str]) -> str:
    """A short TTA name for file names and CSV columns: ``none``, ``d4``, ``flip`` or ``custom-identity+lr``."""
    return mode if mode != "custom" else "custom-" + "+".join(views)


def export_stem(scene_id: str, window: tuple[int, int, int, int], checkpoint_id: str, mode: str,
                views: Sequence[str]) -> str:
    """File name stem of a region's exports, naming the model and TTA that made the prediction, e.g.
    ``town_r64_c32_128x96_demo_hz7_tta-d4`` (a retrained model's export of the same region gets another name)."""
    import re

    r, c, h, w = (int(v) for v in window)
    ck = re.sub(r"[^A-Za-z0-9_.-]+", "-", str(checkpoint_id)).strip("-.") or "model"
    tta = re.sub(r"[^A-Za-z0-9_+-]+", "-", tta_label(mode, views))
    return f"{scene_id}_r{r}_c{c}_{w}x{h}_{ck[:48]}_tta-{tta}"


def class_areas(mask: np.ndarray, names, pixel_area: float | None) -> list[dict]:
    """Per-class pixel counts, share (%) and area (km², when georeferenced) of a class mask."""
    valid = mask[mask != 255]
    counts = np.bincount(valid.ravel(), minlength=len(names))[: len(names)]
    total = max(int(counts.sum()), 1)
    rows = []
    for i, n in enumerate(names):
        row = {"class": n, "pixels": int(counts[i]), "percent": 100.0 * counts[i] / total}
        if pixel_area is not None:
            row["km2"] = counts[i] * pixel_area / 1e6
        rows.append(row)
    return rows
