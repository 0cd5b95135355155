"""The noise queue of one scene: build it with a checkpoint, act on its items, remember the verdicts.

Pure Python/numpy (no Streamlit); the Labels page lays out what these functions return.

Building
========
:func:`build_queue` runs the checkpoint over the whole scene (``Predictor.predict_full(image, tta,
return_proba=True)``), computes the per-pixel suspicion score against the scene's latest effective label
(:func:`seghz.review.suspicion.suspicion_score`, TTA disagreement included when ``tta != "none"``) and groups
the suspicious pixels into ranked components (:func:`seghz.review.suspicion.group_components`). Each
:class:`ReviewItem` also carries the flat pixel indices of its component (recovered from the same
connected-component labelling), so an action touches exactly those pixels. The result, a
:class:`SceneQueue` (items + the predicted class map + the score map + the label version it was built on),
is cached per scene in ``review/<scene>/queue.npz`` (written atomically; :func:`load_queue`).

Held-out scoring (``held_out=True``) scores a scene with the checkpoint's head refitted on OTHER scenes
(:mod:`seghz.review.crossfit`). The candidate scenes are split into folds and one head is fitted per fold, on scenes
outside it, then kept in memory: the queues of a whole split cost a few refits, not one per scene
(:func:`held_out_fold`), and no scene is scored by a head fitted on its own labels. A build of many scenes keeps one
model of the checkpoint and swaps each fold's head into it (:class:`HeldOutBuild`), not a model loaded per scene.

Actions
=======
:func:`apply_action` saves one sparse label edit per item (``Workspace.save_label_edit``, ``merge=True``,
based on the version the queue was built on, so a component whose pixels someone changed since is refused
with ``ConflictError`` while disjoint items merge):

==========  =================  ==========================================================================
action      tool               edit
==========  =================  ==========================================================================
accept      ``queue-accept``   the component's pixels take the model's per-pixel prediction
relabel     ``queue-relabel``  the component's pixels take one chosen class
ignore      ``queue-ignore``   the component's pixels become 255 (ignore)
confirm     ``queue-confirm``  the component's pixels are confirmed (unchanged values, status confirmed)
==========  =================  ==========================================================================

Verdicts
========
Every action is logged in ``review/<scene>/verdicts.json`` (scene, bbox, label version after the action,
action, class, analyst, time, checkpoint) and the component's pixels are remembered with the label value
they hold after the action in ``review/<scene>/judged.npz``. An item (of this queue or of a queue rebuilt
after a retrain, whose components may shift a little) is *judged* when at least ``JUDGED_OVERLAP`` of its
pixels are remembered pixels whose current label still equals the remembered value: judged items leave the
queue and do not come back unless their label pixels changed (an undo, a brush edit, another analyst).
Read-modify-write of these files is serialised with an ``fcntl`` lock on ``review/<scene>/.lock``.

Freshness and display
=====================
:func:`queue_staleness` says whether a saved queue still describes the scene: it is out of date when label pixels
changed since the version it was built on *other than by its own verdicts* (each verdict is a new label version,
which alone does not invalidate the other items), or when the active checkpoint is another one.
:func:`accept_breakdown` lists what an *accept* writes on an item class by class (the item's ``predicted_class`` is
only the component's majority; the model's class is written pixel by pixel).
"""
from __future__ import annotations

import contextlib
import io
import json
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from seghz.classes import IGNORE, get_scheme
from seghz.data.io import atomic_write_bytes, read_image
from seghz.errors import BadInputError
from seghz.locks import file_lock
from seghz.review import crossfit
from seghz.review.suspicion import group_components, suspicion_score
from seghz.store import Workspace, now_iso

ACTIONS: dict[str, str] = {
    "accept": "queue-accept",
    "relabel": "queue-relabel",
    "ignore": "queue-ignore",
    "confirm": "queue-confirm",
}
JUDGED_OVERLAP = 0.5  # share of an item's pixels judged (and unchanged since) that keeps it out of the queue
QUEUE_FORMAT = 1
DEFAULT_MAX_ITEMS = 500


@dataclass
class ReviewItem:
    """One queue item: a connected suspicious component of one label class.

    ``bbox = (row0, col0, row1, col1)`` end-exclusive; ``indices`` = flat pixel indices (row * width + col)."""

    scene_id: str
    bbox: tuple[int, int, int, int]
    pixels: int
    score: float
    mean_score: float
    label_id: int
    predicted_id: int
    label_class: str
    predicted_class: str
    indices: np.ndarray = field(repr=False)

    @property
    def key(self) -> str:
        r0, c0, r1, c1 = self.bbox
        return f"{self.scene_id}:{r0},{c0},{r1},{c1}"

    def location(self) -> str:
        r0, c0, r1, c1 = self.bbox
        return f"rows {r0}–{r1 - 1}, columns {c0}–{c1 - 1}"

    def crop_mask(self, window: tuple[int, int, int, int], width: int) -> np.ndarray:
        """Boolean mask of the component inside ``window = (row, col, height, width)`` of a scene ``width`` px wide."""
        r, c, h, w = window
        rows, cols = np.divmod(self.indices, int(width))
        sel = (rows >= r) & (rows < r + h) & (cols >= c) & (cols < c + w)
        out = np.zeros((h, w), bool)
        out[rows[sel] - r, cols[sel] - c] = True
        return out

    def mask(self, shape: tuple[int, int]) -> np.ndarray:
        """Boolean scene-sized mask of the component."""
        m = np.zeros(shape[0] * shape[1], bool)
        m[self.indices] = True
        return m.reshape(shape)


@dataclass
class SceneQueue:
    """A scene's ranked queue, built with ``checkpoint_id`` on label version ``label_version``."""

    scene_id: str
    checkpoint_id: str
    tta: str
    label_version: int
    created_at: str
    items: list[ReviewItem]
    predicted: np.ndarray  # uint8 H×W model argmax
    score: np.ndarray  # float32 H×W suspicion, -inf at ignored pixels
    threshold: float = 0.5
    # "in-sample", "held-out head (N scene(s))" (seghz.review.crossfit), or "in-sample (held-out asked, but ...)": a real
    # scene with no other real labelled scene to refit the head on (see _held_out_predictor)
    scoring: str = "in-sample"

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.predicted.shape)  # type: ignore[return-value]

    def item(self, key: str) -> ReviewItem | None:
        return next((it for it in self.items if it.key == key), None)


# ------------------------------------------------------------------------------------------------ files


def review_dir(ws: Workspace, scene_id: str) -> Path:
    return ws.root / "review" / scene_id


def _locked(ws: Workspace, scene_id: str) -> contextlib.AbstractContextManager[None]:
    """A scene's review lock (:func:`seghz.locks.file_lock` on ``review/<scene>/.lock``)."""
    return file_lock(review_dir(ws, scene_id) / ".lock")


def save_queue(ws: Workspace, queue: SceneQueue) -> Path:
    """Write the queue to ``review/<scene>/queue.npz`` atomically; returns the path."""
    items = [{k: (list(v) if k == "bbox" else v) for k, v in it.__dict__.items() if k != "indices"} for it in queue.items]
    meta = {"format": QUEUE_FORMAT, "scene_id": queue.scene_id, "checkpoint_id": queue.checkpoint_id, "tta": queue.tta,
            "label_version": queue.label_version, "created_at": queue.created_at, "threshold": queue.threshold,
            "scoring": queue.scoring, "items": items}
    offsets = np.cumsum([0] + [int(it.indices.size) for it in queue.items]).astype(np.int64)
    idx = np.concatenate([it.indices for it in queue.items]).astype(np.int64) if queue.items else np.zeros(0, np.int64)
    buf = io.BytesIO()
    np.savez_compressed(buf, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), offsets=offsets, indices=idx,
                        predicted=queue.predicted.astype(np.uint8), score=queue.score.astype(np.float16))
    path = review_dir(ws, queue.scene_id) / "queue.npz"
    atomic_write_bytes(path, buf.getvalue())
    return path


def load_queue(ws: Workspace, scene_id: str, *, maps: bool = True) -> SceneQueue | None:
    """The cached queue of a scene, or None (none built yet, or an unreadable/foreign file).

    ``maps=False``: without its two H×W maps (the model's class map and the score map): they are zero-cost read-only
    stand-ins of the right shape (read from the ``.npy`` header), enough for :func:`pending_items` and
    :func:`queue_staleness`. Decompressing the maps is nearly all of the load time (4.6 s for one 6800×7200
    Gaofen-2 scene on a 2-core machine), which the workspace-wide review plan (``seghz.review.plan``) cannot pay
    per scene."""
    path = review_dir(ws, scene_id) / "queue.npz"
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(bytes(z["meta"]).decode())
            offsets, idx = z["offsets"], z["indices"]
            if maps:
                predicted, score = z["predicted"].astype(np.uint8), z["score"].astype(np.float32)
        if not maps:
            shape = _npz_member_shape(path, "predicted.npy")
            predicted = np.broadcast_to(np.zeros((), np.uint8), shape)
            score = np.broadcast_to(np.zeros((), np.float32), shape)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None
    if meta.get("format") != QUEUE_FORMAT or meta.get("scene_id") != scene_id or predicted.ndim != 2:
        return None
    items = []
    for i, d in enumerate(meta["items"]):
        d = dict(d)
        d["bbox"] = tuple(int(v) for v in d["bbox"])
        items.append(ReviewItem(**d, indices=idx[offsets[i]: offsets[i + 1]].astype(np.int64)))
    return SceneQueue(scene_id, meta["checkpoint_id"], meta["tta"], int(meta["label_version"]), meta["created_at"],
                      items, predicted, score, float(meta.get("threshold", 0.5)),
                      str(meta.get("scoring", "in-sample")))


def _npz_member_shape(path: Path, member: str) -> tuple[int, ...]:
    """The shape of array ``member`` of an ``.npz`` from its ``.npy`` header, without reading the data."""
    fmt = np.lib.format
    with zipfile.ZipFile(path) as zf, zf.open(member) as f:
        version = fmt.read_magic(f)
        header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        return tuple(int(v) for v in header(f)[0])


def clear_queue(ws: Workspace, scene_id: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        (review_dir(ws, scene_id) / "queue.npz").unlink()


# ------------------------------------------------------------------------------------------------ building


def component_indices(score: np.ndarray, label: np.ndarray, items: list, threshold: float) -> list[np.ndarray]:
    """Flat pixel indices of the components behind ``items`` (from :func:`group_components` with ``threshold``),
    found again by labelling the same mask and matching each item's bbox and area."""
    valid = np.isfinite(score) & (label != IGNORE)
    sus = valid & (score >= threshold)
    out: list[np.ndarray | None] = [None] * len(items)
    by_class: dict[int, list[int]] = {}
    for i, it in enumerate(items):
        by_class.setdefault(int(it.label_id), []).append(i)
    for c, members in by_class.items():
        m = (sus & (label == c)).astype(np.uint8)
        n, lab, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8, ltype=cv2.CV_32S)
        lookup: dict[tuple, int] = {}
        for j in range(1, n):
            x, y, w, h, area = (int(v) for v in stats[j])
            lookup[(y, x, y + h, x + w, area)] = j
        for i in members:
            it = items[i]
            j = lookup.get((*tuple(int(v) for v in it.bbox), int(it.pixels)))
            if j is None:
                raise RuntimeError(f"queue item {it.bbox} not found again in the component labelling")
            r0, c0, r1, c1 = it.bbox
            sub = lab[r0:r1, c0:c1] == j
            rr, cc = np.nonzero(sub)
            out[i] = np.sort((rr + r0).astype(np.int64) * label.shape[1] + (cc + c0))
    return out  # type: ignore[return-value]


MIN_HELD_OUT_PIXELS = 1_024  # labelled pixels the other scenes must hold between them to refit a held-out head on


def held_out_fit_scenes(ws: Workspace, scene: Any) -> list[Any]:
    """The scenes whose labels a held-out head for ``scene`` may be refitted on: the OTHER labelled scenes of its
    scheme (never one of another scheme), and for a real scene only real ones: a head refitted on the synthetic demo
    scenes ranked a correctly labelled field of the real Hangzhou airport scene first, as "Road_land". A synthetic
    scene may use every other labelled scene (as before)."""
    return [s for s in ws.list_scenes() if s.id != scene.id and s.scheme == scene.scheme
            and (scene.synthetic or not s.synthetic) and (s.label_path or ws.latest_label_version(s.id))]


def _file_stamp(path: Path | None) -> tuple | None:
    """``(path, size, mtime ns)`` of a file (None for no file): part of a cached head's key."""
    if path is None:
        return None
    st = Path(path).stat()
    return str(path), int(st.st_size), int(st.st_mtime_ns)


def held_out_fold(ws: Workspace, scene: Any, folds: int = crossfit.DEFAULT_FOLDS,
                  max_scenes: int = 8) -> tuple[int, int, list[str], list[Any]] | None:
    """``(fold index, fold count, fold members' ids, fit scenes)`` of ``scene``'s held-out head, or None when no
    other scene can be fitted on (:func:`held_out_fit_scenes` is empty).

    The candidates are ``scene`` and its :func:`held_out_fit_scenes`, split into ``folds`` folds
    (:func:`seghz.review.crossfit.fold_fit_sets`): the head of ``scene``'s fold is fitted on up to ``max_scenes``
    scenes outside that fold, so every scene of the fold, ``scene`` first, is scored by a head that never saw its
    labels, and a whole build refits at most ``folds`` heads. With at most ``folds`` candidates each fold is one scene
    (the head is fitted on all the others, up to ``max_scenes``)."""
    others = held_out_fit_scenes(ws, scene)
    if not others:
        return None
    by_id = {s.id: s for s in others}
    plan = crossfit.fold_fit_sets([scene.id, *by_id], folds, max_scenes)
    f = next(i for i, (members, _) in enumerate(plan) if scene.id in members)
    members, fit = plan[f]
    if scene.id in fit:  # fold_fit_sets guarantees it; a head fitted on the scene must never score it
        raise RuntimeError(f"held-out fold of scene '{scene.id}' fits on the scene itself")
    return f, len(plan), members, [by_id[i] for i in fit]


@dataclass
class FoldHead:
    """The held-out head a scene is scored with (:func:`fold_head`): its fold, the scenes it is fitted on and its key
    in :data:`seghz.review.crossfit.HEAD_CACHE`. ``synthetic``: whether it is asked for a synthetic scene (fitted
    whatever the fit scenes' labelled pixel count)."""

    fold: int
    folds: int
    members: list[str]
    fit_scenes: list[Any]
    key: tuple
    synthetic: bool

    @property
    def what(self) -> str:
        return f"fold {self.fold + 1}/{self.folds} ({len(self.members)} scene(s))"


def fold_head(ws: Workspace, scene: Any, checkpoint_id: str, device: str, max_scenes: int = 8,
              folds: int = crossfit.DEFAULT_FOLDS) -> FoldHead | None:
    """The :class:`FoldHead` that scores ``scene`` held out (:func:`held_out_fold`), or None when no other scene can
    be fitted on.

    Its key holds what the head depends on: the workspace, the checkpoint (id and file), the device, ``max_scenes``
    and each fit scene's id, latest label version and image/label files."""
    fold = held_out_fold(ws, scene, folds, max_scenes)
    if fold is None:
        return None
    f, k, members, fit_scenes = fold
    ck_path = ws.checkpoint_path(ws.get_checkpoint(checkpoint_id))
    versions = ws.latest_label_versions()
    key = ("held-out head", str(Path(ws.root).resolve()), checkpoint_id, _file_stamp(ck_path), str(device),
           int(max_scenes), tuple((s.id, versions.get(s.id, 0), _file_stamp(ws.scene_path(s, "image")),
                                   _file_stamp(ws.scene_path(s, "label"))) for s in fit_scenes))
    return FoldHead(f, k, members, fit_scenes, key, bool(scene.synthetic))


class HeldOutBuild:
    """What the scenes of one build of many queues share for held-out scoring (:func:`build_queue`'s
    ``held_out_build``; :func:`seghz.review.plan.build_queues` and :func:`rerank_queues` make one per build).

    * ONE predictor of the checkpoint: each scene's fold head is swapped into it
      (:class:`seghz.review.crossfit.HeadSwap`: base + that fold's delta, bit for bit what a fresh load with the delta
      applied gives) instead of loading the checkpoint again per scene. Memory: one model, plus the heads' deltas.
    * The folds whose head could not be fitted: the fold's other scenes fail with the same error, not refitting.

    ``own``: a predictor of exactly ``checkpoint`` that the build loaded itself and shares with no one: the heads are
    swapped into its model (no second load) and :meth:`restore` puts its head back before it scores a scene
    in-sample. Without it, the first held-out scene loads one (``Predictor.from_checkpoint``). ``loads`` counts the
    checkpoints this object loaded."""

    def __init__(self, own: Any = None, checkpoint: str | Path | None = None):
        if own is not None and checkpoint is None:
            raise ValueError("an owned predictor needs the checkpoint file it was loaded from")
        self._own = own
        self._own_key = (str(checkpoint), _file_stamp(Path(checkpoint)), str(getattr(own, "device", "cpu"))) \
            if own is not None else None
        self._key: tuple | None = None
        self._pred: Any = None
        self._swap: crossfit.HeadSwap | None = None
        self.failed: dict[tuple, Exception] = {}
        self.loads = 0

    def restore(self) -> None:
        """Put the base head back into the shared model (before it scores in-sample, and at the end of a build)."""
        if self._swap is not None:
            self._swap.restore()

    def predictor(self, ck_path: Path, device: str, batch_size: int | None, delta: dict[str, Any]) -> Any:
        """The build's predictor of checkpoint ``ck_path`` on ``device`` with the head ``delta`` in place."""
        key = (str(ck_path), _file_stamp(Path(ck_path)), str(device), batch_size)
        if key != self._key:
            self.restore()
            own = self._own
            if own is not None and self._own_key == key[:3] and getattr(own, "batch_size", None) == batch_size:
                pred = own
            else:
                from seghz.infer.engine import Predictor

                pred, _ = Predictor.from_checkpoint(ck_path, device, batch_size=batch_size)
                self.loads += 1
            self._key, self._pred, self._swap = key, pred, crossfit.HeadSwap(pred.model)
        self._swap.use(delta)  # type: ignore[union-attr]
        return self._pred


def fit_fold_head(ws: Workspace, fh: FoldHead, checkpoint_id: str, device: str, tmp: Path, max_scenes: int,
                  progress: Callable[[float, str], None] | None = None, build: HeldOutBuild | None = None) -> tuple:
    """The cache entry of ``fh``'s head, fitted now when :data:`seghz.review.crossfit.HEAD_CACHE` lacks it:
    ``("head", delta)``, or ``("too few", labelled px)`` when the fit scenes of a real scene hold under
    :data:`MIN_HELD_OUT_PIXELS` labelled pixels. ``progress(fraction of this fit, message)``.

    Raises:
        What the refit raises; a fit that failed in ``build`` raises the same error again without refitting.
    """
    entry = crossfit.HEAD_CACHE.get(fh.key)
    if entry is not None:
        return entry
    if build is not None and fh.key in build.failed:
        raise build.failed[fh.key]
    try:
        fit = [(read_image(ws.scene_path(s, "image")), ws.effective_label(s.id)) for s in fh.fit_scenes]
        n_px = sum(int((np.asarray(lbl) != IGNORE).sum()) for _, lbl in fit)
        if not fh.synthetic and n_px < MIN_HELD_OUT_PIXELS:
            entry = ("too few", n_px)
        else:
            ck_path = ws.checkpoint_path(ws.get_checkpoint(checkpoint_id))
            say = f"fitting the held-out head of {fh.what} on {len(fit)} scene(s) outside it"
            if progress:
                progress(0.0, say)
            path = crossfit.held_out_head(
                ck_path, fit, tmp / f"held_out_fold{fh.fold}.safetensors", max_images=max_scenes, device=device,
                progress=(lambda frac, msg="": progress(frac, f"{say}: {msg}")) if progress else None)
            entry = ("head", crossfit.head_delta(ck_path, path))
    except (BadInputError, ValueError, OSError, RuntimeError) as e:
        if build is not None:
            build.failed[fh.key] = e
        raise
    crossfit.HEAD_CACHE.put(fh.key, entry)
    return entry


def fold_heads_to_fit(ws: Workspace, scenes: list[Any], checkpoint_id: str, device: str, *, max_scenes: int = 8,
                   folds: int = crossfit.DEFAULT_FOLDS) -> list[FoldHead]:
    """The fold heads the held-out queues of ``scenes`` need that :data:`seghz.review.crossfit.HEAD_CACHE` lacks,
    each once, in fold order: what a build fits up front (:func:`fit_fold_head`) before it scores any scene. A head
    is planned for the first of ``scenes`` it scores (as a scene-by-scene build would fit it)."""
    out: dict[tuple, FoldHead] = {}
    for s in scenes:
        fh = fold_head(ws, s, checkpoint_id, device, max_scenes, folds)
        if fh is not None and fh.key not in out and crossfit.HEAD_CACHE.get(fh.key) is None:
            out[fh.key] = fh
    return sorted(out.values(), key=lambda h: (h.fold, h.folds))


def _held_out_predictor(ws: Workspace, scene: Any, checkpoint_id: str, predictor: Any, tmp: Path, max_scenes: int,
                        progress: Callable[[float, str], None] | None,
                        folds: int = crossfit.DEFAULT_FOLDS, build: HeldOutBuild | None = None) -> tuple[Any, str]:
    """``(predictor, scoring)``: a predictor of the checkpoint with the head of ``scene``'s fold
    (:func:`held_out_fold`: refitted on up to ``max_scenes`` of the :func:`held_out_fit_scenes` outside the fold) and
    ``"held-out head (N scene(s))"``. For a real scene without such a scene, or whose fold's fit scenes hold under
    :data:`MIN_HELD_OUT_PIXELS` labelled pixels, ``predictor`` itself (in-sample scoring) and a ``scoring`` that
    starts with "in-sample" and says why held-out scoring was not done.

    A fitted head (only the tensors the refit changed) is kept in :data:`seghz.review.crossfit.HEAD_CACHE` under its
    :func:`fold_head` key: the other scenes of the fold, in this build or a later one, reuse it until one of those
    changes (a label saved on a fit scene refits only the heads fitted on it). The predictor returned is ``build``'s
    one model with the head swapped in (:class:`HeldOutBuild`; a new one, which loads the checkpoint, without it).

    Raises:
        BadInputError: For a synthetic scene without another labelled scene of its scheme.
    """
    device = str(getattr(predictor, "device", "cpu"))
    fh = fold_head(ws, scene, checkpoint_id, device, max_scenes, folds)
    if fh is None and scene.synthetic:
        raise BadInputError(f"scene '{scene.id}'", "held-out scoring needs at least one OTHER labelled scene of the "
                            f"{scene.scheme} scheme to refit the head on; there is none")
    n_synth = sum(1 for s in ws.list_scenes() if s.id != scene.id and s.scheme == scene.scheme and s.synthetic)
    unused = f"; the {n_synth} synthetic demo scene(s) are never used for a real scene" if n_synth else ""
    if fh is None:
        return predictor, (f"in-sample (held-out asked, but there is no other real labelled {scene.scheme} scene to "
                           f"refit the head on{unused})")
    entry = fit_fold_head(ws, fh, checkpoint_id, device, tmp, max_scenes,
                          (lambda _frac, msg="": progress(0.0, msg)) if progress else None, build)
    if entry[0] == "too few":
        return predictor, (f"in-sample (held-out asked, but the other real labelled {scene.scheme} scene(s) hold only "
                           f"{entry[1]:,} labelled px, too few to refit the head on (at least {MIN_HELD_OUT_PIXELS:,})"
                           f"{unused})")
    if progress:
        progress(0.0, f"scoring with the held-out head of {fh.what}")
    ck_path = ws.checkpoint_path(ws.get_checkpoint(checkpoint_id))
    held = (build or HeldOutBuild()).predictor(ck_path, device, getattr(predictor, "batch_size", None), entry[1])
    return held, f"held-out head ({len(fh.fit_scenes)} scene(s))"


def build_queue(
    ws: Workspace,
    scene_id: str,
    predictor: Any,
    checkpoint_id: str,
    *,
    tta: str = "none",
    threshold: float = 0.5,
    min_pixels: int = 4,
    max_items: int = DEFAULT_MAX_ITEMS,
    progress: Callable[[float, str], None] | None = None,
    save: bool = True,
    held_out: bool = False,
    held_out_scenes: int = 8,
    held_out_folds: int = crossfit.DEFAULT_FOLDS,
    held_out_build: HeldOutBuild | None = None,
) -> SceneQueue:
    """Score the scene's latest effective label with the checkpoint's predictor and group it into a queue.

    With ``held_out``, the scene is scored by the checkpoint's head refitted on the effective labels of up to
    ``held_out_scenes`` OTHER labelled scenes of the same scheme (:mod:`seghz.review.crossfit`), so a model that was
    trained on this scene's noisy labels does not excuse the noise it learned; ``predictor`` is then only used for
    its device and batch size. A real scene's head is refitted on real scenes only (:func:`held_out_fit_scenes`):
    without one (or with too few labelled pixels) it is scored in-sample, and the queue's ``scoring`` says so and why.
    The head is that of the scene's fold (``held_out_folds`` folds of the candidate scenes, :func:`held_out_fold`),
    fitted once on scenes outside the fold and reused from memory by the fold's other scenes: building the queues of
    a whole split refits at most ``held_out_folds`` heads, not one per scene. ``held_out_build``: what the scenes of
    one build share (:class:`HeldOutBuild`: one model the fold heads are swapped into, loaded once per build instead
    of once per scene); without it a held-out scene loads the checkpoint for itself.

    Raises:
        BadInputError: When the checkpoint predicts another class scheme than the scene's, or ``held_out`` finds no
            other labelled scene for a synthetic scene.
    """
    scene = ws.get_scene(scene_id)
    ck = ws.get_checkpoint(checkpoint_id)
    if ck.scheme != scene.scheme:
        raise BadInputError(f"scene '{scene_id}'", f"checkpoint '{checkpoint_id}' predicts {ck.scheme} classes but the "
                            f"scene is labelled in {scene.scheme}; the queue needs a checkpoint of the scene's scheme")
    scheme = get_scheme(scene.scheme)
    version = ws.latest_label_version(scene_id)
    label = ws.effective_label(scene_id, version)
    image = read_image(ws.scene_path(scene, "image"))
    scoring = "in-sample"
    if held_out_build is not None:
        held_out_build.restore()  # its model may be ``predictor`` itself (owned): in-sample scoring needs the base head
    with tempfile.TemporaryDirectory(prefix="seghz-heldout-") as tmp:
        if held_out:
            predictor, scoring = _held_out_predictor(ws, scene, checkpoint_id, predictor, Path(tmp), held_out_scenes,
                                                     progress, held_out_folds, held_out_build)
        res = predictor.predict_full(image, tta, progress=progress, return_proba=True)
    proba = res.proba
    disagreement = res.disagreement if tta != "none" else None
    score = suspicion_score(proba, label, disagreement)
    predicted = proba.argmax(0).astype(np.uint8)
    items = group_components(score, label, predicted, stem=scene_id, names=scheme.names, threshold=threshold,
                             min_pixels=min_pixels)[: max(0, int(max_items))]
    indices = component_indices(score, label, items, threshold)
    q = SceneQueue(
        scene_id=scene_id, checkpoint_id=checkpoint_id, tta=str(tta), label_version=version, created_at=now_iso(),
        items=[ReviewItem(scene_id, tuple(it.bbox), int(it.pixels), float(it.score), float(it.mean_score),
                          int(it.label_id), int(it.predicted_id), it.label_class, it.predicted_class, ix)
               for it, ix in zip(items, indices)],
        predicted=predicted, score=score.astype(np.float32), threshold=float(threshold), scoring=scoring,
    )
    if save:
        save_queue(ws, q)
    return q


def rerank_queues(ws: Workspace, checkpoint_id: str, *, device: str | None = None,
                  log: Callable[[str], None] | None = None) -> list[str]:
    """Rebuild every saved queue of the checkpoint's scheme with ``checkpoint_id`` (e.g. right after a retrain),
    keeping each queue's TTA, threshold and scoring. Judged items stay out unless their label changed
    (:func:`pending_items`). Returns the ids of the scenes re-ranked; a scene that fails is logged and skipped. The
    checkpoint is loaded once: held-out scenes swap their fold's head into that model (:class:`HeldOutBuild`)."""
    from seghz.infer.engine import Predictor

    ck = ws.get_checkpoint(checkpoint_id)
    done: list[str] = []
    predictor = None
    build = None
    for scene in ws.list_scenes():
        old = load_queue(ws, scene.id) if scene.scheme == ck.scheme else None
        if old is None:
            continue
        if predictor is None:
            predictor, _ = Predictor.from_checkpoint(ws.checkpoint_path(ck), device)
            build = HeldOutBuild(own=predictor, checkpoint=ws.checkpoint_path(ck))  # one model for every scene
        try:
            build_queue(ws, scene.id, predictor, checkpoint_id, tta=old.tta, threshold=old.threshold,
                        held_out=old.scoring != "in-sample", held_out_build=build)
        except (BadInputError, ValueError, OSError, RuntimeError) as e:
            if log:
                log(f"queue of scene '{scene.id}' not re-ranked: {e}")
            continue
        done.append(scene.id)
        if log:
            log(f"re-ranked the noise queue of scene '{scene.id}' with {checkpoint_id}")
    return done


# ------------------------------------------------------------------------------------------------ verdicts


def judged_pixels(ws: Workspace, scene_id: str) -> tuple[np.ndarray, np.ndarray]:
    """``(flat indices (sorted), label values at judgment)`` of every pixel judged in the scene's queues."""
    try:
        with np.load(review_dir(ws, scene_id) / "judged.npz", allow_pickle=False) as z:
            return z["indices"].astype(np.int64), z["values"].astype(np.uint8)
    except (OSError, ValueError, KeyError):
        return np.zeros(0, np.int64), np.zeros(0, np.uint8)


def verdicts(ws: Workspace, scene_id: str) -> list[dict]:
    """The scene's verdict log, oldest first."""
    try:
        data = json.loads((review_dir(ws, scene_id) / "verdicts.json").read_text("utf-8"))
    except (OSError, ValueError):
        return []
    return data if isinstance(data, list) else []


def record_verdict(ws: Workspace, scene_id: str, item: ReviewItem, action: str, version: int, analyst: str,
                   *, class_index: int | None = None, checkpoint_id: str | None = None) -> dict:
    """Remember an item as judged: its pixels with their label at ``version``, and a log entry.

    Two files, each replaced atomically under the scene's lock, the log first: ``verdicts.json`` gets the entry,
    then ``judged.npz`` the pixels. A crash between the two leaves a logged verdict whose item is not marked
    judged: the queue shows the item again (at worst it is judged twice, two log entries), and it is never the
    other way round, an item gone from the queue with no verdict recorded. (The label edit itself is saved before
    this, so a crash before either write also shows the item again.)
    """
    label = ws.effective_label(scene_id, version).ravel()
    entry = {"scene_id": scene_id, "bbox": list(item.bbox), "label_version": int(version), "action": action,
             "class_index": class_index, "label_class": item.label_class, "pixels": int(item.pixels),
             "analyst": analyst, "time": now_iso(), "checkpoint_id": checkpoint_id}
    with _locked(ws, scene_id):
        idx, vals = judged_pixels(ws, scene_id)
        keep = ~np.isin(idx, item.indices)
        idx = np.concatenate([idx[keep], item.indices])
        vals = np.concatenate([vals[keep], label[item.indices]])
        order = np.argsort(idx, kind="stable")
        buf = io.BytesIO()
        np.savez_compressed(buf, indices=idx[order], values=vals[order])
        log = verdicts(ws, scene_id) + [entry]
        atomic_write_bytes(review_dir(ws, scene_id) / "verdicts.json",
                           json.dumps(log, ensure_ascii=False, indent=1).encode("utf-8"))
        atomic_write_bytes(review_dir(ws, scene_id) / "judged.npz", buf.getvalue())
    return entry


def is_judged(item: ReviewItem, judged: tuple[np.ndarray, np.ndarray], label: np.ndarray,
              overlap: float = JUDGED_OVERLAP) -> bool:
    """Whether at least ``overlap`` of the item's pixels were judged and still hold the judged label value."""
    idx, vals = judged
    if idx.size == 0 or item.indices.size == 0:
        return False
    pos = np.searchsorted(idx, item.indices)
    pos = np.minimum(pos, idx.size - 1)
    hit = idx[pos] == item.indices
    same = hit & (vals[pos] == np.asarray(label).ravel()[item.indices])
    return int(np.count_nonzero(same)) >= overlap * item.indices.size


def pending_items(ws: Workspace, queue: SceneQueue, label: np.ndarray | None = None) -> list[ReviewItem]:
    """The queue's items not judged yet (or whose label changed since), in rank order.

    ``label``: the scene's current effective label (read when None)."""
    judged = judged_pixels(ws, queue.scene_id)
    if judged[0].size == 0:
        return list(queue.items)
    lbl = ws.effective_label(queue.scene_id) if label is None else label
    return [it for it in queue.items if not is_judged(it, judged, lbl)]


# ------------------------------------------------------------------------------------------------ actions


def action_edit(queue: SceneQueue, item: ReviewItem, action: str, class_index: int | None = None) -> dict:
    """The keyword arguments of ``Workspace.save_label_edit`` for an action on an item (pixels/values/confirm)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown queue action '{action}'; use one of {sorted(ACTIONS)}")
    if action == "confirm":
        return {"confirm": item.indices}
    if action == "accept":
        return {"pixels": item.indices, "values": queue.predicted.ravel()[item.indices].astype(np.int64)}
    if action == "ignore":
        return {"pixels": item.indices, "values": IGNORE}
    if class_index is None:
        raise ValueError("relabel needs a class index")
    return {"pixels": item.indices, "values": int(class_index)}


def apply_action(ws: Workspace, queue: SceneQueue, item: ReviewItem, action: str, analyst: str, *,
                 class_index: int | None = None, reason: str | None = None) -> int:
    """Save the sparse edit of an action on a queue item (tool ``queue-<action>``) and record the verdict.

    The edit is based on the version the queue was built on and merged when others saved disjoint pixels
    meanwhile.

    Returns:
        The new label version.

    Raises:
        ConflictError: When the component's pixels were changed since the queue was built.
        BadInputError: Bad analyst name, class index outside the scheme.
    """
    kw = action_edit(queue, item, action, class_index)
    version = ws.save_label_edit(queue.scene_id, queue.label_version, analyst, ACTIONS[action],
                                 checkpoint_id=queue.checkpoint_id, reason=reason, merge=True, **kw)
    record_verdict(ws, queue.scene_id, item, action, version, analyst,
                   class_index=class_index if action == "relabel" else None, checkpoint_id=queue.checkpoint_id)
    return version


def accept_breakdown(queue: SceneQueue, item: ReviewItem, names: list[str] | None = None) -> list[tuple[int, str, int]]:
    """What *Accept prediction* writes on an item: ``(class id, class name, pixels)`` per class the model predicts on
    the component's pixels, most pixels first (ties: smaller id). The card's "model says X" is only the majority; an
    accept writes the model's class pixel by pixel."""
    pred = queue.predicted.ravel()[item.indices].astype(np.int64)
    if pred.size == 0:
        return []
    counts = np.bincount(pred, minlength=256)
    ids = sorted((int(c) for c in np.flatnonzero(counts)), key=lambda c: (-int(counts[c]), c))

    def name(c: int) -> str:
        if c == IGNORE:
            return "ignore (255)"
        return names[c] if names is not None and c < len(names) else str(c)

    return [(c, name(c), int(counts[c])) for c in ids]


def describe_breakdown(parts: list[tuple[int, str, int]]) -> str:
    """``"OpenArea 19, Reflection_Glass 19, Road 1"``."""
    return ", ".join(f"{n} {k:,}" for _, n, k in parts)


@dataclass
class Staleness:
    """How a saved queue relates to the scene's current label and the active model (:func:`queue_staleness`)."""

    label_version: int  # the version the queue was built on
    latest_version: int  # the scene's latest label version
    changed_px: int  # label pixels whose value changed since, other than by the verdicts given in the queue
    verdict_px: int  # label pixels changed since by verdicts (accept / relabel / ignore)
    checkpoint_id: str  # the queue's checkpoint
    active_id: str | None  # the active checkpoint (None: none, or not asked)
    shape_changed: bool = False
    version_missing: bool = False

    @property
    def label_stale(self) -> bool:
        return self.shape_changed or self.version_missing or self.changed_px > 0

    @property
    def model_stale(self) -> bool:
        return self.active_id is not None and self.active_id != self.checkpoint_id

    @property
    def stale(self) -> bool:
        return self.label_stale or self.model_stale


def queue_staleness(ws: Workspace, queue: SceneQueue, *, active_id: str | None = None,
                    built_label: np.ndarray | None = None, label: np.ndarray | None = None,
                    latest_version: int | None = None) -> Staleness:
    """Whether the queue still describes the scene: built on its current label, with the active checkpoint.

    The label counts as moved on when pixel values changed since the version the queue was built on *other than by
    the queue's own verdicts* (remembered in ``judged.npz`` with the value they were given): each verdict is saved as
    a new label version, and that alone does not make the other items' scores wrong, whereas a brush edit, an undo or
    another analyst's save does.

    ``built_label`` / ``label`` / ``latest_version``: the label at the queue's version, the current label and the
    latest version, when the caller has them (read otherwise)."""
    latest = ws.latest_label_version(queue.scene_id) if latest_version is None else int(latest_version)
    st = Staleness(queue.label_version, latest, 0, 0, queue.checkpoint_id, active_id)
    if latest == queue.label_version and label is None:
        return st
    if queue.label_version > latest:  # the label history no longer holds the queue's version
        st.version_missing = True
        return st
    cur = ws.effective_label(queue.scene_id, latest) if label is None else np.asarray(label)
    if cur.shape != queue.shape:
        st.shape_changed = True
        return st
    if latest == queue.label_version:
        return st
    old = ws.effective_label(queue.scene_id, queue.label_version) if built_label is None else np.asarray(built_label)
    changed = np.flatnonzero(old.ravel() != cur.ravel())
    if changed.size == 0:
        return st
    idx, vals = judged_pixels(ws, queue.scene_id)
    explained = np.zeros(changed.size, bool)
    if idx.size:
        pos = np.minimum(np.searchsorted(idx, changed), idx.size - 1)
        explained = (idx[pos] == changed) & (vals[pos] == cur.ravel()[changed])
    st.verdict_px = int(np.count_nonzero(explained))
    st.changed_px = int(changed.size - st.verdict_px)
    return st


# ------------------------------------------------------------------------------------------------ display


def crop_window(bbox: tuple[int, int, int, int], shape: tuple[int, int], margin: float = 0.5,
                min_size: int = 24) -> tuple[int, int, int, int]:
    """``(row, col, height, width)`` around a bbox, grown by ``margin`` of its size (at least ``min_size``
    px on each side), clamped to the scene."""
    r0, c0, r1, c1 = bbox
    h, w = r1 - r0, c1 - c0
    side_h = max(min_size, round(h * (1 + 2 * margin)))
    side_w = max(min_size, round(w * (1 + 2 * margin)))
    side_h, side_w = min(side_h, shape[0]), min(side_w, shape[1])
    rr = min(max(0, r0 - (side_h - h) // 2), shape[0] - side_h)
    cc = min(max(0, c0 - (side_w - w) // 2), shape[1] - side_w)
    return rr, cc, side_h, side_w


def composite(panels: list[np.ndarray], size: int = 160, gap: int = 4, per_row: int | None = None) -> np.ndarray:
    """RGB panels (same size) scaled to ``size`` px on the longer side and laid out on white, ``per_row`` to a row
    (default: all side by side)."""
    from PIL import Image

    h, w = panels[0].shape[:2]
    s = size / max(h, w)
    th, tw = max(1, round(h * s)), max(1, round(w * s))
    cols = max(1, min(per_row or len(panels), len(panels)))
    rows = -(-len(panels) // cols)
    out = np.full((rows * th + (rows - 1) * gap, cols * tw + (cols - 1) * gap, 3), 255, np.uint8)
    for i, p in enumerate(panels):
        r, c = divmod(i, cols)
        im = Image.fromarray(np.asarray(p, np.uint8)).resize((tw, th), Image.NEAREST)
        out[r * (th + gap): r * (th + gap) + th, c * (tw + gap): c * (tw + gap) + tw] = np.asarray(im)
    return out


def item_panels(image: np.ndarray, label: np.ndarray, predicted: np.ndarray, item_mask: np.ndarray,
                scheme: Any) -> list[np.ndarray]:
    """Image, label, prediction and suspect-mask crops (RGB) of one item; all arrays are the same crop."""
    from seghz.labels_edit import blend_overlay

    lbl_rgb = scheme.colorize(label)
    pred_rgb = scheme.colorize(predicted)
    sus = blend_overlay(image, np.broadcast_to(np.array([255, 0, 255], np.uint8), image.shape).copy(), 0.7, mask=item_mask)
    return [np.asarray(image, np.uint8), lbl_rgb, pred_rgb, sus]


def score_rgb(score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A heat colouring (yellow → red) of a suspicion score crop and the mask of pixels worth drawing."""
    s = np.nan_to_num(np.asarray(score, np.float32), nan=0.0, neginf=0.0, posinf=1.0).clip(0, 1)
    rgb = np.stack([np.full_like(s, 255), 255 * (1 - s), np.zeros_like(s)], -1).astype(np.uint8)
    return rgb, np.isfinite(score) & (np.asarray(score) >= 0.25)


__all__ = [
    "ACTIONS",
    "JUDGED_OVERLAP",
    "FoldHead",
    "HeldOutBuild",
    "ReviewItem",
    "SceneQueue",
    "Staleness",
    "accept_breakdown",
    "action_edit",
    "apply_action",
    "build_queue",
    "clear_queue",
    "component_indices",
    "composite",
    "crop_window",
    "describe_breakdown",
    "fit_fold_head",
    "fold_head",
    "fold_heads_to_fit",
    "is_judged",
    "item_panels",
    "judged_pixels",
    "load_queue",
    "pending_items",
    "queue_staleness",
    "record_verdict",
    "rerank_queues",
    "review_dir",
    "save_queue",
    "score_rgb",
    "verdicts",
]
