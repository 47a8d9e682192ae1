"""Loading a sweep file: YAML, the base experiment, ``--set`` overrides, absolute paths, and every
check of :mod:`.config`'s models plus the space against the base experiment (:mod:`.space`)."""
from __future__ import annotations

import copy
from pathlib import Path

import yaml
from pydantic import ValidationError

from medcl.config import ExperimentConfig, apply_overrides
from medcl.errors import explain
from medcl.paths import resolve_paths
from medcl.sweep.config import SweepConfig, SweepConfigError
from medcl.sweep.space import check_space, set_path

__all__ = ["load_sweep", "resolve_sweep_paths", "validate_sweep"]


def load_sweep(path: str | Path, overrides: list[str] = ()) -> SweepConfig:
    """Read a sweep file, resolve its base experiment, apply overrides and validate everything:
    the sweep's own fields, the base experiment, every dimension of the space (its dotted path and
    both ends of its range, or each choice, applied to the base experiment) and the task orders.
    Paths are made absolute against the working directory (:func:`resolve_sweep_paths`)."""
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise SweepConfigError(source, [("<file>", "no such file")])
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SweepConfigError(source, [("<file>", f"YAML syntax error: {exc}")]) from None
    if not isinstance(raw, dict):
        raise SweepConfigError(source, [("<file>", f"expected a mapping, got {type(raw).__name__}")])
    raw["experiment"] = _base_experiment(raw.get("experiment"), path.parent, source)
    raw = apply_overrides(raw, list(overrides), source=source)
    return validate_sweep(resolve_sweep_paths(raw), source=source)


def resolve_sweep_paths(raw: dict) -> dict:
    """``raw`` with its paths absolute against the working directory (:mod:`medcl.paths`): the
    sweep's own, the base experiment's, and string values that a space's ``choice`` or an
    ``enqueue`` entry puts in a path field of the experiment, so trials (which run in other
    directories) only see absolute paths."""
    raw = resolve_paths(raw, SweepConfig)
    if not isinstance(raw.get("experiment"), dict):
        return raw
    base = raw["experiment"] = resolve_paths(raw["experiment"], ExperimentConfig)

    def resolved(dotted, value):
        if not isinstance(value, str) or not isinstance(dotted, str):
            return value
        probe = copy.deepcopy(base)
        try:
            set_path(probe, dotted, value)
        except (AttributeError, TypeError):
            return value
        node = resolve_paths(probe, ExperimentConfig)
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return node if isinstance(node, str) else value

    if isinstance(raw.get("space"), dict):
        raw["space"] = {k: {**d, "choice": [resolved(k, v) for v in d["choice"]]}
                        if isinstance(d, dict) and isinstance(d.get("choice"), list) else d
                        for k, d in raw["space"].items()}
    if isinstance(raw.get("enqueue"), list):
        raw["enqueue"] = [{k: resolved(k, v) for k, v in e.items()} if isinstance(e, dict) else e
                          for e in raw["enqueue"]]
    return raw


def validate_sweep(raw: dict, source: str = "<sweep>") -> SweepConfig:
    """Validate a raw sweep mapping (``experiment`` already a mapping); see :func:`load_sweep`."""
    try:
        sweep = SweepConfig.model_validate(raw)
    except ValidationError as exc:
        raise SweepConfigError(source, explain(exc, SweepConfig)) from None
    check_space(sweep, source)
    return sweep


def _base_experiment(value, folder: Path, source: str) -> dict:
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        file = Path(value) if Path(value).is_absolute() else folder / value
        if not file.is_file():
            raise SweepConfigError(source, [("experiment", f"no such experiment file {str(file)!r}")])
        data = yaml.safe_load(file.read_text()) or {}
        data.pop("provenance", None)
        return data
    raise SweepConfigError(source, [("experiment", "give a path to an experiment file or the experiment as a mapping "
                                f"(got {type(value).__name__})")])
