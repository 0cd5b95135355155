"""Losses of the study's recipe, each selectable through :class:`LossConfig`. ignore = 255 throughout.

Components (all work on logits ``N×C×H×W`` and class-index targets ``N×H×W``):

* **CE** with optional class weights (:func:`class_weights`: none, ENet ``1/ln(1.02+f)``, or inverse frequency).
  Weighted means divide by the sum of the weights of the pixels counted, as ``torch.nn.functional.cross_entropy``.
* **Label smoothing ε**, the study's form: target ``1−ε`` on the true class and ``ε/(C−1)`` on each other class.
* **Dice** (multi-class, softmax) added to CE with a weight.
* **Noise mask**: pixels whose CE ``−ln p(gt)`` exceeds a threshold are dropped (the study's ``Thre_CELoss``). The
  threshold is constant or follows :func:`noise_threshold` (cosine from ``−ln 0.01`` to ``−ln 0.1``). Trusted
  pixels (corrected / confirmed by an analyst) are never dropped. ``denominator="all"`` keeps dropped pixels in the
  mean's denominator as zeros (as the study did), ``"kept"`` divides by the kept pixels only. Unlike the study,
  ignored pixels never count in the denominator, and the threshold is compared with the *unweighted* ``−ln p(gt)``
  (the study compared the class-weighted loss, so class weights moved the threshold).
* **OHEM**: keep pixels whose true-class probability is below ``thresh`` (0.7), and at least the ``min_kept``
  hardest pixels (ties included in a fixed order, so the kept set is never empty unless every pixel is ignored).
* **Bootstrapping** (Reed et al., ICLR 2015 workshop, "Training deep neural networks on noisy labels with
  bootstrapping"): the per-pixel target becomes ``β·label + (1−β)·prediction``. ``"soft"``: the prediction is the
  softmax ``p`` itself (gradients flow through both terms, as in the paper: the extra term is ``(1−β)·H(p)``);
  ``"hard"``: the one-hot of ``argmax p``. The label part keeps label smoothing. Trusted pixels keep ``β = 1``.
  The noise mask and OHEM still select pixels by the *label's* ``−ln p(gt)``. Reed et al. used β = 0.95 (soft)
  and β = 0.8 (hard).
* **Forward loss correction** (``robust="forward"``; Patrini et al., CVPR 2017, "Making deep neural networks robust
  to label noise: a loss correction approach"): the NLL of the *corrected* distribution ``p̃ = Tᵀ·softmax(logits)``
  (``p̃_j = Σ_i p_i T[i, j]``, computed as ``logsumexp_i(ln p_i + ln T[i, j])``) against the noisy label, with the
  symmetric transition matrix of :func:`forward_transition`: ``T[i, j] = P(noisy label j | true class i)`` is
  ``1−η`` on the diagonal and ``η/(K−1)`` between the K classes present in the training labels; a class absent from
  them keeps an identity row and column (no mass leaks to or from it, so the loss pushes its probability down as
  CE does; a label of an absent class gets plain CE). η = ``noise_rate`` must be in ``[0, (K−1)/K)`` (at
  ``(K−1)/K`` T is uniform: the labels carry no information). Nothing changes at inference: the plain softmax is
  the clean estimate. The per-pixel loss is bounded by ``−ln(η/(K−1)) − ln Σ_{i present} p_i``.
  ``noise_transition`` replaces the symmetric T by an explicit one, e.g. counted by :func:`estimate_transition`
  from the pixels an analyst reviewed (the label as given vs the label after review: Hendrycks et al., NeurIPS
  2018, "Using trusted data to train deep networks on labels corrupted by severe noise", with direct counts).
* **Generalized cross entropy** (``robust="gce"``; Zhang & Sabuncu, NeurIPS 2018): ``(1 − p_y^q)/q`` with
  ``q = gce_q`` in (0, 1] (q → 0 is CE, q = 1 is MAE), computed as ``−expm1(q·ln p_y)/q``.
  Both robust losses: trusted pixels keep plain (smoothed) CE; class weights weigh a pixel by its (noisy) label's
  class as for CE; label smoothing mixes the per-class terms with the smoothed target (``−Σ_j s_j ln p̃_j`` and
  ``Σ_j s_j (1 − p_j^q)/q``); Dice is added unchanged. They cannot be combined with the noise mask, OHEM or
  bootstrapping (each is another rule for the same noisy pixels; :meth:`LossConfig.validate` refuses them).
* **Multi-view consistency** (:func:`consistency_loss`): loss on a random rot90 view mapped back, plus MSE between
  the logits of the two views.
* **Co-teaching** (Han et al. 2018; :meth:`SegLoss.pair_loss`): two networks train side by side on the same batch;
  each one's CE counts only the pixels its *peer* finds easiest (smallest CE), and the share left out rises linearly
  from 0 to the forget rate ``coteach`` over the first ``coteach_ramp`` of the run's steps
  (:func:`coteach_keep`). ``coteach_select="class"`` ranks the pixels within each given class of the batch, so a
  rare or still unlearnt class keeps its (1 − rate) share instead of being dropped whole as the hardest;
  ``"pixel"`` ranks all the batch's pixels together (the paper's rule). Trusted pixels are never left out. The
  means divide by the kept pixels' weights; Dice, when on, sees only the kept pixels. It cannot be combined with the
  noise mask, OHEM, bootstrapping, the consistency loss or a robust loss (other rules for the same pixels).
* **Early-learning regularisation** (``elr`` = λ > 0; Liu et al., NeurIPS 2020, "Early-learning regularization
  prevents memorization of noisy labels", in the form of their ELR+ whose targets come from a weight average):
  adds ``λ · mean log(1 − ⟨p, t⟩)`` over the labelled pixels (:func:`elr_term`), where ``p`` is the model's softmax
  and ``t`` the softmax of a *teacher*, the moving average of the weights (``TrainConfig.ema``), on the same batch,
  without gradient. Early in training a network fits the clean majority first, and the averaged weights keep that
  early fit; the term pulls ``p`` towards it, which cancels the CE gradient on pixels whose label disagrees with the
  teacher (the flips) and adds to it where they agree. Trusted and ignored pixels: trusted pixels get the term too
  (it only pulls towards the teacher, and the label's CE stays); ignored pixels are left out. It runs one more
  forward pass per step (the teacher's). The teacher's weight ``m`` rises from 0 to 1 over ``elr_warmup`` of the
  run's steps, as the paper's temporal targets gain mass from zero. Measured on 30 % flipped GID labels (CPU proxy,
  λ 3, 3 seeds; docs/experiments.md "Session 16"): it collapses training (the model and its average settle on a
  confident map that ignores the labels; without the warm-up from the first epochs on), −1.13 ± 0.35 of the noise
  cost.
  Not offered on the Train page.

:class:`SegLoss` builds the combination; ``SegLoss(weights, dice)`` keeps the v1 signature.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F

from seghz.classes import IGNORE

CLASS_WEIGHT_MODES = ("none", "enet", "inverse")
NOISE_MODES = ("none", "cos", "const")
NOISE_DENOMINATORS = ("all", "kept")
BOOTSTRAP_MODES = ("none", "soft", "hard")
ROBUST_MODES = ("none", "forward", "gce")
ELR_FLOOR = 1e-4  # 1 − ⟨p, t⟩ is clamped to at least this before the log (⟨p, t⟩ → 1 when both are one-hot)
COTEACH_SELECT = ("class", "pixel")
LN100 = math.log(100.0)
LN10 = math.log(10.0)


def enet_class_weights(freqs: np.ndarray, c: float = 1.02) -> np.ndarray:
    """The study's class weights ``w = 1 / ln(c + f)`` for class pixel frequencies ``f``."""
    f = np.asarray(freqs, np.float64)
    return (1.0 / np.log(c + f)).astype(np.float32)


def class_weights(freqs: np.ndarray, mode: str = "enet", names: list[str] | None = None) -> np.ndarray | None:
    """Class weights from training pixel frequencies ``f`` (they need not sum to 1; they are normalised).

    * ``"none"``: None (plain CE).
    * ``"enet"``: ``1 / ln(1.02 + f)``; an absent class gets ``1/ln 1.02`` ≈ 50.5, finite by construction.
    * ``"inverse"``: ``1 / (K·f)`` with K the number of present classes, so that uniform frequencies give 1 and
      the pixel-averaged weight ``Σ f·w`` is 1. An absent class gets the largest weight of the present classes.

    A class absent from training (f = 0) raises a ``UserWarning`` naming it (in every mode); its weight stays finite.
    """
    if mode not in CLASS_WEIGHT_MODES:
        raise ValueError(f"unknown class weighting '{mode}'; choose one of {', '.join(CLASS_WEIGHT_MODES)}")
    f = np.asarray(freqs, np.float64)
    if f.ndim != 1 or not np.all(np.isfinite(f)) or np.any(f < 0):
        raise ValueError("class frequencies must be a 1-D array of finite non-negative numbers")
    total = f.sum()
    if total <= 0:
        raise ValueError("class frequencies are all zero: the training labels hold no labelled pixel")
    f = f / total
    absent = np.flatnonzero(f == 0)
    if absent.size:
        label = [names[i] if names is not None and i < len(names) else str(i) for i in absent]
        warnings.warn(f"class(es) absent from the training labels: {', '.join(label)}"
                      + ("" if mode == "none" else "; their class weight is kept finite"), UserWarning, stacklevel=2)
    if mode == "none":
        return None
    if mode == "enet":
        return enet_class_weights(f)
    present = f > 0
    w = np.zeros_like(f)
    w[present] = 1.0 / (present.sum() * f[present])
    w[~present] = w[present].max()
    return w.astype(np.float32)


def noise_threshold(epoch: float, epochs: int, p_start: float = 0.01, p_end: float = 0.1) -> float:
    """Cosine noise-mask threshold: ``−ln p_start`` at epoch 0 down to ``−ln p_end`` at ``epoch == epochs``.

    ``thre = −ln p_end + 0.5·(−ln p_start + ln p_end)·(1 + cos(π·epoch/epochs))``; with the defaults
    ``ln 10 + 0.5·(ln 100 − ln 10)·(1 + cos(π·epoch/E))``. A pixel counts as a noisy label when
    ``p(gt) < exp(−thre)``, so the cut-off probability rises from ``p_start`` to ``p_end``. The trainer passes the
    1-based epoch (as the study did), so the last epoch uses ``−ln p_end``. Epochs outside [0, E] are clamped.
    """
    if epochs < 1:
        raise ValueError("epochs must be >= 1")
    t = min(max(epoch / epochs, 0.0), 1.0)
    hi, lo = -math.log(p_start), -math.log(p_end)
    return lo + 0.5 * (hi - lo) * (1 + math.cos(math.pi * t))


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Multi-class soft Dice on softmax probabilities, ignore pixels excluded, averaged over classes present."""
    c = logits.shape[1]
    valid = (target != IGNORE).unsqueeze(1).float()
    prob = logits.float().softmax(1) * valid
    onehot = F.one_hot(target.clamp(max=c - 1).long(), c).permute(0, 3, 1, 2).float() * valid
    dims = (0, 2, 3)
    inter = (prob * onehot).sum(dims)
    denom = prob.sum(dims) + onehot.sum(dims)
    present = onehot.sum(dims) > 0
    # mean over the present classes without a host sync (no boolean index, no .any()): 0 when none is present.
    # An absent class gets denominator 1, so its (unused) dice is finite and no NaN reaches the value or the gradient.
    dice = (2 * inter + eps) / torch.where(present, denom + eps, torch.ones_like(denom))
    return torch.where(present, 1 - dice, torch.zeros_like(dice)).sum() / present.sum().clamp_min(1)


def _checked_target(target: torch.Tensor, c: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(target as long, valid = not ignored, target with ignored pixels set to class 0)``; checks the indices."""
    target = target.long()
    valid = target != IGNORE
    # the range check reads a value back from the device: on CUDA it would stall every step (the trainer checks its
    # samples' class indices once, before training), so it runs where it is free, on the CPU
    if not target.is_cuda and bool(((target < 0) | (target >= c))[valid].any()):
        raise ValueError(f"target holds class indices outside [0, {c}) other than the ignore value {IGNORE}")
    return target, valid, torch.where(valid, target, torch.zeros_like(target))


def _smoothed(term_y: torch.Tensor, term_sum: Callable[[], torch.Tensor], smoothing: float, c: int) -> torch.Tensor:
    """``Σ_j s_j ℓ_j`` for the smoothed target ``s`` (``1−ε`` on the label, ``ε/(C−1)`` elsewhere).

    ``term_y`` is ``ℓ_y`` (``N×H×W``), ``term_sum()`` gives ``Σ_j ℓ_j`` (only called when ε > 0).
    """
    if smoothing <= 0:
        return term_y
    if c < 2:
        raise ValueError("label smoothing needs at least 2 classes")
    rest = term_sum() - term_y  # Σ_{j≠y} ℓ_j
    return (1 - smoothing) * term_y + smoothing / (c - 1) * rest


def pixel_ce(logits: torch.Tensor, target: torch.Tensor, smoothing: float = 0.0, bootstrap: str = "none",
             beta: float = 1.0, trusted: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pixel losses ``(nll, loss, valid)``, each ``N×H×W``.

    ``nll = −ln p(gt)``; ``loss`` is the smoothed CE ``−Σ_c q_c ln p_c`` with ``q = 1−ε`` on the true class and
    ``ε/(C−1)`` elsewhere (equal to ``nll`` when ε = 0). Both are 0 at ignored pixels; ``valid`` marks the others.
    ``bootstrap`` ``"soft"`` / ``"hard"`` (Reed et al. 2015) makes ``loss = β·(smoothed CE) + (1−β)·(−Σ_c r_c ln p_c)``
    with ``r = p`` (soft) or ``onehot(argmax p)`` (hard); ``trusted`` pixels keep the plain (smoothed) CE.
    """
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"label smoothing must be in [0, 1), got {smoothing}")
    if bootstrap not in BOOTSTRAP_MODES:
        raise ValueError(f"unknown bootstrap mode '{bootstrap}'; choose one of {', '.join(BOOTSTRAP_MODES)}")
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"bootstrap beta must be in [0, 1], got {beta}")
    c = logits.shape[1]
    target, valid, t = _checked_target(target, c)
    logp = logits.float().log_softmax(1)
    nll = -logp.gather(1, t.unsqueeze(1)).squeeze(1)
    loss = _smoothed(nll, lambda: -logp.sum(1), smoothing, c)
    if bootstrap != "none" and beta < 1.0:
        if bootstrap == "soft":
            self_term = -(logp.exp() * logp).sum(1)  # H(p), gradients through both factors (Reed et al.)
        else:
            self_term = -logp.max(1).values  # −ln p(argmax p)
        b = torch.full_like(nll, float(beta))
        if trusted is not None:
            b = torch.where(trusted.to(b.device).bool(), torch.ones_like(b), b)
        loss = b * loss + (1 - b) * self_term
    zero = torch.zeros_like(nll)
    return torch.where(valid, nll, zero), torch.where(valid, loss, zero), valid


def _pixel_weights(target: torch.Tensor, valid: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    if weight is None:
        return valid.float()
    t = torch.where(valid, target.long(), torch.zeros_like(target, dtype=torch.long))
    return weight.to(target.device, torch.float32)[t] * valid.float()


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den``, 0 (still in the graph) when nothing is counted."""
    return num / den.clamp_min(1e-12)


def noise_mask_ce(
    logits: torch.Tensor,
    target: torch.Tensor,
    threshold: float,
    weight: torch.Tensor | None = None,
    trusted: torch.Tensor | None = None,
    denominator: str = "all",
    smoothing: float = 0.0,
    bootstrap: str = "none",
    beta: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise-mask CE. Returns ``(loss, dropped_fraction)``.

    Pixels with ``−ln p(gt) > threshold`` are dropped unless ``trusted``. ``denominator="all"``: the mean divides by
    all labelled pixels (dropped ones count as zeros, the study's choice); ``"kept"``: by the kept pixels only.
    ``dropped_fraction`` = dropped / labelled pixels (a detached 0-d tensor).
    """
    if denominator not in NOISE_DENOMINATORS:
        raise ValueError(f"unknown noise-mask denominator '{denominator}'; choose 'all' or 'kept'")
    nll, loss, valid = pixel_ce(logits, target, smoothing, bootstrap, beta, trusted)
    drop = valid & (nll.detach() > threshold)
    if trusted is not None:
        drop &= ~trusted.to(drop.device).bool()
    keep = valid & ~drop
    w = _pixel_weights(target, valid, weight)
    num = (loss * w * keep).sum()
    den = w.sum() if denominator == "all" else (w * keep).sum()
    frac = drop.sum().float() / valid.sum().clamp_min(1).float()
    return _ratio(num, den), frac.detach()


def ohem_ce(
    logits: torch.Tensor,
    target: torch.Tensor,
    thresh: float = 0.7,
    min_kept: int = 20000,
    weight: torch.Tensor | None = None,
    smoothing: float = 0.0,
    bootstrap: str = "none",
    beta: float = 1.0,
    trusted: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Online hard example mining CE over the whole batch. Returns ``(loss, kept_fraction)``.

    Kept: labelled pixels with ``p(gt) < max(thresh, p_(min_kept))`` where ``p_(k)`` is the k-th smallest
    true-class probability — i.e. every pixel below ``thresh`` plus the ``min_kept`` hardest pixels (all of them
    when fewer are labelled). Ties are broken by a stable order, so exactly ``min_kept`` are kept when no pixel is
    below ``thresh``. The loss is the (class-weighted) mean over the kept pixels.
    """
    nll, loss, valid = pixel_ce(logits, target, smoothing, bootstrap, beta, trusted)
    p = torch.exp(-nll.detach())
    keep = valid & (p < thresh)
    n = int(valid.sum())
    k = min(int(min_kept), n)
    if k > 0:
        pv = p[valid]
        order = torch.sort(pv, stable=True).indices[:k]
        kv = keep[valid]
        kv[order] = True
        keep = keep.clone()
        keep[valid] = kv
    w = _pixel_weights(target, valid, weight)
    frac = keep.sum().float() / max(n, 1)
    return _ratio((loss * w * keep).sum(), (w * keep).sum()), frac.detach()


def coteach_keep(peer_nll: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, rate: float,
                 trusted: torch.Tensor | None = None, per_class: bool = True) -> torch.Tensor:
    """The pixels a network trains on under co-teaching: ``valid`` minus the ``floor(rate · n)`` pixels with the
    largest ``peer_nll`` (the peer network's CE against the given label) in each group of ``n`` judged pixels.

    A group is a given class of the batch (``per_class``) or the whole batch. Trusted pixels are neither judged nor
    left out. Exactly ``floor(rate · n)`` pixels leave each group (ties broken by ``torch.topk``).
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"the co-teaching forget rate must be in [0, 1), got {rate}")
    keep = valid.clone()
    if rate <= 0.0:
        return keep
    judged = valid if trusted is None else valid & ~trusted.to(valid.device).bool()
    flat_nll, flat_judged, flat_keep = peer_nll.detach().reshape(-1), judged.reshape(-1), keep.view(-1)
    tflat = target.reshape(-1)
    classes = torch.unique(tflat[flat_judged]).tolist() if per_class else [None]
    for c in classes:
        group = flat_judged if c is None else flat_judged & (tflat == c)
        pos = group.nonzero().squeeze(1)
        drop = int(math.floor(rate * pos.numel()))
        if drop == 0:
            continue
        worst = pos[torch.topk(flat_nll[pos], drop).indices]
        flat_keep[worst] = False
    return keep


def forward_transition(c: int, noise_rate: float, present: np.ndarray | torch.Tensor | None = None) -> torch.Tensor:
    """The symmetric noise transition matrix ``T`` (``C×C``, float64) of forward correction.

    ``T[i, j] = P(noisy label j | true class i)``. Between the K classes ``present`` in the training labels (all C
    when None): ``1−η`` on the diagonal and ``η/(K−1)`` elsewhere. A class absent from them keeps an identity row
    and column, so no mass flows to or from it. Every row sums to 1. η must be in ``[0, (K−1)/K)``: at
    ``(K−1)/K`` every row is uniform and the noisy label says nothing about the true class; K must be >= 2.
    """
    pres = np.ones(c, bool) if present is None else np.asarray(torch.as_tensor(present).cpu(), bool).reshape(-1)
    if pres.shape != (c,):
        raise ValueError(f"the present-class vector has {pres.size} entries for {c} classes")
    k = int(pres.sum())
    if k < 2:
        raise ValueError(f"forward loss correction needs at least 2 classes present in the training labels (got {k})")
    eta = float(noise_rate)
    if not (math.isfinite(eta) and 0.0 <= eta < (k - 1) / k):
        raise ValueError(f"noise_rate η must be in [0, (K−1)/K) = [0, {(k - 1) / k:.4f}) for K = {k} present classes "
                         f"(got {noise_rate})")
    t = np.eye(c)
    idx = np.flatnonzero(pres)
    t[np.ix_(idx, idx)] = eta / (k - 1)
    t[idx, idx] = 1.0 - eta
    return torch.from_numpy(t)


def check_transition(t, c: int | None = None) -> np.ndarray:
    """``t`` as a float64 ``C×C`` array if it is a valid transition matrix (finite, >= 0, every row summing to 1
    within 1e-3, a positive diagonal; ``c`` classes when given), else ValueError saying what is wrong."""
    try:
        a = np.asarray(t, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"noise_transition must be a square matrix of numbers ({e})") from None
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] < 2:
        raise ValueError(f"noise_transition must be a square C×C matrix with C >= 2 (got shape {a.shape})")
    if c is not None and a.shape[0] != c:
        raise ValueError(f"noise_transition is {a.shape[0]}×{a.shape[0]} but the scheme has {c} classes")
    if not np.isfinite(a).all() or (a < 0).any():
        raise ValueError("noise_transition entries must be finite probabilities >= 0")
    sums = a.sum(1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > 1e-3)
    if bad.size:
        raise ValueError(f"every row of noise_transition must sum to 1 (row {int(bad[0])} sums to {sums[bad[0]]:.4f})")
    if (np.diag(a) <= 0).any():
        raise ValueError(f"noise_transition needs a positive diagonal (class {int(np.flatnonzero(np.diag(a) <= 0)[0])} "
                         "is never labelled as itself: its labels say nothing about it)")
    return a


def estimate_transition(given, reviewed, c: int, masks=None, prior_regions: float = 20.0,
                        floor: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """Count the label-noise matrix of forward correction from reviewed pixels.

    ``given`` and ``reviewed`` are sequences of ``H×W`` class-index arrays (255 = ignore): the labels as they came
    and after an analyst reviewed them (corrected or confirmed). Only pixels labelled in both (and True in
    ``masks``, e.g. the trusted masks, when given) count. Returns ``(T, counts)``: ``counts[i, j]`` = pixels
    reviewed as class ``i`` that were given label ``j``, and ``T[i, j] ≈ P(given j | true i)``.

    Label errors come in regions (a mislabelled field is wrong all over), so pixel counts rest on far fewer
    independent cases than pixels. Each class's counted row is therefore shrunk towards the symmetric matrix of
    the pooled error rate η̂ (all reviewed pixels, every class; :func:`forward_transition` over the classes seen)
    with weight ``m / (m + prior_regions)``, ``m`` = the 8-connected regions of that class in the reviewed maps:
    a class reviewed in 2 regions mostly keeps the pooled rate, one reviewed in 200 its own. A class never reviewed
    keeps an identity row, a class never seen at all too. Entries of every shrunk row are floored at ``floor``
    (then renormalised) so that no label is impossible. The estimate is as good as the sample: pixels reviewed
    because the model doubted them over-state the noise; whole reviewed tiles do not.
    """
    import cv2

    given, reviewed = list(given), list(reviewed)
    masks = None if masks is None else list(masks)
    if len(given) != len(reviewed) or (masks is not None and len(masks) != len(given)):
        raise ValueError("estimate_transition needs as many given as reviewed label maps (and masks)")
    counts = np.zeros((c, c), np.int64)
    regions = np.zeros(c, np.int64)
    for n, (g, r) in enumerate(zip(given, reviewed)):
        g, r = np.asarray(g), np.asarray(r)
        if g.shape != r.shape:
            raise ValueError(f"label map {n}: given {g.shape} and reviewed {r.shape} differ in shape")
        ok = (g != IGNORE) & (r != IGNORE)
        if masks is not None:
            ok &= np.asarray(masks[n], bool)
        gi, ri = g[ok].astype(np.int64), r[ok].astype(np.int64)
        if gi.size and (gi.max() >= c or ri.max() >= c):
            raise ValueError(f"label map {n} holds a class index >= {c}")
        counts += np.bincount(ri * c + gi, minlength=c * c).reshape(c, c)
        for k in np.unique(ri):
            regions[k] += cv2.connectedComponents(((r == k) & ok).astype(np.uint8), connectivity=8)[0] - 1
    t = np.eye(c)
    n_i = counts.sum(1)
    seen = n_i > 0
    k = int(seen.sum())
    if k == 0:
        return t, counts
    eta = float((counts.sum() - np.trace(counts)) / counts.sum())
    sym = forward_transition(c, min(eta, (k - 1) / k - 1e-6), seen).numpy() if k >= 2 else np.eye(c)
    for i in np.flatnonzero(seen):
        lam = regions[i] / (regions[i] + prior_regions) if prior_regions > 0 else 1.0
        row = np.maximum(lam * counts[i] / n_i[i] + (1 - lam) * sym[i], floor)
        t[i] = row / row.sum()
    return t, counts


def forward_ce(logits: torch.Tensor, target: torch.Tensor, transition: torch.Tensor, smoothing: float = 0.0,
               trusted: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel forward-corrected CE ``(loss, valid)``, each ``N×H×W`` (Patrini et al. 2017).

    ``loss = −ln p̃_y`` with ``ln p̃_j = logsumexp_i(ln p_i + ln T[i, j])`` (``transition`` = T, ``C×C``; zeros
    of T are exact ``−inf`` in log space, so η = 0 gives plain CE). With label smoothing ε the loss is
    ``−Σ_j s_j ln p̃_j``. ``trusted`` pixels get the plain (smoothed) CE. 0 at ignored pixels.
    """
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"label smoothing must be in [0, 1), got {smoothing}")
    c = logits.shape[1]
    if tuple(transition.shape) != (c, c):
        raise ValueError(f"the transition matrix is {tuple(transition.shape)} for {c} classes")
    _, valid, t = _checked_target(target, c)
    logp = logits.float().log_softmax(1)
    log_t = transition.to(logp.device, torch.float32).log()  # −inf where T = 0
    if smoothing > 0:
        # every ln p̃_j: N×C(i)×C(j)×H×W, reduced over i
        logq = torch.logsumexp(logp.unsqueeze(2) + log_t[None, :, :, None, None], dim=1)
        nll_q = -logq.gather(1, t.unsqueeze(1)).squeeze(1)
        loss = _smoothed(nll_q, lambda: -logq.sum(1), smoothing, c)
    else:
        # only the label's column: ln T[i, y] per pixel, N×C(i)×H×W
        col = log_t.t()[t].permute(0, 3, 1, 2)
        loss = -torch.logsumexp(logp + col, dim=1)
    if trusted is not None:
        nll = -logp.gather(1, t.unsqueeze(1)).squeeze(1)
        ce = _smoothed(nll, lambda: -logp.sum(1), smoothing, c)
        loss = torch.where(trusted.to(loss.device).bool(), ce, loss)
    return torch.where(valid, loss, torch.zeros_like(loss)), valid


def ramp_share(step: int, total: int, fraction: float) -> float:
    """A linear ramp from 0 to 1 over the first ``fraction`` of ``total`` steps, at (0-based) ``step``:
    ``min(1, step / max(1, fraction · total))``; 1 from the start when ``fraction`` is 0. Co-teaching's forget rate
    and ELR's teacher weight follow it."""
    if fraction <= 0:
        return 1.0
    return min(1.0, step / max(1.0, fraction * max(1, total)))


def elr_term(logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor, mass: float = 1.0) -> torch.Tensor:
    """Early-learning regularisation (Liu et al. 2020): ``mean log(1 − ⟨softmax(logits), m·softmax(teacher)⟩)`` over
    the pixels whose target is not ignore (0 when there are none), with the teacher's mass ``m`` = ``mass`` in
    [0, 1]. The teacher gets no gradient; ``1 − ⟨p, m·t⟩`` is clamped to at least :data:`ELR_FLOOR`. With
    ``t' = m·t`` its gradient with respect to the logits is ``−(p ⊙ t' − ⟨p, t'⟩ p) / (1 − ⟨p, t'⟩)`` per pixel: it
    raises the classes the teacher believes in more than the model does."""
    if not 0.0 <= mass <= 1.0:
        raise ValueError(f"the teacher's mass must be in [0, 1], got {mass!r}")
    if teacher_logits.shape != logits.shape:
        raise ValueError(f"the teacher's logits {tuple(teacher_logits.shape)} must match the model's {tuple(logits.shape)}")
    valid = target != IGNORE
    p = torch.softmax(logits.float(), dim=1)
    t = torch.softmax(teacher_logits.detach().float(), dim=1) * float(mass)
    dot = (p * t).sum(dim=1)
    per = torch.log((1.0 - dot).clamp_min(ELR_FLOOR))
    return _ratio((per * valid).sum(), valid.sum().float())


def generalized_ce(logits: torch.Tensor, target: torch.Tensor, q: float = 0.7, smoothing: float = 0.0,
                   trusted: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel generalized cross entropy ``(loss, valid)``, each ``N×H×W`` (Zhang & Sabuncu 2018).

    ``loss = (1 − p_y^q)/q``, computed as ``−expm1(q·ln p_y)/q`` (exact as q → 0, where it tends to CE);
    ``q = 1`` is MAE (``1 − p_y``). With label smoothing ε: ``Σ_j s_j (1 − p_j^q)/q``. ``trusted`` pixels get the
    plain (smoothed) CE. 0 at ignored pixels.
    """
    if not (isinstance(q, (int, float)) and 0.0 < q <= 1.0):
        raise ValueError(f"GCE q must be in (0, 1], got {q}")
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"label smoothing must be in [0, 1), got {smoothing}")
    c = logits.shape[1]
    _, valid, t = _checked_target(target, c)
    logp = logits.float().log_softmax(1)
    lp_y = logp.gather(1, t.unsqueeze(1)).squeeze(1)
    loss = _smoothed(-torch.expm1(q * lp_y) / q, lambda: (-torch.expm1(q * logp) / q).sum(1), smoothing, c)
    if trusted is not None:
        ce = _smoothed(-lp_y, lambda: -logp.sum(1), smoothing, c)
        loss = torch.where(trusted.to(loss.device).bool(), ce, loss)
    return torch.where(valid, loss, torch.zeros_like(loss)), valid


def gce_warmup_q(epoch: int, epochs: int, q: float, warmup: float) -> float:
    """GCE's q during ``epoch`` (1-based) of ``epochs`` when it rises linearly from 0 over the fraction ``warmup``.

    ``q · min(1, (epoch − 1) / (warmup · epochs))``: 0 (plain CE) in the first epoch, the full q from epoch
    ``warmup · epochs + 1`` on; ``warmup = 0`` gives q throughout."""
    if warmup <= 0:
        return float(q)
    return float(q) * min(1.0, max(0.0, (epoch - 1) / (warmup * max(epochs, 1))))


def consistency_loss(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    logits: torch.Tensor,
    k: int | None = None,
    weight: float = 1.0,
    ce_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    generator: torch.Generator | None = None,
    return_parts: bool = False,
):
    """Multi-view consistency (the study's self-supervision step).

    Rotates the batch by ``k``·90° (``k`` random in 1..3 when None), runs ``model`` on it and rotates the output
    back. Returns ``ce_fn(back, y) + weight · MSE(back, logits)``; ``ce_fn`` defaults to mean CE with ignore.
    The MSE is on raw logits over all pixels and elements, with gradients through both views (as the study).
    ``return_parts=True`` returns ``(total, ce, mse)``.
    """
    if k is None:
        k = int(torch.randint(1, 4, (1,), generator=generator).item())
    if k % 4 == 0:
        raise ValueError("the consistency view needs a rotation k not divisible by 4")
    back = torch.rot90(model(torch.rot90(x, k, dims=(2, 3))), -k, dims=(2, 3))
    if back.shape != logits.shape:
        raise ValueError(f"the rotated view's logits {tuple(back.shape)} do not match {tuple(logits.shape)}")
    if ce_fn is None:
        _, loss, valid = pixel_ce(back, y)
        ce = _ratio(loss.sum(), valid.sum().float())
    else:
        ce = ce_fn(back, y)
    mse = F.mse_loss(back.float(), logits.float())
    total = ce + weight * mse
    return (total, ce, mse) if return_parts else total


@dataclass
class LossConfig:
    """Which loss terms a training run uses (the loss part of the training recipe)."""

    class_weights: str = "none"  # none | enet (1/ln(1.02+f)) | inverse (1/(K f)); applied by the caller's weights
    dice: bool = False
    dice_weight: float = 1.0
    label_smoothing: float = 0.0
    noise_mask: str = "none"  # none | cos (cosine schedule) | const
    noise_p_start: float = 0.01  # cos: threshold −ln p_start at epoch 0 ...
    noise_p_end: float = 0.1  # ... down to −ln p_end at the last epoch
    noise_threshold: float = LN100  # const: the fixed threshold on −ln p(gt)
    noise_denominator: str = "all"  # all (dropped pixels stay in the mean's denominator, the study) | kept
    ohem: bool = False
    ohem_thresh: float = 0.7
    ohem_min_kept: int = 20000
    consistency: bool = False
    consistency_weight: float = 1.0
    bootstrap: str = "none"  # none | soft (target β·label + (1−β)·p) | hard (β·label + (1−β)·onehot(argmax p))
    bootstrap_beta: float = 0.8  # β, the label's share (Reed et al.: 0.95 soft, 0.8 hard)
    robust: str = "none"  # none | forward (loss correction with symmetric T, Patrini et al.) | gce (Zhang & Sabuncu)
    noise_rate: float = 0.3  # forward: η, the expected share of flipped labels; in [0, (K−1)/K) for K present classes
    # forward: an explicit C×C transition matrix T[i][j] = P(given label j | true class i) (rows sum to 1) instead of
    # the symmetric one of noise_rate, e.g. from estimate_transition over reviewed pixels; None: symmetric
    noise_transition: list | None = None
    gce_q: float = 0.7  # gce: q in (0, 1] (q → 0: CE, q = 1: MAE)
    # gce: q rises linearly from 0 (plain CE in the first epoch) to gce_q over this fraction of the epochs (0: off).
    # GCE's gradient is scaled by p_y^q, so a model that starts from scratch (every p small) learns slowly under it;
    # the flips are memorised late, so the robust loss is needed late
    gce_warmup: float = 0.0
    # co-teaching: the forget rate (share of each group's pixels left out, once ramped up; 0: off). A second network
    # is trained beside the model; each trains on the pixels its peer finds easiest
    coteach: float = 0.0
    coteach_ramp: float = 0.2  # the forget rate rises linearly from 0 over this fraction of the run's steps
    coteach_select: str = "class"  # rank pixels within each given class of the batch ("class") or all together
    # early-learning regularisation: λ of elr_term against the moving average of the weights (0: off; needs a teacher)
    elr: float = 0.0
    # the teacher's weight m in ⟨p, m·t⟩ rises linearly from 0 to 1 over this fraction of the run's steps (0: m = 1 at
    # once). The paper's targets are temporal averages that start at zero, so their mass grows the same way; with
    # m = 1 from the first step the teacher equals the model and the term rewards any confident prediction
    elr_warmup: float = 0.3

    @classmethod
    def from_dict(cls, d: dict) -> LossConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown loss option(s): {', '.join(unknown)}")
        cfg = cls(**d)
        cfg.validate()
        return cfg

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> None:
        if self.class_weights not in CLASS_WEIGHT_MODES:
            raise ValueError(f"class_weights must be one of {', '.join(CLASS_WEIGHT_MODES)} (got '{self.class_weights}')")
        if self.noise_mask not in NOISE_MODES:
            raise ValueError(f"noise_mask must be one of {', '.join(NOISE_MODES)} (got '{self.noise_mask}')")
        if self.noise_denominator not in NOISE_DENOMINATORS:
            raise ValueError(f"noise_denominator must be 'all' or 'kept' (got '{self.noise_denominator}')")
        if not (isinstance(self.label_smoothing, (int, float)) and 0.0 <= self.label_smoothing < 1.0):
            raise ValueError(f"label_smoothing ε must be in [0, 1) (got {self.label_smoothing})")
        if not (0.0 < self.noise_p_start < 1.0 and 0.0 < self.noise_p_end < 1.0):
            raise ValueError("noise_p_start and noise_p_end are probabilities in (0, 1)")
        if not (math.isfinite(self.noise_threshold) and self.noise_threshold > 0):
            raise ValueError(f"noise_threshold must be a positive number (a CE value, e.g. −ln 0.01 = {LN100:.3f})")
        if not 0.0 < self.ohem_thresh <= 1.0:
            raise ValueError(f"ohem_thresh is a probability in (0, 1] (got {self.ohem_thresh})")
        if int(self.ohem_min_kept) != self.ohem_min_kept or self.ohem_min_kept < 0:
            raise ValueError(f"ohem_min_kept must be a non-negative integer (got {self.ohem_min_kept})")
        if self.bootstrap not in BOOTSTRAP_MODES:
            raise ValueError(f"bootstrap must be one of {', '.join(BOOTSTRAP_MODES)} (got '{self.bootstrap}')")
        if not (isinstance(self.bootstrap_beta, (int, float)) and 0.0 <= self.bootstrap_beta <= 1.0):
            raise ValueError(f"bootstrap_beta β must be in [0, 1] (got {self.bootstrap_beta})")
        if self.ohem and self.noise_mask != "none":
            raise ValueError("OHEM and the noise mask select pixels in opposite ways; enable only one of them")
        if self.robust not in ROBUST_MODES:
            raise ValueError(f"robust (noise-robust loss) must be one of {', '.join(ROBUST_MODES)} (got '{self.robust}')")
        if not (isinstance(self.noise_rate, (int, float)) and math.isfinite(self.noise_rate) and 0.0 <= self.noise_rate < 1.0):
            raise ValueError(f"noise_rate η must be in [0, 1), and below (K−1)/K for the K classes present in the "
                             f"training labels (got {self.noise_rate})")
        if self.noise_transition is not None:
            check_transition(self.noise_transition)
        if not (isinstance(self.gce_q, (int, float)) and 0.0 < self.gce_q <= 1.0):
            raise ValueError(f"gce_q must be in (0, 1] (q → 0 is CE, q = 1 is MAE; got {self.gce_q})")
        if not (isinstance(self.gce_warmup, (int, float)) and 0.0 <= self.gce_warmup <= 1.0):
            raise ValueError(f"gce_warmup is a fraction of the epochs in [0, 1] (got {self.gce_warmup})")
        if self.robust != "none":
            other = [name for name, on in (("the noise mask", self.noise_mask != "none"), ("OHEM", self.ohem),
                                           ("bootstrapping", self.bootstrap != "none")) if on]
            if other:
                raise ValueError(f"the noise-robust loss robust='{self.robust}' replaces the per-pixel CE; it cannot be "
                                 f"combined with {' or '.join(other)} (another rule for the same noisy pixels): "
                                 "enable only one of them")
        if not (isinstance(self.coteach, (int, float)) and not isinstance(self.coteach, bool)
                and 0.0 <= self.coteach < 1.0):
            raise ValueError(f"coteach (the co-teaching forget rate; 0 = off) must be in [0, 1) (got {self.coteach!r})")
        if not (isinstance(self.coteach_ramp, (int, float)) and 0.0 < self.coteach_ramp <= 1.0):
            raise ValueError(f"coteach_ramp is a fraction of the run's steps in (0, 1] (got {self.coteach_ramp!r})")
        if self.coteach_select not in COTEACH_SELECT:
            raise ValueError(f"coteach_select must be one of {', '.join(COTEACH_SELECT)} (got '{self.coteach_select}')")
        if self.coteach > 0:
            other = [name for name, on in (("the noise mask", self.noise_mask != "none"), ("OHEM", self.ohem),
                                           ("bootstrapping", self.bootstrap != "none"),
                                           ("the consistency loss", self.consistency),
                                           (f"robust='{self.robust}'", self.robust != "none")) if on]
            if other:
                raise ValueError(f"co-teaching chooses which pixels each network trains on; it cannot be combined "
                                 f"with {' or '.join(other)}: enable only one of them")
        if isinstance(self.elr, bool) or not (isinstance(self.elr, (int, float)) and math.isfinite(self.elr)
                                               and self.elr >= 0):
            raise ValueError(f"elr (λ of the early-learning regularisation; 0 = off) must be a finite number >= 0 "
                             f"(got {self.elr!r})")
        if not (isinstance(self.elr_warmup, (int, float)) and not isinstance(self.elr_warmup, bool)
                and 0.0 <= self.elr_warmup <= 1.0):
            raise ValueError(f"elr_warmup is a fraction of the run's steps in [0, 1] (got {self.elr_warmup!r})")
        if self.elr > 0 and self.coteach > 0:
            raise ValueError("co-teaching and the early-learning regularisation both decide how the flipped pixels are "
                             "handled; enable only one of them")
        for name in ("dice_weight", "consistency_weight"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number >= 0 (got {v})")


class SegLoss(torch.nn.Module):
    """The configured loss: CE (class weights, label smoothing, noise mask, OHEM or a noise-robust loss) + optional Dice.

    ``SegLoss(weights, dice)`` is the v1 form (weighted CE + Dice). ``SegLoss(weights, config=LossConfig(...))``
    selects the rest; ``present`` (a boolean vector over the classes, e.g. ``freqs > 0`` of the training labels)
    fixes the K classes of forward correction's transition matrix (default: every class of the logits). Call :meth:`set_epoch` once per epoch for the cosine noise threshold; after each call
    :attr:`last_stats` holds detached tensors (``noise_dropped`` / ``ohem_kept``). :meth:`model_loss` runs the
    model and adds the consistency term when enabled.
    """

    def __init__(self, weights: np.ndarray | None = None, dice: bool = False, config: LossConfig | None = None,
                 present: np.ndarray | None = None):
        super().__init__()
        cfg = config if config is not None else LossConfig(dice=dice)
        if config is not None and dice:
            cfg = LossConfig(**{**cfg.to_dict(), "dice": True})
        cfg.validate()
        self.config = cfg
        self.register_buffer("weight", None if weights is None else torch.as_tensor(np.asarray(weights), dtype=torch.float32))
        if self.weight is not None and not bool(torch.isfinite(self.weight).all()):
            raise ValueError("class weights must be finite")
        # forward correction: the classes present in the training labels (None: every class of the logits)
        self.present = None if present is None else np.asarray(present, bool).reshape(-1).copy()
        transition = None
        if cfg.robust == "forward" and cfg.noise_transition is not None:
            transition = torch.from_numpy(check_transition(cfg.noise_transition)).float()
        elif cfg.robust == "forward" and self.present is not None:
            transition = forward_transition(self.present.size, cfg.noise_rate, self.present).float()
        self.register_buffer("transition", transition)
        self.threshold = cfg.noise_threshold if cfg.noise_mask == "const" else noise_threshold(0, 1, cfg.noise_p_start, cfg.noise_p_end)
        self.gce_q = 0.0 if cfg.gce_warmup > 0 else cfg.gce_q  # the q in use (0: plain CE); set_epoch moves it
        self.last_stats: dict[str, torch.Tensor] = {}
        self.coteach_rate = 0.0  # co-teaching: the forget rate of the current step (set_progress moves it)
        self.elr_mass = ramp_share(0, 1, cfg.elr_warmup)  # ELR: the teacher's mass of the current step (set_progress)

    @property
    def dice(self) -> bool:
        return self.config.dice

    def set_epoch(self, epoch: int, epochs: int) -> float:
        """Set (and return) the noise threshold of this epoch (1-based epoch as in the study, or 0).

        Also sets GCE's q of the epoch: with ``gce_warmup`` = w, ``q = gce_q · min(1, (epoch − 1) / (w · epochs))``
        (plain CE while it is 0)."""
        c = self.config
        self.gce_q = gce_warmup_q(epoch, epochs, c.gce_q, c.gce_warmup)
        if c.noise_mask == "cos":
            self.threshold = noise_threshold(epoch, epochs, c.noise_p_start, c.noise_p_end)
        elif c.noise_mask == "const":
            self.threshold = c.noise_threshold
        return self.threshold

    def set_progress(self, step: int, total: int) -> float:
        """Set (and return) co-teaching's forget rate before optimiser step ``step`` (0-based) of ``total``:
        ``coteach · min(1, step / (coteach_ramp · total))``; also the ELR teacher's mass
        ``min(1, step / (elr_warmup · total))`` (1 when ``elr_warmup`` is 0)."""
        c = self.config
        self.coteach_rate = float(c.coteach) * ramp_share(step, total, c.coteach_ramp)
        self.elr_mass = ramp_share(step, total, c.elr_warmup)
        return self.coteach_rate

    def pair_loss(self, model, peer, x: torch.Tensor, y: torch.Tensor,
                  trusted: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Co-teaching: run both networks on ``x``; each one's loss counts the pixels its peer finds easiest
        (:func:`coteach_keep` at :attr:`coteach_rate`). Returns ``(mean of the two losses, model's logits)``;
        :attr:`last_stats` gets ``coteach_dropped`` (share of the labelled pixels left out of the model's loss) and
        ``coteach_disagree`` (share of the labelled pixels kept for one network and not for the other)."""
        self.last_stats = {}
        target = y.long()
        la, lb = model(x), peer(x)
        with torch.no_grad():
            nll_a, _, valid = pixel_ce(self._resize(la, target).detach(), target)
            nll_b, _, _ = pixel_ce(self._resize(lb, target).detach(), target)
            per_class = self.config.coteach_select == "class"
            keep_a = coteach_keep(nll_b, target, valid, self.coteach_rate, trusted, per_class)  # the peer picks for A
            keep_b = coteach_keep(nll_a, target, valid, self.coteach_rate, trusted, per_class)
        # each network's configured loss (CE with class weights and smoothing, + Dice) with the pixels left out of
        # it set to ignore: LossConfig.validate allows no other pixel rule beside co-teaching
        ignore = torch.full_like(target, IGNORE)
        ya, yb = torch.where(keep_a, target, ignore), torch.where(keep_b, target, ignore)
        loss = 0.5 * (self._main(la, ya, trusted, record=False) + self._main(lb, yb, trusted, record=False))
        for net, yk in ((model, ya), (peer, yb)):
            aux = getattr(net, "aux_logits", None) if net.training else None
            if aux is not None and getattr(net, "aux_weight", 0):
                loss = loss + 0.5 * float(net.aux_weight) * self._main(aux, yk, trusted, record=False)
        n = valid.sum().clamp_min(1).float()
        self.last_stats["coteach_dropped"] = ((valid & ~keep_a).sum().float() / n).detach()
        self.last_stats["coteach_disagree"] = ((keep_a ^ keep_b).sum().float() / n).detach()
        return loss, la

    def _transition(self, c: int, device: torch.device) -> torch.Tensor:
        """T for ``c`` classes: built from ``present`` at construction, else with every class present."""
        if self.transition is None:
            self.transition = forward_transition(c, self.config.noise_rate).float().to(device)
        if self.transition.shape[0] != c:
            raise ValueError(f"the loss was built for {self.transition.shape[0]} classes, the logits have {c}")
        return self.transition

    def _resize(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape[-2:] != target.shape[-2:]:
            logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
        return logits

    def _main(self, logits: torch.Tensor, target: torch.Tensor, trusted: torch.Tensor | None, record: bool) -> torch.Tensor:
        c = self.config
        logits = self._resize(logits, target)
        target = target.long()
        if c.noise_mask != "none":
            loss, frac = noise_mask_ce(logits, target, self.threshold, self.weight, trusted, c.noise_denominator,
                                       c.label_smoothing, c.bootstrap, c.bootstrap_beta)
            if record:
                self.last_stats["noise_dropped"] = frac
        elif c.ohem:
            loss, frac = ohem_ce(logits, target, c.ohem_thresh, c.ohem_min_kept, self.weight, c.label_smoothing,
                                 c.bootstrap, c.bootstrap_beta, trusted)
            if record:
                self.last_stats["ohem_kept"] = frac
        else:
            if c.robust == "forward":
                per, valid = forward_ce(logits, target, self._transition(logits.shape[1], logits.device),
                                        c.label_smoothing, trusted)
            elif c.robust == "gce" and self.gce_q > 0:
                per, valid = generalized_ce(logits, target, self.gce_q, c.label_smoothing, trusted)
            else:
                _, per, valid = pixel_ce(logits, target, c.label_smoothing, c.bootstrap, c.bootstrap_beta, trusted)
            w = _pixel_weights(target, valid, self.weight)
            loss = _ratio((per * w).sum(), w.sum())
        if c.dice:
            loss = loss + c.dice_weight * dice_loss(logits, target)
        return loss

    def forward(self, logits: torch.Tensor, target: torch.Tensor, trusted: torch.Tensor | None = None) -> torch.Tensor:
        self.last_stats = {}
        return self._main(logits, target, trusted, record=True)

    def model_loss(self, model, x: torch.Tensor, y: torch.Tensor, trusted: torch.Tensor | None = None,
                   k: int | None = None, teacher=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Run ``model(x)``; return ``(loss, logits)`` with the consistency term added when enabled.

        Models with an auxiliary head (HRNetOCR's soft object regions) leave its logits in
        ``model.aux_logits`` after a training forward; they add ``model.aux_weight`` × the same loss.
        With ``elr`` > 0, ``teacher`` (a module, e.g. the moving average of the weights) is run on ``x`` without
        gradient and :func:`elr_term` × λ is added at the teacher mass of :meth:`set_progress` (``last_stats["elr"]``
        holds the term).
        """
        if self.config.elr > 0 and teacher is None:
            raise ValueError("the early-learning regularisation (elr > 0) needs a teacher: the moving average of the "
                             "weights (TrainConfig.ema > 0)")
        logits = model(x)
        loss = self.forward(logits, y, trusted)
        if self.config.elr > 0:
            with torch.no_grad():
                t_logits = teacher(x)
            target = y.long()
            term = elr_term(self._resize(logits, target), self._resize(t_logits, target), target, self.elr_mass)
            loss = loss + float(self.config.elr) * term
            self.last_stats["elr"] = term.detach()
            self.last_stats["elr_mass"] = torch.tensor(self.elr_mass)
        aux = getattr(model, "aux_logits", None) if model.training else None
        if aux is not None and getattr(model, "aux_weight", 0):
            loss = loss + float(model.aux_weight) * self._main(aux, y, trusted, record=False)
        if self.config.consistency:
            total, _, mse = consistency_loss(
                model, x, y, logits, k=k, weight=self.config.consistency_weight,
                ce_fn=lambda lg, t: self._main(lg, t, trusted, record=False), return_parts=True)
            loss = loss + total
            self.last_stats["consistency_mse"] = mse.detach()
        return loss, logits


__all__ = [
    "LossConfig", "SegLoss", "check_transition", "class_weights", "consistency_loss", "coteach_keep", "dice_loss", "elr_term", "enet_class_weights",
    "estimate_transition", "forward_ce",
    "forward_transition", "gce_warmup_q", "generalized_ce", "noise_mask_ce", "noise_threshold", "ohem_ce", "pixel_ce",
]
