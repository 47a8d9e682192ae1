"""PRIMED's question pool: M0 from a file (domain -> anatomical site -> disease) and M^i per task.

    version: 1
    domains:
      xray:
        label: an X-ray                  # question text: "<label> of the <site> showing <disease>"
        modalities: [xray, radiology]    # task modalities that pick this domain for M_domain
        sites:
          chest: [pneumonia, {disease: pneumothorax, question: "a chest radiograph with a pneumothorax"}]

The shipped default (``default_questions.yaml``, 265 entries) covers the modalities of the shipped
benchmarks; ``questions: path/to/own.yaml`` (or ``.json``, same structure) replaces it.
Before task i, M^i = M0 + one entry per class of every earlier task (its first class prompt as the
text, ``level="task"``); see :func:`pool_for_task`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

DEFAULT_QUESTIONS = Path(__file__).with_name("default_questions.yaml")


@dataclass(frozen=True)
class Question:
    """One query of the pool. ``task`` is the earlier task a class-label entry comes from ("" for M0)."""

    text: str
    domain: str
    site: str
    disease: str
    task: str = ""


class _Leaf(BaseModel):
    model_config = ConfigDict(extra="forbid")
    disease: str = Field(min_length=1)
    question: str | None = Field(None, min_length=1)


class _Domain(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: str = Field(min_length=1, description="the imaging phrase that starts each question")
    modalities: list[str] = Field(default_factory=list, description="task modalities matching this domain")
    sites: dict[str, list[str | _Leaf]] = Field(min_length=1)

    @field_validator("sites")
    @classmethod
    def _non_empty(cls, sites):
        empty = [site for site, leaves in sites.items() if not leaves]
        if empty:
            raise ValueError(f"site(s) {empty} list no disease")
        return sites


class _PoolFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int = Field(1, ge=1, le=1)
    domains: dict[str, _Domain] = Field(min_length=1)


@dataclass(frozen=True)
class QuestionPool:
    """M0: the flattened questions, and which domains each task modality selects."""

    questions: tuple[Question, ...]
    modalities: dict[str, tuple[str, ...]]  # domain -> task modalities

    def __len__(self) -> int:
        return len(self.questions)

    def domains_for(self, modality: str) -> set[str]:
        """Pool domains matching a task modality (a domain also matches its own name)."""
        return {d for d, mods in self.modalities.items() if modality == d or modality in mods}


def load_questions(path: str | Path | None = None) -> QuestionPool:
    """Read and validate a pool file (YAML or JSON by suffix); ``None``: the shipped default.

    Raises ValueError naming the file and the offending field (``domains.xray.sites``...).
    """
    path = Path(path) if path is not None else DEFAULT_QUESTIONS
    if not path.is_file():
        raise FileNotFoundError(f"questions: no such file {path}")
    text = path.read_text()
    try:
        raw = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
        parsed = _PoolFile.model_validate(raw)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"questions: {path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"questions: {path}: {problems}") from None
    questions, seen = [], set()
    for name, domain in parsed.domains.items():
        for site, leaves in domain.sites.items():
            for leaf in leaves:
                leaf = leaf if isinstance(leaf, _Leaf) else _Leaf(disease=leaf)
                text = leaf.question or f"{domain.label} of the {site} showing {leaf.disease}"
                if text not in seen:
                    seen.add(text)
                    questions.append(Question(text=text, domain=name, site=site, disease=leaf.disease))
    return QuestionPool(tuple(questions), {d: tuple(v.modalities) for d, v in parsed.domains.items()})


def task_questions(pool: QuestionPool, task) -> list[Question]:
    """One entry per class of ``task`` (a :class:`medcl.data.task.Task`): its first prompt as text."""
    domains = sorted(pool.domains_for(task.modality)) or [task.modality]
    return [Question(text=prompts[0], domain=domains[0], site="", disease=name, task=task.name)
            for name, prompts in zip(task.classes, task.class_prompts)]


def pool_for_task(pool: QuestionPool, tasks: list, index: int) -> list[Question]:
    """M^i: M0 followed by the class-label entries of tasks[0 .. index-1], in task order."""
    earlier = [q for task in tasks[:index] for q in task_questions(pool, task)]
    return list(pool.questions) + earlier
