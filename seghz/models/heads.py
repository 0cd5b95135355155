"""HRNet segmentation models with the study's heads: OCR (object-contextual representations) and PSP pooling.

Both models share :class:`HRNetFeatures`: a timm ``features_only`` backbone whose stride-4..32 outputs are
upsampled to stride 4 and concatenated (the HRNet-seg "representation head"). For HRNet the raw branch outputs
are used (``feature_location=''``: 18+36+72+144 = 270 channels for w18, 480 for w32), not the classification
"incre" blocks. Any other timm model with ``features_only`` works too (e.g. ``tu-efficientnet_lite0``).

Constructors take smp's keyword names (``encoder_name``, ``encoder_weights``, ``in_channels``, ``classes``), so
:func:`seghz.models.registry.build_model` treats them like any smp architecture. The timm module lives at
``model.encoder.model`` as in smp's ``tu-`` encoders (so the offline Lite0 weights load the same way).

Outputs: ``model(x)`` is always one N×classes×H×W logit tensor at input resolution (inputs whose sides are not
multiples of 32 are padded internally and the logits cropped back). :class:`HRNetOCR` also computes the
auxiliary soft-object-region logits; after a forward pass in training mode they are in ``model.aux_logits``
(upsampled to input size), and with ``model.return_aux = True`` a training-mode forward returns
``(main, aux)``. Evaluation mode never returns a tuple, so inference code needs no change.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_BINS = (1, 2, 3, 6)
#: weight of the auxiliary soft-region loss in HRNet-OCR training (the OCR paper's 0.4)
OCR_AUX_WEIGHT = 0.4


def _timm_name(encoder_name: str) -> str:
    return encoder_name.removeprefix("tu-")


def _cbr(cin: int, cout: int, k: int = 1) -> nn.Sequential:
    """Conv (no bias) + BatchNorm + ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class _TimmFeatures(nn.Module):
    """Holds the timm module as ``.model`` (the attribute path smp's tu- encoders use)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model


class HRNetFeatures(nn.Module):
    """timm backbone → concatenation of its stride-4…32 features, upsampled to stride 4."""

    def __init__(self, encoder_name: str, in_channels: int = 3):
        super().__init__()
        import timm

        name = _timm_name(encoder_name)
        if name not in timm.list_models():
            raise ValueError(f"unknown timm encoder '{encoder_name}' (HRNet variants: {', '.join(timm.list_models('hrnet*'))})")
        kw = {"feature_location": ""} if name.startswith("hrnet") else {}
        probe = timm.create_model(name, pretrained=False, features_only=True, **kw)
        red = probe.feature_info.reduction()
        idx = [i for i, r in enumerate(red) if r >= 4]
        if not idx or red[idx[0]] != 4:
            raise ValueError(f"encoder '{encoder_name}' has no stride-4 feature map (reductions {red})")
        del probe
        self.encoder = _TimmFeatures(
            timm.create_model(name, pretrained=False, features_only=True, in_chans=in_channels, out_indices=tuple(idx), **kw)
        )
        self.out_channels = int(sum(self.encoder.model.feature_info.channels()))
        self.stride = int(max(self.encoder.model.feature_info.reduction()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder.model(x)
        size = feats[0].shape[-2:]
        up = [feats[0]] + [F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in feats[1:]]
        return torch.cat(up, dim=1)


class PSPModule(nn.Module):
    """Pyramid pooling: average-pool to each bin×bin grid, 1×1 conv, upsample back, concatenate with the input.

    A 1×1 pooled map has one value per channel, so its branch has no BatchNorm (it would fail on batch 1).
    """

    def __init__(self, in_channels: int, bins: Sequence[int] = DEFAULT_BINS, branch_channels: int | None = None):
        super().__init__()
        bins = tuple(int(b) for b in bins)
        if not bins or any(b < 1 for b in bins):
            raise ValueError(f"PSP bins must be positive integers, got {bins}")
        self.bins = bins
        bc = int(branch_channels or max(in_channels // len(bins), 16))
        self.stages = nn.ModuleList()
        for b in bins:
            norm = nn.Identity() if b == 1 else nn.BatchNorm2d(bc)
            self.stages.append(nn.Sequential(nn.AdaptiveAvgPool2d(b), nn.Conv2d(in_channels, bc, 1, bias=b == 1), norm, nn.ReLU(inplace=True)))
        self.out_channels = in_channels + bc * len(bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        return torch.cat([x] + [F.interpolate(s(x), size=size, mode="bilinear", align_corners=False) for s in self.stages], 1)


class OCRHead(nn.Module):
    """Object-contextual representations (Yuan et al., ECCV 2020).

    1. soft object regions: an auxiliary head predicts K class maps from the backbone features;
    2. object region representations: each region's feature is the pixel features weighted by the region's
       spatial softmax;
    3. pixel-region relation: softmax over regions of the scaled dot product between transformed pixel and
       region features;
    4. augmented representation: the relation-weighted region features, concatenated with the pixel features
       and fused by a 1×1 conv, feed the final classifier.

    ``forward`` returns ``(main_logits, aux_logits)`` at feature resolution.
    """

    def __init__(self, in_channels: int, num_classes: int, mid_channels: int = 512, key_channels: int = 256, dropout: float = 0.05):
        super().__init__()
        self.key_channels = key_channels
        self.aux_head = nn.Sequential(_cbr(in_channels, in_channels, 1), nn.Conv2d(in_channels, num_classes, 1))
        self.pixel = _cbr(in_channels, mid_channels, 3)
        self.f_pixel = nn.Sequential(_cbr(mid_channels, key_channels), _cbr(key_channels, key_channels))
        self.f_object = nn.Sequential(_cbr(mid_channels, key_channels), _cbr(key_channels, key_channels))
        self.f_down = _cbr(mid_channels, key_channels)
        self.f_up = _cbr(key_channels, mid_channels)
        self.fuse = nn.Sequential(_cbr(2 * mid_channels, mid_channels), nn.Dropout2d(dropout))
        self.cls = nn.Conv2d(mid_channels, num_classes, 1)

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        aux = self.aux_head(feats)  # N×K×H×W soft object regions
        pix = self.pixel(feats)  # N×C×H×W pixel representations
        n, _, h, w = pix.shape
        # object region representations: spatial softmax of each region map, weighted sum of pixel features
        regions = torch.softmax(aux.flatten(2), dim=2)  # N×K×HW
        obj = torch.bmm(regions, pix.flatten(2).transpose(1, 2))  # N×K×C
        obj = obj.transpose(1, 2).unsqueeze(3)  # N×C×K×1
        # pixel-region relation
        q = self.f_pixel(pix).flatten(2).transpose(1, 2)  # N×HW×Ck
        k = self.f_object(obj).flatten(2)  # N×Ck×K
        v = self.f_down(obj).flatten(2).transpose(1, 2)  # N×K×Ck
        rel = torch.softmax(torch.bmm(q, k) * self.key_channels**-0.5, dim=2)  # N×HW×K
        ctx = torch.bmm(rel, v).transpose(1, 2).reshape(n, self.key_channels, h, w)
        # augmented representation
        aug = self.fuse(torch.cat([self.f_up(ctx), pix], dim=1))
        return self.cls(aug), aux


class _PaddedSegModel(nn.Module):
    """Pads inputs to a multiple of the backbone stride, restores input resolution on the logits."""

    backbone: HRNetFeatures
    arch_kwargs: dict

    @property
    def encoder(self) -> _TimmFeatures:
        return self.backbone.encoder

    def _pad(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        h, w = x.shape[-2:]
        s = self.backbone.stride
        ph, pw = (-h) % s, (-w) % s
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        return x, (h, w)

    @staticmethod
    def _restore(logits: torch.Tensor, padded: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
        logits = F.interpolate(logits, size=padded, mode="bilinear", align_corners=False)
        return logits[..., : size[0], : size[1]]


class HRNetOCR(_PaddedSegModel):
    """HRNet (or any timm) backbone + OCR head. ``model(x)`` → main logits; see the module docstring for aux."""

    def __init__(
        self,
        encoder_name: str = "tu-hrnet_w18",
        encoder_weights: str | None = None,
        in_channels: int = 3,
        classes: int = 1,
        ocr_mid_channels: int = 512,
        ocr_key_channels: int = 256,
        dropout: float = 0.05,
        return_aux: bool = False,
    ):
        super().__init__()
        if encoder_weights is not None:
            raise ValueError("HRNetOCR builds its encoder without weights; load them afterwards")
        self.backbone = HRNetFeatures(encoder_name, in_channels)
        self.head = OCRHead(self.backbone.out_channels, classes, ocr_mid_channels, ocr_key_channels, dropout)
        self.arch_kwargs = {"ocr_mid_channels": int(ocr_mid_channels), "ocr_key_channels": int(ocr_key_channels), "dropout": float(dropout)}
        self.return_aux = return_aux
        self.aux_weight = OCR_AUX_WEIGHT
        self.aux_logits: torch.Tensor | None = None

    def forward(self, x: torch.Tensor):
        xp, size = self._pad(x)
        main, aux = self.head(self.backbone(xp))
        main = self._restore(main, xp.shape[-2:], size)
        if not self.training:
            self.aux_logits = None
            return main
        aux = self._restore(aux, xp.shape[-2:], size)
        self.aux_logits = aux
        return (main, aux) if self.return_aux else main


class HRNetPSP(_PaddedSegModel):
    """HRNet (or any timm) backbone + pyramid pooling (configurable ``bins``) + 3×3 bottleneck + classifier."""

    def __init__(
        self,
        encoder_name: str = "tu-hrnet_w18",
        encoder_weights: str | None = None,
        in_channels: int = 3,
        classes: int = 1,
        bins: Sequence[int] = DEFAULT_BINS,
        psp_branch_channels: int | None = None,
        bottleneck_channels: int = 512,
        dropout: float = 0.1,
    ):
        super().__init__()
        if encoder_weights is not None:
            raise ValueError("HRNetPSP builds its encoder without weights; load them afterwards")
        self.backbone = HRNetFeatures(encoder_name, in_channels)
        self.psp = PSPModule(self.backbone.out_channels, bins, psp_branch_channels)
        self.bottleneck = nn.Sequential(_cbr(self.psp.out_channels, bottleneck_channels, 3), nn.Dropout2d(dropout))
        self.cls = nn.Conv2d(bottleneck_channels, classes, 1)
        bc = self.psp.stages[0][1].out_channels
        self.arch_kwargs = {
            "bins": list(self.psp.bins), "psp_branch_channels": int(bc),
            "bottleneck_channels": int(bottleneck_channels), "dropout": float(dropout),
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xp, size = self._pad(x)
        logits = self.cls(self.bottleneck(self.psp(self.backbone(xp))))
        return self._restore(logits, xp.shape[-2:], size)
