"""A Lightning checkpoint of ``ois train``, read once: its config and its weights.

A ``.ckpt`` is a torch pickle: ``state_dict`` with the network's keys prefixed ``model.`` (``OISLitModule`` keeps
the network as ``self.model``) and the resolved config under ``hyper_parameters``.

- :func:`read_checkpoint`: the dict the file holds; an empty, truncated or foreign file is one error line.
- :func:`config_from_checkpoint`: the config, through the same loader as a YAML file
  (:func:`~ois_lightning.config.load.load_config_with_sources`): the stored config in place of the base chain,
  then the local layer, then the overrides, then every check; or a given YAML ``config`` <- overrides.
- :func:`load_weights`: the :class:`OISModel` of ``cfg.model`` with the checkpoint's weights, whose stored config
  must agree on the model and protocol keys (:func:`~ois_lightning.config.checks.check_checkpoint_config`).
- :func:`load_checkpoint`: both, for ``ois eval``, ``Predictor.from_checkpoint``, ``ois export``, ``ois figure``
  and ``ois app``.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Optional, Sequence

import torch
from omegaconf import DictConfig

from .config.checks import check_checkpoint_config
from .config.load import load_config, load_config_with_sources
from .config.schema import ConfigError
from .model import OISModel, build_model
from .model.checkpoints import CheckpointError

PREFIX = "model."  # OISLitModule keeps the network as `self.model`
EXPECTED = "expected a Lightning .ckpt from `ois train`"


class StoredConfigError(ConfigError, CheckpointError):
    """A file that is no Lightning checkpoint with a stored config: a config error on the command line (pass
    --config), a CheckpointError to :meth:`~ois_lightning.protocol.predictor.Predictor.from_checkpoint`."""


def read_checkpoint(path: str | Path) -> dict:
    """The dict a checkpoint file holds; an empty, truncated or non-checkpoint file is a CheckpointError."""
    try:
        with open(path, "rb") as f:  # torch.save writes a zip archive (legacy: a pickle); anything else is refused
            head = f.read(4)  # before the unpickler reads text as opcodes (an IndexError for a file starting "t")
        if head and not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
            raise CheckpointError(f"ckpt={path}: not a PyTorch checkpoint (starts with {head!r}); {EXPECTED}")
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"ckpt={path}: cannot read the file ({reason}); {EXPECTED} (empty or truncated?)"
                              ) from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"ckpt={path}: holds a {type(checkpoint).__name__} (expected a Lightning .ckpt dict)")
    return checkpoint


def config_from_checkpoint(ckpt: str | Path, config: str | Path | None = None, overrides: Sequence[str] = (),
                           checkpoint: Optional[dict] = None) -> DictConfig:
    """The config of a checkpoint: its stored config (``hyper_parameters``) <- local layer <- ``overrides``, or
    ``config`` <- ``overrides`` when given. ``ckpt`` is set and ``model.backbone.checkpoint`` cleared: every weight
    comes from the checkpoint's state dict. ``checkpoint``: the file's dict when already read."""
    extra = [*overrides, "model.backbone.checkpoint=null"]
    if config is not None:
        cfg = load_config(config, extra)
    else:
        checkpoint = read_checkpoint(ckpt) if checkpoint is None else checkpoint
        if not isinstance(checkpoint.get("state_dict"), dict):
            raise StoredConfigError(f"ckpt={ckpt}: no 'state_dict' in the file ({EXPECTED})")
        stored = checkpoint.get("hyper_parameters")
        if not isinstance(stored, dict) or "model" not in stored:
            raise StoredConfigError(f"ckpt={ckpt}: the checkpoint stores no config (hyper_parameters); pass "
                                    "--config YAML")
        cfg = load_config_with_sources(None, extra, stored=(f"ckpt={ckpt}", dict(stored)))[0]
    cfg.ckpt = str(ckpt)
    return cfg


def load_weights(cfg: DictConfig, checkpoint: Optional[dict] = None) -> OISModel:
    """OISModel of ``cfg.model`` with the weights of the checkpoint ``cfg.ckpt`` (``checkpoint``: its dict when
    already read); random weights only without a ckpt and with ``model.backbone.random_init=true``."""
    if cfg.ckpt is None and not cfg.model.backbone.random_init:
        raise ConfigError("ckpt is not set: `ois eval` evaluates ckpt=PATH (a Lightning .ckpt from `ois train`); "
                          "model.backbone.random_init=true evaluates a randomly initialised model")
    model = build_model(cfg.model, cfg.data.depth)
    if cfg.ckpt is None:
        print("ois eval: ckpt is not set: evaluating the RANDOMLY INITIALISED model (model.backbone.random_init)")
        return model
    if checkpoint is None:
        if not Path(cfg.ckpt).is_file():
            raise ConfigError(f"ckpt={cfg.ckpt}: file not found ({EXPECTED})")
        checkpoint = read_checkpoint(cfg.ckpt)
    state = checkpoint.get("state_dict")
    if not isinstance(state, dict):
        raise ConfigError(f"ckpt={cfg.ckpt}: no 'state_dict' in the file (expected a Lightning .ckpt)")
    stored = checkpoint.get("hyper_parameters")
    check_checkpoint_config(stored if isinstance(stored, dict) else None, cfg)
    weights = {k[len(PREFIX):]: v for k, v in state.items() if k.startswith(PREFIX)}
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        raise ConfigError(f"ckpt={cfg.ckpt}: weights do not fit model config ({first})") from None
    return model


def load_checkpoint(ckpt: str | Path, config: str | Path | None = None,
                    overrides: Sequence[str] = ()) -> tuple[OISModel, DictConfig]:
    """The file read once: :func:`config_from_checkpoint` and the model with its weights, in eval mode."""
    checkpoint = read_checkpoint(ckpt) if config is None or Path(ckpt).is_file() else None
    cfg = config_from_checkpoint(ckpt, config, overrides, checkpoint)
    return load_weights(cfg, checkpoint).eval(), cfg
