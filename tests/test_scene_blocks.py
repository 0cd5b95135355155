"""Column-block finishing of the streamed predictor equals whole-buffer blending bit for bit.

:meth:`Predictor.stream` keeps its blending buffers per column block and finishes a block as soon as the
last window of the row touching it is blended (issue 3: host memory no longer grows with tile × width).
The reference here is the algorithm it replaced, written out plainly: buffers over the whole image,
windows blended in row-major order with the engine's batches, everything finished at once.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers_core import torch_one_thread  # noqa: F401 (fixture)

from seghz.infer import engine
from seghz.infer.engine import Predictor, _class_sum, _starts, pad32, shard_rows, tta_views, window_weights

C = 5
pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _predictor(tile, overlap, blend, bs=3, merge="softmax") -> Predictor:
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(6, C, 3, padding=1))
    return Predictor(m.eval(), C, (0.5,) * 3, (0.25,) * 3, tile=tile, overlap=overlap, blend=blend, batch_size=bs,
                     merge=merge, device="cpu")


def _image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _nodata(h, w):
    v = np.ones((h, w), bool)
    v[:, :11] = False  # whole window columns and part of the next
    v[: h // 3, w // 2 :] = False
    v[h - 5 :, 40:90] = False
    return v


@torch.no_grad()
def _whole_buffer_reference(pr: Predictor, img, valid, tta, seams):
    """The full-row algorithm: whole-image buffers, the same windows, batches and blending order."""
    H, W = img.shape[:2]
    views = tta_views(tta)
    nv = len(views)
    stride = max(1, math.ceil(pr.tile * (1 - pr.overlap)))
    rs, cs = _starts(H, pr.tile, stride), _starts(W, pr.tile, stride)
    th, tw = min(pr.tile, H), min(pr.tile, W)
    wt = torch.from_numpy(window_weights(th, tw, pr.blend))
    z = lambda *s: torch.zeros(s)
    buf = {"acc": z(C, H, W), "wsum": z(H, W), "dis": z(H, W)}
    if seams:
        buf["votes"], buf["ncov"] = z(C, H, W), z(H, W)
    bs = pr.resolve_batch_size()
    for r in rs:
        cols = [c for c in cs if valid is None or valid[r : r + th, c : c + tw].any()]
        items = [(c, vi) for c in cols for vi in range(nv)]
        if not items:
            continue
        bs_row = -(-len(items) // -(-len(items) // bs))
        pending: dict[int, list] = {}
        for i in range(0, len(items), bs_row):
            batch = items[i : i + bs_row]
            crops = [pad32(pr._normalise_t(torch.from_numpy(img[r : r + th, c : c + tw]))[None]) for c, _ in batch]
            logits = pr._run_items([views[vi][1](x) for (_, vi), x in zip(batch, crops)], bs_row)
            for (c, vi), y in zip(batch, logits):
                pending.setdefault(c, []).append(views[vi][2](y)[:, :, :th, :tw])
                if len(pending[c]) < nv:
                    continue
                outs = torch.cat(pending.pop(c))
                p = outs.mean(0).softmax(0) if pr.merge == "logits" else outs.softmax(1).mean(0)
                win = (slice(r, r + th), slice(c, c + tw))
                buf["acc"][:, win[0], win[1]] += p * wt
                buf["wsum"][win] += wt
                if nv > 1:
                    buf["dis"][win] += (outs.argmax(1) != p.argmax(0)).float().mean(0) * wt
                if seams:
                    buf["votes"][:, win[0], win[1]] += torch.nn.functional.one_hot(p.argmax(0), C).permute(2, 0, 1).float()
                    buf["ncov"][win] += 1
    return Predictor._strip(0, H, 0, buf, valid, True)


def _assemble(strips, H, W):
    """Column blocks put back into H×W arrays (mask, {uncertainty band: values}); every pixel exactly once."""
    seen = np.zeros((H, W), np.int32)
    mask = np.zeros((H, W), np.uint8)
    unc = {f: np.zeros((H, W), np.float32) for f in ("confidence", "entropy", "disagreement")}
    for st in strips:
        seen[st.y0 : st.y1, st.x0 : st.x1] += 1
        mask[st.y0 : st.y1, st.x0 : st.x1] = st.mask
        for f, v in unc.items():
            v[st.y0 : st.y1, st.x0 : st.x1] = getattr(st, f)
    assert (seen == 1).all()
    return mask, unc


CASES = [  # (H, W, tile, overlap, blend, tta, nodata, merge)
    (70, 203, 32, 0.25, "uniform", "none", False, "softmax"),
    (70, 203, 32, 0.25, "gaussian", "flip", True, "softmax"),
    (45, 260, 48, 0.5, "uniform", "flip", True, "logits"),
    (97, 150, 40, 0.7, "gaussian", "none", True, "softmax"),
    (64, 190, 64, 0.0, "cosine", "d4", False, "softmax"),
    (30, 100, 128, 0.25, "uniform", "flip", True, "softmax"),  # one window: smaller than a tile
]


@pytest.mark.parametrize("h,w,tile,overlap,blend,tta,nodata,merge", CASES)
def test_blocked_stream_equals_whole_buffers(h, w, tile, overlap, blend, tta, nodata, merge):
    img = _image(h, w)
    valid = _nodata(h, w) if nodata else None
    pr = _predictor(tile, overlap, blend, merge=merge)
    ref = _whole_buffer_reference(pr, img, valid, tta, seams=True)
    res = pr.predict_full(img, tta, valid_mask=valid, seams=True, return_proba=True)  # blocks joined into rows
    for f in ("mask", "confidence", "entropy", "disagreement", "seam", "proba"):
        assert getattr(res, f).tobytes() == getattr(ref, f).tobytes(), f
    read = lambda a, b: (img[a:b], None if valid is None else valid[a:b])
    blocks = list(pr.stream(h, w, read, tta, blocks=True))
    assert len({(s.x0, s.x1) for s in blocks}) == len(_starts(w, tile, max(1, math.ceil(tile * (1 - overlap)))))
    mask, unc = _assemble(blocks, h, w)
    assert mask.tobytes() == ref.mask.tobytes()
    for f, v in unc.items():
        assert v.tobytes() == getattr(ref, f).tobytes(), f
    for world in (2, 3):  # row shards (what ranks stream), in blocks
        parts = []
        for rank in range(world):
            y0, y1 = shard_rows(h, tile, overlap, rank, world)
            if y0 < y1:
                parts += list(pr.stream(h, w, read, tta, rows=(y0, y1), blocks=True))
        mask, unc = _assemble(parts, h, w)
        assert mask.tobytes() == ref.mask.tobytes() and unc["entropy"].tobytes() == ref.entropy.tobytes()


def test_finished_values_do_not_depend_on_how_pixels_are_cut(monkeypatch):
    """Tiny strips (many row pieces per block and per row) change no bit: finishing is per pixel."""
    h, w = 80, 170
    img, valid = _image(h, w, 3), _nodata(h, w)
    pr = _predictor(32, 0.25, "gaussian")
    want = pr.predict_full(img, "flip", valid_mask=valid, return_proba=True)
    monkeypatch.setattr(engine, "STRIP_VALUES", 3 * C * 7)
    got = pr.predict_full(img, "flip", valid_mask=valid, return_proba=True)
    for f in ("mask", "confidence", "entropy", "disagreement", "proba"):
        assert getattr(got, f).tobytes() == getattr(want, f).tobytes(), f
    read = lambda a, b: (img[a:b], valid[a:b])
    blocks = list(pr.stream(h, w, read, "flip", blocks=True))
    assert max(s.y1 - s.y0 for s in blocks) <= 3 * 7  # cut into pieces of ≤ STRIP_VALUES probabilities
    mask, unc = _assemble(blocks, h, w)
    assert mask.tobytes() == want.mask.tobytes() and unc["entropy"].tobytes() == want.entropy.tobytes()


@pytest.mark.parametrize("c", [3, 7, 15, 16, 17, 20, 33])
def test_class_sum_is_the_same_for_every_pixel(c):
    """Matches ``sum(0)`` away from its tail, and a pixel's sum does not depend on the tensor around it."""
    torch.manual_seed(c)
    x = -torch.rand(c, 9, 301) * torch.rand(c, 1, 1) ** 4 * 10
    s = _class_sum(x)
    assert torch.equal(s.flatten()[:2400], x.sum(0).flatten()[:2400])
    assert torch.equal(_class_sum(x[:, 4:7, 100:233].contiguous()), s[4:7, 100:233])


def test_block_buffers_stay_small(monkeypatch):
    """The buffers held at once: a few blocks of the current row plus the carried overlap, not tile × width."""
    h, w, tile = 96, 640, 32
    pr = _predictor(tile, 0.25, "uniform")
    img = _image(h, w)
    peak = {"blocks": 0}
    real = engine._Band.get

    def spy(self, j):
        out = real(self, j)
        peak["blocks"] = max(peak["blocks"], sum(self.edges[i + 1] - self.edges[i] for i in self.blocks))
        return out

    monkeypatch.setattr(engine._Band, "get", spy)
    for _ in pr.stream(h, w, lambda a, b: (img[a:b], None), "none", blocks=True):
        pass
    stride = math.ceil(tile * 0.75)
    assert peak["blocks"] <= tile + stride < w  # columns of the current window row held at once


# ---------------------------------------------------------------------------------------------------------------
# Source validity masks (seghz.infer.scene._Masks) are read through seghz.data.io.TiffReader
# ---------------------------------------------------------------------------------------------------------------


def _rgba_tif(path, h=192, w=256, seed=0):
    import rasterio
    from rasterio.transform import from_origin

    data = np.random.default_rng(seed).integers(0, 256, (4, h, w), dtype=np.uint8)
    data[3] = 255
    data[3, :40, :50] = 0
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=4, dtype="uint8", tiled=True,
                       blockxsize=64, blockysize=64, compress="deflate", photometric="RGB", alpha="YES",
                       crs="EPSG:3857", transform=from_origin(13_375_000.0, 3_536_000.0, 2.0, 2.0)) as ds:
        ds.write(data)
    return data


def test_masks_read_alpha_and_nodata(tmp_path):
    from seghz.infer.scene import _Masks

    p = tmp_path / "a.tif"
    data = _rgba_tif(p)
    m = _Masks(p, 4)
    try:
        np.testing.assert_array_equal(m.read((0, 0, 100, 120)), data[3, :100, :120] != 0)
    finally:
        m.close()
    assert _Masks(tmp_path / "x.png", 3).read((0, 0, 1, 1)) is None  # not a TIFF: no mask


def test_masks_of_a_damaged_file_raise_naming_it(tmp_path):
    """A truncated or junk source gives BadInputError naming the file (it was a raw rasterio error)."""
    from seghz.errors import BadInputError
    from seghz.infer.scene import _Masks

    full = tmp_path / "full.tif"
    _rgba_tif(full)
    cut = tmp_path / "cut.tif"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    m = _Masks(cut, 4)  # the header is intact: it opens
    try:
        with pytest.raises(BadInputError, match="corrupt or truncated GeoTIFF") as ei:
            m.read((128, 0, 64, 256))
        assert ei.value.source == str(cut)
    finally:
        m.close()
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"II*\x00" + bytes(200))
    with pytest.raises(BadInputError, match="not a readable GeoTIFF") as ei:
        _Masks(junk, 4)
    assert ei.value.source == str(junk)


def test_predict_scene_on_a_damaged_source_names_it(tmp_path):
    from seghz.errors import BadInputError
    from seghz.infer.scene import predict_scene

    full = tmp_path / "full.tif"
    _rgba_tif(full)
    cut = tmp_path / "cut.tif"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size * 2 // 3])
    with pytest.raises(BadInputError) as ei:
        predict_scene(_predictor(64, 0.25, "uniform"), cut, tmp_path / "o.tif", scheme="dubai")
    assert ei.value.source == str(cut) and "cut.tif" in str(ei.value)
    assert not (tmp_path / "o.tif").exists()
