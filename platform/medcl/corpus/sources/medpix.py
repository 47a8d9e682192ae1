"""MedPix 2.0: ``Descriptions.json`` (one record per image) + ``images/<image>.png``.

Caption: ``Description.Caption``; with ``caption_metadata: true`` it is prefixed with the record's
metadata (:func:`metadata_caption`: ``"CT, axial, head: <caption>"``, from ``Type``,
``Description.Plane`` and ``Location Category``), so that a CLIP pretrained on the corpus sees the
modality, plane and body region in words on every pair, not only when the free-text caption names
them (the class prompts of a zero-shot task can then be worded the same way). Modality:
``Description.Modality`` normalised (``"CT w/contrast (IV)"`` -> ``ct``, ``"MRA - ..."`` -> ``mr``),
else ``Type``; MedPix states no license, so the
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
        caption = description.get("Caption")
        if spec.caption_metadata and isinstance(caption, str):
            caption = metadata_caption(record, caption)
        yield raw_record(spec, name, ref=ref, caption=caption, image_path=path, reason=bad, modality=modality)


def metadata_caption(record: dict, caption: str) -> str:
    """``"<Type>, <plane>, <location category>: <caption>"``, e.g. ``"CT, axial, head: Large left
    frontal mass."``: ``Type`` as written (``CT``, ``MR``), ``Description.Plane`` and ``Location
    Category`` lower-cased; a missing or blank field is left out (no field: the caption alone). The
    metadata come first so that a short text context (32 tokens in ``medcl-tiny-vit-p4``) keeps them
    when it truncates a long caption."""
    description = record.get("Description") or {}
    fields = [record.get("Type"), description.get("Plane"), record.get("Location Category")]
    words = [str(f).strip() if i == 0 else str(f).strip().lower() for i, f in enumerate(fields)
             if isinstance(f, str) and f.strip()]
    caption = caption.strip()
    return f"{', '.join(words)}: {caption}" if words else caption
