"""Label refinement from the model's own early-learning predictions, decided per region (issue 4).

In the spirit of ADELE (Liu et al., "Adaptive Early-Learning Correction for Segmentation from Noisy Annotations",
CVPR 2022), but region-wise: after an early-learning phase the training model (which fits the clean majority of the
labels before it memorises the noisy ones) predicts every training image, and whole label regions that it confidently
disagrees with are relabelled to its class. Pure functions (numpy / torch / OpenCV), no Streamlit.

* :func:`predict_probs` / :func:`iter_probs`: softmax C×H×W (float32) of a model in eval mode over whole training
  images (batched by image shape, padded to a multiple of 32, flip-averaged); images larger than ``max_side`` go
  through the sliding-window :class:`~seghz.infer.engine.Predictor`. The model is put back in train mode after.
* :func:`refine_labels`: one image's refined labels, ALWAYS from the original given labels (so errors do not
  compound over refinements). A region is a connected (8-connectivity) piece of ``{given == g} ∩ {argmax == c}``
  for ``c != g`` — i.e. a piece of one given component ``K`` of class ``g`` that the model calls ``c`` (a flipped
  component merged with a real neighbour of the same new class splits into the flipped part, predicted as its true
  class, and the rest, predicted as ``g``). ``S`` becomes ``c`` when ``|S| >= min_px``, ``mean p[c] over S >= conf``
  and ``mean p[g] over S < keep``. Then the pixel rule: a pixel (not relabelled) whose given label has probability
  < :data:`IGNORE_GIVEN_P` while the model's max probability is >= ``ignore_conf`` becomes ignore (255).
  Trusted pixels (analyst-corrected/confirmed) and 255 pixels never change.
"""
from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from seghz.classes import IGNORE
from seghz.infer.engine import pad32

REFINES = ("none", "region", "drop")
QUOTAS = ("fixed", "noise")  # refine="drop": per-class drop quota (RefineParams.quota)
IGNORE_GIVEN_P = 0.05  # pixel rule: the given label's probability below this ...


@dataclass(frozen=True)
class RefineParams:
    """The decision thresholds (TrainConfig ``refine_min_px``, ``refine_conf``, ``refine_keep``, ``refine_ignore_conf``;
    ``ignore_conf=None`` turns the pixel rule off)."""

    min_px: int = 16
    conf: float = 0.5
    keep: float = 0.2
    ignore_conf: float | None = 0.9
    rule: str = "region"  # "region": relabel pieces (refine_labels); "drop": ignore whole components (drop_components)
    max_drop: float = 0.5  # "drop": at most this fraction of a class's labelled pixels is dropped
    relabel_conf: float | None = None  # "drop": a dropped component whose top class has this mean probability is relabelled
    quota: str = "fixed"  # "drop": "fixed" = max_drop for every class; "noise" = confident-learning estimate, ≤ max_drop
    max_ratio: float = 1.0  # "drop": only components with p(given) / p(top) below this are dropped (1.0: every doubted one)

    @classmethod
    def of(cls, cfg) -> RefineParams:
        rule = "drop" if getattr(cfg, "refine", "region") == "drop" else "region"
        return cls(int(cfg.refine_min_px), float(cfg.refine_conf), float(cfg.refine_keep), cfg.refine_ignore_conf, rule,
                   float(getattr(cfg, "refine_max_drop", 0.5)), getattr(cfg, "refine_relabel_conf", None),
                   str(getattr(cfg, "refine_quota", "fixed")), float(getattr(cfg, "refine_drop_ratio", 1.0)))


# the default first refinement, as a fraction of the epochs: relabelling waits for the early-learning phase (a
# relabel the model gets wrong is then trained on); dropping starts after the first epoch (GID CPU proxy, seed 0,
# docs/experiments.md: starting at 0.1 / 0.2 / 0.4 of the epochs recovered 0.46 / 0.41 / 0.31 of the noise cost)
REFINE_START = {"region": 0.4, "drop": 0.1}


def refine_start(cfg) -> float:
    """The run's first-refinement fraction: ``cfg.refine_start``, or the default of its rule (:data:`REFINE_START`)."""
    v = getattr(cfg, "refine_start", None)
    return float(v) if v is not None else REFINE_START.get(getattr(cfg, "refine", "region"), 0.4)


def refine_epochs(epochs: int, start: float, every: int = 1) -> list[int]:
    """The epochs (1-based) at whose end labels are refined: ``e0 = max(1, ceil(start·epochs))``, then every
    ``every`` epochs, while ``e < epochs`` (the last epoch trains on the labels of the refinement before it)."""
    import math

    e0 = max(1, math.ceil(round(start * epochs, 9)))
    return list(range(e0, epochs, max(1, int(every))))


# ----------------------------------------------------------------------------- prediction


def _normalise(batch_u8: torch.Tensor, norm: dict) -> torch.Tensor:
    x = batch_u8.permute(0, 3, 1, 2).float().div_(255)
    m = torch.tensor(norm["mean"], dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(norm["std"], dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module):
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


def _logits(model, x: torch.Tensor, cuda: bool, amp: bool) -> torch.Tensor:
    x = x.contiguous(memory_format=torch.channels_last)
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if (cuda and amp) else contextlib.nullcontext()
    with ctx:
        y = model(x)
    if isinstance(y, (tuple, list)):  # models with auxiliary heads: the main logits first
        y = y[0]
    return y.float()


@torch.no_grad()
def iter_probs(model: torch.nn.Module, images: Sequence[np.ndarray], norm: dict, device: str, *, flip: bool = True,
               batch_size: int | None = None, max_side: int = 1024, tile: int = 512, amp: bool = True
               ) -> Iterator[tuple[int, np.ndarray]]:
    """``(index, softmax float32 C×H×W)`` for each RGB uint8 H×W×3 image, in index order within each shape group.

    Images of the same shape (at most ``max_side`` a side) run in batches of ``batch_size`` (default: 32 on CUDA,
    4 on the CPU); larger ones go through the sliding-window :class:`~seghz.infer.engine.Predictor` (``tile``).
    ``flip``: average of the identity and the left-right flipped view. bf16 autocast on CUDA (``amp``), fp32 on the
    CPU. The model runs in eval mode and gets its previous mode back afterwards."""
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    bs = int(batch_size or (32 if cuda else 4))
    groups: dict[tuple, list[int]] = {}
    big: list[int] = []
    for i, img in enumerate(images):
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"image {i} must be H×W×3, got {img.shape}")
        (big if max(img.shape[:2]) > max_side else groups.setdefault(tuple(img.shape[:2]), [])).append(i)
    with _eval_mode(model):
        for (h, w), idx in groups.items():
            for k in range(0, len(idx), bs):
                part = idx[k : k + bs]
                u8 = torch.from_numpy(np.stack([np.ascontiguousarray(images[i], dtype=np.uint8) for i in part]))
                x = pad32(_normalise(u8.to(dev, non_blocking=cuda), norm))
                p = _logits(model, x, cuda, amp).softmax(1)
                if flip:
                    p = p + _logits(model, x.flip(3), cuda, amp).softmax(1).flip(3)
                    p = p * 0.5
                p = p[:, :, :h, :w].cpu().numpy().astype(np.float32, copy=False)
                for j, i in enumerate(part):
                    yield i, p[j]
        if big:
            from seghz.infer.engine import Predictor

            pred = Predictor(model, _num_classes(model, images[big[0]], norm, dev, cuda, amp), tuple(norm["mean"]),
                             tuple(norm["std"]), tile=tile, device=str(dev), batch_size=max(1, bs // 4), amp=amp)
            for i in big:
                yield i, pred.predict_proba(images[i], "flip" if flip else "none").astype(np.float32, copy=False)


def _num_classes(model, img, norm, dev, cuda, amp) -> int:
    x = pad32(_normalise(torch.from_numpy(np.ascontiguousarray(img[:32, :32], dtype=np.uint8))[None].to(dev), norm))
    return int(_logits(model, x, cuda, amp).shape[1])


def predict_probs(model: torch.nn.Module, image: np.ndarray, norm: dict, device: str, **kw) -> np.ndarray:
    """Softmax float32 C×H×W of one RGB uint8 H×W×3 image (see :func:`iter_probs` for the options)."""
    ((_, probs),) = iter_probs(model, [image], norm, device, **kw)  # runs the generator to its end (train mode back)
    return probs


# ----------------------------------------------------------------------------- refinement


def region_pieces(given: np.ndarray, pred: np.ndarray, cand: np.ndarray, nc: int):
    """The regions of the rules: for each (given class g, predicted class c) among the ``cand`` pixels, the
    8-connected pieces of ``cand ∩ {given == g} ∩ {pred == c}``. Yields ``(g, c, mask, ids, size)``: the pixels of
    that pair, each one's piece id (1..n), and the piece sizes (float, index 0 = background, set to 1 so that
    means over it are finite; it is never a real piece)."""
    if not cand.any():
        return
    key = given.astype(np.int32) * nc + pred
    for k in np.unique(key[cand]):
        g, c = divmod(int(k), nc)
        mask = cand & (key == k)
        n, lab = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        if n <= 1:
            continue
        ids = lab[mask]
        size = np.bincount(ids, minlength=n).astype(np.float64)
        size[0] = 1.0
        yield g, c, mask, ids, size


def _label_and_probs(given, probs) -> tuple[np.ndarray, np.ndarray]:
    """``(given, probs)`` as arrays (probs float32), checked: labels H×W, probabilities C×H×W of the same size."""
    given = np.asarray(given)
    if given.ndim != 2:
        raise ValueError(f"labels must be H×W, got {given.shape}")
    probs = np.asarray(probs, dtype=np.float32)
    if probs.ndim != 3 or probs.shape[1:] != given.shape:
        raise ValueError(f"probs must be C×H×W matching the labels {given.shape}, got {probs.shape}")
    return given, probs


def refine_labels(given: np.ndarray, probs: np.ndarray, trusted: np.ndarray | None = None,
                  cfg: RefineParams | None = None) -> tuple[np.ndarray, dict]:
    """Refined copy of the ``given`` labels (uint8 H×W, 255 = ignore) from the model's ``probs`` (C×H×W).

    Returns ``(labels, stats)``; stats hold pixel counts ``labelled`` (given != 255), ``relabelled``, ``ignored`` and
    ``regions`` (the number of relabelled regions). See the module doc for the rules. ``given`` is never modified.
    """
    cfg = cfg or RefineParams()
    given, probs = _label_and_probs(given, probs)
    nc = probs.shape[0]
    labelled = given != IGNORE
    if labelled.any() and int(given[labelled].max()) >= nc:
        raise ValueError(f"labels hold class index >= {nc} (the number of probability planes)")
    free = labelled if trusted is None else labelled & ~np.asarray(trusted, dtype=bool)
    out = given.astype(np.uint8, copy=True)
    pred = probs.argmax(0).astype(np.uint8)
    cand = free & (pred != given)
    changed = np.zeros(given.shape, bool)
    regions = 0
    for g, c, mask, ids, size in region_pieces(given, pred, cand, nc):
        pc = np.bincount(ids, weights=probs[c][mask], minlength=len(size)) / size
        pg = np.bincount(ids, weights=probs[g][mask], minlength=len(size)) / size
        ok = (size >= cfg.min_px) & (pc >= cfg.conf) & (pg < cfg.keep)
        ok[0] = False
        if ok.any():
            sel = np.zeros(given.shape, bool)
            sel[mask] = ok[ids]
            out[sel] = c
            changed |= sel
            regions += int(ok.sum())
    ignored = np.zeros(given.shape, bool)
    if cfg.ignore_conf is not None:
        rest = free & ~changed
        if rest.any():
            pgiven = np.take_along_axis(probs, np.where(labelled, given, 0)[None].astype(np.int64), 0)[0]
            ignored = rest & (pgiven < IGNORE_GIVEN_P) & (probs.max(0) >= cfg.ignore_conf)
            out[ignored] = IGNORE
    return out, {"labelled": int(labelled.sum()), "relabelled": int(changed.sum()), "ignored": int(ignored.sum()),
                 "regions": regions}


def _class_components(given: np.ndarray, nc: int):
    """For each class present in ``given`` (not 255): ``(g, lab, n)`` with ``lab`` the 8-connected component ids
    (0 = other pixels, 1..n-1) of ``given == g``."""
    labelled = given != IGNORE
    if labelled.any() and int(given[labelled].max()) >= nc:
        raise ValueError(f"labels hold class index >= {nc} (the number of probability planes)")
    for g in np.unique(given[labelled]):
        n, lab = cv2.connectedComponents((given == g).astype(np.uint8), connectivity=8)
        if n > 1:
            yield int(g), lab, n


def _component_means(given: np.ndarray, probs: np.ndarray, trusted: np.ndarray | None, min_px: int):
    """Per class ``g`` present in ``given``: ``(g, ids, px, mean)`` over its 8-connected components of at least
    ``min_px`` pixels with at least one untrusted pixel: component ids, untrusted pixel counts (float), and the mean
    probability of every class over each whole component (nc × len(ids))."""
    given, probs = _label_and_probs(given, probs)
    nc = probs.shape[0]
    free = None if trusted is None else ~np.asarray(trusted, dtype=bool)
    for g, lab, n in _class_components(given, nc):
        mask = lab > 0
        ids = lab[mask]
        size = np.bincount(ids, minlength=n).astype(np.float64)
        px = size if free is None else np.bincount(ids, weights=free[mask], minlength=n)
        keep = (size >= min_px) & (px > 0)
        keep[0] = False
        if not keep.any():
            continue
        k = np.flatnonzero(keep)
        mean = np.stack([np.bincount(ids, weights=probs[c][mask], minlength=n)[k] for c in range(nc)]) / size[k]
        yield g, k, px[k], mean


def _doubts_of(parts) -> list[tuple]:
    out = []
    for g, ids, px, mean in parts:
        arg, top = mean.argmax(0), mean.max(0)
        out += [(g, int(ids[j]), int(px[j]), float(mean[g, j] / max(top[j], 1e-12)), int(arg[j]), float(top[j]))
                for j in np.flatnonzero(arg != g)]
    return out


def _table_of(parts, nc: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0), np.zeros((0, nc))
    return (np.concatenate([np.full(len(i), g, np.int64) for g, i, _, _ in parts]),
            np.concatenate([px for _, _, px, _ in parts]), np.concatenate([m.T for _, _, _, m in parts]))


def component_doubts(given: np.ndarray, probs: np.ndarray, trusted: np.ndarray | None, min_px: int) -> list[tuple]:
    """The doubted components of one image: ``(g, id, droppable px, ratio, top, p_top)`` for each 8-connected
    component of a given class ``g`` (≥ ``min_px`` pixels) whose class is not the most probable one of the
    component's mean probability; ``ratio`` = mean p[g] / max mean p (< 1, lower = more doubted), ``top`` that most
    probable class and ``p_top`` its mean probability. Trusted pixels do not count."""
    return _doubts_of(_component_means(given, probs, trusted, min_px))


def component_table(given: np.ndarray, probs: np.ndarray, trusted: np.ndarray | None, min_px: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every component of one image (as :func:`component_doubts`, doubted or not): ``(g, px, mean)`` arrays —
    given class (int), untrusted pixels (float) and mean probabilities (N × nc) — the input of
    :func:`confident_noise_rates`."""
    return _table_of(list(_component_means(given, probs, trusted, min_px)), np.asarray(probs).shape[0])


def _doubts_and_table(given, probs, trusted, min_px: int, want_table: bool):
    """:func:`component_doubts` and (when ``want_table``) :func:`component_table` from one component labelling."""
    parts = list(_component_means(given, probs, trusted, min_px))
    return _doubts_of(parts), (_table_of(parts, np.asarray(probs).shape[0]) if want_table else None)


def confident_noise_rates(g: np.ndarray, px: np.ndarray, mean: np.ndarray, nc: int) -> np.ndarray:
    """Estimated fraction of each given class's labelled pixels that belong to another class, from the confident
    joint of confident learning (Northcutt et al., JAIR 2021) over label components weighted by their pixels.

    Threshold ``t_j`` = the mean probability of class ``j`` over the components labelled ``j`` (the class's average
    self-confidence). A component labelled ``g`` counts towards ``C[g, j]`` for the most probable class ``j`` among
    those whose mean probability reaches ``t_j`` (no class reaches its threshold: not counted). The rate of ``g`` is
    the off-diagonal share of row ``g``, ``1 − C[g, g] / Σ_j C[g, j]`` (0 for a class with no counted component).
    ``g`` / ``px`` / ``mean``: as :func:`component_table` (concatenated over images)."""
    g = np.asarray(g, dtype=np.int64)
    px = np.asarray(px, dtype=np.float64)
    mean = np.asarray(mean, dtype=np.float64).reshape(len(g), nc)
    t = np.full(nc, np.inf)
    for j in range(nc):
        sel = g == j
        if px[sel].sum() > 0:
            t[j] = float((mean[sel, j] * px[sel]).sum() / px[sel].sum())
    ok = mean >= t[None, :] - 1e-9  # "reaches": a class's components that all share one mean reach its threshold
    score = np.where(ok, mean, -1.0)
    j = score.argmax(1)
    counted = ok.any(1)
    joint = np.zeros((nc, nc))
    np.add.at(joint, (g[counted], j[counted]), px[counted])
    rows = joint.sum(1)
    return np.where(rows > 0, 1.0 - np.diag(joint) / np.maximum(rows, 1e-12), 0.0)


def select_drops(doubts: Sequence[tuple], labelled_px: Sequence[int] | np.ndarray,
                 max_drop: float | Sequence[float] | np.ndarray, max_ratio: float = 1.0) -> set:
    """Which doubted components to drop: per class, the most doubted first (lowest ratio), each as long as the class
    keeps at least ``1 − max_drop`` of its labelled pixels (one that would go past that is skipped, a smaller, less
    doubted one may still fit). ``doubts``: ``(key, g, px, ratio)``; ``max_drop``: one fraction for every class, or
    one per class index; components whose ratio is not below ``max_ratio`` are never chosen (the model prefers
    another class, but not by much); returns the chosen keys.

    The quota guards against a class collapsing: a class the model has not learned yet (or confuses with a larger
    one) would otherwise lose every component, never be trained on again, and vanish from the predictions."""
    per_class = np.ndim(max_drop) > 0
    chosen = set()
    used: dict[int, int] = {}
    for key, g, px, r in sorted(doubts, key=lambda d: (d[3], d[1], d[0])):
        if r >= max_ratio:
            continue
        cap = float(max_drop[g] if per_class else max_drop) * float(labelled_px[g])  # type: ignore[index]
        if used.get(g, 0) + px <= cap:
            used[g] = used.get(g, 0) + px
            chosen.add(key)
    return chosen


def drop_caps(params: RefineParams, tables: Sequence[tuple], nc: int, labelled_px: Sequence[int] | np.ndarray
              ) -> tuple[float | np.ndarray, np.ndarray | None]:
    """``(quota, rates)``: the per-class drop quota as a fraction of each class's labelled pixels, and the estimated
    noise rates. Quota ``"fixed"``: ``(max_drop, None)``. Quota ``"noise"``: each class's
    :func:`confident_noise_rates` estimate — a fraction of the untrusted pixels of its components of at least
    ``min_px`` (the table's ``px``) — turned into pixels of that set and then into a fraction of ``labelled_px``
    (which also counts trusted pixels and small components), capped at ``max_drop``. ``tables``:
    :func:`component_table` of each image."""
    if params.quota != "noise":
        return params.max_drop, None
    if not tables:
        return np.zeros(nc), np.zeros(nc)
    g, px, mean = (np.concatenate([t[i] for t in tables]) for i in range(3))
    rates = confident_noise_rates(g, px, mean.reshape(-1, nc), nc)
    judged = np.bincount(g, weights=px, minlength=nc)[:nc]
    lab = np.zeros(nc)
    lp = np.asarray(labelled_px, dtype=np.float64)[:nc]
    lab[: len(lp)] = lp
    quota = np.where(lab > 0, rates * judged / np.maximum(lab, 1), 0.0)
    return np.minimum(quota, params.max_drop), rates


def _apply_drops(given: np.ndarray, trusted: np.ndarray | None, keys: dict, nc: int) -> np.ndarray:
    """``given`` with each component ``(g, id)`` of ``keys`` set to its value there (255 = ignore, or a class)
    (trusted pixels kept)."""
    given = np.asarray(given)
    out = given.astype(np.uint8, copy=True)
    if not keys:
        return out
    new = np.full(out.shape, -1, np.int16)
    for g, lab, n in _class_components(given, nc):
        ids = [(k, v) for (gg, k), v in keys.items() if gg == g]
        if ids:
            lut = np.full(n, -1, np.int16)
            for k, v in ids:
                lut[k] = v
            sel = lab > 0
            new[sel] = lut[lab[sel]]
    if trusted is not None:
        new[np.asarray(trusted, dtype=bool)] = -1
    out[new >= 0] = new[new >= 0].astype(np.uint8)
    return out


def _verdicts(chosen: set, doubts: Sequence[tuple], relabel_conf: float | None) -> dict:
    """``key -> new value`` of the chosen components: 255, or the top class when ``relabel_conf`` is set and its
    mean probability reaches it. ``doubts``: ``(key, g, px, ratio, top, p_top)``."""
    out = {}
    for key, _g, _px, _r, top, ptop in doubts:
        if key in chosen:
            out[key] = top if (relabel_conf is not None and ptop >= relabel_conf) else IGNORE
    return out


def drop_components(given: np.ndarray, probs: np.ndarray, trusted: np.ndarray | None = None,
                    cfg: RefineParams | None = None) -> tuple[np.ndarray, dict]:
    """Copy of the ``given`` labels with the doubted label components set to ignore (255) (or, with ``relabel_conf``,
    relabelled to their most probable class when its mean probability reaches it).

    A component is an 8-connected region of one given class ``g`` (of at least ``min_px`` pixels). It is doubted
    when ``g`` is not the most probable class of the component's mean probability (``probs`` C×H×W): the model,
    pooled over the whole region, prefers another class. Component noise (a polygon drawn with the wrong class) is
    decided as a unit, so pixel-level disagreement inside a correct region does not drop it. At most ``max_drop``
    of each class's labelled pixels are dropped, the most doubted components first (:func:`select_drops`; in
    training the quota is over the whole training set, see :func:`refine_samples`). Trusted pixels and 255 never
    change. Stats as :func:`refine_labels` (``regions`` = dropped components, ``relabelled`` = 0)."""
    cfg = cfg or RefineParams(rule="drop")
    doubts, table = _doubts_and_table(given, probs, trusted, cfg.min_px, cfg.quota == "noise")
    nc = np.asarray(probs).shape[0]
    labelled = np.asarray(given) != IGNORE
    counts = np.bincount(np.asarray(given)[labelled].ravel(), minlength=nc)
    keyed = [((g, k), g, px, r, t, pt) for g, k, px, r, t, pt in doubts]
    caps, _ = drop_caps(cfg, [table] if table is not None else [], nc, counts)
    keys = _verdicts(select_drops([d[:4] for d in keyed], counts, caps, cfg.max_ratio), keyed, cfg.relabel_conf)
    out = _apply_drops(given, trusted, keys, nc)
    ign = labelled & (out == IGNORE)
    return out, {"labelled": int(labelled.sum()), "relabelled": int((labelled & ~ign & (out != given)).sum()),
                 "ignored": int(ign.sum()), "regions": len(keys)}


def labels_digest(labels: Sequence[np.ndarray]) -> str:
    """SHA-1 over the shapes and bytes of a list of label maps (to check that a resumed run has the same labels)."""
    h = hashlib.sha1()
    for lb in labels:
        a = np.ascontiguousarray(lb, dtype=np.uint8)
        h.update(f"{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def refine_samples(model: torch.nn.Module, samples: Sequence[tuple], norm: dict, device: str, params: RefineParams,
                   **kw) -> tuple[list[np.ndarray], dict]:
    """Refined labels for every ``(image, label[, trusted])`` sample (from the ORIGINAL labels in ``samples``) and the
    totals: ``refined_px`` / ``refine_ignored_px`` = fractions of the labelled pixels, plus the raw counts. With the
    ``drop`` rule the per-class quota ``max_drop`` is over the whole training set (one prediction pass collects the
    doubted components of every image, then the most doubted of each class are dropped)."""
    out: list[np.ndarray | None] = [None] * len(samples)
    tot = {"labelled": 0, "relabelled": 0, "ignored": 0, "regions": 0}
    if params.rule == "drop":
        doubts, counts, nc, tables = [], None, 0, []
        for i, p in iter_probs(model, [s[0] for s in samples], norm, device, **kw):
            s = samples[i]
            nc = p.shape[0]
            tr = s[2] if len(s) > 2 else None
            dbt, table = _doubts_and_table(s[1], p, tr, params.min_px, params.quota == "noise")
            doubts += [((i, g, k), g, px, r, t, pt) for g, k, px, r, t, pt in dbt]
            if table is not None:
                tables.append(table)
        for s in samples:
            lb = np.asarray(s[1])
            c = np.bincount(lb[lb != IGNORE].ravel(), minlength=nc)
            counts = c if counts is None else counts + c[: len(counts)]
        counts = counts if counts is not None else np.zeros(nc, np.int64)
        caps, rates = drop_caps(params, tables, nc, counts)
        keys = _verdicts(select_drops([d[:4] for d in doubts], counts, caps, params.max_ratio), doubts,
                         params.relabel_conf)
        tot["noise_rates"] = None if rates is None else [round(float(c), 4) for c in rates]
        per_image: dict[int, dict] = {}
        for (j, g, k), v in keys.items():
            per_image.setdefault(j, {})[(g, k)] = v
        for i, s in enumerate(samples):
            mine = per_image.get(i, {})
            out[i] = _apply_drops(s[1], s[2] if len(s) > 2 else None, mine, nc)
            labelled = np.asarray(s[1]) != IGNORE
            ign = labelled & (out[i] == IGNORE)
            tot["labelled"] += int(labelled.sum())
            tot["ignored"] += int(ign.sum())
            tot["relabelled"] += int((labelled & ~ign & (out[i] != np.asarray(s[1]))).sum())
        tot["regions"] = len(keys)
    else:
        for i, p in iter_probs(model, [s[0] for s in samples], norm, device, **kw):
            s = samples[i]
            out[i], st = refine_labels(s[1], p, s[2] if len(s) > 2 else None, params)
            for k in tot:
                tot[k] += st[k]
    den = max(1, tot["labelled"])
    return out, {"refined_px": tot["relabelled"] / den, "refine_ignored_px": tot["ignored"] / den, **tot}  # type: ignore[return-value]


__all__ = ["IGNORE_GIVEN_P", "QUOTAS", "REFINES", "REFINE_START", "RefineParams", "component_doubts", "component_table",
           "confident_noise_rates", "drop_caps", "drop_components",
           "iter_probs", "labels_digest", "predict_probs", "refine_epochs", "refine_labels", "refine_samples",
           "refine_start", "region_pieces", "select_drops"]
