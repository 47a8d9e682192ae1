"""The files and folders a run reads, checked on the driver before Ray starts and before a run
directory is pinned, every problem naming its dotted field.

    check_inputs(config)            # medcl run: ConfigError listing every missing input

Why: a PRIMED run whose ``strategy.index_dir`` did not exist started Ray, planned for 19 s and then
failed with "no index.json" without naming the field, leaving a ``config.yaml`` that refused the
corrected command.

What is checked:

* every *input* path field of the strategy's ``Params`` (a :data:`medcl.paths.PathStr` /
  ``DataPathStr`` / ``WeightsStr`` field, also inside nested models and lists, e.g.
  ``strategy.reference.path``) that is set and local must exist; a field listed in the params'
  ``output_paths`` (PRIMED's ``plan_dir``) is written, not read, and is skipped. Object-store URIs
  are left to the strategy's own check (they need the network);
* what the strategy itself says about its inputs: :meth:`medcl.strategies.base.Strategy.input_problems`
  (PRIMED reads ``index.json`` of ``index_dir`` and checks the corpus it records);
* ``model.pretrained`` is checked by :func:`medcl.models.check_model_source` and the benchmark's
  data by ``build_tasks`` (both on the driver, before Ray): a missing MedMNIST file may be
  downloaded (``download: true``), so the benchmark's own loader decides, naming its field.
"""
from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel

from medcl.errors import ConfigError
from medcl.paths import _kind, is_uri


def check_inputs(config, strategy=None) -> None:
    """Raise :class:`ConfigError` naming every input of ``config`` that is missing (module doc).
    ``strategy``: the built strategy (default: built from ``config``)."""
    if strategy is None:
        from medcl.config import strategy_params
        from medcl.strategies import build_strategy

        strategy = build_strategy(config.strategy.name, strategy_params(config))
    problems = missing_paths(strategy.params, "strategy", skip=getattr(strategy.params, "output_paths", ()))
    failed = {field for field, _ in problems}
    problems += [(f, m) for f, m in strategy.input_problems() if f not in failed]
    if problems:
        raise ConfigError(config.name, problems)


def missing_paths(model: BaseModel, prefix: str, *, skip=()) -> list[tuple[str, str]]:
    """``(dotted field, message)`` for every set, local input path of ``model`` (and its nested
    models and lists) that does not exist; fields named in ``skip`` are not looked at."""
    problems = []
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if name in skip or value is None:
            continue
        dotted = f"{prefix}.{name}"
        if _kind(field) is not None:
            values = value if isinstance(value, list) else [value]
            problems += [(dotted, _missing_message(v)) for v in values if _is_missing(v)]
        else:
            problems += _nested(value, dotted)
    return problems


def _nested(value: Any, dotted: str) -> list[tuple[str, str]]:
    if isinstance(value, BaseModel):
        return missing_paths(value, dotted, skip=getattr(value, "output_paths", ()))
    if isinstance(value, (list, tuple)):
        return [p for i, item in enumerate(value) for p in _nested(item, f"{dotted}.{i}")]
    return []


def _is_missing(value: Any) -> bool:
    """A local path (a string that is not a URI or a tag-like empty string) that does not exist."""
    return isinstance(value, str) and bool(value) and not is_uri(value) and not os.path.exists(value)


def _missing_message(value: str) -> str:
    parent = os.path.dirname(value.rstrip(os.sep)) or "."
    where = "" if os.path.isdir(parent) else f" (nor does its folder {parent})"
    return f"{value}: no such file or folder{where}"
