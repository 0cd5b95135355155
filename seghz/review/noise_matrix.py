"""How noisy the labels are, measured on the pixels analysts reviewed.

Every reviewed pixel (corrected or confirmed, :meth:`seghz.store.Workspace.trusted_mask`) has two labels: the one it
came with (version 0 of its scene) and the one an analyst vouched for. Counting the pairs gives the label-noise
matrix ``T[i, j] ≈ P(given label j | true class i)`` (:func:`seghz.train.losses.estimate_transition`), which forward
loss correction can use instead of a guessed symmetric noise rate (the Train page's *noise matrix: from your
reviews*; the train job's ``noise_from_review``). The estimate is only as good as the sample: pixels reviewed
*because* they looked wrong over-state the noise, so :meth:`ReviewNoise.problems` refuses a matrix that says a
class's labels are mostly wrong, and the Train page says to review whole tiles.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from seghz.classes import get_scheme
from seghz.evaluate import label_for_checkpoint
from seghz.train.losses import estimate_transition


@dataclass
class ReviewNoise:
    """The label-noise matrix counted on one split's reviewed pixels."""

    names: list[str]  # the scheme's class names (rows: reviewed class, columns: given label)
    transition: np.ndarray  # C×C float, rows sum to 1 (identity rows for classes never reviewed)
    counts: np.ndarray  # C×C int: reviewed pixels of class i that were given label j
    scenes: int  # scenes with at least one reviewed, labelled pixel

    @property
    def reviewed_px(self) -> int:
        return int(self.counts.sum())

    @property
    def corrected_px(self) -> int:
        return int(self.counts.sum() - np.trace(self.counts))

    def problems(self) -> list[str]:
        """Why this matrix must not train a model (empty when it may): nothing reviewed; most reviewed pixels
        corrected (the reviews sampled the wrong labels, not the labels); or a reviewed class whose labels the
        matrix calls mostly wrong (its diagonal is not the largest entry of its row)."""
        if self.reviewed_px == 0:
            return ["no reviewed pixels: correct or confirm labels on the Labels page first (whole tiles give an "
                    "honest estimate)"]
        share = self.corrected_px / self.reviewed_px
        if share > 0.5:
            return [f"{share:.0%} of the {self.reviewed_px} reviewed pixels were corrected: the reviews sampled the "
                    "wrong labels rather than the labels; confirm the correct labels of whole tiles too"]
        out = []
        for i in np.flatnonzero(self.counts.sum(1) > 0):
            row = self.transition[i]
            if row[i] < row.max():
                j = int(np.argmax(row))
                out.append(f"class {self.names[i]}: the reviewed pixels say its pixels are more often labelled "
                           f"{self.names[j]} ({row[j]:.0%}) than {self.names[i]} ({row[i]:.0%}); that happens when "
                           "only the wrong labels were reviewed — confirm the correct ones of whole tiles too")
        return out


def review_noise(ws, split: str, scheme: str, prior_regions: float = 20.0, snapshot=None) -> ReviewNoise:
    """Count :class:`ReviewNoise` over the labelled scenes of ``split`` of workspace ``ws``, in ``scheme``.

    With ``snapshot`` (a :class:`seghz.jobs.kinds.LabelSnapshot` holding ``split``: a training job's), the scenes
    and each scene's label version are the snapshot's, so the matrix counts exactly the reviews of the labels the
    job trains on; without it, the scenes and versions of now."""
    names = list(get_scheme(scheme).names)
    given, reviewed, masks = [], [], []
    if snapshot is not None:
        scenes, version = snapshot.scenes[split], snapshot.version
    else:
        scenes, version = ws.list_scenes(split), ws.latest_label_version
    for s in scenes:
        v = version(s.id)
        if not s.label_path or v == 0:
            continue  # no original label to compare with, or never reviewed
        eff, tr = ws.label_and_trusted(s.id, v)
        if not tr.any():
            continue
        given.append(label_for_checkpoint(ws.effective_label(s.id, 0), s.scheme, scheme))
        reviewed.append(label_for_checkpoint(eff, s.scheme, scheme))
        masks.append(tr)
    t, counts = estimate_transition(given, reviewed, len(names), masks=masks, prior_regions=prior_regions)
    scenes = sum(1 for g, r, m in zip(given, reviewed, masks) if (m & (g != 255) & (r != 255)).any())
    return ReviewNoise(names=names, transition=t, counts=counts, scenes=scenes)


__all__ = ["ReviewNoise", "review_noise"]
