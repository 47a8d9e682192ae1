"""Model weights on disk: safetensors writing, strict loading with readable errors, fingerprints.

``save_weights`` writes a module's ``state_dict`` as safetensors (CPU, contiguous; tensors that
share storage, such as tied embeddings, are cloned so the format accepts them). ``load_weights``
reads safetensors or a ``torch.load(weights_only=True)`` file (a raw state dict or one under
``"state_dict"``, with any ``module.`` prefix stripped) and refuses a checkpoint that does not
match the module, naming a few of the offending keys.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Mapping, NamedTuple, Union

import torch
from safetensors.torch import load_file, save_file

from medcl.errors import MedclError

PathLike = Union[str, "os.PathLike[str]"]
StateDict = Mapping[str, torch.Tensor]
TORCH_SUFFIXES = (".pt", ".pth", ".bin")
_SHOWN_KEYS = 5


class ModelLoadError(MedclError, ValueError):
    """A model or its weights could not be created or loaded; the message says what to do."""


class KeyMismatch(NamedTuple):
    """Keys of a checkpoint that the module lacks, and the reverse; and shapes that differ."""

    missing: list[str]
    unexpected: list[str]
    shape_mismatch: list[str]

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.shape_mismatch)


def _unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The module inside a (Distributed)DataParallel wrapper, or ``module`` itself."""
    wrappers = (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)
    return module.module if isinstance(module, wrappers) else module


def _state_of(module: torch.nn.Module | StateDict) -> dict[str, torch.Tensor]:
    if isinstance(module, torch.nn.Module):
        return _unwrap(module).state_dict()
    return dict(module)


def save_weights(module: torch.nn.Module | StateDict, path: PathLike,
                 metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``module.state_dict()`` (or a state dict) to ``path`` as safetensors; return the path.

    Tensors are moved to CPU and made contiguous; a tensor whose storage was already written
    (tied or shared weights, views) is cloned. The file is written to a temporary name and
    renamed, so a crash never leaves a half-written file under ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    seen_storages: set[int] = set()
    for name, tensor in _state_of(module).items():
        tensor = tensor.detach().to("cpu").contiguous()
        storage = tensor.untyped_storage().data_ptr()
        if storage in seen_storages or tensor.numel() * tensor.element_size() != tensor.untyped_storage().nbytes():
            tensor = tensor.clone()
        seen_storages.add(tensor.untyped_storage().data_ptr())
        tensors[name] = tensor
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=dict(metadata) if metadata else None)
    os.replace(tmp, path)
    return path


def read_state_dict(path: PathLike) -> dict[str, torch.Tensor]:
    """The state dict stored at ``path`` (on CPU), ``module.`` prefixes stripped.

    ``.safetensors`` files are read with safetensors; ``.pt``/``.pth``/``.bin`` (or any other
    suffix) with ``torch.load(weights_only=True)``, taking ``obj["state_dict"]`` when present.
    Raises :class:`ModelLoadError` when the file is missing or holds no tensor mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, pickle refused by weights_only, ...
        raise ModelLoadError(f"could not read weights file {path}: {exc}") from exc
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelLoadError(f"{path} does not hold a state dict of tensors (got {type(state).__name__})")
    return {_strip_prefix(k): v for k, v in state.items()}


def _strip_prefix(key: str, prefix: str = "module.") -> str:
    return key[len(prefix):] if key.startswith(prefix) else key


def compare_keys(module: torch.nn.Module, state: StateDict) -> KeyMismatch:
    """How ``state`` differs from ``module.state_dict()`` (names and shapes), sorted."""
    own = _unwrap(module).state_dict()
    return KeyMismatch(
        missing=sorted(set(own) - set(state)),
        unexpected=sorted(set(state) - set(own)),
        shape_mismatch=sorted(
            f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
            for k in set(own) & set(state) if own[k].shape != state[k].shape
        ),
    )


def describe_mismatch(mismatch: KeyMismatch, limit: int = _SHOWN_KEYS) -> str:
    """One line per kind of difference, showing at most ``limit`` keys each."""
    parts = []
    for label, keys in (("missing", mismatch.missing), ("unexpected", mismatch.unexpected),
                        ("shape mismatch", mismatch.shape_mismatch)):
        if keys:
            more = f" ... (+{len(keys) - limit} more)" if len(keys) > limit else ""
            parts.append(f"{len(keys)} {label}: {', '.join(keys[:limit])}{more}")
    return "; ".join(parts)


def load_state_into(module: torch.nn.Module, state: StateDict, strict: bool = True,
                    source: str = "checkpoint") -> KeyMismatch:
    """Copy ``state`` into ``module``; return the key differences.

    With ``strict`` any difference raises :class:`ModelLoadError`; without it, missing and
    unexpected keys are skipped, but shape mismatches still raise (they cannot be loaded).
    """
    mismatch = compare_keys(module, state)
    if (strict and mismatch) or mismatch.shape_mismatch:
        raise ModelLoadError(
            f"{source} does not match the model architecture ({describe_mismatch(mismatch)}); "
            "was it saved from a different model name or image size?")
    _unwrap(module).load_state_dict(dict(state), strict=False)
    return mismatch


def load_weights(module: torch.nn.Module, path: PathLike, strict: bool = True) -> KeyMismatch:
    """Load the weights file at ``path`` into ``module`` in place (see :func:`read_state_dict`).

    Returns the (empty, when ``strict``) :class:`KeyMismatch`; raises :class:`ModelLoadError`
    naming the path when the file is missing, unreadable or does not fit the module.
    """
    return load_state_into(module, read_state_dict(path), strict=strict, source=f"weights file {path}")


def state_fingerprint(module: torch.nn.Module | StateDict) -> str:
    """First 16 hex digits of sha256 over the state dict, keys sorted.

    For each key: the key, its dtype and shape, then the tensor's raw bytes (CPU, contiguous).
    Equal fingerprints mean bit-identical weights; any changed value, name or shape changes it.
    """
    digest = hashlib.sha256()
    state = _state_of(module)
    for name in sorted(state):
        tensor = state[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]
