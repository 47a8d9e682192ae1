"""Where medcl keeps what a run writes: one storage layer over ``pyarrow.fs``.

A run, sweep, corpus or index location is a *place*: a local path (a laptop, or a shared mount
such as NFS that every node sees at the same path) or a URI of an object store (``s3://bucket/runs``,
``gs://bucket/runs``; any scheme ``pyarrow.fs.FileSystem.from_uri`` knows)::

    place("runs/quickstart")          # -> Path("<cwd>/runs/quickstart"): local, used as before
    place("s3://bucket/runs/q")       # -> Location("s3://bucket/runs/q")
    write_text(place(...) / "metrics.json", text)     # the same call for both

Contracts:

* A local place stays a :class:`pathlib.Path`; a URI becomes a :class:`Location`, which supports
  ``/``, ``name``, ``parent``, ``str`` and the module's operations as methods. ``os.fspath`` of a
  Location raises :class:`StorageError`, so code that would silently write a local folder named
  ``s3:`` fails instead.
* Credentials and endpoints come from the standard environment of each process (``AWS_*``,
  ``AWS_ENDPOINT_URL`` for an S3-compatible store, ``GOOGLE_APPLICATION_CREDENTIALS``...), never from
  medcl's files; a Location pickles as its URI and resolves its filesystem where it is used.
* :func:`write_text` / :func:`write_bytes` are atomic for a reader (local: temporary file then
  rename; object store: one PUT).  Append-only files (events) are :mod:`medcl.appends`.
* Checkpoints are Ray Train's: :func:`ray_storage` gives ``RunConfig(storage_path=...,
  storage_filesystem=...)`` for a place.
"""
from __future__ import annotations

import contextlib
import fnmatch
import os
import shutil
import tempfile
import uuid
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Union

from medcl.paths import is_uri, resolve_path
from medcl.redact import credentials_in_uri, mask_url_password


class StorageError(RuntimeError):
    """A place that cannot be used as asked; the message names it and says what to do."""


class Location:
    """A place in an object store, ``scheme://bucket/key`` (see the module doc)."""

    __slots__ = ("uri",)

    def __init__(self, uri: str):
        if not is_uri(uri):
            raise StorageError(f"{uri!r} is not a URI (scheme://...); use place() for local paths")
        secret = credentials_in_uri(uri)
        if secret:  # it would be saved in config.yaml, Ray Train's state and the logs (medcl.redact)
            raise StorageError(f"{mask_url_password(uri)} carries {secret}: object-store credentials come from "
                               "the environment (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, an instance role, "
                               "GOOGLE_APPLICATION_CREDENTIALS), never from a URI medcl would save")
        object.__setattr__(self, "uri", uri.rstrip("/") if uri.count("/") > 2 else uri)

    def __setattr__(self, name, value):
        raise AttributeError("Location is immutable")

    def __reduce__(self):
        return (Location, (self.uri,))

    def __truediv__(self, name: str) -> "Location":
        return Location(f"{self.uri.rstrip('/')}/{str(name).strip('/')}")

    def __str__(self) -> str:
        return self.uri

    def __repr__(self) -> str:
        return f"Location({self.uri!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Location) and other.uri == self.uri

    def __hash__(self) -> int:
        return hash(self.uri)

    def __lt__(self, other: "Location") -> bool:
        return self.uri < other.uri

    def __fspath__(self) -> str:
        raise StorageError(f"{self.uri} is in an object store, not a local path; medcl reads and writes it through "
                           "medcl.storage")

    @property
    def name(self) -> str:
        return self.uri.rstrip("/").rsplit("/", 1)[-1]

    @property
    def parent(self) -> "Location":
        head = self.uri.rstrip("/").rsplit("/", 1)[0]
        return Location(head if is_uri(head) and head.count("/") >= 2 else self.uri)

    def resolve(self) -> "Location":
        return self

    def exists(self) -> bool:
        return exists(self)

    def is_file(self) -> bool:
        return is_file(self)

    def is_dir(self) -> bool:
        return is_dir(self)

    def read_text(self, encoding: str = "utf-8") -> str:
        return read_text(self, encoding)

    def read_bytes(self) -> bytes:
        return read_bytes(self)

    def write_text(self, text: str, encoding: str = "utf-8") -> None:
        write_text(self, text, encoding)

    def write_bytes(self, data: bytes) -> None:
        write_bytes(self, data)

    def mkdir(self, parents: bool = True, exist_ok: bool = True) -> None:
        makedirs(self)

    def iterdir(self) -> Iterator["Location"]:
        return iter([self / name for name in listdir(self)])

    def glob(self, pattern: str) -> Iterator["Location"]:
        """Children whose name matches ``pattern`` (one level, ``fnmatch``)."""
        return iter([self / name for name in listdir(self) if fnmatch.fnmatch(name, pattern)])


Place = Union[Path, Location]


def place(value: str | os.PathLike | Location) -> Place:
    """A :class:`Location` for a URI (``file://`` becomes its local path), else an absolute
    :class:`~pathlib.Path` (relative paths are taken from the working directory, as in
    :mod:`medcl.paths`)."""
    if isinstance(value, Location):
        return value
    text = os.fspath(value)
    if text.startswith("file://"):
        return Path(text[len("file://"):] or "/")
    if is_uri(text):
        return Location(text)
    return Path(resolve_path(text))


def local_only(value: str, *, field: str, command: str) -> None:
    """Raise :class:`StorageError` when ``value`` (``field`` of ``command``) is an object-store URI:
    the commands other than ``medcl run`` keep their outputs on local or shared-mount paths for now."""
    if isinstance(value, str) and is_uri(value) and not value.startswith("file://"):
        raise StorageError(f"{value}: {command} writes {field} to a local path or a shared mount (NFS) only; "
                           "object-store URIs (s3://, gs://) are taken by medcl run's output_dir")


def is_remote(value) -> bool:
    """True for an object-store place (a :class:`Location` or a URI string)."""
    return isinstance(place(value), Location)


ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "STORAGE_EMULATOR_HOST")


def _filesystem(root: str):
    return _cached_filesystem(root, tuple(os.environ.get(k) for k in ENDPOINT_VARIABLES))


@lru_cache(maxsize=None)
def _cached_filesystem(root: str, endpoints: tuple):
    """One filesystem per bucket and endpoint environment (a changed endpoint gets a new one)."""
    from pyarrow import fs

    filesystem, _ = fs.FileSystem.from_uri(root)
    return filesystem


def resolve(value) -> tuple:
    """``(pyarrow filesystem, path in it)`` of a place (the filesystem is cached per bucket)."""
    where = place(value)
    if isinstance(where, Path):
        from pyarrow import fs

        return fs.LocalFileSystem(), str(where)
    scheme, rest = where.uri.split("://", 1)
    bucket = rest.split("/", 1)[0]
    return _filesystem(f"{scheme}://{bucket}"), rest.rstrip("/")


def _info(value):
    filesystem, path = resolve(value)
    return filesystem.get_file_info(path)


def exists(value) -> bool:
    from pyarrow import fs

    return _info(value).type != fs.FileType.NotFound


def is_file(value) -> bool:
    from pyarrow import fs

    return _info(value).type == fs.FileType.File


def is_dir(value) -> bool:
    from pyarrow import fs

    return _info(value).type == fs.FileType.Directory


def read_bytes(value) -> bytes:
    """The whole file (FileNotFoundError naming the place when it is missing)."""
    where = place(value)
    if isinstance(where, Path):
        return where.read_bytes()
    filesystem, path = resolve(where)
    try:
        with filesystem.open_input_stream(path) as stream:
            return stream.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"{where}: no such file") from None


def read_text(value, encoding: str = "utf-8") -> str:
    return read_bytes(value).decode(encoding)


def write_bytes(value, data: bytes) -> None:
    """Write ``data`` atomically for readers (see the module doc); parent directories are made."""
    where = place(value)
    if isinstance(where, Path):
        where.parent.mkdir(parents=True, exist_ok=True)
        tmp = where.with_name(f".{where.name}.{uuid.uuid4().hex[:8]}.tmp")
        tmp.write_bytes(data)
        tmp.replace(where)
        return
    filesystem, path = resolve(where)
    with filesystem.open_output_stream(path) as stream:
        stream.write(data)


def write_text(value, text: str, encoding: str = "utf-8") -> None:
    write_bytes(value, text.encode(encoding))


def open_input(value):
    """A binary readable stream of the file (``read(n)``, context manager)."""
    where = place(value)
    if isinstance(where, Path):
        return open(where, "rb")
    filesystem, path = resolve(where)
    return filesystem.open_input_stream(path)


def makedirs(value) -> None:
    where = place(value)
    if isinstance(where, Path):
        where.mkdir(parents=True, exist_ok=True)
        return
    filesystem, path = resolve(where)
    filesystem.create_dir(path, recursive=True)


def delete(value) -> None:
    """Delete the file at ``value`` (nothing when there is none)."""
    where = place(value)
    if isinstance(where, Path):
        where.unlink(missing_ok=True)
    elif is_file(where):
        filesystem, path = resolve(where)
        filesystem.delete_file(path)


def move(source, target) -> None:
    """Rename the file ``source`` to ``target`` in the same store (local: an atomic rename; object
    store: copy then delete, so a reader sees the whole object or none)."""
    where, to = place(source), place(target)
    if type(where) is not type(to):
        raise StorageError(f"cannot move {where} to {to}: they are not in the same store")
    filesystem, path = resolve(where)
    filesystem.move(path, resolve(to)[1])


def listdir(value) -> list[str]:
    """Names of the direct children (files and directories); [] when the place does not exist."""
    from pyarrow import fs

    filesystem, path = resolve(value)
    infos = filesystem.get_file_info(fs.FileSelector(path, allow_not_found=True, recursive=False))
    return sorted(info.base_name for info in infos)


def rmtree(value) -> None:
    """Delete a directory and everything under it (nothing when it does not exist)."""
    where = place(value)
    if isinstance(where, Path):
        shutil.rmtree(where, ignore_errors=False) if where.exists() else None
        return
    if exists(where):
        filesystem, path = resolve(where)
        filesystem.delete_dir(path)


def upload_dir(local: str | os.PathLike, value) -> None:
    """Copy the local directory ``local`` (recursively) to the place ``value``."""
    from pyarrow import fs

    filesystem, path = resolve(value)
    makedirs(value)
    fs.copy_files(os.fspath(local), path, source_filesystem=fs.LocalFileSystem(), destination_filesystem=filesystem)


def download_dir(value, local: str | os.PathLike) -> None:
    """Copy the directory at ``value`` (recursively) into the local directory ``local``."""
    from pyarrow import fs

    filesystem, path = resolve(value)
    os.makedirs(local, exist_ok=True)
    if exists(value):
        fs.copy_files(path, os.fspath(local), source_filesystem=filesystem, destination_filesystem=fs.LocalFileSystem())


@contextlib.contextmanager
def local_copy(value) -> Iterator[Path]:
    """A local directory holding the place's files: the place itself when local, else a temporary
    download removed on exit (for readers that need files: safetensors, torch.load, parquet)."""
    where = place(value)
    if isinstance(where, Path):
        yield where
        return
    with tempfile.TemporaryDirectory(prefix="medcl-copy-") as tmp:
        download_dir(where, tmp)
        yield Path(tmp)


def cached_file(value, cache_dir: str | os.PathLike | None = None) -> Path:
    """A local copy of the file at ``value``: the path itself when local, else a download into this
    node's cache (``$MEDCL_CACHE``, default ``~/.cache/medcl/objects``), named by the URI, the
    object's size and modification time, so a changed object is fetched again and the workers of a
    node share one copy (written to a temporary name, then renamed: no reader sees half a file).
    StorageError names the URI when there is no such object."""
    import hashlib

    where = place(value)
    if isinstance(where, Path):
        return where
    filesystem, path = resolve(where)
    info = filesystem.get_file_info(path)
    if info.type.name != "File":
        raise StorageError(f"{where.uri}: no such object")
    key = hashlib.sha256(f"{where.uri}|{info.size}|{info.mtime_ns}".encode()).hexdigest()[:16]
    root = Path(cache_dir or os.environ.get("MEDCL_CACHE") or Path.home() / ".cache" / "medcl" / "objects")
    target = root / f"{key}-{Path(path).name}"
    if target.is_file() and target.stat().st_size == info.size:
        return target
    root.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.part")
    with filesystem.open_input_stream(path) as source, open(partial, "wb") as sink:
        while chunk := source.read(8 << 20):
            sink.write(chunk)
    os.replace(partial, target)
    return target


@contextlib.contextmanager
def staged_dir(value) -> Iterator[Path]:
    """A local directory to write the place's files in: the place itself when local (created),
    else a temporary directory holding a copy of what is there, uploaded back when the block
    finishes without an exception (for writers that need files: parquet, FAISS, planners)."""
    where = place(value)
    if isinstance(where, Path):
        where.mkdir(parents=True, exist_ok=True)
        yield where
        return
    with tempfile.TemporaryDirectory(prefix="medcl-stage-") as tmp:
        download_dir(where, tmp)
        yield Path(tmp)
        upload_dir(tmp, where)


def ray_storage(value) -> dict:
    """``RunConfig`` keywords that make Ray Train persist checkpoints at the place: ``storage_path``
    (and ``storage_filesystem`` for an object store, so Ray uses the same filesystem as medcl)."""
    where = place(value)
    if isinstance(where, Path):
        return {"storage_path": str(where)}
    filesystem, path = resolve(where)
    return {"storage_path": path, "storage_filesystem": filesystem}
