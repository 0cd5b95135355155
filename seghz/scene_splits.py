"""Moving workspace scenes between splits: what a move does, and the study's validation split as a proposal.

The split a scene sits in decides what it is for: ``train`` scenes are learned from (full retrain, head refit),
``val`` scenes are the yardstick (early stopping, the regression gate, the refit's before/after table), ``test``
is held out, and ``none`` is neither. Moving a scene is therefore never cosmetic, and :func:`move_effects` says what
a planned set of moves does before the analyst applies it (:meth:`seghz.store.Workspace.move_scenes`, which records
who moved what and why):

* a scene that leaves ``train`` for ``val``/``test`` while a registered model learned from it (itself or through
  its parent, :meth:`~seghz.store.Workspace.checkpoints_trained_on`) makes that model's scores there optimistic;
  models that did not record their training scenes (:meth:`~seghz.store.Workspace.unrecorded_learning`) are named
  as unknowns, never counted as "did not learn from it";
* the ``val`` split changes, so every score measured on it before is for other data (cached evaluations are keyed
  by the split's data version and are recomputed; the gate scores both models again);
* an empty ``val`` or ``train`` split, an unlabelled scene that counts for nothing, jobs that already read the
  old splits.

:func:`propose_val` builds the study's validation set -- greedy maximum class-distribution entropy
(:func:`seghz.data.splits.greedy_max_entropy`) -- over the labelled scenes of ``train`` and ``val``, and proposes
the moves that make it so (the chosen scenes leave ``train``: the study forgot that step). It prefers scenes no
registered model learned from, so the yardstick is not the active model's own training data;
:func:`proposal_note` says what it chose and what that preference cost.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from seghz.classes import get_scheme, index_crosswalk
from seghz.data.io import atomic_write_bytes
from seghz.data.splits import class_distribution, greedy_max_entropy
from seghz.errors import SchemeMismatchError, SegHZError
from seghz.evaluate import label_for_checkpoint
from seghz.store import ACTIVE_JOB_STATUSES, SPLITS, Scene, Workspace

log = logging.getLogger(__name__)

PURPOSE = {
    "train": "learned from by the retrain and the head refit",
    "val": "the yardstick: early stopping, the regression gate, the refit's before/after table",
    "test": "held out: scored only when you ask",
    "none": "neither trained on nor scored",
}
JOB_KINDS_READING_SPLITS = ("train", "refit", "evaluate", "tta_report")


@dataclass(frozen=True)
class Effect:
    """One consequence of a planned set of moves: ``level`` is ``"warning"`` (think twice) or ``"info"``."""

    level: str
    text: str


def planned_moves(ws: Workspace, wanted: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """``{scene id: (from split, to split)}`` for the entries of ``wanted`` that change anything.

    Raises:
        ValueError: For an unknown split.
        NotFoundError: For an unknown scene.
    """
    out = {}
    split_of = {s.id: s.split for s in ws.list_scenes()}  # one query, not one connection per scene
    for sid in sorted(wanted):
        to = str(wanted[sid])
        if to not in SPLITS:
            raise ValueError(f"scene '{sid}': unknown split {to!r}; use one of {', '.join(SPLITS)}")
        cur = split_of[sid] if sid in split_of else ws.get_scene(sid).split  # get_scene: the NotFoundError
        if cur != to:
            out[sid] = (cur, to)
    return out


def _names(items: Sequence[str], limit: int = 4) -> str:
    items = list(items)
    head = ", ".join(items[:limit])
    return head + (f" and {len(items) - limit} more" if len(items) > limit else "")


def move_effects(ws: Workspace, wanted: Mapping[str, str]) -> list[Effect]:
    """What applying ``wanted`` (``{scene id: split}``) would do; warnings first. Empty when nothing moves."""
    moves = planned_moves(ws, wanted)
    if not moves:
        return []
    warn: list[str] = []
    info: list[str] = []
    scenes = {s.id: s for s in ws.list_scenes()}
    after = {sid: moves.get(sid, (s.split, s.split))[1] for sid, s in scenes.items()}
    active = ws.active_checkpoint()
    every, learned, unknown = ws.lineage_learning()  # one walk of the registry for every moved scene

    versions = ws.latest_label_versions()

    def labelled(sid: str) -> bool:
        return bool(scenes[sid].label_path) or versions.get(sid, 0) > 0

    unsure = [c for c in every if c.id in unknown]
    yardstick = [sid for sid, (_, to) in moves.items() if to in ("val", "test")]
    if unsure and yardstick:
        names = [f"{c.name} ({c.id})" + (" — the active model" if active and c.id == active.id else "") for c in unsure]
        info.append(f"{len(unsure)} model(s) do not record which scenes they learned from (registered from a file, or "
                    f"fine-tuned from one): {_names(names)}. If one of them trained on {_names(yardstick)}, its "
                    "val/test scores there are optimistic.")
    for sid, (frm, to) in moves.items():
        if to in ("val", "test"):
            seen = [c for c in every if sid in learned.get(c.id, ())]
            if seen:
                names = [f"{c.name} ({c.id})" + (" — the active model" if active and c.id == active.id else "")
                         for c in seen]
                warn.append(f"Scene {sid} goes to {to}, but {len(seen)} model(s) learned from it: {_names(names)}. "
                            f"Their {to} scores will be optimistic (they have seen this scene); compare them there "
                            "only against models retrained without it.")
        if to != "none" and not labelled(sid):
            info.append(f"Scene {sid} has no label and no saved correction: in {to} it counts for nothing until "
                        "someone labels it.")
        if frm == "train" and to != "train" and versions.get(sid, 0) > 0:
            info.append(f"Scene {sid}'s saved corrections leave the training data: the next retrain or refit no "
                        "longer learns from them.")
        if to == "train" and frm in ("val", "test") and versions.get(sid, 0) > 0:
            info.append(f"Scene {sid}'s saved corrections will be trained on by the next retrain or refit.")
    val_changes = [sid for sid, (frm, to) in moves.items() if "val" in (frm, to)]
    if val_changes:
        info.append(f"The val split changes ({_names(val_changes)}): every score measured on val before is for other "
                    "data. Cached evaluations are recomputed when asked for, and the regression gate scores both "
                    "models again on the new val split.")
    emptied = {"val": ("the regression gate has nothing to judge a candidate on and training has no validation "
                       "(no early stopping)"),
               "train": "a retrain or refit has nothing to learn from"}
    for split, consequence in emptied.items():
        before = [sid for sid, s in scenes.items() if s.split == split and labelled(sid)]
        now = [sid for sid, sp in after.items() if sp == split and labelled(sid)]
        if before and not now:
            warn.append(f"The {split} split will have no labelled scene: {consequence}.")
    running = [j for j in ws.list_jobs() if j.status in ACTIVE_JOB_STATUSES and j.kind in JOB_KINDS_READING_SPLITS]
    if running:
        warn.append(f"{len(running)} job(s) queued or running ({_names([f'{j.kind} {j.id}' for j in running])}) "
                    "read the splits as they are now: their results are for the old splits.")
    return [Effect("warning", t) for t in warn] + [Effect("info", t) for t in info]


def proposal_scheme(ws: Workspace) -> str:
    """The scheme to compare scenes' class distributions in: the active model's, else the scenes' most common."""
    active = ws.active_checkpoint()
    if active is not None and active.scheme:
        return active.scheme
    schemes = Counter(s.scheme for s in ws.list_scenes())
    if not schemes:
        raise ValueError(f"workspace {ws.root} has no scenes")
    return schemes.most_common(1)[0][0]


@dataclass(frozen=True)
class ValProposal:
    """A proposed validation split: ``moves`` (``{scene id: split}``, only the changes), the chosen scenes in
    pick order, the entropy (nats) of their pooled class distribution, that of the current val split, and the
    scenes left out of the choice (no label, or no crosswalk to ``scheme``) with why."""

    scheme: str
    chosen: list[str]
    moves: dict[str, str]
    entropy: float
    current_entropy: float | None
    skipped: dict[str, str]
    #: chosen scenes a registered model learned from: ``{scene id: ["name (id)", ...]}`` (their val scores
    #: would be optimistic); only what could not be avoided when scenes no model learned from were preferred
    learned: dict[str, list[str]] = field(default_factory=dict)
    #: the entropy and scenes of the plain greedy choice, when preferring unlearned scenes chose otherwise
    unconstrained: tuple[float, list[str]] | None = None


DISTRIBUTION_CACHE = "cache/class_distributions.json"  # under the workspace root; rebuildable, safe to delete
UNMAPPABLE = "unmappable"  # cached for a scene whose label reads but whose scheme has no crosswalk to the target


def _crosswalk_stamp(src: str, dst: str, nc: int) -> str | Exception:
    """What a scene of scheme ``src`` contributes to its class distribution in ``dst`` besides its label: the
    crosswalk (a hash of its lookup table) and ``dst``'s class count -- or the error that says there is none."""
    if src == dst:
        return f"same:{nc}"
    try:
        lut = index_crosswalk(src, dst)
    except (SchemeMismatchError, KeyError) as e:
        return e
    return f"lut:{hashlib.sha1(lut.tobytes()).hexdigest()[:16]}:{nc}"


def _distribution_key(ws: Workspace, s: Scene, version: int, walk: str | Exception) -> str:
    """Everything a scene's cached class distribution depends on: the label version, the scene's scheme and
    registration time (a scene deleted and imported again under the same id is another scene), the content of its
    original label file (hashing the small PNG costs far less than decoding it; no clock is trusted) and the
    crosswalk. Saved label versions never change, so a new save is a new version and so a new key."""
    stamp = "none"
    if s.label_path:
        try:
            stamp = f"{s.label_path}:{hashlib.sha1(ws.path(s.label_path).read_bytes()).hexdigest()}"
        except OSError:
            stamp = "missing"  # reading the label raises
    walk_s = walk if isinstance(walk, str) else f"error:{type(walk).__name__}:{walk}"
    return "|".join((f"v{version}", s.scheme, s.created_at, stamp, walk_s))


class _DistributionCache:
    """Class distributions of scenes' effective labels, kept in ``<workspace>/cache/class_distributions.json``
    (one entry per scene and target scheme, replaced when its key changes; entries of deleted scenes are dropped on
    the next write). A missing, unreadable or foreign file counts as empty; it is replaced atomically (temp file +
    rename), and a failed write only costs the next call its reads. Floats round-trip exactly through JSON."""

    FORMAT = 1

    def __init__(self, ws: Workspace, scene_ids: set[str]):
        self.path = ws.root / DISTRIBUTION_CACHE
        self.scene_ids = scene_ids
        self.dirty = False
        self.entries: dict[str, dict] = {}
        try:
            data = json.loads(self.path.read_text())
            if isinstance(data, dict) and data.get("format") == self.FORMAT and isinstance(data.get("entries"), dict):
                self.entries = data["entries"]
        except (OSError, ValueError):
            pass

    @staticmethod
    def _slot(scene_id: str, scheme: str) -> str:
        return f"{scene_id}\t{scheme}"

    def get(self, scene_id: str, scheme: str, key: str, nc: int) -> np.ndarray | str | None:
        e = self.entries.get(self._slot(scene_id, scheme))
        if not isinstance(e, dict) or e.get("key") != key:
            return None
        d = e.get("dist")
        if d == UNMAPPABLE:
            return UNMAPPABLE
        try:
            arr = np.array(d, np.float64)
        except (TypeError, ValueError):
            return None
        return arr if arr.shape == (nc,) else None

    def put(self, scene_id: str, scheme: str, key: str, dist: np.ndarray | str) -> None:
        self.entries[self._slot(scene_id, scheme)] = {
            "key": key, "dist": dist if isinstance(dist, str) else [float(x) for x in dist]}
        self.dirty = True

    def save(self) -> None:
        if not self.dirty:
            return
        keep = {k: v for k, v in self.entries.items() if k.split("\t", 1)[0] in self.scene_ids}
        try:
            atomic_write_bytes(self.path, json.dumps({"format": self.FORMAT, "entries": keep}).encode(), fsync=False)
        except (OSError, SegHZError) as e:
            log.warning("could not write the class-distribution cache %s: %s", self.path, e)
        self.dirty = False


def _pooled_entropy(dists: np.ndarray) -> float:
    if len(dists) == 0:
        return 0.0
    p = dists.sum(0)
    p = p[p > 0] / p.sum() if p.sum() > 0 else p[:0]
    return float(-(p * np.log(p)).sum())


def propose_val(ws: Workspace, k: int, scheme: str | None = None, pool: Sequence[str] = ("train", "val"), *,
                prefer_unlearned: bool = True) -> ValProposal:
    """The study's validation split over the labelled scenes of ``pool``: ``k`` scenes chosen greedily so their
    mean class distribution (in ``scheme``, default :func:`proposal_scheme`) has maximal entropy. The chosen scenes
    go to ``val``, the rest of the pool to ``train``; ``test`` and ``none`` scenes are never touched.

    With ``prefer_unlearned`` (the default), the greedy choice first takes scenes no registered model is known to
    have learned from (:meth:`~seghz.store.Workspace.lineage_learning`): a model scored on a scene it was trained
    on looks better than it is, and the regression gate would judge the active model on its own training data.
    Only when fewer than ``k`` such scenes exist does it go on among the learned ones (the entropy greedy continues
    from the scenes already chosen); those are named in ``learned``. When the preference changed the choice, the
    plain choice and its entropy are kept in ``unconstrained`` so the cost in entropy can be shown.

    Raises:
        ValueError: When ``k`` < 1, or the pool holds fewer than ``k + 1`` labelled scenes (then nothing would be
            left to train on).
    """
    if k < 1:
        raise ValueError(f"a validation split needs at least 1 scene, not {k}")
    scheme = scheme or proposal_scheme(ws)
    nc = get_scheme(scheme).num_classes
    ids, dists, skipped = [], [], {}
    versions = ws.latest_label_versions()
    all_scenes = ws.list_scenes()
    split_of = {s.id: s.split for s in all_scenes}
    cache = _DistributionCache(ws, {s.id for s in all_scenes})
    walks: dict[str, str | Exception] = {}  # scene scheme -> stamp of its crosswalk to ``scheme``, or why none
    with contextlib.ExitStack() as stack:
        conn = None  # one read snapshot for every label this call reads (not two connections per scene)
        for s in all_scenes:
            if s.split not in pool:
                continue
            version = versions.get(s.id, 0)
            if not s.label_path and version == 0:
                skipped[s.id] = "no label and no correction"
                continue
            if s.scheme not in walks:
                walks[s.scheme] = _crosswalk_stamp(s.scheme, scheme, nc)
            walk = walks[s.scheme]
            key = _distribution_key(ws, s, version, walk)
            d = cache.get(s.id, scheme, key, nc)
            if d is None:  # not cached for this label version: read the label as it is at ``version``
                if conn is None:
                    conn = stack.enter_context(ws._snapshot())
                lbl = ws._compose(conn, s, version)[0]  # what ws.effective_label(s.id, version) reads
                d = UNMAPPABLE if isinstance(walk, Exception) else class_distribution(
                    label_for_checkpoint(lbl, s.scheme, scheme), nc)
                cache.put(s.id, scheme, key, d)
            if isinstance(d, str):
                skipped[s.id] = f"its scheme {s.scheme} does not map to {scheme} ({walk})"
                continue
            if d.sum() == 0:
                skipped[s.id] = "every pixel is ignore (255)"
                continue
            ids.append(s.id)
            dists.append(d)
    cache.save()
    if len(ids) < k + 1:
        raise ValueError(f"the {' and '.join(pool)} splits hold {len(ids)} labelled scene(s) in scheme {scheme}: "
                         f"{k} for val would leave {max(0, len(ids) - k)} to train on; choose fewer")
    return _proposal(ws, scheme, k, ids, dists, skipped, split_of, prefer_unlearned)


def _proposal(ws: Workspace, scheme: str, k: int, ids: list[str], dists: list[np.ndarray], skipped: dict[str, str],
              split_of: dict[str, str], prefer_unlearned: bool) -> ValProposal:
    """:func:`propose_val`'s choice from the pool's class distributions (``dists``, one per scene of ``ids``)."""
    d = np.stack(dists)
    plain = greedy_max_entropy(d, k)
    pick, learned, unconstrained = plain, {}, None
    if prefer_unlearned:
        every, seen_by, _ = ws.lineage_learning()
        names = {c.id: f"{c.name} ({c.id})" for c in every}
        by_scene: dict[str, list[str]] = {}
        for cid, scenes in seen_by.items():
            for sid in scenes:
                by_scene.setdefault(sid, []).append(names[cid])
        fresh = [i for i, sid in enumerate(ids) if sid not in by_scene]
        pick = greedy_max_entropy(d, k, allowed=fresh)
        if len(pick) < k:
            pick += greedy_max_entropy(d, k - len(pick), given=pick)
        learned = {ids[i]: by_scene[ids[i]] for i in pick if ids[i] in by_scene}
        if set(pick) != set(plain):
            unconstrained = (_pooled_entropy(d[plain]), [ids[i] for i in plain])
    chosen = [ids[i] for i in pick]
    current = [i for i, sid in enumerate(ids) if split_of[sid] == "val"]
    wanted = {sid: ("val" if sid in chosen else "train") for sid in ids}
    moves = {sid: to for sid, to in wanted.items() if split_of[sid] != to}
    return ValProposal(scheme, chosen, moves, _pooled_entropy(d[pick]),
                       _pooled_entropy(d[current]) if current else None, skipped, learned, unconstrained)


def proposal_note(prop: ValProposal) -> str:
    """What a proposal chose, how its class entropy compares with the current val split's, which chosen scenes a
    model learned from, and what preferring unlearned scenes cost in entropy (the Home panel and the CLI say it)."""
    cur = prop.current_entropy
    text = (f"Proposed val: {', '.join(prop.chosen)} — class entropy {prop.entropy:.3f} nats in scheme {prop.scheme}"
            + ("" if cur is None else f" (the current val split's: {cur:.3f})") + ".")
    if cur is not None and prop.entropy < cur - 1e-9:
        text += (" That is less than the current split's: the greedy choice of this many scenes does not beat it, "
                 "so keeping the current split is the better choice.")
    if prop.unconstrained is not None:
        h, plain = prop.unconstrained
        text += (f" Scenes no model learned from were preferred; the plain greedy choice ({', '.join(plain)}) "
                 f"would reach {h:.3f} nats but puts training scenes into val.")
    if prop.learned:
        text += (" Too few unlearned scenes: " + "; ".join(f"{sid} was learned from by {_names(who, 2)}"
                                                          for sid, who in prop.learned.items())
                 + " — those models' val scores there will be optimistic.")
    if prop.skipped:
        text += f" Left out: {'; '.join(f'{k}: {v}' for k, v in prop.skipped.items())}."
    return text
