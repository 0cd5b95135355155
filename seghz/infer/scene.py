"""Whole-scene prediction of huge rasters with bounded memory, written straight into a GeoTIFF.

The scene is streamed through :meth:`Predictor.stream` one window row at a time: each window row is
read through :func:`seghz.data.io.read_image` (a strip ``tile`` rows tall, the full width), run through
the model window by window and blended into per-column-block buffers; each column block is finished
and written into the output GeoTIFF as soon as the last window of the row touching it is blended, and
only its rows shared with the next window row (the overlap) are kept. The whole scene is never held in
memory (peak ≈ (classes + 3) × 4 bytes × (tile × (tile + stride) + carried overlap rows × width) of
buffers, plus the uint8 window row read, plus the model, plus a ≤ 4096 px preview when a PNG is asked
for), no pixel is computed twice beyond the windows' own overlap, and the result equals
:meth:`Predictor.predict_full` on the whole image bit for bit.

Output: band 1 uint8 class index with the scheme's colour table, 255 = nodata (set as the file's
nodata), tiled + deflate, CRS and transform copied from a georeferenced input. With
``uncertainty=True`` a second float32 file ``<output stem>_uncertainty.tif`` holds confidence,
entropy and view disagreement (NaN = nodata). Files are written under a temporary name next to the
output and renamed at the very end, so a crash or cancel never leaves a file that looks complete.

Nodata: source pixels whose dataset mask is 0 (alpha band == 0, or every band equal to the source's
nodata value) and, for 4-band inputs, pixels whose 4th band is 0 are predicted as 255; windows with no
valid pixel are not run. Sources are read only through :mod:`seghz.data.io` (pixels with
:func:`~seghz.data.io.read_image`, masks with :class:`~seghz.data.io.TiffReader`); this module opens rasters
with rasterio only to write the output.

Distributed (``world_size > 1``, e.g. under torchrun with ``torch.distributed`` initialised): each rank
takes a contiguous run of window rows (:func:`seghz.infer.engine.shard_rows`), streams the window rows
touching them exactly as one process would, and saves its finished blocks as ``.npy`` files in a shared
parts folder next to the output; rank 0 assembles the final files in row order after every rank has
reported success, so the result equals the one-process output bit for bit.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import math
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from seghz.classes import Scheme, get_scheme, scheme_names
from seghz.data.io import TIFF_EXT, TiffReader, atomic_write_bytes, class_band_tags, raster_info, read_image, write_rgb
from seghz.errors import BadInputError, SegHZError
from seghz.geo.tiles import pixel_area_m2
from seghz.infer.engine import Cancelled, Predictor, shard_rows
from seghz.infer.region import class_areas, window_transform

PNG_MAX_SIDE = 4096
GDAL_CACHE_MB = 64  # GDAL block cache while predicting a scene (MB)
NODATA = 255
UNCERTAINTY_BANDS = ("confidence", "entropy", "disagreement")


class SceneError(SegHZError, ValueError):
    """Bad settings for a scene prediction (rank, scheme)."""


def resolve_scheme(predictor: Predictor, scheme: Scheme | str | None) -> Scheme:
    """The class scheme of a prediction: ``scheme`` (a Scheme or a registered scheme's name) when given, else the
    predictor's own (:attr:`Predictor.scheme`, which :meth:`Predictor.from_checkpoint` takes from the checkpoint
    metadata via :func:`seghz.models.checkpoint.checkpoint_scheme`). It is never guessed from the class count
    (several schemes share one: hz7 and loveda both have 7 classes). Raises SceneError when it cannot be known,
    when a name is not registered, when its class count differs from the model's, or when a given scheme names
    other classes than the checkpoint's."""
    own = getattr(predictor, "scheme", None)
    if isinstance(scheme, str):
        try:
            scheme = get_scheme(scheme)
        except KeyError:
            raise SceneError(f"unknown class scheme '{scheme}' (known: {', '.join(scheme_names())})") from None
    if scheme is None:
        scheme = own
    k = predictor.num_classes
    if scheme is None:
        same = [n for n in scheme_names() if get_scheme(n).num_classes == k]
        hint = f" ({k} classes could be any of: {', '.join(same)})" if same else ""
        raise SceneError(f"the class scheme of this {k}-class model is not known{hint}: pass scheme=..., or load the "
                         "model with Predictor.from_checkpoint, whose metadata names its scheme")
    if scheme.num_classes != k:
        raise SceneError(f"scheme '{scheme.name}' has {scheme.num_classes} classes, the model {k}")
    if own is not None and tuple(own.names) != tuple(scheme.names):
        raise SceneError(f"scheme '{scheme.name}' names other classes than the model's checkpoint scheme "
                         f"'{own.name}' ({', '.join(scheme.names)} vs {', '.join(own.names)})")
    return scheme


def uncertainty_path(output: str | os.PathLike) -> Path:
    p = Path(output)
    return p.with_name(p.stem + "_uncertainty" + p.suffix)


class _Masks:
    """Validity masks of the source raster (alpha / nodata); None where the source has none. Read through
    :class:`seghz.data.io.TiffReader`, so a damaged file raises BadInputError naming it."""

    def __init__(self, path: Path, count: int):
        self.reader: TiffReader | None = None
        if Path(path).suffix.lower() not in TIFF_EXT:
            return
        reader = TiffReader(path)
        if reader.nodata is None and not (reader.has_alpha or count == 4):
            reader.close()
            return
        self.reader = reader
        self.count = count

    def read(self, window: tuple[int, int, int, int]) -> np.ndarray | None:
        if self.reader is None:
            return None
        valid = self.reader.dataset_mask(window) != 0
        if self.count == 4:
            valid &= self.reader.read(window, 4) != 0
        return valid

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None


class _Writer:
    """Writes block results into the (temporary) output files and gathers counts and the preview."""

    def __init__(self, output: Path, info, scheme: Scheme | None, nc: int, uncertainty: bool, png: bool,
                 tags: dict | None = None):
        import rasterio
        from rasterio.errors import NotGeoreferencedWarning

        self.output, self.info, self.nc = output, info, nc
        self.tmp: list[Path] = []
        self.counts = np.zeros(256, np.int64)
        H, W = info.height, info.width
        prof = {"driver": "GTiff", "width": W, "height": H, "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate"}
        if info.georeferenced:
            from affine import Affine

            prof.update(crs=info.crs, transform=Affine(*info.transform))
        self.ds = self.unc = None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                t = self._tmp(output)
                self.ds = rasterio.open(t, "w", count=1, dtype="uint8", nodata=NODATA, **prof)
                self.ds.set_band_description(1, "class")
                pal = scheme.palette() if scheme is not None else np.zeros((256, 3), np.uint8)
                self.ds.write_colormap(1, {i: (*map(int, pal[i]), 255) for i in range(256)})
                if scheme is not None:
                    self.ds.update_tags(1, **class_band_tags(scheme))
                from datetime import UTC, datetime

                # dataset tags as write_index_mask_geotiff writes them (the Map page's export): SEGHZ_<KEY>=value
                written = {"scheme": scheme.name if scheme is not None else None, **(tags or {}),
                           "written_at": datetime.now(UTC).isoformat(timespec="seconds")}
                self.ds.update_tags(**{f"SEGHZ_{str(k).upper()}": str(v) for k, v in written.items() if v is not None})
                if uncertainty:
                    t = self._tmp(uncertainty_path(output))
                    self.unc = rasterio.open(t, "w", count=3, dtype="float32", nodata=float("nan"), predictor=3, **prof)
                    for i, n in enumerate(UNCERTAINTY_BANDS, 1):
                        self.unc.set_band_description(i, n)
        except BaseException:
            self.abort()
            raise
        self.step = max(1, math.ceil(max(H, W) / PNG_MAX_SIDE))
        self.preview = np.full((math.ceil(H / self.step), math.ceil(W / self.step)), NODATA, np.uint8) if png else None

    def _tmp(self, final: Path) -> Path:
        fd, t = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
        os.close(fd)
        self.tmp.append(Path(t))
        return Path(t)

    def put(self, win: tuple[int, int, int, int], mask: np.ndarray, unc: np.ndarray | None) -> None:
        from rasterio.windows import Window

        r, c, h, w = win
        rw = Window(c, r, w, h)
        self.ds.write(mask, 1, window=rw)
        if self.unc is not None:
            self.unc.write(unc, window=rw)
        self.counts += np.bincount(mask.ravel(), minlength=256)
        if self.preview is not None:
            s = self.step
            r0, c0 = (-r) % s, (-c) % s
            sub = mask[r0::s, c0::s]
            self.preview[(r + r0) // s : (r + r0) // s + sub.shape[0], (c + c0) // s : (c + c0) // s + sub.shape[1]] = sub

    def finish(self) -> None:
        """Close and rename the temporary files onto their final names (uncertainty first, class map last)."""
        self.ds.close()
        if self.unc is not None:
            self.unc.close()
            os.chmod(self.tmp[1], 0o644)
            os.replace(self.tmp[1], uncertainty_path(self.output))
        os.chmod(self.tmp[0], 0o644)
        os.replace(self.tmp[0], self.output)
        self.tmp = []

    def abort(self) -> None:
        for d in (self.ds, self.unc):
            if d is not None:
                with contextlib.suppress(Exception):  # best-effort cleanup
                    d.close()
        for t in self.tmp:
            t.unlink(missing_ok=True)
        self.tmp = []


def _dist():
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise SegHZError("world_size > 1 needs torch.distributed to be initialised (run under torchrun)")
    return dist


def _all_ok(ok: bool, world_size: int) -> bool:
    """True when every rank reports success (a collective: every rank must call it)."""
    if world_size == 1:
        return ok
    import torch

    dist = _dist()
    t = torch.tensor([0 if ok else 1], dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item()) == 0


def predict_scene(predictor: Predictor, input_path: str | os.PathLike, output_path: str | os.PathLike, **kw) -> dict:
    """Predict a whole raster window row by window row into a class-index GeoTIFF; returns a summary dict.

    Keyword arguments: ``tta``, ``uncertainty``, ``png``, ``areas_csv``, ``scheme``, ``progress``,
    ``should_cancel``, ``rank``, ``world_size``, ``window``, ``tags`` (see :func:`_predict_scene`). GDAL's block cache is capped at
    ``GDAL_CACHE_MB`` while it runs (GDAL's default allows 5 % of the machine's RAM), so the open output file
    cannot hold more than that of cached blocks.
    """
    import rasterio

    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
        return _predict_scene(predictor, input_path, output_path, **kw)


def _predict_scene(
    predictor: Predictor,
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    *,
    tta="none",
    uncertainty: bool = False,
    png: str | os.PathLike | None = None,
    areas_csv: str | os.PathLike | None = None,
    scheme: Scheme | str | None = None,
    progress: Callable[[float, str], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    rank: int = 0,
    world_size: int = 1,
    window: tuple[int, int, int, int] | None = None,
    tags: dict | None = None,
) -> dict:
    """The body of :func:`predict_scene`.

    ``tags`` (e.g. the checkpoint and TTA that made the prediction) become dataset tags ``SEGHZ_<KEY>=value`` of
    the class GeoTIFF, with ``SEGHZ_SCHEME`` and ``SEGHZ_WRITTEN_AT``, as the Map page's export writes them.

    ``window`` = ``(row, col, height, width)`` predicts only that part of the raster (streamed the same way); the
    output then covers the window, with the window's transform (e.g. a Map-page region too big to predict inline).

    ``scheme`` (a Scheme or its name; default: the predictor's checkpoint scheme, see :func:`resolve_scheme`;
    SceneError when neither is known) gives the colour table, class names of the CSV and the PNG colours. Raises
    :class:`Cancelled` when ``should_cancel()`` turns true; no output or temporary file is left behind
    then (nor on any other error).
    """
    t0 = time.time()
    src, out = Path(input_path), Path(output_path)
    if out.suffix.lower() not in TIFF_EXT:
        raise BadInputError(out, "the output must be a GeoTIFF (.tif or .tiff)")
    info = src_info = raster_info(src)
    wr = wc = 0
    if window is not None:
        wr, wc, wh, ww = (int(v) for v in window)
        if wh <= 0 or ww <= 0 or wr < 0 or wc < 0 or wr + wh > info.height or wc + ww > info.width:
            raise BadInputError(src, f"window {tuple(window)} is empty or outside the {info.width}x{info.height} raster")
        info = dataclasses.replace(info, width=ww, height=wh,
                                   transform=window_transform(info.transform, window) if info.transform else None)
    if info.count not in (3, 4):
        raise BadInputError(src, f"image has {info.count} band(s); SegHZ needs RGB (3 bands, or 4 with alpha)")
    scheme = resolve_scheme(predictor, scheme)
    names = list(scheme.names)
    if not 0 <= rank < world_size:
        raise SceneError(f"rank {rank} outside world_size {world_size}")
    if world_size > 1:
        _dist()
    out.parent.mkdir(parents=True, exist_ok=True)

    H, W = info.height, info.width
    y0, y1 = shard_rows(H, int(predictor.tile), predictor.overlap, rank, world_size)
    parts = out.with_name(f".{out.name}.parts")
    writer: _Writer | None = None
    masks = _Masks(src, src_info.count)

    def read(r0: int, r1: int):
        win = (wr + r0, wc, r1 - r0, W)
        return read_image(src, window=win), masks.read(win)

    err: BaseException | None = None
    strips = 0
    try:
        if world_size == 1:
            writer = _Writer(out, info, scheme, predictor.num_classes, uncertainty, png is not None, tags)
        else:
            parts.mkdir(exist_ok=True)
        msg = (lambda f, m: progress(f, f"rows {y0}–{y1 - 1} of {H}: {m}")) if progress is not None else None
        if y0 < y1:
            for st in predictor.stream(H, W, read, tta, rows=(y0, y1), progress=msg, should_cancel=should_cancel,
                                       uncertainty=uncertainty, blocks=True):
                res = st.result()
                unc = np.stack([res.confidence, res.entropy, res.disagreement]).astype(np.float32) if uncertainty else None
                win = (st.y0, st.x0, st.y1 - st.y0, st.x1 - st.x0)
                if writer is not None:
                    writer.put(win, res.mask, unc)
                else:
                    np.save(parts / f"{st.y0:010d}_{st.x0:010d}.mask.npy", res.mask)
                    if unc is not None:
                        np.save(parts / f"{st.y0:010d}_{st.x0:010d}.unc.npy", unc)
                strips += 1
                if should_cancel is not None and should_cancel():
                    raise Cancelled("scene prediction cancelled")
    except BaseException as e:  # noqa: BLE001 - re-raised below after cleanup (and after the other ranks know)
        err = e
    finally:
        masks.close()
    if world_size > 1:
        ok = _all_ok(err is None, world_size)
        if ok and rank == 0:
            try:
                writer = _Writer(out, info, scheme, predictor.num_classes, uncertainty, png is not None, tags)
                for f in sorted(parts.glob("*.mask.npy")):  # row-major: y0 then x0 (zero-padded names)
                    key = f.name.split(".")[0]
                    r, c = (int(v) for v in key.split("_"))
                    mask = np.load(f)
                    unc = np.load(parts / f"{key}.unc.npy") if uncertainty else None
                    writer.put((r, c, *mask.shape), mask, unc)
            except BaseException as e:  # noqa: BLE001
                err = e
        if not ok and err is None:
            err = SegHZError(f"scene prediction failed on another rank; no output written ({out})")
        ok = _all_ok(err is None, world_size)  # every rank finished reading/writing the parts
        if rank == 0:
            shutil.rmtree(parts, ignore_errors=True)
        if not ok and err is None:
            err = SegHZError(f"scene prediction failed on another rank; no output written ({out})")
    if err is not None:
        if writer is not None:
            writer.abort()
        raise err

    summary = {
        "input": str(src), "output": str(out) if rank == 0 else None, "width": W, "height": H,
        "crs": info.crs, "transform": list(info.transform) if info.transform else None, "tile": int(predictor.tile),
        "overlap": predictor.overlap, "rows_this_rank": [y0, y1], "strips_this_rank": strips,
        "tta": tta if isinstance(tta, str) else list(tta), "rank": rank, "world_size": world_size,
        "scheme": scheme.name if scheme is not None else None, "batch_size": predictor.batch_size,
        "compiled": bool(predictor.compile and predictor.compile_error is None),
        "compile_seconds": round(predictor.compile_seconds, 3),
    }
    if writer is None:  # ranks > 0 of a distributed run
        summary["seconds"] = round(time.time() - t0, 3)
        return summary
    try:
        counts = writer.counts
        area = pixel_area_m2(info, H / 2, W / 2)
        rows = _areas(counts, names, area)
        if areas_csv is not None:
            buf = io.StringIO()
            wr = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
            wr.writeheader()
            wr.writerows(rows)
            atomic_write_bytes(areas_csv, buf.getvalue().encode())
        if png is not None:
            pal = scheme.palette() if scheme is not None else np.zeros((256, 3), np.uint8)
            write_rgb(png, pal[writer.preview])
        writer.finish()
    except BaseException:
        writer.abort()
        raise
    summary.update(
        valid_pixels=int(counts[: len(names)].sum()), nodata_pixels=int(counts[NODATA]), pixel_area_m2=area, areas=rows,
        uncertainty=str(uncertainty_path(out)) if uncertainty else None, png=str(png) if png is not None else None,
        areas_csv=str(areas_csv) if areas_csv is not None else None, seconds=round(time.time() - t0, 3),
    )
    return summary


def _areas(counts: np.ndarray, names: list[str], pixel_area: float | None) -> list[dict]:
    """Class-area rows from whole-scene pixel counts, via :func:`class_areas` on a tiny stand-in mask.

    ``class_areas`` counts a mask; a one-row mask holding each class once is weighted back to the
    scene's counts so the row layout (class, pixels, percent, km2) stays that of region.py.
    """
    rows = class_areas(np.arange(len(names), dtype=np.uint8)[None], names, pixel_area)
    c = counts[: len(names)].astype(np.int64)
    total = max(int(c.sum()), 1)
    for i, row in enumerate(rows):
        row["pixels"] = int(c[i])
        row["percent"] = 100.0 * float(c[i]) / total
        if pixel_area is not None:
            row["km2"] = float(c[i]) * pixel_area / 1e6
    return rows


__all__ = ["NODATA", "UNCERTAINTY_BANDS", "SceneError", "predict_scene", "resolve_scheme", "uncertainty_path"]
