"""MedPix 2.0: ``Descriptions.json`` (one record per image) + ``images/<image>.png``.

Caption: ``Description.Caption``; modality: ``Description.Modality`` normalised (``"CT w/contrast
(IV)"`` -> ``ct``, ``"MRA - ..."`` -> ``mr``), else ``Type``; MedPix states no license, so the
spec's ``license`` (default ``unknown``) is used. The image file is read and validated on Ray Data.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from medcl.corpus.sources.record import image_under, raw_record
from medcl.corpus.sources.modality import normalise_modality


def units(spec, corpus) -> list[dict]:
    """One unit: Descriptions.json (its images are read later, in the normalise stage)."""
    descriptions = corpus.resolve(spec.path) / "Descriptions.json"
    if not descriptions.is_file():
        raise FileNotFoundError(f"source {spec.name!r} (medpix): {descriptions} not found "
                                "(expected the MedPix-2-0 folder with Descriptions.json and images/)")
    return [{"path": str(descriptions), "bytes": descriptions.stat().st_size}]


def read_unit(spec, corpus, unit: dict) -> Iterator[dict]:
    descriptions = Path(unit["path"])
    root = descriptions.parent
    records = json.loads(descriptions.read_text(encoding="utf-8"))
    for number, record in enumerate(records):
        ref = f"{descriptions}[{number}]"
        if not isinstance(record, dict) or not record.get("image"):
            yield raw_record(spec, f"record-{number}", ref=ref, reason="malformed_record")
            continue
        description = record.get("Description") or {}
        kind = normalise_modality(record.get("Type"), spec.modality)
        modality = normalise_modality(description.get("Modality"), kind)
        name = str(record["image"])
        path, bad = image_under(root / "images", name if name.lower().endswith(".png") else f"{name}.png")
        yield raw_record(spec, name, ref=ref, caption=description.get("Caption"), image_path=path, reason=bad,
                         modality=modality)
