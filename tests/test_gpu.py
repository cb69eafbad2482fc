"""What only a CUDA GPU can check (marked ``gpu``: skipped without one; ``make gpu-check`` runs them): a bf16-mixed
training step at the paper's size, ``ois eval`` on CUDA, and a 2-process DDP step where 2 GPUs exist. The CPU test
at the end runs the same training-step helper at the tiny size, so the helper itself is tested everywhere."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn

from ois_lightning.tools.bench import PAPER_WIDTHS
from ois_lightning.cli import main
from ois_lightning.config.load import load_config
from ois_lightning.lit.datamodule import OISDataModule
from ois_lightning.lit.module import OISLitModule

from .helpers import REPO, TINY, TINY_RUN


TINY_YAML = str(REPO / "experiments" / "tiny.yaml")
PAPER = PAPER_WIDTHS + ["model.input_size=1036", "data.depth.source=model"]  # random init (no checkpoint)


def one_training_step(overrides: list[str], accelerator: str, root: Path) -> tuple[float, set[torch.dtype]]:
    """One bf16-mixed step of a real Lightning Trainer on layered scenes, batch 1: the loss and the output dtypes
    of the model's linear layers (bf16 under autocast)."""
    cfg = load_config(TINY_YAML, overrides + ["data.batch_size=1", "data.layered.train_length=1", "logger.kind=none",
                                              "train.max_steps=1"])
    losses: list[float] = []

    class LossProbe(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
            losses.append(float((outputs["loss"] if isinstance(outputs, dict) else outputs).detach().float()))

    L.seed_everything(0, verbose=False)
    module = OISLitModule(cfg)
    dtypes: set[torch.dtype] = set()
    for layer in module.model.modules():
        if isinstance(layer, nn.Linear):
            layer.register_forward_hook(lambda _m, _i, out: dtypes.add(out.dtype))
    trainer = L.Trainer(accelerator=accelerator, devices=1, precision="bf16-mixed", max_steps=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, num_sanity_val_steps=0, callbacks=[LossProbe()], default_root_dir=root)
    trainer.fit(module, datamodule=OISDataModule(cfg))
    assert trainer.global_step == 1 and len(losses) == 1
    return losses[0], dtypes


@pytest.mark.gpu
def test_bf16_mixed_training_step_at_paper_size(tmp_path: Path):
    """dav2-vitb widths, input 1036, depth from the frozen depth head, batch 1."""
    loss, dtypes = one_training_step([*PAPER, "data.layered.size=1036"], "gpu", tmp_path)
    assert math.isfinite(loss) and loss > 0
    assert torch.bfloat16 in dtypes


@pytest.mark.gpu
def test_ois_eval_on_cuda(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """`ois eval` of the random-init paper-size model on 2 generated layered scenes runs on CUDA and writes
    finite metrics."""
    import ois_lightning.protocol.eval_run as eval_run

    devices: list[str] = []
    evaluate_test_splits = eval_run.evaluate_test_splits

    def evaluate_on(model, cfg):  # noqa: ANN001, ANN202
        devices.append(next(model.parameters()).device.type)
        return evaluate_test_splits(model, cfg)

    monkeypatch.setattr(eval_run, "evaluate_test_splits", evaluate_on)
    out = tmp_path / "eval"
    assert main(["eval", TINY_YAML, *PAPER, "data.layered.size=256", "data.layered.test_length=2",
                 "clicks.max_eval=5", "logger.kind=none", f"output_dir={out}"]) == 0
    assert devices == ["cuda"]
    summary = json.loads((out / "results.json").read_text())["summary"]
    assert summary["num_objects"] > 0
    for key in ("NoC90", "1-mIoU", "5-mIoU", "SPC", "encoder_s_per_image", "click_s_per_click"):
        assert math.isfinite(summary[key]), key


@pytest.mark.gpu
def test_ddp_training_step_on_two_gpus(tmp_path: Path):
    """`ois train` with train.strategy=ddp on 2 GPUs (Lightning re-runs the argv for rank 1): 2 steps, one
    results.json from rank 0."""
    if torch.cuda.device_count() < 2:
        pytest.skip(f"needs 2 CUDA GPUs, found {torch.cuda.device_count()}")
    run = [o for o in TINY_RUN if not o.startswith(("train.accelerator", "train.devices", "train.strategy"))]
    out = tmp_path / "ddp"
    argv = [sys.executable, "-m", "ois_lightning", "train", TINY_YAML, *run, "train.accelerator=gpu",
            "train.devices=2", "train.strategy=ddp", "train.max_steps=2", "data.layered.train_length=8",
            f"output_dir={out}"]
    proc = subprocess.run(argv, cwd=REPO, env=dict(os.environ, WANDB_MODE="offline"), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in proc.stdout + proc.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["train"]["devices"] == 2 and math.isfinite(results["summary"]["NoC90"])


def test_bf16_mixed_training_step_tiny_on_cpu(tmp_path: Path):
    loss, dtypes = one_training_step([*TINY, "data.layered.size=112"], "cpu", tmp_path)
    assert math.isfinite(loss) and torch.bfloat16 in dtypes
