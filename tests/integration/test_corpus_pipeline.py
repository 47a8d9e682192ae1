"""``medcl corpus build`` and ``medcl corpus embed`` end to end on Ray Data (one Ray session).

A small spec (synthmed with a limit + a JSONL source with one truncated image) is normalised on
Ray Data; the corpus is embedded on a one-actor pool and must equal the in-process embedding.
"""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
import yaml

from medcl.publish import resolve
from medcl.cli import main
from medcl.corpus import shards
from medcl.corpus.embed import ModelInfo, embed_corpus
from medcl.corpus.store import CorpusStore

pytestmark = pytest.mark.ray


def _png(seed: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (20, 16), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def spec_file(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "ok.png").write_bytes(_png(0))
    (tmp_path / "img" / "bad.png").write_bytes(_png(1)[:40])
    lines = [{"id": "ok", "image": "ok.png", "caption": "ultrasound of the liver"},
             {"id": "bad", "image": "bad.png", "caption": "truncated file"},
             {"id": "none", "image": None, "caption": "caption only"}]
    (tmp_path / "pmc.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    spec = {"data_root": str(tmp_path), "shard_rows": 16, "sources": [
        {"type": "synthmed", "per_class": 1, "limit": 20},
        {"type": "jsonl", "path": "pmc.jsonl", "images": "img", "name": "pmc"}]}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_cli_build_and_embed_on_ray(ray_session, spec_file, tmp_path, capsys):
    corpus, emb = tmp_path / "corpus", tmp_path / "emb"
    assert main(["corpus", "build", str(spec_file), "--out", str(corpus)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["rows"] == 22 and summary["shards"] == 2
    assert summary["sources"]["pmc"] == {"read": 3, "written": 2, "skipped": {"undecodable_image": 1}}
    report = json.loads((resolve(corpus) / "build_report.json").read_text())
    assert report["sources"]["synthmed"]["read"] == 20 and report["sources"]["pmc"]["examples"] == {
        "undecodable_image": ["pmc:bad"]}
    store = CorpusStore(corpus)
    assert store.fetch(["pmc:ok"])[0]["image"] == _png(0)

    assert main(["corpus", "build", str(spec_file), "--out", str(tmp_path / "strict"), "--strict", "--local"]) == 2
    assert "'pmc:bad'" in capsys.readouterr().err

    assert main(["corpus", "embed", str(corpus), "--out", str(emb), "--model", "medcl-tiny", "--actors", "1",
                 "--batch-size", "8", "--shard-rows", "15"]) == 0
    manifest = shards.read_manifest(emb)
    assert manifest.rows == 22 and [s.rows for s in manifest.shards] == [15, 7]
    on_ray = _table(emb, manifest)
    local = embed_corpus(corpus, tmp_path / "local", ModelInfo("medcl-tiny"), batch_size=8, use_ray=False)
    assert local.model == manifest.model
    in_process = _table(tmp_path / "local", shards.read_manifest(tmp_path / "local"))
    assert on_ray["id"].to_pylist() == in_process["id"].to_pylist() == store.ids()
    for column in ("text_embedding", "image_embedding"):
        np.testing.assert_allclose(shards.vectors(on_ray, column), shards.vectors(in_process, column), atol=1e-5)
    assert on_ray["has_image"].to_pylist().count(True) == 21


def test_cli_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"sources": [{"type": "roco", "path": "x", "limt": 3}]}))
    assert main(["corpus", "build", str(bad), "--out", str(tmp_path / "o"), "--local"]) == 2
    assert "sources.0.roco.limt: unknown field" in capsys.readouterr().err
    assert main(["corpus", "embed", str(tmp_path), "--out", str(tmp_path / "e"), "--model", "medcl-tiny",
                 "--local"]) == 2
    assert "no manifest.json" in capsys.readouterr().err


def _table(directory, manifest):
    import pyarrow as pa

    return pa.concat_tables([shards.read_shard(directory, s) for s in manifest.shards])
