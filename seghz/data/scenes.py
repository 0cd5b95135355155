"""Bringing imagery into a workspace: GeoTIFFs, image+label pairs, whole folders, and the demo scenes.

Files are copied into ``<workspace>/scenes/<id>/``; labels are stored as class-index PNGs of the scene's
scheme (the original, never modified). Label files may be id masks or RGB palette masks (decoded by
exact colour) and can be crosswalked to another scheme on import.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from seghz.classes import get_scheme, index_crosswalk
from seghz.data.io import raster_info, read_image, read_label, verify_tiff, write_index_mask, write_rgb
from seghz.data.splits import content_key
from seghz.errors import BadInputError, DuplicateImportError, SegHZError
from seghz.store import Scene, Workspace, slugify

Progress = Callable[[float, str], None]
log = logging.getLogger(__name__)


def _folder_in_use(ws: Workspace, sid: str) -> bool:
    """Whether scene id ``sid`` is registered, or a registered scene keeps a file in ``scenes/<sid>/`` (a workspace
    from before imports reserved their folder could have a scene ``x-2`` whose files lie in ``scenes/x/``)."""
    prefix = f"scenes/{sid}/"
    with ws.connect() as conn:
        return conn.execute(
            "SELECT 1 FROM scenes WHERE id = ? OR substr(image_path, 1, ?) = ? OR substr(COALESCE(label_path, ''), 1, ?) "
            "= ? LIMIT 1", (sid, len(prefix), prefix, len(prefix), prefix)).fetchone() is not None


def _try_reserve(ws: Workspace, sid: str):
    """The open, exclusively flock'ed reservation file ``scenes/.<sid>.import`` of ``sid``, or None when another
    import (of this or another process) holds it. The path is checked to still name the locked file afterwards (a
    finishing import removes its reservation file, so a stale handle could lock a file that is gone)."""
    path = ws.root / "scenes" / f".{sid}.import"
    while True:
        fh = open(path, "a+b")  # noqa: SIM115 - held open for the whole import, closed by _release
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            return None
        try:
            same = os.stat(path).st_ino == os.fstat(fh.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fh
        fh.close()  # we locked a reservation file its owner had just removed: try the path again


def _release(ws: Workspace, sid: str, fh) -> None:
    with contextlib.suppress(FileNotFoundError):
        (ws.root / "scenes" / f".{sid}.import").unlink()  # while still locked: see _try_reserve
    fh.close()


@contextlib.contextmanager
def _scene_dir(ws: Workspace, name: str) -> Iterator[tuple[str, Path]]:
    """Reserve a free scene id (a slug of ``name``, then ``-2``, ``-3``...) and its new, empty folder
    ``scenes/<id>/`` for one import; the ``with`` block writes the files and registers the scene under that id.

    The reservation is an exclusive ``flock`` on ``scenes/.<id>.import``, held until the block ends (the kernel drops
    it when the process dies), so two imports of the same name -- two processes, or threads -- never share a
    folder: the second takes the next suffix. A folder whose id is free in the index, that no scene refers to and
    whose reservation nobody holds is what an interrupted import left: it is removed and the id reused. When the
    block raises, the folder is removed before the reservation is released.
    """
    base = slugify(name, "scene")
    with ws.connect() as conn:
        taken = {r[0] for r in conn.execute("SELECT id FROM scenes WHERE id = ? OR id LIKE ?", (base, base + "-%"))}
    n = 1
    while True:
        sid = base if n == 1 else f"{base}-{n}"
        n += 1
        if sid in taken:
            continue
        fh = _try_reserve(ws, sid)
        if fh is None:  # another import is writing this folder right now
            continue
        if _folder_in_use(ws, sid):  # registered since we looked, or a scene's files live there
            _release(ws, sid, fh)
            continue
        break
    d = ws.root / "scenes" / sid
    try:
        if d.exists():  # orphan of an interrupted import: unregistered, unreferenced, unreserved
            shutil.rmtree(d)
        d.mkdir()
        try:
            yield sid, d
        except BaseException:
            shutil.rmtree(d, ignore_errors=True)
            raise
    finally:
        _release(ws, sid, fh)


SOURCE_RECORD = "source.json"  # in a scene folder imported from one image file: its name and content SHA-1


def _source_record(image: Path, sha: str, source: str, label: str | Path | None) -> bytes:
    """The ``source.json`` of a scene imported from ``image``: its content SHA-1 and name, the recorded source and,
    when known, the label file (path and content SHA-1) -- what a later import compares a pair with."""
    rec = {"sha1": sha, "name": Path(image).name, "source": source}
    if label is not None:
        rec.update(label=str(_source_key(str(label)) or label), label_sha1=content_key(Path(label)))
    return json.dumps(rec).encode()


def read_source_record(ws: Workspace, sc: Scene) -> dict:
    """A scene's ``source.json`` (:data:`SOURCE_RECORD`) as a dict; ``{}`` when it has none (scenes imported before it
    was written for every import) or it cannot be read."""
    rec = ws.scene_path(sc, "image").parent / SOURCE_RECORD
    try:
        out = json.loads(rec.read_text()) if rec.is_file() else {}
    except (OSError, ValueError):
        return {}
    return out if isinstance(out, dict) else {}


class ImportIndex:
    """Which scenes (of ``scheme``, or all) already hold which image, for imports to recognise a pair they have.

    A scene with a recorded content SHA-1 (``source.json``) is matched by content: any file name, any folder. An
    older scene without one is matched by its recorded source path, or by the content of the file at that path when
    it is still there (hashed lazily, only for files of the incoming file's size)."""

    def __init__(self, ws: Workspace, scheme: str | None = None):
        self.by_sha: dict[str, Scene] = {}
        self.by_path: dict[str, Scene] = {}
        self._legacy: dict[int, list[tuple[Path, Scene]]] = {}  # file size -> (source file, scene) of older scenes
        self._hashed: dict[Path, str] = {}
        for sc in ws.list_scenes():
            if scheme is not None and sc.scheme != scheme:
                continue
            sha = read_source_record(ws, sc).get("sha1")
            if isinstance(sha, str) and sha:
                self.by_sha.setdefault(sha, sc)
                continue
            key = _source_key(sc.source)
            if key is None:
                continue
            self.by_path.setdefault(key, sc)
            with contextlib.suppress(OSError):
                p = Path(key)
                if p.is_file():
                    self._legacy.setdefault(p.stat().st_size, []).append((p, sc))

    def find(self, path: str | Path, sha: str | None = None) -> tuple[Scene, str] | None:
        """``(scene, how it is known)`` of the scene holding the image file ``path`` (content SHA-1 ``sha``, default
        computed), or None."""
        p = Path(path)
        sha = sha or content_key(p)
        if sha in self.by_sha:
            return self.by_sha[sha], "the same image content"
        key = _source_key(str(p))
        if key is not None and key in self.by_path:
            return self.by_path[key], "the same source path"
        try:
            size = p.stat().st_size
        except OSError:
            return None
        for src, sc in self._legacy.get(size, []):
            if src not in self._hashed:
                try:
                    self._hashed[src] = content_key(src)
                except OSError:
                    self._hashed[src] = ""
            if self._hashed[src] == sha:
                return sc, f"the same image content as {src}, the file it was imported from"
        return None


def label_difference(ws: Workspace, sc: Scene, lbl: np.ndarray | None) -> str | None:
    """None when scene ``sc``'s original label (version 0, before any edit) is ``lbl`` (class indices of the scene's
    scheme; None = no label file, which never conflicts: the image alone is nothing new); else how it differs."""
    if lbl is None:
        return None
    if not sc.label_path:
        return "the scene has no label"
    have = ws.effective_label(sc.id, version=0)
    if have.shape != lbl.shape:
        return f"its label is {have.shape[1]}x{have.shape[0]} px, this one {lbl.shape[1]}x{lbl.shape[0]} px"
    n = int(np.count_nonzero(have != lbl))
    return None if n == 0 else f"{n:,} of {lbl.size:,} px ({100 * n / lbl.size:.1f} %) differ"


def scene_label_origin(ws: Workspace, sc: Scene) -> str:
    """Where scene ``sc``'s original label came from, in words: the label file recorded at import, else its source."""
    if not sc.label_path:
        return "no label"
    rec = read_source_record(ws, sc)
    if rec.get("label"):
        return f"label from {rec['label']}"
    return f"label imported with {sc.source} (label file not recorded)"


class LabelConflictError(DuplicateImportError):
    """The image of a pair is already a scene's, but with another label: importing it would put one picture in the
    workspace twice (possibly in two splits) with two labels. Names the scene, its label and how they differ."""

    def __init__(self, source, label: Path | None, ws: Workspace, sc: Scene, how: str, differs: str):
        self.source, self.scene_id, self.scene_name = str(source), sc.id, sc.name
        self.label, self.differs = label, differs
        SegHZError.__init__(self, conflict_text(str(source), label, ws, sc, how, differs)
                            + "; nothing was imported: fix that scene's label (or delete the scene and import again), "
                            "or import the pair anyway on purpose (--allow-duplicate)")


def _split_words(sc: Scene) -> str:
    return "in no split" if sc.split == "none" else f"{sc.split} split"


def conflict_text(image: str, label: Path | None, ws: Workspace, sc: Scene, how: str, differs: str) -> str:
    """One line on a pair whose image scene ``sc`` holds with another label: the scene, its label, how they differ."""
    return (f"{image}: this image is already scene '{sc.name}' ({sc.id}, {_split_words(sc)}; {how}) with a different "
            f"label: that scene has its {scene_label_origin(ws, sc)}, this pair {label or 'no label'}; {differs}")


def _label_to_target(label_path: Path, scheme: str, target: str | None) -> np.ndarray:
    lbl = read_label(label_path, get_scheme(scheme))
    if target and target != scheme:
        lbl = index_crosswalk(scheme, target)[lbl]
    return lbl


def import_scene(
    ws: Workspace,
    image: str | Path,
    label: str | Path | None = None,
    *,
    scheme: str,
    target_scheme: str | None = None,
    name: str | None = None,
    split: str = "none",
    synthetic: bool = False,
    source: str | None = None,
    extra_files: dict[str, bytes] | None = None,
    allow_duplicate: bool = True,
) -> Scene:
    """Import one image (GeoTIFF in any CRS, PNG or JPEG) with an optional label file.

    GeoTIFFs keep their CRS and transform (the file is copied as is); other images are pixel-space.
    ``source`` overrides the recorded source (default: the image path); ``extra_files`` (name -> bytes) are
    written into the scene folder too, e.g. an ``alignment.json`` provenance record. The image's content SHA-1 (and,
    without ``source``, the label file) is recorded in the folder's ``source.json`` (:data:`SOURCE_RECORD`).

    ``allow_duplicate=False`` (what ``seghz import --image`` asks, unless ``--allow-duplicate``): when a scene of the
    output scheme already holds this image (:class:`ImportIndex`: same content, any name or folder), nothing is
    imported: :class:`LabelConflictError` when its label differs (it names that scene and its label),
    :class:`~seghz.errors.DuplicateImportError` when it is the same pair again. The default ``True`` keeps callers
    with their own duplicate rules (aligned imports, :func:`import_imagery`) as they were.
    """
    image = Path(image)
    info = raster_info(image)
    if info.width == 0 or info.height == 0:
        raise BadInputError(image, "image has zero pixels")
    lbl = None
    if label is not None:
        lbl = _label_to_target(Path(label), scheme, target_scheme)
        _check_label_size(image, info, Path(label), lbl)
    extra = dict(extra_files or {})
    sha = content_key(image) if not allow_duplicate or SOURCE_RECORD not in extra else None
    if not allow_duplicate:
        hit = ImportIndex(ws, target_scheme or scheme).find(image, sha)
        if hit is not None:
            differs = label_difference(ws, hit[0], lbl)
            if differs is not None:
                raise LabelConflictError(source or image, Path(label) if label is not None else None, ws, hit[0],
                                         hit[1], differs)
            raise DuplicateImportError(source or image, hit[0].id, hit[0].name,
                                       hit[1] + (" and the same label" if lbl is not None else " (no label given)"))
    if sha is not None and SOURCE_RECORD not in extra:  # the image's content (and label file) a later import recognises
        extra[SOURCE_RECORD] = _source_record(image, sha, source or str(image),
                                              label if source is None else None)
    return _write_scene(ws, image, info, lbl, target_scheme or scheme, name=name or image.stem, split=split,
                        synthetic=synthetic, source=source or str(image), extra_files=extra)


def _check_label_size(image: Path, info, label: Path, lbl: np.ndarray) -> None:
    if lbl.shape != (info.height, info.width):
        raise BadInputError(label, f"label size {lbl.shape[1]}x{lbl.shape[0]} differs from image {image.name} size "
                                   f"{info.width}x{info.height}")


def _write_scene(ws: Workspace, image: Path, info, lbl: np.ndarray | None, out_scheme: str, *, name: str, split: str,
                 synthetic: bool, source: str, extra_files: dict[str, bytes] | None) -> Scene:
    """Copy a checked image (and its decoded label, class indices of ``out_scheme``) into a new scene folder and
    register it; on any error the folder is removed and nothing is registered."""
    with _scene_dir(ws, name) as (sid, d):
        if has_usable_georef(info):
            read_image(image, window=(0, 0, min(16, info.height), min(16, info.width)))  # validates bands now
            verify_tiff(image)  # and that every block decodes: a truncated file must not become a scene
            img_dst = d / ("image" + image.suffix.lower())
            shutil.copyfile(image, img_dst)
        else:
            img_dst = d / "image.png"
            write_rgb(img_dst, read_image(image))
        lbl_dst = None
        if lbl is not None:
            lbl_dst = d / "label.png"
            write_index_mask(lbl_dst, lbl, get_scheme(out_scheme))
        for fname, data in (extra_files or {}).items():
            if "/" in fname or "\\" in fname or fname.startswith(".") or fname in ("image.png", "label.png"):
                raise ValueError(f"extra file name {fname!r} must be a plain new file name")
            (d / fname).write_bytes(data)
        return ws.add_scene(name, img_dst, out_scheme, label_path=lbl_dst, split=split,
                            synthetic=synthetic, source=source, scene_id=sid)


class FolderImport(list):
    """What :func:`import_folder` did: a list of the new :class:`Scene` objects, plus ``skipped``, one
    ``(image file, id of the scene already holding it)`` per pair left out because its image is already imported;
    ``reasons`` (image file -> one line: which scene holds it, how it is known, same label or not), ``conflicts``
    (the image files of ``skipped`` whose label differs from that scene's: not a plain re-import, see
    :func:`import_folder`) and ``report_path``, the file listing every skipped pair (None when none was)."""

    def __init__(self, scenes=(), skipped=(), reasons=None, conflicts=(), report_path: Path | None = None):
        super().__init__(scenes)
        self.skipped: list[tuple[Path, str]] = list(skipped)
        self.reasons: dict[Path, str] = dict(reasons or {})
        self.conflicts: list[Path] = list(conflicts)
        self.report_path = report_path

    @property
    def skipped_count(self) -> int:
        return len(self.skipped)

    def summary_lines(self, limit: int = 20) -> list[str]:
        """What to tell about the skipped pairs: a count line, then one line per skipped pair (label conflicts first),
        every one up to ``limit`` pairs, else the first ``limit`` and where the full list is (:attr:`report_path`)."""
        if not self.skipped:
            return []
        n, nc = len(self.skipped), len(self.conflicts)
        head = (f"skipped {n} pair(s) whose image is already a scene of the workspace" + (
            f"; {nc} of them with a DIFFERENT label than that scene's (nothing imported for them: fix or delete that "
            "scene, or import with --allow-duplicate)" if nc else "; same image and label: nothing new"))
        order = self.conflicts + [p for p, _ in self.skipped if p not in set(self.conflicts)]
        lines = [head] + [f"  {self.reasons.get(p, p.name)}" for p in order[:limit]]
        if n > limit:
            lines.append(f"  ... and {n - limit} more" + (f"; every skipped pair is listed in {self.report_path}"
                                                           if self.report_path else ""))
        elif self.report_path:
            lines.append(f"  (also listed in {self.report_path})")
        return lines


def _source_key(source: str) -> str | None:
    """The absolute, resolved form of a recorded source path (a relative one is taken from the current folder), or
    None when it is not a path at all."""
    try:
        return str(Path(source).expanduser().resolve()) if source else None
    except (OSError, RuntimeError, ValueError):
        return None


def imported_sources(ws: Workspace, scheme: str | None = None) -> dict[str, str]:
    """Resolved source path -> scene id of the workspace's scenes (of ``scheme`` only, when given)."""
    out: dict[str, str] = {}
    for sc in ws.list_scenes():
        if scheme is not None and sc.scheme != scheme:
            continue
        key = _source_key(sc.source)
        if key is not None:
            out.setdefault(key, sc.id)
    return out


def _roll_back(ws: Workspace, scenes: list[Scene]) -> None:
    for sc in reversed(scenes):
        try:
            ws.delete_scene(sc.id)
        except Exception as e:  # noqa: BLE001 - keep rolling back the others; the original error is re-raised
            log.warning("could not roll back scene %s of a failed folder import: %s", sc.id, e)


def import_folder(
    ws: Workspace,
    images: str | Path,
    labels: str | Path,
    *,
    scheme: str,
    target_scheme: str | None = None,
    test_fraction: float = 0.2,
    val_count: int = 60,
    limit: int | None = None,
    progress: Progress | None = None,
    allow_duplicate: bool = False,
) -> FolderImport:
    """Import every image/label pair of two folders (paired by stem), with train/val/test splits -- all or nothing.

    Pairs whose image is already a scene of the output scheme (:class:`ImportIndex`: the same content under any name
    or folder -- a copy of the folder elsewhere, an earlier ``import --image`` -- or, for scenes imported before
    contents were recorded, the same source file) are skipped and listed in the result's ``skipped`` with a reason
    each (:meth:`FolderImport.summary_lines`; all of them in :attr:`FolderImport.report_path`), so importing a folder
    again adds only its new pairs and no picture lands in two splits. A skipped pair whose label differs from that
    scene's original label is a *conflict* (``conflicts``, and a logged warning naming the scene and its label): its
    real label is not imported silently, nor is a second copy made; ``allow_duplicate`` imports every pair anyway
    (new scenes). ``limit`` counts the pairs still to import. Every remaining pair is checked first
    (image header, size and bands; the label fully decoded in ``scheme``; the sizes agree) and the first bad one
    raises BadInputError naming its file before anything is written; should a later step fail all the same (a
    truncated image, a full disk), the scenes of this import are removed again. Splits follow
    :func:`seghz.data.folders.holdout_split` (hash hold-out test, greedy max-entropy val) over the pairs imported.
    The scenes record their image's absolute path as their source.
    """
    from seghz.data.folders import holdout_split, scene_names
    from seghz.data.io import check_image, list_pairs

    pairs = list_pairs(images, labels)
    out_scheme = target_scheme or scheme
    nc = get_scheme(out_scheme).num_classes
    have = ImportIndex(ws, out_scheme)
    todo, skipped, reasons, conflicts, sha_of = [], [], {}, [], {}
    for ip, lp in pairs:
        sha_of[ip] = content_key(ip)
        hit = None if allow_duplicate else have.find(ip, sha_of[ip])
        if hit is None:
            todo.append((ip, lp))
            continue
        sc, how = hit
        try:
            differs = label_difference(ws, sc, _label_to_target(lp, scheme, target_scheme))
        except BadInputError as e:
            differs = f"this pair's label cannot be read ({e.problem})"
        skipped.append((ip, sc.id))
        if differs is None:
            reasons[ip] = f"{ip.name}: already scene '{sc.name}' ({sc.id}, {_split_words(sc)}; {how}), same label"
        else:
            conflicts.append(ip)
            reasons[ip] = conflict_text(ip.name, lp, ws, sc, how, differs)
            log.warning("not imported: %s (import it anyway with --allow-duplicate)", reasons[ip])
    todo = todo[: limit or None]
    checked = []  # (stem, image, label file, info, label indices)
    for i, (ip, lp) in enumerate(todo):
        try:
            info = check_image(ip)
            lbl = _label_to_target(lp, scheme, target_scheme)
            _check_label_size(ip, info, lp, lbl)
        except BadInputError as e:
            raise BadInputError(e.source, f"{e.problem} (pair {i + 1} of {len(todo)}; nothing was imported)") from e
        checked.append((ip.stem, ip, lp, info, lbl))
        if progress:
            progress(0.3 * (i + 1) / len(todo), f"checked {ip.name}")
    # a stem that repeats across folders (Dubai's "Tile N/images/image_part_008") is named with the folder that
    # tells it apart, in this import and against the workspace's scenes; and the split is chosen per name, so two
    # pictures of one stem no longer share one split entry
    taken: dict[str, list[str]] = {}
    for sc in ws.list_scenes():
        taken.setdefault(sc.name, []).append(sc.source)
    names = scene_names([it[1] for it in checked], taken)
    checked = [(name, *it[1:]) for name, it in zip(names, checked)]
    split = holdout_split([(stem, ip, lbl) for stem, ip, _, _, lbl in checked], nc, test_fraction,
                          min(val_count, max(0, len(checked) // 5)), group_duplicates=True)
    which = {it[0]: s for s, its in split.items() for it in its}
    scenes: list[Scene] = []
    try:
        for i, (stem, ip, lp, info, lbl) in enumerate(checked):
            src = _source_key(str(ip)) or str(ip)
            scenes.append(_write_scene(ws, ip, info, lbl, out_scheme, name=stem, split=which[stem], synthetic=False,
                                       source=src, extra_files={SOURCE_RECORD: _source_record(ip, sha_of[ip], src, lp)}))
            if progress:
                progress(0.3 + 0.7 * (i + 1) / len(checked), f"imported {ip.name}")
    except BaseException as e:
        _roll_back(ws, scenes)
        if isinstance(e, BadInputError):
            raise BadInputError(e.source, f"{e.problem} (pair {len(scenes) + 1} of {len(checked)}; nothing was "
                                          "imported)") from e
        raise
    return FolderImport(scenes, skipped, reasons, conflicts, _skip_report(ws, images, [reasons[p] for p, _ in skipped]))


def _skip_report(ws: Workspace, images: str | Path, lines: list[str]) -> Path | None:
    """Write every skipped pair's line to ``<workspace>/imports/<UTC time>-<folder>-skipped.txt``; its path (None when
    nothing was skipped or the file cannot be written: the lines are in the result all the same)."""
    if not lines:
        return None
    from datetime import UTC, datetime

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    path = ws.root / "imports" / f"{stamp}-{slugify(Path(images).resolve().name, 'folder')}-skipped.txt"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"pairs of {Path(images).resolve()} not imported ({len(lines)}):\n" + "\n".join(lines) + "\n")
    except OSError as e:
        log.warning("could not write the list of skipped pairs to %s: %s", path, e)
        return None
    return path


IMAGERY_SCHEME = "hz7"  # scheme recorded for imagery imported without a label (the demo model's classes)
_IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def has_usable_georef(info) -> bool:
    """True when a raster has a CRS and a real geotransform. A GeoTIFF with a CRS but the identity transform (no
    geotransform written) has no location: it is imported in pixel space, never placed at a fake spot."""
    return bool(info.georeferenced) and tuple(float(v) for v in info.transform[:6]) != _IDENTITY


def wgs84_bounds(info) -> tuple[float, float, float, float] | None:
    """(west, south, east, north) in WGS-84 of a georeferenced raster (``rasterio.warp.transform_bounds`` with a
    densified outline, so UTM/rotated grids get their true extent), or None for a pixel-space raster."""
    if not has_usable_georef(info):
        return None
    from affine import Affine
    from rasterio.warp import transform_bounds

    t = Affine(*info.transform[:6])
    xs, ys = zip(*(t @ (c, r) for c, r in ((0, 0), (info.width, 0), (0, info.height), (info.width, info.height))))
    return tuple(float(v) for v in transform_bounds(info.crs, "EPSG:4326", min(xs), min(ys), max(xs), max(ys),
                                                    densify_pts=21))


def describe_georef(info) -> str:
    """One line for people: where a raster lies (WGS-84 bounds and CRS) or that it is pixel space."""
    b = wgs84_bounds(info)
    if b is None:
        why = "has no CRS" if not info.crs else "has a CRS but no geotransform"
        return (f"{info.width}×{info.height} px, {why}: imported in pixel space (shown on a plain pixel grid, "
                "not placed on the world map; areas in pixels)")
    w, s, e, n = b
    return f"{info.width}×{info.height} px, {info.crs}, WGS-84 bounds {w:.5f}–{e:.5f} E, {s:.5f}–{n:.5f} N"


def import_tile_folder(
    ws: Workspace, folder: str | Path, *, name: str | None = None, zoom: int | None = None, scheme: str = IMAGERY_SCHEME,
    progress: Progress | None = None,
) -> Scene:
    """Import a folder of Baidu tiles ``{x}-{y}.jpeg`` (the seed's layout) as one scene: the tiles are mosaicked
    and warped to a north-up EPSG:3857 GeoTIFF by :func:`seghz.geo.fetch.baidu_folder_to_geotiff` (BD-09 ->
    WGS-84 datum shift applied)."""
    from seghz.geo.fetch import baidu_folder_to_geotiff, guess_baidu_level

    folder = Path(folder)
    z = guess_baidu_level(folder) if zoom is None else int(zoom)
    label = name or (f"{folder.parent.name}-{folder.name}" if folder.name.isdigit() else folder.name) or "tiles"
    with _scene_dir(ws, label) as (sid, d):
        plan = baidu_folder_to_geotiff(folder, d / "image.tif", zoom=z, progress=progress)
        return ws.add_scene(label, d / "image.tif", scheme, source=f"{folder} (Baidu level {plan.zoom}, {plan.tiles} "
                            "tile slots)", scene_id=sid)


def find_imported(ws: Workspace, path: str | Path, content: str | None = None) -> tuple[Scene, str] | None:
    """The scene that already holds the imagery at ``path`` and how that is known, or None: for a file, a scene
    whose recorded content SHA-1 (``content``, default computed) is the same (any name, any folder, an upload), or,
    for scenes imported before that was recorded, the same resolved source path; for a tile folder, the same
    resolved path."""
    from seghz.data.splits import content_key

    p = Path(path).expanduser()
    key = _source_key(str(p))
    if p.is_file():
        content = content or content_key(p)
    for sc in ws.list_scenes():
        rec = ws.scene_path(sc, "image").parent / SOURCE_RECORD
        sha = None
        if rec.is_file():
            try:
                sha = json.loads(rec.read_text()).get("sha1")
            except (OSError, ValueError, AttributeError):
                sha = None
        if content is not None and sha == content:
            return sc, "the same file content"
        if sha is None and key is not None and _source_key(sc.source) == key:
            return sc, "the same source path"
    return None


def import_imagery(
    ws: Workspace, path: str | Path, *, name: str | None = None, zoom: int | None = None, scheme: str = IMAGERY_SCHEME,
    progress: Progress | None = None, source: str | None = None, allow_duplicate: bool = False,
) -> tuple[Scene, str]:
    """Import imagery without a label: a GeoTIFF (any CRS; none = pixel space), a PNG/JPEG (pixel space) or a
    folder of Baidu tiles. Returns the scene and a one-line description of where it lies.

    ``source``: what to record as the scene's source (default: the path; an upload names itself). Imagery already
    in the workspace (:func:`find_imported`) raises :class:`~seghz.errors.DuplicateImportError` naming the scene,
    unless ``allow_duplicate``: importing a file twice gave two identical entries in every picker."""
    from seghz.data.splits import content_key

    p = Path(path).expanduser()
    if not p.exists():
        raise BadInputError(p, "does not exist")
    sha = content_key(p) if p.is_file() else None
    if not allow_duplicate:
        dup = find_imported(ws, p, sha)
        if dup is not None:
            raise DuplicateImportError(source or p, dup[0].id, dup[0].name, dup[1])
    if p.is_dir():
        scene = import_tile_folder(ws, p, name=name, zoom=zoom, scheme=scheme, progress=progress)
        what = "Baidu tile folder"
    else:
        record = json.dumps({"sha1": sha, "name": p.name, "source": source or str(p)}).encode()
        scene = import_scene(ws, p, scheme=scheme, name=name, source=source,
                             extra_files={SOURCE_RECORD: record})
        what = "image"
    info = raster_info(p if p.is_file() else ws.scene_path(scene, "image"))  # the source says why it has no place
    return scene, f"imported {what} {p.name} as scene '{scene.name}' ({scene.id}): {describe_georef(info)}"


DEMO_SCENES = (("Demo town (synthetic)", 0, "val", (0, 0)), ("Demo farmland A (synthetic)", 11, "train", (0, 1)),
               ("Demo farmland B (synthetic)", 12, "train", (1, 0)), ("Demo farmland C (synthetic)", 13, "train", (1, 1)))
DEMO_SIZE = 1024


def ensure_demo_workspace(ws: Workspace, checkpoints_dir: str | Path = "checkpoints", progress: Progress | None = None) -> bool:
    """On an empty workspace, create the synthetic demo scenes and register the shipped checkpoints.

    Returns True when something was created. The demo model becomes the active checkpoint.
    """
    from seghz.demo import demo_transform, generate_scene, write_demo_geotiff

    created = False
    scenes = ws.list_scenes()
    have = {s.name for s in scenes}
    # a fresh workspace, or a demo build that was interrupted: (re)create the missing demo scenes
    if not scenes or (all(s.synthetic for s in scenes) and len(have & {n for n, *_ in DEMO_SCENES}) < len(DEMO_SCENES)):
        _crs, t = demo_transform(DEMO_SIZE)
        for k, (name, seed, split, (gy, gx)) in enumerate(DEMO_SCENES):
            if name in have:
                continue
            rgb, lbl = generate_scene(DEMO_SIZE, seed)
            off = (t[0] * DEMO_SIZE * 1.02 * gx, -t[4] * DEMO_SIZE * 1.02 * gy)
            tr = (t[0], 0.0, t[2] + off[0], 0.0, t[4], t[5] - off[1])
            with _scene_dir(ws, name) as (sid, d):
                write_demo_geotiff(d / "image.tif", rgb, tr)
                write_index_mask(d / "label.png", lbl, get_scheme("hz7"))
                ws.add_scene(name, d / "image.tif", "hz7", label_path=d / "label.png", split=split, synthetic=True,
                             source=f"seghz.demo.generate_scene(size={DEMO_SIZE}, seed={seed})", scene_id=sid)
            if progress:
                progress((k + 1) / len(DEMO_SCENES), f"created {name}")
        created = True
    created |= register_shipped_checkpoints(ws, checkpoints_dir)
    return created


def register_checkpoint_file(ws: Workspace, path: str | Path, **kw) -> str:
    """Register a SegHZ checkpoint file in ``ws`` from its own metadata (read without unpickling; CheckpointError
    names the file when it is not one). ``kw`` go to :meth:`Workspace.register_checkpoint` (id, name, parent, note).
    Returns the checkpoint id."""
    from seghz.models.checkpoint import read_metadata

    p = Path(path)
    meta = read_metadata(p)
    return ws.register_checkpoint(p.resolve(), {**meta, "scheme": meta["scheme"]["name"]}, **kw)


def register_shipped_checkpoints(ws: Workspace, checkpoints_dir: str | Path = "checkpoints") -> bool:
    """Register every ``*.safetensors`` in ``checkpoints_dir`` not yet known; activate the demo model if none is."""
    from seghz.models.checkpoint import read_metadata

    known = {ws.checkpoint_path(c).resolve() for c in ws.list_checkpoints(include_archived=True)}  # archived: not again
    added = False
    for p in sorted(Path(checkpoints_dir).glob("*.safetensors")):
        if p.resolve() in known:
            continue
        try:
            meta = read_metadata(p)
            # the synthetic demo model trained on other seeds of the generator: on no scene of any workspace
            register_checkpoint_file(ws, p, checkpoint_id=slugify(p.stem), name=p.stem,
                                     note="shipped" + (" (synthetic demo)" if meta.get("synthetic") else ""),
                                     train_scenes=[] if meta.get("synthetic") else None)
        except (SegHZError, KeyError, TypeError) as e:  # one bad file (e.g. an LFS pointer) must not hide the others
            log.warning("skipping shipped checkpoint %s: %s", p, e)
            continue
        added = True
    if ws.active_checkpoint() is None:
        ids = [c.id for c in ws.list_checkpoints()]  # in use (an archived one has no weights)
        pick = next((i for i in ids if i.startswith("demo")), ids[0] if ids else None)
        if pick:
            ws.set_active_checkpoint(pick)
    return added
