"""Shared fixtures: tiny configs and paths."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from ois_lightning.config.load import ENV_REF, LOCAL_ENV

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
torch.set_num_threads(2)

REPO = Path(__file__).resolve().parents[1]
# tests never see this machine's paths: no experiments/local.yaml, none of base.yaml's ${oc.env:...} variables
os.environ[LOCAL_ENV] = ""
for _var in ENV_REF.findall((REPO / "experiments" / "base.yaml").read_text()):
    os.environ.pop(_var, None)
SHARED = REPO.parent / "shared"
TINY = ["model.backbone.name=tiny", "model.input_size=112", "model.sparse.dim=32", "model.sparse.num_heads=4",
        "model.sparse.ffn_dim=64"]


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
    """Tests marked ``gpu`` are skipped where torch sees no CUDA device."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)
