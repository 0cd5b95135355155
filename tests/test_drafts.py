"""Server-side drafts of unsaved label edits (seghz.drafts): round trip, atomic writes, damaged files, per analyst."""
from __future__ import annotations

import io
import json
import os
import zipfile
from datetime import UTC, datetime

import numpy as np
import pytest

from seghz import drafts as dft

H, W = 20, 30


def edited(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(base label, edited label, pixels the edit sets): a block relabelled, plus pixels painted with their own class."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 7, (H, W)).astype(np.uint8)
    new = base.copy()
    new[2:6, 3:9] = 4
    new[10, 10] = 255
    px = new != base
    px[15, 20] = True  # painted with the class it holds (a confirmation)
    return base, new, px


def test_round_trip_keeps_pixels_values_version_tool_and_time(tmp_path):
    base, new, px = edited()
    d = dft.write_draft(tmp_path, "Ann Analyst", "val-town", base_version=3, pixels=px, values=new, tool="brush+fill")
    assert d.path == tmp_path / "drafts" / dft.analyst_folder("Ann Analyst") / "val-town.npz" and d.path.is_file()
    r = dft.read_draft(d.path)
    assert (r.scene_id, r.analyst, r.base_version, r.shape, r.tool, r.token) == \
        ("val-town", "Ann Analyst", 3, (H, W), "brush+fill", d.token)
    assert r.pixels == int(px.sum()) and r.saved_at == d.saved_at
    np.testing.assert_array_equal(r.mask(), px)
    np.testing.assert_array_equal(r.apply(base), np.where(px, new, base))
    assert datetime.fromisoformat(r.saved_at).tzinfo is not None  # UTC
    t = datetime(2026, 11, 29, 14, 5, tzinfo=UTC)
    r.saved_at = t.isoformat()
    assert r.when(now=t) == "14:05 UTC"
    assert r.when(now=datetime(2026, 11, 30, 9, 0, tzinfo=UTC)) == "14:05 UTC on 2026-11-29"
    # written again: replaced (one file), with a new token
    d2 = dft.write_draft(tmp_path, "Ann Analyst", "val-town", base_version=4, pixels=px, values=new)
    assert d2.token != d.token and dft.read_draft(d2.path).base_version == 4
    assert dft.draft_token(d2.path) == d2.token
    assert [p.name for p in d2.path.parent.iterdir()] == ["val-town.npz"]


def test_write_is_atomic_the_previous_draft_survives_a_failed_write(tmp_path, monkeypatch):
    _base, new, px = edited()
    d = dft.write_draft(tmp_path, "Ann", "s1", base_version=1, pixels=px, values=new)
    before = d.path.read_bytes()

    def broken_replace(src, dst):  # the disk fills up at the last moment
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space left"):
        dft.write_draft(tmp_path, "Ann", "s1", base_version=2, pixels=~px, values=new)
    monkeypatch.undo()
    assert d.path.read_bytes() == before and dft.read_draft(d.path).base_version == 1
    assert sorted(p.name for p in d.path.parent.iterdir()) == ["s1.npz"]  # no temp file left behind


def write_raw(path, meta: dict | None, **arrays) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    if meta is not None:
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(buf, **arrays)
    path.write_bytes(buf.getvalue())


GOOD_META = {"format": 1, "scene_id": "s1", "analyst": "Ann", "base_version": 0, "shape": [H, W], "saved_at": "",
             "tool": "brush", "token": "t"}


@pytest.mark.parametrize("damage, why", [
    ("truncated", "not a readable .npz"),
    ("garbage", "not a readable .npz"),
    ("empty", "not a readable .npz"),
    ("no meta", "missing meta"),
    ("meta not json", "not JSON"),
    ("wrong format", "unknown format"),
    ("other scene", "draft of scene 'other'"),
    ("index out of range", "outside the 30×20 scene"),
    ("length mismatch", "2 pixel indices but 1 values"),
    ("bad shape", "bad scene size"),
])
def test_a_damaged_draft_gives_a_clear_error_naming_the_file_never_a_crash(tmp_path, damage, why):
    _base, new, px = edited()
    path = dft.draft_path(tmp_path, "Ann", "s1")
    if damage in ("truncated", "garbage", "empty"):
        d = dft.write_draft(tmp_path, "Ann", "s1", base_version=0, pixels=px, values=new)
        data = d.path.read_bytes()
        path.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"\x00not a zip" * 50, "empty": b""}[damage])
    elif damage == "no meta":
        write_raw(path, None, indices=np.array([1]), values=np.array([2]))
    elif damage == "meta not json":
        path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        np.savez(buf, meta=np.frombuffer(b"{oops", np.uint8), indices=np.array([1]), values=np.array([2]))
        path.write_bytes(buf.getvalue())
    else:
        meta, idx, vals = dict(GOOD_META), np.array([1, 5]), np.array([2, 3])
        if damage == "wrong format":
            meta["format"] = 99
        elif damage == "other scene":
            meta["scene_id"] = "other"
        elif damage == "index out of range":
            idx = np.array([1, H * W])
        elif damage == "length mismatch":
            vals = np.array([2])
        elif damage == "bad shape":
            meta["shape"] = [0, W]
        write_raw(path, meta, indices=idx, values=vals)
    with pytest.raises(dft.DraftError) as e:
        dft.read_draft(path)
    assert str(path) in str(e.value) and why in str(e.value), str(e.value)
    assert dft.draft_token(path) is None
    found, problems = dft.list_drafts(tmp_path, "s1")
    assert found == [] and len(problems) == 1 and problems[0].path == path and str(path) in problems[0].message
    assert dft.delete_draft(path) and not path.exists()


def test_a_file_that_is_not_a_zip_member_npz_is_reported(tmp_path):
    path = dft.draft_path(tmp_path, None, "s1")
    path.parent.mkdir(parents=True)
    with zipfile.ZipFile(path, "w") as z:  # a zip, but its members are not .npy arrays
        for name in ("meta", "indices", "values"):
            z.writestr(f"{name}.npy", b"not an array")
    with pytest.raises(dft.DraftError, match="not a readable .npz"):
        dft.read_draft(path)


def test_drafts_are_kept_per_analyst_and_listed_newest_first(tmp_path):
    _base, new, px = edited()
    ann = dft.write_draft(tmp_path, "Ann", "s1", base_version=0, pixels=px, values=new, saved_at="2026-01-01T10:00:00+00:00")
    bob = dft.write_draft(tmp_path, "Bob", "s1", base_version=1, pixels=px, values=new, saved_at="2026-01-01T11:00:00+00:00")
    anon = dft.write_draft(tmp_path, "", "s1", base_version=0, pixels=px, values=new, saved_at="2026-01-01T09:00:00+00:00")
    dft.write_draft(tmp_path, "Ann", "s2", base_version=0, pixels=px, values=new)
    assert len({ann.path, bob.path, anon.path}) == 3 and anon.path.parent.name == dft.ANON
    # names that slug alike stay apart; odd names make safe folder names
    assert dft.analyst_folder("ann") != dft.analyst_folder("Ann")
    assert dft.analyst_folder("Ann") == dft.analyst_folder("  Ann  ")
    for odd in ("../../etc", "李雷", "a/b\\c", "anon", "." * 3):
        folder = dft.analyst_folder(odd)
        assert "/" not in folder and "\\" not in folder and folder not in ("anon", "..", ".") and not folder.startswith(".")
    assert dft.analyst_folder(None) == dft.analyst_folder("  ") == "anon"
    found, problems = dft.list_drafts(tmp_path, "s1")
    assert problems == [] and [d.analyst for d in found] == ["Bob", "Ann", ""]
    found, _ = dft.list_drafts(tmp_path, "s1", analysts=["Ann", ""])
    assert [d.analyst for d in found] == ["Ann", ""]
    assert [d.scene_id for d in dft.list_drafts(tmp_path, analysts=["Ann"])[0]] in (["s1", "s2"], ["s2", "s1"])
    assert dft.delete_draft(bob.path) and not bob.path.parent.exists()  # the emptied folder goes too
    assert not dft.delete_draft(bob.path) and not dft.delete_draft(None)
    assert dft.list_drafts(tmp_path / "nowhere", "s1") == ([], [])


def test_bad_arguments_are_refused(tmp_path):
    _base, new, px = edited()
    with pytest.raises(ValueError, match="not a scene id"):
        dft.write_draft(tmp_path, "Ann", "../x", base_version=0, pixels=px, values=new)
    with pytest.raises(ValueError, match="same H×W shape"):
        dft.write_draft(tmp_path, "Ann", "s1", base_version=0, pixels=px, values=new[:5])
    with pytest.raises(ValueError, match="base version"):
        dft.write_draft(tmp_path, "Ann", "s1", base_version=-1, pixels=px, values=new)
    with pytest.raises(FileNotFoundError):
        dft.read_draft(tmp_path / "drafts" / "anon" / "s1.npz")


# ------------------------------------------------------------------------------------------------ CLI


def test_the_drafts_command_lists_and_discards_only_what_is_asked(tmp_path, capsys):
    """Nothing cleaned drafts up: `seghz drafts list` shows every one with whether it can still be restored, and
    `drafts discard` deletes only the filtered ones (a filter is required; --dry-run deletes nothing)."""
    from seghz.cli import main
    from seghz.data.io import write_index_mask, write_rgb
    from seghz.store import Workspace

    ws = Workspace(tmp_path / "ws")
    for sid in ("s1", "s2"):
        folder = ws.root / "scenes" / sid
        img, lbl = folder / "image.png", folder / "label.png"
        write_rgb(img, np.zeros((H, W, 3), np.uint8))
        write_index_mask(lbl, np.zeros((H, W), np.uint8))
        ws.add_scene(sid, img, "hz7", label_path=lbl, split="train", scene_id=sid)
    m = ws.effective_label("s1")
    m[0, 0] = 3
    ws.save_label_version("s1", m, 0, "Cy", "brush")  # s1's label moves on to version 1
    _base, new, px = edited()
    old = "2026-01-01T10:00:00+00:00"
    ann = dft.write_draft(ws.root, "Ann", "s1", base_version=0, pixels=px, values=new, saved_at=old)
    bob = dft.write_draft(ws.root, "Bob", "s2", base_version=0, pixels=px, values=new)
    gone = dft.write_draft(ws.root, "", "s9", base_version=0, pixels=px, values=new)  # a scene no longer there
    small = dft.write_draft(ws.root, "Bob", "s1", base_version=0, pixels=px[:5], values=new[:5])  # another size
    junk = ws.root / "drafts" / dft.analyst_folder("Cy") / "s2.npz"
    junk.parent.mkdir(parents=True)
    junk.write_bytes(b"not a draft")
    root = str(ws.root)

    assert main(["--workspace", root, "drafts", "list"]) == 0
    out = capsys.readouterr().out
    lines = {ln.split()[0] + " " + ln.split()[1]: ln for ln in out.splitlines()}
    assert f"{int(px.sum()):,} px on label version 0 (the label is at version 1 now: saving merges)" in lines["s1 Ann"]
    assert "d old" in lines["s1 Ann"] and "cannot be restored" not in lines["s1 Ann"]
    assert "cannot be restored: scene 's9' is no longer in the workspace" in lines["s9 (no"]
    assert f"cannot be restored: it is {W}×5 px but the scene is {W}×{H} px" in out
    assert "s2       " in out and "unreadable:" in out and str(junk) in out

    assert main(["--workspace", root, "drafts", "discard"]) == 2  # no filter: refused, nothing deleted
    assert "--unusable" in capsys.readouterr().err
    assert all(p.path.is_file() for p in (ann, bob, gone, small)) and junk.is_file()
    assert main(["--workspace", root, "drafts", "discard", "--unusable", "--dry-run"]) == 0
    assert "3 draft file(s) would be discarded" in capsys.readouterr().out and gone.path.is_file() and junk.is_file()
    assert main(["--workspace", root, "drafts", "discard", "--unusable"]) == 0
    assert "3 draft file(s) discarded" in capsys.readouterr().out
    assert not gone.path.exists() and not small.path.exists() and not junk.exists()
    assert ann.path.is_file() and bob.path.is_file()
    assert main(["--workspace", root, "drafts", "discard", "--older-than", "30"]) == 0  # Ann's is from January
    assert "discarded  s1" in capsys.readouterr().out and not ann.path.exists() and bob.path.is_file()
    assert main(["--workspace", root, "drafts", "discard", "--scene", "s1"]) == 0
    assert "no drafts match" in capsys.readouterr().out and bob.path.is_file()
