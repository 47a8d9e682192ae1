"""The raw record every source reader yields (RAW_SCHEMA), and :func:`raw_record` to make one.

Its own module so that the readers (``files``, ``medpix``, ``roco``, ``synthmed``) and the package
that dispatches to them import it without importing each other.
"""
from __future__ import annotations

import pyarrow as pa

from medcl.paths import OutsideRoot, inside_root

RAW_SCHEMA = pa.schema([
    pa.field("id", pa.string()),
    pa.field("ref", pa.string()),
    pa.field("image", pa.binary()),
    pa.field("image_path", pa.string()),
    pa.field("caption", pa.string()),
    pa.field("caption_bytes", pa.binary()),
    pa.field("source", pa.string()),
    pa.field("modality", pa.string()),
    pa.field("license", pa.string()),
    pa.field("reason", pa.string()),
])


def raw_record(spec, raw_id, *, ref: str, caption=None, image: bytes | None = None, image_path: str | None = None,
               modality: str | None = None, license: str | None = None, reason: str = "") -> dict:
    """One raw record of source ``spec``: id prefixed, caption sorted into text / bytes / not text."""
    text, data = None, None
    if isinstance(caption, (bytes, bytearray)):
        data = bytes(caption)
    elif isinstance(caption, str):
        try:
            caption.encode("utf-8")
            text = caption
        except UnicodeEncodeError:  # lone surrogates: undecodable bytes carried through surrogateescape
            data = caption.encode("utf-8", "surrogateescape") if _escapable(caption) else b"\xff"
    elif caption is not None and not reason:
        reason = "non_text_caption"
    return {"id": f"{spec.prefix}:{raw_id}", "ref": ref, "image": image, "image_path": image_path,
            "caption": text, "caption_bytes": data, "source": spec.name,
            "modality": (modality or spec.modality), "license": (license or spec.license), "reason": reason}


def _escapable(text: str) -> bool:
    try:
        text.encode("utf-8", "surrogateescape")
        return True
    except UnicodeEncodeError:
        return False


def image_under(root, name: str) -> tuple[str | None, str]:
    """``(path, "")`` when the image ``name`` read from a record resolves inside ``root``
    (:func:`medcl.paths.inside_root`: no absolute path elsewhere, no ``../`` or link leading out),
    else ``(None, "outside_root")``: the record is skipped and counted, never read."""
    try:
        return str(inside_root(root, name)), ""
    except OutsideRoot:
        return None, "outside_root"
