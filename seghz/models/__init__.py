"""Model registry and the one checkpoint format."""
from seghz.models.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from seghz.models.registry import ARCHITECTURES, build_model

__all__ = ["ARCHITECTURES", "build_model", "load_checkpoint", "read_metadata", "save_checkpoint"]
