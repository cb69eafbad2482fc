"""`make demo` and `make paper-mini` end to end on fast budgets: pretraining, every row, Tables 4-11, the
scorecard and the figures; a rerun resumes without training anything."""
from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

import matplotlib.image as mpimg
import pytest

from ois_lightning.grids.sweep_file import load_sweep
from ois_lightning.grids.table_spec import load_table_spec
from ois_lightning.tools.mini_paper import DEMO, TABLES
from ois_lightning.model import build_model
from ois_lightning.grids.scorecard import (AGREES, DISAGREES, INCONCLUSIVE, NOT_IN_PAPER, Control, Entry, to_csv,
                                          to_markdown, verdict)
from ois_lightning.config.load import load_config
from ois_lightning.protocol.results import read_results

from .helpers import REPO, run_warm


TABLE4_ROWS = ("full", "wo_order", "wo_object", "wo_sparse", "wo_dense", "full_exact_depth")


def _image(path: Path) -> None:
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100, path


@pytest.mark.slow
def test_paper_mini_fast_end_to_end(tmp_path: Path):
    out = tmp_path / "demo_out"
    env = dict(os.environ, DEMO_FAST="1", WANDB_MODE="offline")
    argv = [sys.executable, "-m", "ois_lightning", "demo", "--tables", "all", "--out", str(out)]
    proc = run_warm(argv, env, timeout=1200)  # its own sweeps then start a fork server of their own, as from a shell
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "demo finished in" in proc.stdout and f"Outputs in {out}/" in proc.stdout
    for name in ("depth_tiny.pth", "depth_tiny_tenth.pth", "mae_tiny.pth"):  # each with its report
        assert (out / "pretrain_fast" / name).is_file() and (out / "pretrain_fast" / name).with_suffix(".json").is_file()
    rows = {Path(p.config).stem for s in ("sweep.yaml", "sweep_mini.yaml", "sweep_mini_tenth.yaml",
                                          "sweep_controls.yaml") for p in load_sweep(DEMO / s).points}
    for row, seed in [*((r, 0) for r in rows), ("full_placebo", 100)]:
        run = read_results(out / "runs" / "demo" / row / f"seed{seed}" / "results.json")
        assert run.row == row and len(run.ious) == 3
    occlusion = json.loads((out / "runs" / "demo" / "occlusion_full" / "seed0" / "results.json").read_text())["config"]
    assert occlusion["data"]["layered"]["cues"] == [] and occlusion["data"]["depth"]["source"] == "gt"
    full = json.loads((out / "runs" / "demo" / "full" / "seed0" / "results.json").read_text())["config"]
    assert full["model"]["backbone"]["checkpoint"] == str(out / "pretrain_fast" / "depth_tiny.pth")
    assert full["data"]["depth"]["source"] == "model"
    for row in ("full", "wo_order"):  # Table 8: the same checkpoints on twice-as-large scenes
        hr = json.loads((out / "runs_high_res" / "demo" / row / "seed0" / "results.json").read_text())["config"]
        assert hr["data"]["layered"]["size"] == 224
    with open(out / "table.csv") as f:
        assert [r["row"] for r in csv.DictReader(f)] == list(TABLE4_ROWS)
    assert "Full, exact depth" in (out / "table.md").read_text() and "NoC90 (paper)" in (out / "table.md").read_text()
    # the other tables go to the output folder only: the runs folder's own table stays Table 4, as `ois table` makes it
    assert (out / "runs" / "demo" / "table.md").read_text() == (out / "table.md").read_text()
    for n, spec_path in TABLES.items():
        spec = load_table_spec(spec_path)
        with open(out / f"table{n}.csv") as f:
            assert [r["row"] for r in csv.DictReader(f)] == [r.name for r in spec.rows]
        _image(out / f"table{n}_miou_vs_clicks.png")
    card = (out / "scorecard.md").read_text()
    assert "Table 4 | w/o order | Full | +1.04" in card and "Table 11 |" in card
    first = card.splitlines()[0]  # the controls lead the scorecard (3 objects: they may well fail here)
    assert first.startswith("Controls: 2 of 2 passed") or first.startswith("**The miniature cannot be trusted")
    assert "| Positive control |" in card and "| Negative control |" in card
    for name in ("control_positive", "control_negative"):
        assert (out / f"{name}.md").is_file()
    with open(out / "scorecard.csv") as f:
        verdicts = {r["verdict"] for r in csv.DictReader(f)}
    assert verdicts - {"control passed", "control FAILED"} <= {AGREES, DISAGREES, INCONCLUSIVE, NOT_IN_PAPER}
    for png in ("miou_vs_clicks.png", "qualitative.png", "figures/order_maps.png", "figures/attention.png"):
        _image(out / png)
    proc = run_warm(argv, env, timeout=600)
    assert proc.returncode == 0 and "6 finished, 0 to run" in proc.stdout and "7 finished, 0 to run" in proc.stdout
    assert "2 finished, 0 to run" in proc.stdout  # the positive control; the placebo and the tenth: 1 each
    for name in ("depth_tiny", "depth_tiny_tenth", "mae_tiny"):  # the pretraining logs of the rerun
        assert "reusing it" in (out / "pretrain_fast" / f"{name}.log").read_text()
    _check_another_scale_reuses(out, tmp_path / "other_scale")


def _check_another_scale_reuses(source: Path, out: Path) -> None:
    """A scale with other evaluation settings (more objects, the early stop) takes the finished pretraining and
    trained points of ``source`` (tools/reuse.py): the checkpoint is evaluated, not trained again, and linked; a
    point whose training settings differ is not reusable; a rerun does nothing."""
    from ois_lightning.grids.local_runner import plan
    from ois_lightning.tools.demo import FAST_OVERRIDES
    from ois_lightning.tools.mini_paper import pretrain
    from ois_lightning.tools.reuse import REUSED_MARK, Reuse, reusable, run_sweep

    files = pretrain(out, ["depth"], True, 1, source / "pretrain_fast")
    assert files.depth.samefile(source / "pretrain_fast" / "depth_tiny.pth") or \
        files.depth.read_bytes() == (source / "pretrain_fast" / "depth_tiny.pth").read_bytes()
    assert "reusing it" in files.depth.with_suffix(".log").read_text()
    sweep = out / "sweep.yaml"  # Table 4's grid (its name: the same run folders), Full alone
    sweep.write_text((DEMO / "sweep.yaml").read_text().replace("      - experiments/demo/wo_order.yaml\n", "")
                     .replace("values: [0, 1, 2, 3, 4, 5]", "values: [0]"))
    scale = (*FAST_OVERRIDES, "eval.max_objects=2", "clicks.target_iou=0.9", "clicks.min_eval=5")
    reuse = Reuse(source, tuple(FAST_OVERRIDES), scale, (0,))
    weights = files.weights(mae=False)
    assert run_sweep(sweep, scale, weights, 1, out / "runs", [0], reuse) == 0
    target = out / "runs" / "demo" / "full" / "seed0"
    run = read_results(target / "results.json")
    assert len(run.ious) == 2 and not (target / "train.log").exists()  # evaluated by `ois eval`, never trained
    assert "wrote" in (target / "eval.log").read_text()
    trained = source / "runs" / "demo" / "full" / "seed0" / "checkpoints" / "last.ckpt"
    assert (target / "checkpoints" / "last.ckpt").read_bytes() == trained.read_bytes()
    record = json.loads((target / REUSED_MARK).read_text())
    assert record["checkpoint"] == str(trained) and "eval.max_objects" in record["differs_in"]
    assert all(k.startswith(("eval.", "clicks.")) for k in record["differs_in"])
    before = (target / "results.json").read_bytes()
    assert run_sweep(sweep, scale, weights, 1, out / "runs", [0], reuse) == 0  # finished: nothing evaluated again
    assert (target / "results.json").read_bytes() == before
    loaded = load_sweep(sweep)
    other = plan(loaded, out / "runs", [*scale, *weights, "train.lr=0.5"])[0]  # other weights: train, never reuse
    assert not reusable(plan(loaded, source / "runs", [*FAST_OVERRIDES, *weights])[0], other)


def test_scorecard_rule():
    """Paper worse (+) and our CI above 0: agrees; below 0: disagrees; containing 0: inconclusive; a paper delta
    that rounds to 0 agrees with a CI containing 0."""
    assert verdict(1.04, (0.2, 1.5)) == AGREES
    assert verdict(1.04, (-1.5, -0.2)) == DISAGREES
    assert verdict(-0.3, (-1.5, -0.2)) == AGREES
    assert verdict(1.04, (-0.2, 0.5)) == INCONCLUSIVE
    assert verdict(0.0, (-0.2, 0.5)) == AGREES and verdict(0.0, (0.1, 0.5)) == DISAGREES
    assert verdict(None, (0.1, 0.5)) == NOT_IN_PAPER and verdict(0.5, None) == INCONCLUSIVE


def _entry(table: str, ci) -> Entry:
    return Entry(table, "row", "row", "Full", None, None if ci is None else sum(ci) / 2, ci, NOT_IN_PAPER)


def test_controls_pass_fail_and_lead_the_scorecard_in_bold_when_one_fails():
    """Positive control: passes only with a CI above 0; negative control: only with a CI containing 0; a failed
    control puts the bold warning on the scorecard's first line and 'control FAILED' in the csv."""
    assert Control("effect", _entry("P", (0.2, 1.0))).passed
    assert not Control("effect", _entry("P", (-0.1, 1.0))).passed and not Control("effect", _entry("P", None)).passed
    assert Control("none", _entry("N", (-0.3, 0.2))).passed
    assert not Control("none", _entry("N", (0.1, 0.4))).passed and not Control("none", _entry("N", (-0.5, -0.1))).passed
    good = [Control("effect", _entry("Positive control", (0.2, 1.0))), Control("none", _entry("Negative control",
                                                                                           (-0.3, 0.2)))]
    card = to_markdown([], checks=good)
    assert card.startswith("Controls: 2 of 2 passed") and "cannot be trusted" not in card
    bad = [good[0], Control("none", _entry("Negative control", (0.1, 0.4)))]
    card = to_markdown([], checks=bad)
    assert card.splitlines()[0] == ("**The miniature cannot be trusted: 1 of 2 controls failed (Negative control); "
                                    "read no verdict below as evidence.**")
    assert "| **FAILED** |" in card and to_csv([], bad).strip().endswith("control FAILED")


def test_mini_rows_load_their_pretrained_files_by_network_name():
    """weights.tiny / weights.mae-tiny fill the backbone and separate depth model as on a cluster."""
    mae = load_config(DEMO / "mini" / "mae_full.yaml", ["weights.tiny=d.pth", "weights.mae-tiny=m.pth"])
    assert (mae.model.backbone.checkpoint, mae.data.depth.checkpoint) == ("m.pth", "d.pth")
    full = load_config(DEMO / "full.yaml", ["weights.tiny=d.pth"])
    assert full.model.backbone.checkpoint == "d.pth" and full.data.depth.source.value == "model"
    wo = load_config(DEMO / "mini" / "mae_wo_order_object.yaml", ["model.backbone.random_init=true"])
    assert build_model(wo.model, wo.data.depth).depth_model is None  # nothing reads depth there


def test_mini_tables_borrow_the_paper_numbers_of_their_rows():
    spec = load_table_spec(DEMO / "tables" / "table9.yaml")
    paper = load_table_spec(REPO / "experiments" / "table9" / "table.yaml")
    assert spec.row("pos").paper == {m: v for m, v in paper.row("pos").paper.items() if m in spec.metrics}
    assert spec.row("full").paper["NoC90"] == paper.row("pos_neg").paper["NoC90"]


def test_scales_run_seeds_the_sweep_files_have_and_full_needs_every_table(capsys):
    """Every scale's seeds (and the placebo's, offset) are points of the sweep files, so a scale never asks for a
    run no grid defines; --full (PAPER_MINI_FULL=1) alone, without --tables all, is refused in one line."""
    from ois_lightning.cli import main
    from ois_lightning.tools.demo import SCALES
    from ois_lightning.tools.mini_paper import PLACEBO_SEED_OFFSET

    grid = {p.seed for p in load_sweep(DEMO / "sweep.yaml").points}
    placebo = {p.seed for p in load_sweep(DEMO / "sweep_placebo.yaml").points}
    others = [{p.seed for p in load_sweep(DEMO / name).points}
              for name in ("sweep_mini.yaml", "sweep_mini_tenth.yaml", "sweep_controls.yaml")]
    for scale in SCALES.values():
        assert set(scale.demo_seeds(True)) <= grid and all(set(scale.seeds) <= seeds for seeds in others)
        assert {PLACEBO_SEED_OFFSET + s for s in scale.seeds} <= placebo
        assert scale.demo_seeds(False) == [scale.seeds[0]]  # make demo: one seed
    assert SCALES["full"].demo_seeds(True) == [0, 1, 2, 3, 4, 5] and SCALES["default"].demo_seeds(True) == [0, 1]
    # other training or evaluation settings: never the same runs folder
    assert len({SCALES[name].out_dir for name in ("demo", "default", "full")}) == 3
    assert main(["demo", "--full"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--tables all" in err[0]


def test_the_full_scale_changes_only_what_reuse_may_ignore():
    """The full scale's overrides touch only evaluation keys (so the default scale's trained points are reusable);
    training_settings drops exactly those keys, whatever else a config holds."""
    from ois_lightning.tools.demo import SCALES
    from ois_lightning.tools.reuse import training_settings

    settings = {"eval.max_objects": 300, "eval.flip": False, "data.layered.test_length": 120,
                "clicks.target_iou": 0.9, "clicks.min_eval": 5, "clicks.max_eval": 20, "train.lr": 1e-3,
                "evaluation": 1, "data.layered.train_length": 4000}
    assert training_settings(settings) == {"clicks.max_eval": 20, "train.lr": 1e-3, "evaluation": 1,
                                           "data.layered.train_length": 4000}
    for override in SCALES["full"].overrides:
        assert training_settings({override.split("=")[0]: 1}) == {}, override
    assert SCALES["full"].reuse == "default" and SCALES["default"].reuse == "demo"


def test_the_demo_scale_cuts_only_the_training_steps_to_one_shorter_epoch(monkeypatch):
    """`make demo`'s declared cut for time: the step budget and the epoch that matches it (max_steps x batch scenes,
    as the miniature's own settings have), nothing else; `ois demo` picks it, `--tables all` the paper's scale."""
    from ois_lightning.tools.demo import DEMO_STEPS, SCALES

    demo = SCALES["demo"]
    assert {o.split("=")[0] for o in demo.overrides} == {"train.max_steps", "data.layered.train_length"}
    assert demo.seeds == (0,) and SCALES["default"].overrides == ()
    mine, theirs = (load_config(DEMO / "full.yaml", list(o)) for o in (demo.overrides, SCALES["default"].overrides))
    assert mine.train.max_steps == DEMO_STEPS < theirs.train.max_steps
    for cfg in (mine, theirs):
        assert cfg.data.layered.train_length == cfg.train.max_steps * cfg.data.batch_size
    from ois_lightning import cli
    from ois_lightning.tools import demo as demo_tool

    picked = []
    monkeypatch.setattr(demo_tool, "run_demo", lambda scale, **kw: picked.append((scale, kw["tables"])) or 0)
    for var in ("DEMO_FAST", "PAPER_MINI_FULL"):
        monkeypatch.delenv(var, raising=False)
    for argv in (["demo"], ["demo", "--tables", "all"], ["demo", "--tables", "all", "--full"], ["demo", "--fast"]):
        assert cli.main(argv) == 0
    assert picked == [("demo", "4"), ("default", "all"), ("full", "all"), ("fast", "4")]
