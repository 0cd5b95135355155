"""Inference: sliding windows and D4 test-time augmentation."""
from seghz.infer.engine import D4_VIEWS, Predictor, sliding_windows

__all__ = ["D4_VIEWS", "Predictor", "sliding_windows"]
