"""`make demo` and `make paper-mini` end to end on fast budgets: pretraining, every row, Tables 4-11, the
scorecard and the figures; a rerun resumes without training anything."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.image as mpimg
import pytest

from ois_lightning.grids.sweep_file import load_sweep
from ois_lightning.grids.table_spec import load_table_spec
from ois_lightning.tools.mini_paper import DEMO, TABLES
from ois_lightning.model import build_model
from ois_lightning.grids.scorecard import AGREES, DISAGREES, INCONCLUSIVE, NOT_IN_PAPER, verdict
from ois_lightning.config.load import load_config
from ois_lightning.protocol.results import read_results

from .helpers import REPO


TABLE4_ROWS = ("full", "wo_order", "wo_object", "wo_sparse", "wo_dense", "full_exact_depth")


def _image(path: Path) -> None:
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100, path


@pytest.mark.slow
def test_paper_mini_fast_end_to_end(tmp_path: Path):
    out = tmp_path / "demo_out"
    env = dict(os.environ, DEMO_FAST="1", WANDB_MODE="offline")
    argv = [sys.executable, "-m", "ois_lightning", "demo", "--tables", "all", "--out", str(out)]
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "demo finished in" in proc.stdout and f"Outputs in {out}/" in proc.stdout
    for name in ("depth_tiny.pth", "depth_tiny_tenth.pth", "mae_tiny.pth"):  # each with its report
        assert (out / "pretrain_fast" / name).is_file() and (out / "pretrain_fast" / name).with_suffix(".json").is_file()
    rows = {Path(p.config).stem for s in ("sweep.yaml", "sweep_mini.yaml", "sweep_mini_tenth.yaml")
            for p in load_sweep(DEMO / s).points}
    for row in rows:
        run = read_results(out / "runs" / "demo" / row / "seed0" / "results.json")
        assert run.row == row and len(run.ious) == 3
    full = json.loads((out / "runs" / "demo" / "full" / "seed0" / "results.json").read_text())["config"]
    assert full["model"]["backbone"]["checkpoint"] == str(out / "pretrain_fast" / "depth_tiny.pth")
    assert full["data"]["depth"]["source"] == "model"
    for row in ("full", "wo_order"):  # Table 8: the same checkpoints on twice-as-large scenes
        hr = json.loads((out / "runs_high_res" / "demo" / row / "seed0" / "results.json").read_text())["config"]
        assert hr["data"]["layered"]["size"] == 224
    with open(out / "table.csv") as f:
        assert [r["row"] for r in csv.DictReader(f)] == list(TABLE4_ROWS)
    assert "Full, exact depth" in (out / "table.md").read_text() and "NoC90 (paper)" in (out / "table.md").read_text()
    for n, spec_path in TABLES.items():
        spec = load_table_spec(spec_path)
        with open(out / f"table{n}.csv") as f:
            assert [r["row"] for r in csv.DictReader(f)] == [r.name for r in spec.rows]
        _image(out / f"table{n}_miou_vs_clicks.png")
    card = (out / "scorecard.md").read_text()
    assert "Table 4 | w/o order | Full | +1.04" in card and "Table 11 |" in card
    with open(out / "scorecard.csv") as f:
        assert {r["verdict"] for r in csv.DictReader(f)} <= {AGREES, DISAGREES, INCONCLUSIVE, NOT_IN_PAPER}
    for png in ("miou_vs_clicks.png", "qualitative.png", "figures/order_maps.png", "figures/attention.png"):
        _image(out / png)
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "6 finished, 0 to run" in proc.stdout and "7 finished, 0 to run" in proc.stdout
    for name in ("depth_tiny", "depth_tiny_tenth", "mae_tiny"):  # the pretraining logs of the rerun
        assert "reusing it" in (out / "pretrain_fast" / f"{name}.log").read_text()


def test_scorecard_rule():
    """Paper worse (+) and our CI above 0: agrees; below 0: disagrees; containing 0: inconclusive; a paper delta
    that rounds to 0 agrees with a CI containing 0."""
    assert verdict(1.04, (0.2, 1.5)) == AGREES
    assert verdict(1.04, (-1.5, -0.2)) == DISAGREES
    assert verdict(-0.3, (-1.5, -0.2)) == AGREES
    assert verdict(1.04, (-0.2, 0.5)) == INCONCLUSIVE
    assert verdict(0.0, (-0.2, 0.5)) == AGREES and verdict(0.0, (0.1, 0.5)) == DISAGREES
    assert verdict(None, (0.1, 0.5)) == NOT_IN_PAPER and verdict(0.5, None) == INCONCLUSIVE


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
