"""Sliding-window inference with D4 test-time augmentation, blending and uncertainty (v2).

Windows overlap by a fraction and the last window in each direction is shifted back to sit flush
with the border (the study's ``predict_sliding``); windows smaller than a tile (images smaller than a
tile) are padded by reflection (replication when too small to reflect) to a multiple of 32.

Every step sends views × windows through the model as one batch (``batch_size`` counts model inputs).
Each view's output is mapped back by its exact inverse; views are merged by the mean of softmax
(``merge="softmax"``) or the mean of logits followed by a softmax (``merge="logits"``); overlapping
windows are blended with per-pixel weights (``blend="uniform" | "gaussian" | "cosine"``).
:meth:`Predictor.predict_full` also returns the predictive entropy, the disagreement between views
and, on request, where overlapping windows disagree (seams).
"""
from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from seghz.devices import check_device, cuda_free_bytes, readonly_tensor, to_device
from seghz.errors import SegHZError

if TYPE_CHECKING:
    from seghz.classes import Scheme


def _rot(k: int) -> Callable:
    return lambda x: torch.rot90(x, k, (2, 3))


def _antitranspose(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(2, 3).flip((2, 3))


# Every view by the study's name: name -> (forward, inverse), acting on N×C×H×W tensors.
VIEWS: dict[str, tuple[Callable, Callable]] = {
    "identity": (lambda x: x, lambda y: y),
    "lr": (lambda x: x.flip(3), lambda y: y.flip(3)),  # flip W
    "tb": (lambda x: x.flip(2), lambda y: y.flip(2)),  # flip H
    "lrtb": (lambda x: x.flip((2, 3)), lambda y: y.flip((2, 3))),  # flip both (== rot180)
    "diag": (lambda x: x.transpose(2, 3), lambda y: y.transpose(2, 3)),  # transpose
    "diag2": (_antitranspose, _antitranspose),  # anti-transpose (an involution)
    "rot90": (_rot(1), _rot(-1)),
    "rot180": (_rot(2), _rot(-2)),
    "rot270": (_rot(3), _rot(-3)),
}
VIEW_NAMES: list[str] = list(VIEWS)
# Older names still accepted.
_ALIASES = {"transpose": "diag", "antitranspose": "diag2", "flip_lr": "lr", "flip_tb": "tb"}
_D4 = ["identity", "lr", "tb", "diag", "diag2", "rot90", "rot180", "rot270"]
TTA_MODES: dict[str, list[str]] = {"none": ["identity"], "flip": ["identity", "lr"], "d4": list(_D4)}
# Backward compatible: the 8 distinct D4 views as (name, forward, inverse).
D4_VIEWS: list[tuple[str, Callable, Callable]] = [(n, *VIEWS[n]) for n in _D4]
MERGES = ("softmax", "logits")
_ROWWISE_ON_CPU = False  # tests: run the CUDA row-wise sink path on the CPU
STRIP_VALUES = 1 << 22  # probabilities per yielded strip (16 MB of float32): bounds the memory of wide scenes
BLENDS = ("uniform", "gaussian", "cosine")


class Cancelled(SegHZError):
    """Inference was cancelled through the ``should_cancel`` callback."""


def tta_views(tta: str | Iterable[str]) -> list[tuple[str, Callable, Callable]]:
    """Views ``(name, forward, inverse)`` for a TTA mode (``none``/``flip``/``d4``) or a list of view names."""
    if isinstance(tta, str):
        if tta in TTA_MODES:
            names = TTA_MODES[tta]
        elif tta in VIEWS or tta in _ALIASES:
            names = [tta]
        else:
            raise ValueError(f"unknown TTA mode '{tta}'; use one of {list(TTA_MODES)} or a list of view names {VIEW_NAMES}")
    else:
        names = list(tta)
    unknown = [n for n in names if n not in VIEWS and n not in _ALIASES]
    if unknown:
        raise ValueError(f"unknown TTA view(s) {unknown}; valid views: {VIEW_NAMES}")
    if not names:
        raise ValueError(f"no TTA views selected; valid views: {VIEW_NAMES}")
    out = []
    for n in names:
        name = _ALIASES.get(n, n)
        out.append((name, *VIEWS[name]))
    return out


def _starts(size: int, tile: int, stride: int) -> list[int]:
    if size <= tile:
        return [0]
    n = math.ceil((size - tile) / stride) + 1
    return sorted({min(i * stride, size - tile) for i in range(n)})


def _check_tiling(tile, overlap) -> None:
    if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or tile <= 0:
        raise ValueError(f"tile must be a positive integer, got {tile!r}")
    if not isinstance(overlap, (int, float, np.floating)) or not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap!r}")


def sliding_windows(height: int, width: int, tile: int, overlap: float = 0.25) -> list[tuple[int, int, int, int]]:
    """Windows (row, col, h, w) covering an image; the last window in each axis is flush with the border."""
    _check_tiling(tile, overlap)
    if height <= 0 or width <= 0:
        raise ValueError(f"image has zero pixels ({height}x{width})")
    stride = max(1, math.ceil(tile * (1 - overlap)))
    th, tw = min(tile, height), min(tile, width)
    return [(r, c, th, tw) for r in _starts(height, tile, stride) for c in _starts(width, tile, stride)]


def _profile(n: int, blend: str) -> np.ndarray:
    """1-D window weights of length ``n``: centre-weighted, strictly positive (borders included)."""
    if blend == "uniform" or n <= 2:
        return np.ones(n, np.float64)
    t = (np.arange(n) + 0.5) / n  # pixel centres in (0, 1)
    if blend == "gaussian":
        sigma = 0.25  # of the window length: borders get exp(-2) ≈ 0.135 of the centre
        w = np.exp(-0.5 * ((t - 0.5) / sigma) ** 2)
    elif blend == "cosine":
        w = np.sin(np.pi * t) ** 2  # Hann window evaluated at pixel centres
    else:
        raise ValueError(f"unknown blend '{blend}'; use one of {list(BLENDS)}")
    return np.maximum(w, 1e-3)


def window_weights(h: int, w: int, blend: str = "uniform") -> np.ndarray:
    """Per-pixel weights (h×w float32, > 0 everywhere) of one window for blending overlapping windows."""
    if blend not in BLENDS:
        raise ValueError(f"unknown blend '{blend}'; use one of {list(BLENDS)}")
    return np.outer(_profile(h, blend), _profile(w, blend)).astype(np.float32)


@dataclass
class PredictionResult:
    """Output of :meth:`Predictor.predict_full` (all arrays H×W unless noted)."""

    mask: np.ndarray  # uint8 class index; 255 where not valid
    confidence: np.ndarray  # float32 max probability; 0 where not valid
    entropy: np.ndarray  # float32 predictive entropy (nats) of the merged distribution; NaN where not valid
    disagreement: np.ndarray  # float32 fraction of views whose argmax differs from the consensus; NaN where not valid
    seam: np.ndarray | None = None  # float32 fraction of covering windows disagreeing with the blended argmax
    proba: np.ndarray | None = None  # float32 C×H×W, only when asked (return_proba=True)


@dataclass
class Strip:
    """Finished rows ``[y0, y1)`` of a streamed prediction (see :meth:`Predictor.stream`); arrays cover those rows.

    Not-valid or uncovered pixels already hold mask 255, confidence 0, NaN entropy/disagreement/seam and
    zero probabilities.
    """

    y0: int
    y1: int
    mask: np.ndarray  # uint8 h×W
    confidence: np.ndarray  # float32 h×W
    entropy: np.ndarray  # float32 h×W
    disagreement: np.ndarray  # float32 h×W (zeros when uncertainty was not asked or with one view)
    seam: np.ndarray | None = None  # float32 h×W, when seams were asked
    proba: np.ndarray | None = None  # float32 C×h×W, when probabilities were asked
    x0: int = 0  # first column: > 0 only for column blocks (``stream(..., blocks=True)``); the width is mask's

    @property
    def x1(self) -> int:
        return self.x0 + self.mask.shape[1]

    def result(self) -> PredictionResult:
        return PredictionResult(self.mask, self.confidence, self.entropy, self.disagreement, self.seam, self.proba)

    def rows(self, a: int, b: int) -> Strip:
        """Rows ``[a, b)`` of this strip (views of its arrays)."""
        i, j = a - self.y0, b - self.y0
        cut = lambda t, ax=0: None if t is None else (t[i:j] if ax == 0 else t[:, i:j])
        return Strip(a, b, cut(self.mask), cut(self.confidence), cut(self.entropy), cut(self.disagreement),
                     cut(self.seam), cut(self.proba, 1), self.x0)


def pad32(x: torch.Tensor) -> torch.Tensor:
    """Pad an N×C×h×w batch at the bottom/right to a multiple of 32 (reflect, else replicate: too small to reflect)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % 32, (-w) % 32
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="reflect" if (ph < h and pw < w) else "replicate")
    return x


def _block_fields(buf: dict[str, torch.Tensor], rows: slice, valid: torch.Tensor | None, want: set[str]) -> dict:
    """Rows ``rows`` of one block's blending buffers as finished outputs, on the device: ``mask`` (uint8, 255 where
    uncovered or not valid) and those of ``confidence``, ``entropy``, ``disagreement``, ``seam``, ``proba`` in
    ``want``. ``valid``: the rows' validity, best on the buffers' device (None: all valid). Not-valid pixels hold
    confidence 0, NaN entropy / disagreement / seam and zero probabilities.

    Only ``masked_fill_`` writes the not-valid pixels: boolean-index assignment (``x[bad] = v``) can make CUDA
    read the mask back to the host, which would stall the device once per block."""
    ws = buf["wsum"][rows]
    covered = ws > 0
    safe = torch.where(covered, ws, torch.ones_like(ws))
    proba = buf["acc"][:, rows] / safe
    if valid is not None and not torch.is_tensor(valid):  # a host mask (the stream hands device ones)
        valid = torch.from_numpy(np.ascontiguousarray(valid, dtype=bool)).to(ws.device)
    bad = ~covered if valid is None else ~(covered & valid)
    mask = proba.argmax(0).to(torch.uint8)
    out: dict[str, torch.Tensor] = {}
    if "confidence" in want:
        out["confidence"] = proba.amax(0).masked_fill_(bad, 0.0)
    if "entropy" in want:
        t = proba.clamp_min(1e-12)
        out["entropy"] = _class_sum(t.log_().mul_(proba)).neg_().clamp_min_(0.0).masked_fill_(bad, float("nan"))
        del t
    if "disagreement" in want:
        d = buf["dis"][rows] / safe if "dis" in buf else torch.zeros_like(ws)
        out["disagreement"] = d.masked_fill_(bad, float("nan"))
    if "seam" in want:
        agree = buf["votes"][:, rows].gather(0, mask.long()[None])[0]
        nc = buf["ncov"][rows]
        out["seam"] = (1.0 - agree / torch.where(nc > 0, nc, torch.ones_like(nc))).masked_fill_(bad, float("nan"))
    if "proba" in want:
        out["proba"] = proba.masked_fill_(bad[None], 0.0)
    out["mask"] = mask.masked_fill_(bad, 255)
    return out


def _image_hw(image) -> tuple[int, int]:
    """(H, W) of an H×W×3 image array, with the engine's error for anything else."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be an H×W×3 array, got shape {getattr(image, 'shape', type(image).__name__)}")
    return int(image.shape[0]), int(image.shape[1])


def _join(pieces: list[Strip]) -> Strip:
    """Side-by-side column blocks of the same rows, left to right, as one strip."""
    if len(pieces) == 1:
        return pieces[0]
    cat = lambda f: None if getattr(pieces[0], f) is None else np.concatenate([getattr(p, f) for p in pieces], -1)
    p0 = pieces[0]
    return Strip(p0.y0, p0.y1, cat("mask"), cat("confidence"), cat("entropy"), cat("disagreement"), cat("seam"),
                 cat("proba"), p0.x0)


def _class_sum(x: torch.Tensor) -> torch.Tensor:
    """``x.sum(0)`` for a C×h×w tensor, with the same additions in the same order for every pixel whatever h and w.

    ``Tensor.sum(0)`` on the CPU adds the classes of most pixels one after the other (in runs of 16 whose sums are
    added last) but takes another order for the last few pixels of the tensor (its scalar tail), so a pixel's
    entropy would depend on where the block it is finished in ends. This spells out the main order (to the bit).
    """
    C = x.shape[0]
    if C >= 256:  # deeper cascade: no scheme has that many classes
        return x.sum(0)

    def run(a: int, b: int) -> torch.Tensor:
        s = torch.zeros_like(x[0])
        for c in range(a, b):
            s.add_(x[c])
        return s

    full = (C // 16) * 16
    runs = torch.zeros_like(x[0])
    for a in range(0, full, 16):
        runs.add_(run(a, a + 16))
    return run(full, C).add_(runs)


class _Copier:
    """Device → host copies of finished outputs into (views of) preallocated numpy outputs.

    On the CPU a copy is a plain ``copy_``. On CUDA (``rowwise``) the stream gathers each window row's finished
    rows on the device and hands them over whole, so every copy lands in *contiguous* host memory (a strided
    host destination makes torch stage the copy through a temporary pageable buffer). Into page-locked outputs
    (``pinned``, see :func:`host_outputs`) a copy is queued on a side stream after an event recorded on the compute
    stream, straight from the calling thread: a DMA that overlaps the next windows' compute (the source is kept
    alive for the side stream by ``record_stream``). Into pageable outputs the copies run from one worker thread
    (a copy into pageable memory blocks the thread that issues it). :meth:`close` waits for every copy and
    re-raises the first failure.
    """

    def __init__(self, dev: torch.device, pinned: bool = False, rowwise: bool | None = None):
        self.cuda = dev.type == "cuda"
        self.dev = dev
        self.pinned = self.cuda and pinned
        self.rowwise = self.cuda if rowwise is None else rowwise
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="seghz-d2h") if self.cuda and not self.pinned else None
        self.stream = torch.cuda.Stream(dev) if self.cuda else None
        self.futures: list = []  # touched by the calling thread only (the worker runs the jobs)

    def put(self, src: torch.Tensor, dst: np.ndarray) -> None:
        if not self.cuda:
            torch.from_numpy(dst).copy_(src)
            return
        ev = torch.cuda.Event()
        # on the compute device's current stream, after src was computed: a bare ``record()`` records on the current
        # *device's* stream, which is cuda:0 for an engine on cuda:1 (the engine never calls set_device)
        ev.record(torch.cuda.current_stream(self.dev))
        if self.pinned:
            with torch.cuda.stream(self.stream):
                self.stream.wait_event(ev)
                torch.from_numpy(dst).copy_(src, non_blocking=True)
            src.record_stream(self.stream)  # the allocator must not hand src's memory out before the copy ran
            return

        def job(src=src, ev=ev, dst=dst):
            with torch.cuda.stream(self.stream):
                self.stream.wait_event(ev)
                torch.from_numpy(dst).copy_(src)  # to pageable memory: returns once the data is in dst
            self.stream.synchronize()

        self.futures.append(self.pool.submit(job))
        if len(self.futures) > 64:  # keep the list short: drop the finished ones (errors surface in close)
            self.futures = [f for f in self.futures if not f.done() or f.exception() is not None]

    def put_rows(self, t: torch.Tensor, dst: np.ndarray, a: int, b: int) -> None:
        """Copy ``t`` (a (C×)(b−a)×W device tensor) into rows ``[a, b)`` of ``dst``, one contiguous copy per class."""
        if t.dim() == 3:
            for c in range(t.shape[0]):
                self.put(t[c], dst[c, a:b])
        else:
            self.put(t, dst[a:b])

    def close(self) -> None:
        if self.pinned:
            self.stream.synchronize()
        if self.pool is None:
            return
        try:
            for f in self.futures:
                f.result()
        finally:
            self.pool.shutdown(wait=True)
            self.pool = None


PINNED_OUTPUT_MAX_BYTES = 8 << 30  # in-memory results up to this size are page-locked on CUDA (and ≤ 1/4 of the RAM)


def _ram_bytes() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return 0


def host_outputs(specs: dict[str, tuple[tuple[int, ...], type]], pinned: bool) -> dict[str, np.ndarray]:
    """Uninitialised numpy output arrays ``name -> (shape, dtype)``.

    With ``pinned`` (the model runs on CUDA) and a total of at most :data:`PINNED_OUTPUT_MAX_BYTES` (and a quarter
    of the machine's RAM) they are views of page-locked torch tensors from torch's caching host allocator: the
    device copies into them are asynchronous DMAs at full bus speed, and a freed result's memory is reused by the
    next one without pinning it again. Otherwise (or if page-locking fails) plain numpy arrays."""
    total = sum(int(np.prod(shape)) * np.dtype(dt).itemsize for shape, dt in specs.values())
    ram = _ram_bytes()
    if pinned and total <= PINNED_OUTPUT_MAX_BYTES and (ram == 0 or total <= ram // 4):
        try:
            return {n: torch.empty(shape, dtype=torch.from_numpy(np.empty(0, dt)).dtype, pin_memory=True).numpy()
                    for n, (shape, dt) in specs.items()}
        except RuntimeError:  # page-locking refused (limits, no driver): plain memory still works
            pass
    return {n: np.empty(shape, dt) for n, (shape, dt) in specs.items()}


def _is_pinned(a: np.ndarray) -> bool:
    return a.size > 0 and torch.from_numpy(a).is_pinned()


class _Band:
    """The blending buffers of one window row (rows ``[r, r + th)``), one set per column block, made on first use.

    ``edges``: block ``j`` holds columns ``[edges[j], edges[j + 1])`` (block j starts where window column j starts).
    ``planes``: buffer name -> class count of its leading axis (0: a plain th×w plane). ``carry``: per block, the
    buffers of the rows this row shares with the previous one (its top rows), taken over when the block is made.
    """

    def __init__(self, th: int, tw: int, edges: list[int], planes: dict[str, int], carry: dict, dev):
        self.th, self.tw, self.edges, self.planes, self.carry, self.dev = th, tw, edges, planes, carry, dev
        self.blocks: dict[int, dict[str, torch.Tensor]] = {}
        self.carry_out: dict[int, dict[str, torch.Tensor]] = {}  # what the next row takes over, per block
        self.finished = 0  # blocks [0, finished) are done
        self.pieces: list[Strip] = []  # finished blocks kept to be joined into whole-row strips
        self.r = self.e = 0
        self.valid: np.ndarray | None = None
        self.valid_t: torch.Tensor | None = None  # ``valid`` on the device
        self.out = (0, 0)
        self.carry_on = False
        self.rows: dict[str, torch.Tensor] = {}  # row-wise sink copies: the finished rows ``out``, full width

    def get(self, j: int) -> dict[str, torch.Tensor]:
        bb = self.blocks.get(j)
        if bb is None:
            w = self.edges[j + 1] - self.edges[j]
            cj = self.carry.pop(j, None)
            bb = {}
            for n, c in self.planes.items():
                t = torch.zeros((c, self.th, w) if c else (self.th, w), dtype=torch.float32, device=self.dev)
                if cj is not None:
                    t[..., : cj[n].shape[-2], :] = cj[n]
                bb[n] = t
            del cj
            self.blocks[j] = bb
        return bb

    def take(self, j: int) -> dict[str, torch.Tensor]:
        """Block ``j``'s buffers, no longer kept by the row (made now when no window touched it)."""
        bb = self.get(j)
        del self.blocks[j]
        return bb

    def add(self, j: int, name: str, val) -> None:
        """Add ``val`` (a (C×)th×tw tensor, or a number) of the window starting at column ``edges[j]`` into the blocks."""
        c = self.edges[j]
        end = c + self.tw
        while j + 1 < len(self.edges) and self.edges[j] < end:
            x0, x1 = self.edges[j], min(self.edges[j + 1], end)
            tgt = self.get(j)[name][..., : x1 - x0]  # block j starts at x0
            tgt.add_(val if not torch.is_tensor(val) else val[..., x0 - c : x1 - c])
            j += 1


def window_rows(height: int, tile: int, overlap: float) -> list[int]:
    """Start rows of the window rows that :func:`sliding_windows` lays over an image ``height`` tall."""
    _check_tiling(tile, overlap)
    return _starts(height, tile, max(1, math.ceil(tile * (1 - overlap))))


def shard_rows(height: int, tile: int, overlap: float, rank: int, world_size: int) -> tuple[int, int]:
    """Output rows ``[y0, y1)`` owned by ``rank`` of ``world_size``: whole window rows, dealt in contiguous runs.

    Each rank streams exactly the window rows that touch its rows (one extra row of windows at a boundary)
    in the same order and batches as one process would, so the ranks' rows join into the one-process
    result bit for bit.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world_size {world_size}")
    rs = window_rows(height, tile, overlap)
    n = len(rs)
    edges = [rs[round(i * n / world_size)] if round(i * n / world_size) < n else height for i in range(world_size + 1)]
    edges[0], edges[-1] = 0, height
    return edges[rank], edges[rank + 1]


def auto_batch_size(free_bytes: int, per_item_bytes: int, fraction: float = 0.6, cap: int = 64) -> int:
    """How many model inputs fit into ``fraction`` of ``free_bytes`` when one input needs ``per_item_bytes``."""
    if per_item_bytes <= 0:
        return cap
    return int(max(1, min(cap, (fraction * free_bytes) // per_item_bytes)))


def compiler_available() -> bool:
    """True when torch.compile's CPU backend can build kernels here (it needs a C++ compiler)."""
    import shutil

    return any(shutil.which(c) for c in ("g++", "c++", "clang++"))


# On CUDA the compiled engine ran 1.53× faster than the eager one (one H200, Unet-resnet34, 1024² windows, bf16:
# 1.76 vs 2.69 ns per window pixel and view) after a 13 s first compile (docs/benchmarks.md, session 9): it pays for
# itself once a job holds about 14 gigapixels of window input (windows × tile² × TTA views). On the CPU, since the
# model runs channels_last there too (2026-11-28, docs/benchmarks.md "channels_last on the CPU"), the compiled engine
# is only 1.15–1.36× the eager one (it was 1.5–1.6× against contiguous eager, when the rule was "from 32 windows"):
# Unet-Lite0, 16 windows of 512², 2-core AMD EPYC: 0.077 s saved per window without TTA, 0.031 s per window-view
# with D4, after a 7–36 s first compile. At ~25 s that pays from ~8e7 (no TTA) to ~2e8 (D4) px of window input.
CUDA_COMPILE_MIN_PX = 14e9
CPU_COMPILE_MIN_PX = 1.5e8  # ≈ 570 window-views of 512²: a D4 job of ≥ 72 windows, a plain one of ≥ 570


COMPILE_CHOICES = ("auto", "on", "off")


def check_compile_choice(choice: str) -> str:
    """``choice`` when it is one of :data:`COMPILE_CHOICES`, else a ValueError (callers check before loading a model)."""
    if choice not in COMPILE_CHOICES:
        raise ValueError(f"compile must be 'auto', 'on' or 'off', got {choice!r}")
    return choice


def want_compile(choice: str, pred, height: int, width: int, views: int = 1, world: int = 1) -> bool:
    """``on`` / ``off`` as asked; ``auto``: :func:`compile_pays` on a ``height`` × ``width`` image (the rule of
    ``predict-scene --compile`` and of the big-region job)."""
    if check_compile_choice(choice) != "auto":
        return choice == "on"
    return compile_pays(pred, height, width, views, world)


def compile_pays(pred, height: int, width: int, views: int = 1, world: int = 1) -> bool:
    """Whether ``torch.compile`` pays for itself on a ``height`` × ``width`` image (or window of a scene) predicted
    with ``views`` TTA views by a process that runs about 1/``world`` of its windows (each torchrun rank compiles
    its own): never without a C++ compiler (Inductor needs one); else from :data:`CPU_COMPILE_MIN_PX` (CPU) or
    :data:`CUDA_COMPILE_MIN_PX` (CUDA) window pixels × views. The policy behind ``--compile auto`` and the
    big-region job."""
    if not compiler_available():
        return False
    n = len(sliding_windows(int(height), int(width), int(pred.tile), pred.overlap)) / max(1, int(world))
    px = n * int(pred.tile) ** 2 * max(1, int(views))
    return px >= (CUDA_COMPILE_MIN_PX if pred._cuda else CPU_COMPILE_MIN_PX)


@dataclass
class Predictor:
    """Runs a model over images of any size. ``mean``/``std`` are the normalisation in [0, 1] units.

    ``batch_size=None`` picks it: on the CPU 2 windows of 512² (4 of 256², 1 of 1024²); on CUDA from the free memory
    measured with one window.
    ``compile=True`` runs full-tile batches through ``torch.compile`` (Inductor with frozen weights:
    1.15–1.6× faster than eager on CPU after a 7–40 s first compile); inputs of other shapes run eagerly, and a
    compile failure (e.g. no C++ compiler) falls back to eager with a warning.
    ``scheme`` is the class scheme the model predicts (names and colours of its outputs); :meth:`from_checkpoint`
    sets it from the checkpoint metadata. None = not known (whole-scene prediction then needs it given).
    ``amp``: bf16 autocast on CUDA (default); False runs fp32 there too. ``device`` is checked on construction
    (:func:`seghz.devices.check_device`: a GPU this machine lacks is a clear error); on CUDA cuDNN autotuning is
    switched on unless deterministic kernels were asked for.
    """

    model: torch.nn.Module
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    tile: int = 512
    overlap: float = 0.25
    batch_size: int | None = 4
    device: str | None = None
    merge: str = "softmax"
    blend: str = "uniform"
    compile: bool = False
    scheme: Scheme | None = None
    amp: bool = True  # CUDA: bf16 autocast (False: fp32, e.g. validation of an fp32 training run); the CPU runs fp32

    @classmethod
    def from_checkpoint(cls, path, device: str | None = None, **kw) -> tuple[Predictor, dict]:
        from seghz.models.checkpoint import checkpoint_scheme, load_checkpoint

        dev = check_device(device, "Predictor device") or ("cuda" if torch.cuda.is_available() else "cpu")
        model, meta = load_checkpoint(path, dev)
        norm = meta.get("normalization", {})
        kw.setdefault("tile", int(meta.get("tile_size", 512)))
        kw.setdefault("scheme", checkpoint_scheme(meta))
        return cls(model, int(meta["num_classes"]), tuple(norm.get("mean", (0.5,) * 3)), tuple(norm.get("std", (0.5,) * 3)), device=dev, **kw), meta

    def __post_init__(self):
        self._check_settings(self.merge, self.blend)
        self.device = check_device(self.device, "Predictor device") or ("cuda" if torch.cuda.is_available() else "cpu")
        if self._cuda and not (torch.backends.cudnn.deterministic or torch.are_deterministic_algorithms_enabled()):
            torch.backends.cudnn.benchmark = True  # fixed window shapes: cuDNN's autotuned kernels pay off
        self.model.to(self.device)
        self.model.to(memory_format=torch.channels_last)  # faster on CUDA and on the CPU (docs/benchmarks.md)
        self.model.eval()
        self._compiled = None
        self._norm_consts: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self._compiled_bs: int | None = None
        self.compile_seconds = 0.0
        self.compile_error: str | None = None

    @property
    def _cuda(self) -> bool:
        return torch.device(self.device).type == "cuda"

    def _check_settings(self, merge: str, blend: str) -> None:
        _check_tiling(self.tile, self.overlap)
        bs = self.batch_size
        if bs is not None and (isinstance(bs, bool) or not isinstance(bs, (int, np.integer)) or bs < 1):
            raise ValueError(f"batch_size must be a positive integer or None (automatic), got {bs!r}")
        if merge not in MERGES:
            raise ValueError(f"unknown merge '{merge}'; use one of {list(MERGES)}")
        if blend not in BLENDS:
            raise ValueError(f"unknown blend '{blend}'; use one of {list(BLENDS)}")

    def _normalise_t(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 h×w×3 tensor (on any device) → normalised float 3×h×w on the same device."""
        x = x.permute(2, 0, 1).float().div_(255)
        key = (str(x.device), tuple(self.mean), tuple(self.std))
        ms = self._norm_consts.get(key)
        if ms is None:  # made once per device: a tensor built from Python numbers on CUDA waits for the device
            ms = self._norm_consts[key] = tuple(torch.tensor(v, dtype=torch.float32).view(3, 1, 1).to(x.device)
                                                for v in (self.mean, self.std))
        return (x - ms[0]) / ms[1]

    # ------------------------------------------------------------------ model calls

    def resolve_batch_size(self) -> int:
        """The batch size in use: the configured one, or (``None``) 4 on CPU / measured from free CUDA memory."""
        if self.batch_size is not None:
            return int(self.batch_size)
        if not self._cuda:  # CPU convolutions gain nothing from big batches: 2 windows of 512², 1 of 1024², 4 of 256²
            self.batch_size = int(max(1, min(4, (2 * 512 * 512) // (int(self.tile) ** 2))))
            return self.batch_size
        t = -(-int(self.tile) // 32) * 32
        dev = torch.device(self.device)
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
        with torch.no_grad():
            self._model_call(torch.zeros(1, 3, t, t))
        torch.cuda.synchronize(dev)
        per_item = torch.cuda.max_memory_allocated(dev) - base
        self.batch_size = auto_batch_size(cuda_free_bytes(dev), per_item)  # torch's cached blocks count as free
        return self.batch_size

    def _model_call(self, x: torch.Tensor, fn=None) -> torch.Tensor:
        fn = self.model if fn is None else fn
        x = x.to(self.device, non_blocking=True)
        x = x.contiguous(memory_format=torch.channels_last)
        if self._cuda and self.amp:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                y = fn(x)
        else:
            y = fn(x)
        return y.float()

    def _compiled_fn(self):
        if not self.compile or self.compile_error is not None:
            return None
        if self._compiled is None:
            self._compiled = torch.compile(self.model, options={"freezing": True})
        return self._compiled

    def _run_model(self, x: torch.Tensor, full_shape: tuple | None = None) -> torch.Tensor:
        """Logits of a batch; full-tile batches go through the compiled model when compiling (padded to a fixed batch)."""
        fn = self._compiled_fn()
        if fn is None or full_shape is None or tuple(x.shape[1:]) != full_shape[1:]:
            return self._model_call(x)
        n, want = x.shape[0], full_shape[0]
        if n < want:  # one shape for the compiled graph: pad with copies of the last input
            x = torch.cat([x, x[-1:].expand(want - n, *x.shape[1:])])
        first = self.compile_seconds == 0.0
        import time

        t0 = time.perf_counter()
        try:
            y = self._model_call(x, fn)
        except (torch.cuda.OutOfMemoryError, KeyboardInterrupt):
            raise
        except Exception as e:  # noqa: BLE001 - any compiler failure: fall back to eager, say so once
            import warnings

            self.compile_error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            self._compiled = None
            warnings.warn(f"torch.compile failed, running the model eagerly instead ({self.compile_error})", stacklevel=2)
            return self._model_call(x[:n])
        if first:
            self.compile_seconds = time.perf_counter() - t0
        return y[:n]

    def _halved_after_oom(self, bs: int, err: BaseException) -> int:
        """The batch size to try after running out of GPU memory at ``bs`` (half of it, cache emptied), or a clear
        SegHZError when even a batch of 1 did not fit."""
        if self._cuda:
            torch.cuda.empty_cache()
        if bs == 1:
            raise SegHZError(
                "out of GPU memory even with a batch of 1; use a smaller tile or run on the CPU (--device cpu)"
            ) from err
        return max(1, bs // 2)

    def _run_items(self, inputs: list[torch.Tensor], bs: int) -> list[torch.Tensor]:
        """Logits for a list of 1×3×h×w inputs, stacked into one batch per input shape."""
        groups: dict[tuple, list[int]] = {}
        for i, t in enumerate(inputs):
            groups.setdefault(tuple(t.shape), []).append(i)
        out: list[torch.Tensor | None] = [None] * len(inputs)
        t32 = -(-int(self.tile) // 32) * 32
        for idx in groups.values():
            y = self._run_model(torch.cat([inputs[i] for i in idx]), (bs, 3, t32, t32))
            for j, i in enumerate(idx):
                out[i] = y[j : j + 1]
        return out  # type: ignore[return-value]

    # ------------------------------------------------------------------ core: stream window rows

    @torch.no_grad()
    def stream(
        self,
        height: int,
        width: int,
        read: Callable[[int, int], tuple[np.ndarray, np.ndarray | None]],
        tta: str | Iterable[str] = "none",
        *,
        rows: tuple[int, int] | None = None,
        progress: Callable[[float, str], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
        merge: str | None = None,
        blend: str | None = None,
        uncertainty: bool = True,
        seams: bool = False,
        proba: bool = False,
        blocks: bool = False,
        sink: dict[str, np.ndarray] | None = None,
    ):
        """Predict an image ``height``×``width`` window row by window row; yields finished :class:`Strip` s.

        ``read(r0, r1)`` returns rows ``[r0, r1)`` of the image (uint8 (r1−r0)×W×3) and their validity
        (bool, or None when all valid); it is called once per window row.

        The blending buffers live on the model's device and are kept per column block (block ``j`` = the
        columns from window column ``j``'s start to the next one's): a block is finished (normalised,
        argmax, uncertainty) as soon as the last window of the row touching it has been blended, and only
        its rows that the next window row also covers (the overlap) are carried on. So at most about
        (C + 3) × tile × (tile + stride) × 4 bytes of the current window row plus (C + 3) × carried rows ×
        width × 4 bytes of overlap are held, whatever the height. ``blocks=True`` yields the finished
        blocks as they come (:attr:`Strip.x0` says where they sit); otherwise each window row's blocks
        are joined into full-width strips. Every pixel sees the same floating-point operations in the
        same order as with whole-row buffers, so the values do not depend on the blocking.
        ``rows=(y0, y1)`` yields only those rows, running only the window rows that touch them (see
        :func:`shard_rows`); the values are those of the whole-image run bit for bit. Windows without a
        valid pixel are not run. Probabilities are returned when ``proba=True``.

        ``sink`` (used by the in-memory :meth:`predict_full` / :meth:`predict_proba`): preallocated whole-image
        outputs by :class:`Strip` field name (``mask`` H×W uint8 is required; ``confidence``, ``entropy``,
        ``disagreement``, ``seam`` H×W float32 and ``proba`` C×H×W float32 as wanted). Each finished block is
        copied from the device straight into them (no per-strip arrays, no joining); only the fields in the sink
        are computed; nothing is yielded. On CUDA the copies run on a side stream from a worker thread, so the
        device goes on with the next windows while the host receives the last ones.
        """
        if sink is not None:
            if "mask" not in sink:
                raise ValueError("sink needs a 'mask' array")
            blocks, proba = True, "proba" in sink
            if "disagreement" in sink:
                uncertainty = True
            if "seam" in sink:
                seams = True
        merge, blend = merge or self.merge, blend or self.blend
        self._check_settings(merge, blend)
        views = tta_views(tta)
        H, W = int(height), int(width)
        if H <= 0 or W <= 0:
            raise ValueError(f"image has zero pixels ({H}x{W})")
        y0, y1 = (0, H) if rows is None else (int(rows[0]), int(rows[1]))
        if not 0 <= y0 < y1 <= H:
            raise ValueError(f"rows {rows} outside the image's 0..{H}")
        tile = int(self.tile)
        stride = max(1, math.ceil(tile * (1 - self.overlap)))
        rs, cs = _starts(H, tile, stride), _starts(W, tile, stride)
        th, tw = min(tile, H), min(tile, W)
        ks = [k for k in range(len(rs)) if rs[k] < y1 and rs[k] + th > y0]
        C = self.num_classes
        bs = self.resolve_batch_size()
        dev = torch.device(self.device)
        planes = {"acc": C, "wsum": 0}  # buffer name -> leading class axis (0: none)
        if uncertainty:
            planes["dis"] = 0
        if seams:
            planes["votes"], planes["ncov"] = C, 0
        wt = torch.from_numpy(window_weights(th, tw, blend)).to(dev)
        edges = list(cs) + [W]  # block j = columns [edges[j], edges[j + 1])
        total = len(ks) * len(cs)
        carry: dict[int, dict[str, torch.Tensor]] = {}  # block -> rows [r, previous r + th) carried into this row
        copier = None
        if sink is not None:
            cuda = dev.type == "cuda"
            copier = _Copier(dev, pinned=cuda and all(_is_pinned(v) for v in sink.values()),
                             rowwise=True if _ROWWISE_ON_CPU else None)
        try:
            yield from self._stream_rows(ks, rs, cs, H, W, th, tw, y0, y1, C, bs, planes, wt, edges, total, carry, read,
                                         views, merge, blocks, proba, sink, copier, progress, should_cancel)
        finally:
            if copier is not None:
                copier.close()

    def _stream_rows(self, ks, rs, cs, H, W, th, tw, y0, y1, C, bs, planes, wt, edges, total, carry, read, views,
                     merge, blocks, proba, sink, copier, progress, should_cancel):
        dev = torch.device(self.device)
        done = 0
        for k in ks:
            r = rs[k]
            e = rs[k + 1] if k + 1 < len(rs) else H  # rows above e get no more windows
            img, valid = read(r, r + th)
            img = np.asarray(img)
            if img.shape != (th, W, 3):
                raise ValueError(f"read({r}, {r + th}) returned shape {img.shape}, expected {(th, W, 3)}")
            if valid is not None:
                valid = np.asarray(valid, bool)
                if valid.all():
                    valid = None
            band = _Band(th, tw, edges, planes, carry, dev)
            band.r, band.e, band.valid = r, e, valid
            if valid is not None:  # once per row, without stalling the device
                band.valid_t = to_device(valid, dev)
            band.out = (max(y0, r), min(y1, e))  # the rows this window row finishes (and that were asked for)
            band.carry_on = k != ks[-1] and e < r + th  # the next window row takes over rows [e, r + th)
            carry = band.carry_out
            finish = functools.partial(self._finish_blocks, band, C=C, blocks=blocks, proba=proba, sink=sink,
                                       copier=copier)
            cols = [j for j, c in enumerate(cs) if valid is None or valid[:, c : c + tw].any()]
            done += len(cs) - len(cols)
            if cols:
                bs = yield from self._run_row(img, cols, cs, th, tw, views, bs, merge, wt, band, finish, progress,
                                              should_cancel, done, total)
                done += len(cols)
            yield from finish(len(cs))
            for name, t in band.rows.items():  # row-wise sink: the row's finished rows, whole, to the host
                copier.put_rows(t, sink[name], *band.out)
            band.rows = {}
            if progress is not None:
                progress(done / total if total else 1.0, f"window {done}/{total}")
            a_out, b_out = band.out
            pieces, band, finish = band.pieces, None, None
            if pieces:  # whole-row strips: join the blocks, hand them out in pieces of ≤ STRIP_VALUES probabilities
                full = _join(pieces)
                step = max(1, STRIP_VALUES // (C * W))
                for a in range(a_out, b_out, step):
                    b = min(a + step, b_out)
                    yield full.rows(a, b)
                del full, pieces

    def _run_row(self, img, cols, cs, th, tw, views, bs, merge, wt, band, finish, progress, should_cancel, done,
                 total):
        """Run the windows ``cols`` (indices into ``cs``) of one window row (views × windows in batches of ``bs``)
        into the row's block buffers, yielding the blocks that each finished window completes.

        Returns the batch size to go on with (halved after running out of GPU memory)."""
        nv = len(views)
        if any(st < 0 for st in img.strides):
            img = img.copy(order="C")  # ascontiguousarray would keep a size-1 axis's negative stride
        # uint8 th×W×3, any strides: a band-major row read (3×th×W transposed) is not copied once more here
        x_row = to_device(img, self.device) if self._cuda else readonly_tensor(img)
        crops: dict[int, torch.Tensor] = {}  # normalised windows of the batches in flight only (not the whole row)

        def crop(c: int) -> torch.Tensor:
            if c not in crops:
                crops[c] = pad32(self._normalise_t(x_row[:, c : c + tw])[None])
            return crops[c]

        items = [(j, vi) for j in cols for vi in range(nv)]
        pending: dict[int, list] = {}
        C = self.num_classes
        has_dis, has_votes = "dis" in band.planes, "votes" in band.planes
        i = 0
        # Eager: equal batches of at most bs (a row of n inputs in ceil(n/bs) batches). Compiled: batches of one
        # size, min(bs, inputs of the first row run), the last one padded, so the compiled graph sees one shape
        # whatever the image (a new shape would recompile) and a small first image pads nothing.
        compiled = self._compiled_fn() is not None
        if compiled:  # one compiled batch shape for the predictor's life, fixed by the first row it runs
            if self._compiled_bs is None:
                self._compiled_bs = min(bs, len(items))
            bs = min(bs, self._compiled_bs)
        bs_row = bs if compiled else -(-len(items) // -(-len(items) // bs))
        while i < len(items):
            if should_cancel is not None and should_cancel():
                raise Cancelled("inference cancelled")
            batch = items[i : i + bs_row]
            inputs = [views[vi][1](crop(cs[j])) for j, vi in batch]
            try:
                logits = self._run_items(inputs, bs_row)
            except torch.cuda.OutOfMemoryError as e:
                bs = self._halved_after_oom(bs, e)  # kept for the rest of this image
                bs_row = bs if compiled else -(-(len(items) - i) // -(-(len(items) - i) // bs))
                continue
            for (j, vi), y in zip(batch, logits):
                if y.shape[1] != C:
                    raise SegHZError(f"model returned {y.shape[1]} classes, expected {C}")
                pending.setdefault(j, []).append(views[vi][2](y)[:, :, :th, :tw])
                if len(pending[j]) == nv:
                    crops.pop(cs[j], None)
                    outs = torch.cat(pending.pop(j))  # nv×C×th×tw logits, original orientation
                    p = outs.mean(0).softmax(0) if merge == "logits" else outs.softmax(1).mean(0)
                    band.add(j, "acc", p * wt)
                    band.add(j, "wsum", wt)
                    if has_dis and nv > 1:
                        band.add(j, "dis", (outs.argmax(1) != p.argmax(0)).float().mean(0) * wt)
                    if has_votes:
                        band.add(j, "votes", F.one_hot(p.argmax(0), C).permute(2, 0, 1).float())
                        band.add(j, "ncov", 1.0)
                    del outs, p
                    yield from finish(j + 1)  # no later window of this row touches the blocks up to j
            i += len(batch)
            del logits
            if progress is not None and i < len(items):
                f = (done + i / nv) / total
                progress(f, f"window {done + i // nv}/{total}")
        return bs

    def _finish_blocks(self, band: _Band, upto: int, *, C: int, blocks: bool, proba: bool, sink=None, copier=None):
        """Finish the blocks of ``band`` up to ``upto`` (no window left touches them): yield (``blocks=True``) or
        keep (``band.pieces``) their rows ``band.out``, and hand their rows ``[e, r + th)`` on to the next row."""
        r, e, valid = band.r, band.e, band.valid_t
        a_out, b_out = band.out
        for j in range(band.finished, upto):
            bb = band.take(j)
            x0, x1 = band.edges[j], band.edges[j + 1]
            if band.carry_on:
                band.carry_out[j] = {n: t[..., e - r :, :].clone() for n, t in bb.items()}
            if a_out < b_out:
                vb = None if valid is None else valid[:, x0:x1]
                step = max(1, STRIP_VALUES // (C * (x1 - x0))) if blocks else b_out - a_out
                for a in range(a_out, b_out, step):
                    b = min(a + step, b_out)
                    vab = None if vb is None else vb[a - r : b - r]
                    if sink is not None:
                        self._strip_into(sink, copier, band, a, b, r, bb, vab, x0)
                        continue
                    st = self._strip(a, b, r, bb, vab, proba, x0)
                    if blocks:
                        yield st
                    else:
                        band.pieces.append(st)
            del bb
        band.finished = max(band.finished, upto)

    @staticmethod
    def _strip(a, b, base, buf, valid, want_proba, x0=0) -> Strip:
        """Rows [a, b) of one block's buffers (which start at row ``base``) as finished outputs, computed on the device."""
        want = {"confidence", "entropy", "disagreement"} | ({"seam"} if "votes" in buf else set())
        out = _block_fields(buf, slice(a - base, b - base), valid, want | ({"proba"} if want_proba else set()))
        np_ = lambda f: None if f not in out else out[f].cpu().numpy()
        return Strip(a, b, np_("mask"), np_("confidence"), np_("entropy"), np_("disagreement"), np_("seam"), np_("proba"),
                     x0)

    @staticmethod
    def _strip_into(sink, copier, band, a, b, base, buf, valid, x0) -> None:
        """Like :meth:`_strip`, for the fields of ``sink`` only: copied into ``sink[...][..., a:b, x0:x1]``, or
        (``copier.rowwise``) into the row's full-width device buffers ``band.rows``, copied to the host whole when
        the window row is done."""
        out = _block_fields(buf, slice(a - base, b - base), valid, set(sink))
        x1 = x0 + out["mask"].shape[1]
        if not copier.rowwise:
            for name, t in out.items():
                copier.put(t, sink[name][..., a:b, x0:x1])
            return
        a_out, b_out = band.out
        for name, t in out.items():
            rb = band.rows.get(name)
            if rb is None:
                shape = (*sink[name].shape[:-2], b_out - a_out, sink[name].shape[-1])
                rb = band.rows[name] = torch.empty(shape, dtype=t.dtype, device=t.device)
            rb[..., a - a_out : b - a_out, x0:x1].copy_(t)

    def _image_stream(self, image, tta, progress, should_cancel, valid_mask, **kw):
        h, w = _image_hw(image)
        if h == 0 or w == 0:
            raise ValueError(f"image has zero pixels ({h}x{w})")
        valid = None
        if valid_mask is not None:
            valid = np.asarray(valid_mask)
            if valid.shape != (h, w):
                raise ValueError(f"valid_mask must have the image's shape {(h, w)}, got {valid.shape}")
            valid = valid.astype(bool)
            if not valid.any():
                raise ValueError("the region has no valid pixels (valid_mask is all False)")
        read = lambda r0, r1: (image[r0:r1], None if valid is None else valid[r0:r1])
        return self.stream(h, w, read, tta, progress=progress, should_cancel=should_cancel, **kw)

    # ------------------------------------------------------------------ public API

    def predict_proba(
        self,
        image: np.ndarray,
        tta: str | Iterable[str] = "none",
        progress: Callable[[float, str], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
        *,
        merge: str | None = None,
        blend: str | None = None,
    ) -> np.ndarray:
        """Class probabilities C×H×W (float32) for an RGB uint8 image H×W×3."""
        h, w = _image_hw(image)
        sink = host_outputs({"mask": ((h, w), np.uint8), "proba": ((self.num_classes, h, w), np.float32)}, self._cuda)
        for _ in self._image_stream(image, tta, progress, should_cancel, None, merge=merge, blend=blend, uncertainty=False,
                                    sink=sink):
            pass
        return sink["proba"]

    def predict(self, image: np.ndarray, tta="none", progress=None, should_cancel=None, **kw) -> tuple[np.ndarray, np.ndarray]:
        """(class-index mask uint8, confidence float32 = max probability)."""
        res = self.predict_full(image, tta, progress, should_cancel, **kw)
        return np.where(res.mask == 255, 0, res.mask).astype(np.uint8), res.confidence

    def predict_full(
        self,
        image: np.ndarray,
        tta: str | Iterable[str] = "none",
        progress: Callable[[float, str], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
        valid_mask: np.ndarray | None = None,
        seams: bool = False,
        *,
        return_proba: bool = False,
        merge: str | None = None,
        blend: str | None = None,
    ) -> PredictionResult:
        """Mask, confidence, entropy, view disagreement and (``seams=True``) window disagreement.

        ``valid_mask`` (H×W bool, False = nodata): those pixels get mask 255, confidence 0 and NaN
        uncertainty; windows with no valid pixel are not run through the model.
        """
        h, w = _image_hw(image)
        specs = {"mask": ((h, w), np.uint8), **{f: ((h, w), np.float32) for f in ("confidence", "entropy", "disagreement")}}
        if seams:
            specs["seam"] = ((h, w), np.float32)
        if return_proba:
            specs["proba"] = ((self.num_classes, h, w), np.float32)
        sink = host_outputs(specs, self._cuda)
        for _ in self._image_stream(image, tta, progress, should_cancel, valid_mask, merge=merge, blend=blend,
                                    uncertainty=True, seams=seams, sink=sink):
            pass
        return PredictionResult(sink["mask"], sink["confidence"], sink["entropy"], sink["disagreement"],
                                sink.get("seam"), sink.get("proba"))

    @torch.no_grad()
    def predict_many(
        self,
        images: Iterable[np.ndarray],
        tta: str | Iterable[str] = "none",
        progress: Callable[[int, float, str], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
        *,
        merge: str | None = None,
        blend: str | None = None,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """:meth:`predict` of each image of ``images`` in turn: yields its (class-index mask uint8, confidence
        float32) in the images' order, while the model runs the windows of several images in one batch.

        An image that fits in one window (height and width ≤ ``tile``) is one model input per TTA view; the inputs
        of consecutive such images of the same shape fill batches of :meth:`resolve_batch_size` inputs, so N of them
        with V views take ceil(N·V / batch) model calls (per image, :meth:`predict` takes ceil(V / batch): one
        call per scene without TTA, however small). A larger image first finishes the images before it, then goes
        through :meth:`predict` (its own windows batched as there). ``images`` is read lazily, about one batch
        ahead of the image yielded, so a generator that reads files one by one keeps few in memory.

        The values are :meth:`predict`'s for each image: the same inputs, views, merge, blending and outputs, in
        the same order of operations; only the batches the model sees differ. So they match bit for bit when the
        model's output for one input does not depend on the batch it runs in (the shipped GID checkpoint on the
        CPU: identical confusion matrices over 60 GID tiles). Kernels chosen per batch size can break that in
        the last bits: a random 3 → 8 channel convolution on the CPU (oneDNN, channels_last) moved confidences by
        6e-8; on CUDA, cuDNN's autotuned kernels and bf16 can do the same, and an argmax tie may flip.

        ``progress(index, fraction, message)``: ``index`` counts the images from 0 and never goes back; ``fraction``
        (of that image) is 1.0 once a single-window image is done, and the share of its views run after a batch
        that left it half done (so a caller that checks for a cancel there gets a chance every batch); it
        follows :meth:`predict` for a larger image.
        ``should_cancel()`` is checked before every batch (raises :class:`Cancelled`).
        """
        merge, blend = merge or self.merge, blend or self.blend
        self._check_settings(merge, blend)
        views = tta_views(tta)
        view_names = [v[0] for v in views]
        nv = len(views)
        tile, C = int(self.tile), self.num_classes
        dev = torch.device(self.device)
        bs = self.resolve_batch_size()
        weights: dict[tuple[int, int], torch.Tensor] = {}
        pending: list[dict] = []  # single-window images not yet yielded, in order
        queue: list[tuple[dict, int]] = []  # (image, view index) inputs not yet run, in order

        def run_batch() -> None:
            """Run the first inputs of ``queue`` as one batch (smaller after running out of GPU memory)."""
            nonlocal bs
            if should_cancel is not None and should_cancel():
                raise Cancelled("inference cancelled")
            size = bs
            if self._compiled_fn() is not None:  # one compiled batch shape for the predictor's life (see _run_row)
                if self._compiled_bs is None:
                    self._compiled_bs = bs
                size = min(bs, self._compiled_bs)
            batch = queue[:size]
            try:
                logits = self._run_items([views[vi][1](e["x"]) for e, vi in batch], size)
            except torch.cuda.OutOfMemoryError as err:
                bs = self._halved_after_oom(bs, err)
                return
            del queue[:size]
            for (e, vi), y in zip(batch, logits):
                if y.shape[1] != C:
                    raise SegHZError(f"model returned {y.shape[1]} classes, expected {C}")
                e["logits"].append(views[vi][2](y)[:, :, : e["th"], : e["tw"]])
                if len(e["logits"]) == nv:
                    e["x"] = None

        def finish(e: dict) -> dict[str, torch.Tensor]:
            """The one window of image ``e`` blended and finished as :meth:`_run_row` and :meth:`_finish_blocks` do."""
            th, tw = e["th"], e["tw"]
            outs = torch.cat(e.pop("logits"))  # nv×C×th×tw logits, original orientation
            p = outs.mean(0).softmax(0) if merge == "logits" else outs.softmax(1).mean(0)
            wt = weights.get((th, tw))
            if wt is None:
                wt = weights[(th, tw)] = torch.from_numpy(window_weights(th, tw, blend)).to(dev)
            band = _Band(th, tw, [0, tw], {"acc": C, "wsum": 0}, {}, dev)
            band.add(0, "acc", p * wt)
            band.add(0, "wsum", wt)
            return _block_fields(band.take(0), slice(0, th), None, {"confidence"})

        def done() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            """Yield the leading pending images whose views have all run (one device → host wait for them all)."""
            k = 0
            while k < len(pending) and "logits" in pending[k] and len(pending[k]["logits"]) == nv:
                k += 1
            if not k:
                return
            ready, pending[:k] = pending[:k], []
            outs = [finish(e) for e in ready]
            for e, out in zip(ready, outs):
                mask = out["mask"].cpu().numpy()
                res = np.where(mask == 255, 0, mask).astype(np.uint8), out["confidence"].cpu().numpy()
                if progress is not None:
                    progress(e["index"], 1.0, "window 1/1")
                yield res

        def drain(everything: bool) -> Iterator[tuple[np.ndarray, np.ndarray]]:
            while queue and (everything or len(queue) >= bs):
                run_batch()
                yield from done()
                first = pending[0] if pending else None  # views run of the first image not done: a report per batch
                if progress is not None and first is not None and 0 < len(first["logits"]) < nv:
                    k = len(first["logits"])
                    progress(first["index"], k / nv, f"window 1/1, view {k}/{nv}")
            yield from done()

        shape = None  # the padded input shape of the images in ``queue``
        for index, image in enumerate(images):
            h, w = _image_hw(image)
            if h == 0 or w == 0:
                raise ValueError(f"image {index} has zero pixels ({h}x{w})")
            if h > tile or w > tile:  # several windows: through predict, after the images before it
                yield from drain(True)
                sub = None if progress is None else (lambda f, m, i=index: progress(i, f, m))
                yield self.predict(image, view_names, sub, should_cancel, merge=merge, blend=blend)
                continue
            img = np.asarray(image)
            if any(st < 0 for st in img.strides):
                img = img.copy(order="C")
            x = to_device(img, dev) if self._cuda else readonly_tensor(img)
            x = pad32(self._normalise_t(x)[None])
            if shape is not None and tuple(x.shape) != shape:  # batches hold inputs of one shape
                yield from drain(True)
            shape = tuple(x.shape)
            e = {"index": index, "th": h, "tw": w, "x": x, "logits": []}
            pending.append(e)
            queue.extend((e, vi) for vi in range(nv))
            yield from drain(False)
        yield from drain(True)


__all__ = [
    "BLENDS",
    "COMPILE_CHOICES",
    "CPU_COMPILE_MIN_PX",
    "CUDA_COMPILE_MIN_PX",
    "D4_VIEWS",
    "MERGES",
    "TTA_MODES",
    "VIEWS",
    "VIEW_NAMES",
    "Cancelled",
    "PredictionResult",
    "Predictor",
    "Strip",
    "auto_batch_size",
    "check_compile_choice",
    "compile_pays",
    "compiler_available",
    "host_outputs",
    "pad32",
    "shard_rows",
    "sliding_windows",
    "tta_views",
    "want_compile",
    "window_rows",
    "window_weights",
]
