"""``synthmed``: a procedurally generated medical-imaging benchmark (numpy only, CC0).

Six imaging *domains* (chest X-ray-like, ultrasound-like, fundus, H&E histology, CT, dermoscopy)
share five *findings* (``normal``, ``nodule``, ``cyst``, ``calcification``, ``fracture``). Each
domain draws its findings with its own polarity, colour and background texture (a nodule is bright
on X-ray and CT, hypoechoic on ultrasound, a yellow exudate on fundus, dark purple on histology,
brown on skin), so a model fine-tuned on one domain loses accuracy on another: forgetting is
measurable in seconds on a CPU. Every image has a caption (``captioned_pairs`` turns the tasks into
an image-caption corpus) and every class has clinically worded prompts per domain.

All geometry is in normalised coordinates ``[-1, 1]`` (y down), so an image looks the same at any
``image_size``; the image size only sets the sampling. Builds are deterministic in
``(options, seed)``: each (domain, site, split) draws from its own ``SeedSequence``. The domain table
and image rendering live in ``medcl.data.synthmed_render`` and are re-exported here.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
from pydantic import Field, field_validator, model_validator

from medcl.data.registry import Benchmark, BenchmarkOptions, register_benchmark
from medcl.data.synthmed_render import (  # noqa: F401  (re-exported: appearance and rendering live there)
    DOMAIN_NAMES,
    DOMAINS,
    FINDINGS,
    Colour,
    Domain,
    SiteShift,
    render,
)
from medcl.data.task import SPLITS, Split, Task

_NOUN = {"nodule": "a nodule", "cyst": "a cyst", "calcification": "a cluster of calcifications",
         "fracture": "a fracture"}
_CHUNK_PIXELS = 1 << 20  # images are rendered in chunks of at most this many pixels (bounded memory)


# Captions, prompts and task building
def location(cy: float, cx: float) -> str:
    """The 3x3-grid location phrase of a normalised point, e.g. ``"upper left"`` or ``"centre"``."""
    row = "upper" if cy < -1 / 3 else "lower" if cy > 1 / 3 else "middle"
    column = "left" if cx < -1 / 3 else "right" if cx > 1 / 3 else "centre"
    return "centre" if (row, column) == ("middle", "centre") else f"{row} {column}"


def caption(domain: Domain, finding: str, cy: float, cx: float, variant: int = 0) -> str:
    """One caption naming the domain label, the finding and (for a lesion) its location."""
    lab, a = domain.label, domain.article
    if finding == "normal":
        return (f"{lab} image with no finding", f"normal {lab} image, no finding",
                f"{a} {lab} image with no finding")[variant % 3]
    noun, loc = _NOUN[finding], location(cy, cx)
    return (f"{lab} image showing {noun} in the {loc}", f"{lab} image with {noun} in the {loc}",
            f"{noun} in the {loc} of {a} {lab} image")[variant % 3]


def class_prompts(domain: Domain, finding: str) -> tuple[str, ...]:
    """Three clinically worded zero-shot prompts for ``finding`` in ``domain``."""
    lab, a, noun = domain.label, domain.article, domain.noun
    if finding == "normal":
        return (f"{a} {lab} image with no finding", f"a normal synthetic {noun}",
                f"a synthetic {noun} with no abnormality")
    return (f"{a} {lab} image showing {_NOUN[finding]}", f"a synthetic {noun} with {domain.clinical[finding]}",
            f"{a} {noun} with a {finding}")


def _build_split(domain: Domain, rng, classes: tuple[str, ...], per_class: int, size: int, shift: SiteShift) -> Split:
    labels = rng.permutation(np.repeat(np.arange(len(classes), dtype=np.int64), per_class))
    kinds = np.asarray([FINDINGS.index(c) for c in classes])[labels]
    chunk = max(1, _CHUNK_PIXELS // (size * size))
    images, captions = [], []
    for start in range(0, len(kinds), chunk):
        part, g = render(domain, rng, kinds[start:start + chunk], size, shift)
        variants = rng.integers(0, 3, len(part))
        images.append(part)
        captions += [caption(domain, FINDINGS[k], float(y), float(x), int(v))
                     for k, y, x, v in zip(kinds[start:start + chunk], g["cy"], g["cx"], variants)]
    return Split(np.concatenate(images), labels, tuple(captions))


def build_task(domain: str, site: int, sites: int, classes: tuple[str, ...], per_split: dict[str, int],
               size: int, seed: int) -> Task:
    """One task: ``domain`` at acquisition ``site`` (1-based; site 1 is unshifted), named
    ``domain`` when ``sites == 1`` else ``f"{domain}-{site}"``."""
    spec, d = DOMAINS[domain], DOMAIN_NAMES.index(domain)
    root = int(seed) % (1 << 63)
    shift = SiteShift() if site == 1 else SiteShift.draw(np.random.default_rng([root, d, site, 99]))
    splits = {s: _build_split(spec, np.random.default_rng([root, d, site, j]), classes, per_split[s], size, shift)
              for j, s in enumerate(SPLITS)}
    return Task(name=domain if sites == 1 else f"{domain}-{site}", classes=classes,
                class_prompts=tuple(class_prompts(spec, c) for c in classes), modality=spec.modality,
                splits=splits, domain=spec.label,
                metadata={"synthetic": True, "site": site, "domain_key": domain, "image_size": size})


# The benchmark
def _check_names(kind: str, names: list[str] | None, known: tuple[str, ...]) -> list[str] | None:
    if names is None:
        return None
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown {kind} {unknown}; known {kind}: {', '.join(known)}")
    if len(set(names)) != len(names):
        raise ValueError(f"{kind} {names} contain duplicates")
    return names


@register_benchmark("synthmed")
class SynthMed(Benchmark):
    """Procedural medical benchmark: one task per (domain, acquisition site); see the module docstring."""

    description = ("Synthetic medical images (X-ray, ultrasound, fundus, histology, CT, dermoscopy) with five "
                   "shared findings drawn with domain-specific appearance; captions and prompts included.")

    class Options(BenchmarkOptions):
        num_tasks: int = Field(4, ge=1, description="tasks to take, round-robin over domains then sites; when "
                               "`domains` is given and this is not, all len(domains) * tasks_per_domain tasks")
        domains: list[str] | None = Field(None, description=f"domain subset in task order; default {DOMAIN_NAMES}")
        classes: list[str] | None = Field(None, description=f"finding subset (>= 2); default {FINDINGS}")
        image_size: int = Field(32, ge=16, le=256)
        train_per_class: int = Field(120, ge=1)
        val_per_class: int = Field(20, ge=1)
        test_per_class: int = Field(50, ge=1)
        tasks_per_domain: int = Field(1, ge=1, description="acquisition sites per domain, tasks '{domain}-{i}'")

        @field_validator("domains")
        @classmethod
        def _known_domains(cls, v):
            if v is not None and not v:
                raise ValueError("domains must not be empty")
            return _check_names("domains", v, DOMAIN_NAMES)

        @field_validator("classes")
        @classmethod
        def _known_classes(cls, v):
            if v is not None and len(v) < 2:
                raise ValueError(f"classes needs at least 2 findings, got {v}")
            return _check_names("classes", v, FINDINGS)

        @model_validator(mode="after")
        def _task_count(self):
            available = len(self.domains or DOMAIN_NAMES) * self.tasks_per_domain
            if self.domains is not None and "num_tasks" not in self.model_fields_set:
                self.num_tasks = available
            if self.num_tasks > available:
                raise ValueError(f"num_tasks={self.num_tasks} exceeds the {available} available "
                                 f"(domains x tasks_per_domain)")
            return self

    def task_plan(self, options: Options) -> list[tuple[str, int]]:
        """``(domain, site)`` of each task in order: sites round-robin over the domains."""
        domains = options.domains or list(DOMAIN_NAMES)
        plan = [(d, s) for s in range(1, options.tasks_per_domain + 1) for d in domains]
        return plan[: options.num_tasks]

    def build(self, options: Options | dict | None, seed: int) -> list[Task]:
        """Deterministic in ``(options, seed)``: same inputs give bit-identical arrays and captions."""
        options = self.coerce_options(options)
        classes = tuple(options.classes or FINDINGS)
        per_split = {"train": options.train_per_class, "val": options.val_per_class, "test": options.test_per_class}
        return [build_task(d, s, options.tasks_per_domain, classes, per_split, options.image_size, seed)
                for d, s in self.task_plan(options)]


def captioned_pairs(tasks: list[Task], split: str = "train") -> Iterator[dict]:
    """Yield ``{"id", "image" (H, W, C) uint8, "caption", "modality", "source", "license"}`` per image.

    Ids are ``f"synthmed/{task}/{split}/{i}"``. Raises ``ValueError`` for a task whose split has no captions.
    """
    for task in tasks:
        part = task.split(split)
        if part.captions is None:
            raise ValueError(f"task {task.name!r} split {split!r} has no captions")
        for i, (image, text) in enumerate(zip(part.images, part.captions)):
            yield {"id": f"synthmed/{task.name}/{split}/{i}", "image": image, "caption": text,
                   "modality": task.modality, "source": "synthmed", "license": "CC0-1.0"}
