"""Evaluating a workspace checkpoint on a split of the workspace, cached by (checkpoint, split, TTA, data version)."""
from __future__ import annotations

from typing import Callable

import numpy as np

from seghz.classes import index_crosswalk
from seghz.data.io import read_image
from seghz.errors import SegHZError
from seghz.infer.engine import _ALIASES, TTA_MODES, VIEWS, Predictor
from seghz.metrics import add_calibration, calibration_counts, class_frequencies, confusion_matrix, evaluation_scores
from seghz.store import Workspace


def label_for_checkpoint(label: np.ndarray, label_scheme: str, ck_scheme: str) -> np.ndarray:
    """Crosswalk a class-index label into the checkpoint's scheme (raises SchemeMismatchError when impossible)."""
    return label if label_scheme == ck_scheme else index_crosswalk(label_scheme, ck_scheme)[label]


def tta_key(tta: str | list[str] | tuple[str, ...]) -> str:
    """The canonical cache key of a TTA spec: a mode name (``none``/``flip``/``d4``) or comma-joined view names.

    A view list equal to a mode's views (in order) is that mode, so ``["identity"]`` is ``"none"`` and the
    eight D4 views in the engine's order are ``"d4"``; aliases become the engine's names (``flip_lr`` -> ``lr``).
    """
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
    return key if key in TTA_MODES else key.split(",")


def cached_evaluation(ws: Workspace, checkpoint_id: str, split: str, tta: str | list[str] = "none",
                      data_version: str | None = None):
    """The cached :class:`seghz.store.Evaluation` for exactly this TTA spec and the split's current data (or None)."""
    key = tta_key(tta)
    dv = ws.data_version(split) if data_version is None else data_version
    return ws.find_evaluation(checkpoint_id, split, key != "none", dv, tta_spec=key)


def evaluate_split(
    ws: Workspace,
    checkpoint_id: str,
    split: str,
    tta: str | list[str] = "none",
    predictor: Predictor | None = None,
    progress: Callable[[float, str], None] | None = None,
    use_cache: bool = True,
) -> dict:
    """Scores of a checkpoint over the labelled scenes of a split, using the effective (corrected) labels.

    The result holds the study's metrics (see :func:`seghz.metrics.scores`) plus per-scene confusion
    matrices (``per_scene``), label/prediction class frequencies and the confidence calibration counts with
    their ECE (:func:`seghz.metrics.evaluation_scores`).
    ``tta`` is a mode or a list (or comma-joined string) of view names; results are cached per
    :func:`tta_key` of it (``result["tta"]``), checkpoint, split and data version.
    """
    tta = tta_key(tta)
    dv = ws.data_version(split)
    if use_cache:
        hit = ws.find_evaluation(checkpoint_id, split, tta != "none", dv, tta_spec=tta)
        if hit is not None:
            return hit.result
    ck = ws.get_checkpoint(checkpoint_id)
    if predictor is None:
        predictor, _ = Predictor.from_checkpoint(ws.checkpoint_path(ck))
    scenes = [s for s in ws.list_scenes(split) if s.label_path]
    if not scenes:
        raise SegHZError(f"split '{split}' of workspace {ws.root} has no labelled scenes to evaluate")
    names = None
    from seghz.models.checkpoint import read_metadata

    meta = read_metadata(ws.checkpoint_path(ck))
    names = meta["scheme"]["names"]
    nc = len(names)
    total = np.zeros((nc, nc), np.int64)
    per_scene = {}
    calib = None
    for i, s in enumerate(scenes):
        img = read_image(ws.scene_path(s, "image"))
        lbl = label_for_checkpoint(ws.effective_label(s.id), s.scheme, meta["scheme"]["name"])
        sub = None
        if progress:
            sub = lambda f, m, i=i, name=s.name: progress((i + f) / len(scenes), f"{name}: {m}")  # noqa: E731
        pred, conf = predictor.predict(img, tta_views_of(tta), progress=sub)
        cm = confusion_matrix(pred, lbl, nc)
        per_scene[s.id] = cm.tolist()
        total += cm
        calib = add_calibration(calib, calibration_counts(pred, conf, lbl, nc))
    res = evaluation_scores(total, names, calib)
    res.update(checkpoint_id=checkpoint_id, split=split, tta=tta, data_version=dv, scenes=len(scenes), per_scene=per_scene)
    ws.add_evaluation(checkpoint_id, split, tta != "none", dv, res)
    return res


__all__ = ["cached_evaluation", "class_frequencies", "evaluate_split", "label_for_checkpoint", "tta_key", "tta_views_of"]
