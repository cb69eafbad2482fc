"""What real offline W&B runs hold, read back from their ``run-*.wandb`` files with W&B's own ``Record``
(helpers.wandb_records) and from the files W&B wrote beside them: the metrics a training run declares are the ones
it logs, its checkpoint and results artifacts name each other, config keys a sweep locked get their resolved value
beside them; its parameter counts, validation images, per-object table and mIoU curves; an ``ois eval`` run's
table and results; and ``ois table --wandb`` overlays the rows' curves in one chart. No login, no network."""
from __future__ import annotations

import base64
import hashlib
import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import wandb

from ois_lightning.cli import main
from ois_lightning.grids.table import build_table, row_curves
from ois_lightning.grids.table_spec import load_table_spec
from ois_lightning.protocol.metrics import METRIC_GOALS
from ois_lightning.protocol.results import collect
from ois_lightning.tracking.wandb_results import OBJECT_COLUMNS
from ois_lightning.tracking.wandb_run import WANDB_RUN_ID

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


def unflatten(items: Any) -> dict[str, Any]:
    """W&B's key/value items (``key``, or ``nested_key`` [key, field, ...] for a value W&B split up) as a dict."""
    found: dict[str, Any] = {}
    for item in items:
        *path, last = [item.key] if item.key else list(item.nested_key)
        node = found
        for part in path:
            node = node.setdefault(part, {})
        node[last] = json.loads(item.value_json)
    return found


def history(found: dict[str, list]) -> dict[str, Any]:
    """Every logged key -> its last value (a logged media or table: W&B's reference to its file)."""
    logged: dict[str, Any] = {}
    for row in found["history"]:
        logged.update(unflatten(row.item))
    return logged


def run_config(found: dict[str, list]) -> dict[str, Any]:
    """The run config: the run record's, then every config record's updates (``_wandb.visualize``: the charts)."""
    return unflatten([i for r in found["run"] for i in r.config.update] +
                     [i for c in found["config"] for i in c.update])


def run_files(folder: Path) -> Path:
    """The ``files`` folder of the one offline run under ``folder``/wandb: logged media at their ``path``."""
    (files,) = folder.glob("wandb/offline-run-*/files")
    return files


def logged_table(found: dict[str, list], key: str) -> tuple[dict, dict[str, Path]]:
    """The table logged under ``key`` as W&B keeps it, with its media, in a ``run_table`` artifact (the history's
    ``artifact_path``: wandb-client-artifact://<artifact client_id>/<entry>), and that artifact's files (entry
    path -> the staged copy ``wandb sync`` uploads)."""
    client_id, entry = history(found)[key]["artifact_path"].removeprefix("wandb-client-artifact://").split("/", 1)
    (artifact,) = [a for a in found["artifact"] if a.client_id == client_id]
    files = {c.path: Path(c.local_path) for c in artifact.manifest.contents}
    return json.loads(files[entry].read_text()), files


@contextmanager
def offline_wandb(home: Path) -> Iterator[pytest.MonkeyPatch]:
    """Offline W&B with its staging and cache folders under ``home``; W&B's settings read afresh (as in a new
    process) before and after."""
    wandb.teardown()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("WANDB_MODE", "offline")
        for name in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_ARTIFACT_DIR", "WANDB_CONFIG_DIR"):
            env.setenv(name, str(home / name.lower()))
        for name in ("WANDB_SWEEP_ID", "WANDB_RUN_ID", "WANDB_SWEEP_PARAM_PATH"):
            env.delenv(name, raising=False)
        try:
            yield env
        finally:
            wandb.teardown()


@pytest.fixture
def offline(tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    with offline_wandb(tmp_path / "wandb_home") as env:
        yield env


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list]]:
    """One training run + final evaluation that logs images (2 validation objects, the worst 2 of 3 test
    objects): its output_dir and its records."""
    tmp = tmp_path_factory.mktemp("trained")
    out = tmp / "run"
    with offline_wandb(tmp / "wandb_home"):
        assert main(["train", TINY_YAML, *QUICK, "logger.kind=wandb", "train.max_steps=2", "train.val_every_n_steps=2",
                     "logger.log_images=2", "data.layered.test_length=2", "eval.max_objects=3",
                     f"output_dir={out}"]) == 0
        return out, records(out)


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

    config = run_config(found)
    assert config["output_dir"] == LOCKED_OUTPUT_DIR  # the sweep's value stays: its grid matches runs by it
    assert config["resolved"] == {"output_dir": str(out)}  # what the run used, beside it
    assert config["seed"] == 0 and config["table"] == "table4"


def test_training_run_logs_params_images_the_object_table_and_curves(trained):
    """Parameter counts, validation images, the per-object table (images for the worst objects by NoC90), the
    mIoU-vs-clicks chart and PNG, checked against the run's results.json."""
    out, found = trained
    (run,) = found["run"]
    assert found["exit"][0].exit_code == 0 and (out / WANDB_RUN_ID).read_text() == run.run_id
    params = run_config(found)["params"]
    assert params["all"]["total"] > params["all"]["trainable"] > 0  # the frozen encoder
    assert params["seg_head"]["trainable"] == params["seg_head"]["total"] > 0
    assert sum(v["total"] for k, v in params.items() if k != "all") == params["all"]["total"]

    logged, files = history(found), run_files(out)
    examples, orders = logged["val/examples"], logged["val/order_maps"]
    assert examples["_type"] == orders["_type"] == "images/separated"  # a list of images
    assert examples["count"] == orders["count"] == 2
    pngs = examples["filenames"] + orders["filenames"] + [m["path"] for ms in examples["all_masks"] for m in ms.values()]
    assert len(pngs) == 8 and all((files / p).read_bytes().startswith(b"\x89PNG") for p in pngs)
    assert [set(masks) for masks in examples["all_masks"]] == [{"ground_truth", "prediction"}] * 2

    results = json.loads((out / "results.json").read_text())
    ids, ious = results["per_object"]["ids"], results["per_object"]["ious"]
    table, media = logged_table(found, "test/objects")
    rows = table["data"]
    assert table["columns"] == OBJECT_COLUMNS and len(rows) == len(ids) == 3
    assert [r[0] for r in rows] == ids and {r[1] for r in rows} == {"layered"}
    for row, curve in zip(rows, ious):
        assert row[5] == pytest.approx(100 * curve[0]) and row[6] == pytest.approx(100 * curve[4]) and row[7] is None
    worst = sorted(range(len(rows)), key=lambda i: (-rows[i][3], ious[i][-1]))[:2]  # by NoC90, then final IoU
    assert [i for i, r in enumerate(rows) if r[-1] is not None] == sorted(worst)
    for image in (rows[i][-1] for i in worst):
        assert image["_type"] == "image-file" and set(image["masks"]) == {"ground_truth", "prediction"}
        assert {image["path"], *(m["path"] for m in image["masks"].values())} <= set(media)

    chart = run_config(found)["_wandb"]["visualize"]["test/miou_curve"]["panel_config"]
    assert chart["panelDefId"] == "wandb/line/v0" and chart["fieldSettings"]["x"] == "clicks"
    assert '"test/miou_curve_table"' in json.dumps(chart["userQuery"])  # the chart's data: the table below
    curve = json.loads((files / logged["test/miou_curve_table"]["path"]).read_text())
    assert curve["columns"] == ["clicks", "mIoU"] and [r[0] for r in curve["data"]] == [1, 2, 3, 4, 5]
    np.testing.assert_allclose([r[1] for r in curve["data"]], 100 * np.mean(ious, axis=0))
    png = logged["test/miou_vs_clicks"]
    assert png["_type"] == "image-file"
    assert (files / png["path"]).read_bytes() == (out / "miou_vs_clicks.png").read_bytes()
    assert logged["test/NoC90"] >= 1


def test_validation_metrics_reach_wandb_beside_the_images(trained):
    """A run that logs validation images keeps its validation metrics too, in the same history row (one step):
    W&B drops a row whose step goes back."""
    _, found = trained
    rows = [unflatten(row.item) for row in found["history"]]
    val = [r for r in rows if "val/NoC90" in r]
    assert len(val) == 1 and {"val/5-mIoU", "val/examples", "val/order_maps"} <= set(val[0])
    assert val[0]["trainer/global_step"] == 1  # the validation after step 2 at Lightning's step: steps counted from 0


def test_ois_eval_run_logs_the_table_and_results(tmp_path: Path, offline):
    out = tmp_path / "eval"
    assert main(["eval", TINY_YAML, *QUICK, "logger.kind=wandb", "model.backbone.random_init=true",
                 "logger.log_images=0", f"output_dir={out}"]) == 0
    found = records(out)
    assert found["run"][0].job_type == "eval"
    assert not (out / WANDB_RUN_ID).exists()  # the training run's id is left alone
    table, media = logged_table(found, "test/objects")
    assert table["data"] and all(r[-1] is None for r in table["data"])  # log_images=0: no images
    assert list(media) == ["test/objects.table.json"]
    assert {a.type for a in found["artifact"]} == {"run_table", "results"}  # no checkpoint evaluated: no model
    assert run_config(found)["params"]["all"]["total"] > 0


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
    data = json.loads((run_files(tmp_path) / chart["path"]).read_text())
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
