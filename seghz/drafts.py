"""Server-side drafts of unsaved label edits: nothing painted is lost to a browser reload, a new tab or a crash.

The Labels page keeps an analyst's unsaved edit of a scene in the browser session only; a reload (F5) or a new tab
starts a new session. Whenever the pending edit of a scene changes, the page writes it here:

    ``<workspace>/drafts/<analyst folder>/<scene_id>.npz``

The analyst folder is ``anon`` for an edit made before a name was entered, else a safe slug of the name plus a short
hash of it (distinct names never share a folder; the name itself is kept in the file). A draft holds the flat indices
of the pixels the edit sets and their values, the label version the edit started from, the scene's size, the UTC time,
the tools used and a random token (a session recognises the drafts it wrote itself by their token). Files are written
atomically (:func:`seghz.data.io.atomic_write_bytes`): a reader sees the previous draft or the new one, never half of
one.

A damaged or foreign file never crashes a reader: :func:`read_draft` raises :class:`DraftError` naming the file and
the problem, and :func:`list_drafts` returns such files as :class:`DraftProblem` entries (the page offers to delete
them). Pure Python/numpy, no Streamlit.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import unicodedata
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from seghz.classes import IGNORE, get_scheme
from seghz.data.io import atomic_write_bytes
from seghz.errors import BadInputError

DRAFTS_DIR = "drafts"
ANON = "anon"  # folder of drafts made before an analyst name was entered
DRAFT_FORMAT = 1
_SCENE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")  # scene ids are slugs (seghz.store); a safe file name
_FOLDER_RE = re.compile(r"^(anon|[A-Za-z0-9_-]{1,40}-[0-9a-f]{10})$")


class DraftError(BadInputError):
    """A draft file cannot be read or does not fit its scene. The message names the file and says it is damaged in
    SegHZ's own words (never numpy's: its advice to load with ``allow_pickle`` / ``pickle.load()`` is exactly what
    must not be done with a file of unknown content). ``analyst``: the analyst named in the file's metadata when that
    much could be read, else None."""

    def __init__(self, source: str, problem: str, analyst: str | None = None):
        super().__init__(source, problem)
        self.analyst = analyst


def _unreadable(e: BaseException) -> str:
    """Why ``np.load`` could not read a draft, in words that never repeat numpy's pickle advice."""
    import zipfile

    text = str(e)
    if "pickle" in text.lower() or "object arrays" in text.lower():
        why = ("its content is not a zip of plain arrays; a draft never holds Python objects, and SegHZ never "
               "unpickles a file")
    elif isinstance(e, zipfile.BadZipFile) or "zip file" in text.lower():
        why = "not a zip archive: truncated or overwritten"
    elif isinstance(e, EOFError) or "no data left" in text.lower():
        why = "the file is empty or truncated"
    else:
        why = f"{type(e).__name__}: {text}"
    return f"not a readable .npz: {why}"


@dataclass
class Draft:
    """One scene's unsaved edit by one analyst (``analyst`` empty: made before a name was entered)."""

    scene_id: str
    analyst: str
    base_version: int
    shape: tuple[int, int]
    indices: np.ndarray = field(repr=False)  # int64 flat pixel indices (sorted, unique)
    values: np.ndarray = field(repr=False)  # uint8 label values of those pixels
    saved_at: str = ""  # ISO 8601 UTC
    tool: str = ""  # e.g. "brush+fill"
    token: str = ""
    path: Path | None = None

    @property
    def pixels(self) -> int:
        return int(self.indices.size)

    @property
    def owner(self) -> str:
        """Who the draft belongs to, in words."""
        return self.analyst or "an unnamed session (no analyst name entered)"

    def saved_time(self) -> datetime | None:
        try:
            t = datetime.fromisoformat(self.saved_at)
        except (TypeError, ValueError):
            return None
        return t if t.tzinfo is not None else t.replace(tzinfo=UTC)

    def when(self, now: datetime | None = None) -> str:
        """``"14:05 UTC"``, with the date added when the draft is not from today (UTC)."""
        t = self.saved_time()
        if t is None:
            return "an unknown time"
        t = t.astimezone(UTC)
        now = (now or datetime.now(UTC)).astimezone(UTC)
        return t.strftime("%H:%M UTC") + ("" if t.date() == now.date() else t.strftime(" on %Y-%m-%d"))

    def mask(self) -> np.ndarray:
        """Boolean scene-sized mask of the pixels the draft sets."""
        m = np.zeros(self.shape[0] * self.shape[1], bool)
        m[self.indices] = True
        return m.reshape(self.shape)

    def apply(self, label: np.ndarray) -> np.ndarray:
        """A copy of ``label`` (the scene's label at :attr:`base_version`) with the draft's pixels set."""
        out = np.asarray(label).astype(np.uint8, copy=True)
        if out.shape != tuple(self.shape):
            raise ValueError(f"label {out.shape} does not match the draft's scene size {tuple(self.shape)}")
        out.ravel()[self.indices] = self.values
        return out


@dataclass
class DraftProblem:
    """A file in the drafts folder that could not be read as a draft. ``analyst``: whose it is, when known -- from
    the file's own metadata, else from a readable draft in the same analyst folder (its name hashes to the folder),
    ``""`` for the ``anon`` folder -- or None; :attr:`owner` says it in words either way."""

    path: Path
    scene_id: str
    message: str
    analyst: str | None = None

    @property
    def owner(self) -> str:
        """The analyst's name; ``(no name)`` for a draft made without one; else the name as its folder spells it."""
        if self.analyst is not None:
            return self.analyst or "(no name)"
        folder = self.path.parent.name
        return f"{folder.rsplit('-', 1)[0]} (as its folder spells it)" if _FOLDER_RE.match(folder) else "unknown"


# ------------------------------------------------------------------------------------------------ paths


def normalise_analyst(analyst: str | None) -> str:
    return unicodedata.normalize("NFC", str(analyst or "")).strip()


def analyst_folder(analyst: str | None) -> str:
    """The drafts folder name of an analyst: ``anon`` without a name, else ``<slug>-<10 hex of the name's hash>``."""
    name = normalise_analyst(analyst)
    if not name:
        return ANON
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", ascii_name).strip("_-")[:40].strip("_-") or "analyst"
    return f"{slug}-{hashlib.sha1(name.encode('utf-8')).hexdigest()[:10]}"


def _check_scene_id(scene_id: str) -> str:
    if not isinstance(scene_id, str) or not _SCENE_RE.match(scene_id):
        raise ValueError(f"not a scene id: {scene_id!r}")
    return scene_id


def drafts_root(root: str | os.PathLike) -> Path:
    return Path(root) / DRAFTS_DIR


def draft_path(root: str | os.PathLike, analyst: str | None, scene_id: str) -> Path:
    """``<root>/drafts/<analyst folder>/<scene_id>.npz``."""
    return drafts_root(root) / analyst_folder(analyst) / f"{_check_scene_id(scene_id)}.npz"


# ------------------------------------------------------------------------------------------------ write / read


def now_utc() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_draft(root: str | os.PathLike, analyst: str | None, scene_id: str, *, base_version: int,
                pixels: np.ndarray, values: np.ndarray, tool: str = "", saved_at: str | None = None) -> Draft:
    """Write (atomically, replacing any earlier one) the draft of ``analyst``'s unsaved edit of a scene.

    Args:
        pixels: Boolean H×W mask of the pixels the edit sets.
        values: The edited H×W label (only its values at ``pixels`` are kept).
        base_version: The label version the edit started from.

    Returns:
        The draft written (with its new token and path).

    Raises:
        ValueError: Bad scene id, shapes or values.
        OSError: The file could not be written (the previous draft, if any, is unchanged).
    """
    _check_scene_id(scene_id)
    px = np.asarray(pixels)
    vals = np.asarray(values)
    if px.dtype != bool or px.ndim != 2 or vals.shape != px.shape:
        raise ValueError(f"pixels (a boolean H×W mask, got {px.dtype} {px.shape}) and values {vals.shape} must be "
                         "the same H×W shape")
    shape = (int(px.shape[0]), int(px.shape[1]))
    idx = np.flatnonzero(px.ravel()).astype(np.int64)
    vals = vals.ravel()[idx]
    if vals.size and (vals.min() < 0 or vals.max() > 255):
        raise ValueError("label values must lie in 0..255")
    if int(base_version) < 0:
        raise ValueError(f"base version must be ≥ 0, got {base_version}")
    d = Draft(scene_id=scene_id, analyst=normalise_analyst(analyst), base_version=int(base_version), shape=shape,
              indices=idx, values=vals.astype(np.uint8), saved_at=saved_at or now_utc(), tool=str(tool or ""),
              token=uuid.uuid4().hex, path=draft_path(root, analyst, scene_id))
    meta = {"format": DRAFT_FORMAT, "scene_id": d.scene_id, "analyst": d.analyst, "base_version": d.base_version,
            "shape": list(d.shape), "saved_at": d.saved_at, "tool": d.tool, "token": d.token, "pixels": d.pixels}
    buf = io.BytesIO()
    np.savez_compressed(buf, meta=np.frombuffer(json.dumps(meta).encode("utf-8"), np.uint8), indices=d.indices,
                        values=d.values)
    assert d.path is not None
    d.path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(d.path, buf.getvalue())
    return d


def read_draft(path: str | os.PathLike) -> Draft:
    """Read and check a draft file.

    Raises:
        FileNotFoundError: No such file.
        DraftError: The file is damaged or not a draft (the message names the file and the problem).
    """
    path = Path(path)
    src = str(path)
    who: str | None = None  # the analyst of the metadata, once read

    def bad(problem: str) -> DraftError:
        return DraftError(src, f"damaged draft file ({problem}); it cannot be restored — discard it", analyst=who)

    try:
        with np.load(path, allow_pickle=False) as z:
            names = set(z.files)
            missing = {"meta", "indices", "values"} - names
            if missing:
                raise bad(f"missing {', '.join(sorted(missing))}")
            meta_raw, idx, vals = z["meta"], z["indices"], z["values"]
            for member, arr in (("meta", meta_raw), ("indices", idx), ("values", vals)):
                if not isinstance(arr, np.ndarray):  # np.load hands back raw bytes for a member that is no .npy
                    raise bad(f"not a readable .npz: its '{member}' is not an array")
    except FileNotFoundError:
        raise
    except DraftError:
        raise
    except Exception as e:  # noqa: BLE001 - truncated zip, not a zip, a pickled member, zipfile/zlib's own types
        raise bad(_unreadable(e)) from None  # numpy's message (its pickle advice) must not reach the analyst
    try:
        meta = json.loads(bytes(np.asarray(meta_raw, np.uint8)).decode("utf-8"))
    except (ValueError, TypeError) as e:
        raise bad(f"its metadata is not JSON: {e}") from e
    if not isinstance(meta, dict):
        raise bad("its metadata is not a JSON object")
    if isinstance(meta.get("analyst"), str):
        who = normalise_analyst(meta["analyst"])
    if meta.get("format") != DRAFT_FORMAT:
        raise bad(f"unknown format {meta.get('format')!r}")
    try:
        scene_id = _check_scene_id(meta.get("scene_id"))
        shape = tuple(int(v) for v in meta["shape"])
        base_version = int(meta["base_version"])
        analyst = normalise_analyst(meta.get("analyst"))
        saved_at, tool, token = str(meta.get("saved_at") or ""), str(meta.get("tool") or ""), str(meta.get("token") or "")
    except (KeyError, TypeError, ValueError) as e:
        raise bad(f"bad metadata: {e}") from e
    if len(shape) != 2 or shape[0] <= 0 or shape[1] <= 0:
        raise bad(f"bad scene size {shape}")
    if base_version < 0:
        raise bad(f"bad base version {base_version}")
    if path.stem != scene_id:
        raise bad(f"it is the draft of scene '{scene_id}', not of '{path.stem}'")
    idx, vals = np.asarray(idx), np.asarray(vals)
    if idx.ndim != 1 or vals.ndim != 1 or idx.size != vals.size:
        raise bad(f"{idx.size} pixel indices but {vals.size} values")
    if not (np.issubdtype(idx.dtype, np.integer) and np.issubdtype(vals.dtype, np.integer)):
        raise bad("pixel indices and values must be integers")
    if idx.size and (idx.min() < 0 or idx.max() >= shape[0] * shape[1]):
        raise bad(f"pixel indices outside the {shape[1]}×{shape[0]} scene")
    if vals.size and (vals.min() < 0 or vals.max() > 255):
        raise bad("label values outside 0..255")
    idx = idx.astype(np.int64)
    if idx.size > 1 and np.any(np.diff(idx) <= 0):
        raise bad("pixel indices are not sorted and unique")
    return Draft(scene_id=scene_id, analyst=analyst, base_version=base_version, shape=(shape[0], shape[1]),
                 indices=idx, values=vals.astype(np.uint8), saved_at=saved_at, tool=tool, token=token, path=path)


def draft_token(path: str | os.PathLike) -> str | None:
    """The token of the draft at ``path``; None when there is none or it cannot be read."""
    try:
        return read_draft(path).token
    except (FileNotFoundError, DraftError):
        return None


def delete_draft(path: str | os.PathLike | None) -> bool:
    """Delete a draft file (True when one was there). Never raises for a missing file or folder."""
    if path is None:
        return False
    p = Path(path)
    try:
        p.unlink()
    except FileNotFoundError:
        return False
    with contextlib.suppress(OSError):  # an analyst folder left empty goes too
        p.parent.rmdir()
    return True


def list_drafts(root: str | os.PathLike, scene_id: str | None = None,
                analysts: list[str | None] | None = None) -> tuple[list[Draft], list[DraftProblem]]:
    """The drafts in the workspace (of one scene when ``scene_id`` is given; of these analysts, ``None``/``""``
    meaning drafts made without a name, when ``analysts`` is given), newest first, and the files that could not be
    read (:class:`DraftProblem`, with the reason)."""
    base = drafts_root(root)
    folders = None if analysts is None else {analyst_folder(a) for a in analysts}
    found: list[Draft] = []
    problems: list[DraftProblem] = []
    if not base.is_dir():
        return found, problems
    for folder in sorted(p for p in base.iterdir() if p.is_dir()):
        if not _FOLDER_RE.match(folder.name) or (folders is not None and folder.name not in folders):
            continue
        pattern = f"{_check_scene_id(scene_id)}.npz" if scene_id is not None else "*.npz"
        for f in sorted(folder.glob(pattern)):
            if not f.is_file() or not _SCENE_RE.match(f.stem):
                continue
            try:
                d = read_draft(f)
            except FileNotFoundError:  # deleted meanwhile
                continue
            except DraftError as e:
                problems.append(DraftProblem(f, f.stem, str(e), e.analyst))
                continue
            if folder.name != analyst_folder(d.analyst):
                problems.append(DraftProblem(f, f.stem, f"{f}: draft of analyst {d.analyst or '(none)'!r} found in "
                                                        f"the folder of another analyst; it cannot be restored",
                                             d.analyst))
                continue
            found.append(d)
    names = {d.path.parent.name: d.analyst for d in found if d.path is not None}
    for p in problems:  # a damaged file's name: from a readable draft of the same folder (the name hashes to it)
        if p.analyst is None:
            p.analyst = "" if p.path.parent.name == ANON else names.get(p.path.parent.name)
    found.sort(key=lambda d: d.saved_at, reverse=True)
    return found, problems


def restore_problem(scene: Any, d: Draft, latest_now: int) -> str | None:
    """Why the draft ``d`` cannot become the edit of ``scene`` (a :class:`seghz.store.Scene`): another scene's,
    another size, a version after the scene's latest ``latest_now``, a class outside the scene's scheme; or None."""
    num_classes = get_scheme(scene.scheme).num_classes
    bad = d.values[(d.values >= num_classes) & (d.values != IGNORE)]
    return (f"it is the draft of scene '{d.scene_id}'" if d.scene_id != scene.id
            else f"it is {d.shape[1]}×{d.shape[0]} px but the scene is {scene.width}×{scene.height} px"
            if tuple(d.shape) != (scene.height, scene.width)
            else f"it is based on label version {d.base_version} but the scene's latest is {latest_now}"
            if d.base_version > latest_now
            else f"it holds class {int(bad.max())}, not a class of the {scene.scheme} scheme" if bad.size else None)


def age_days(d: Draft, now: datetime | None = None) -> float | None:
    """How old the draft is, in days (None when its time cannot be read)."""
    t = d.saved_time()
    return None if t is None else ((now or datetime.now(UTC)) - t).total_seconds() / 86400


__all__ = [
    "ANON",
    "DRAFTS_DIR",
    "Draft",
    "DraftError",
    "DraftProblem",
    "age_days",
    "analyst_folder",
    "delete_draft",
    "draft_path",
    "draft_token",
    "drafts_root",
    "list_drafts",
    "normalise_analyst",
    "read_draft",
    "restore_problem",
    "write_draft",
]
