"""The search space: dotted experiment fields, their Optuna distributions, task orders, and the
experiment a trial runs.

A dimension's name is the dotted path of an experiment field (``train.lr``,
``strategy.buffer_size``, ``benchmark.train_per_class``); the task-order dimension is named
``order`` and its values are orders written ``"xray>ultrasound>fundus"``.
"""
from __future__ import annotations

import copy
import difflib
import itertools
import json
import math
import random
from typing import Any

from pydantic import BaseModel

from medcl.config import ConfigError, ExperimentConfig, validate_experiment
from medcl.sweep.config import ORDER_PARAM, Distribution, SweepConfig, SweepConfigError

ORDER_SEP = ">"
MAX_PERMUTATIONS_ENUMERATED = 40_320  # 8 tasks; beyond that, orders are sampled by shuffling


def check_space(sweep: SweepConfig, source: str) -> None:
    """Raise :class:`ConfigError` naming ``experiment.<field>``, ``space.<path>`` or
    ``enqueue.<i>.<path>`` for a base experiment that does not validate, an unknown dotted path
    (with the nearest valid fields) or a value of a range or choice that the experiment refuses."""
    base = _named(sweep.experiment)
    try:
        validate_experiment(base, source="experiment")
    except ConfigError as exc:
        raise SweepConfigError(source, [(f"experiment.{f}", m) for f, m in exc.problems]) from None
    problems: list[tuple[str, str]] = []
    valid = experiment_fields(base)
    for path, dist in sweep.space.items():
        if path not in valid:
            problems.append((f"space.{path}", f"unknown experiment field{_nearest(path, valid)}"))
            continue
        for value in probe_values(dist):
            problems += _check_value(base, path, value, f"space.{path}")
    for i, point in enumerate(sweep.enqueue):
        for path, value in point.items():
            if path != ORDER_PARAM and path not in sweep.space:
                problems.append((f"enqueue.{i}.{path}", "not a dimension of the space; dimensions: "
                                 f"{', '.join([*sweep.space, ORDER_PARAM]) if sweep.order else ', '.join(sweep.space)}"))
            elif path != ORDER_PARAM:
                problems += _check_value(base, path, value, f"enqueue.{i}.{path}")
    if isinstance(sweep.order, list):
        lengths = {len(o) for o in sweep.order}
        if len(lengths) > 1 or any(len(set(o)) != len(o) for o in sweep.order):
            problems.append(("order", "every order must list the same tasks once each"))
    if problems:
        raise SweepConfigError(source, problems)


def experiment_fields(raw: dict) -> list[str]:
    """Every dotted field a dimension may set, for the base experiment's benchmark and strategy."""
    from medcl.data import BENCHMARKS
    from medcl.strategies import STRATEGIES

    fields = [p for p in _model_paths(ExperimentConfig) if not p.startswith(("benchmark.", "strategy."))]
    fields += ["benchmark.name", "benchmark.order", "strategy.name"]
    benchmark = (raw.get("benchmark") or {}).get("name", "synthmed")
    strategy = (raw.get("strategy") or {}).get("name", "finetune")
    fields += [f"benchmark.{p}" for p in _model_paths(BENCHMARKS.get(benchmark).Options)]
    fields += [f"strategy.{p}" for p in _model_paths(STRATEGIES.get(strategy).Params)]
    return sorted(set(fields) - {"name"})


def probe_values(dist: Distribution) -> list[Any]:
    """The values that must all be valid for the dimension to be: both ends, or every choice."""
    if dist.choice is not None:
        return list(dist.choice)
    return list(dist.uniform or dist.loguniform or dist.int)


def optuna_distributions(sweep: SweepConfig, orders: list[list[str]] | None):
    """``{name: optuna distribution}`` for the space, plus ``order`` when orders are given."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    result = {}
    for path, d in sweep.space.items():
        if d.kind == "uniform":
            result[path] = FloatDistribution(*d.uniform, step=d.step)
        elif d.kind == "loguniform":
            result[path] = FloatDistribution(*d.loguniform, log=True)
        elif d.kind == "int":
            result[path] = IntDistribution(*d.int, step=int(d.step or 1))
        else:
            result[path] = CategoricalDistribution([encode_choice(v) for v in d.choice])
    if orders:
        result[ORDER_PARAM] = CategoricalDistribution([ORDER_SEP.join(o) for o in orders])
    return result


def resolve_orders(sweep: SweepConfig, task_names: list[str]) -> list[list[str]] | None:
    """The task orders to try: explicit lists (each checked against ``task_names``), every
    permutation, or ``permutations: K`` distinct ones drawn with ``seed`` (all when K >= T!)."""
    if sweep.order is None:
        return None
    if isinstance(sweep.order, list):
        for i, order in enumerate(sweep.order):
            if sorted(order) != sorted(task_names):
                raise SweepConfigError(sweep.name, [(f"order.{i}", f"{order} is not an order of the benchmark's "
                                                f"tasks {task_names}")])
        return [list(o) for o in sweep.order]
    wanted, total = sweep.order.permutations, math.factorial(len(task_names))
    if wanted == "all" or wanted >= total:
        if total > MAX_PERMUTATIONS_ENUMERATED:
            raise SweepConfigError(sweep.name, [("order.permutations", f"{len(task_names)} tasks have {total} orders; "
                                            "give a count to sample")])
        return [list(p) for p in itertools.permutations(task_names)]
    rng = random.Random(sweep.order.seed)
    if total <= MAX_PERMUTATIONS_ENUMERATED:
        return [list(p) for p in rng.sample(list(itertools.permutations(task_names)), wanted)]
    seen: dict[tuple, None] = {}
    while len(seen) < wanted:
        seen.setdefault(tuple(rng.sample(task_names, len(task_names))), None)
    return [list(p) for p in seen]


def trial_experiment(sweep: SweepConfig, params: dict[str, Any], *, name: str, output_dir: str | None) -> dict:
    """The raw experiment of one trial: the base, each parameter set at its dotted path (``order``
    sets ``benchmark.order``), the sweep's resources as ``train.workers/cpus_per_worker/use_gpu``,
    and ``name``/``output_dir``."""
    raw = copy.deepcopy(sweep.experiment)
    for path, value in params.items():
        if path == ORDER_PARAM:
            set_path(raw, "benchmark.order", value.split(ORDER_SEP))
        else:
            set_path(raw, path, decode_choice(value) if path in sweep.space and sweep.space[path].choice else value)
    res = sweep.resources
    train = raw.setdefault("train", {})
    train["workers"] = max(1, res.train_workers)
    if res.train_workers:
        train["cpus_per_worker"] = res.worker_cpus
        train["use_gpu"] = bool(res.worker_gpus)
    raw["name"] = name
    if output_dir is not None:
        raw["output_dir"] = output_dir
    return raw


def encode_choice(value: Any) -> Any:
    """Optuna's categorical values are scalars: a list or mapping is handed over as JSON text."""
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def decode_choice(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in "[{":
        return json.loads(value)
    return value


def set_path(raw: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def _check_value(base: dict, path: str, value: Any, label: str) -> list[tuple[str, str]]:
    raw = copy.deepcopy(base)
    set_path(raw, path, value)
    try:
        validate_experiment(raw, source=label)
    except ConfigError as exc:
        reasons = "; ".join(f"{f}: {m}" for f, m in exc.problems)
        return [(label, f"value {value!r} is refused by the experiment ({reasons})")]
    return []


def _named(raw: dict) -> dict:
    return {"name": "sweep-trial", **raw}


def _nearest(path: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(path, valid, n=3, cutoff=0.5)
    if not close:
        section = path.split(".")[0]
        close = [v for v in valid if v.startswith(section + ".")][:8] or valid[:8]
    return f"; nearest valid fields: {', '.join(close)}"


def _model_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    paths = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            paths += _model_paths(annotation, f"{prefix}{name}.")
        else:
            paths.append(f"{prefix}{name}")
    return paths
