"""`make demo`'s pipeline end to end with DEMO_FAST settings: sweep, table, figures, all files parse."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.image as mpimg
import pytest

from ois_lightning.table import read_results

from .conftest import REPO

ROWS = ("full", "wo_order", "wo_object", "wo_sparse", "wo_dense")


@pytest.mark.slow
def test_demo_fast_end_to_end(tmp_path: Path):
    out = tmp_path / "demo_out"
    env = dict(os.environ, DEMO_FAST="1", WANDB_MODE="offline")
    proc = subprocess.run([sys.executable, "-m", "ois_lightning", "demo", "--out", str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "demo finished in" in proc.stdout and f"Outputs in {out}/" in proc.stdout
    for row in ROWS:
        run = read_results(out / "runs" / "demo" / row / "seed0" / "results.json")
        assert run.row == row and len(run.ious) == 10
    with open(out / "table.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(ROWS)
    markdown = (out / "table.md").read_text()
    for label in ("Full", "w/o order", "w/o object", "w/o sparse", "w/o dense", "NoC90", "NoF90"):
        assert label in markdown
    for png in ("miou_vs_clicks.png", "qualitative.png"):
        image = mpimg.imread(out / png)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    # a second run resumes: every point is finished, nothing is retrained
    proc = subprocess.run([sys.executable, "-m", "ois_lightning", "demo", "--out", str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "5 finished, 0 to run" in proc.stdout, proc.stdout[-2000:]
