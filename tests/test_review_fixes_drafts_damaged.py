"""A damaged draft is reported in SegHZ's words (never numpy's pickle advice) and keeps its analyst's name.

Before: a draft overwritten with garbage raised "... This file contains pickled (object) data. If you trust the file
you can load it unsafely using the `allow_pickle=` keyword argument or `pickle.load()`" -- advice against the
project's no-pickle rule -- and ``drafts list`` showed its analyst as "?" (an unreadable file had no analyst at all).
"""
from __future__ import annotations

import io
import json

import numpy as np
import pytest

from seghz import drafts as dft
from seghz.errors import BadInputError


def _draft(root, analyst, scene_id):
    px = np.zeros((4, 5), bool)
    px[1, 2:4] = True
    return dft.write_draft(root, analyst, scene_id, base_version=0, pixels=px, values=np.full((4, 5), 3, np.uint8))


def _object_npz() -> bytes:
    buf = io.BytesIO()
    np.savez(buf, meta=np.array([{"analyst": "x"}], dtype=object), indices=np.arange(2), values=np.arange(2))
    return buf.getvalue()


@pytest.mark.parametrize("damage", [b"not a zip at all, just text " * 4, b"", "truncated", "object"])
def test_damaged_draft_names_the_file_and_never_advises_pickle(tmp_path, damage):
    d = _draft(tmp_path, "Li Wei", "s1")
    good = d.path.read_bytes()
    data = good[: len(good) // 2] if damage == "truncated" else _object_npz() if damage == "object" else damage
    d.path.write_bytes(data)
    with pytest.raises(BadInputError) as ei:
        dft.read_draft(d.path)
    msg = str(ei.value)
    assert isinstance(ei.value, dft.DraftError) and msg.startswith(str(d.path)) and "damaged draft file" in msg
    assert "pickle.load" not in msg and "allow_pickle" not in msg and "If you trust" not in msg
    assert ei.value.__cause__ is None  # numpy's exception (and its advice) is not chained into a traceback either
    _, problems = dft.list_drafts(tmp_path)
    assert [p.path for p in problems] == [d.path] and "allow_pickle" not in problems[0].message


def test_a_damaged_drafts_analyst_is_known(tmp_path):
    # metadata readable, pixels bad: the name comes from the file itself
    d = _draft(tmp_path, "Zhang San", "s1")
    buf = io.BytesIO()
    meta = {"format": dft.DRAFT_FORMAT, "scene_id": "s1", "analyst": "Zhang San", "base_version": 0, "shape": [4, 5]}
    np.savez(buf, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), indices=np.array([5, 2]),
             values=np.array([1, 1]))
    d.path.write_bytes(buf.getvalue())
    with pytest.raises(dft.DraftError) as ei:
        dft.read_draft(d.path)
    assert ei.value.analyst == "Zhang San"
    # nothing readable in the file: the name comes from a readable draft in the same analyst folder
    bad = _draft(tmp_path, "Li Wei", "s2")
    _draft(tmp_path, "Li Wei", "s3")
    bad.path.write_bytes(b"garbage")
    anon = _draft(tmp_path, None, "s4")
    anon.path.write_bytes(b"garbage")
    found, problems = dft.list_drafts(tmp_path)
    assert [x.scene_id for x in found] == ["s3"]
    who = {p.scene_id: (p.analyst, p.owner) for p in problems}
    assert who == {"s1": ("Zhang San", "Zhang San"), "s2": ("Li Wei", "Li Wei"), "s4": ("", "(no name)")}
    assert "?" not in {o for _, o in who.values()}
    # alone in its folder and unreadable: the name as the folder spells it, never "?"
    lone = _draft(tmp_path, "Ann Analyst", "s5")
    lone.path.write_bytes(b"garbage")
    p = next(p for p in dft.list_drafts(tmp_path, scene_id="s5")[1])
    assert p.analyst is None and p.owner == "Ann_Analyst (as its folder spells it)"
