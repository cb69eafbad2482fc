"""``ois pretrain``: the depth-pretrained tiny backbone in the official Depth Anything V2 layout and the MAE
miniature in the MAE release layout, loaded through the published-checkpoint path; the SSI loss and metrics."""
from __future__ import annotations

import os

import pytest
import torch

from ois_lightning.cli import main
from ois_lightning.config.schema import ConfigError
from ois_lightning.config.load import load_config
from ois_lightning.model import build_model
from ois_lightning.model.backbones import build
from ois_lightning.model.checkpoints import CheckpointError
from ois_lightning.model.specs import depth_model_names
from ois_lightning.pretrain.budgets import DepthBudget, MAEBudget
from ois_lightning.pretrain.budgets import report_path
from ois_lightning.pretrain.common import HELDOUT_SCENE_SEED, TRAIN_SCENE_SEED, scene_batch, training_scenes
from ois_lightning.pretrain.depth import pretrain_depth
from ois_lightning.pretrain.mae import pretrain_mae
from ois_lightning.pretrain.ssi import align_scale_shift, depth_metrics, ssi_loss

from .helpers import TINY


SHORT = DepthBudget(steps=30, batch=4, size=56)  # seconds on 2 cores; the CLI defaults elsewhere
MARGIN = 0.05  # AbsRel the short run must gain over its untrained start (measured 0.10-0.16 for init seeds 0-2;
# no training, or a target of the wrong sign, gains <= 0)


@pytest.fixture(scope="module")
def depth_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrain") / "depth_tiny.pth"
    return out, pretrain_depth(out, SHORT, threads=1)


@pytest.fixture(scope="module")
def mae_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrain") / "mae_tiny.pth"
    return out, pretrain_mae(out, MAEBudget(steps=8, batch=4, heldout=4), threads=1)


# --- the SSI loss and the aligned metrics ---------------------------------------------------------------------

def test_alignment_removes_scale_and_shift_exactly():
    _, gt = scene_batch(HELDOUT_SCENE_SEED, 0, 3, 56, "occlusion")
    pred = 2 * gt + 3
    assert depth_metrics(pred, gt) == pytest.approx({"absrel": 0.0, "delta1": 1.0}, abs=1e-6)
    assert ssi_loss(pred, gt).item() < 1e-5
    assert torch.allclose(align_scale_shift(pred, gt, gt >= 0), gt, atol=1e-5)
    shuffled = depth_metrics(gt.flatten(1)[:, torch.randperm(gt[0].numel())].view_as(gt), gt)
    assert shuffled["absrel"] > 0.3 and shuffled["delta1"] < 0.6  # no affine map fixes a scrambled map
    # far and near swapped: the least-squares alignment may flip the sign (s = -1), the training loss may not
    assert depth_metrics(1 - gt, gt)["absrel"] < 1e-6 and ssi_loss(1 - gt, gt).item() > 1.0
    constant = align_scale_shift(torch.ones_like(gt), gt, gt >= 0)  # a flat prediction: s = 0, t = mean
    assert torch.allclose(constant, gt.mean(dim=(1, 2, 3), keepdim=True).expand_as(gt), atol=1e-5)


def test_pretraining_scenes_are_disjoint_from_the_split_streams():
    a, _ = scene_batch(TRAIN_SCENE_SEED, 0, 1, 56, "monocular")
    b, _ = scene_batch(HELDOUT_SCENE_SEED, 0, 1, 56, "monocular")
    test, _ = scene_batch(2, 0, 1, 56, "monocular")  # the test split's stream (SPLIT_SEEDS)
    assert not torch.equal(a, b) and not torch.equal(a, test)


# --- depth pre-training ------------------------------------------------------------------------------------------

def test_the_prefetched_training_stream_is_the_stream_made_in_place():
    """The worker process makes step k's scenes exactly as :func:`scene_batch` does in place, in step order, and
    stops after the last step (a checkpoint of either is the same, bit for bit)."""
    made = list(training_scenes(6, 2, 28, "monocular"))
    assert len(made) == 6
    for step, (images, depth) in enumerate(made):
        want_images, want_depth = scene_batch(TRAIN_SCENE_SEED, step * 2, 2, 28, "monocular")
        assert torch.equal(images, want_images) and torch.equal(depth, want_depth)


def test_short_depth_run_lowers_the_loss_and_beats_the_untrained_head(depth_run):
    _, report = depth_run
    first, last = report["train_loss_first_last"]
    untrained, pretrained, flat = (report["held_out"][k] for k in ("untrained", "pretrained", "flat"))
    assert set(pretrained) == set(flat) == {"ssi_loss", "absrel", "delta1"}  # the documented report fields
    assert 0.0 <= pretrained["delta1"] <= 1.0 and pretrained["absrel"] >= 0.0
    assert flat["ssi_loss"] == pytest.approx(1.0, abs=0.05)  # a constant map: |0 - median_mad(gt)| averages to 1
    assert last < first
    assert pretrained["ssi_loss"] < untrained["ssi_loss"]
    assert pretrained["absrel"] < untrained["absrel"] - MARGIN, (untrained, pretrained)
    assert report["train_scenes"]["seed"] == TRAIN_SCENE_SEED and report["heldout_scenes"]["seed"] == HELDOUT_SCENE_SEED


def test_depth_checkpoint_is_the_dav2_layout_and_initialises_the_seg_head(depth_run):
    out, _ = depth_run
    state = torch.load(out, weights_only=True)
    assert all(k.startswith(("pretrained.", "depth_head.")) for k in state)
    assert build("tiny", out).state_dict().keys() == state.keys()
    model = build_model(load_config(None, TINY + [f"model.backbone.checkpoint={out}"]).model)
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in state.items())
    seg = model.seg_head.state_dict()
    assert len(seg) == len([k for k in state if k.startswith("depth_head.")]) - 4  # refinenet4.resConfUnit1
    for k, v in seg.items():
        assert torch.equal(v, state[f"depth_head.{k}"]), k


def test_wrong_layouts_are_rejected_naming_the_key(depth_run, tmp_path):
    out, _ = depth_run
    state = torch.load(out, weights_only=True)
    bare = tmp_path / "no_prefix.pth"  # the encoder without DAv2's `pretrained.` prefix
    torch.save({k.removeprefix("pretrained."): v for k, v in state.items()}, bare)
    with pytest.raises(CheckpointError, match=r"missing \[depth_head\.") as e:
        build("tiny", bare)
    assert "unexpected [pretrained.depth_head." in str(e.value)
    renamed = dict(state)
    renamed["depth_head.scratch.out_conv1.weight"] = renamed.pop("depth_head.scratch.output_conv1.weight")
    torch.save(renamed, tmp_path / "renamed.pth")
    with pytest.raises(CheckpointError, match=r"missing \[depth_head\.scratch\.output_conv1\.weight\].*"
                                              r"unexpected \[depth_head\.scratch\.out_conv1\.weight\]"):
        build_model(load_config(None, TINY + [f"model.backbone.checkpoint={tmp_path / 'renamed.pth'}"]).model)


def test_rerun_reuses_the_output_unless_forced(depth_run, capsys):
    out, report = depth_run
    stamp = os.stat(out).st_mtime_ns
    argv = ["pretrain", "depth", "--out", str(out), "--steps", "30", "--batch", "4", "--size", "56"]
    assert main(argv) == 0
    assert "reusing" in capsys.readouterr().out and os.stat(out).st_mtime_ns == stamp
    assert pretrain_depth(out, SHORT) == report
    with pytest.raises(ConfigError, match="--force"):
        pretrain_depth(out, DepthBudget(steps=31, batch=4, size=56))
    assert main(argv[:-2] + ["--size", "42"]) == 2  # another budget into the same file: one-line config error
    assert report_path(out).is_file()


# --- MAE pre-training and the Table 10-11 miniature -----------------------------------------------------------------

def test_mae_checkpoint_loads_through_the_mae_path_with_the_decoder_dropped(mae_run, depth_run):
    out, report = mae_run
    state = torch.load(out, weights_only=True)["model"]  # the MAE release wrapper
    decoder = [k for k in state if k.startswith("decoder_") or k == "mask_token"]
    assert {"mask_token", "decoder_embed.weight", "decoder_pred.weight", "decoder_pos_embed"} <= set(decoder)
    assert {"cls_token", "pos_embed", "patch_embed.proj.weight", "norm.weight", "blocks.3.mlp.fc2.weight"} <= set(state)
    net = build("mae-tiny", out)
    assert net.depth_head is None and not any(".ls1." in k for k in net.state_dict())  # MAE: no layer scale
    loaded = net.state_dict()
    assert len(loaded) == len(state) - len(decoder)
    assert all(torch.equal(loaded[f"pretrained.{k}"], v) for k, v in state.items() if k not in decoder)
    assert report["heldout_loss"]["pretrained"] < report["heldout_loss"]["untrained"]
    depth_file, _ = depth_run
    cfg = load_config(None, TINY + ["model.backbone.name=mae-tiny", f"model.backbone.checkpoint={out}",
                                    "data.depth.model=tiny", f"data.depth.checkpoint={depth_file}",
                                    "data.depth.preprocess=input"])
    model = build_model(cfg.model, cfg.data.depth)
    assert torch.equal(model.depth_model.net.depth_head.scratch.output_conv1.weight,
                       torch.load(depth_file, weights_only=True)["depth_head.scratch.output_conv1.weight"])
    with torch.no_grad():
        enc = model.encode(torch.rand(1, 3, 112, 112))
    assert enc.depth.shape == (1, 1, 112, 112) and enc.feats[0].shape == (1, 64, 7, 7)


def test_tiny_is_a_valid_depth_model():
    assert "tiny" in depth_model_names() and "mae-tiny" not in depth_model_names()
