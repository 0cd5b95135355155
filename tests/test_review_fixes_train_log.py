"""``train``'s output: one absent-class warning naming the split (no raw UserWarning with a source line), and the
learning rate each epoch actually used.

Before: a ``UserWarning`` from ``trainer.py:688`` leaked its file and line; the absent-class warning came twice (the
progress line, cut to 60 characters by the CLI, and the UserWarning), so the two class lists looked different; and the
logged ``lr`` was the scheduler's rate *after* the epoch -- for a 2 x 2-step run both epochs said 0.000357, the rate
one step past the end of the schedule.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from helpers_core import tiny_train_config, torch_one_thread  # noqa: F401 (fixture)

from seghz.classes import get_scheme
from seghz.train.trainer import absent_classes_message, train, warmup_fraction

pytestmark = pytest.mark.usefixtures("torch_one_thread")
SIZE = 32
HZ7 = get_scheme("hz7").names


def _scene(seed: int, classes) -> tuple[np.ndarray, np.ndarray]:
    rs = np.random.RandomState(seed)
    lbl = np.zeros((SIZE, SIZE), np.uint8)
    for i in range(4):
        lbl[i * 8:(i + 1) * 8] = classes[(seed + i) % len(classes)]
    img = lbl[..., None] * 30 + rs.normal(0, 10, (SIZE, SIZE, 3))
    return np.clip(img, 0, 255).astype(np.uint8), lbl


def test_one_warning_naming_the_split_and_the_lr_each_epoch_used(tmp_path):
    tr = [_scene(s, (0, 1, 2)) for s in range(3)]  # hz7 classes 3..6 have no training pixel
    va = [_scene(9, (0, 3))]  # class 3 is in the validation labels only
    said: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = train(tiny_train_config(SIZE, epochs=2, steps_per_epoch=2, class_weights="enet"), tr, va,
                    tmp_path / "m.safetensors", progress=lambda f, m: said.append(m))
    absent = [w for w in caught if "absent" in str(w.message)]
    assert absent == [], [f"{w.filename}:{w.lineno}: {w.message}" for w in absent]  # no raw UserWarning
    warn = [m for m in said if m.startswith("warning:") and "classes" in m]
    assert len(warn) == 1, warn
    msg = warn[0]
    assert msg.startswith("warning: 4 of 7 classes have no pixel in the training split's labels (3 sample(s))")
    assert msg.split("learn them: ")[1].split(";")[0] == ", ".join(HZ7[3:])  # the whole list, in class order
    assert f"the validation split's labels hold {HZ7[3]} (their validation IoU will be 0)" in msg

    # the lr rows: what the steps used, from the same OneCycle schedule
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=4, pct_start=warmup_fraction(4))
    used = []
    for _ in range(4):
        used.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    h = res["history"]
    assert [r["lr_start"] for r in h] == pytest.approx([used[0], used[2]])
    assert [r["lr_end"] for r in h] == pytest.approx([used[1], used[3]])
    assert [r["lr"] for r in h] == pytest.approx([np.mean(used[:2]), np.mean(used[2:])])
    assert h[0]["lr"] != pytest.approx(h[1]["lr"])  # no longer the same after-the-schedule value twice
    assert h[-1]["lr"] != pytest.approx(sched.get_last_lr()[0])


def test_absent_message_without_validation_and_with_every_class():
    sch = get_scheme("hz7")
    f = np.array([0.5, 0.5, 0, 0, 0, 0, 0])
    assert absent_classes_message(np.ones(7) / 7, [], sch, 3) is None
    msg = absent_classes_message(f, [], sch, 2)
    assert "validation" not in msg and msg.endswith(", ".join(HZ7[2:]))
    none_val = absent_classes_message(f, [_scene(0, (0, 1))], sch, 2)
    assert none_val.endswith("the validation split's labels hold none of them either")
