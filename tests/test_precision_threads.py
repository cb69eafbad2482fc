"""train.precision / eval.precision on CPU autocast (bf16), and train.threads / eval.threads."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from ois_lightning.protocol import eval_run
from ois_lightning.utils import parallel
from ois_lightning.cli import main
from ois_lightning.protocol.clicks import Clicker
from ois_lightning.config.load import load_config
from ois_lightning.data import LayeredScenes
from ois_lightning.protocol.evaluate import evaluate
from ois_lightning.lit import train as lit_train
from ois_lightning.lit.datamodule import OISDataModule
from ois_lightning.lit.module import OISLitModule
from ois_lightning.model import build_model
from ois_lightning.protocol.predictor import Predictor, predictor_for

from .helpers import TINY_RUN, TINY_YAML, tiny_cfg


PROB_TOL = 0.01  # bf16 vs fp32: max |prob difference| of a click round (measured ~1e-4 on the tiny model)
IOU_TOL = 0.02  # mean |IoU difference| over all objects and clicks (measured 0)
LOSS_RTOL = 0.01  # relative training-loss difference (measured ~3e-4)


@pytest.fixture
def keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_bf16_evaluation_is_autocast_and_close_to_fp32():
    """eval.precision=bf16-mixed: the model's linear layers run in bf16, the clicker gets a float32 prob map
    within PROB_TOL of fp32's, and the evaluation's curves are finite and within IOU_TOL."""
    cfg32, cfg16 = tiny_cfg("clicks.max_eval=5"), tiny_cfg("clicks.max_eval=5", "eval.precision=bf16-mixed")
    torch.manual_seed(0)
    model = build_model(cfg32.model).eval()
    dtypes: set[torch.dtype] = set()
    for layer in model.modules():
        if isinstance(layer, nn.Linear):
            layer.register_forward_hook(lambda _m, _i, out: dtypes.add(out.dtype))
    scenes = LayeredScenes(1, size=112, seed=3, num_objects=(2, 2))
    sample = scenes[0]
    clicker = Clicker(sample.masks[0])
    clicker.next_click(np.zeros(sample.masks[0].shape, dtype=bool))
    probs = []
    for cfg in (cfg32, cfg16):
        predictor = predictor_for(model, cfg)
        predictor.set_image(sample)
        probs.append(predictor.predict(clicker.clicks))
        assert probs[-1].dtype == np.float32 and np.isfinite(probs[-1]).all()
    assert dtypes == {torch.float32, torch.bfloat16}  # fp32 run, then the autocast one
    assert np.abs(probs[0] - probs[1]).max() < PROB_TOL
    full, half = (np.array(evaluate(model, scenes, cfg, progress=False).ious) for cfg in (cfg32, cfg16))
    assert np.isfinite(half).all() and np.abs(full - half).mean() < IOU_TOL
    with pytest.raises(ValueError, match="eval.precision='8-true'"):
        Predictor(model, 112, precision="8-true")


def test_bf16_training_step_close_to_fp32():
    """A training step's loss under CPU bf16 autocast (as train.precision=bf16-mixed runs it) is finite and
    within LOSS_RTOL of fp32's, its gradients finite."""
    cfg = load_config(TINY_YAML, TINY_RUN)
    data = OISDataModule(cfg)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    torch.manual_seed(0)
    module = OISLitModule(cfg)

    def step_loss() -> torch.Tensor:
        logits = module.model(module._encode(batch), batch["coords"], batch["labels"], torch.zeros_like(batch["gt"]))
        return module.loss(logits.float(), batch["gt"])

    fp32 = step_loss().item()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = step_loss()
    loss.backward()
    grads = [p.grad for p in module.model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    bf16 = loss.item()
    assert math.isfinite(bf16) and abs(bf16 - fp32) < LOSS_RTOL * fp32


def test_ois_train_bf16_end_to_end(tmp_path, keep_threads):
    """train.precision=bf16-mixed and eval.precision=bf16-mixed: one step, then the final evaluation; finite."""
    out = tmp_path / "bf16"
    assert main(["train", TINY_YAML, *TINY_RUN, "train.precision=bf16-mixed", "eval.precision=bf16-mixed",
                 "train.max_steps=1", "clicks.max_eval=5", f"output_dir={out}"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["eval"]["precision"] == "bf16-mixed"
    assert all(math.isfinite(v) for c in results["per_object"]["ious"] for v in c)
    assert math.isfinite(results["summary"]["NoC90"])


def test_eval_threads_are_applied(tmp_path, monkeypatch, keep_threads):
    """`ois eval`: eval.threads=N sets torch's threads; unset, cores // LOCAL_WORLD_SIZE (at least 1)."""
    monkeypatch.setattr(eval_run, "evaluate_test_splits", lambda model, cfg: {})  # the entry point only
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    argv = ["eval", TINY_YAML, *TINY_RUN, "model.backbone.random_init=true", f"output_dir={tmp_path}"]
    assert main([*argv, "eval.threads=3"]) == 0 and torch.get_num_threads() == 3
    monkeypatch.setattr(parallel.os, "sched_getaffinity", lambda pid: set(range(6)), raising=False)
    monkeypatch.setattr(parallel.os, "cpu_count", lambda: 6)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert main(argv) == 0 and torch.get_num_threads() == 3
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert main(argv) == 0 and torch.get_num_threads() == 1


def test_train_threads_are_applied(tmp_path, monkeypatch, keep_threads):
    """`ois train`: train.threads=N, or cores // train.devices before Lightning starts the processes."""

    class Stop(Exception):
        pass

    def stop(cfg):
        raise Stop

    monkeypatch.setattr(lit_train, "OISLitModule", stop)  # right after the thread setup
    monkeypatch.setattr(parallel.os, "sched_getaffinity", lambda pid: set(range(6)), raising=False)
    monkeypatch.setattr(parallel.os, "cpu_count", lambda: 6)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cfg = load_config(TINY_YAML, [*TINY_RUN, "train.check_data=false", f"output_dir={tmp_path}"])
    for threads, devices, expected in ((2, 1, 2), (None, 3, 2), (None, 1, 6), (None, 12, 1)):
        cfg.train.threads, cfg.train.devices = threads, devices
        with pytest.raises(Stop):
            lit_train.train(cfg)
        assert torch.get_num_threads() == expected, (threads, devices)


def test_default_threads_follow_omp_num_threads(monkeypatch, keep_threads):
    """A process given OMP_NUM_THREADS (each point of `ois sweep --parallel N` is) keeps that share: the
    cores // processes default would put N x cores threads on the cores, tens of times slower."""
    monkeypatch.setattr(parallel, "available_cores", lambda: 6)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert parallel.set_threads(None) == 1 == torch.get_num_threads()
    assert parallel.set_threads(4) == 4  # an explicit train.threads / eval.threads wins
    for unusable in ("", "0", "x"):
        monkeypatch.setenv("OMP_NUM_THREADS", unusable)
        assert parallel.set_threads(None, processes=2) == 3
