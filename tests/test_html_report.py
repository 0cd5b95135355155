"""``python -m seghz report``: the self-contained HTML report (hand-built confusion cells, an in-process CLI run)."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from seghz.classes import get_scheme
from seghz.cli import main
from seghz.data.io import write_index_mask, write_rgb
from seghz.html_report import Example, render, top_cells

HZ7 = get_scheme("hz7")


def test_top_cells_are_the_largest_off_diagonal_cells():
    cm = np.array([[50, 3, 0], [7, 40, 1], [0, 0, 9]])
    assert top_cells(cm, 2) == [(1, 0, 7), (0, 1, 3)]
    assert top_cells(cm, 10) == [(1, 0, 7), (0, 1, 3), (1, 2, 1)]  # empty cells are never "confusions"
    assert top_cells(np.eye(3, dtype=int) * 5, 3) == []


def test_render_is_self_contained_with_every_section():
    from seghz.metrics import scores

    cm = np.zeros((7, 7), np.int64)
    cm[0, 0], cm[2, 2], cm[2, 5], cm[5, 5] = 100, 80, 30, 40
    res = scores(cm, list(HZ7.names))
    ex = Example("t.png", "Green_land", "Buildings", 30, (0, 0, 8, 8), np.zeros((8, 36, 3), np.uint8))
    doc = render(res, [ex], title="T <&>", subtitle="sub", colors=HZ7.hex_colors())
    assert doc.startswith("<!doctype html>") and "T &lt;&amp;&gt;" in doc
    for section in ("Confusion matrix", "Per class", "Class frequencies", "Top confusions"):
        assert f"<h2>{section}</h2>" in doc
    assert doc.count("<img alt='example' src='data:image/png;base64,") == 1 and "Green_land → Buildings" in doc
    assert len(re.findall(r'class="plotly-graph-div"', doc)) == 3
    assert not re.search(r"<script[^>]+src=", doc), "no external scripts: the file must open offline"
    assert "Buildings" in doc.split("Class frequencies")[1]  # the bias line names the over-predicted class
    assert "<h2>Calibration</h2>" not in doc  # no counts, no section


def test_render_adds_a_calibration_section_from_the_counts():
    from seghz.metrics import calibration_counts, calibration_report, scores

    pred = np.array([0, 0, 2, 2, 2])
    gt = np.array([0, 2, 2, 2, 5])
    conf = np.array([0.95, 0.95, 0.6, 0.92, 0.3])
    res = scores(np.bincount(gt * 7 + pred, minlength=49).reshape(7, 7), list(HZ7.names))
    res["calibration"] = calibration_counts(pred, conf, gt, 7)
    doc = render(res, [], title="T", colors=HZ7.hex_colors())
    want = calibration_report(res["calibration"], list(HZ7.names))["ece"]
    section = doc.split("<h2>Calibration</h2>")[1]
    assert f"<b>{100 * want:.2f} pp</b>" in section
    assert len(re.findall(r'class="plotly-graph-div"', doc)) == 4  # + the reliability diagram
    assert "Water" in section and "Green_land" in section and "Forest" not in section  # predicted classes only


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    from seghz.models.checkpoint import save_checkpoint
    from seghz.models.registry import build_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ck") / "tiny.safetensors"
    save_checkpoint(path, build_model("FPN", "tu-mobilenetv3_small_050", HZ7.num_classes),
                    {"arch": "FPN", "encoder": "tu-mobilenetv3_small_050", "num_classes": HZ7.num_classes,
                     "scheme": HZ7.to_json(), "normalization": {"mean": [0.5] * 3, "std": [0.5] * 3}, "tile_size": 64})
    return path


def test_report_cli_writes_an_offline_html_report(tiny_ckpt, tmp_path, capsys):
    rng = np.random.default_rng(0)
    for i in range(2):
        write_rgb(tmp_path / "im" / f"r{i}.png", rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
        lbl = np.zeros((48, 64), np.uint8)
        lbl[:, 32:] = 5
        write_index_mask(tmp_path / "lb" / f"r{i}.png", HZ7.index_to_ids(lbl))
    torch.set_num_threads(1)
    out = tmp_path / "out" / "report.html"
    rc = main(["report", "--checkpoint", str(tiny_ckpt), "--images", str(tmp_path / "im"), "--labels",
               str(tmp_path / "lb"), "--scheme", "hz7", "--html", str(out), "--device", "cpu", "--examples", "1"])
    assert rc == 0 and out.is_file()
    doc = out.read_text()
    assert "2 image(s)" in doc and "<h2>Top confusions</h2>" in doc
    assert "<h2>Calibration</h2>" in doc  # the CLI's evaluation keeps the counts
    assert 1 <= doc.count("<img alt='example' src='data:image/png;base64,") <= 3  # one example per top confusion (an untrained model confuses)
    assert not re.search(r"<script[^>]+src=", doc)
    assert "wrote" in capsys.readouterr().err
    assert not list(out.parent.glob(".*"))  # atomic write: no temp file left
