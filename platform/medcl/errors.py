"""The errors a user can cause and fix, and how a field error is written. Standard library only.

Every such error derives from :class:`MedclError`; the ``medcl`` command catches that one base (and
``FileNotFoundError``) and prints the message without a traceback, exit status 2. This module
imports nothing heavy, so the CLI can catch the error without loading torch, Ray or open_clip.

A field error names its dotted path, the bad value and what is allowed::

    experiments/x.yaml: invalid experiment
      strategy.name: unknown strategy 'rehersal' (did you mean 'rehearsal'?); registered: finetune, ...
      train.lr: Input should be greater than 0 (got -1)
"""
from __future__ import annotations

import difflib
from typing import Any, Literal, get_args, get_origin


class MedclError(Exception):
    """Base of every error a user can fix. Picklable with its attributes, subclasses too: errors
    cross Ray task boundaries (a strategy's ``prepare`` runs as a Ray task; sweep trials)."""

    def __reduce__(self):
        return _rebuild_error, (type(self), self.args, self.__dict__)


def _rebuild_error(cls: type, args: tuple, state: dict) -> Exception:
    error = Exception.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


Problems = list[tuple[str, str]]


def format_problems(source: str, what: str, problems: Problems) -> str:
    """``"<source>: <what>"`` and one indented ``"<field>: <message>"`` line per problem."""
    return "\n".join([f"{source}: {what}"] + [f"  {field}: {message}" for field, message in problems])


class ConfigError(MedclError, ValueError):
    """An invalid file or section: ``problems`` is a list of ``(dotted field, message)``;
    ``what`` heads the message (subclasses: "invalid sweep", "invalid pretraining config"...)."""

    what = "invalid experiment"

    def __init__(self, source: str, problems: Problems):
        self.source, self.problems = source, problems
        super().__init__(format_problems(source, self.what, problems))


def close_match_hint(name: str, candidates: list[str]) -> str:
    """``" (did you mean 'x'?)"`` for the closest candidate, or ``""``."""
    match = difflib.get_close_matches(str(name), candidates, n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


class UnknownNameError(MedclError, KeyError):
    """A name that is not registered; ``str()`` lists the registered names."""

    def __init__(self, family: str, name: str, known: list[str]):
        self.family, self.name, self.known = family, name, known
        super().__init__(name)

    def __str__(self) -> str:
        hint = close_match_hint(self.name, self.known)
        return f"unknown {self.family} {self.name!r}{hint}; registered: {', '.join(self.known)}"


def explain(exc: Any, root: type) -> Problems:
    """``(dotted field, message)`` for each error of a pydantic ``ValidationError`` raised while
    validating the model ``root``: an unknown field lists the allowed ones (and the closest), a bad
    value shows itself."""
    problems = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        field = ".".join(loc) or "<root>"
        if err["type"] == "extra_forbidden":
            allowed = _allowed_fields(root, loc[:-1])
            hint = _closest_field(loc[-1], allowed)
            listing = f"allowed: {', '.join(allowed)}" if allowed else "this section takes no parameters"
            msg = f"unknown field{f' (did you mean {hint!r}?)' if hint else ''}; {listing}"
        else:
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] not in ("missing",) and "input" in err and not isinstance(err["input"], dict):
                msg += f" (got {err['input']!r})"
        problems.append((field, msg))
    return problems


def _closest_field(name: str, allowed: list[str]) -> str | None:
    """difflib's closest field (ratio >= 0.6), else the longest field that ``name`` starts with
    followed by ``_`` (``lr_rate`` -> ``lr``, too short for difflib's ratio), else None."""
    match = difflib.get_close_matches(name, allowed, n=1, cutoff=0.6)
    if match:
        return match[0]
    prefixes = [field for field in allowed if name.startswith(field + "_")]
    return max(prefixes, key=len) if prefixes else None


def _allowed_fields(root: type, path: list[str]) -> list[str]:
    """Fields of the model at ``path``, through lists (``tasks.0``) and tagged unions (``tasks.0.medmnist``)."""
    models: list = [root]
    for part in path:
        if part.isdigit():
            continue
        fields = [m.model_fields[part] for m in models if part in m.model_fields]
        models = (_models_in(fields[0].annotation) if fields else
                  [m for m in models if any(part in get_args(f.annotation) for f in m.model_fields.values()
                                            if get_origin(f.annotation) is Literal)])
        if not models:
            return []
    return list(models[0].model_fields) if len(models) == 1 else []


def _models_in(annotation) -> list:
    if isinstance(annotation, type) and hasattr(annotation, "model_fields"):  # a pydantic model
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]
