"""``OISDataModule``: train / val / test data chosen by config, as thin Lightning glue over ``ois_lightning.data``.

- train: :class:`~ois_lightning.data.training.TrainingSamples` (augmented, one target, initial clicks) over
  ``data.train``, sharded and shuffled by an :class:`~ois_lightning.data.training.EpochSampler`; the global
  ``data.batch_size`` is divided by the world size, so a config keeps its effective batch on any GPU count;
- val / test: the raw datasets of ``data.val`` / ``data.test`` (original resolution) as lists of ``Sample``
  (one per batch) for the interactive protocol of ``ois_lightning.protocol.evaluate``.

Depth (``data.depth.source``): ``model`` (none here; the network's frozen depth head), ``gt`` (the dataset's own
depth, e.g. layered scenes) or ``file`` (``DepthFolder`` over ``data.depth.folder/<dataset name>/<stem>.npy|png``).
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Callable

import lightning as L
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Subset

from ..config.schema import ConfigError
from ..model.inputs import uses_depth
from ..data import build_train_transform
from ..data.splits import eval_dataset, train_datasets
from ..data.training import EpochSampler, TrainingSamples, per_device_batch


def _as_list(batch: list) -> list:
    return batch


class ResumableLoader(DataLoader):
    """The training loader, resumable mid-epoch: Lightning stores :meth:`state_dict` in each checkpoint (the epoch
    and the batches of it already trained, read from ``processed()`` at save time) and, on ``ckpt_path=...``, hands
    it back to :meth:`load_state_dict`, which makes the :class:`EpochSampler` skip those batches. With items seeded
    per (seed, epoch, index) and clicks per step, a resumed run trains on exactly the batches an uninterrupted
    one would."""

    def __init__(self, *args: Any, processed: Callable[[], int], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.processed = processed

    def state_dict(self) -> dict[str, int]:
        return {"epoch": int(self.sampler.epoch), "batches": int(self.processed())}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.resume_at(state["epoch"], state["batches"] * self.batch_size)


class OISDataModule(L.LightningDataModule):
    """Data for ``OISLitModule``; batch layout in :class:`~ois_lightning.data.training.TrainingSamples`."""

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.train_set: TrainingSamples | None = None
        self.skipped = 0  # object-free images passed over in the current epoch (see end_epoch)

    @property
    def with_depth(self) -> bool:
        """Batches carry depth maps: they come from the data (source file / gt) and the model reads depth."""
        return self.cfg.data.depth.source.value != "model" and uses_depth(self.cfg.model)

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.train_set is None:
            c = self.cfg
            self.train_set = TrainingSamples(
                train_datasets(c),
                build_train_transform(c.model.input_size),
                seed=c.seed,
                with_depth=self.with_depth,
                max_pos=c.model.sparse.max_pos,
                max_neg=c.model.sparse.max_neg,
                min_area=c.data.min_object_area,
                merge_prob=c.data.merge_prob,
                keep_background_prob=c.data.keep_background_prob,
                skip_empty=c.data.skip_empty,
            )

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        world_size, rank = self._world()
        sampler = EpochSampler(self.train_set, world_size, rank, self.cfg.seed)
        return ResumableLoader(
            self.train_set,
            batch_size=per_device_batch(self.cfg.data.batch_size, world_size),
            sampler=sampler,
            num_workers=self.cfg.data.num_workers,
            drop_last=True,  # steps_per_epoch counts full batches only
            pin_memory=False,
            processed=self._batches_processed,
        )

    def steps_per_epoch(self) -> int:
        """Batches per epoch on each process, as :meth:`train_dataloader` yields them (the sampler pads every
        rank to ceil(N / world size) indices, the loader drops a last partial batch), without building the
        loader: Lightning applies a resumed run's loader position only to a loader built after it restores."""
        self.setup("fit")
        world_size, _ = self._world()
        return math.ceil(len(self.train_set) / world_size) // per_device_batch(self.cfg.data.batch_size, world_size)

    def step_budget(self, max_epochs: int, max_steps: int) -> int:
        """Optimizer steps of the whole run (Lightning's ``estimated_stepping_batches``; -1 = no limit) from
        :meth:`steps_per_epoch`; a ConfigError when neither limit is set."""
        limits = [n for n in (max_steps, max_epochs * self.steps_per_epoch() if max_epochs != -1 else -1) if n != -1]
        if not limits:
            raise ConfigError("train.max_epochs=-1 and train.max_steps=-1: an endless run has no step budget "
                              "(train.lr_schedule=cosine needs one)")
        return max(min(limits), 1)

    def _batches_processed(self) -> int:
        """Batches of the current epoch trained so far (Lightning's progress counter at checkpoint time)."""
        return self.trainer.fit_loop.epoch_loop.batch_progress.current.processed

    def _eval_loader(self, split: str, max_images: int | None = None) -> DataLoader:
        dataset = eval_dataset(self.cfg, split)
        if max_images is not None and max_images < len(dataset):
            dataset = Subset(dataset, range(max_images))
        return DataLoader(dataset, batch_size=1, shuffle=False, collate_fn=_as_list,
                          num_workers=self.cfg.data.num_workers)

    def val_dataloader(self) -> DataLoader:
        """The first ``train.val_objects`` images of ``data.val``: validation runs the protocol on at most that
        many objects, so reading further images would be wasted."""
        return self._eval_loader("val", self.cfg.train.val_objects)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if isinstance(batch, dict) and "skipped" in batch:
            self.skipped += int(batch.pop("skipped").sum())
        return batch

    def end_epoch(self) -> int:
        """Warn once about the object-free images skipped this epoch; returns and resets their count."""
        skipped, self.skipped = self.skipped, 0
        if skipped:
            warnings.warn(f"{skipped} training images had no object of at least {self.cfg.data.min_object_area} px "
                          "after augmentation and were skipped this epoch", stacklevel=2)
        return skipped


class EpochEndWarnings(L.Callback):
    """Calls :meth:`OISDataModule.end_epoch` at the end of every training epoch (the skipped-images warning)."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = trainer.datamodule
        if isinstance(datamodule, OISDataModule):
            datamodule.end_epoch()
