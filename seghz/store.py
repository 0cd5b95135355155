"""The workspace: a folder of scenes, label versions, checkpoints, job logs and evaluations, indexed in SQLite.

Layout of a workspace folder (default ``./workspace``, or ``$SEGHZ_WORKSPACE``)::

    index.sqlite        the index (WAL mode, so readers never block the one writer)
    scenes/             imagery and ORIGINAL labels, copied in on import and never modified
    labels/<scene>/     label versions, one full class-index mask per version: v0001.png, v0002.png, ...
    checkpoints/        trained models
    jobs/               one log per background job: <job id>.log
    evals/              evaluation outputs

Every method opens its own short-lived SQLite connection, so one :class:`Workspace` may be shared by
Streamlit threads, and any number of processes (background jobs, the CLI) may use the same folder.
Writes that must see a consistent state (label saves, job claims) run in ``BEGIN IMMEDIATE`` transactions.

Label versions: version 0 is the original label of a scene (its ``label_path``, not a row); version N is a
row of ``label_versions`` plus the mask file ``labels/<scene>/vNNNN.png``. A save names the version it
was based on; when that is no longer the latest, the save is refused with :class:`ConflictError`.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import sqlite3
import unicodedata
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from seghz.classes import IGNORE, get_scheme
from seghz.data.io import raster_info, read_index_mask, write_index_mask
from seghz.errors import BadInputError, ConflictError, SegHZError

SCHEMA_VERSION = 2
SPLITS = ("train", "val", "test", "none")
JOB_STATUSES = ("queued", "running", "done", "failed", "cancelled", "died")
ACTIVE_JOB_STATUSES = ("queued", "running")
BUSY_TIMEOUT_S = 10.0
_SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")

PROMOTION_ACTIONS = ("promote", "rollback", "set")


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
)


class NotFoundError(SegHZError, LookupError):
    """A scene, label version, checkpoint, job or evaluation does not exist in the workspace."""


def now_iso() -> str:
    """Current UTC time as an ISO 8601 string with milliseconds (the format of every ``*_at`` column)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


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
    """One saved label version of a scene (version 0, the original label, has no row)."""

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

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> LabelVersion:
        """Build a LabelVersion from a ``label_versions`` row."""
        return cls(**{k: row[k] for k in row.keys()})


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

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Checkpoint:
        """Build a Checkpoint from a ``checkpoints`` row."""
        d = {k: row[k] for k in row.keys()}
        d["metrics"] = json.loads(d["metrics"])
        d["recipe"] = json.loads(d.get("recipe") or "{}")
        return cls(**d)


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
        d = {k: row[k] for k in row.keys()}
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
        d = {k: row[k] for k in row.keys()}
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
        d = {k: row[k] for k in row.keys()}
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
        if base not in taken:
            return base
        n = 2
        while f"{base}-{n}" in taken:
            n += 1
        return f"{base}-{n}"

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
            scene_id: Wanted id (a safe slug); defaults to a slug of ``name``. A taken id gets ``-2``, ``-3``...
            crs: CRS overriding the image's.
            transform: Affine (a, b, c, d, e, f) overriding the image's.

        Returns:
            The stored Scene; its ``id`` may differ from ``scene_id`` when that was taken.

        Raises:
            ValueError: For an unsafe ``scene_id``, an unknown split or a transform without 6 numbers.
            KeyError: For an unknown scheme.
            BadInputError: For missing or unreadable files, files outside the workspace, a label that is not
                single-band, differs in size from the image or holds values outside the scheme.
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
            sid = self._unique_scene_id(conn, base)
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

    def set_split(self, scene_id: str, split: str) -> None:
        """Move a scene to ``split`` (``train``, ``val``, ``test`` or ``none``).

        Raises:
            ValueError: For an unknown split.
            NotFoundError: When the scene does not exist.
        """
        self._check_split(split)
        with self.transaction() as conn:
            if conn.execute("UPDATE scenes SET split = ? WHERE id = ?", (split, scene_id)).rowcount == 0:
                raise NotFoundError(f"scene '{scene_id}' does not exist in workspace {self.root}")

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

        The index rows go first, so an interruption leaves at worst orphan files, never rows without files.

        Raises:
            NotFoundError: When the scene does not exist.
        """
        scene = self.get_scene(scene_id)
        with self.transaction() as conn:
            conn.execute("DELETE FROM scenes WHERE id = ?", (scene_id,))
        shutil.rmtree(self.root / "labels" / scene_id, ignore_errors=True)
        scenes_dir = self.root / "scenes"
        for stored in (scene.image_path, scene.label_path):
            if not stored:
                continue
            p = self.path(stored)
            if scenes_dir in p.parents:
                p.unlink(missing_ok=True)
                if p.parent != scenes_dir and not any(p.parent.iterdir()):
                    p.parent.rmdir()

    # ------------------------------------------------------------------ label versions

    def latest_label_version(self, scene_id: str) -> int:
        """Latest label version of a scene (0 = the original label, nothing saved yet)."""
        with self.connect() as conn:
            return self._latest_version(conn, scene_id)

    @staticmethod
    def _latest_version(conn: sqlite3.Connection, scene_id: str) -> int:
        return conn.execute(
            "SELECT COALESCE(MAX(version), 0) FROM label_versions WHERE scene_id = ?", (scene_id,)
        ).fetchone()[0]

    def _version_mask(self, conn: sqlite3.Connection, scene: Scene, version: int) -> np.ndarray:
        if version == 0:
            if scene.label_path is None:
                return np.full((scene.height, scene.width), IGNORE, np.uint8)
            return read_index_mask(self.path(scene.label_path))
        row = conn.execute(
            "SELECT path FROM label_versions WHERE scene_id = ? AND version = ?", (scene.id, version)
        ).fetchone()
        if row is None:
            latest = self._latest_version(conn, scene.id)
            raise NotFoundError(f"scene '{scene.id}' has no label version {version} (latest is {latest})")
        return read_index_mask(self.path(row["path"]))

    def effective_label(self, scene_id: str, version: int | None = None) -> np.ndarray:
        """The class-index mask (uint8, H×W, 255 = ignore) of a label version.

        Args:
            scene_id: The scene.
            version: Version to read; None = latest, 0 = the original label (all 255 for an unlabelled scene).

        Raises:
            NotFoundError: When the scene or the version does not exist.
            BadInputError: When the version's mask file is missing or unreadable.
        """
        scene = self.get_scene(scene_id)
        with self.connect() as conn:
            conn.execute("BEGIN")  # one snapshot for "latest" and its path
            try:
                v = self._latest_version(conn, scene_id) if version is None else int(version)
                return self._version_mask(conn, scene, v)
            finally:
                conn.execute("COMMIT")

    def label_history(self, scene_id: str) -> list[LabelVersion]:
        """Saved label versions of a scene, oldest first (the original, version 0, is not listed).

        Raises:
            NotFoundError: When the scene does not exist.
        """
        self.get_scene(scene_id)
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT * FROM label_versions WHERE scene_id = ? ORDER BY version", (scene_id,)
            ).fetchall()
        return [LabelVersion.from_row(r) for r in rows]

    def save_label_version(
        self,
        scene_id: str,
        mask: np.ndarray,
        base_version: int,
        analyst: str,
        tool: str,
        checkpoint_id: str | None = None,
        reason: str | None = None,
    ) -> int:
        """Save a full class-index mask as the next label version of a scene.

        The save runs in one ``BEGIN IMMEDIATE`` transaction: it checks that ``base_version`` is still the
        latest, writes ``labels/<scene>/vNNNN.png`` atomically, then inserts the row and commits. A crash at
        any point leaves the previous state (at worst with an orphan file that the next save overwrites).

        Args:
            scene_id: The scene.
            mask: uint8 H×W class indices of the scene's scheme (255 = ignore), the scene's size.
            base_version: The version the edit started from (what :meth:`latest_label_version` said then).
            analyst: Who made the edit; must not be empty.
            tool: What made the edit (e.g. ``"brush"``, ``"accept-prediction"``).
            checkpoint_id: Model whose prediction the edit used, if any.
            reason: Free-text reason.

        Returns:
            The new version number.

        Raises:
            ValueError: For an empty analyst name.
            BadInputError: For a mask of the wrong shape or with values that are not class indices.
            NotFoundError: When the scene does not exist.
            ConflictError: When ``base_version`` is no longer the latest version (someone else saved first).
        """
        if not analyst or not analyst.strip():
            raise ValueError(f"scene '{scene_id}': a label save needs the analyst's name; got an empty one")
        scene = self.get_scene(scene_id)
        source = f"new label for scene '{scene_id}'"
        arr = np.asarray(mask)
        if arr.shape != (scene.height, scene.width):
            raise BadInputError(source, f"mask shape {arr.shape} differs from the scene's (height, width) = ({scene.height}, {scene.width})")
        if arr.dtype != np.uint8:
            if not np.issubdtype(arr.dtype, np.integer) or (arr.size and (arr.min() < 0 or arr.max() > 255)):
                raise BadInputError(source, f"mask must hold uint8 class indices, got dtype {arr.dtype}")
            arr = arr.astype(np.uint8)
        self._check_mask_values(arr, get_scheme(scene.scheme).num_classes, source)
        with self.transaction() as conn:
            latest = self._latest_version(conn, scene_id)
            if base_version != latest:
                raise ConflictError(self._conflict_message(conn, scene_id, base_version, latest))
            base = self._version_mask(conn, scene, latest)
            version = latest + 1
            rel = f"labels/{scene_id}/v{version:04d}.png"
            write_index_mask(self.path(rel), arr, get_scheme(scene.scheme))
            conn.execute(
                "INSERT INTO label_versions (scene_id, version, parent_version, path, analyst, tool, checkpoint_id, "
                "reason, n_changed, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (scene_id, version, latest, rel, analyst.strip(), tool, checkpoint_id, reason,
                 int(np.count_nonzero(arr != base)), now_iso()),
            )
        return version

    @staticmethod
    def _conflict_message(conn: sqlite3.Connection, scene_id: str, base: int, latest: int) -> str:
        row = conn.execute(
            "SELECT analyst, created_at FROM label_versions WHERE scene_id = ? AND version = ?", (scene_id, latest)
        ).fetchone()
        by = f"saved by '{row['analyst']}' at {row['created_at']}" if row else "the original label"
        return (
            f"scene '{scene_id}': this edit is based on label version {base}, but the latest is version {latest} "
            f"({by}); reload the latest labels and redo the edit"
        )

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
        if val_metrics and not val_data_version:
            raise ValueError("register_checkpoint: val_metrics need the val_data_version they were measured on")
        with self.transaction() as conn:
            if conn.execute("SELECT 1 FROM checkpoints WHERE id = ?", (cid,)).fetchone():
                raise ConflictError(f"checkpoint id '{cid}' is already registered in workspace {self.root}")
            conn.execute(
                "INSERT INTO checkpoints (id, path, name, arch, encoder, scheme, created_at, parent_id, metrics, note, job_id, "
                "data_version, val_data_version, recipe) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (cid, self.relative(full, "checkpoint", inside=False), name, str(meta.get("arch", "")),
                 str(meta.get("encoder", "")), str(meta.get("scheme", "")), now_iso(),
                 parent_id if parent_id is not None else meta.get("parent_id"),
                 json.dumps(meta.get("metrics") or {}), note, job_id,
                 None if data_version is None else str(data_version),
                 None if val_data_version is None else str(val_data_version),
                 json.dumps(recipe if isinstance(recipe, dict) else {})),
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

    def list_checkpoints(self) -> list[Checkpoint]:
        """All registered checkpoints, newest first."""
        with self.connect() as conn:
            rows = conn.execute("SELECT * FROM checkpoints ORDER BY created_at DESC, rowid DESC").fetchall()
        return [Checkpoint.from_row(r) for r in rows]

    def checkpoint_path(self, checkpoint: Checkpoint | str) -> Path:
        """Absolute path of a checkpoint's file."""
        if isinstance(checkpoint, str):
            checkpoint = self.get_checkpoint(checkpoint)
        return self.path(checkpoint.path)

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
            if checkpoint_id is not None and conn.execute(
                "SELECT 1 FROM checkpoints WHERE id = ?", (checkpoint_id,)
            ).fetchone() is None:
                raise NotFoundError(f"checkpoint '{checkpoint_id}' is not registered in workspace {self.root}")
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
            if conn.execute("SELECT 1 FROM checkpoints WHERE id = ?", (target,)).fetchone() is None:
                raise NotFoundError(f"cannot roll back: the previously active checkpoint '{target}' is no longer registered")
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
        jid = f"{slugify(kind, 'job')[:24]}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO jobs (id, kind, status, config, created_at, log_path) VALUES (?, ?, 'queued', ?, ?, ?)",
                (jid, kind, json.dumps(config), now_iso(), f"jobs/{jid}.log"),
            )
        return jid

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
        ts = datetime.now(timezone.utc).timestamp()
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

    def data_version(self, split: str | None = None) -> str:
        """A short hash of the scenes in ``split`` (all scenes when None) and their latest label versions.

        A cached evaluation stored with this value is stale once any of its scenes gets a new label version,
        or a scene joins or leaves the split.
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

    def find_evaluation(self, checkpoint_id: str, split: str, tta: bool, data_version: str) -> Evaluation | None:
        """The newest evaluation with exactly these keys, or None (then it must be recomputed)."""
        with self.connect() as conn:
            row = conn.execute(
                "SELECT * FROM evaluations WHERE checkpoint_id = ? AND split = ? AND tta = ? AND data_version = ? "
                "ORDER BY id DESC LIMIT 1",
                (checkpoint_id, split, int(bool(tta)), data_version),
            ).fetchone()
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
            "jobs": {status: n for every status}, "checkpoints": n, "active_checkpoint_id": id or None}``.
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
                n_ckpt = conn.execute("SELECT COUNT(*) FROM checkpoints").fetchone()[0]
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
