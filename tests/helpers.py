"""Helpers shared by several test modules: paths, tiny configs, checkpoints, sweep and results files, random
weights, commands started warm (shared fixtures are in conftest.py)."""
from __future__ import annotations

import json
import math
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

from ois_lightning.config.load import load_config
from ois_lightning.config.schema import to_dict
from ois_lightning.data.base import Sample, SegDataset
from ois_lightning.model import build_model
from ois_lightning.utils import warm_start

MASKED_SIZE = (40, 60)  # MaskedImages' height and width

class MaskedImages(SegDataset):
    """Grey 40x60 images, image ``i`` filled with ``10 * (i + 1)``, each holding the given masks (a list of
    (40,60) bool arrays, possibly empty)."""

    name = "masked"

    def __init__(self, *images: list[np.ndarray]):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Sample:
        h, w = MASKED_SIZE
        masks = np.stack(self.images[i]).astype(np.int8) if self.images[i] else np.zeros((0, h, w), np.int8)
        return Sample(np.full((h, w, 3), 10 * (i + 1), np.uint8), masks, None, f"masked/{i}")

IMAGE_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGE_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


@torch.no_grad()
def randomize_(model: nn.Module, seed: int) -> nn.Module:
    """Weights ~ N(0, 1/fan_in), vectors ~ N(0, 0.01), norm scales around 1: every part changes the output."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        scale = 1 / math.sqrt(p[0].numel()) if p.ndim > 1 else 0.1
        offset = 1.0 if "norm" in name and name.endswith("weight") else 0.0
        p.copy_(torch.randn(p.shape, generator=g) * scale + offset)
    return model


REPO = Path(__file__).resolve().parents[1]


SHARED = REPO.parent / "shared"


TINY = ["model.backbone.name=tiny", "model.input_size=112", "model.sparse.dim=32", "model.sparse.num_heads=4",
        "model.sparse.ffn_dim=64"]


TINY_YAML = str(REPO / "experiments" / "tiny.yaml")


def tiny_cfg(*extra: str):
    return load_config(TINY_YAML, TINY + ["data.layered.size=112", *extra])


TINY_RUN = TINY + [
    "data.train=[layered]", "data.val=[layered]", "data.test=[layered]", "data.depth.source=gt",
    "data.depth.model=null", "data.batch_size=2", "data.num_workers=0", "data.layered.size=112",
    "data.layered.train_length=4", "data.layered.val_length=1", "data.layered.test_length=1",
    "train.accelerator=cpu", "train.devices=1", "train.strategy=auto", "train.val_objects=1",
    "eval.max_objects=1", "logger.kind=none",
]


QUICK = TINY + ["data.layered.size=112", "data.batch_size=2", "data.min_object_area=200",
                "data.layered.val_length=1", "data.layered.test_length=1", "train.val_objects=1",
                "eval.max_objects=2", "clicks.max_eval=5", "logger.kind=csv", "train.log_every_n_steps=1"]


def global_step(ckpt: Path) -> int:
    return int(torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"])


def save_checkpoint(path: Path, *overrides: str, config: str | None = None, stored_config: bool = True,
                    randomize: int | None = None) -> Path:
    """A Lightning-format checkpoint of a random model: ``state_dict`` with ``OISLitModule``'s ``model.`` prefix
    and, as its ``save_hyperparameters`` stores it, the resolved config. ``randomize``: the seed of
    :func:`randomize_` (masks that are neither empty nor full), else the modules' own initialisation."""
    torch.manual_seed(0)
    cfg = load_config(config, TINY + list(overrides))
    model = build_model(cfg.model, cfg.data.depth)
    if randomize is not None:
        randomize_(model, randomize)
    checkpoint: dict = {"state_dict": {"model." + k: v for k, v in model.state_dict().items()}}
    if stored_config:
        checkpoint["hyper_parameters"] = to_dict(cfg)
    torch.save(checkpoint, path)
    return path


ROWS = [str(REPO / "experiments/table4/full.yaml"), str(REPO / "experiments/table4/wo_order.yaml")]


def train_at_step(action: str) -> str:
    """The source of an `ois train` (``python -c SRC STEP train ...``) that runs ``action`` (one Python statement;
    ``os``, ``signal`` and ``time`` are imported) at the start of the batch after global step STEP."""
    return f"""
import os, signal, sys, time
import lightning as L
from ois_lightning.cli import main
from ois_lightning.lit import train as lit_train

step, build = int(sys.argv[1]), lit_train.build_trainer

class AtStep(L.Callback):
    def on_train_batch_start(self, trainer, *args):
        if trainer.global_step == step:
            {action}

def build_with_callback(cfg):
    trainer = build(cfg)
    trainer.callbacks.append(AtStep())
    return trainer

lit_train.build_trainer = build_with_callback
sys.exit(main(sys.argv[2:]))
"""


# `ois train` that sends itself SIGTERM during the batch after global step argv[1], as `scancel` or a SLURM
# preemption would; one that stalls there, to be killed.
SELF_TERMINATED = train_at_step("os.kill(os.getpid(), signal.SIGTERM)")
STALLED_TRAIN = train_at_step("time.sleep(600)")


# Stands in for `python -m ois_lightning train` in the fast runner tests: claims its output_dir as `ois train` does
# (settings.json), records its argv, fails on request, is preempted on request (writes a last.ckpt, exits 143),
# writes a schema-valid results.json of its resolved config into output_dir.
FAKE_TRAIN = """
import json, os, pathlib, sys
import ois_lightning.config.schema as config, ois_lightning.config.load as loader
from ois_lightning.protocol.run_folder import claim
loader.check = lambda *a, **k: None  # skip the cross-key checks: they import torch (seconds per point)
args = dict(a.split("=", 1) for a in sys.argv[2:])
cfg = loader.load_config(args["config"], [a for a in sys.argv[2:] if not a.startswith("config=")])
out = pathlib.Path(args["output_dir"])
claim(cfg)
(out / "env.json").write_text(json.dumps({"CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES")}))
with open(os.environ["FAKE_CALLS"], "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
if os.environ.get("FAKE_FAIL") and os.environ["FAKE_FAIL"] in str(out):
    sys.exit(3)
if os.environ.get("FAKE_PREEMPT") and os.environ["FAKE_PREEMPT"] in str(out):
    (out / "checkpoints").mkdir(exist_ok=True)
    (out / "checkpoints" / "last.ckpt").write_bytes(b"step 1")
    sys.exit(143)
ious = [[0.5] + [0.95] * 19, [0.3] * 3 + [0.91] * 17]
res = {"summary": {"NoC90": 2.0}, "per_object": {"ids": ["a", "b"], "ious": ious}, "config": config.to_dict(cfg),
       "git_commit": None, "seed": int(args["seed"]), "dataset": "layered"}
(out / "results.json").write_text(json.dumps(res))
if os.environ.get("FAKE_FAIL_AFTER") and os.environ["FAKE_FAIL_AFTER"] in str(out):
    sys.exit(1)
"""


def write_sweep(tmp_path: Path, command: list[str], name: str = "tiny4") -> Path:
    sweep = {"name": name, "method": "grid", "parameters": {"config": {"values": ROWS}, "seed": {"values": [0, 1]}},
             "command": command}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return path


TABLE4 = REPO / "experiments/table4/table.yaml"


def curve(reach90_at: int, first: float = 0.5) -> list[float]:
    """20 IoUs: `first` at click 1, then 0.8, reaching 0.92 at click `reach90_at` (never if > 20)."""
    c = [first] + [0.8] * 19
    for k in range(reach90_at - 1, 20):
        c[k] = 0.92
    return c


def write_run(root: Path, row: str, seed: int, curves: dict[str, list[float]], table: str = "table4",
              clicks: dict | None = None, dataset: str = "davis", config: dict | None = None) -> Path:
    out = root / row / f"seed{seed}"
    out.mkdir(parents=True)
    payload = {
        "summary": {"NoC90": -1.0},  # ignored: `ois table` recomputes from the curves
        "per_object": {"ids": list(curves), "ious": list(curves.values())},
        "config": {"table": table, "row": row, "seed": seed, "clicks": {"max_eval": 20, **(clicks or {})},
                   **(config or {})},
        "git_commit": None, "seed": seed, "dataset": dataset,
    }
    (out / "results.json").write_text(json.dumps(payload))
    return out / "results.json"


def official_shapes(dim: int, depth: int, features: int, out: tuple[int, ...], grid: int = 37) -> dict[str, tuple]:
    """Every key of an official DAv1/DAv2 state dict with its shape (DINOv2 ViT/14 + DPT head)."""
    s: dict[str, tuple] = {
        "pretrained.cls_token": (1, 1, dim),
        "pretrained.pos_embed": (1, 1 + grid * grid, dim),
        "pretrained.mask_token": (1, dim),
        "pretrained.patch_embed.proj.weight": (dim, 3, 14, 14),
        "pretrained.patch_embed.proj.bias": (dim,),
        "pretrained.norm.weight": (dim,),
        "pretrained.norm.bias": (dim,),
    }
    for i in range(depth):
        b = f"pretrained.blocks.{i}."
        s.update({
            b + "norm1.weight": (dim,), b + "norm1.bias": (dim,),
            b + "attn.qkv.weight": (3 * dim, dim), b + "attn.qkv.bias": (3 * dim,),
            b + "attn.proj.weight": (dim, dim), b + "attn.proj.bias": (dim,),
            b + "ls1.gamma": (dim,),
            b + "norm2.weight": (dim,), b + "norm2.bias": (dim,),
            b + "mlp.fc1.weight": (4 * dim, dim), b + "mlp.fc1.bias": (4 * dim,),
            b + "mlp.fc2.weight": (dim, 4 * dim), b + "mlp.fc2.bias": (dim,),
            b + "ls2.gamma": (dim,),
        })
    h = "depth_head."
    for i, c in enumerate(out):
        s[h + f"projects.{i}.weight"], s[h + f"projects.{i}.bias"] = (c, dim, 1, 1), (c,)
        s[h + f"scratch.layer{i + 1}_rn.weight"] = (features, c, 3, 3)
    for i, k in ((0, 4), (1, 2), (3, 3)):
        s[h + f"resize_layers.{i}.weight"], s[h + f"resize_layers.{i}.bias"] = (out[i], out[i], k, k), (out[i],)
    for n in range(1, 5):
        r = h + f"scratch.refinenet{n}."
        s[r + "out_conv.weight"], s[r + "out_conv.bias"] = (features, features, 1, 1), (features,)
        for unit in ("resConfUnit1", "resConfUnit2"):
            for conv in ("conv1", "conv2"):
                s[r + f"{unit}.{conv}.weight"], s[r + f"{unit}.{conv}.bias"] = (features, features, 3, 3), (features,)
    s[h + "scratch.output_conv1.weight"] = (features // 2, features, 3, 3)
    s[h + "scratch.output_conv1.bias"] = (features // 2,)
    s[h + "scratch.output_conv2.0.weight"], s[h + "scratch.output_conv2.0.bias"] = (32, features // 2, 3, 3), (32,)
    s[h + "scratch.output_conv2.2.weight"], s[h + "scratch.output_conv2.2.bias"] = (1, 32, 1, 1), (1,)
    return s


def random_state(shapes: dict[str, tuple], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights of a sensible scale, so every part of the network changes the output."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        x = torch.randn(shape, generator=g)
        if key.endswith(("norm1.weight", "norm2.weight", "norm.weight")):
            x = 1 + 0.1 * x
        elif key.endswith("gamma"):
            x = 0.5 + 0.2 * x
        elif len(shape) > 1 and not key.endswith(("cls_token", "pos_embed", "mask_token")):  # tokens: unit scale
            x = x / math.sqrt(math.prod(shape[1:]))
        elif len(shape) == 1:
            x = 0.05 * x
        state[key] = x
    state["depth_head.scratch.output_conv2.2.bias"] = torch.ones(1)  # keep the final ReLU mostly active
    return state


def random_image(h: int, w: int, seed: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(1, 3, h, w, generator=g) - IMAGE_MEAN) / IMAGE_STD


VITB_SHAPES = dict(dim=768, depth=12, features=128, out=(96, 192, 384, 768))


def tiny_zoedepth():
    """A tiny random ZoeDepth built offline from configs (a 4-block BEiT backbone)."""
    from transformers import BeitConfig, ZoeDepthConfig, ZoeDepthForDepthEstimation

    backbone = BeitConfig(image_size=64, patch_size=16, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                          intermediate_size=64, use_relative_position_bias=True, reshape_hidden_states=False,
                          out_features=["stage1", "stage2", "stage3", "stage4"])
    config = ZoeDepthConfig(backbone_config=backbone, neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16,
                            bottleneck_features=16, num_relative_features=8, bin_embedding_dim=16,
                            num_attractors=[4, 2, 2, 1],
                            bin_configurations=[{"n_bins": 8, "min_depth": 0.1, "max_depth": 10.0}])
    return randomize_(ZoeDepthForDepthEstimation(config).eval(), seed=0)  # default init: a constant map


def wandb_records(path: Path) -> list:
    """The records of an offline ``run-*.wandb`` file, decoded with W&B's own protobuf ``Record``. The file is
    W&B's LevelDB-style log: a 7-byte header (``:W&B``, magic, version), then 32 KiB blocks of chunks, each with
    a 7-byte header (crc32, length, type: 1 full, 2 first, 3 middle, 4 last)."""
    import struct

    from wandb.proto.wandb_internal_pb2 import Record

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B", path
    pos, found, pending = 7, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # the rest of a block too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0:
            break
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            found.append(Record.FromString(pending))
    return found


def wandb_steps(path: Path) -> list[int]:
    """W&B's step of every history row of an offline run file."""
    return [r.history.step.num for r in wandb_records(path) if r.WhichOneof("record_type") == "history"]


def run_warm(argv: list[str], env: dict[str, str] | None = None, cwd: Path = REPO, timeout: float = 600,
             check: bool = False) -> subprocess.CompletedProcess:
    """``subprocess.run(argv, capture_output=True, text=True)`` of a ``python`` command, started warm
    (:mod:`ois_lightning.utils.warm_start`: the same process without the 15 s of imports) where it can be."""
    with tempfile.TemporaryDirectory() as tmp:
        out, err = Path(tmp) / "out", Path(tmp) / "err"
        proc = warm_start.start(argv, env, cwd, stdout=out, stderr=err)
        if proc is None:
            done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
        else:
            try:
                code = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise
            done = subprocess.CompletedProcess(argv, code, out.read_text(), err.read_text())
    if check:
        done.check_returncode()
    return done
