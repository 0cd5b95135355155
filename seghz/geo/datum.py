"""Chinese map datums: WGS-84 <-> GCJ-02 <-> BD-09, Baidu's BD-09 Mercator ("BD09MC") and Baidu tile numbering.

All functions take and return numpy arrays (scalars are accepted; the result then has shape ``()``) and work
element-wise, vectorised.

Datums
------
``GCJ-02`` ("Mars coordinates", used by Gaode/Tencent/Google China) is WGS-84 plus a published, deliberately
non-linear offset of a few hundred metres (the well-known ``transform_lat``/``transform_lng`` series around
(105 E, 35 N) on the Krasovsky ellipsoid a = 6378245 m, e^2 = 0.00669342162296594323). ``BD-09`` (Baidu) adds a
second small polar twist to GCJ-02 (``z = r + 2e-5 sin(lat*x_pi)``, ``theta = atan2 + 3e-6 cos(lng*x_pi)``,
``x_pi = pi*3000/180``, then + (0.0065, 0.006) degrees).

Outside China GCJ-02 = WGS-84 (the offset is only applied in China). **Bounding test**: a point is "in China"
when ``72.004 <= lon <= 137.8347`` and ``0.8293 <= lat <= 55.8271`` -- the rectangle used by the common open
implementations (e.g. wandergis/coordtransform's ``out_of_china``). It is a rectangle, so it also includes
neighbouring countries; that matches what those tools do, not a political border. For the inverse
(GCJ-02 -> WGS-84) the same test is applied to the GCJ-02 input. BD-09 <-> GCJ-02 is applied everywhere.

Inverses (GCJ-02 -> WGS-84, BD-09 -> GCJ-02, BD09MC -> BD-09) are solved iteratively (fixed-point iteration
``p <- p - (f(p) - target)``, whose Jacobian is close to the identity, so it converges geometrically) until
every element moves by less than ``INVERSE_TOL`` degrees (1e-12), well below the required 1e-9 degrees.

Baidu Mercator (BD09MC)
-----------------------
Baidu does not use a true Mercator: BD-09 lon/lat are mapped to "metres" by piecewise polynomials in six
latitude bands (``LLBAND`` 75/60/45/30/15/0 degrees) with the coefficient tables ``LL2MC`` below (and
``MC2LL`` for the approximate published inverse). These tables are the constants of Baidu's own Maps
JavaScript API v2 (``BMap.MercatorProjection``: ``EARTHRADIUS 6370996.81``, ``MCBAND``, ``LLBAND``, ``MC2LL``,
``LL2MC``); they are reproduced in many open projects, e.g. Leaflet/OpenLayers Baidu plugins
(``L.Projection.BaiduSphericalMercator``) and maptalks' ``projection.baidu``. Latitude is clipped to
[-74, 74] and longitude wrapped to [-180, 180] as in the API. We compute the exact inverse of ``LL2MC``
iteratively (seeded by ``MC2LL``) so BD-09 -> BD09MC -> BD-09 round-trips to < 1e-9 degrees.

Baidu tiles
-----------
Level ``z``, 256 px tiles, level 18 = 1 BD09MC unit per pixel, origin (0, 0), y pointing **north**:
``tile_x = floor(mx / (256 * 2**(18-z)))``, ``tile_y = floor(my / (256 * 2**(18-z)))``. Tile ``(x, y)`` covers
``[x*s, (x+1)*s) x [y*s, (y+1)*s)`` in BD09MC with ``s = 256 * 2**(18-z)``; its image row 0 is its north edge.
"""
from __future__ import annotations

import math

import numpy as np

from seghz.errors import BadInputError

# --- GCJ-02 ---------------------------------------------------------------------------------------------------
KRASOVSKY_A = 6378245.0
KRASOVSKY_EE = 0.00669342162296594323
X_PI = math.pi * 3000.0 / 180.0
CHINA_LON = (72.004, 137.8347)
CHINA_LAT = (0.8293, 55.8271)
INVERSE_TOL = 1e-12  # degrees
MAX_ITER = 60

# --- Baidu Mercator (Baidu Maps JS API v2 constants) ------------------------------------------------------------
BAIDU_EARTH_RADIUS = 6370996.81
MCBAND = (12890594.86, 8362377.87, 5591021.0, 3481989.83, 1678043.12, 0.0)
LLBAND = (75.0, 60.0, 45.0, 30.0, 15.0, 0.0)
LL2MC = (
    (-0.0015702102444, 111320.7020616939, 1704480524535203.0, -10338987376042340.0, 26112667856603880.0,
     -35149669176653700.0, 26595700718403920.0, -10725012454188240.0, 1800819912950474.0, 82.5),
    (0.0008277824516172526, 111320.7020463578, 647795574.6671607, -4082003173.641316, 10774905663.51142,
     -15171875531.51559, 12053065338.62167, -5124939663.577472, 913311935.9512032, 67.5),
    (0.00337398766765, 111320.7020202162, 4481351.045890365, -23393751.19931662, 79682215.47186455,
     -115964993.2797253, 97236711.15602145, -43661946.33752821, 8477230.501135234, 52.5),
    (0.00220636496208, 111320.7020209128, 51751.86112841131, 3796837.749470245, 992013.7397791013,
     -1221952.21711287, 1340652.697009075, -620943.6990984312, 144416.9293806241, 37.5),
    (-0.0003441963504368392, 111320.7020576856, 278.2353980772752, 2485758.690035394, 6070.750963243378,
     54821.18345352118, 9540.606633304236, -2710.55326746645, 1405.483844121726, 22.5),
    (-0.0003218135878613132, 111320.7020701615, 0.00369383431289, 823725.6402795718, 0.46104986909093,
     2351.343141331292, 1.58060784298199, 8.77738589078284, 0.37238884252424, 7.45),
)
MC2LL = (
    (1.410526172116255e-8, 8.98305509648872e-6, -1.9939833816331, 200.9824383106796, -187.2403703815547,
     91.6087516669843, -23.38765649603339, 2.57121317296198, -0.03801003308653, 17337981.2),
    (-7.435856389565537e-9, 8.983055097726239e-6, -0.78625201886289, 96.32687599759846, -1.85204757529826,
     -59.36935905485877, 47.40033549296737, -16.50741931063887, 2.28786674699375, 10260144.86),
    (-3.030883460898826e-8, 8.98305509983578e-6, 0.30071316287616, 59.74293618442277, 7.357984074871,
     -25.38371002664745, 13.45380521110908, -3.29883767235584, 0.32710905363475, 6856817.37),
    (-1.981981304930552e-8, 8.983055099779535e-6, 0.03278182852591, 40.31678527705744, 0.65659298677277,
     -4.44255534477492, 0.85341911805263, 0.12923347998204, -0.04625736007561, 4482777.06),
    (3.09191371068437e-9, 8.983055096812155e-6, 0.00006995724062, 23.10934304144901, -0.00023663490511,
     -0.6321817810242, -0.00663494467273, 0.03430082397953, -0.00466043876332, 2555164.4),
    (2.890871144776878e-9, 8.983055095805407e-6, -0.00000003068298, 7.47137025468032, -0.00000353937994,
     -0.02145144861037, -0.00001234426596, 0.00010322952773, -0.00000323890364, 826088.5),
)
BAIDU_TILE = 256
BAIDU_MAX_LAT = 74.0
BAIDU_ZOOM_RANGE = (3, 19)


def _arr(*vals) -> list[np.ndarray]:
    return [np.asarray(v, dtype=np.float64) for v in vals]


def in_china(lon, lat) -> np.ndarray:
    """True where (lon, lat) lies inside the China bounding rectangle (see the module docstring)."""
    lon, lat = _arr(lon, lat)
    return (lon >= CHINA_LON[0]) & (lon <= CHINA_LON[1]) & (lat >= CHINA_LAT[0]) & (lat <= CHINA_LAT[1])


def _gcj_delta(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """GCJ-02 offset (dlon, dlat) in degrees at WGS-84 (lon, lat), without the in-China test."""
    x = lon - 105.0
    y = lat - 35.0
    pi = math.pi
    common = (20.0 * np.sin(6.0 * x * pi) + 20.0 * np.sin(2.0 * x * pi)) * 2.0 / 3.0
    dlat = (-100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * np.sqrt(np.abs(x)) + common
            + (20.0 * np.sin(y * pi) + 40.0 * np.sin(y / 3.0 * pi)) * 2.0 / 3.0
            + (160.0 * np.sin(y / 12.0 * pi) + 320.0 * np.sin(y * pi / 30.0)) * 2.0 / 3.0)
    dlon = (300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * np.sqrt(np.abs(x)) + common
            + (20.0 * np.sin(x * pi) + 40.0 * np.sin(x / 3.0 * pi)) * 2.0 / 3.0
            + (150.0 * np.sin(x / 12.0 * pi) + 300.0 * np.sin(x / 30.0 * pi)) * 2.0 / 3.0)
    radlat = lat / 180.0 * pi
    magic = 1.0 - KRASOVSKY_EE * np.sin(radlat) ** 2
    sqrtmagic = np.sqrt(magic)
    dlat = dlat * 180.0 / ((KRASOVSKY_A * (1.0 - KRASOVSKY_EE)) / (magic * sqrtmagic) * pi)
    dlon = dlon * 180.0 / (KRASOVSKY_A / sqrtmagic * np.cos(radlat) * pi)
    return dlon, dlat


def _gcj_forward(lon: np.ndarray, lat: np.ndarray, inside: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """WGS-84 -> GCJ-02 where ``inside``, identity elsewhere. The series is only evaluated at in-China points (the
    others are replaced by the series' centre first): near the poles its longitude term divides by cos(lat) ~ 0."""
    dlon, dlat = _gcj_delta(np.where(inside, lon, 105.0), np.where(inside, lat, 35.0))
    return np.where(inside, lon + dlon, lon), np.where(inside, lat + dlat, lat)


def wgs84_to_gcj02(lon, lat) -> tuple[np.ndarray, np.ndarray]:
    """WGS-84 -> GCJ-02 (identity outside the China rectangle)."""
    lon, lat = _arr(lon, lat)
    return _gcj_forward(lon, lat, in_china(lon, lat))


def _solve(forward, tlon: np.ndarray, tlat: np.ndarray, lon0: np.ndarray, lat0: np.ndarray, what: str):
    """Fixed-point inverse: find p with forward(p) == target, starting from (lon0, lat0)."""
    lon, lat = lon0.copy(), lat0.copy()
    for _ in range(MAX_ITER):
        flon, flat = forward(lon, lat)
        elon, elat = flon - tlon, flat - tlat
        lon = lon - elon
        lat = lat - elat
        step = np.maximum(np.abs(elon), np.abs(elat))
        if not np.any(step > INVERSE_TOL):  # NaN inputs stay NaN and do not loop forever
            return lon, lat
    raise ArithmeticError(f"{what}: inverse did not converge in {MAX_ITER} iterations")


def gcj02_to_wgs84(lon, lat) -> tuple[np.ndarray, np.ndarray]:
    """GCJ-02 -> WGS-84, solved iteratively to < 1e-12 degrees (identity outside the China rectangle)."""
    lon, lat = _arr(lon, lat)
    inside = in_china(lon, lat)  # decided on the GCJ-02 input; outside points are never iterated (identity)
    wlon, wlat = _solve(lambda x, y: _gcj_forward(x, y, inside), lon, lat, lon, lat, "GCJ-02 -> WGS-84")
    return np.where(inside, wlon, lon), np.where(inside, wlat, lat)


def gcj02_to_bd09(lon, lat) -> tuple[np.ndarray, np.ndarray]:
    """GCJ-02 -> BD-09 (Baidu lon/lat)."""
    x, y = _arr(lon, lat)
    z = np.sqrt(x * x + y * y) + 0.00002 * np.sin(y * X_PI)
    theta = np.arctan2(y, x) + 0.000003 * np.cos(x * X_PI)
    return z * np.cos(theta) + 0.0065, z * np.sin(theta) + 0.006


def bd09_to_gcj02(lon, lat) -> tuple[np.ndarray, np.ndarray]:
    """BD-09 -> GCJ-02, solved iteratively (seeded by the usual closed-form approximation)."""
    lon, lat = _arr(lon, lat)
    x, y = lon - 0.0065, lat - 0.006
    z = np.sqrt(x * x + y * y) - 0.00002 * np.sin(y * X_PI)
    theta = np.arctan2(y, x) - 0.000003 * np.cos(x * X_PI)
    return _solve(gcj02_to_bd09, lon, lat, z * np.cos(theta), z * np.sin(theta), "BD-09 -> GCJ-02")


def wgs84_to_bd09(lon, lat) -> tuple[np.ndarray, np.ndarray]:
    """WGS-84 -> BD-09."""
    return gcj02_to_bd09(*wgs84_to_gcj02(lon, lat))


def bd09_to_wgs84(lon, lat) -> tuple[np.ndarray, np.ndarray]:
    """BD-09 -> WGS-84 (both inverses iterative)."""
    return gcj02_to_wgs84(*bd09_to_gcj02(lon, lat))


# --------------------------------------------------------------------------------------------------------------
# Baidu Mercator
# --------------------------------------------------------------------------------------------------------------


def _poly(table: np.ndarray, ax: np.ndarray, ay: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Baidu's convertor: |x|, |y| and per-element coefficient rows -> (|x'|, |y'|)."""
    c = table
    x = c[..., 0] + c[..., 1] * ax
    t = ay / c[..., 9]
    y = c[..., 2] + t * (c[..., 3] + t * (c[..., 4] + t * (c[..., 5] + t * (c[..., 6] + t * (c[..., 7] + t * c[..., 8])))))
    return x, y


_LL2MC = np.asarray(LL2MC, np.float64)
_MC2LL = np.asarray(MC2LL, np.float64)


def _band(value_abs: np.ndarray, bands: tuple[float, ...]) -> np.ndarray:
    """Index of the first band whose lower edge is <= value (bands in descending order)."""
    idx = np.full(value_abs.shape, len(bands) - 1, np.intp)
    for k in range(len(bands) - 1, -1, -1):
        idx = np.where(value_abs >= bands[k], k, idx)
    return idx


def _wrap_lon(lon: np.ndarray) -> np.ndarray:
    return np.where((lon < -180.0) | (lon > 180.0), (lon + 180.0) % 360.0 - 180.0, lon)


def bd09_to_bd09mc(lon, lat) -> tuple[np.ndarray, np.ndarray]:
    """BD-09 lon/lat -> Baidu Mercator metres (latitude clipped to +-74, longitude wrapped, as Baidu does)."""
    lon, lat = _arr(lon, lat)
    lon = _wrap_lon(lon)
    lat = np.clip(lat, -BAIDU_MAX_LAT, BAIDU_MAX_LAT)
    coef = _LL2MC[_band(np.abs(lat), LLBAND)]
    x, y = _poly(coef, np.abs(lon), np.abs(lat))
    return np.copysign(x, lon), np.copysign(y, lat)


def bd09mc_to_bd09(mx, my) -> tuple[np.ndarray, np.ndarray]:
    """Baidu Mercator -> BD-09 lon/lat: exact inverse of :func:`bd09_to_bd09mc` within |lat| < 74, solved by
    fixed-point iteration seeded with Baidu's published ``MC2LL`` approximation."""
    mx, my = _arr(mx, my)
    coef = _MC2LL[_band(np.abs(my), MCBAND)]
    lon0, lat0 = _poly(coef, np.abs(mx), np.abs(my))
    lon0, lat0 = np.copysign(lon0, mx), np.copysign(lat0, my)
    # Newton-like correction in metres -> degrees: d(my)/d(lat) ~ 111 km/deg * sec(lat); use a numeric slope.
    lon, lat = lon0, lat0
    for _ in range(MAX_ITER):
        fx, fy = bd09_to_bd09mc(lon, lat)
        h = 1e-6
        _, fy2 = bd09_to_bd09mc(lon, lat + h)
        dydlat = (fy2 - fy) / h
        dxdlon = _LL2MC[_band(np.abs(np.clip(lat, -BAIDU_MAX_LAT, BAIDU_MAX_LAT)), LLBAND)][..., 1]
        dlon = (fx - mx) / dxdlon
        dlat = (fy - my) / np.where(dydlat == 0, 1.0, dydlat)
        lon, lat = lon - dlon, lat - dlat
        if not np.any(np.maximum(np.abs(dlon), np.abs(dlat)) > INVERSE_TOL):
            return lon, lat
    # Baidu's bands do not meet exactly (gaps of a few centimetres at 15/30/45/60 degrees): a target inside such a
    # gap has no exact preimage and the iteration flips between the two bands; the last iterate then sits on the
    # band edge, within the gap's width (4 cm at 30 degrees, 15 m at 60), which we accept up to 20 m.
    fx, fy = bd09_to_bd09mc(lon, lat)
    if np.any(np.maximum(np.abs(fx - mx), np.abs(fy - my)) > 20.0):
        raise ArithmeticError(f"BD09MC -> BD-09: inverse did not converge in {MAX_ITER} iterations")
    return lon, lat


def wgs84_to_bd09mc(lon, lat) -> tuple[np.ndarray, np.ndarray]:
    """WGS-84 lon/lat -> Baidu Mercator metres."""
    return bd09_to_bd09mc(*wgs84_to_bd09(lon, lat))


def bd09mc_to_wgs84(mx, my) -> tuple[np.ndarray, np.ndarray]:
    """Baidu Mercator metres -> WGS-84 lon/lat."""
    return bd09_to_wgs84(*bd09mc_to_bd09(mx, my))


# --------------------------------------------------------------------------------------------------------------
# Baidu tiles
# --------------------------------------------------------------------------------------------------------------


def baidu_tile_span(z: int) -> float:
    """BD09MC units covered by one 256-px Baidu tile at level z (level 18: 1 unit per pixel)."""
    z = int(z)
    if not BAIDU_ZOOM_RANGE[0] <= z <= BAIDU_ZOOM_RANGE[1]:
        raise BadInputError("zoom", f"Baidu level {z} is out of range {BAIDU_ZOOM_RANGE[0]}..{BAIDU_ZOOM_RANGE[1]}")
    return BAIDU_TILE * 2.0 ** (18 - z)


def bd09mc_to_baidu_tile(mx, my, z: int) -> tuple[np.ndarray, np.ndarray]:
    """Baidu tile indices (int64) holding BD09MC points at level z (y counted northward from the equator)."""
    s = baidu_tile_span(z)
    mx, my = _arr(mx, my)
    return np.floor(mx / s).astype(np.int64), np.floor(my / s).astype(np.int64)


def baidu_tile_bounds_mc(tx: int, ty: int, z: int) -> tuple[float, float, float, float]:
    """(west, south, east, north) of Baidu tile (tx, ty) at level z in BD09MC."""
    s = baidu_tile_span(z)
    return tx * s, ty * s, (tx + 1) * s, (ty + 1) * s


def wgs84_to_baidu_tile(lon, lat, z: int) -> tuple[np.ndarray, np.ndarray]:
    """Baidu tile indices of WGS-84 points at level z."""
    return bd09mc_to_baidu_tile(*wgs84_to_bd09mc(lon, lat), z)


def baidu_tiles_for_bbox(west: float, south: float, east: float, north: float, z: int) -> tuple[range, range]:
    """(x range, y range) of the Baidu tiles covering a WGS-84 bbox at level z (the datum shift is non-linear, so
    the bbox outline is densified before taking the extreme tiles). Raises BadInputError outside China, for a bbox
    crossing the antimeridian (west > east) or an empty bbox."""
    check_bbox(west, south, east, north)
    t = np.linspace(0.0, 1.0, 17)
    lon = np.concatenate([west + (east - west) * t, np.full(17, east), west + (east - west) * t, np.full(17, west)])
    lat = np.concatenate([np.full(17, south), south + (north - south) * t, np.full(17, north), south + (north - south) * t])
    if not np.all(in_china(lon, lat)):
        raise BadInputError("bbox", f"({west}, {south}, {east}, {north}) is not inside China; Baidu tiles cover China only")
    tx, ty = wgs84_to_baidu_tile(lon, lat, z)
    return range(int(tx.min()), int(tx.max()) + 1), range(int(ty.min()), int(ty.max()) + 1)


def check_bbox(west: float, south: float, east: float, north: float) -> None:
    """Raise BadInputError for a non-finite, empty, out-of-range or antimeridian-crossing WGS-84 bbox."""
    vals = (west, south, east, north)
    if not all(isinstance(v, (int, float, np.floating, np.integer)) and math.isfinite(float(v)) for v in vals):
        raise BadInputError("bbox", f"{vals} must be four finite numbers W,S,E,N")
    if west > east:
        raise BadInputError("bbox", f"west {west} > east {east}: a bbox crossing the antimeridian is not supported; split it")
    if not (-180.0 <= west <= 180.0 and -180.0 <= east <= 180.0 and -90.0 <= south <= 90.0 and -90.0 <= north <= 90.0):
        raise BadInputError("bbox", f"{vals} is outside lon -180..180 / lat -90..90")
    if south >= north or west == east:
        raise BadInputError("bbox", f"{vals} is empty (need W < E and S < N)")
