"""Paths in medcl's files, resolved once, when the file is loaded, against one base.

**The base is the directory the command runs in** (the current working directory of ``medcl run``,
``medcl pretrain``, ``medcl sweep``, ``medcl corpus build``...). Every path field of an experiment,
pretraining, sweep or corpus file, and every path given with ``--set`` or on the command line, is
made absolute when the file is loaded on the driver, so Ray Train workers, Tune trials and job
entrypoints, which run in other directories, only ever see absolute paths::

    resolve_path("runs/pretrain-synthmed/model.safetensors")   # -> "<cwd>/runs/pretrain-synthmed/..."
    resolve_path("s3://bucket/runs")                           # -> unchanged (any scheme://)
    resolve_path("~/data")                                     # -> "/home/me/data" ($VARS expanded too)

A path field is declared with an annotated type, so the schema says which fields are paths:

* :data:`PathStr`: a path taken from the base (``output_dir``, ``index_dir``, ``root``...);
* :data:`DataPathStr`: a path taken from the enclosing section's ``data_root`` when that is set
  (itself a :data:`PathStr`), else from the base (a benchmark's task roots, corpus sources);
* :data:`WeightsStr`: ``model.pretrained``, resolved only when it is a file path (has a ``/``,
  starts with ``~``, ``.`` or ``$``, or ends in a weights suffix), never a tag such as ``openai``,
  ``default``, ``hf-hub`` or ``hf-hub:org/repo``.

:func:`resolve_paths` walks a raw mapping (what YAML gave, before validation) guided by a pydantic
model and returns a copy with those fields resolved; sections whose fields belong to a plug-in (a
benchmark's options, a strategy's params, a reference source) name their model with a classmethod
``extras_model(raw) -> type[BaseModel] | None``. Resolution is idempotent (absolute paths are kept
as given), so re-loading a resolved ``config.yaml`` changes nothing and a resumed run compares equal.
"""
from __future__ import annotations

import os
import re
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
HUB_PREFIX = "hf-hub:"
BASE_NOTE = ("Relative paths (in the file, in --set values and in arguments) are taken from the directory the "
             "command runs in and made absolute when the file is loaded.")


@dataclass(frozen=True)
class PathField:
    """Marker in ``Annotated[str, PathField(kind)]``: ``kind`` is ``path``, ``data`` or ``weights``."""

    kind: Literal["path", "data", "weights"]


PathStr = Annotated[str, PathField("path")]
DataPathStr = Annotated[str, PathField("data")]
WeightsStr = Annotated[str, PathField("weights")]


def is_uri(value: str) -> bool:
    """True for ``scheme://...`` (``s3://``, ``gs://``, ``file://``, ``sqlite:///``...)."""
    return bool(URI.match(value))


def resolve_path(value: str, base: str | os.PathLike | None = None) -> str:
    """``value`` with ``~`` and ``$VARS`` expanded, made absolute against ``base`` (default: the
    current working directory) and normalised; URIs and empty strings are returned unchanged, an
    absolute path is kept as given (only expanded). Symbolic links are not followed."""
    if not value or is_uri(value):
        return value
    expanded = os.path.expandvars(os.path.expanduser(value))
    if os.path.isabs(expanded):
        return expanded
    return os.path.normpath(os.path.join(os.fspath(base) if base is not None else os.getcwd(), expanded))


def is_weights_file(value: str) -> bool:
    """Whether a ``pretrained`` value names a file rather than a tag (see the module doc)."""
    if not value or is_uri(value) or value.startswith(HUB_PREFIX):
        return False
    return ("/" in value or os.sep in value or value.startswith(("~", ".", "$"))
            or value.lower().endswith(WEIGHT_SUFFIXES))


def resolve_weights(value: str | None, base: str | os.PathLike | None = None) -> str | None:
    """``pretrained`` resolved when it is a file path (:func:`is_weights_file`), else unchanged."""
    return resolve_path(value, base) if isinstance(value, str) and is_weights_file(value) else value


def cli_path(value: str) -> Path:
    """``argparse`` type of a path argument: absolute against the working directory. An object-store
    URI is refused (argparse names the argument), never turned into a local folder named ``s3:``."""
    if is_uri(value) and not value.startswith("file://"):
        import argparse

        raise argparse.ArgumentTypeError(f"{value}: a local path or a shared mount is needed here; object-store "
                                         "URIs (s3://, gs://) are taken by medcl run's --output-dir")
    return Path(resolve_path(value[len("file://"):] if value.startswith("file://") else value))


def cli_place(value: str) -> str | Path:
    """``argparse`` type of a location argument that may be in an object store: a URI (``s3://``,
    ``gs://``) stays the string given (``medcl.storage.place`` reads it), ``file://`` and local
    paths become absolute paths as with :func:`cli_path`."""
    if is_uri(value) and not value.startswith("file://"):
        return value
    return cli_path(value)


def resolve_paths(raw: Any, model: type[BaseModel], base: str | os.PathLike | None = None) -> Any:
    """A copy of ``raw`` (a mapping as read from YAML) with every path field of ``model`` resolved
    against ``base`` (default: the working directory); see the module doc. Values that do not fit
    the model are left as they are (validation reports them)."""
    base = os.fspath(base) if base is not None else os.getcwd()
    return _walk(raw, model, base, data_root=None)


def _walk(raw: Any, model: type[BaseModel], base: str, data_root: str | None) -> Any:
    if not isinstance(raw, dict):
        return raw
    fields = dict(model.model_fields)
    extras = getattr(model, "extras_model", None)
    extra_model = extras(raw) if callable(extras) else None
    if extra_model is not None:
        fields = {**extra_model.model_fields, **fields}
    out = dict(raw)
    if "data_root" in fields and _kind(fields["data_root"]) == "path" and isinstance(raw.get("data_root"), str):
        out["data_root"] = data_root = resolve_path(raw["data_root"], base)
    for key, value in raw.items():
        if key in fields and key != "data_root":
            out[key] = _resolve_field(value, fields[key], base, data_root)
    for key, field in fields.items():  # a relative default (output_dir: runs) is a path too
        if key not in raw and isinstance(field.default, str) and field.default and _kind(field):
            out[key] = _resolve_value(field.default, _kind(field), base, data_root)
    return out


def _resolve_field(value: Any, field, base: str, data_root: str | None) -> Any:
    kind = _kind(field)
    if kind is not None:
        return _resolve_value(value, kind, base, data_root)
    return _resolve_nested(value, field.annotation, base, data_root)


def _resolve_value(value: Any, kind: str, base: str, data_root: str | None) -> Any:
    if isinstance(value, list):
        return [_resolve_value(v, kind, base, data_root) for v in value]
    if not isinstance(value, str):
        return value
    if kind == "weights":
        return resolve_weights(value, base)
    return resolve_path(value, data_root if kind == "data" and data_root else base)


def _resolve_nested(value: Any, annotation, base: str, data_root: str | None) -> Any:
    if isinstance(value, list):
        item = _list_item(annotation)
        return [_resolve_nested(v, item, base, data_root) for v in value] if item is not None else value
    if isinstance(value, dict):
        model = _pick_model(_models_in(annotation), value)
        return _walk(value, model, base, data_root) if model is not None else value
    return value


def _kind(field) -> str | None:
    """The :class:`PathField` kind of a pydantic field (its metadata, or inside ``X | None``)."""
    for meta in getattr(field, "metadata", ()):
        if isinstance(meta, PathField):
            return meta.kind
    return _kind_in(field.annotation)


def _kind_in(annotation) -> str | None:
    if get_origin(annotation) is Annotated:
        return next((m.kind for m in annotation.__metadata__ if isinstance(m, PathField)), None)
    if get_origin(annotation) in (Union, types.UnionType, list):
        return next((k for k in map(_kind_in, get_args(annotation)) if k), None)
    return None


def _list_item(annotation):
    origin = get_origin(annotation)
    if origin is list:
        return get_args(annotation)[0]
    if origin is Annotated:
        return _list_item(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return next((i for i in map(_list_item, get_args(annotation)) if i is not None), None)
    return None


def _models_in(annotation) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) if not isinstance(arg, (str, int, float)) for m in _models_in(arg)]


def _pick_model(models: list[type[BaseModel]], raw: dict) -> type[BaseModel] | None:
    """The model a raw mapping is meant for: one whose ``Literal`` tag fields match ``raw`` (a
    discriminated union), else the only candidate."""
    if len(models) <= 1:
        return models[0] if models else None
    for model in models:
        tags = {name: get_args(f.annotation) for name, f in model.model_fields.items()
                if get_origin(f.annotation) is Literal and len(get_args(f.annotation)) == 1}
        if tags and all(raw.get(name, model.model_fields[name].default) in allowed for name, allowed in tags.items()):
            return model
    return None


class OutsideRoot(ValueError):
    """A path read from data (a CSV/JSON row, a manifest, a corpus row) that does not resolve inside
    its root; ``reason`` is ``"outside_root"`` (the count key of skipped rows)."""

    reason = "outside_root"


def inside_root(root: str | os.PathLike, value: str | os.PathLike) -> Path:
    """``root / value`` with symbolic links and ``..`` resolved, when that lies inside ``root``
    (itself resolved); else :class:`OutsideRoot` naming both. ``value`` may be absolute (kept only
    when it resolves inside ``root``); ``..`` that leads out, a link that leads out and a NUL are
    refused. The data a command reads never decides which folders it reads from."""
    text = os.fspath(value)
    base = Path(root).resolve()
    if "\x00" in text:
        raise OutsideRoot(f"{text!r}: outside_root: a NUL in a path read from data")
    resolved = (base / text).resolve()
    if resolved != base and base not in resolved.parents:
        raise OutsideRoot(f"{text}: outside_root: resolves to {resolved}, outside {base}")
    return resolved
