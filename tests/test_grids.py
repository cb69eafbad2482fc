"""Experiment configs of Tables 4-11, their table.yaml files, the W&B sweep files and the run identity."""
from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest
import yaml

from ois_lightning.config.schema import ConfigError
from ois_lightning.config.load import load_config
from ois_lightning.protocol.metrics import METRIC_GOALS
from ois_lightning.grids.sweep_file import load_sweep, normalize_argv, point_overrides, resolve_point
from ois_lightning.grids.table_spec import load_table_spec
from ois_lightning.tracking.identity import run_identity

from .helpers import REPO, TINY_RUN, run_warm


pytestmark = pytest.mark.usefixtures("random_weights")  # the rows name published networks; no files here

TABLES = sorted((REPO / "experiments").glob("table*/table.yaml"), key=lambda p: int(p.parent.name[5:]))
ROW_CONFIGS = sorted(p for p in (REPO / "experiments").glob("table*/*.yaml") if p.name != "table.yaml")
SWEEPS = sorted((REPO / "sweeps").glob("table*.yaml"))
# Tiny model on generated layered scenes with exact depth: replaces real backbones / depth models / datasets
# (the separate depth models of Table 6 are run in test_depth_cache.py).


def test_all_paper_tables_are_there():
    assert [p.parent.name for p in TABLES] == [f"table{n}" for n in range(4, 12)]
    assert [p.stem for p in SWEEPS] == sorted(f"table{n}" for n in range(4, 12))


@pytest.mark.parametrize("path", TABLES, ids=lambda p: p.parent.name)
def test_table_spec_rows_match_their_configs(path: Path):
    spec = load_table_spec(path)
    assert spec.name == path.parent.name and spec.metrics and set(spec.metrics) <= set(METRIC_GOALS)
    assert spec.row(spec.reference).config is not None
    for row in spec.rows:
        assert set(row.paper) == set(spec.metrics), f"{row.name}: paper numbers for every column"
        if row.config is not None:
            cfg = load_config(row.config)
            assert (cfg.table, cfg.row) == (spec.name, row.name)
    configs = {r.config.resolve() for r in spec.rows if r.config is not None}
    assert configs == {p.resolve() for p in ROW_CONFIGS if p.parent == path.parent}  # no orphan row file


def _cfg(table: str, row: str):
    return load_config(REPO / "experiments" / table / f"{row}.yaml")


def test_rows_switch_what_the_paper_says():
    full = _cfg("table4", "full")
    assert _cfg("table5", "depth_encoder").model.depth_encoder.enabled is True
    assert _cfg("table5", "depth_encoder").model.order.enabled is False
    assert _cfg("table5", "ours").model == full.model
    assert [_cfg("table6", r).data.depth.model for r in ("dav2", "dav1", "zoedepth")] == [None, "dav1-vitb",
                                                                                          "zoedepth"]
    assert _cfg("table7", "order_first").model.sparse.block_order.value == "order_first"
    assert _cfg("table7", "object_first").model == full.model
    for row in ("full", "wo_order", "wo_object", "wo_sparse", "wo_dense"):
        t8, t4 = _cfg("table8", row), _cfg("table4", row)
        assert t8.model == t4.model and t8.data.train == t4.data.train and list(t8.data.test) == ["hqseg44k"]
    assert [_cfg("table9", r).model.order.clicks.value for r in ("pos_neg", "pos", "neg")] == ["pos+neg", "pos",
                                                                                              "neg"]
    mae = _cfg("table10", "ois_mae")
    assert mae.model.backbone.name == "mae-vitb" and mae.model.input_size % 16 == 0
    assert mae.model.input_size == 1024 and mae.data.depth.model == "dav2-vitb"
    assert _cfg("table11", "mae_full").model == mae.model
    assert _cfg("table11", "dav2_full").model == full.model
    for row in ("mae_wo_order_object", "dav2_wo_order_object"):
        m = _cfg("table11", row).model
        assert not m.order.enabled and not m.object.enabled and m.sparse.enabled
    for table in ("table10", "table11"):
        for row in load_table_spec(REPO / "experiments" / table / "table.yaml").rows:
            if row.config is not None:
                assert list(load_config(row.config).data.test) == ["hqseg44k"]  # App. A.13 is on HQSeg44K


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_sweep_file_is_a_valid_wandb_grid_over_the_table(path: Path, monkeypatch):
    monkeypatch.chdir(REPO)  # the agent runs from the repository root
    data = yaml.safe_load(path.read_text())
    assert data["method"] == "grid" and data["name"] == path.stem
    assert data["command"] == ["${env}", "${interpreter}", "-m", "ois_lightning", "train", "${args_no_hyphens}"]
    for name, p in data["parameters"].items():
        assert isinstance(name, str) and isinstance(p, dict) and len({"value", "values"} & set(p)) == 1
    spec = load_table_spec(REPO / "experiments" / path.stem / "table.yaml")
    rows = [r for r in spec.rows if r.config is not None]
    assert data["parameters"]["config"]["values"] == [str(r.config.relative_to(REPO)) for r in rows]
    sweep = load_sweep(path)
    seeds = data["parameters"]["seed"]["values"]
    assert len(sweep.points) == len(rows) * len(seeds)
    for point in sweep.points:
        cfg = resolve_point(point)
        assert cfg.seed == point.seed and cfg.table == spec.name
        assert cfg.output_dir == f"runs/{spec.name}/{cfg.row}/seed{point.seed}"
    found = importlib.util.find_spec("sweeps")  # wandb's own schema check (pip install wandb[sweeps]), if there;
    if found is not None and found.origin is not None:  # our sweeps/ folder is only a namespace package
        import sweeps

        assert sweeps.schema_violations_from_proposed_config(data) == []


def test_local_grid_is_exactly_the_wandb_grid(monkeypatch):
    monkeypatch.chdir(REPO)
    sweep = load_sweep("sweeps/table4.yaml")
    got = {(p.config, p.seed) for p in sweep.points}
    rows = ["full", "wo_order", "wo_object", "wo_sparse", "wo_dense"]
    assert got == {(f"experiments/table4/{r}.yaml", s) for r in rows for s in (0, 1, 2)}
    assert len(sweep.points) == 15
    assert point_overrides(sweep.points[0]) == ["seed=0", "output_dir=runs/${table}/${row}/seed${seed}"]


def test_sweep_file_errors_are_one_line(tmp_path: Path):
    bad = tmp_path / "s.yaml"
    bad.write_text("method: random\nparameters: {config: {values: [a.yaml]}}\ncommand: [train]\n")
    with pytest.raises(ConfigError, match=r"s\.yaml: key 'method' must be 'grid', got 'random'"):
        load_sweep(bad)
    bad.write_text("method: grid\nparameters: {config: {values: [nowhere.yaml]}}\n"
                   "command: [python, -m, ois_lightning, train, '${args_no_hyphens}']\n")
    with pytest.raises(ConfigError, match=r"value 'nowhere\.yaml' is not a file"):
        load_sweep(bad)
    bad.write_text("method: grid\nparameters: {config: {min: 1}}\ncommand: [train, '${args}']\n")
    with pytest.raises(ConfigError, match=r"parameters\.config must have 'value' or 'values'"):
        load_sweep(bad)


def test_normalize_argv_moves_the_config_token_to_the_positional_slot():
    assert normalize_argv(["train", "seed=1", "config=a.yaml", "x=2"]) == ["train", "a.yaml", "seed=1", "x=2"]
    assert normalize_argv(["train", "a.yaml", "seed=1"]) == ["train", "a.yaml", "seed=1"]
    assert normalize_argv(["table", "config=a"]) == ["table", "config=a"]
    with pytest.raises(ConfigError, match="given 2 times"):
        normalize_argv(["train", "config=a.yaml", "config=b.yaml"])


def test_cli_accepts_the_wandb_argv_form(capsys):
    from ois_lightning.cli import main

    assert main(["print-config", "seed=4", "config=experiments/table9/pos.yaml"]) == 0
    out = capsys.readouterr().out
    cfg = yaml.safe_load(out)
    assert cfg["seed"] == 4 and cfg["row"] == "pos" and cfg["model"]["order"]["clicks"] == "pos"


def test_run_identity():
    cfg = load_config(REPO / "experiments/table4/wo_order.yaml", ["seed=2", "logger.tags=[ablation]"])
    assert run_identity(cfg) == ("ois_lightning", "table4", "table4-wo_order-seed2",
                                 ["ablation", "table4", "wo_order", "seed2"])
    cfg = load_config(REPO / "experiments/tiny.yaml", ["logger.group=g", "logger.name=n", "logger.project=p"])
    assert run_identity(cfg) == ("p", "g", "n", ["seed0"])
    assert run_identity(load_config(REPO / "experiments/tiny.yaml"))[1:3] == ("tiny", "tiny-seed0")


RUN_ALL = """
import json, sys
from ois_lightning.cli import main
configs, overrides = json.loads(sys.argv[1]), json.loads(sys.argv[2])
for i, config in enumerate(configs):
    rc = main(["train", config, *overrides, f"output_dir={sys.argv[3]}/{i}"])
    print(f"RESULT {config} {rc}", flush=True)
"""


@pytest.mark.slow
def test_every_experiment_config_trains_one_fast_dev_run_step(tmp_path: Path):
    """All row configs in ONE subprocess (`ois train CONFIG <tiny> train.fast_dev_run=true` via cli.main)."""
    configs = [str(p.relative_to(REPO)) for p in ROW_CONFIGS]
    overrides = TINY_RUN + ["train.fast_dev_run=true", "train.val_objects=0", "clicks.max_eval=5"]
    env = dict(os.environ, WANDB_MODE="offline")
    proc = run_warm([sys.executable, "-c", RUN_ALL, json.dumps(configs), json.dumps(overrides), str(tmp_path)], env,
                    timeout=1500)
    results = dict(line.split()[1:] for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert results == {c: "0" for c in configs}, proc.stderr[-3000:]
    for i, config in enumerate(configs):
        saved = json.loads((tmp_path / str(i) / "results.json").read_text())["config"]
        assert saved["row"] == load_config(REPO / config).row  # the row's own config was trained
