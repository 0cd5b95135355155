"""A class with no labelled pixel but a few predicted ones is named, and the mIoU over the labelled classes is shown.

The analyst scored 9 test tiles: Forest had support 0 but 19 predicted pixels, so its IoU 0 pulled the mIoU to 74.75
(93.10 with another TTA) and widened the bootstrap interval, with no note. The standard mIoU stays as it is; the
notes name such classes and give ``miou_present`` (over the classes present in the labels) alongside.
"""
from __future__ import annotations

import numpy as np
import pytest

from seghz.evaluate import caveat_lines, miou_present, predicted_only, predicted_only_lines
from seghz.metrics import evaluation_scores, miou_batch, scene_bootstrap, scores

NAMES = ["Farmland", "Built-up", "Forest"]
# rows = labels, columns = predictions; Forest is in no label, 19 px are predicted as Forest
CM = np.array([[90, 10, 0],
               [5, 76, 19],
               [0, 0, 0]])
IOU_A = 90 / (100 + 95 - 90)  # support 100, predicted 90 + 5 = 95: 0.857
IOU_B = 76 / (100 + 86 - 76)  # support 100, predicted 10 + 76 = 86: 0.691


def test_scores_name_predicted_only_classes_and_the_labelled_mean():
    sc = scores(CM, NAMES)
    assert sc["per_class"]["Forest"] == pytest.approx(
        {"iou": 0.0, "acc": None, "precision": 0.0, "f1": None, "support": 0, "predicted": 19})
    assert sc["miou"] == pytest.approx((IOU_A + IOU_B + 0) / 3)  # the standard metric is unchanged: 51.60
    assert sc["miou_present"] == pytest.approx((IOU_A + IOU_B) / 2)  # 77.40
    assert sc["predicted_only"] == ["Forest"]
    assert miou_batch(CM[None], labelled_only=True)[0] == pytest.approx(sc["miou_present"])
    assert miou_batch(CM[None])[0] == pytest.approx(sc["miou"])
    clean = scores(CM[:2, :2], NAMES[:2])
    assert clean["predicted_only"] == [] and clean["miou_present"] == pytest.approx(clean["miou"])


def test_notes_say_so_and_give_both_means_with_an_interval():
    s1 = np.array([[45, 5, 0], [2, 38, 19], [0, 0, 0]])  # the stray Forest pixels are all in scene 1
    s2 = CM - s1
    sc = evaluation_scores(CM, NAMES)
    sc.update(per_scene={"a": s1.tolist(), "b": s2.tolist()}, images=2, label_scheme="x")
    lines = caveat_lines(sc)
    assert "note: Forest: 0 labelled px, 19 predicted: IoU 0 counts in mIoU" in lines
    both = next(line for line in lines if "miou_present" in line)
    assert f"{100 * (IOU_A + IOU_B) / 2:.2f}" in both and f"{100 * sc['miou']:.2f}" in both and "interval" in both
    iv = scene_bootstrap(np.stack([s1, s2]), rounds=200, labelled_only=True)
    assert iv["miou"] == pytest.approx(sc["miou_present"]) and iv["lo"] <= iv["hi"]
    assert scene_bootstrap(np.stack([s1, s2]), rounds=200)["miou"] == pytest.approx(sc["miou"])
    # a class the label scheme cannot express is already noted: not noted twice
    sc["unexpressible"] = ["Forest"]
    assert not any(line.startswith("note: Forest: 0 labelled px") for line in caveat_lines(sc))


def test_results_cached_before_the_fields_existed_get_the_note_too():
    old = scores(CM, NAMES)
    del old["miou_present"], old["predicted_only"]
    assert predicted_only(old) == ["Forest"] and miou_present(old) == pytest.approx((IOU_A + IOU_B) / 2)
    assert predicted_only_lines(old)[0] == "note: Forest: 0 labelled px, 19 predicted: IoU 0 counts in mIoU"
    assert predicted_only_lines(scores(CM[:2, :2], NAMES[:2])) == []
