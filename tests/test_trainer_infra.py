"""Tests of the trainer's infrastructure: training state + resume, cancel mid-epoch, a full disk while saving,
DDP under torchrun (gloo, 2 CPU processes), the CPU fp32 path, the ``train`` CLI flags, no pickle.

Tiny runs: FPN + mobilenetv3_small_050 (no pretrained weights), 32² crops, a few steps, one CPU thread.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import ddp_train_driver as driver  # tests/ is on sys.path, as for helpers_core
import numpy as np
import pytest
import torch
from helpers_core import REPO, tiny_train_config, torch_one_thread  # noqa: F401 (fixture)

from seghz.models.checkpoint import load_checkpoint, read_metadata
from seghz.train import trainer as trainer_mod
from seghz.train.state import (
    TrainStateError,
    load_train_state,
    read_state_info,
    rng_state,
    save_train_state,
    set_rng_state,
    state_path,
)
from seghz.train.trainer import TrainCancelled, TrainConfig, TrainSaveError, train

pytestmark = pytest.mark.usefixtures("torch_one_thread")

SIZE = 32


def _scene(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rs = np.random.RandomState(seed)
    lbl = np.zeros((SIZE, SIZE), np.uint8)
    for i in range(4):
        lbl[i * 8 : (i + 1) * 8] = (seed * 4 + i) % 7
    lbl[:2, :3] = 255
    img = rs.randint(0, 255, (1, 1, 3)) * 0.5 + lbl[..., None] * 20 + rs.normal(0, 12, (SIZE, SIZE, 3))
    return np.clip(img, 0, 255).astype(np.uint8), lbl


@pytest.fixture(scope="module")
def data():
    return [_scene(s) for s in range(3)], [_scene(10)]


def _cfg(**kw) -> TrainConfig:
    return tiny_train_config(SIZE, **kw)


def _digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _weights(p: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(p))


def _assert_same_weights(a: dict, b: dict, atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for k, v in a.items():
        if v.is_floating_point():
            torch.testing.assert_close(v, b[k], atol=atol, rtol=atol, msg=k)
        else:
            assert torch.equal(v, b[k]), k


# ---------------------------------------------------------------- state file


def test_state_file_roundtrip_without_pickle(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=20, pct_start=0.1)
    for _ in range(3):
        model(torch.randn(2, 3, 8, 8)).sum().backward()
        opt.step()
        sched.step()
    random.seed(3)
    np.random.seed(4)
    torch.manual_seed(5)
    rng = rng_state()
    expect = (random.random(), np.random.rand(), torch.rand(1).item())
    p = save_train_state(state_path(tmp_path / "run.safetensors"), model, opt, sched, {"epoch": 3, "x": [1.5]}, rng)
    assert p.name == "run.state.safetensors" and sorted(os.listdir(tmp_path)) == ["run.state.safetensors"]
    raw = p.read_bytes()
    assert b"\x80\x04" not in raw[:16] and not raw.startswith(b"PK")  # not a pickle / torch.save zip
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    meta = json.loads(header["__metadata__"]["seghz_state"])
    assert meta["format"] == "seghz-train-state/1" and meta["info"] == {"epoch": 3, "x": [1.5]}
    assert "optim/0/exp_avg" in header and "model/1.running_mean" in header
    ts = load_train_state(p)
    model2 = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    model2.load_state_dict(ts.model)
    opt2 = torch.optim.AdamW(model2.parameters(), lr=1e-3)
    sched2 = torch.optim.lr_scheduler.OneCycleLR(opt2, max_lr=1e-3, total_steps=20, pct_start=0.1)
    opt2.load_state_dict(ts.optimizer)  # after building the scheduler (which sets the step-0 lr), as the trainer does
    sched2.load_state_dict(ts.scheduler)
    assert sched2.state_dict() == sched.state_dict()
    for g1, g2 in zip(opt.param_groups, opt2.param_groups):
        assert {k: v for k, v in g1.items() if k != "params"} == {k: v for k, v in g2.items() if k != "params"}
    for p1, p2 in zip(model.parameters(), model2.parameters()):
        for k in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(opt.state[p1][k], opt2.state[p2][k])
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    set_rng_state(ts.rng)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expect
    (tmp_path / "bad.state.safetensors").write_bytes(b"not a state file")
    with pytest.raises(TrainStateError, match="not a SegHZ training state"):
        load_train_state(tmp_path / "bad.state.safetensors")


def test_no_pickle_in_the_trainer_code():
    for name in ("trainer.py", "state.py"):
        text = (REPO / "seghz" / "train" / name).read_text()
        for bad in ("torch.save(", "torch.load(", "import pickle", "broadcast_object_list", "all_gather_object"):
            assert bad not in text, f"{name} uses {bad}"


# ---------------------------------------------------------------- resume / cancel


@pytest.mark.parametrize("ema", [0.0, 0.3])  # 0.3: the checkpoint holds the moving average, the state both
def test_cancel_mid_epoch_keeps_files_and_resume_matches_an_uninterrupted_run(data, tmp_path, ema):
    tr, va = data
    kw = {"epochs": 4, "steps_per_epoch": 2, "consistency": True, "noise_mask": "cos",  # both draw random numbers
          "ema": ema}
    a_out = tmp_path / "a" / "m.safetensors"
    full = train(_cfg(**kw), tr, va, a_out)
    assert [r["epoch"] for r in full["history"]] == [1, 2, 3, 4]
    assert read_state_info(state_path(a_out))["loop"]["finished"] is True

    b_out = tmp_path / "b" / "m.safetensors"
    b_state = state_path(b_out)
    calls = {"n": 0, "ck": None, "st": None}

    def cancel_in_epoch_3() -> bool:  # asked before each step: steps 0-3 are epochs 1-2; cancel before step 5
        calls["n"] += 1
        if calls["n"] == 5:  # start of epoch 3: the files of epoch 2 are on disk
            calls["ck"], calls["st"] = _digest(b_out), _digest(b_state)
        return calls["n"] == 6  # mid-epoch 3, after one of its two steps

    rows = []
    with pytest.raises(TrainCancelled, match=r"cancelled at epoch 3, step 5.*state of epoch 2"):
        train(_cfg(**kw), tr, va, b_out, should_cancel=cancel_in_epoch_3, on_metrics=lambda s, e, r: rows.append(r))
    assert [r["epoch"] for r in rows] == [1, 2]
    assert _digest(b_out) == calls["ck"] and _digest(b_state) == calls["st"]  # untouched by the cancelled epoch
    assert read_state_info(b_state)["loop"]["epoch"] == 2
    load_checkpoint(b_out)  # still a valid checkpoint
    assert sorted(os.listdir(b_out.parent)) == ["m.safetensors", "m.state.safetensors"]  # no temp files

    rows2 = []
    res = train(_cfg(**kw, resume=True), tr, va, b_out, on_metrics=lambda s, e, r: rows2.append(r))
    assert res["resumed_from"] == 2 and [r["epoch"] for r in rows2] == [3, 4]
    assert len(res["history"]) == 4
    for ra, rb in zip(full["history"], res["history"]):
        for k in ("loss", "lr", "val_miou", "val_fwiou", "noise_threshold", "consistency_mse"):
            assert ra[k] == pytest.approx(rb[k], rel=1e-6, abs=1e-7), k
    _assert_same_weights(_weights(state_path(a_out)), _weights(b_state), atol=1e-6)  # last weights + optimizer (+ EMA)
    assert any(k.startswith("ema/") for k in _weights(b_state)) == (ema > 0)
    _assert_same_weights(_weights(a_out), _weights(b_out), atol=1e-6)  # best checkpoint
    assert read_metadata(a_out)["metrics"]["epoch"] == read_metadata(b_out)["metrics"]["epoch"]
    assert all(v.dtype in (torch.float32, torch.int64) for v in _weights(b_out).values())  # CPU: fp32

    # resuming a finished run does nothing; a changed recipe is refused; no state -> from scratch
    again = train(_cfg(**kw), tr, va, b_out, resume=True, on_metrics=lambda *a: pytest.fail("trained again"))
    assert again["history"] == res["history"] and again["resumed_from"] == 4
    with pytest.raises(TrainStateError, match=r"cannot resume.*lr: 0.001 -> 0.002"):
        train(_cfg(**{**kw, "lr": 2e-3}), tr, va, b_out, resume=True)
    fresh = train(_cfg(epochs=1, resume=True), tr, [], tmp_path / "c" / "m.safetensors")
    assert fresh["resumed_from"] is None and len(fresh["history"]) == 1


# ---------------------------------------------------------------- full disk


def _full_disk_on_call(monkeypatch, fail_at: int) -> dict:
    """Make the write of a safetensors file (checkpoints and states: serialised in memory, then written to a temp
    file next to the target) write a partial file and fail with ENOSPC on call ``fail_at`` (1-based)."""
    real = Path.write_bytes
    calls = {"n": 0}

    def write_bytes(self, data):
        if ".safetensors." in self.name and self.name.endswith(".tmp"):
            calls["n"] += 1
            if calls["n"] == fail_at:
                real(self, data[:100])  # what made it to disk before the disk filled up
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    return calls


@pytest.fixture
def rising_scores(monkeypatch):
    seq = iter([0.2, 0.3, 0.4, 0.5, 0.6])
    monkeypatch.setattr(trainer_mod, "evaluate_samples",
                        lambda *a, **k: {"miou": next(seq), "fwiou": 0.1, "oa": 0.5, "per_class": {}})


def test_full_disk_while_writing_the_checkpoint_keeps_the_previous_one(data, tmp_path, monkeypatch, rising_scores):
    tr, va = data
    out = tmp_path / "m.safetensors"
    _full_disk_on_call(monkeypatch, 3)  # epoch 1: checkpoint (1) + state (2); epoch 2: checkpoint (3) fails
    with pytest.raises(TrainSaveError, match=r"checkpoint .*m\.safetensors at epoch 2: no space left on device\. "
                                             r"The previous checkpoint \(epoch 1\) is kept") as ei:
        train(_cfg(epochs=3), tr, va, out)
    assert ei.value.errno == errno.ENOSPC and isinstance(ei.value, OSError)
    assert read_metadata(out)["metrics"]["epoch"] == 1
    load_checkpoint(out)
    assert read_state_info(state_path(out))["loop"]["epoch"] == 1
    assert sorted(os.listdir(tmp_path)) == ["m.safetensors", "m.state.safetensors"]  # the partial temp file is gone


def test_full_disk_while_writing_the_state_keeps_the_previous_state(data, tmp_path, monkeypatch, rising_scores):
    tr, va = data
    out = tmp_path / "m.safetensors"
    _full_disk_on_call(monkeypatch, 4)  # epoch 2: checkpoint (3) written, state (4) fails
    with pytest.raises(TrainSaveError, match=r"training state .* at epoch 2: no space left on device\. The training "
                                             r"state of the last saved epoch is kept"):
        train(_cfg(epochs=3), tr, va, out)
    assert read_metadata(out)["metrics"]["epoch"] == 2
    assert load_train_state(state_path(out)).info["loop"]["epoch"] == 1
    assert sorted(os.listdir(tmp_path)) == ["m.safetensors", "m.state.safetensors"]
    monkeypatch.undo()  # disk freed: resume redoes epoch 2 from the epoch-1 state
    res = train(_cfg(epochs=3), tr, va, out, resume=True)
    assert res["resumed_from"] == 1 and [r["epoch"] for r in res["history"]] == [1, 2, 3]


def test_cli_maps_a_full_disk_to_a_clear_error(tmp_path, monkeypatch, capsys):
    from seghz import cli

    def boom(*a, **k):
        raise TrainSaveError(errno.ENOSPC, "could not write the checkpoint x at epoch 1: no space left on device.")

    monkeypatch.setattr(trainer_mod, "train", boom)
    monkeypatch.setattr("seghz.data.folders.load_folder", lambda *a, **k: [])
    monkeypatch.setattr("seghz.data.folders.holdout_split", lambda *a, **k: {"train": [], "val": [], "test": []})
    rc = cli.main(["train", "--images", str(tmp_path), "--labels", str(tmp_path), "--scheme", "hz7",
                   "--out", str(tmp_path / "m.safetensors"), "--resume", "--no-amp"])
    assert rc == 2 and "no space left on device" in capsys.readouterr().err
    a = cli.build_parser().parse_args(["train", "--images", "i", "--labels", "l", "--scheme", "hz7", "--out", "o"])
    assert (a.resume, a.no_amp, a.no_ddp) == (False, False, False)


# ---------------------------------------------------------------- DDP


def test_batches_do_not_depend_on_the_number_of_processes(data):
    tr, _ = data
    norm = {"mean": [0.5] * 3, "std": [0.5] * 3}
    whole = trainer_mod.slot_batch(tr, [0, 1, 2, 1], [0, 1, 2, 3], 7, 5, SIZE, norm)
    halves = [trainer_mod.slot_batch(tr, [0, 1], [0, 1], 7, 5, SIZE, norm),
              trainer_mod.slot_batch(tr, [2, 1], [2, 3], 7, 5, SIZE, norm)]
    for w, a, b in zip(whole, *halves):
        assert torch.equal(w, torch.cat([a, b]))
    other_step = trainer_mod.slot_batch(tr, [0, 1, 2, 1], [0, 1, 2, 3], 7, 6, SIZE, norm)
    assert not torch.equal(whole[0], other_step[0])


@pytest.mark.parametrize("consistency", [False, True], ids=["ddp-reducer", "manual-allreduce"])
def test_ddp_two_gloo_ranks_match_single_process_at_the_same_global_batch(consistency, tmp_path, monkeypatch):
    """2 ranks × batch 2 with torchrun (gloo) against 1 process × batch 4: disjoint shards, same weights.

    The model is made DDP-comparable by the driver: BatchNorm frozen in eval mode (SyncBatchNorm needs a GPU)
    and no dropout. ``consistency`` runs the model twice per step, which takes the manual gradient all-reduce."""
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    ddp_dir = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SEGHZ_TRAIN_DEBUG_DIR": str(ddp_dir / "debug"),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(Path(__file__).parent / "ddp_train_driver.py"), str(ddp_dir / "m.safetensors"), "--batch", "2",
           "--epochs", "2"] + (["--consistency"] if consistency else [])
    proc = subprocess.run(cmd, check=False, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp_hist = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1])["history"]

    # single process, same global batch (4), same seeds
    real = trainer_mod.build_model
    monkeypatch.setattr(trainer_mod, "build_model", lambda *a, **k: driver.ddp_friendly(real(*a, **k)))
    monkeypatch.setenv("SEGHZ_TRAIN_DEBUG_DIR", str(tmp_path / "single" / "debug"))
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    scenes = driver.scenes()
    single = train(driver.config(4, 2, consistency=consistency), scenes[:8], scenes[8:], tmp_path / "single" / "m.safetensors")

    ranks = [json.loads((ddp_dir / "debug" / f"rank{r}.json").read_text()) for r in (0, 1)]
    ref = json.loads((tmp_path / "single" / "debug" / "rank0.json").read_text())
    assert [r["world_size"] for r in ranks] == [2, 2] and ref["world_size"] == 1
    assert len(ranks[0]["steps"]) == len(ranks[1]["steps"]) == len(ref["steps"]) == 4
    for s0, s1, sr in zip(ranks[0]["steps"], ranks[1]["steps"], ref["steps"]):
        assert len(s0["indices"]) == len(s1["indices"]) == 2
        assert not set(s0["positions"]) & set(s1["positions"])
        assert not set(s0["indices"]) & set(s1["indices"])  # 8 samples, global batch 4: one pass = 2 steps
        assert s0["indices"] + s1["indices"] == sr["indices"]
    for epoch in (1, 2):  # each epoch is one pass over the 8 samples, split between the ranks
        seen = [sorted(i for s in rk["steps"] if s["epoch"] == epoch for i in s["indices"]) for rk in ranks]
        assert not set(seen[0]) & set(seen[1]) and sorted(seen[0] + seen[1]) == list(range(8))

    for a, b in zip(ddp_hist, single["history"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
        assert a["val_miou"] == pytest.approx(b["val_miou"], abs=1e-3)
    # only rank 0 wrote files; the final weights match within tolerance
    assert sorted(p.name for p in ddp_dir.iterdir()) == ["debug", "m.safetensors", "m.state.safetensors"]
    wd, ws = _weights(state_path(ddp_dir / "m.safetensors")), _weights(state_path(tmp_path / "single" / "m.safetensors"))
    model_keys = [k for k in ws if k.startswith("model/")]
    _assert_same_weights({k: wd[k] for k in model_keys}, {k: ws[k] for k in model_keys}, atol=1e-4)
    assert read_state_info(state_path(ddp_dir / "m.safetensors"))["world_size"] == 2


def test_cpu_trains_channels_last_in_fp32_and_saves_ordinary_tensors(data, tmp_path, monkeypatch):
    """On the CPU the network trains in fp32 with channels_last weights (1.3–1.75× faster steps on the dev CPU,
    docs/benchmarks.md); the checkpoint still holds plain contiguous fp32 tensors equal to the trained weights."""
    built = []
    real_build = trainer_mod.build_model

    def recording_build(*args, **kw):
        built.append(real_build(*args, **kw))
        return built[-1]

    monkeypatch.setattr(trainer_mod, "build_model", recording_build)
    out = tmp_path / "m.safetensors"
    train(_cfg(epochs=1, steps_per_epoch=2), *data, out)
    (model,) = built
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1)
             and m.groups == 1 and m.in_channels > 1]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) and not c.weight.is_contiguous()
                         for c in convs)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    saved = _weights(out)
    assert all(v.is_contiguous() for v in saved.values())
    state = model.state_dict()
    for k, v in saved.items():
        torch.testing.assert_close(v, state[k].detach().contiguous(), atol=0, rtol=0, msg=k)


def test_one_cycle_schedule_works_for_every_run_length_including_ten_steps(data, tmp_path):
    """torch's OneCycleLR divided by zero for a 10-step run with a 10 % warm-up (it ends at step 0.1·10 − 1 = 0):
    a 2 × 5-step retrain crashed before its first step. Every length from 1 to 300 now schedules a full cycle."""
    from seghz.train.trainer import warmup_fraction

    for total in range(1, 301):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=total, pct_start=warmup_fraction(total))
        lrs = [sched.get_last_lr()[0]]
        for _ in range(total - 1):
            opt.step()
            sched.step()
            lrs.append(sched.get_last_lr()[0])
        assert all(np.isfinite(lrs)) and max(lrs) <= 1.0 + 1e-9, total
        if total >= 2:
            assert lrs[-1] < max(lrs), total  # it anneals
        if total >= 10:
            assert lrs[0] < max(lrs), total  # and warms up first (shorter runs start at the top of the cycle)
    assert warmup_fraction(10) == 0.2 and warmup_fraction(11) == warmup_fraction(9) == warmup_fraction(2100) == 0.1
    res = train(_cfg(epochs=2, steps_per_epoch=5), *data, tmp_path / "ten.safetensors")
    assert [r["epoch"] for r in res["history"]] == [1, 2]
    # peaked in epoch 1, annealed by the end (lr: the epoch's mean rate; lr_end: its last step's)
    assert res["history"][-1]["lr_end"] < 1e-3 * 0.1 < res["history"][0]["lr"]
