"""``ois pretrain depth``: the tiny ViT + DPT depth head trained for relative depth on layered scenes, written in
the official Depth Anything V2 layout (a plain state dict of ``pretrained.*`` + ``depth_head.*``).

Depth Anything's recipe in miniature: disparity targets (larger = closer), the affine-invariant loss
(:func:`.ssi.ssi_loss`), encoder and head trained together, AdamW. The file then goes wherever a DAv2 checkpoint
goes: ``model.backbone.checkpoint`` (own depth head, the segmentation decoder initialised from it, Sec. 4.1) or
``data.depth.model=tiny data.depth.checkpoint=...`` (a separate depth model, Table 6).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from ..model.specs import SPECS
from ..model.backbones import Backbone, build
from .budgets import DepthBudget
from .common import (HELDOUT_SCENE_SEED, TRAIN_SCENE_SEED, imagenet_normalise, reuse_or_start, run_report,
                     scene_batch, train_steps, write_outputs)
from .ssi import depth_metrics, ssi_loss

BACKBONE = "tiny"
OUTPUT_BIAS = 1.0  # start of the last conv's bias: a random head's output can be <= 0 everywhere (init seed 1 of
# 0-3), and then the final ReLU (kept, as in the published head) passes no gradient at all


def init_backbone(seed: int) -> Backbone:
    """Random-init tiny Backbone with a live final ReLU (the untrained reference and the training start)."""
    torch.manual_seed(seed)
    net = Backbone(SPECS[BACKBONE])
    with torch.no_grad():
        net.depth_head.scratch.output_conv2[2].bias.fill_(OUTPUT_BIAS)
    return net


def predict(net: Backbone, images: Tensor) -> Tensor:
    """images (B,3,S,S) RGB in [0,1] -> disparity (B,1,S,S)."""
    return net(imagenet_normalise(images))


@torch.no_grad()
def evaluate(net: Backbone, size: int, count: int) -> dict[str, float]:
    """SSI loss, AbsRel and delta<1.25 on ``count`` held-out scenes (stream HELDOUT_SCENE_SEED)."""
    net.eval()
    images, gt = scene_batch(HELDOUT_SCENE_SEED, 0, count, size)
    pred = torch.cat([predict(net, x) for x in images.split(8)])
    return {"ssi_loss": ssi_loss(pred, gt).item(), **depth_metrics(pred, gt)}


def pretrain_depth(out: str | Path, budget: DepthBudget = DepthBudget(), threads: int | None = 1,
                   force: bool = False) -> dict:
    """Train, evaluate against the untrained start, write ``out`` (DAv2 layout) and ``out`` .json; returns the
    report. A finished run into ``out`` with the same budget is reused."""
    out = Path(out)
    done = reuse_or_start(out, budget, threads, force)
    if done is not None:
        return done
    net = init_backbone(budget.seed)
    untrained = evaluate(net, budget.size, budget.heldout)
    print(f"untrained: {untrained}")

    def loss_at(step: int) -> Tensor:
        images, disparity = scene_batch(TRAIN_SCENE_SEED, step * budget.batch, budget.batch, budget.size)
        return ssi_loss(predict(net.train(), images), disparity)

    losses, seconds = train_steps(list(net.parameters()), loss_at, budget.steps, budget.lr, budget.weight_decay)
    pretrained = evaluate(net, budget.size, budget.heldout)
    print(f"pretrained: {pretrained}")
    report = {**run_report(budget, losses, seconds), "backbone": BACKBONE, "layout": "depth_anything_v2",
              "untrained": untrained, "pretrained": pretrained}
    write_outputs(out, net.state_dict(), report)
    build(BACKBONE, out)  # what was written loads strictly through the published-checkpoint path
    return report
