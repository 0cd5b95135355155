"""Evaluating a workspace checkpoint on a split of the workspace, cached by (checkpoint, split, TTA, data version)."""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from seghz.classes import index_crosswalk
from seghz.data.io import read_image
from seghz.errors import SegHZError
from seghz.metrics import add_calibration, calibration_counts, class_frequencies, confusion_matrix, evaluation_scores
from seghz.store import Workspace

if TYPE_CHECKING:
    from seghz.infer.engine import Predictor
# seghz.infer.engine (and torch with it) is imported inside the functions that need it: importing this module
# (label_for_checkpoint, caveat_lines ... for light commands such as ``seghz scenes list``) must stay cheap


def label_for_checkpoint(label: np.ndarray, label_scheme: str, ck_scheme: str) -> np.ndarray:
    """Crosswalk a class-index label into the checkpoint's scheme (raises SchemeMismatchError when impossible)."""
    return label if label_scheme == ck_scheme else index_crosswalk(label_scheme, ck_scheme)[label]


def class_caveats(sc: dict, train_freq, label_scheme: str, ck_scheme: str) -> dict:
    """What a folder evaluation's per-class scores cannot mean, and the mIoU without it.

    * ``untrained``: classes the labels hold that the checkpoint saw no pixel of in training (``train_class_freq``
      0): it cannot predict them, so their IoU 0 measures the training data, not the model (GID has no bare ground:
      Dubai "land" and LoveDA "barren" become OpenArea);
    * ``unexpressible``: classes the model predicts that no class of ``label_scheme`` maps to under the crosswalk
      (Dubai has no forest): their predicted pixels are already errors of the label classes, and their IoU 0 counts
      a second time in mIoU;
    * ``miou_comparable``: the mean IoU over the scored classes that are neither.

    ``sc`` is :func:`seghz.metrics.scores`' dict. Returns ``{"untrained": [...], "unexpressible": [...],
    "miou_comparable": float | None}``.
    """
    names = list(sc["classes"])
    pc = sc["per_class"]
    if label_scheme == ck_scheme:
        reach = set(range(len(names)))
    else:
        lut = index_crosswalk(label_scheme, ck_scheme)
        reach = {int(v) for v in np.unique(lut) if int(v) < len(names)}
    tf = None if train_freq is None else [float(x) for x in train_freq]
    untrained = [n for i, n in enumerate(names) if tf is not None and i < len(tf) and tf[i] == 0 and pc[n]["support"] > 0]
    unexpressible = [n for i, n in enumerate(names) if i not in reach and pc[n]["predicted"] > 0]
    keep = [pc[n]["iou"] for n in names if pc[n]["iou"] is not None and n not in untrained and n not in unexpressible]
    return {"untrained": untrained, "unexpressible": unexpressible,
            "miou_comparable": float(np.mean(keep)) if keep else None}


def caveat_lines(sc: dict) -> list[str]:
    """Lines to print under a folder evaluation's table: the mIoU's bootstrap interval over the images, the classes
    of :func:`class_caveats` and the mIoU without them, and a hint when a very low score looks like a wrong label
    scheme. ``sc`` is ``seghz evaluate``'s result (``miou_interval``, ``untrained``, ``unexpressible``, ...)."""
    out = []
    iv = sc.get("miou_interval") or {}
    if iv.get("lo") is not None and sc.get("miou") is not None:
        out.append(f"mIoU {100 * sc['miou']:.2f}, {100 * iv['level']:.0f} % interval over the {sc['images']} images "
                   f"(scene bootstrap, {iv['rounds']} rounds): [{100 * iv['lo']:.2f}, {100 * iv['hi']:.2f}]")
    pc = sc["per_class"]
    for n in sc.get("untrained") or []:
        out.append(f"note: {n}: {pc[n]['support']} labelled px, but the checkpoint saw no pixel of it in training and "
                   "cannot predict it; its IoU 0 measures the training data")
    for n in sc.get("unexpressible") or []:
        out.append(f"note: {n}: no class of the label scheme '{sc.get('label_scheme')}' maps to it; its "
                   f"{pc[n]['predicted']} predicted px are already errors of other classes and its IoU 0 counts "
                   "again in mIoU")
    odd = sc.get("untrained") or sc.get("unexpressible")
    if odd and sc.get("miou_comparable") is not None:
        out.append(f"mIoU over the classes both the labels and the checkpoint know: {100 * sc['miou_comparable']:.2f}")
    out += predicted_only_lines(sc)
    if sc.get("miou") is not None and sc["miou"] < 0.2 and not odd:
        out.append(f"note: mIoU below 20 %: check that --scheme ({sc.get('label_scheme')}) is the scheme of the label "
                   "files (python -m seghz info lists the schemes)")
    return out


def predicted_only(sc: dict) -> list[str]:
    """Classes of a result with no labelled pixel but some predicted ones (:func:`seghz.metrics.scores`'
    ``predicted_only``; derived from ``per_class`` for results cached before it existed)."""
    if sc.get("predicted_only") is not None:
        return list(sc["predicted_only"])
    pc = sc.get("per_class") or {}
    return [n for n, v in pc.items() if not v.get("support") and (v.get("predicted") or 0) > 0]


def miou_present(sc: dict) -> float | None:
    """The mean IoU over the classes present in the labels (``miou_present`` of :func:`seghz.metrics.scores`; derived
    from ``per_class`` for older results): the standard mIoU without the IoU 0 of :func:`predicted_only` classes."""
    if "miou_present" in sc:
        return sc["miou_present"]
    ious = [v["iou"] for v in (sc.get("per_class") or {}).values() if v.get("support") and v.get("iou") is not None]
    return float(np.mean(ious)) if ious else None


def predicted_only_lines(sc: dict) -> list[str]:
    """Notes on classes with no labelled pixel but some predicted ones (a few stray pixels put IoU 0 in the standard
    mIoU: 19 px of Forest on 9 tiles moved it from 93 to 75), and the mIoU over the classes present in the labels with
    its scene-bootstrap interval when ``per_scene`` is there -- shown alongside the standard mIoU, never instead.
    Classes already noted as ``unexpressible`` (:func:`class_caveats`) are not noted twice."""
    pc = sc.get("per_class") or {}
    stray = [n for n in predicted_only(sc) if n in pc and n not in (sc.get("unexpressible") or [])]
    mp = miou_present(sc)
    if not stray:
        return []
    out = [f"note: {n}: 0 labelled px, {pc[n]['predicted']:,} predicted: IoU 0 counts in mIoU" for n in stray]
    if mp is not None and sc.get("miou") is not None:
        k = sum(1 for v in pc.values() if v.get("support"))
        line = (f"mIoU over the {k} classes present in the labels (miou_present): {100 * mp:.2f}, beside the standard "
                f"mIoU {100 * sc['miou']:.2f} that counts {', '.join(stray)} as IoU 0")
        cms = list((sc.get("per_scene") or {}).values())
        if len(cms) >= 2:
            from seghz.metrics import scene_bootstrap

            iv = scene_bootstrap(np.asarray(cms, np.int64), rounds=2000, seed=0, labelled_only=True)
            if iv["lo"] is not None:
                line += (f"; {100 * iv['level']:.0f} % interval over the {len(cms)} images (scene bootstrap): "
                         f"[{100 * iv['lo']:.2f}, {100 * iv['hi']:.2f}]")
        out.append(line)
    return out


def tta_key(tta: str | list[str] | tuple[str, ...]) -> str:
    """The canonical cache key of a TTA spec: a mode name (``none``/``flip``/``d4``) or comma-joined view names.

    A view list equal to a mode's views (in order) is that mode, so ``["identity"]`` is ``"none"`` and the
    eight D4 views in the engine's order are ``"d4"``; aliases become the engine's names (``flip_lr`` -> ``lr``).
    """
    from seghz.infer.engine import _ALIASES, TTA_MODES, VIEWS

    if isinstance(tta, str):
        if tta in TTA_MODES:
            return tta
        tta = [t.strip() for t in tta.split(",") if t.strip()]
    names = [_ALIASES.get(n, n) for n in tta]
    unknown = [n for n in names if n not in VIEWS]
    if unknown or not names:
        raise ValueError(f"unknown TTA spec {tta!r}: use one of {list(TTA_MODES)} or view names {list(VIEWS)}")
    for mode, views in TTA_MODES.items():
        if names == views:
            return mode
    return ",".join(names)


def tta_views_of(key: str) -> str | list[str]:
    """What :meth:`Predictor.predict` takes for a canonical key of :func:`tta_key`."""
    from seghz.infer.engine import TTA_MODES

    return key if key in TTA_MODES else key.split(",")


def scene_scope(split: str, scene_ids=None) -> str:
    """The split key an evaluation is cached under: ``split`` for the whole split (``scene_ids`` None or empty), else
    ``"<split>@<hash of the sorted scene ids>"``, so an evaluation of chosen scenes is never served from, nor stored
    as, the whole split's (nor another scene set's); split-wide readers (``find_evaluation(cid, "val", ...)``, the
    gate, the candidate comparison) never see it."""
    import hashlib

    ids = sorted({str(i) for i in scene_ids or ()})
    return f"{split}@{hashlib.sha256(chr(10).join(ids).encode()).hexdigest()[:12]}" if ids else split


def cached_evaluation(ws: Workspace, checkpoint_id: str, split: str, tta: str | list[str] = "none",
                      data_version: str | None = None, scene_ids=None):
    """The cached :class:`seghz.store.Evaluation` for exactly this TTA spec and the split's current data (or None);
    of the chosen ``scene_ids`` only (:func:`scene_scope`) when given, at their own data version
    (``ws.data_version(split, scene_ids)``: labels saved on other scenes of the split do not make it stale)."""
    key = tta_key(tta)
    ids = sorted({str(i) for i in scene_ids or ()})
    dv = ws.data_version(split, ids or None) if data_version is None else data_version
    return ws.find_evaluation(checkpoint_id, scene_scope(split, ids), key != "none", dv, tta_spec=key)


def scene_work(height: int, width: int, predictor=None) -> int:
    """Pixels a predictor runs to score a ``height``×``width`` scene, for one TTA view: its sliding windows' sizes
    summed (overlapping windows run their shared pixels again, so a small scene costs more per pixel than a large one);
    the scene's pixels when ``predictor`` does not say how it tiles (at least 1)."""
    from seghz.infer.engine import sliding_windows

    h, w = int(height or 0), int(width or 0)
    try:
        wins = sliding_windows(h, w, getattr(predictor, "tile", None), getattr(predictor, "overlap", None))
    except (TypeError, ValueError):
        return max(1, h * w)
    return max(1, sum(th * tw for _r, _c, th, tw in wins))


def evaluate_split(
    ws: Workspace,
    checkpoint_id: str,
    split: str,
    tta: str | list[str] = "none",
    predictor: Predictor | None = None,
    progress: Callable[[float, str], None] | None = None,
    use_cache: bool = True,
    scene_ids=None,
    on_prediction: Callable[[str, np.ndarray], None] | None = None,
) -> dict:
    """Scores of a checkpoint over the labelled scenes of a split, using the effective (corrected) labels.

    The result holds the study's metrics (see :func:`seghz.metrics.scores`) plus per-scene confusion
    matrices (``per_scene``), label/prediction class frequencies and the confidence calibration counts with
    their ECE (:func:`seghz.metrics.evaluation_scores`).
    ``tta`` is a mode or a list (or comma-joined string) of view names; results are cached per
    :func:`tta_key` of it (``result["tta"]``), checkpoint, split and data version.
    ``progress(fraction, message)`` is called as windows are scored; the fraction counts the work done so far, each
    scene weighing its windows' pixels (:func:`scene_work`), not one scene's share, so the pace stays even across scene
    sizes.
    ``scene_ids``: score only these labelled scenes of the split (None, empty or all of them: the whole split); the
    result then lists them (``scene_ids``) and is cached under :func:`scene_scope`, apart from the whole split's, at
    the data version of those scenes only (``ws.data_version(split, scene_ids)``, also its ``data_version``).
    ``on_prediction(scene_id, prediction)`` receives each scene's class-index prediction (e.g. to keep it for the
    drill-down).
    """
    tta = tta_key(tta)
    labelled_ids = [s.id for s in ws.list_scenes(split) if s.label_path]
    chosen = sorted({str(i) for i in scene_ids or ()})
    if chosen:
        unknown = [i for i in chosen if i not in labelled_ids]
        if unknown:
            raise SegHZError(f"not labelled scenes of the '{split}' split: {', '.join(unknown)}")
        if len(chosen) == len(labelled_ids):
            chosen = []  # every scene of the split: the whole split's evaluation
    scope = scene_scope(split, chosen)
    # chosen scenes: their own data version, so a label saved on another scene of the split keeps this cached
    dv = ws.data_version(split, chosen or None)
    if use_cache:
        hit = ws.find_evaluation(checkpoint_id, scope, tta != "none", dv, tta_spec=tta)
        if hit is not None:
            return hit.result
    ck = ws.get_checkpoint(checkpoint_id)
    if predictor is None:
        from seghz.infer.engine import Predictor

        predictor, _ = Predictor.from_checkpoint(ws.checkpoint_path(ck))
    scenes = [s for s in ws.list_scenes(split) if s.label_path and (not chosen or s.id in chosen)]
    if not scenes:
        raise SegHZError(f"split '{split}' of workspace {ws.root} has no labelled scenes to evaluate")
    from seghz.models.checkpoint import checkpoint_scheme, read_metadata

    ck_scheme = checkpoint_scheme(read_metadata(ws.checkpoint_path(ck)))
    names = list(ck_scheme.names)
    nc = len(names)
    total = np.zeros((nc, nc), np.int64)
    per_scene = {}
    calib = None
    # progress in window pixels, not scenes: a scene's share of the bar is its share of the work (:func:`scene_work`),
    # so the pace so far tells the time left (``seghz.report.job_time_left_s``); counted in scenes, a 128 px scene
    # before a 1024 px one filled half the bar in 1/100 of the time, and the time left grew as the job ran
    px = [scene_work(s.height, s.width, predictor) for s in scenes]
    total_px, done_px = sum(px), 0
    starts = []
    for n_px in px:
        starts.append(done_px)
        done_px += n_px

    def scene_progress(i: int, f: float, m: str) -> None:
        progress((starts[i] + f * px[i]) / total_px, f"{scenes[i].name}: {m}")

    # A thread reads the scenes (image, then label) one or two ahead of the model, so reading overlaps compute. A
    # scene it cannot read ends the images handed to the model: the scenes before it are still scored (and handed
    # to on_prediction), then its error (naming the file) is raised here, as when the scenes were read in turn.
    import collections
    import queue
    import threading

    box: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()

    def reader() -> None:
        for s in scenes:
            try:
                img = read_image(ws.scene_path(s, "image"))
                item = (s, img, label_for_checkpoint(ws.effective_label(s.id), s.scheme, ck_scheme.name), None)
            except BaseException as e:  # noqa: BLE001 - handed over whole, raised by the loop
                item = (s, None, None, e)
            while not stop.is_set():
                try:
                    box.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if stop.is_set() or item[3] is not None:
                return

    labels: collections.deque = collections.deque()  # (scene, label) of the images handed over, not yet scored
    failed: list[BaseException] = []

    def images():
        for _ in scenes:
            s, img, lbl, err = box.get()
            if err is not None:
                failed.append(err)
                return
            labels.append((s, lbl))
            yield img

    spec = tta_views_of(tta)
    many = getattr(predictor, "predict_many", None)  # windows of several scenes per batch; else scene by scene
    if many is not None:
        results = many(images(), spec, progress=scene_progress if progress else None)
    else:
        results = (predictor.predict(img, spec, progress=(lambda f, m, i=i: scene_progress(i, f, m)) if progress
                                     else None) for i, img in enumerate(images()))
    thread = threading.Thread(target=reader, name="seghz-evaluate-read", daemon=True)
    thread.start()
    try:
        for pred, conf in results:
            s, lbl = labels.popleft()
            if on_prediction is not None:
                on_prediction(s.id, pred)
            cm = confusion_matrix(pred, lbl, nc)
            per_scene[s.id] = cm.tolist()
            total += cm
            calib = add_calibration(calib, calibration_counts(pred, conf, lbl, nc))
    finally:
        stop.set()
        thread.join()
    if failed:
        raise failed[0]
    res = evaluation_scores(total, names, calib)
    res.update(checkpoint_id=checkpoint_id, split=split, tta=tta, data_version=dv, scenes=len(scenes), per_scene=per_scene)
    if chosen:
        res["scene_ids"] = chosen
    ws.add_evaluation(checkpoint_id, scope, tta != "none", dv, res)
    return res


__all__ = ["cached_evaluation", "class_frequencies", "evaluate_split", "label_for_checkpoint", "scene_scope", "scene_work",
           "tta_key", "tta_views_of"]
