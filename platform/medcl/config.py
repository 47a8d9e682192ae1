"""Experiment files: pydantic models, YAML loading, ``--set a.b=c`` overrides, readable errors.

An experiment file has the sections ``name``, ``seed``, ``benchmark``, ``model``, ``strategy``,
``train`` and ``output_dir``. ``benchmark`` and ``strategy`` are *open* sections: besides ``name``
(and the benchmark's ``order``) their fields belong to the registered benchmark's ``Options`` or the
strategy's ``Params`` model, and are validated against it, so every field is checked and every
error names its dotted path, the bad value and what is allowed::

    experiments/x.yaml: invalid experiment
      strategy.name: unknown strategy 'rehersal' (did you mean 'rehearsal'?); registered: finetune, ...
      train.lr: Input should be greater than 0 (got -1)
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from medcl.errors import ConfigError, UnknownNameError
from medcl.errors import explain as _explain
from medcl.names import FolderName
from medcl.paths import PathStr, WeightsStr, resolve_paths

__all__ = ["ConfigError", "ExperimentConfig", "load_experiment", "validate_experiment", "apply_overrides",
           "benchmark_options", "strategy_params", "to_yaml"]


def _registry(section: str):
    """The registry of an open section, imported on first use: the registries load their plugins
    (torch, open_clip), which an error in the experiment's own fields does not need."""
    if section == "benchmark":
        from medcl.data import BENCHMARKS

        return BENCHMARKS
    from medcl.strategies import STRATEGIES

    return STRATEGIES


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class BenchmarkSection(BaseModel):
    """``name`` picks a registered benchmark; ``order`` lists task names (None: the benchmark's
    own order); every other field is an option of that benchmark (validated by its ``Options``)."""

    model_config = ConfigDict(extra="allow")
    name: str = "synthmed"
    order: list[str] | None = None
    _validated: Any = PrivateAttr(default=None)  # the typed Options, set once by validate_experiment

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @classmethod
    def extras_model(cls, raw: dict) -> type[BaseModel] | None:
        """The benchmark's ``Options`` (which fields are paths: :mod:`medcl.paths`), or None."""
        name, registry = raw.get("name", "synthmed"), _registry("benchmark")
        return registry.get(name).Options if isinstance(name, str) and name in registry else None


class ModelSection(_Section):
    """``freeze_norm``: BatchNorm running statistics frozen at their loaded values while training
    (None, the default: frozen when ``pretrained`` is set; see :mod:`medcl.models.norm`)."""

    name: str = "medcl-tiny"
    pretrained: WeightsStr | None = None  # a weights file (made absolute on load) or a tag
    image_size: int | None = Field(default=None, ge=8, le=1024)
    freeze_norm: bool | None = None


class StrategySection(BaseModel):
    """``name`` picks a registered strategy; every other field is one of its ``Params``."""

    model_config = ConfigDict(extra="allow")
    name: str = "finetune"
    _validated: Any = PrivateAttr(default=None)  # the typed Params, set once by validate_experiment

    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @classmethod
    def extras_model(cls, raw: dict) -> type[BaseModel] | None:
        """The strategy's ``Params`` (which fields are paths: :mod:`medcl.paths`), or None."""
        name, registry = raw.get("name", "finetune"), _registry("strategy")
        return registry.get(name).Params if isinstance(name, str) and name in registry else None


class TrainSection(_Section):
    """How each task is trained. ``batch_size`` is global (split over workers); exactly one of
    ``steps_per_task`` and ``epochs_per_task`` is set."""

    workers: int = Field(default=1, ge=1)
    cpus_per_worker: float = Field(default=1.0, gt=0)
    use_gpu: bool = False
    batch_size: int = Field(default=32, ge=1)
    eval_batch_size: int = Field(default=256, ge=1)
    lr: float = Field(default=1e-5, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    # The optimisation protocol of the MTIL code the compared methods come from (github.com/Thunderbeee/ZSCL,
    # mtil/src/models/finetune.py and args.py): AdamW, cosine decay with a linear warm-up of 100 of 1,000
    # iterations (None: 10 % of the task's steps), no gradient clipping, the logit scale frozen
    # (excluded from the optimiser); label smoothing 0.2 from its scripts (--ls 0.2).
    schedule: Literal["constant", "cosine"] = "cosine"
    warmup_steps: int | None = Field(default=None, ge=0)
    logit_scale: Literal["frozen", "trainable"] = "frozen"
    steps_per_task: int | None = Field(default=None, ge=1)
    epochs_per_task: float | None = Field(default=None, gt=0)
    label_smoothing: float = Field(default=0.2, ge=0, lt=1)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    grad_clip: float | None = Field(default=None, gt=0)
    # dtype gradients are all-reduced in across workers (medcl.engine.gradsync): bf16 halves the bytes,
    # at ~2**-8 relative error per element
    grad_sync_dtype: Literal["fp32", "bf16"] = "fp32"
    torch_threads: int = Field(default=1, ge=1)
    log_every: int | None = Field(default=None, ge=1)  # None: about 5 progress lines per task
    # Worker failures Ray Train recovers from (from the last checkpoint) before the run fails; -1:
    # unlimited (spot instances). Failed worker-group starts (no nodes within node_wait_s) count alike.
    max_failures: int = Field(default=1, ge=-1)
    # How long a start of the Train workers may wait for nodes (an autoscaler adding GPU nodes takes
    # minutes); sets Ray Train's RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S (medcl.engine.launch).
    node_wait_s: float = Field(default=900.0, gt=0)
    # Mid-task checkpoints (docs/reliability.md): every N optimizer steps within a task (None: only at
    # task boundaries; "auto": every GPU_CHECKPOINT_EVERY steps when training on a GPU, else none),
    # and when Ray Train announces the preemption of a worker's node.
    checkpoint_every: Annotated[int, Field(ge=1)] | Literal["auto"] | None = "auto"
    checkpoint_on_preemption: bool = False
    # Which split fills the accuracy matrix: "test" (the protocol), or "val" for tuning (medcl study):
    # each task's own val split, else val_fraction of its train split carved off, seeded
    # (medcl.data.validation); the test split is then never evaluated.
    eval_split: Literal["test", "val"] = "test"
    val_fraction: float = Field(default=0.2, gt=0, lt=1)

    @model_validator(mode="after")
    def _check(self) -> "TrainSection":
        if (self.steps_per_task is None) == (self.epochs_per_task is None):
            raise ValueError("set exactly one of steps_per_task and epochs_per_task")
        if self.precision == "fp16" and not self.use_gpu:
            raise ValueError("precision 'fp16' needs use_gpu: true (use 'bf16' or 'fp32' on CPU)")
        if self.batch_size < self.workers:
            raise ValueError(f"batch_size {self.batch_size} is smaller than workers {self.workers}")
        return self


class ExperimentConfig(_Section):
    name: FolderName  # the run directory output_dir/name: never ".", ".." or a path (medcl.names)
    seed: int = Field(default=0, ge=0, lt=2**32)  # numpy and torch generators take it (and seed * 1e6)
    benchmark: BenchmarkSection = BenchmarkSection()
    model: ModelSection = ModelSection()
    strategy: StrategySection = StrategySection()
    train: TrainSection = TrainSection(steps_per_task=100)
    output_dir: PathStr = Field(default="runs", pattern=r"^[^\x00]*$")  # no NUL: a path the OS accepts
    telemetry: bool = True  # Ray metrics of training and evaluation (medcl.telemetry); MEDCL_TELEMETRY=0 also turns them off

    @property
    def run_dir(self):
        """``output_dir / name``: a local :class:`~pathlib.Path`, or a :class:`medcl.storage.Location`
        when ``output_dir`` is a URI (``s3://bucket/runs``)."""
        from medcl.storage import place

        return place(self.output_dir) / self.name


# --------------------------------------------------------------------------- loading

def load_experiment(path: str | Path, overrides: list[str] = (), output_dir: str | None = None) -> ExperimentConfig:
    """Read a YAML experiment, apply ``a.b=c`` overrides, make its paths absolute against the
    working directory (:mod:`medcl.paths`), validate everything (see module doc)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), [("<file>", "no such file")])
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "<file>"
        raise ConfigError(str(path), [(where, f"YAML syntax error: {getattr(exc, 'problem', exc)}")]) from None
    if not isinstance(raw, dict):
        raise ConfigError(str(path), [("<file>", f"expected a mapping of sections, got {type(raw).__name__}")])
    raw.pop("provenance", None)  # written by medcl into a run's config.yaml; not an input
    raw = apply_overrides(raw, overrides, source=str(path))
    if output_dir is not None:
        raw["output_dir"] = output_dir
    _validate_sections(raw, str(path))  # before resolve_paths loads the registries
    return validate_experiment(resolve_paths(raw, ExperimentConfig), source=str(path))


def validate_experiment(raw: dict, source: str = "<experiment>") -> ExperimentConfig:
    """Validate a raw mapping, including the benchmark's options and the strategy's params (each
    validated once, by its registry; the typed values travel with the config: :func:`strategy_params`)."""
    config = _validate_sections(raw, source)
    config.benchmark._validated, problems = _check_plugin("benchmark", config.benchmark.name, config.benchmark.options())
    config.strategy._validated, found = _check_plugin("strategy", config.strategy.name, config.strategy.params())
    problems += found + _check_model(config.model.name)
    if config.benchmark.order is not None and len(set(config.benchmark.order)) != len(config.benchmark.order):
        dupes = sorted({n for n in config.benchmark.order if config.benchmark.order.count(n) > 1})
        problems.append(("benchmark.order", f"duplicate task(s) {dupes}"))
    if problems:
        raise ConfigError(source, problems)
    return config


def _validate_sections(raw: dict, source: str) -> ExperimentConfig:
    """The experiment's own fields (the open sections' plugin fields unchecked); no plugin is loaded."""
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(source, _explain(exc, ExperimentConfig)) from None


def benchmark_options(config: ExperimentConfig):
    """The benchmark's typed ``Options`` (validated once, by :func:`validate_experiment`)."""
    if config.benchmark._validated is None:
        config.benchmark._validated = _registry("benchmark").validate(config.benchmark.name, config.benchmark.options())
    return config.benchmark._validated


def strategy_params(config: ExperimentConfig):
    """The strategy's typed ``Params`` (validated once, by :func:`validate_experiment`)."""
    if config.strategy._validated is None:
        config.strategy._validated = _registry("strategy").validate(config.strategy.name, config.strategy.params())
    return config.strategy._validated


def _check_plugin(section: str, name: str, values: dict) -> tuple[Any, list[tuple[str, str]]]:
    """``(typed values, [])``, or ``(None, problems)`` naming ``<section>.<field>``."""
    registry = _registry(section)
    try:
        return registry.validate(name, values), []
    except UnknownNameError as exc:
        return None, [(f"{section}.name", str(exc))]
    except ValidationError as exc:
        return None, [(f"{section}.{field}", msg) for field, msg in _explain(exc, getattr(registry.get(name), registry.params))]


def _check_model(name: str) -> list[tuple[str, str]]:
    from medcl.models import list_models  # on use, as _registry: open_clip's model list


    known = list_models()
    if name in known or name.startswith("hf-hub:"):
        return []
    return [("model.name", str(UnknownNameError("model", name, known[:12] + ["... (medcl list models)"])))]


# --------------------------------------------------------------------------- overrides

def apply_overrides(raw: dict, overrides: list[str], source: str = "--set") -> dict:
    """Return a copy of ``raw`` with each ``a.b.c=value`` applied; values are parsed as YAML
    scalars/lists (``3`` -> int, ``1e-4`` -> float, ``true`` -> bool, ``[a, b]`` -> list,
    ``null`` -> None)."""
    result = copy.deepcopy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(source, [("--set", f"expected KEY=VALUE, got {item!r}")])
        parts = key.strip().split(".")
        node = result
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(source, [(key, f"{part!r} is a value, not a section")])
            node = child
        node[parts[-1]] = _parse_value(text)
    return result


def _parse_value(text: str) -> Any:
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str) and _looks_like_float(value):
        return float(value)
    return value


def _looks_like_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def to_yaml(config: ExperimentConfig, extra: dict | None = None) -> str:
    """The resolved experiment as YAML (what ``config.yaml`` in the run directory holds)."""
    payload = config.model_dump(mode="json")
    if extra:
        payload = {**payload, **extra}
    return yaml.safe_dump(payload, sort_keys=False)
