"""`ois table`: synthetic results.json files -> paper table with deltas, seed std and bootstrap CIs."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

from ois_lightning.cli import main
from ois_lightning.grids.table_spec import load_table_spec
from ois_lightning.grids.table import build_table, to_csv, to_markdown
from ois_lightning.protocol.results import collect, read_results, ResultsError

from .helpers import REPO, TABLE4, curve, write_run


def cell(table, row: str, metric: str):
    return next(r for r in table.rows if r.name == row).cells[metric]


def test_delta_ci_std_and_pairing_by_object_id(tmp_path: Path):
    ids = [f"obj{i}" for i in range(6)]
    # Full: every object reaches 0.9 at click 2 (seed 0) or 3 (seed 1); NoC90 means 2 and 3.
    write_run(tmp_path, "full", 0, {i: curve(2) for i in ids})
    write_run(tmp_path, "full", 1, {i: curve(3) for i in ids})
    # w/o order: 0.9 at click 4 (seed 0) or 6 (seed 1), objects stored in a shuffled order.
    write_run(tmp_path, "wo_order", 0, {i: curve(4) for i in reversed(ids)})
    write_run(tmp_path, "wo_order", 1, {i: curve(6) for i in ids[::2] + ids[1::2]})
    runs, problems = collect(tmp_path)
    assert problems == [] and len(runs) == 4
    table = build_table(load_table_spec(TABLE4), runs, n_boot=500)
    full, wo = cell(table, "full", "NoC90"), cell(table, "wo_order", "NoC90")
    assert full.mean == pytest.approx(2.5) and full.std == pytest.approx(np.std([2, 3], ddof=1))
    assert full.delta is None and full.ci is None  # the reference row has no delta
    assert wo.mean == pytest.approx(5.0) and wo.delta == pytest.approx(2.5)
    # every object pair differs by 2.5 clicks seed-averaged; resampled seeds give row means 4/5/6 vs 2/2.5/3,
    # and the extreme deltas 1 and 4 each have probability 1/16 > 2.5 %
    assert wo.ci == pytest.approx((1.0, 4.0))
    nof = cell(table, "wo_order", "NoF95")  # 0.92 < 0.95: every object fails 95% in both rows
    assert nof.mean == 6 and nof.delta == 0
    miou5 = cell(table, "wo_order", "5-mIoU")  # IoU after 5 clicks: 0.92 (Full) vs 0.92/0.8 (seed 0/1)
    assert miou5.delta == pytest.approx(100 * ((0.8 + 0.92) / 2 - 0.92))
    assert cell(table, "wo_order", "NoC90").paper == 4.84
    assert cell(table, "wo_order", "NoC90").paper_delta == pytest.approx(1.04)
    assert [r.name for r in table.rows] == ["full", "wo_order", "wo_object", "wo_sparse", "wo_dense"]
    assert cell(table, "wo_dense", "NoC90").mean is None  # no runs: paper numbers only


def test_bootstrap_ci_width_matches_normal_approximation_and_is_reproducible(tmp_path: Path):
    rng = np.random.default_rng(7)
    n = 400
    extra = rng.integers(0, 5, size=n)  # per-object extra clicks of the ablated row
    write_run(tmp_path, "full", 0, {f"o{i}": curve(3) for i in range(n)})
    write_run(tmp_path, "wo_object", 0, {f"o{i}": curve(3 + int(e)) for i, e in enumerate(extra)})
    runs, _ = collect(tmp_path)
    spec = load_table_spec(TABLE4)
    c = cell(build_table(spec, runs, n_boot=2000, rng_seed=0), "wo_object", "NoC90")
    assert c.delta == pytest.approx(extra.mean())
    lo, hi = c.ci
    assert lo < c.delta < hi
    expected_half_width = 1.96 * extra.std(ddof=1) / np.sqrt(n)
    assert (hi - lo) / 2 == pytest.approx(expected_half_width, rel=0.15)
    again = cell(build_table(spec, runs, n_boot=2000, rng_seed=0), "wo_object", "NoC90")
    assert again.ci == c.ci  # fixed RNG seed: the table is reproducible
    other = cell(build_table(spec, runs, n_boot=2000, rng_seed=1), "wo_object", "NoC90")
    assert other.ci != c.ci


def test_ci_includes_the_variation_between_seeds(tmp_path: Path):
    """Every object is 4 clicks worse on average, but the ablated row's two seeds disagree (3 vs 9 clicks vs the
    reference's 2): an object-only bootstrap would give the point interval [4, 4]; resampling the seeds gives
    the deltas 1, 4 and 7 (seed means 3, 6, 9) with probabilities 1/4, 1/2, 1/4."""
    ids = [f"o{i}" for i in range(30)]
    write_run(tmp_path, "full", 0, {i: curve(2) for i in ids})
    write_run(tmp_path, "full", 1, {i: curve(2) for i in ids})
    write_run(tmp_path, "wo_order", 0, {i: curve(3) for i in ids})
    write_run(tmp_path, "wo_order", 1, {i: curve(9) for i in ids})
    c = cell(build_table(load_table_spec(TABLE4), collect(tmp_path)[0], n_boot=2000), "wo_order", "NoC90")
    assert c.delta == pytest.approx(4.0) and c.ci == pytest.approx((1.0, 7.0))


def test_runs_evaluated_on_several_datasets_give_one_table_per_dataset(tmp_path: Path, capsys):
    """A run with data.test=[davis, grabcut] has a results.json per dataset: the table shows the table's dataset
    (DAVIS for Table 4) or the one named; runs all on one other dataset are tabulated as they are."""
    write_run(tmp_path, "full", 0, {"a": curve(2)})
    other = write_run(tmp_path / "grabcut", "full", 0, {"a": curve(9)}, dataset="grabcut")  # same row and seed
    spec = load_table_spec(TABLE4)
    table = build_table(spec, collect(tmp_path)[0], n_boot=100)
    assert cell(table, "full", "NoC90").mean == 2.0 and table.unmatched == [str(other)] and table.dataset == "davis"
    assert main(["table", str(tmp_path), "--no-wandb", "--n-boot", "50", "--allow-partial"]) == 0
    assert "(or was evaluated on another dataset than davis)" in capsys.readouterr().out
    picked = build_table(spec, collect(tmp_path)[0], n_boot=100, dataset="grabcut")
    assert cell(picked, "full", "NoC90").mean == 9.0 and "ours on grabcut:" in to_markdown(picked)
    alone = build_table(spec, collect(tmp_path / "grabcut")[0], n_boot=100)  # Table 4's rows run on GrabCut
    assert cell(alone, "full", "NoC90").mean == 9.0 and alone.dataset == "grabcut" and alone.unmatched == []
    write_run(tmp_path / "grabcut" / "berkeley", "full", 0, {"a": curve(5)}, dataset="berkeley")
    with pytest.raises(ResultsError, match=r"several datasets \['berkeley', 'grabcut'\] and none is the table's "
                                           r"\(davis\); pick one with --dataset NAME"):
        build_table(spec, collect(tmp_path / "grabcut")[0], n_boot=100)


def test_ci_uses_only_objects_present_in_both_rows(tmp_path: Path):
    write_run(tmp_path, "full", 0, {"a": curve(2), "b": curve(2), "c": curve(2)})
    write_run(tmp_path, "wo_sparse", 0, {"a": curve(5), "b": curve(5), "z": curve(20)})
    table = build_table(load_table_spec(TABLE4), collect(tmp_path)[0], n_boot=200)
    assert cell(table, "wo_sparse", "NoC90").ci == pytest.approx((3.0, 3.0))  # pairs a, b only
    assert next(r for r in table.rows if r.name == "wo_sparse").num_objects == 3


def test_markdown_and_csv_parse(tmp_path: Path):
    for row, at in (("full", 2), ("wo_order", 4), ("wo_dense", 6)):
        for seed in (0, 1):
            write_run(tmp_path, row, seed, {f"o{i}": curve(at + (i + seed) % 2) for i in range(10)})
    table = build_table(load_table_spec(TABLE4), collect(tmp_path)[0], n_boot=200)
    rows = list(csv.DictReader(io.StringIO(to_csv(table))))
    assert [r["row"] for r in rows] == ["full", "wo_order", "wo_object", "wo_sparse", "wo_dense"]
    wo = rows[1]
    assert float(wo["NoC90_delta"]) == pytest.approx(2.0) and wo["seeds"] == "0 1"
    assert float(wo["NoC90_ci_low"]) <= 2.0 <= float(wo["NoC90_ci_high"])
    assert float(wo["NoF95_paper"]) == 171 and rows[0]["is_reference"] == "1"
    assert rows[2]["NoC90"] == "" and float(rows[2]["NoC90_paper"]) == 3.92
    md = to_markdown(table, paper=True)
    lines = [ln for ln in md.splitlines() if ln.startswith("|")]
    assert len(lines) == 2 + 5 and len({ln.count("|") for ln in lines}) == 1
    assert "NoC90 (paper)" in lines[0] and "4.84 (+1.04)" in md
    assert "Full (ref)" in lines[2]
    assert "(+2.00 [" in lines[3]  # w/o order: delta with its CI
    assert "(paper)" not in to_markdown(table, paper=False)


def test_csv_names_row_configs_relative_to_the_working_directory(tmp_path: Path, monkeypatch):
    """The config column holds what a user types from the working directory, not one machine's absolute path;
    a config outside the working directory stays absolute."""
    write_run(tmp_path, "full", 0, {"a": curve(2)})
    monkeypatch.chdir(REPO)
    rows = list(csv.DictReader(io.StringIO(to_csv(build_table(load_table_spec(TABLE4), collect(tmp_path)[0],
                                                              n_boot=10)))))
    assert rows[0]["config"] == "experiments/table4/full.yaml"
    monkeypatch.chdir(tmp_path)
    rows = list(csv.DictReader(io.StringIO(to_csv(build_table(load_table_spec(TABLE4), collect(tmp_path)[0],
                                                              n_boot=10)))))
    assert rows[0]["config"] == str(REPO / "experiments/table4/full.yaml")


def test_ois_table_command_writes_files_and_skips_broken(tmp_path: Path, capsys):
    write_run(tmp_path, "full", 0, {"a": curve(2), "b": curve(3)})
    write_run(tmp_path, "wo_order", 0, {"a": curve(3), "b": curve(6)})
    broken = tmp_path / "wo_object" / "seed0"
    broken.mkdir(parents=True)
    (broken / "results.json").write_text('{"summary": {}, "per_object": {"ids": ["a"], "ious": [[0.5]]}')
    assert main(["table", str(tmp_path), "--paper", "--no-wandb", "--n-boot", "100", "--allow-partial"]) == 0
    printed = capsys.readouterr().out
    assert "warning: partial table: no results for row(s) wo_object, wo_sparse, wo_dense" in printed
    assert "skipping broken" in printed and "wo_object/seed0/results.json" in printed
    assert (tmp_path / "table.md").read_text() in printed
    rows = list(csv.DictReader((tmp_path / "table.csv").open()))
    assert float(rows[1]["NoC90_delta"]) == pytest.approx(2.0)
    assert not list(tmp_path.glob(".table*"))  # no temp files left behind


def test_bad_inputs_give_one_line_errors(tmp_path: Path, capsys):
    assert main(["table", str(tmp_path / "nowhere"), "--no-wandb"]) == 2
    assert "runs directory not found" in capsys.readouterr().err
    write_run(tmp_path, "full", 0, {"a": curve(2)})
    write_run(tmp_path / "copy", "full", 0, {"a": curve(2)})
    assert main(["table", str(tmp_path), "--no-wandb"]) == 2
    err = capsys.readouterr().err
    assert "several results.json for seed(s) [0]" in err and len(err.strip().splitlines()) == 1
    bad = tmp_path / "r.json"
    bad.write_text(json.dumps({"summary": {}, "config": {}, "seed": 0,
                               "per_object": {"ids": ["a"], "ious": [[1.5] * 20]}}))
    with pytest.raises(ResultsError, match=r"r\.json: per_object\.ious\[0\] must be a list of IoUs in \[0, 1\]"):
        read_results(bad)
    short = write_run(tmp_path / "short", "full", 0, {"a": [0.5, 0.96]})
    with pytest.raises(ResultsError, match=r"ious\[0\] has 2 IoUs; expected 20 \(clicks.max_eval\)"):
        read_results(short)


def test_early_stopped_runs_give_the_same_table_when_they_determine_its_metrics(tmp_path: Path):
    """Stopping at IoU >= 0.95 after at least 5 clicks keeps NoC90, 5-mIoU and NoF95 (Table 4) exact; stopping at
    0.90 leaves NoF95 undetermined, which is an error naming the run, not a wrong number."""
    rng = np.random.default_rng(0)
    runs = {(row, seed): {f"o{i}": sorted(rng.uniform(0.3, 1.0, 20).round(3).tolist()) for i in range(8)}
            for row in ("full", "wo_order") for seed in (0, 1)}
    for (row, seed), curves in runs.items():
        write_run(tmp_path / "all", row, seed, curves)
        stop = {k: c[:next((j + 1 for j, v in enumerate(c) if v >= 0.95 and j >= 4), 20)] for k, c in curves.items()}
        write_run(tmp_path / "early", row, seed, stop, clicks={"target_iou": 0.95, "min_eval": 5})
        assert any(len(c) < 20 for c in stop.values())
        low = {k: c[:next((j + 1 for j, v in enumerate(c) if v >= 0.9), 20)] for k, c in curves.items()}
        write_run(tmp_path / "low", row, seed, low, clicks={"target_iou": 0.9, "min_eval": 1})
    spec = load_table_spec(TABLE4)
    assert to_csv(build_table(spec, collect(tmp_path / "early")[0], n_boot=200)) == \
        to_csv(build_table(spec, collect(tmp_path / "all")[0], n_boot=200))
    with pytest.raises(ResultsError, match=r"low/full/seed0/results.json: NoF95 undetermined: objects stopped early"):
        build_table(spec, collect(tmp_path / "low")[0], n_boot=200)
