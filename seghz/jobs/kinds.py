"""The job kinds SegHZ runs in background processes (imported by the job worker)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields, replace

import numpy as np

from seghz.classes import get_scheme
from seghz.data.io import read_image
from seghz.devices import check_device
from seghz.evaluate import label_for_checkpoint
from seghz.jobs.runner import JobCancelled, ProgressReporter, register_job_kind
from seghz.store import Job, Workspace
from seghz.train.trainer import TrainConfig, train

# Every TrainConfig field a job config may set (the parent comes from parent_checkpoint_id instead).
TRAIN_KEYS = {f.name for f in fields(TrainConfig)} - {"parent_checkpoint"}


def labelled_scenes(ws: Workspace, split: str) -> list:
    """The scenes of ``split`` a training job learns from: those with an original label or a saved correction."""
    return [s for s in ws.list_scenes(split) if s.label_path or ws.latest_label_version(s.id) > 0]


class LabelSnapshot:
    """The labels a training job learns from, all of one moment: the scenes of some splits (``None``: all scenes),
    each scene's label version and the splits' data versions (:meth:`Workspace.data_version`), taken by
    :func:`label_snapshot`. Reading every label at these versions trains on exactly what the recorded data
    versions name: a correction saved while the job loads is either wholly in (label and trusted pixels) or wholly
    out, and then the checkpoint's data version differs from the split's ("labels changed since")."""

    def __init__(self, scenes: dict, versions: dict[str, int], data_versions: dict):
        self.scenes, self.versions, self.data_versions = scenes, versions, data_versions

    def version(self, scene_id: str) -> int:
        """The scene's label version in the snapshot (0 = its original label)."""
        return int(self.versions.get(scene_id, 0))

    def scene(self, scene_id: str):
        """The scene ``scene_id`` as the snapshot saw it (its split, scheme and files at that moment).

        Raises:
            ValueError: When the snapshot has no such scene (deleted, or outside the snapshot's splits).
        """
        for scenes in self.scenes.values():
            for s in scenes:
                if s.id == scene_id:
                    return s
        raise ValueError(f"scene {scene_id!r} is not in the workspace's scenes"
                         + ("" if None in self.scenes else f" of the {', '.join(repr(sp) for sp in self.scenes)} split(s)")
                         + " (deleted or moved since the job was queued?)")

    def labelled(self, split: str | None) -> list:
        """The scenes of ``split`` with an original label or a saved correction (:func:`labelled_scenes`)."""
        return [s for s in self.scenes[split] if s.label_path or self.version(s.id) > 0]


SNAPSHOT_TRIES = 20


def label_snapshot(ws: Workspace, splits) -> LabelSnapshot:
    """A :class:`LabelSnapshot` of ``splits`` (split names; None = all scenes).

    The scenes and label versions are read before and after the data versions; when a save (or a split move)
    came in between, it is read again, so the data versions are those of exactly these scenes and versions.

    Raises:
        RuntimeError: When the labels changed during each of :data:`SNAPSHOT_TRIES` tries.
    """
    splits = list(dict.fromkeys(splits))

    def state() -> tuple[dict, dict[str, int], dict]:
        scenes = {sp: ws.list_scenes(sp) for sp in splits}
        key = {sp: [(s.id, s.split, s.label_path) for s in v] for sp, v in scenes.items()}
        return scenes, ws.latest_label_versions(), key

    scenes, versions, key = state()
    for _ in range(SNAPSHOT_TRIES):
        dvs = {sp: ws.data_version(sp) for sp in splits}
        scenes, versions2, key2 = state()
        if (versions2, key2) == (versions, key):
            return LabelSnapshot(scenes, versions, dvs)
        versions, key = versions2, key2
    raise RuntimeError(f"the labels of {', '.join(repr(sp or 'all') for sp in splits)} changed {SNAPSHOT_TRIES} times "
                       "while the job read their versions; run the job again")


def _samples(ws: Workspace, split: str, scheme: str, trusted: bool = False,
             snapshot: LabelSnapshot | None = None) -> list[tuple[np.ndarray, ...]]:
    """(image, effective label[, trusted mask]) of every labelled scene of a split, labels in ``scheme``.

    A scene counts as labelled when it has an original label or any saved correction; trusted pixels (corrected
    or confirmed by an analyst) are never dropped by the noise-mask loss. Every label and trusted mask is read at
    the scene's version in ``snapshot`` (taken now when None), the label and its mask in one pass."""
    snap = snapshot or label_snapshot(ws, [split])
    out = []
    for s in snap.labelled(split):
        v = snap.version(s.id)
        if trusted:
            eff, mask = ws.label_and_trusted(s.id, v)
        else:
            eff, mask = ws.effective_label(s.id, v), None
        lbl = label_for_checkpoint(eff, s.scheme, scheme)
        img = read_image(ws.scene_path(s, "image"))
        out.append((img, lbl, mask) if trusted else (img, lbl))
    return out


def noise_matrix_for(ws: Workspace, config: dict, scheme: str, log=None,
                     snapshot: LabelSnapshot | None = None) -> list | None:
    """The job's forward-correction matrix when ``config["noise_from_review"]`` asks for it: counted on the reviewed
    pixels of the training split (:func:`seghz.review.noise_matrix.review_noise`), at the label versions of
    ``snapshot`` (the training job's, so the matrix and the labels it corrects are of one moment; taken now when
    None); None otherwise.

    Raises:
        ValueError: When it is asked for without ``robust="forward"``, or the reviewed pixels cannot give an
            honest matrix (none reviewed; a class the matrix calls mostly mislabelled).
    """
    if not config.get("noise_from_review"):
        return None
    if config.get("robust") != "forward":
        raise ValueError("noise_from_review counts the noise matrix of forward loss correction: set robust='forward'")
    from seghz.review.noise_matrix import review_noise

    split = config.get("train_split", "train")
    rn = review_noise(ws, split, scheme, snapshot=snapshot)
    problems = rn.problems()
    if problems:
        raise ValueError(f"cannot count the label-noise matrix from the reviews of the '{split}' split: "
                         + "; ".join(problems))
    if log is not None:
        log(f"noise matrix from {rn.reviewed_px} reviewed pixels of {rn.scenes} scene(s) "
            f"({rn.corrected_px} corrected); P(label kept) per class: "
            + ", ".join(f"{n} {rn.transition[i, i]:.2f}" for i, n in enumerate(rn.names) if rn.counts[i].sum()))
    return rn.transition.round(6).tolist()


@register_job_kind("train")
def train_job(ws: Workspace, job_id: str, config: dict, progress: ProgressReporter) -> dict:
    """Train on the effective labels of the train split; validate on the val split; register the checkpoint.

    config: the :class:`TrainConfig` fields, plus ``parent_checkpoint_id`` (fine-tune from a workspace
    checkpoint), ``train_split`` / ``val_split``, ``name``, and ``noise_from_review`` (with ``robust="forward"``:
    the noise matrix is counted on the training split's reviewed pixels, :func:`noise_matrix_for`).
    """
    cfg_d = {k: v for k, v in config.items() if k in TRAIN_KEYS}
    parent_id = config.get("parent_checkpoint_id")
    parent_path = str(ws.checkpoint_path(parent_id)) if parent_id else None
    if parent_id:
        cfg_d["scheme"] = ws.get_checkpoint(parent_id).scheme
    cfg = TrainConfig(parent_checkpoint=parent_path, **cfg_d)
    # one snapshot of the label versions first: the samples (and the reviews the noise matrix is counted on) are
    # read at those versions, and the checkpoint records exactly those data versions (a correction saved while
    # loading is then "since", never half in)
    snap = label_snapshot(ws, [config.get("train_split", "train"), config.get("val_split", "val")])
    # forward correction counted on the reviews
    matrix = noise_matrix_for(ws, config, cfg.scheme, progress.log, snapshot=snap)
    if matrix is not None:
        cfg = replace(cfg, noise_transition=matrix)
    cfg.validate()
    get_scheme(cfg.scheme)
    progress.log(f"loading scenes for scheme {cfg.scheme}")
    train_ids = [s.id for s in snap.labelled(config.get("train_split", "train"))]
    tr = _samples(ws, config.get("train_split", "train"), cfg.scheme, trusted=True, snapshot=snap)
    va = _samples(ws, config.get("val_split", "val"), cfg.scheme, snapshot=snap)
    if not tr:
        raise ValueError(f"the '{config.get('train_split', 'train')}' split has no labelled scenes to train on")
    progress.log(f"{len(tr)} training scenes, {len(va)} validation scenes")
    out = ws.root / "checkpoints" / f"{job_id}.safetensors"

    def on_metrics(step, epoch, row):
        progress.metrics(step, epoch, **{k: float(v) for k, v in row.items() if isinstance(v, (int, float)) and k != "epoch"})
        progress.log(f"epoch {epoch}: " + ", ".join(f"{k}={v:.4f}" for k, v in row.items() if isinstance(v, float)))

    def should_cancel() -> bool:
        progress.check_cancel()  # raises JobCancelled
        return False

    val_split = config.get("val_split", "val")
    dv_train, dv_val = snap.data_versions[config.get("train_split", "train")], snap.data_versions[val_split]
    res = train(cfg, tr, va, out, progress=progress.update, on_metrics=on_metrics, should_cancel=should_cancel,
                meta_extra={"job_id": job_id, "data_version": dv_train, "val_data_version": dv_val,
                            "train_scenes": train_ids})
    _cancel_before_registering(progress, out)
    from seghz import gate
    from seghz.models.checkpoint import read_metadata

    meta = read_metadata(out)
    best = res["best_val"] or {}
    # registry row: lineage (parent, data versions, recipe) and the best epoch's per-class validation scores
    cid = ws.register_checkpoint(out, {**meta, "scheme": cfg.scheme}, name=config.get("name") or f"retrained {job_id[-6:]}",
                                 parent_id=parent_id, job_id=job_id, note="trained in the app", data_version=dv_train,
                                 val_data_version=dv_val, recipe=meta.get("recipe"),
                                 val_metrics=best.get("per_class") if va else None, val_split=val_split,
                                 train_scenes=train_ids)
    # regression gate against the active model on the same validation data; auto-promotion only on "pass"
    verdict, promoted = gate.after_training(ws, cid, split=val_split, auto_promote=bool(config.get("auto_promote")),
                                            job_id=job_id, log=progress.log)
    reranked = _rerank(ws, cid, config, progress)
    return {"checkpoint_id": cid, "val_miou": best.get("miou"), "val_fwiou": best.get("fwiou"), "seconds": res["seconds"],
            "gate": verdict.status, "gate_offending": verdict.offending_classes, "promoted": promoted,
            "queues_reranked": reranked, "val_split": val_split}


def _cancel_before_registering(progress: ProgressReporter, out) -> None:
    """A cancel that arrived after the last training step (during the final validation or the save) still
    cancels the job: nothing is registered, gated or re-ranked. The file stays, as after a cancel mid-epoch."""
    try:
        progress.check_cancel(force=True)
    except JobCancelled:
        progress.log(f"cancelled after training: {out.name} stays in the workspace's checkpoints folder, not "
                     "registered (python -m seghz checkpoints add can register it)")
        raise


def _rerank(ws: Workspace, checkpoint_id: str, config: dict, progress: ProgressReporter) -> list[str]:
    """After a retrain or refit: re-rank the saved noise queues with the new checkpoint, only when it is now the
    active model (auto-promoted). A candidate that is not active leaves the analyst's queues as they are: they
    go on following the active model until someone promotes it (config ``rerank_queues``, default on)."""
    if not config.get("rerank_queues", True):
        return []
    active = ws.active_checkpoint()
    if active is None or active.id != checkpoint_id:
        progress.log("the saved noise queues stay with the active model"
                     + (f" {active.id}" if active is not None else "")
                     + f"; promote {checkpoint_id} and build them again to rank them with it")
        return []
    from seghz.review.queue import rerank_queues

    progress.update(0.99, "re-ranking the noise queues with the new checkpoint")
    return rerank_queues(ws, checkpoint_id, device=config.get("device"), log=progress.log)


@register_job_kind("refit")
def refit_job(ws: Workspace, job_id: str, config: dict, progress: ProgressReporter) -> dict:
    """Fast head-only refit of a workspace checkpoint on the analysts' corrections (see :mod:`seghz.train.refit`).

    The corrections are the reviewed pixels: those an analyst corrected (the effective label differs from the
    original; on a scene without an original label, every labelled pixel) or confirmed (e.g. *Save and confirm
    the rest of this window*: a whole reviewed window gives every class its say). When no scene has any, the full effective labels
    of the scenes listed in ``label_scenes`` are used instead. Existing labels (effective labels of
    ``context_split``, plus those of the corrected scenes, at most ``context_max_scenes`` scenes) give the
    class-balanced sample that keeps untouched classes alive.

    The new checkpoint then goes through the same regression gate as a training job's (:func:`seghz.gate.after_training`
    against the active model on ``val_split``; auto-promotion only on "pass" and only with ``auto_promote``), and
    the parent and the new checkpoint are scored on ``val_split`` (cached evaluations), so the pages can show a
    before/after on the same labels next to the accuracies on the corrected pixels and on the context sample.

    Training data never includes a held-out split: the corrections, the ``label_scenes`` and the context sample
    come only from scenes of the training split (``train_split``, default "train": the scenes the full retrain
    trains on, :func:`train_job`). Reviewed pixels on the gate's split (``val_split``) or on "test" are the
    yardstick the new checkpoint is scored against, so fitting on them would make the gate and the before/after
    table judge the refit on its own training pixels; unassigned scenes (split "none") are left out too, as the
    full retrain leaves them out. What was left out is logged and counted in the result (``held_out_reviewed_pixels``,
    ``held_out_scenes``, and per split in ``held_out``); when nothing is left to fit on, the job fails and says so.

    config: ``checkpoint_id`` (default: the active checkpoint), ``scenes`` (scene ids to take corrections from;
    default all; those outside the training split are left out), ``label_scenes``, ``train_split`` (default
    "train"; neither ``val_split`` nor "test"), ``context_split`` (default: ``train_split``, the only split it may
    name; None for no context), ``context_max_scenes`` (default 8), ``val_split`` (default "val"),
    ``auto_promote``, ``name``, and any :class:`seghz.train.refit.RefitConfig` field.
    """
    import inspect

    from seghz.models.checkpoint import read_metadata
    from seghz.train.refit import RefitConfig, RefitItem, refit_head

    parent_id = config.get("checkpoint_id") or config.get("parent_checkpoint_id")
    if not parent_id:
        if ws.active_checkpoint() is None:
            raise ValueError("refit needs a checkpoint_id (and no checkpoint is active)")
        parent_id = _checkpoint_id(ws, config, job_id)  # recorded in the job's config: archive sees it
    ck = ws.usable_checkpoint(parent_id)
    parent_path = ws.checkpoint_path(ck)
    ck_scheme = read_metadata(parent_path)["scheme"]["name"]
    rkeys = {f.name for f in fields(RefitConfig)}
    rcfg = RefitConfig(**{k: v for k, v in config.items() if k in rkeys})
    rcfg.validate()
    check_device(rcfg.device, "refit job 'device'")  # a GPU this machine lacks: a clear error, before any loading

    val_split = config.get("val_split", "val")
    train_split, context_split = refit_splits(config)
    # one snapshot of the label versions first: every label below is read at its version, and the checkpoint
    # records exactly that data version
    snap = label_snapshot(ws, [None])
    wanted = config.get("scenes")
    scenes = [snap.scene(s) for s in wanted] if wanted else snap.scenes[None]
    corrected: dict[str, np.ndarray] = {}
    effective: dict[str, np.ndarray] = {}
    held_out: dict[str, dict] = {}  # split -> {"scenes": [...], "reviewed_pixels": n}: reviewed, not fitted on
    for s in scenes:
        progress.check_cancel()
        if snap.version(s.id) == 0:
            continue
        eff_s, reviewed = ws.label_and_trusted(s.id, snap.version(s.id))  # reviewed: corrected or confirmed
        eff = label_for_checkpoint(eff_s, s.scheme, ck_scheme)
        corr = np.where(reviewed & (eff != 255), eff, 255).astype(np.uint8)
        if not (corr != 255).any():
            continue
        if s.split != train_split:  # the yardstick (val, test) or unassigned: never trained on
            h = held_out.setdefault(s.split, {"scenes": [], "reviewed_pixels": 0})
            h["scenes"].append(s.id)
            h["reviewed_pixels"] += int((corr != 255).sum())
            continue
        corrected[s.id], effective[s.id] = corr, eff
    for sp, h in held_out.items():
        progress.log(f"left out {_fmt_px(h['reviewed_pixels'])} reviewed pixels on {len(h['scenes'])} "
                     f"{_split_words(sp)} scene(s) ({', '.join(h['scenes'])}): "
                     f"{held_out_reason(sp, train_split, val_split)}")
    n_held = sum(h["reviewed_pixels"] for h in held_out.values())
    source = "corrections"
    if not corrected:
        for sid in config.get("label_scenes") or []:
            s = snap.scene(sid)
            if s.split != train_split:
                progress.log(f"label scene {s.id} left out: it is in the {_split_words(s.split)} split "
                             f"({held_out_reason(s.split, train_split, val_split)})")
                continue
            eff = label_for_checkpoint(ws.effective_label(s.id, snap.version(s.id)), s.scheme, ck_scheme)
            if (eff != 255).any():
                corrected[s.id], effective[s.id] = eff, eff
        source = "labels"
    if not corrected and n_held:
        where = "; ".join(f"{_fmt_px(h['reviewed_pixels'])} on {len(h['scenes'])} {_split_words(sp)} scene(s) "
                          f"({', '.join(h['scenes'])})" for sp, h in held_out.items())
        yardstick = [sp for sp in held_out if sp in (val_split, "test")]
        raise ValueError(f"nothing to refit on: all {_fmt_px(n_held)} reviewed pixels are on scenes outside the "
                         f"'{train_split}' split ({where}). The refit trains on the '{train_split}' split only, as the "
                         f"full retrain does; the '{val_split}' split is the yardstick the regression gate and the "
                         f"before/after table score on, and 'test' is held out. Correct or confirm pixels on a "
                         f"'{train_split}' scene, or, if a scene should be trained on, move it to the "
                         f"'{train_split}' split (Home page, Scenes; or `python -m seghz scenes move`"
                         + (f"; it then no longer counts in the {' / '.join(repr(sp) for sp in yardstick)} score)"
                            if yardstick else ")"))
    if not corrected:
        raise ValueError(f"no reviewed pixels on the '{train_split}' split (no saved label edit corrects or confirms a "
                         "pixel there) and no 'label_scenes' with labels given; nothing to refit on")
    n_corr = int(sum(int((c != 255).sum()) for c in corrected.values()))
    progress.log(f"{n_corr} reviewed pixels (corrected or confirmed) in {len(corrected)} scene(s) (from {source})")

    # context: existing labels of the corrected scenes (outside their corrections) and of the training split
    context_ids: list[str] = list(corrected) if source == "corrections" else []
    if context_split:
        others = [s.id for s in snap.labelled(None) if s.split == context_split and s.id not in corrected]
        rng = np.random.default_rng(rcfg.seed)
        rng.shuffle(others)
        context_ids += others[: max(0, int(config.get("context_max_scenes", 8)) - len(context_ids))]
    items = []
    for sid in dict.fromkeys(list(corrected) + context_ids):
        progress.check_cancel()
        s = snap.scene(sid)
        lab = effective.get(sid) if source == "corrections" else None
        if lab is None and sid in context_ids:
            lab = label_for_checkpoint(ws.effective_label(sid, snap.version(sid)), s.scheme, ck_scheme)
        items.append(RefitItem(read_image(ws.scene_path(s, "image")), corrected.get(sid), lab))
    progress.log(f"{len(items)} scene(s) in the refit ({len(context_ids)} giving context labels)")

    def should_cancel() -> bool:
        progress.check_cancel()  # raises JobCancelled
        return False

    out = ws.root / "checkpoints" / f"{job_id}.safetensors"
    dv = snap.data_versions[None]
    res = refit_head(parent_path, items, out, rcfg, parent_id=parent_id,
                     progress=lambda f, m="": progress.update(REFIT_SHARE * float(f), m), should_cancel=should_cancel,
                     meta_extra={"job_id": job_id, "data_version": dv, "refit_source": source,
                                 "refit_scenes": sorted(corrected), "refit_train_split": train_split})
    _cancel_before_registering(progress, out)
    meta = read_metadata(out)
    kw = {"name": config.get("name") or f"refit {job_id[-6:]}", "parent_id": parent_id, "job_id": job_id,
          "note": f"head refit on {res.counts['corrected_used']} corrected pixels"}
    accepted = inspect.signature(ws.register_checkpoint).parameters
    used = list(dict.fromkeys(list(corrected) + context_ids))  # every scene whose labels the head was fitted on
    for k, v in (("data_version", dv), ("recipe", meta.get("recipe")), ("train_scenes", used)):
        if k in accepted:
            kw[k] = v
    cid = ws.register_checkpoint(out, {**meta, "scheme": ck_scheme}, **kw)
    before, after = res.fit["before"], res.fit["after"]

    def fmt(v) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    progress.log(f"registered {cid}: corrected-pixel accuracy {fmt(before['corrected_acc'])} → "
                 f"{fmt(after['corrected_acc'])}, context (existing labels) accuracy {fmt(before['context_acc'])} → "
                 f"{fmt(after['context_acc'])} in {res.seconds['total']:.1f} s")
    # the same regression gate as a training job: both models on the validation split, auto-promotion only on "pass"
    from seghz import gate

    progress.update(0.85, f"regression gate: scoring on the '{val_split}' split")
    verdict, promoted = gate.after_training(ws, cid, split=val_split, auto_promote=bool(config.get("auto_promote")),
                                            job_id=job_id, log=progress.log)
    val = _score_on_split(ws, [parent_id, cid], val_split, progress)  # the before/after table of the Labels page
    return {"checkpoint_id": cid, "parent_id": parent_id, "source": source, "counts": res.counts,
            "seconds": res.seconds["total"], "corrected_acc_before": before["corrected_acc"],
            "corrected_acc_after": after["corrected_acc"], "context_acc_before": before["context_acc"],
            "context_acc_after": after["context_acc"], "val_split": val_split, "val_miou": val.get(cid),
            "parent_val_miou": val.get(parent_id), "gate": verdict.status, "gate_offending": verdict.offending_classes,
            "promoted": promoted, "queues_reranked": _rerank(ws, cid, config, progress), "train_split": train_split,
            "held_out_reviewed_pixels": n_held, "held_out_scenes": sum(len(h["scenes"]) for h in held_out.values()),
            "held_out": held_out}



def refit_splits(config: dict) -> tuple[str, str | None]:
    """A refit job's ``(training split, context split)``: the split its corrections and context labels may come
    from (``train_split``, default "train", as the full retrain's) and the one its context sample is drawn from
    (``context_split``: default the training split; None for no context).

    Raises:
        ValueError: When the training split is the gate's split (``val_split``) or "test", or the context split is
            another split than the training split (training data never includes a held-out split).
    """
    val_split = config.get("val_split", "val")
    train_split = config.get("train_split") or "train"
    if train_split in (val_split, "test"):
        raise ValueError(f"the refit cannot train on the '{train_split}' split: it is held out (the regression gate "
                         f"scores on '{val_split}', and 'test' is the final score)")
    context_split = config.get("context_split", train_split)
    if context_split and context_split != train_split:
        raise ValueError(f"the refit's context labels come from its training split '{train_split}' only, not "
                         f"'{context_split}' (training data never includes a held-out or unassigned split)")
    return train_split, context_split or None


def held_out_reason(split: str, train_split: str = "train", val_split: str = "val") -> str:
    """Why a refit (or retrain) does not train on a scene of ``split``, in words."""
    if split == val_split:
        return f"the regression gate and the before/after table score on '{val_split}'"
    if split == "test":
        return "the 'test' split is held out for the final score"
    return f"like the full retrain, the refit trains on the '{train_split}' split only"


def _split_words(split: str) -> str:
    return "unassigned" if split == "none" else split


def _fmt_px(n: int) -> str:
    """2097152 -> '2 097 152'."""
    return f"{int(n):,}".replace(",", " ")


# ------------------------------------------------------------------------------------------ retrain / refit jobs
# The Labels page's "Full retrain" and "Fast head refit": a second click while the first job is queued or running
# (two clicks ~2 s apart, or two sessions) must not start the same job twice.
RETRAIN_JOB_KINDS = ("train", "refit")


def _job_identity(kind: str, config: dict | None) -> tuple[str | None, dict]:
    """``(parent checkpoint id, the rest of the config)`` of a retrain/refit job, without what does not change
    what it computes: its ``name`` and timestamps (``timestamp``, ``*_at``). The parent is read as the job reads
    it (a refit: ``checkpoint_id``, else ``parent_checkpoint_id``; a train job: ``parent_checkpoint_id``)."""
    cfg = dict(config or {})
    cp, pp = cfg.pop("checkpoint_id", None), cfg.pop("parent_checkpoint_id", None)
    parent = (cp or pp) if kind == "refit" else pp
    rest = {k: v for k, v in cfg.items() if k not in ("name", "timestamp") and not k.endswith("_at")}
    return parent, rest


def same_job(kind: str, config: dict) -> Callable[[Job], bool]:
    """The predicate :func:`seghz.jobs.runner.submit_job_once` takes: whether a queued/running job is the same as
    a ``kind`` job with ``config`` (same kind, same parent checkpoint, same config apart from its name and
    timestamps)."""
    want = _job_identity(kind, config)
    return lambda job: job.kind == kind and _job_identity(job.kind, job.config) == want


def submit_retrain_job(ws: Workspace, kind: str, config: dict) -> tuple[str, bool]:
    """Submit a "train" or "refit" job unless the same one (:func:`same_job`) is queued or running: ``(new job id,
    True)``, or ``(that job's id, False)`` and nothing submitted. The check and the queueing are one write
    transaction (:func:`seghz.jobs.runner.submit_job_once`).

    Raises:
        ValueError: For another kind; what :func:`seghz.jobs.runner.submit_job` raises.
    """
    from seghz.jobs import runner

    if kind not in RETRAIN_JOB_KINDS:
        raise ValueError(f"'{kind}' is not a retrain job kind ({', '.join(RETRAIN_JOB_KINDS)})")
    return runner.submit_job_once(ws, kind, config, same_job(kind, config))

REFIT_SHARE = 0.8  # of a refit job's progress bar; the rest is the regression gate's scoring


def _score_on_split(ws: Workspace, checkpoint_ids: list[str], split: str, progress: ProgressReporter) -> dict[str, float]:
    """mIoU of each checkpoint on ``split`` (no TTA), from the evaluation cache or scored now (and cached, with the
    per-class scores in the registry, as the gate records them); {} when the split has no labelled scene. A failure
    is logged, never fatal: the checkpoint is registered already, so a cancel pressed now is not honoured either (a
    cancelled job with a registered, maybe promoted, checkpoint would have no Promote or result on any page)."""
    from seghz import gate

    if not any(s.label_path for s in ws.list_scenes(split)):
        progress.log(f"no labelled scene in the '{split}' split: no validation scores")
        return {}
    out = {}
    dv = ws.data_version(split)
    for cid in dict.fromkeys(checkpoint_ids):
        ev = ws.find_evaluation(cid, split, False, dv)
        try:
            if ev is None or ev.result.get("tta", "none") != "none":
                gate.evaluate_metrics(ws, cid, split)
                ev = ws.find_evaluation(cid, split, False, dv)
        except Exception as e:  # noqa: BLE001 - a missing score is reported, the job still succeeds
            progress.log(f"could not score {cid} on the '{split}' split: {e}")
            continue
        if ev is not None and ev.result.get("miou") is not None:
            out[cid] = float(ev.result["miou"])
            progress.log(f"{cid}: mIoU {out[cid]:.4f} on the '{split}' split (data version {dv}, no TTA)")
    return out


@register_job_kind("fetch")
def fetch_job(ws: Workspace, job_id: str, config: dict, progress: ProgressReporter) -> dict:
    """Fetch online imagery over a WGS-84 bbox into a GeoTIFF in the workspace and import it as a scene.

    config: ``url`` (tile template with ``{z} {x} {y}``, optional ``{s}``; a ``{key}`` placeholder is filled at run
    time from the environment variable named by ``key_env``, so no key is stored in the job), ``bbox``
    ``[W, S, E, N]``, ``zoom``, ``baidu`` (Baidu tile numbering: warped to Web Mercator), ``name``, ``max_tiles``,
    ``subdomains``, ``rate`` (requests per second).
    """
    import os

    from seghz.data.scenes import import_imagery
    from seghz.geo.fetch import FETCH_JOB_MAX_TILES, fetch_baidu, fetch_xyz, plan_baidu, plan_xyz
    from seghz.security import redact_secrets

    url = str(config["url"])
    if "{key}" in url:
        env = config.get("key_env") or ""
        key = os.environ.get(env, "")
        if not key:
            raise ValueError(f"the tile source needs an API key in the environment variable {env or '(none named)'}")
        url = url.replace("{key}", key)
    bbox = [float(v) for v in config["bbox"]]
    zoom = int(config["zoom"])
    baidu = bool(config.get("baidu"))
    plan = (plan_baidu if baidu else plan_xyz)(bbox, zoom)
    progress.log(f"fetching {redact_secrets(str(config['url']))}: {plan.describe()}")
    out = ws.root / "imagery" / f"{job_id}.tif"
    out.parent.mkdir(parents=True, exist_ok=True)

    def on_progress(frac: float, msg: str) -> None:
        progress.check_cancel()
        progress.update(0.9 * frac, msg)

    kw = {"cache_dir": ws.root / "imagery" / ".tilecache", "max_tiles": config.get("max_tiles", FETCH_JOB_MAX_TILES),
          "rate": float(config.get("rate", 4.0)), "progress": on_progress}
    if config.get("subdomains"):
        kw["subdomains"] = tuple(config["subdomains"])
    res = (fetch_baidu if baidu else fetch_xyz)(url, bbox, zoom, out, **kw)
    for x, y, why in res.missing[:20]:
        progress.log(redact_secrets(f"missing tile {zoom}/{x}/{y}: {why}"))
    progress.update(0.95, "importing the mosaic as a scene")
    scene, where = import_imagery(ws, out, name=config.get("name") or f"fetched {job_id[-6:]}",
                                  allow_duplicate=True)  # a fetch is a new download, asked for
    progress.log(f"imported scene {scene.id}: {where}")
    return {"scene_id": scene.id, "where": where, "tiles": plan.tiles, "missing": len(res.missing),
            "summary": redact_secrets(res.summary())}


def _checkpoint_id(ws: Workspace, config: dict, job_id: str | None = None) -> str:
    """The job's ``checkpoint_id``, else the active checkpoint's; ValueError when neither exists, NotFoundError
    when it is archived (its weights are gone). A checkpoint taken as the active one is written into the job's
    config (``job_id``), so archiving it while the job runs is refused (the archive guard reads job configs)."""
    cid = config.get("checkpoint_id")
    if not cid:
        active = ws.active_checkpoint()
        if active is None:
            raise ValueError("no checkpoint given and none is active")
        cid = config["checkpoint_id"] = active.id
        if job_id is not None:
            ws.update_job(job_id, config=config)
    ws.usable_checkpoint(cid)
    return cid


@register_job_kind("predict-region")
def predict_region_job(ws: Workspace, job_id: str, config: dict, progress: ProgressReporter) -> dict:
    """Predict a region too big for the Map page's inline prediction, streamed window row by window row into a
    class-index GeoTIFF in the workspace (``predictions/<job>.tif``; colour table, the scene's CRS and the region's
    transform) with a class-area CSV beside it.

    config: ``scene_id``, ``window`` ``[row, col, height, width]``, ``checkpoint_id`` (default: the active one),
    ``tta`` (``none`` / ``d4`` / a list of view names), ``device``, ``compile`` (``auto``, the default: where the
    first ``torch.compile`` pays for itself on this window, :func:`seghz.infer.engine.compile_pays`; ``on``; ``off``).
    """
    from seghz.infer.engine import Predictor, check_compile_choice, tta_views, want_compile
    from seghz.infer.scene import predict_scene
    from seghz.models.checkpoint import checkpoint_scheme

    choice = check_compile_choice(config.get("compile", "auto"))  # before the model is loaded
    scene = ws.get_scene(config["scene_id"])
    cid = _checkpoint_id(ws, config, job_id)
    pred, meta = Predictor.from_checkpoint(ws.checkpoint_path(ws.get_checkpoint(cid)),
                                           check_device(config.get("device"), "predict-region job 'device'"),
                                           batch_size=None)
    out = ws.root / "predictions" / f"{job_id}.tif"
    out.parent.mkdir(parents=True, exist_ok=True)
    window = tuple(int(v) for v in config["window"])
    tta = config.get("tta", "none")
    pred.compile = want_compile(choice, pred, window[2], window[3], len(tta_views(tta)))
    if pred.compile:
        progress.log("the model is compiled on its first windows (torch.compile: it pays for itself on a region this size)")
    progress.log(f"predicting rows {window[0]}..{window[0] + window[2] - 1}, cols {window[1]}..{window[1] + window[3] - 1} "
                 f"of scene {scene.id} with {cid} (TTA {tta})")

    def should_cancel() -> bool:
        progress.check_cancel()
        return False

    summary = predict_scene(pred, ws.scene_path(scene, "image"), out, tta=tta,
                            scheme=checkpoint_scheme(meta), areas_csv=out.with_suffix(".csv"),
                            progress=progress.update, should_cancel=should_cancel, window=window)
    return {"output": str(out.relative_to(ws.root)), "areas_csv": str(out.with_suffix(".csv").relative_to(ws.root)),
            "scene_id": scene.id, "window": list(window), "checkpoint_id": cid, "seconds": summary.get("seconds"),
            "compiled": bool(pred.compile and pred.compile_error is None)}


@register_job_kind("evaluate")
def evaluate_job(ws: Workspace, job_id: str, config: dict, progress: ProgressReporter) -> dict:
    """Score a checkpoint on a split of the workspace in the background (the Evaluate page's *Run in the
    background*, and its checkpoint comparison's *Evaluate missing*, one job per checkpoint): :func:`seghz.evaluate.evaluate_split`, whose result goes to the workspace's evaluation cache
    exactly as the page's inline run stores it, so the page shows it through its cached-result path.

    A cancel is honoured at every window the predictor reports (so between scenes too); a cancelled run stores
    nothing. With ``force`` false an evaluation already cached for the split's current labels is returned as is.

    config: ``checkpoint_id`` (default: the active checkpoint), ``split`` (default "val"), ``tta`` (``none`` /
    ``d4`` / a list or comma-joined string of view names; default "none"), ``force`` (recompute even when cached),
    ``scene_ids`` (score only these labelled scenes of the split, cached apart from the whole split's:
    :func:`seghz.evaluate.scene_scope`; absent: the whole split), ``device``.

    Each scene's prediction is kept for the Evaluate drill-down (:func:`seghz.drilldown.save_scene_prediction`), which
    then shows its windows without predicting the scene again.

    Returns a summary: ``checkpoint_id``, ``split``, ``tta``, ``miou``, ``scenes``, ``data_version``,
    ``evaluation_id`` (the cache row), ``cached`` (true when nothing was recomputed); ``scene_ids`` when given.
    """
    from seghz import drilldown
    from seghz.evaluate import cached_evaluation, evaluate_split, tta_key
    from seghz.infer.engine import Predictor

    cid = _checkpoint_id(ws, config, job_id)
    ck = ws.get_checkpoint(cid)  # NotFoundError for an unknown id, before any work
    split = str(config.get("split") or "val")
    tta = tta_key(config.get("tta") or "none")  # ValueError for an unknown spec
    force = bool(config.get("force"))
    scene_ids = sorted({str(i) for i in config.get("scene_ids") or ()})
    labelled = [s for s in ws.list_scenes(split) if s.label_path and (not scene_ids or s.id in scene_ids)]
    progress.log(f"evaluating {cid} on {len(labelled)} labelled scene(s) of the '{split}' split (TTA {tta}"
                 + (f", chosen scenes: {', '.join(s.name for s in labelled)}" if scene_ids else "")
                 + (", recomputing" if force else "") + ")")

    hit = None if force else cached_evaluation(ws, cid, split, tta, scene_ids=scene_ids)
    if hit is None:
        predictor, _ = Predictor.from_checkpoint(ws.checkpoint_path(ck),
                                                 check_device(config.get("device"), "evaluate job 'device'"))

        def on_progress(frac: float, msg: str = "") -> None:
            progress.check_cancel()  # raises JobCancelled: evaluate_split then stores nothing
            progress.update(0.99 * float(frac), msg)

        def keep(sid: str, pred) -> None:  # for the drill-down: best effort, never fails the evaluation
            drilldown.save_scene_prediction(ws, cid, sid, tta, pred)

        res = evaluate_split(ws, cid, split, tta, predictor=predictor, progress=on_progress, use_cache=not force,
                             scene_ids=scene_ids, on_prediction=keep)
        ev = cached_evaluation(ws, cid, split, tta, res["data_version"], scene_ids=res.get("scene_ids"))
    else:
        res, ev = hit.result, hit
        progress.log(f"a cached evaluation (id {hit.id}, {hit.created_at[:19]}) holds this result: not recomputed")
    miou = res.get("miou")
    progress.log(f"mIoU {miou:.4f} over {res.get('scenes')} scene(s)" if miou is not None else "mIoU: n/a")
    out = {"checkpoint_id": cid, "split": split, "tta": tta, "miou": miou, "scenes": res.get("scenes"),
           "data_version": res.get("data_version"), "evaluation_id": ev.id if ev is not None else None,
           "cached": hit is not None}
    if scene_ids:
        out["scene_ids"] = scene_ids
    return out


def report_views(views: str | list[str] | None) -> list[str] | None:
    """A TTA report's view list (a mode name, a comma-joined string or a list of view names) as the list
    :func:`seghz.compare.cumulative_tta_specs` takes; None (the engine's D4 views) when not given.

    Raises:
        ValueError: For an unknown mode or view name.
    """
    from seghz.evaluate import tta_key
    from seghz.infer.engine import TTA_MODES

    if not views:
        return None
    key = tta_key(views)
    return list(TTA_MODES[key]) if key in TTA_MODES else key.split(",")


def tta_progress_weights(specs: list[tuple[str, str]], cached: list[bool]) -> list[float]:
    """Each TTA report row's share of a "tta_report" job's progress: its view count over the views of all the rows
    still to compute (0 for a row already cached). A full D4 report with nothing cached: 1/36, 2/36, … 8/36."""
    from seghz.infer.engine import TTA_MODES, tta_views

    n = [0 if done else len(tta_views(spec if spec in TTA_MODES else spec.split(",")))
         for (_, spec), done in zip(specs, cached)]
    total = sum(n)
    return [k / total if total else 0.0 for k in n]


@register_job_kind("tta_report")
def tta_report_job(ws: Workspace, job_id: str, config: dict, progress: ProgressReporter) -> dict:
    """The Evaluate page's cumulative TTA report in the background: :func:`seghz.compare.tta_report` (baseline,
    +lr, +tb, … full D4), whose rows are scored by :func:`seghz.evaluate.evaluate_split` and so land in the
    workspace's evaluation cache one by one, where ``compare.tta_report(..., compute=False)`` (the page) finds them.

    Rows already cached for the split's current labels are reused, not recomputed. A cancel is honoured before each
    row and at every window the predictor reports: the row being scored stores nothing; rows finished before the
    cancel stay cached (each is a complete evaluation of its view list, the one the page's TTA choice or a later
    report reuses).

    Progress is counted in view passes, not rows (:func:`tta_progress_weights`): row k runs k views, so a full D4
    report is 36 passes and its baseline row 1/36 of them; within a row, the row's own progress callback.

    config: ``checkpoint_id`` (default: the active checkpoint), ``split`` (default "val"), ``views`` (the views
    added one by one; default the engine's D4 views), ``device``.

    Returns a summary: ``checkpoint_id``, ``split``, ``data_version``, ``rows`` (``tta``, ``spec``, ``views``,
    ``miou`` per row), ``reused`` (rows found in the cache), ``computed`` (rows scored by this job).
    """
    from seghz import compare
    from seghz.evaluate import evaluate_split
    from seghz.infer.engine import Predictor

    cid = _checkpoint_id(ws, config, job_id)
    ck = ws.get_checkpoint(cid)  # NotFoundError for an unknown id, before any work
    split = str(config.get("split") or "val")
    views = report_views(config.get("views"))  # ValueError for an unknown view, before any work
    specs = compare.cumulative_tta_specs(views)
    dv = ws.data_version(split)
    before = compare.tta_report(ws, cid, split, views, compute=False)
    reused = int(before["mIoU"].notna().sum())
    labelled = [s for s in ws.list_scenes(split) if s.label_path]
    progress.log(f"TTA report of {cid} on {len(labelled)} labelled scene(s) of the '{split}' split: {len(specs)} rows "
                 f"({reused} cached for the current labels, {len(specs) - reused} to score)")
    predictor = None
    if reused < len(specs):
        predictor, _ = Predictor.from_checkpoint(ws.checkpoint_path(ck),
                                                 check_device(config.get("device"), "tta_report job 'device'"))

    # progress in view passes, not rows: row k runs k views (a full D4 report: 1 + 2 + … + 8 = 36 passes), so each
    # row to score gets its view count's share of the views still to compute (cached rows cost nothing)
    cached = before["mIoU"].notna().tolist()
    todo = tta_progress_weights(specs, cached)
    passed = 0.0
    for (label, spec), done, w in zip(specs, cached, todo):
        progress.check_cancel(force=True)  # between rows too: a row of one window reports only once it is scored
        if done:
            continue
        progress.update(0.99 * passed, f"{label}: scoring")

        def on_progress(frac: float, msg: str = "", start: float = passed, w: float = w, label: str = label) -> None:
            progress.check_cancel()  # raises JobCancelled: the row being scored stores nothing
            progress.update(0.99 * (start + w * min(1.0, max(0.0, float(frac)))), f"{label}: {msg}")

        # the row compare.tta_report computes, cached by evaluate_split per view list
        evaluate_split(ws, cid, split, spec, predictor=predictor, progress=on_progress)
        passed += w
    table = compare.tta_report(ws, cid, split, views, compute=False)
    rows = [{"tta": r["TTA"], "spec": r["spec"], "views": int(r["views"]),
             "miou": None if np.isnan(r["mIoU"]) else float(r["mIoU"])} for r in table.to_dict("records")]
    for r in rows:
        progress.log(f"{r['tta']}: mIoU {r['miou']:.4f}" if r["miou"] is not None else f"{r['tta']}: mIoU n/a")
    return {"checkpoint_id": cid, "split": split, "data_version": dv, "rows": rows, "reused": reused,
            "computed": len(specs) - reused}


# ---------------------------------------------------------------------------------------------- evaluation jobs
# The Evaluate page's background runs ("evaluate": one checkpoint on a split with a TTA; "tta_report": the
# cumulative TTA report of one checkpoint on a split) are told apart by what they compute; a second job computing
# the same thing while one is queued or running is never submitted.
EVALUATION_JOB_KINDS = ("evaluate", "tta_report")


def evaluation_key(kind: str, config: dict | None) -> tuple[str, str | None, str, str] | None:
    """What an evaluation job of ``kind`` with ``config`` computes: ``(kind, checkpoint id, split, TTA key)``; for a
    "tta_report" job the TTA key is that of its last row, the full view list (``"d4"`` by default). None for another
    kind or a config naming an unknown TTA. The split of an "evaluate" job of chosen scenes (``scene_ids``) is its
    cache key :func:`seghz.evaluate.scene_scope` (``"train@<hash>"``): it is neither the whole split's job nor that of
    another scene set."""
    from seghz.compare import cumulative_tta_specs
    from seghz.evaluate import scene_scope, tta_key

    cfg = config or {}
    if kind not in EVALUATION_JOB_KINDS:
        return None
    try:
        if kind == "evaluate":
            t = tta_key(cfg.get("tta") or "none")
        else:
            t = cumulative_tta_specs(report_views(cfg.get("views")))[-1][1]
    except (ValueError, TypeError):
        return None
    split = str(cfg.get("split") or "val")
    return kind, cfg.get("checkpoint_id"), scene_scope(split, cfg.get("scene_ids")) if kind == "evaluate" else split, t


def evaluation_jobs(ws: Workspace, kind: str | None = None, checkpoint_id: str | None = None, split: str | None = None,
                    tta: str | None = None, active_only: bool = False, limit: int = 50) -> list:
    """Evaluation jobs (:data:`EVALUATION_JOB_KINDS`), newest first: all queued or running ones with
    ``active_only``, else among the ``limit`` newest jobs of the workspace. Each filter left None matches any."""
    from seghz.evaluate import tta_key

    # queued before running: a job that starts between the two reads is in both lists, never in neither
    jobs = ws.list_jobs(status="queued") + ws.list_jobs(status="running") if active_only else ws.list_jobs(limit=limit)
    want = (kind, checkpoint_id, split, None if tta is None else tta_key(tta))
    out = {}
    for j in jobs:
        key = evaluation_key(j.kind, j.config)
        if key is not None and all(w is None or w == k for w, k in zip(want, key)):
            out.setdefault(j.id, j)
    return sorted(out.values(), key=lambda j: j.created_at, reverse=True)


def submit_evaluation_job(ws: Workspace, kind: str, config: dict) -> tuple[str, bool]:
    """Submit an "evaluate" or "tta_report" job unless one computing the same thing (:func:`evaluation_key`) is
    queued or running: ``(new job id, True)``, or ``(the queued/running job's id, False)``.

    Raises:
        ValueError: For another kind, or a config naming an unknown TTA spec; what :func:`runner.submit_job` raises.
    """
    from seghz.jobs import runner

    if kind not in EVALUATION_JOB_KINDS:
        raise ValueError(f"'{kind}' is not an evaluation job kind ({', '.join(EVALUATION_JOB_KINDS)})")
    key = evaluation_key(kind, config)
    if key is None:
        raise ValueError(f"unknown TTA in the {kind} job's config: {config}")
    # checked and queued in one write transaction: two sessions clicking at once get one job between them
    return runner.submit_job_once(ws, kind, config, lambda j: evaluation_key(j.kind, j.config) == key)


def submit_missing_evaluations(ws: Workspace, checkpoint_ids: list[str], split: str) -> dict[str, tuple[str, bool]]:
    """One "evaluate" job (no TTA) for each checkpoint without a cached evaluation of ``split`` for its current
    labels (:func:`seghz.compare.missing_evaluations`), except where such a job is queued or running already:
    ``{checkpoint id: (job id, submitted now)}``."""
    from seghz.compare import missing_evaluations

    return {c: submit_evaluation_job(ws, "evaluate", {"checkpoint_id": c, "split": split, "tta": "none",
                                                      "force": False})
            for c in missing_evaluations(ws, checkpoint_ids, split)}


# ---------------------------------------------------------------------------------------------- noise queues
# The Labels page's "Build queues for N scenes" (review plan): one job builds the noise queue of many scenes with one
# predictor. A second click while the same build is queued or running must not score the same scenes twice.
QUEUE_TTAS = ("none", "flip", "d4")


def queues_config(ws: Workspace, config: dict) -> dict:
    """A "queues" job's config with its defaults resolved: ``checkpoint_id`` (the active one), ``scenes`` (the labelled
    scenes of ``split``, default "train", of the checkpoint's scheme without a fresh queue:
    :func:`seghz.review.plan.scenes_needing_queues`), ``tta`` ("none"), ``threshold`` (0.5), ``held_out`` (None: the
    Labels page's default per scene, held-out for training scenes).

    Raises:
        ValueError: No checkpoint given and none active; an unknown TTA; a threshold outside (0, 1].
        NotFoundError: An unknown or archived checkpoint.
    """
    from seghz.review.plan import scenes_needing_queues

    cfg = dict(config or {})
    cid = _checkpoint_id(ws, cfg)  # fills cfg["checkpoint_id"] with the active one when missing
    tta = str(cfg.get("tta") or "none")
    if tta not in QUEUE_TTAS:
        raise ValueError(f"unknown TTA '{tta}' for the noise queues; use one of {', '.join(QUEUE_TTAS)}")
    threshold = float(cfg.get("threshold", 0.5))
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"the suspicion threshold must be in (0, 1], got {threshold}")
    held = cfg.get("held_out")
    if not cfg.get("scenes"):
        active = ws.active_checkpoint()
        cfg["scenes"] = scenes_needing_queues(ws, cfg.get("split", "train"), checkpoint_id=cid,
                                              active_id=active.id if active else None)
    return {**cfg, "checkpoint_id": cid, "scenes": list(cfg["scenes"]), "tta": tta, "threshold": threshold,
            "held_out": None if held is None else bool(held)}


def queues_identity(config: dict | None) -> tuple:
    """What a "queues" job builds: ``(checkpoint, scenes (sorted), TTA, threshold, held-out)``; two jobs with the
    same identity build the same queues."""
    cfg = config or {}
    held = cfg.get("held_out")
    return (cfg.get("checkpoint_id"), tuple(sorted(cfg.get("scenes") or ())), str(cfg.get("tta") or "none"),
            round(float(cfg.get("threshold", 0.5)), 6), None if held is None else bool(held))


@register_job_kind("queues")
def queues_job(ws: Workspace, job_id: str, config: dict, progress: ProgressReporter) -> dict:
    """Build the noise queue of many scenes with one checkpoint (:func:`seghz.review.plan.build_queues`), for the
    Labels page's review plan: scenes of another scheme are skipped, a scene that fails is logged and skipped.

    A cancel is honoured at every window the predictor reports: the scene being scored writes nothing, the queues
    finished before it stay (each complete). Progress is weighted by the scenes' pixel counts.

    config: ``checkpoint_id`` (default: the active one, recorded in the config), ``scenes`` (default: the labelled
    scenes of ``split``, default "train", without a fresh queue), ``tta``, ``threshold``, ``held_out`` (see
    :func:`queues_config`), ``device``.

    Returns ``checkpoint_id``, ``built`` / ``skipped`` / ``failed`` (scene ids) and ``scenes`` (per scene: status,
    message, items).
    """
    from seghz.review.plan import build_queues

    _checkpoint_id(ws, config, job_id)  # the active checkpoint taken is recorded in the job's config
    cfg = queues_config(ws, config)
    check_device(config.get("device"), "queues job 'device'")  # before any scene is scored
    scenes = cfg["scenes"]
    how = ("held-out for training scenes" if cfg["held_out"] is None
           else "held-out" if cfg["held_out"] else "in-sample")
    progress.log(f"building the noise queues of {len(scenes)} scene(s) with {cfg['checkpoint_id']} (TTA {cfg['tta']}, "
                 f"threshold {cfg['threshold']:.2f}, scoring {how})")

    def should_stop() -> bool:
        progress.check_cancel()  # raises JobCancelled: the scene being scored writes nothing
        return False

    res = build_queues(ws, cfg["checkpoint_id"], scenes, tta=cfg["tta"], threshold=cfg["threshold"],
                       held_out=cfg["held_out"], progress=lambda f, m="": progress.update(0.99 * f, m),
                       should_stop=should_stop, log=progress.log, device=config.get("device"))
    by = {k: [b.scene_id for b in res if b.status == k] for k in ("built", "skipped", "failed")}
    progress.log(f"{len(by['built'])} queue(s) built, {len(by['skipped'])} scene(s) skipped, "
                 f"{len(by['failed'])} failed")
    return {"checkpoint_id": cfg["checkpoint_id"], **by, "scenes": {b.scene_id: b.to_dict() for b in res}}


def submit_queues_job(ws: Workspace, config: dict) -> tuple[str, bool]:
    """Submit a "queues" job, its defaults resolved (:func:`queues_config`: the checkpoint and the scenes it builds
    are fixed now, so a second click finds the first job), unless one with the same identity (:func:`queues_identity`)
    is queued or running: ``(new job id, True)``, or ``(that job's id, False)`` and nothing submitted.

    Raises:
        ValueError: A bad config (:func:`queues_config`), or no scene to build; what
            :func:`seghz.jobs.runner.submit_job` raises.
    """
    from seghz.jobs import runner

    cfg = queues_config(ws, config)
    if not cfg["scenes"]:
        raise ValueError("no scene to build a queue for: every labelled scene asked for has a fresh queue")
    key = queues_identity(cfg)
    return runner.submit_job_once(ws, "queues", cfg,
                                  lambda j: j.kind == "queues" and queues_identity(j.config) == key)
