"""SegHZ's GPU-only code paths, checked on a CPU-only machine with small fakes of ``torch.cuda``.

* one device check (:func:`seghz.devices.check_device`) for the CLI, the Predictor, the trainer and the jobs: a GPU
  the machine lacks, a GPU index beyond the visible ones, or a string that is no device is one clear SegHZ error that
  names what asked for it (not torch's "Found no NVIDIA driver" / "invalid device ordinal" / list of device types);
* a torchrun worker's device: ``cuda`` (no index) is ``cuda:<LOCAL_RANK>`` for the trainer and ``predict-scene``
  alike, made the current GPU; the trainer's process group waits an hour, not the backend's default;
* the device → host copier records its event on the *compute device's* stream (not the current device's);
* ``amp=False`` reaches the Predictors / iter_probs that training, refinement and cleaning create;
* cuDNN autotuning on CUDA unless deterministic; the free-memory figure counts torch's cached, unallocated blocks.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from helpers_core import tiny_train_config

from seghz.devices import DeviceError, check_device, cuda_free_bytes, rank_device
from seghz.errors import SegHZError
from seghz.infer import engine
from seghz.infer.engine import Predictor, _Copier

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "checkpoints" / "demo_hz7.safetensors"


def fake_gpus(monkeypatch, n: int) -> list:
    """Pretend torch sees ``n`` GPUs; returns the list of devices ``torch.cuda.set_device`` was called with."""
    calls: list = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(torch.device(d)))
    return calls


class _HostOnlyModel(torch.nn.Module):
    """A model whose ``.to(...)`` is a no-op, so a Predictor can be built "on CUDA" on this CPU-only machine."""

    def __init__(self, nc: int = 3):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, nc, 1)

    def forward(self, x):
        return self.conv(x)

    def to(self, *a, **kw):
        return self


def _samples(n: int = 2, size: int = 32):
    rs = np.random.RandomState(0)
    return [(rs.randint(0, 255, (size, size, 3)).astype(np.uint8), np.full((size, size), i % 7, np.uint8))
            for i in range(n)]


# ------------------------------------------------------------------------------------------------ check_device


@pytest.mark.parametrize(("dev", "gpus", "problem"), [
    ("gpu", 1, "unknown device"),
    ("cuda", 0, "torch sees no CUDA GPU here"),
    ("cuda:0", 0, "torch sees no CUDA GPU here"),
    ("cuda:1", 1, "there is no GPU 1: torch sees 1 GPU(s) here (cuda:0"),
    ("cuda:3", 2, "there is no GPU 3: torch sees 2 GPU(s) here (cuda:0, cuda:1"),
    ("mps", 1, "unknown device"),
])
def test_check_device_names_the_requester_and_the_problem(monkeypatch, dev, gpus, problem):
    fake_gpus(monkeypatch, gpus)
    with pytest.raises(DeviceError) as e:
        check_device(dev, "TrainConfig.device")
    assert isinstance(e.value, SegHZError) and isinstance(e.value, ValueError)
    assert str(e.value).startswith(f"TrainConfig.device {dev}: ")
    assert problem in str(e.value)


def test_check_device_passes_what_the_machine_has(monkeypatch):
    fake_gpus(monkeypatch, 0)
    assert check_device("cpu", "--device") == "cpu"
    assert check_device(None, "--device") is None and check_device("", "--device") is None  # the caller's default
    fake_gpus(monkeypatch, 1)
    assert check_device("cuda:0", "--device") == "cuda:0"
    assert check_device(torch.device("cuda"), "--device") == "cuda"


def test_the_cli_reports_a_missing_gpu_in_one_line(monkeypatch, capsys, tmp_path):
    from seghz.cli import main

    fake_gpus(monkeypatch, 1)
    args = ["predict-scene", "--checkpoint", str(tmp_path / "none.safetensors"), "--input", str(tmp_path / "x.tif"),
            "--output", str(tmp_path / "out.tif")]
    assert main(args + ["--device", "cuda:3"]) == 2
    assert "error: --device cuda:3: there is no GPU 3: torch sees 1 GPU(s) here" in capsys.readouterr().err
    assert main(args + ["--device", "gpu"]) == 2
    assert "error: --device gpu: unknown device" in capsys.readouterr().err


def test_predictor_checks_its_device(monkeypatch):
    fake_gpus(monkeypatch, 0)
    with pytest.raises(DeviceError, match=r"^Predictor device cuda: torch sees no CUDA GPU here"):
        Predictor.from_checkpoint(DEMO, "cuda")  # before: torch's "Found no NVIDIA driver" from the checkpoint load
    with pytest.raises(DeviceError, match=r"^Predictor device gpu: unknown device"):
        Predictor(_HostOnlyModel(), 3, (0.5,) * 3, (0.5,) * 3, device="gpu")
    fake_gpus(monkeypatch, 1)
    with pytest.raises(DeviceError, match="there is no GPU 1"):
        Predictor(_HostOnlyModel(), 3, (0.5,) * 3, (0.5,) * 3, device="cuda:1")


@pytest.mark.parametrize(("dev", "gpus", "problem"), [("cuda", 0, "torch sees no CUDA GPU here"),
                                                      ("cuda:1", 1, "there is no GPU 1"),
                                                      ("gpu", 1, "unknown device")])
def test_train_names_the_config_field_of_a_device_the_machine_lacks(monkeypatch, tmp_path, dev, gpus, problem):
    from seghz.train.trainer import train

    fake_gpus(monkeypatch, gpus)
    with pytest.raises(DeviceError, match=rf"^TrainConfig.device {dev}: {problem}"):
        train(tiny_train_config(device=dev), _samples(), [], tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()


def test_the_refit_job_names_its_device_setting(monkeypatch, tmp_path):
    from seghz.jobs.kinds import refit_job
    from seghz.jobs.runner import ProgressReporter
    from seghz.models.checkpoint import read_metadata
    from seghz.store import Workspace

    ws = Workspace(tmp_path / "ws")
    dst = ws.root / "checkpoints" / "demo.safetensors"
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(DEMO.read_bytes())
    cid = ws.register_checkpoint(dst, {**read_metadata(DEMO), "scheme": "hz7"}, checkpoint_id="demo", name="demo")
    fake_gpus(monkeypatch, 0)
    config = {"checkpoint_id": cid, "device": "cuda"}
    jid = ws.create_job("refit", config)
    with pytest.raises(DeviceError, match=r"^refit job 'device' cuda: torch sees no CUDA GPU here"):
        refit_job(ws, jid, config, ProgressReporter(ws, jid))


# ------------------------------------------------------------------------------------------------ torchrun


def test_rank_device_gives_each_worker_its_local_gpu(monkeypatch):
    calls = fake_gpus(monkeypatch, 2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert rank_device("cuda", "--device") == "cuda:1"
    assert rank_device(None, "--device") == "cuda:1"
    assert rank_device("cuda:0", "--device") == "cuda:0"  # an explicit GPU is kept
    assert calls == [torch.device("cuda:1"), torch.device("cuda:1"), torch.device("cuda:0")]
    assert rank_device("cpu", "--device") == "cpu" and len(calls) == 3  # no set_device for the CPU
    monkeypatch.setenv("LOCAL_RANK", "2")
    with pytest.raises(DeviceError, match=r"LOCAL_RANK=2\) -> cuda:2: there is no GPU 2"):
        rank_device("cuda", "--device")


def _fake_dist(monkeypatch, initialized: bool) -> list:
    import torch.distributed as dist

    inits: list = []
    monkeypatch.setattr(dist, "is_initialized", lambda: initialized)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    monkeypatch.setattr(dist, "init_process_group", lambda *a, **kw: inits.append((a, kw)))
    return inits


def test_the_trainer_uses_the_shared_rule_and_waits_an_hour_for_rank_0(monkeypatch):
    from seghz.train.trainer import _dist_setup

    calls = fake_gpus(monkeypatch, 2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    _fake_dist(monkeypatch, initialized=True)
    dctx, device = _dist_setup(tiny_train_config(device="cuda", ddp=True))
    assert device == "cuda:1" and calls == [torch.device("cuda:1")] and (dctx.world, dctx.rank) == (2, 1)
    inits = _fake_dist(monkeypatch, initialized=False)
    for k, v in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500", "RANK": "1", "WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(k, v)
    _, device = _dist_setup(tiny_train_config(device="cpu", ddp=True))
    assert device == "cpu"
    assert inits == [(("gloo",), {"timeout": datetime.timedelta(hours=1)})]


class _Stop(Exception):
    pass


def test_predict_scene_under_torchrun_puts_cuda_on_the_local_gpu(monkeypatch, tmp_path):
    from seghz.cli import main

    calls = fake_gpus(monkeypatch, 2)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    _fake_dist(monkeypatch, initialized=True)
    seen: list = []

    def from_checkpoint(cls, path, device=None, **kw):
        seen.append(device)
        raise _Stop

    monkeypatch.setattr(Predictor, "from_checkpoint", classmethod(from_checkpoint))
    (tmp_path / "x.png").write_bytes(b"not read")
    args = ["predict-scene", "--checkpoint", str(DEMO), "--input", str(tmp_path / "x.png"), "--output",
            str(tmp_path / "out.tif")]
    for dev, want in (("cuda", "cuda:1"), ("cuda:0", "cuda:0")):
        with pytest.raises(_Stop):
            main(args + ["--device", dev])
        assert seen[-1] == want and calls[-1] == torch.device(want)


# ------------------------------------------------------------------------------------------------ copier


class _FakeStream:
    def __init__(self, device=None, tag: str = "side"):
        self.device, self.tag = torch.device(device) if device is not None else None, tag

    def wait_event(self, ev):
        ev.waited.append(self)

    def synchronize(self):
        pass


class _FakeEvent:
    made: ClassVar[list] = []

    def __init__(self, *a, **kw):
        self.recorded, self.waited = [], []
        _FakeEvent.made.append(self)

    def record(self, stream=None):
        self.recorded.append(stream)


def test_the_copier_records_on_the_compute_devices_stream(monkeypatch):
    _FakeEvent.made = []
    monkeypatch.setattr(torch.cuda, "Stream", lambda device=None, **kw: _FakeStream(device, "side"))
    monkeypatch.setattr(torch.cuda, "Event", _FakeEvent)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: _FakeStream(device, "current"))
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    cp = _Copier(torch.device("cuda:1"))  # pageable outputs: copies from a worker thread
    dst = np.zeros((2, 3), np.float32)
    cp.put(torch.arange(6, dtype=torch.float32).view(2, 3), dst)
    cp.close()
    np.testing.assert_array_equal(dst, np.arange(6).reshape(2, 3))
    (ev,) = _FakeEvent.made
    (stream,) = ev.recorded  # before: record() with no stream = the *current device's* (cuda:0) stream
    assert stream is not None and stream.tag == "current" and stream.device == torch.device("cuda:1")
    assert [s.tag for s in ev.waited] == ["side"] and ev.waited[0].device == torch.device("cuda:1")


# ------------------------------------------------------------------------------------------------ amp


class _Input:  # stands for a batch "moved to CUDA"
    def to(self, *a, **kw):
        return self

    def contiguous(self, **kw):
        return self


@pytest.mark.parametrize("amp", [True, False])
def test_the_predictor_autocasts_only_with_amp(monkeypatch, amp):
    fake_gpus(monkeypatch, 1)
    entered: list = []

    @contextlib.contextmanager
    def autocast(device_type, dtype=None, **kw):
        entered.append((device_type, dtype))
        yield

    monkeypatch.setattr(torch, "autocast", autocast)
    p = Predictor(_HostOnlyModel(), 3, (0.5,) * 3, (0.5,) * 3, device="cuda:0", amp=amp)
    y = p._model_call(_Input(), lambda x: torch.zeros(1, 3, 2, 2, dtype=torch.bfloat16))
    assert y.dtype == torch.float32
    assert entered == ([("cuda", torch.bfloat16)] if amp else [])


def _recording_predictor(seen: list):
    class Rec(Predictor):
        def __post_init__(self):
            seen.append(self.amp)
            super().__post_init__()

    return Rec


def test_training_validates_with_the_runs_amp(monkeypatch, tmp_path):
    from seghz.train import trainer as trainer_mod

    seen: list = []
    monkeypatch.setattr(trainer_mod, "Predictor", _recording_predictor(seen))
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trainer_mod.train(tiny_train_config(amp=False, epochs=1), _samples(), _samples(1), tmp_path / "m.safetensors")
    finally:
        torch.set_num_threads(old)
    assert seen == [False]  # before: no amp field, the validation ran bf16 on CUDA whatever the run's setting


def test_refinement_and_cleaning_pass_amp_on(monkeypatch):
    from seghz.train import clean as clean_mod
    from seghz.train import trainer as trainer_mod
    from seghz.train.refine import iter_probs

    seen: list = []
    monkeypatch.setattr(engine, "Predictor", _recording_predictor(seen))
    img = np.random.RandomState(1).randint(0, 255, (40, 40, 3)).astype(np.uint8)
    ((i, p),) = list(iter_probs(_HostOnlyModel(3), [img], {"mean": (0.5,) * 3, "std": (0.5,) * 3}, "cpu",
                                max_side=32, tile=32, amp=False))  # over max_side: the sliding-window Predictor
    assert i == 0 and p.shape == (3, 40, 40) and seen == [False]

    # cross-fitted cleaning: the held-out judging gets the recipe's amp
    amps: list = []

    def fake_iter_probs(model, images, norm, device, **kw):
        amps.append(kw.get("amp", True))
        return iter(())

    import seghz.models.checkpoint as ck

    monkeypatch.setattr(trainer_mod, "train", lambda *a, **kw: None)
    monkeypatch.setattr(ck, "load_checkpoint", lambda path, device: (None, {}))
    monkeypatch.setattr(clean_mod, "iter_probs", fake_iter_probs)
    cfg = dataclasses.replace(tiny_train_config(amp=False), clean_folds=2)
    clean_mod.crossfit_clean(cfg, _samples(4), device="cpu")
    assert amps == [False, False]


# ------------------------------------------------------------------------------------------------ cuDNN, memory


def test_cudnn_autotunes_on_cuda_unless_deterministic(monkeypatch):
    from seghz.train.trainer import _seed_everything

    fake_gpus(monkeypatch, 1)
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda s: None)
    monkeypatch.setattr(torch, "use_deterministic_algorithms", lambda *a, **kw: None)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    _seed_everything(0, False, cuda=False)
    assert torch.backends.cudnn.benchmark is False  # the CPU: untouched
    Predictor(_HostOnlyModel(), 3, (0.5,) * 3, (0.5,) * 3, device="cpu")
    assert torch.backends.cudnn.benchmark is False
    _seed_everything(0, False, cuda=True)
    assert torch.backends.cudnn.benchmark is True
    _seed_everything(0, True, cuda=True)
    assert torch.backends.cudnn.benchmark is False and torch.backends.cudnn.deterministic is True
    Predictor(_HostOnlyModel(), 3, (0.5,) * 3, (0.5,) * 3, device="cuda:0")  # a deterministic run stays so
    assert torch.backends.cudnn.benchmark is False
    torch.backends.cudnn.deterministic = False
    Predictor(_HostOnlyModel(), 3, (0.5,) * 3, (0.5,) * 3, device="cuda:0")
    assert torch.backends.cudnn.benchmark is True


MB = 1 << 20


def _fake_memory(monkeypatch, free: int, reserved: int, allocated: int, peak_extra: int = 0) -> None:
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda dev=None: (free, 80_000 * MB))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda dev=None: reserved)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda dev=None: allocated)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda dev=None: allocated + peak_extra)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda dev=None: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda dev=None: None)


def test_free_memory_counts_torchs_cached_unallocated_blocks(monkeypatch):
    from seghz.train.augment import default_budget

    fake_gpus(monkeypatch, 1)
    _fake_memory(monkeypatch, free=1000 * MB, reserved=1500 * MB, allocated=500 * MB, peak_extra=100 * MB)
    assert cuda_free_bytes("cuda:0") == 2000 * MB
    assert default_budget("cuda:0") == int(0.4 * 2000 * MB)  # before: 0.4 × 1000 MB
    assert default_budget("cpu") == 0
    p = Predictor(_HostOnlyModel(), 3, (0.5,) * 3, (0.5,) * 3, device="cuda:0", batch_size=None, tile=64)
    monkeypatch.setattr(p, "_model_call", lambda x, fn=None: None)
    assert p.resolve_batch_size() == 12  # 0.6 × 2000 MB / 100 MB per window (before: 0.6 × 1000 MB → 6)


def test_refit_head_called_directly_names_its_device_setting(tmp_path, monkeypatch):
    """A library call of refit_head (not through the job) with a device this machine lacks gets the SegHZ error
    naming RefitConfig.device, before the checkpoint is read."""
    import torch

    from seghz.devices import DeviceError
    from seghz.train.refit import RefitConfig, refit_head

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match=r"RefitConfig\.device cuda: torch sees no CUDA GPU"):
        refit_head(tmp_path / "missing.safetensors", [], tmp_path / "out.safetensors", RefitConfig(device="cuda"))
