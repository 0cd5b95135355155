"""Fault suite: kill -9 during checkpoint writes, the app server killed while a job runs, and a full disk during
label saves, checkpoint saves and mask exports.

Covered elsewhere and not repeated here: kill -9 during label saves and two processes saving the same scene
(tests/test_label_store.py), a killed job *worker* becoming ``died`` (tests/test_jobs.py).
"""
from __future__ import annotations

import errno
import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers_core import wait_for

from seghz.classes import get_scheme
from seghz.data.io import read_index_mask, write_index_mask, write_rgb
from seghz.errors import WriteError
from seghz.jobs import refresh_job_states
from seghz.jobs.runner import pid_alive
from seghz.models.checkpoint import read_metadata, save_checkpoint, scheme_meta
from seghz.store import Workspace

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"
ENV = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1",
           PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), str(TESTS), os.environ.get("PYTHONPATH")])))
H, W = 24, 32


def _tensor_digest(path: Path) -> str:
    from safetensors.torch import load_file

    t = load_file(str(path))
    h = hashlib.sha256()
    for k in sorted(t):
        h.update(k.encode())
        h.update(t[k].numpy().tobytes())
    return h.hexdigest()


# ------------------------------------------------------------------------------------------ kill -9 of checkpoints

_CKPT_CHURN = """
import hashlib, os, pathlib, sys, time
import numpy as np, torch
from seghz.models.checkpoint import save_checkpoint
from seghz.store import Workspace

class Tiny(torch.nn.Module):
    def __init__(self, seed):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = torch.nn.Parameter(torch.randn(256, 1024, generator=g))  # 1 MiB: a write takes a while
        self.b = torch.nn.Parameter(torch.randn(7, generator=g))

def churn(root, ack, start):
    ws = Workspace(root)
    rng = np.random.default_rng(start)
    _fsync = os.fsync
    def slow_fsync(fd):  # widen the window between writing the temp file, renaming it and committing the row
        time.sleep(float(rng.random()) * 0.01)
        _fsync(fd)
    os.fsync = slow_fsync
    pathlib.Path(ack + ".ready").write_text(str(os.getpid()))
    i = start
    while True:
        model = Tiny(i)
        h = hashlib.sha256()
        for k, v in sorted(model.state_dict().items()):
            h.update(k.encode()); h.update(v.detach().numpy().tobytes())
        digest = h.hexdigest()
        # a registered scheme's name: save_checkpoint stores its full block (the row keeps the name)
        meta = {"arch": "Tiny", "encoder": "none", "scheme": "hz7", "num_classes": 7, "step": i}
        with open(ack + ".intent", "a") as f:  # every state that may ever reach latest.safetensors
            f.write(f"{digest}\\n"); f.flush(); os.fsync(f.fileno())
        p = save_checkpoint(pathlib.Path(root) / "checkpoints" / f"c{i:04d}.safetensors", model, meta)
        save_checkpoint(pathlib.Path(root) / "checkpoints" / "latest.safetensors", model, meta)
        ws.register_checkpoint(p, meta, checkpoint_id=f"c{i:04d}")
        with open(ack, "a") as f:
            f.write(f"c{i:04d} {digest}\\n"); f.flush(); os.fsync(f.fileno())
        i += 1

# torch is imported once; each round forks a writer that the test kills with SIGKILL
for line in sys.stdin:
    root, ack, start = line.split()
    pid = os.fork()
    if pid == 0:
        try:
            churn(root, ack, int(start))
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    print(os.WIFSIGNALED(status) and os.WTERMSIG(status), flush=True)
"""


def test_kill9_during_checkpoint_writes_leaves_no_torn_checkpoint(tmp_path):
    ws = Workspace(tmp_path / "ws")
    ack = tmp_path / "acks.txt"
    ready = Path(str(ack) + ".ready")
    rng = random.Random(99)
    acked: dict[str, str] = {}
    forker = subprocess.Popen([sys.executable, "-c", _CKPT_CHURN], env=ENV, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for it in range(4):
            ready.unlink(missing_ok=True)
            forker.stdin.write(f"{ws.root} {ack} {1000 * it}\n")
            forker.stdin.flush()
            deadline = time.monotonic() + 90
            while not (ready.exists() and ready.read_text()):
                assert forker.poll() is None, forker.communicate()
                assert time.monotonic() < deadline
                time.sleep(0.005)
            time.sleep(rng.uniform(0.2, 0.8))
            os.kill(int(ready.read_text()), signal.SIGKILL)
            assert forker.stdout.readline().strip() == str(int(signal.SIGKILL))

            for line in ack.read_text().splitlines(keepends=True):
                if line.endswith("\n"):  # a line cut by the kill was never acknowledged
                    cid, digest = line.split()
                    acked[cid] = digest
            intents = set(Path(str(ack) + ".intent").read_text().split())
            reopened = Workspace(ws.root)
            with reopened.connect() as conn:
                assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            registered = {c.id: c for c in reopened.list_checkpoints()}
            assert set(acked) <= set(registered)
            for cid, digest in acked.items():  # every acknowledged checkpoint loads and holds what was saved
                path = reopened.checkpoint_path(cid)
                meta = read_metadata(path)
                assert meta["num_classes"] == 7 and meta["scheme"] == scheme_meta(get_scheme("hz7"))
                assert _tensor_digest(path) == digest, (it, cid)
            for cid in registered:  # registered but not yet acknowledged: still whole (file renamed before the row)
                read_metadata(reopened.checkpoint_path(cid))
            ck_dir = ws.root / "checkpoints"
            visible = sorted(ck_dir.glob("*.safetensors"))
            for f in visible:  # nothing that looks like a checkpoint is torn: orphans without a row are whole too
                read_metadata(f)
                assert _tensor_digest(f) in intents, f.name
            leftovers = [f.name for f in ck_dir.iterdir() if f not in visible]
            assert all(n.startswith(".") and n.endswith(".tmp") for n in leftovers), leftovers  # hidden temps only
    finally:
        forker.stdin.close()
        forker.wait(timeout=30)
    assert len(acked) >= 4, acked  # the loop really saved between kills
    # the next save still works
    from torch import nn

    out = save_checkpoint(ws.root / "checkpoints" / "after.safetensors", nn.Linear(2, 2),
                          {"arch": "Tiny", "encoder": "none", "scheme": "hz7", "num_classes": 7})
    meta = read_metadata(out)
    assert meta["scheme"] == scheme_meta(get_scheme("hz7"))  # the one shape: the block, also for a name given
    Workspace(ws.root).register_checkpoint(out, {**meta, "scheme": meta["scheme"]["name"]}, checkpoint_id="after")
    assert Workspace(ws.root).get_checkpoint("after").scheme == "hz7"


# ------------------------------------------------------------------------------------ the app server is killed

_SERVER = """
import sys, time
from seghz.jobs import submit_job
from seghz.store import Workspace
ws = Workspace(sys.argv[1])
print(submit_job(ws, "toy_loop", {"seconds": float(sys.argv[2])}), flush=True)
time.sleep(600)  # a Streamlit server idles here until it is killed
"""


def test_job_survives_the_app_server_being_killed(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGHZ_JOB_MODULES", "jobkinds_toy")
    env = dict(ENV, SEGHZ_JOB_MODULES="jobkinds_toy")
    root = tmp_path / "ws"
    Workspace(root)
    server = subprocess.Popen([sys.executable, "-c", _SERVER, str(root), "2"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    ws = None
    try:
        job_id = server.stdout.readline().strip()
        assert job_id, server.stderr.read()
        ws = Workspace(root)
        wait_for(lambda: ws.get_job(job_id).status == "running", "the job to start")
        os.kill(server.pid, signal.SIGKILL)
        server.wait(timeout=30)
        assert server.returncode == -signal.SIGKILL

        fresh = Workspace(root)  # what a restarted server sees
        job = fresh.get_job(job_id)
        assert job.status == "running" and pid_alive(job.pid, job.id)
        assert refresh_job_states(fresh) == []  # the worker is alive: not marked died
        assert fresh.get_job(job_id).status == "running"
        job = wait_for(lambda: (j := fresh.get_job(job_id)).status not in ("queued", "running") and j,
                        "the job to finish after its server died", 40)
        assert job.status == "done", job.message
        assert job.result["iterations"] > 0 and job.progress == 1.0
        assert refresh_job_states(fresh) == []
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        if ws is not None:
            for j in ws.list_jobs():
                if j.pid and pid_alive(j.pid, j.id):
                    os.kill(j.pid, signal.SIGKILL)


# ------------------------------------------------------------------------------------------------ disk full

def _enospc(path) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def _no_temp_files(folder: Path) -> list[str]:
    return [f.name for f in folder.rglob("*") if ".tmp" in f.name]


@pytest.fixture
def scene_ws(tmp_path) -> Workspace:
    w = Workspace(tmp_path / "ws")
    rng = np.random.default_rng(0)
    img = w.root / "scenes" / "s" / "image.png"
    write_rgb(img, rng.integers(0, 255, (H, W, 3), dtype=np.uint8))
    lbl = w.root / "scenes" / "s" / "label.png"
    write_index_mask(lbl, rng.integers(0, 7, (H, W), dtype=np.uint8))
    w.add_scene("S", img, "hz7", label_path=lbl, split="train", scene_id="s")
    return w


def _half_write_then_enospc(monkeypatch):
    """Path.write_bytes writes half its data and then fails as on a full disk (the low-level write of
    ``atomic_write_bytes``)."""
    real = Path.write_bytes

    def full(self, data):
        real(self, bytes(data)[: len(data) // 2])
        raise _enospc(self)

    monkeypatch.setattr(Path, "write_bytes", full)


def test_disk_full_during_label_save(scene_ws, monkeypatch):
    ws = scene_ws
    m1 = ws.effective_label("s")
    m1[0:3, 0:3] = (m1[0:3, 0:3] + 1) % 7
    assert ws.save_label_version("s", m1, 0, "ann", "brush") == 1
    m2 = m1.copy()
    m2[5:9, 5:9] = (m2[5:9, 5:9] + 1) % 7
    with monkeypatch.context() as mp:
        _half_write_then_enospc(mp)
        with pytest.raises(WriteError) as ei:
            ws.save_label_version("s", m2, 1, "ann", "brush")
    msg = str(ei.value)
    assert "v0002.npz" in msg and "No space left on device" in msg, msg
    assert isinstance(ei.value, OSError) and ei.value.errno == errno.ENOSPC
    fresh = Workspace(ws.root)
    assert fresh.latest_label_version("s") == 1  # no row for the failed save
    np.testing.assert_array_equal(fresh.effective_label("s"), m1)
    assert not (ws.root / "labels/s/v0002.npz").exists()
    assert _no_temp_files(ws.root) == []
    assert fresh.save_label_version("s", m2, 1, "ann", "brush") == 2  # space is back: the save goes through
    np.testing.assert_array_equal(fresh.effective_label("s"), m2)


def test_disk_full_during_checkpoint_save(tmp_path, monkeypatch):
    from torch import nn

    meta = {"arch": "Tiny", "encoder": "none", "scheme": "hz7", "num_classes": 7}
    path = tmp_path / "ck" / "model.safetensors"
    save_checkpoint(path, nn.Linear(4, 3), meta)
    before = path.read_bytes()
    real = Path.write_bytes

    def full(self, data):
        real(self, data[:100])  # what got out before the disk filled up
        raise _enospc(self)

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(WriteError, match=r"model\.safetensors: No space left on device; the previous file is unchanged"):
        save_checkpoint(path, nn.Linear(4, 3), meta)
    with pytest.raises(WriteError, match=r"other\.safetensors.*nothing was written"):
        save_checkpoint(tmp_path / "ck" / "other.safetensors", nn.Linear(4, 3), meta)
    assert path.read_bytes() == before
    assert read_metadata(path)["num_classes"] == 7 and read_metadata(path)["scheme"]["name"] == "hz7"
    assert sorted(f.name for f in (tmp_path / "ck").iterdir()) == ["model.safetensors"]


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_disk_full_during_mask_export(scene_ws, monkeypatch, tmp_path, suffix):
    ws = scene_ws
    out = tmp_path / "export" / f"mask{suffix}"
    ws.export_label("s", out)
    before = out.read_bytes()
    m1 = ws.effective_label("s")
    m1[0:3, 0:3] = (m1[0:3, 0:3] + 1) % 7
    ws.save_label_version("s", m1, 0, "ann", "brush")
    if suffix == ".png":
        _half_write_then_enospc(monkeypatch)
    else:  # GDAL writes the GeoTIFF; make it fail the way it does when the disk fills up
        import rasterio
        from rasterio.errors import RasterioIOError

        real_open = rasterio.open

        def full(fp, mode="r", *a, **kw):
            if mode == "w":
                Path(fp).write_bytes(b"II*\x00partial")
                raise RasterioIOError(f"{fp}: Free disk space available is 0 bytes, whereas 4096 are at least necessary")
            return real_open(fp, mode, *a, **kw)

        monkeypatch.setattr(rasterio, "open", full)
    with pytest.raises(WriteError) as ei:
        ws.export_label("s", out)
    assert f"mask{suffix}" in str(ei.value) and "previous file is unchanged" in str(ei.value)
    assert out.read_bytes() == before
    monkeypatch.undo()
    assert sorted(f.name for f in out.parent.iterdir()) == [out.name]
    if suffix == ".png":
        assert read_index_mask(out).shape == (H, W)
