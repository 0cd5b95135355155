"""The workspace-wide review plan: every scene's noise queue in one ranking, with a time budget.

Pure Python/numpy (no Streamlit): the Labels page's *Review plan — all scenes* panel (``ui.review_plan``), the
``queues`` background job (``seghz.jobs.kinds``) and ``python -m seghz review build|plan`` lay out what these
functions return.

Why
===
A noise queue (:mod:`seghz.review.queue`) is per scene: with hundreds of scenes an analyst cannot know where to
start. :func:`review_plan` answers "what do I look at in the next 30 minutes": the items still to judge of every
saved queue, ranked across scenes, each with the cumulative review time it would take to get there.

Ranking
=======
Items are the *pending* items of each saved queue (:func:`seghz.review.queue.pending_items`: judged items stay out
unless their label changed since). They are ranked by their queue score (``mean suspicion × pixels`` of the
component, :func:`seghz.review.suspicion.group_components`: the same formula in every scene, so scores compare
across scenes built with the same threshold).

Queues that are out of date (:func:`seghz.review.queue.queue_staleness`: the label changed other than by the queue's
own verdicts, or it was built with another checkpoint than the active one) are **ranked after every fresh item** and
flagged: their scores describe a label or a model that is no longer the current one (a fixed component may still be
listed, a new error is missing), so they should not push a fresh item out of the budget. Rebuilding them
(:func:`build_queues`) brings them back into the main ranking.

Time estimate
=============
:func:`seconds_per_item` measures the review pace from the verdict log (``review/<scene>/verdicts.json``): the gaps
between one analyst's consecutive verdicts in the same scene, gaps over :data:`BREAK_S` dropped as breaks, median.
With fewer than :data:`MIN_GAPS` gaps the estimate is :data:`DEFAULT_SECONDS_PER_ITEM` (a first guess at a card: look
at four crops, click), and the source says so. The plan's cumulative time is ``rank × seconds per item``; a budget
keeps the items whose cumulative time fits in it.
"""
from __future__ import annotations

import contextlib
import itertools
import statistics
import tempfile
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

from seghz.errors import BadInputError
from seghz.review import queue as rq
from seghz.store import Scene, Workspace

DEFAULT_SECONDS_PER_ITEM = 20.0  # a card: four crops to look at and one click; used until the log says better
MIN_GAPS = 5  # verdict gaps needed before the measured pace replaces the default
BREAK_S = 600.0  # a gap longer than this between two verdicts is a break, not the time one item took
DEFAULT_BUDGET_S = 30 * 60.0


class _Stopped(Exception):
    """Raised inside a scene's build when ``should_stop`` asks to stop: the scene's queue is then not written."""


# ------------------------------------------------------------------------------------------------ building


@dataclass
class SceneBuild:
    """What :func:`build_queues` did with one scene: ``status`` is ``built``, ``skipped`` (scheme, no label),
    ``failed`` (the error in ``message``) or ``stopped`` (``should_stop`` asked before or during it)."""

    scene_id: str
    status: str
    message: str = ""
    items: int = 0
    pixels: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def _labelled(ws: Workspace, scene: Scene) -> bool:
    """A scene with an original label or any saved label version: something a queue can check."""
    return bool(scene.label_path) or ws.latest_label_version(scene.id) > 0


def default_held_out(scene: Scene) -> bool:
    """The Labels page's default: held-out scoring for training scenes (a model trained on a scene's noisy labels
    learned part of their noise; a head refitted on the other scenes still finds it), in-sample elsewhere."""
    return scene.split == "train"


FIT_WINDOW_PX = 4 * 512 * 512  # what a held-out refit reads of one fit scene at most (4 windows of 512², crossfit)
# a head's fit weighs, on the progress bar, this many times the fit scenes' pixels it reads (20 GID tiles of 224²,
# 2-core CPU: the 5 fits took 83 % of a first build's time and got 80 % of its bar)
FIT_PX_WEIGHT = 2.0


def fit_weight(fh: rq.FoldHead) -> float:
    """The progress weight of fitting a fold's held-out head, in scored pixels: :data:`FIT_PX_WEIGHT` × the pixels
    its fit scenes give the refit (each at most :data:`FIT_WINDOW_PX`)."""
    return FIT_PX_WEIGHT * sum(min(int(s.width) * int(s.height), FIT_WINDOW_PX) for s in fh.fit_scenes)


def build_queues(
    ws: Workspace,
    checkpoint_id: str,
    scene_ids: Iterable[str],
    *,
    tta: str = "none",
    threshold: float = 0.5,
    held_out: bool | None = None,
    progress: Callable[[float, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    log: Callable[[str], None] | None = None,
    predictor: Any = None,
    device: str | None = None,
) -> list[SceneBuild]:
    """Build (or rebuild) the noise queue of each scene with one checkpoint, one predictor for all of them.

    Scenes whose scheme differs from the checkpoint's, and scenes without any label, are skipped (logged). A scene
    whose build fails (bad file, held-out scoring without another labelled scene, ...) is logged and skipped: one
    broken tile must not cost the other 600 their queue. ``held_out``: True/False for every scene, None for the
    Labels page's default per scene (:func:`default_held_out`).

    ``progress(fraction, message)`` is weighted by each scene's pixel count (a 7200×6800 tile takes as long as
    thirty 1024² ones). ``should_stop()`` is asked before each scene and at every progress step: when it returns
    True the scene in progress writes nothing (its queue is saved only once complete) and the remaining scenes are
    reported ``stopped``; an exception it raises (a job's :class:`~seghz.jobs.runner.JobCancelled`) propagates the
    same way, queues finished before it staying saved. ``predictor``: reuse a loaded predictor of the checkpoint
    (else one is loaded on the first scene that needs it, on ``device``).

    Held-out scenes: the fold heads they need (:func:`seghz.review.queue.fold_heads_to_fit`, those not in memory
    already) are fitted first, one progress step per head ("held-out head 2/5: fitting the held-out head of fold
    3/5 ..."), weighted by :func:`fit_weight`; then the scenes are scored, every held-out scene with its fold's head
    swapped into ONE model of the checkpoint (:class:`seghz.review.queue.HeldOutBuild`: the predictor loaded here
    when none is given, else one more), not a model loaded per scene. A head that cannot be fitted is logged; its
    fold's scenes fail with that error.

    Raises:
        NotFoundError: For an unknown checkpoint or scene id (before any work).
    """
    ck = ws.get_checkpoint(checkpoint_id)
    scenes = [ws.get_scene(s) for s in dict.fromkeys(scene_ids)]
    say = log or (lambda _line: None)
    out: list[SceneBuild] = []
    todo: list[Scene] = []
    for s in scenes:
        if s.scheme != ck.scheme:
            out.append(SceneBuild(s.id, "skipped", f"the scene is labelled in {s.scheme}, checkpoint "
                                                   f"'{checkpoint_id}' predicts {ck.scheme}"))
            say(f"scene '{s.id}' skipped: labelled in {s.scheme}, the checkpoint '{checkpoint_id}' predicts {ck.scheme}")
        elif not _labelled(ws, s):
            out.append(SceneBuild(s.id, "skipped", "no label to check"))
            say(f"scene '{s.id}' skipped: it has no label to check")
        else:
            todo.append(s)
    held = {s.id: default_held_out(s) if held_out is None else bool(held_out) for s in todo}
    owned = predictor is None  # loaded here: the fold heads are swapped into it (rq.HeldOutBuild), no second model
    build: rq.HeldOutBuild | None = None
    fits: list[rq.FoldHead] = []

    def load() -> None:
        nonlocal predictor, build
        if predictor is None:
            from seghz.infer.engine import Predictor

            predictor, _ = Predictor.from_checkpoint(ws.checkpoint_path(ck), device)
        if build is None and any(held.values()):
            build = (rq.HeldOutBuild(own=predictor, checkpoint=ws.checkpoint_path(ck)) if owned
                     else rq.HeldOutBuild())

    if any(held.values()):  # the fold heads the scenes need, fitted before any scene is scored
        try:
            load()
            fits = rq.fold_heads_to_fit(ws, [s for s in todo if held[s.id]], checkpoint_id,
                                        str(getattr(predictor, "device", "cpu")))
        except (BadInputError, ValueError, OSError, RuntimeError) as e:  # each scene tries again and says why
            say(f"the held-out heads were not fitted up front: {e}")
    fit_px = [fit_weight(fh) for fh in fits]
    total_px = float(sum(fit_px) + sum(s.width * s.height for s in todo)) or 1.0
    done_px = 0.0
    stopped = False

    def check_stop() -> None:
        if should_stop is not None and should_stop():
            raise _Stopped

    def stage(start: float, share: float, prefix: str):
        """A progress callback for one stage (a head fit, a scene) spanning ``share`` of the bar from ``start``:
        it checks for a stop first, and prefixes the stage's messages."""
        def on_stage(frac: float, msg: str = "") -> None:
            check_stop()
            if progress is not None:
                progress(start + share * min(1.0, max(0.0, float(frac))), f"{prefix}: {msg}" if msg else prefix)
        return on_stage

    with tempfile.TemporaryDirectory(prefix="seghz-heldout-") as tmp:
        for j, fh in enumerate(fits):
            prefix = f"held-out head {j + 1}/{len(fits)}"
            on_fit = stage(done_px / total_px, fit_px[j] / total_px, prefix)

            try:
                on_fit(0.0, f"reading the {len(fh.fit_scenes)} scene(s) the head of {fh.what} is fitted on")
                rq.fit_fold_head(ws, fh, checkpoint_id, str(getattr(predictor, "device", "cpu")), Path(tmp), 8,
                                 on_fit, build)
            except _Stopped:
                stopped = True
                say("stopped while fitting the held-out heads: no queue was written")
                break
            except (BadInputError, ValueError, OSError, RuntimeError) as e:  # its scenes fail with this error
                say(f"the held-out head of {fh.what} was not fitted: {e}")
            done_px += fit_px[j]
            if progress is not None:
                progress(done_px / total_px, f"{prefix}: done")

    for i, s in enumerate(todo):
        px = s.width * s.height
        if stopped:
            out.append(SceneBuild(s.id, "stopped", "stopped before this scene", pixels=px))
            continue
        prefix = f"scene {i + 1}/{len(todo)} ({s.name})"
        on_progress = stage(done_px / total_px, px / total_px, prefix)

        try:
            on_progress(0.0, "scoring")
            load()
            q = rq.build_queue(ws, s.id, predictor, checkpoint_id, tta=tta, threshold=float(threshold),
                               progress=on_progress, held_out=held[s.id], held_out_build=build)
        except _Stopped:
            stopped = True
            out.append(SceneBuild(s.id, "stopped", "stopped while it was being scored: nothing written", pixels=px))
            say(f"stopped while scoring scene '{s.id}': its queue was not written")
            continue
        except (BadInputError, ValueError, OSError, RuntimeError) as e:
            out.append(SceneBuild(s.id, "failed", str(e), pixels=px))
            say(f"queue of scene '{s.id}' not built: {e}")
        else:
            out.append(SceneBuild(s.id, "built", q.scoring, items=len(q.items), pixels=px))
            say(f"built the noise queue of scene '{s.id}' ({s.name}): {len(q.items)} item(s), {q.scoring}, "
                f"TTA {q.tta}, threshold {q.threshold:.2f}")
        done_px += px
        if progress is not None:
            progress(done_px / total_px, f"{prefix}: done")
    if build is not None:
        build.restore()
    order = {s.id: k for k, s in enumerate(scenes)}
    return sorted(out, key=lambda b: order[b.scene_id])


def scenes_needing_queues(ws: Workspace, split: str | None = "train", *, checkpoint_id: str | None = None,
                          active_id: str | None = None) -> list[str]:
    """The labelled scenes of ``split`` (None: all) without a fresh queue: none built yet, or out of date
    (:func:`seghz.review.queue.queue_staleness` against ``active_id``). With ``checkpoint_id``, only scenes of its
    scheme (the others cannot be scored by it)."""
    scheme = ws.get_checkpoint(checkpoint_id).scheme if checkpoint_id else None
    out = []
    for s in ws.list_scenes(split):
        if (scheme is not None and s.scheme != scheme) or not _labelled(ws, s):
            continue
        state = scene_state(ws, s, active_id)
        if state is None or state.stale:
            out.append(s.id)
    return out


# ------------------------------------------------------------------------------------------------ time estimate


class ItemPace(NamedTuple):
    """Estimated seconds an analyst spends on one queue item, where the number comes from, and how many verdict
    gaps it was measured on (0 for the default)."""

    seconds: float
    source: str
    gaps: int


def _parse_time(text: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(text))
    except (TypeError, ValueError):
        return None


def verdict_gaps(ws: Workspace, analyst: str | None = None) -> list[float]:
    """Seconds between consecutive verdicts of one analyst in one scene, breaks (> :data:`BREAK_S`) dropped.

    Only gaps inside one scene count: the time to open another scene (and to decide which) is not an item's."""
    gaps: list[float] = []
    for s in ws.list_scenes():
        by_analyst: dict[str, list[datetime]] = {}
        for v in rq.verdicts(ws, s.id):
            t = _parse_time(v.get("time"))
            who = str(v.get("analyst") or "")
            if t is not None and (analyst is None or who == analyst):
                by_analyst.setdefault(who, []).append(t)
        for times in by_analyst.values():
            times.sort()
            gaps += [d for a, b in itertools.pairwise(times) if 0 <= (d := (b - a).total_seconds()) <= BREAK_S]
    return gaps


def seconds_per_item(ws: Workspace, analyst: str | None = None) -> ItemPace:
    """How long one queue item takes, from the recorded verdict times (:func:`verdict_gaps`, median).

    With ``analyst``, that analyst's own pace when their log holds at least :data:`MIN_GAPS` gaps, else everyone's;
    with fewer than :data:`MIN_GAPS` gaps in all, :data:`DEFAULT_SECONDS_PER_ITEM`."""
    if analyst:
        mine = verdict_gaps(ws, analyst)
        if len(mine) >= MIN_GAPS:
            return ItemPace(float(statistics.median(mine)), f"median of {len(mine)} gaps between {analyst}'s "
                            "verdicts (breaks over 10 min left out)", len(mine))
    gaps = verdict_gaps(ws)
    if len(gaps) >= MIN_GAPS:
        return ItemPace(float(statistics.median(gaps)), f"median of {len(gaps)} gaps between consecutive verdicts "
                        "in this workspace (breaks over 10 min left out)", len(gaps))
    return ItemPace(DEFAULT_SECONDS_PER_ITEM, f"default: fewer than {MIN_GAPS} timed verdicts in this workspace "
                    f"({len(gaps)} gap(s)), so {DEFAULT_SECONDS_PER_ITEM:.0f} s a card is assumed", len(gaps))


_measured_pace = seconds_per_item  # review_plan's parameter of the same name shadows it there


# ------------------------------------------------------------------------------------------------ the plan


@dataclass
class PendingItem:
    """One item still to judge in a saved queue (without its pixel indices: a plan row, not an action)."""

    key: str
    bbox: tuple[int, int, int, int]
    label_class: str
    predicted_class: str
    pixels: int
    score: float


@dataclass
class SceneState:
    """A scene's saved queue as the plan sees it: the pending items and whether the queue is out of date."""

    scene_id: str
    checkpoint_id: str
    built_at: str
    tta: str
    scoring: str
    items: int
    pending: list[PendingItem]
    stale: bool
    stale_reason: str


def stale_reason(st: rq.Staleness) -> str:
    """Why a queue is out of date, in words ("" when it is not)."""
    why = []
    if st.version_missing:
        why.append(f"label version {st.label_version} is no longer in the history")
    elif st.shape_changed:
        why.append("the label changed size")
    elif st.changed_px:
        why.append(f"{st.changed_px:,} label px changed since it was built")
    if st.model_stale:
        why.append(f"built with {st.checkpoint_id}, the active model is {st.active_id}")
    return "; ".join(why)


def scene_state(ws: Workspace, scene: Scene, active_id: str | None) -> SceneState | None:
    """The scene's saved queue reduced to its pending items and staleness; None without a (readable) queue.

    The label is read once, and only when something changed since the build (a verdict or another save)."""
    q = rq.load_queue(ws, scene.id, maps=False)
    if q is None:
        return None
    latest = ws.latest_label_version(scene.id)
    judged = (rq.review_dir(ws, scene.id) / "judged.npz").exists()
    label = ws.effective_label(scene.id, latest) if (judged or latest != q.label_version) else None
    st = rq.queue_staleness(ws, q, active_id=active_id, label=label, latest_version=latest)
    # a label of another size (re-imported scene): the queue's pixel indices mean nothing on it, list it all, stale
    items = list(q.items) if st.shape_changed else rq.pending_items(ws, q, label=label)
    pending = [PendingItem(it.key, tuple(int(v) for v in it.bbox), it.label_class, it.predicted_class, int(it.pixels),
                           float(it.score)) for it in items]
    return SceneState(scene.id, q.checkpoint_id, q.created_at, q.tta, q.scoring, len(q.items), pending, st.stale,
                      stale_reason(st))


def _stat(path: Path) -> tuple[int, int] | None:
    with contextlib.suppress(OSError):
        s = path.stat()
        return s.st_mtime_ns, s.st_size
    return None


def state_signature(ws: Workspace, scene_id: str, latest: int, active_id: str | None) -> tuple:
    """What a cached :class:`SceneState` depends on: the scene's latest label version, its queue and judged files,
    the active model. Equal signatures: the cached state is still right."""
    d = rq.review_dir(ws, scene_id)
    return latest, _stat(d / "queue.npz"), _stat(d / "judged.npz"), active_id


@dataclass
class PlanItem:
    """One row of the plan: a pending item, its place in the workspace-wide ranking and the time to get there."""

    rank: int
    scene_id: str
    scene_name: str
    split: str
    key: str
    bbox: tuple[int, int, int, int]
    label_class: str
    predicted_class: str
    pixels: int
    score: float
    stale: bool
    cumulative_s: float

    def to_dict(self) -> dict:
        return {**asdict(self), "bbox": list(self.bbox)}


@dataclass
class SceneSummary:
    """Which scene to open next: its pending items and pixels, its best score, the time its items take."""

    scene_id: str
    scene_name: str
    split: str
    pending: int
    pending_px: int
    top_score: float | None
    est_minutes: float
    stale: bool
    stale_reason: str
    checkpoint_id: str
    built_at: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ReviewPlan:
    """The ranked pending items of every saved queue of a split (``items``: cut at the budget when one is given;
    ``total_items``: before the cut), the per-scene summary (fresh queues first, best score first), the labelled
    scenes without a queue, and the pace the times are computed with."""

    split: str | None
    items: list[PlanItem]
    total_items: int
    scenes: list[SceneSummary]
    no_queue: list[str]
    seconds_per_item: float
    pace_source: str
    budget_s: float | None
    active_id: str | None
    stale_items: int = 0
    unreadable: list[str] = field(default_factory=list)

    @property
    def total_s(self) -> float:
        """Estimated time to judge every pending item of the split."""
        return self.total_items * self.seconds_per_item

    @property
    def cut(self) -> int:
        """Items left out by the budget."""
        return self.total_items - len(self.items)

    def to_dict(self) -> dict:
        return {"split": self.split or "all", "active_id": self.active_id, "seconds_per_item": self.seconds_per_item,
                "pace_source": self.pace_source, "budget_s": self.budget_s, "total_items": self.total_items,
                "total_s": self.total_s, "stale_items": self.stale_items, "items_in_budget": len(self.items),
                "items": [i.to_dict() for i in self.items], "scenes": [s.to_dict() for s in self.scenes],
                "no_queue": {"count": len(self.no_queue), "scene_ids": list(self.no_queue)},
                "unreadable": list(self.unreadable)}


def review_plan(
    ws: Workspace,
    *,
    split: str | None = "train",
    active_id: str | None = None,
    budget_s: float | None = None,
    seconds_per_item: float | None = None,
    analyst: str | None = None,
    cache: MutableMapping[str, tuple[tuple, SceneState | None]] | None = None,
) -> ReviewPlan:
    """Rank the pending items of every saved queue of ``split`` (None: every scene) across scenes.

    Fresh queues' items come first by score, then the out-of-date queues' items by score, flagged (module
    docstring). ``seconds_per_item``: the pace (default :func:`seconds_per_item` of the log, ``analyst``'s own when
    it holds enough verdicts). ``budget_s``: keep the items whose cumulative time fits in it. ``cache``: a dict kept
    between calls (the page keeps one per session) holding each scene's state with :func:`state_signature`; only
    scenes whose label, queue, verdicts or active model changed are read again.
    """
    if seconds_per_item is None:
        pace = _measured_pace(ws, analyst)
        spi, source = pace.seconds, pace.source
    else:
        spi, source = float(seconds_per_item), "given"
    if spi <= 0:
        raise ValueError(f"seconds per item must be positive, got {spi}")
    if budget_s is not None and budget_s < 0:
        raise ValueError(f"the time budget must be zero or more seconds, got {budget_s}")
    versions = ws.latest_label_versions()
    rows: list[tuple[Scene, SceneState]] = []
    no_queue: list[str] = []
    unreadable: list[str] = []
    for s in ws.list_scenes(split):
        latest = int(versions.get(s.id, 0))
        if not (s.label_path or latest):
            continue
        sig = state_signature(ws, s.id, latest, active_id)
        hit = cache.get(s.id) if cache is not None else None
        if hit is not None and hit[0] == sig:
            state = hit[1]
        else:
            try:
                state = scene_state(ws, s, active_id)
            except (OSError, ValueError) as e:  # a label file gone bad: the plan says so, the other scenes go on
                unreadable.append(f"{s.id}: {e}")
                continue
            if cache is not None:
                cache[s.id] = (sig, state)
        if state is None:
            no_queue.append(s.id)
        else:
            rows.append((s, state))

    flat = [(s, st, it) for s, st in rows for it in st.pending]
    flat.sort(key=lambda r: (r[1].stale, -r[2].score, -r[2].pixels, r[0].id, r[2].key))
    ranked = [PlanItem(k, s.id, s.name, s.split, it.key, it.bbox, it.label_class, it.predicted_class, it.pixels,
                       it.score, st.stale, k * spi) for k, (s, st, it) in enumerate(flat, start=1)]
    kept = ranked if budget_s is None else [r for r in ranked if r.cumulative_s <= budget_s + 1e-9]
    summary = [SceneSummary(s.id, s.name, s.split, len(st.pending), sum(it.pixels for it in st.pending),
                            max((it.score for it in st.pending), default=None), len(st.pending) * spi / 60.0,
                            st.stale, st.stale_reason, st.checkpoint_id, st.built_at) for s, st in rows]
    summary.sort(key=lambda r: (r.stale, r.pending == 0, -(r.top_score or 0.0), r.scene_id))
    return ReviewPlan(split, kept, len(ranked), summary, no_queue, spi, source, budget_s, active_id,
                      stale_items=sum(1 for r in ranked if r.stale), unreadable=unreadable)


def parse_duration(text: str) -> float:
    """``"30m"`` / ``"1h30m"`` / ``"90s"`` / ``"45"`` (minutes) -> seconds.

    Raises:
        ValueError: For anything else, naming the text.
    """
    import re

    t = str(text).strip().lower().replace(" ", "")
    if re.fullmatch(r"\d+(\.\d+)?", t):
        return float(t) * 60.0
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|min|m|s)", t)
    if not parts or "".join(n + u for n, u in parts) != t:
        raise ValueError(f"cannot read the duration '{text}': write e.g. 30m, 1h30m, 90s or 45 (minutes)")
    unit = {"h": 3600.0, "m": 60.0, "min": 60.0, "s": 1.0}
    return sum(float(n) * unit[u] for n, u in parts)


def fmt_minutes(seconds: float) -> str:
    """``1830`` -> ``"30.5 min"``; ``5400`` -> ``"1 h 30 min"``."""
    m = seconds / 60.0
    if round(m, 1) < 60:
        return f"{m:.1f} min"
    whole = round(m)
    return f"{whole // 60} h {whole % 60:02d} min"


__all__ = [
    "BREAK_S",
    "DEFAULT_BUDGET_S",
    "DEFAULT_SECONDS_PER_ITEM",
    "FIT_PX_WEIGHT",
    "FIT_WINDOW_PX",
    "MIN_GAPS",
    "ItemPace",
    "PendingItem",
    "PlanItem",
    "ReviewPlan",
    "SceneBuild",
    "SceneState",
    "SceneSummary",
    "build_queues",
    "default_held_out",
    "fit_weight",
    "fmt_minutes",
    "parse_duration",
    "review_plan",
    "scene_state",
    "scenes_needing_queues",
    "seconds_per_item",
    "stale_reason",
    "state_signature",
    "verdict_gaps",
]
