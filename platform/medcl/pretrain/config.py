"""Pretraining files: pydantic sections, YAML loading with ``--set`` overrides, errors naming fields.

    name: pretrain-synthmed          # run directory: <output_dir>/<name>
    seed: 0
    data: {source: synthmed, seed: 1000, per_class: 100, heldout_per_class: 10}
    # or:  {source: corpus, path: corpus/roco_medpix, heldout: 256}
    # either may add augment: {crop_scale: [0.5, 1.0], crop_ratio: [0.75, 1.333], hflip: true}
    model: {name: medcl-tiny, pretrained: null, image_size: null}     # medcl.config.ModelSection
    train: {workers: 2, batch_size: 128, lr: 0.002, steps: 200, warmup_steps: 20, schedule: cosine}
    output_dir: runs                 # or an object store: s3://bucket/runs (medcl.storage)

``train.batch_size`` is global and must divide evenly over ``train.workers`` (the InfoNCE features
are all-gathered, which needs one shape per rank). Exactly one of ``train.steps`` and
``train.epochs`` is set; ``epochs`` gives ``ceil(epochs * training pairs / batch_size)`` steps (for a
corpus, the pairs its plan counts: rows minus caption-only and held-out ones).
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Union

import yaml
from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from medcl.config import ConfigError, ModelSection, _explain, apply_overrides, to_yaml
from medcl.names import FolderName
from medcl.paths import PathStr, resolve_paths

__all__ = ["PretrainConfig", "load_pretrain", "validate_pretrain", "to_yaml"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class AugmentSection(_Section):
    """Seeded random resized crop, horizontal flip and (optional) contrast and brightness jitter of
    every training image, in the worker (:mod:`medcl.pretrain.augment`); held-out pairs are never
    augmented."""

    crop_scale: tuple[float, float] = Field((0.5, 1.0), description="area fraction of the crop box, (min, max)")
    crop_ratio: tuple[float, float] = Field((3 / 4, 4 / 3), description="aspect ratio of the crop box, (min, max)")
    hflip: bool = True
    contrast: tuple[float, float] | None = Field(None, description="contrast factor range, (min, max); null: kept")
    brightness: tuple[float, float] | None = Field(None, description="brightness factor range, (min, max); null: kept")

    @field_validator("crop_scale", "crop_ratio", "contrast", "brightness")
    @classmethod
    def _range(cls, value: tuple[float, float], info: ValidationInfo) -> tuple[float, float]:
        if value is None:
            return value
        low, high = value
        top = 1.0 if info.field_name == "crop_scale" else float("inf")
        if not 0 < low <= high <= top:
            raise ValueError(f"needs 0 < min <= max{' <= 1' if top == 1.0 else ''}, got {list(value)}")
        return value


class SynthmedData(_Section):
    """Captioned pairs of a synthmed build (``medcl.data.synthmed.captioned_pairs``): train split
    for training, test split held out. ``seed`` must differ from experiments' benchmark seeds so
    the pairs are other draws than the images a later experiment is scored on."""

    source: Literal["synthmed"] = "synthmed"
    seed: int = 1000
    domains: list[str] | None = None
    per_class: int = Field(100, ge=1, description="training pairs per finding and domain")
    heldout_per_class: int = Field(10, ge=1, description="held-out pairs per finding and domain")
    image_size: int = Field(32, ge=16, le=256)
    augment: AugmentSection | None = None


class CorpusData(_Section):
    """A corpus directory of Parquet shards in ``medcl.corpus.schema.CORPUS_SCHEMA`` (``medcl
    corpus build``), streamed to the workers through Ray Data (:mod:`medcl.pretrain.stream`; the
    driver never loads the training images). Rows without an image or with an undecodable one are
    skipped and counted; ``heldout`` pairs, drawn with ``seed``, are kept out of training for the
    retrieval metric (:mod:`medcl.pretrain.corpus_plan`)."""

    source: Literal["corpus"] = "corpus"
    path: PathStr
    seed: int = 0
    heldout: int = Field(256, ge=2)
    limit: int | None = Field(None, ge=1, description="read at most this many rows")
    image_size: int = Field(32, ge=8, le=1024)
    augment: AugmentSection | None = None


def _default_source(value):
    if isinstance(value, dict) and "source" not in value:
        return {"source": "synthmed", **value}
    return value


DataSection = Annotated[Union[SynthmedData, CorpusData], Field(discriminator="source"),
                        BeforeValidator(_default_source)]


class PretrainConfigError(ConfigError):
    """An invalid pretraining file (a :class:`medcl.errors.ConfigError`, so the CLI prints it)."""

    what = "invalid pretraining config"


class PretrainTrainSection(_Section):
    """Contrastive training. Field names follow ``medcl.config.TrainSection`` where they mean the
    same (the optimiser and schedule are the engine's ``build_optimizer``)."""

    workers: int = Field(default=1, ge=1)
    cpus_per_worker: float = Field(default=1.0, gt=0)
    use_gpu: bool = False
    batch_size: int = Field(default=128, ge=2)
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.1, ge=0)
    schedule: Literal["constant", "cosine"] = "cosine"
    warmup_steps: int = Field(default=20, ge=0)
    steps: int | None = Field(default=None, ge=1)
    epochs: float | None = Field(default=None, gt=0)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    grad_clip: float | None = Field(default=1.0, gt=0)
    torch_threads: int = Field(default=1, ge=1)
    checkpoint_every: int | None = Field(default=None, ge=1, description="steps; None: 4 checkpoints per run")
    log_every: int | None = Field(default=None, ge=1, description="steps; None: about 10 progress lines")
    eval_batch_size: int = Field(default=256, ge=1)
    max_failures: int = Field(default=1, ge=-1, description="as medcl.config.TrainSection: -1 unlimited")
    node_wait_s: float = Field(default=900.0, gt=0, description="as medcl.config.TrainSection")

    @model_validator(mode="after")
    def _check(self) -> "PretrainTrainSection":
        if (self.steps is None) == (self.epochs is None):
            raise ValueError("set exactly one of steps and epochs")
        if self.precision == "fp16" and not self.use_gpu:
            raise ValueError("precision 'fp16' needs use_gpu: true (use 'bf16' or 'fp32' on CPU)")
        return self

    @field_validator("batch_size")
    @classmethod
    def _divisible(cls, value: int, info: ValidationInfo) -> int:
        workers = info.data.get("workers", 1)
        if value % workers:
            raise ValueError(f"must be a multiple of workers ({workers}): the global-batch loss all-gathers "
                             "one equal share per worker")
        return value


class PretrainConfig(_Section):
    name: FolderName  # the run directory output_dir/name: never ".", ".." or a path (medcl.names)
    seed: int = 0
    data: DataSection = SynthmedData()
    model: ModelSection = ModelSection()
    train: PretrainTrainSection = PretrainTrainSection(steps=200)
    output_dir: PathStr = "runs"

    @property
    def run_dir(self):
        """``output_dir / name``: a local :class:`~pathlib.Path`, or a :class:`medcl.storage.Location`
        when ``output_dir`` is a URI (``s3://bucket/runs``)."""
        from medcl.storage import place

        return place(self.output_dir) / self.name


def load_pretrain(path: str | Path, overrides: list[str] = (), output_dir: str | None = None) -> PretrainConfig:
    """Read a pretraining YAML file, apply ``a.b=c`` overrides, make its paths absolute against the
    working directory (:mod:`medcl.paths`), validate (errors name the field)."""
    path = Path(path)
    if not path.is_file():
        raise PretrainConfigError(str(path), [("<file>", "no such file")])
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise PretrainConfigError(str(path), [("<file>", f"YAML syntax error: {exc}")]) from None
    if not isinstance(raw, dict):
        raise PretrainConfigError(str(path), [("<file>", f"expected a mapping of sections, got {type(raw).__name__}")])
    raw.pop("provenance", None)
    raw = apply_overrides(raw, overrides, source=str(path))
    if output_dir is not None:
        raw["output_dir"] = output_dir
    return validate_pretrain(resolve_paths(raw, PretrainConfig), source=str(path))


def validate_pretrain(raw: dict, source: str = "<pretrain>") -> PretrainConfig:
    """Validate a raw mapping; the data section's tag is dropped from field paths
    (``data.per_class``, not ``data.synthmed.per_class``)."""
    try:
        config = PretrainConfig.model_validate(raw)
    except ValidationError as exc:
        problems = [(_untag(field), msg) for field, msg in _explain(exc, PretrainConfig)]
        raise PretrainConfigError(source, problems) from None
    from medcl.config import _check_model

    problems = _check_model(config.model.name)
    if isinstance(config.data, SynthmedData) and config.data.domains is not None:
        from medcl.data.synthmed import DOMAIN_NAMES

        unknown = [d for d in config.data.domains if d not in DOMAIN_NAMES]
        if unknown or not config.data.domains:
            problems.append(("data.domains", f"unknown or no domains {unknown}; known: {', '.join(DOMAIN_NAMES)}"))
    if problems:
        raise PretrainConfigError(source, problems)
    return config


def _untag(field: str) -> str:
    for tag in ("synthmed", "corpus"):
        field = field.replace(f"data.{tag}.", "data.").replace(f"data.{tag}", "data")
    return field
