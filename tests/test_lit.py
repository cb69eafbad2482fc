"""Lightning training (OISLitModule), `ois train` (checkpoints, resume, loggers, results) and `ois eval`."""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from ois_lightning.cli import main
from ois_lightning.config.load import load_config
from ois_lightning.protocol.evaluate import evaluate
from ois_lightning.lit.datamodule import OISDataModule
from ois_lightning.data.splits import eval_dataset
from ois_lightning.lit.module import OISLitModule, add_click
from ois_lightning.checkpoint import load_weights
from ois_lightning.lit.train import train
from ois_lightning.model.losses import NormalizedFocalLoss

from .helpers import QUICK, TINY, TINY_YAML, global_step


# Small, quick runs: 112 px scenes, 2 images per batch, 1 validation object, 1 test image, 5 clicks.
TIMING = {"SPC", "encoder_s_per_image", "click_s_per_click"}


def run_train(out: Path, *extra: str) -> dict:
    assert main(["train", TINY_YAML, *QUICK, f"output_dir={out}", *extra]) == 0
    return json.loads((out / "results.json").read_text())


def test_add_click_fills_first_free_slot():
    coords, labels = torch.zeros(2, 4, 2), torch.tensor([[1, 0, -1, -1], [1, 1, 1, 0]])
    assert add_click(coords, labels, 0, 7, 9, positive=False)
    assert labels[0].tolist() == [1, 0, 0, -1] and coords[0, 2].tolist() == [7.0, 9.0]
    assert not add_click(coords, labels, 1, 3, 3, positive=True)  # all slots taken
    assert labels[1].tolist() == [1, 1, 1, 0]


def test_simulated_clicks_are_reproducible_and_restore_train_mode():
    cfg = load_config(TINY_YAML, QUICK + ["clicks.max_extra=3", "seed=1"])
    assert np.random.default_rng([1, 0]).integers(4) > 0  # seed 1, step 0 draws at least one extra click
    dm = OISDataModule(cfg)
    dm.setup("fit")
    batch = default_collate([dm.train_set[i] for i in range(2)])
    module = OISLitModule(cfg)
    module.model.train()
    enc = module._encode(batch)
    results = []
    for _ in range(2):
        coords, labels = batch["coords"].clone(), batch["labels"].clone()
        prev = module._simulate_clicks(enc, batch, coords, labels)
        results.append((coords, labels))
        assert module.model.seg_head.training  # train mode restored
        assert prev is not None and prev.shape == batch["gt"].shape and set(prev.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
    added = (results[0][1] != -1).sum() - (batch["labels"] != -1).sum()
    assert added > 0
    for i in range(2):  # new clicks sit on non-ignored pixels
        new = (results[0][1][i] != -1) & (batch["labels"][i] == -1)
        for y, x in results[0][0][i][new].long().tolist():
            assert batch["gt"][i, 0, y, x] >= 0


def test_train_validate_resume_and_reproduce(tmp_path):
    """Two runs with one seed give identical results; validation logs the protocol metrics; ckpt_path=last
    continues from the step reached; `ois eval` of the checkpoint reproduces the final evaluation."""
    args = ("train.max_steps=2", "train.val_every_n_steps=2", "seed=5")
    a = run_train(tmp_path / "a", *args)
    b = run_train(tmp_path / "b", *args)
    strip = lambda s: {k: v for k, v in s.items() if k not in TIMING}  # noqa: E731
    assert strip(a["summary"]) == strip(b["summary"]) and a["per_object"] == b["per_object"]
    assert a["seed"] == 5

    out = tmp_path / "a"
    version = next((out / "csv").glob("version_*"))
    rows = list(csv.DictReader(open(version / "metrics.csv")))
    assert any(r.get("train/loss") for r in rows)
    assert [float(r["lr-Adam"]) for r in rows if r.get("lr-Adam")][:1] == [pytest.approx(5e-4)]  # tiny.yaml's lr
    noc = [float(r["val/NoC90"]) for r in rows if r.get("val/NoC90")]
    miou = [float(r["val/5-mIoU"]) for r in rows if r.get("val/5-mIoU")]
    assert noc and miou and 1 <= noc[-1] <= 5 and 0 <= miou[-1] <= 100
    assert any(r.get("test/NoC90") for r in rows)
    assert "input_size: 112" in (version / "hparams.yaml").read_text()

    ckpts = out / "checkpoints"
    assert global_step(ckpts / "last.ckpt") == 2
    run_train(out, "train.max_steps=4", "seed=5", "ckpt_path=last")
    state = torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["global_step"] == 4 and state["epoch"] == 0  # continued inside the same epoch
    trained = json.loads((out / "results.json").read_text())
    eval_out = tmp_path / "eval"
    assert main(["eval", TINY_YAML, *QUICK, f"ckpt={ckpts / 'last.ckpt'}", f"output_dir={eval_out}"]) == 0
    evaluated = json.loads((eval_out / "results.json").read_text())
    assert evaluated["per_object"] == trained["per_object"]


def test_mid_epoch_resume_trains_on_the_same_batches(tmp_path):
    """2 steps + ckpt_path=last to 4 steps == 4 uninterrupted steps, weight for weight: the resumed loader skips
    the batches already trained instead of re-reading the epoch from its start."""
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    run_train(whole, "train.max_steps=4", "seed=3")
    run_train(parts, "train.max_steps=2", "seed=3")
    state = torch.load(parts / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 0, "batches": 2}]
    run_train(parts, "train.max_steps=4", "seed=3", "ckpt_path=last")
    a, b = (torch.load(d / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True) for d in (whole, parts))
    assert a["global_step"] == b["global_step"] == 4
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])


def test_resume_from_missing_checkpoint_is_config_error(tmp_path, capsys):
    assert main(["train", TINY_YAML, *QUICK, f"output_dir={tmp_path}", "ckpt_path=last"]) == 2
    assert "ckpt_path=last" in capsys.readouterr().err


def test_wandb_logger_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "wb"
    run_train(out, "train.max_steps=2", "logger.kind=wandb", "logger.tags=[test]")
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb"))
    run_id = (out / "wandb_run_id").read_text()
    assert runs[0].name.endswith(f"-{run_id}")
    run_train(out, "train.max_steps=3", "logger.kind=wandb", "ckpt_path=last")  # resumed: the same W&B run
    assert (out / "wandb_run_id").read_text() == run_id
    # wandb names a run folder offline-run-<time>-<id>, adding -1, -2 when that name exists (same second)
    resumed = [r.name for r in (out / "wandb").glob("offline-run-*")]
    assert len(resumed) == 2 and all(re.fullmatch(rf"offline-run-\d{{8}}_\d{{6}}-{run_id}(-\d+)?", n) for n in resumed)
    run_train(out, "train.max_steps=2", "logger.kind=wandb", "restart=true")  # a fresh run there: a new W&B run
    assert (out / "wandb_run_id").read_text() != run_id


def probe_loss(model, batch: dict) -> float:
    """Normalized focal loss of ``model`` (eval mode) on a fixed batch with its initial clicks only."""
    model.eval()
    with torch.no_grad():
        enc = model.encode(batch["image"], batch.get("depth"), "disparity")
        logits = model(enc, batch["coords"], batch["labels"], torch.zeros_like(batch["gt"]))
        return float(NormalizedFocalLoss()(logits, batch["gt"]))


@pytest.mark.slow
def test_training_lowers_loss_and_improves_noc(tmp_path):
    """Tiny model, 112 px layered scenes, 180 steps of batch 4 at lr 2e-3: the loss on a fixed probe batch falls,
    and on 10 test objects NoC85 and 5-mIoU beat the untrained model (the same initial weights). NoC90 is not the
    measure: this model reaches 90% IoU on none of them before or after (both 20.00, the click cap, on 2 threads),
    so it could not tell a trained model from an untrained one. One thread: the same numbers on every machine
    (measured: probe loss 0.353 -> 0.267, NoC85 20.00 -> 14.50, 5-mIoU 8.0 -> 73.1; 300 steps at 1e-3 gave
    0.291, 17.90 and 70.2, a smaller margin on each of the three)."""
    cfg = load_config(TINY_YAML, TINY + [
        "data.layered.size=112", "data.batch_size=4", "data.min_object_area=200", "data.layered.val_length=1",
        "train.val_objects=1", "eval.max_objects=10", "data.layered.test_length=5", "train.max_steps=180",
        "train.lr=2e-3", "logger.kind=none", f"output_dir={tmp_path}", "seed=0", "train.threads=1", "eval.threads=1",
    ])
    dm = OISDataModule(cfg)
    dm.setup("fit")
    n = len(dm.train_set)
    probe = default_collate([dm.train_set[10 * n + i] for i in range(8)])  # epoch 10: augmentations not trained on
    L.seed_everything(cfg.seed)
    untrained = OISLitModule(cfg).model  # train() seeds the same way, so it starts from these weights
    loss_before = probe_loss(untrained, probe)
    before = evaluate(untrained, eval_dataset(cfg, "test"), cfg, progress=False).summary
    after = train(cfg)["layered"].summary
    cfg.ckpt = str(tmp_path / "checkpoints" / "last.ckpt")
    trained = load_weights(cfg)
    loss_after = probe_loss(trained, probe)
    print(f"probe loss {loss_before:.3f} -> {loss_after:.3f}; NoC85 {before['NoC85']:.2f} -> {after['NoC85']:.2f}; "
          f"5-mIoU {before['5-mIoU']:.1f} -> {after['5-mIoU']:.1f}")
    assert loss_after < 0.95 * loss_before
    assert after["NoC85"] < before["NoC85"] and after["5-mIoU"] > before["5-mIoU"] + 20


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_lr_schedule(tmp_path, schedule):
    """train.lr_schedule=cosine decays the lr from train.lr towards 0 over the run, stepped every batch."""
    steps = 4
    cfg = load_config(TINY_YAML, QUICK + [f"train.lr_schedule={schedule}", "train.lr=0.01",
                                          f"train.max_steps={steps}", "data.layered.train_length=8"])
    seen: list[float] = []

    class LrProbe(L.Callback):
        def on_train_batch_start(self, trainer, *_) -> None:  # noqa: ANN001
            seen.append(trainer.optimizers[0].param_groups[0]["lr"])

    trainer = L.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, limit_val_batches=0, num_sanity_val_steps=0,
                        callbacks=[LrProbe()], default_root_dir=tmp_path)
    trainer.fit(OISLitModule(cfg), datamodule=OISDataModule(cfg))
    expected = [0.01 * (1 + np.cos(np.pi * i / steps)) / 2 for i in range(steps)] if schedule == "cosine" \
        else [0.01] * steps
    assert seen == pytest.approx(expected)
