"""The streaming core of the engine: window rows, bounded buffers, row shards, compile and automatic batch size."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers_core import torch_one_thread  # noqa: F401 (fixture)
from hypothesis import given, settings
from hypothesis import strategies as st

from seghz.infer.engine import Predictor, auto_batch_size, compiler_available, shard_rows, sliding_windows, window_rows

C = 3
pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(5, C, 3, padding=1)).eval()


def _image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@settings(max_examples=30, deadline=None)
@given(h=st.integers(1, 90), tile=st.integers(8, 64), overlap=st.floats(0, 0.8), world=st.integers(1, 6))
def test_window_rows_and_shards(h, tile, overlap, world):
    rs = window_rows(h, tile, overlap)
    assert rs == sorted({r for r, *_ in sliding_windows(h, 5, tile, overlap)})
    spans = [shard_rows(h, tile, overlap, r, world) for r in range(world)]
    assert spans[0][0] == 0 and spans[-1][1] == h and all(a[1] == b[0] for a, b in zip(spans, spans[1:]))


def test_stream_reads_one_window_row_at_a_time_and_yields_every_row_once():
    img = _image(70, 50)
    reads = []

    def read(a, b):
        reads.append((a, b))
        return img[a:b], None

    pr = Predictor(_model(), C, (0.5,) * 3, (0.5,) * 3, tile=32, overlap=0.25, device="cpu")
    strips = list(pr.stream(70, 50, read, "flip", proba=True))
    assert reads == [(r, r + 32) for r in window_rows(70, 32, 0.25)]
    rows = [(s.y0, s.y1) for s in strips]
    assert rows[0][0] == 0 and rows[-1][1] == 70 and all(a[1] == b[0] for a, b in zip(rows, rows[1:]))
    whole = pr.predict_proba(img, "flip")
    assert np.concatenate([s.proba for s in strips], 1).tobytes() == whole.tobytes()


def test_stream_checks_what_read_returns_and_rows():
    pr = Predictor(_model(), C, (0.5,) * 3, (0.5,) * 3, tile=16, device="cpu")
    with pytest.raises(ValueError, match="expected"):
        list(pr.stream(40, 40, lambda a, b: (np.zeros((b - a, 39, 3), np.uint8), None)))
    with pytest.raises(ValueError, match="rows"):
        list(pr.stream(40, 40, lambda a, b: (np.zeros((b - a, 40, 3), np.uint8), None), rows=(10, 50)))


def test_auto_batch_size():
    assert auto_batch_size(10 * 2**30, 2**30) == 6
    assert auto_batch_size(2**20, 2**30) == 1  # never below one
    assert auto_batch_size(2**40, 2**20) == 64  # capped
    pr = Predictor(_model(), C, (0.5,) * 3, (0.5,) * 3, tile=16, batch_size=None, device="cpu")
    assert pr.resolve_batch_size() == 4
    with pytest.raises(ValueError, match="batch_size"):
        Predictor(_model(), C, (0.5,) * 3, (0.5,) * 3, batch_size=0, device="cpu")


def test_eager_batches_are_equal_sized():
    sizes = []
    m = _model()
    m.register_forward_hook(lambda mod, i, o: sizes.append(i[0].shape[0]))
    Predictor(m, C, (0.5,) * 3, (0.5,) * 3, tile=32, batch_size=4, device="cpu").predict_proba(_image(40, 128))
    assert sizes == [3, 2, 3, 2]  # 5 windows per row at most 4 a batch: 3 + 2, not 4 + 1


def test_compile_failure_falls_back_to_eager(monkeypatch):
    img = _image(64, 64)
    ref = Predictor(_model(), C, (0.5,) * 3, (0.5,) * 3, tile=32, device="cpu").predict_proba(img, "d4")

    def broken(model, **kw):
        def fn(x):
            raise RuntimeError("no C++ compiler (test)")
        return fn

    monkeypatch.setattr(torch, "compile", broken)
    pr = Predictor(_model(), C, (0.5,) * 3, (0.5,) * 3, tile=32, device="cpu", compile=True)
    with pytest.warns(UserWarning, match="torch.compile failed"):
        got = pr.predict_proba(img, "d4")
    assert "no C++ compiler" in pr.compile_error
    np.testing.assert_array_equal(got, ref)


def _record_compiled_shapes(monkeypatch) -> list:
    """Replace torch.compile by a pass-through that records the input shape of every compiled call."""
    shapes = []

    def fake_compile(model, **kw):
        def fn(x):
            shapes.append(tuple(x.shape))
            return model(x)
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    return shapes


def test_compiled_batches_are_padded_to_one_shape(monkeypatch):
    shapes = _record_compiled_shapes(monkeypatch)
    img = _image(40, 128)  # 2 window rows × 5 windows of 32 at overlap 0.25
    pr = Predictor(_model(), C, (0.5,) * 3, (0.5,) * 3, tile=32, batch_size=4, device="cpu", compile=True)
    got = pr.predict_proba(img)  # 5 inputs per row: a batch of 4 and one of 1 padded to 4 (one compiled shape)
    assert set(shapes) == {(4, 3, 32, 32)} and len(shapes) == 4
    pr.predict_proba(_image(32, 32), "d4")  # 8 views of one window: two batches of 4, no new shape
    assert set(shapes) == {(4, 3, 32, 32)} and len(shapes) == 6
    ref = Predictor(_model(), C, (0.5,) * 3, (0.5,) * 3, tile=32, batch_size=4, device="cpu").predict_proba(img)
    np.testing.assert_allclose(got, ref, atol=1e-6)
    big = Predictor(_model(), C, (0.5,) * 3, (0.5,) * 3, tile=64, batch_size=4, device="cpu", compile=True)
    small = big.predict_proba(_image(20, 20))  # smaller than a tile (padded to 32, not 64): runs eagerly
    assert small.shape == (C, 20, 20) and len(shapes) == 6


def test_compiled_shape_follows_the_first_image(monkeypatch):
    shapes = _record_compiled_shapes(monkeypatch)
    pr = Predictor(_model(), C, (0.5,) * 3, (0.5,) * 3, tile=32, batch_size=4, device="cpu", compile=True)
    pr.predict_proba(_image(40, 72))  # 3 windows per row: compiled batches of 3, nothing padded
    assert shapes == [(3, 3, 32, 32)] * 2
    pr.predict_proba(_image(40, 72), "d4")  # 24 inputs per row: 8 batches of 3, still one shape
    assert set(shapes) == {(3, 3, 32, 32)} and len(shapes) == 2 + 16


@pytest.mark.skipif(not compiler_available(), reason="torch.compile on CPU needs a C++ compiler (g++/clang++), absent here")
def test_real_compile_matches_eager():
    img = _image(48, 48)
    ref = Predictor(_model(), C, (0.5,) * 3, (0.5,) * 3, tile=32, device="cpu").predict_proba(img, "flip")
    pr = Predictor(_model(), C, (0.5,) * 3, (0.5,) * 3, tile=32, device="cpu", compile=True)
    got = pr.predict_proba(img, "flip")
    assert pr.compile_error is None and pr.compile_seconds > 0
    np.testing.assert_allclose(got, ref, atol=1e-4)


@settings(max_examples=16, deadline=None)
@given(h=st.integers(5, 70), w=st.integers(5, 70), tile=st.sampled_from([16, 24, 32]), overlap=st.sampled_from([0.0, 0.25, 0.5]),
       tta=st.sampled_from(["none", "d4", "flip"]), nodata=st.booleans(), rowwise=st.booleans())
def test_in_memory_outputs_equal_the_streamed_strips_bit_for_bit(h, w, tile, overlap, tta, nodata, rowwise):
    """predict_full / predict_proba write each finished block straight into whole-image arrays (the sink); the
    values are those of the strips that stream() yields, joined, to the bit (nodata pixels included).
    ``rowwise`` runs the CUDA path's gathering on the CPU: blocks collected into full-width device rows that are
    copied to the host once per window row (contiguous copies)."""
    import seghz.infer.engine as E

    old, E._ROWWISE_ON_CPU = E._ROWWISE_ON_CPU, rowwise
    try:
        _check_sink_equals_strips(h, w, tile, overlap, tta, nodata)
    finally:
        E._ROWWISE_ON_CPU = old


def _check_sink_equals_strips(h, w, tile, overlap, tta, nodata):
    img = _image(h, w, seed=h * 71 + w)
    valid = None
    if nodata:
        valid = np.ones((h, w), bool)
        valid[: h // 3, : w // 2] = False
        if not valid.any():
            valid[-1, -1] = True
    p = Predictor(_model(), C, (0.5,) * 3, (0.5,) * 3, tile=tile, overlap=overlap, batch_size=3, device="cpu")
    read = lambda a, b: (img[a:b], None if valid is None else valid[a:b])
    strips = list(p.stream(h, w, read, tta, uncertainty=True, seams=True, proba=True))
    cat = lambda f, ax=0: np.concatenate([getattr(s, f) for s in strips], axis=ax)
    full = p.predict_full(img, tta, valid_mask=valid, seams=True, return_proba=True)
    for f in ("mask", "confidence", "entropy", "disagreement", "seam"):
        np.testing.assert_array_equal(getattr(full, f), cat(f), err_msg=f)
    np.testing.assert_array_equal(full.proba, cat("proba", 1))
    if valid is None:
        np.testing.assert_array_equal(p.predict_proba(img, tta), cat("proba", 1))
    light = p.predict_full(img, tta, valid_mask=valid)
    assert light.seam is None and light.proba is None
    np.testing.assert_array_equal(light.mask, full.mask)


def test_sink_needs_a_mask():
    p = Predictor(_model(), C, (0.5,) * 3, (0.5,) * 3, tile=16, device="cpu")
    with pytest.raises(ValueError, match="mask"):
        list(p.stream(20, 20, lambda a, b: (_image(20, 20)[a:b], None), sink={"proba": np.empty((C, 20, 20), np.float32)}))


def test_host_outputs_fall_back_to_plain_arrays():
    """Page-locked outputs only for CUDA runs within the size cap; otherwise (or when pinning fails) plain arrays of
    the asked shapes and dtypes."""
    import seghz.infer.engine as E

    specs = {"mask": ((3, 5), np.uint8), "proba": ((2, 3, 5), np.float32)}
    out = E.host_outputs(specs, pinned=False)
    assert {k: (v.shape, v.dtype) for k, v in out.items()} == {"mask": ((3, 5), np.uint8), "proba": ((2, 3, 5), np.float32)}
    assert all(v.flags.writeable and v.flags.c_contiguous for v in out.values())
    old, E.PINNED_OUTPUT_MAX_BYTES = E.PINNED_OUTPUT_MAX_BYTES, 10  # over the cap: never pinned, even when asked
    try:
        big = E.host_outputs(specs, pinned=True)
        assert big["proba"].shape == (2, 3, 5) and big["mask"].dtype == np.uint8
        assert not any(torch.from_numpy(v).is_pinned() for v in big.values()) if torch.cuda.is_available() else True
    finally:
        E.PINNED_OUTPUT_MAX_BYTES = old


@pytest.mark.skipif(not torch.cuda.is_available(), reason="page-locked outputs and the row-wise copy path need CUDA")
def test_cuda_sink_outputs_are_pinned_and_equal_the_streamed_strips():
    img = _image(61, 47, seed=3)
    p = Predictor(_model(), C, (0.5,) * 3, (0.5,) * 3, tile=24, overlap=0.25, batch_size=3, device="cuda")
    strips = list(p.stream(61, 47, lambda a, b: (img[a:b], None), "flip", uncertainty=True, proba=True))
    full = p.predict_full(img, "flip", return_proba=True)
    assert torch.from_numpy(full.proba).is_pinned()
    np.testing.assert_array_equal(full.mask, np.concatenate([s.mask for s in strips]))
    np.testing.assert_array_equal(full.proba, np.concatenate([s.proba for s in strips], 1))
