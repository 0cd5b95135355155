"""The job kinds SegHZ runs in background processes (imported by the job worker)."""
from __future__ import annotations

from dataclasses import fields

import numpy as np

from seghz.classes import get_scheme
from seghz.data.io import read_image
from seghz.evaluate import label_for_checkpoint
from seghz.jobs.runner import ProgressReporter, register_job_kind
from seghz.store import Workspace
from seghz.train.trainer import TrainConfig, train

# Every TrainConfig field a job config may set (the parent comes from parent_checkpoint_id instead).
TRAIN_KEYS = {f.name for f in fields(TrainConfig)} - {"parent_checkpoint"}


def _samples(ws: Workspace, split: str, scheme: str) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for s in ws.list_scenes(split):
        if not s.label_path:
            continue
        lbl = label_for_checkpoint(ws.effective_label(s.id), s.scheme, scheme)
        out.append((read_image(ws.scene_path(s, "image")), lbl))
    return out


@register_job_kind("train")
def train_job(ws: Workspace, job_id: str, config: dict, progress: ProgressReporter) -> dict:
    """Train on the effective labels of the train split; validate on the val split; register the checkpoint.

    config: the :class:`TrainConfig` fields, plus ``parent_checkpoint_id`` (fine-tune from a workspace
    checkpoint), ``train_split`` / ``val_split`` and ``name``.
    """
    cfg_d = {k: v for k, v in config.items() if k in TRAIN_KEYS}
    parent_id = config.get("parent_checkpoint_id")
    parent_path = str(ws.checkpoint_path(parent_id)) if parent_id else None
    if parent_id:
        cfg_d["scheme"] = ws.get_checkpoint(parent_id).scheme
    cfg = TrainConfig(parent_checkpoint=parent_path, **cfg_d)
    cfg.validate()
    get_scheme(cfg.scheme)
    progress.log(f"loading scenes for scheme {cfg.scheme}")
    tr = _samples(ws, config.get("train_split", "train"), cfg.scheme)
    va = _samples(ws, config.get("val_split", "val"), cfg.scheme)
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

    res = train(cfg, tr, va, out, progress=progress.update, on_metrics=on_metrics, should_cancel=should_cancel,
                meta_extra={"job_id": job_id, "data_version": ws.data_version(config.get("train_split", "train"))})
    from seghz.models.checkpoint import read_metadata

    meta = read_metadata(out)
    cid = ws.register_checkpoint(out, {**meta, "scheme": cfg.scheme}, name=config.get("name") or f"retrained {job_id[-6:]}",
                                 parent_id=parent_id, job_id=job_id, note="trained in the app")
    best = res["best_val"] or {}
    return {"checkpoint_id": cid, "val_miou": best.get("miou"), "val_fwiou": best.get("fwiou"), "seconds": res["seconds"]}
