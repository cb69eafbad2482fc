"""``ois check-data``: build every configured dataset and split (``data.train`` / ``val`` / ``test``) and read
every sample once (image, masks and, with ``data.depth.source=file`` on a model that reads depth, its depth
file), and load the weights files the config names as ``ois train`` will, so bad data or weights show before
the GPU hours. Every problem is reported by file in one run; empty masks, ignore pixels and implausible masks
(:func:`implausible`) are reported but stop nothing. :func:`check_splits` is the cheap part ``ois train`` runs
first.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import cv2
import numpy as np
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .base import IGNORE, DataError, MissingFile, SegDataset, SizeMismatch, UnreadableFile, collect_problems
from .splits import build_group, split_groups
from ..model.checkpoints import CheckpointError

SPLITS = ("train", "val", "test")
# A plausible object mask is mostly interior and in a few pieces; random noise is mostly boundary, in many pieces.
MAX_BOUNDARY, MAX_PIECES = 0.5, 10
CROSS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], np.uint8)
KINDS = (UnreadableFile.kind, SizeMismatch.kind, MissingFile.kind, DataError.kind)  # problems, in report order


@dataclass
class SplitReport:
    """What building and reading one dataset of one split found."""

    split: str
    dataset: str
    images: int = 0
    objects: int = 0
    empty: list[str] = field(default_factory=list)  # ids of samples without an object (informational)
    with_ignore: int = 0  # samples whose masks have ignore pixels (informational)
    implausible: list[str] = field(default_factory=list)  # "<id> object k: why" (a warning, informational)
    problems: list[DataError] = field(default_factory=list)  # each would stop a run

    def lines(self) -> list[str]:
        """A summary line, then one line per problem and per empty mask."""
        kinds = Counter(e.kind for e in self.problems)
        summary = (f"{self.split}/{self.dataset}: {self.images} images, {self.objects} objects, "
                   f"{len(self.empty)} empty masks, {self.with_ignore} with ignore pixels | problems: "
                   + ", ".join(f"{k} {kinds[k]}" for k in KINDS))
        return [summary, *(f"  {e.kind}: {e}" for e in self.problems), *(f"  empty mask: {i}" for i in self.empty),
                *(f"  warning: implausible mask: {w}" for w in self.implausible)]


@dataclass
class _Item:
    """One sample as read by a loader worker: its counts, or the error reading it raised."""

    id: str = ""
    objects: int = 0
    ignore: bool = False
    implausible: list[str] = field(default_factory=list)
    error: DataError | None = None


def implausible(mask: np.ndarray) -> str | None:
    """Why a binary object mask looks like noise rather than an object, or None: more than :data:`MAX_BOUNDARY`
    of its pixels on its boundary (4-neighbour) and more than :data:`MAX_PIECES` 4-connected pieces. A solid or a
    thin object (a rope: all boundary, one piece) passes; every GrabCut mask has under 20% boundary and under 6
    pieces, random noise of any density above 90% or 194+ pieces at 300x400."""
    m = mask.astype(np.uint8)
    n = int(m.sum())
    if n == 0:
        return None
    inner = cv2.erode(m, CROSS, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    boundary = 1 - int(inner.sum()) / n
    pieces = cv2.connectedComponents(m, connectivity=4)[0] - 1
    if boundary <= MAX_BOUNDARY or pieces <= MAX_PIECES:
        return None
    return (f"{100 * boundary:.0f}% of its {n} pixels on its boundary, in {pieces} pieces (a plausible object mask "
            f"is mostly interior, in at most {MAX_PIECES} pieces: is it noise or a wrong encoding?)")


class _Inspect(Dataset):
    """Reads sample ``i`` of a dataset into an :class:`_Item`, catching its DataError."""

    def __init__(self, dataset: SegDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> _Item:
        try:
            sample = self.dataset[i]
        except DataError as e:
            return _Item(error=e)
        warnings = [f"{sample.id} object {k}: {why}" for k, m in enumerate(sample.masks)
                    if (why := implausible(m == 1)) is not None]
        return _Item(sample.id, len(sample.masks), bool((sample.masks == IGNORE).any()), warnings)


def _as_is(item: _Item) -> _Item:
    return item


def build_splits(cfg: DictConfig) -> list[tuple[SplitReport, SegDataset | None]]:
    """Every dataset of every split, built inside :func:`collect_problems`: the items with a build-time problem
    (an image without its mask, ...) are left out and recorded, as is a dataset that cannot be built at all."""
    built = []
    for split in SPLITS:
        for group in split_groups(cfg, split):
            report, dataset = SplitReport(split, "+".join(group)), None
            with collect_problems() as found:
                try:
                    dataset = build_group(cfg, group, split)
                except DataError as e:
                    found.append(e)
            report.problems.extend(found)
            report.images = len(dataset) if dataset is not None else 0
            built.append((report, dataset))
    return built


def check_splits(cfg: DictConfig) -> None:
    """The cheap check (file lists and counts, no image read) ``ois train`` runs before building a model: one
    DataError listing every build-time problem of every split."""
    problems = [f"  data.{r.split}={r.dataset}: {e}" for r, _ in build_splits(cfg) for e in r.problems]
    if problems:
        raise DataError(f"{len(problems)} data problems (full check: `ois check-data`; skip this one: "
                        "train.check_data=false):\n" + "\n".join(problems))


def read_samples(report: SplitReport, dataset: SegDataset, num_workers: int = 0) -> None:
    """Read every sample of ``dataset`` once (``num_workers`` loader processes), adding counts and problems."""
    loader = DataLoader(_Inspect(dataset), batch_size=None, collate_fn=_as_is, num_workers=num_workers)
    for item in tqdm(loader, desc=f"{report.split}/{report.dataset}", unit="img", disable=None):
        if item.error is not None:
            report.problems.append(item.error)
            continue
        report.objects += item.objects
        report.with_ignore += item.ignore
        report.implausible += item.implausible
        if item.objects == 0:
            report.empty.append(item.id)


def check_weights(cfg: DictConfig) -> tuple[str, bool]:
    """Build the model as ``ois train`` does, so every weights file set (``model.backbone.checkpoint``,
    ``data.depth.checkpoint``) is read and loaded strictly through the code real runs use: (line, ok)."""
    from ..model.ois import build_model  # torch model code: only when there is something to load

    files = {k: v for k, v in (("model.backbone.checkpoint", cfg.model.backbone.checkpoint),
                               ("data.depth.checkpoint", cfg.data.depth.checkpoint)) if v is not None}
    if not files:
        return "weights: none set (" + ("random init, as asked" if cfg.model.backbone.random_init
                                        else f"{cfg.model.backbone.name} needs none") + ")", True
    try:
        build_model(cfg.model, cfg.data.depth)
    except (CheckpointError, OSError) as e:
        return f"weights: {e}", False
    return "weights: " + ", ".join(f"{k}={v} loaded" for k, v in files.items()), True


def check_data(cfg: DictConfig) -> int:
    """``ois check-data``: print a report per dataset and split and on the weights; 1 when anything would stop
    a run, else 0."""
    weights, weights_ok = check_weights(cfg)
    print(weights, flush=True)
    reports = []
    for report, dataset in build_splits(cfg):
        if dataset is not None:
            read_samples(report, dataset, int(cfg.data.num_workers))
        reports.append(report)
    for report in reports:
        print("\n".join(report.lines()))
    problems = sum(len(r.problems) for r in reports) + (not weights_ok)
    if problems:
        print(f"check-data: {problems} problems that would stop a run")
        return 1
    print("check-data: no problems")
    return 0
