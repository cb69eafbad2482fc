"""W&B sweep files (``sweeps/tableN.yaml``) expanded into grid points.

A sweep file picks the row through a parameter ``config`` whose values are experiment YAML paths. W&B passes
it (with ``${args_no_hyphens}``) as ``config=experiments/table4/full.yaml``; :func:`normalize_argv` turns that
token back into the positional CONFIG argument of ``ois train`` wherever it appears, so every DDP rank sees
the same argv and nothing is read from ``wandb.config``.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..config.schema import ConfigError
from ..config.load import load_config, read_yaml

CONFIG_PARAM = "config"  # the sweep parameter whose value is the row's experiment YAML
SUBCOMMANDS_WITH_CONFIG = ("train", "eval", "print-config")
# Values of the W&B command macros the local runner understands.
ARG_MACROS = ("${args_no_hyphens}", "${args}")


@dataclass
class GridPoint:
    """One run of a sweep: the parameter values in file order (as W&B sends them)."""

    params: dict[str, Any]

    @property
    def config(self) -> str:
        return str(self.params[CONFIG_PARAM])

    @property
    def seed(self) -> int:
        return int(self.params.get("seed", 0))

    def args(self, macro: str = "${args_no_hyphens}") -> list[str]:
        """The argv tokens W&B's agent substitutes for ``macro`` (``f"{k}={v}"``, ``--`` for ``${args}``)."""
        prefix = "--" if macro == "${args}" else ""
        return [f"{prefix}{k}={v}" for k, v in self.params.items()]


@dataclass
class Sweep:
    name: str
    path: Path
    data: dict
    points: list[GridPoint]

    @property
    def command(self) -> list[str]:
        return [str(c) for c in self.data["command"]]


def _param_values(path: Path, name: str, spec: Any) -> list[Any]:
    if not isinstance(spec, dict) or not ({"value", "values"} & set(spec)):
        raise ConfigError(f"{path}: parameters.{name} must have 'value' or 'values' (grid search), got {spec!r}")
    if "values" in spec:
        values = spec["values"]
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{path}: parameters.{name}.values must be a non-empty list, got {values!r}")
        return values
    return [spec["value"]]


def load_sweep(path: str | Path, check_configs: bool = True) -> Sweep:
    """Read a grid sweep file, check what ``wandb sweep`` needs and what ``ois train`` expects, and expand the
    grid (cartesian product in parameter order, first parameter slowest, like W&B's grid search).

    With ``check_configs`` every row config must exist (relative to the working directory, as for the agent).
    """
    path = Path(path)
    data = read_yaml(path)
    if data.get("method") != "grid":
        raise ConfigError(f"{path}: key 'method' must be 'grid', got {data.get('method')!r}")
    params = data.get("parameters")
    if not isinstance(params, dict) or CONFIG_PARAM not in params:
        raise ConfigError(f"{path}: 'parameters' must be a mapping with a '{CONFIG_PARAM}' parameter (row YAMLs)")
    command = data.get("command")
    if not isinstance(command, list) or "train" not in command:
        raise ConfigError(f"{path}: 'command' must be a list running `ois_lightning train`, got {command!r}")
    macros = [c for c in command if c in ARG_MACROS]
    if len(macros) != 1 or command[-1] not in ARG_MACROS:
        raise ConfigError(f"{path}: 'command' must end with one of {', '.join(ARG_MACROS)}, got {command!r}")
    names = list(params)
    axes = [_param_values(path, n, params[n]) for n in names]
    points = [GridPoint(dict(zip(names, combo))) for combo in itertools.product(*axes)]
    if check_configs:
        for config in axes[names.index(CONFIG_PARAM)]:
            if not Path(str(config)).is_file():
                raise ConfigError(f"{path}: parameters.{CONFIG_PARAM} value '{config}' is not a file "
                                  f"(paths are relative to the directory you run the sweep from)")
    return Sweep(str(data.get("name", path.stem)), path, data, points)


def point_overrides(point: GridPoint) -> list[str]:
    """The overrides ``ois train`` applies for a grid point (everything but the config path)."""
    return [a for a in point.args() if not a.startswith(f"{CONFIG_PARAM}=")]


def resolve_point(point: GridPoint, extra: Optional[list[str]] = None):
    """The fully resolved config of a grid point, exactly as ``ois train`` would load it."""
    return load_config(point.config, point_overrides(point) + list(extra or []))


def normalize_argv(argv: list[str]) -> list[str]:
    """Move a ``config=PATH`` token (W&B ``${args_no_hyphens}``) of train/eval/print-config to the positional
    CONFIG slot right after the subcommand, so argv order from the sweep server does not matter."""
    if not argv or argv[0] not in SUBCOMMANDS_WITH_CONFIG:
        return list(argv)
    tokens = [a for a in argv[1:] if a.startswith(f"{CONFIG_PARAM}=")]
    if not tokens:
        return list(argv)
    if len(tokens) > 1:
        raise ConfigError(f"command line: '{CONFIG_PARAM}=' given {len(tokens)} times ({', '.join(tokens)})")
    i = argv.index(tokens[0], 1)
    return [argv[0], tokens[0].split("=", 1)[1], *argv[1:i], *argv[i + 1:]]
