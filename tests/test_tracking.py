"""The tracking layer (ois_lightning.tracking.wandb_run): W&B's mode and run ids (on real offline runs), sweep
files, drawing, parameter counts; what a run holds is checked in test_tracking_offline.py. A recorder stands in
for ``wandb.init`` only in the tests of online mode: an online run needs a login and a network, which tests lack."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import wandb
import yaml

from ois_lightning.tracking import drawing, wandb_results, wandb_run as tracking
from ois_lightning.cli import main
from ois_lightning.protocol.clicks import Click
from ois_lightning.config.schema import ConfigError
from ois_lightning.config.load import load_config
from ois_lightning.protocol.metrics import METRIC_GOALS
from ois_lightning.grids.table_spec import default_table_path, load_table_spec
from ois_lightning.lit.loggers import build_logger

from .helpers import REPO, TINY


TINY_YAML = str(REPO / "experiments" / "tiny.yaml")
QUICK = TINY + ["data.layered.size=112", "data.batch_size=2", "data.min_object_area=200",
                "data.layered.val_length=1", "data.layered.test_length=2", "train.val_objects=1",
                "eval.max_objects=3", "clicks.max_eval=5", "train.log_every_n_steps=1", "logger.kind=wandb"]


class Recorder:
    """Stands in for ``wandb.init`` in the tests of online mode, which a real run cannot enter without a login and
    a network: keeps each call's arguments and what is logged to the run it returns."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.runs: list[FakeRun] = []
        monkeypatch.setattr(wandb, "init", self)

    def __call__(self, **kwargs: object) -> "FakeRun":
        run = FakeRun(kwargs, f"run{len(self.runs)}")
        self.runs.append(run)
        return run


class FakeRun:
    """A run started by :class:`Recorder`: its ``wandb.init`` arguments, what is logged to it, whether it ended."""

    def __init__(self, kwargs: dict, run_id: str) -> None:
        self.kwargs = kwargs
        self.id = run_id  # start_run writes it to output_dir
        self.logged: dict = {}
        self.finished = False

    def __enter__(self) -> "FakeRun":
        return self

    def __exit__(self, *exc: object) -> None:
        self.finish()

    def log(self, data: dict, **_: object) -> None:
        self.logged.update(data)

    def define_metric(self, *_: object, **__: object) -> None:
        """``start_run`` declares the step axis: nothing to keep."""

    def finish(self) -> None:
        self.finished = True


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    return Recorder(monkeypatch)


def cfg_of(out: Path, *extra: str):
    return load_config(TINY_YAML, [*QUICK, f"output_dir={out}", *extra])


# ---------------------------------------------------------------------------------------------- mode, ids
def test_wandb_mode_honours_an_explicit_mode(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    monkeypatch.delenv("NETRC", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert tracking.wandb_mode() == "offline"  # unset and no key anywhere: never a login prompt
    (tmp_path / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password abc123\n")
    (tmp_path / ".netrc").chmod(0o600)
    assert tracking.wandb_mode() == "online"  # `wandb login` wrote the netrc entry
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org")
    assert tracking.wandb_mode() == "offline"  # logged in to another host only
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert tracking.wandb_mode() == "online"
    monkeypatch.delenv("WANDB_API_KEY")
    for mode, expected in (("online", "online"), ("offline", "offline"), ("dryrun", "offline"),
                           ("disabled", "disabled"), ("ONLINE", "online")):
        monkeypatch.setenv("WANDB_MODE", mode)
        assert tracking.wandb_mode() == expected  # explicit: no key needed, nothing overridden
    monkeypatch.setenv("WANDB_MODE", "ofline")
    with pytest.raises(ConfigError, match="WANDB_MODE=ofline"):
        tracking.wandb_mode()


def test_explicit_online_is_not_turned_offline(tmp_path: Path, monkeypatch, recorder: Recorder):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "online")
    assert build_logger(cfg_of(tmp_path / "run"))
    assert recorder.runs[0].kwargs["mode"] == "online"
    monkeypatch.delenv("WANDB_MODE")
    build_logger(cfg_of(tmp_path / "run2"))
    assert recorder.runs[1].kwargs["mode"] == "offline"  # unset and no key: offline


def test_sweep_agent_run_id_is_the_one_wandb_used(tmp_path: Path, monkeypatch):
    """Real offline runs: under a (simulated) agent W&B ignores any id we pass, so none is passed and the id
    W&B chose is written; resuming that point outside the agent continues the same run. Each step is a new
    process in real use: ``wandb.teardown`` drops the settings W&B read from the environment."""
    out = tmp_path / "point"
    wandb.teardown()
    monkeypatch.setenv("WANDB_SWEEP_ID", "sweep123")
    monkeypatch.setenv("WANDB_RUN_ID", "agentrun")
    logger = build_logger(cfg_of(out))
    assert logger.experiment.id == "agentrun" == (out / tracking.WANDB_RUN_ID).read_text()
    logger.experiment.finish()
    wandb.teardown()
    monkeypatch.delenv("WANDB_SWEEP_ID")
    monkeypatch.delenv("WANDB_RUN_ID")
    resumed = build_logger(cfg_of(out, "ckpt_path=last"))
    assert resumed.experiment.id == "agentrun" == (out / tracking.WANDB_RUN_ID).read_text()
    resumed.experiment.finish()
    wandb.teardown()
    fresh = build_logger(cfg_of(out))  # no ckpt_path: a new run, its id written
    assert fresh.experiment.id != "agentrun" and (out / tracking.WANDB_RUN_ID).read_text() == fresh.experiment.id
    fresh.experiment.finish()
    wandb.teardown()


def test_resume_under_a_sweep_agent_asks_wandb_for_no_old_run(tmp_path: Path, monkeypatch, capsys):
    """A real offline run: W&B drops an id passed under an agent but keeps ``resume``, which is asked for only with
    an id; so the run's settings show that the old run was not asked for, and the agent's id is written."""
    out = tmp_path / "point"
    out.mkdir()
    (out / tracking.WANDB_RUN_ID).write_text("old00001")
    wandb.teardown()
    monkeypatch.setenv("WANDB_SWEEP_ID", "sweep123")
    monkeypatch.setenv("WANDB_RUN_ID", "agentrun")
    run = build_logger(cfg_of(out, "ckpt_path=last")).experiment
    assert run.settings.resume is None and run.id == "agentrun" == (out / tracking.WANDB_RUN_ID).read_text()
    run.finish()
    wandb.teardown()
    assert "resuming under a sweep agent" in capsys.readouterr().err


def test_disabled_means_no_logger_and_no_files(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    out = tmp_path / "run"
    assert build_logger(cfg_of(out)) is False and tracking.eval_logger(cfg_of(out)) is None  # no run started
    assert main(["train", TINY_YAML, *QUICK, "train.max_steps=1", f"output_dir={out}"]) == 0
    assert (out / "results.json").is_file()
    assert not (out / "wandb").exists() and not (out / tracking.WANDB_RUN_ID).exists()


# ---------------------------------------------------------------------------------------------- table
def test_table_is_logged_only_online(tmp_path: Path, monkeypatch, recorder: Recorder):
    import csv
    import io

    from ois_lightning.grids.table import build_table, to_csv

    table = build_table(load_table_spec(default_table_path("table4")), [])
    header, *rows = csv.reader(io.StringIO(to_csv(table)))
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert not wandb_results.log_table("table4", header, rows, [], "p", tmp_path) and not recorder.runs
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert not wandb_results.log_table("table4", header, rows, [], "p", tmp_path, always=True) and not recorder.runs
    monkeypatch.setenv("WANDB_MODE", "online")
    assert wandb_results.log_table("table4", header, rows, [], "p", tmp_path) == "online"
    (run,) = recorder.runs
    assert run.kwargs["job_type"] == "table" and run.finished
    assert run.logged["table4"].columns[0] == "row" and len(run.logged["table4"].data) == len(table.rows)


@pytest.mark.parametrize("path", sorted((REPO / "sweeps").glob("table*.yaml")), ids=lambda p: p.stem)
def test_sweep_files_rank_runs_by_the_tables_first_metric(path: Path):
    data = yaml.safe_load(path.read_text())
    spec = load_table_spec(REPO / "experiments" / path.stem / "table.yaml")
    prefix, metric = data["metric"]["name"].split("/")
    assert prefix == "test" and metric == spec.metrics[0]  # test_prefix: the key with one test dataset
    assert data["metric"]["goal"] == {"lower": "minimize", "higher": "maximize"}[METRIC_GOALS[metric]]


def test_draw_clicks_colours():
    image = np.zeros((40, 40, 3), np.uint8)
    drawn = drawing.draw_clicks(image, [Click(10, 10, True), Click(30, 30, False)])
    assert tuple(drawn[10, 10]) == drawing.POSITIVE and tuple(drawn[30, 30]) == drawing.NEGATIVE
    assert not image.any()  # the input is left alone


def test_parameter_counts_per_part():
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    model[0].requires_grad_(False)
    counts = tracking.parameter_counts(model)
    assert counts == {"all": {"total": 13, "trainable": 4}, "0": {"total": 9, "trainable": 0},
                      "1": {"total": 4, "trainable": 4}}


@pytest.mark.parametrize("clicks", ["pos", "pos+neg"])
def test_logged_order_map_is_the_models_own(clicks: str):
    """The validation images' order map uses the model's click types (Table 9): with ``order.clicks=pos`` a
    negative first click has no map (all zero), with pos+neg it has Eq. 2's; a positive click has Eq. 1's."""
    from ois_lightning.data.splits import build_split
    from ois_lightning.model import build_model
    from ois_lightning.protocol.predictor import predictor_for

    cfg = load_config(TINY_YAML, [*QUICK, "model.backbone.random_init=true", f"model.order.clicks={clicks}"])
    model = build_model(cfg.model, cfg.data.depth).eval()
    predictor = predictor_for(model, cfg)
    sample = build_split(cfg, "layered", "test")[0]
    predictor.set_image(sample)
    ys, xs = np.nonzero(sample.masks[0] == 1)
    positive = drawing.first_click_order_map(predictor, Click(int(ys[0]), int(xs[0]), True))
    negative = drawing.first_click_order_map(predictor, Click(0, 0, False))
    assert positive.shape == negative.shape == sample.masks[0].shape
    assert positive.max() > 0  # the depth varies over the scene, so |R - R(click)| does too
    assert (negative.max() > 0) == (clicks == "pos+neg")
    off = load_config(TINY_YAML, [*QUICK, "model.backbone.random_init=true", "model.order.enabled=false",
                                  "model.depth_encoder.enabled=true"])
    without_order = predictor_for(build_model(off.model, off.data.depth).eval(), off)
    without_order.set_image(sample)
    assert without_order.enc.depth is not None  # depth is there, the model just does not use order maps
    assert drawing.first_click_order_map(without_order, Click(0, 0, False)) is None
