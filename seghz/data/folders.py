"""Image+label folder datasets (files paired by stem), crosswalked to a target scheme on read."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from seghz.classes import get_scheme, index_crosswalk
from seghz.data.io import list_pairs, read_pair
from seghz.data.splits import class_distribution, content_key, greedy_max_entropy, hash_fraction


def load_folder(
    images: str | Path,
    labels: str | Path,
    scheme: str,
    target_scheme: str | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Read all (stem, image, label) pairs; labels become class indices of ``target_scheme`` (or ``scheme``)."""
    src = get_scheme(scheme)
    lut = index_crosswalk(scheme, target_scheme) if target_scheme and target_scheme != scheme else None
    pairs = list_pairs(images, labels)
    out = []
    for i, (ip, lp) in enumerate(pairs):
        img, lbl = read_pair(ip, lp, src)
        if lut is not None:
            lbl = lut[lbl]
        out.append((ip.stem, img, lbl))
        if progress is not None:
            progress((i + 1) / len(pairs), f"read {ip.name}")
    return out


def _folder_of(path: str | Path) -> Path | None:
    """The absolute folder of a file path (None for a recorded source that is no absolute path: an upload's name)."""
    p = Path(path).expanduser()
    if not p.is_absolute():
        return None
    try:
        return p.resolve().parent
    except (OSError, RuntimeError, ValueError):
        return p.parent


def _telling_folder(mine: Path, others: Sequence[Path | None]) -> str | None:
    """The name of the nearest folder above a file (``mine`` is its folder) that no other file's folder has at the
    same depth (``.../Tile 8/images`` against ``.../Tile 1/images``: ``Tile 8``); the file's own folder when an
    other's folder is unknown (None); None when there is no such folder."""
    known = [o for o in others if o is not None]
    if not known:
        return mine.name or None
    for depth in range(1, len(mine.parts)):  # parts[0] is the root: never a name
        part = mine.parts[-depth]
        if all(len(o.parts) <= depth or o.parts[-depth] != part for o in known):
            return part
    return None


def scene_names(images: Sequence[str | Path], taken: Mapping[str, Iterable[str]] | None = None) -> list[str]:
    """Scene names for image files imported together (one per file, in order): the file stem, as always, unless
    that stem names another picture too -- another file of ``images`` in another folder, or a scene of the
    workspace named so whose source (``taken``: scene name -> the recorded sources of the scenes so named) lies
    in another folder. Then the name is ``"<telling folder>/<stem>"``, the telling folder being the nearest one
    above the file that tells it apart (Dubai's ``Tile 8/images/image_part_008.jpg`` next to an imported
    ``Tile 1/images/image_part_008.jpg``: ``"Tile 8/image_part_008"``), so a scene picker does not list eight
    ``image_part_008``. A stem seen only in the file's own folder (the same folder imported again) keeps the stem;
    so do folders without repeats, and their scene ids with it."""
    files = [Path(p) for p in images]
    names = [f.stem for f in files]
    by_stem: dict[str, list[int]] = {}
    for i, f in enumerate(files):
        by_stem.setdefault(f.stem, []).append(i)
    taken = taken or {}
    for stem, idx in by_stem.items():
        outside = [_folder_of(src) for src in taken.get(stem, ())]
        if len(idx) == 1 and not outside:
            continue
        for i in idx:
            mine = _folder_of(files[i].absolute()) or files[i].absolute().parent
            others = [_folder_of(files[j].absolute()) for j in idx if j != i] + outside
            others = [o for o in others if o != mine]  # the same folder again: nothing to tell apart by
            if not others:
                continue
            folder = _telling_folder(mine, others)
            if folder:
                names[i] = f"{folder}/{stem}"
    return names


def holdout_split(
    items: list[tuple[str, object, np.ndarray]], num_classes: int, test_fraction: float = 0.2, val_count: int = 60,
    salt: str = "seghz", group_duplicates: bool = False,
) -> dict[str, list]:
    """Split items ``(stem, image array or file, label)`` into train / val / test.

    Test = items whose stable hash of the stem falls below ``test_fraction`` (reproducible, independent of
    file order). Val = ``val_count`` items chosen from the rest by greedy max class entropy (the study's
    method) and removed from train (the study forgot to).

    ``group_duplicates`` keeps identical images (same :func:`seghz.data.splits.content_key`, e.g. GID-15's
    ``artificial_grassland_71`` and ``_75``) in one split: a group follows the hash of its first stem, and copies of a
    validation image join the validation split. Without it (the splits of runs before it existed) a copy can sit on
    both sides; evaluations leave such copies out (``seghz.cli.checkpoint_split_stems``).
    """
    key_of = {it[0]: content_key(it[1]) for it in items} if group_duplicates else {}
    first: dict[str, str] = {}
    for stem in sorted(key_of):
        first.setdefault(key_of[stem], stem)

    def anchor(stem: str) -> str:
        return first[key_of[stem]] if group_duplicates else stem

    test = [it for it in items if hash_fraction(anchor(it[0]), salt) < test_fraction]
    rest = [it for it in items if hash_fraction(anchor(it[0]), salt) >= test_fraction]
    if val_count and rest:
        dists = np.stack([class_distribution(it[2], num_classes) for it in rest])
        vi = set(greedy_max_entropy(dists, val_count))
    else:
        vi = set()
    if group_duplicates:
        val_keys = {key_of[rest[i][0]] for i in vi}
        vi |= {i for i, it in enumerate(rest) if key_of[it[0]] in val_keys}
    val = [it for i, it in enumerate(rest) if i in vi]
    train = [it for i, it in enumerate(rest) if i not in vi]
    return {"train": train, "val": val, "test": test}
