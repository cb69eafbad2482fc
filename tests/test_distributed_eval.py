"""Sharded evaluation (ois_lightning.utils.parallel): 2 gloo processes give the one-process results.json (timing fields
aside), the max_objects prefix is the one-process one, and a rank's journal resumes an interrupted shard."""
from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ois_lightning.protocol import evaluate as evaluate_module
from ois_lightning.utils import parallel, warm_start
from ois_lightning.cli import main
from ois_lightning.data import LayeredScenes, Sample
from ois_lightning.protocol.evaluate import Predictor, evaluate
from ois_lightning.model import build_model

from .helpers import REPO, TINY_RUN, TINY_YAML, run_warm, tiny_cfg


TIMING = {"SPC", "encoder_s_per_image", "click_s_per_click"}  # wall-clock: the only fields allowed to differ
EVAL = [*TINY_RUN, "model.backbone.random_init=true", "data.layered.test_length=5", "eval.max_objects=5",
        "clicks.max_eval=5", "eval.threads=1"]  # 5 objects: the sharded run cuts an image short as one process does


@pytest.fixture
def keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(argv: list[str], logs: Path, world_size: int = 2) -> list[str]:
    """``python -m ois_lightning *argv`` as ``world_size`` torchrun-style processes on this machine (gloo), started
    warm where they can be (:mod:`ois_lightning.utils.warm_start`), each rank's output in ``logs``/rank<r>.log ->
    each rank's output."""
    port = str(free_port())
    procs = []
    logs.mkdir(parents=True, exist_ok=True)
    for rank in range(world_size):
        env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=port, RANK=str(rank), LOCAL_RANK=str(rank),
                   WORLD_SIZE=str(world_size), LOCAL_WORLD_SIZE=str(world_size), WANDB_MODE="offline")
        procs.append(warm_start.popen([sys.executable, "-m", "ois_lightning", *argv], env, logs / f"rank{rank}.log",
                                      cwd=REPO))
    codes = [p.wait(timeout=600) for p in procs]
    outputs = [(logs / f"rank{rank}.log").read_text() for rank in range(world_size)]
    assert codes == [0] * world_size, "\n".join(o[-3000:] for o in outputs)
    return outputs


def without_timing(results: dict) -> dict:
    assert TIMING <= set(results["summary"])
    return {**results, "summary": {k: v for k, v in results["summary"].items() if k not in TIMING}}


def test_shards_cover_the_one_process_objects(monkeypatch):
    """Image i to rank i % 2; with max_objects the shards hold exactly the objects one process evaluates (the
    image it cuts short keeps its first objects), skipped (empty) samples included."""
    counts = [2, 0, 3, 1, 0, 2]  # objects per image; empty samples are visited (and skipped) too
    scenes = [Sample(np.zeros((4, 4, 3), np.uint8), np.zeros((n, 4, 4), np.int8), None, id=f"s{i}")
              for i, n in enumerate(counts)]
    for max_objects in (None, 1, 2, 4, 5, 7, sum(counts) - 1, 100):
        one, cap = parallel.local_samples(scenes, max_objects)
        expected, taken = [], 0
        for s in one:  # the one-process rule of image_records
            if cap is not None and taken >= cap:
                break
            keep = len(s.masks) if cap is None else min(len(s.masks), cap - taken)
            expected.append((s.id, keep))
            taken += keep
        shards = []
        for rank in range(2):
            monkeypatch.setattr(parallel, "world", lambda rank=rank: (rank, 2))
            samples, local_cap = parallel.local_samples(scenes, max_objects)
            assert local_cap is None
            shards.append([(s.id, len(s.masks)) for s in samples])
        monkeypatch.undo()
        assert parallel.interleave(shards) == expected, max_objects
        assert [i for i, _ in shards[1]] == [scenes[i].id for i in range(1, len(expected), 2)]


def test_ois_eval_on_two_processes_equals_one(tmp_path, keep_threads):
    """`ois eval` under a torchrun-style env (2 gloo processes): results.json equal to one process's to the
    last digit, timing fields aside; no journal left."""
    out = tmp_path / "out"
    argv = ["eval", TINY_YAML, *EVAL, f"output_dir={out}"]
    assert main(argv) == 0
    one = json.loads((out / "results.json").read_text())
    (out / "results.json").unlink()
    rank0, rank1 = run_ranks(argv, tmp_path / "logs")
    assert "wrote " in rank0 and "wrote " not in rank1  # rank 1 evaluated its shard only
    two = json.loads((out / "results.json").read_text())
    assert two["summary"]["num_objects"] == 5 and len(two["per_object"]["ids"]) == 5
    assert without_timing(two) == without_timing(one)
    assert not list(out.glob("eval_journal*"))


def test_interrupted_shard_resumes_from_its_rank_journal(tmp_path, monkeypatch):
    """Rank 1 of 2 (simulated): its journal is eval_journal.rank1-of-2.jsonl; after a crash the rerun encodes
    only the rest of its shard and gives the uninterrupted shard's curves."""
    cfg = tiny_cfg("clicks.max_eval=5")
    torch.manual_seed(0)
    model = build_model(cfg.model)
    scenes = LayeredScenes(6, size=112, seed=3, num_objects=(1, 2))
    monkeypatch.setattr(parallel, "world", lambda: (1, 2))
    monkeypatch.setattr(evaluate_module, "gather_records", lambda records: records)  # this rank's shard only
    reference = evaluate(model, scenes, cfg, progress=False)
    encoded: list[str] = []
    set_image = Predictor.set_image

    def crash_on_second(self, sample):
        encoded.append(sample.id)
        if len(encoded) == 2 and crash:
            raise KeyboardInterrupt("simulated interruption")
        set_image(self, sample)

    monkeypatch.setattr(Predictor, "set_image", crash_on_second)
    journal = tmp_path / "eval_journal.jsonl"
    crash = True
    with pytest.raises(KeyboardInterrupt):
        evaluate(model, scenes, cfg, progress=False, journal=journal)
    assert not journal.exists() and len((tmp_path / "eval_journal.rank1-of-2.jsonl").read_text().splitlines()) == 2
    crash, encoded[:] = False, []
    resumed = evaluate(model, scenes, cfg, progress=False, journal=journal)
    assert encoded == [scenes[3].id, scenes[5].id]  # rank 1's shard is images 1, 3, 5; image 1 was journaled
    assert resumed.ids == reference.ids and resumed.ious == reference.ious
    assert all(i.split("#")[0] in {scenes[k].id for k in (1, 3, 5)} for i in resumed.ids)


@pytest.mark.slow
def test_final_evaluation_after_ddp_training_is_sharded(tmp_path, keep_threads):
    """2-process CPU DDP training (gloo): both ranks evaluate their shard after fit and rank 0 writes a
    results.json equal to a one-process `ois eval` of the final checkpoint (timing fields, and the config's
    train.devices / strategy, aside)."""
    out = tmp_path / "ddp"
    train = [o for o in EVAL if not o.startswith(("train.devices", "train.strategy"))] + [
        "train.devices=2", "train.strategy=ddp", "train.max_steps=1", "train.max_epochs=1", "train.threads=1",
        "data.layered.train_length=4", f"output_dir={out}"]
    env = dict(os.environ, WANDB_MODE="offline")
    proc = run_warm([sys.executable, "-m", "ois_lightning", "train", TINY_YAML, *train], env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in proc.stdout + proc.stderr
    sharded = json.loads((out / "results.json").read_text())
    alone = tmp_path / "single"  # an evaluation never writes into the training run's folder
    assert main(["eval", TINY_YAML, *EVAL, f"ckpt={out / 'checkpoints' / 'last.ckpt'}", f"output_dir={alone}"]) == 0
    single = json.loads((alone / "results.json").read_text())
    for results in (sharded, single):  # the settings of `ois train` vs `ois eval`, not of the evaluation
        results["config"] = {k: v for k, v in results["config"].items() if k not in ("train", "ckpt", "output_dir")}
        del results["fingerprint"]
    assert without_timing(sharded) == without_timing(single)
    assert not list(out.glob("eval_journal*"))
