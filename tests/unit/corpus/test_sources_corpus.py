"""Corpus sources to one schema (no Ray: the in-process normaliser, the same function Ray Data maps).

Real data: ROCO and MedPix counts equal the files' own. Synthetic corrupt corpora (JSONL + image
folder, Parquet, WebDataset tar) check that every bad row is skipped and counted by reason, that
duplicates keep the first row, and that --strict names the first bad row.
"""
from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from medcl.corpus.build import build_corpus
from medcl.corpus.schema import CORPUS_SCHEMA
from medcl.corpus.sources.modality import normalise_modality
from medcl.corpus.spec import CorpusError, CorpusSpecError, validate_spec
from medcl.corpus.store import CorpusStore


def png(seed: int, size: int = 12) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


# Every corrupt corpus has these rows, in this order: a is good, b has a truncated image, c an
# invalid UTF-8 caption, a again (duplicate), d an empty caption, e is good.
GOOD_IDS = ["a", "e"]
EXPECTED_SKIPS = {"undecodable_image": 1, "non_text_caption": 1, "duplicate_id": 1, "empty_caption": 1}


def rows():
    return [("a", png(0), b"chest x-ray, normal"), ("b", png(1)[:60], b"truncated image"),
            ("c", png(2), b"caption \xff\xfe not utf-8"), ("a", png(3), b"duplicate of a"),
            ("d", png(4), b"   "), ("e", png(5), b"CT of the abdomen")]


def make_jsonl(tmp_path):
    (tmp_path / "img").mkdir()
    lines = []
    for i, (key, image, caption) in enumerate(rows()):
        (tmp_path / "img" / f"{i}.png").write_bytes(image)
        head = json.dumps({"key": key, "file": f"{i}.png"})[:-1].encode()
        lines.append(head + b', "text": "' + caption + b'"}')
    (tmp_path / "pmc.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    return {"type": "jsonl", "path": str(tmp_path / "pmc.jsonl"), "images": str(tmp_path / "img"),
            "id_field": "key", "image_field": "file", "caption_field": "text"}


def make_parquet(tmp_path):
    keys, images, captions = zip(*rows())
    table = pa.table({"uid": list(keys), "jpg": pa.array(images, pa.binary()), "txt": pa.array(captions, pa.binary())})
    pq.write_table(table, tmp_path / "pairs.parquet")
    return {"type": "parquet", "path": str(tmp_path / "pairs.parquet"), "id_column": "uid", "image_column": "jpg",
            "caption_column": "txt"}


def make_tar(tmp_path):
    with tarfile.open(tmp_path / "shard-000.tar", "w") as tar:
        for i, (key, image, caption) in enumerate(rows()):
            members = [(f"{key}.png", image)]
            members.append((f"{key}.txt", caption) if i % 2 else (f"{key}.json", b'{"caption": "' + caption + b'"}'))
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return {"type": "webdataset", "path": str(tmp_path / "*.tar")}


@pytest.mark.parametrize("make", [make_jsonl, make_parquet, make_tar], ids=["jsonl", "parquet", "webdataset"])
def test_corrupt_rows_are_skipped_and_counted(tmp_path, make):
    source = make(tmp_path)
    report = build_corpus(validate_spec({"sources": [{**source, "name": "pmc"}]}), tmp_path / "out", use_ray=False)
    entry = report["sources"]["pmc"]
    assert entry["read"] == 6 and entry["written"] == 2
    assert entry["skipped"] == EXPECTED_SKIPS
    assert entry["examples"]["undecodable_image"] == ["pmc:b"] and entry["examples"]["duplicate_id"] == ["pmc:a"]
    store = CorpusStore(tmp_path / "out")
    assert store.ids() == [f"pmc:{k}" for k in GOOD_IDS]
    first = store.fetch(["pmc:a"])[0]
    assert first["caption"] == "chest x-ray, normal" and first["image"] == png(0)  # the first "a" is kept, bytes as-is
    assert first["modality"] == "unknown" and first["source"] == "pmc"
    assert pq.read_schema(store.paths[0]).remove_metadata() == CORPUS_SCHEMA


@pytest.mark.parametrize("make", [make_jsonl, make_parquet, make_tar], ids=["jsonl", "parquet", "webdataset"])
def test_strict_names_the_first_bad_row(tmp_path, make):
    spec = validate_spec({"sources": [{**make(tmp_path), "name": "pmc"}]})
    with pytest.raises(CorpusError, match=r"'pmc'.*'pmc:b'.*undecodable_image"):
        build_corpus(spec, tmp_path / "out", strict=True, use_ray=False)


def test_limit_prefix_and_malformed_lines(tmp_path):
    source = make_jsonl(tmp_path)
    with open(source["path"], "ab") as handle:
        handle.write(b"{not json\n")
    spec = validate_spec({"sources": [{**source, "prefix": "pmcoa", "modality": "mixed"}]})
    report = build_corpus(spec, tmp_path / "all", use_ray=False)["sources"]["jsonl"]
    assert report["read"] == 7 and report["skipped"]["malformed_record"] == 1
    assert report["examples"]["malformed_record"] == ["pmcoa:line-7"]
    limited = validate_spec({"sources": [{**source, "limit": 1}]})
    assert build_corpus(limited, tmp_path / "one", use_ray=False)["rows"] == 1
    assert CorpusStore(tmp_path / "all").fetch(["pmcoa:e"])[0]["modality"] == "mixed"


def test_max_side_reencodes_large_images_in_their_format(tmp_path):
    source = make_parquet(tmp_path)
    report = build_corpus(validate_spec({"max_side": 8, "sources": [source]}), tmp_path / "out", use_ray=False)
    assert report["rows"] == 2
    image = Image.open(io.BytesIO(CorpusStore(tmp_path / "out").fetch(["parquet:a"])[0]["image"]))
    assert image.format == "PNG" and max(image.size) == 8


def test_spec_errors_name_the_field(tmp_path):
    with pytest.raises(CorpusSpecError, match=r"sources\.0\.type.*'csv'.*allowed: roco, medpix"):
        validate_spec({"sources": [{"type": "csv", "path": "x"}]})
    with pytest.raises(CorpusSpecError, match=r"sources\.0\.roco\.lmit: unknown field \(did you mean 'limit'"):
        validate_spec({"sources": [{"type": "roco", "path": "x", "lmit": 3}]})
    with pytest.raises(CorpusSpecError, match="id prefix"):
        validate_spec({"sources": [{"type": "synthmed"}, {"type": "synthmed"}]})
    spec = validate_spec({"data_root": str(tmp_path), "sources": [{"type": "medpix", "path": "nowhere"}]})
    with pytest.raises(FileNotFoundError, match=r"'medpix'.*nowhere.*Descriptions\.json"):
        build_corpus(spec, tmp_path / "out", use_ray=False)


@pytest.mark.parametrize("text,expected", [
    ("MR - T1W w/Gadolinium", "mr"), ("CT w/contrast (IV)", "ct"), ("CTA - CT Angiography", "ct"),
    ("MRA - MR Angiography/Venography", "mr"), ("Chest X-ray, PA view", "xray"), ("Drawing", "illustration"),
    ("Transabdominal ultrasonography", "ultrasound"), ("H&E stain, x40", "pathology"), ("a dog", "other"),
])
def test_modality_normalisation(text, expected):
    assert normalise_modality(text, "other") == expected


def test_synthmed_source_is_deterministic(tmp_path):
    spec = validate_spec({"sources": [{"type": "synthmed", "per_class": 2, "domains": ["xray", "fundus"]}]})
    first = build_corpus(spec, tmp_path / "one", use_ray=False)
    build_corpus(spec, tmp_path / "two", use_ray=False)
    assert first["rows"] == 2 * 5 * 2
    one, two = CorpusStore(tmp_path / "one").read_all(), CorpusStore(tmp_path / "two").read_all()
    assert one.equals(two) and one["id"][0].as_py() == "synthmed:xray/train/0"
    assert set(one["modality"].to_pylist()) == {"xray", "fundus"}


def _caption_lines(root) -> int:
    return sum(len(p.read_bytes().splitlines()) for p in root.glob("*/*/captions.txt"))


def test_roco_counts_equal_the_caption_files(shared_data, tmp_path):
    root = shared_data / "roco" / "data"
    report = build_corpus(validate_spec({"sources": [{"type": "roco", "path": str(root)}]}), tmp_path / "roco",
                          use_ray=False)
    assert report["sources"]["roco"]["read"] == _caption_lines(root) == report["rows"]
    store = CorpusStore(tmp_path / "roco")
    first = (root / "test" / "radiology" / "captions.txt").read_text().splitlines()[0].split("\t")
    row = store.fetch([f"roco:{first[0]}"])[0]
    assert row["caption"] == first[1].strip() and row["image"] is None
    assert row["license"].startswith("CC") and row["modality"] == "mr"  # "Axial MRI (coronal view)."


def test_medpix_counts_equal_descriptions(shared_data, tmp_path):
    root = shared_data / "medpix" / "MedPix-2-0"
    records = json.loads((root / "Descriptions.json").read_text())
    report = build_corpus(validate_spec({"sources": [{"type": "medpix", "path": str(root)}]}), tmp_path / "mp",
                          use_ray=False)
    assert report["sources"]["medpix"]["read"] == len(records) == report["rows"]
    store = CorpusStore(tmp_path / "mp")
    record = records[0]
    row = store.fetch([f"medpix:{record['image']}"])[0]
    assert row["image"] == (root / "images" / f"{record['image']}.png").read_bytes()
    assert row["caption"] == record["Description"]["Caption"].strip()
    modalities = store.read_all(["modality"])["modality"].to_pylist()
    assert modalities.count("ct") + modalities.count("mr") >= len(records) - 5
