"""Archiving a checkpoint (``Workspace.archive_checkpoint``, ``seghz checkpoints archive``): it leaves every picker,
its weights go, and the registry keeps its row, so lineage, scores and the promotion history still name it. It is
refused where it would break something: the active model, the model a rollback returns to, one a job is using."""
from __future__ import annotations

import pytest

from seghz.cli import main
from seghz.errors import ConflictError
from seghz.store import NotFoundError, Workspace


def _ckpt(w: Workspace, cid: str, **kw) -> str:
    f = w.root / "checkpoints" / f"{cid}.safetensors"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_bytes(b"x")
    return w.register_checkpoint(f, {"scheme": "hz7"}, checkpoint_id=cid, name=f"model {cid}", **kw)


@pytest.fixture
def reg(tmp_path) -> Workspace:
    """a (trained on s1) <- b (fine-tuned, trained on s2) <- c; promotions a -> b: b active, a the rollback target."""
    w = Workspace(tmp_path / "ws")
    _ckpt(w, "a", train_scenes=["s1"])
    _ckpt(w, "b", parent_id="a", train_scenes=["s2"])
    _ckpt(w, "c", parent_id="b", train_scenes=[])
    w.record_activation("a", action="set")
    w.record_activation("b", action="promote")
    return w


def test_an_archived_checkpoint_leaves_the_lists_and_its_weights_go_but_its_row_stays(reg):
    f = reg.checkpoint_path("c")
    ck = reg.archive_checkpoint("c", analyst=" Ann ", reason="worse on water")
    assert ck.archived and ck.archived_by == "Ann" and ck.archive_reason == "worse on water"
    assert ck.archived_text().startswith("archived 20") and ck.archived_text().endswith("by Ann (worse on water)")
    assert not f.exists()
    assert [c.id for c in reg.list_checkpoints()] == ["b", "a"] and reg.summary()["checkpoints"] == 2
    assert [c.id for c in reg.list_checkpoints(include_archived=True)] == ["c", "b", "a"]
    assert reg.get_checkpoint("c").archived  # still registered: lineage and history name it
    _, learned, _ = reg.lineage_learning(include_archived=True)
    assert learned["c"] == {"s1", "s2"}  # what it learned is still known (the registry shows it)
    every, learned, _ = reg.lineage_learning()  # but it is no model any more: no leakage warning names it
    assert [c.id for c in every] == ["b", "a"] and "c" not in learned
    assert [c.id for c in reg.checkpoints_trained_on("s2")] == ["b"]
    with pytest.raises(ConflictError, match="already archived"):
        reg.archive_checkpoint("c", analyst="Ann")
    with pytest.raises(ConflictError, match="weights are gone, it cannot become the active model"):
        reg.set_active_checkpoint("c")


def test_archive_is_refused_where_it_would_break_something(reg):
    with pytest.raises(ValueError, match="analyst's name"):
        reg.archive_checkpoint("c", analyst="  ")
    with pytest.raises(ConflictError, match="is the active model"):
        reg.archive_checkpoint("b", analyst="Ann")
    with pytest.raises(ConflictError, match="the model a rollback would return to"):
        reg.archive_checkpoint("a", analyst="Ann")
    job = reg.create_job("train", {"epochs": 1, "parent_checkpoint_id": "c"})
    with pytest.raises(ConflictError, match=f"used by the train job {job}"):
        reg.archive_checkpoint("c", analyst="Ann")
    reg.update_job(job, status="cancelled")
    reg.archive_checkpoint("c", analyst="Ann")
    assert all(reg.checkpoint_path(x).exists() for x in ("a", "b"))


def test_a_rollback_onto_an_archived_model_is_refused_with_the_reason(reg):
    reg.record_activation("c", action="promote")  # a -> b -> c: rollback from c returns to b
    reg.archive_checkpoint("a", analyst="Ann")  # a is not the rollback target now
    assert reg.rollback().id == "b"
    with pytest.raises(ConflictError, match="cannot roll back: the previously active checkpoint 'a' is archived"):
        reg.rollback()
    assert reg.active_checkpoint().id == "b"


def test_a_file_outside_the_workspace_is_never_deleted(reg, tmp_path):
    shipped = tmp_path / "repo" / "checkpoints" / "shipped.safetensors"
    shipped.parent.mkdir(parents=True)
    shipped.write_bytes(b"x")
    reg.register_checkpoint(shipped, {"scheme": "hz7"}, checkpoint_id="shipped", name="shipped model")
    reg.archive_checkpoint("shipped", analyst="Ann")
    assert shipped.exists() and reg.get_checkpoint("shipped").archived


def test_the_shipped_checkpoints_are_not_registered_again_once_archived(tmp_path, monkeypatch):
    from test_pages import make_tiny_checkpoint

    from seghz.data.scenes import register_shipped_checkpoints

    src = tmp_path / "repo_checkpoints"
    src.mkdir()
    make_tiny_checkpoint(src / "demo_x.safetensors")
    w = Workspace(tmp_path / "ws2")
    assert register_shipped_checkpoints(w, src)
    (only,) = w.list_checkpoints()
    w.set_active_checkpoint(None)
    w.archive_checkpoint(only.id, analyst="Ann")
    assert not register_shipped_checkpoints(w, src)  # known, archived: not again under a new id
    assert w.list_checkpoints() == [] and len(w.list_checkpoints(include_archived=True)) == 1


def test_the_checkpoints_command_archives_and_lists(reg, capsys):
    root = str(reg.root)
    assert main(["--workspace", root, "checkpoints", "archive", "c"]) == 2
    assert "give the analyst's name" in capsys.readouterr().err and not reg.get_checkpoint("c").archived
    assert main(["--workspace", root, "checkpoints", "archive", "b", "--analyst", "Ann"]) == 2
    assert "is the active model" in capsys.readouterr().err
    assert main(["--workspace", root, "checkpoints", "archive", "c", "--analyst", "Ann", "--reason", "r",
                 "--keep-file"]) == 0
    out = capsys.readouterr().out
    assert "c archived 20" in out and "by Ann (r); its weights stay at" in out and reg.checkpoint_path("c").exists()
    assert main(["--workspace", root, "checkpoints", "list"]) == 0
    out = capsys.readouterr().out
    assert [ln.lstrip("* ").split()[0] for ln in out.splitlines()[:2]] == ["b", "a"]
    assert out.startswith("* b") and "1 archived checkpoint(s) not shown" in out
    assert main(["--workspace", root, "checkpoints", "list", "--all"]) == 0
    out = capsys.readouterr().out
    assert "c " in out and "[archived 20" in out


def test_archiving_keeps_a_file_another_checkpoint_uses_and_survives_a_failed_delete(reg, monkeypatch):
    """The review: two rows naming one file (`checkpoints add --no-copy` twice); archiving one deleted the active
    model's weights. And a delete that fails (permissions) left the page with a traceback."""
    from pathlib import Path

    f = reg.checkpoint_path("c")
    reg.register_checkpoint(f, {"scheme": "hz7"}, checkpoint_id="c2", name="same file")
    reg.archive_checkpoint("c", analyst="Ann")
    assert f.exists() and not reg.get_checkpoint("c2").archived  # c2 still predicts with it
    reg.archive_checkpoint("c2", analyst="Ann")
    assert not f.exists()  # the last one in use goes: the file with it
    g = reg.checkpoint_path("a")
    _ckpt(reg, "d")
    h = reg.checkpoint_path("d")

    def refuse(self, *a, **k):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "unlink", refuse)
    ck = reg.archive_checkpoint("d", analyst="Ann")  # archived; the file stays, nothing raised
    assert ck.archived and h.exists() and g.exists()


def test_usable_checkpoint_refuses_an_archived_one(reg):
    """The Map's jumps and links and a finished job's result used an archived id as if its weights were there."""
    reg.archive_checkpoint("c", analyst="Ann")
    assert reg.usable_checkpoint("b").id == "b"
    with pytest.raises(NotFoundError, match="is archived .*: its weights are gone"):
        reg.usable_checkpoint("c")


def test_a_job_that_took_the_active_model_names_it_so_archive_waits_for_it(reg):
    """A job whose config names no checkpoint takes the active one when it starts; if the analyst then promoted
    another and archived that one, its weights went while the job was about to load them. The job now writes the
    checkpoint it took into its config, which the archive guard reads; an archived one is refused by the job."""
    from seghz.jobs.kinds import _checkpoint_id

    reg.record_activation("c", action="promote")
    job = reg.create_job("evaluate", {"split": "val"})
    reg.update_job(job, status="running")
    assert _checkpoint_id(reg, reg.get_job(job).config, job) == "c"
    assert reg.get_job(job).config["checkpoint_id"] == "c"
    reg.record_activation("b", action="promote")
    reg.record_activation("a", action="promote")  # c is neither active nor the rollback target now
    with pytest.raises(ConflictError, match=f"used by the evaluate job {job}"):
        reg.archive_checkpoint("c", analyst="Ann")
    reg.update_job(job, status="done")
    reg.archive_checkpoint("c", analyst="Ann")
    with pytest.raises(NotFoundError, match="archived"):
        _checkpoint_id(reg, {"checkpoint_id": "c"})
