"""Driver for the DDP trainer test (tests/test_trainer_infra.py), also importable for the single-process reference.

Run under torchrun::

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/ddp_train_driver.py OUT --batch 2 --epochs 2

It trains the tiny FPN + mobilenetv3_small_050 on synthetic scenes without ignore pixels, made DDP-comparable by
:func:`ddp_friendly`: BatchNorm frozen in eval mode (per-sample affine, so per-rank batches give the same result
as one big batch; SyncBatchNorm needs a GPU) and dropout removed. With ``SEGHZ_TRAIN_DEBUG_DIR`` set, each rank
records the sample indices it trained on.
"""
from __future__ import annotations

import argparse
import json
import types

import numpy as np
import torch
from torch import nn

SIZE = 32


def scenes(n: int = 9, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` 32×32 scenes with hz7 bands, every pixel labelled (equal pixel counts per rank = same loss mean)."""
    out = []
    palette = np.array([[30, 60, 170], [20, 120, 220], [12, 150, 210], [6, 160, 100], [220, 220, 220],
                        [250, 200, 50], [250, 250, 10]], np.float64)
    for s in range(n):
        rs = np.random.RandomState(seed * 100 + s)
        lbl = np.zeros((SIZE, SIZE), np.uint8)
        for i in range(4):
            lbl[i * 8 : (i + 1) * 8] = (s * 4 + i) % 7
        img = palette[lbl] + rs.normal(0, 12, (SIZE, SIZE, 3))
        out.append((np.clip(img, 0, 255).astype(np.uint8), lbl))
    return out


def _frozen_train(self, mode: bool = True):
    nn.Module.train(self, False)
    return self


def ddp_friendly(model: nn.Module) -> nn.Module:
    """BatchNorm layers stay in eval mode (running stats 0/1: a fixed affine map) and dropout becomes identity."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.train = types.MethodType(_frozen_train, m)
            m.eval()
    for name, m in list(model.named_modules()):
        for cname, child in list(m.named_children()):
            if isinstance(child, nn.modules.dropout._DropoutNd):
                setattr(m, cname, nn.Identity())
    return model


def patch_trainer() -> None:
    """Make the trainer build DDP-friendly models."""
    from seghz.train import trainer

    real = trainer.build_model
    if getattr(real, "_ddp_friendly", False):
        return

    def build(*a, **kw):
        return ddp_friendly(real(*a, **kw))

    build._ddp_friendly = True  # type: ignore[attr-defined]
    trainer.build_model = build


def config(batch: int, epochs: int, **kw):
    from seghz.train.trainer import TrainConfig

    base = {"scheme": "hz7", "arch": "FPN", "encoder": "tu-mobilenetv3_small_050", "encoder_weights": None,
            "epochs": epochs, "batch_size": batch, "crop_size": SIZE, "steps_per_epoch": 2, "tile_size": SIZE,
            "device": "cpu", "class_weights": "none", "dice": False, "lr": 1e-3}
    base.update(kw)
    return TrainConfig(**base)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--batch", type=int, default=2, help="per-process batch")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--consistency", action="store_true")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    patch_trainer()
    from seghz.train.trainer import train

    data = scenes()
    res = train(config(a.batch, a.epochs, consistency=a.consistency), data[:8], data[8:], a.out)
    import os

    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({"history": res["history"]}))
    return 0


if __name__ == "__main__":
    from seghz.cli import end_process

    end_process(main())  # a torchrun worker leaves without the C++ teardown that could abort it (see end_process)
