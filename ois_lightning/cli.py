"""The ``ois`` command: print-config, train, eval (and more as they land). Heavy imports happen per command."""
from __future__ import annotations

import argparse
import sys
from typing import Callable

from .config import ConfigError, load_config, to_yaml


def _print_config(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    print(to_yaml(cfg), end="")
    if args.params:
        from .model import build_model

        model = build_model(cfg.model)
        parts = {name: sum(p.numel() for p in child.parameters()) for name, child in model.named_children()}
        total = sum(p.numel() for p in model.parameters())
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        print(f"parameters total {total / 1e6:.2f}M trainable {trainable / 1e6:.2f}M")
        for name, n in parts.items():
            print(f"  {name:<12} {n / 1e6:8.3f}M")
    return 0


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="experiment YAML (may extend a base with `base:`)")
    p.add_argument("overrides", nargs="*", help="dotlist overrides, e.g. model.order.enabled=false")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ois", description="Order-Aware Interactive Segmentation")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("print-config", help="print the fully resolved config")
    _add_config_args(p)
    p.add_argument("--params", action="store_true", help="also build the model and print parameter counts")
    p.set_defaults(func=_print_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except ConfigError as e:
        print(f"ois: config error: {e}", file=sys.stderr)
        return 2
