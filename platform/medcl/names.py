"""Names that become folders: one rule for a run, a pretraining run, a sweep, a task, a corpus or an index.

A *folder name* is 1 to 128 characters: letters, digits, ``_``, ``-`` and ``.``, starting with a
letter, a digit or ``_`` (:data:`FOLDER_NAME_PATTERN`). So it can never be ``.``, ``..`` or any
dot-only name (which would put the folder on ``output_dir`` itself or its parent, the folder
``--fresh`` empties), a hidden name (``.tmp`` is medcl's staging), an option (``-rf``), a path
(``/``, ``\\``), or hold NUL or spaces::

    check_folder_name("tiny_synthmed", "name")    # -> "tiny_synthmed"
    check_folder_name("..", "name")               # ValueError: name: '..' is not a folder name: ...

Config models declare the field as :data:`FolderName` (pydantic calls the check; the config's error
names the field); code that takes a name from elsewhere calls :func:`check_folder_name`.
"""
from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

FOLDER_NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$"
_FOLDER_NAME = re.compile(FOLDER_NAME_PATTERN)
ALLOWED = ("letters, digits, '_', '-' and '.', starting with a letter, a digit or '_', at most 128 characters "
           f"(pattern {FOLDER_NAME_PATTERN})")


def folder_name_problem(value: object) -> str | None:
    """Why ``value`` is not a folder name (see the module doc), or ``None`` when it is one."""
    if not isinstance(value, str):
        return f"{value!r} is not a string"
    if _FOLDER_NAME.fullmatch(value) is None:
        return f"{value!r} is not a folder name; allowed: {ALLOWED}"
    return None


def check_folder_name(value: object, field: str = "name") -> str:
    """``value`` when it is a folder name, else ValueError naming ``field`` and the allowed pattern."""
    problem = folder_name_problem(value)
    if problem:
        raise ValueError(f"{field}: {problem}")
    return value  # type: ignore[return-value]


def _validate(value: str) -> str:
    problem = folder_name_problem(value)
    if problem:
        raise ValueError(problem)  # pydantic prefixes the field's location
    return value


FolderName = Annotated[str, AfterValidator(_validate)]
"""A pydantic field type: a :func:`check_folder_name`-checked string."""
