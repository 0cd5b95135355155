"""The embedded default: a procedurally generated, clearly SYNTHETIC hz7 scene.

Real imagery cannot be shipped (licences), so a fresh clone creates this scene by itself. It draws a
town in the hz7 classes — farmland (Green_land), woods (Forest), a river and ponds (Water), bare
plots (OpenArea), a road grid (Road_land), building blocks (Buildings) and a few glass roofs
(Reflection_Glass_Curtainwall) — with textures, so a model has to learn colour and texture, not
flat colours. The label is exact by construction. The scene is placed at a nominal spot west of
Hangzhou (EPSG:3857, 1 m/px) only so the map has somewhere to show it; the UI says it is synthetic.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

# hz7 class indices
WATER, OPEN, GREEN, FOREST, GLASS, BUILD, ROAD = range(7)
DEMO_ORIGIN_LONLAT = (120.08, 30.29)  # nominal placement (synthetic!)
DEMO_RES_M = 1.0


def _noise(rng: np.random.Generator, h: int, w: int, scale: int) -> np.ndarray:
    """Smooth value noise in [0, 1] (bilinear upsampled random grid)."""
    gh, gw = max(2, h // scale + 2), max(2, w // scale + 2)
    g = rng.random((gh, gw)).astype(np.float32)
    return cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 1)


def _blob_mask(rng: np.random.Generator, h: int, w: int, scale: int, thresh: float) -> np.ndarray:
    return _noise(rng, h, w, scale) > thresh


def generate_scene(size: int = 1024, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Return (RGB uint8 size×size×3, hz7 class-index uint8 size×size)."""
    rng = np.random.default_rng(seed)
    h = w = size
    lbl = np.full((h, w), GREEN, np.uint8)
    # farmland parcels with different crops
    parcel = rng.integers(0, 4, (h // 48 + 1, w // 64 + 1))
    parcel = cv2.resize(parcel.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
    lbl[_blob_mask(rng, h, w, 180, 0.62)] = FOREST
    lbl[_blob_mask(rng, h, w, 120, 0.78) & (lbl == GREEN)] = OPEN
    # river: a sinusoid band
    yy, xx = np.mgrid[0:h, 0:w]
    phase = rng.uniform(0, 2 * math.pi)
    centre = h * rng.uniform(0.3, 0.7) + h * 0.08 * np.sin(xx / w * 2 * math.pi * rng.uniform(0.8, 1.6) + phase)
    width = size * rng.uniform(0.025, 0.045) * (1 + 0.3 * _noise(rng, h, w, 200))
    lbl[np.abs(yy - centre) < width] = WATER
    lbl[_blob_mask(rng, h, w, 90, 0.86)] = WATER  # ponds
    # town: a block grid in one quadrant-ish region
    town = np.zeros((h, w), bool)
    cy, cx = rng.integers(h // 4, 3 * h // 4), rng.integers(w // 4, 3 * w // 4)
    rad = size * rng.uniform(0.22, 0.32)
    town[(yy - cy) ** 2 + (xx - cx) ** 2 < rad**2] = True
    step = int(rng.integers(70, 110))
    road_w = int(rng.integers(6, 10))
    roads = np.zeros((h, w), bool)
    off = int(rng.integers(0, step))
    for r in range(off, h, step):
        roads[r : r + road_w, :] = True
    for c in range(off, w, step):
        roads[:, c : c + road_w] = True
    roads &= town | (_noise(rng, h, w, 300) > 0.8)
    # two long arterial roads crossing the whole scene
    for k in range(2):
        a = rng.uniform(0, math.pi)
        d = np.abs((xx - w / 2) * math.sin(a) - (yy - h / 2) * math.cos(a) - rng.uniform(-h / 4, h / 4))
        roads |= d < road_w * 0.8
    bld = np.zeros((h, w), bool)
    glass = np.zeros((h, w), bool)
    for _ in range(int(size * size / 250)):
        y0, x0 = rng.integers(0, h), rng.integers(0, w)
        if not town[y0, x0]:
            continue
        bh, bw = rng.integers(8, 30), rng.integers(8, 40)
        if rng.random() < 0.5:
            bh, bw = bw, bh
        sl = (slice(y0, min(h, y0 + bh)), slice(x0, min(w, x0 + bw)))
        if roads[sl].any() or (lbl[sl] == WATER).any():
            continue
        if rng.random() < 0.04:
            glass[sl] = True
        else:
            bld[sl] = True
    lbl[town & (lbl == GREEN) & (_noise(rng, h, w, 60) > 0.55)] = OPEN
    lbl[bld] = BUILD
    lbl[glass] = GLASS
    lbl[roads & (lbl != WATER)] = ROAD
    # bridges: roads over water
    lbl[roads & (lbl == WATER) & (_noise(rng, h, w, 50) > 0.5)] = ROAD

    # ---- render ----
    img = np.zeros((h, w, 3), np.float32)
    tex = _noise(rng, h, w, 6)
    fine = rng.random((h, w)).astype(np.float32)
    crop_cols = np.array([[96, 130, 60], [120, 150, 70], [140, 140, 80], [80, 115, 55]], np.float32)
    base = {
        WATER: np.array([40, 62, 80], np.float32),
        OPEN: np.array([165, 150, 125], np.float32),
        FOREST: np.array([38, 70, 38], np.float32),
        GLASS: np.array([200, 215, 225], np.float32),
        BUILD: np.array([150, 145, 140], np.float32),
        ROAD: np.array([110, 110, 112], np.float32),
    }
    img[:] = crop_cols[parcel]
    for c, col in base.items():
        img[lbl == c] = col
    # roof colour variety per building (connected components)
    n, comp = cv2.connectedComponents((lbl == BUILD).astype(np.uint8))
    roof = rng.choice(np.array([[170, 160, 150], [120, 90, 80], [90, 110, 140], [200, 195, 190], [140, 135, 120]], np.float32), n)
    bmask = lbl == BUILD
    img[bmask] = roof[comp[bmask]]
    # textures: forest canopy is lumpy, fields striped, water smooth
    img[lbl == FOREST] *= (0.7 + 0.6 * tex[lbl == FOREST])[:, None]
    stripes = (0.9 + 0.1 * np.sin(xx * 0.9 + yy * 0.3)).astype(np.float32)
    g = lbl == GREEN
    img[g] *= stripes[g][:, None]
    img[lbl == WATER] *= (0.9 + 0.2 * _noise(rng, h, w, 40)[lbl == WATER])[:, None]
    # building shadows to the south-east
    sh = cv2.dilate(bmask.astype(np.uint8), np.ones((5, 5), np.uint8))
    sh = np.roll(np.roll(sh, 3, 0), 3, 1).astype(bool) & ~bmask & (lbl != WATER)
    img[sh] *= 0.6
    img *= (0.92 + 0.16 * fine)[..., None]
    img = cv2.GaussianBlur(img, (3, 3), 0.7)
    return np.clip(img, 0, 255).astype(np.uint8), lbl


def demo_transform(size: int) -> tuple[str, tuple[float, ...]]:
    """EPSG:3857 CRS and affine transform for the nominal demo placement."""
    lon, lat = DEMO_ORIGIN_LONLAT
    r = 6378137.0
    x = math.radians(lon) * r
    y = math.log(math.tan(math.pi / 4 + math.radians(lat) / 2)) * r
    # Web-Mercator metres are stretched by 1/cos(lat): keep ~1 m ground resolution
    res = DEMO_RES_M / math.cos(math.radians(lat))
    return "EPSG:3857", (res, 0.0, x, 0.0, -res, y)


def write_demo_geotiff(path, rgb: np.ndarray, transform: tuple[float, ...] | None = None) -> None:
    """Atomically write the demo image as a tiled GeoTIFF with the nominal placement (or the given affine transform):
    through :func:`seghz.data.io.atomic_target`, so a failure leaves any previous file as it was and no temp file."""
    import rasterio
    from rasterio.transform import Affine

    from seghz.data.io import atomic_target

    crs, t = demo_transform(rgb.shape[0])
    t = tuple(transform) if transform is not None else t
    with atomic_target(path, suffix=".tmp.tif") as tmp, rasterio.open(
        tmp, "w", driver="GTiff", width=rgb.shape[1], height=rgb.shape[0], count=3, dtype="uint8",
        crs=crs, transform=Affine(*t), tiled=True, blockxsize=256, blockysize=256, compress="deflate",
    ) as ds:
        ds.write(np.transpose(rgb, (2, 0, 1)))
        ds.update_tags(SEGHZ_SYNTHETIC="procedurally generated demo scene; not real imagery")
