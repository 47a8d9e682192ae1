"""Keeping a command inside its own folders: deletes only strictly below the command's output
folder, and file names read from data (manifest entries) only inside the folder they belong to.

Both work on local paths (checked after resolving links and ``..``) and object-store keys
(:class:`medcl.storage.Location`: a key below the folder's key, no empty, ``.`` or ``..`` segment).
A refusal names both places and deletes or opens nothing.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from medcl.paths import OutsideRoot, inside_root
from medcl.storage import Location, Place, StorageError, exists, place, resolve


def rmtree_below(value, root, *, ignore_errors: bool = False) -> None:
    """:func:`rmtree` of ``value`` only when it lies strictly below the folder ``root`` (a command's
    own output folder); else :class:`StorageError` naming both, and nothing is deleted.

    Local paths are compared after resolving symbolic links (a link inside ``root`` that leads out is
    refused) and ``..``; ``root`` itself, anything outside it, ``/``, the home folder and the working
    directory or any folder above it are always refused. An object-store key must start with
    ``root``'s key followed by ``/`` and hold no ``.``/``..`` segment. A missing ``value`` is no error.
    """
    where, top = place(value), place(root)
    if isinstance(where, Location) or isinstance(top, Location):
        _check_below_uri(where, top)
        if exists(where):
            filesystem, path = resolve(where)
            filesystem.delete_dir(path)
        return
    target, top = where.resolve(), top.resolve()
    _check_below_path(target, top, shown=where)
    if where.is_symlink():  # resolves inside root: remove the link, never what it points at
        where.unlink()
    elif target.exists():
        shutil.rmtree(target, ignore_errors=ignore_errors)


def _check_below_path(target: Path, top: Path, *, shown) -> None:
    cwd = Path.cwd().resolve()
    protected = {Path("/"), Path.home().resolve()}
    if target in protected or target == cwd or target in cwd.parents:
        raise StorageError(f"refusing to delete {shown} (resolves to {target}): it is /, the home folder or the "
                           "working directory or a folder above it")
    if target == top or top not in target.parents:
        raise StorageError(f"refusing to delete {shown} (resolves to {target}): only folders strictly below "
                           f"the command's output folder {top} are deleted")


def _check_below_uri(where, top) -> None:
    if not (isinstance(where, Location) and isinstance(top, Location)):
        raise StorageError(f"refusing to delete {where}: it is not in the same store as {top}")
    if not _key_below(where, top):
        raise StorageError(f"refusing to delete {where}: only keys strictly below the command's output {top} "
                           "are deleted")


def _key_below(where: Location, top: Location) -> bool:
    """Whether ``where``'s key starts with ``top``'s key and ``/`` and holds no empty, ``.`` or ``..``
    segment after it (object stores take ``..`` literally; medcl never writes one)."""
    key, base = where.uri.rstrip("/"), top.uri.rstrip("/")
    below = key.split("://", 1)[1][len(base.split("://", 1)[1]):].split("/")[1:] if key.startswith(base + "/") else []
    return bool(below) and not any(part in ("", ".", "..") for part in below)


def inside_place(top, name) -> Place:
    """``top / name`` for a file name read from data (a manifest entry) when it stays strictly inside
    the folder ``top``, else :class:`medcl.paths.OutsideRoot` naming both. A local folder is checked
    with :func:`medcl.paths.inside_root` (``..``, absolute paths and links that lead out refused); in
    an object store ``name`` must be a relative key (no leading ``/``, no NUL, no backslash) whose
    joined key lies below ``top``'s with no empty, ``.`` or ``..`` segment (as :func:`rmtree_below`
    checks). The returned place is ``top / name`` as given (not link-resolved)."""
    where = place(top)
    if not isinstance(name, str) or not name:
        raise OutsideRoot(f"{name!r}: outside_root: not a file name inside {where}")
    if isinstance(where, Path):
        if inside_root(where, name) == where.resolve():
            raise OutsideRoot(f"{name}: outside_root: names the folder {where} itself, not a file inside it")
        return where / name
    if name.startswith("/") or "\x00" in name or "\\" in name or not _key_below(where / name, where):
        raise OutsideRoot(f"{name}: outside_root: not a key strictly below {where}")
    return where / name
