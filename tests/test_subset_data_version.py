"""An evaluation of chosen scenes (the Evaluate page's scene filter, cached under ``scene_scope``) is keyed by the data
version of those scenes only (``Workspace.data_version(split, scene_ids)``): a label saved on another scene of the
split, or a scene joining the split, must not make it stale (minutes to an hour of CPU to recompute the very same
numbers); a new label version of a chosen scene, or a chosen scene leaving the split or deleted, must.

Same prepared workspace as tests/test_pages.py (labelled "val town" in val, "train farm" in train, tiny checkpoint
``tiny-test``); an airport scene is added to train here.
"""
from __future__ import annotations

import pytest
from test_pages import HZ7, tiny_checkpoint, ws  # noqa: F401  (fixtures)

from seghz.evaluate import cached_evaluation, evaluate_split, scene_scope
from seghz.jobs import ProgressReporter
from seghz.jobs.kinds import evaluate_job

CID = "tiny-test"


def _import(ws, tmp_path, name, seed, split="train", size=128):  # noqa: F811
    from seghz.data.io import write_index_mask, write_rgb
    from seghz.data.scenes import import_scene
    from seghz.demo import generate_scene

    rgb, lbl = generate_scene(size, seed)
    write_rgb(tmp_path / f"{seed}.png", rgb)
    write_index_mask(tmp_path / f"{seed}_label.png", lbl, HZ7)
    import_scene(ws, tmp_path / f"{seed}.png", tmp_path / f"{seed}_label.png", scheme="hz7", name=name, split=split,
                 synthetic=True)
    return next(s for s in ws.list_scenes(split) if s.name == name)


def _save(ws, scene_id):  # noqa: F811
    """A new label version of the scene: one pixel relabelled."""
    m = ws.effective_label(scene_id).copy()
    m[0, 0] = (int(m[0, 0]) + 1) % 7
    ws.save_label_version(scene_id, m, ws.latest_label_version(scene_id), "tester", "brush")


def _no_predict(monkeypatch):
    from seghz.infer.engine import Predictor

    def boom(self, *a, **k):
        raise AssertionError("predicted again: the cached evaluation was not used")

    monkeypatch.setattr(Predictor, "predict", boom)
    monkeypatch.setattr(Predictor, "predict_many", boom)  # small scenes are predicted in shared batches


@pytest.fixture
def scenes(ws, tmp_path):  # noqa: F811
    """(farm, airport): two labelled train scenes; the subset evaluated is the airport alone."""
    air = _import(ws, tmp_path, "train airport", 23)
    farm = next(s for s in ws.list_scenes("train") if s.name == "train farm")
    return farm, air


def test_data_version_of_chosen_scenes(ws, scenes, tmp_path):  # noqa: F811
    farm, air = scenes
    whole = ws.data_version("train")
    assert ws.data_version("train", None) == ws.data_version("train", []) == whole  # whole split unchanged
    sub = ws.data_version("train", [air.id])
    assert sub != whole and sub == ws.data_version("train", (air.id, air.id))  # a set: order and repeats ignored
    _save(ws, farm.id)
    _import(ws, tmp_path, "train port", 31)
    assert ws.data_version("train") != whole
    assert ws.data_version("train", [air.id]) == sub  # other scenes of the split do not count
    _save(ws, air.id)
    assert ws.data_version("train", [air.id]) != sub
    # a chosen scene that is not in the split is part of the hash (id:missing), not silently dropped
    assert ws.data_version("train", [air.id, "gone"]) != ws.data_version("train", [air.id])
    assert ws.data_version("train", [farm.id, air.id]) != ws.data_version("val", [farm.id, air.id])


def test_subset_stays_cached_after_saves_and_additions_outside_it(ws, scenes, tmp_path, monkeypatch):  # noqa: F811
    farm, air = scenes
    first = evaluate_split(ws, CID, "train", scene_ids=[air.id])
    assert first["data_version"] == ws.data_version("train", [air.id])  # what it reports is the subset's
    row = cached_evaluation(ws, CID, "train", scene_ids=[air.id])
    assert row is not None and row.split == scene_scope("train", [air.id])
    whole = evaluate_split(ws, CID, "train")
    assert whole["data_version"] == ws.data_version("train") and "scene_ids" not in whole

    _save(ws, farm.id)  # outside the subset
    _import(ws, tmp_path, "train port", 31)  # a scene joins the split
    again = cached_evaluation(ws, CID, "train", scene_ids=[air.id])
    assert again is not None and again.id == row.id
    _no_predict(monkeypatch)
    assert evaluate_split(ws, CID, "train", scene_ids=[air.id]) == first  # served from the cache
    # the background job finds it too, and reports the subset's data version
    config = {"checkpoint_id": CID, "split": "train", "tta": "none", "scene_ids": [air.id]}
    jid = ws.create_job("evaluate", config)
    out = evaluate_job(ws, jid, config, ProgressReporter(ws, jid))
    assert out["cached"] and out["evaluation_id"] == row.id
    assert out["data_version"] == ws.data_version("train", [air.id]) and out["scene_ids"] == [air.id]
    # the whole split's cache went stale with the save (and the new scene)
    assert cached_evaluation(ws, CID, "train") is None


def test_whole_split_goes_stale_on_any_save(ws, scenes):  # noqa: F811
    _farm, air = scenes
    evaluate_split(ws, CID, "train")
    assert cached_evaluation(ws, CID, "train") is not None
    _save(ws, air.id)
    assert cached_evaluation(ws, CID, "train") is None


def test_subset_goes_stale_on_a_save_inside_it(ws, scenes, monkeypatch):  # noqa: F811
    _farm, air = scenes
    evaluate_split(ws, CID, "train", scene_ids=[air.id])
    _save(ws, air.id)
    assert cached_evaluation(ws, CID, "train", scene_ids=[air.id]) is None
    calls = []
    from seghz.infer.engine import Predictor

    real = Predictor._model_call  # every prediction path (one scene, or small scenes batched together) runs it
    monkeypatch.setattr(Predictor, "_model_call", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    res = evaluate_split(ws, CID, "train", scene_ids=[air.id])
    assert calls and res["data_version"] == ws.data_version("train", [air.id])
    assert cached_evaluation(ws, CID, "train", scene_ids=[air.id]) is not None


def test_subset_goes_stale_when_a_chosen_scene_leaves_the_split(ws, scenes, tmp_path):  # noqa: F811
    _farm, air = scenes
    _import(ws, tmp_path, "train port", 31)  # three scenes: {air, port} is a strict subset
    port = next(s for s in ws.list_scenes("train") if s.name == "train port")
    chosen = [air.id, port.id]
    evaluate_split(ws, CID, "train", scene_ids=chosen)
    assert cached_evaluation(ws, CID, "train", scene_ids=chosen) is not None
    ws.set_split(air.id, "val")
    assert cached_evaluation(ws, CID, "train", scene_ids=chosen) is None
    ws.set_split(air.id, "train")  # back, with the same labels: the same scores, cached again
    assert cached_evaluation(ws, CID, "train", scene_ids=chosen) is not None
    ws.delete_scene(port.id)
    assert cached_evaluation(ws, CID, "train", scene_ids=chosen) is None
