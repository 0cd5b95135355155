"""seghz.compare: recipe diffs, the checkpoint comparison table, changed pixels, and the cumulative TTA report
(on a tiny model and a 64 px synthetic scene), plus the evaluation cache's TTA keys and label invalidation."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from seghz import compare
from seghz.classes import get_scheme
from seghz.evaluate import cached_evaluation, evaluate_split, tta_key
from seghz.infer.engine import TTA_MODES
from seghz.store import Workspace

HZ7 = get_scheme("hz7")


# ---------------------------------------------------------------------------------------------- pure functions


def test_recipe_diff_lists_only_the_differing_keys():
    base = {"epochs": 5, "lr": 0.002, "noise_mask": "none", "dice": True, "device": "cpu", "extra": {}}
    other = {"epochs": 20, "lr": 0.002, "noise_mask": "cos", "dice": True, "device": "cuda", "extra": {},
             "loss": {"noise_mask": "cos"}}
    assert compare.recipe_diff(base, other) == "epochs 5→20; noise_mask none→cos; loss.noise_mask=cos"
    assert compare.recipe_diff(base, base) == ""
    assert compare.recipe_diff({"lr": 0.002, "ohem": False}, {"ohem": True}) == "ohem false→true; lr 0.002→(unset)"
    # nested dicts compare key by key; ignored keys (where it ran) never show
    assert compare.recipe_diff({"config": {"a": 1, "b": 2}}, {"config": {"a": 1, "b": 3}, "device": "x"}) == "config.b 2→3"


def test_comparison_table_shape_and_notes():
    entries = [
        {"checkpoint": "A", "recipe": {"epochs": 5}, "val": {"miou": 0.5, "fwiou": 0.6, "oa": 0.7}, "test": None},
        {"checkpoint": "B", "recipe": {"epochs": 20, "noise_mask": "cos"}, "val": {"miou": 0.55, "fwiou": 0.61, "oa": 0.72},
         "test": {"miou": 0.4, "fwiou": 0.5, "oa": 0.6}},
        {"checkpoint": "C", "recipe": {"epochs": 5}, "val": None, "test": None},
        {"checkpoint": "D", "recipe": {}, "val": None, "test": None},
    ]
    df = compare.comparison_table(entries)
    assert list(df.columns) == ["checkpoint", "val mIoU (this workspace)", "val fwIoU (this workspace)",
                                "val Acc (this workspace)", "test mIoU (this workspace)", "test fwIoU (this workspace)",
                                "test Acc (this workspace)", "note"]  # nothing recorded: no recorded columns
    assert len(df) == 4 and list(df["checkpoint"]) == ["A", "B", "C", "D"]
    assert list(df["note"]) == ["baseline", "epochs 5→20; noise_mask=cos", "same recipe", "recipe unknown"]
    assert df.loc[1, "test mIoU (this workspace)"] == 0.4 and np.isnan(df.loc[0, "test mIoU (this workspace)"])
    assert df.loc[0, "val Acc (this workspace)"] == 0.7


def test_comparison_table_never_mixes_measured_and_recorded_scores():
    """A score measured on this workspace's split and one a checkpoint recorded at training (on its own data) are
    different things: they go in different columns, and a missing one stays missing (NaN), never filled by the other."""
    entries = [
        {"checkpoint": "demo_hz7", "recipe": {}, "val": {"miou": 0.9619, "fwiou": 0.97, "oa": 0.98}, "test": None,
         "val_recorded": None, "test_recorded": None},
        {"checkpoint": "gid15 (gid15_hz7)", "recipe": {}, "val": None, "test": None,
         "val_recorded": {"miou": 0.8206, "fwiou": 0.85, "oa": 0.9}, "test_recorded": None},
    ]
    df = compare.comparison_table(entries)
    measured, recorded = "val mIoU (this workspace)", "val mIoU (recorded at training, its own data)"
    assert list(df.columns) == ["checkpoint", measured, "val fwIoU (this workspace)", "val Acc (this workspace)",
                                "test mIoU (this workspace)", "test fwIoU (this workspace)", "test Acc (this workspace)",
                                recorded, "val fwIoU (recorded at training, its own data)",
                                "val Acc (recorded at training, its own data)", "note"]
    assert df.loc[0, measured] == 0.9619 and np.isnan(df.loc[1, measured])
    assert np.isnan(df.loc[0, recorded]) and df.loc[1, recorded] == 0.8206
    assert compare.score_column("test", "Acc", recorded=True) == "test Acc (recorded at training, its own data)"
    assert "None" not in df.to_csv(index=False)  # missing scores are empty, not the text None
    # the label shows a checkpoint's id once when its name is the id
    assert compare.checkpoint_label(SimpleNamespace(id="demo_hz7", name="demo_hz7")) == "demo_hz7"
    assert compare.checkpoint_label(SimpleNamespace(id="gid15_hz7", name="gid15")) == "gid15 (gid15_hz7)"
    assert compare.checkpoint_label(SimpleNamespace(id="x1", name="")) == "x1"


def test_recorded_scores():
    assert compare.recorded_scores({"val": {"miou": 0.5, "fwiou": 0.6, "oa": 0.7}}, "val") == \
        {"miou": 0.5, "fwiou": 0.6, "oa": 0.7}
    assert compare.recorded_scores({"val": {"miou": 0.5}}, "test") is None
    assert compare.recorded_scores(None, "val") is None


def _res(ious: dict) -> dict:
    return {"classes": list(ious), "per_class": {c: {"iou": v} for c, v in ious.items()}}


def test_class_iou_deltas_and_styler():
    df = compare.class_iou_deltas({"A": _res({"x": 0.5, "y": 0.2}), "B": _res({"x": 0.6, "y": 0.1}),
                                   "C": _res({"x": 0.5, "y": None})})
    assert list(df.columns) == ["class", "A IoU", "Δ B (pp)", "Δ C (pp)"]
    assert df["Δ B (pp)"].round(6).tolist() == [10.0, -10.0]
    assert df.loc[0, "Δ C (pp)"] == 0 and np.isnan(df.loc[1, "Δ C (pp)"])
    html = compare.style_deltas(df).to_html()
    assert compare.delta_color(10.0, 10.0) in html and compare.delta_color(-10.0, 10.0) in html
    assert compare.delta_color(0.0) == "background-color: #ffffff"
    assert compare.delta_color(5.0) != compare.delta_color(-5.0) and compare.delta_color(None) == ""


def test_changed_pixels_on_hand_built_arrays():
    a = np.array([[0, 0, 1], [1, 2, 2]])
    b = np.array([[0, 1, 1], [2, 1, 1]])
    st = compare.changed_pixels(a, b, ["r", "g", "b"])
    assert st["changed"] == 4 and st["total"] == 6 and st["fraction"] == pytest.approx(4 / 6)
    assert st["mask"].tolist() == [[False, True, False], [True, True, True]]
    assert st["pairs"] == [("b", "g", 2), ("g", "b", 1), ("r", "g", 1)]
    t = compare.changed_pairs_table(st, top=2)
    assert list(t.columns) == ["A", "B", "pixels", "share of changed"] and len(t) == 2
    assert t.loc[0, "pixels"] == 2 and t.loc[0, "share of changed"] == pytest.approx(0.5)
    # a validity mask restricts the comparison
    valid = np.array([[True, True, True], [False, False, False]])
    st2 = compare.changed_pixels(a, b, ["r", "g", "b"], valid)
    assert (st2["changed"], st2["total"], st2["pairs"]) == (1, 3, [("r", "g", 1)])
    same = compare.changed_pixels(a, a, ["r", "g", "b"])
    assert same["changed"] == 0 and same["pairs"] == [] and len(compare.changed_pairs_table(same)) == 0
    with pytest.raises(ValueError):
        compare.changed_pixels(a, b[:, :2], ["r", "g", "b"])


def test_changed_panels_and_region_bbox():
    img = np.zeros((4, 5, 3), np.uint8)
    pa = np.zeros((4, 5), np.uint8)
    pb = pa.copy()
    pb[1, 2] = 3
    st = compare.changed_pixels(pa, pb, HZ7.names)
    panels = compare.changed_panels(img, pa, pb, st["mask"], HZ7)
    assert len(panels) == 4 and all(p.shape == (4, 5, 3) for p in panels)
    assert tuple(panels[3][1, 2]) == compare.HIGHLIGHT and tuple(panels[3][0, 0]) != compare.HIGHLIGHT
    assert compare.region_bbox(100, 200, 64) == (18, 68, 82, 132)
    assert compare.region_bbox(100, 200, 512) == (0, 0, 100, 200)
    assert compare.region_bbox(100, 200, 64, center=(0, 199)) == (0, 136, 64, 200)


def test_tta_keys_and_cumulative_specs():
    assert tta_key("none") == "none" and tta_key(["identity"]) == "none" and tta_key("d4") == "d4"
    assert tta_key(["identity", "flip_lr"]) == "flip" and tta_key("identity,lr,rot90") == "identity,lr,rot90"
    assert tta_key(list(TTA_MODES["d4"])) == "d4"
    with pytest.raises(ValueError):
        tta_key(["spin"])
    specs = compare.cumulative_tta_specs()
    assert specs[0] == ("baseline (identity)", "none") and specs[1] == ("+lr", "flip")
    assert specs[2] == ("+tb", "identity,lr,tb") and specs[-1] == ("+rot270", "d4")
    assert len(specs) == len(TTA_MODES["d4"])
    df = compare.tta_table([("baseline (identity)", "none", {"miou": 0.5, "fwiou": 0.6, "oa": 0.7}),
                            ("+lr", "flip", {"miou": 0.52, "fwiou": 0.6, "oa": 0.7}), ("+tb", "identity,lr,tb", None)])
    assert list(df.columns) == ["TTA", "views", "spec", "mIoU", "fwIoU", "OA", "Δ mIoU (pp)"]
    assert df["views"].tolist() == [1, 2, 3] and df.loc[1, "Δ mIoU (pp)"] == pytest.approx(2.0)
    assert df.loc[0, "Δ mIoU (pp)"] == 0 and np.isnan(df.loc[2, "mIoU"])


# ---------------------------------------------------------------------------------------------- tiny workspace


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    import torch

    from seghz.models.checkpoint import save_checkpoint
    from seghz.models.registry import build_model

    torch.set_num_threads(1)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("cmp_ckpt") / "tiny.safetensors"
    model = build_model("FPN", "tu-mobilenetv3_small_050", HZ7.num_classes)
    meta = {"arch": "FPN", "encoder": "tu-mobilenetv3_small_050", "num_classes": HZ7.num_classes,
            "scheme": HZ7.to_json(), "normalization": {"mean": [0.5] * 3, "std": [0.5] * 3}, "tile_size": 64,
            "metrics": {"val": {"miou": 0.5, "fwiou": 0.6, "oa": 0.7}}, "synthetic": True}
    save_checkpoint(path, model, meta)
    return path, meta


@pytest.fixture
def tiny_ws(tmp_path, tiny_ckpt):
    from seghz.data.io import write_index_mask, write_rgb
    from seghz.data.scenes import import_scene
    from seghz.demo import generate_scene

    w = Workspace(tmp_path / "ws")
    rgb, lbl = generate_scene(64, 3)
    write_rgb(tmp_path / "s.png", rgb)
    write_index_mask(tmp_path / "s_label.png", lbl, HZ7)
    import_scene(w, tmp_path / "s.png", tmp_path / "s_label.png", scheme="hz7", name="val scene", split="val",
                 synthetic=True)
    path, meta = tiny_ckpt
    dst = w.root / "checkpoints" / "tiny.safetensors"
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(path.read_bytes())
    w.register_checkpoint(dst, {**meta, "scheme": "hz7"}, checkpoint_id="tiny", name="tiny",
                          recipe={"epochs": 5, "noise_mask": "none"})
    w.register_checkpoint(dst, {**meta, "scheme": "hz7"}, checkpoint_id="tiny2", name="tiny two",
                          recipe={"epochs": 20, "noise_mask": "cos"})
    return w


@pytest.fixture
def predictor(tiny_ws):
    from seghz.infer.engine import Predictor

    p, _ = Predictor.from_checkpoint(tiny_ws.checkpoint_path("tiny"), device="cpu")
    return p


def test_tta_report_first_row_is_no_tta_and_last_is_d4(tiny_ws, predictor):
    calls = []
    df = compare.tta_report(tiny_ws, "tiny", "val", predictor=predictor, progress=lambda f, m: calls.append(f))
    assert len(df) == 8 and df["TTA"].tolist()[:3] == ["baseline (identity)", "+lr", "+tb"]
    assert calls and max(calls) <= 1.0
    plain = evaluate_split(tiny_ws, "tiny", "val", "none", predictor=predictor, use_cache=False)
    full = evaluate_split(tiny_ws, "tiny", "val", "d4", predictor=predictor, use_cache=False)
    assert df.loc[0, "mIoU"] == pytest.approx(plain["miou"]) and df.loc[0, "OA"] == pytest.approx(plain["oa"])
    assert df.loc[7, "mIoU"] == pytest.approx(full["miou"]) and df.loc[7, "fwIoU"] == pytest.approx(full["fwiou"])
    assert df.loc[0, "Δ mIoU (pp)"] == 0
    # every row is cached in the workspace's evaluations, keyed by its view list; no recomputation next time
    specs = {e.result["tta"] for e in tiny_ws.list_evaluations("tiny")}
    assert specs >= {s for _, s in compare.cumulative_tta_specs()}
    n = len(tiny_ws.list_evaluations("tiny"))
    again = compare.tta_report(tiny_ws, "tiny", "val", compute=False)
    assert len(tiny_ws.list_evaluations("tiny")) == n
    assert again["mIoU"].tolist() == pytest.approx(df["mIoU"].tolist())
    # the plain d4 lookup (the Evaluate page's) finds the d4 row even after other view lists were cached
    assert cached_evaluation(tiny_ws, "tiny", "val", "d4").result["tta"] == "d4"


def test_evaluation_carries_calibration_counts_of_every_labelled_pixel(tiny_ws, predictor):
    """The calibration counts cover the same pixels as the confusion matrix, their agreeing pixels are its diagonal,
    and the mean confidence is the model's own over those pixels."""
    from seghz.data.io import read_image
    from seghz.metrics import calibration_report

    res = evaluate_split(tiny_ws, "tiny", "val", "none", predictor=predictor, use_cache=False)
    cm = np.asarray(res["confusion"])
    count, correct = np.asarray(res["calibration"]["count"]), np.asarray(res["calibration"]["correct"])
    assert count.sum() == cm.sum() > 0 and correct.sum(1).tolist() == np.diag(cm).tolist()
    (scene,) = tiny_ws.list_scenes("val")
    _, conf = predictor.predict(read_image(tiny_ws.scene_path(scene, "image")), "none")
    lbl = tiny_ws.effective_label(scene.id)
    want = float(conf[lbl != 255].astype(np.float64).mean())
    assert np.asarray(res["calibration"]["conf_sum"]).sum() / count.sum() == pytest.approx(want, rel=1e-5)
    rep = calibration_report(res["calibration"], res["classes"])
    assert rep["coverage"][0]["accuracy"] == pytest.approx(res["oa"])


def test_cached_evaluation_is_invalidated_when_labels_change(tiny_ws, predictor):
    first = evaluate_split(tiny_ws, "tiny", "val", predictor=predictor)
    assert evaluate_split(tiny_ws, "tiny", "val", predictor=predictor) == first  # a cache hit
    assert len(tiny_ws.list_evaluations("tiny")) == 1
    (scene,) = tiny_ws.list_scenes("val")
    lbl = tiny_ws.effective_label(scene.id)
    new = lbl.copy()
    new[:32] = (lbl[:32] + 1) % HZ7.num_classes  # relabel the top half
    tiny_ws.save_label_version(scene.id, new, tiny_ws.latest_label_version(scene.id), "tester", "brush")
    assert cached_evaluation(tiny_ws, "tiny", "val") is None  # stale: the data version moved on
    second = evaluate_split(tiny_ws, "tiny", "val", predictor=predictor)
    assert len(tiny_ws.list_evaluations("tiny")) == 2  # recomputed and stored fresh
    assert second["data_version"] != first["data_version"] == tiny_ws.list_evaluations("tiny")[1].data_version
    assert second["confusion"] != first["confusion"]
    assert np.asarray(second["confusion"]).sum(0).tolist() == np.asarray(first["confusion"]).sum(0).tolist()  # same preds
    assert cached_evaluation(tiny_ws, "tiny", "val").result == second


def test_comparison_entries_keep_evaluated_and_recorded_scores_apart(tiny_ws, predictor):
    entries = compare.comparison_entries(tiny_ws, ["tiny", "tiny2"])
    assert [e["val"] for e in entries] == [None, None] and [e["test"] for e in entries] == [None, None]
    assert [e["val_recorded"]["miou"] for e in entries] == [0.5, 0.5]
    assert [e["test_recorded"] for e in entries] == [None, None]
    assert compare.missing_evaluations(tiny_ws, ["tiny", "tiny2"], "val") == ["tiny", "tiny2"]
    res = evaluate_split(tiny_ws, "tiny", "val", predictor=predictor)
    entries = compare.comparison_entries(tiny_ws, ["tiny", "tiny2"])
    assert entries[0]["val"]["miou"] == res["miou"] and entries[1]["val"] is None
    assert entries[0]["val_recorded"]["miou"] == 0.5  # still there, apart from the evaluation
    assert compare.missing_evaluations(tiny_ws, ["tiny", "tiny2"], "val") == ["tiny2"]
    df = compare.comparison_table(entries)
    assert df["note"].tolist() == ["baseline", "epochs 5→20; noise_mask none→cos"]
    assert df.loc[0, "val mIoU (this workspace)"] == pytest.approx(res["miou"])
    assert np.isnan(df.loc[1, "val mIoU (this workspace)"])  # not evaluated here: empty, not the recorded 0.5
    assert df["val mIoU (recorded at training, its own data)"].tolist() == [0.5, 0.5]
    assert "test mIoU (recorded at training, its own data)" not in df.columns
    assert df["checkpoint"].tolist() == ["tiny", "tiny two (tiny2)"]


def test_common_scheme_crosswalks_the_finer_prediction():
    from seghz.classes import index_crosswalk

    a = np.array([[0, 5], [13, 2]], np.uint8)  # hz14 indices
    b = np.array([[1, 2], [3, 4]], np.uint8)  # hz7 indices
    pa, pb, sch = compare.common_scheme(a, "hz14", b, "hz7")
    assert sch == "hz7" and pa.tolist() == index_crosswalk("hz14", "hz7")[a].tolist() and pb is b
    pb2, pa2, sch2 = compare.common_scheme(b, "hz7", a, "hz14")
    assert sch2 == "hz7" and pa2.tolist() == pa.tolist() and pb2 is b
    same = compare.common_scheme(b, "hz7", b, "hz7")
    assert same[2] == "hz7" and same[0] is b


def test_miou_difference_table_says_whether_the_split_can_tell():
    """Per other checkpoint: the paired-bootstrap mIoU difference, and a verdict that follows the interval."""
    from seghz.metrics import scores

    rng = np.random.default_rng(0)
    perfect = {f"s{k}": np.diag(rng.integers(100, 200, size=3)).tolist() for k in range(8)}

    def spoil(cms, share, scenes):
        out = {}
        for k, cm in cms.items():
            cm = np.array(cm)
            if k in scenes:
                moved = int(cm[0, 0] * share)
                cm[0, 0] -= moved
                cm[0, 1] += moved
            out[k] = cm.tolist()
        return out

    every = spoil(perfect, 0.5, set(perfect))
    mixed_a = spoil(perfect, 0.5, {"s0", "s2", "s4", "s6"})
    mixed_b = spoil(perfect, 0.5, {"s1", "s3", "s5", "s7"})
    results = {"base": {"per_scene": every}, "better": {"per_scene": perfect}, "same": {"per_scene": every}}
    t = compare.miou_difference_table(results, rounds=500)
    assert list(t.columns) == compare.MIOU_DIFF_COLUMNS and t["checkpoint"].tolist() == ["better", "same"]
    better, same = t.iloc[0], t.iloc[1]
    assert better["verdict"] == "higher" and better["low (pp)"] > 0 and better["higher in"] == 1.0
    assert better["Δ mIoU (pp)"] == pytest.approx(100 * (1 - scores(np.sum(list(every.values()), 0))["miou"]))
    assert same["verdict"] == "cannot tell" and same["Δ mIoU (pp)"] == 0 and same["scenes"] == 8
    t = compare.miou_difference_table({"base": {"per_scene": perfect}, "worse": {"per_scene": every}}, rounds=500)
    assert t["verdict"].tolist() == ["lower"] and t["high (pp)"].iloc[0] < 0
    t = compare.miou_difference_table({"a": {"per_scene": mixed_a}, "b": {"per_scene": mixed_b}}, rounds=500)
    assert t["verdict"].tolist() == ["cannot tell"] and t["low (pp)"].iloc[0] < 0 < t["high (pp)"].iloc[0]
    # why there is no interval
    four = {k: np.eye(4, dtype=int).tolist() for k in perfect}
    t = compare.miou_difference_table({"a": {"per_scene": perfect}, "old": {}, "4cls": {"per_scene": four},
                                       "one": {"per_scene": {"s0": perfect["s0"]}}})
    assert t["verdict"].tolist() == ["no per-scene counts (re-evaluate)", "other class count", "fewer than 2 common scenes"]
    assert t["Δ mIoU (pp)"].isna().all()
    assert compare.miou_difference_table({"only": {"per_scene": perfect}}).empty


def test_class_iou_deltas_with_per_class_intervals():
    """B moves 10 % of y's pixels to x in every scene (a real change for both classes); C moves 80 % of y's in one
    scene of 12 (as large, but one scene's doing): only B's changes are marked beyond the noise."""
    from seghz.metrics import scores

    def res(shift: float, scenes_hit: set[int]) -> dict:
        per_scene = {}
        for i in range(12):
            cm = np.array([[1000 + 10 * i, 30], [20, 900 - 5 * i]], np.int64)
            if i in scenes_hit:
                k = int(cm[1, 1] * shift)
                cm[1, 1] -= k
                cm[1, 0] += k
            per_scene[f"s{i}"] = cm.tolist()
        r = scores(np.sum([np.array(m) for m in per_scene.values()], 0), ["x", "y"])
        return {**r, "per_scene": per_scene}

    results = {"A": res(0, set()), "B": res(0.10, set(range(12))), "C": res(0.80, {0})}
    df = compare.class_iou_deltas(results, intervals=True)
    assert list(df.columns) == ["class", "A IoU", "Δ B (pp)", "B: 95 % (pp)", "Δ C (pp)", "C: 95 % (pp)"]
    b, c = dict(zip(df["class"], df["B: 95 % (pp)"])), dict(zip(df["class"], df["C: 95 % (pp)"]))
    assert b["x"].endswith(" *") and b["y"].endswith(" *")
    lo, hi = (float(v.replace("−", "-")) for v in b["y"].rstrip(" *").strip("[]").split(","))
    assert lo - 0.05 <= df.loc[1, "Δ B (pp)"] <= hi + 0.05 and hi < 0  # the text is rounded to 0.1 pp
    assert df.loc[1, "Δ C (pp)"] < -2 and not c["y"].endswith("*")  # one scene: the interval reaches 0
    # both tables from one bootstrap per pair (the page draws them once): the same tables as drawing separately
    from seghz import metrics

    calls = []
    real = metrics.paired_scene_bootstrap

    def counted(*a, **k):
        calls.append(1)
        return real(*a, **k)

    import unittest.mock

    with unittest.mock.patch.object(metrics, "paired_scene_bootstrap", counted):
        pairs = compare.paired_intervals(results)
        shared = (compare.class_iou_deltas(results, intervals=True, pairs=pairs),
                  compare.miou_difference_table(results, pairs=pairs))
    assert len(calls) == 2  # B and C against A, once each
    pd.testing.assert_frame_equal(shared[0], df)
    pd.testing.assert_frame_equal(shared[1], compare.miou_difference_table(results))
    # no per-scene counts, or another class list: no interval, no crash
    results["C"] = {k: v for k, v in results["C"].items() if k != "per_scene"}
    results["B"] = {**results["B"], "classes": ["y", "x"]}
    df = compare.class_iou_deltas(results, intervals=True)
    assert set(df["B: 95 % (pp)"]) == {"–"} and set(df["C: 95 % (pp)"]) == {"–"}
    compare.style_deltas(df).to_html()  # the text columns render next to the coloured deltas


def test_comparison_tables_show_percent_points_and_dashes():
    import pandas as pd

    from seghz import compare

    deltas = pd.DataFrame({"class": ["Water", "Forest"], "a IoU": [0.9913, np.nan], "Δ b (pp)": [-1.1, np.nan]})
    html = compare.style_deltas(deltas).to_html()
    assert "99.1 %" in html and "0.991" not in html and "−1.1" in html and "–" in html
    sure = pd.DataFrame([{"checkpoint": "b", "Δ mIoU (pp)": np.nan, "low (pp)": np.nan, "high (pp)": np.nan,
                          "higher in": np.nan, "scenes": 1, "verdict": "fewer than 2 common scenes"},
                         {"checkpoint": "c", "Δ mIoU (pp)": 1.234, "low (pp)": -0.5, "high (pp)": 2.9,
                          "higher in": 0.91, "scenes": 5, "verdict": "cannot tell"}])
    html = compare.style_miou_difference(sure).to_html()
    assert "None" not in html and "nan" not in html and "–" in html
    assert "+1.23" in html and "−0.50" in html and "91%" in html


def test_miou_difference_without_an_interval_still_has_the_point_difference_and_no_none():
    """One common scene: no bootstrap interval, but both mIoUs are known, so Δ mIoU is their difference; the interval
    columns are NaN (float, never None) and the styled table shows "–" there."""
    from seghz import compare

    one = {"s0": np.diag([10, 20, 30]).tolist()}
    results = {"a": {"miou": 0.61, "per_scene": one}, "b": {"miou": 0.6435, "per_scene": one},
               "c": {"per_scene": one}}  # c: no mIoU recorded, nothing to subtract
    t = compare.miou_difference_table(results)
    assert t["verdict"].tolist() == ["fewer than 2 common scenes"] * 2
    assert t["Δ mIoU (pp)"].iloc[0] == pytest.approx(3.35) and np.isnan(t["Δ mIoU (pp)"].iloc[1])
    for c in ("Δ mIoU (pp)", "low (pp)", "high (pp)", "higher in"):
        assert t[c].dtype == np.float64
    assert t[["low (pp)", "high (pp)", "higher in"]].isna().all().all()
    html = compare.style_miou_difference(t).to_html()
    assert "+3.35" in html and "None" not in html and "nan" not in html and "–" in html


def test_tta_spec_views_lists_the_views_of_a_mode():
    from seghz import compare
    from seghz.infer.engine import TTA_MODES

    assert compare.tta_spec_views("none") == "identity" and compare.tta_spec_views("flip") == "identity,lr"
    assert compare.tta_spec_views("identity,lr,tb") == "identity,lr,tb"
    assert compare.tta_spec_views("d4") == ",".join(TTA_MODES["d4"])
    # every row of the report names its views, the cache key ("flip") aside
    specs = [s for _label, s in compare.cumulative_tta_specs()]
    assert [len(compare.tta_spec_views(s).split(",")) for s in specs] == list(range(1, len(specs) + 1))
