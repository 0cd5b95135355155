"""The one SegHZ checkpoint format: safetensors weights + JSON metadata in the safetensors header.

Loading never unpickles anything (safetensors holds raw tensors only), so a crafted file cannot run
code. The metadata carries what is needed to use the model: architecture, encoder, class scheme
(names, file ids, colours), normalisation, tile size, training recipe, validation metrics, parent
checkpoint, creation date and the command that made it.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from seghz.classes import Scheme, get_scheme, scheme_names
from seghz.errors import CheckpointError

FORMAT = "seghz-checkpoint/1"
REQUIRED = ("arch", "encoder", "scheme", "num_classes")


def save_checkpoint(path: str | os.PathLike, model: nn.Module, meta: dict[str, Any]) -> Path:
    """Atomically write ``model``'s weights and ``meta`` to ``path`` (.safetensors).

    ``meta["scheme"]`` is the scheme block (:func:`scheme_meta`) or the name of a registered scheme, which is
    stored as that scheme's full block: a checkpoint file always holds the block. ``meta`` itself is not changed.
    """
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise CheckpointError(f"checkpoint metadata lacks {missing}")
    meta = dict(meta)
    meta["scheme"] = scheme_block(meta["scheme"], Path(path))
    if getattr(model, "arch_kwargs", None) and "arch_kwargs" not in meta:
        meta["arch_kwargs"] = dict(model.arch_kwargs)  # constructor options the architecture needs to be rebuilt
    meta.setdefault("created_at", _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))
    meta["format"] = FORMAT
    p = Path(path)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    return write_safetensors(p, state, {"seghz": json.dumps(meta)})


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    """Atomically write a safetensors file (temporary name, fsync, rename, fsync of the folder): the one way SegHZ
    writes weights (checkpoints, training states). A failure leaves any previous file untouched.

    The bytes are serialised in memory and written by us: ``safetensors.torch.save_file`` (0.8) writes through a
    temporary file of its own (``.tmpXXXXXX``) next to the target, which a kill left behind as a stray file."""
    from safetensors.torch import save

    from seghz.data.io import atomic_target

    p = Path(path)
    with atomic_target(p) as tmp:
        tmp.write_bytes(save(tensors, metadata=metadata))
    return p


def read_safetensors_meta(path: Path, key: str, error: type[Exception], what: str) -> dict[str, Any]:
    """The JSON stored under ``key`` in a safetensors file's header, without reading tensors; ``error(message)``
    naming the file when it is missing, not safetensors, lacks the key or holds bad JSON."""
    from safetensors import safe_open

    p = Path(path)
    if p.is_dir():
        raise error(f"{p}: is a folder, not a {what} file (.safetensors)")
    if not p.is_file():
        raise error(f"{p}: {what} file does not exist")
    try:
        with safe_open(str(p), framework="pt") as f:
            raw = (f.metadata() or {}).get(key)
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for foreign / truncated files
        short = _truncated(p)
        if short is not None:
            raise error(f"{p}: the {what} file is truncated or damaged: its header declares {short[0]:,} bytes, the "
                        f"file has {short[1]:,} (an interrupted copy or download?); copy it again") from None
        raise error(f"{p}: not a SegHZ {what} (not a safetensors file: {e})") from None
    if raw is None:
        raise error(f"{p}: safetensors file without SegHZ metadata; not a SegHZ {what}")
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise error(f"{p}: SegHZ {what} metadata is not valid JSON ({e})") from None


def _truncated(p: Path) -> tuple[int, int] | None:
    """``(bytes the header declares, bytes the file has)`` when ``p`` is a safetensors file cut short (its header
    parses but the tensors it declares run past the end); None otherwise (another kind of file, or whole)."""
    import struct

    try:
        size = p.stat().st_size
        with open(p, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > min(size, 100 << 20):
                return None
            header = json.loads(f.read(n))
        end = max((int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"), default=0)
    except (OSError, ValueError, struct.error, KeyError, TypeError, IndexError, AttributeError):
        return None
    need = 8 + n + end
    return (need, size) if size < need else None


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """Read only the metadata of a checkpoint. Raises CheckpointError naming the file when it is not one.

    ``meta["scheme"]`` is always the scheme block (a dict with ``name`` and ``names``): a file written with a bare
    scheme name (before :func:`save_checkpoint` stored the block) gets that registered scheme's block; an unknown
    name, or a value that is neither, is a CheckpointError naming the file."""
    p = Path(path)
    meta = read_safetensors_meta(p, "seghz", CheckpointError, "checkpoint")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or any(k not in meta for k in REQUIRED):
        fmt = meta.get("format") if isinstance(meta, dict) else None
        raise CheckpointError(f"{p}: unsupported checkpoint metadata (format {fmt!r})")
    meta["scheme"] = scheme_block(meta["scheme"], p)
    return meta


def scheme_block(value: Any, path: str | os.PathLike) -> dict[str, Any]:
    """The one shape of a checkpoint's ``scheme`` metadata: a dict with ``name`` (str) and ``names`` (a non-empty
    list of str), as :func:`scheme_meta` writes it (``ids``/``colors`` too). A registered scheme's name becomes its
    block. Raises CheckpointError naming ``path`` for an unknown name or any other value."""
    if isinstance(value, str):
        try:
            return scheme_meta(get_scheme(value))
        except KeyError:
            raise CheckpointError(f"{path}: checkpoint metadata names an unknown class scheme '{value}' "
                                  f"(known: {', '.join(scheme_names())})") from None
    if isinstance(value, dict):
        names = value.get("names")
        if (isinstance(value.get("name"), str) and isinstance(names, list) and names
                and all(isinstance(n, str) for n in names)):
            return value
        raise CheckpointError(f"{path}: checkpoint metadata 'scheme' block needs a 'name' and a non-empty list of "
                              f"class 'names' (got keys {sorted(map(str, value))})")
    raise CheckpointError(f"{path}: checkpoint metadata 'scheme' must be a scheme name or a scheme block, "
                          f"not {type(value).__name__} {value!r:.60}")


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Build the model named in the metadata and load its weights. Returns (model in eval mode, metadata)."""
    from safetensors.torch import load_file

    from seghz.models.registry import build_model

    meta = read_metadata(path)
    try:
        model = build_model(meta["arch"], meta["encoder"], int(meta["num_classes"]), encoder_weights=None, **meta.get("arch_kwargs", {}))
    except (KeyError, ValueError, RuntimeError, TypeError) as e:
        raise CheckpointError(f"{path}: cannot build {meta['arch']}/{meta['encoder']} named in its metadata ({e})") from None
    state = load_file(str(path), device="cpu")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit {meta['arch']}/{meta['encoder']} ({str(e)[:300]})") from None
    return model.to(device).eval(), meta


def checkpoint_scheme(meta: dict) -> Scheme:
    """The class scheme of a checkpoint from its metadata (``meta["scheme"]`` is the block written by
    :func:`seghz.models.checkpoint.scheme_meta`, or a scheme name): the registered scheme of that name when it
    matches the stored class names, else a Scheme built from the stored names/ids/colours."""
    block = meta.get("scheme")
    if isinstance(block, str):
        return get_scheme(block)
    if not isinstance(block, dict) or "names" not in block:
        raise ValueError("checkpoint metadata has no usable 'scheme' block")
    names = tuple(str(n) for n in block["names"])
    try:
        known = get_scheme(str(block.get("name")))
        if known.names == names:
            return known
    except KeyError:
        pass
    ids = tuple(int(v) for v in block.get("ids", range(len(names))))
    colors = block.get("colors")
    if not colors or len(colors) != len(names):
        rng = np.random.default_rng(0)
        colors = rng.integers(40, 230, (len(names), 3)).tolist()
    return Scheme(
        name=str(block.get("name", "checkpoint")), title=str(block.get("name", "checkpoint")), names=names, ids=ids,
        colors=tuple(tuple(int(v) for v in c) for c in colors),
    )


def scheme_meta(scheme) -> dict[str, Any]:
    """The scheme block stored in checkpoint metadata."""
    return scheme.to_json()
