"""The workspace: a folder of scenes, label versions, checkpoints, job logs and evaluations, indexed in SQLite.

Layout of a workspace folder (default ``./workspace``, or ``$SEGHZ_WORKSPACE``)::

    index.sqlite        the index (WAL mode, so readers never block the one writer)
    scenes/             imagery and ORIGINAL labels, copied in on import and never modified
    labels/<scene>/     label history: one sparse correction layer per version, v0001.npz, v0002.npz, ...
                        (workspaces of older SegHZ may also hold whole-mask versions vNNNN.png; still read)
    checkpoints/        trained models
    jobs/               one log per background job: <job id>.log
    evals/              evaluation outputs

Every method opens its own short-lived SQLite connection, so one :class:`Workspace` may be shared by
Streamlit threads, and any number of processes (background jobs, the CLI) may use the same folder.
Writes that must see a consistent state (label saves, job claims) run in ``BEGIN IMMEDIATE`` transactions.

Label store: the original label of a scene (version 0, its ``label_path``) is never modified. Every later
version is one row of ``label_versions``: a correction *layer* (changed pixels as flat indices + new
values, confirmed pixels, provenance: analyst, UTC time, tool, checkpoint id, reason), or an ``undo`` /
``redo`` of one analyst's layer. The effective label of version N is the original with the layers in
effect at N applied in version order; :meth:`Workspace.pixel_status` tells original / corrected /
confirmed / ignored pixels apart. A save names the version it was based on; when that is stale, it is
merged if its pixels do not overlap those touched since, else refused with :class:`ConflictError`.
A layer file is written atomically (temp + fsync + rename) before its row commits: the row is the
acknowledgement, and files without a row (a crash in between) are never read.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
import sqlite3
import time
import unicodedata
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from seghz.classes import IGNORE, get_scheme
from seghz.data.io import atomic_write_bytes, raster_info, read_index_mask, write_index_mask, write_index_mask_geotiff
from seghz.errors import BadInputError, ConflictError, SegHZError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 5
SPLITS = ("train", "val", "test", "none")
JOB_STATUSES = ("queued", "running", "done", "failed", "cancelled", "died")
ACTIVE_JOB_STATUSES = ("queued", "running")
BUSY_TIMEOUT_S = 10.0
_SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")

PROMOTION_ACTIONS = ("promote", "rollback", "set")


def _config_values(config: Any) -> set[str]:
    """Every string value in a job's configuration, nested ones included (which checkpoints it names)."""
    if isinstance(config, dict):
        return set().union(*(_config_values(v) for v in config.values())) if config else set()
    if isinstance(config, (list, tuple)):
        return set().union(*(_config_values(v) for v in config)) if config else set()
    return {config} if isinstance(config, str) else set()


def _add_column(table: str, column: str, decl: str):
    """A migration step that adds a column unless it is already there (so a step can safely run twice)."""

    def step(conn: sqlite3.Connection) -> None:
        if column not in {r[1] for r in conn.execute(f"PRAGMA table_info({table})").fetchall()}:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")

    return step


# Migrations: entry i (0-based) brings the schema from version i to version i + 1. A step is SQL text or a
# callable taking the connection; every step from version 2 on is idempotent (IF NOT EXISTS / guarded ALTER).
_MIGRATIONS: tuple[tuple[Any, ...], ...] = (
    (
        """CREATE TABLE scenes (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            image_path TEXT NOT NULL,
            label_path TEXT,
            scheme TEXT NOT NULL,
            width INTEGER NOT NULL,
            height INTEGER NOT NULL,
            crs TEXT,
            transform TEXT,
            split TEXT NOT NULL DEFAULT 'none' CHECK (split IN ('train', 'val', 'test', 'none')),
            synthetic INTEGER NOT NULL DEFAULT 0,
            source TEXT NOT NULL DEFAULT '',
            created_at TEXT NOT NULL
        )""",
        """CREATE TABLE label_versions (
            id INTEGER PRIMARY KEY,
            scene_id TEXT NOT NULL REFERENCES scenes(id) ON DELETE CASCADE,
            version INTEGER NOT NULL,
            parent_version INTEGER NOT NULL,
            path TEXT NOT NULL,
            analyst TEXT NOT NULL,
            tool TEXT NOT NULL,
            checkpoint_id TEXT,
            reason TEXT,
            n_changed INTEGER NOT NULL,
            created_at TEXT NOT NULL,
            UNIQUE (scene_id, version)
        )""",
        """CREATE TABLE checkpoints (
            id TEXT PRIMARY KEY,
            path TEXT NOT NULL,
            name TEXT NOT NULL,
            arch TEXT NOT NULL DEFAULT '',
            encoder TEXT NOT NULL DEFAULT '',
            scheme TEXT NOT NULL DEFAULT '',
            created_at TEXT NOT NULL,
            parent_id TEXT,
            metrics TEXT NOT NULL DEFAULT '{}',
            note TEXT NOT NULL DEFAULT '',
            job_id TEXT
        )""",
        "CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        """CREATE TABLE jobs (
            id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled', 'died')),
            config TEXT NOT NULL DEFAULT '{}',
            pid INTEGER,
            created_at TEXT NOT NULL,
            started_at TEXT,
            finished_at TEXT,
            progress REAL NOT NULL DEFAULT 0,
            message TEXT NOT NULL DEFAULT '',
            log_path TEXT NOT NULL,
            result TEXT,
            cancel_requested INTEGER NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX jobs_status ON jobs(status)",
        """CREATE TABLE job_metrics (
            job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
            step INTEGER NOT NULL,
            epoch INTEGER NOT NULL,
            key TEXT NOT NULL,
            value REAL NOT NULL,
            ts REAL NOT NULL
        )""",
        "CREATE INDEX job_metrics_job ON job_metrics(job_id, step)",
        """CREATE TABLE evaluations (
            id INTEGER PRIMARY KEY,
            checkpoint_id TEXT NOT NULL REFERENCES checkpoints(id) ON DELETE CASCADE,
            split TEXT NOT NULL,
            tta INTEGER NOT NULL,
            data_version TEXT NOT NULL,
            created_at TEXT NOT NULL,
            result TEXT NOT NULL
        )""",
        "CREATE INDEX evaluations_key ON evaluations(checkpoint_id, split, tta, data_version)",
    ),
    (  # 1 -> 2: checkpoint registry (lineage, per-class validation metrics, promotion history and gate overrides)
        _add_column("checkpoints", "data_version", "TEXT"),
        _add_column("checkpoints", "val_data_version", "TEXT"),
        _add_column("checkpoints", "recipe", "TEXT NOT NULL DEFAULT '{}'"),
        """CREATE TABLE IF NOT EXISTS checkpoint_class_metrics (
            checkpoint_id TEXT NOT NULL REFERENCES checkpoints(id) ON DELETE CASCADE,
            split TEXT NOT NULL,
            data_version TEXT NOT NULL,
            class_index INTEGER NOT NULL,
            class_name TEXT NOT NULL,
            iou REAL,
            acc REAL,
            precision REAL,
            f1 REAL,
            support INTEGER,
            source TEXT NOT NULL DEFAULT '',
            created_at TEXT NOT NULL,
            PRIMARY KEY (checkpoint_id, split, data_version, class_name)
        )""",
        """CREATE TABLE IF NOT EXISTS promotions (
            id INTEGER PRIMARY KEY,
            action TEXT NOT NULL CHECK (action IN ('promote', 'rollback', 'set')),
            from_id TEXT,
            to_id TEXT,
            analyst TEXT NOT NULL DEFAULT '',
            reason TEXT NOT NULL DEFAULT '',
            created_at TEXT NOT NULL,
            verdict TEXT,
            override INTEGER NOT NULL DEFAULT 0,
            offending TEXT NOT NULL DEFAULT '[]',
            gate TEXT,
            undone_by INTEGER
        )""",
        "CREATE INDEX IF NOT EXISTS promotions_to ON promotions(to_id)",
    ),
    (  # 2 -> 3: label store of sparse correction layers with undo/redo (old rows are whole-mask PNGs: kind 'full')
        _add_column("label_versions", "kind", "TEXT NOT NULL DEFAULT 'full'"),
        _add_column("label_versions", "target_version", "INTEGER"),
        _add_column("label_versions", "base_version", "INTEGER"),
        _add_column("label_versions", "n_confirmed", "INTEGER NOT NULL DEFAULT 0"),
        _add_column("label_versions", "sha256", "TEXT"),
        "CREATE INDEX IF NOT EXISTS label_versions_analyst ON label_versions(scene_id, analyst)",
    ),
    (  # 3 -> 4: which scenes a checkpoint trained on (leakage warnings), and who moved scenes between splits
        _add_column("checkpoints", "train_scenes", "TEXT"),
        """CREATE TABLE IF NOT EXISTS split_changes (
            id INTEGER PRIMARY KEY,
            scene_id TEXT NOT NULL,
            from_split TEXT NOT NULL,
            to_split TEXT NOT NULL,
            analyst TEXT NOT NULL DEFAULT '',
            reason TEXT NOT NULL DEFAULT '',
            created_at TEXT NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS split_changes_scene ON split_changes(scene_id)",
    ),
    (  # 4 -> 5: archived checkpoints (hidden from pickers, weights deleted; the row keeps lineage and scores)
        _add_column("checkpoints", "archived_at", "TEXT"),
        _add_column("checkpoints", "archived_by", "TEXT NOT NULL DEFAULT ''"),
        _add_column("checkpoints", "archive_reason", "TEXT NOT NULL DEFAULT ''"),
    ),
)


# ---------------------------------------------------------------------- label store: layers and pixel status

PIXEL_ORIGINAL = 0  #: pixel status: the original label, untouched by any correction in effect
PIXEL_CORRECTED = 1  #: pixel status: an analyst set a value that differs from the original label
PIXEL_CONFIRMED = 2  #: pixel status: an analyst confirmed the label (or set it back to the original value)
PIXEL_IGNORED = 255  #: pixel status: the effective label is 255 (ignore), same code as in label masks

ANALYST_MAX = 64  #: longest analyst name (characters, after NFC normalisation and trimming)
REASON_MAX = 2000  #: longest reason text
LAYER_FORMAT = 1  #: version of the .npz layer file format
_LAYER_KINDS = ("layer", "full")  # history entries that carry pixels ("full" = whole-mask PNG of older SegHZ)


def trusted_of(status: np.ndarray) -> np.ndarray:
    """The pixels of a :meth:`Workspace.pixel_status` array that an analyst vouched for: corrected or confirmed."""
    return (status == PIXEL_CORRECTED) | (status == PIXEL_CONFIRMED)


class EmptyEditError(BadInputError):
    """A label edit that changes no pixel and confirms none; no version is created."""


def _conflict(message: str, scene_id: str, base: int, latest: int, overlap: int | None) -> ConflictError:
    err = ConflictError(message)
    err.scene_id, err.base_version, err.latest_version, err.overlap = scene_id, base, latest, overlap
    return err


@dataclass(frozen=True)
class LabelLayer:
    """One correction layer: ``indices`` (int32 flat pixel indices, row * width + col, ascending) take
    ``values`` (uint8 class indices, 255 = ignore); ``confirm`` (int32 flat indices) are pixels confirmed
    as correctly labelled (values unchanged).

    On disk (``labels/<scene>/vNNNN.npz``, ``numpy.savez_compressed``, no pickled objects): arrays
    ``format`` (= 1), ``shape`` (int64 [H, W]), ``indices``, ``values`` and ``confirm``; the SHA-256 of the
    file is kept in the version's row and checked on every read.
    """

    version: int
    shape: tuple[int, int]
    indices: np.ndarray
    values: np.ndarray
    confirm: np.ndarray

    def to_bytes(self) -> bytes:
        """The layer as ``.npz`` bytes."""
        import io

        buf = io.BytesIO()
        np.savez_compressed(buf, format=np.array(LAYER_FORMAT, np.int64), shape=np.array(self.shape, np.int64),
                            indices=self.indices.astype(np.int32), values=self.values.astype(np.uint8),
                            confirm=self.confirm.astype(np.int32))
        return buf.getvalue()


def read_label_layer(path: str | os.PathLike, shape: tuple[int, int], sha256: str | None = None,
                     version: int = 0) -> LabelLayer:
    """Read and check a layer file written by :meth:`LabelLayer.to_bytes`.

    Raises:
        BadInputError: Naming the file, when it is missing, torn (checksum mismatch), unreadable, of another
            format version or for another scene size, or holds indices outside the scene.
    """
    import io
    import zipfile

    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise BadInputError(p, f"cannot read label layer of version {version} ({e})") from None
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise BadInputError(p, f"label layer of version {version} is damaged (checksum mismatch)")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            fmt, shp = int(z["format"]), tuple(int(v) for v in z["shape"])
            idx, vals, conf = z["indices"], z["values"], z["confirm"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise BadInputError(p, f"not a readable label layer ({e})") from None
    if fmt != LAYER_FORMAT:
        raise BadInputError(p, f"label layer format {fmt} is not understood (this SegHZ reads {LAYER_FORMAT})")
    if shp != tuple(shape):
        raise BadInputError(p, f"label layer is for a {shp[1]}x{shp[0]} scene, not {shape[1]}x{shape[0]}")
    n = shape[0] * shape[1]
    if idx.shape != vals.shape or any(a.size and (a.min() < 0 or a.max() >= n) for a in (idx, conf)):
        raise BadInputError(p, "label layer holds pixel indices outside the scene or mismatched values")
    return LabelLayer(version, tuple(shape), idx.astype(np.int64), vals.astype(np.uint8), conf.astype(np.int64))



class NotFoundError(SegHZError, LookupError):
    """A scene, label version, checkpoint, job or evaluation does not exist in the workspace."""


def now_iso() -> str:
    """Current UTC time as an ISO 8601 string with milliseconds (the format of every ``*_at`` column)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def slugify(text: str, fallback: str = "item") -> str:
    """Turn free text into a safe lower-case slug (``a-z0-9_-``, at most 48 characters).

    Args:
        text: Any name, e.g. ``"Xihu Lake (2019).tif"``.
        fallback: Slug returned when nothing usable is left of ``text``.

    Returns:
        A slug such as ``"xihu-lake-2019-tif"``; never empty, never containing ``/`` or ``..``.
    """
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9_]+", "-", ascii_text.lower()).strip("-_")[:48].strip("-_")
    if not slug and text.strip():  # e.g. a Chinese name: keep distinct names distinct
        return f"{fallback}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"
    return slug or fallback


def first_free(base: str, taken, suffix: str = "-{n}") -> str:
    """``base``, or ``base`` + ``suffix`` with the first n = 2, 3, … that is not in ``taken``."""
    if base not in taken:
        return base
    n = 2
    while base + suffix.format(n=n) in taken:
        n += 1
    return base + suffix.format(n=n)


def validate_slug(value: str, what: str) -> str:
    """Check that ``value`` is a safe id (``a-z0-9_-``, starting with a letter or digit, at most 64 chars).

    Args:
        value: The proposed id.
        what: What the id names (used in the error message), e.g. ``"scene id"``.

    Returns:
        ``value`` unchanged.

    Raises:
        ValueError: When ``value`` is empty or holds anything else (slashes, ``..``, spaces, capitals).
    """
    if not isinstance(value, str) or not _SLUG_RE.match(value):
        raise ValueError(
            f"{what} {value!r} is not a safe slug: use 1-64 characters a-z, 0-9, '_' or '-', starting with a letter or digit"
        )
    return value


def _json_or_none(text: str | None) -> Any:
    return None if text is None else json.loads(text)


@dataclass(frozen=True)
class Scene:
    """One scene: an image, its optional original label and its place in the splits."""

    id: str
    name: str
    image_path: str
    label_path: str | None
    scheme: str
    width: int
    height: int
    crs: str | None
    transform: tuple[float, ...] | None
    split: str
    synthetic: bool
    source: str
    created_at: str

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Scene:
        """Build a Scene from a ``scenes`` row."""
        tr = _json_or_none(row["transform"])
        return cls(
            id=row["id"], name=row["name"], image_path=row["image_path"], label_path=row["label_path"],
            scheme=row["scheme"], width=row["width"], height=row["height"], crs=row["crs"],
            transform=tuple(tr) if tr is not None else None, split=row["split"], synthetic=bool(row["synthetic"]),
            source=row["source"], created_at=row["created_at"],
        )


@dataclass(frozen=True)
class LabelVersion:
    """One entry of a scene's label history (version 0, the original label, has no row).

    ``kind``: ``layer`` (a sparse correction layer, ``path`` = its .npz), ``full`` (a whole-mask PNG saved by
    older SegHZ; read as its difference from the previous version), ``undo`` / ``redo`` (``target_version``
    = the layer taken back / re-applied; no file). ``parent_version`` is the version it was put on top of,
    ``base_version`` the one the analyst edited (they differ after a merge). ``n_changed`` = pixels whose
    value it changes, ``n_confirmed`` = pixels it confirms, ``undone`` = a layer currently out of effect.
    """

    id: int
    scene_id: str
    version: int
    parent_version: int
    path: str
    analyst: str
    tool: str
    checkpoint_id: str | None
    reason: str | None
    n_changed: int
    created_at: str
    kind: str = "full"
    target_version: int | None = None
    base_version: int | None = None
    n_confirmed: int = 0
    sha256: str | None = None
    undone: bool = False

    @classmethod
    def from_row(cls, row: sqlite3.Row, undone: bool = False) -> LabelVersion:
        """Build a LabelVersion from a ``label_versions`` row."""
        return cls(**dict(row), undone=bool(undone))


@dataclass(frozen=True)
class LabelProvenance:
    """A label version pixel by pixel (:meth:`Workspace.label_provenance`): ``original`` and ``effective``
    class-index masks, ``status`` (``PIXEL_*`` codes), ``touched`` (int32: ``+v`` = set by the layer of version
    ``v``, ``-v`` = confirmed by it, 0 = the original label) and ``entries`` (version -> its history entry, for
    the layers in ``touched``)."""

    scene_id: str
    version: int
    original: np.ndarray
    effective: np.ndarray
    status: np.ndarray
    touched: np.ndarray
    entries: dict


@dataclass(frozen=True)
class Checkpoint:
    """A registered model checkpoint; ``metrics`` and ``recipe`` are decoded from JSON.

    Lineage: ``parent_id`` (the checkpoint it was fine-tuned from), ``data_version`` (of the training split
    when it was trained), ``val_data_version`` (of the validation split its recorded scores were measured
    on) and ``recipe`` (the TrainConfig as a dict; empty when unknown).
    """

    id: str
    path: str
    name: str
    arch: str
    encoder: str
    scheme: str
    created_at: str
    parent_id: str | None
    metrics: dict
    note: str
    job_id: str | None
    data_version: str | None = None
    val_data_version: str | None = None
    recipe: dict = field(default_factory=dict)
    train_scenes: tuple[str, ...] | None = None  # workspace scenes it trained on (None: not recorded)
    archived_at: str | None = None  # when it was archived (its weights deleted); None: in use
    archived_by: str = ""
    archive_reason: str = ""

    @property
    def archived(self) -> bool:
        return self.archived_at is not None

    def archived_text(self) -> str:
        """``"archived 2026-11-29 05:10 UTC by Ann (reason)"``, or "" for a checkpoint in use."""
        if self.archived_at is None:
            return ""
        return (f"archived {self.archived_at[:16].replace('T', ' ')} UTC" + (f" by {self.archived_by}" if self.archived_by else "")
                + (f" ({self.archive_reason})" if self.archive_reason else ""))

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Checkpoint:
        """Build a Checkpoint from a ``checkpoints`` row."""
        d = dict(row)
        d["metrics"] = json.loads(d["metrics"])
        d["recipe"] = json.loads(d.get("recipe") or "{}")
        ts = _json_or_none(d.get("train_scenes"))
        d["train_scenes"] = tuple(str(x) for x in ts) if isinstance(ts, list) else None
        return cls(**d)


@dataclass(frozen=True)
class SplitChange:
    """One move of a scene between splits (``split_changes`` row): who, when, why."""

    id: int
    scene_id: str
    from_split: str
    to_split: str
    analyst: str
    reason: str
    created_at: str

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> SplitChange:
        """Build a SplitChange from a ``split_changes`` row."""
        return cls(**dict(row))


@dataclass(frozen=True)
class Promotion:
    """One change of the active checkpoint (``promotions`` row); ``offending`` and ``gate`` decoded from JSON.

    ``action`` is ``promote`` (through the regression gate), ``rollback`` or ``set`` (direct, e.g. the demo
    setup or the CLI). ``verdict`` is the gate's status at the time (None when the gate was not consulted),
    ``override`` whether a flagged/unknown verdict was overridden, ``offending`` the classes the gate
    flagged, ``undone_by`` the id of the rollback that reverted this change.
    """

    id: int
    action: str
    from_id: str | None
    to_id: str | None
    analyst: str
    reason: str
    created_at: str
    verdict: str | None
    override: bool
    offending: list
    gate: dict | None
    undone_by: int | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Promotion:
        """Build a Promotion from a ``promotions`` row."""
        d = dict(row)
        d["override"] = bool(d["override"])
        d["offending"] = json.loads(d["offending"] or "[]")
        d["gate"] = _json_or_none(d["gate"])
        return cls(**d)


@dataclass(frozen=True)
class Job:
    """A background job; ``config`` and ``result`` are decoded from JSON."""

    id: str
    kind: str
    status: str
    config: dict
    pid: int | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    progress: float
    message: str
    log_path: str
    result: dict | None
    cancel_requested: bool

    @property
    def active(self) -> bool:
        """True while the job is queued or running."""
        return self.status in ACTIVE_JOB_STATUSES

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        """Build a Job from a ``jobs`` row."""
        d = dict(row)
        d["config"] = json.loads(d["config"])
        d["result"] = _json_or_none(d["result"])
        d["cancel_requested"] = bool(d["cancel_requested"])
        return cls(**d)


@dataclass(frozen=True)
class Evaluation:
    """A cached evaluation of a checkpoint on a split at one data version; ``result`` is decoded from JSON."""

    id: int
    checkpoint_id: str
    split: str
    tta: bool
    data_version: str
    created_at: str
    result: dict

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Evaluation:
        """Build an Evaluation from an ``evaluations`` row."""
        d = dict(row)
        d["tta"] = bool(d["tta"])
        d["result"] = json.loads(d["result"])
        return cls(**d)


_JOB_FIELDS = {
    "status", "config", "pid", "started_at", "finished_at", "progress", "message", "result", "cancel_requested",
}


class Workspace:
    """A SegHZ workspace folder and its SQLite index.

    Args:
        root: Workspace folder; created when missing. Defaults to ``$SEGHZ_WORKSPACE`` or ``./workspace``.

    Raises:
        SegHZError: When the index was written by a newer SegHZ (unknown schema version).
    """

    SUBDIRS = ("scenes", "labels", "checkpoints", "jobs", "evals")

    def __init__(self, root: str | os.PathLike | None = None):
        if root is None:
            root = os.environ.get("SEGHZ_WORKSPACE") or "workspace"
        self.root = Path(root).expanduser().resolve()
        for sub in self.SUBDIRS:
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.db_path = self.root / "index.sqlite"
        self._init_db()

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"

    # ------------------------------------------------------------------ connections and schema

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """Open a short-lived autocommit connection (busy timeout 10 s, foreign keys on); closed on exit."""
        conn = sqlite3.connect(self.db_path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            conn.execute("PRAGMA foreign_keys = ON")
            yield conn
        finally:
            conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A ``BEGIN IMMEDIATE`` transaction: holds the write lock, commits on success, rolls back on error."""
        with self.connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _init_db(self) -> None:
        with self.connect() as conn:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise SegHZError(f"{self.db_path}: SQLite refused WAL mode (got '{mode}'); is the folder on a network drive?")
            if self._stored_schema_version(conn) == SCHEMA_VERSION:
                return
        with self.transaction() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT version FROM schema_version").fetchone()
            current = row[0] if row else 0
            if current > SCHEMA_VERSION:
                raise SegHZError(
                    f"{self.db_path}: schema version {current} is newer than this SegHZ understands ({SCHEMA_VERSION}); "
                    "update SegHZ"
                )
            for version in range(current, SCHEMA_VERSION):
                for stmt in _MIGRATIONS[version]:
                    if callable(stmt):
                        stmt(conn)
                    else:
                        conn.execute(stmt)
            if row is None:
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            elif current < SCHEMA_VERSION:
                conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))

    @staticmethod
    def _stored_schema_version(conn: sqlite3.Connection) -> int:
        if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'").fetchone() is None:
            return 0
        row = conn.execute("SELECT version FROM schema_version").fetchone()
        return row[0] if row else 0

    def schema_version(self) -> int:
        """Schema version of the index."""
        with self.connect() as conn:
            return self._stored_schema_version(conn)

    # ------------------------------------------------------------------ paths

    def path(self, stored: str) -> Path:
        """Resolve a path stored in the index (relative to the workspace root, or absolute) to an absolute Path."""
        p = Path(stored)
        return p if p.is_absolute() else self.root / p

    def relative(self, path: str | os.PathLike, what: str, *, inside: bool = True) -> str:
        """Express ``path`` relative to the workspace root, as stored in the index.

        Args:
            path: Absolute path, or a path relative to the workspace root.
            what: What the path names, for error messages.
            inside: When True, paths outside the workspace are refused; when False they are kept absolute.

        Returns:
            A POSIX-style relative path, or an absolute one for an outside path when ``inside`` is False.

        Raises:
            BadInputError: When ``inside`` is True and the path lies outside the workspace.
        """
        p = Path(path)
        full = (p if p.is_absolute() else self.root / p).resolve()
        try:
            return full.relative_to(self.root).as_posix()
        except ValueError:
            if inside:
                raise BadInputError(path, f"{what} must lie inside the workspace {self.root}") from None
            return str(full)

    # ------------------------------------------------------------------ scenes

    def unique_scene_id(self, name: str) -> str:
        """A scene id derived from ``name`` that is not taken yet (``name``, ``name-2``, ``name-3``, ...)."""
        with self.connect() as conn:
            return self._unique_scene_id(conn, slugify(name, "scene"))

    @staticmethod
    def _unique_scene_id(conn: sqlite3.Connection, base: str) -> str:
        taken = {r[0] for r in conn.execute("SELECT id FROM scenes WHERE id = ? OR id LIKE ?", (base, base + "-%"))}
        return first_free(base, taken)

    def add_scene(
        self,
        name: str,
        image_path: str | os.PathLike,
        scheme: str,
        *,
        label_path: str | os.PathLike | None = None,
        split: str = "none",
        synthetic: bool = False,
        source: str = "",
        scene_id: str | None = None,
        crs: str | None = None,
        transform: tuple[float, ...] | list[float] | None = None,
    ) -> Scene:
        """Register a scene whose files already lie inside the workspace (normally under ``scenes/``).

        Width, height, CRS and transform are read from the image; ``crs``/``transform`` override them.
        The original label must be a single-band class-index mask of the image's size, holding indices of
        ``scheme`` (0..C-1) or 255; it is never modified afterwards.

        Args:
            name: Display name.
            image_path: The image, absolute or relative to the workspace root.
            scheme: Class scheme name of the label (see :func:`seghz.classes.scheme_names`).
            label_path: The original class-index label, or None for an unlabelled scene.
            split: ``"train"``, ``"val"``, ``"test"`` or ``"none"``.
            synthetic: True for generated demo data.
            source: The file the scene was imported from.
            scene_id: The id to register (a safe slug), exactly: when it is taken, BadInputError and nothing is
                registered (an import reserved ``scenes/<scene_id>/`` for it; another id would part the scene from
                its folder). None: a slug of ``name``, made free with ``-2``, ``-3``...
            crs: CRS overriding the image's.
            transform: Affine (a, b, c, d, e, f) overriding the image's.

        Returns:
            The stored Scene (its ``id`` is ``scene_id`` when given).

        Raises:
            ValueError: For an unsafe ``scene_id``, an unknown split or a transform without 6 numbers.
            KeyError: For an unknown scheme.
            BadInputError: For missing or unreadable files, files outside the workspace, a label that is not
                single-band, differs in size from the image or holds values outside the scheme; for a
                ``scene_id`` that is taken.
        """
        base = validate_slug(scene_id, "scene id") if scene_id is not None else slugify(name, "scene")
        self._check_split(split)
        sch = get_scheme(scheme)
        image_rel = self.relative(image_path, "scene image")
        info = raster_info(self.path(image_rel))
        if crs is None:
            crs = info.crs
        if transform is None:
            transform = info.transform
        if transform is not None:
            transform = [float(v) for v in transform]
            if len(transform) != 6:
                raise ValueError(f"scene '{name}': transform needs 6 affine numbers (a, b, c, d, e, f), got {len(transform)}")
        label_rel = None
        if label_path is not None:
            label_rel = self.relative(label_path, "scene label")
            label_full = self.path(label_rel)
            mask = read_index_mask(label_full)
            if mask.shape != (info.height, info.width):
                raise BadInputError(
                    label_full,
                    f"label size {mask.shape[1]}x{mask.shape[0]} differs from image {info.width}x{info.height}",
                )
            self._check_mask_values(mask, sch.num_classes, str(label_full))
        with self.transaction() as conn:
            if scene_id is None:
                sid = self._unique_scene_id(conn, base)
            else:
                sid = base
                row = conn.execute("SELECT name FROM scenes WHERE id = ?", (sid,)).fetchone()
                if row is not None:
                    raise BadInputError(f"scene id '{sid}'", f"is already the id of scene '{row[0]}' in workspace "
                                        f"{self.root}; nothing was registered")
            conn.execute(
                "INSERT INTO scenes (id, name, image_path, label_path, scheme, width, height, crs, transform, split, "
                "synthetic, source, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (sid, name, image_rel, label_rel, scheme, info.width, info.height, crs,
                 json.dumps(transform) if transform is not None else None, split, int(bool(synthetic)), str(source), now_iso()),
            )
        return self.get_scene(sid)

    @staticmethod
    def _check_split(split: str) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")

    @staticmethod
    def _check_mask_values(mask: np.ndarray, num_classes: int, source: str) -> None:
        bad = (mask >= num_classes) & (mask != IGNORE)
        if bad.any():
            ys, xs = np.nonzero(bad)
            raise BadInputError(
                source,
                f"{int(bad.sum())} pixel(s) hold values {sorted(np.unique(mask[bad]).tolist())[:10]} that are not class "
                f"indices 0..{num_classes - 1} or 255 (ignore); first at row {ys[0]}, col {xs[0]}",
            )

    def get_scene(self, scene_id: str) -> Scene:
        """The scene with id ``scene_id``.

        Raises:
            NotFoundError: When no such scene exists.
        """
        with self.connect() as conn:
            row = conn.execute("SELECT * FROM scenes WHERE id = ?", (scene_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"scene '{scene_id}' does not exist in workspace {self.root}")
        return Scene.from_row(row)

    def list_scenes(self, split: str | None = None) -> list[Scene]:
        """All scenes (or those of one split), ordered by id."""
        with self.connect() as conn:
            if split is None:
                rows = conn.execute("SELECT * FROM scenes ORDER BY id").fetchall()
            else:
                self._check_split(split)
                rows = conn.execute("SELECT * FROM scenes WHERE split = ? ORDER BY id", (split,)).fetchall()
        return [Scene.from_row(r) for r in rows]

    def set_split(self, scene_id: str, split: str, analyst: str = "", reason: str = "") -> None:
        """Move a scene to ``split`` (``train``, ``val``, ``test`` or ``none``); see :meth:`move_scenes`.

        Raises:
            ValueError: For an unknown split.
            NotFoundError: When the scene does not exist.
        """
        self.move_scenes({scene_id: split}, analyst=analyst, reason=reason)

    def move_scenes(self, moves: dict[str, str], analyst: str = "", reason: str = "") -> list[SplitChange]:
        """Move scenes between splits, all or none, each move recorded with who and why (:meth:`split_history`).

        A move to the split a scene is already in is no move (nothing recorded). Cached evaluations need no
        clean-up: they are keyed by :meth:`data_version`, which changes when a scene joins or leaves a split.

        Returns:
            The recorded moves, in scene-id order.

        Raises:
            ValueError: For an unknown split (nothing moved).
            NotFoundError: When a scene does not exist (nothing moved).
        """
        for split in moves.values():
            self._check_split(split)
        done: list[SplitChange] = []
        with self.transaction() as conn:
            for scene_id in sorted(moves):
                row = conn.execute("SELECT split FROM scenes WHERE id = ?", (scene_id,)).fetchone()
                if row is None:
                    raise NotFoundError(f"scene '{scene_id}' does not exist in workspace {self.root}")
                if row[0] == moves[scene_id]:
                    continue
                conn.execute("UPDATE scenes SET split = ? WHERE id = ?", (moves[scene_id], scene_id))
                cur = conn.execute(
                    "INSERT INTO split_changes (scene_id, from_split, to_split, analyst, reason, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)", (scene_id, row[0], moves[scene_id], analyst.strip(), reason.strip(),
                                                  now_iso()))
                done.append(SplitChange(cur.lastrowid, scene_id, row[0], moves[scene_id], analyst.strip(),
                                        reason.strip(), now_iso()))
        return done

    def split_history(self, scene_id: str | None = None, limit: int = 50) -> list[SplitChange]:
        """Moves between splits (of one scene, or all), newest first."""
        sql = "SELECT * FROM split_changes {where} ORDER BY id DESC LIMIT ?"
        with self.connect() as conn:
            if scene_id is None:
                rows = conn.execute(sql.format(where=""), (int(limit),)).fetchall()
            else:
                rows = conn.execute(sql.format(where="WHERE scene_id = ?"), (scene_id, int(limit))).fetchall()
        return [SplitChange.from_row(r) for r in rows]

    def scene_path(self, scene: Scene | str, which: str) -> Path | None:
        """Absolute path of a scene's ``"image"`` or original ``"label"`` (None when it has no label).

        Raises:
            ValueError: When ``which`` is neither ``"image"`` nor ``"label"``.
        """
        if isinstance(scene, str):
            scene = self.get_scene(scene)
        if which == "image":
            return self.path(scene.image_path)
        if which == "label":
            return self.path(scene.label_path) if scene.label_path else None
        raise ValueError(f"scene_path: 'which' must be 'image' or 'label', got {which!r}")

    def delete_scene(self, scene_id: str) -> None:
        """Remove a scene, its label versions and their files, and its own files under ``scenes/``.

        While the deleting transaction holds the write lock (the scene still registered for everyone else), its
        ``labels/<id>/`` folder and its files are renamed to unique ``.trash-*`` names; after the commit those are
        removed. So nothing of a scene imported again under the same id meanwhile (a new ``scenes/<id>/`` or
        ``labels/<id>/``) can be hit. The scene's own import folder ``scenes/<id>/`` goes whole (its extra files
        too); files under ``scenes/`` that another scene also refers to stay. An interruption leaves at worst
        ``.trash-*`` leftovers, never rows without files; a failed commit renames everything back.

        Raises:
            NotFoundError: When the scene does not exist.
        """
        scene = self.get_scene(scene_id)
        self._sweep_trash()
        moved: list[tuple[Path, Path]] = []  # (original path, trash path)
        try:
            with self.transaction() as conn:
                conn.execute("DELETE FROM scenes WHERE id = ?", (scene_id,))
                for src, trash_dir in self._scene_leftovers(conn, scene):
                    dst = trash_dir / f".trash-{uuid.uuid4().hex[:12]}-{src.name}"
                    os.rename(src, dst)
                    moved.append((src, dst))
                for src, _ in moved:  # a folder emptied of this scene's files (not scenes/ itself)
                    parent = src.parent
                    if parent != self.root / "scenes" and parent.parent == self.root / "scenes" and parent.is_dir() \
                            and not any(parent.iterdir()):
                        parent.rmdir()
        except BaseException:
            for src, dst in reversed(moved):  # the scene stays registered: its files come back
                try:
                    src.parent.mkdir(parents=True, exist_ok=True)
                    os.rename(dst, src)
                except OSError as e:
                    log.error("deleting scene %s failed and %s could not be moved back to %s: %s", scene_id, dst, src, e)
            raise
        for _, dst in moved:
            if dst.is_dir() and not dst.is_symlink():
                shutil.rmtree(dst, ignore_errors=True)
            else:
                dst.unlink(missing_ok=True)

    TRASH_MAX_AGE_S = 3600.0

    def _sweep_trash(self, max_age_s: float | None = None) -> list[Path]:
        """Remove the ``.trash-*`` names :meth:`delete_scene` left behind when it was killed between its commit and
        its removal (under ``labels/`` and ``scenes/``), once they are older than ``max_age_s`` (an hour by default):
        a younger one may belong to a delete still running in another process, which renames it back if its
        commit fails. Returns what was removed; one that cannot be removed is logged and left."""
        age = self.TRASH_MAX_AGE_S if max_age_s is None else max_age_s
        now, gone = time.time(), []
        for folder in (self.root / "labels", self.root / "scenes"):
            for p in folder.glob(".trash-*") if folder.is_dir() else ():
                try:
                    if now - p.lstat().st_mtime < age:
                        continue
                    if p.is_dir() and not p.is_symlink():
                        shutil.rmtree(p)
                    else:
                        p.unlink()
                    gone.append(p)
                except OSError as e:
                    log.warning("could not remove the leftover %s of an interrupted scene delete: %s", p, e)
        return gone

    def _scene_leftovers(self, conn: sqlite3.Connection, scene: Scene) -> list[tuple[Path, Path]]:
        """What :meth:`delete_scene` removes of ``scene`` (already deleted in ``conn``'s transaction), each with the
        folder its trash name goes in: ``labels/<id>/``; the scene's import folder ``scenes/<id>/`` when no other
        scene refers to a file in it, else its image and label files under ``scenes/`` no other scene refers to."""
        out: list[tuple[Path, Path]] = []
        labels = self.root / "labels" / scene.id
        if labels.is_dir() and not labels.is_symlink():
            out.append((labels, self.root / "labels"))
        scenes_dir = self.root / "scenes"
        others = [r for r in conn.execute("SELECT image_path, label_path FROM scenes")]
        used = {self.path(v) for r in others for v in r if v}
        own = scenes_dir / scene.id
        files = [self.path(p) for p in (scene.image_path, scene.label_path) if p]
        if own.is_dir() and not own.is_symlink() and all(f.parent == own for f in files) \
                and not any(own in u.parents for u in used):
            out.append((own, scenes_dir))
            return out
        for f in dict.fromkeys(files):
            if scenes_dir in f.parents and f not in used and (f.is_file() or f.is_symlink()):
                out.append((f, scenes_dir))
        return out

    # ------------------------------------------------------------------ label versions

    def latest_label_version(self, scene_id: str) -> int:
        """Latest label version of a scene (0 = the original label, nothing saved yet).

        Every history entry (a saved correction layer, an undo, a redo) is a new version.
        """
        with self.connect() as conn:
            return self._latest_version(conn, scene_id)

    def latest_label_versions(self) -> dict[str, int]:
        """``{scene id: latest label version}`` of every scene that has saved any (one query; a scene missing from
        it is at version 0, its original label)."""
        with self.connect() as conn:
            return {str(sid): int(v) for sid, v in conn.execute(
                "SELECT scene_id, MAX(version) FROM label_versions GROUP BY scene_id")}

    @staticmethod
    def _latest_version(conn: sqlite3.Connection, scene_id: str) -> int:
        return conn.execute(
            "SELECT COALESCE(MAX(version), 0) FROM label_versions WHERE scene_id = ?", (scene_id,)
        ).fetchone()[0]

    def _original_label(self, scene: Scene) -> np.ndarray:
        if scene.label_path is None:
            return np.full((scene.height, scene.width), IGNORE, np.uint8)
        mask = read_index_mask(self.path(scene.label_path))
        if mask.shape != (scene.height, scene.width):
            raise BadInputError(self.path(scene.label_path), f"original label of scene '{scene.id}' is {mask.shape[1]}x"
                                f"{mask.shape[0]}, the scene {scene.width}x{scene.height}")
        return mask

    @staticmethod
    def _history_rows(conn: sqlite3.Connection, scene_id: str, upto: int | None = None) -> list[sqlite3.Row]:
        if upto is None:
            return conn.execute("SELECT * FROM label_versions WHERE scene_id = ? ORDER BY version", (scene_id,)).fetchall()
        return conn.execute(
            "SELECT * FROM label_versions WHERE scene_id = ? AND version <= ? ORDER BY version", (scene_id, int(upto))
        ).fetchall()

    @staticmethod
    def _active_versions(rows: list[sqlite3.Row]) -> list[int]:
        """Versions of the correction layers in effect after ``rows`` (oldest first = order of application)."""
        active: set[int] = set()
        for r in rows:
            if r["kind"] in _LAYER_KINDS:
                active.add(r["version"])
            elif r["kind"] == "undo":
                active.discard(r["target_version"])
            elif r["kind"] == "redo":
                active.add(r["target_version"])
        return sorted(active)

    def _load_layer(self, scene: Scene, row: sqlite3.Row, by_version: dict[int, sqlite3.Row],
                    cache: dict[int, LabelLayer]) -> LabelLayer:
        """The correction layer written by a ``layer`` row, or derived from a legacy ``full`` row (the pixels
        where its whole-mask PNG differs from the previous legacy version, or the original)."""
        v = row["version"]
        if v in cache:
            return cache[v]
        n = scene.height * scene.width
        if row["kind"] == "layer":
            layer = read_label_layer(self.path(row["path"]), (scene.height, scene.width), row["sha256"], version=v)
        elif row["kind"] == "full":
            full = read_index_mask(self.path(row["path"])).ravel()
            if full.size != n:
                raise BadInputError(self.path(row["path"]), f"label version {v} of scene '{scene.id}' has "
                                    f"{full.size} pixels, the scene {n}")
            parent = by_version.get(row["parent_version"])
            if parent is not None and parent["kind"] == "full":
                prev = read_index_mask(self.path(parent["path"])).ravel()
            else:
                prev = self._original_label(scene).ravel()
            idx = np.flatnonzero(full != prev).astype(np.int32)
            layer = LabelLayer(v, (scene.height, scene.width), idx, full[idx], np.zeros(0, np.int32))
        else:
            raise ValueError(f"scene '{scene.id}': label version {v} is a {row['kind']} entry, not a correction layer")
        cache[v] = layer
        return layer

    def _compose(self, conn: sqlite3.Connection, scene: Scene, version: int | None,
                 status: bool = False, touched: list | None = None) -> tuple[np.ndarray, np.ndarray | None, int]:
        """(effective label, pixel status or None, version) of ``version`` (None = latest), in ``conn``'s snapshot.

        With ``status``, a list passed as ``touched`` receives the int32 H×W array of the layer that last touched
        each pixel (``+v`` set by version ``v``, ``-v`` confirmed by it, 0 untouched) and then the original label."""
        rows = self._history_rows(conn, scene.id, version)
        latest_here = rows[-1]["version"] if rows else 0
        if version is None:
            version = latest_here
        elif version < 0 or latest_here != version:
            raise NotFoundError(f"scene '{scene.id}' has no label version {version} "
                                f"(latest is {self._latest_version(conn, scene.id)})")
        original = self._original_label(scene)
        eff = original.ravel().copy()
        last = np.zeros(eff.size, np.int32) if status else None
        by_version = {r["version"]: r for r in rows}
        cache: dict[int, LabelLayer] = {}
        for v in self._active_versions(rows):
            layer = self._load_layer(scene, by_version[v], by_version, cache)
            eff[layer.indices] = layer.values
            if last is not None:
                last[layer.indices] = v
                last[layer.confirm] = -v
        eff = eff.reshape(original.shape)
        if last is None:
            return eff, None, version
        last = last.reshape(original.shape)
        st = np.full(original.shape, PIXEL_ORIGINAL, np.uint8)
        st[(last > 0) & (eff != original)] = PIXEL_CORRECTED
        st[(last < 0) | ((last > 0) & (eff == original))] = PIXEL_CONFIRMED
        st[eff == IGNORE] = PIXEL_IGNORED
        if touched is not None:
            touched.extend([last, original])
        return eff, st, version

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        with self.connect() as conn:
            conn.execute("BEGIN")  # one read snapshot for the history rows
            try:
                yield conn
            finally:
                conn.execute("COMMIT")

    def effective_label(self, scene_id: str, version: int | None = None) -> np.ndarray:
        """The class-index mask (uint8, H×W, 255 = ignore) of a label version: the original label with the
        correction layers in effect at that version applied in order (undone layers skipped).

        Args:
            scene_id: The scene.
            version: Version to read; None = latest, 0 = the original label (all 255 for an unlabelled scene).

        Raises:
            NotFoundError: When the scene or the version does not exist.
            BadInputError: When a layer or mask file is missing, unreadable or fails its checksum.
        """
        scene = self.get_scene(scene_id)
        with self._snapshot() as conn:
            return self._compose(conn, scene, None if version is None else int(version))[0]

    def pixel_status(self, scene_id: str, version: int | None = None) -> np.ndarray:
        """Per-pixel status (uint8 H×W) of a label version.

        Codes: ``PIXEL_ORIGINAL`` = 0 (untouched original label), ``PIXEL_CORRECTED`` = 1 (an analyst set a
        value that differs from the original), ``PIXEL_CONFIRMED`` = 2 (an analyst confirmed the label, or set
        it back to the original value), ``PIXEL_IGNORED`` = 255 (the effective label is 255, whoever made it so).
        The newest layer in effect that touches a pixel decides between corrected and confirmed.

        Raises:
            NotFoundError: When the scene or the version does not exist.
        """
        scene = self.get_scene(scene_id)
        with self._snapshot() as conn:
            return self._compose(conn, scene, None if version is None else int(version), status=True)[1]

    def label_and_status(self, scene_id: str, version: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`effective_label` and :meth:`pixel_status` of one version, read in one pass."""
        scene = self.get_scene(scene_id)
        with self._snapshot() as conn:
            eff, st, _ = self._compose(conn, scene, None if version is None else int(version), status=True)
        return eff, st

    def label_provenance(self, scene_id: str, version: int | None = None) -> LabelProvenance:
        """Who set each pixel of a label version: the original label, the effective label, the pixel status and
        the version (with its history entry) of the layer in effect that last set or confirmed each pixel.

        Raises:
            NotFoundError: When the scene or the version does not exist.
            BadInputError: When a layer or mask file is missing, unreadable or fails its checksum.
        """
        scene = self.get_scene(scene_id)
        with self._snapshot() as conn:
            touched: list = []
            eff, st, v = self._compose(conn, scene, None if version is None else int(version), status=True,
                                       touched=touched)
            rows = self._history_rows(conn, scene_id, v)
        entries = {r["version"]: LabelVersion.from_row(r) for r in rows if r["kind"] in _LAYER_KINDS}
        return LabelProvenance(scene_id, v, touched[1], eff, st, touched[0], entries)

    def trusted_mask(self, scene_id: str, version: int | None = None) -> np.ndarray:
        """Boolean H×W mask of pixels an analyst vouched for (corrected or confirmed, not ignored); training
        must never drop these with its noise mask."""
        return trusted_of(self.pixel_status(scene_id, version))

    def label_and_trusted(self, scene_id: str, version: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`effective_label` and :meth:`trusted_mask` of one version, read in one pass."""
        eff, st = self.label_and_status(scene_id, version)
        return eff, trusted_of(st)

    def label_layer(self, scene_id: str, version: int) -> LabelLayer:
        """The correction layer saved as ``version`` (for a legacy whole-mask version: its difference from the
        previous version).

        Raises:
            NotFoundError: When the version does not exist.
            ValueError: When the version is an undo/redo entry (it has no layer of its own).
        """
        scene = self.get_scene(scene_id)
        with self._snapshot() as conn:
            rows = self._history_rows(conn, scene_id)
            by_version = {r["version"]: r for r in rows}
            if int(version) not in by_version:
                raise NotFoundError(f"scene '{scene_id}' has no label version {version} "
                                    f"(latest is {rows[-1]['version'] if rows else 0})")
            return self._load_layer(scene, by_version[int(version)], by_version, {})

    def label_history(self, scene_id: str, analyst: str | None = None) -> list[LabelVersion]:
        """History of a scene's labels, oldest first (the original, version 0, is not listed).

        Each entry carries its provenance (analyst, UTC time, tool, checkpoint id, reason), its ``kind``
        (``layer``; ``full`` for versions saved as whole masks by older SegHZ; ``undo``/``redo`` with
        ``target_version``) and ``undone`` (whether a layer is currently out of effect).

        Args:
            scene_id: The scene.
            analyst: Only this analyst's entries (compared after Unicode NFC normalisation and trimming).

        Raises:
            NotFoundError: When the scene does not exist.
        """
        self.get_scene(scene_id)
        with self._snapshot() as conn:
            rows = self._history_rows(conn, scene_id)
        active = set(self._active_versions(rows))
        name = None if analyst is None else unicodedata.normalize("NFC", analyst).strip()
        return [LabelVersion.from_row(r, undone=r["kind"] in _LAYER_KINDS and r["version"] not in active)
                for r in rows if name is None or r["analyst"] == name]

    # ---- saving

    @staticmethod
    def _check_provenance(scene_id: str, analyst: Any, tool: Any, reason: Any) -> tuple[str, str, str | None]:
        source = f"label edit for scene '{scene_id}'"
        if not isinstance(analyst, str) or not analyst.strip():
            raise BadInputError(source, "the analyst's name is required (every label version records who made "
                                "it); got an empty one")
        name = unicodedata.normalize("NFC", analyst).strip()
        if len(name) > ANALYST_MAX:
            raise BadInputError(source, f"analyst name is {len(name)} characters long; at most {ANALYST_MAX} allowed")
        if any(unicodedata.category(ch).startswith("C") for ch in name):
            raise BadInputError(source, f"analyst name {name!r} holds control characters")
        if not isinstance(tool, str) or not tool.strip() or len(tool.strip()) > 64:
            raise BadInputError(source, f"tool must be a name of 1-64 characters, got {tool!r}")
        if reason is not None:
            if not isinstance(reason, str):
                raise BadInputError(source, f"reason must be text, got {type(reason).__name__}")
            reason = unicodedata.normalize("NFC", reason).strip() or None
            if reason is not None and len(reason) > REASON_MAX:
                raise BadInputError(source, f"reason is {len(reason)} characters long; at most {REASON_MAX} allowed")
        return name, tool.strip(), reason

    @staticmethod
    def _flat_pixels(pixels: Any, shape: tuple[int, int], source: str, what: str) -> np.ndarray:
        """Flat int64 indices from a boolean H×W mask or an array of flat indices."""
        arr = np.asarray(pixels)
        n = shape[0] * shape[1]
        if arr.dtype == bool:
            if arr.shape != shape:
                raise BadInputError(source, f"{what} mask shape {arr.shape} differs from the scene's (height, width) = {shape}")
            return np.flatnonzero(arr)
        if arr.size == 0:
            return np.zeros(0, np.int64)
        if not np.issubdtype(arr.dtype, np.integer) or arr.ndim != 1:
            raise BadInputError(source, f"{what} must be a boolean H×W mask or a 1-D array of flat pixel indices, "
                                f"got dtype {arr.dtype} shape {arr.shape}")
        if arr.min() < 0 or arr.max() >= n:
            raise BadInputError(source, f"{what} index {int(arr.min() if arr.min() < 0 else arr.max())} lies outside "
                                f"the scene's {shape[1]}x{shape[0]} = {n} pixels")
        return arr.astype(np.int64)

    def save_label_version(
        self,
        scene_id: str,
        mask: np.ndarray,
        base_version: int,
        analyst: str,
        tool: str,
        checkpoint_id: str | None = None,
        reason: str | None = None,
        *,
        confirm: np.ndarray | None = None,
        merge: bool = False,
    ) -> int:
        """Save an edited whole class-index mask: stored as a correction layer holding the pixels where ``mask``
        differs from label version ``base_version`` (see :meth:`save_label_edit` for the rules).

        Args:
            scene_id: The scene.
            mask: uint8 H×W class indices of the scene's scheme (255 = ignore), the scene's size.
            base_version: The version the edit started from (what :meth:`latest_label_version` said then).
            analyst: Who made the edit (1-64 characters, any script).
            tool: What made the edit (e.g. ``"brush"``, ``"accept-prediction"``).
            checkpoint_id: Model whose prediction the edit used; None = the workspace's active checkpoint.
            reason: Free-text reason.
            confirm: Pixels (boolean H×W mask or flat indices) the analyst confirms as correctly labelled.
            merge: When ``base_version`` is stale, merge non-overlapping edits instead of refusing every stale
                save (the default here is strict, as before; :meth:`save_label_edit` merges by default).

        Returns:
            The new version number.

        Raises:
            BadInputError (a ValueError): Empty/too long analyst name, a mask of the wrong shape or with
                values that are not class indices, or an edit that changes and confirms nothing
                (:class:`EmptyEditError`; no version is created).
            NotFoundError: When the scene does not exist.
            ConflictError: When ``base_version`` is stale (and, with ``merge``, the edits overlap).
        """
        self._check_provenance(scene_id, analyst, tool, reason)
        scene = self.get_scene(scene_id)
        source = f"new label for scene '{scene_id}'"
        arr = np.asarray(mask)
        if arr.shape != (scene.height, scene.width):
            raise BadInputError(source, f"mask shape {arr.shape} differs from the scene's (height, width) = "
                                f"({scene.height}, {scene.width})")
        if arr.dtype != np.uint8:
            if not np.issubdtype(arr.dtype, np.integer) or (arr.size and (arr.min() < 0 or arr.max() > 255)):
                raise BadInputError(source, f"mask must hold uint8 class indices, got dtype {arr.dtype}")
            arr = arr.astype(np.uint8)
        self._check_mask_values(arr, get_scheme(scene.scheme).num_classes, source)
        base = self._base_label(scene, base_version)
        changed = np.flatnonzero(arr.ravel() != base.ravel())
        return self._save_layer(scene, int(base_version), changed, arr.ravel()[changed], confirm, analyst, tool,
                                checkpoint_id, reason, merge, base)

    def save_label_edit(
        self,
        scene_id: str,
        base_version: int,
        analyst: str,
        tool: str,
        *,
        pixels: np.ndarray | None = None,
        values: int | np.ndarray | None = None,
        confirm: np.ndarray | None = None,
        checkpoint_id: str | None = None,
        reason: str | None = None,
        merge: bool = True,
    ) -> int:
        """Save a sparse correction: ``pixels`` get ``values``, ``confirm`` pixels are vouched for unchanged.

        Pixels set to the value they already hold in label version ``base_version`` are not changes: they
        are recorded as confirmed (the analyst looked at them and chose that class). An edit with no pixel
        and no confirmation (an empty stroke) creates no version (:class:`EmptyEditError`).

        Concurrency: when ``base_version`` is no longer the latest, the edit is merged on top of the latest
        version if none of its pixels (changed or confirmed) was touched by the versions saved since
        ``base_version``; otherwise (or with ``merge=False``) it is refused with :class:`ConflictError`
        naming the scene, both versions and the number of overlapping pixels.

        Durability: the layer is written to ``labels/<scene>/vNNNN.npz`` atomically (temp file, fsync,
        rename, folder fsync) and then its row is committed; the committed row is the acknowledgement.

        Args:
            scene_id: The scene.
            base_version: Version the edit was made on.
            analyst: Who made it (1-64 characters after trimming, any script, no control characters).
            tool: What made it (e.g. ``"brush"``, ``"polygon"``, ``"accept-prediction"``, ``"confirm"``).
            pixels: Boolean H×W mask or 1-D flat indices (row * width + col) of the pixels to set.
            values: One class index for all ``pixels``, or one per flat index (uint8; 255 = ignore).
            confirm: Boolean H×W mask or flat indices of pixels confirmed as correctly labelled.
            checkpoint_id: Model whose prediction the edit used; None = the workspace's active checkpoint.
            reason: Optional free text (any script, at most 2000 characters).
            merge: Merge non-overlapping stale edits (default) instead of refusing them.

        Returns:
            The new version number.
        """
        self._check_provenance(scene_id, analyst, tool, reason)
        scene = self.get_scene(scene_id)
        shape = (scene.height, scene.width)
        source = f"label edit for scene '{scene_id}'"
        idx = self._flat_pixels(pixels if pixels is not None else np.zeros(0, np.int64), shape, source, "pixels")
        if values is None:
            if idx.size:
                raise BadInputError(source, "pixels given without values")
            vals = np.zeros(0, np.uint8)
        else:
            v = np.asarray(values)
            if not np.issubdtype(v.dtype, np.integer):
                raise BadInputError(source, f"values must be integer class indices, got dtype {v.dtype}")
            if v.ndim == 0:
                v = np.full(idx.size, int(v), np.int64)
            elif v.shape == shape and np.asarray(pixels).dtype == bool:
                v = v.ravel()[idx]
            elif v.shape != idx.shape:
                raise BadInputError(source, f"{v.size} values for {idx.size} pixels")
            if v.size and (v.min() < 0 or v.max() > 255):
                raise BadInputError(source, f"values must be class indices 0..255, got {int(v.min())}..{int(v.max())}")
            vals = v.astype(np.uint8)
        if np.unique(idx).size != idx.size:
            raise BadInputError(source, "the same pixel is given more than once")
        nc = get_scheme(scene.scheme).num_classes
        bad = (vals >= nc) & (vals != IGNORE)
        if bad.any():
            raise BadInputError(source, f"class id(s) {sorted(np.unique(vals[bad]).tolist())[:10]} are not class "
                                f"indices 0..{nc - 1} of scheme '{scene.scheme}' or 255 (ignore)")
        base = self._base_label(scene, base_version)
        keep = base.ravel()[idx] != vals
        if not keep.all():  # painted with the value they already hold: the analyst vouches for them
            extra = idx[~keep]
            if confirm is not None:
                extra = np.union1d(extra, self._flat_pixels(confirm, shape, source, "confirm"))
            confirm = extra
        return self._save_layer(scene, int(base_version), idx[keep], vals[keep], confirm, analyst, tool,
                                checkpoint_id, reason, merge, base)

    def _base_label(self, scene: Scene, base_version: Any) -> np.ndarray:
        if isinstance(base_version, bool) or not isinstance(base_version, (int, np.integer)) or base_version < 0:
            raise BadInputError(f"label edit for scene '{scene.id}'",
                                f"base_version must be a version number >= 0, got {base_version!r}")
        with self._snapshot() as conn:
            latest = self._latest_version(conn, scene.id)
            if base_version > latest:
                raise ConflictError(f"scene '{scene.id}': this edit is based on label version {base_version}, which "
                                    f"does not exist (the latest is version {latest}); reload the labels")
            return self._compose(conn, scene, int(base_version))[0]

    def _save_layer(self, scene: Scene, base_version: int, idx: np.ndarray, vals: np.ndarray, confirm: Any,
                    analyst: str, tool: str, checkpoint_id: str | None, reason: str | None, merge: bool,
                    base: np.ndarray) -> int:
        name, tool, reason = self._check_provenance(scene.id, analyst, tool, reason)
        shape = (scene.height, scene.width)
        source = f"label edit for scene '{scene.id}'"
        conf = np.zeros(0, np.int64) if confirm is None else self._flat_pixels(confirm, shape, source, "confirm")
        conf = np.setdiff1d(conf, idx)  # a pixel both set and confirmed is set
        if idx.size == 0 and conf.size == 0:
            raise EmptyEditError(source, f"the edit on label version {base_version} changes no pixel and confirms "
                                 "none; no version was created")
        order = np.argsort(idx, kind="stable")
        layer = LabelLayer(0, shape, idx[order].astype(np.int32), vals[order].astype(np.uint8), conf.astype(np.int32))
        data = layer.to_bytes()
        digest = hashlib.sha256(data).hexdigest()
        touched_new = np.concatenate([layer.indices, layer.confirm])
        with self.transaction() as conn:
            latest = self._latest_version(conn, scene.id)
            if base_version > latest:
                raise ConflictError(f"scene '{scene.id}': label version {base_version} no longer exists (latest is "
                                    f"{latest}); reload the labels")
            if base_version != latest:
                self._check_stale(conn, scene, base_version, latest, touched_new, merge)
            version = latest + 1
            if checkpoint_id is None:
                checkpoint_id = self._active_id(conn)
            rel = f"labels/{scene.id}/v{version:04d}.npz"
            atomic_write_bytes(self.path(rel), data)
            conn.execute(
                "INSERT INTO label_versions (scene_id, version, parent_version, path, analyst, tool, checkpoint_id, "
                "reason, n_changed, created_at, kind, target_version, base_version, n_confirmed, sha256) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'layer', NULL, ?, ?, ?)",
                (scene.id, version, latest, rel, name, tool, checkpoint_id, reason, int(layer.indices.size), now_iso(),
                 base_version, int(layer.confirm.size), digest),
            )
        return version

    def _check_stale(self, conn: sqlite3.Connection, scene: Scene, base: int, latest: int, pixels: np.ndarray,
                     merge: bool) -> None:
        """Raise ConflictError unless ``merge`` and no pixel of ``pixels`` was touched by versions base+1..latest."""
        rows = self._history_rows(conn, scene.id)
        by_version = {r["version"]: r for r in rows}
        last = by_version[latest]
        by = f"saved by '{last['analyst']}' at {last['created_at']}"
        head = f"scene '{scene.id}': this edit is based on label version {base}, but the latest is version {latest} ({by})"
        if not merge:
            raise _conflict(f"{head}; reload the latest labels and redo the edit", scene.id, base, latest, None)
        touched = np.zeros(scene.height * scene.width, bool)
        hits: list[str] = []
        cache: dict[int, LabelLayer] = {}
        for r in rows:
            if r["version"] <= base:
                continue
            target = by_version[r["target_version"]] if r["kind"] in ("undo", "redo") else r
            layer = self._load_layer(scene, target, by_version, cache)
            px = np.concatenate([layer.indices, layer.confirm])
            k = int(np.count_nonzero(np.isin(pixels, px, assume_unique=False)))
            if k:
                hits.append(f"v{r['version']} by '{r['analyst']}' ({k} px)")
            touched[px] = True
        overlap = int(np.count_nonzero(touched[pixels]))
        if overlap:
            raise _conflict(
                f"{head}; {overlap} of the edit's {pixels.size} pixel(s) were also changed since version {base} "
                f"({', '.join(hits)}); reload the latest labels and redo the edit on those pixels",
                scene.id, base, latest, overlap)

    # ---- undo / redo

    def _undo_redo_targets(self, rows: list[sqlite3.Row], name: str) -> tuple[int | None, int | None]:
        active = set(self._active_versions(rows))
        mine = [r for r in rows if r["analyst"] == name]
        undo = max((r["version"] for r in mine if r["kind"] in _LAYER_KINDS and r["version"] in active), default=None)
        stack: list[int] = []
        for r in mine:
            if r["kind"] in _LAYER_KINDS:
                stack.clear()
            elif r["kind"] == "undo":
                stack.append(r["target_version"])
            elif r["kind"] == "redo" and stack and stack[-1] == r["target_version"]:
                stack.pop()
        while stack and stack[-1] in active:  # re-applied some other way; nothing to redo there
            stack.pop()
        return undo, (stack[-1] if stack else None)

    def undo_redo_state(self, scene_id: str, analyst: str) -> tuple[int | None, int | None]:
        """``(version undo would take back, version redo would re-apply)`` for this analyst; None = nothing."""
        name, _, _ = self._check_provenance(scene_id, analyst, "undo", None)
        self.get_scene(scene_id)
        with self._snapshot() as conn:
            return self._undo_redo_targets(self._history_rows(conn, scene_id), name)

    def undo_label_edit(self, scene_id: str, analyst: str, reason: str | None = None, *,
                        expected_version: int | None = None) -> int:
        """Take back the analyst's newest correction layer still in effect on the scene.

        Nothing is deleted: a new ``undo`` version is recorded (so the history shows who undid what, when).

        Args:
            expected_version: The version the caller means to undo (what :meth:`undo_redo_state` said when its
                button was drawn). When the analyst's newest layer in effect is another one now (saved meanwhile,
                e.g. from another tab), nothing is undone and :class:`ConflictError` names both versions.

        Returns:
            The new version number.

        Raises:
            NotFoundError: When the scene does not exist or the analyst has no layer in effect to undo.
            ConflictError: When ``expected_version`` is given and is not the version undo would take back.
        """
        return self._undo_redo(scene_id, analyst, reason, "undo", expected_version)

    def redo_label_edit(self, scene_id: str, analyst: str, reason: str | None = None, *,
                        expected_version: int | None = None) -> int:
        """Re-apply the layer the analyst undid last (as a new ``redo`` version; the layer keeps its place in
        the order of application). Redo is no longer possible once the analyst saved a new edit.

        Args:
            expected_version: The version the caller means to re-apply; another one is refused
                (:class:`ConflictError`, naming both), as for :meth:`undo_label_edit`.

        Raises:
            NotFoundError: When the scene does not exist or there is nothing to redo.
            ConflictError: When ``expected_version`` is given and is not the version redo would re-apply.
        """
        return self._undo_redo(scene_id, analyst, reason, "redo", expected_version)

    def _undo_redo(self, scene_id: str, analyst: str, reason: str | None, kind: str,
                   expected_version: int | None = None) -> int:
        name, _, reason = self._check_provenance(scene_id, analyst, kind, reason)
        scene = self.get_scene(scene_id)
        with self.transaction() as conn:
            rows = self._history_rows(conn, scene_id)
            undo, redo = self._undo_redo_targets(rows, name)
            target = undo if kind == "undo" else redo
            if expected_version is not None and target != int(expected_version):
                now = f"version {target}" if target is not None else "nothing"
                err = ConflictError(
                    f"scene '{scene_id}': {kind} was asked for label version {int(expected_version)} of analyst "
                    f"'{name}', but {kind} would now act on {now} (the label history changed since, e.g. a save "
                    f"from another tab); nothing was {'undone' if kind == 'undo' else 're-applied'}")
                err.scene_id, err.expected_version, err.target_version = scene_id, int(expected_version), target
                raise err
            if target is None:
                raise NotFoundError(f"scene '{scene_id}': analyst '{name}' has no label edit to {kind}")
            latest = rows[-1]["version"]
            before = self._compose(conn, scene, latest)[0]
            version = latest + 1
            conn.execute(
                "INSERT INTO label_versions (scene_id, version, parent_version, path, analyst, tool, checkpoint_id, "
                "reason, n_changed, created_at, kind, target_version, base_version, n_confirmed, sha256) "
                "VALUES (?, ?, ?, '', ?, ?, ?, ?, 0, ?, ?, ?, ?, 0, NULL)",
                (scene_id, version, latest, name, kind, self._active_id(conn), reason, now_iso(), kind, target, latest),
            )
            after = self._compose(conn, scene, version)[0]
            conn.execute("UPDATE label_versions SET n_changed = ? WHERE scene_id = ? AND version = ?",
                         (int(np.count_nonzero(before != after)), scene_id, version))
        return version

    # ---- export

    def export_label(self, scene_id: str, path: str | os.PathLike, version: int | None = None) -> Path:
        """Write a label version as a class-index mask: ``.png`` (palette PNG in scheme colours) or
        ``.tif``/``.tiff`` (GeoTIFF with the scene's CRS and transform, nodata 255). Written atomically.

        Raises:
            BadInputError: For another file suffix.
            NotFoundError: When the scene or version does not exist.
        """
        p = Path(path)
        scene = self.get_scene(scene_id)
        mask = self.effective_label(scene_id, version)
        scheme = get_scheme(scene.scheme)
        suffix = p.suffix.lower()
        if suffix == ".png":
            write_index_mask(p, mask, scheme)
        elif suffix in (".tif", ".tiff"):  # tagged with what it is: a GIS user sees which scene and version
            v = self.latest_label_version(scene_id) if version is None else int(version)
            saved = next((h for h in self.label_history(scene_id) if h.version == v), None)
            write_index_mask_geotiff(p, mask, crs=scene.crs, transform=scene.transform, scheme=scheme,
                                     tags={"scene": scene.id, "label_version": v, "split": scene.split,
                                           "label_saved_by": saved.analyst if saved else None,
                                           "label_saved_at": saved.created_at if saved else None})
        else:
            raise BadInputError(p, f"cannot export the label of scene '{scene_id}' as '{suffix or p.name}'; "
                                "use .png or .tif")
        return p

    # ------------------------------------------------------------------ settings

    def get_setting(self, key: str, default: Any = None) -> Any:
        """A JSON-decoded setting, or ``default`` when unset."""
        with self.connect() as conn:
            row = conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def set_setting(self, key: str, value: Any) -> None:
        """Store a JSON-serialisable setting; ``None`` removes it."""
        with self.transaction() as conn:
            if value is None:
                conn.execute("DELETE FROM settings WHERE key = ?", (key,))
            else:
                conn.execute(
                    "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (key, json.dumps(value)),
                )

    # ------------------------------------------------------------------ checkpoints (registry)

    def register_checkpoint(
        self,
        path: str | os.PathLike,
        meta: dict,
        *,
        checkpoint_id: str | None = None,
        name: str | None = None,
        parent_id: str | None = None,
        note: str = "",
        job_id: str | None = None,
        data_version: str | None = None,
        val_data_version: str | None = None,
        recipe: dict | None = None,
        val_metrics: dict | None = None,
        val_split: str = "val",
        train_scenes: list[str] | None = None,
    ) -> str:
        """Register a checkpoint file, with its lineage and (optionally) its per-class validation metrics.

        Args:
            path: The checkpoint file (kept relative when inside the workspace, absolute otherwise).
            meta: Its metadata; ``arch``, ``encoder``, ``scheme``, ``metrics`` (dict), and optionally ``name``,
                ``parent_id``, ``data_version``, ``val_data_version`` and ``recipe`` are read from it.
            checkpoint_id: Wanted id (a safe slug); defaults to a slug of the name plus a random suffix.
            name: Display name; defaults to ``meta["name"]`` or the file's stem.
            parent_id: Checkpoint this one was fine-tuned from; defaults to ``meta.get("parent_id")``.
            note: Free text.
            job_id: Job that trained it.
            data_version: :meth:`data_version` of the training split when it was trained.
            val_data_version: :meth:`data_version` of the validation split ``val_metrics`` were measured on.
            recipe: The training recipe (a TrainConfig as a dict).
            val_metrics: Per-class validation scores, ``{class: {"iou", "acc", "precision", "f1", "support"}}``
                (as :func:`seghz.metrics.scores` gives in ``per_class``) or ``{class: iou}``; stored in the same
                transaction under ``(val_split, val_data_version)``, which must then be given.
            train_scenes: Ids of the workspace scenes it was trained on (defaults to ``meta.get("train_scenes")``;
                None when unknown): :meth:`checkpoints_trained_on` reads them to warn of leakage.

        Returns:
            The checkpoint id.

        Raises:
            BadInputError: When the file does not exist.
            ValueError: For an unsafe ``checkpoint_id``, or ``val_metrics`` without ``val_data_version``.
            ConflictError: When ``checkpoint_id`` is already registered.
        """
        p = Path(path)
        full = p if p.is_absolute() else self.root / p
        if not full.is_file():
            raise BadInputError(full, "checkpoint file does not exist")
        name = name or meta.get("name") or full.stem
        cid = (
            validate_slug(checkpoint_id, "checkpoint id")
            if checkpoint_id is not None
            else f"{slugify(name, 'ckpt')[:40]}-{uuid.uuid4().hex[:6]}"
        )
        data_version = data_version if data_version is not None else meta.get("data_version")
        val_data_version = val_data_version if val_data_version is not None else meta.get("val_data_version")
        recipe = recipe if recipe is not None else meta.get("recipe")
        train_scenes = train_scenes if train_scenes is not None else meta.get("train_scenes")
        if val_metrics and not val_data_version:
            raise ValueError("register_checkpoint: val_metrics need the val_data_version they were measured on")
        scheme = meta.get("scheme", "")
        if isinstance(scheme, Mapping):  # a checkpoint file's metadata holds the whole scheme block: keep its name
            scheme = scheme.get("name", "")
        with self.transaction() as conn:
            if conn.execute("SELECT 1 FROM checkpoints WHERE id = ?", (cid,)).fetchone():
                raise ConflictError(f"checkpoint id '{cid}' is already registered in workspace {self.root}")
            conn.execute(
                "INSERT INTO checkpoints (id, path, name, arch, encoder, scheme, created_at, parent_id, metrics, note, job_id, "
                "data_version, val_data_version, recipe, train_scenes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (cid, self.relative(full, "checkpoint", inside=False), name, str(meta.get("arch", "")),
                 str(meta.get("encoder", "")), str(scheme), now_iso(),
                 parent_id if parent_id is not None else meta.get("parent_id"),
                 json.dumps(meta.get("metrics") or {}), note, job_id,
                 None if data_version is None else str(data_version),
                 None if val_data_version is None else str(val_data_version),
                 json.dumps(recipe if isinstance(recipe, dict) else {}),
                 json.dumps(sorted({str(x) for x in train_scenes})) if isinstance(train_scenes, (list, tuple))
                 else None),
            )
            if val_metrics:
                self._write_class_metrics(conn, cid, val_split, str(val_data_version), val_metrics, "train")
        return cid

    def get_checkpoint(self, checkpoint_id: str) -> Checkpoint:
        """The checkpoint with id ``checkpoint_id``.

        Raises:
            NotFoundError: When it is not registered.
        """
        with self.connect() as conn:
            row = conn.execute("SELECT * FROM checkpoints WHERE id = ?", (checkpoint_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"checkpoint '{checkpoint_id}' is not registered in workspace {self.root}")
        return Checkpoint.from_row(row)

    def usable_checkpoint(self, checkpoint_id: str) -> Checkpoint:
        """The checkpoint ``checkpoint_id`` when it can predict: registered and not archived (its weights exist).

        Raises:
            NotFoundError: When it is not registered, or is archived (the message says when and by whom).
        """
        ck = self.get_checkpoint(checkpoint_id)
        if ck.archived:
            raise NotFoundError(f"checkpoint '{checkpoint_id}' is {ck.archived_text()}: its weights are gone")
        return ck

    def list_checkpoints(self, include_archived: bool = False) -> list[Checkpoint]:
        """The registered checkpoints, newest first; archived ones (:meth:`archive_checkpoint`) only with
        ``include_archived`` (lineage walks need them: an archived parent is still a parent)."""
        where = "" if include_archived else "WHERE archived_at IS NULL "
        with self.connect() as conn:
            rows = conn.execute(f"SELECT * FROM checkpoints {where}ORDER BY created_at DESC, rowid DESC").fetchall()
        return [Checkpoint.from_row(r) for r in rows]

    def archive_checkpoint(self, checkpoint_id: str, *, analyst: str, reason: str = "",
                           delete_file: bool = True) -> Checkpoint:
        """Retire a checkpoint: it leaves every picker and list (``include_archived`` brings it back), its weights
        file is deleted (``delete_file``; only a file inside the workspace's ``checkpoints/`` that no other checkpoint
        in use names; a failed delete is logged: callers tell by whether the file is still there), and its row
        stays: lineage, recorded scores, training scenes, and the promotion history keep naming it.

        Raises:
            ValueError: Without an analyst name (an archive deletes weights: it is recorded with who did it).
            NotFoundError: When it is not registered.
            ConflictError: When it is already archived, is the active model, is the model a rollback would return
                to, or a queued or running job uses it.
        """
        if not (analyst or "").strip():
            raise ValueError("archiving a checkpoint deletes its weights: give the analyst's name (it is recorded)")
        with self.transaction() as conn:
            row = conn.execute("SELECT * FROM checkpoints WHERE id = ?", (checkpoint_id,)).fetchone()
            if row is None:
                raise NotFoundError(f"checkpoint '{checkpoint_id}' is not registered in workspace {self.root}")
            ck = Checkpoint.from_row(row)
            if ck.archived:
                raise ConflictError(f"checkpoint '{checkpoint_id}' is already {ck.archived_text()}")
            active = self._active_id(conn)
            if active == checkpoint_id:
                raise ConflictError(f"checkpoint '{checkpoint_id}' is the active model: promote another one or roll "
                                    "back first, then archive it")
            back = self._rollback_row(conn, active)
            if back is not None and back["from_id"] == checkpoint_id:
                raise ConflictError(f"checkpoint '{checkpoint_id}' is the model a rollback would return to (it was "
                                    f"active before '{active}'): archiving it would leave nothing to roll back to")
            for jid, kind, config in conn.execute(
                    "SELECT id, kind, config FROM jobs WHERE status IN ('queued', 'running')").fetchall():
                if checkpoint_id in _config_values(json.loads(config or "{}")):
                    raise ConflictError(f"checkpoint '{checkpoint_id}' is used by the {kind} job {jid}, which is "
                                        "queued or running: wait for it or cancel it first")
            conn.execute("UPDATE checkpoints SET archived_at = ?, archived_by = ?, archive_reason = ? WHERE id = ?",
                         (now_iso(), analyst.strip(), (reason or "").strip(), checkpoint_id))
            # another checkpoint in use may name the same file (`checkpoints add --no-copy` twice): it stays
            shared = conn.execute("SELECT 1 FROM checkpoints WHERE path = ? AND id != ? AND archived_at IS NULL",
                                  (ck.path, checkpoint_id)).fetchone() is not None
        if delete_file and not shared:
            f = self.path(ck.path)
            inside = self.root / "checkpoints"
            if f.resolve().is_relative_to(inside.resolve()):
                try:
                    f.unlink()
                except FileNotFoundError:
                    pass
                except OSError as e:  # archived all the same; the caller sees the file is still there
                    log.warning("archived checkpoint %s, but could not delete %s: %s", checkpoint_id, f, e)
        return self.get_checkpoint(checkpoint_id)

    def checkpoint_path(self, checkpoint: Checkpoint | str) -> Path:
        """Absolute path of a checkpoint's file."""
        if isinstance(checkpoint, str):
            checkpoint = self.get_checkpoint(checkpoint)
        return self.path(checkpoint.path)

    def lineage_learning(self, include_archived: bool = False) -> tuple[list[Checkpoint], dict[str, frozenset[str]],
                                                                        set[str]]:
        """Every checkpoint in use (newest first; archived ones too with ``include_archived``), the workspace scenes
        each learned from (its own recorded ``train_scenes`` plus its ancestors', through ``parent_id``: an archived
        ancestor counts), and the ids of those whose lineage holds a checkpoint that did not record them (registered
        from a file, older SegHZ): what they learned is unknown. An archived model cannot be scored or used any more,
        so leakage warnings and the val proposal leave it out."""
        walk = self.list_checkpoints(include_archived=True)
        by_id = {c.id: c for c in walk}
        every = walk if include_archived else [c for c in walk if not c.archived]
        learned, unknown = {}, set()
        for c in every:
            seen, scenes, a = set(), set(), c
            while a is not None and a.id not in seen:  # the lineage walk, in memory
                if a.train_scenes is None:
                    unknown.add(c.id)
                else:
                    scenes.update(a.train_scenes)
                seen.add(a.id)
                a = by_id.get(a.parent_id) if a.parent_id else None
            learned[c.id] = frozenset(scenes)
        return every, learned, unknown

    def learned_scenes(self) -> dict[str, frozenset[str]]:
        """``{checkpoint id: the workspace scenes it is known to have learned from}``: those it was trained on
        itself plus those of the checkpoints it was fine-tuned from (through ``parent_id``). A checkpoint whose
        training scenes were not recorded adds none (:meth:`unrecorded_learning` lists who that leaves unsure)."""
        return self.lineage_learning()[1]

    def unrecorded_learning(self) -> list[Checkpoint]:
        """Checkpoints (newest first) whose lineage holds one that did not record its training scenes (a file
        registered with ``checkpoints add``, older SegHZ): they may have learned from any scene."""
        every, _, unknown = self.lineage_learning()
        return [c for c in every if c.id in unknown]

    def checkpoints_trained_on(self, scene_id: str) -> list[Checkpoint]:
        """Registered checkpoints that learned from scene ``scene_id`` (:meth:`learned_scenes`), newest first."""
        every, learned, _ = self.lineage_learning()
        return [c for c in every if scene_id in learned.get(c.id, ())]

    def lineage(self, checkpoint_id: str) -> list[Checkpoint]:
        """The checkpoint and its ancestors through ``parent_id``: ``[itself, parent, grandparent, ...]``.

        The walk stops at a checkpoint without a parent, at a parent that is not registered (e.g. a file path
        recorded by the CLI trainer), or at a cycle.

        Raises:
            NotFoundError: When ``checkpoint_id`` itself is not registered.
        """
        out = [self.get_checkpoint(checkpoint_id)]
        seen = {checkpoint_id}
        while out[-1].parent_id and out[-1].parent_id not in seen:
            seen.add(out[-1].parent_id)
            try:
                out.append(self.get_checkpoint(out[-1].parent_id))
            except NotFoundError:
                break
        return out

    # per-class metrics ------------------------------------------------------------------

    @staticmethod
    def _write_class_metrics(
        conn: sqlite3.Connection, checkpoint_id: str, split: str, data_version: str, per_class: dict, source: str
    ) -> None:
        def num(v: Any) -> float | None:
            try:
                f = float(v)
            except (TypeError, ValueError):
                return None
            return None if math.isnan(f) else f

        ts = now_iso()
        conn.execute(
            "DELETE FROM checkpoint_class_metrics WHERE checkpoint_id = ? AND split = ? AND data_version = ?",
            (checkpoint_id, split, data_version),
        )
        rows = []
        for i, (cls_name, v) in enumerate(per_class.items()):
            d = v if isinstance(v, dict) else {"iou": v}
            support = d.get("support")
            rows.append((checkpoint_id, split, data_version, i, str(cls_name), num(d.get("iou")), num(d.get("acc")),
                         num(d.get("precision")), num(d.get("f1")), None if support is None else int(support), source, ts))
        conn.executemany(
            "INSERT INTO checkpoint_class_metrics (checkpoint_id, split, data_version, class_index, class_name, iou, acc, "
            "precision, f1, support, source, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )

    def record_class_metrics(
        self, checkpoint_id: str, split: str, data_version: str, per_class: dict, source: str = "eval"
    ) -> None:
        """Store a checkpoint's per-class scores on ``split`` at ``data_version`` (replacing earlier ones there).

        Args:
            per_class: ``{class: {"iou", "acc", "precision", "f1", "support"}}`` (missing keys stay NULL) or
                ``{class: iou}``, in class order.
            source: Where they come from: ``"train"`` (the training job's validation) or ``"eval"``.

        Raises:
            NotFoundError: When the checkpoint is not registered.
        """
        with self.transaction() as conn:
            if conn.execute("SELECT 1 FROM checkpoints WHERE id = ?", (checkpoint_id,)).fetchone() is None:
                raise NotFoundError(f"checkpoint '{checkpoint_id}' is not registered in workspace {self.root}")
            self._write_class_metrics(conn, checkpoint_id, split, str(data_version), per_class, source)

    def class_metrics(self, checkpoint_id: str, split: str = "val", data_version: str | None = None) -> dict[str, dict]:
        """Per-class scores of a checkpoint on ``split``: ``{class: {"iou", "acc", "precision", "f1", "support"}}``.

        ``data_version`` None gives the most recently recorded ones. Empty when none were recorded.
        """
        with self.connect() as conn:
            if data_version is None:
                row = conn.execute(
                    "SELECT data_version FROM checkpoint_class_metrics WHERE checkpoint_id = ? AND split = ? "
                    "ORDER BY created_at DESC, rowid DESC LIMIT 1", (checkpoint_id, split),
                ).fetchone()
                if row is None:
                    return {}
                data_version = row[0]
            rows = conn.execute(
                "SELECT class_name, iou, acc, precision, f1, support FROM checkpoint_class_metrics "
                "WHERE checkpoint_id = ? AND split = ? AND data_version = ? ORDER BY class_index",
                (checkpoint_id, split, data_version),
            ).fetchall()
        return {r["class_name"]: {k: r[k] for k in ("iou", "acc", "precision", "f1", "support")} for r in rows}

    def class_metrics_versions(self, checkpoint_id: str, split: str = "val") -> list[str]:
        """Data versions of ``split`` at which per-class scores of the checkpoint were recorded, newest first."""
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT data_version, MAX(created_at) AS t FROM checkpoint_class_metrics WHERE checkpoint_id = ? "
                "AND split = ? GROUP BY data_version ORDER BY t DESC", (checkpoint_id, split),
            ).fetchall()
        return [r[0] for r in rows]

    # active checkpoint, promotion history, rollback ------------------------------------------

    def set_active_checkpoint(self, checkpoint_id: str | None, *, analyst: str = "", reason: str = "") -> None:
        """Make a registered checkpoint the active model directly (None clears it), without the regression gate.

        The change is recorded in the promotion history as action ``set`` (so it can be rolled back). Use
        :meth:`promote` to go through the regression gate.

        Raises:
            NotFoundError: When the checkpoint is not registered.
        """
        self.record_activation(checkpoint_id, action="set", analyst=analyst, reason=reason)

    def active_checkpoint(self) -> Checkpoint | None:
        """The active checkpoint, or None when none is set (or it was unregistered)."""
        cid = self.get_setting("active_checkpoint_id")
        if cid is None:
            return None
        try:
            return self.get_checkpoint(cid)
        except NotFoundError:
            return None

    @staticmethod
    def _active_id(conn: sqlite3.Connection) -> str | None:
        row = conn.execute("SELECT value FROM settings WHERE key = 'active_checkpoint_id'").fetchone()
        return None if row is None else json.loads(row[0])

    @staticmethod
    def _write_active(conn: sqlite3.Connection, checkpoint_id: str | None) -> None:
        if checkpoint_id is None:
            conn.execute("DELETE FROM settings WHERE key = 'active_checkpoint_id'")
        else:
            conn.execute(
                "INSERT INTO settings (key, value) VALUES ('active_checkpoint_id', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (json.dumps(checkpoint_id),),
            )

    _UNSET: Any = object()

    def record_activation(
        self,
        checkpoint_id: str | None,
        *,
        action: str = "set",
        analyst: str = "",
        reason: str = "",
        verdict: dict | None = None,
        override: bool = False,
        expected_active: Any = _UNSET,
    ) -> Promotion:
        """Make ``checkpoint_id`` active and append the change to the promotion history, atomically.

        This is the low-level write; :func:`seghz.gate.promote` decides whether a promotion is allowed.

        Args:
            checkpoint_id: The checkpoint to activate (None clears the active model).
            action: ``promote``, ``set`` (or ``rollback``, used by :meth:`rollback`).
            analyst: Who made the change.
            reason: Why (required by the gate for an override).
            verdict: The regression gate's verdict as a dict (``status``, ``offending``, ...), stored whole.
            override: Whether a verdict other than ``pass`` was overridden.
            expected_active: When given, the change is refused unless this is still the active checkpoint id
                (the gate verdict was computed against it).

        Raises:
            ValueError: For an unknown action.
            NotFoundError: When the checkpoint is not registered.
            ConflictError: When the active checkpoint is no longer ``expected_active``.
        """
        if action not in PROMOTION_ACTIONS:
            raise ValueError(f"unknown promotion action {action!r}; use one of {PROMOTION_ACTIONS}")
        offending = [o.get("class") if isinstance(o, dict) else str(o) for o in (verdict or {}).get("offending", [])]
        with self.transaction() as conn:
            if checkpoint_id is not None:
                row = conn.execute("SELECT * FROM checkpoints WHERE id = ?", (checkpoint_id,)).fetchone()
                if row is None:
                    raise NotFoundError(f"checkpoint '{checkpoint_id}' is not registered in workspace {self.root}")
                if row["archived_at"] is not None:
                    raise ConflictError(f"checkpoint '{checkpoint_id}' is {Checkpoint.from_row(row).archived_text()}: "
                                        "its weights are gone, it cannot become the active model")
            current = self._active_id(conn)
            if expected_active is not self._UNSET and current != expected_active:
                raise ConflictError(
                    f"the active checkpoint changed to '{current}' (expected '{expected_active}') before this change "
                    "was saved; check the candidate against the new active model and try again"
                )
            self._write_active(conn, checkpoint_id)
            cur = conn.execute(
                "INSERT INTO promotions (action, from_id, to_id, analyst, reason, created_at, verdict, override, offending, "
                "gate) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (action, current, checkpoint_id, analyst or "", reason or "", now_iso(),
                 None if verdict is None else verdict.get("status"), int(bool(override)), json.dumps(offending),
                 None if verdict is None else json.dumps(verdict)),
            )
            row = conn.execute("SELECT * FROM promotions WHERE id = ?", (cur.lastrowid,)).fetchone()
        return Promotion.from_row(row)

    def promotion_history(self, limit: int | None = None) -> list[Promotion]:
        """Changes of the active checkpoint, newest first (at most ``limit``)."""
        sql = "SELECT * FROM promotions ORDER BY id DESC"
        with self.connect() as conn:
            rows = conn.execute(sql + (" LIMIT ?" if limit is not None else ""),
                                (int(limit),) if limit is not None else ()).fetchall()
        return [Promotion.from_row(r) for r in rows]

    @staticmethod
    def _rollback_row(conn: sqlite3.Connection, active_id: str | None) -> sqlite3.Row | None:
        if active_id is None:
            return None
        return conn.execute(
            "SELECT * FROM promotions WHERE action IN ('promote', 'set') AND undone_by IS NULL AND to_id = ? "
            "ORDER BY id DESC LIMIT 1", (active_id,),
        ).fetchone()

    def rollback_target(self) -> str | None:
        """The checkpoint :meth:`rollback` would return to (the one active before the current one), or None."""
        with self.connect() as conn:
            row = self._rollback_row(conn, self._active_id(conn))
        return None if row is None else row["from_id"]

    def rollback(self, analyst: str = "", reason: str = "") -> Checkpoint:
        """Return to the previously active checkpoint, undoing the change that made the current one active.

        Repeated rollbacks walk further back (promote A→B, B→C; rollback → B; rollback → A). The rollback is
        recorded in the promotion history and the undone change is marked with its id.

        Returns:
            The checkpoint that is active now.

        Raises:
            NotFoundError: When there is no earlier active checkpoint to return to (nothing was promoted, the
                current one was the first), or it is no longer registered.
        """
        with self.transaction() as conn:
            current = self._active_id(conn)
            row = self._rollback_row(conn, current)
            if row is None or row["from_id"] is None:
                raise NotFoundError(
                    f"nothing to roll back in workspace {self.root}: no earlier active checkpoint recorded before "
                    f"'{current}'" if current else f"nothing to roll back in workspace {self.root}: no active checkpoint"
                )
            target = row["from_id"]
            trow = conn.execute("SELECT * FROM checkpoints WHERE id = ?", (target,)).fetchone()
            if trow is None:
                raise NotFoundError(f"cannot roll back: the previously active checkpoint '{target}' is no longer registered")
            if trow["archived_at"] is not None:
                raise ConflictError(f"cannot roll back: the previously active checkpoint '{target}' is "
                                    f"{Checkpoint.from_row(trow).archived_text()}; promote another one instead")
            self._write_active(conn, target)
            cur = conn.execute(
                "INSERT INTO promotions (action, from_id, to_id, analyst, reason, created_at) "
                "VALUES ('rollback', ?, ?, ?, ?, ?)",
                (current, target, analyst or "", reason or f"undo change #{row['id']}", now_iso()),
            )
            conn.execute("UPDATE promotions SET undone_by = ? WHERE id = ?", (cur.lastrowid, row["id"]))
        return self.get_checkpoint(target)

    def promote(self, candidate_id: str, override: bool = False, analyst: str = "", reason: str = "", **kwargs: Any):
        """Promote a checkpoint to active through the regression gate; see :func:`seghz.gate.promote`.

        Returns the :class:`seghz.gate.Verdict`; raises :class:`seghz.gate.GateRefused` for a flagged
        candidate without ``override``.
        """
        from seghz import gate

        return gate.promote(self, candidate_id, override=override, analyst=analyst, reason=reason, **kwargs)

    # ------------------------------------------------------------------ jobs

    def create_job(self, kind: str, config: dict) -> str:
        """Insert a queued job and return its id (``<kind>-<UTC time>-<random>``, also its log's name)."""
        return self.create_job_once(kind, config, None)[0]

    def create_job_once(self, kind: str, config: dict, same: Callable[[Job], bool] | None) -> tuple[str, bool]:
        """Insert a queued job unless a queued or running one is ``same`` as it: ``(new id, True)``, or ``(the
        newest such job's id, False)``. The check and the insert are one write transaction, so two sessions that
        submit the same job at the same moment get one job between them (``same`` None: always insert)."""
        jid = f"{slugify(kind, 'job')[:24]}-{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
        with self.transaction() as conn:
            if same is not None:
                rows = conn.execute("SELECT * FROM jobs WHERE status IN ('queued', 'running') ORDER BY rowid DESC")
                for row in rows.fetchall():
                    job = Job.from_row(row)
                    if same(job):
                        return job.id, False
            conn.execute(
                "INSERT INTO jobs (id, kind, status, config, created_at, log_path) VALUES (?, ?, 'queued', ?, ?, ?)",
                (jid, kind, json.dumps(config), now_iso(), f"jobs/{jid}.log"),
            )
        return jid, True

    def get_job(self, job_id: str) -> Job:
        """The job with id ``job_id``.

        Raises:
            NotFoundError: When no such job exists.
        """
        with self.connect() as conn:
            row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"job '{job_id}' does not exist in workspace {self.root}")
        return Job.from_row(row)

    def list_jobs(self, status: str | None = None, limit: int | None = None) -> list[Job]:
        """Jobs, newest first; optionally only those with ``status``, at most ``limit`` of them."""
        sql, args = "SELECT * FROM jobs", []
        if status is not None:
            sql += " WHERE status = ?"
            args.append(status)
        sql += " ORDER BY rowid DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        with self.connect() as conn:
            rows = conn.execute(sql, args).fetchall()
        return [Job.from_row(r) for r in rows]

    def update_job(self, job_id: str, **fields: Any) -> None:
        """Set fields of a job: status, config, pid, started_at, finished_at, progress, message, result,
        cancel_requested (``config`` and ``result`` are JSON-encoded here).

        Raises:
            ValueError: For an unknown field or status.
            NotFoundError: When the job does not exist.
        """
        unknown = set(fields) - _JOB_FIELDS
        if unknown:
            raise ValueError(f"update_job('{job_id}'): unknown field(s) {sorted(unknown)}; allowed: {sorted(_JOB_FIELDS)}")
        if "status" in fields and fields["status"] not in JOB_STATUSES:
            raise ValueError(f"update_job('{job_id}'): unknown status {fields['status']!r}; use one of {JOB_STATUSES}")
        if not fields:
            return
        values = {k: json.dumps(v) if k in ("config", "result") and v is not None else v for k, v in fields.items()}
        if "cancel_requested" in values:
            values["cancel_requested"] = int(bool(values["cancel_requested"]))
        sets = ", ".join(f"{k} = ?" for k in values)
        with self.transaction() as conn:
            if conn.execute(f"UPDATE jobs SET {sets} WHERE id = ?", (*values.values(), job_id)).rowcount == 0:
                raise NotFoundError(f"job '{job_id}' does not exist in workspace {self.root}")

    def claim_job(self, job_id: str, pid: int) -> Job:
        """Start a queued job if it is first in line and no job is running (one running job per workspace).

        On success the job becomes ``running`` with ``pid`` and ``started_at`` set. The check and the change
        happen in one ``BEGIN IMMEDIATE`` transaction, so two workers never both start.

        Returns:
            The job as it is now: ``running`` when claimed, still ``queued`` when it must wait, or any other
            status (e.g. ``cancelled``) when it should not run at all.
        """
        with self.transaction() as conn:
            row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise NotFoundError(f"job '{job_id}' does not exist in workspace {self.root}")
            if row["status"] == "queued" and not row["cancel_requested"]:
                running = conn.execute("SELECT 1 FROM jobs WHERE status = 'running' LIMIT 1").fetchone()
                first = conn.execute("SELECT id FROM jobs WHERE status = 'queued' ORDER BY rowid LIMIT 1").fetchone()
                if running is None and first["id"] == job_id:
                    conn.execute(
                        "UPDATE jobs SET status = 'running', pid = ?, started_at = ? WHERE id = ?", (pid, now_iso(), job_id)
                    )
                    row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return Job.from_row(row)

    def add_job_metrics(self, job_id: str, step: int, epoch: int, values: dict[str, float]) -> None:
        """Record metric values of a job at one step (e.g. ``{"loss": 0.41, "val_miou": 0.62}``)."""
        ts = datetime.now(UTC).timestamp()
        with self.transaction() as conn:
            conn.executemany(
                "INSERT INTO job_metrics (job_id, step, epoch, key, value, ts) VALUES (?, ?, ?, ?, ?, ?)",
                [(job_id, int(step), int(epoch), str(k), float(v), ts) for k, v in values.items()],
            )

    def job_metrics(self, job_id: str) -> list[dict]:
        """A job's metrics as rows ``{"step", "epoch", "key", "value", "ts"}`` (ts = UNIX seconds), in step order."""
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT step, epoch, key, value, ts FROM job_metrics WHERE job_id = ? ORDER BY step, rowid", (job_id,)
            ).fetchall()
        return [dict(r) for r in rows]

    def request_cancel(self, job_id: str) -> None:
        """Ask a job to stop; its worker notices at its next ``check_cancel``."""
        self.update_job(job_id, cancel_requested=True)

    def cancel_requested(self, job_id: str) -> bool:
        """Whether cancelling the job was requested."""
        with self.connect() as conn:
            row = conn.execute("SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"job '{job_id}' does not exist in workspace {self.root}")
        return bool(row[0])

    # ------------------------------------------------------------------ evaluations

    def data_version(self, split: str | None = None, scene_ids=None) -> str:
        """A short hash of the scenes in ``split`` (all scenes when None) and their latest label versions.

        A cached evaluation stored with this value is stale once any of its scenes gets a new label version,
        or a scene joins or leaves the split.

        ``scene_ids`` (None or empty: every scene of ``split``) narrows the hash to those scenes of ``split``, for an
        evaluation of chosen scenes (:func:`seghz.evaluate.scene_scope`): a label save on another scene of the
        split, or a scene joining it, leaves it unchanged; a new label version of a chosen scene changes it, and so
        does a chosen scene that has left ``split`` or was deleted (hashed as ``id:missing``).
        """
        sql = (
            "SELECT s.id, COALESCE(MAX(lv.version), 0) FROM scenes s "
            "LEFT JOIN label_versions lv ON lv.scene_id = s.id {where} GROUP BY s.id ORDER BY s.id"
        )
        args: tuple = ()
        if split is not None:
            self._check_split(split)
            args = (split,)
        with self.connect() as conn:
            rows = conn.execute(sql.format(where="WHERE s.split = ?" if split is not None else ""), args).fetchall()
        chosen = sorted({str(i) for i in scene_ids or ()})
        if chosen:
            latest = {sid: v for sid, v in rows}
            rows = [(sid, latest.get(sid, "missing")) for sid in chosen]
        text = ";".join(f"{sid}:{v}" for sid, v in rows)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def add_evaluation(self, checkpoint_id: str, split: str, tta: bool, data_version: str, result: dict) -> int:
        """Store an evaluation result (JSON-serialisable dict) and return its id."""
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO evaluations (checkpoint_id, split, tta, data_version, created_at, result) VALUES (?, ?, ?, ?, ?, ?)",
                (checkpoint_id, split, int(bool(tta)), data_version, now_iso(), json.dumps(result)),
            )
            return cur.lastrowid

    def find_evaluation(self, checkpoint_id: str, split: str, tta: bool, data_version: str,
                        tta_spec: str | None = None) -> Evaluation | None:
        """The newest evaluation with exactly these keys, or None (then it must be recomputed).

        ``tta_spec`` (e.g. ``"d4"`` or ``"identity,lr"``, see :func:`seghz.evaluate.tta_key`) also requires the
        result's ``tta`` to be exactly that spec, so several TTA view lists are cached side by side.
        """
        sql = ("SELECT * FROM evaluations WHERE checkpoint_id = ? AND split = ? AND tta = ? AND data_version = ?")
        args: list = [checkpoint_id, split, int(bool(tta)), data_version]
        if tta_spec is not None:
            sql += " AND json_extract(result, '$.tta') = ?"
            args.append(str(tta_spec))
        with self.connect() as conn:
            row = conn.execute(sql + " ORDER BY id DESC LIMIT 1", args).fetchone()
        return None if row is None else Evaluation.from_row(row)

    def list_evaluations(self, checkpoint_id: str | None = None) -> list[Evaluation]:
        """Evaluations (of one checkpoint, or all), newest first."""
        with self.connect() as conn:
            if checkpoint_id is None:
                rows = conn.execute("SELECT * FROM evaluations ORDER BY id DESC").fetchall()
            else:
                rows = conn.execute(
                    "SELECT * FROM evaluations WHERE checkpoint_id = ? ORDER BY id DESC", (checkpoint_id,)
                ).fetchall()
        return [Evaluation.from_row(r) for r in rows]

    # ------------------------------------------------------------------ summary

    def summary(self) -> dict:
        """Counts for the home page.

        Returns:
            ``{"scenes": {"train": n, "val": n, "test": n, "none": n, "total": n}, "label_versions": n,
            "jobs": {status: n for every status}, "checkpoints": n (archived ones not counted), "active_checkpoint_id": id or None}``.
        """
        with self.connect() as conn:
            conn.execute("BEGIN")
            try:
                scenes = dict.fromkeys(SPLITS, 0)
                scenes.update(dict(conn.execute("SELECT split, COUNT(*) FROM scenes GROUP BY split").fetchall()))
                scenes["total"] = sum(scenes[s] for s in SPLITS)
                jobs = dict.fromkeys(JOB_STATUSES, 0)
                jobs.update(dict(conn.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()))
                n_versions = conn.execute("SELECT COUNT(*) FROM label_versions").fetchone()[0]
                n_ckpt = conn.execute("SELECT COUNT(*) FROM checkpoints WHERE archived_at IS NULL").fetchone()[0]
            finally:
                conn.execute("COMMIT")
        active = self.active_checkpoint()
        return {
            "scenes": scenes,
            "label_versions": n_versions,
            "jobs": jobs,
            "checkpoints": n_ckpt,
            "active_checkpoint_id": active.id if active else None,
        }
