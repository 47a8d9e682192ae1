"""The CPU half of ``medcl corpus embed``: decode and tokenise a corpus batch for the model actors.

:func:`prepare_batch` turns a corpus batch (``id, image, caption, modality, source``) into a
*prepared* batch, a pyarrow table with

    id, caption, modality, source   passed through
    has_image   bool                the row has image bytes
    pixels      binary              the image decoded exactly as training decodes it (``images.decode``
                                    to ``image_size`` with a centre crop, 3 channels): the raw
                                    ``uint8 (image_size, image_size, 3)`` bytes, empty when no image
    tokens      int64[L]            the model's tokenizer applied to the caption

so a model actor only casts the uint8 pixels to float and normalises them on its device
(``engine.preprocess.to_model_input``: /255, the model's mean/std) and runs the encoders: it never
decodes or tokenises. :func:`pixels_of` and :func:`tokens_of` read the two columns back as arrays
without copying the pixel bytes. An undecodable image raises ``UndecodableImage`` (a built corpus
holds only images that decoded when it was built).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

INPUT_COLUMNS = ["id", "image", "caption", "modality", "source"]  # the corpus columns embedding reads

PASSED = ["id", "caption", "modality", "source"]


def decode_images(blobs: list[bytes], image_size: int) -> np.ndarray:
    """``uint8 (N, image_size, image_size, 3)``: each encoded image decoded and centre-cropped as in training."""
    from medcl.data.images import decode, stack_images

    return stack_images([decode(b, image_size=image_size) for b in blobs], channels=3)


def prepare_batch(batch: pa.Table, *, image_size: int, tokenizer) -> pa.Table:
    """The prepared batch (module docstring) of a corpus batch; rows keep their order."""
    images = batch["image"].to_pylist()
    has_image = np.array([b is not None for b in images], dtype=bool)
    data = b""
    if has_image.any():
        data = decode_images([b for b in images if b is not None], image_size).tobytes()
    offsets = np.concatenate([[0], np.cumsum(has_image * (image_size * image_size * 3))]).astype(np.int32)
    pixels = pa.BinaryArray.from_buffers(pa.binary(), len(images), [None, pa.py_buffer(offsets), pa.py_buffer(data)])
    tokens = np.ascontiguousarray(tokenizer(batch["caption"].to_pylist()).numpy(), dtype=np.int64)
    token_col = pa.FixedSizeListArray.from_arrays(pa.array(tokens.reshape(-1)), tokens.shape[1])
    columns = [batch[c].combine_chunks() for c in PASSED]
    return pa.Table.from_arrays([*columns, pa.array(has_image), pixels, token_col],
                                names=[*PASSED, "has_image", "pixels", "tokens"])


def pixels_of(batch: pa.Table, image_size: int) -> np.ndarray:
    """``uint8 (rows with an image, S, S, 3)`` from the ``pixels`` column, in row order: a read-only
    view of the Arrow buffer (rows without an image hold no bytes)."""
    array = batch["pixels"].combine_chunks()
    if isinstance(array, pa.ChunkedArray):  # an empty column
        array = pa.array([], pa.binary())
    offsets = np.frombuffer(array.buffers()[1], np.int32)[array.offset:array.offset + len(array) + 1]
    data = array.buffers()[2]
    values = np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8)
    return values[offsets[0]:offsets[-1]].reshape(-1, image_size, image_size, 3)


def tokens_of(batch: pa.Table) -> np.ndarray:
    """``int64 (rows, L)`` from the ``tokens`` column."""
    array = batch["tokens"].combine_chunks()
    return np.array(array.flatten().to_numpy(zero_copy_only=False), dtype=np.int64).reshape(len(array), -1)
