"""Moving scenes between splits: the store's recorded, all-or-nothing moves; which models learned from a scene
(lineage included); what a planned move does (seghz.scene_splits.move_effects); the study's greedy max-entropy
validation split as a proposal; the ``seghz scenes`` command; the Home page's Scenes panel."""
from __future__ import annotations

import math

import numpy as np
import pytest
from test_pages import app, assert_ok, texts, tiny_checkpoint, ws  # noqa: F401  (fixtures)

from seghz import scene_splits
from seghz.cli import main
from seghz.data.io import write_index_mask, write_rgb
from seghz.store import NotFoundError, Workspace

S = 8  # scene side, pixels


def _scene(w: Workspace, sid: str, split: str, classes: list[int] | None) -> None:
    """An S×S hz7 scene whose label holds ``classes`` in equal horizontal bands (None: no label)."""
    folder = w.root / "scenes" / sid
    img = folder / "image.png"
    write_rgb(img, np.random.default_rng(len(sid)).integers(0, 255, (S, S, 3), dtype=np.uint8))
    lbl = None
    if classes is not None:
        mask = np.zeros((S, S), np.uint8)
        for i, c in enumerate(classes):
            mask[i * S // len(classes):(i + 1) * S // len(classes)] = c
        lbl = folder / "label.png"
        write_index_mask(lbl, mask)
    w.add_scene(sid, img, "hz7", label_path=lbl, split=split, scene_id=sid)


@pytest.fixture
def four(tmp_path) -> Workspace:
    """a: class 0; b: classes 0,1; c: classes 2-5; d: class 6 (all train); e: class 6 (test); f: no label."""
    w = Workspace(tmp_path / "ws4")
    for sid, split, classes in (("a", "train", [0]), ("b", "train", [0, 1]), ("c", "train", [2, 3, 4, 5]),
                                ("d", "val", [6]), ("e", "test", [6]), ("f", "train", None)):
        _scene(w, sid, split, classes)
    return w


def _ckpt(w: Workspace, cid: str, **kw) -> str:
    f = w.root / "checkpoints" / f"{cid}.safetensors"
    f.write_bytes(b"x")
    return w.register_checkpoint(f, {"scheme": "hz7"}, checkpoint_id=cid, name=f"model {cid}", **kw)


# ------------------------------------------------------------------------------------------------ store


def test_moves_are_recorded_with_who_and_why_and_no_ops_are_not(four):
    done = four.move_scenes({"a": "val", "b": "train", "c": "test"}, analyst=" Ann ", reason="study split")
    assert [(m.scene_id, m.from_split, m.to_split, m.analyst, m.reason) for m in done] == [
        ("a", "train", "val", "Ann", "study split"), ("c", "train", "test", "Ann", "study split")]
    assert four.get_scene("a").split == "val" and four.get_scene("c").split == "test"
    four.set_split("a", "none", analyst="Bob")
    hist = four.split_history()
    assert [(h.scene_id, h.to_split, h.analyst) for h in hist] == [("a", "none", "Bob"), ("c", "test", "Ann"),
                                                                   ("a", "val", "Ann")]
    assert [h.to_split for h in four.split_history("a")] == ["none", "val"]
    assert four.split_history("a", limit=1)[0].to_split == "none"


def test_a_bad_move_moves_nothing(four):
    dv = four.data_version("val")
    with pytest.raises(NotFoundError, match="scene 'zz'"):
        four.move_scenes({"a": "val", "zz": "val"}, analyst="Ann")
    with pytest.raises(ValueError, match="unknown split 'validation'"):
        four.move_scenes({"a": "val", "b": "validation"}, analyst="Ann")
    assert four.get_scene("a").split == "train" and four.split_history() == []
    assert four.data_version("val") == dv


def test_a_move_changes_the_data_version_of_both_splits(four):
    before = {sp: four.data_version(sp) for sp in ("train", "val", "test")}
    four.move_scenes({"a": "val"})
    after = {sp: four.data_version(sp) for sp in ("train", "val", "test")}
    assert after["train"] != before["train"] and after["val"] != before["val"] and after["test"] == before["test"]


def test_models_that_learned_from_a_scene_include_fine_tuned_children(four):
    _ckpt(four, "parent", train_scenes=["a", "b"])
    _ckpt(four, "child", parent_id="parent", train_scenes=["c"])
    _ckpt(four, "file")  # registered from a file: its training scenes are unknown
    assert four.get_checkpoint("parent").train_scenes == ("a", "b")
    assert four.get_checkpoint("file").train_scenes is None
    learned = four.learned_scenes()
    assert learned == {"parent": {"a", "b"}, "child": {"a", "b", "c"}, "file": frozenset()}
    assert sorted(c.id for c in four.checkpoints_trained_on("a")) == ["child", "parent"]
    assert [c.id for c in four.checkpoints_trained_on("c")] == ["child"]
    assert four.checkpoints_trained_on("d") == []
    assert [c.id for c in four.unrecorded_learning()] == ["file"]  # may have learned from any scene
    _ckpt(four, "from-file", parent_id="file", train_scenes=["d"])
    assert {c.id for c in four.unrecorded_learning()} == {"file", "from-file"}  # its parent's part is unknown
    assert four.learned_scenes()["from-file"] == {"d"}  # what it recorded itself is still known


def test_models_that_do_not_record_their_scenes_are_named_as_unknowns(four):
    _ckpt(four, "known", train_scenes=["b"])
    assert not [e for e in scene_splits.move_effects(four, {"a": "val"}) if "do not record" in e.text]
    _ckpt(four, "file")
    four.set_active_checkpoint("file")
    text = _texts(scene_splits.move_effects(four, {"a": "val", "c": "test"}), "info")
    assert ("1 model(s) do not record which scenes they learned from (registered from a file, or fine-tuned from "
            "one): model file (file) — the active model. If one of them trained on a, c, its val/test scores there "
            "are optimistic.") in text
    assert "do not record" not in _texts(scene_splits.move_effects(four, {"a": "none"}))  # no yardstick, no worry


# ------------------------------------------------------------------------------------------------ effects


def _texts(effects, level=None) -> str:
    return "\n".join(e.text for e in effects if level is None or e.level == level)


def test_moving_a_scene_a_model_learned_from_into_val_warns_and_names_the_models(four):
    _ckpt(four, "parent", train_scenes=["a"])
    _ckpt(four, "child", parent_id="parent", train_scenes=["b"])
    four.set_active_checkpoint("child")
    eff = scene_splits.move_effects(four, {"a": "val"})
    warn = _texts(eff, "warning")
    assert "Scene a goes to val, but 2 model(s) learned from it" in warn
    assert "model child (child) — the active model" in warn and "model parent (parent)" in warn
    assert "optimistic" in warn
    assert "The val split changes (a)" in _texts(eff, "info")
    # the child's own scene: only the child learned from it; to 'none' there is no leakage to warn of
    assert "1 model(s) learned from it: model child (child)" in _texts(scene_splits.move_effects(four, {"b": "test"}))
    assert not [e for e in scene_splits.move_effects(four, {"b": "none"}) if "learned from it" in e.text]
    assert scene_splits.move_effects(four, {"a": "train"}) == []  # no move, nothing to say


def test_emptying_val_unlabelled_scenes_corrections_and_running_jobs_are_named(four):
    eff = scene_splits.move_effects(four, {"d": "train"})
    assert "The val split will have no labelled scene" in _texts(eff, "warning")
    assert "no label and no saved correction" in _texts(scene_splits.move_effects(four, {"f": "val"}), "info")
    assert "no label" not in _texts(scene_splits.move_effects(four, {"f": "none"}))
    m = four.effective_label("a")
    m[0, 0] = 3
    four.save_label_version("a", m, 0, "Ann", "brush")
    assert "saved corrections leave the training data" in _texts(scene_splits.move_effects(four, {"a": "val"}))
    four.move_scenes({"a": "val"})
    assert "will be trained on by the next retrain" in _texts(scene_splits.move_effects(four, {"a": "train"}))
    jid = four.create_job("train", {})
    assert f"1 job(s) queued or running (train {jid})" in _texts(scene_splits.move_effects(four, {"a": "train"}))
    # effects come before the analyst decides: nothing moved by asking
    assert four.get_scene("a").split == "val"


def test_latest_label_versions_in_one_query_match_one_by_one(four):
    for sid, base, value, who in (("a", 0, 3, "Ann"), ("a", 1, 4, "Ann"), ("c", 0, 1, "Bob")):
        m = four.effective_label(sid)
        m[0, 0] = value
        four.save_label_version(sid, m, base, who, "brush")
    got = four.latest_label_versions()
    assert got == {"a": 2, "c": 1}
    assert {s.id: got.get(s.id, 0) for s in four.list_scenes()} == {
        s.id: four.latest_label_version(s.id) for s in four.list_scenes()}


# ------------------------------------------------------------------------------------------------ proposal


def test_the_proposal_is_the_greedy_max_entropy_choice_computed_by_hand(four):
    # pool = labelled train + val scenes: a [0], b [0,1], c [2,3,4,5], d [6]; e (test) never moves; f has no label
    p1 = scene_splits.propose_val(four, 1)
    assert p1.scheme == "hz7" and p1.chosen == ["c"]  # ln 4, the most classes evenly
    assert p1.entropy == pytest.approx(math.log(4)) and p1.current_entropy == pytest.approx(0.0)  # d: one class
    assert p1.moves == {"c": "val", "d": "train"} and p1.skipped == {"f": "no label and no correction"}
    # second pick: b makes the pooled distribution [.25 .25 .125 .125 .125 .125 0] (a or d would give ln 4 only)
    p2 = scene_splits.propose_val(four, 2)
    assert p2.chosen == ["c", "b"]
    assert p2.entropy == pytest.approx(0.5 * math.log(4) + 0.5 * math.log(8))
    assert p2.moves == {"b": "val", "c": "val", "d": "train"} and "e" not in p2.moves
    with pytest.raises(ValueError, match="hold 4 labelled scene"):
        scene_splits.propose_val(four, 4)
    with pytest.raises(ValueError, match="at least 1"):
        scene_splits.propose_val(four, 0)


def test_the_proposal_counts_saved_corrections(four):
    m = four.effective_label("a")
    m[:] = 0
    m[4:6] = 1
    m[6:] = 6  # a now holds [.5 .25 0 0 0 0 .25]: with c, 1.906 nats, where b gives 1.733
    four.save_label_version("a", m, 0, "Ann", "brush")
    p = scene_splits.propose_val(four, 2)
    assert p.chosen == ["c", "a"]
    assert p.entropy == pytest.approx(0.25 * math.log(4) + 0.75 * math.log(8))


def test_the_proposal_prefers_scenes_no_model_learned_from(four):
    """c is the plain choice (ln 4), but model m1 learned from c (through its child m2 too): with the preference,
    val gets b (ln 2, the best of a, b, d), and the note names the plain choice and what it would reach."""
    _ckpt(four, "m1", train_scenes=["c", "a"])
    _ckpt(four, "m2", parent_id="m1", train_scenes=[])
    p = scene_splits.propose_val(four, 1)
    assert p.chosen == ["b"] and p.entropy == pytest.approx(math.log(2)) and p.learned == {}
    assert p.unconstrained == (pytest.approx(math.log(4)), ["c"])
    note = scene_splits.proposal_note(p)
    assert "Scenes no model learned from were preferred; the plain greedy choice (c) would reach 1.386 nats" in note
    # three picks out of b, d (unlearned) and a, c (learned): b and d first, then the greedy goes on from them
    # among a and c: c adds classes 2-5 ([.25 .25 .25 .25]/... beats a's extra class 0)
    p3 = scene_splits.propose_val(four, 3)
    assert p3.chosen[:2] == ["b", "d"] or p3.chosen[:2] == ["d", "b"]
    assert p3.chosen[2] == "c" and sorted(p3.learned["c"]) == ["model m1 (m1)", "model m2 (m2)"] and len(p3.learned) == 1
    note = scene_splits.proposal_note(p3)
    assert "Too few unlearned scenes: c was learned from by model m" in note and "optimistic" in note
    # the plain choice on request, and nothing said when the preference changes nothing
    plain = scene_splits.propose_val(four, 1, prefer_unlearned=False)
    assert plain.chosen == ["c"] and plain.unconstrained is None and plain.learned == {}
    assert "preferred" not in scene_splits.proposal_note(plain)


def test_greedy_max_entropy_given_and_allowed():
    from seghz.data.splits import greedy_max_entropy

    d = np.eye(4)[[0, 0, 1, 2]]  # items 0, 1: class 0; 2: class 1; 3: class 2
    assert greedy_max_entropy(d, 2, allowed=[0, 1, 2]) in ([2, 1], [2, 0])  # 3 is never picked
    assert greedy_max_entropy(d, 1, given=[2]) == [3]  # the mean already holds class 1: class 2 adds most
    assert greedy_max_entropy(d, 5, given=[0], allowed=[1]) == [1]  # capped by what may still be picked
    assert greedy_max_entropy(d, 2) == [3, 2]  # unchanged without them (ties go to the later index)


# ------------------------------------------------------------------------------------------------ CLI


def test_the_scenes_command_lists_moves_with_a_name_and_proposes(four, capsys):
    root = str(four.root)
    assert main(["--workspace", root, "scenes", "list", "--split", "train"]) == 0
    out = capsys.readouterr().out
    assert [ln.split()[0] for ln in out.splitlines()] == ["a", "b", "c", "f"]
    assert "train 8x8 hz7    no label  f" in out
    four.save_label_edit("b", 0, "Ann", "brush", pixels=np.arange(3), values=1)
    assert main(["--workspace", root, "scenes", "list", "--split", "train"]) == 0
    rows = {ln.split()[0]: ln for ln in capsys.readouterr().out.splitlines()}
    assert "label version 1" in rows["b"] and "label version" not in rows["a"]
    assert main(["--workspace", root, "scenes", "move", "a", "b", "--to", "val"]) == 2
    out, err = capsys.readouterr()
    assert "a: train → val" in out and "--analyst NAME" in err and four.get_scene("a").split == "train"
    assert main(["--workspace", root, "scenes", "move", "a", "--to", "val", "--analyst", "Ann", "--dry-run"]) == 0
    assert "nothing moved" in capsys.readouterr().out and four.get_scene("a").split == "train"
    assert main(["--workspace", root, "scenes", "move", "a", "--to", "val", "--analyst", "Ann", "--reason", "r"]) == 0
    assert four.get_scene("a").split == "val" and "moved 1 scene(s)" in capsys.readouterr().out
    assert main(["--workspace", root, "scenes", "history"]) == 0
    assert "a: train → val  by Ann  — r" in capsys.readouterr().out
    assert main(["--workspace", root, "scenes", "propose-val", "--k", "1"]) == 0
    out = capsys.readouterr().out
    assert "Proposed val: c — class entropy 1.386 nats in scheme hz7" in out and "(a proposal" in out
    assert four.get_scene("c").split == "train"
    assert main(["--workspace", root, "scenes", "propose-val", "--k", "1", "--apply", "--analyst", "Ann"]) == 0
    assert [s.id for s in four.list_scenes("val")] == ["c"]
    assert four.split_history()[0].reason == "greedy max class-entropy validation split"
    assert main(["--workspace", root, "scenes", "move", "zz", "--to", "val", "--analyst", "Ann"]) == 2
    assert "scene 'zz' does not exist" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ Home page


def _editor_key(at) -> str:
    (ed,) = [e for e in at.data_editor if "split" in e.value.columns]
    return ed.key


def test_home_scenes_panel_shows_effects_and_moves_only_under_a_name(ws):  # noqa: F811
    at = app("app.py").run()
    assert_ok(at)
    key = _editor_key(at)
    frame = next(e.value for e in at.data_editor if e.key == key)
    assert list(frame["scene"]) == [s.id for s in ws.list_scenes()] and list(frame["split"]) == ["train", "val"]
    assert list(frame["map"]) == [f"Map?scene={s.id}" for s in ws.list_scenes()]  # each scene opens on the Map
    # the fixture's model is a registered file: what it learned from is unknown, never shown as 0
    assert list(frame["models trained on it"]) == ["0 (+1 unknown)"] * 2
    assert not [b for b in at.button if b.key == "seghz_split_apply"]  # nothing planned, nothing to apply
    at.session_state[key] = {"edited_rows": {0: {"split": "val"}}, "added_rows": [], "deleted_rows": []}
    at.run()
    assert_ok(at)
    (train,) = ws.list_scenes("train")
    t = texts(at)
    assert "1 planned move(s)" in t and "The train split will have no labelled scene" in t
    assert "The val split changes" in t
    assert at.button(key="seghz_split_apply").disabled  # no analyst name yet
    assert "every split move records who made it" in t
    at.sidebar.text_input(key="seghz_analyst").input("Ann").run()
    # a move the panel warns about (here: train left empty) needs a reason, recorded with it (the review applied a
    # flagged leakage move with an empty "Why")
    assert at.button(key="seghz_split_apply").disabled and "say why you make them anyway" in texts(at)
    at.text_input(key="seghz_split_reason").input("more val").run()
    at.button(key="seghz_split_apply").click().run()
    assert_ok(at)
    assert ws.get_scene(train.id).split == "val"
    (h,) = ws.split_history()
    assert (h.scene_id, h.from_split, h.to_split, h.analyst, h.reason) == (train.id, "train", "val", "Ann", "more val")
    assert f"Moved 1 scene(s): {train.id} train → val (recorded under Ann)." in texts(at)
    frame = next(e.value for e in at.data_editor if "split" in e.value.columns)  # fresh rows: the moved split
    assert list(frame["split"]) == ["val", "val"]


def test_home_propose_says_what_it_chose_even_when_nothing_moves(ws):  # noqa: F811
    """A review found that Propose showed nothing at all when the proposal matched the current splits."""
    at = app("app.py").run()
    at.sidebar.text_input(key="seghz_analyst").input("Ann").run()
    at.button(key="seghz_split_propose").click().run()
    assert_ok(at)
    assert "Proposed val:" in texts(at) and "class entropy" in texts(at)
    if [b for b in at.button if b.key == "seghz_split_apply"]:  # the proposal moves scenes: make it the split
        at.text_input(key="seghz_split_reason").input("the study's split").run()
        at.button(key="seghz_split_apply").click().run()
        at.button(key="seghz_split_propose").click().run()
    assert_ok(at)
    t = texts(at)
    assert "The proposal matches the current splits: nothing to move." in t and "Proposed val:" in t
    assert not [b for b in at.button if b.key == "seghz_split_apply"]
    assert [s.id for s in ws.list_scenes("val")] == [t.split("Proposed val: ")[1].split(" ")[0]]


def test_a_proposal_below_the_current_entropy_says_keep_the_current_split():
    from seghz.scene_splits import proposal_note

    worse = scene_splits.ValProposal("hz7", ["b"], {"b": "val"}, 0.5, 0.9, {"f": "no label and no correction"})
    text = proposal_note(worse)
    assert "class entropy 0.500 nats in scheme hz7 (the current val split's: 0.900)" in text
    assert "keeping the current split is the better choice" in text and "Left out: f: no label" in text
    better = scene_splits.ValProposal("hz7", ["b"], {}, 0.9, 0.5, {})
    assert "better choice" not in proposal_note(better) and "Left out" not in proposal_note(better)
