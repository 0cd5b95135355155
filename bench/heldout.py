"""Which labelled tiles a bench measures on: the shipped checkpoint's held-out GID tiles, or a folder of your own.

The benches were first written for ``../shared/data/gid15`` and the 125 ``test_stems`` the shipped GID checkpoint
never trained on. Someone re-measuring a claim on real data we do not have points them at a folder with
``images/`` and ``labels/`` (files paired by stem, any image type :func:`seghz.data.io.list_pairs` reads; labels in
any registered scheme with a crosswalk to the checkpoint's):

* ``which="test"``: the checkpoint's ``test_stems`` present in the folder (our protocol), less any whose image is
  identical to one outside them (GID-15's ``artificial_grassland_71`` is ``artificial_grassland_75``, a training
  tile of the shipped model; :func:`seghz.data.splits.copies_across`);
* ``which="all"``: every pair in the folder, for tiles the checkpoint never saw. A folder that holds some of the
  checkpoint's held-out tiles *and* others is refused: that is what the folder it trained on looks like, and its
  other tiles may be training tiles. Given the images the checkpoint trained on (``trained_on``), an image that is
  a copy of one of them is refused too: byte-identical, or the same picture re-encoded, rescaled, brightened or
  turned by a D4 symmetry (:func:`near_copies`).

Both orders are the salted SHA-1 order of ``bench/noise_bench.py``, so a prefix is a fixed, seed-free subset.
"""
from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from seghz.data.copies import held_out_copies, images_outside, near_copies

SALT = "noise-bench-v1"
WHICH = ("test", "all")


def add_data_arguments(ap, default_data) -> None:
    """The benches' ``--data``, ``--scheme`` and ``--stems`` options (one wording for all of them)."""
    ap.add_argument("--data", default=str(default_data),
                    help="folder with images/ and labels/ paired by stem (default: ../shared/data/gid15)")
    ap.add_argument("--scheme", default="gid15", help="class scheme of the label files (crosswalked to the checkpoint's)")
    ap.add_argument("--stems", choices=WHICH, default="test",
                    help="test: the checkpoint's held-out test_stems in --data (our protocol); all: every tile of "
                         "--data, for a folder of tiles the checkpoint never saw (re-measuring on your own data)")


def salted(stem: str, salt: str = SALT) -> str:
    """The order key of a stem (SHA-1 of ``salt:stem``)."""
    return hashlib.sha1(f"{salt}:{stem}".encode()).hexdigest()


def folder_pairs(data: str | Path) -> dict[str, tuple[Path, Path]]:
    """``{stem: (image, label)}`` of ``data/images`` and ``data/labels``; a clear error for a bad folder."""
    from seghz.data.io import list_pairs
    from seghz.errors import BadInputError

    data = Path(data)
    if not (data / "images").is_dir() or not (data / "labels").is_dir():
        raise BadInputError(data, "needs an images/ and a labels/ folder (files paired by stem)")
    return {img.stem: (img, lbl) for img, lbl in list_pairs(data / "images", data / "labels")}


def held_out(data: str | Path, test_stems: Iterable[str], which: str = "test",
             trained_on: Sequence[Path] = ()) -> list[tuple[str, Path, Path]]:
    """``(stem, image, label)`` of the tiles to measure on, in salted order (see the module docstring).

    Raises ValueError when nothing is left, when ``which="all"`` is given the checkpoint's own folder, or when
    ``which="all"`` finds a copy of one of the ``trained_on`` images.
    """
    if which not in WHICH:
        raise ValueError(f"which must be one of {', '.join(WHICH)}, got {which!r}")
    pairs = folder_pairs(data)
    test = set(test_stems)
    if which == "test":
        if not test:
            raise ValueError("the checkpoint records no test_stems: cannot pick its held-out tiles; "
                             "use --stems all with a folder of tiles it never saw")
        stems = [s for s in pairs if s in test]
        copies = held_out_copies({s: p[0] for s, p in pairs.items()}, stems)
        if copies:
            print(f"left out {len(copies)} held-out tile(s) identical to a tile outside the test split: "
                  + ", ".join(f"{a} = {b}" for a, b in copies.items()), file=sys.stderr)
            stems = [s for s in stems if s not in copies]
        if not stems:
            raise ValueError(f"{data}: none of the checkpoint's {len(test)} held-out test stems is in this folder; "
                             "use --stems all for a folder of tiles it never saw")
    else:
        inside, other = [s for s in pairs if s in test], [s for s in pairs if s not in test]
        if inside and other:
            raise ValueError(
                f"{data}: holds {len(inside)} of the checkpoint's held-out test tiles (e.g. '{inside[0]}') and "
                f"{len(other)} other tiles: it looks like the folder the checkpoint trained on, whose other tiles "
                "may be training tiles. Use --stems test here, or point --data at tiles it never saw")
        stems = list(pairs)
        copies = near_copies(trained_on, [pairs[s][0] for s in stems]) if trained_on else []
        if copies:
            src, cp = copies[0]
            raise ValueError(f"{data}: {len(copies)} image(s) are copies of images the checkpoint trained on, e.g. "
                             f"{cp} = {src}; a re-measurement must use tiles it never saw")
    return [(s, *pairs[s]) for s in sorted(stems, key=salted)]


def trained_images(data: str | Path, test_stems: Iterable[str]) -> list[Path]:
    """The images of ``data/images`` outside a checkpoint's ``test_stems`` (:func:`seghz.data.copies.images_outside`)."""
    return images_outside(Path(data) / "images", test_stems)
