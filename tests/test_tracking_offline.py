"""What real offline W&B runs hold, read back from their ``run-*.wandb`` files with W&B's own ``Record``
(helpers.wandb_records): the metrics a training run declares are the ones it logs, its checkpoint and results
artifacts name each other, config keys a sweep locked get their resolved value beside them, and ``ois table
--wandb`` overlays the rows' curves in one chart. No login, no network."""
from __future__ import annotations

import base64
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import wandb

from ois_lightning.cli import main
from ois_lightning.grids.table import build_table, row_curves
from ois_lightning.grids.table_spec import load_table_spec
from ois_lightning.protocol.metrics import METRIC_GOALS
from ois_lightning.protocol.results import collect

from .helpers import QUICK, TABLE4, TINY_YAML, wandb_records, write_run

LOCKED_OUTPUT_DIR = "runs/${table}/${row}/seed${seed}"  # as sweeps/table4.yaml passes it


def records(folder: Path) -> dict[str, list]:
    """The records of the one offline run under ``folder``/wandb, by record type, once W&B's service has written
    the run's ``exit`` record (it writes the file on its own after ``finish`` returns)."""
    (path,) = folder.glob("wandb/offline-run-*/run-*.wandb")
    for _ in range(300):
        found: dict[str, list] = {}
        for record in wandb_records(path):
            kind = record.WhichOneof("record_type")
            found.setdefault(kind, []).append(getattr(record, kind))
        if "exit" in found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"{path}: no exit record after 30 s")


def history(found: dict[str, list]) -> dict[str, Any]:
    """Every logged key -> its last value; a logged dict (a table's media reference) W&B splits into one item
    per field (``nested_key`` [key, field]) is put back together."""
    logged: dict[str, Any] = {}
    for row in found["history"]:
        for item in row.item:
            path, value = [item.key] if item.key else list(item.nested_key), json.loads(item.value_json)
            if len(path) == 1:
                logged[path[0]] = value
            else:
                logged.setdefault(path[0], {})[path[1]] = value
    return logged


@pytest.fixture
def offline(tmp_path: Path, monkeypatch):
    """Offline W&B with its staging and cache folders in tmp_path; W&B's settings read afresh (as in a new
    process) before and after."""
    wandb.teardown()
    monkeypatch.setenv("WANDB_MODE", "offline")
    for name in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_ARTIFACT_DIR", "WANDB_CONFIG_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb_home" / name.lower()))
    for name in ("WANDB_SWEEP_ID", "WANDB_RUN_ID", "WANDB_SWEEP_PARAM_PATH"):
        monkeypatch.delenv(name, raising=False)
    yield monkeypatch
    wandb.teardown()


def test_training_run_declares_what_it_logs_links_its_artifacts_and_resolves_sweep_keys(tmp_path: Path, offline):
    """A training run started by a (simulated) sweep agent whose parameters lock ``output_dir`` unresolved."""
    params = tmp_path / "sweep_params.yaml"
    params.write_text(f"output_dir:\n  value: {LOCKED_OUTPUT_DIR}\nseed:\n  value: 0\n")
    offline.setenv("WANDB_SWEEP_ID", "sweep123")
    offline.setenv("WANDB_RUN_ID", "agentrun")
    offline.setenv("WANDB_SWEEP_PARAM_PATH", str(params))
    out = tmp_path / "run"
    assert main(["train", TINY_YAML, *QUICK, "logger.kind=wandb", "train.max_steps=2", "train.val_every_n_steps=2",
                 "logger.log_images=0", "table=table4", "row=full", "seed=0", f"output_dir={out}"]) == 0
    found = records(out)

    logged = set(history(found))
    declared = {m.name: m for m in found["metric"] if m.name}
    assert set(declared) <= logged, sorted(set(declared) - logged)  # nothing declared that is never logged
    assert {k for k in declared if k.startswith("val/")} == {"val/NoC90", "val/5-mIoU"}
    tested = {k for k in logged if k.startswith("test/") and k.split("/")[-1] in METRIC_GOALS}
    assert tested and {k for k in declared if k.startswith("test/")} == tested
    assert set(declared) - {"trainer/global_step"} == {k for k in declared if k.split("/")[-1] in METRIC_GOALS}
    for name, metric in declared.items():
        if name == "trainer/global_step":  # the x-axis, logged with every row
            continue
        lower = METRIC_GOALS[name.split("/")[-1]] == "lower"
        assert (metric.summary.min, metric.summary.max) == (lower, not lower), name

    artifacts = {a.type: a for a in found["artifact"]}
    assert set(artifacts) == {"model", "results", "run_table"}  # run_table: W&B's own, for test/objects
    assert [a.type for a in found["artifact"]].count("model") == 1
    model, results = artifacts["model"], artifacts["results"]
    assert model.name == "table4-full-seed0-model" and results.name == "table4-full-seed0-results"
    meta = json.loads(results.metadata)
    assert meta["checkpoint"] == model.name and meta["checkpoint_digest"] == model.digest
    (entry,) = model.manifest.contents
    ckpt = (out / "checkpoints" / "last.ckpt").read_bytes()
    assert entry.path == "last.ckpt" and entry.size == len(ckpt)
    assert entry.digest == base64.b64encode(hashlib.md5(ckpt).digest()).decode()  # the file evaluated
    assert json.loads(model.metadata)["step"] == 2
    assert [c.path for c in results.manifest.contents] == ["results.json"]

    config = {i.key: json.loads(i.value_json) for c in found["config"] for i in c.update}
    config.update({i.key: json.loads(i.value_json) for r in found["run"] for i in r.config.update})
    assert config["output_dir"] == LOCKED_OUTPUT_DIR  # the sweep's value stays: its grid matches runs by it
    assert config["resolved"] == {"output_dir": str(out)}  # what the run used, beside it
    assert config["seed"] == 0 and config["table"] == "table4"


def test_ois_table_wandb_overlays_the_rows_in_one_chart(tmp_path: Path, offline):
    rng = np.random.default_rng(0)
    for row in ("full", "wo_order", "wo_dense"):
        for seed in (0, 1):
            write_run(tmp_path, row, seed, {f"o{i}": rng.uniform(0, 1, 20).round(3).tolist() for i in range(3)})
    assert main(["table", str(tmp_path), "--n-boot", "10", "--allow-partial"]) == 0
    assert not (tmp_path / "wandb").exists()  # offline and no --wandb: nothing logged
    assert main(["table", str(tmp_path), "--wandb", "--n-boot", "10", "--allow-partial"]) == 0
    found = records(tmp_path)
    logged = history(found)
    assert logged["table4"]["_type"] == "table-file"
    chart = logged["table4/miou_vs_clicks_table"]  # the data of the custom chart table4/miou_vs_clicks
    (files,) = tmp_path.glob("wandb/offline-run-*/files")
    data = json.loads((files / chart["path"]).read_text())
    assert sorted(data["columns"]) == ["lineKey", "lineVal", "step"]
    points = [dict(zip(data["columns"], r)) for r in data["data"]]
    runs, _ = collect(tmp_path)
    expected = row_curves(build_table(load_table_spec(TABLE4), runs, n_boot=10), runs)
    assert [label for label, _ in expected] == ["Full", "w/o order", "w/o dense"]  # the spec's labels, its order
    for label, curve in expected:
        mine = [p for p in points if p["lineKey"] == label]
        assert [p["step"] for p in mine] == list(range(1, 21))
        np.testing.assert_allclose([p["lineVal"] for p in mine], curve)
    with pytest.raises(SystemExit, match="2"):  # argparse: not both
        main(["table", str(tmp_path), "--wandb", "--no-wandb"])
