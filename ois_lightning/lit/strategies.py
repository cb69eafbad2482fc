"""The names ``train.strategy`` takes: Lightning's strategy registry, looked up only for a name outside the common
ones, so that a config naming those (``ois eval`` with ``train.strategy=ddp``, as ``sweeps/torchrun.sh`` passes)
loads no Lightning."""
from __future__ import annotations

COMMON = ("ddp", "ddp_spawn", "ddp_fork", "fsdp", "deepspeed", "single_device")  # all in Lightning's registry


def strategy_names() -> list[str]:
    """Every strategy Lightning's Trainer accepts by name (imports Lightning)."""
    from lightning.pytorch.strategies import StrategyRegistry

    return StrategyRegistry.available_strategies()
