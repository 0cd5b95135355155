"""Copies of one picture under another name: byte for byte, or re-encoded, rescaled, brightened or turned.

A measurement on "tiles the model never saw" means nothing when some of them are tiles it trained on under new names
(GID-15 itself holds four byte-identical pairs). :func:`near_copies` compares 32×32 grey thumbnails under the eight D4
turns; :func:`checkpoint_training_images` finds the images a checkpoint trained on from what it recorded.
"""
from __future__ import annotations

import functools
import os
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np

from seghz.data.io import IMAGE_EXT, read_image
from seghz.data.splits import content_key, copies_across

THUMB = 32  # side of the grey thumbnail near_copies compares


def _thumbnail(path: Path) -> np.ndarray:
    """The 32×32 grey thumbnail of an image file (cached per file state: ``seghz compare`` checks twice)."""
    p = Path(path)
    st = p.stat()
    return _thumbnail_cached(os.fspath(p.resolve()), st.st_mtime_ns, st.st_size).copy()


@functools.lru_cache(maxsize=8192)
def _thumbnail_cached(path: str, mtime_ns: int, size: int) -> np.ndarray:
    grey = read_image(path).astype(np.float32).mean(axis=2)
    return cv2.resize(grey, (THUMB, THUMB), interpolation=cv2.INTER_AREA).ravel()


CHECK_MAX_BYTES = 2 << 30  # training images larger than this in all are not read for the copy check


def check_is_affordable(images: Sequence[Path]) -> bool:
    """Whether reading ``images`` for :func:`near_copies` is cheap enough to do unasked (≤ 2 GiB of files): a
    checkpoint trained on a folder of large GeoTIFFs would otherwise double an evaluation's time."""
    total = 0
    for p in images:
        total += Path(p).stat().st_size
        if total > CHECK_MAX_BYTES:
            return False
    return True


def _d4_thumbnails(t: np.ndarray) -> np.ndarray:
    sq = t.reshape(THUMB, THUMB)
    views = [np.rot90(v, k) for v in (sq, sq[:, ::-1]) for k in range(4)]
    return np.stack([v.ravel() for v in views])


def _rms_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Root-mean-square difference between each row of ``a`` and each row of ``b`` (one matrix product)."""
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2.0 * (a @ b.T)
    return np.sqrt(np.maximum(sq, 0.0) / a.shape[1])


def near_copies(a: Sequence[Path], b: Sequence[Path], raw_tol: float = 1.5,
                z_tol: float = 0.15) -> list[tuple[Path, Path]]:
    """Pairs (x in ``a``, y in ``b``) where ``y`` is a copy of ``x``: byte-identical, or with the same 32×32 grey
    thumbnail under some D4 symmetry. "Same" is a root-mean-square difference below ``raw_tol`` grey levels
    (re-encoding, rescaling: ~0.7), or below ``z_tol`` after each thumbnail is brought to zero mean and unit spread
    (brightness and contrast changes). Thumbnails must have some texture (grey spread > 8) on both sides: two
    near-uniform tiles (open water, cloud, nodata) of one brightness are alike without being copies, so they match
    only byte for byte. Distinct photographs differ by far more: on GID-15 no two distinct tiles come within 3.1 grey
    levels or 0.42 spread units. Only the first match of each ``y`` is listed (a byte twin before a look-alike)."""
    a, b = [Path(p) for p in a], [Path(p) for p in b]
    if not a or not b:
        return []
    found: dict[int, tuple[Path, Path]] = {}
    twins = {os.fspath(y): x for x, y in byte_copies(a, b)}
    for k, y in enumerate(b):
        if os.fspath(y) in twins:
            found[k] = (twins[os.fspath(y)], y)
    todo = [k for k in range(len(b)) if k not in found]
    if todo:
        ta = np.stack([_thumbnail(p) for p in a]).astype(np.float64)
        sa = ta.std(axis=1)
        za = (ta - ta.mean(axis=1, keepdims=True)) / np.maximum(sa, 1e-6)[:, None]
        views = np.stack([_d4_thumbnails(_thumbnail(b[k])) for k in todo]).astype(np.float64)  # n × 8 × T²
        flat = views.reshape(-1, views.shape[-1])
        raw = _rms_distance(ta, flat).reshape(len(a), len(todo), 8).min(axis=2)  # |a| × n
        sv = flat.std(axis=1)
        zv = (flat - flat.mean(axis=1, keepdims=True)) / np.maximum(sv, 1e-6)[:, None]
        z = _rms_distance(za, zv).reshape(len(a), len(todo), 8).min(axis=2)
        textured = (sa[:, None] > 8) & (sv.reshape(len(todo), 8)[:, 0] > 8)[None]
        hit = ((raw < raw_tol) | (z < z_tol)) & textured
        for col, k in enumerate(todo):
            if hit[:, col].any():
                found[k] = (a[int(np.argmax(hit[:, col]))], b[k])
    return [found[k] for k in sorted(found)]


def images_outside(folder: str | Path, test_stems: Iterable[str]) -> list[Path]:
    """The images of ``folder`` outside a checkpoint's ``test_stems``: what the checkpoint saw in training (its
    validation tiles included) if it was trained on ``folder``. Empty when the folder is absent or does not hold
    every one of the test stems (then it is not the folder the checkpoint was split from)."""
    folder = Path(folder)
    test = set(test_stems)
    if not test or not folder.is_dir():
        return []
    files = [p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_EXT]
    if not test <= {p.stem for p in files}:
        return []
    return [p for p in files if p.stem not in test]


def held_out_copies(files: Mapping[str, Path], held: Iterable[str]) -> dict[str, str]:
    """``{held stem: a stem outside held}`` for held-out files that are byte copies of files outside the hold-out
    (``files``: stem -> file; :func:`seghz.data.splits.copies_across` on their :func:`content_key`). What every
    evaluation on a checkpoint's own split leaves out."""
    return copies_across({s: content_key(Path(p)) for s, p in files.items()}, held)


def byte_copies(a: Sequence[Path], b: Sequence[Path]) -> list[tuple[Path, Path]]:
    """Pairs (x in ``a``, y in ``b``) whose files are byte-identical (:func:`seghz.data.splits.content_key`)."""
    seen: dict[str, Path] = {}
    for p in a:
        seen.setdefault(content_key(Path(p)), Path(p))
    return [(seen[d], Path(p)) for p in b if (d := content_key(Path(p))) in seen]


def recorded_training_folder(meta: dict, search: Sequence[Path] = ()) -> Path | None:
    """The image folder a checkpoint says it trained on (``recipe.extra.data.images``, else ``--images`` of its
    recorded ``command``), resolved against the current folder and then each of ``search``; None when it records
    none or the folder is not here."""
    rec = meta
    for key in ("recipe", "extra", "data", "images"):  # any level may be missing or not a mapping (demo recipes)
        rec = rec.get(key) if isinstance(rec, dict) else None
    rec = rec if isinstance(rec, str) else None
    if not rec and meta.get("command"):
        try:
            argv = shlex.split(str(meta["command"]))
        except ValueError:
            argv = []
        for i, tok in enumerate(argv):
            if tok == "--images" and i + 1 < len(argv):
                rec = argv[i + 1]
            elif m := re.match(r"--images=(.+)", tok):
                rec = m.group(1)
    if not rec:
        return None
    p = Path(rec).expanduser()
    for base in [Path.cwd(), *search] if not p.is_absolute() else [Path("/")]:
        q = (base / p).resolve()
        if q.is_dir():
            return q
    return None


def checkpoint_training_images(meta: dict, search: Sequence[Path] = ()) -> list[Path]:
    """Images a checkpoint trained on: those of its recorded training folder (:func:`recorded_training_folder`)
    outside its ``test_stems`` and its recorded ``val_stems`` (a checkpoint from before validation stems were
    recorded counts its validation tiles as trained on). Empty when unknown."""
    folder = recorded_training_folder(meta, search)
    if folder is None:
        return []
    val = set(meta.get("val_stems") or [])
    return [p for p in images_outside(folder, meta.get("test_stems") or []) if p.stem not in val]
