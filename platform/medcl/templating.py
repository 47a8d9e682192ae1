"""The one Jinja2 environment of medcl's HTML pages (a run's ``report.html``, a study's ``index.html``).

Templates live in ``medcl/templates/`` (shipped as package data, see ``pyproject.toml``); every page
extends ``base.html.j2``, which holds the document frame (doctype, ``<head>``, the shared CSS, a
header with the page's title and a ``<main>``). Contracts of :func:`environment`:

* autoescaping is on for every template: run-folder names, task names, notes and config text are
  user input (a run folder may come from someone else) and are HTML-escaped wherever a template
  prints them; no template marks a value ``|safe``;
* an undefined variable raises (``StrictUndefined``): a context key renamed in Python fails the
  render instead of leaving a silently empty cell;
* ``trim_blocks``/``lstrip_blocks``: a line holding only a ``{% ... %}`` tag leaves nothing behind.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

TEMPLATES = Path(__file__).resolve().parent / "templates"


@lru_cache(maxsize=1)
def environment() -> Environment:
    """The shared environment over :data:`TEMPLATES` (built once per process; Jinja caches the
    compiled templates in it)."""
    return Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=True, undefined=StrictUndefined,
                       trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)


def render(template: str, **context) -> str:
    """``template`` (a file name under :data:`TEMPLATES`) rendered with ``context``, every value escaped."""
    return environment().get_template(template).render(**context)
