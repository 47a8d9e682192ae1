"""Loading a study file: YAML, the base experiment (a file or inline), ``--set`` overrides, absolute
paths, and every check: the study's own fields (:mod:`.config`), each method's experiment (base +
strategy + ``set``) and each method's search space against it (:func:`medcl.sweep.space.check_space`),
every error naming its dotted field (``methods.1.strategy.buffer_size``, ``methods.0.space.train.lr``)."""
from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from medcl.config import ConfigError, ExperimentConfig, apply_overrides, validate_experiment
from medcl.errors import explain
from medcl.paths import resolve_paths
from medcl.study.config import StudyConfig, StudyConfigError
from medcl.study.plan import method_experiment, tuning_sweep
from medcl.sweep.config import SweepConfigError
from medcl.sweep.loading import _base_experiment
from medcl.sweep.space import check_space

__all__ = ["load_study", "validate_study"]


def load_study(path: str | Path, overrides: list[str] = ()) -> StudyConfig:
    """Read and check a study file (see the module doc); paths become absolute against the working directory."""
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise StudyConfigError(source, [("<file>", "no such file")])
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise StudyConfigError(source, [("<file>", f"YAML syntax error: {exc}")]) from None
    if not isinstance(raw, dict):
        raise StudyConfigError(source, [("<file>", f"expected a mapping, got {type(raw).__name__}")])
    try:
        raw["experiment"] = _base_experiment(raw.get("experiment"), path.parent, source)
    except SweepConfigError as exc:
        raise StudyConfigError(source, exc.problems) from None
    try:
        raw = _apply_overrides(raw, list(overrides), source)
    except ConfigError as exc:
        raise StudyConfigError(source, exc.problems) from None
    raw = resolve_paths(raw, StudyConfig)
    raw["experiment"] = resolve_paths(raw["experiment"], ExperimentConfig)
    if isinstance(raw.get("methods"), list):
        raw["methods"] = [_resolve_method_paths(m) for m in raw["methods"]]
    return validate_study(raw, source=source)


def _resolve_method_paths(method):
    """A method's path fields (``strategy.index_dir``, a reference's ``path``, a ``set`` value at a path
    field such as ``model.pretrained``) made absolute against the working directory, as the base
    experiment's are: a trial that runs elsewhere reads the same files."""
    if not isinstance(method, dict):
        return method
    out = dict(method)
    strategy = method.get("strategy")
    if isinstance(strategy, dict):
        section = {"name": method.get("label"), **strategy}
        resolved = resolve_paths({"strategy": section}, ExperimentConfig)["strategy"]
        out["strategy"] = {k: v for k, v in resolved.items() if k in strategy}
    fixed = method.get("set")
    if isinstance(fixed, dict):
        out["set"] = {path: _resolve_dotted(path, value) for path, value in fixed.items()}
    return out


def _resolve_dotted(path: str, value):
    from medcl.sweep.space import set_path

    probe: dict = {}
    set_path(probe, path, value)
    node = resolve_paths(probe, ExperimentConfig)
    for key in path.split("."):
        node = node[key] if isinstance(node, dict) and key in node else None
    return value if node is None else node


def validate_study(raw: dict, source: str = "<study>") -> StudyConfig:
    """Validate a raw study mapping (``experiment`` already a mapping); see :func:`load_study`."""
    try:
        study = StudyConfig.model_validate(raw)
    except ValidationError as exc:
        raise StudyConfigError(source, [_named_root(f, m) for f, m in explain(exc, StudyConfig)]) from None
    problems: list[tuple[str, str]] = []
    for i, method in enumerate(study.methods):
        problems += _method_problems(study, i, source)
    if problems:
        raise StudyConfigError(source, problems)
    return study


def _method_problems(study: StudyConfig, i: int, source: str) -> list[tuple[str, str]]:
    method = study.methods[i]
    raw = method_experiment(study, method)
    try:
        validate_experiment({**raw, "name": "study-check"}, source=source)
    except ConfigError as exc:
        return [(_where(i, method, field), message) for field, message in exc.problems]
    if not method.tuned:
        return []
    try:
        check_space(tuning_sweep(study, method), source)
    except ConfigError as exc:
        return [(f"methods.{i}.{field}" if field.startswith("space.") else f"methods.{i}: {field}", message)
                for field, message in exc.problems]
    return []


def _where(i: int, method, field: str) -> str:
    """A method's experiment error, named where the user wrote the value."""
    if field.startswith("strategy."):
        return f"methods.{i}.{field}"
    if field in method.set:
        return f"methods.{i}.set.{field}"
    return f"experiment.{field} (method {method.label!r})"


def _apply_overrides(raw: dict, overrides: list[str], source: str) -> dict:
    """``--set`` on a study: ``methods.<label or index>.<field>`` addresses one method (its ``set``
    and ``space`` keys are whole dotted experiment paths: ``methods.ewc.set.train.lr=1e-4``); any
    other path goes to :func:`medcl.config.apply_overrides` (``tuning.trials=4``, ``experiment.seed=1``)."""
    plain = [o for o in overrides if not o.startswith("methods.")]
    raw = apply_overrides(raw, plain, source=source)
    for item in overrides:
        if item.startswith("methods."):
            _override_method(raw, item, source)
    return raw


def _override_method(raw: dict, item: str, source: str) -> None:
    key, sep, text = item.partition("=")
    _, which, *rest = key.strip().split(".")
    methods = raw.get("methods")
    if not sep or not rest or not isinstance(methods, list):
        raise ConfigError(source, [("--set", f"expected methods.<label or index>.<field>=VALUE, got {item!r}")])
    labels = [m.get("label") if isinstance(m, dict) else None for m in methods]
    index = int(which) if which.isdigit() and int(which) < len(methods) else labels.index(which) if which in labels else None
    if index is None:
        raise ConfigError(source, [(key, f"no method {which!r}; methods: {', '.join(map(str, labels))} "
                                         f"(or an index 0..{len(methods) - 1})")])
    if rest[0] in ("set", "space") and len(rest) > 1:  # their keys are dotted experiment paths
        section = dict(methods[index].get(rest[0]) or {})
        section[".".join(rest[1:])] = apply_overrides({}, [f"v={text}"], source)["v"]
        methods[index] = {**methods[index], rest[0]: section}
        return
    methods[index] = apply_overrides(methods[index], [f"{'.'.join(rest)}={text}"], source=source)


def _named_root(field: str, message: str) -> tuple[str, str]:
    """A whole-study check (``"baseline: ..."`` raised at the root) named by the field it is about."""
    head, sep, rest = message.partition(": ")
    if field == "<root>" and sep and head.split(".")[0] in StudyConfig.model_fields:
        return head, rest
    return field, message
