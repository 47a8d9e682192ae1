"""Raw records (sources.RAW_SCHEMA) to corpus rows: read and validate images, decode captions.

``normalise_table(raw, max_side)`` is a pure function of one Arrow batch (it runs inside Ray Data
``map_batches`` tasks, or in process for small builds) and returns NORMALISED_SCHEMA: the
CORPUS_SCHEMA columns plus ``reason`` ("" for a good row) and ``ref``. Reasons, checked in order:

    malformed_record   the reader could not parse the record (set by the reader)
    non_text_caption   caption bytes that are not UTF-8, or text that is mostly control characters
    empty_caption      nothing left after stripping whitespace
    missing_image      an image path that does not exist (or an image was expected and absent)
    undecodable_image  bytes that PIL cannot fully decode (truncated, not an image)

Images are kept as their original encoded bytes; with ``max_side`` an image whose longer side
exceeds it is downscaled (PIL thumbnail, Lanczos) and re-encoded in its own format (PNG stays PNG,
JPEG at quality 90; other formats become PNG).
"""
from __future__ import annotations

import io
import os

import pyarrow as pa

from medcl.corpus.schema import CORPUS_SCHEMA
from medcl.corpus.sources.modality import GUESS, caption_modality

NORMALISED_SCHEMA = CORPUS_SCHEMA.append(pa.field("reason", pa.string())).append(pa.field("ref", pa.string()))
REASONS = ("malformed_record", "non_text_caption", "empty_caption", "missing_image", "undecodable_image",
           "duplicate_id")
_ALLOWED_CONTROL = {"\t", "\n", "\r"}


def normalise_table(raw: pa.Table, max_side: int | None = None) -> pa.Table:
    rows = [normalise_row(r, max_side) for r in raw.to_pylist()]
    return pa.Table.from_pylist(rows, schema=NORMALISED_SCHEMA)


def normalise_row(raw: dict, max_side: int | None = None) -> dict:
    """One raw record to one normalised row (``reason`` empty when it is good)."""
    reason = raw.get("reason") or ""
    caption = "" if reason else _caption(raw)
    if not reason and caption is None:
        reason = "non_text_caption"
    elif not reason and not caption:
        reason = "empty_caption"
    image = raw.get("image")
    if not reason and raw.get("image_path"):
        image, reason = _read(raw["image_path"])
    if not reason and image is not None:
        image, reason = _validated(image, max_side)
    modality = raw["modality"] or "unknown"
    if modality.startswith(GUESS):  # the reader asked for a guess from the caption's keywords
        modality = caption_modality(caption, modality[len(GUESS):] or "unknown")
    return {"id": raw["id"], "image": image if not reason else None, "caption": caption or "",
            "source": raw["source"], "modality": modality, "license": raw["license"] or "unknown",
            "reason": reason, "ref": raw.get("ref") or ""}


def _caption(raw: dict) -> str | None:
    """The stripped caption text, or None when it is not text."""
    text = raw.get("caption")
    if text is None and raw.get("caption_bytes") is not None:
        try:
            text = raw["caption_bytes"].decode("utf-8")
        except UnicodeDecodeError:
            return None
    text = (text or "").strip()
    if text and sum(1 for c in text if c < " " and c not in _ALLOWED_CONTROL) > 0.1 * len(text):
        return None
    return text.replace("\x00", "")


def _read(path: str) -> tuple[bytes | None, str]:
    if not os.path.isfile(path):
        return None, "missing_image"
    with open(path, "rb") as handle:
        return handle.read(), ""


def _validated(data: bytes, max_side: int | None) -> tuple[bytes | None, str]:
    """``(bytes, "")`` when PIL decodes the whole image (re-encoded if over ``max_side``)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            if max_side and max(image.size) > max_side:
                return _reencoded(image, max_side), ""
    except Exception:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError, ...
        return None, "undecodable_image"
    return data, ""


def _reencoded(image, max_side: int) -> bytes:
    fmt = image.format if image.format in ("PNG", "JPEG") else "PNG"
    small = image.copy()
    small.thumbnail((max_side, max_side), resample=3)  # Image.LANCZOS
    if fmt == "JPEG" and small.mode not in ("RGB", "L"):
        small = small.convert("RGB")
    buffer = io.BytesIO()
    small.save(buffer, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()
