"""Tests of seghz.models.checkpoint (safetensors + JSON metadata) and seghz.models.registry."""
from __future__ import annotations

import json
import os
import pickle
import struct

import numpy as np
import pytest
import torch
from helpers_core import GID_DIR, files_in, need_shared, torch_one_thread  # noqa: F401 (fixture)

from seghz.classes import get_scheme
from seghz.errors import CheckpointError
from seghz.models.checkpoint import FORMAT, load_checkpoint, read_metadata, save_checkpoint, scheme_meta
from seghz.models.registry import IMAGENET_MEAN, IMAGENET_STD, build_model, lite0_state_dict

pytestmark = pytest.mark.usefixtures("torch_one_thread")

# the smallest architecture/encoder pair that is quick to build (~3.4 M parameters)
ARCH, ENC = "Segformer", "tu-efficientnet_lite0"


def _meta(**extra):
    m = {
        "arch": ARCH,
        "encoder": ENC,
        "scheme": scheme_meta(get_scheme("hz7")),
        "num_classes": 7,
        "normalization": {"mean": [0.1, 0.2, 0.3], "std": [0.5, 0.6, 0.7]},
        "tile_size": 96,
        "recipe": {"lr": 0.002, "epochs": 3, "dice": True, "weights": [1.5, 2.25]},
        "metrics": {"miou": 0.4321, "per_class": {"Water": None}},
        "parent": None,
        "command": "seghz train --épochs 3 ✓",  # non-ASCII survives
    }
    m.update(extra)
    return m


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model(ARCH, ENC, 7).eval()
    path = tmp_path_factory.mktemp("ckpt") / "m.safetensors"
    out = save_checkpoint(path, model, _meta())
    assert out == path
    return model, path


def test_round_trip_gives_identical_outputs(saved):
    model, path = saved
    loaded, meta = load_checkpoint(path)
    assert not loaded.training
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        a, b = model(x), loaded(x)
    assert a.shape == (2, 7, 64, 64)
    assert torch.equal(a, b)
    sa, sb = model.state_dict(), loaded.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_metadata_round_trip(saved):
    _, path = saved
    meta = read_metadata(path)
    expected = json.loads(json.dumps(_meta()))
    for k, v in expected.items():
        assert meta[k] == v, k
    assert meta["format"] == FORMAT
    assert isinstance(meta["created_at"], str) and meta["created_at"][:2] == "20"
    assert set(meta) == set(expected) | {"format", "created_at"}
    # the scheme block is enough to rebuild the palette
    assert meta["scheme"]["names"] == list(get_scheme("hz7").names)
    assert files_in(path.parent) == ["m.safetensors"]  # no temp files left behind


def test_save_requires_metadata(tmp_path):
    model = torch.nn.Conv2d(3, 2, 1)
    with pytest.raises(CheckpointError, match="num_classes"):
        save_checkpoint(tmp_path / "x.safetensors", model, {"arch": "FPN", "encoder": "resnet18", "scheme": {}})
    assert files_in(tmp_path) == []


def test_predictor_from_checkpoint(saved):
    from seghz.infer.engine import Predictor

    _, path = saved
    pr, meta = Predictor.from_checkpoint(path, device="cpu")
    assert pr.num_classes == 7 and pr.tile == 96
    assert pr.mean == (0.1, 0.2, 0.3) and pr.std == (0.5, 0.6, 0.7)
    mask, conf = pr.predict(np.zeros((40, 50, 3), np.uint8))
    assert mask.shape == (40, 50) and mask.max() < 7 and ((conf > 0) & (conf <= 1 + 1e-6)).all()


# ---------------------------------------------------------------- hostile and foreign files


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _check_rejected(path, marker):
    with pytest.raises(CheckpointError) as ei:
        read_metadata(path)
    assert path.name in str(ei.value)
    with pytest.raises(CheckpointError) as ei:
        load_checkpoint(path)
    assert path.name in str(ei.value)
    assert not marker.exists(), "loading the file ran code from a pickle"


@pytest.mark.parametrize("name", ["evil.safetensors", "evil.pt", "evil.ckpt"])
def test_crafted_pickle_is_rejected_without_running_code(tmp_path, name):
    marker = tmp_path / "pwned_marker"
    payload = pickle.dumps({"state_dict": _Evil(marker)})
    # sanity: the payload really does run code when unpickled
    pickle.loads(payload)
    assert marker.exists()
    marker.unlink()
    p = tmp_path / name
    p.write_bytes(payload)
    _check_rejected(p, marker)


def test_crafted_torch_save_zip_is_rejected(tmp_path):
    marker = tmp_path / "pwned_marker_zip"
    p = tmp_path / "evil_zip.safetensors"
    torch.save({"weights": _Evil(marker)}, p)
    assert not marker.exists()
    _check_rejected(p, marker)


def test_png_is_not_a_checkpoint(tmp_path):
    from PIL import Image

    p = tmp_path / "picture.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(p)
    with pytest.raises(CheckpointError, match="picture.png"):
        read_metadata(p)
    with pytest.raises(CheckpointError, match="picture.png"):
        load_checkpoint(p)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        read_metadata(tmp_path / "nope.safetensors")
    e = tmp_path / "empty.safetensors"
    e.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.safetensors"):
        read_metadata(e)
    h = tmp_path / "huge_header.safetensors"
    h.write_bytes(struct.pack("<Q", 2**40) + b"{}")
    with pytest.raises(CheckpointError, match="huge_header.safetensors"):
        read_metadata(h)


def test_plain_safetensors_without_seghz_metadata(tmp_path):
    from safetensors.torch import save_file

    p = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(p), metadata={"other": "x"})
    with pytest.raises(CheckpointError, match="without SegHZ metadata"):
        read_metadata(p)
    q = tmp_path / "badjson.safetensors"
    save_file({"w": torch.zeros(2)}, str(q), metadata={"seghz": "{not json"})
    with pytest.raises(CheckpointError, match="not valid JSON"):
        read_metadata(q)
    r = tmp_path / "oldformat.safetensors"
    save_file({"w": torch.zeros(2)}, str(r), metadata={"seghz": json.dumps({**_meta(), "format": "other/0"})})
    with pytest.raises(CheckpointError, match="unsupported"):
        read_metadata(r)


def test_weights_that_do_not_fit_the_named_model(tmp_path, saved):
    model, _ = saved
    p = save_checkpoint(tmp_path / "wrong.safetensors", model, _meta(num_classes=5))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(p)


# ---------------------------------------------------------------- registry


def test_registry_rejects_unknown_names_and_weights():
    with pytest.raises(KeyError, match="NoSuchNet"):
        build_model("NoSuchNet", "resnet18", 3)
    with pytest.raises(ValueError, match="tu-efficientnet_lite0"):
        build_model("FPN", "resnet18", 3, encoder_weights="lite0-imagenet")
    with pytest.raises(ValueError, match="offline"):
        build_model("FPN", "resnet18", 3, encoder_weights="imagenet")


def test_build_model_loads_lite0_into_the_encoder():
    sd = lite0_state_dict()
    model = build_model(ARCH, ENC, 3, encoder_weights="lite0-imagenet")
    enc = model.encoder.model.state_dict()
    shared = [k for k in enc if k in sd]
    assert len(shared) >= 0.9 * len(enc)
    assert all(torch.equal(enc[k], sd[k]) for k in shared)


def test_lite0_mapping_is_plausible():
    """Checks that do not trust the key order: BN variances land on ``running_var`` keys (never negative;
    the shipped weights have a few dead channels with variance exactly 0) and the stem sees RGB."""
    sd = lite0_state_dict()
    var = [k for k in sd if k.endswith("running_var")]
    assert len(var) == 49
    assert all((sd[k] >= 0).all() for k in var)
    allvar = torch.cat([sd[k] for k in var])
    assert (allvar > 0).float().mean() > 0.97
    # BN biases and running means are signed: a swap with running_var would show up here
    for suffix in ("running_mean", "bias"):
        vals = torch.cat([sd[k] for k in sd if k.endswith(suffix) and k.replace(suffix, "running_var") in sd])
        assert (vals < 0).any()
    assert sd["conv_stem.weight"].shape == (32, 3, 3, 3)
    assert sd["classifier.weight"].shape == (1000, 1280)


def test_lite0_weights_file_stands_in_for_the_package(tmp_path, monkeypatch):
    """An fp16 encoder-only export (what the GPU kit carries) builds the same encoder within fp16 rounding."""
    from safetensors.torch import load_file

    from seghz.models.registry import LITE0_ENV, export_lite0_weights

    monkeypatch.delenv(LITE0_ENV, raising=False)
    ref = build_model(ARCH, ENC, 3, encoder_weights="lite0-imagenet").encoder.model.state_dict()
    info = export_lite0_weights(tmp_path / "w" / "lite0.safetensors")
    stored = load_file(info["path"])
    assert info["tensors"] == len(stored) == len(ref)  # the encoder's tensors, no ImageNet head
    assert "classifier.weight" not in stored and stored["conv_stem.weight"].dtype == torch.float16
    assert 4e6 < info["bytes"] < 8e6 and 0 < info["max_rel_err"] <= 2 ** -11
    assert not list((tmp_path / "w").glob("*.tmp"))  # the atomic write left nothing behind

    monkeypatch.setenv(LITE0_ENV, info["path"])
    got = build_model(ARCH, ENC, 3, encoder_weights="lite0-imagenet").encoder.model.state_dict()
    for k, v in ref.items():
        if v.is_floating_point():
            assert got[k].dtype == torch.float32
            assert torch.allclose(got[k], v, rtol=2 ** -10, atol=1e-6), k
        else:
            assert torch.equal(got[k], v), k
    scratch = build_model(ARCH, ENC, 3).encoder.model.state_dict()
    assert not torch.allclose(scratch["conv_stem.weight"], got["conv_stem.weight"], atol=1e-2)


def test_lite0_weights_file_errors_name_the_file(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    from seghz.models.registry import LITE0_ENV

    missing = tmp_path / "nope.safetensors"
    monkeypatch.setenv(LITE0_ENV, str(missing))
    with pytest.raises(FileNotFoundError, match="nope.safetensors.*SEGHZ_LITE0_WEIGHTS"):
        lite0_state_dict()
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    monkeypatch.setenv(LITE0_ENV, str(junk))
    with pytest.raises(ValueError, match="junk.safetensors.*not a readable safetensors"):
        lite0_state_dict()
    wrong = tmp_path / "wrong.safetensors"
    save_file({"conv_stem.weight": torch.zeros(16, 3, 3, 3)}, str(wrong))
    monkeypatch.setenv(LITE0_ENV, str(wrong))
    with pytest.raises(ValueError, match=r"wrong.safetensors.*conv_stem.weight \(16, 3, 3, 3\).*\(32, 3, 3, 3\)"):
        lite0_state_dict()
    save_file({"head.fc.weight": torch.zeros(2, 2)}, str(wrong))
    with pytest.raises(ValueError, match="head.fc.weight.*no such key"):
        lite0_state_dict()
    save_file({"conv_stem.weight": torch.zeros(32, 3, 3, 3)}, str(wrong))  # fits, but most tensors are missing
    with pytest.raises(ValueError, match=r"wrong.safetensors.*lacks 287 of the encoder's tensors.*pack --lite0"):
        lite0_state_dict()
    save_file({}, str(wrong))
    with pytest.raises(ValueError, match="lacks 288"):
        lite0_state_dict()
    monkeypatch.setenv(LITE0_ENV, "  ")  # blank: the package
    assert lite0_state_dict()["conv_stem.weight"].shape == (32, 3, 3, 3)


@pytest.mark.realdata
def test_lite0_imagenet_weights_make_confident_predictions():
    import timm
    from PIL import Image

    img_dir = need_shared(GID_DIR / "images")
    files = sorted(img_dir.glob("*.png"))[::97][:6]
    assert len(files) >= 3
    x = torch.stack([torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1).float() / 255 for f in files])
    x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    pre = timm.create_model("efficientnet_lite0", pretrained=False)
    pre.load_state_dict(lite0_state_dict(), strict=True)
    torch.manual_seed(0)
    rnd = timm.create_model("efficientnet_lite0", pretrained=False)
    with torch.no_grad():
        p_pre = pre.eval()(x).softmax(1).max(1).values.mean().item()
        p_rnd = rnd.eval()(x).softmax(1).max(1).values.mean().item()
    assert p_pre > 1.5 * p_rnd, (p_pre, p_rnd)
    assert p_pre > 0.1  # 100x above chance among 1000 classes


@pytest.mark.parametrize("arch,enc", [("NoSuchNet", "resnet18"), ("FPN", "no-such-encoder")])
def test_unknown_architecture_in_metadata_is_a_checkpoint_error(tmp_path, arch, enc):
    from safetensors.torch import save_file

    p = tmp_path / "future.safetensors"
    meta = {**_meta(), "arch": arch, "encoder": enc, "format": FORMAT}
    save_file({"w": torch.zeros(2)}, str(p), metadata={"seghz": json.dumps(meta)})
    assert read_metadata(p)["arch"] == arch  # the metadata itself is well-formed
    with pytest.raises(CheckpointError, match="future.safetensors"):
        load_checkpoint(p)


def test_a_truncated_checkpoint_is_called_truncated_everywhere_not_a_foreign_file(saved, tmp_path):
    """Every reader (the app's registry, jobs, the CLI) goes through read_metadata: a copy cut short says so, with the
    sizes, while a file that is no safetensors at all still says that."""
    _, path = saved
    data = path.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or damaged") as e:
        read_metadata(cut)
    assert str(cut) in str(e.value) and f"file has {len(data) // 2:,}" in str(e.value)
    with pytest.raises(CheckpointError, match="truncated or damaged"):
        load_checkpoint(cut)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        read_metadata(junk)
