"""What ``medcl list strategies`` prints: each strategy's description and parameters with their
defaults, without importing torch (the strategies' modules import it; listing them took seconds).

    python -m medcl.strategy_catalogue      # rewrite strategy_catalogue.json from the registry

``strategy_catalogue.json`` (beside this file) holds, per registered strategy, its ``description``
and its ``Params`` defaults (``model_dump(mode="json")`` of ``Params()``), and ``sources``: the
SHA-256 of every source file those came from (the ``medcl.strategies`` package and the modules
defining the parameter models). :func:`catalogue` returns the file's entries while those digests
match the files on disk, else builds the entries from the live registry (importing torch), so the
listing is never stale; ``tests/unit/test_walkthrough.py`` fails when the file is out of date.
Standard library only.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent  # platform/medcl
CATALOGUE = PACKAGE / "strategy_catalogue.json"


def _digest(relative: str) -> str | None:
    path = PACKAGE / relative
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _current(sources: dict[str, str]) -> bool:
    """True when ``sources`` names every strategies/*.py file and each digest matches."""
    strategy_files = {f"strategies/{p.name}" for p in (PACKAGE / "strategies").glob("*.py")}
    if not strategy_files <= set(sources):
        return False
    return all(_digest(relative) == digest for relative, digest in sources.items())


def catalogue() -> dict[str, dict]:
    """``{name: {"description": str, "params": {field: default}}}``, sorted by name."""
    try:
        stored = json.loads(CATALOGUE.read_text())
        if _current(stored["sources"]):
            return stored["strategies"]
    except (OSError, ValueError, KeyError):
        pass
    return build()["strategies"]


def build() -> dict:
    """The catalogue from the live registry (imports every strategy, hence torch)."""
    from pydantic import BaseModel

    from medcl.strategies import STRATEGIES

    entries, modules = {}, set()
    for name in STRATEGIES.names():
        strategy = STRATEGIES.get(name)
        entries[name] = {"description": getattr(strategy, "description", "") or "",
                         "params": strategy.Params().model_dump(mode="json")}
        for model in strategy.Params.__mro__:
            if isinstance(model, type) and issubclass(model, BaseModel) and model.__module__.startswith("medcl."):
                modules.add(model.__module__)
            for info in getattr(model, "model_fields", {}).values():
                kind = info.annotation
                if isinstance(kind, type) and issubclass(kind, BaseModel) and kind.__module__.startswith("medcl."):
                    modules.add(kind.__module__)
    files = {f"strategies/{p.name}" for p in (PACKAGE / "strategies").glob("*.py")}
    files |= {Path(sys.modules[m].__file__).resolve().relative_to(PACKAGE).as_posix() for m in modules}
    sources = {relative: _digest(relative) for relative in sorted(files)}
    return {"strategies": entries, "sources": sources}


def format_listing(entries: dict[str, dict], width: int = 100) -> str:
    """One line ``name  description`` per strategy, then its parameters ``field=default`` indented
    (wrapped at ``width``), or ``(no parameters)``."""
    lines = []
    for name, entry in entries.items():
        lines.append(f"{name:16s} {entry['description']}")
        params = [f"{field}={json.dumps(value, separators=(',', ':'))}" for field, value in entry["params"].items()]
        row = " " * 17
        for text in params or ["(no parameters)"]:
            if len(row) + len(text) > width and row.strip():
                lines.append(row.rstrip())
                row = " " * 17
            row += text + "  "
        lines.append(row.rstrip())
    return "\n".join(lines)


if __name__ == "__main__":
    CATALOGUE.write_text(json.dumps(build(), indent=1) + "\n")
    print(f"wrote {CATALOGUE}")
