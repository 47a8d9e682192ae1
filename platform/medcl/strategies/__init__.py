"""Continual-learning strategies: the contract in :mod:`.base`, one registered file per method."""
from medcl.strategies.base import STRATEGIES, Stage, Strategy, StrategyParams, build_strategy, register_strategy
from medcl.strategies import finetune as _finetune  # noqa: F401

__all__ = ["STRATEGIES", "Stage", "Strategy", "StrategyParams", "build_strategy", "register_strategy"]
