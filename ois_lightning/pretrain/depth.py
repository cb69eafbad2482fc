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
from .common import (HELDOUT_SCENE_SEED, imagenet_normalise, reuse_or_start, run_report, scene_batch,
                     train_steps, training_scenes, write_outputs)
from .ssi import depth_metrics, ssi_loss

OUTPUT_BIAS = 1.0  # start of the last conv's bias: a random head's output can be <= 0 everywhere (init seed 1 of
# 0-3), and then the final ReLU (kept, as in the published head) passes no gradient at all


def init_backbone(seed: int, backbone: str = "tiny") -> Backbone:
    """Random-init Backbone ``backbone`` with a live final ReLU (the untrained reference and the training start)."""
    torch.manual_seed(seed)
    net = Backbone(SPECS[backbone])
    with torch.no_grad():
        net.depth_head.scratch.output_conv2[2].bias.fill_(OUTPUT_BIAS)
    return net


def predict(net: Backbone, images: Tensor) -> Tensor:
    """images (B,3,S,S) RGB in [0,1] -> disparity (B,1,S,S)."""
    return net(imagenet_normalise(images))


def quality(pred: Tensor, gt: Tensor) -> dict[str, float]:
    """SSI loss, AbsRel and delta<1.25 of disparity predictions (B,1,S,S) against the exact disparity."""
    return {"ssi_loss": ssi_loss(pred, gt).item(), **depth_metrics(pred, gt)}


@torch.no_grad()
def evaluate(net: Backbone, size: int, count: int, scenes: str) -> dict[str, float]:
    """:func:`quality` on ``count`` held-out scenes (stream HELDOUT_SCENE_SEED, cues ``scenes``)."""
    net.eval()
    images, gt = scene_batch(HELDOUT_SCENE_SEED, 0, count, size, scenes)
    return quality(torch.cat([predict(net, x) for x in images.split(8)]), gt)


def flat_reference(size: int, count: int, scenes: str) -> dict[str, float]:
    """:func:`quality` of a flat map (any constant: after alignment, each image's mean disparity) on the same
    held-out scenes: what a head that learned nothing from the image scores."""
    _, gt = scene_batch(HELDOUT_SCENE_SEED, 0, count, size, scenes)
    return quality(torch.ones_like(gt), gt)


def pretrain_depth(out: str | Path, budget: DepthBudget = DepthBudget(), threads: int | None = 1,
                   force: bool = False) -> dict:
    """Train, evaluate against the untrained start and a flat map, write ``out`` (DAv2 layout) and ``out`` .json
    (held-out quality under ``held_out.pretrained`` / ``.untrained`` / ``.flat``, each ``ssi_loss``, ``absrel``,
    ``delta1``); returns the report. A finished run into ``out`` with the same budget is reused."""
    out = Path(out)
    done = reuse_or_start(out, budget, threads, force)
    if done is not None:
        return done
    net = init_backbone(budget.seed, budget.backbone)
    untrained = evaluate(net, budget.size, budget.heldout, budget.scenes)
    print(f"untrained: {untrained}")

    def loss_of(images: Tensor, disparity: Tensor) -> Tensor:
        return ssi_loss(predict(net.train(), images), disparity)

    batches = training_scenes(budget.steps, budget.batch, budget.size, budget.scenes)
    losses, seconds = train_steps(list(net.parameters()), loss_of, batches, budget.steps, budget.lr,
                                  budget.weight_decay)
    pretrained = evaluate(net, budget.size, budget.heldout, budget.scenes)
    print(f"pretrained: {pretrained}")
    flat = flat_reference(budget.size, budget.heldout, budget.scenes)
    held_out = {"pretrained": pretrained, "untrained": untrained, "flat": flat}
    report = {**run_report(budget, losses, seconds), "backbone": budget.backbone, "layout": "depth_anything_v2",
              "held_out": held_out}
    write_outputs(out, net.state_dict(), report)
    build(budget.backbone, out)  # what was written loads strictly through the published-checkpoint path
    return report
