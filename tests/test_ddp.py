"""Two-process CPU DDP training: ddp_spawn in-process and the real `ddp` argv path (Lightning re-runs our
argv for rank 1), each producing exactly one W&B offline run that holds the logged config."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ois_lightning.cli import main

from .helpers import REPO, TINY_RUN, run_warm


CONFIG = "experiments/table4/wo_object.yaml"
DDP_RUN = [o for o in TINY_RUN if not o.startswith(("logger.", "train.devices", "train.strategy"))] + [
    "train.devices=2", "train.max_steps=2", "train.max_epochs=1", "logger.kind=wandb", "data.layered.train_length=8",
]


def logged_config(run_file: bytes) -> dict:
    """Config items of an offline ``run-*.wandb`` file: protobuf ConfigItem = 0x0a len key, 0x82 0x01 len json."""
    items = {}
    for m in re.finditer(rb"\n([\x01-\x7f])([A-Za-z_][\w.-]*)\x82\x01", run_file):
        if len(m.group(2)) != m.group(1)[0]:
            continue
        pos, length, shift = m.end(), 0, 0
        while True:  # varint length of value_json
            byte = run_file[pos]
            pos, length, shift = pos + 1, length | (byte & 0x7F) << shift, shift + 7
            if byte < 0x80:
                break
        try:
            items[m.group(2).decode()] = json.loads(run_file[pos:pos + length])
        except ValueError:
            continue
    return items


def check_single_offline_run_with_config(out: Path) -> None:
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["train"]["devices"] == 2 and results["config"]["row"] == "wo_object"
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs  # only rank 0 created a W&B run
    run_file = next(runs[0].glob("run-*.wandb"))
    deadline = time.monotonic() + 120  # wandb-core may still be flushing what the (spawned) rank 0 logged
    while "train" not in logged_config(run_file.read_bytes()) and time.monotonic() < deadline:
        time.sleep(1)
    data = run_file.read_bytes()
    assert b"table4-wo_object-seed0" in data  # run name from run_identity
    config = logged_config(data)  # the resolved config was logged as hyper-parameters
    assert (config["table"], config["row"], config["seed"]) == ("table4", "wo_object", 0)
    assert config["train"]["devices"] == 2 and config["model"]["object"]["enabled"] is False
    assert config["model"]["sparse"]["dim"] == 32 and config["output_dir"] == str(out)


@pytest.mark.slow
def test_ddp_spawn_in_process(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "spawn"
    assert main(["train", CONFIG, *DDP_RUN, "train.strategy=ddp_spawn", f"output_dir={out}"]) == 0
    check_single_offline_run_with_config(out)


@pytest.mark.slow
@pytest.mark.parametrize("start", ["cold", "warm"])
def test_ddp_subprocess_argv_path(tmp_path: Path, start: str):
    """`python -m ois_lightning train seed=0 config=...` (W&B's argv order): rank 1 is Lightning's re-run of it;
    also with rank 0 started warm, as `ois sweep --local` starts a CPU point (utils/warm_start.py)."""
    out = tmp_path / "ddp"
    env = dict(os.environ, WANDB_MODE="offline")
    argv = [sys.executable, "-m", "ois_lightning", "train", "seed=0", f"config={CONFIG}", *DDP_RUN,
            "train.strategy=ddp", f"output_dir={out}"]
    if start == "warm":
        proc = run_warm(argv, env, timeout=1200)
    else:
        proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in proc.stdout + proc.stderr
    check_single_offline_run_with_config(out)
