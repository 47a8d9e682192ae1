"""The data sets medcl knows by name: MedMNIST's table plus the prompt sets that carry their own
facts (MedNIST). Used by ``medcl list benchmarks``, by the file adapters' ``dataset:`` field (for a
known data set's modality and prompts) and by the test that every class has prompts."""
from __future__ import annotations

from dataclasses import dataclass

from medcl.data.medmnist_info import INFO, SCORING
from medcl.data.prompts import prompt_sets
from medcl.registry import close_match_hint


@dataclass(frozen=True)
class KnownDataset:
    name: str
    adapter: str
    modality: str
    task: str
    classes: tuple[str, ...]
    title: str = ""
    note: str = ""


def known_datasets() -> list[KnownDataset]:
    """Every named data set, MedMNIST's first (in its table's order), then the others by name."""
    found = [KnownDataset(i.flag, "medmnist", i.modality, i.task, i.classes, i.title,
                          f"refused: {i.unsupported.split(':')[0]}" if i.unsupported else SCORING[i.task])
             for i in INFO.values()]
    for name, entry in sorted(prompt_sets().items()):
        if entry.adapter and name not in INFO:
            found.append(KnownDataset(name, entry.adapter, entry.modality or "", entry.extra.get("task", "multi-class"),
                                      tuple(entry.classes), entry.title or name, entry.source))
    return found


def dataset_facts(name: str) -> KnownDataset:
    """The facts of data set ``name``; ``ValueError`` with the closest known name otherwise."""
    known = {d.name: d for d in known_datasets()}
    if name not in known:
        raise ValueError(f"unknown data set {name!r}{close_match_hint(name, sorted(known))}; known: "
                         f"{', '.join(sorted(known))} (leave `dataset` out for your own data and set `name` and "
                         "`modality`)")
    return known[name]


def format_catalog() -> str:
    """A plain-text table: data set, adapter, modality, task type, classes."""
    lines = ["", "Known data sets (benchmark medmnist / imagefolder with dataset: NAME / sequence):"]
    for d in known_datasets():
        lines.append(f"  {d.name:15s} {d.adapter:12s} {d.modality:12s} {d.task:26s} {len(d.classes):2d} classes: "
                     f"{', '.join(repr(c) if ',' in c else c for c in d.classes)}")
        if d.note:
            lines.append(f"  {'':15s} scoring/notes: {d.note}")
    return "\n".join(lines)
