"""What both pre-training commands share: the scene streams, the optimiser loop and the reuse-or-write of the
output (checkpoint + a JSON report beside it, both written atomically)."""
from __future__ import annotations

import json
import math
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import Tensor, nn

from ..utils.atomic import atomic_write
from .budgets import Budget, finished_report, report_path, reuse_line
from ..data.layered import SPLIT_SEEDS, LayeredScenes
from ..data.monocular import PRESETS
from ..model.depth_models import IMAGENET_MEAN, IMAGENET_STD

# Scene streams of the pre-training, disjoint from every evaluation scene: LayeredScenes seeds its train / val /
# test splits 0 / 1 / 2 (SPLIT_SEEDS; the demo and every training run use those), the tests use seeds up to 11.
TRAIN_SCENE_SEED = 1000  # scenes the networks are trained on
HELDOUT_SCENE_SEED = 1001  # scenes the depth quality / reconstruction loss is measured on
assert not {TRAIN_SCENE_SEED, HELDOUT_SCENE_SEED} & set(SPLIT_SEEDS.values())
WARMUP = 0.05  # fraction of the steps with a linear learning-rate warm-up, then cosine decay to 0
AHEAD = 4  # training steps whose scenes the worker process makes ahead of the optimiser


def scene_cues(scenes: str) -> str | list[str]:
    """A budget's ``scenes`` setting (a preset name or comma-separated cue names) -> LayeredScenes' ``cues``."""
    return scenes if "," not in scenes and scenes in PRESETS else [c for c in scenes.split(",") if c]


def scene_batch(seed: int, start: int, count: int, size: int, scenes: str) -> tuple[Tensor, Tensor]:
    """Layered scenes ``start .. start+count-1`` of stream ``seed`` with the depth cues ``scenes`` (see
    :func:`scene_cues`) -> images (B,3,S,S) RGB in [0,1] and their exact disparity (B,1,S,S), larger = closer,
    0..1 per image."""
    scenes = LayeredScenes(start + count, size=size, seed=seed, cues=scene_cues(scenes))
    samples = [scenes[i] for i in range(start, start + count)]
    images = torch.from_numpy(np.stack([s.image for s in samples])).permute(0, 3, 1, 2).float() / 255.0
    depth = torch.from_numpy(np.stack([s.depth for s in samples]))[:, None]
    return images, depth


def imagenet_normalise(images: Tensor) -> Tensor:
    """(B,3,H,W) RGB in [0,1] -> ImageNet-normalised, as every backbone sees its input (OISModel.encode)."""
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD))
    return (images - mean) / std


def _one_thread() -> None:
    """The scene worker's setup: one torch thread, the training keeps the other cores."""
    torch.set_num_threads(1)


def training_scenes(steps: int, batch: int, size: int, scenes: str) -> Iterator[tuple[Tensor, Tensor]]:
    """:func:`scene_batch` of the training stream for steps ``0 .. steps-1`` in order, each made in one worker
    process up to :data:`AHEAD` steps before the optimiser takes it: the same scenes as made in place (each is a
    function of its stream and index alone), while the training's own thread stays on the network (generating
    them in place was about 15% of a step)."""
    with ProcessPoolExecutor(max_workers=1, initializer=_one_thread) as pool:
        pending: deque[Future] = deque()
        for step in range(steps):
            while len(pending) < AHEAD and step + len(pending) < steps:
                start = (step + len(pending)) * batch
                pending.append(pool.submit(scene_batch, TRAIN_SCENE_SEED, start, batch, size, scenes))
            yield pending.popleft().result()


def train_steps(params: list[nn.Parameter], loss_of: Callable[[Tensor, Tensor], Tensor],
                batches: Iterator[tuple[Tensor, Tensor]], steps: int, lr: float, weight_decay: float,
                log_every: int = 50) -> tuple[list[float], float]:
    """AdamW over ``steps`` steps, step k's loss ``loss_of(images, depth)`` of the k-th of ``batches``
    (:func:`training_scenes`), linear warm-up then cosine decay; returns the loss of every step and the seconds
    taken."""
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    warm = max(1, int(WARMUP * steps))

    def factor(k: int) -> float:
        return (k + 1) / warm if k < warm else 0.5 * (1 + math.cos(math.pi * (k - warm) / max(1, steps - warm)))

    schedule = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    losses = []
    start = time.time()
    for step in range(steps):
        loss = loss_of(*next(batches))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
        losses.append(loss.item())
        if (step + 1) % log_every == 0 or step + 1 == steps:
            recent = float(np.mean(losses[-log_every:]))
            print(f"step {step + 1}/{steps} loss {recent:.4f} ({time.time() - start:.0f} s)", flush=True)
    return losses, time.time() - start


def reuse_or_start(out: Path, budget: Budget, threads: int | None, force: bool) -> dict | None:
    """The report of an earlier run into ``out`` with the same budget (:func:`finished_report`), or None after
    setting the torch threads for a fresh run (always with ``force``)."""
    done = None if force else finished_report(out, budget)
    if done is None:
        if threads is not None:
            torch.set_num_threads(threads)
        return None
    print(reuse_line(out))
    return done


def write_outputs(out: Path, state: dict[str, Tensor] | dict[str, dict[str, Tensor]], report: dict) -> None:
    """Checkpoint first, report last (its presence marks a finished run), each atomically."""
    atomic_write(out, lambda f: torch.save(state, f), mode="wb")
    atomic_write(report_path(out), lambda f: json.dump(report, f, indent=1))
    print(f"wrote {out} and {report_path(out)}")


def run_report(budget: Any, losses: list[float], seconds: float) -> dict:
    """The report fields both commands share: budget, scene streams, train loss of the first / last 20 steps."""
    return {
        "settings": asdict(budget),
        "train_scenes": {"seed": TRAIN_SCENE_SEED, "count": budget.steps * budget.batch},
        "heldout_scenes": {"seed": HELDOUT_SCENE_SEED, "count": budget.heldout},
        "train_loss_first_last": [float(np.mean(losses[:20])), float(np.mean(losses[-20:]))],
        "train_seconds": round(seconds, 1), "threads": torch.get_num_threads(),
    }
