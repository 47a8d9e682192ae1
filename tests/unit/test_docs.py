"""The documentation holds together: every citation of a docs/ page section resolves, every link
between the README and docs/ lands on a page and heading that exist, the measurement tables are
the ones docs/results/*.json renders (nobody edited a figure by hand), and the README stays a front
page whose example is the quickstart's real file."""
from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
CITATION = re.compile(r"docs/([\w-]+\.md)(?:#([\w-]+)|\s+section\s+(\d+))")
LINK = re.compile(r"\]\(([^)\s:]+\.md)(?:#([\w-]+))?\)")
SOURCES = ("platform", "experiments", "tests", "cluster")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of a Markdown page's headings (outside code fences; repeats get -1, -2...)."""
    found, fenced = [], False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,6} ", line):
            base = slug(line.lstrip("#"))
            found.append(base if base not in found else f"{base}-{found.count(base)}")
    return set(found)


def numbered_sections(page: Path) -> set[str]:
    return {m for m in re.findall(r"^## (\d+)\. ", page.read_text(), re.M)}


def test_slugs_follow_github():
    assert slug(" 8. LoRA strategies on this platform") == "8-lora-strategies-on-this-platform"
    assert slug(" Pretraining (`medcl pretrain`)") == "pretraining-medcl-pretrain"
    assert slug(" The papers' findings, reproduced") == "the-papers-findings-reproduced"


def _citations() -> list[tuple[str, str, str | None, str | None]]:
    found = []
    for root in SOURCES:
        for path in sorted((REPO / root).rglob("*")):
            if path.suffix in {".py", ".yaml", ".yml", ".md", ".toml", ".json"} and path.is_file() \
                    and "egg-info" not in str(path):
                for m in CITATION.finditer(path.read_text(errors="replace")):
                    found.append((str(path.relative_to(REPO)), m[1], m[2], m[3]))
    return found


def test_every_citation_of_a_docs_section_resolves():
    citations = _citations()
    assert len({c[0] for c in citations if c[0].startswith("platform/")}) >= 20, "the modules' citations were not found"
    broken = []
    for where, page, anchor, number in citations:
        target = DOCS / page
        if not target.is_file():
            broken.append(f"{where}: docs/{page} does not exist")
        elif anchor and anchor not in anchors(target):
            broken.append(f"{where}: docs/{page} has no section #{anchor}")
        elif number and number not in numbered_sections(target):
            broken.append(f"{where}: docs/{page} has no section {number}")
    assert not broken, "\n".join(broken)


def test_no_module_cites_a_file_outside_the_repository():
    stale = []
    for root in SOURCES:
        for path in [*(REPO / root).rglob("*.py"), *(REPO / root).rglob("*.yaml")]:
            if path != Path(__file__) and re.search(r"(?<!docs/)METHODS\.md", path.read_text()):
                stale.append(str(path.relative_to(REPO)))
    assert not stale, f"cite docs/methods.md#<section> instead of METHODS.md: {stale}"


@pytest.mark.parametrize("page", [REPO / "README.md", *sorted(DOCS.glob("*.md"))], ids=lambda p: p.name)
def test_links_between_pages_land_on_a_heading(page):
    broken = []
    for target, anchor in LINK.findall(page.read_text()):
        path = page.parent / target if target else page
        if not path.resolve().is_file():
            broken.append(f"({target}) does not exist")
        elif anchor and anchor not in anchors(path.resolve()):
            broken.append(f"({target}#{anchor}): no such heading")
    for anchor in re.findall(r"\]\(#([\w-]+)\)", page.read_text()):
        if anchor not in anchors(page):
            broken.append(f"(#{anchor}): no such heading")
    assert not broken, f"{page.name}: " + "; ".join(broken)


def _render_tables():
    spec = importlib.util.spec_from_file_location("render_tables", REPO / "experiments" / "benchmarks" / "render_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_measurement_tables_are_the_ones_their_json_renders():
    assert _render_tables().check() == []


def test_a_hand_edited_figure_or_a_missing_result_is_caught(tmp_path):
    render = _render_tables()
    docs = tmp_path / "docs"
    shutil.copytree(DOCS, docs)
    assert render.check(docs, docs / "results") == []
    page = docs / "performance.md"
    page.write_text(page.read_text().replace("| 46 s |", "| 41 s |", 1))
    assert [p for p in render.check(docs, docs / "results") if p.startswith("docs/performance.md")]
    page.write_text(render.rewrite(page.read_text(), docs / "results")[0])  # re-rendered: clean again
    assert render.check(docs, docs / "results") == []
    (docs / "results" / "orphan.json").write_text(json.dumps({"kind": "rows", "columns": ["a"], "rows": [[1]]}))
    assert any("orphan.json" in p for p in render.check(docs, docs / "results"))
    page.write_text(page.read_text() + "\n<!-- table:nowhere -->\n<!-- /table -->\n")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        render.check(docs, docs / "results")


def test_rows_keep_measured_numbers_as_numbers():
    render = _render_tables()
    table = render.render({"kind": "rows", "measured": "Measured here:", "columns": ["what", "figure"],
                           "formats": [None, ".1f"],
                           "rows": [["a", 1.25], {"cells": ["b", "{n:,} rows in {s} s"], "values": {"n": 50000, "s": [1, 2]}}]})
    assert table == "Measured here:\n\n| what | figure |\n|---|---|\n| a | 1.2 |\n| b | 50,000 rows in 1, 2 s |\n"
    matrix = render.render({"kind": "matrix", "tasks": ["x", "y"], "rows": [{"label": "after x", "values": [50, 25.04]}],
                            "metrics": {"last": 37.52}})
    assert matrix == "| | x | y |\n|---|---|---|\n| after x | 50.0 | 25.0 |\n\nLast 37.5.\n"


def test_the_readme_is_a_front_page():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 200, "the README is the front page: move the manual into docs/"
    assert "make demo" in readme and "make test" in readme
    linked = set(re.findall(r"\]\(docs/([\w-]+\.md)", readme))
    assert {p.name for p in DOCS.glob("*.md")} <= linked, "every docs/ page is linked from the README"


def test_the_readme_experiment_is_the_quickstart_file():
    readme = (REPO / "README.md").read_text()
    block = next(b for b in re.findall(r"```yaml\n(.*?)```", readme, re.S) if b.startswith("name: quickstart"))
    shown = yaml.safe_load(block)
    real = yaml.safe_load((REPO / "experiments" / "quickstart.yaml").read_text())

    def differences(a, b, path=""):
        if isinstance(a, dict):
            return [d for k, v in a.items() for d in differences(v, b.get(k) if isinstance(b, dict) else None, f"{path}.{k}")]
        return [] if a == b else [f"{path.lstrip('.')}: README {a!r}, quickstart.yaml {b!r}"]

    assert not differences(shown, real)


def test_a_study_is_imported_and_rendered_by_its_own_tables(tmp_path):
    from medcl.study.statistics import analyse
    from medcl.study.config import Claim

    render = _render_tables()
    runs = [{"method": m, "seed": s, "order": "default", "complete": True,
             "metrics": {"transfer": v + s, "avg": v + s, "last": v + s, "bwt": 0.0}}
            for m, v in (("finetune", 40.0), ("zscl", 45.0)) for s in range(3)]
    claim = Claim(claim="zscl keeps more", left="zscl", right="finetune", metric="transfer")
    payload = {"study": "t", "baseline": "finetune", "methods": [{"label": "finetune"}, {"label": "zscl"}],
               "tuning": {}, "changed": {}, "runs": runs, "statistics": analyse(runs, ["finetune", "zscl"], "finetune",
                                                                             0.95, [claim]),
               "costs": {m: {"runs": 3, "cpu_hours": 0.0, "gpu_hours": 0.0} for m in ("finetune", "zscl")}}
    (tmp_path / "study.json").write_text(json.dumps(payload))
    (tmp_path / "found.json").write_text(json.dumps({"kind": "rows", "measured": "Measured by hand.", "rows": []}))
    target = render.import_study(tmp_path / "study.json", "found", tmp_path)
    result = json.loads(target.read_text())
    assert result["kind"] == "study" and result["measured"] == "Measured by hand." and "runs" not in result["study"]
    text = render.render(result)
    assert text.startswith("Measured by hand.") and "| zscl keeps more | zscl - finetune | Transfer | +5.0" in text
    assert "| holds |" in text and "**Costs" in text
