"""The one raster reader/writer of SegHZ.

Every image and label file goes through here, so every bad file gets the same clear error naming
the file and the problem. GeoTIFFs are read with rasterio (CRS + transform kept, windows supported);
PNG/JPEG with Pillow (truncated files raise instead of decoding half an image).
"""
from __future__ import annotations

import contextlib
import functools
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np
from PIL import Image, UnidentifiedImageError

from seghz.classes import IGNORE, Scheme
from seghz.errors import BadInputError, WriteError

# A TIFF without a geotransform is a supported input (pixel space); rasterio's NotGeoreferencedWarning on every read
# of one says nothing the scene's "pixel space" label does not already say.
warnings.filterwarnings("ignore", message="Dataset has no geotransform, gcps, or rpcs")

TIFF_EXT = {".tif", ".tiff"}
IMAGE_EXT = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
Image.MAX_IMAGE_PIXELS = 30000 * 30000
# What Pillow raises for damaged files: besides OSError/SyntaxError, ValueError for impossible mode/size fields and
# DecompressionBombError (not an OSError) for headers claiming more than 2 x MAX_IMAGE_PIXELS pixels.
_PIL_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)


@dataclass
class RasterInfo:
    """Size and geography of a raster. ``crs`` is None for pixel-space rasters."""

    path: str
    width: int
    height: int
    count: int
    dtype: str
    crs: str | None = None
    transform: tuple[float, ...] | None = None  # affine a, b, c, d, e, f

    @property
    def georeferenced(self) -> bool:
        return self.crs is not None and self.transform is not None


def _is_tiff(path: Path) -> bool:
    return path.suffix.lower() in TIFF_EXT


def raster_info(path: str | os.PathLike) -> RasterInfo:
    """Read size, band count and geography without reading pixels."""
    p = Path(path)
    if not p.exists():
        raise BadInputError(p, "file does not exist")
    if _is_tiff(p):
        import rasterio
        from rasterio.errors import RasterioError

        try:
            with rasterio.open(p) as ds:
                crs = ds.crs.to_string() if ds.crs else None
                tr = tuple(ds.transform)[:6] if ds.crs else None
                return RasterInfo(str(p), ds.width, ds.height, ds.count, ds.dtypes[0], crs, tr)
        except (RasterioError, ValueError) as e:
            raise BadInputError(p, f"not a readable GeoTIFF ({e})") from None
    try:
        with Image.open(p) as im:
            bands = len(im.getbands())
            return RasterInfo(str(p), im.width, im.height, bands, "uint8")
    except _PIL_ERRORS as e:
        raise BadInputError(p, f"not a readable image ({e})") from None


STRETCH_SAMPLE = 1024  # longest side of the decimated read that gives a GeoTIFF's stretch range
_STRETCH_GRID = 16  # when that read fails: at most _STRETCH_GRID x _STRETCH_GRID windowed reads ...
_STRETCH_WIN = 64  # ... of _STRETCH_WIN x _STRETCH_WIN px, spread over the whole raster


def _read_errors() -> tuple[type[BaseException], ...]:
    """What a failed rasterio read raises: its own errors, GDAL's (CPLE_*, not RasterioError subclasses), and
    ValueError / MemoryError / OSError for impossible shapes, huge reads and I/O trouble."""
    from rasterio.errors import RasterioError

    try:
        from rasterio._err import CPLE_BaseError
    except ImportError:  # pragma: no cover - a rasterio without the private module
        return (RasterioError, ValueError, MemoryError, OSError)
    return (RasterioError, CPLE_BaseError, ValueError, MemoryError, OSError)


class _SampleError(Exception):
    """A windowed read of the stretch sample failed; the message says which window and why."""


def _grid_starts(n: int) -> list[tuple[int, int]]:
    """(start, length) of at most _STRETCH_GRID windows of up to _STRETCH_WIN px along an axis of ``n`` px: an
    axis short enough is covered exactly (no overlap); a longer one is cut into _STRETCH_GRID equal strips with one
    window centred in each, so every part of the axis weighs the same in the sample (windows flush with both ends
    would over-weight the edges)."""
    if n <= _STRETCH_GRID * _STRETCH_WIN:
        return [(s, min(_STRETCH_WIN, n - s)) for s in range(0, n, _STRETCH_WIN)]
    centres = (np.arange(_STRETCH_GRID) + 0.5) * (n / _STRETCH_GRID)
    return [(round(float(c) - _STRETCH_WIN / 2), _STRETCH_WIN) for c in centres]


def _stretch_sample_windows(ds, bands: list[int]) -> np.ndarray:
    """The valid (unmasked) pixel values of ``bands`` from a grid of small windowed reads over the whole raster:
    the scene-wide sample when the decimated read fails. Any failed window read raises (the caller reports it)."""
    from rasterio.windows import Window

    vals = []
    for r, h in _grid_starts(ds.height):
        for c, w in _grid_starts(ds.width):
            try:
                data = ds.read(indexes=bands, window=Window(c, r, w, h), masked=True)
            except _read_errors() as e:
                why = e.__cause__ or e
                raise _SampleError(f"window at row {r}, col {c} ({w}x{h} px): {why}") from e
            vals.append(np.ma.compressed(data))
    return np.concatenate(vals) if vals else np.zeros(0)


@functools.lru_cache(maxsize=32)
def _tiff_stretch_cached(path: str, mtime_ns: int, size: int) -> tuple[float, float] | None:
    import rasterio

    errors = _read_errors()
    try:
        ds = rasterio.open(path)
    except errors as e:
        raise BadInputError(path, f"not a readable GeoTIFF ({e.__cause__ or e})") from None
    with ds:
        if ds.dtypes[0] == "uint8":
            return None
        bands = [1, 2, 3] if ds.count >= 3 else [1]
        f = max(1.0, max(ds.width, ds.height) / STRETCH_SAMPLE)
        shape = (len(bands), max(1, int(ds.height / f)), max(1, int(ds.width / f)))
        try:
            vals = np.ma.compressed(ds.read(indexes=bands, out_shape=shape, masked=True))
        except errors as e1:  # e.g. a broken overview: sample the full-resolution pixels by small windows instead
            why1 = e1.__cause__ or e1
            try:
                vals = _stretch_sample_windows(ds, bands)
            except _SampleError as e2:
                raise BadInputError(path, "corrupt or truncated GeoTIFF: cannot read pixels for the scene-wide "
                                          f"contrast stretch (decimated read: {why1}; windowed sample: {e2})") from None
    vals = vals.astype(np.float64)
    if vals.size == 0:
        return None
    lo, hi = (float(v) for v in np.percentile(vals, [2, 98]))
    return lo, (hi if hi > lo else lo + 1.0)


def tiff_stretch(path: str | os.PathLike) -> tuple[float, float] | None:
    """The (2nd, 98th) percentile range of a non-8-bit GeoTIFF (RGB bands, or the grey band), nodata and masked
    pixels left out, so every window of a scene — predicted rows and map tiles alike — is stretched the same way
    (no seams between windows). The range comes from one decimated read of the whole raster (longest side
    STRETCH_SAMPLE px); if that read fails (e.g. a broken overview), from a grid of up to 16 x 16 windowed reads of
    64 x 64 px spread over the whole raster -- still one range for the scene.

    None for 8-bit rasters (they are not stretched) and for rasters with no valid pixel in the sample. Raises
    BadInputError naming the file when it does not exist, does not open, or both ways of reading pixels fail (the
    message gives both reasons); it never falls back to per-window stretching silently. Cached per file state
    (path, mtime, size); errors are not cached."""
    p = Path(path)
    try:
        st_ = p.stat()
    except FileNotFoundError:
        raise BadInputError(p, "file does not exist") from None
    return _tiff_stretch_cached(str(p), st_.st_mtime_ns, st_.st_size)


def to_rgb8(arr: np.ndarray, stretch: tuple[float, float] | None = None) -> np.ndarray:
    """The one 8-bit display/model conversion of SegHZ pixels (used by :func:`read_image` and the map tiles of
    :mod:`seghz.geo.tiles`): an H×W or H×W×B array (B = 1, 3 or 4) -> H×W×3 uint8.

    A single band is repeated into grey RGB, a 4th (alpha) band is dropped. uint8 data is kept as it is; any other
    type is stretched linearly, ``lo`` -> 0 and ``hi`` -> 255 (rounded, clipped to 0..255), with ``stretch`` =
    (lo, hi) -- normally the scene-wide range of :func:`tiff_stretch`, so every window of a scene is stretched the
    same way -- or, when None, the array's own 2nd and 98th percentiles. A range with ``hi <= lo`` uses
    ``hi = lo + 1``. It never casts 16-bit values straight to uint8 (that would wrap around)."""
    a = np.asarray(arr)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise ValueError(f"to_rgb8 needs an H×W or H×W×B array with B in (1, 3, 4), got shape {a.shape}")
    a = a[..., :3]
    if a.dtype != np.uint8:
        f = a.astype(np.float32)
        if stretch is not None:
            lo, hi = (float(v) for v in stretch)
        elif f.size:
            lo, hi = (float(v) for v in np.percentile(f, [2, 98]))
        else:
            lo, hi = 0.0, 1.0
        if not hi > lo:
            hi = lo + 1.0
        a = np.clip((f - np.float32(lo)) / np.float32(hi - lo) * np.float32(255) + np.float32(0.5), 0, 255)
        a = a.astype(np.uint8)
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return np.ascontiguousarray(a)


def _to_rgb8(arr: np.ndarray, src: Path, stretch: tuple[float, float] | None = None) -> np.ndarray:
    """:func:`to_rgb8` for :func:`read_image`, which refuses (naming ``src``) anything but RGB / RGBA images."""
    problem = _rgb_problem(1 if arr.ndim == 2 else arr.shape[2], arr.dtype)
    if problem:
        raise BadInputError(src, problem)
    return to_rgb8(arr, stretch)


_STRETCHED = (np.uint16, np.int16, np.float32, np.float64, np.int32, np.uint32)


def _rgb_problem(bands: int, dtype) -> str | None:
    """Why :func:`read_image` would refuse an image of ``bands`` bands of ``dtype`` (None when it accepts it)."""
    if bands == 1:
        return "image has 1 band; SegHZ models need RGB (3 bands) imagery"
    if bands not in (3, 4):
        return f"image has {bands} bands; SegHZ needs RGB (3 bands, or 4 with alpha)"
    try:
        dt = np.dtype(dtype)
    except TypeError:
        return f"unsupported pixel type {dtype}"
    if dt != np.uint8 and dt not in _STRETCHED:
        return f"unsupported pixel type {dt}"
    return None


def check_image(path: str | os.PathLike) -> RasterInfo:
    """Check from the file's header alone (no pixels decoded) that :func:`read_image` will take ``path``: it exists,
    has a readable header, a non-zero size and RGB bands of a supported type. Returns its :class:`RasterInfo`.

    Cheap, for checking a whole folder before importing any of it; damaged pixel data (a truncated file) is only
    found by the full read. Raises BadInputError naming the file, with the same wording as the full read."""
    p = Path(path)
    if p.is_dir():
        raise BadInputError(p, "is a folder, not a file (give the image file itself)")
    if p.exists() and p.stat().st_size == 0:
        raise BadInputError(p, "file is empty (0 bytes)")
    info = raster_info(p)
    if info.width == 0 or info.height == 0:
        raise BadInputError(p, "image has zero pixels")
    if _is_tiff(p):
        problem = _rgb_problem(info.count, info.dtype)
    else:
        try:
            with Image.open(p) as im:
                mode = _IMAGE_MODES.get(im.mode, im.mode)
        except _PIL_ERRORS as e:
            raise BadInputError(p, f"not a readable image ({e})") from None
        try:
            bands = Image.getmodebands(mode)
        except KeyError:  # a mode Pillow cannot describe: leave it to the full read
            bands = 3
        problem = _rgb_problem(bands, np.uint8)
    if problem:
        raise BadInputError(p, problem)
    return info


def _read_raw(path: str | os.PathLike, window, what: str, convert: dict[str, str],
              meta: dict | None = None) -> tuple[Path, np.ndarray]:
    """Read a raster file as an array (GeoTIFF via rasterio, else Pillow), converting Pillow modes per ``convert``.

    With ``meta`` (a dict), a single-band file's colour table is put in ``meta["palette"]`` as an (N, 3) uint8 array
    (a GeoTIFF's colour map, or a palette PNG's palette when mode ``P`` is not converted)."""
    p = Path(path)
    if not p.exists():
        raise BadInputError(p, "file does not exist")
    if p.is_dir():
        raise BadInputError(p, f"is a folder, not a file (give the {what} file itself)")
    if p.stat().st_size == 0:
        raise BadInputError(p, "file is empty (0 bytes)")
    if _is_tiff(p):
        arr = _read_tiff(p, window, meta)
    else:
        try:
            with Image.open(p) as im:
                im.load()
                if im.mode in convert:
                    im = im.convert(convert[im.mode])
                elif im.mode == "P" and meta is not None:
                    meta["palette"] = np.asarray(im.getpalette() or [], np.uint8).reshape(-1, 3)
                arr = np.asarray(im)
        except _PIL_ERRORS as e:
            raise BadInputError(p, f"corrupt or truncated {what} ({e})") from None
        except MemoryError:
            raise BadInputError(p, f"{what} header claims more pixels than fit in memory (damaged header?)") from None
        if window is not None:
            r, c, h, w = window
            arr = arr[r : r + h, c : c + w]
    if arr.size == 0 or min(arr.shape[:2]) == 0:
        raise BadInputError(p, f"{what} has zero pixels (shape {arr.shape})")
    return p, arr


_IMAGE_MODES = {"P": "RGBA", "PA": "RGBA", "CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB"}


def read_image(path: str | os.PathLike, window: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Read an RGB image as H×W×3 uint8. ``window`` = (row, col, height, width) reads part of a GeoTIFF.

    Raises BadInputError naming the file for missing, corrupt, truncated, empty or non-RGB files.
    """
    p, arr = _read_raw(path, window, "image", _IMAGE_MODES)
    stretch = tiff_stretch(p) if arr.dtype != np.uint8 and _is_tiff(p) else None
    return _to_rgb8(arr, p, stretch)


def _read_tiff(p: Path, window, meta: dict | None = None) -> np.ndarray:
    import rasterio
    from rasterio.errors import RasterioError
    from rasterio.windows import Window

    try:
        with rasterio.open(p) as ds:
            w = None if window is None else Window(window[1], window[0], window[3], window[2])
            h_, w_ = (ds.height, ds.width) if window is None else (window[2], window[3])
            if h_ * w_ > Image.MAX_IMAGE_PIXELS:
                raise BadInputError(p, f"a {w_}x{h_} px read is over the limit of {Image.MAX_IMAGE_PIXELS} pixels "
                                       "(a damaged header, or imagery to read in windows)")
            data = ds.read(window=w)  # B×H×W
            if meta is not None and ds.count == 1:
                try:
                    cmap = ds.colormap(1)  # {value: (r, g, b, a)}; ValueError when the band has no colour table
                except ValueError:
                    cmap = None
                if cmap:
                    pal = np.zeros((max(cmap) + 1, 3), np.uint8)
                    for v, c in cmap.items():
                        pal[v] = c[:3]
                    meta["palette"] = pal
    except (RasterioError, ValueError, MemoryError) as e:
        if isinstance(e, BadInputError):
            raise
        raise BadInputError(p, f"corrupt or truncated GeoTIFF ({e})") from None
    return data[0] if data.shape[0] == 1 else np.transpose(data, (1, 2, 0))


def verify_tiff(path: str | os.PathLike) -> None:
    """Read every block of a GeoTIFF (one block at a time, so memory stays small) to prove the whole file decodes;
    a truncated or damaged file raises BadInputError naming it. For imports, which otherwise read only a corner."""
    import rasterio
    from rasterio.errors import RasterioError

    p = Path(path)
    try:
        with rasterio.open(p) as ds:
            for _, win in ds.block_windows(1):
                ds.read(window=win)
    except (RasterioError, ValueError) as e:
        raise BadInputError(p, f"corrupt or truncated GeoTIFF ({e})") from None


class TiffReader:
    """Windowed reads from one (Geo)TIFF kept open: the one way SegHZ reads parts of a raster repeatedly (the map
    tiles of :mod:`seghz.geo.tiles`, the validity masks of :mod:`seghz.infer.scene`). Every failure -- a missing,
    empty or unreadable file, damaged or truncated pixel data, a window outside the raster -- raises BadInputError
    naming the file and the problem, as :func:`read_image` does.

    ``window`` = (row, col, height, width), None = the whole raster. Attributes: ``path``, ``width``, ``height``,
    ``count``, ``dtype`` (of band 1), ``nodata``, ``crs`` (a rasterio CRS or None) and ``has_alpha`` (a band is
    marked as alpha). Use as a context manager, or call :meth:`close`."""

    def __init__(self, path: str | os.PathLike):
        import rasterio
        from rasterio.enums import ColorInterp
        from rasterio.errors import RasterioError

        p = Path(path)
        self.path = p
        self._ds = None
        if not p.exists():
            raise BadInputError(p, "file does not exist")
        if p.is_dir():
            raise BadInputError(p, "is a folder, not a file (give the image file itself)")
        if p.stat().st_size == 0:
            raise BadInputError(p, "file is empty (0 bytes)")
        try:
            ds = rasterio.open(p)
        except (RasterioError, ValueError, MemoryError) as e:
            raise BadInputError(p, f"not a readable GeoTIFF ({e})") from None
        self._ds = ds
        self.width, self.height, self.count = ds.width, ds.height, ds.count
        self.dtype = ds.dtypes[0]
        self.nodata = ds.nodata
        self.crs = ds.crs if ds.crs else None
        self.has_alpha = ColorInterp.alpha in ds.colorinterp

    def _window(self, window):
        from rasterio.windows import Window

        if window is None:
            return None
        r, c, h, w = (int(v) for v in window)
        if h <= 0 or w <= 0 or r < 0 or c < 0 or r + h > self.height or c + w > self.width:
            raise BadInputError(self.path, f"window (row {r}, col {c}, {h}x{w} px) is empty or outside the "
                                           f"{self.width}x{self.height} raster")
        return Window(c, r, w, h)

    def _guard(self, what: str, fn):
        from rasterio.errors import RasterioError

        if self._ds is None:
            raise BadInputError(self.path, "the file was already closed")
        try:
            return fn()
        except (RasterioError, ValueError, MemoryError) as e:
            if isinstance(e, BadInputError):
                raise
            why = e.__cause__ or e  # GDAL's own message ("IReadBlock failed at ...") is the cause rasterio wraps
            raise BadInputError(self.path, f"corrupt or truncated GeoTIFF: cannot read {what} ({why})") from None

    def read(self, window=None, bands: int | list[int] | None = None) -> np.ndarray:
        """Raw pixels of ``window``: B×h×w for a list of bands (default: all), h×w for a single band number."""
        win = self._window(window)
        return self._guard(f"band(s) {bands if bands is not None else 'all'}",
                           lambda: self._ds.read(bands, window=win) if bands is not None else self._ds.read(window=win))

    def dataset_mask(self, window=None) -> np.ndarray:
        """h×w uint8 validity of ``window`` (GDAL's dataset mask): 0 = nodata (alpha 0, or every band equal to
        ``nodata``), else 255 -- or the alpha value itself when the file has an alpha band."""
        win = self._window(window)
        return self._guard("the validity mask", lambda: self._ds.dataset_mask(window=win))

    def close(self) -> None:
        if self._ds is not None:
            self._ds.close()
            self._ds = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def palette_layout(palette: np.ndarray | None, scheme: Scheme) -> str | None:
    """How a single-band label file's colour table (an (N, 3) array) lays out ``scheme``'s class colours:

    ``"index"`` -- entries 0..K-1 are the K class colours in class order: the file holds class *indices* (255 =
    nodata/ignore), as SegHZ's own masks do (:func:`write_index_mask`, :func:`write_index_mask_geotiff`,
    ``predict-scene``); ``"id"`` -- entry ``ids[k]`` is the colour of class k: the file holds the scheme's file ids;
    ``"both"`` -- both, which happens exactly when the ids are 0..K-1 (gid15), so ids and indices agree;
    None -- no colour table, or one that is neither (the file is read as before: ids, or colours for a palette PNG).
    """
    if palette is None or len(palette) == 0:
        return None
    pal = np.asarray(palette, np.uint8).reshape(-1, 3)
    colors = np.array(scheme.colors, np.uint8).reshape(-1, 3)
    k = scheme.num_classes
    by_index = len(pal) >= k and bool(np.array_equal(pal[:k], colors))
    ids = np.array(scheme.ids, np.int64)
    by_id = len(pal) > int(ids.max()) and bool(np.array_equal(pal[ids], colors))
    if by_index and by_id:
        return "both"
    return "index" if by_index else "id" if by_id else None


def _indices_to_index(arr: np.ndarray, scheme: Scheme, source: str, also_ids: bool) -> np.ndarray:
    """Check a class-index mask (0..K-1, 255 = ignore; with ``also_ids`` the scheme's unlabelled ids are ignore too)."""
    lut = np.full(256, 256, np.uint16)
    lut[: scheme.num_classes] = np.arange(scheme.num_classes)
    lut[IGNORE] = IGNORE
    if also_ids:
        for u in scheme.unlabelled_ids:
            lut[u] = IGNORE
    if arr.dtype != np.uint8:
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise BadInputError(source, f"label values must be 0..255, found {arr.min()}..{arr.max()}")
        arr = arr.astype(np.uint8)
    out = lut[arr]
    bad = out == 256
    if bad.any():
        ys, xs = np.nonzero(bad)
        vals = sorted(np.unique(arr[bad]).tolist())
        raise BadInputError(
            source,
            f"{int(bad.sum())} pixel(s) hold value(s) {vals[:10]} that are not class indices 0..{scheme.num_classes - 1} "
            f"of scheme '{scheme.name}' or 255 (nodata); the file's colour table marks it as a class-index mask "
            f"(entries 0..{scheme.num_classes - 1} are the scheme's colours in class order); first at row {ys[0]}, "
            f"col {xs[0]}",
        )
    return out.astype(np.uint8)


def read_label(path: str | os.PathLike, scheme: Scheme, window=None) -> np.ndarray:
    """Read a label file into class indices of ``scheme`` (uint8, 255 = ignore).

    Single-band files hold the scheme's file ids, unless a GeoTIFF's colour table says otherwise
    (:func:`palette_layout`): entries 0..K-1 in the scheme's class colours mark a class-*index* mask (what SegHZ
    writes: exported labels, ``predict-scene`` outputs; 255 = ignore); entries at the scheme's ids in its colours
    mark an id mask. Palette PNGs are decoded by colour, like RGB files (their palette says what each value means,
    including a nodata value drawn black), and RGB files are palette masks decoded by exact colour.
    """
    if Path(path).suffix.lower() in (".jpg", ".jpeg"):
        raise BadInputError(path, "a label cannot be a JPEG: lossy compression changes class ids and colours along "
                                  "every edge; save the label as PNG or TIFF")
    meta: dict = {}
    p, arr = _read_raw(path, window, "label image", {}, meta)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    pal = meta.get("palette")
    if arr.ndim == 2 and pal is not None:
        if not _is_tiff(p):  # a palette PNG: by colour, as ever (SegHZ's own index PNGs decode the same way)
            full = np.zeros((256, 3), np.uint8)
            full[: min(len(pal), 256)] = pal[:256]
            return scheme.decode_rgb(full[arr], source=str(p))
        layout = palette_layout(pal, scheme)
        if layout in ("index", "both"):
            return _indices_to_index(arr, scheme, str(p), also_ids=layout == "both")
    if arr.ndim == 2:
        return scheme.ids_to_index(arr, source=str(p))
    return scheme.decode_rgb(arr, source=str(p))


def read_index_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a workspace class-index mask (single-band uint8 PNG written by :func:`write_index_mask`)."""
    p = Path(path)
    try:
        with Image.open(p) as im:
            im.load()
            arr = np.asarray(im)
    except _PIL_ERRORS as e:
        raise BadInputError(p, f"cannot read mask ({e})") from None
    if arr.ndim != 2:
        raise BadInputError(p, f"workspace mask must be single-band, got shape {arr.shape}")
    return arr.astype(np.uint8)


@contextlib.contextmanager
def atomic_target(path: str | os.PathLike, suffix: str = ".tmp", fsync: bool = True):
    """Yield a temporary path next to ``path``; when the block ends without error the file is fsynced, given mode
    0644 and renamed onto ``path`` (then the folder is fsynced); on any error it is removed and ``path`` is left as
    it was. The one way SegHZ replaces a file (labels, masks, checkpoints, training states).

    An OSError on the way (disk full, quota, read-only folder) is raised as :class:`WriteError` naming ``path``."""
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=suffix, dir=p.parent)
        os.close(fd)
    except OSError as e:
        raise _write_error(p, e) from e
    try:
        yield Path(tmp)
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, p)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and not isinstance(e, WriteError):
            raise _write_error(p, e) from e
        raise
    if fsync:
        try:
            dfd = os.open(p.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            pass


def _write_error(p: Path, e: OSError) -> WriteError:
    why = e.strerror or str(e) or type(e).__name__
    prev = "the previous file is unchanged" if p.exists() else "nothing was written"
    return WriteError(e.errno, f"cannot write {p}: {why}; {prev}")


def atomic_write_bytes(path: str | os.PathLike, data: bytes, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` atomically: temp file in the same folder, fsync (unless ``fsync=False``, for
    rebuildable caches such as map tiles), rename."""
    with atomic_target(path, fsync=fsync) as tmp:
        tmp.write_bytes(data)


def _png_bytes(arr: np.ndarray, palette: np.ndarray | None = None) -> bytes:
    import io

    im = Image.fromarray(arr)
    if palette is not None and arr.ndim == 2:
        im = im.convert("P")
        im.putpalette(palette.astype(np.uint8).ravel().tolist())
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def write_index_mask(path: str | os.PathLike, mask: np.ndarray, scheme: Scheme | None = None) -> None:
    """Atomically write a class-index mask as single-band PNG (palette PNG in scheme colours if given)."""
    mask = np.asarray(mask, np.uint8)
    atomic_write_bytes(path, _png_bytes(mask, scheme.palette() if scheme is not None else None))


RGB_PNG_COMPRESS_LEVEL = 1  # zlib level of write_rgb's PNGs: lossless at any level; 1 is ~3x faster than the
# default 6 on photos (a 2149x1479 Dubai tile: 0.34 s instead of 1.06 s) for about the same size


def write_rgb(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Atomically write an RGB uint8 image (PNG or JPEG by suffix). PNGs use fast, lossless compression
    (:data:`RGB_PNG_COMPRESS_LEVEL`)."""
    import io

    p = Path(path)
    buf = io.BytesIO()
    im = Image.fromarray(np.asarray(rgb, np.uint8))
    if p.suffix.lower() in (".jpg", ".jpeg"):
        im.save(buf, format="JPEG", quality=92)
    else:
        im.save(buf, format="PNG", compress_level=RGB_PNG_COMPRESS_LEVEL)
    atomic_write_bytes(p, buf.getvalue())


def list_pairs(images: str | os.PathLike, labels: str | os.PathLike) -> list[tuple[Path, Path]]:
    """Pair files in two folders by stem. Raises for empty folders, a file of either folder without a partner in
    the other (a label whose image is missing, or in a format not read, is a mistake too: nothing would score it),
    and two files of one folder with the same stem (``x.png`` and ``x.jpg``: which one is meant?)."""
    di, dl = Path(images), Path(labels)
    for d in (di, dl):
        if not d.is_dir():
            raise BadInputError(d, "folder does not exist")
    exts = "/".join(sorted({e.lstrip(".") for e in IMAGE_EXT}))

    def by_stem(d: Path) -> dict[str, Path]:
        out: dict[str, Path] = {}
        for p in sorted(d.iterdir()):
            if p.suffix.lower() not in IMAGE_EXT or not p.is_file():
                continue
            if p.stem in out:
                raise BadInputError(d, f"two files have the stem '{p.stem}' ({out[p.stem].name} and {p.name}); "
                                       "keep one, files are paired by stem")
            out[p.stem] = p
        return out

    imgs, lbls = by_stem(di), by_stem(dl)
    if not imgs:
        raise BadInputError(di, f"folder holds no images ({exts})")
    if not lbls:
        raise BadInputError(dl, "folder holds no label files (.png/.tif)")
    missing = sorted(set(imgs) - set(lbls))
    if missing:
        raise BadInputError(dl, f"{len(missing)} image(s) have no label with the same stem, e.g. '{missing[0]}'")
    jpeg = [p for p in lbls.values() if p.suffix.lower() in (".jpg", ".jpeg")]
    if jpeg:
        raise BadInputError(jpeg[0], f"a label cannot be a JPEG ({len(jpeg)} in this folder): lossy compression "
                                     "changes class ids and colours along every edge; save the labels as PNG or TIFF")
    orphans = sorted(set(lbls) - set(imgs))
    if orphans:
        raise BadInputError(di, f"{len(orphans)} label(s) have no image with the same stem, e.g. "
                                f"'{lbls[orphans[0]].name}' (images are read from {exts} files)")
    return [(imgs[s], lbls[s]) for s in sorted(imgs)]


def read_pair(image: Path, label: Path, scheme: Scheme) -> tuple[np.ndarray, np.ndarray]:
    """Read an image and its label, checking that their sizes agree."""
    img = read_image(image)
    lbl = read_label(label, scheme)
    if img.shape[:2] != lbl.shape:
        raise BadInputError(
            label, f"label size {lbl.shape[1]}x{lbl.shape[0]} differs from image {image.name} size {img.shape[1]}x{img.shape[0]}"
        )
    return img, lbl


def class_band_tags(scheme: Scheme) -> dict[str, str]:
    """The band tags every class GeoTIFF SegHZ writes carries, so a GIS (``gdalinfo``, QGIS, rasterio's
    ``tags(1)``) tells what the indices mean: ``scheme`` and ``classes`` (the names in index order, comma-joined)."""
    return {"scheme": scheme.name, "classes": ",".join(scheme.names)}


def write_index_mask_geotiff(
    path: str | os.PathLike,
    mask: np.ndarray,
    crs: str | None = None,
    transform: tuple[float, ...] | None = None,
    scheme: Scheme | None = None,
    tags: dict[str, Any] | None = None,
) -> None:
    """Atomically write a class-index mask as a single-band uint8 GeoTIFF (deflate, nodata 255) with ``crs``
    and the affine ``transform`` (a, b, c, d, e, f) when given, a colour map in ``scheme`` colours and the band
    named "class" with :func:`class_band_tags`; ``tags`` (e.g. the checkpoint and TTA that made a prediction, the
    scene and label version of an exported label) become dataset tags, ``SEGHZ_<KEY>=value``, with the scheme and
    the UTC time of writing (``SEGHZ_SCHEME``, ``SEGHZ_WRITTEN_AT``)."""
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning
    from rasterio.transform import Affine

    mask = np.asarray(mask, np.uint8)
    if mask.ndim != 2:
        raise ValueError(f"index mask must be 2-D, got shape {mask.shape}")
    profile = {"driver": "GTiff", "width": mask.shape[1], "height": mask.shape[0], "count": 1, "dtype": "uint8",
               "nodata": 255, "compress": "deflate"}
    if crs:
        profile["crs"] = crs
    if transform is not None:
        profile["transform"] = Affine(*[float(v) for v in transform][:6])
    with atomic_target(path, suffix=".tmp.tif") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(tmp, "w", **profile) as ds:
            ds.write(mask, 1)
            ds.set_band_description(1, "class")
            if scheme is not None:
                ds.write_colormap(1, {i: (*map(int, c), 255) for i, c in enumerate(scheme.colors)})
                ds.update_tags(1, **class_band_tags(scheme))
            from datetime import UTC, datetime

            written = {"scheme": scheme.name if scheme is not None else None, **(tags or {}),
                       "written_at": datetime.now(UTC).isoformat(timespec="seconds")}
            ds.update_tags(**{f"SEGHZ_{str(k).upper()}": str(v) for k, v in written.items() if v is not None})
