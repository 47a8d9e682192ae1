"""Write the measurement tables of ``docs/*.md`` from the JSON results in ``docs/results/``.

    .venv/bin/python experiments/benchmarks/render_tables.py           # rewrite every marked block
    .venv/bin/python experiments/benchmarks/render_tables.py --check   # exit 1 if a block is stale
    .venv/bin/python experiments/benchmarks/render_tables.py --study runs/studies/findings-synthmed/study.json \
        --as findings                                                   # a study's results into docs/results

A block in a page is marked

    <!-- table:NAME -->
    ...generated from docs/results/NAME.json, never edited by hand...
    <!-- /table -->

To change a figure, change (or re-measure into) the JSON and run this script; a unit test
(``tests/unit/test_docs.py``) fails when a page differs from what its JSON renders. Each JSON file
has a ``kind`` and says how it was measured:

* ``rows``: ``columns`` (titles) and ``rows``; a row is a list of cells, or ``{"cells": [...],
  "values": {...}}`` whose string cells are ``str.format`` templates over ``values`` (the measured
  numbers stay numbers). Numeric cells are formatted by ``formats`` (one spec per column, e.g.
  ``".2f"``, ``","``; default ``str``).
* ``matrix``: an accuracy matrix, ``tasks`` and ``rows`` (``label``, ``values``), and ``metrics``
  (Transfer, Avg, ... printed on one line under it).
* ``study``: a ``medcl study`` result (``study``: its ``study.json`` without the per-run records),
  rendered by the study's own tables (:func:`medcl.study.tables.display_tables`): accuracy, the
  claims, the ablations and the costs, the same cells as the study's ``tables/*.md`` and its board.
  ``--study STUDY_JSON --as NAME`` writes ``docs/results/NAME.json`` from a study folder, keeping the
  ``measured``/``after`` text of an existing file.

Every kind takes ``measured`` (a paragraph above the table: machine, load, date, command) and
``after`` (a paragraph below it). Free text is a string or a list of lines.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
RESULTS = DOCS / "results"
BLOCK = re.compile(r"(<!-- table:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S)
METRIC_NAMES = {"transfer": "Transfer", "avg": "Avg", "last": "Last", "bwt": "BWT", "forgetting": "Forgetting",
                "fwt": "FWT"}


def _text(value) -> str:
    return "\n".join(value) if isinstance(value, list) else str(value)


def _cell(value, spec: str | None, values: dict) -> str:
    if isinstance(value, str):
        return value.format(**values) if values else value
    if value is None:
        return "–"
    return format(value, spec) if spec else str(value)


def _line(cells) -> str:
    return "|" + "|".join(f" {c} " if c else " " for c in cells) + "|"


def render_rows(result: dict) -> str:
    columns, formats = result["columns"], result.get("formats") or [None] * len(result["columns"])
    lines = [_line(columns), "|" + "---|" * len(columns)]
    for row in result["rows"]:
        cells, values = (row["cells"], row.get("values", {})) if isinstance(row, dict) else (row, {})
        values = {k: ", ".join(map(str, v)) if isinstance(v, list) else v for k, v in values.items()}
        if len(cells) != len(columns):
            raise ValueError(f"a row has {len(cells)} cells for {len(columns)} columns: {cells}")
        lines.append(_line(_cell(c, f, values) for c, f in zip(cells, formats)))
    return "\n".join(lines) + "\n"


def render_matrix(result: dict) -> str:
    tasks = result["tasks"]
    lines = [_line(["", *tasks]), "|---|" + "---|" * len(tasks)]
    for row in result["rows"]:
        if len(row["values"]) != len(tasks):
            raise ValueError(f"row {row['label']!r} has {len(row['values'])} values for {len(tasks)} tasks")
        lines.append(_line([row["label"], *(f"{v:.1f}" for v in row["values"])]))
    metrics = result.get("metrics")
    if metrics:
        lines += ["", ", ".join(f"{METRIC_NAMES[k]} {v:.1f}" for k, v in metrics.items()) + "."]
    return "\n".join(lines) + "\n"


STUDY_TABLES = ("accuracy", "claims", "ablations", "costs")
STUDY_KEYS = ("study", "baseline", "seeds", "orders", "methods", "changed", "tuning", "statistics", "costs", "wall_s",
              "missing", "adopted_from")


def render_study(result: dict) -> str:
    from medcl.study.tables import display_tables, markdown

    tables = {t.name: t for t in display_tables(result["study"])}
    return "\n".join(markdown(tables[name]) for name in STUDY_TABLES if name in tables)


def import_study(study_json: Path, name: str, results: Path = RESULTS) -> Path:
    """``results/<name>.json`` (kind ``study``) from a study's ``study.json``: the keys the tables need
    (:data:`STUDY_KEYS`), the per-run records left out; ``measured``/``after`` kept from the file it replaces."""
    payload = json.loads(Path(study_json).read_text())
    target = results / f"{name}.json"
    old = json.loads(target.read_text()) if target.is_file() else {}
    result = {"kind": "study", **{k: old[k] for k in ("measured", "after") if k in old},
              "study": {k: payload[k] for k in STUDY_KEYS if k in payload}}
    target.write_text(json.dumps(result, indent=1) + "\n")
    return target


KINDS = {"rows": render_rows, "matrix": render_matrix, "study": render_study}


def render(result: dict) -> str:
    """The block's body: ``measured``, the table, ``after``, separated by blank lines."""
    parts = [_text(result["measured"])] if result.get("measured") else []
    parts.append(KINDS[result["kind"]](result).rstrip("\n"))
    if result.get("after"):
        parts.append(_text(result["after"]))
    return "\n\n".join(parts) + "\n"


def load(name: str, results: Path = RESULTS) -> dict:
    path = results / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"a block names table {name!r} but {path} does not exist")
    return json.loads(path.read_text())


def rewrite(text: str, results: Path = RESULTS) -> tuple[str, list[str]]:
    """``text`` with every marked block rendered from its JSON, and the names of the blocks found."""
    names = []

    def fill(match: re.Match) -> str:
        names.append(match["name"])
        return match[1] + render(load(match["name"], results)) + match[4]

    return BLOCK.sub(fill, text), names


def pages(docs: Path = DOCS) -> list[Path]:
    return sorted(docs.glob("*.md"))


def check(docs: Path = DOCS, results: Path = RESULTS) -> list[str]:
    """Problems: pages whose blocks differ from their JSON, JSON files no block uses, a table in two places."""
    problems, used = [], []
    for page in pages(docs):
        text = page.read_text()
        new, names = rewrite(text, results)
        used += names
        if new != text:
            problems.append(f"{page.relative_to(docs.parent)}: a table differs from docs/results (run "
                            "experiments/benchmarks/render_tables.py; edit the JSON, not the page)")
    for name in sorted({n for n in used if used.count(n) > 1}):
        problems.append(f"table {name!r} is marked more than once")
    for path in sorted(results.glob("*.json")):
        if path.stem not in used:
            problems.append(f"{path.relative_to(results.parent.parent)}: no page has a <!-- table:{path.stem} --> block")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a block is stale")
    parser.add_argument("--study", type=Path, metavar="STUDY_JSON", help="import a study's study.json first")
    parser.add_argument("--as", dest="name", metavar="NAME", help="with --study: the docs/results/NAME.json to write")
    args = parser.parse_args(argv)
    if args.study:
        if not args.name:
            parser.error("--study needs --as NAME (the table block <!-- table:NAME --> it fills)")
        print(f"wrote {import_study(args.study, args.name).relative_to(REPO)}")
    if args.check:
        problems = check()
        print("\n".join(problems) or "every table matches docs/results")
        return 1 if problems else 0
    for page in pages():
        text = page.read_text()
        new, names = rewrite(text)
        if new != text:
            page.write_text(new)
            print(f"{page.relative_to(REPO)}: rewrote {', '.join(names)}")
    problems = [p for p in check() if "no page has" in p or "more than once" in p]
    if problems:
        print("\n".join(problems))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
