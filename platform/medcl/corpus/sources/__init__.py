"""Source readers: each lists a source's *units* (files, tar shards) and reads one unit's records
as *raw records* (RAW_SCHEMA).

A raw record carries what the reader found without judging it: the prefixed ``id``, a ``ref``
(file and line or member, for error messages), the image as bytes or as a file path (read and
validated later, on Ray Data), the caption as text or as raw bytes (undecoded, so invalid UTF-8 is
detected by the normaliser), and ``reason`` pre-set for records the reader could not parse at all
(``malformed_record``). :mod:`medcl.corpus.normalise` turns raw records into CORPUS_SCHEMA rows.

``source_units(spec, corpus)`` lists a source cheaply (file names and sizes, no records; a
missing source raises FileNotFoundError naming it); ``read_unit(spec, corpus, unit)`` yields the raw
records of one unit in file order, and runs on the driver (``--local``) or inside a Ray Data task
(build_ray.py). ``iter_source(spec, corpus)`` chains the units and yields at most ``spec.limit``
raw records of one source.
"""
from __future__ import annotations

from itertools import chain, islice
from typing import Iterator

from medcl.corpus.sources.record import RAW_SCHEMA, raw_record  # noqa: F401  (the package's API)


def _modules() -> dict:
    from medcl.corpus.sources import files, medpix, roco, synthmed  # on use: synthmed loads the renderer

    return {"roco": roco, "medpix": medpix, "jsonl": files.JSONL, "parquet": files.PARQUET,
            "webdataset": files.WEBDATASET, "synthmed": synthmed}


def source_units(spec, corpus) -> list[dict]:
    """The units of source ``spec``: JSON-able dicts with at least ``path`` and ``bytes`` (file size)."""
    return _modules()[spec.type].units(spec, corpus)


def read_unit(spec, corpus, unit: dict) -> Iterator[dict]:
    """Raw records of one unit of ``spec`` (as listed by :func:`source_units`), in file order."""
    return _modules()[spec.type].read_unit(spec, corpus, unit)


def iter_source(spec, corpus) -> Iterator[dict]:
    """Raw records of source ``spec`` (a spec.py source model) under ``corpus`` (the CorpusSpec)."""
    records = chain.from_iterable(read_unit(spec, corpus, u) for u in source_units(spec, corpus))
    return islice(records, spec.limit) if spec.limit else records
