"""The Ray Data corpus build (build_ray.py) against the in-process one, on the corrupt corpora of
test_sources_corpus.py: the same rows, skip counts, examples, kept duplicates and ``limit`` when the
de-duplicating shuffle has several hash partitions and shards are written by the workers; --strict
on Ray names the first bad row in source order and leaves no shard behind (the CLI's strict run,
test_corpus_pipeline.py, is on Ray too)."""
from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from test_sources_corpus import make_jsonl, make_parquet, make_tar

from medcl.corpus.build import build_corpus
from medcl.corpus.build_ray import ordinal, partitions_for, plan_units
from medcl.corpus.schema import CORPUS_SCHEMA
from medcl.corpus.spec import CorpusError, validate_spec
from medcl.corpus.store import CorpusStore

pytestmark = pytest.mark.ray


def _spec(tmp_path, **extra):
    sources = []
    for name, make in (("pmc", make_jsonl), ("pq", make_parquet), ("wds", make_tar), ("cut", make_jsonl)):
        (tmp_path / name).mkdir()
        sources.append({**make(tmp_path / name), "name": name})
    sources[-1]["limit"] = 2  # the first two records in file order: a (kept) and b (undecodable)
    return validate_spec({"sources": sources, **extra})


def _rows(directory):
    return sorted(CorpusStore(directory).read_all().to_pylist(), key=lambda r: r["id"])


def test_ray_build_equals_local_build(ray_session, tmp_path):
    spec = _spec(tmp_path, partitions=2, shard_rows=3)
    on_ray = build_corpus(spec, tmp_path / "ray", use_ray=True)
    local = build_corpus(spec, tmp_path / "local", use_ray=False)
    assert on_ray["sources"] == local["sources"]
    assert on_ray["sources"]["wds"]["examples"]["duplicate_id"] == ["wds:a"]
    assert on_ray["rows"] == local["rows"] == 7
    assert on_ray["sources"]["cut"]["read"] == 2 and on_ray["sources"]["cut"]["skipped"] == {"undecodable_image": 1}
    assert _rows(tmp_path / "ray") == _rows(tmp_path / "local")  # the first "a" of each source is kept
    store = CorpusStore(tmp_path / "ray")  # sha256 of every worker-written shard checked against the manifest
    assert all(s.rows <= 3 for s in store.manifest.shards) and store.manifest.sources == {
        "pmc": 2, "pq": 2, "wds": 2, "cut": 1}
    assert pq.read_schema(store.paths[0]).remove_metadata() == CORPUS_SCHEMA
    assert not (tmp_path / "ray" / ".tmp").exists()


def test_ray_strict_names_the_first_bad_row_and_writes_nothing(ray_session, tmp_path):
    spec = _spec(tmp_path, partitions=2)
    with pytest.raises(CorpusError, match=r"--strict: source 'pmc', id 'pmc:b' \(.*pmc\.jsonl:2\): undecodable_image"):
        build_corpus(spec, tmp_path / "out", strict=True, use_ray=True)
    assert not list((tmp_path / "out").rglob("*.parquet")) and not (tmp_path / "out" / "manifest.json").exists()


def test_partitions_follow_listed_bytes(tmp_path):
    spec = _spec(tmp_path)
    plan = plan_units(spec)
    assert [len(units) for units in plan] == [1, 1, 1, 1] and partitions_for(spec, plan) == 1
    big = [[{"path": "x", "bytes": 10 << 30}]]
    assert partitions_for(spec, big) == 40 and partitions_for(spec.model_copy(update={"partitions": 7}), big) == 7
    assert ordinal(1, 0, 0) > ordinal(0, 5, 7) > ordinal(0, 5, 6) > ordinal(0, 4, 99)
