"""ROCO (upstream layout): ``<data>/{train,validation,test}/{radiology,non-radiology}/captions.txt``.

``captions.txt`` lines are ``ROCO_ID<TAB>caption``; ``licences.txt`` is CSV ``ROCO_ID,PMC_ID,CC``.
Upstream ships download links, not images, so ``image`` is null unless ``with_images`` is set (then
``<split>/<category>/images/<PMC_ID>`` as the upstream downloader saves it). Modality: caption
keywords (guessed by the normaliser, on Ray Data) (ct, mr, xray, ...), else ``radiology`` / the spec's default for non-radiology.
A split/category folder without captions.txt (the shared sample lacks train/radiology) is skipped.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterator

from medcl.corpus.sources.record import image_under, raw_record
from medcl.corpus.sources.modality import GUESS


def caption_files(root: Path, splits, categories) -> list[Path]:
    return [root / s / c / "captions.txt" for s in splits for c in categories
            if (root / s / c / "captions.txt").is_file()]


def units(spec, corpus) -> list[dict]:
    """One unit per captions.txt (its folder's licences.txt is read with it)."""
    root = corpus.resolve(spec.path)
    files = caption_files(root, spec.splits, spec.categories)
    if not files:
        raise FileNotFoundError(f"source {spec.name!r} (roco): no <split>/<category>/captions.txt under {root}")
    return [{"path": str(p), "bytes": p.stat().st_size} for p in files]


def read_unit(spec, corpus, unit: dict) -> Iterator[dict]:
    for path in [Path(unit["path"])]:
        folder = path.parent
        licences = _licences(folder / "licences.txt")
        fallback = "radiology" if folder.name == "radiology" else "other"
        with open(path, "rb") as handle:
            for number, line in enumerate(handle, 1):
                raw_id, _, caption = line.rstrip(b"\r\n").partition(b"\t")
                roco_id = raw_id.decode("ascii", "replace").strip()
                text = _text(caption)
                licence = licences.get(roco_id, (None, None))
                image_path, bad = (image_under(folder / "images", licence[1]) if spec.with_images and licence[1]
                                   else (None, ""))
                yield raw_record(spec, roco_id, ref=f"{path}:{number}", caption=text, image_path=image_path,
                                 modality=GUESS + fallback, license=licence[0],
                                 reason=bad or ("missing_image" if spec.with_images and not image_path else ""))


def _text(data: bytes) -> str | bytes:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data


def _licences(path: Path) -> dict[str, tuple[str, str]]:
    """ROCO_ID -> (licence, PMC image file name)."""
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        rows = csv.reader(handle)
        next(rows, None)
        return {r[0].strip(): (r[2].strip() or None, r[1].strip()) for r in rows if len(r) >= 3}
