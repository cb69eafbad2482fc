"""The evaluation protocol (ois_lightning.protocol.evaluate) and `ois eval`."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ois_lightning.cli import main
from ois_lightning.protocol.clicks import Clicker
from ois_lightning.data import LayeredScenes, Sample
from ois_lightning.protocol.report import TABLE_COLUMNS, table_row, write_results
from ois_lightning.protocol.evaluate import ClickBudget, Predictor, evaluate, evaluate_samples, run_object
from ois_lightning.model import ImageEncoding, build_model

from .helpers import TINY, TINY_YAML, tiny_cfg


SCHEMA_SUMMARY = {"NoC85", "NoC90", "NoC95", "NoF85", "NoF90", "NoF95", "1-mIoU", "5-mIoU", "num_objects",
                  "SPC", "encoder_s_per_image", "click_s_per_click"}


def check_results(path: Path, num_objects: int, clicks: int, dataset: str) -> dict:
    """results.json follows the schema of docs/evaluation.md; no temp file left beside it."""
    data = json.loads(path.read_text())
    assert set(data) == {"summary", "per_object", "config", "git_commit", "seed", "dataset", "fingerprint",
                         "threads"}
    assert isinstance(data["fingerprint"], str) and len(data["fingerprint"]) == 64
    assert SCHEMA_SUMMARY <= set(data["summary"])
    assert data["summary"]["num_objects"] == num_objects
    assert len(data["per_object"]["ids"]) == len(set(data["per_object"]["ids"])) == num_objects
    ious = np.array(data["per_object"]["ious"])
    assert ious.shape == (num_objects, clicks) and ((ious >= 0) & (ious <= 1)).all()
    assert data["git_commit"] is None or len(data["git_commit"]) == 40
    assert data["dataset"] == dataset and isinstance(data["seed"], int) and data["threads"] >= 1
    assert data["config"]["model"]["input_size"] == 112
    assert (path.parent / "miou_vs_clicks.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    return data


def test_encoder_runs_once_per_image_and_timing_is_split():
    cfg = tiny_cfg("clicks.max_eval=5")
    torch.manual_seed(0)
    model = build_model(cfg.model)
    calls = []
    encode = model.encode
    model.encode = lambda *a, **k: calls.append(1) or encode(*a, **k)  # count encoder passes
    scenes = LayeredScenes(2, size=112, seed=3, num_objects=(2, 3), min_visible=0.0)
    objects = sum(len(scenes[i].masks) for i in range(2))
    assert objects >= 4  # both images hold at least 2 objects
    result = evaluate(model, scenes, cfg, progress=False)
    assert len(calls) == 2 == result.summary["num_images"]
    assert len(result.ids) == objects and all(len(c) == 5 for c in result.ious)
    s = result.summary
    assert s["encoder_s_per_image"] > 0 and s["click_s_per_click"] > 0
    assert s["SPC"] >= s["click_s_per_click"]  # the whole loop per click includes the decoder part


def test_max_objects_and_too_few_clicks():
    cfg = tiny_cfg("clicks.max_eval=5", "eval.max_objects=3")
    model = build_model(cfg.model)
    result = evaluate(model, LayeredScenes(3, size=112, seed=3, num_objects=(2, 2)), cfg, progress=False)
    assert len(result.ids) == 3
    with pytest.raises(ValueError, match="clicks.max_eval=4"):
        evaluate(model, LayeredScenes(1, size=112), tiny_cfg("clicks.max_eval=4"), progress=False)


class DiskModel(nn.Module):
    """Stand-in for OISModel: logits are a disk of ``radius`` input pixels around the first click, as given to
    forward in input coordinates; records the previous mask it receives."""

    def __init__(self, radius: float) -> None:
        super().__init__()
        self.radius = radius
        self.weight = nn.Parameter(torch.zeros(1))
        self.prev: torch.Tensor | None = None

    def encode(self, image, depth=None, depth_kind="disparity") -> ImageEncoding:
        return ImageEncoding([], None, (image.shape[-2], image.shape[-1]))

    def forward(self, enc, coords, labels, prev_mask=None):
        self.prev = prev_mask
        h, w = enc.size
        ys, xs = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
        cy, cx = coords[0, 0]
        inside = (ys - cy) ** 2 + (xs - cx) ** 2 <= self.radius ** 2
        return (inside.float() * 20 - 10)[None, None]


def test_clicks_map_between_original_and_input_resolution():
    h, w, cy, cx, r = 90, 200, 61, 143, 14  # non-square; the object is a disk at a known place
    yy, xx = np.mgrid[0:h, 0:w]
    gt = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r ** 2).astype(np.int8)
    sample = Sample(image=np.zeros((h, w, 3), np.uint8), masks=gt[None], depth=None, id="disk/0")
    scale = 112 / 200
    predictor = Predictor(DiskModel(radius=r * scale), input_size=112)
    predictor.set_image(sample)
    assert predictor.resized_size == (round(h * scale), 112)
    assert predictor.to_input(h / 2 - 0.5, w / 2 - 0.5) == pytest.approx((50 / 2 - 0.5, 112 / 2 - 0.5), abs=1e-6)

    clicker = Clicker(gt)
    first = clicker.next_click(np.zeros_like(gt, dtype=bool))
    assert (first.y, first.x, first.positive) == (cy, cx, True)  # the object centre, in original pixels
    prob = predictor.predict(clicker.clicks)
    assert prob.shape == (h, w)
    pred = prob > 0.49
    ys, xs = np.nonzero(pred)
    assert abs(ys.mean() - cy) < 0.75 and abs(xs.mean() - cx) < 0.75  # mapped back onto the object
    assert (pred & (gt == 1)).sum() / (pred | (gt == 1)).sum() > 0.9

    predictor.predict(clicker.clicks, pred)  # the previous prediction goes to the input frame
    prev = predictor.model.prev[0, 0].numpy()
    py, px = np.nonzero(prev > 0)
    ey, ex = predictor.to_input(cy, cx)
    assert abs(py.mean() - ey) < 0.75 and abs(px.mean() - ex) < 0.75
    assert prev[50:].sum() == 0  # padding rows stay empty

    run = run_object(predictor, gt, ClickBudget(5))
    assert len(run.curve) == 5 and run.curve[0] > 0.9 and run.seconds > 0
    assert len(run.clicks) == 5 and (run.clicks[0].y, run.clicks[0].x) == (cy, cx)
    assert run.pred.shape == gt.shape and run.curve[-1] == pytest.approx((run.pred & (gt == 1)).sum()
                                                                         / (run.pred | (gt == 1)).sum())
    assert len(run_object(predictor, gt, ClickBudget(20, target_iou=0.9)).curve) == 1  # isegm early stop
    assert len(run_object(predictor, gt, ClickBudget(20, target_iou=0.9, min_clicks=3)).curve) == 3
    assert len(run_object(predictor, gt, ClickBudget(20, target_iou=1.0)).curve) == 20  # never reached


def test_early_stop_keeps_the_metrics_it_determines(tmp_path):
    """An early-stopped curve is the prefix of the full one, so NoC/NoF at thresholds <= target and k-mIoU for
    k <= min clicks equal the full run's; metrics beyond are None (n/a), and SPC counts only the clicks run."""
    cfg = tiny_cfg()
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    samples = [LayeredScenes(3, size=112, seed=5, num_objects=(2, 2))[i] for i in range(3)]
    full = evaluate_samples(Predictor(model, 112, depth_from_sample=True), samples, ClickBudget(20))
    target = max(full.ious[0][:3])  # object 0 stops within 3 clicks
    early = evaluate_samples(Predictor(model, 112, depth_from_sample=True), samples,
                             ClickBudget(20, target_iou=target, min_clicks=1))
    assert early.ids == full.ids and len(early.ious[0]) <= 3
    for short, long in zip(early.ious, full.ious):
        assert short == long[:len(short)] and (len(short) == 20 or short[-1] >= target)
    s, f = early.summary, full.summary
    for t in (85, 90, 95):
        if t / 100 <= target:
            assert (s[f"NoC{t}"], s[f"NoF{t}"]) == (f[f"NoC{t}"], f[f"NoF{t}"])
        elif s[f"NoC{t}"] is None:
            assert s[f"NoF{t}"] is None
    assert s["1-mIoU"] == f["1-mIoU"] and s["5-mIoU"] is None
    assert s["clicks_per_object"] == pytest.approx(np.mean([len(c) for c in early.ious]))
    assert s["clicks_per_object"] < f["clicks_per_object"] == 20
    row = table_row(s).strip("| ").split(" | ")
    assert row[TABLE_COLUMNS.index("5-mIoU")] == "n/a"
    write_results(early, tmp_path, tiny_cfg(f"clicks.target_iou={target}"), "layered")  # plots the common prefix
    assert (tmp_path / "miou_vs_clicks.png").is_file()


def test_depth_from_sample_is_required_when_configured():
    cfg = tiny_cfg()  # tiny.yaml: data.depth.source=gt
    model = build_model(cfg.model)
    sample = LayeredScenes(1, size=112)[0]
    sample.depth = None
    predictor = Predictor(model, 112, depth_from_sample=True)
    with pytest.raises(ValueError, match="layered/0-0: no depth map"):
        predictor.set_image(sample)


def test_table_row_and_atomic_results(tmp_path):
    cfg = tiny_cfg("clicks.max_eval=5")
    model = build_model(cfg.model)
    result = evaluate_samples(Predictor(model, 112, depth_from_sample=True), [LayeredScenes(1, size=112)[0]],
                              ClickBudget(5))
    row = table_row(result.summary)
    cells = row.strip("| ").split(" | ")
    assert len(cells) == len(TABLE_COLUMNS) == 5
    assert cells[0] == f"{result.summary['NoC90']:.2f}" and cells[4] == str(result.summary["NoF95"])
    path = write_results(result, tmp_path / "out", cfg, "layered")
    check_results(path, len(result.ids), 5, "layered")


def test_ois_eval_on_real_grabcut(grabcut_root, tmp_path, capsys):
    out = tmp_path / "gc"
    code = main(["eval", TINY_YAML, *TINY, "model.backbone.random_init=true", "data.test=[grabcut]",
                 f"data.paths.grabcut={grabcut_root}",
                 "data.depth.source=model", "eval.max_objects=2", f"output_dir={out}"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "RANDOMLY INITIALISED" in printed and "| NoC90 | NoC95 | 1-mIoU | 5-mIoU | NoF95 |" in printed
    data = check_results(out / "results.json", 2, 20, "grabcut")
    assert all(i.startswith("grabcut/") for i in data["per_object"]["ids"])


def test_ois_eval_bad_checkpoint_is_one_line_error(tmp_path, capsys):
    bad = tmp_path / "missing.ckpt"
    assert main(["eval", TINY_YAML, *TINY, f"ckpt={bad}", f"output_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"ckpt={bad}" in err and "not found" in err


def test_ois_eval_reports_each_test_dataset_on_its_own(tmp_path, capsys):
    """data.test=[layered, grabcut]: one results.json per dataset (as isegm reports each benchmark), equal to
    evaluating that dataset alone; one printed row per dataset."""
    from .test_data_layouts import grabcut_folder

    gc = grabcut_folder(tmp_path / "GrabCut")
    common = [*TINY, "model.backbone.random_init=true", "data.layered.size=112", "data.layered.test_length=2",
              f"data.paths.grabcut={gc}",
              "data.depth.source=model", "clicks.max_eval=5"]
    assert main(["eval", TINY_YAML, *common, "data.test=[layered,grabcut]", f"output_dir={tmp_path / 'both'}"]) == 0
    printed = capsys.readouterr().out
    assert "| dataset | NoC90 | NoC95 | 1-mIoU | 5-mIoU | NoF95 |" in printed
    assert "\n| layered | " in printed and "\n| grabcut | " in printed
    assert not (tmp_path / "both" / "results.json").exists()
    assert main(["eval", TINY_YAML, *common, "data.test=[grabcut]", f"output_dir={tmp_path / 'alone'}"]) == 0
    both = json.loads((tmp_path / "both" / "grabcut" / "results.json").read_text())
    alone = json.loads((tmp_path / "alone" / "results.json").read_text())
    assert both["dataset"] == alone["dataset"] == "grabcut"
    assert both["per_object"] == alone["per_object"] and len(alone["per_object"]["ids"]) == 2  # a, b (c is empty)
    layered = json.loads((tmp_path / "both" / "layered" / "results.json").read_text())
    assert layered["dataset"] == "layered" and all(i.startswith("layered/") for i in layered["per_object"]["ids"])


def test_ois_eval_logs_an_evaluation_run(tmp_path):
    """W&B (offline here): a run of its own with the numbers and the mIoU plot, leaving the training run's id
    alone; csv: test/<metric> rows in csv_eval/."""
    common = [*TINY, "model.backbone.random_init=true", "data.layered.size=112", "data.layered.test_length=2",
              "clicks.max_eval=5"]
    out = tmp_path / "w"
    assert main(["eval", TINY_YAML, *common, "logger.kind=wandb", f"output_dir={out}"]) == 0
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb")) and not (out / "wandb_run_id").exists()
    assert [p.name for p in runs[0].rglob("*.png") if "miou_vs_clicks" in p.name]  # the plot, as W&B media
    out = tmp_path / "c"
    assert main(["eval", TINY_YAML, *common, "logger.kind=csv", f"output_dir={out}"]) == 0
    header, values = (out / "csv_eval" / "version_0" / "metrics.csv").read_text().splitlines()[:2]
    logged = dict(zip(header.split(","), values.split(",")))
    summary = json.loads((out / "results.json").read_text())["summary"]
    assert float(logged["test/NoC90"]) == pytest.approx(summary["NoC90"])


def test_interrupted_evaluation_resumes_from_its_journal(tmp_path, monkeypatch):
    """Finished images are journaled; after a crash the rerun encodes only the images not in the journal and
    gives the uninterrupted run's curves; other weights or settings start afresh."""
    from ois_lightning.utils.atomic import Journal

    cfg = tiny_cfg("clicks.max_eval=5")
    torch.manual_seed(0)
    model = build_model(cfg.model)
    scenes = LayeredScenes(4, size=112, seed=3, num_objects=(2, 2))
    reference = evaluate(model, scenes, cfg, progress=False)
    encoded = []
    set_image = Predictor.set_image

    def crash_on_third(self, sample):
        encoded.append(sample.id)
        if len(encoded) == 3 and crash:
            raise KeyboardInterrupt("simulated interruption")
        set_image(self, sample)

    monkeypatch.setattr(Predictor, "set_image", crash_on_third)
    journal = tmp_path / "eval_journal.jsonl"
    crash = True
    with pytest.raises(KeyboardInterrupt):
        evaluate(model, scenes, cfg, progress=False, journal=journal)
    assert len(journal.read_text().splitlines()) == 1 + 2  # fingerprint + the two finished images
    with journal.open("a") as f:
        f.write('{"image": "layered/torn", "ids": [')  # a line cut short by the crash
    crash, encoded[:] = False, []
    resumed = evaluate(model, scenes, cfg, progress=False, journal=journal)
    assert encoded == [scenes[2].id, scenes[3].id]  # only the images not finished before
    assert resumed.ids == reference.ids and resumed.ious == reference.ious
    assert {k: resumed.summary[k] for k in ("NoC90", "5-mIoU", "num_images")} == \
        {k: reference.summary[k] for k in ("NoC90", "5-mIoU", "num_images")}
    assert len(Journal(journal, "another fingerprint", key="image").records) == 0  # other work: started afresh
    encoded[:] = []
    evaluate(model, scenes, cfg, progress=False, journal=journal)
    assert len(encoded) == 4  # the journal of other work was not reused
    encoded[:] = []
    evaluate(model, scenes, tiny_cfg("clicks.max_eval=5", "clicks.threshold=0.6"), progress=False, journal=journal)
    assert len(encoded) == 4  # another threshold: another fingerprint


def test_ois_eval_leaves_no_journal(tmp_path):
    out = tmp_path / "e"
    assert main(["eval", TINY_YAML, *TINY, "model.backbone.random_init=true", "data.layered.size=112",
                 "data.layered.test_length=1",
                 "clicks.max_eval=5", f"output_dir={out}"]) == 0
    assert (out / "results.json").is_file() and not (out / "eval_journal.jsonl").exists()
