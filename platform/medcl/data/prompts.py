"""Class prompts for CLIP zero-shot heads: clinically worded descriptions and templates.

The wording lives in YAML files beside this module (``prompts/*.yaml``, package data):

* ``modalities.yaml``: templates per imaging modality (``"an X-ray image showing {}"``), used for
  data sets without a prompt set of their own (a user's class folders or Parquet manifest);
* one file per source (``medmnist.yaml``, ``mednist.yaml``): per data set, ``templates`` and, per
  class, one or more ``classes`` descriptions, plus ``modality``/``adapter``/``title`` where no
  other table in medcl holds them (MedNIST).

The prompts of class ``c`` are ``template.format(description)`` for every description of ``c`` and
every template, in that order, duplicates dropped: PneumoniaMNIST's ``pneumonia`` gives "a chest
X-ray showing pneumonia", ... An experiment overrides the templates of a task (``templates:``) or
the whole prompt list of some classes (``prompts: {class: [...]}``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

PROMPT_DIR = Path(__file__).with_name("prompts")
MODALITY_FILE = "modalities.yaml"


@dataclass(frozen=True)
class PromptSet:
    """The wording of one data set: templates with ``{}`` and descriptions per class name."""

    name: str
    templates: tuple[str, ...]
    classes: dict[str, tuple[str, ...]]
    modality: str | None = None
    adapter: str | None = None
    title: str = ""
    source: str = ""
    extra: dict = field(default_factory=dict)


@lru_cache(maxsize=1)
def prompt_sets() -> dict[str, PromptSet]:
    """Every data set's :class:`PromptSet`, by data set name (read once per process).

    Raises ``ValueError`` naming the file for a malformed entry or a data set defined twice.
    """
    sets: dict[str, PromptSet] = {}
    for path in sorted(PROMPT_DIR.glob("*.yaml")):
        if path.name == MODALITY_FILE:
            continue
        for name, entry in (yaml.safe_load(path.read_text()) or {}).items():
            if name in sets:
                raise ValueError(f"{path}: data set {name!r} already has prompts in another file")
            sets[name] = _parse_set(path, str(name), entry)
    return sets


def _parse_set(path: Path, name: str, entry: dict) -> PromptSet:
    try:
        templates = tuple(entry["templates"])
        classes = {str(c): tuple(d) for c, d in entry["classes"].items()}
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: {name!r} needs 'templates' (list) and 'classes' (mapping): {exc}") from None
    check_templates(templates, f"{path}: {name}.templates")
    empty = [c for c, d in classes.items() if not d]
    if empty:
        raise ValueError(f"{path}: {name}: classes without a description: {empty}")
    known = {"templates", "classes", "modality", "adapter", "title", "source"}
    return PromptSet(name=name, templates=templates, classes=classes, modality=entry.get("modality"),
                     adapter=entry.get("adapter"), title=entry.get("title", ""), source=entry.get("source", ""),
                     extra={k: v for k, v in entry.items() if k not in known})


@lru_cache(maxsize=1)
def modality_templates() -> dict[str, tuple[str, ...]]:
    """Templates per modality; key ``"default"`` is used for a modality not listed."""
    raw = yaml.safe_load((PROMPT_DIR / MODALITY_FILE).read_text()) or {}
    templates = {str(k): tuple(v) for k, v in raw.items()}
    for modality, items in templates.items():
        check_templates(items, f"{MODALITY_FILE}: {modality}")
    return templates


def check_templates(templates, where: str) -> None:
    """Raise ``ValueError`` unless ``templates`` is non-empty and each holds exactly one ``{}``."""
    if not templates:
        raise ValueError(f"{where}: at least one template is needed")
    bad = [t for t in templates if not isinstance(t, str) or t.count("{}") != 1 or t.replace("{}", "").count("{")]
    if bad:
        raise ValueError(f"{where}: every template needs exactly one '{{}}' (the class description), got {bad}")


def readable(class_name: str) -> str:
    """The default description of a class without one: ``"ground_glass"`` -> ``"ground glass"``."""
    return " ".join(class_name.replace("_", " ").replace("-", " ").split())


def class_prompts(classes: tuple[str, ...] | list[str], *, dataset: str | None = None, modality: str = "",
                  templates: list[str] | tuple[str, ...] | None = None,
                  overrides: dict[str, list[str]] | None = None) -> tuple[tuple[str, ...], ...]:
    """One non-empty tuple of prompts per class, in ``classes`` order.

    Templates: ``templates`` if given, else the data set's own, else the modality's, else the
    default ones. Descriptions: the data set's for a class it knows, else :func:`readable`.
    ``overrides[c]`` replaces class ``c``'s prompts entirely. Unknown override keys are the
    caller's to reject (see :func:`medcl.data.spec.make_task`).
    """
    known = prompt_sets().get(dataset) if dataset else None
    if templates:
        check_templates(templates, "templates")
        chosen = tuple(templates)
    elif known is not None:
        chosen = known.templates
    else:
        by_modality = modality_templates()
        chosen = by_modality.get(modality, by_modality["default"])
    result = []
    for name in classes:
        if overrides and overrides.get(name):
            result.append(tuple(dict.fromkeys(overrides[name])))
            continue
        descriptions = known.classes.get(name) if known is not None else None
        descriptions = descriptions or (readable(name),)
        result.append(tuple(dict.fromkeys(t.format(d) for d in descriptions for t in chosen)))
    return tuple(result)
