"""bench/device_kit.py (pack / unpack / merge) and bench/device_run.sh (syntax; orchestration with a stand-in script)."""
from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import device_kit as kit

STEMS = ["arbor_a_1", "lake_b_2", "road_c_3"]


def _gid_like(root: Path, n: int = 3) -> Path:
    """A tiny gid15-like folder: smooth 32x32 RGB images/<stem>.png and single-band labels/<stem>.png."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float32)
    for i, s in enumerate(STEMS[:n]):
        a, b = rng.uniform(0.5, 3.0, 2)
        img = np.stack([128 + 100 * np.sin((xx * a + yy * b + 10 * c + i) / 12) for c in range(3)], -1)
        cv2.imwrite(str(root / "images" / f"{s}.png"), np.clip(img, 0, 255).astype(np.uint8))
        cv2.imwrite(str(root / "labels" / f"{s}.png"), rng.integers(0, 6, (32, 32), dtype=np.uint8))
    return root


def _run(row: str, seed: int, miou: float) -> dict:
    return {"row": row, "seed": seed, "init": "scratch", "miou": miou, "miou_gt": miou + 0.02, "fwiou": 0.5, "oa": 0.6,
            "per_class_iou": {"Water": miou}, "steps": 10, "train_s": 10.0, "eval_s": 1.0, "final_loss": 1.0,
            "noise_dropped": None, "label_error": None, "recipe": {}}


def _report(runs: list[dict], rows: list[str], seeds: list[int], **protocol) -> dict:
    p = {"data": "gid15 -> hz7", "arch": "Unet", "encoder": "resnet34", "init": "scratch", "steps": 10, "epochs": 10,
         "batch_size": 16, "crop": 224, "lr": 0.002, "flip_fraction": 0.3, "train_tiles": 489, "eval_tiles": 125,
         "train_stems_sha1": "a", "eval_stems_sha1": "b", **protocol}
    return {"command": f"python bench/experiments.py --rows {','.join(rows)}", "env": {"device": "cuda"}, "protocol": p,
            "eval_classes": ["Water"], "rows": rows, "seeds": seeds, "runs": runs,
            "noise_rate": {str(s): 0.3 for s in seeds}, "summary": {}, "wall_s": 100.0 + len(runs)}


# ---------------------------------------------------------------------------------------------------- pack/unpack


def test_pack_unpack_roundtrip(tmp_path):
    data = _gid_like(tmp_path / "gid")
    dest = tmp_path / "kit"
    assert kit.main(["pack", "--data", str(data), "--dest", str(dest), "--no-wheels", "--quality", "95"]) == 0
    assert sorted(p.stem for p in (dest / "gid15" / "images").glob("*.jpg")) == sorted(STEMS)
    assert not (dest / "whl").exists()
    again = kit.pack(data, dest, 95, None)  # everything up to date
    assert again["encoded"] == again["copied"] == 0 and again["skipped"] == 6

    out = tmp_path / "unpacked"
    assert kit.main(["unpack", "--src", str(dest / "gid15"), "--dest", str(out)]) == 0
    assert sorted(p.stem for p in (out / "images").glob("*.png")) == sorted(STEMS)
    assert sorted(p.name for p in (out / "labels").glob("*.png")) == sorted(f"{s}.png" for s in STEMS)
    for s in STEMS:
        assert (out / "labels" / f"{s}.png").read_bytes() == (data / "labels" / f"{s}.png").read_bytes()
        a = cv2.imread(str(data / "images" / f"{s}.png"), cv2.IMREAD_UNCHANGED)
        b = cv2.imread(str(out / "images" / f"{s}.png"), cv2.IMREAD_UNCHANGED)
        assert b.shape == a.shape == (32, 32, 3) and b.dtype == np.uint8
        assert np.abs(a.astype(int) - b).mean() < 3.0
    # the unpacked folder reads as experiments.py --data does
    from seghz.classes import get_scheme
    from seghz.data.io import read_image, read_label

    assert read_image(out / "images" / f"{STEMS[0]}.png").shape == (32, 32, 3)
    assert read_label(out / "labels" / f"{STEMS[0]}.png", get_scheme("gid15")).shape == (32, 32)

    # a tile gone from the source disappears from the pack and, on the next unpack, from the unpacked folder
    (data / "images" / f"{STEMS[2]}.png").unlink()
    (data / "labels" / f"{STEMS[2]}.png").unlink()
    assert kit.pack(data, dest, 95, None)["removed"] == 2
    assert kit.unpack(dest / "gid15", out)["removed"] == 2
    assert sorted(p.stem for p in (out / "images").glob("*.png")) == sorted(STEMS[:2])


def test_pack_quality_change_reencodes(tmp_path):
    data = _gid_like(tmp_path / "gid", 2)
    dest = tmp_path / "kit"
    kit.pack(data, dest, 95, None)
    big = sum(p.stat().st_size for p in (dest / "gid15" / "images").glob("*.jpg"))
    assert kit.pack(data, dest, 40, None)["encoded"] == 2
    assert sum(p.stat().st_size for p in (dest / "gid15" / "images").glob("*.jpg")) < big


def test_pack_adds_exclude_line_once_inside_repo(tmp_path):
    data = _gid_like(tmp_path / "gid", 1)
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    real_exclude = ROOT / ".git" / "info" / "exclude"
    before = real_exclude.read_bytes() if real_exclude.is_file() else None
    for _ in range(2):
        assert kit.main(["pack", "--data", str(data), "--dest", ".gpu", "--no-wheels", "--repo-root", str(repo)]) == 0
    assert (repo / ".gpu" / "gid15" / "images" / f"{STEMS[0]}.jpg").is_file()
    assert (repo / ".git" / "info" / "exclude").read_text().splitlines().count("/.gpu/") == 1
    assert (real_exclude.read_bytes() if real_exclude.is_file() else None) == before

    (repo / ".git" / "info" / "exclude").write_text("# no newline at the end")
    kit.ensure_excluded(repo, Path("kit/sub"))
    assert (repo / ".git" / "info" / "exclude").read_text() == "# no newline at the end\n/kit/sub/\n"


def test_pack_and_unpack_errors_name_the_path(tmp_path, capsys):
    missing = tmp_path / "nope"
    with pytest.raises(kit.KitError, match=re.escape(str(missing))):
        kit.pack(missing, tmp_path / "kit", 95, None)
    assert kit.main(["pack", "--data", str(missing), "--dest", str(tmp_path / "kit"), "--no-wheels"]) == 1
    assert str(missing) in capsys.readouterr().err

    (tmp_path / "nolabels" / "images").mkdir(parents=True)
    with pytest.raises(kit.KitError, match=re.escape(str(tmp_path / "nolabels" / "labels"))):
        kit.pack(tmp_path / "nolabels", tmp_path / "kit", 95, None)

    data = _gid_like(tmp_path / "gid", 2)
    bad = data / "images" / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(kit.KitError, match=re.escape(f"cannot read image {bad}")):
        kit.pack(data, tmp_path / "kit", 95, None)

    with pytest.raises(kit.KitError, match=re.escape(str(tmp_path / "nokit"))):
        kit.unpack(tmp_path / "nokit", tmp_path / "out")
    assert kit.main(["unpack", "--src", str(tmp_path / "nokit"), "--dest", str(tmp_path / "out")]) == 1
    assert str(tmp_path / "nokit") in capsys.readouterr().err


def test_unpack_refuses_a_foreign_nonempty_dest(tmp_path):
    data = _gid_like(tmp_path / "gid", 1)
    kit.pack(data, tmp_path / "kit", 95, None)
    with pytest.raises(kit.KitError, match="not an earlier unpack"):
        kit.unpack(tmp_path / "kit" / "gid15", data)  # would overwrite the PNG originals
    assert kit.unpack(tmp_path / "kit" / "gid15", tmp_path / "out")["decoded"] == 1
    assert kit.unpack(tmp_path / "kit" / "gid15", tmp_path / "out")["decoded"] == 0  # an earlier unpack: fine, up to date


def test_wheel_requirements_skip_extras(tmp_path):
    import zipfile

    whl = tmp_path / "x-1.0-py3-none-any.whl"
    meta = ("Metadata-Version: 2.1\nName: x_pkg\nVersion: 1.0\nRequires-Dist: huggingface-hub>=0.24\n"
            "Requires-Dist: Pillow (>=8)\nRequires-Dist: pytest; extra == \"test\"\nRequires-Dist: foo_bar[x]>=1; "
            "python_version >= \"3.8\"\n\nRequires-Dist: in the description\n")
    with zipfile.ZipFile(whl, "w") as z:
        z.writestr("x_pkg-1.0.dist-info/METADATA", meta)
    name, reqs = kit.wheel_requirements(whl)
    assert name == "x_pkg" and reqs == ["huggingface-hub", "Pillow", "foo_bar"]
    assert {kit._norm(r) for r in reqs} - kit.DEVICE_HAS == {"foo-bar"}


# ---------------------------------------------------------------------------------------------------------- merge


def test_merge_two_reports_recomputes_summary(tmp_path):
    a = _report([_run("ce", 0, 0.60), _run("noisy_ce", 0, 0.40)], ["ce", "noisy_ce"], [0])
    b = _report([_run("noisy_boot", 0, 0.50), _run("ce", 1, 0.64)], ["noisy_boot", "ce"], [0, 1])
    b["noise_rate"] = {"1": 0.31}
    fa, fb, out = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "m" / "merged.json"
    fa.write_text(json.dumps(a))
    fb.write_text(json.dumps(b))
    assert kit.main(["merge", "--out", str(out), str(fa), str(fb)]) == 0
    m = json.loads(out.read_text())
    assert [(x["row"], x["seed"]) for x in m["runs"]] == [("ce", 0), ("noisy_ce", 0), ("noisy_boot", 0), ("ce", 1)]
    assert m["rows"] == ["ce", "noisy_ce", "noisy_boot"] and m["seeds"] == [0, 1]
    assert m["noise_rate"] == {"0": 0.3, "1": 0.31}
    assert m["protocol"] == a["protocol"] and m["wall_s"] == max(a["wall_s"], b["wall_s"])
    s = m["summary"]
    assert s["ce"]["n"] == 2 and s["ce"]["miou"] == pytest.approx(62.0)
    assert s["noisy_boot"]["recovery"] == pytest.approx((50 - 40) / (62 - 40))
    from bench.experiments import summarise

    assert s == json.loads(json.dumps(summarise(m["runs"], m["rows"])))
    assert not list(out.parent.glob("*.tmp"))


def test_merge_differing_protocol_names_the_key(tmp_path):
    a = _report([_run("ce", 0, 0.6)], ["ce"], [0])
    b = _report([_run("ce", 1, 0.6)], ["ce"], [1], steps=20)
    with pytest.raises(kit.KitError, match="'steps'"):
        kit.merge_reports([a, b], ["a.json", "b.json"])
    c = _report([_run("ce", 1, 0.6)], ["ce"], [1])
    del c["protocol"]["lr"]
    with pytest.raises(kit.KitError, match="'lr'"):
        kit.merge_reports([a, c])


def test_merge_duplicate_run_replaced_by_later(tmp_path, capsys):
    a = _report([_run("ce", 0, 0.60), _run("ce", 1, 0.62)], ["ce"], [0, 1])
    b = _report([_run("ce", 0, 0.70)], ["ce"], [0])
    m = kit.merge_reports([a, b], ["a", "b"])
    assert [(x["seed"], x["miou"]) for x in m["runs"]] == [(0, 0.70), (1, 0.62)]
    assert m["summary"]["ce"]["n"] == 2 and m["summary"]["ce"]["miou"] == pytest.approx(66.0)
    assert "replaces the earlier run" in capsys.readouterr().err


def test_merge_bad_input(tmp_path):
    good, bad = tmp_path / "g.json", tmp_path / "bad.json"
    good.write_text(json.dumps(_report([_run("ce", 0, 0.6)], ["ce"], [0])))
    bad.write_text('{"trunc')
    with pytest.raises(kit.KitError, match=re.escape(str(bad))):
        kit.merge_files(tmp_path / "m.json", [good, bad])
    assert len(kit.merge_files(tmp_path / "m.json", [good, bad], skip_bad=True)["runs"]) == 1


# ---------------------------------------------------------------------------------------------------- device_run.sh


def test_device_run_sh_syntax():
    subprocess.run(["bash", "-n", str(ROOT / "bench" / "device_run.sh")], check=True)


FAKE_EXPERIMENTS = '''
import argparse, json, os, sys, time
from pathlib import Path
ap = argparse.ArgumentParser()
for o in ("--device", "--encoder", "--init", "--rows", "--seeds", "--steps", "--epochs", "--batch-size", "--crop",
          "--data", "--deadline-min", "--out", "--json"):
    ap.add_argument(o)
ap.add_argument("--render-only", action="store_true")
ap.add_argument("--per-epoch", action="store_true")
a = ap.parse_args()
if a.render_only:
    Path(a.out).write_text("rendered " + a.json)
    sys.exit(0)
assert Path(a.data, "images").is_dir(), a.data
print("fake", a.rows, a.seeds, flush=True)
if a.rows == "hang":
    time.sleep(600)
seeds = [int(s) for s in a.seeds.split(",")]
runs = [{"row": a.rows, "seed": s, "miou": 0.5, "miou_gt": 0.5, "fwiou": 0.5, "oa": 0.5, "train_s": 1.0, "eval_s": 1.0,
         "per_epoch": a.per_epoch, "lite0": os.environ.get("SEGHZ_LITE0_WEIGHTS")} for s in seeds]
p = {"steps": int(a.steps), "encoder": a.encoder, "init": a.init, "batch_size": int(a.batch_size), "crop": int(a.crop)}
rep = {"command": "fake", "env": {}, "protocol": p, "eval_classes": [], "rows": [a.rows], "seeds": seeds, "runs": runs,
       "noise_rate": {}, "summary": {}, "wall_s": 1.0}
Path(a.json).write_text(json.dumps(rep))
'''


def _fake_repo(tmp_path: Path) -> tuple[Path, dict]:
    repo = tmp_path / "repo"
    (repo / "bench").mkdir(parents=True)
    for f in ("__init__.py", "device_kit.py", "experiments.py", "device_run.sh"):
        (repo / "bench" / f).symlink_to(ROOT / "bench" / f)
    kit.pack(_gid_like(tmp_path / "gid", 2), repo / ".gpu", 90, None, repo_root=repo)
    (tmp_path / "fake.py").write_text(textwrap.dedent(FAKE_EXPERIMENTS))
    env = {**os.environ, "OUT": str(tmp_path / "out"), "DEVICE_RUN_TMP": str(tmp_path / "t"), "DEVICE_RUN_CHECK": "0",
           "DEVICE_RUN_EXPERIMENTS": str(tmp_path / "fake.py"), "DEVICE_RUN_GRACE_S": "1", "OMP_NUM_THREADS": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("SEGHZ_LITE0_WEIGHTS", None)
    return repo, env


def test_device_run_sh_jobs_watchdog_and_merge(tmp_path):
    """The orchestration, without torch/CUDA: a stand-in experiments.py; one job hangs and the watchdog stops it."""
    repo, env = _fake_repo(tmp_path)
    out = tmp_path / "out"
    r = subprocess.run(["bash", "bench/device_run.sh", "--steps", "7", "--budget-s", "4", "--jobs", "ce:0 noisy_ce:0,1 hang:0",
                        "--", "--per-epoch"],
                       cwd=repo, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (tmp_path / "t" / "gid15" / "images" / f"{STEMS[0]}.png").is_file()
    m = json.loads((out / "merged.json").read_text())
    assert sorted((x["row"], x["seed"]) for x in m["runs"]) == [("ce", 0), ("noisy_ce", 0), ("noisy_ce", 1)]
    assert all(x["per_epoch"] for x in m["runs"])  # the options after -- reach every job
    assert all(x["lite0"] is None for x in m["runs"])  # no packed Lite0 weights: the variable stays unset
    assert m["protocol"]["steps"] == 7 and m["protocol"]["encoder"] == "resnet34" and m["protocol"]["init"] == "scratch"
    assert sorted(p.name for p in out.iterdir()) == ["jobs.tar.gz", "logs.txt", "merged.json", "merged.md", "summary.txt"]
    logs = (out / "logs.txt").read_text()
    assert "watchdog: budget of 4s reached" in logs and "===== hang_0 (exit 143) =====" in logs
    assert "===== noisy_ce_0-1 (exit 0) =====" in logs
    summary = (out / "summary.txt").read_text()
    assert "noisy_ce" in summary and "mIoU  50.00" in summary
    shutil.rmtree(tmp_path / "t", ignore_errors=True)


def test_device_run_sh_imagenet_init_needs_the_packed_lite0_weights(tmp_path):
    repo, env = _fake_repo(tmp_path)
    cmd = ["bash", "bench/device_run.sh", "--steps", "3", "--budget-s", "60", "--jobs", "ce:0", "--",
           "--encoder", "tu-efficientnet_lite0", "--init", "imagenet"]
    r = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert "--init imagenet needs .gpu/lite0/" + kit.LITE0_FILE in r.stdout and "pack --lite0" in r.stdout
    assert not (tmp_path / "t" / "exp" / "ce_0.json").exists()  # no job started

    w = repo / ".gpu" / "lite0" / kit.LITE0_FILE
    w.parent.mkdir()
    w.write_bytes(b"stand-in")  # the fake experiments.py only reports the variable
    r = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    m = json.loads((tmp_path / "out" / "merged.json").read_text())
    assert m["protocol"]["init"] == "imagenet" and m["protocol"]["encoder"] == "tu-efficientnet_lite0"
    assert [Path(x["lite0"]).resolve() for x in m["runs"]] == [w.resolve()]


def test_pack_lite0_writes_and_removes_the_encoder_weights(tmp_path):
    from safetensors.torch import load_file

    data = _gid_like(tmp_path / "gid", 1)
    dest = tmp_path / "kit"
    # as a script from another folder (sys.path[0] is bench/, not the repository)
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "device_kit.py"), "pack", "--data", str(data), "--dest",
                        str(dest), "--no-wheels", "--quality", "90", "--lite0"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300, check=False, env={**os.environ, "PYTHONPATH": ""})
    assert r.returncode == 0, r.stderr[-2000:]
    assert "lite0: 288 encoder tensors, fp16" in r.stderr
    w = dest / "lite0" / kit.LITE0_FILE
    sd = load_file(str(w))
    assert sd["conv_stem.weight"].shape == (32, 3, 3, 3) and sd["conv_stem.weight"].dtype.itemsize == 2
    assert kit.pack(data, dest, 90, None, lite0=True)["lite0"] == str(w)
    res = kit.pack(data, dest, 90, None)  # asked without: the stale copy goes
    assert res["lite0"] is None and not (dest / "lite0").exists()


PARSING_SEGHZ = f'''
import sys
from pathlib import Path
sys.path.insert(0, {str(ROOT)!r})
from seghz.cli import _apply_sets, build_parser
from seghz.train.trainer import TrainConfig
a = build_parser().parse_args(sys.argv[1:])  # an unknown option exits here
_apply_sets(TrainConfig(scheme="hz7"), a.set or [])  # an unknown key or a bad value raises here
Path(a.out).write_bytes(b"parsed")
'''


def _check_train_command(cmd: str, argv: list[str], tmp_path: Path) -> None:
    """A ``device_run.sh --train`` line, run as written with a stand-in trainer that parses what it receives (what
    device_run.sh sets, then the line's options) with ``seghz train``'s own parser and recipe check and writes the
    checkpoint only then. An option that overrides ``--out`` leaves no checkpoint where collect looks: a failure too."""
    repo, env = _fake_repo(tmp_path)
    (tmp_path / "parsing_seghz.py").write_text(textwrap.dedent(PARSING_SEGHZ))
    env["DEVICE_RUN_SEGHZ"] = str(tmp_path / "parsing_seghz.py")
    w = repo / ".gpu" / "lite0" / kit.LITE0_FILE  # the default ImageNet start needs it (the stand-in never reads it)
    w.parent.mkdir(parents=True, exist_ok=True)
    w.write_bytes(b"stand-in")
    r = subprocess.run(["bash", "bench/device_run.sh", *argv], cwd=repo, env=env, capture_output=True, text=True,
                       timeout=120, check=False)
    assert r.returncode == 0, f"{cmd}\n{r.stdout[-2000:]}{r.stderr[-2000:]}"
    head = argv[: argv.index("--")] if "--" in argv else argv
    names = [v.split("=", 1)[0] for k, v in itertools.pairwise(head) if k == "--variant"] or ["model"]
    for n in names:
        assert (tmp_path / "out" / f"{n}.safetensors.part0").read_bytes() == b"parsed", cmd
    shutil.rmtree(tmp_path / "t", ignore_errors=True)


def test_the_device_commands_in_the_docs_name_real_rows_and_options(tmp_path):
    """A lent GPU session is 15 minutes; a typo in a prepared command in docs/experiments.md would waste it.

    Every ``bash bench/device_run.sh`` line (and every "Next in line" job list) there must name rows of
    bench/experiments.py, known post-hoc methods and options its parser accepts, and an ImageNet init only with the
    Lite0 encoder (the one whose weights the kit can carry)."""
    import shlex

    from bench.experiments import ALL_ROWS, POSTHOC, build_parser

    text = (ROOT / "docs" / "experiments.md").read_text()
    section = text[text.index("## Reference protocol on a GPU"):]
    cmds = [ln.strip() for ln in section.splitlines() if ln.strip().startswith("bash bench/device_run.sh")]
    assert len(cmds) >= 2, "the section lists the prepared device commands"
    for cmd in cmds:
        argv = shlex.split(cmd)[2:]
        extra = argv[argv.index("--") + 1:] if "--" in argv else []
        head = argv[: argv.index("--")] if "--" in argv else argv
        if "--train" in head:  # one run of the product's trainer: its own CLI must accept every option
            _check_train_command(cmd, argv, tmp_path / f"train{len(list(tmp_path.iterdir()))}")
            continue
        opts = dict(zip(head[::2], head[1::2], strict=True))  # device_run.sh's own options, each with a value
        assert set(opts) <= {"--steps", "--jobs", "--budget-s"} and {"--steps", "--jobs"} <= set(opts), cmd
        assert opts["--steps"].isdigit() and opts.get("--budget-s", "0").isdigit(), cmd
        jobs = opts["--jobs"].split()
        assert jobs, cmd
        for j in jobs:
            row, seeds = j.split(":")
            assert row in ALL_ROWS, f"{row} (in: {cmd})"
            assert all(s.isdigit() for s in seeds.split(",")), j
        # what device_run.sh passes each job, then the extra options (an unknown one exits here)
        a = build_parser().parse_args(["--device", "cuda", "--encoder", "resnet34", "--init", "scratch", "--rows",
                                       jobs[0].split(":")[0], "--steps", "1", *extra])
        assert all(m in POSTHOC for m in a.posthoc.split(",") if m), cmd
        if a.init == "imagenet":
            assert a.encoder == "tu-efficientnet_lite0", cmd
    for m in re.finditer(r"Next in line: `([^`]+)`", section):
        for j in m.group(1).split():
            assert j.split(":")[0] in ALL_ROWS, j


def test_split_join_roundtrip_and_errors(tmp_path):
    """A checkpoint comes back from the device in ≤ 16 MiB pieces; join rebuilds it only when all are there and the
    SHA-256 matches."""
    src = tmp_path / "model.safetensors"
    data = np.random.default_rng(0).integers(0, 256, 2500, dtype=np.uint8).tobytes()
    src.write_bytes(data)
    out = tmp_path / "out"
    (out).mkdir()
    (out / "model.safetensors.part7").write_bytes(b"stale")  # from a longer earlier split: removed
    parts = kit.split_file(src, out, part_size=1000)
    assert [p.name for p in parts] == [f"model.safetensors.part{i}" for i in range(3)]
    assert sorted(p.name for p in out.iterdir()) == [*(p.name for p in parts), "model.safetensors.sha256"]
    assert [p.stat().st_size for p in parts] == [1000, 1000, 500]
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in parts)  # SegHZ's atomic writer, not mkstemp's 0600
    joined = tmp_path / "joined.safetensors"
    r = kit.join_parts(list(reversed(parts)), joined)  # any order
    assert joined.read_bytes() == data and r["parts"] == 3 and r["bytes"] == 2500

    with pytest.raises(kit.KitError, match=r"counts 3 piece\(s\) .*missing \[1\], not counted none"):
        kit.join_parts([parts[0], parts[2]], tmp_path / "x")
    (out / "model.safetensors.part3").write_bytes(b"extra")
    with pytest.raises(kit.KitError, match=r"missing none, not counted \[3\]"):
        kit.join_parts([*parts, out / "model.safetensors.part3"], tmp_path / "x")
    (out / "model.safetensors.part3").unlink()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(parts[2], elsewhere / parts[2].name)
    with pytest.raises(kit.KitError, match="more than one folder"):
        kit.join_parts([parts[0], parts[1], elsewhere / parts[2].name], tmp_path / "x")
    parts[2].rename(tmp_path / "moved")  # named but gone
    with pytest.raises(kit.KitError, match="cannot read a piece"):
        kit.join_parts(parts, tmp_path / "x")
    (tmp_path / "moved").rename(parts[2])
    bad = bytearray(parts[1].read_bytes())
    bad[0] ^= 1
    parts[1].write_bytes(bytes(bad))
    with pytest.raises(kit.KitError, match=r"the joined pieces .* do not match .*model.safetensors.sha256.*nothing written"):
        kit.join_parts(parts, tmp_path / "x")
    assert not (tmp_path / "x").exists()  # nothing written
    other = out / "other.bin.part0"
    other.write_bytes(b"1")
    with pytest.raises(kit.KitError, match="more than one file"):
        kit.join_parts([parts[0], other], tmp_path / "x")
    with pytest.raises(kit.KitError, match="not a piece written by split"):
        kit.join_parts([src], tmp_path / "x")
    (out / "model.safetensors.sha256").unlink()
    with pytest.raises(kit.KitError, match="cannot read the digest file"):
        kit.join_parts(parts, tmp_path / "x")
    with pytest.raises(kit.KitError, match="cannot split .*absent"):
        kit.split_file(tmp_path / "absent", out)


@pytest.mark.parametrize("name", ["a b.bin", "z[1].bin", "empty.bin"])
def test_split_join_odd_names_and_sizes(tmp_path, name):
    """Names with spaces or glob characters, an empty file, and a re-split into fewer pieces leave no stale piece."""
    src = tmp_path / name
    src.write_bytes(b"" if name == "empty.bin" else b"x" * 2500)
    out = tmp_path / "out"
    kit.split_file(src, out, part_size=1000)
    src.write_bytes(b"" if name == "empty.bin" else b"y" * 900)  # shorter now: one piece
    parts = kit.split_file(src, out, part_size=1000)
    assert sorted(p.name for p in out.glob("*.part*")) == [f"{name}.part0"] == [p.name for p in parts]
    r = kit.join_parts(parts, tmp_path / "joined")
    assert (tmp_path / "joined").read_bytes() == src.read_bytes() and r["name"] == name


def test_split_join_cli(tmp_path):
    src = tmp_path / "m.bin"
    src.write_bytes(b"abc" * 10)
    assert kit.main(["split", str(src), "--out", str(tmp_path / "o")]) == 0
    assert kit.main(["join", str(tmp_path / "o" / "m.bin.part0"), "--out", str(tmp_path / "j.bin")]) == 0
    assert (tmp_path / "j.bin").read_bytes() == b"abc" * 10
    assert kit.main(["join", str(tmp_path / "o" / "nope.part0"), "--out", str(tmp_path / "k.bin")]) == 1


FAKE_SEGHZ = '''
import argparse, sys
from pathlib import Path
assert sys.argv[1] == "train", sys.argv
ap = argparse.ArgumentParser()
for o in ("--images", "--labels", "--scheme", "--target-scheme", "--device", "--out", "--epochs", "--weights"):
    ap.add_argument(o)
ap.add_argument("--no-dice", action="store_true")
ap.add_argument("--set", action="append", default=[])
a = ap.parse_args(sys.argv[2:])
assert Path(a.images).is_dir() and Path(a.labels).is_dir(), a
if a.epochs == "fail":
    sys.exit(3)
print("fake train", a.scheme, a.target_scheme, a.device, a.epochs, a.weights, flush=True)
print("recipe", "dice" if not a.no_dice else "no-dice", *a.set, flush=True)
Path(a.out).write_bytes(b"weights" * 1000)
Path(a.out).with_suffix(".state.safetensors").write_bytes(b"state")
'''


def test_device_run_sh_train_mode_returns_the_checkpoint_in_pieces(tmp_path):
    """--train runs the product's trainer once on the kit's tiles; its checkpoint comes back split with its digest."""
    repo, env = _fake_repo(tmp_path)
    (tmp_path / "fake_seghz.py").write_text(textwrap.dedent(FAKE_SEGHZ))
    env["DEVICE_RUN_SEGHZ"] = str(tmp_path / "fake_seghz.py")
    out = tmp_path / "out"
    r = subprocess.run(["bash", "bench/device_run.sh", "--train", "--budget-s", "60", "--", "--epochs", "3"],
                       cwd=repo, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 2 and "--weights none" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]  # no Lite0 packed

    r = subprocess.run(["bash", "bench/device_run.sh", "--train", "--steps", "5", "--", "--weights", "none"],
                       cwd=repo, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 2 and "--train takes no --steps" in r.stderr

    out.mkdir(exist_ok=True)
    (out / "model.safetensors.sha256").write_text("stale from an earlier run")
    (out / "model.safetensors.part1").write_bytes(b"stale")
    r = subprocess.run(["bash", "bench/device_run.sh", "--train", "--budget-s", "60", "--", "--epochs", "fail",
                        "--weights", "none"], cwd=repo, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode != 0, r.stdout[-3000:]  # the trainer failed before writing: no checkpoint, no success
    assert not list(out.glob("model.safetensors.*")) and "trainer exit status: 3" in (out / "summary.txt").read_text()

    r = subprocess.run(["bash", "bench/device_run.sh", "--train", "--budget-s", "60", "--", "--epochs", "3",
                        "--weights", "none"], cwd=repo, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["jobs.tar.gz", "logs.txt", "model.safetensors.part0",
                                                     "model.safetensors.sha256", "summary.txt"]
    summary = (out / "summary.txt").read_text()
    assert "trainer exit status: 0" in summary and "fake train gid15 hz7 cuda 3 none" in summary
    assert kit.join_parts([out / "model.safetensors.part0"], tmp_path / "m.safetensors")["bytes"] == 7000
    import tarfile
    with tarfile.open(out / "jobs.tar.gz") as t:
        names = t.getnames()
    assert not any(n.endswith(".safetensors") for n in names) and any(n.endswith("seghz_train_0.log") for n in names)
    shutil.rmtree(tmp_path / "t", ignore_errors=True)


def test_device_run_sh_train_variants_run_side_by_side_and_each_checkpoint_comes_back(tmp_path):
    """--variant NAME=OPTIONS (at most 2) trains one checkpoint per variant in parallel, each with the common options
    and then its own; each comes back as NAME.safetensors pieces with its digest, 8 files at most."""
    repo, env = _fake_repo(tmp_path)
    (tmp_path / "fake_seghz.py").write_text(textwrap.dedent(FAKE_SEGHZ))
    env["DEVICE_RUN_SEGHZ"] = str(tmp_path / "fake_seghz.py")
    out = tmp_path / "out"

    def run(*argv):
        return subprocess.run(["bash", "bench/device_run.sh", *argv], cwd=repo, env=env, capture_output=True,
                              text=True, timeout=120, check=False)

    for argv, why in ((["--variant", "a=--epochs 2", "--", "--weights", "none"], "--variant goes with --train"),
                      (["--train", "--variant", "A=", "--", "--weights", "none"], "bad --variant 'A='"),
                      (["--train", "--variant", "plain", "--", "--weights", "none"], "bad --variant 'plain'"),
                      (["--train", "--variant", "a=", "--variant", "a=--no-dice", "--", "--weights", "none"], "given twice"),
                      (["--train", "--variant", "a=", "--variant", "b=", "--variant", "c=", "--", "--weights", "none"],
                       "at most 2 --variant")):
        r = run(*argv)
        assert r.returncode == 2 and why in r.stderr, (argv, r.stderr)

    r = run("--train", "--budget-s", "60", "--variant", "plain=--no-dice --set class_weights=none --epochs 4",
            "--variant", "study=", "--", "--epochs", "3", "--weights", "none")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["logs.txt", "plain.safetensors.part0", "plain.safetensors.sha256",
                                                     "study.safetensors.part0", "study.safetensors.sha256", "summary.txt"]
    summary = (out / "summary.txt").read_text()
    plain, study = summary.split("===== variant study")
    assert "trainer plain exit status: 0" in plain and "fake train gid15 hz7 cuda 4 none" in plain  # its own options win
    assert "recipe no-dice class_weights=none" in plain
    assert "trainer study exit status: 0" in study and "fake train gid15 hz7 cuda 3 none" in study
    assert "recipe dice" in study and "class_weights" not in study
    for n in ("plain", "study"):
        assert kit.join_parts([out / f"{n}.safetensors.part0"], tmp_path / f"{n}.safetensors")["bytes"] == 7000

    # one variant failing fails the call, and the other's checkpoint still comes back
    r = run("--train", "--budget-s", "60", "--variant", "bad=--epochs fail", "--variant", "good=", "--", "--epochs",
            "3", "--weights", "none")
    assert r.returncode != 0
    assert sorted(p.name for p in out.glob("*.safetensors.*")) == ["good.safetensors.part0", "good.safetensors.sha256"]
    assert "trainer bad exit status: 3" in (out / "summary.txt").read_text()
    shutil.rmtree(tmp_path / "t", ignore_errors=True)
