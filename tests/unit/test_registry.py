from __future__ import annotations

import pytest

from medcl.registry import Registry, UnknownNameError
from medcl.strategies import STRATEGIES, Strategy, build_strategy


def test_unknown_name_lists_registered_names_and_suggests():
    registry: Registry[int] = Registry("thing")
    registry.register("alpha")(1)
    registry.register("beta")(2)
    with pytest.raises(UnknownNameError) as excinfo:
        registry.get("alpah")
    assert "did you mean 'alpha'" in str(excinfo.value) and "alpha, beta" in str(excinfo.value)


def test_double_registration_is_refused():
    registry: Registry[object] = Registry("thing")
    registry.register("x")(object())
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("x")(object())


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_every_strategy_builds_with_defaults(name):
    strategy = build_strategy(name)
    assert isinstance(strategy, Strategy)
    assert isinstance(strategy.state_dict(), dict)
