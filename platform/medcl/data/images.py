"""Image decoding, resizing and the per-process decode cache shared by the file-based adapters.

Contract: every function here returns ``uint8`` arrays ``(H, W, C)`` (one image) or
``(N, H, W, C)`` (a batch) with ``C`` in ``{1, 3}``, which is what :class:`medcl.data.task.Split`
stores. Unless a channel count is forced, grayscale images (including RGB files whose three
channels are equal) decode to 1 channel and colour images to 3. Images more than 8 bits deep (16-bit PNG/TIFF, float TIFF) are scaled to 0..255 by their
own minimum and maximum, since the acquisition window is unknown. Non-square images are
centre-cropped to a square (``fit="crop"``, MedMNIST's own preprocessing) or stretched
(``fit="stretch"``) before resizing.

Decoding is cached per process in :data:`DECODE_CACHE`, keyed by file path, modification time,
file size and the decode options, so building the same tasks again (a second run, a sweep, tests)
does not decode again. Cached arrays are read-only; the cache is bounded in bytes
(``MEDCL_DECODE_CACHE_MB``, default 1024).

Every decode goes through :func:`open_image`, which refuses an image **before** decoding it: a
file or byte string over the bytes budget (``MEDCL_MAX_IMAGE_BYTES``, default 256 MiB), or a header
that announces more pixels than the pixel budget (``MEDCL_MAX_IMAGE_PIXELS``, default 64,000,000;
width x height x frames read from the header by ``Image.open``, which decodes nothing). A 172 KB
all-zero PNG of 13,000 x 13,000 px would otherwise take ~170 MB decoded (and several times that
converted); PIL's own ``Image.MAX_IMAGE_PIXELS`` only raises at twice its ~89 Mpx. A refusal is
:class:`ImageRefused` (an :class:`UndecodableImage`, so callers skip and count it) whose
``reason`` is one of :data:`REFUSAL_REASONS`; messages read ``"<name>: <reason>: <detail>"`` (an
undecodable one ``"<name>: not a readable image (undecodable_image: <detail>)"``).
"""
from __future__ import annotations

import contextlib
import io
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Hashable

import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".ppm", ".pgm")
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F", "P;gray"}


MAX_IMAGE_PIXELS = int(os.environ.get("MEDCL_MAX_IMAGE_PIXELS", "64000000"))
MAX_IMAGE_BYTES = int(os.environ.get("MEDCL_MAX_IMAGE_BYTES", str(256 << 20)))
REFUSAL_REASONS = ("too_many_pixels", "too_many_bytes", "outside_root", "undecodable_image")
BUDGET_VARIABLES = ("MEDCL_MAX_IMAGE_PIXELS", "MEDCL_MAX_IMAGE_BYTES")


def budget_environment() -> dict[str, str]:
    """The budget variables (:data:`BUDGET_VARIABLES`) set in this process. They are read when this
    module is imported, so a Ray worker on another node decodes under them only when the job's
    runtime env sets them: the driver passes these on (:func:`medcl.engine.cluster.job_runtime_env`)."""
    return {name: os.environ[name] for name in BUDGET_VARIABLES if os.environ.get(name)}


class UndecodableImage(ValueError):
    """A file or byte string that is not a readable image; the message names it."""


class ImageRefused(UndecodableImage):
    """An image refused before or while decoding; ``reason`` is one of :data:`REFUSAL_REASONS`."""

    def __init__(self, name: str, reason: str, detail: str):
        text = f"not a readable image ({reason}: {detail})" if reason == "undecodable_image" else f"{reason}: {detail}"
        super().__init__(f"{name}: {text}")
        self.reason = reason


def refusal_counts(errors) -> dict[str, int]:
    """``{reason: count}`` of decode error messages (:class:`ImageRefused`'s; others count as
    ``undecodable_image``)."""
    counts: dict[str, int] = {}
    for message in errors:
        reason = next((r for r in REFUSAL_REASONS if f"{r}: " in str(message)), "undecodable_image")
        counts[reason] = counts.get(reason, 0) + 1
    return counts


@contextlib.contextmanager
def open_image(source: str | os.PathLike | bytes, *, max_pixels: int | None = None, max_bytes: int | None = None,
               load: bool = True):
    """The PIL image of a file or byte string, its size checked against the budgets (module doc)
    from the header before anything is decoded, then fully decoded (``load``). Raises
    :class:`ImageRefused` naming the file (or ``<bytes>``) and the reason."""
    from PIL import Image

    max_pixels = MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    max_bytes = MAX_IMAGE_BYTES if max_bytes is None else max_bytes
    is_bytes = isinstance(source, (bytes, bytearray, memoryview))
    name = "<bytes>" if is_bytes else os.fspath(source)
    size = len(source) if is_bytes else _file_size(name)
    if size > max_bytes:
        raise ImageRefused(name, "too_many_bytes", f"{size} bytes > budget {max_bytes} (MEDCL_MAX_IMAGE_BYTES)")
    try:
        image = Image.open(io.BytesIO(source) if is_bytes else name)
    except Image.DecompressionBombError as exc:  # PIL's own limit, met in the header
        raise ImageRefused(name, "too_many_pixels", str(exc)) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageRefused(name, "undecodable_image", f"{type(exc).__name__}: {exc}") from None
    with image:
        width, height = image.size
        pixels = width * height * max(1, int(getattr(image, "n_frames", 1) or 1))
        if pixels > max_pixels:
            raise ImageRefused(name, "too_many_pixels", f"{width} x {height} px ({pixels} px with frames) > budget "
                                                        f"{max_pixels} (MEDCL_MAX_IMAGE_PIXELS)")
        if load:
            try:
                image.load()
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
                raise ImageRefused(name, "undecodable_image", f"{type(exc).__name__}: {exc}") from None
        yield image


def check_image(source: str | os.PathLike | bytes, **budgets) -> None:
    """Raise :class:`ImageRefused` unless ``source`` decodes fully within the budgets."""
    with open_image(source, **budgets):
        pass


def _file_size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError as exc:
        raise ImageRefused(path, "undecodable_image", f"{type(exc).__name__}: {exc.strerror}") from None


class DecodeCache:
    """A thread-safe LRU mapping bounded by the total ``nbytes`` of the numpy arrays it holds."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, object] = OrderedDict()
        self._sizes: dict[Hashable, int] = {}
        self._total = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get_or_compute(self, key: Hashable, compute: Callable[[], object]) -> object:
        """The cached value for ``key``, or ``compute()`` stored (arrays made read-only)."""
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                self.hits += 1
                return self._entries[key]
            self.misses += 1
        value = compute()
        size = _freeze(value)
        with self._lock:
            if size <= self.max_bytes and key not in self._entries:
                self._entries[key] = value
                self._sizes[key] = size
                self._total += size
                while self._total > self.max_bytes:
                    old, _ = self._entries.popitem(last=False)
                    self._total -= self._sizes.pop(old)
        return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._sizes.clear()
            self._total = 0
            self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)


def _freeze(value) -> int:
    """Make every numpy array inside ``value`` read-only; return their total bytes."""
    if isinstance(value, np.ndarray):
        value.setflags(write=False)
        return value.nbytes
    if isinstance(value, dict):
        return sum(_freeze(v) for v in value.values())
    if isinstance(value, (tuple, list)):
        return sum(_freeze(v) for v in value)
    return 64


DECODE_CACHE = DecodeCache(int(os.environ.get("MEDCL_DECODE_CACHE_MB", "1024")) << 20)


def file_key(path: str | Path) -> tuple[str, int, int]:
    """``(absolute path, mtime_ns, size)``: a cache key that changes when the file does."""
    stat = os.stat(path)
    return os.path.abspath(path), stat.st_mtime_ns, stat.st_size


def decode(source: str | Path | bytes, *, image_size: int, channels: int | None = None,
           fit: str = "crop") -> np.ndarray:
    """Decode one image file or byte string to ``uint8 (image_size, image_size, C)``.

    ``channels`` 1 or 3 converts; ``None`` keeps grayscale images at 1 channel and everything
    else at 3. Raises :class:`UndecodableImage` naming the file (or ``<bytes>``).
    """
    name = "<bytes>" if isinstance(source, (bytes, bytearray, memoryview)) else str(source)
    with open_image(source) as image:
        try:
            array = _to_uint8(image, channels)
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageRefused(name, "undecodable_image", f"{type(exc).__name__}: {exc}") from None
    return resize(array, image_size, fit=fit)


def decode_file_cached(path: str | Path, *, image_size: int, channels: int | None = None,
                       fit: str = "crop") -> np.ndarray:
    """:func:`decode` of a file through :data:`DECODE_CACHE` (key: file path, mtime, size, options)."""
    key = ("image", *file_key(path), image_size, channels, fit)
    return DECODE_CACHE.get_or_compute(key, lambda: decode(path, image_size=image_size, channels=channels, fit=fit))


def _to_uint8(image, channels: int | None) -> np.ndarray:
    gray = image.mode in _GRAY_MODES or (image.mode == "P" and _palette_is_gray(image))
    want = channels or (1 if gray else 3)
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        array = _stretch_to_uint8(np.asarray(image, dtype=np.float64))[..., None]
        return array if want == 1 else np.repeat(array, 3, axis=-1)
    converted = image.convert("L" if want == 1 else "RGB")
    array = np.asarray(converted, dtype=np.uint8)
    if array.ndim == 2:
        return array[..., None]
    if channels is None and (array[..., 0] == array[..., 1]).all() and (array[..., 1] == array[..., 2]).all():
        return array[..., :1]  # a grayscale image stored as RGB (common for exported X-rays)
    return array


def _palette_is_gray(image) -> bool:
    palette = np.asarray(image.getpalette() or [], dtype=np.int64).reshape(-1, 3)
    return bool(len(palette)) and bool((palette == palette[:, :1]).all())


def _stretch_to_uint8(array: np.ndarray) -> np.ndarray:
    low, high = float(array.min()), float(array.max())
    if high <= low:
        return np.zeros(array.shape, dtype=np.uint8)
    return np.round((array - low) * (255.0 / (high - low))).astype(np.uint8)


def resize(array: np.ndarray, image_size: int, *, fit: str = "crop") -> np.ndarray:
    """One ``uint8 (H, W, C)`` image to ``(image_size, image_size, C)`` (PIL bicubic, antialiased)."""
    from PIL import Image

    if fit == "crop":
        array = centre_crop(array)
    if array.shape[:2] == (image_size, image_size):
        return np.ascontiguousarray(array)
    mode_array = array[..., 0] if array.shape[-1] == 1 else array
    resized = np.asarray(Image.fromarray(mode_array).resize((image_size, image_size), Image.BICUBIC))
    return resized[..., None] if resized.ndim == 2 else resized


def centre_crop(array: np.ndarray) -> np.ndarray:
    """The largest centred square of an ``(H, W, C)`` image."""
    h, w = array.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return array[top:top + side, left:left + side]


def resize_batch(images: np.ndarray, image_size: int, chunk: int = 4096) -> np.ndarray:
    """``uint8 (N, H, W, C)`` square images to ``(N, image_size, image_size, C)`` in chunks
    (bilinear with antialiasing, the same filter as :mod:`medcl.engine.preprocess`)."""
    import torch
    import torch.nn.functional as F

    if images.shape[1:3] == (image_size, image_size):
        return images
    out = np.empty((len(images), image_size, image_size, images.shape[-1]), dtype=np.uint8)
    for start in range(0, len(images), chunk):
        x = torch.from_numpy(np.ascontiguousarray(images[start:start + chunk])).permute(0, 3, 1, 2).float()
        y = F.interpolate(x, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False)
        out[start:start + chunk] = y.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out


def to_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """``(N, H, W, C)`` to ``channels`` (1: ITU-R 601 luma of RGB; 3: grayscale repeated)."""
    if images.shape[-1] == channels:
        return images
    if channels == 3:
        return np.repeat(images, 3, axis=-1)
    luma = images.astype(np.float32) @ np.asarray([0.299, 0.587, 0.114], dtype=np.float32)
    return np.round(luma).clip(0, 255).astype(np.uint8)[..., None]


def decode_files(paths: list[Path], *, image_size: int, channels: int | None = None, fit: str = "crop",
                 threads: int | None = None) -> tuple[list[np.ndarray | None], list[str]]:
    """Decode many files (cached, in a small thread pool: PIL releases the GIL while decoding).

    Returns one array per path, ``None`` where the file is undecodable, and the error messages
    (each naming its file) of those, in path order.
    """
    from concurrent.futures import ThreadPoolExecutor

    def one(path):
        try:
            return decode_file_cached(path, image_size=image_size, channels=channels, fit=fit), None
        except UndecodableImage as exc:
            return None, str(exc)

    workers = threads or min(4, os.cpu_count() or 1)
    if workers <= 1 or len(paths) < 128:
        results = [one(p) for p in paths]
    else:  # chunks, not one future per file: the per-future overhead is a cache hit's cost
        chunks = [paths[i:i + 64] for i in range(0, len(paths), 64)]
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="medcl-decode") as pool:
            results = [r for part in pool.map(lambda chunk: [one(p) for p in chunk], chunks) for r in part]
    return [r[0] for r in results], [r[1] for r in results if r[1] is not None]


def stack_images(images: list[np.ndarray], channels: int | None = None) -> np.ndarray:
    """Stack ``(S, S, C)`` images into ``(N, S, S, C')``: ``C'`` is ``channels``, else 3 when any
    image is RGB, else 1."""
    if not images:
        raise ValueError("no images to stack")
    target = channels or (3 if any(img.shape[-1] == 3 for img in images) else 1)
    out = np.empty((len(images), *images[0].shape[:2], target), dtype=np.uint8)
    for i, img in enumerate(images):
        out[i] = img if img.shape[-1] == target else to_channels(img[None], target)[0]
    return out
