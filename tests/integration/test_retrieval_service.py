"""Retrieval on real ROCO captions and MedPix image-caption pairs: in-process, through the Ray service,
after a shard actor is killed, from another Ray process, and from the CLI."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image

from medcl.corpus import shards as emb
from medcl.corpus.index import build_index
from medcl.corpus.retrieval import LocalRetriever, Retriever
from medcl.corpus.store import write_corpus_manifest, write_corpus_shard

ROCO_ROWS, MEDPIX_ROWS = 1200, 200
SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"  # as conftest.shared_data


def _roco(data, limit):
    lines = (data / "roco/data/test/radiology/captions.txt").read_text(encoding="utf-8").splitlines()
    pairs = [line.split("\t", 1) for line in lines if "\t" in line][:limit]
    return [{"id": f"roco:{i}", "image": None, "caption": c.strip(), "source": "roco", "modality": "radiology",
             "license": "CC BY"} for i, c in pairs]


def _medpix(data, limit):
    root = data / "medpix/MedPix-2-0"
    records = json.loads((root / "Descriptions.json").read_text())[:limit]
    return [{"id": f"medpix:{r['image']}", "image": (root / "images" / f"{r['image']}.png").read_bytes(),
             "caption": r["Description"]["Caption"].strip(), "source": "medpix", "modality": r["Type"].lower(),
             "license": "research"} for r in records]


@torch.no_grad()
def _embed(bundle, rows):
    text = bundle.model.encode_text(bundle.tokenizer([r["caption"] for r in rows]))
    mean, std = torch.tensor(bundle.mean).view(3, 1, 1), torch.tensor(bundle.std).view(3, 1, 1)
    images = []
    for r in rows:
        img = Image.open(io.BytesIO(r["image"])).convert("RGB").resize((bundle.image_size,) * 2) if r["image"] else None
        pixels = torch.zeros(3, bundle.image_size, bundle.image_size) if img is None else \
            torch.from_numpy(np.asarray(img, np.float32) / 255).permute(2, 0, 1)
        images.append((pixels - mean) / std)
    image = bundle.model.encode_image(torch.stack(images))
    norm = torch.nn.functional.normalize
    return norm(text.float(), dim=-1).numpy(), norm(image.float(), dim=-1).numpy()


@pytest.fixture(scope="module")
def real_index(tmp_path_factory):
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    from medcl.models import create_model, state_fingerprint

    rows = _roco(SHARED_DATA, ROCO_ROWS) + _medpix(SHARED_DATA, MEDPIX_ROWS)
    root = tmp_path_factory.mktemp("retrieval")
    torch.manual_seed(0)
    bundle = create_model("medcl-tiny")
    text, image = _embed(bundle, rows)
    corpus, infos = [], []
    for number, part in enumerate(np.array_split(np.arange(len(rows)), 2)):  # shard 0: ROCO only (no images)
        chunk = [rows[i] for i in part]
        corpus.append(write_corpus_shard(root / "corpus", number, pa.Table.from_pylist(chunk)))
        infos.append(emb.write_shard(root / "emb", number, emb.embeddings_table(
            ids=[r["id"] for r in chunk], captions=[r["caption"] for r in chunk],
            modalities=[r["modality"] for r in chunk], sources=[r["source"] for r in chunk],
            image_embeddings=image[part], has_image=np.array([r["image"] is not None for r in chunk]),
            text_embeddings=text[part])))
    write_corpus_manifest(root / "corpus", corpus, {"roco": ROCO_ROWS, "medpix": MEDPIX_ROWS})
    model = {"name": "medcl-tiny", "pretrained": None, "seed": 0, "fingerprint": state_fingerprint(bundle.model)}
    emb.write_manifest(root / "emb", dim=text.shape[1], model=model, corpus=str(root / "corpus"), shards=infos)
    build_index(root / "emb", root / "index", use_ray=False, log=lambda _: None)  # default factory (auto: IVF)
    picked = np.random.default_rng(0).choice(len(rows), 24, replace=False)
    medpix = np.arange(ROCO_ROWS, len(rows))[:8]
    return {"root": root, "index": root / "index", "emb": root / "emb", "rows": rows, "text": text,
            "image": image, "picked": picked, "medpix": medpix, "bundle": bundle}


def _assert_own_caption_first(result, rows, picked):
    assert [r[0] for r in result.captions] == [rows[i]["caption"] for i in picked]
    assert np.all(result.scores[:, 0] > 0.999)
    assert all(np.all(np.diff(row) <= 0) for row in result.scores)


def _assert_own_image_found(result, rows, picked):
    """Its own image at the top score (MedPix has near-identical slices of one case: ties allowed)."""
    for ids, scores, i in zip(result.ids, result.scores, picked):
        assert scores[0] > 0.999 and rows[i]["id"] in [h for h, s in zip(ids, scores) if s >= scores[0] - 1e-5]


def test_caption_text_finds_itself_first_in_process(real_index):
    rows, picked = real_index["rows"], real_index["picked"]
    retriever = LocalRetriever(real_index["index"], model=real_index["bundle"])
    assert isinstance(retriever, Retriever)
    result = retriever.search_text([rows[i]["caption"] for i in picked], 5)
    _assert_own_caption_first(result, rows, picked)
    assert result.scores.shape == (24, 5) and result.scores.dtype == np.float32
    # ROCO has no images: the image space holds MedPix rows only
    by_image = retriever.search(real_index["image"][real_index["medpix"]], 3, space="image")
    _assert_own_image_found(by_image, rows, real_index["medpix"])
    assert all(i.startswith("medpix:") for row in by_image.ids for i in row)
    fetched = retriever.fetch([by_image.ids[0][0], result.ids[0][0], ""])
    assert fetched[0]["image"] == rows[real_index["medpix"][0]]["image"] and fetched[2] is None


@pytest.mark.ray
def test_service_answers_like_in_process_and_survives_a_killed_shard(real_index, ray_session, monkeypatch):
    from medcl import telemetry
    from medcl.corpus.service_plan import ACTOR_OVERHEAD_BYTES
    from medcl.corpus.service import RetrievalService, ServiceError

    recorded, record = [], telemetry.record_retrieval  # the real Ray metrics, and what reached them
    monkeypatch.setattr(telemetry, "record_retrieval",
                        lambda queries, seconds, *, service: (recorded.append((queries, service)),
                                                              record(queries, seconds, service=service)))

    ray = ray_session
    rows, picked = real_index["rows"], real_index["picked"]
    queries = real_index["text"][picked]
    local = LocalRetriever(real_index["index"]).search(queries, 10)
    # the same index with its shards filled in Ray tasks (declared memory=) answers the same
    on_ray = build_index(real_index["emb"], real_index["root"] / "ray-index", use_ray=True, log=lambda _: None)
    assert on_ray.entries("text")[0]["factory"] == "IVF35,Flat"  # one quantizer for all 1400 rows (1400 // 39 lists)
    assert LocalRetriever(real_index["root"] / "ray-index").search(queries, 10).ids == local.ids
    # two shard groups asked for (by memory this small index would be one), each declaring its memory=
    service = RetrievalService.start(real_index["index"], name="test-retrieval", num_cpus=0.25, shards=2)
    try:
        assert isinstance(service, Retriever)
        assert service.layout["groups"] == [[0], [1]]
        assert all(need > ACTOR_OVERHEAD_BYTES for need in service.layout["memory"])
        with pytest.raises(ServiceError, match="already running"):
            RetrievalService.start(real_index["index"], name="test-retrieval")
        by_text = service.search_text([rows[i]["caption"] for i in picked], 10)  # embedded by the service
        _assert_own_caption_first(by_text, rows, picked)
        assert by_text.ids == local.ids
        before = service.info()
        victim = service.shard_actor(1)  # holds the MedPix rows
        ray.kill(victim, no_restart=False)
        pending = [service.submit(queries, 10) for _ in range(3)]  # sent while the actor restarts
        for answer in pending:
            result = answer.result()
            assert result.ids == local.ids and result.captions == local.captions
            np.testing.assert_allclose(result.scores, local.scores, rtol=1e-6)
        assert recorded.count((len(picked), "test-retrieval")) >= 3, recorded
        after = service.info()
        assert after[1][0]["pid"] != before[1][0]["pid"] and after[0][0]["pid"] == before[0][0]["pid"]
        image_query = real_index["image"][real_index["medpix"]]
        _assert_own_image_found(service.search(image_query, 3, space="image"), rows, real_index["medpix"])

        @ray.remote(num_cpus=0.25)
        def elsewhere(q):  # another process of the cluster finds the service by name
            from medcl.corpus.service import RetrievalService as Client

            return Client.connect("test-retrieval").search(q, 10).ids
        assert ray.get(elsewhere.remote(queries)) == local.ids
        assert service.fetch([rows[picked[0]]["id"]])[0]["caption"] == rows[picked[0]]["caption"]
    finally:
        service.stop()
    with pytest.raises(ServiceError, match="no retrieval service named 'test-retrieval'"):
        RetrievalService.connect("test-retrieval")


def test_cli_builds_and_queries_an_index(real_index, tmp_path, capsys):
    from medcl.cli import main

    assert main(["index", "build", str(real_index["emb"]), "--out", str(tmp_path / "hnsw"), "--factory", "hnsw",
                 "--space", "text"]) == 0
    assert "2 shard(s)" in capsys.readouterr().out
    caption = real_index["rows"][real_index["picked"][0]]["caption"]
    assert main(["index", "query", str(tmp_path / "hnsw"), caption, "-k", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and lines[1].split()[0] == "1" and caption[:60] in lines[1]
    from medcl.publish import resolve

    (resolve(tmp_path / "hnsw") / "text-00000.faiss").write_bytes(b"broken")  # the published version's file
    assert main(["index", "query", str(tmp_path / "hnsw"), caption]) == 2
    assert "text-00000.faiss" in capsys.readouterr().err
