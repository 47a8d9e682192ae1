"""The built-in synthmed captioned pairs as a corpus source (offline; images encoded as PNG).

Uses :func:`medcl.data.synthmed.captioned_pairs` over the synthmed tasks built with
``train_per_class = val_per_class = test_per_class = per_class`` (the chosen ``split``), so the same
spec and seed always give the same images and captions. Ids are ``synthmed:<task>/<split>/<i>``.
"""
from __future__ import annotations

import io
from typing import Iterator

import numpy as np

from medcl.data.synthmed import captioned_pairs


def png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    array = image[..., 0] if image.shape[-1] == 1 else image
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG")
    return buffer.getvalue()


def units(spec, corpus) -> list[dict]:
    """One unit (generated, no file); ``bytes`` is a rough size for partition planning."""
    return [{"path": "<synthmed>", "bytes": 1000 * spec.per_class * 5 * max(1, len(spec.domains or [1] * 6))}]


def read_unit(spec, corpus, unit: dict) -> Iterator[dict]:
    from medcl.corpus.sources.record import raw_record
    from medcl.data import BENCHMARKS

    benchmark = BENCHMARKS.get("synthmed")()
    options = {"image_size": spec.image_size, "train_per_class": spec.per_class, "val_per_class": spec.per_class,
               "test_per_class": spec.per_class}
    if spec.domains:
        options["domains"] = spec.domains
    else:
        from medcl.data.synthmed import DOMAIN_NAMES
        options["num_tasks"] = len(DOMAIN_NAMES)
    tasks = benchmark.build(options, seed=spec.seed)
    for pair in captioned_pairs(tasks, spec.split):
        raw_id = pair["id"].removeprefix("synthmed/")
        yield raw_record(spec, raw_id, ref=pair["id"], caption=pair["caption"], image=png_bytes(pair["image"]),
                         modality=pair["modality"], license=spec.license)
