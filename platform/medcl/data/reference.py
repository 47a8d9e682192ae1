"""Reference sets: image-caption pairs that a strategy distils on (ZSCL), from a registered source.

    strategy:
      name: zscl
      reference: {name: synthmed, seed: 1, domains: [ct, dermoscopy], per_class: 20}
      # or a corpus shard (columns id, image = encoded bytes, caption, modality):
      reference: {name: parquet, path: corpus/shard-0.parquet, limit: 2000}

A source is a class registered with ``@register_reference("name")``: an ``Options`` model (its
fields, validated, unknown ones are errors) and ``load(options) -> ImageCaptions``, deterministic in
the options. Every source returns RGB uint8 images ``(N, S, S, 3)`` at ``image_size`` and one
caption per image, so a strategy samples reference batches with plain indexing.
"""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from medcl.data.pairs import ImageCaptions
from medcl.paths import PathStr
from medcl.registry import Registry, UnknownNameError

REFERENCE_SOURCES: Registry[type["ReferenceSource"]] = Registry("reference source", params="Options")
register_reference = REFERENCE_SOURCES.register


class ReferenceOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image_size: int = Field(32, ge=8, le=1024, description="side of the stored images")
    limit: int | None = Field(None, ge=1, description="keep only the first `limit` pairs")


class ReferenceSource:
    Options: ClassVar[type[ReferenceOptions]] = ReferenceOptions

    def load(self, options: ReferenceOptions) -> ImageCaptions:  # pragma: no cover - abstract
        raise NotImplementedError


class ReferenceConfig(BaseModel):
    """``name`` picks a registered source; every other field is one of its ``Options``."""

    model_config = ConfigDict(extra="allow")
    name: str = "synthmed"

    @model_validator(mode="after")
    def _valid_options(self) -> "ReferenceConfig":
        try:
            self.options()
        except UnknownNameError as exc:
            raise ValueError(str(exc)) from None
        except ValidationError as exc:
            raise ValueError("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from None
        return self

    def options(self) -> ReferenceOptions:
        return REFERENCE_SOURCES.validate(self.name, self.model_extra)

    @classmethod
    def extras_model(cls, raw: dict) -> type[BaseModel] | None:
        """The source's ``Options`` (which fields are paths: :mod:`medcl.paths`), or None."""
        name = raw.get("name", "synthmed")
        return REFERENCE_SOURCES.get(name).Options if isinstance(name, str) and name in REFERENCE_SOURCES else None

    def load(self) -> ImageCaptions:
        pairs = REFERENCE_SOURCES.get(self.name)().load(self.options())
        if not len(pairs):
            raise ValueError("the reference set is empty")
        return pairs


def _rgb(images: np.ndarray) -> np.ndarray:
    return images if images.shape[-1] == 3 else np.repeat(images, 3, axis=-1)


def check_synthmed_domains(value: list[str] | None) -> list[str] | None:
    """``value`` (None: every domain) when each name is a synthmed domain; ValueError naming the unknown ones."""
    from medcl.data.synthmed import DOMAIN_NAMES

    unknown = sorted(set(value or ()) - set(DOMAIN_NAMES))
    if unknown or value == []:
        raise ValueError(f"unknown or no domains {unknown}; known: {', '.join(DOMAIN_NAMES)}")
    return value


@register_reference("synthmed")
class SynthmedReference(ReferenceSource):
    """The captioned images of a synthmed build (``medcl.data.synthmed.captioned_pairs``, train split)."""

    class Options(ReferenceOptions):
        seed: int = Field(1, description="seed of the build (keep it apart from the experiment's)")
        domains: list[str] | None = Field(None, description="synthmed domains; default all six")
        per_class: int = Field(20, ge=1, description="images per finding and domain")

        _known = field_validator("domains")(classmethod(lambda cls, value: check_synthmed_domains(value)))

    def load(self, options: Options) -> ImageCaptions:
        from medcl.data.synthmed import DOMAIN_NAMES, SynthMed, captioned_pairs

        build = {"domains": options.domains or list(DOMAIN_NAMES), "train_per_class": options.per_class,
                 "val_per_class": 1, "test_per_class": 1, "image_size": options.image_size}
        pairs = list(captioned_pairs(SynthMed().build(build, options.seed)))[: options.limit]
        return ImageCaptions(np.stack([_rgb(p["image"]) for p in pairs]), tuple(p["caption"] for p in pairs),
                            tuple(p["modality"] for p in pairs))


@register_reference("parquet")
class ParquetReference(ReferenceSource):
    """Parquet file(s) with an ``image`` column of encoded bytes (or ``{bytes: ...}`` structs), a
    ``caption`` column and optionally ``modality``: the corpus shard schema."""

    class Options(ReferenceOptions):
        path: PathStr = Field(description="a .parquet file, a folder whose *.parquet files are read in name order, or "
                                          "a published corpus folder (medcl corpus build: its CURRENT version is read)")

    def load(self, options: Options) -> ImageCaptions:
        import pyarrow.parquet as pq

        from medcl.publish import resolve

        path = Path(options.path)
        if path.is_dir():
            path = Path(resolve(path))  # a published corpus: its current version (medcl.publish)
        files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
        if not files or not all(f.is_file() for f in files):
            raise FileNotFoundError(f"reference.path: no Parquet file at {path}")
        images, captions, modalities = [], [], []
        for file in files:
            columns = [c for c in ("image", "caption", "modality") if c in pq.read_schema(file).names]
            rows = pq.read_table(file, columns=columns).to_pylist()
            for row in rows[: None if options.limit is None else options.limit - len(images)]:
                images.append(_decode(row["image"], options.image_size))
                captions.append(str(row["caption"]))
                modalities.append(str(row.get("modality") or ""))
        if not images:
            raise ValueError(f"reference.path: {path} holds no rows")
        return ImageCaptions(np.stack(images), tuple(captions), tuple(modalities))


def _decode(value, size: int) -> np.ndarray:
    from PIL import Image

    from medcl.data.images import open_image

    data = value["bytes"] if isinstance(value, dict) else value
    with open_image(data) as image:  # the pixel and bytes budgets, checked before decoding
        return np.asarray(image.convert("RGB").resize((size, size), Image.BILINEAR), dtype=np.uint8)
