"""Raw records (sources.RAW_SCHEMA) to corpus rows: read and validate images, decode captions.

``normalise_table(raw, max_side)`` is a pure function of one Arrow batch (it runs inside Ray Data
``map_batches`` tasks, or in process for small builds) and returns NORMALISED_SCHEMA: the
CORPUS_SCHEMA columns plus ``reason`` ("" for a good row) and ``ref``. Reasons, checked in order:

    malformed_record   the reader could not parse the record (set by the reader)
    non_text_caption   caption bytes that are not UTF-8, or text that is mostly control characters
    empty_caption      nothing left after stripping whitespace
    outside_root       an image path or tar member name that leads out of its root (set by the reader)
    link_member        a tar member that is a symbolic or hard link (set by the reader)
    missing_image      an image path that does not exist (or an image was expected and absent)
    too_many_bytes     an image file or tar member over the bytes budget (never read whole)
    too_many_pixels    a header announcing more pixels than the pixel budget (refused before decoding)
    undecodable_image  bytes that PIL cannot fully decode (truncated, not an image)

The budgets are :data:`medcl.data.images.MAX_IMAGE_PIXELS` / ``MAX_IMAGE_BYTES`` (environment
``MEDCL_MAX_IMAGE_PIXELS``, ``MEDCL_MAX_IMAGE_BYTES``); every image goes through
:func:`medcl.data.images.open_image`.

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
REASONS = ("malformed_record", "outside_root", "link_member", "non_text_caption", "empty_caption", "missing_image",
           "too_many_bytes", "too_many_pixels", "undecodable_image", "duplicate_id")
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
    from medcl.data.images import MAX_IMAGE_BYTES

    if not os.path.isfile(path):
        return None, "missing_image"
    with open(path, "rb") as handle:
        if os.fstat(handle.fileno()).st_size > MAX_IMAGE_BYTES:
            return None, "too_many_bytes"
        data = handle.read(MAX_IMAGE_BYTES + 1)
    return (None, "too_many_bytes") if len(data) > MAX_IMAGE_BYTES else (data, "")


def _validated(data: bytes, max_side: int | None) -> tuple[bytes | None, str]:
    """``(bytes, "")`` when the whole image decodes within the budgets (re-encoded if over
    ``max_side``), else ``(None, reason)``."""
    from medcl.data.images import ImageRefused, open_image

    try:
        with open_image(data) as image:
            if max_side and max(image.size) > max_side:
                return _reencoded(image, max_side), ""
    except ImageRefused as exc:
        return None, exc.reason
    except Exception:  # PIL raises OSError, SyntaxError, ValueError, ... while re-encoding
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
