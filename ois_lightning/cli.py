"""The ``ois`` command: print-config, train, eval (and more as they land). Heavy imports happen per command."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from . import __version__
from .config.schema import ConfigError, to_yaml
from .grids.commands import add_grid_commands, normalize_sweep_argv
from .config.load import load_config, load_config_with_sources, source_comments


def _print_config(args: argparse.Namespace) -> int:
    cfg, sources = load_config_with_sources(args.config, args.overrides)
    print(to_yaml(cfg), end="")
    print(source_comments(cfg, sources, every=args.sources), end="")
    if args.params:
        from .model import build_model

        model = build_model(cfg.model, cfg.data.depth)
        parts = {name: sum(p.numel() for p in child.parameters()) for name, child in model.named_children()}
        total = sum(p.numel() for p in model.parameters())
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        print(f"parameters total {total / 1e6:.2f}M trainable {trainable / 1e6:.2f}M")
        for name, n in parts.items():
            print(f"  {name:<12} {n / 1e6:8.3f}M")
    return 0


def _train(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    from .lit.train import train

    train(cfg)
    return 0


def _check_data(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    from .data.check import check_data

    return check_data(cfg)


def _eval(args: argparse.Namespace) -> int:
    config, overrides, checkpoint = args.config, list(args.overrides), None
    if args.ckpt is not None and config is not None and "=" in config:  # `ois eval --ckpt P k=v`: no CONFIG
        config, overrides = None, [config, *overrides]
    if config is not None:
        cfg = load_config(config, overrides + ([f"ckpt={args.ckpt}"] if args.ckpt is not None else []))
    elif args.ckpt is not None:
        from .checkpoint import config_from_checkpoint, read_checkpoint

        checkpoint = read_checkpoint(args.ckpt)  # read once: its stored config <- local layer <- overrides
        cfg = config_from_checkpoint(args.ckpt, None, overrides, checkpoint)
    else:
        raise ConfigError("ois eval: give CONFIG (with ckpt=PATH), or --ckpt PATH to use the checkpoint's config")
    from .protocol.eval_run import evaluate_checkpoint  # no Lightning
    from .protocol.run_folder import eval_dir

    if not any(o.startswith("output_dir=") for o in overrides):  # never into a training run's folder
        cfg.output_dir = str(eval_dir(cfg))
    evaluate_checkpoint(cfg, checkpoint)
    return 0


# --- depth maps from a separate depth model: `ois depth-cache` ----------------------------------------
def _depth_cache(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    from .data.depth_cache import cache_depth

    counts = cache_depth(cfg, args.split, args.device)
    print(f"depth-cache: {counts['written']} written, {counts['skipped']} already present")
    return 0


def _add_depth_cache_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("depth-cache", help="precompute depth maps of a split with data.depth.model (resumable)")
    _add_config_args(p)
    p.add_argument("--split", default="test", choices=("train", "val", "test"),
                   help="datasets of data.<split> to process (default test)")
    p.add_argument("--device", default=None, help="torch device (default cuda if available, else cpu)")
    p.set_defaults(func=_depth_cache)


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="experiment YAML (may extend a base with `base:`)")
    p.add_argument("overrides", nargs="*", help="dotlist overrides, e.g. model.order.enabled=false")


def _demo(args: argparse.Namespace) -> int:
    from .tools.demo import run_demo

    def env(name: str) -> bool:
        return os.environ.get(name, "0") not in ("", "0")

    full = args.full or env("PAPER_MINI_FULL")
    if full and args.tables != "all":
        raise ConfigError("--full (PAPER_MINI_FULL=1) is the scale of the whole miniature paper: add --tables all")
    if args.fast or env("DEMO_FAST"):
        scale = "fast"
    elif full:
        scale = "full"
    else:
        scale = "default" if args.tables == "all" else "demo"
    return run_demo(scale=scale, out_dir=args.out, parallel=args.parallel, tables=args.tables)


def _add_demo_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the CPU demo: Table 4's ablation on layered scenes (make demo)")
    p.add_argument("--tables", choices=("4", "all"), default="4",
                   help="4: Table 4 in miniature on a cut training budget (make demo); all: Tables 4-11 and the "
                   "scorecard at the miniature's own budgets (make paper-mini)")
    p.add_argument("--fast", action="store_true", help="smoke-test settings (also DEMO_FAST=1)")
    p.add_argument("--full", action="store_true", help="with --tables all: more seeds and held-out objects, CIs "
                   "narrow enough for a verdict on every row, into paper_mini_full_out (also PAPER_MINI_FULL=1)")
    p.add_argument("--out", help="output folder (default demo_out; paper_mini_out with --tables all, "
                   "paper_mini_full_out with --full)")
    p.add_argument("--parallel", type=int, default=2, help="runs trained at the same time (default 2)")
    p.set_defaults(func=_demo)


def _bench(args: argparse.Namespace) -> int:
    from .tools.bench import main as bench_main

    return bench_main(args.quick, args.out, args.device, args.threads)


def _add_bench_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="measure per-click speed of OIS vs the dense-fusion baseline, encoder, "
                                     "training step, feature-cache grid (docs/benchmarks.md)")
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke test of a few seconds")
    p.add_argument("--out", default="bench.json", help="JSON written atomically (default bench.json)")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu or cuda[:i]")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.set_defaults(func=_bench)


def _pretrain(args: argparse.Namespace) -> int:
    from .pretrain.budgets import budget_for

    given = {k: getattr(args, k) for k in ("steps", "batch", "size", "seed", "lr", "scenes", "backbone")
             if getattr(args, k, None) is not None}
    budget = budget_for(args.what, **given)
    if args.what == "depth":
        from .pretrain.depth import pretrain_depth

        pretrain_depth(args.out, budget, args.threads, args.force)
    else:
        from .pretrain.mae import pretrain_mae

        pretrain_mae(args.out, budget, args.threads, args.force)
    return 0


def _add_pretrain_command(sub: argparse._SubParsersAction) -> None:
    from .pretrain.budgets import DepthBudget, MAEBudget

    p = sub.add_parser("pretrain", help="pre-train the miniature's backbones on layered scenes (docs/pretraining.md)")
    what = p.add_subparsers(dest="what", required=True)
    for name, budget, text in (
        ("depth", DepthBudget(), "tiny ViT + DPT depth head for relative depth -> Depth Anything V2 layout .pth"),
        ("mae", MAEBudget(), "mae-tiny ViT as a masked autoencoder -> MAE release layout .pth"),
    ):
        q = what.add_parser(name, help=text)
        q.add_argument("--out", required=True, help="checkpoint to write (a report .json goes beside it)")
        q.add_argument("--steps", type=int, help=f"optimiser steps (default {budget.steps})")
        q.add_argument("--batch", type=int, help=f"scenes per step (default {budget.batch})")
        if name == "depth":
            q.add_argument("--size", type=int, help=f"scene side, a multiple of the patch (default {budget.size})")
            q.add_argument("--backbone", help=f"backbone with a depth head (default {budget.backbone})")
        q.add_argument("--seed", type=int, help=f"initialisation seed (default {budget.seed})")
        q.add_argument("--lr", type=float, help=f"peak learning rate (default {budget.lr})")
        q.add_argument("--scenes", help=f"scene preset (occlusion, monocular) or comma-separated depth cues "
                       f"(default {budget.scenes})")
        q.add_argument("--threads", type=int, default=1,
                       help="torch CPU threads (default 1: faster than 2 on busy shared cores, docs/pretraining.md)")
        q.add_argument("--force", action="store_true", help="retrain even if --out exists with the same budget")
        q.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    p.set_defaults(func=_pretrain)


def _export(args: argparse.Namespace) -> int:
    from .tools.export import run_export

    run_export(args.ckpt, args.out, args.config, args.overrides, check=not args.no_check)
    return 0


def _figure(args: argparse.Namespace) -> int:
    from .tools.figures import run_figures

    run_figures(args.ckpt, args.out, args.config, args.overrides, args.ids, args.worst,
                [int(k) for k in args.clicks.split(",")], args.dataset, args.block)
    return 0


def _add_checkpoint_args(p: argparse.ArgumentParser, several: bool = False) -> None:
    p.add_argument("--ckpt", required=True, action="append" if several else "store",
                   help="Lightning .ckpt from `ois train`" + (" (repeat for side-by-side columns)" if several else ""))
    p.add_argument("--config", default=None, help="experiment YAML; default: the config stored in the checkpoint")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("overrides", nargs="*", help="dotlist overrides of the config, e.g. data.test=[davis]")


def _add_export_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="ONNX graphs of the encoder and of one click round (docs/export.md)")
    _add_checkpoint_args(p)
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime-vs-PyTorch comparison")
    p.set_defaults(func=_export)
    p = sub.add_parser("figure", help="paper figures (qualitative strip, order maps, attention) on data.test")
    _add_checkpoint_args(p, several=True)
    p.add_argument("--ids", nargs="+", default=None, help="objects as in results.json, SAMPLE#K (SAMPLE = #0)")
    p.add_argument("--worst", type=int, default=3, help="else the N objects with the highest NoC90 (default 3)")
    p.add_argument("--clicks", default="1,3,5", help="click counts shown in the strip (default 1,3,5)")
    p.add_argument("--dataset", default=None, help="dataset of data.test (default the first)")
    p.add_argument("--block", type=int, default=0, help="fusion block whose order attention is shown (default 0)")
    p.set_defaults(func=_figure)


def _app(args: argparse.Namespace) -> int:
    from .app import run_app

    return run_app(args.ckpt, args.images, args.host, args.port, args.device, args.overrides)


def _add_app_command(sub: argparse._SubParsersAction) -> None:
    from .app import DEFAULT_HOST, DEFAULT_PORT

    p = sub.add_parser("app", help="local web app: click on an image, see the mask, depth and order maps (docs/app.md)")
    p.add_argument("--ckpt", required=True, help="Lightning .ckpt from `ois train` (its stored config is used)")
    p.add_argument("--images", default=None, help="folder whose images the app may open (nothing outside it); "
                                                  "default: only images uploaded from the page")
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST}: this machine only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument("--device", default=None, help="torch device (default: the Predictor's choice)")
    p.add_argument("overrides", nargs="*", help="dotlist overrides of the checkpoint's config, e.g. "
                                                "data.depth.source=model for a model trained on depth files")
    p.set_defaults(func=_app)


DEBUG_HELP = "show the traceback of a config, data or checkpoint error (default: one line, exit code 2)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ois", description="Order-Aware Interactive Segmentation")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("print-config", help="print the fully resolved config")
    _add_config_args(p)
    p.add_argument("--params", action="store_true", help="also build the model and print parameter counts")
    p.add_argument("--sources", action="store_true",
                   help="end with the layer (file, env var, command line, default) of every key, not only the paths")
    p.set_defaults(func=_print_config)
    p = sub.add_parser("train", help="train (resume with ckpt_path=last), then evaluate on data.test")
    _add_config_args(p)
    p.set_defaults(func=_train)
    p = sub.add_parser("eval", help="evaluate the weights of ckpt=PATH on data.test (writes results.json)")
    p.add_argument("--ckpt", default=None, help="Lightning .ckpt from `ois train`; without CONFIG its stored "
                                               "config is used (overrides on top)")
    p.add_argument("config", nargs="?", default=None, help="experiment YAML (optional with --ckpt)")
    p.add_argument("overrides", nargs="*", help="dotlist overrides, e.g. data.test=[davis] output_dir=runs/x")
    p.set_defaults(func=_eval)
    p = sub.add_parser("check-data", help="read every image / mask / depth file of data.train, val and test once "
                                          "and report each problem by file (exit 1 if any would stop a run)")
    _add_config_args(p)
    p.set_defaults(func=_check_data)
    add_grid_commands(sub)
    _add_depth_cache_command(sub)
    _add_demo_command(sub)
    _add_bench_command(sub)
    _add_pretrain_command(sub)
    _add_export_command(sub)
    _add_app_command(sub)
    for command in sub.choices.values():  # `ois --debug CMD` or `ois CMD --debug`
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    return parser


def user_error(e: BaseException) -> str | None:
    """The label of an error caused by the user's config, data or checkpoint (shown as one line), else None; an
    exception may name its own (``label``, and ``exit_code`` for :func:`main`)."""
    if isinstance(getattr(e, "label", None), str):
        return e.label  # type: ignore[attr-defined]
    from .data.base import DataError
    from .utils.lock import LockError
    from .model.checkpoints import CheckpointError

    labels = ((ConfigError, "config error"), (DataError, "data error"), (CheckpointError, "checkpoint error"),
              (LockError, "output_dir in use"))
    return next((label for kind, label in labels if isinstance(e, kind)), None)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        argv = normalize_sweep_argv(sys.argv[1:] if argv is None else argv)
    except ConfigError as e:
        print(f"ois: config error: {e}", file=sys.stderr)
        return 2
    args, rest = parser.parse_known_args(argv)
    if rest and hasattr(args, "overrides") and all("=" in t and not t.startswith("-") for t in rest):
        args.overrides = [*args.overrides, *rest]  # `ois CMD CONFIG --flag key=value`: overrides after an option
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except Exception as e:
        label = user_error(e)
        if label is None or args.debug:
            raise
        print(f"ois: {label}: {e}", file=sys.stderr)
        return int(getattr(e, "exit_code", 2))
