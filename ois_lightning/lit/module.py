"""``OISLitModule``: iterative click training (paper Sec. 4.1, App. A.1) and protocol validation, as thin
Lightning glue over :mod:`ois_lightning.model`, :mod:`ois_lightning.protocol.clicks` and
:mod:`ois_lightning.protocol.evaluate`."""
from __future__ import annotations

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor

from ..protocol.clicks import next_training_click
from ..config.schema import to_dict
from ..protocol.evaluate import ClickBudget, evaluate_samples, predictor_for
from ..model.losses import NormalizedFocalLoss
from ..protocol.metrics import summarize_ious
from ..model import ImageEncoding, build_model
from ..model.prompts import PAD
from ..tracking.wandb_run import log_validation
from .loggers import metrics_step, sinks


def add_click(coords: Tensor, labels: Tensor, i: int, y: int, x: int, positive: bool) -> bool:
    """Put a click into the first free slot (label -1) of sample ``i`` of the padded (B,K,2) / (B,K) click
    tensors, in place; False if every slot is taken. The sparse encoder sorts slots into pos / neg itself."""
    free = torch.nonzero(labels[i] == PAD)
    if len(free) == 0:
        return False
    k = int(free[0])
    coords[i, k, 0], coords[i, k, 1] = float(y), float(x)
    labels[i, k] = int(positive)
    return True


class OISLitModule(L.LightningModule):
    """Trains the OIS network's trainable parts with the isegm click-simulation loop; validates with the
    interactive protocol (val/NoC90, val/5-mIoU) on up to ``train.val_objects`` objects."""

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.save_hyperparameters(to_dict(cfg))  # the resolved config: checkpoint + logger
        self.model = build_model(cfg.model, cfg.data.depth)
        self.loss = NormalizedFocalLoss()
        self._val_curves: list[list[float]] = []

    def _encode(self, batch: dict) -> ImageEncoding:
        depth = batch.get("depth")
        kinds = set(batch.get("depth_kind", ["disparity"]))
        if len(kinds) != 1:
            raise ValueError(f"one training batch mixes depth kinds {sorted(kinds)}; use one kind per run")
        return self.model.encode(batch["image"], depth, kinds.pop())

    @torch.no_grad()
    def _simulate_clicks(self, enc: ImageEncoding, batch: dict, coords: Tensor, labels: Tensor) -> Tensor | None:
        """Iterative training (App. A.1): n in 0..clicks.max_extra rounds, each predicting in eval mode and
        adding one click per sample from the error (:func:`next_training_click`). Edits coords / labels in
        place; returns the last prediction > threshold (B,1,S,S) or None when n = 0."""
        c = self.cfg
        n = int(np.random.default_rng([c.seed, self.global_step]).integers(c.clicks.max_extra + 1))
        if n == 0:
            return None
        gts = batch["gt"][:, 0].round().to(torch.int8).cpu().numpy()  # B,S,S
        rngs = [np.random.default_rng([c.seed, self.global_step, int(i)]) for i in batch["index"]]
        was_training = self.model.training
        self.model.eval()
        prev: Tensor | None = None
        for _ in range(n):
            logits = self.model(enc, coords, labels, prev)  # B,1,S,S
            probs = torch.sigmoid(logits.float())
            prev = (probs > c.clicks.threshold).to(logits.dtype)
            probs_np = probs[:, 0].cpu().numpy()  # B,S,S
            for i in range(len(gts)):
                taken = labels[i] != PAD
                clicked = {(int(round(y)), int(round(x))) for y, x in coords[i][taken].tolist()}
                click = next_training_click(gts[i], probs_np[i], rngs[i], clicked, c.clicks.threshold)
                if click is not None:
                    add_click(coords, labels, i, click.y, click.x, click.positive)
        self.model.train(was_training)
        return prev

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        enc = self._encode(batch)
        coords, labels = batch["coords"].clone(), batch["labels"].clone()  # B,K,2 / B,K
        prev = self._simulate_clicks(enc, batch, coords, labels)
        if prev is None:
            prev = torch.zeros_like(batch["gt"])
        logits = self.model(enc, coords, labels, prev)  # B,1,S,S
        loss = self.loss(logits, batch["gt"])
        self.log("train/loss", loss, prog_bar=True, batch_size=len(labels))
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val_curves = []

    def validation_step(self, batch: list, batch_idx: int) -> None:
        """``batch``: raw Samples; the objects share this rank's share of train.val_objects / world size. Every
        object runs all clicks.max_eval clicks (no early stop), so val/5-mIoU is always defined."""
        remaining = -(-self.cfg.train.val_objects // self.trainer.world_size) - len(self._val_curves)
        if remaining <= 0:
            return
        if not any(len(sample.masks) for sample in batch):
            return
        result = evaluate_samples(predictor_for(self.model, self.cfg), batch,
                                  ClickBudget(self.cfg.clicks.max_eval), remaining)
        self._val_curves.extend(result.ious)

    def on_validation_epoch_end(self) -> None:
        """Exact global means over all ranks: per-rank sums and counts are summed, then divided. Rank 0 also
        logs a few objects as images (:func:`log_validation`, W&B only; not in the sanity check) at the step the
        validation metrics get (:func:`~ois_lightning.lit.loggers.metrics_step`): W&B drops a row whose step goes
        back, so images one step ahead would cost the metrics."""
        local = [0.0, 0.0, 0.0]  # sum NoC90, sum 5-mIoU, objects
        if self._val_curves:
            s = summarize_ious(self._val_curves, self.cfg.clicks.max_eval)
            n = s["num_objects"]
            local = [s["NoC90"] * n, s["5-mIoU"] * n, float(n)]
        totals = self.trainer.strategy.reduce(torch.tensor(local, device=self.device, dtype=torch.float64),
                                              reduce_op="sum")
        if totals[2] > 0:
            self.log("val/NoC90", float(totals[0] / totals[2]))
            self.log("val/5-mIoU", float(totals[1] / totals[2]))
        self._val_curves = []
        if self.trainer.is_global_zero and not self.trainer.sanity_checking:
            log_validation(sinks(self.loggers), self.model, self.trainer.val_dataloaders.dataset, self.cfg,
                           metrics_step(self.trainer))

    def configure_optimizers(self) -> torch.optim.Optimizer | dict:
        """Adam on the trainable parameters (Sec. 4.1); with ``train.lr_schedule=cosine``, cosine decay to 0 over
        the run's optimizer steps, stepped every batch. The steps come from :meth:`OISDataModule.step_budget`, not
        ``trainer.estimated_stepping_batches``, which would build the training loader before Lightning restores
        a resumed run's loader position (the resumed epoch would restart at its first batch)."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=self.cfg.train.lr, weight_decay=self.cfg.train.weight_decay)
        if self.cfg.train.lr_schedule == "constant":
            return opt
        total = self.trainer.datamodule.step_budget(self.trainer.max_epochs, self.trainer.max_steps)
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": cosine, "interval": "step"}}
