"""Shared fixtures: tiny configs and paths."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from ois_lightning.config.load import ENV_REF, LOCAL_ENV

from .helpers import FAKE_TRAIN, REPO, SHARED, write_sweep

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# `make test` runs two pytest-xdist workers on the 2-core machine: each keeps one core (and so do the `ois`
# processes a test starts, through OMP_NUM_THREADS), so the two never oversubscribe the cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
else:
    torch.set_num_threads(2)

# tests never see this machine's paths: no experiments/local.yaml, none of base.yaml's ${oc.env:...} variables
os.environ[LOCAL_ENV] = ""
for _var in ENV_REF.findall((REPO / "experiments" / "base.yaml").read_text()):
    os.environ.pop(_var, None)


@pytest.fixture
def random_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A local layer asking for random weights: table rows name published networks, tests have no weights files."""
    local = tmp_path / "local.yaml"
    local.write_text("model: {backbone: {random_init: true}}\n")
    monkeypatch.setenv(LOCAL_ENV, str(local))


@pytest.fixture
def grabcut_root() -> Path:
    root = SHARED / "datasets" / "GrabCut"
    if not root.is_dir():
        pytest.skip(f"real GrabCut data not present at {root}")
    return root


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The ``slow`` end-to-end tests run first, so that with two workers the longest ones do not start last and
    run alone at the end; tests marked ``gpu`` are skipped where torch sees no CUDA device."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: the order otherwise kept
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A sweep of two Table 4 rows x two seeds whose command is a stand-in for `ois train` (FAKE_TRAIN), and
    the argv lists it was called with."""
    script = tmp_path / "fake_train.py"
    script.write_text(FAKE_TRAIN)
    calls = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_CALLS", str(calls))
    sweep = write_sweep(tmp_path, ["${env}", "${interpreter}", str(script), "train", "${args_no_hyphens}"])

    def called() -> list[list[str]]:
        return [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []

    return sweep, called
