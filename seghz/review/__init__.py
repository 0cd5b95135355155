"""Label review: model-ranked suspicion scores and the noise queue (see :mod:`seghz.review.suspicion`)."""
from seghz.review.suspicion import (
    DEFAULT_WEIGHTS,
    ClassThresholds,
    QueueItem,
    SuspicionWeights,
    group_components,
    rarity_boost,
    suspicion_score,
)

__all__ = [
    "DEFAULT_WEIGHTS",
    "ClassThresholds",
    "QueueItem",
    "SuspicionWeights",
    "group_components",
    "rarity_boost",
    "suspicion_score",
]
