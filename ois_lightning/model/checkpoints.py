"""Reading published checkpoints and loading them strictly.

Accepted files: ``.pth`` / ``.pt`` / ``.bin`` (``torch.load`` with ``weights_only=True``) and ``.safetensors``,
a plain state dict or one wrapped in ``{"model": ...}`` / ``{"state_dict": ...}``, keys optionally prefixed
``module.`` (DDP). A directory holds ``config.json`` and the weights (:func:`read_hf_weights`): a Hugging Face
``DepthAnythingForDepthEstimation`` export or a Depth Anything V1 hub directory, read by :mod:`.hf_depth_anything`.

Loading is strict: a missing, unexpected or mis-shaped key is a :class:`CheckpointError` naming the file and the
keys, raised before any weight is copied.
"""
from __future__ import annotations

from pathlib import Path

import json

import torch
from torch import Tensor, nn

WRAPPERS = ("model", "state_dict")
SHOWN_KEYS = 8  # keys listed per category in an error message
HF_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


class CheckpointError(ValueError):
    """A checkpoint that does not fit; the message names the file and the offending keys."""


def _unwrap(obj: object, path: Path) -> dict[str, Tensor]:
    if isinstance(obj, dict):
        for name in WRAPPERS:
            if isinstance(obj.get(name), dict):
                obj = obj[name]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(
            f"{path}: not a state dict (expected a dict of tensors, optionally under 'model' or 'state_dict')"
        )
    return {k.removeprefix("module."): v for k, v in obj.items()}


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a checkpoint file, on the CPU (HF directories: :mod:`.hf_depth_anything`)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return _unwrap(load_file(str(path), device="cpu"), path)
        except (OSError, RuntimeError, ValueError) as e:
            if isinstance(e, CheckpointError):
                raise
            raise CheckpointError(f"{path}: cannot read safetensors file: {e}") from e
    if path.suffix in (".pth", ".pt", ".bin"):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises several types for corrupt / pickled-object files
            raise CheckpointError(f"{path}: cannot read torch checkpoint: {str(e).splitlines()[0]}") from e
        return _unwrap(obj, path)
    raise CheckpointError(
        f"{path}: unknown checkpoint format (expected .pth, .pt, .bin, .safetensors or an HF directory)"
    )


def read_hf_weights(folder: str | Path) -> dict[str, Tensor]:
    """The tensors of a hub directory: ``model.safetensors``, a sharded ``model.safetensors.index.json`` or
    ``pytorch_model.bin`` (the first one present)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    single, index, legacy = (folder / n for n in HF_WEIGHT_FILES)
    if single.is_file():
        return read_state_dict(single)
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return {k: v for shard in shards for k, v in load_file(str(folder / shard), device="cpu").items()}
    if legacy.is_file():
        return read_state_dict(legacy)
    raise CheckpointError(f"{folder}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")


def _listing(label: str, keys: list[str]) -> str:
    shown = ", ".join(keys[:SHOWN_KEYS])
    more = f" ... ({len(keys)} in total)" if len(keys) > SHOWN_KEYS else ""
    return f"{label} [{shown}{more}]"


def raise_on_mismatch(source: str | Path, missing: list[str], unexpected: list[str], misshaped: list[str]) -> None:
    """One CheckpointError naming ``source`` and every missing, unexpected and mis-shaped key, if there is any."""
    parts = [
        _listing(label, sorted(keys))
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped (file vs model)", misshaped))
        if keys
    ]
    if parts:
        raise CheckpointError(f"{source}: checkpoint does not match the model: " + "; ".join(parts))


def misshaped_entry(key: str, file_shape: tuple[int, ...], model_shape: tuple[int, ...]) -> str:
    return f"{key} {tuple(file_shape)} vs {tuple(model_shape)}"


def load_strict(module: nn.Module, state: dict[str, Tensor], source: str | Path) -> None:
    """``module.load_state_dict(state, strict=True)`` after checking keys and shapes ourselves, so that every
    problem is reported at once in one message naming ``source``."""
    own = module.state_dict()
    raise_on_mismatch(
        source,
        missing=[k for k in own if k not in state],
        unexpected=[k for k in state if k not in own],
        misshaped=[
            misshaped_entry(k, state[k].shape, own[k].shape)
            for k in own
            if k in state and state[k].shape != own[k].shape
        ],
    )
    module.load_state_dict(state, strict=True)


def init_from_depth_head(seg_head: nn.Module, depth_head: nn.Module) -> None:
    """Copy the depth decoder's weights into the segmentation decoder (Sec. 4.1: both decoders start from DAv2).

    The segmentation copy has no ``refinenet4.resConfUnit1`` (unused by the forward pass) and no final ReLU
    (no parameters), so exactly those keys are skipped; any other difference is an error.
    """
    unused = "scratch.refinenet4.resConfUnit1."
    state = {k: v for k, v in depth_head.state_dict().items() if not k.startswith(unused)}
    load_strict(seg_head, state, "depth_head -> seg_head")
