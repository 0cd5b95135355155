"""``python -m seghz``: the command line mirror of the app (import, train, predict, evaluate, info)."""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shlex
import sys
from pathlib import Path
from typing import NoReturn

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from seghz.devices import check_device, rank_device
from seghz.errors import SegHZError

MIN_TILE, TILE_STEP = 32, 32  # predict-scene --tile: the engine pads each window to a multiple of 32 (pad32)


def _tqdm_progress(desc: str, stream=None):
    """A progress callback ``cb(frac, msg)``: a tqdm bar on a terminal; elsewhere (a log file, a pipe, a CI job) a
    plain line every 10 % with the elapsed time, so a long run written to a file still shows where it is."""
    import time

    from tqdm import tqdm

    out = stream if stream is not None else sys.stderr
    if out.isatty():
        bar = tqdm(total=1000, desc=desc, leave=False, file=out)

        seen: set[str] = set()

        def cb(frac: float, msg: str = "") -> None:
            bar.n = int(frac * 1000)
            if msg.startswith("warning:") and msg not in seen:  # in full, once, above the bar (not cut to 60 chars)
                seen.add(msg)
                bar.write(msg, file=out)
            elif msg:
                bar.set_postfix_str(msg[:60], refresh=False)
            bar.refresh()

        cb.close = bar.close  # type: ignore[attr-defined]
        return cb
    t0, shown, warned = time.monotonic(), [-1], set()

    def line(frac: float, msg: str = "") -> None:
        step = min(10, int(max(0.0, frac) * 10 + 1e-9))
        if step > shown[0]:
            shown[0] = step
            el = int(time.monotonic() - t0)
            print(f"{desc}: {10 * step:3d} %  {el // 60}m{el % 60:02d}s" + (f"  {msg[:60]}" if msg else ""), file=out,
                  flush=True)
        if msg.startswith("warning:") and msg not in warned:  # in full, once, on its own line
            warned.add(msg)
            print(msg, file=out, flush=True)

    line.close = lambda: None  # type: ignore[attr-defined]
    return line


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name one file or folder (a symlink or hard link counts): ``os.path.samefile`` when
    both exist, else the resolved paths."""
    a, b = Path(a), Path(b)
    if a.exists() and b.exists():
        try:
            return os.path.samefile(a, b)
        except OSError:
            pass
    return a.resolve() == b.resolve()


def _refuse_overwriting_inputs(outputs, inputs, flag: str = "--output") -> None:
    """Refuse (SegHZError naming the path) when a file this command would write is one of the files it reads: the
    same path, or another name of the same file (a symlink, a hard link: same device and inode)."""
    by_path = {Path(p).resolve(): Path(p) for p in inputs}
    by_inode = {}
    for p in inputs:
        with contextlib.suppress(OSError):
            st = os.stat(p)
            by_inode[(st.st_dev, st.st_ino)] = Path(p)
    for out in outputs:
        if out is None:
            continue
        src = by_path.get(Path(out).resolve())
        if src is None:
            with contextlib.suppress(OSError):
                st = os.stat(out)
                src = by_inode.get((st.st_dev, st.st_ino))
            if src is not None:
                raise SegHZError(f"{out}: {flag} would overwrite the input image (the same file as {src}); give "
                                 "another output path")
        if src is not None:
            raise SegHZError(f"{out}: {flag} would overwrite the input image; give another output path")


def _check_input_folder(path, flag: str) -> None:
    """A file given where a folder is wanted: say so (``list_pairs`` would call it a folder that does not exist)."""
    if Path(path).is_file():
        raise SegHZError(f"{path}: is a file, not a folder; {flag} takes a folder of files paired by file stem")


def print_table(sc: dict, out=sys.stdout) -> None:
    """Per-class IoU / Acc table followed by mIoU, fwIoU, OA."""
    w = max(len(n) for n in sc["classes"]) + 2
    print(f"{'class':<{w}} {'IoU':>7} {'Acc':>7} {'support':>10}", file=out)
    for n in sc["classes"]:
        pc = sc["per_class"][n]
        f = lambda v: "   -   " if v is None else f"{v * 100:7.2f}"
        print(f"{n:<{w}} {f(pc['iou'])} {f(pc['acc'])} {pc['support']:>10}", file=out)
    f = lambda v: "-" if v is None else f"{v * 100:.2f}"
    ece = f"  ECE {sc['ece'] * 100:.2f}" if sc.get("ece") is not None else ""
    print(f"mIoU {f(sc['miou'])}  fwIoU {f(sc['fwiou'])}  OA {f(sc['oa'])}{ece}", file=out)


def _apply_sets(cfg, items: list[str]) -> None:
    """``--set key=value`` overrides of any TrainConfig field (values parsed as JSON, else taken as text)."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(cfg)} - {"extra"}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in names:
            raise SegHZError(f"--set {item}: expected KEY=VALUE with KEY one of {sorted(names)}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        setattr(cfg, key, value)
    try:
        cfg.validate()
    except (ValueError, TypeError) as e:
        raise SegHZError(f"training recipe: {e}") from None


def cmd_train(a) -> int:
    """Train on an image/label folder pair. Under ``torchrun`` (WORLD_SIZE > 1) every process reads the data, trains
    its shard with DDP (``--batch-size`` per process) and only rank 0 prints, validates and writes files."""
    from seghz.classes import get_scheme
    from seghz.data.folders import holdout_split, load_folder
    from seghz.train.trainer import TrainConfig, train

    main = int(os.environ.get("RANK", "0") or 0) == 0
    _check_train_out(a)
    _check_input_folder(a.images, "--images")
    _check_input_folder(a.labels, "--labels")
    target = a.target_scheme or a.scheme
    if a.parent:
        from seghz.errors import CheckpointError
        from seghz.models.checkpoint import read_metadata

        pscheme = read_metadata(a.parent)["scheme"]["name"]
        if pscheme != target:
            raise CheckpointError(f"{a.parent}: parent checkpoint is for scheme '{pscheme}', training uses '{target}'")
    nc = get_scheme(target).num_classes
    bar = _tqdm_progress("read") if main else None
    items = load_folder(a.images, a.labels, a.scheme, target, progress=bar)
    if bar is not None:
        bar.close()
    split = holdout_split(items, nc, a.test_fraction, a.val_count, group_duplicates=True)
    if main:
        print(f"train {len(split['train'])}  val {len(split['val'])}  test {len(split['test'])} (held out, never trained on)", file=sys.stderr)
    cfg = TrainConfig(
        scheme=target, arch=a.arch, encoder=a.encoder, encoder_weights=None if a.weights == "none" else a.weights,
        parent_checkpoint=a.parent, epochs=a.epochs, batch_size=a.batch_size, crop_size=a.crop_size, lr=a.lr,
        dice=not a.no_dice, seed=a.seed, device=a.device, tile_size=a.tile_size, steps_per_epoch=a.steps_per_epoch,
        resume=a.resume, amp=not a.no_amp, ddp=False if a.no_ddp else None,
        extra={"data": {"images": str(a.images), "scheme": a.scheme, "test_fraction": a.test_fraction, "val_count": a.val_count,
                        "group_duplicates": True}},
    )
    _apply_sets(cfg, a.set or [])
    bar = _tqdm_progress("train") if main else None

    def on_metrics(step, epoch, row):
        print(json.dumps(row), file=sys.stderr, flush=True)

    try:
        res = train(cfg, [(i, l) for _, i, l in split["train"]], [(i, l) for _, i, l in split["val"]], a.out,
                    progress=bar, on_metrics=on_metrics,
                    meta_extra={"command": "python -m seghz " + " ".join(shlex.quote(x) for x in sys.argv[1:]),
                                "test_stems": [s for s, _, _ in split["test"]],
                                "val_stems": [s for s, _, _ in split["val"]]})
    finally:
        if bar is not None:
            bar.close()
    if main:
        if res["resumed_from"] is not None:
            print(f"resumed after epoch {res['resumed_from']} from {res['state']}", file=sys.stderr)
        print(f"best checkpoint: {res['checkpoint']}  val mIoU "
          + (f"{100 * res['best_val']['miou']:.2f} %" if res["best_val"] else "— (no validation images)"))
    return 0


def _existing_workspace(a):
    """The workspace of ``--workspace`` / ``$SEGHZ_WORKSPACE`` / ``./workspace`` when one exists there (its index
    file), else None: opened without creating anything where there is none."""
    from seghz.store import Workspace

    root = Path(getattr(a, "workspace", None) or os.environ.get("SEGHZ_WORKSPACE") or "workspace").expanduser()
    return Workspace(root) if (root / "index.sqlite").is_file() else None


def _check_train_out(a) -> None:
    """``train --out`` never replaces a registered checkpoint's weights (the registry would keep its old scores),
    and replaces another existing file only with ``--overwrite`` or when ``--resume`` continues that run."""
    from seghz.train.state import state_path

    out = Path(a.out)
    if out.is_dir():
        raise SegHZError(f"{out}: --out is a folder; give the checkpoint file to write (.safetensors)")
    ws = _existing_workspace(a)
    if ws is not None:
        for c in ws.list_checkpoints(include_archived=True):
            if _same_file(ws.checkpoint_path(c), out):
                raise SegHZError(f"{out}: is the weights file of checkpoint '{c.id}' registered in workspace {ws.root}; "
                                 "training would replace its weights under its recorded scores: pick another --out "
                                 "path (then `checkpoints add` the result)")
    if not out.exists() or getattr(a, "overwrite", False):
        return
    if a.resume:
        if state_path(out).is_file():
            return
        raise SegHZError(f"{out}: exists, and --resume finds no training state of that run ({state_path(out).name}); "
                         "give another --out path, or --overwrite to replace it")
    raise SegHZError(f"{out}: exists already; give another --out path, --resume to continue that run, or --overwrite "
                     "to replace it")


def checkpoint_split_stems(checkpoint, meta: dict, images, labels, scheme: str, which: str = "test") -> set[str]:
    """The stems of a checkpoint's ``test`` or ``val`` split (:func:`_recorded_split_stems`) whose images in ``images``
    are not copies of an image outside that split: a checkpoint whose split put a copy on both sides (GID-15's
    ``artificial_grassland_71`` in the test split is byte for byte ``artificial_grassland_75``, a training tile of the
    shipped model) has seen it, so it is left out, and stderr says which."""
    from seghz.data.copies import held_out_copies
    from seghz.data.io import list_pairs

    stems = _recorded_split_stems(checkpoint, meta, images, labels, scheme, which)
    files = {ip.stem: ip for ip, _ in list_pairs(images, labels)}
    copies = held_out_copies(files, stems & set(files))
    if copies:
        eg = ", ".join(f"{a} = {b}" for a, b in list(copies.items())[:3])
        print(f"left out {len(copies)} {which} image(s) identical to an image outside the {which} split, which the "
              f"checkpoint may have trained on: {eg}", file=sys.stderr)
    return stems - set(copies)


def _recorded_split_stems(checkpoint, meta: dict, images, labels, scheme: str, which: str = "test") -> set[str]:
    """The stems of a checkpoint's ``test`` or ``val`` split, as `seghz train` recorded them.

    A checkpoint from before the validation stems were recorded gets them re-derived the way `seghz train` chose them
    (:func:`seghz.data.folders.holdout_split` with the run's ``test_fraction`` and ``val_count`` over this folder). The
    folder must then be the one it trained on: the re-derived test split must equal the recorded one, and the training
    split's class frequencies the recorded ``train_class_freq``; otherwise a :class:`SegHZError` says so."""
    import numpy as np

    from seghz.metrics import pooled_class_frequencies

    if which not in ("test", "val"):
        raise SegHZError(f"unknown split '{which}' (test or val)")
    if which == "val" and meta.get("val_stems") is not None:
        return set(meta["val_stems"])
    test = set(meta.get("test_stems") or [])
    if not test:
        raise SegHZError(f"{checkpoint}: the checkpoint records no held-out test stems (not trained by `seghz train` on "
                         f"a folder, or with --test-fraction 0), so its {which} split is not known")
    if which == "test":
        return test
    from seghz.classes import get_scheme
    from seghz.data.folders import holdout_split, load_folder

    data = ((meta.get("recipe") or {}).get("extra") or {}).get("data") or {}
    target = meta["scheme"]["name"]
    nc = get_scheme(target).num_classes
    split = holdout_split(load_folder(images, labels, scheme, target), nc, float(data.get("test_fraction", 0.2)),
                          int(data.get("val_count", 60)), group_duplicates=bool(data.get("group_duplicates", False)))
    freq = pooled_class_frequencies((lbl for _, _, lbl in split["train"]), nc)
    recorded = (meta.get("metrics") or {}).get("train_class_freq")
    why = None
    if {it[0] for it in split["test"]} != test:
        why = (f"its test split there has {len(split['test'])} image(s), {len(test & {it[0] for it in split['test']})} "
               f"of them among the {len(test)} recorded")
    elif recorded is None:
        why = "the checkpoint records no training class frequencies to check the folder against"
    elif not (freq.sum() > 0 and np.allclose(freq, recorded, rtol=0, atol=1e-9)):
        why = (f"the training pixels there ({len(split['train'])} image(s), labels read as '{scheme}') have other class "
               "frequencies than recorded (another folder, other labels, or a run whose training labels were rewritten "
               "by cleaning)")
    if why is not None:
        raise SegHZError(f"{checkpoint}: records no validation stems, and they cannot be re-derived from {images}: {why}. "
                         "Give the whole folder it was trained on (--images/--labels), or use "
                         "--stems-from-checkpoint test")
    return {it[0] for it in split["val"]}


def _evaluate_folder(a, keep: bool = False, stems: set[str] | None = None):
    """Predict every image/label pair of ``--images``/``--labels`` (labels crosswalked to the checkpoint's scheme).

    Returns ``(scores dict, per-image list)``; with ``keep`` the list holds ``(image path, image, label, prediction)``
    for images with any confusion, else ``(image path, None, None, None)``. The scores carry ``per_scene`` matrices
    (by file stem) and the label/prediction class frequencies.
    """
    import numpy as np

    from seghz.classes import get_scheme, index_crosswalk
    from seghz.data.io import list_pairs, read_pair
    from seghz.infer.engine import Predictor
    from seghz.metrics import add_calibration, calibration_counts, confusion_matrix, evaluation_scores
    from seghz.models.checkpoint import read_metadata

    _check_input_folder(a.images, "--images")
    _check_input_folder(a.labels, "--labels")
    meta = read_metadata(a.checkpoint)
    ck_scheme = meta["scheme"]["name"]
    lut = index_crosswalk(a.scheme, ck_scheme) if a.scheme != ck_scheme else None
    src = get_scheme(a.scheme)
    pairs = list_pairs(a.images, a.labels)
    which = getattr(a, "stems_from_checkpoint", None)
    if stems is None and which:
        stems = checkpoint_split_stems(a.checkpoint, meta, a.images, a.labels, a.scheme, which)
    in_folder = len(pairs)
    if stems is not None:
        pairs = [p for p in pairs if p[0].stem in stems]
        if not pairs:
            raise SegHZError(f"{a.images}: none of its {in_folder} image(s) is among the {len(stems)} stems of the "
                             f"checkpoint's {which or 'chosen'} split; give the folder it was trained on, or leave out "
                             "--stems-from-checkpoint to score every image of this one")
    # every pair's header first (a bad file stops the run before any prediction), and which images get stretched
    from seghz.data.io import check_image

    wide = [ip.name for ip, _ in pairs if str(check_image(ip).dtype) != "uint8"]
    if wide:
        print(f"note: {len(wide)} image(s) are not 8-bit (e.g. {wide[0]}): each is stretched from its 2nd-98th "
              "percentile to 0-255 for the model, as the app does", file=sys.stderr)
    _warn_training_copies(a.checkpoint, meta, [ip for ip, _ in pairs], held=stems or set())
    pred, _ = Predictor.from_checkpoint(a.checkpoint, a.device, batch_size=a.batch_size)
    nc = int(meta["num_classes"])
    cm = np.zeros((nc, nc), np.int64)
    per_scene, kept, calib = {}, [], None
    bar = _tqdm_progress(a.cmd)
    try:
        for i, (ip, lp) in enumerate(pairs):
            img, lbl = read_pair(ip, lp, src)
            if lut is not None:
                lbl = lut[lbl]
            p, conf = pred.predict(img, a.tta)
            c = confusion_matrix(p, lbl, nc)
            cm += c
            calib = add_calibration(calib, calibration_counts(p, conf, lbl, nc))
            per_scene[ip.stem] = c.tolist()
            confused = int(c.sum() - np.trace(c)) > 0
            kept.append((ip, img, lbl, p) if keep and confused else (ip, None, None, None))
            bar((i + 1) / len(pairs), ip.name)
    finally:
        bar.close()
    sc = evaluation_scores(cm, meta["scheme"]["names"], calib)
    from seghz.evaluate import class_caveats
    from seghz.metrics import scene_bootstrap

    boot = scene_bootstrap(np.array(list(per_scene.values())), rounds=2000, seed=0)
    sc.update(checkpoint=str(a.checkpoint), tta=a.tta, images=len(pairs), images_in_folder=in_folder,
              split=which or None, scheme=ck_scheme, label_scheme=a.scheme, per_scene=per_scene,
              miou_interval={k: boot[k] for k in ("lo", "hi", "level", "rounds")},
              **class_caveats(sc, (meta.get("metrics") or {}).get("train_class_freq"), a.scheme, ck_scheme))
    return sc, kept, meta


def _warn_training_copies(checkpoint, meta: dict, images: list[Path], held: set[str] = frozenset()) -> None:
    """Warn when images about to be scored are copies of images the checkpoint trained on (its recorded training
    folder, when it is here: :func:`seghz.data.copies.checkpoint_training_images`), or are those images themselves.
    ``held``: stems of the checkpoint's own split being scored (``--stems-from-checkpoint``), never counted as
    trained on (a legacy checkpoint's re-derived validation tiles are in its training folder)."""
    line = _training_copies_line(checkpoint, meta, images, held)
    if line:
        print(line, file=sys.stderr)


def _training_copies_line(checkpoint, meta: dict, images: list[Path], held: set[str] = frozenset(),
                          who: str = "the checkpoint", search: list[Path] = ()) -> str | None:
    """The line :func:`_warn_training_copies` prints (None when there is nothing to say)."""
    from seghz.data.copies import check_is_affordable, checkpoint_training_images, near_copies

    trained = [p for p in checkpoint_training_images(meta, search=[Path(checkpoint).resolve().parent.parent, *search])
               if p.stem not in held]
    if not trained or not images:
        return None
    if not check_is_affordable(trained):
        return (f"note: not checked whether these images copy {who}'s training images ({len(trained)} files, "
                f"over 2 GiB, in {trained[0].parent})")
    copies = near_copies(trained, images)
    if not copies:
        return None

    def said(x: Path, y: Path) -> str:
        return f"{y.name} (a training image itself)" if x.resolve() == y.resolve() else f"{y.name} = {x.name}"

    eg = ", ".join(said(x, y) for x, y in copies[:3])
    return (f"WARNING: {len(copies)} of the {len(images)} image(s) are copies of images {who} trained on "
            f"(in {trained[0].parent}): {eg}. Its score on them is not a held-out score")


def _warn_gate_training_overlap(ws, v) -> None:
    """Warn (stderr) when a model the gate compares learned from the scenes of the split it is judged on: scenes
    recorded as trained on (its own or its ancestors' ``train_scenes``, :meth:`Workspace.lineage_learning`, as the
    split moves warn), or scene images that copy its recorded training folder's images (as ``evaluate`` warns)."""
    if not v.active_id or v.active_id == v.candidate_id:
        return
    from seghz.models.checkpoint import read_metadata

    scenes = [s for s in ws.list_scenes(v.split) if s.label_path]
    if not scenes:
        return
    _, learned, _ = ws.lineage_learning(include_archived=True)
    images = [ws.scene_path(s, "image") for s in scenes]
    for cid, role in ((v.active_id, "the active model"), (v.candidate_id, "the candidate")):
        who = f"{role} '{cid}'"
        seen = sorted({s.id for s in scenes} & set(learned.get(cid, ())))
        if seen:
            print(f"WARNING: {who} learned from {len(seen)} of the {len(scenes)} '{v.split}' scene(s) the gate scores "
                  f"it on ({', '.join(seen[:5])}{' …' if len(seen) > 5 else ''}). Its score there is not a held-out "
                  "score: the verdict favours it", file=sys.stderr)
            continue
        try:
            path = ws.checkpoint_path(cid)
            line = _training_copies_line(path, read_metadata(path), images, who=who, search=[ws.root.parent])
        except (SegHZError, OSError):
            continue  # an unreadable file: the gate's own message says so
        if line and line.startswith("WARNING"):
            print(line.replace("image(s) are copies", f"'{v.split}' scene image(s) are copies")
                  + ": the verdict favours it", file=sys.stderr)
        elif line:
            print(line, file=sys.stderr)


def _check_recorded_parent(ws, src: Path, meta: dict, parent_id: str) -> None:
    """``checkpoints add --parent ID`` must agree with the parent the file records (``parent_id``, or the
    ``parent`` file `seghz train --parent` wrote): refuse, naming both, when they differ. A file that records none
    agrees with any; a recorded parent file that is not here cannot be checked (a note says so)."""
    recorded_id = meta.get("parent_id")
    if recorded_id and str(recorded_id) != parent_id:
        raise SegHZError(f"{src}: --parent '{parent_id}' differs from the parent the file records ('{recorded_id}'); "
                         "give --parent "
                         f"{recorded_id}, or leave --parent out to record the file's own")
    recorded = meta.get("parent")
    if not recorded or recorded_id:
        return
    rp = Path(str(recorded)).expanduser()
    candidates = [rp] if rp.is_absolute() else [Path.cwd() / rp, ws.root / rp, ws.root.parent / rp,
                                                  src.resolve().parent / rp]
    here = next((c for c in candidates if c.is_file()), None)
    mine = ws.checkpoint_path(parent_id)
    if here is None:
        print(f"note: {src} records its parent as the file {recorded}, which is not here: --parent '{parent_id}' "
              "is recorded as given, unchecked", file=sys.stderr)
        return
    if _same_file(here, mine) or (mine.is_file() and here.stat().st_size == mine.stat().st_size
                                  and here.read_bytes() == mine.read_bytes()):
        return
    other = [c.id for c in ws.list_checkpoints(include_archived=True) if _same_file(ws.checkpoint_path(c), here)]
    named = f"checkpoint '{other[0]}' ({here})" if other else f"the file {here} (not registered)"
    raise SegHZError(f"{src}: --parent '{parent_id}' ({mine}) differs from the parent the file records: {named}; "
                     + (f"give --parent {other[0]}" if other else "register that file first and give its id")
                     + ", or leave --parent out")


def _evaluation_header(sc: dict, a) -> str:
    """What was measured: images, checkpoint, label scheme and crosswalk, TTA."""
    where = (f" of the {sc['images_in_folder']} in {a.images} (the checkpoint's {sc['split']} split)" if sc.get("split")
             else f" of {a.images}")
    cw = f"labels read as {a.scheme} -> {sc['scheme']}" if a.scheme != sc["scheme"] else f"labels in {a.scheme}"
    return f"scored {sc['images']} image(s){where}, TTA {a.tta}\ncheckpoint {a.checkpoint} ({sc['scheme']}); {cw}"


def _print_caveats(sc: dict, out=sys.stdout) -> None:
    from seghz.evaluate import caveat_lines

    for line in caveat_lines(sc):
        print(line, file=out)


def cmd_evaluate(a) -> int:
    sc, _, _ = _evaluate_folder(a)
    print(_evaluation_header(sc, a))
    print_table(sc)
    _print_caveats(sc)
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps({k: v for k, v in sc.items() if k != "per_scene"}, indent=1))
    return 0


def cmd_compare(a) -> int:
    """Score two checkpoints on the same image/label pairs and say how sure their difference is: candidate − reference
    mIoU and per-class IoU with a paired scene-bootstrap interval (:func:`seghz.metrics.paired_bootstrap`), then the
    regression gate's verdict on them under both rules (:func:`seghz.gate.compare`)."""
    from seghz import gate
    from seghz.metrics import paired_bootstrap, signed_pp
    from seghz.models.checkpoint import read_metadata

    if a.rounds < 1:
        raise SegHZError(f"--rounds must be at least 1 (got {a.rounds})")
    margin = gate.DEFAULT_MARGIN if a.margin is None else a.margin
    if not (margin >= 0 and math.isfinite(margin)):
        raise SegHZError(f"--margin is the largest allowed IoU drop, a number >= 0 (got {a.margin})")
    if not 0 < a.level < 1:
        raise SegHZError(f"--level is the interval's coverage, between 0 and 1 exclusive (got {a.level})")
    _check_input_folder(a.images, "--images")
    _check_input_folder(a.labels, "--labels")
    ref_meta, cand_meta = read_metadata(a.checkpoint), read_metadata(a.candidate)
    if ref_meta["scheme"]["names"] != cand_meta["scheme"]["names"]:
        raise SegHZError(f"{a.candidate}: scheme '{cand_meta['scheme']['name']}' differs from {a.checkpoint}'s "
                         f"'{ref_meta['scheme']['name']}'; the two cannot be compared class by class")
    stems = None
    if a.stems_from_checkpoint:
        stems = checkpoint_split_stems(a.checkpoint, ref_meta, a.images, a.labels, a.scheme, a.stems_from_checkpoint)
        held = cand_meta.get("test_stems" if a.stems_from_checkpoint == "test" else "val_stems")
        from seghz.data.io import list_pairs

        scored = stems & {ip.stem for ip, _ in list_pairs(a.images, a.labels)}  # the images actually scored
        if held is not None and not scored <= set(held):
            print(f"warning: {len(scored - set(held))} of these {len(scored)} images are not in the candidate's recorded "
                  f"{a.stems_from_checkpoint} split: it may have trained on them", file=sys.stderr)
    res = {}
    for role, ck in (("reference", a.checkpoint), ("candidate", a.candidate)):
        ns = argparse.Namespace(**{**vars(a), "checkpoint": ck, "cmd": f"{a.cmd} {role}"})
        res[role], _, _ = _evaluate_folder(ns, stems=stems)
    keys = sorted(res["reference"]["per_scene"])
    if not keys:
        raise SegHZError(f"no image/label pairs to compare in {a.images} / {a.labels}")
    cms = {r: [res[r]["per_scene"][k] for k in keys] for r in res}
    bs = paired_bootstrap(cms["reference"], cms["candidate"], rounds=a.rounds, level=a.level, seed=a.seed,
                          names=ref_meta["scheme"]["names"])
    if math.isnan(bs["a"]) or math.isnan(bs["b"]):
        raise SegHZError(f"no class is present in the labels or predictions of {a.images}; nothing to compare")

    def span(lo, hi) -> str:
        if lo is not None:
            return f" [{signed_pp(100 * lo, 2)}, {signed_pp(100 * hi, 2)}]"
        # no interval: one image only, or (per class) no draw holds a labelled pixel of the class
        return " (no interval from one image)" if len(keys) < 2 else " (no interval: not in these labels)"

    pct = round(100 * a.level)
    print(f"{len(keys)} image(s), TTA {a.tta}; {bs['rounds']} paired bootstrap rounds over images, {pct} % interval")
    print(f"reference {a.checkpoint}: mIoU {100 * bs['a']:.2f}")
    print(f"candidate {a.candidate}: mIoU {100 * bs['b']:.2f}")
    line = f"candidate − reference: {signed_pp(100 * bs['delta'], 2)}{span(bs['lo'], bs['hi'])} mIoU"
    if bs["p_b_better"] is not None:
        line += f"; candidate higher in {100 * bs['p_b_better']:.1f} % of the rounds"
    print(line)
    w = max(len(n) for n in bs["per_class"]) + 2
    for name, d in bs["per_class"].items():
        if d is None:
            continue
        if d["delta"] is None:
            who = "candidate" if d["only"] == "b" else "reference"
            print(f"  {name:<{w}} not in the labels; only the {who} predicts it (an IoU of 0 in its mIoU)")
            continue
        sure = " (interval excludes 0)" if d["lo"] is not None and (d["lo"] > 0 or d["hi"] < 0) else ""
        print(f"  {name:<{w}} {signed_pp(100 * d['delta'], 2):>7}{span(d['lo'], d['hi'])}{sure}")
    verdicts = {}
    for rule in gate.RULES:
        v = gate.compare(res["reference"]["per_class"], res["candidate"]["per_class"], margin, intervals=bs, rule=rule,
                         against="the reference", scenes_noun="images", absent="absent from these labels")
        verdicts[rule] = v.to_dict()
        print(f"regression gate, rule '{rule}': {v.status.upper()} — {v.message}")
    if a.json:
        out = {"bootstrap": bs, "tta": a.tta, "images": keys, "gate": verdicts,
               **{r: {k: v for k, v in res[r].items() if k != "per_scene"} for r in res}}
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(out, indent=1))
    return 0


def cmd_report(a) -> int:
    """Evaluate, then write a self-contained HTML report (confusion matrix, per-class table, class frequencies and
    the top confusion examples as thumbnails)."""
    import datetime as dt

    from seghz import drilldown
    from seghz.data.io import atomic_write_bytes
    from seghz.html_report import Example, render, top_cells
    from seghz.models.checkpoint import checkpoint_scheme

    sc, kept, meta = _evaluate_folder(a, keep=True)
    scheme = checkpoint_scheme(meta)
    examples = []
    for ta, pb, _n in top_cells(sc["confusion"], a.cells):
        masks = {str(i): drilldown.cell_mask(p, lbl, ta, pb) for i, (_, img, lbl, p) in enumerate(kept) if img is not None}
        for w in drilldown.rank_windows(masks, limit=a.examples):
            ip, img, lbl, p = kept[int(w.scene_id)]
            panels = drilldown.cell_panels(*(drilldown.crop(x, w.bbox) for x in (img, lbl, p)), ta, pb, scheme)
            examples.append(Example(ip.name, scheme.names[ta], scheme.names[pb], int(w.count), tuple(w.bbox),
                                    drilldown.thumbnail(panels)))
    doc = render(sc, examples, title=f"SegHZ evaluation — {Path(a.checkpoint).name}",
                 subtitle=f"{sc['images']} image(s) from {a.images}"
                          + (f" (the checkpoint's {sc['split']} split, of {sc['images_in_folder']} there)" if sc.get("split") else "")
                          + f" · labels {a.labels} ({a.scheme} → {sc['scheme']}) "
                          f"· TTA {a.tta} · {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
                 colors=scheme.hex_colors())
    Path(a.html).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(a.html, doc.encode(), fsync=False)
    print_table(sc)
    _print_caveats(sc)
    print(f"wrote {a.html} ({len(doc) / 1e6:.1f} MB, {len(examples)} example(s))", file=sys.stderr)
    return 0


def cmd_train_demo(a) -> int:
    from seghz.demo import generate_scene
    from seghz.train.trainer import TrainConfig, train

    bar = _tqdm_progress("scenes")
    train_s = []
    for k, seed in enumerate(range(1, a.scenes + 1)):
        train_s.append(generate_scene(a.size, seed))
        bar((k + 1) / a.scenes)
    bar.close()
    val_s = [generate_scene(a.size, 1000)]
    cfg = TrainConfig(scheme="hz7", epochs=a.epochs, batch_size=a.batch_size, crop_size=a.crop_size,
                      steps_per_epoch=a.steps_per_epoch, lr=a.lr, seed=a.seed, device=a.device,
                      extra={"data": f"synthetic demo scenes seeds 1..{a.scenes} at {a.size}px; val seed 1000"})
    bar = _tqdm_progress("train")
    res = train(cfg, train_s, val_s, a.out, progress=bar,
                on_metrics=lambda s, e, row: print(json.dumps(row), file=sys.stderr, flush=True),
                meta_extra={"command": "python -m seghz " + " ".join(shlex.quote(x) for x in sys.argv[1:]), "synthetic": True})
    bar.close()
    print(f"best checkpoint: {res['checkpoint']}  val mIoU {100 * res['best_val']['miou']:.2f} %")
    return 0


def _workspace(a):
    from seghz.store import Workspace

    return Workspace(a.workspace)


def cmd_import(a) -> int:
    from seghz.data.scenes import import_folder, import_scene

    ws = _workspace(a)
    if a.path:
        from seghz.data.scenes import IMAGERY_SCHEME, import_imagery

        if a.image or a.images or a.label:
            raise SegHZError("give either PATH (imagery without a label) or --image/--images, not both")
        bar = _tqdm_progress("import")
        _, msg = import_imagery(ws, a.path, name=a.name, zoom=a.zoom, scheme=a.scheme or IMAGERY_SCHEME,
                                progress=bar, allow_duplicate=a.allow_duplicate)
        bar.close()
        print(msg)
        return 0
    if not a.scheme:
        raise SegHZError("--scheme is required with --image/--images (the class scheme of the label files)")
    if a.images:
        if not a.labels:
            raise SegHZError("--images needs --labels (a folder of label files with the same stems)")
        if a.name or a.split != "none":
            raise SegHZError("--name and --split are for one --image; a folder's scenes are named after their files "
                             "and split by --test-fraction / --val-count")
        bar = _tqdm_progress("import")
        scenes = import_folder(ws, a.images, a.labels, scheme=a.scheme, target_scheme=a.target_scheme,
                               test_fraction=a.test_fraction, val_count=a.val_count, limit=a.limit, progress=bar,
                               allow_duplicate=a.allow_duplicate)
        bar.close()
    elif a.image:
        scenes = [import_scene(ws, a.image, a.label, scheme=a.scheme, target_scheme=a.target_scheme, name=a.name,
                               split=a.split, allow_duplicate=a.allow_duplicate)]
    else:
        raise SegHZError("give --image FILE [--label FILE] or --images DIR --labels DIR")
    from collections import Counter

    c = Counter(s.split for s in scenes)
    print(f"imported {len(scenes)} scene(s) into {ws.root}"
          + (": " + ", ".join(f"{k} {v}" for k, v in sorted(c.items())) if c else ""))
    for line in (scenes.summary_lines() if hasattr(scenes, "summary_lines") else []):
        print(line)
    if len(scenes) <= 10:
        for s in scenes:
            print(f"  {s.id}  {s.name}  ({s.split}, {s.width}x{s.height} px)")
    return 0


def cmd_predict(a) -> int:
    import numpy as np

    from seghz.data.io import read_image, write_index_mask, write_rgb
    from seghz.infer.engine import Predictor
    from seghz.infer.region import class_areas
    from seghz.models.checkpoint import checkpoint_scheme

    pred, meta = Predictor.from_checkpoint(a.checkpoint, a.device, batch_size=a.batch_size)
    scheme = checkpoint_scheme(meta)
    from seghz.data.io import IMAGE_EXT
    from seghz.errors import BadInputError

    src = Path(a.input)
    inputs = sorted(p for p in src.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXT) if src.is_dir() else [src]
    if not inputs:
        raise BadInputError(src, "folder holds no images (.png/.jpg/.tif)")
    out = Path(a.output)
    multi = len(inputs) > 1 or Path(a.input).is_dir()
    if not multi and out.suffix.lower() != ".png":
        raise SegHZError(f"--output {out}: predict writes a palette PNG (.png); for a GeoTIFF that keeps the input's "
                         "georeferencing use `python -m seghz predict-scene`")
    if multi and out.exists() and _same_file(out, src):
        raise SegHZError(f"{out}: --output is the input folder: the class masks would replace its images; give "
                         "another folder")

    def dest(p: Path) -> Path:
        return out / f"{p.stem}.png" if multi else out

    written = [f for p in inputs for f in (dest(p), dest(p).with_name(dest(p).stem + "_color.png") if a.color else None,
                                           dest(p).with_suffix(".csv") if a.areas else None)]
    _refuse_overwriting_inputs(written, inputs)
    if multi:
        out.mkdir(parents=True, exist_ok=True)
    from seghz.data.io import raster_info
    from seghz.infer.scene import NODATA, _Masks

    bar = _tqdm_progress("predict")
    for i, p in enumerate(inputs):
        img = read_image(p)
        mask, conf = pred.predict(img, a.tta)
        masks = _Masks(p, raster_info(p).count)  # alpha / nodata: 255 in the mask, as predict-scene writes
        try:
            valid = masks.read((0, 0, *mask.shape))
        finally:
            masks.close()
        if valid is not None:
            mask = np.where(valid, mask, NODATA).astype(np.uint8)
            conf = conf[valid] if valid.any() else np.zeros(1, np.float32)
        dst = dest(p)
        write_index_mask(dst, mask, scheme)
        if a.color:
            write_rgb(dst.with_name(dst.stem + "_color.png"), scheme.colorize(mask))
        if a.areas:
            import csv

            with open(dst.with_suffix(".csv"), "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=["class", "pixels", "percent"])
                w.writeheader()
                w.writerows(class_areas(mask, scheme.names, None))
        bar((i + 1) / len(inputs), p.name)
        print(f"{p} -> {dst}  mean confidence {float(np.mean(conf)):.3f}", file=sys.stderr)
    bar.close()
    return 0


def _parse_tta(text: str):
    """``none`` / ``flip`` / ``d4`` or comma-separated view names (``identity,lr,rot90``), validated."""
    from seghz.infer.engine import tta_views

    tta = text if "," not in text else [v.strip() for v in text.split(",") if v.strip()]
    try:
        tta_views(tta)
    except ValueError as e:
        raise SegHZError(f"--tta {text}: {e}") from None
    return tta


def _want_compile(choice: str, pred, image, views: int = 1, world: int = 1) -> bool:
    """``--compile`` for a scene file: :func:`seghz.infer.engine.want_compile` on its size (read only for ``auto``)."""
    from seghz.data.io import raster_info
    from seghz.infer.engine import want_compile

    if choice != "auto":
        return want_compile(choice, pred, 0, 0)
    info = raster_info(image)
    return want_compile(choice, pred, info.height, info.width, views, world)


def cmd_predict_scene(a) -> int:
    """Whole-scene prediction of a (huge) GeoTIFF, window row by window row; runs data-parallel under torchrun."""
    from seghz.infer.engine import Predictor, tta_views
    from seghz.infer.scene import predict_scene

    if not Path(a.checkpoint).is_file():
        raise SegHZError(f"{a.checkpoint}: checkpoint file does not exist")
    if Path(a.input).is_dir():
        raise SegHZError(f"{a.input}: is a folder; predict-scene reads one GeoTIFF (or PNG/JPEG) file: for a folder "
                         "of images use `python -m seghz predict --input FOLDER --output FOLDER`")
    if not Path(a.input).is_file():
        raise SegHZError(f"{a.input}: file does not exist")
    from seghz.infer.scene import uncertainty_path

    _refuse_overwriting_inputs([a.output, uncertainty_path(a.output) if a.uncertainty else None, a.png, a.areas],
                               [a.input])
    if a.tile is not None and (a.tile < MIN_TILE or a.tile % TILE_STEP):
        raise SegHZError(f"--tile {a.tile}: the model window must be a multiple of {TILE_STEP} pixels (the engine pads "
                         f"every window up to one, the model's output stride), at least {MIN_TILE}; e.g. 256 or 512")
    world, rank, device = int(os.environ.get("WORLD_SIZE", "1")), 0, a.device
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            import datetime

            # rank 0 alone writes the GeoTIFF while the others wait: gloo's 30-min default could cut a big scene
            dist.init_process_group("gloo", timeout=datetime.timedelta(hours=1))
        rank = dist.get_rank()
        device = rank_device(device, "--device")  # the trainer's rule: cuda (no index) -> cuda:<LOCAL_RANK>
    kw = {"batch_size": a.batch_size, "blend": a.blend, "merge": a.merge}
    if a.tile is not None:
        kw["tile"] = a.tile
    if a.overlap is not None:
        kw["overlap"] = a.overlap
    tta = _parse_tta(a.tta)
    try:
        pred, meta = Predictor.from_checkpoint(a.checkpoint, device, **kw)
    except ValueError as e:  # bad --tile / --overlap / --batch-size
        raise SegHZError(str(e)) from None
    pred.compile = _want_compile(a.compile, pred, a.input, len(tta_views(tta)), world)
    bar = _tqdm_progress("predict-scene" if world == 1 else f"predict-scene rank {rank}")
    try:
        from seghz.infer.region import tta_label

        views = [v[0] for v in tta_views(tta)]
        summary = predict_scene(pred, a.input, a.output, tta=tta, uncertainty=a.uncertainty, png=a.png,
                                areas_csv=a.areas, scheme=meta["scheme"]["name"], progress=bar, rank=rank, world_size=world,
                                tags={"checkpoint": str(Path(a.checkpoint).resolve()),  # the Map export's tag names
                                      "tta": tta_label(tta if isinstance(tta, str) else "custom", views)})
    finally:
        bar.close()
        if world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()
    if rank == 0:
        brief = {k: v for k, v in summary.items() if k != "areas"}
        print(json.dumps(brief), file=sys.stderr)
        for row in summary["areas"]:
            km2 = f"  {row['km2']:.4f} km2" if "km2" in row else ""
            print(f"{row['class']:<16} {row['pixels']:>12} px {row['percent']:6.2f} %{km2}")
    return 0


def cmd_info(a) -> int:
    from seghz.classes import get_scheme, scheme_names

    if a.checkpoint:
        from seghz.models.checkpoint import read_metadata

        meta = read_metadata(a.checkpoint)
        for k, v in meta.items():  # one line per key (the scheme's colours on one line, not one number per line)
            if k in ("test_stems", "val_stems"):
                print(f"{k}: {len(v or [])} stems" + ("" if a.stems else " (--stems lists them)"))
                if a.stems:
                    for st in sorted(v or []):
                        print(f"  {st}")
            else:
                print(f"{k}: {json.dumps(v, ensure_ascii=False)}")
        return 0
    print("class schemes: " + ", ".join(f"{n} ({get_scheme(n).num_classes})" for n in scheme_names()))
    import torch

    from seghz.devices import device_description

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"device: {dev} ({device_description(dev)}); torch {torch.__version__}, CUDA build "
          f"{torch.version.cuda or 'none'}, {torch.cuda.device_count()} GPU(s) visible")
    root = Path(a.workspace or os.environ.get("SEGHZ_WORKSPACE") or "workspace").expanduser()
    if not (root / "index.sqlite").is_file():  # info only looks: it creates no workspace where the user stands
        what = "the folder holds no SegHZ workspace index" if root.is_dir() else "no such folder"
        print(f"no workspace at {root.resolve()} ({what}; the app or `seghz import` creates one; --workspace or "
              "$SEGHZ_WORKSPACE points at another)")
        return 0
    ws = _workspace(a)
    print(f"workspace {ws.root}")
    print(json.dumps(ws.summary(), indent=1))
    scenes = ws.list_scenes()
    for sc in scenes[:50]:
        geo = sc.crs or "pixel space"
        print(f"scene {sc.id}: {sc.name} ({sc.split}, {sc.width}x{sc.height} px, {sc.scheme}, {geo}"
              + (", no label" if sc.label_path is None else "") + ")")
    if len(scenes) > 50:
        print(f"… and {len(scenes) - 50} more scene(s)")
    for c in ws.list_checkpoints():
        print(f"checkpoint {c.id}: {c.arch}/{c.encoder} scheme {c.scheme} val {c.metrics.get('val')} {c.note}")
    return 0


def _draft_rows(ws, a) -> list[tuple]:
    """``(path, scene id, analyst, pixels, base version, age in days, problem or None)`` of the workspace's drafts
    (and unreadable files) that match ``a.scene`` / ``a.analyst``, newest first."""
    from seghz import drafts as dft

    analysts = None if a.analyst is None else [a.analyst]
    found, problems = dft.list_drafts(ws.root, scene_id=a.scene, analysts=analysts)
    scenes = {s.id: s for s in ws.list_scenes()}
    versions = ws.latest_label_versions()
    rows = []
    for d in found:
        sc = scenes.get(d.scene_id)
        why = (f"scene '{d.scene_id}' is no longer in the workspace" if sc is None
               else dft.restore_problem(sc, d, versions.get(d.scene_id, 0)))
        rows.append((d.path, d.scene_id, d.analyst, d.pixels, d.base_version, dft.age_days(d), why,
                     None if sc is None else versions.get(d.scene_id, 0)))
    rows += [(p.path, p.scene_id, p.owner, None, None, None, p.message, None) for p in problems]
    return rows


def cmd_drafts(a) -> int:
    """Unsaved label edits kept as server-side drafts (seghz.drafts): list them, discard the ones asked for.

    Nothing is ever discarded by itself: a draft is painted work. ``discard`` needs a filter (a scene, an analyst,
    an age, or ``--unusable``: drafts no page can restore) and prints every file it deletes; ``--dry-run`` only
    prints."""
    from seghz import drafts as dft

    ws = _workspace(a)
    rows = _draft_rows(ws, a)
    if a.action == "discard":
        if a.scene is None and a.analyst is None and a.older_than is None and not a.unusable:
            raise SegHZError("drafts discard deletes unsaved painted work: say which drafts with --scene, --analyst, "
                             "--older-than DAYS or --unusable (`drafts list` shows them)")
        rows = [r for r in rows if (a.older_than is None or (r[5] is not None and r[5] > a.older_than))
                and (not a.unusable or r[6] is not None)]
    if not rows:
        print("no drafts" + (" match" if a.action == "discard" else f" in workspace {ws.root}"))
        return 0
    for path, sid, who, px, base, age, why, latest in rows:
        if px is None:
            state = f"unreadable: {why}"
        else:
            state = (f"{px:,} px on label version {base}"
                     + (f" (the label is at version {latest} now: saving merges)" if latest is not None and latest > base
                        else "")
                     + (f"; cannot be restored: {why}" if why else ""))
        age_txt = "" if age is None else (f"{age:.0f} d old" if age >= 1 else f"{24 * age:.1f} h old")
        verb = ("would discard" if a.dry_run else "discarded") if a.action == "discard" else ""
        if a.action == "discard" and not a.dry_run:
            dft.delete_draft(path)
        print(f"{verb + '  ' if verb else ''}{sid:<24} {(who or '(no name)'):<16} "
              f"{age_txt:>9}  {state}")
    if a.action == "discard":
        print(f"{len(rows)} draft file(s) {'would be ' if a.dry_run else ''}discarded")
    return 0


def cmd_scenes(a) -> int:
    """The workspace's scenes and their splits: list, move (recorded with who and why), propose-val, history."""
    from seghz import scene_splits

    ws = _workspace(a)
    if a.action == "list":
        scenes = ws.list_scenes(a.split)
        if not scenes:
            print(f"no scenes{f' in the {a.split} split' if a.split else ''} in workspace {ws.root}")
            return 0
        versions = ws.latest_label_versions()  # one query, not one connection per scene
        for s in scenes:
            lab = "labelled" if s.label_path else "no label"
            v = versions.get(s.id, 0)
            print(f"{s.id:<32} {s.split:<5} {s.width}x{s.height} {s.scheme:<6} {lab}"
                  + (f", label version {v}" if v else "") + f"  {s.name}")
        return 0
    if a.action == "history":
        rows = ws.split_history(a.scene, limit=a.limit)
        if not rows:
            print("no scene has been moved between splits" + (f" (scene {a.scene})" if a.scene else ""))
        for r in rows:
            print(f"{r.created_at[:19].replace('T', ' ')} UTC  {r.scene_id}: {r.from_split} → {r.to_split}  by "
                  f"{r.analyst or '(no name)'}" + (f"  — {r.reason}" if r.reason else ""))
        return 0
    if a.action == "propose-val":
        prop = scene_splits.propose_val(ws, a.k, scheme=a.scheme, prefer_unlearned=not a.any_scene)
        print(scene_splits.proposal_note(prop))  # the same words as the Home page's
        if prop.unconstrained is not None:
            print("(--any-scene takes the plain greedy choice)")
        wanted = prop.moves
    else:  # move
        wanted = dict.fromkeys(a.scene, a.to)
    moves = scene_splits.planned_moves(ws, wanted)
    if not moves:
        print("nothing to move: every scene is already where it would go")
        return 0
    for sid, (frm, to) in moves.items():
        print(f"  {sid}: {frm} → {to}")
    for e in scene_splits.move_effects(ws, wanted):
        print(f"{e.level}: {e.text}")
    if a.action == "propose-val" and not a.apply:
        print("(a proposal: add --apply --analyst NAME to make these moves)")
        return 0
    if a.action == "move" and a.dry_run:
        print("(--dry-run: nothing moved)")
        return 0
    if not (a.analyst or "").strip():
        raise SegHZError("moving scenes between splits changes what models are trained and judged on: give "
                         "--analyst NAME (recorded with the move; --reason says why)")
    done = ws.move_scenes(wanted, analyst=a.analyst, reason=a.reason or "")
    print(f"moved {len(done)} scene(s); `python -m seghz scenes history` lists the moves")
    return 0


def cmd_vectors(a) -> int:
    from seghz.data.io import atomic_write_bytes
    from seghz.geo import vectors

    ws = _workspace(a)
    out = Path(a.out)
    if not out.parent.is_dir():
        raise SegHZError(f"--out {out}: folder {out.parent} does not exist")
    scene = ws.get_scene(a.scene)
    if a.what == "label" and scene.label_path is None and ws.latest_label_version(a.scene) == 0:
        raise SegHZError(f"scene '{a.scene}': has no label (imagery only) and no saved label version, so --what label "
                         f"has nothing to draw; nothing written to {out}")
    if a.what == "corrections":
        fc = vectors.corrections_geojson(ws, a.scene, a.version, a.min_pixels)
    else:
        fc = vectors.label_geojson(ws, a.scene, a.version, a.min_pixels)
    atomic_write_bytes(out, vectors.to_bytes(fc))
    n = len(fc["features"])
    px = sum(f["properties"]["area_px"] for f in fc["features"])
    print(f"wrote {n} polygon(s) covering {px:,} px ({a.what}, label version {fc['label_version']} of scene "
          f"'{a.scene}'; coordinates {fc['coordinate_system']}) to {out}")
    if n == 0 and a.what == "corrections":
        print(f"note: label version {fc['label_version']} of scene '{a.scene}' holds no corrections", file=sys.stderr)
    if fc["coordinate_system"] == vectors.PIXEL_COORDS:
        print("warning: the scene has no CRS, so the positions are pixels ([column, -row]), not degrees: a GIS will "
              "place them near 0°N 0°E", file=sys.stderr)
    return 0


def _print_verdict(v) -> None:
    from seghz import gate

    # differences and the margin in percentage points, IoU in percent: the app's units (the JSON keeps fractions)
    print(f"regression gate ({v.rule} rule, margin {gate.fmt_margin_pp(v.margin)}): {v.status.upper()} — {v.message}")
    if v.rows:
        from seghz.metrics import fmt_pct

        print(gate.verdict_table(v).to_string(index=False, formatters={
            "active IoU": fmt_pct, "candidate IoU": fmt_pct, "Δ IoU": lambda x: gate.fmt_delta_pp(x, margin=v.margin)}))


def cmd_checkpoints(a) -> int:
    """The workspace's checkpoint registry: list, add a file, the regression gate, promote, roll back, history.

    ``gate`` and ``promote`` exit 1 when the gate does not pass (promote: unless overridden), so scripts can stop."""
    from seghz import gate

    ws = _workspace(a)
    if a.action == "list":
        active = ws.active_checkpoint()
        cks = ws.list_checkpoints(include_archived=a.all)
        if not cks:
            print(f"no checkpoints registered in workspace {ws.root}")
            return 0
        for c in cks:
            val = (c.metrics or {}).get("val") or {}
            miou = val.get("miou")
            mark = "*" if active is not None and c.id == active.id else " "
            print(f"{mark} {c.id:<40} {c.name[:30]:<30} {c.arch}/{c.encoder} {c.scheme:<6} "
                  f"val mIoU {'—' if miou is None else f'{100 * float(miou):.2f}':>6}  parent {c.parent_id or '—'}"
                  + (f"  [{c.archived_text()}]" if c.archived else ""))
        hidden = len(ws.list_checkpoints(include_archived=True)) - len(cks)
        if hidden:
            print(f"({hidden} archived checkpoint(s) not shown: --all lists them)")
        print("(* = active; val mIoU = each checkpoint's own validation data when it was trained: compare two "
              "on the same data with `checkpoints gate ID --compute` or `seghz compare`)")
        return 0
    if a.action == "add":
        import shutil

        from seghz.data.io import atomic_target
        from seghz.data.scenes import register_checkpoint_file
        from seghz.models.checkpoint import read_metadata

        src = Path(a.file)
        meta = read_metadata(src)  # names the file when it is not a SegHZ checkpoint (never unpickled), before copying
        if a.parent:
            ws.get_checkpoint(a.parent)  # NotFoundError names it, before anything is copied
            _check_recorded_parent(ws, src, meta, a.parent)
        dest = src
        if not a.no_copy:
            dest = ws.root / "checkpoints" / src.name
            if dest.exists():
                same = [c.id for c in ws.list_checkpoints() if ws.checkpoint_path(c).resolve() == dest.resolve()]
                raise SegHZError(f"{dest} exists already" + (f", registered as '{same[0]}'" if same else
                                 " (not registered: `checkpoints add` it with --no-copy)")
                                 + "; to add this file too, give it another name")
            dest.parent.mkdir(parents=True, exist_ok=True)
            with atomic_target(dest) as tmp:
                shutil.copyfile(src, tmp)
        cid = register_checkpoint_file(ws, dest, name=a.name, parent_id=a.parent, note=a.note or f"added from {src}")
        print(f"registered {cid} ({dest}); promote it with: python -m seghz checkpoints promote {cid}")
        return 0
    if a.action == "gate":
        v = gate.check(ws, a.id, margin=a.margin, rule=a.rule, compute=a.compute, intervals=a.compute or None)
        _print_verdict(v)
        _warn_gate_training_overlap(ws, v)
        if a.json:
            Path(a.json).parent.mkdir(parents=True, exist_ok=True)
            Path(a.json).write_text(json.dumps(v.to_dict(), indent=1))
        return 0 if v.passed else 1
    if a.action == "promote":
        if a.override and not ((a.analyst or "").strip() and (a.reason or "").strip()):
            raise SegHZError("promote --override records who overrode the regression gate and why: give --analyst NAME "
                             "and --reason TEXT")
        try:
            v = gate.promote(ws, a.id, override=a.override, analyst=a.analyst or "", reason=a.reason or "",
                             margin=a.margin, compute=not a.no_compute, rule=a.rule)
        except gate.GateRefused as e:
            _print_verdict(e.verdict)
            print(f"error: {e}", file=sys.stderr)
            return 1
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        _print_verdict(v)
        _warn_gate_training_overlap(ws, v)
        print(f"active model: {a.id}" + (" (gate overridden, recorded)" if not v.passed else ""))
        return 0
    if a.action == "archive":
        ck = ws.archive_checkpoint(a.id, analyst=a.analyst or "", reason=a.reason or "", delete_file=not a.keep_file)
        kept = ws.checkpoint_path(ck).exists()
        print(f"{ck.id} {ck.archived_text()}; " + (f"its weights stay at {ws.checkpoint_path(ck)}" if kept
                                                  else "its weights file was deleted"))
        return 0
    if a.action == "rollback":
        if not (a.analyst or "").strip():
            raise SegHZError("rolling back changes the active model: give --analyst NAME (recorded in `checkpoints "
                             "history`; --reason says why)")
        now = ws.rollback(analyst=a.analyst.strip(), reason=(a.reason or "").strip())  # nothing to roll back: exit 2
        print(f"active model: {now.id} (rolled back)")
        return 0
    hist = ws.promotion_history(limit=a.limit)
    if not hist:
        print(f"no promotions or rollbacks recorded in workspace {ws.root}")
        return 0
    print(gate.history_table(hist).to_string(index=False))
    print("(times in UTC)")
    return 0


def cmd_demo_data(a) -> int:
    from seghz.classes import get_scheme
    from seghz.data.io import write_index_mask, write_rgb
    from seghz.demo import generate_scene

    out = Path(a.out)
    hz7 = get_scheme("hz7")
    for seed in a.seeds:
        rgb, lbl = generate_scene(a.size, seed)
        write_rgb(out / "images" / f"demo_{seed}.png", rgb)
        write_index_mask(out / "labels" / f"demo_{seed}.png", hz7.index_to_ids(lbl))
    print(f"wrote {len(a.seeds)} synthetic scene(s) to {out}/images and {out}/labels (hz7 id masks)")
    return 0


def cmd_noise_rank(a) -> int:
    """Per-pixel label suspicion (``<stem>.npy``) and the ranked review queue (``--json``) for an image/label folder.

    Two passes: the first predicts every image once (probabilities and TTA disagreement, cached in a temporary
    folder) and accumulates the per-class confident-learning thresholds over the whole folder; the second
    scores, writes the ``.npy`` files and groups suspicious pixels into queue items. Queue items carry class
    names (``label_class``/``predicted_class``), 0-based class indices of the checkpoint's scheme
    (``label_index``/``predicted_index``) and the scheme's class ids as its label files write them
    (``label_id``/``predicted_id``); ``bbox`` is ``[row0, col0, row1, col1]``, end-exclusive.
    """
    import tempfile

    import numpy as np

    from seghz.classes import get_scheme
    from seghz.data.io import list_pairs, read_pair
    from seghz.errors import BadInputError
    from seghz.evaluate import label_for_checkpoint
    from seghz.infer.engine import Predictor
    from seghz.models.checkpoint import read_metadata
    from seghz.review.suspicion import DEFAULT_WEIGHTS, ClassThresholds, combine, group_components, signals

    if not Path(a.checkpoint).is_file():
        raise SegHZError(f"{a.checkpoint}: checkpoint file does not exist")
    src = get_scheme(a.scheme)
    meta = read_metadata(a.checkpoint)
    ck_scheme = meta["scheme"]["name"]
    names = list(meta["scheme"]["names"])
    if a.scheme != ck_scheme:
        from seghz.classes import index_crosswalk

        index_crosswalk(a.scheme, ck_scheme)  # raises SchemeMismatchError naming both schemes
    _check_input_folder(a.images, "--images")
    _check_input_folder(a.labels, "--labels")
    pairs = list_pairs(a.images, a.labels)
    if not pairs:
        raise BadInputError(a.images, "no image/label pairs")
    if a.tau <= 0:
        raise SegHZError(f"--tau must be > 0 nats, got {a.tau}")
    if a.top_fraction is not None and not 0 < a.top_fraction <= 1:
        raise SegHZError(f"--top-fraction must be in (0, 1], got {a.top_fraction}")
    if a.cross_fit and a.cross_fit < 2:
        raise SegHZError(f"--cross-fit needs at least 2 folds, got {a.cross_fit}")
    out = Path(a.scores)
    out.mkdir(parents=True, exist_ok=True)
    nc = int(meta["num_classes"])
    acc = ClassThresholds(nc)
    with tempfile.TemporaryDirectory(prefix="seghz-noise-") as tmp:
        if a.cross_fit:
            from seghz.review.crossfit import fold_assignment, held_out_head

            folds = fold_assignment(len(pairs), a.cross_fit)
            fold_of = {i: f for f, members in enumerate(folds) for i in members}
            heads = []
            rng = np.random.default_rng(0)
            bar = _tqdm_progress("noise-rank: held-out heads")
            try:
                for f, members in enumerate(folds):
                    others = [i for i in range(len(pairs)) if fold_of[i] != f]
                    others = sorted(rng.choice(others, min(len(others), a.cross_fit_images), replace=False).tolist())
                    fit = []
                    for i in others:
                        img, lbl = read_pair(*pairs[i], src)
                        fit.append((img, label_for_checkpoint(lbl, a.scheme, ck_scheme)))
                    path = held_out_head(a.checkpoint, fit, Path(tmp) / f"head{f}.safetensors",
                                         max_images=a.cross_fit_images, device=a.device)
                    heads.append(Predictor.from_checkpoint(path, a.device, batch_size=a.batch_size)[0])
                    bar((f + 1) / len(folds), f"fold {f + 1}/{len(folds)}: head fitted on {len(fit)} image(s)")
            finally:
                bar.close()
            predictor_for = lambda i: heads[fold_of[i]]
        else:
            pred, _ = Predictor.from_checkpoint(a.checkpoint, a.device, batch_size=a.batch_size)
            predictor_for = lambda i: pred
        bar = _tqdm_progress("noise-rank: predict")
        try:
            for i, (ip, lp) in enumerate(pairs):
                img, lbl = read_pair(ip, lp, src)
                lbl = label_for_checkpoint(lbl, a.scheme, ck_scheme)
                res = predictor_for(i).predict_full(img, a.tta, return_proba=True)
                acc.update(res.proba, lbl)
                np.savez(Path(tmp) / f"{i}.npz", proba=res.proba, disagreement=res.disagreement, label=lbl)
                bar((i + 1) / len(pairs), ip.name)
        finally:
            bar.close()
        thr, freq = acc.thresholds(), acc.frequencies()
        queue = []
        bar = _tqdm_progress("noise-rank: score")
        try:
            for i, (ip, _) in enumerate(pairs):
                z = np.load(Path(tmp) / f"{i}.npz")
                lbl = z["label"]
                sig = signals(z["proba"], lbl, z["disagreement"], thresholds=thr, tau=a.tau)
                score = combine(sig, lbl, DEFAULT_WEIGHTS)
                dst = out / f"{ip.stem}.npy"
                part = out / f".{ip.stem}.npy.part"
                with open(part, "wb") as f:
                    np.save(f, score)
                os.replace(part, dst)
                queue += group_components(score, lbl, sig["argmax"], stem=ip.stem, names=names, threshold=a.threshold,
                                          top_fraction=a.top_fraction, min_pixels=a.min_pixels, rarity=a.rarity,
                                          class_freq=freq)
                bar((i + 1) / len(pairs), ip.name)
        finally:
            bar.close()
    queue.sort(key=lambda it: (-it.score, it.stem, it.bbox))
    print(f"scored {len(pairs)} image(s) into {out}; {len(queue)} queue item(s)", file=sys.stderr)
    for it in queue[:10]:
        print(f"{it.stem}  bbox {list(it.bbox)}  {it.pixels} px  score {it.score:.1f}  "
              f"label {it.label_class} -> predicted {it.predicted_class}")
    if a.json:
        from seghz.data.io import atomic_write_bytes

        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        ck = get_scheme(ck_scheme)

        def with_ids(d: dict) -> dict:  # the item's indices under *_index, the scheme's file ids under *_id
            for k in ("label", "predicted"):
                ix = int(d.pop(f"{k}_id"))
                d[f"{k}_index"] = ix
                d[f"{k}_id"] = int(ck.ids[ix]) if 0 <= ix < len(ck.ids) else None
            return d

        atomic_write_bytes(a.json, json.dumps([with_ids(it.to_json()) for it in queue], indent=1).encode(),
                           fsync=False)
    return 0


def _review_split(text: str | None) -> str | None:
    """``--split all`` -> None (every scene); otherwise the split name."""
    return None if text in (None, "all") else text


def cmd_review(a) -> int:
    """The workspace-wide review plan (``seghz.review.plan``): ``build`` the noise queues of many scenes in the
    foreground, ``plan`` ranks every saved queue's pending items across scenes with the cumulative review time.

    ``build`` exits 1 when a scene's queue could not be built (the others are built; each failure is printed)."""
    from seghz.review import plan as rp

    ws = _workspace(a)
    active = ws.active_checkpoint()
    if a.action == "build":
        cid = a.checkpoint or (active.id if active else None)
        if not cid:
            raise SegHZError("no checkpoint given and none is active: give --checkpoint ID "
                             "(`python -m seghz checkpoints list`)")
        ws.usable_checkpoint(cid)  # NotFoundError names it (archived: its weights are gone)
        if not 0.0 < a.threshold <= 1.0:
            raise SegHZError(f"--threshold must be in (0, 1], got {a.threshold}")
        if a.scenes:
            scenes = [s.strip() for s in a.scenes.split(",") if s.strip()]
            for sid in scenes:
                ws.get_scene(sid)  # NotFoundError names an unknown scene before any work
        else:
            scenes = rp.scenes_needing_queues(ws, _review_split(a.split), checkpoint_id=cid,
                                              active_id=active.id if active else None)
        if not scenes:
            print(f"nothing to build: every labelled scene of the {a.split} split has a fresh queue "
                  "(--scenes names scenes to rebuild)")
            return 0
        how = "held-out for training scenes" if a.held_out is None else "held-out" if a.held_out else "in-sample"
        print(f"building the noise queues of {len(scenes)} scene(s) with {cid} (TTA {a.tta}, threshold "
              f"{a.threshold:.2f}, scoring {how})", file=sys.stderr)
        bar = _tqdm_progress("review build")
        try:
            res = rp.build_queues(ws, cid, scenes, tta=a.tta, threshold=a.threshold, held_out=a.held_out,
                                  progress=bar, log=lambda line: print(line, file=sys.stderr, flush=True),
                                  device=a.device)
        finally:
            bar.close()
        n = {k: sum(1 for b in res if b.status == k) for k in ("built", "skipped", "failed")}
        print(f"{n['built']} queue(s) built, {n['skipped']} scene(s) skipped, {n['failed']} failed; "
              "`python -m seghz review plan` ranks them")
        return 1 if n["failed"] else 0

    budget = rp.parse_duration(a.budget) if a.budget else None
    plan = rp.review_plan(ws, split=_review_split(a.split), active_id=active.id if active else None,
                          budget_s=budget, seconds_per_item=a.seconds_per_item, analyst=a.analyst)
    rows = plan.items[: a.limit] if a.limit else plan.items
    if rows:
        print(f"{'rank':>4} {'cum.':>9} {'score':>8} {'px':>7}  {'scene':<24} {'split':<5} {'label -> predicted':<34} "
              "bbox (row0,col0,row1,col1)")
    for r in rows:
        print(f"{r.rank:>4} {rp.fmt_minutes(r.cumulative_s):>9} {r.score:>8.1f} {r.pixels:>7}  {r.scene_name[:24]:<24} "
              f"{r.split:<5} {(r.label_class + ' -> ' + r.predicted_class)[:34]:<34} {','.join(map(str, r.bbox))}"
              + ("  [stale queue]" if r.stale else ""))
    where = f"the {a.split} split" if a.split != "all" else "the workspace"
    print(f"{plan.total_items} item(s) to review in {where} (~{rp.fmt_minutes(plan.total_s)} at "
          f"{plan.seconds_per_item:.0f} s an item: {plan.pace_source})")
    if budget is not None:
        print(f"budget {rp.fmt_minutes(budget)}: {len(plan.items)} item(s) fit, {plan.cut} left for later")
    if a.limit and len(plan.items) > a.limit:
        print(f"(first {a.limit} of {len(plan.items)} shown: --limit 0 shows all)")
    if plan.stale_items:
        print(f"{plan.stale_items} item(s) come from out-of-date queues: ranked after the fresh ones; "
              "`python -m seghz review build` rebuilds them")
    if plan.no_queue:
        shown = ", ".join(plan.no_queue[:10]) + (" …" if len(plan.no_queue) > 10 else "")
        print(f"{len(plan.no_queue)} labelled scene(s) without a queue: {shown}; `python -m seghz review build` "
              "builds them")
    for line in plan.unreadable:
        print(f"warning: queue not read: {line}", file=sys.stderr)
    if a.json:
        from seghz.data.io import atomic_write_bytes

        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(a.json, json.dumps(plan.to_dict(), indent=1).encode(), fsync=False)
    return 0


def _parse_bbox(text: str) -> tuple[float, float, float, float]:
    from seghz.geo.fetch import parse_bbox

    try:
        return parse_bbox(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def cmd_fetch(a) -> int:
    """Fetch XYZ tiles over a WGS-84 bbox into an EPSG:3857 GeoTIFF mosaic; prints the size estimate first."""
    from seghz.geo.fetch import check_template, fetch_baidu, fetch_xyz, plan_baidu, plan_xyz

    check_template(a.url)
    plan = (plan_baidu if a.baidu else plan_xyz)(a.bbox, a.zoom)
    print(f"estimate: {plan.describe()}", flush=True)
    if a.max_tiles is not None and plan.tiles > a.max_tiles:
        print(f"error: {plan.tiles} tiles exceed --max-tiles {a.max_tiles}; use a smaller bbox or zoom", file=sys.stderr)
        return 2
    last = [-1]

    def progress(frac: float, msg: str) -> None:
        step = int(frac * 10)
        if step != last[0]:
            last[0] = step
            print(f"  {frac * 100:5.1f}%  {msg}", file=sys.stderr, flush=True)

    res = (fetch_baidu if a.baidu else fetch_xyz)(a.url, a.bbox, a.zoom, a.output, cache_dir=a.cache, rate=a.rate, max_tiles=a.max_tiles,
                    retries=a.retries, progress=progress)
    print(res.summary())
    for x, y, why in res.missing[:20]:
        print(f"  missing tile {plan.zoom}/{x}/{y}: {why}", file=sys.stderr)
    return 0


def cmd_align(a) -> int:
    """Align a label map to imagery (control points or automatic matching); print the RMSE; optionally refine the
    global transform non-rigidly from automatic window matches (``--refine local``); optionally write the warped
    label, a before/after overlay PNG, and import the pair as a scene."""
    from seghz.geo import align as A
    from seghz.geo.align_scene import import_aligned_scene, load_pair, load_points, write_overlay

    label, image = load_pair(a.label, a.image, a.scheme)
    pts = load_points(a.points) if a.points else None
    refine = getattr(a, "refine", "none")
    if pts is not None and not a.auto:
        src, dst, _ = pts
        try:
            M = A.fit_transform(src, dst, a.kind)
        except ValueError as e:
            raise SegHZError(f"control points {a.points}: {e}") from None
        method = f"manual ({len(src)} control points)"
        print(f"fit {a.kind} on {len(src)} control points")
    else:
        res = A.auto_align(label, image, kind=a.kind, palette=None)
        M, method = res.M, f"automatic: {res.method}"
        print(f"automatic matching: {res.method}, score {res.score:.4f}, {res.inliers} inlier windows/features, "
              f"{res.seconds:.1f} s")
    print("matrix (label px -> image px):")
    for row in M:
        print("  " + "  ".join(f"{v: .6g}" for v in row))
    T = M
    if refine == "local":
        try:
            T = A.local_refine(label, image, M)
        except ValueError as e:
            print(f"local refinement not used ({e}); keeping the global {a.kind}", file=sys.stderr)
        else:
            cv = T.info["cv"] or {}
            method += " + local field"
            print(f"local refinement: {T.info['correspondences']} window matches ({T.info['inliers']} kept), "
                  f"{T.info['estimator']} kernel, sigma {T.info['sigma_px']} label px, prior {T.info['prior']} "
                  f"(block cross-validation: {cv.get('cv_rmse_px')} px vs {cv.get('cv_rmse_global_px')} px for the "
                  f"global transform), max displacement {T.info['max_displacement_px']:.2f} px, "
                  f"{T.info['seconds']:.1f} s")
    rmse = loo = None
    n = 0
    if pts is not None:
        src, dst, _ = pts
        n = len(src)
        before = A.rmse(A.resize_transform(label.shape, image.shape), src, dst)
        rmse = A.rmse(T, src, dst)
        if T is not M:
            print(f"RMSE on {n} control points: {rmse:.2f} px with the local field ({A.rmse(M, src, dst):.2f} px "
                  f"global {a.kind}; plain resize: {before:.2f} px)")
        else:
            print(f"RMSE on {n} control points: {rmse:.2f} px (plain resize: {before:.2f} px)")
        if not a.auto and n > A.MIN_POINTS[a.kind] and T is M:
            loo, _ = A.holdout_rmse(src, dst, a.kind)
            print(f"leave-one-out RMSE: {loo:.2f} px")
    if a.out:
        from seghz.classes import get_scheme
        from seghz.data.io import write_index_mask

        write_index_mask(a.out, A.warp_label(label, T, image.shape[:2]), get_scheme(a.scheme))
        print(f"wrote the aligned label (class indices, palette PNG; 255 = outside the label) to {a.out}")
    if a.overlay:
        write_overlay(a.overlay, label, image, T, a.scheme)
        print(f"wrote the before (plain resize) / after overlay to {a.overlay}")
    if a.import_scene:
        sc = import_aligned_scene(_workspace(a), a.label, a.image, T, scheme=a.scheme, name=a.import_scene, kind=a.kind,
                                  method=method, rmse=rmse, n_points=n, holdout_rmse=loo, label=label,
                                  target_scheme=a.target_scheme, split=a.split)
        print(f"imported scene '{sc.name}' ({sc.id}, {sc.scheme}, split {sc.split}) with the aligned label")
    return 0


def _no_default(action) -> bool:
    """An option whose default is not worth stating: None, False (a flag) or suppressed (not 0: a seed of 0 is one)."""
    return action.default is None or action.default is False or action.default == argparse.SUPPRESS


class _HelpWithDefaults(argparse.HelpFormatter):
    """Help that states each option's default, unless it is empty (None/False) or the help text names it already."""

    def _get_help_string(self, action):
        text = action.help or ""
        if not action.option_strings or _no_default(action) or "default" in text.lower():
            return text
        return f"{text} (default: %(default)s)".strip()


def _with_defaults(parser: argparse.ArgumentParser) -> None:
    """Give ``parser`` and every subcommand below it :class:`_HelpWithDefaults`."""
    parser.formatter_class = _HelpWithDefaults
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _with_defaults(sub)
        elif action.option_strings and not action.help and not _no_default(action):
            action.help = "default: %(default)s"  # argparse shows no help line at all for options without help


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m seghz", description="SegHZ land-cover workbench (command line)")
    p.add_argument("--workspace", help="workspace folder (default $SEGHZ_WORKSPACE or ./workspace)")
    sub = p.add_subparsers(dest="cmd", required=True)

    im = sub.add_parser("import", help="import imagery (+labels) into the workspace")
    im.add_argument("path", nargs="?", help="imagery without a label: a GeoTIFF (any CRS; none = pixel space), PNG/JPEG, "
                                            "or a folder of Baidu tiles {x}-{y}.jpeg")
    im.add_argument("--zoom", type=int, help="Baidu level of a tile folder (default: the folder name if it is a "
                                             "number, else 16)")
    im.add_argument("--image", help="one image: GeoTIFF (any CRS), PNG or JPEG")
    im.add_argument("--label", help="its label: id mask or RGB palette mask")
    im.add_argument("--name")
    im.add_argument("--split", default="none", choices=["train", "val", "test", "none"])
    im.add_argument("--images", help="folder of images (paired with --labels by file stem)")
    im.add_argument("--labels", help="folder of label files")
    im.add_argument("--scheme", help="class scheme of the label files (required with --image/--images; "
                                      "default hz7 for PATH)")
    im.add_argument("--target-scheme", help="store labels crosswalked to this scheme")
    im.add_argument("--test-fraction", type=float, default=0.2)
    im.add_argument("--val-count", type=int, default=60)
    im.add_argument("--limit", type=int, help="import at most N pairs")
    im.add_argument("--allow-duplicate", action="store_true",
                    help="import even what is already a scene: PATH (same file content or tile folder), --image or "
                         "--images pairs whose image is already a scene (same content; with another label too)")
    im.set_defaults(fn=cmd_import)

    pr = sub.add_parser("predict", help="predict class masks for an image or a folder of images")
    pr.add_argument("--checkpoint", required=True)
    pr.add_argument("--input", required=True, help="image file or folder")
    pr.add_argument("--output", required=True, help="output PNG (single input) or folder")
    pr.add_argument("--tta", default="none", choices=["none", "flip", "d4"])
    pr.add_argument("--color", action="store_true", help="also write a colourised PNG")
    pr.add_argument("--areas", action="store_true", help="also write a class-area CSV")
    pr.add_argument("--device")
    pr.add_argument("--batch-size", type=int, default=4)
    pr.set_defaults(fn=cmd_predict)

    ps = sub.add_parser("predict-scene", help="predict a whole (huge) GeoTIFF, streamed row by row, into a class GeoTIFF")
    ps.add_argument("--checkpoint", required=True)
    ps.add_argument("--input", required=True, help="GeoTIFF (RGB, or RGB + alpha)")
    ps.add_argument("--output", required=True, help="output GeoTIFF (uint8 class index, colour table, 255 = nodata)")
    ps.add_argument("--tta", default="none", help="none | flip | d4 | comma-separated views, e.g. identity,lr,rot90")
    ps.add_argument("--tile", type=int, help="model window size (default: the checkpoint's tile size)")
    ps.add_argument("--overlap", type=float, help="window overlap fraction (default 0.25)")
    ps.add_argument("--blend", default="uniform", choices=["uniform", "gaussian", "cosine"], help="window blending")
    ps.add_argument("--merge", default="softmax", choices=["softmax", "logits"], help="merge views by mean softmax or logits")
    ps.add_argument("--compile", default="auto", choices=["auto", "on", "off"],
                    help="torch.compile the model (auto, when a C++ compiler exists: jobs of >= 0.15 gigapixels of window "
                         "input × TTA views on the CPU, >= 14 on CUDA, where the first compile pays)")
    ps.add_argument("--uncertainty", action="store_true", help="also write <output>_uncertainty.tif (confidence, entropy, disagreement)")
    ps.add_argument("--png", help="also write a colourised preview PNG (long side <= 4096)")
    ps.add_argument("--areas", help="also write a class-area CSV (km2 when georeferenced)")
    ps.add_argument("--device")
    ps.add_argument("--batch-size", type=int, help="model inputs per batch (default: 4 on CPU, from free memory on CUDA)")
    ps.set_defaults(fn=cmd_predict_scene)

    inf = sub.add_parser("info", help="show schemes, the workspace summary, or a checkpoint's metadata")
    inf.add_argument("--checkpoint")
    inf.add_argument("--stems", action="store_true", help="with --checkpoint: list its held-out test and val stems")
    inf.set_defaults(fn=cmd_info)

    t = sub.add_parser("train", help="train a model on an image/label folder pair")
    t.add_argument("--images", required=True)
    t.add_argument("--labels", required=True)
    t.add_argument("--scheme", required=True, help="class scheme of the label files")
    t.add_argument("--target-scheme", help="train in this scheme (labels crosswalked)")
    t.add_argument("--out", required=True, help="checkpoint path (.safetensors); an existing file is refused unless "
                                               "--resume continues that run or --overwrite is given, and a checkpoint "
                                               "registered in the workspace always")
    t.add_argument("--arch", default="Unet")
    t.add_argument("--encoder", default="tu-efficientnet_lite0")
    t.add_argument("--weights", default="lite0-imagenet", help="'lite0-imagenet' or 'none'")
    t.add_argument("--parent", help="start from this checkpoint")
    t.add_argument("--epochs", type=int, default=30)
    t.add_argument("--batch-size", type=int, default=16, help="images per step (per process under torchrun)")
    t.add_argument("--crop-size", type=int, default=224)
    t.add_argument("--tile-size", type=int, default=512)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--no-dice", action="store_true")
    t.add_argument("--steps-per-epoch", type=int, help="default: one pass over the training pixels")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device")
    t.add_argument("--test-fraction", type=float, default=0.2)
    t.add_argument("--val-count", type=int, default=60)
    t.add_argument("--resume", action="store_true",
                   help="continue from <out>.state.safetensors (weights, optimizer, scheduler, RNG) when it exists")
    t.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out file (never a checkpoint registered in the workspace)")
    t.add_argument("--no-amp", action="store_true", help="CUDA: train in fp32 (default: bf16 autocast; the CPU always trains in fp32)")
    t.add_argument("--no-ddp", action="store_true", help="do not use DDP even when WORLD_SIZE > 1")
    t.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="any recipe field, e.g. --set noise_mask=cos --set label_smoothing=0.1 --set ohem=true "
                        "--set sampler=class_aware --set patience=5 (repeatable; values are JSON)")
    t.set_defaults(fn=cmd_train)

    e = sub.add_parser("evaluate", help="evaluate a checkpoint on an image/label folder pair")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--images", required=True)
    e.add_argument("--labels", required=True)
    e.add_argument("--scheme", required=True, help="class scheme of the label files")
    e.add_argument("--tta", default="none", choices=["none", "flip", "d4"])
    e.add_argument("--json")
    e.add_argument("--device")
    e.add_argument("--batch-size", type=int, default=8)
    e.add_argument("--stems-from-checkpoint", nargs="?", const="test", choices=["test", "val"],
                   help="only the checkpoint's held-out test stems (default) or its validation stems (re-derived)")
    e.set_defaults(fn=cmd_evaluate)
    cp = sub.add_parser("compare", help="score two checkpoints on the same pairs: difference with a paired bootstrap interval")
    cp.add_argument("--checkpoint", required=True, help="the reference (e.g. the active model)")
    cp.add_argument("--candidate", required=True, help="the checkpoint compared with it (differences are candidate − reference)")
    cp.add_argument("--images", required=True)
    cp.add_argument("--labels", required=True)
    cp.add_argument("--scheme", required=True, help="class scheme of the label files")
    cp.add_argument("--tta", default="none", choices=["none", "flip", "d4"])
    cp.add_argument("--stems-from-checkpoint", nargs="?", const="test", choices=["test", "val"],
                    help="only the reference checkpoint's held-out test stems (default) or its validation stems")
    cp.add_argument("--rounds", type=int, default=2000, help="bootstrap rounds (images drawn with replacement)")
    cp.add_argument("--level", type=float, default=0.95, help="interval level")
    cp.add_argument("--seed", type=int, default=0)
    cp.add_argument("--margin", type=float, default=None,
                    help="regression gate margin (absolute IoU; default 0.02, the app's): the verdict is printed under "
                         "both gate rules, 'margin' and 'interval'")
    cp.add_argument("--json")
    cp.add_argument("--device")
    cp.add_argument("--batch-size", type=int, default=8)
    cp.set_defaults(fn=cmd_compare)
    rp = sub.add_parser("report", help="evaluate and write a self-contained HTML report")
    rp.add_argument("--checkpoint", required=True)
    rp.add_argument("--images", required=True)
    rp.add_argument("--labels", required=True)
    rp.add_argument("--scheme", required=True, help="class scheme of the label files")
    rp.add_argument("--html", required=True, help="output .html file (opens offline: plotly.js is inlined)")
    rp.add_argument("--tta", default="none", choices=["none", "flip", "d4"])
    rp.add_argument("--cells", type=int, default=3, help="top confusions (true → predicted) to illustrate")
    rp.add_argument("--examples", type=int, default=2, help="example windows per confusion")
    rp.add_argument("--device")
    rp.add_argument("--batch-size", type=int, default=8)
    rp.add_argument("--stems-from-checkpoint", nargs="?", const="test", choices=["test", "val"],
                    help="only the checkpoint's held-out test stems (default) or its validation stems (re-derived)")
    rp.set_defaults(fn=cmd_report)
    ck = sub.add_parser("checkpoints", help="the workspace's checkpoint registry: list, add, gate, promote, rollback, archive, history")
    cks = ck.add_subparsers(dest="action", required=True)
    cl = cks.add_parser("list", help="registered checkpoints (* = active), newest first")
    cl.add_argument("--all", action="store_true", help="archived ones too (their weights are gone; lineage stays)")
    ca = cks.add_parser("add", help="register a checkpoint file (copied into the workspace's checkpoints/)")
    ca.add_argument("file", help="a SegHZ .safetensors checkpoint")
    ca.add_argument("--name")
    ca.add_argument("--parent", help="id of the checkpoint it was fine-tuned from")
    ca.add_argument("--note")
    ca.add_argument("--no-copy", action="store_true", help="register the file where it is")
    cg = cks.add_parser("gate", help="the regression gate's verdict for promoting ID over the active model (exit 1 "
                                     "unless it passes)")
    cg.add_argument("id")
    cg.add_argument("--margin", type=float, help="default: the workspace's setting (0.02)")
    from seghz.gate import RULES  # the one list of rules (imports no torch)

    cg.add_argument("--rule", choices=RULES, help="default: the workspace's setting (margin)")
    cg.add_argument("--compute", action="store_true",
                    help="score both models on the validation split when needed (scene by scene: with intervals)")
    cg.add_argument("--json", help="write the verdict here")
    cp2 = cks.add_parser("promote", help="make ID the active model if the gate passes (exit 1 when refused)")
    cp2.add_argument("id")
    cp2.add_argument("--override", action="store_true", help="promote despite the gate (needs --analyst and --reason)")
    cp2.add_argument("--analyst")
    cp2.add_argument("--reason")
    cp2.add_argument("--margin", type=float, help="largest allowed per-class IoU drop (default: the workspace's, 0.02)")
    cp2.add_argument("--rule", choices=RULES, help="default: the workspace's setting (margin)")
    cp2.add_argument("--no-compute", action="store_true", help="do not score missing validation scores")
    cr = cks.add_parser("rollback", help="return to the previously active model (recorded with --analyst and --reason)")
    cr.add_argument("--analyst", help="who rolls back (required; recorded in the history)")
    cr.add_argument("--reason", help="why (recorded in the history)")
    cx = cks.add_parser("archive", help="retire ID: hidden from every picker, its weights file deleted; lineage, "
                                        "scores and history keep it (refused for the active model, the rollback "
                                        "target, or one a running job uses)")
    cx.add_argument("id")
    cx.add_argument("--analyst", help="who archives it (required: it deletes the weights)")
    cx.add_argument("--reason")
    cx.add_argument("--keep-file", action="store_true", help="leave the weights file on disk")
    ch = cks.add_parser("history", help="changes of the active model, newest first")
    ch.add_argument("--limit", type=int, default=20)
    ck.set_defaults(fn=cmd_checkpoints)

    vx = sub.add_parser("vectors", help="a scene's label corrections (with provenance) or its label as GeoJSON "
                                        "polygons (WGS84 on a georeferenced scene, for QGIS)")
    vx.add_argument("--scene", required=True, help="scene id (python -m seghz info lists the workspace)")
    vx.add_argument("--what", choices=["corrections", "label"], default="corrections",
                    help="corrections: every pixel relabelled, ignored or confirmed, grouped by the edit that last "
                         "touched it (action, class, original class, version, analyst, time, tool, reason); "
                         "label: one polygon per connected patch of each class (default: corrections)")
    vx.add_argument("--version", type=int, default=None, help="label version (default: the latest)")
    vx.add_argument("--min-pixels", type=int, default=1, help="leave out patches smaller than this (pixels)")
    vx.add_argument("--out", required=True, help="the .geojson file to write (atomically)")
    vx.set_defaults(fn=cmd_vectors)

    sc = sub.add_parser("scenes", help="the workspace's scenes and their splits: list, move, propose-val, history")
    scs = sc.add_subparsers(dest="action", required=True)
    sl = scs.add_parser("list", help="scenes with split, size, scheme and label state")
    sl.add_argument("--split", choices=["train", "val", "test", "none"])
    sm = scs.add_parser("move", help="move scenes to another split (what it does is printed first; recorded with "
                                     "--analyst and --reason)")
    sm.add_argument("scene", nargs="+", help="scene ids (`scenes list` shows them)")
    sm.add_argument("--to", required=True, choices=["train", "val", "test", "none"])
    sm.add_argument("--analyst", help="who moves them (required)")
    sm.add_argument("--reason")
    sm.add_argument("--dry-run", action="store_true", help="print what the moves would do, move nothing")
    sp = scs.add_parser("propose-val", help="the study's validation split: K scenes of train+val chosen by greedy "
                                            "max class-distribution entropy (the rest go to train)")
    sp.add_argument("--k", type=int, required=True, help="scenes in the validation split")
    sp.add_argument("--scheme", help="scheme to compare class distributions in (default: the active model's)")
    sp.add_argument("--any-scene", action="store_true",
                    help="the plain greedy choice: do not prefer scenes no registered model learned from")
    sp.add_argument("--apply", action="store_true", help="make the moves (needs --analyst)")
    sp.add_argument("--analyst")
    sp.add_argument("--reason", default="greedy max class-entropy validation split")
    sh = scs.add_parser("history", help="moves between splits, newest first")
    sh.add_argument("--scene")
    sh.add_argument("--limit", type=int, default=50)
    sc.set_defaults(fn=cmd_scenes)

    dr = sub.add_parser("drafts", help="unsaved label edits kept as drafts (a reload loses nothing): list, discard")
    drs = dr.add_subparsers(dest="action", required=True)
    for name, text in (("list", "every draft: scene, analyst, age, pixels, its label version, restorable or not"),
                       ("discard", "delete the drafts asked for (a filter is required; each deleted file is printed)")):
        dp = drs.add_parser(name, help=text)
        dp.add_argument("--scene")
        dp.add_argument("--analyst", help="drafts of this analyst (\"\" for drafts made without a name)")
        if name == "discard":
            dp.add_argument("--older-than", type=float, metavar="DAYS", help="only drafts older than this many days")
            dp.add_argument("--unusable", action="store_true",
                           help="only drafts no page can restore (scene gone, another size, unreadable file)")
            dp.add_argument("--dry-run", action="store_true", help="print what would be discarded, discard nothing")
        else:
            dp.set_defaults(older_than=None, unusable=False, dry_run=False)
    dr.set_defaults(fn=cmd_drafts)

    dd = sub.add_parser("demo-data", help="write synthetic demo scenes as image/label folders")
    dd.add_argument("--out", required=True)
    dd.add_argument("--seeds", type=int, nargs="+", default=[0])
    dd.add_argument("--size", type=int, default=1024)
    dd.set_defaults(fn=cmd_demo_data)

    d = sub.add_parser("train-demo", help="train the shipped demo model on synthetic scenes")
    d.add_argument("--out", default="checkpoints/demo_hz7.safetensors")
    d.add_argument("--scenes", type=int, default=6)
    d.add_argument("--size", type=int, default=1024)
    d.add_argument("--epochs", type=int, default=8)
    d.add_argument("--steps-per-epoch", type=int, default=40)
    d.add_argument("--batch-size", type=int, default=8)
    d.add_argument("--crop-size", type=int, default=256)
    d.add_argument("--lr", type=float, default=2e-3)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--device")
    d.set_defaults(fn=cmd_train_demo)

    nr = sub.add_parser("noise-rank", help="rank probably-wrong labels: per-pixel suspicion .npy files and a review queue")
    nr.add_argument("--checkpoint", required=True)
    nr.add_argument("--images", required=True, help="folder of images (paired with --labels by file stem)")
    nr.add_argument("--labels", required=True, help="folder of label files")
    nr.add_argument("--scheme", required=True, help="class scheme of the label files (crosswalked to the checkpoint's)")
    nr.add_argument("--tta", default="none", choices=["none", "flip", "d4"])
    nr.add_argument("--scores", required=True, help="output folder for <stem>.npy (float32 HxW, -inf = ignored)")
    nr.add_argument("--json", help="write the ranked queue [{stem, bbox, pixels, score, label_class, predicted_class, "
                                   "label_index, predicted_index (0-based class indices), label_id, predicted_id (the "
                                   "scheme's ids in label files), ...}]; bbox = [row0, col0, row1, col1] in image "
                                   "pixels, row1/col1 exclusive")
    nr.add_argument("--tau", type=float, default=math.log(10.0), help="noise-mask threshold in nats (default ln 10)")
    nr.add_argument("--threshold", type=float, default=0.5, help="suspicion at or above which a pixel joins a queue item")
    nr.add_argument("--top-fraction", type=float, help="instead of --threshold: keep this top fraction of each image's pixels")
    nr.add_argument("--min-pixels", type=int, default=4, help="drop queue items smaller than this")
    nr.add_argument("--rarity", type=float, default=0.0, help="class-rarity boost exponent (0 = off)")
    nr.add_argument("--device")
    nr.add_argument("--batch-size", type=int, default=8)
    nr.add_argument("--cross-fit", type=int, default=0, metavar="K",
                    help="score each of K folds with the checkpoint's head refitted on the OTHER folds' labels "
                         "(use when the checkpoint was trained on these labels; 0 = off)")
    nr.add_argument("--cross-fit-images", type=int, default=16, help="labelled images per held-out head fit, at most")
    nr.set_defaults(fn=cmd_noise_rank)
    rv = sub.add_parser("review", help="the workspace-wide review plan: build many scenes' noise queues, rank "
                                       "their pending items across scenes with a time budget")
    rvs = rv.add_subparsers(dest="action", required=True)
    rb = rvs.add_parser("build", help="build the noise queues of the labelled scenes without a fresh one (in the "
                                      "foreground; exit 1 when a scene failed)")
    rb.add_argument("--split", default="train", choices=["train", "val", "test", "none", "all"],
                    help="scenes whose queues to build (ignored with --scenes)")
    rb.add_argument("--scenes", help="comma-separated scene ids to build (or rebuild), instead of the split's "
                                     "scenes without a fresh queue")
    rb.add_argument("--tta", default="none", choices=["none", "flip", "d4"])
    rb.add_argument("--threshold", type=float, default=0.5, help="suspicion at or above which a pixel joins an item")
    hv = rb.add_mutually_exclusive_group()
    hv.add_argument("--held-out", dest="held_out", action="store_true", default=None,
                    help="score every scene with the head refitted on the OTHER scenes' labels (default: held-out "
                         "for training scenes, in-sample elsewhere, as the Labels page)")
    hv.add_argument("--in-sample", dest="held_out", action="store_false", help="score every scene with the checkpoint itself (default: see --held-out)")
    rb.add_argument("--checkpoint", help="checkpoint id (default: the active one)")
    rb.add_argument("--device")
    rpl = rvs.add_parser("plan", help="every saved queue's pending items ranked across scenes, with the cumulative "
                                      "review time (fresh queues first; out-of-date ones after, flagged)")
    rpl.add_argument("--split", default="train", choices=["train", "val", "test", "none", "all"])
    rpl.add_argument("--budget", help="time budget, e.g. 30m, 1h, 90s, or minutes (default: no cut)")
    rpl.add_argument("--seconds-per-item", type=float,
                     help="review pace (default: measured from the verdict log, 20 s until 5 verdict gaps exist)")
    rpl.add_argument("--analyst", help="use this analyst's own pace when their verdicts give one")
    rpl.add_argument("--limit", type=int, default=50, help="rows printed (0: all; --json always holds the plan)")
    rpl.add_argument("--json", help="write the plan (items, per-scene summary, scenes without a queue) here")
    rv.set_defaults(fn=cmd_review)
    fe = sub.add_parser("fetch", help="fetch XYZ map tiles over a WGS-84 bbox into an EPSG:3857 GeoTIFF mosaic")
    fe.add_argument("--url", required=True, help="tile URL template with {z} {x} {y} (optional {s} subdomain)")
    fe.add_argument("--bbox", required=True, type=_parse_bbox, help="W,S,E,N in WGS-84 degrees")
    fe.add_argument("--zoom", required=True, type=int)
    fe.add_argument("--output", required=True, help="output GeoTIFF")
    fe.add_argument("--cache", help="tile cache folder (default <output folder>/.tilecache); reruns resume from it")
    fe.add_argument("--rate", type=float, default=4.0, help="at most this many requests per second")
    fe.add_argument("--max-tiles", type=int, default=10000, help="refuse larger fetches")
    fe.add_argument("--retries", type=int, default=3)
    fe.add_argument("--baidu", action="store_true",
                    help="the template serves Baidu tiles (BD09MC ids, y northward): warp them to EPSG:3857")
    fe.set_defaults(fn=cmd_fetch)
    al = sub.add_parser("align", help="align a label map to imagery (control points or automatic); prints the fit's "
                                      "RMSE on the control points (none without --points)")
    al.add_argument("--label", required=True, help="label file (palette RGB or id mask) of --scheme")
    al.add_argument("--image", required=True, help="the imagery (PNG/JPEG/GeoTIFF)")
    al.add_argument("--scheme", required=True, help="class scheme of the label file, e.g. hz20")
    al.add_argument("--points", help="control points JSON (label_xy -> image_xy); without --auto the transform is "
                                     "fitted on them, with --auto they only measure the automatic result")
    al.add_argument("--auto", action="store_true", help="automatic matching even when --points is given")
    al.add_argument("--kind", default="homography", choices=["similarity", "affine", "homography"])
    al.add_argument("--refine", default="none", choices=["none", "local"],
                    help="'local': add a smooth non-rigid displacement field on top of the global transform, fitted "
                         "on automatic window matches only (smoothing chosen by spatial cross-validation); the "
                         "field is saved in alignment.json with --import-scene")
    al.add_argument("--out", help="write the aligned label (image grid, palette PNG) here")
    al.add_argument("--overlay", help="write a before/after overlay PNG here (local use; do not commit real data)")
    al.add_argument("--import-scene", metavar="NAME", help="import image + aligned label as a workspace scene")
    al.add_argument("--target-scheme", help="with --import-scene: store the label crosswalked to this scheme (e.g. "
                                            "hz7, the model's)")
    al.add_argument("--split", default="none", choices=["train", "val", "test", "none"],
                    help="with --import-scene: the scene's split (default none: neither trained on nor scored)")
    al.set_defaults(fn=cmd_align)
    _with_defaults(p)
    return p


def end_process(code: int) -> NoReturn:
    """Leave the process with exit status ``code``.

    A worker of a multi-process torchrun launch (``WORLD_SIZE`` > 1) leaves through ``os._exit`` once its output is
    flushed: with torch's gloo backend, a rank that had already finished its work and destroyed its process group
    was sometimes killed by ``terminate called without an active exception`` (SIGABRT) during the interpreter's
    shutdown, after every file was written, and torchrun then reported the whole run as failed (about 1 run in 30
    of a 2-rank CPU prediction under load). Python's ``faulthandler`` found no Python frame at the abort: it
    happens in the C++ teardown that ``os._exit`` skips. Every file this CLI writes is closed (and renamed into
    place) before the command returns, so nothing is lost by skipping that teardown. Anywhere else, a plain
    ``SystemExit``."""
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)
    raise SystemExit(code)


def entry() -> NoReturn:
    """The ``seghz`` command and ``python -m seghz``: :func:`main` on the command line, then :func:`end_process`.

    Output piped into a reader that stops early (``| head``) ends the command quietly, as other Unix tools do,
    instead of with a BrokenPipeError traceback."""
    try:
        code = main()
        sys.stdout.flush()
    except KeyboardInterrupt:  # Ctrl-C while the command line was still being read (imports): nothing written yet
        print("\ninterrupted: nothing written", file=sys.stderr, flush=True)
        code = 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the interpreter's final flush goes nowhere
        code = 141  # 128 + SIGPIPE, what a shell reports for a tool its pipe closed
    end_process(code)


# what an interrupted command leaves behind (Ctrl-C), by command; every file SegHZ writes is renamed into place whole
INTERRUPTED = {
    "predict-scene": "no output written (the temporary files were removed)",
    "predict": "the masks written before it are kept; the image in progress got none",
    "train": "the best checkpoint and the training state of the last finished epoch are kept, if one finished "
             "(--resume continues the run)",
    "train-demo": "the best checkpoint of the last finished epoch is kept, if one finished",
    "import": "the scenes imported before it are kept (`python -m seghz info` lists them)",
    "noise-rank": "the .npy files written before it are kept; no queue (--json) written",
    "fetch": "the tiles fetched so far stay in the tile cache (a rerun resumes from it); no mosaic written",
}


def _interrupted_line(args) -> str:
    cmd = getattr(args, "cmd", None)
    return "interrupted: " + INTERRUPTED.get(cmd, "nothing half-written is left (files are written whole or not at "
                                                  "all); the files written before it are kept")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_device(getattr(args, "device", None), "--device")  # a GPU this machine lacks: one clear line
        return args.fn(args)
    except KeyboardInterrupt:  # Ctrl-C: one line, no traceback; 130 = 128 + SIGINT, as a shell reports it
        if os.environ.get("SEGHZ_DEBUG"):
            raise
        print(f"\n{_interrupted_line(args)}", file=sys.stderr, flush=True)
        return 130
    except KeyError as e:  # unknown scheme / class names: the message is the first argument (no quotes)
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    except (SegHZError, FileNotFoundError, ValueError) as e:  # ValueError: bad option values (e.g. --batch-size 0)
        if os.environ.get("SEGHZ_DEBUG"):  # the traceback, for a bug report
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
