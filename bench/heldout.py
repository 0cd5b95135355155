"""Which labelled tiles a bench measures on: the shipped checkpoint's held-out GID tiles, or a folder of your own.

The benches were first written for ``../shared/data/gid15`` and the 125 ``test_stems`` the shipped GID checkpoint
never trained on. Someone re-measuring a claim on real data we do not have points them at a folder with
``images/`` and ``labels/`` (files paired by stem, any image type :func:`seghz.data.io.list_pairs` reads; labels in
any registered scheme with a crosswalk to the checkpoint's):

* ``which="test"``: the checkpoint's ``test_stems`` present in the folder (our protocol);
* ``which="all"``: every pair in the folder, for tiles the checkpoint never saw. A folder that holds some of the
  checkpoint's held-out tiles *and* others is refused: that is what the folder it trained on looks like, and its
  other tiles may be training tiles.

Both orders are the salted SHA-1 order of ``bench/noise_bench.py``, so a prefix is a fixed, seed-free subset.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path

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


def held_out(data: str | Path, test_stems: Iterable[str], which: str = "test") -> list[tuple[str, Path, Path]]:
    """``(stem, image, label)`` of the tiles to measure on, in salted order (see the module docstring).

    Raises ValueError when nothing is left or when ``which="all"`` is given the checkpoint's own folder.
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
    return [(s, *pairs[s]) for s in sorted(stems, key=salted)]


def file_digest(path: Path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def duplicate_images(a: Sequence[Path], b: Sequence[Path]) -> list[tuple[Path, Path]]:
    """Pairs (x in ``a``, y in ``b``) whose files are byte-identical: an evaluation folder must not hold a copy of
    a training image under another name."""
    seen: dict[str, Path] = {}
    for p in a:
        seen.setdefault(file_digest(p), p)
    return [(seen[d], p) for p in b if (d := file_digest(p)) in seen]
