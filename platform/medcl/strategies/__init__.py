"""Continual-learning strategies: the contract in :mod:`.base`, one registered file per method."""
from medcl.strategies.base import STRATEGIES, Strategy, StrategyParams, build_strategy, register_strategy
from medcl.strategies import finetune as _finetune  # noqa: F401
from medcl.strategies import joint as _joint  # noqa: F401
from medcl.strategies import specialist as _specialist  # noqa: F401
from medcl.strategies import rehearsal as _rehearsal  # noqa: F401
from medcl.strategies import icarl as _icarl  # noqa: F401
from medcl.strategies import l2 as _l2  # noqa: F401
from medcl.strategies import ewc as _ewc  # noqa: F401
from medcl.strategies import lwf as _lwf  # noqa: F401
from medcl.strategies import wiseft as _wiseft  # noqa: F401
from medcl.strategies import zscl as _zscl  # noqa: F401
from medcl.strategies import primed as _primed  # noqa: F401  (primed and primed_uniform)
from medcl.strategies import mslora_cr as _mslora_cr  # noqa: F401
from medcl.strategies import lora_incremental as _lora_incremental  # noqa: F401
from medcl.strategies import lora_separate as _lora_separate  # noqa: F401
from medcl.strategies import moe_adapters as _moe_adapters  # noqa: F401

__all__ = ["STRATEGIES", "Strategy", "StrategyParams", "build_strategy", "register_strategy"]
