"""AppTest tests of the Evaluate page's "Compare checkpoints" section and TTA report, and of the Train page's
Retry / Clone-into-the-form buttons (same prepared workspace as tests/test_pages.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest
from test_pages import HZ7, REPO, assert_ok, texts, tiny_checkpoint, ws  # noqa: F401  (fixtures)

TIMEOUT = 90  # the CPU is shared with long training runs


def app(script: str) -> AppTest:
    return AppTest.from_file(str(REPO / script), default_timeout=TIMEOUT)


def _register(ws, cid: str, seed: int, recipe: dict, meta: dict) -> str:  # noqa: F811
    """Register a tiny hz7 checkpoint with other random weights (``seed``) and a recipe."""
    import torch

    from seghz.models.checkpoint import save_checkpoint
    from seghz.models.registry import build_model

    torch.manual_seed(seed)
    model = build_model("FPN", "tu-mobilenetv3_small_050", HZ7.num_classes)
    path = ws.root / "checkpoints" / f"{cid}.safetensors"
    save_checkpoint(path, model, meta)
    return ws.register_checkpoint(path, {**meta, "scheme": "hz7"}, checkpoint_id=cid, name=cid, recipe=recipe)


FRAME_COLUMNS = {  # AppTest gives dataframes without selection no key: find them by a column of theirs
    "eval_cmp_table": "note", "eval_cmp_deltas": "class", "eval_cmp_pairs": "share of changed", "eval_tta_table": "TTA",
    "eval_cmp_sure": "verdict",
}


def _elements(at: AppTest, key: str) -> list:
    col = FRAME_COLUMNS[key]
    out = []
    for d in at.dataframe:
        v = d.value
        frame = getattr(v, "data", v)
        if col in frame.columns and (key != "eval_cmp_deltas" or any(str(c).endswith(" IoU") for c in frame.columns)):
            out.append(d)
    return out


def _frames(at: AppTest, key: str) -> list:
    return [getattr(d.value, "data", d.value) for d in _elements(at, key)]


def _element(at: AppTest, key: str):
    (el,) = _elements(at, key)
    return el


def _frame(at: AppTest, key: str):
    frames = _frames(at, key)
    assert len(frames) == 1, (key, len(frames), [e.value for e in at.error])
    return frames[0]


def test_evaluate_compare_checkpoints_section(ws, tiny_checkpoint, monkeypatch):  # noqa: F811
    from seghz.jobs import runner
    from seghz.jobs.worker import run_job

    monkeypatch.setattr(runner, "start_worker", lambda w, job_id: None)  # no worker process
    _path, meta = tiny_checkpoint
    _register(ws, "cmp-a", 1, {"epochs": 5, "noise_mask": "none"}, meta)
    _register(ws, "cmp-b", 2, {"epochs": 20, "noise_mask": "cos"}, meta)
    stale = app("pages/2_Evaluate.py").run()  # another tab, drawn before the jobs exist
    stale.multiselect(key="eval_cmp_sel").set_value(["cmp-a", "cmp-b"]).run()
    at = app("pages/2_Evaluate.py").run()
    assert_ok(at)
    assert "Compare checkpoints" in texts(at)  # rendered although nothing is evaluated yet (the page stopped early)
    at.multiselect(key="eval_cmp_sel").set_value(["cmp-a", "cmp-b"]).run()
    assert_ok(at)
    table = _frame(at, "eval_cmp_table")
    here = [f"{s} {m} (this workspace)" for s in ("val", "test") for m in ("mIoU", "fwIoU", "Acc")]
    then = [f"val {m} (recorded at training, its own data)" for m in ("mIoU", "fwIoU", "Acc")]
    assert list(table.columns) == ["checkpoint", *here, *then, "note"]
    assert table["checkpoint"].tolist() == ["cmp-a", "cmp-b"]  # name = id: shown once
    assert table["note"].tolist() == ["baseline", "epochs 5→20; noise_mask none→cos"]
    # not evaluated here yet: the workspace columns are empty, the scores recorded at training (the metadata) apart
    assert table[here].isna().all().all()
    assert table[then[0]].tolist() == [0.5, 0.5]
    assert _element(at, "eval_cmp_table").proto.placeholder == "–"  # missing scores show "–", not "None"
    assert "do not rank checkpoints across the two kinds" in texts(at)
    assert not _frames(at, "eval_cmp_deltas")

    assert at.button(key="eval_cmp_run").label == "Evaluate 2 missing on val"
    at.button(key="eval_cmp_run").click().run()  # one background evaluate job per missing checkpoint on val
    assert_ok(at)
    jobs = {j.config["checkpoint_id"]: j for j in ws.list_jobs()}
    assert set(jobs) == {"cmp-a", "cmp-b"}
    assert all(j.kind == "evaluate" and j.status == "queued" and j.config == {"checkpoint_id": c, "split": "val",
               "tta": "none", "force": False} for c, j in jobs.items())
    assert all(ws.list_evaluations(c) == [] for c in jobs)  # nothing is scored in the script run
    assert any("2 background evaluation job(s) submitted on val" in s.value for s in at.success)
    bars = [p.proto.text for p in at.get("progress")]
    assert all(any(f"background evaluation of {c} on val `{j.id}` queued" in t for t in bars) for c, j in jobs.items())
    assert all(at.button(key=f"eval_cmp_cancel_{j.id}") for j in jobs.values())
    assert at.button(key="eval_cmp_run").disabled  # while they are queued or running
    # the stale tab's button was still enabled: its click submits nothing and says which jobs run
    stale.button(key="eval_cmp_run").click().run()
    assert_ok(stale)
    assert len(ws.list_jobs()) == 2
    assert any("Already running in the background: `cmp-a`" in i.value for i in stale.info)
    for j in reversed(ws.list_jobs()):  # the jobs run in line (here, in this process, as their workers would)
        assert run_job(ws, j.id) == 0
    at.run()
    assert_ok(at)
    assert not at.get("progress") and not [b for b in at.button if b.key == "eval_cmp_run"]  # none is missing now
    ev = {c: ws.list_evaluations(c) for c in ("cmp-a", "cmp-b")}
    assert all(len(v) == 1 and v[0].split == "val" and v[0].result["tta"] == "none" for v in ev.values())
    table = _frame(at, "eval_cmp_table")
    assert table["val mIoU (this workspace)"].tolist() == pytest.approx([ev["cmp-a"][0].result["miou"],
                                                                         ev["cmp-b"][0].result["miou"]])
    assert table[then[0]].tolist() == [0.5, 0.5]  # still apart
    deltas = _frame(at, "eval_cmp_deltas")
    assert list(deltas.columns) == ["class", "cmp-a IoU", "Δ cmp-b (pp)", "cmp-b: 95 % (pp)"]
    assert len(deltas) == HZ7.num_classes
    assert set(deltas["cmp-b: 95 % (pp)"]) == {"–"}  # one val scene: no per-class interval
    sure = _frame(at, "eval_cmp_sure")  # the mIoU difference with its scene-bootstrap interval
    n_val = len([s for s in ws.list_scenes("val") if s.label_path])
    assert n_val == 1  # the prepared workspace's one val scene: the table says why there is no interval
    assert sure["checkpoint"].tolist() == ["cmp-b"] and sure["scenes"].tolist() == [1]
    assert sure["verdict"].tolist() == ["fewer than 2 common scenes"]
    # no interval, but the point difference is known: the two mIoUs' difference (the interval columns show "–")
    assert sure["Δ mIoU (pp)"].tolist() == pytest.approx([100 * (ev["cmp-b"][0].result["miou"]
                                                                 - ev["cmp-a"][0].result["miou"])])
    assert sure[["low (pp)", "high (pp)", "higher in"]].isna().all().all()

    # changed pixels between the two on the val scene
    at.selectbox(key="eval_cmp_a").set_value("cmp-a")
    at.selectbox(key="eval_cmp_b").set_value("cmp-b")
    at.selectbox(key="eval_cmp_cap").set_value(256).run()
    assert "Press **Predict and compare**" in texts(at)
    at.button(key="eval_cmp_predict").click().run()
    assert_ok(at)
    got = at.session_state["eval_cmp_changed"]
    assert got["total"] == 128 * 128 and got["bbox"] == (0, 0, 128, 128)
    assert 0 < got["changed"] <= got["total"], "two differently initialised models should disagree somewhere"
    assert {m.label: m.value for m in at.metric}["Changed pixels"] == f"{100 * got['fraction']:.1f} %"
    imgs = [i for i in at.get("image") if "changed pixels in magenta" in i.proto.imgs[0].caption]
    assert len(imgs) == 1
    pairs = _frame(at, "eval_cmp_pairs")
    assert list(pairs.columns) == ["A", "B", "pixels", "share of changed"]
    assert 1 <= len(pairs) <= 10 and pairs["pixels"].is_monotonic_decreasing
    assert int(pairs["pixels"].sum()) <= got["changed"]


def test_evaluate_tta_report_expander(ws, monkeypatch):  # noqa: F811
    from seghz.jobs import runner
    from seghz.jobs.worker import run_job

    monkeypatch.setattr(runner, "start_worker", lambda w, job_id: None)  # no worker process
    stale = app("pages/2_Evaluate.py").run()  # another tab, drawn before the job exists
    at = app("pages/2_Evaluate.py").run()
    assert_ok(at)
    assert not _frames(at, "eval_tta_table")
    at.button(key="eval_tta_run").click().run()  # a background "tta_report" job, nothing scored in the script run
    assert_ok(at)
    (job,) = ws.list_jobs()
    assert job.kind == "tta_report" and job.status == "queued" and job.config == {"checkpoint_id": "tiny-test",
                                                                                 "split": "val"}
    assert ws.list_evaluations("tiny-test") == [] and not _frames(at, "eval_tta_table")
    assert any(f"TTA report job `{job.id}` submitted" in s.value for s in at.success)
    assert any(f"background TTA report `{job.id}` queued" in p.proto.text for p in at.get("progress"))
    assert at.button(key="eval_tta_run").disabled and at.button(key=f"eval_tta_cancel_{job.id}")
    stale.button(key="eval_tta_run").click().run()  # its button was still enabled: no second job
    assert_ok(stale)
    assert len(ws.list_jobs()) == 1
    assert any(f"already running in the background (job `{job.id}`)" in i.value for i in stale.info)
    assert run_job(ws, job.id) == 0  # here, in this process, as its worker would
    assert ws.get_job(job.id).status == "done"
    at.run()
    assert_ok(at)
    assert not at.get("progress") and at.button(key="eval_tta_run").disabled  # every row is cached
    table = _frame(at, "eval_tta_table")
    assert table["TTA"].tolist() == ["baseline (identity)", "+lr", "+tb", "+diag", "+diag2", "+rot90", "+rot180", "+rot270"]
    assert table["views"].tolist() == list(range(1, 9)) and table.loc[0, "Δ mIoU (pp)"] == 0
    evs = {e.result["tta"]: e.result for e in ws.list_evaluations("tiny-test")}
    assert len(evs) == 8 and table.loc[0, "mIoU"] == pytest.approx(evs["none"]["miou"])
    assert table.loc[7, "mIoU"] == pytest.approx(evs["d4"]["miou"])
    # the d4 row is the page's own d4 evaluation: choosing TTA d4 shows it at once, without recomputing
    at2 = app("pages/2_Evaluate.py").run()
    at2.radio(key="eval_tta").set_value("d4").run()
    assert_ok(at2)
    assert {m.label: m.value for m in at2.metric}["mIoU"] == f"{100 * evs['d4']['miou']:.1f} %"
    assert len(ws.list_evaluations("tiny-test")) == 8
    assert np.isfinite(_frame(at2, "eval_tta_table")["mIoU"]).all()  # cached rows shown in a new session


# ------------------------------------------------------------------------------------------------ train: retry / clone

JOB_CONFIG = {"epochs": 7, "batch_size": 4, "crop_size": 96, "lr": 0.0005, "steps_per_epoch": 3, "scheme": "hz7",
              "class_weights": "inverse", "dice": False, "label_smoothing": 0.05, "noise_mask": "cos", "ohem": False,
              "consistency": True, "sampler": "class_aware", "patience": 2, "auto_promote": True, "bootstrap": "soft",
              "bootstrap_beta": 0.6,
              "parent_checkpoint_id": "tiny-test", "name": "first try"}


def _finished_job(ws, status: str, config: dict = JOB_CONFIG) -> str:  # noqa: F811
    jid = ws.create_job("train", config)
    ws.update_job(jid, status=status, message=f"it {status}", finished_at="2026-01-01T00:00:00+00:00")
    return jid


@pytest.mark.parametrize("status", ["failed", "done", "cancelled", "died"])
def test_train_retry_submits_the_same_config(ws, monkeypatch, status):  # noqa: F811
    from seghz.jobs import runner

    monkeypatch.setattr(runner, "start_worker", lambda w, job_id: None)  # no worker process
    jid = _finished_job(ws, status)
    at = app("pages/4_Train.py").run()
    assert_ok(at)
    assert at.selectbox(key="train_job_sel").value == jid
    at.button(key=f"train_retry_{jid}").click().run()
    assert_ok(at)
    jobs = ws.list_jobs()
    assert len(jobs) == 2 and jobs[1].id == jid
    new = jobs[0]
    assert new.kind == "train" and new.config == ws.get_job(jid).config == JOB_CONFIG and new.status == "queued"
    assert at.selectbox(key="train_job_sel").value == new.id  # the retried job is shown
    assert not [b for b in at.button if b.key == f"train_retry_{new.id}"]  # a queued job offers Cancel, not Retry


def test_train_clone_fills_the_form(ws, monkeypatch):  # noqa: F811
    from seghz.jobs import runner

    monkeypatch.setattr(runner, "start_worker", lambda w, job_id: None)
    jid = _finished_job(ws, "failed")
    at = app("pages/4_Train.py").run()
    at.button(key=f"train_clone_{jid}").click().run()
    assert_ok(at)
    assert f"The form is filled from job `{jid}`" in texts(at)
    assert at.radio(key="train_start").value == "finetune"
    values = {k: at.number_input(key=k).value for k in ("train_epochs_finetune", "train_batch", "train_crop",
                                                        "train_steps", "train_patience")}
    assert values == {"train_epochs_finetune": 7, "train_batch": 4, "train_crop": 96, "train_steps": 3, "train_patience": 2}
    assert at.number_input(key="train_lr_finetune").value == pytest.approx(0.0005)
    assert at.number_input(key="train_smooth").value == pytest.approx(0.05)
    assert (at.selectbox(key="train_cw").value, at.selectbox(key="train_noise").value,
            at.selectbox(key="train_sampler").value) == ("inverse", "cos", "class_aware")
    assert (at.checkbox(key="train_dice").value, at.checkbox(key="train_ohem").value,
            at.checkbox(key="train_consistency").value, at.checkbox(key="train_auto_promote").value) == (False, False, True, True)
    assert at.text_input(key="train_name").value == "first try"
    assert not at.warning  # no "default value but also set via Session State" warnings
    # edit one value and launch: the new job has the cloned config with that change
    at.text_input(key="train_name").input("second try")
    at.button(key="train_submit").click().run()
    assert_ok(at)
    assert not [e.value for e in at.error if "Cannot launch" in e.value]
    new = ws.list_jobs()[0]
    # the form also sends the label-rewriting and noise-robust loss options (the cloned job predates them: defaults)
    assert new.id != jid and new.config == {**JOB_CONFIG, "name": "second try", "clean": "none", "refine": "none",
                                            "robust": "none", "noise_rate": 0.3, "gce_q": 0.7, "gce_warmup": 0.0,
                                            "ema": 0.0, "noise_denominator": "all", "noise_from_review": False,
                                            "noise_threshold": pytest.approx(-math.log(0.01)), "coteach": 0.0,
                                            "coteach_select": "class"}


def test_train_clone_keeps_the_noise_robust_loss(ws, monkeypatch):  # noqa: F811
    from seghz.jobs import runner

    monkeypatch.setattr(runner, "start_worker", lambda w, job_id: None)
    cfg = {**JOB_CONFIG, "bootstrap": "none", "noise_mask": "none", "robust": "gce", "gce_q": 0.5, "noise_rate": 0.2,
           "gce_warmup": 0.3, "ema": 0.05, "coteach": 0.0, "coteach_select": "pixel"}
    jid = _finished_job(ws, "failed", cfg)
    at = app("pages/4_Train.py").run()
    at.button(key=f"train_clone_{jid}").click().run()
    assert_ok(at)
    assert at.selectbox(key="train_robust").value == "gce"
    assert at.number_input(key="train_gce_q").value == pytest.approx(0.5)
    assert at.number_input(key="train_gce_warmup").value == pytest.approx(0.3)
    assert not at.number_input(key="train_gce_warmup").disabled
    assert at.number_input(key="train_noise_rate").value == pytest.approx(0.2)
    assert at.number_input(key="train_ema").value == pytest.approx(0.05)
    assert at.selectbox(key="train_coteach_select").value == "pixel"  # kept although co-teaching is off
    at.button(key="train_submit").click().run()
    assert_ok(at)
    assert not [e.value for e in at.error if "Cannot launch" in e.value]
    new = ws.list_jobs()[0]
    assert new.id != jid and new.config == {**cfg, "clean": "none", "refine": "none", "noise_denominator": "all",
                                            "noise_from_review": False, "noise_threshold": pytest.approx(-math.log(0.01))}


def test_train_clone_of_a_scratch_job(ws, monkeypatch):  # noqa: F811
    cfg = {"epochs": 3, "batch_size": 2, "crop_size": 64, "lr": 0.002, "steps_per_epoch": None, "scheme": "hz7",
           "class_weights": "enet", "dice": True, "label_smoothing": 0.0, "noise_mask": "none", "ohem": False,
           "consistency": False, "sampler": "random", "patience": None, "auto_promote": False, "arch": "Unet",
           "encoder": "tu-efficientnet_lite0", "encoder_weights": None}
    jid = _finished_job(ws, "cancelled", cfg)
    at = app("pages/4_Train.py").run()
    at.button(key=f"train_clone_{jid}").click().run()
    assert_ok(at)
    assert at.radio(key="train_start").value == "scratch"
    assert at.selectbox(key="train_weights").value == "none" and at.selectbox(key="train_scheme").value == "hz7"
    assert at.number_input(key="train_epochs_scratch").value == 3 and at.number_input(key="train_steps").value == 0
    assert at.number_input(key="train_patience").value == 0 and at.text_input(key="train_name").value == ""


def test_train_recipe_presets_fill_the_form(ws, monkeypatch):  # noqa: F811
    from seghz.jobs import runner
    from seghz.train.form import PRESETS, preset_state

    monkeypatch.setattr(runner, "start_worker", lambda w, job_id: None)  # no worker process

    at = app("pages/4_Train.py").run()
    assert_ok(at)
    widget = {"train_cw": at.selectbox, "train_sampler": at.selectbox, "train_noise": at.selectbox, "train_boot": at.selectbox,
              "train_robust": at.selectbox, "train_refine": at.selectbox, "train_clean": at.selectbox,
              "train_noise_den": at.selectbox, "train_noise_from": at.selectbox, "train_coteach_select": at.selectbox,
              "train_dice": at.checkbox, "train_ohem": at.checkbox, "train_consistency": at.checkbox}

    def form_values():
        return {k: (widget[k](key=k).value if k in widget else pytest.approx(at.number_input(key=k).value))
                for k in preset_state("study")}

    assert form_values() == preset_state("study")  # the study preset is the form's defaults
    at.button(key="train_preset_noisy").click().run()
    assert_ok(at)
    assert form_values() == preset_state("noisy")
    assert PRESETS["noisy"][0] in texts(at) and "GCE" not in PRESETS["noisy"][0] and not at.warning
    at.text_input(key="train_name").input("robust")
    at.number_input(key="train_crop").set_value(64)  # the test workspace's scenes are 128 px
    at.button(key="train_submit").click().run()
    assert_ok(at)
    assert not [e.value for e in at.error if "Cannot launch" in e.value]
    cfg = ws.list_jobs()[0].config
    assert (cfg["refine"], cfg["robust"], cfg["class_weights"], cfg["dice"]) == ("drop", "none", "none", False)
    at.button(key="train_preset_study").click().run()
    assert_ok(at)
    assert form_values() == preset_state("study")
