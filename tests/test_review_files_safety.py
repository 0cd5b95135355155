"""The analysts' review files: the drill-down review list and a scene's queue verdicts.

* The review list is analysts' work: written with fsync; a damaged file raises BadInputError naming it (before: a
  bare JSONDecodeError, and a file holding a JSON object read as an empty list, so the next send overwrote it).
* ``record_verdict`` writes ``verdicts.json`` before ``judged.npz``: a crash between the two shows the item again
  with its verdict logged (before: the item vanished from the queue with no verdict recorded).
* One lock helper (:func:`seghz.locks.file_lock`) serves both files.
"""
from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest
from test_pages import tiny_checkpoint, ws  # noqa: F401  (fixtures)
from test_review_queue import A, build, item, scene  # noqa: F401  (fixture)

from seghz import drilldown as dd
from seghz import locks
from seghz.errors import BadInputError
from seghz.review import queue as rq

KW = {"true_class": "Water", "pred_class": "Road", "scheme": "hz7", "checkpoint_id": "ck", "analyst": "ann"}


@pytest.mark.parametrize("text,why", [("[{\"scene_id\": \"s\", ", "not valid JSON"),
                                      ("{\"scene_id\": \"s\"}", "a JSON dict, not a list"),
                                      (b"\xff\xfe[]", "cannot be read")])
def test_a_damaged_review_list_names_the_file_and_is_not_overwritten(tmp_path, text, why):
    ws = SimpleNamespace(root=tmp_path)
    p = dd.review_list_path(ws)
    p.parent.mkdir(parents=True)
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(BadInputError, match=why) as ei:
        dd.load_review_list(ws)
    assert ei.value.source == str(p) and str(p) in str(ei.value)
    with pytest.raises(BadInputError):
        dd.send_to_review(ws, [dd.Window("s", (0, 0, 256, 256), 4)], **KW)
    with pytest.raises(BadInputError):
        dd.set_review_status(ws, {"scene_id": "s", "bbox": [0, 0, 256, 256]}, "reviewed")
    assert p.read_bytes() == (text if isinstance(text, bytes) else text.encode())


def test_the_review_list_is_written_with_fsync(tmp_path, monkeypatch):
    ws = SimpleNamespace(root=tmp_path)
    calls: list = []
    real = dd.atomic_write_bytes

    def spy(path, data, fsync=True):
        calls.append(fsync)
        return real(path, data, fsync=fsync)

    monkeypatch.setattr(dd, "atomic_write_bytes", spy)
    w = dd.Window("s", (0, 0, 256, 256), 4)
    dd.send_to_review(ws, [w], **KW)
    assert dd.set_review_status(ws, dd.load_review_list(ws)[0], "reviewed", "bo")
    assert calls == [True, True]
    assert dd.load_review_list(ws)[0]["status"] == "reviewed"


def test_a_crash_between_the_verdict_files_shows_the_item_again(scene, monkeypatch):  # noqa: F811
    ws, sid, cid, pred, _lbl = scene
    q = build(ws, sid, cid, pred)
    a = item(q, A)
    real = rq.atomic_write_bytes
    writes: list[str] = []

    def crash_on_second(path, data, *args, **kw):
        writes.append(path.name)
        if len(writes) == 2:
            raise OSError("killed")
        return real(path, data, *args, **kw)

    monkeypatch.setattr(rq, "atomic_write_bytes", crash_on_second)
    with pytest.raises(OSError, match="killed"):
        rq.apply_action(ws, q, a, "confirm", "Ann")
    monkeypatch.setattr(rq, "atomic_write_bytes", real)
    assert writes == ["verdicts.json", "judged.npz"]
    # the edit was saved and the verdict logged; the item is not marked judged, so the queue shows it again
    assert [e["action"] for e in rq.verdicts(ws, sid)] == ["confirm"]
    assert a.key in [it.key for it in rq.pending_items(ws, q)]
    # judging it again (on the queue rebuilt on the saved version) completes it; the log then holds both verdicts
    q2 = build(ws, sid, cid, pred)
    rq.apply_action(ws, q2, item(q2, A), "confirm", "Ann")
    assert A not in [it.bbox for it in rq.pending_items(ws, q2)]
    assert [e["action"] for e in rq.verdicts(ws, sid)] == ["confirm", "confirm"]


@pytest.mark.parametrize("which", ["review list", "verdicts"])
def test_both_files_use_the_one_lock_helper_and_it_excludes_threads(tmp_path, monkeypatch, which):
    used: list = []
    real = locks.file_lock

    def spy(path):
        used.append(path)
        return real(path)

    monkeypatch.setattr(dd, "file_lock", spy)
    monkeypatch.setattr(rq, "file_lock", spy)
    ws = SimpleNamespace(root=tmp_path)
    lock_cm = dd._locked(dd.review_list_path(ws)) if which == "review list" else rq._locked(ws, "s")
    assert len(used) == 1
    held, done = threading.Event(), threading.Event()

    def other():
        with real(used[0]):
            done.set()

    with lock_cm:
        held.set()
        t = threading.Thread(target=other)
        t.start()
        assert not done.wait(0.3)  # blocked while this thread holds the lock
    assert done.wait(10)
    t.join(10)


def test_the_labels_page_says_a_damaged_review_list_cannot_be_read_and_keeps_working(ws):  # noqa: F811
    """The page read the list without a guard: a damaged file stopped the whole Labels page."""
    from test_pages import app, assert_ok

    p = dd.review_list_path(ws)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("[{not json")
    at = app("pages/3_Labels.py").run()
    assert_ok(at)
    (warning,) = [w.value for w in at.warning if "sent from Evaluate for review cannot be listed" in w.value]
    assert "drilldown.json" in warning
    assert "Paint a correction" in [s.value for s in at.subheader]
    assert p.read_text() == "[{not json"
