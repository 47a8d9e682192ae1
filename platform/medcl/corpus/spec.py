"""The corpus build spec (``medcl corpus build SPEC.yaml``): which sources, where, how many rows.

```yaml
data_root: ../shared/data          # relative source paths are taken under it (else under the cwd)
shard_rows: 10000                  # rows per output Parquet shard
max_side: null                     # re-encode images whose longer side exceeds this (keeps format)
partitions: null                   # hash partitions of the Ray build's de-duplication (default: by input size)
sources:
  - {type: roco, path: roco/data, limit: 1000}
  - {type: medpix, path: medpix/MedPix-2-0}
  - {type: jsonl, path: pmc_oa.jsonl, images: pmc_oa/images, id_field: image, caption_field: caption}
  - {type: parquet, path: biomed.parquet, image_column: jpg, caption_column: txt}
  - {type: webdataset, path: "biomedica/*.tar"}
  - {type: synthmed, per_class: 20}
```

Every source has ``name`` (the ``source`` column; default its type), ``prefix`` (ids are
``f"{prefix}:{raw id}"``; default ``name``), ``limit`` (rows read at most), and defaults for
``modality`` and ``license`` when the data has none. A wrong field raises :class:`CorpusSpecError`
naming it and the allowed fields/values.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from medcl.data.spec import resolve_path
from medcl.errors import ConfigError, MedclError
from medcl.errors import explain as _explain
from medcl.paths import DataPathStr, PathStr, resolve_paths


class CorpusError(MedclError, ValueError):
    """A corpus problem the user can fix (strict-mode bad row, missing source files...)."""


class CorpusSpecError(ConfigError):
    """An invalid corpus spec: ``problems`` is a list of ``(dotted field, message)``."""

    what = "invalid corpus spec"


class _Source(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, description="value of the `source` column (default: the type)")
    prefix: str | None = Field(None, description="id prefix, ids are '<prefix>:<raw id>' (default: name)")
    limit: int | None = Field(None, ge=1, description="read at most this many records")
    modality: str = Field("unknown", description="modality when the record has none")
    license: str = Field("unknown", description="license when the record has none")

    @model_validator(mode="after")
    def _defaults(self):
        self.name = self.name or self.type  # type: ignore[attr-defined]
        self.prefix = self.prefix or self.name
        return self


class RocoSource(_Source):
    type: Literal["roco"]
    path: DataPathStr = Field(description="the upstream `data` folder holding {train,validation,test}/{radiology,non-radiology}")
    splits: list[Literal["train", "validation", "test"]] = ["train", "validation", "test"]
    categories: list[Literal["radiology", "non-radiology"]] = ["radiology", "non-radiology"]
    with_images: bool = Field(False, description="read <split>/<category>/images/<PMC file> (upstream downloader layout)")


class MedPixSource(_Source):
    type: Literal["medpix"]
    path: DataPathStr = Field(description="the MedPix-2-0 folder (Descriptions.json, images/)")
    caption_metadata: bool = Field(False, description="prefix each caption with the record's Type, plane and "
                                                      "Location Category: 'CT, axial, head: <caption>'")


class JsonlSource(_Source):
    type: Literal["jsonl"]
    path: DataPathStr = Field(description="a .jsonl file")
    images: DataPathStr | None = Field(None, description="folder the image field is relative to (default: the file's folder)")
    id_field: str = "id"
    image_field: str | None = "image"
    caption_field: str = "caption"
    modality_field: str | None = None
    license_field: str | None = None


class ParquetSource(_Source):
    type: Literal["parquet"]
    path: DataPathStr = Field(description="a .parquet file or a folder of them")
    id_column: str = "id"
    image_column: str | None = Field("image", description="binary column of encoded image bytes")
    image_path_column: str | None = Field(None, description="instead of image_column: a column of file paths")
    images: DataPathStr | None = Field(None, description="folder image paths are relative to")
    caption_column: str = "caption"
    modality_column: str | None = None
    license_column: str | None = None


class WebDatasetSource(_Source):
    type: Literal["webdataset"]
    path: DataPathStr = Field(description="a .tar file, a folder of them, or a glob ('shards/*.tar')")
    caption_field: str = Field("caption", description="key of the caption in <key>.json (when there is no .txt)")
    modality_field: str | None = Field(None, description="key of the modality in <key>.json")
    license_field: str | None = Field(None, description="key of the license in <key>.json")


class SynthMedSource(_Source):
    type: Literal["synthmed"]
    split: Literal["train", "val", "test"] = "train"
    per_class: int = Field(40, ge=1, description="images per class and domain")
    image_size: int = Field(32, ge=16, le=256)
    domains: list[str] | None = None
    seed: int = 0
    license: str = "CC0-1.0"


SourceSpec = Annotated[Union[RocoSource, MedPixSource, JsonlSource, ParquetSource, WebDatasetSource, SynthMedSource],
                       Field(discriminator="type")]
SOURCE_TYPES = ("roco", "medpix", "jsonl", "parquet", "webdataset", "synthmed")


class CorpusSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    data_root: PathStr | None = Field(None, description="relative source paths are taken under it")
    shard_rows: int = Field(10000, ge=1)
    max_side: int | None = Field(None, ge=8, description="re-encode images longer than this on a side")
    partitions: int | None = Field(None, ge=1, description="hash partitions of the de-duplicating shuffle on Ray "
                                                           "(default: one per 256 MiB of listed input)")
    sources: list[SourceSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_prefixes(self):
        prefixes = [s.prefix for s in self.sources]
        dupes = sorted({p for p in prefixes if prefixes.count(p) > 1})
        if dupes:
            raise ValueError(f"sources share id prefix(es) {dupes}; give each a distinct `prefix`")
        return self

    def resolve(self, path: str) -> Path:
        return resolve_path(path, self.data_root)


def validate_spec(raw: dict, source: str = "<corpus spec>") -> CorpusSpec:
    if not isinstance(raw, dict):
        raise CorpusSpecError(source, [("<root>", f"expected a mapping with `sources`, got {type(raw).__name__}")])
    for i, entry in enumerate(raw.get("sources") or []):
        kind = entry.get("type") if isinstance(entry, dict) else None
        if kind not in SOURCE_TYPES:
            raise CorpusSpecError(source, [(f"sources.{i}.type", f"{kind!r} is not a source type; "
                                            f"allowed: {', '.join(SOURCE_TYPES)}")])
    try:
        return CorpusSpec.model_validate(raw)
    except ValidationError as exc:
        raise CorpusSpecError(source, _explain(exc, CorpusSpec)) from None


def load_spec(path: str | Path) -> CorpusSpec:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"corpus spec not found: {path}")
    raw = yaml.safe_load(path.read_text()) or {}
    return validate_spec(resolve_paths(raw, CorpusSpec) if isinstance(raw, dict) else raw, str(path))
