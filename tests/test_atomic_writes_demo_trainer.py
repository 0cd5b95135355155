"""The trainer's debug record and the demo GeoTIFF are written the one SegHZ way (``seghz.data.io.atomic_target``):
a failure in the middle of a write leaves the previous file as it was and no temporary file behind."""
from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import pytest

from seghz.errors import WriteError


def _enospc(what) -> OSError:
    return OSError(errno.ENOSPC, "No space left on device", str(what))


# ----------------------------------------------------------------------------- trainer: SEGHZ_TRAIN_DEBUG_DIR record


def test_trainer_debug_record_failing_mid_write_keeps_the_previous_one(tmp_path, monkeypatch):
    from seghz.train import trainer

    folder = tmp_path / "debug"
    monkeypatch.setenv(trainer.DEBUG_ENV, str(folder))
    dctx = trainer._Dist()
    first = [{"epoch": 0, "crops": [1, 2]}]
    trainer._write_debug(dctx, first, 4, "cpu")
    dst = folder / "rank0.json"
    before = dst.read_bytes()
    assert json.loads(before)["steps"] == first and json.loads(before)["global_batch"] == 4

    real_bytes, real_text = Path.write_bytes, Path.write_text

    def half_bytes(self, data):
        real_bytes(self, data[: len(data) // 2])  # what got out before the disk filled up
        raise _enospc(self)

    def half_text(self, data, *a, **k):
        real_text(self, data[: len(data) // 2], *a, **k)
        raise _enospc(self)

    monkeypatch.setattr(Path, "write_bytes", half_bytes)
    monkeypatch.setattr(Path, "write_text", half_text)
    with pytest.raises(OSError, match="No space left on device") as ei:
        trainer._write_debug(dctx, first + [{"epoch": 1, "crops": list(range(500))}], 4, "cpu")
    assert dst.read_bytes() == before  # the previous record is whole
    assert sorted(f.name for f in folder.iterdir()) == ["rank0.json"]  # no temporary file left
    assert isinstance(ei.value, WriteError) and "rank0.json" in str(ei.value)  # the path is named
    monkeypatch.undo()
    monkeypatch.setenv(trainer.DEBUG_ENV, str(folder))
    trainer._write_debug(dctx, first + [{"epoch": 1}], 4, "cpu")  # space is back: the write goes through
    assert json.loads(dst.read_text())["steps"][-1] == {"epoch": 1}
    assert sorted(f.name for f in folder.iterdir()) == ["rank0.json"]


# ------------------------------------------------------------------------------------------------ demo GeoTIFF


class _FailingWriter:
    """A rasterio dataset open for writing whose pixel write gets one band out, then finds the disk full."""

    def __init__(self, ds):
        self._ds = ds

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._ds.__exit__(*exc)

    def write(self, arr, *a, **k):
        self._ds.write(np.asarray(arr)[0], 1)
        raise _enospc(self._ds.name)

    def __getattr__(self, name):
        return getattr(self._ds, name)


@pytest.mark.parametrize("previous", [True, False])
def test_demo_geotiff_failing_mid_write_keeps_the_previous_file(tmp_path, monkeypatch, previous):
    import rasterio

    from seghz.data.io import read_image
    from seghz.demo import generate_scene, write_demo_geotiff

    out = tmp_path / "scene" / "image.tif"
    old, _ = generate_scene(64, 1)
    new, _ = generate_scene(64, 2)
    out.parent.mkdir(parents=True)
    if previous:
        write_demo_geotiff(out, old)
        before = out.read_bytes()
    real_open = rasterio.open

    def failing_open(fp, mode="r", *a, **k):
        ds = real_open(fp, mode, *a, **k)
        return _FailingWriter(ds) if mode == "w" else ds

    monkeypatch.setattr(rasterio, "open", failing_open)
    with pytest.raises(OSError, match="No space left on device"):
        write_demo_geotiff(out, new)
    monkeypatch.undo()
    if previous:
        assert out.read_bytes() == before
        assert np.array_equal(read_image(out), old)
        assert sorted(f.name for f in out.parent.iterdir()) == ["image.tif"]  # no temporary file left
    else:
        assert not out.exists()
        assert list(out.parent.iterdir()) == []
    write_demo_geotiff(out, new)  # and the next write goes through
    assert np.array_equal(read_image(out), new)
    assert sorted(f.name for f in out.parent.iterdir()) == ["image.tif"]
