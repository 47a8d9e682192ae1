"""Named CLIP models built with open_clip, with weights that load offline or fail fast.

A model name is a registered :class:`ModelSpec` (``medcl-tiny``, ``biomedclip``, ...), any
architecture open_clip knows (``_open_clip().list_models()``) or an ``hf-hub:org/repo`` tag.
The ``medcl-*`` architectures are JSON configs shipped in ``configs/``, registered with open_clip
when this module first uses it; they build offline from random init. open_clip itself is imported
on first use (:func:`_open_clip`: 7-8 s, it imports transformers and torchvision), so a process that
only checks a registered name with random init or a weights file (the driver of ``medcl run``)
never imports it.

``pretrained`` selects the weights (see :func:`create_model`). Anything that needs the Hugging
Face Hub is checked against the local cache first when ``HF_HUB_OFFLINE`` is set, so a missing
download is a :class:`ModelLoadError` at once instead of a network timeout.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from huggingface_hub import constants as hf_constants
from huggingface_hub import try_to_load_from_cache

from medcl.models.weights import TORCH_SUFFIXES, ModelLoadError, load_state_into, read_state_dict
from medcl.paths import is_uri
from medcl.registry import Registry, UnknownNameError, close_match_hint

CONFIG_DIR = Path(__file__).parent / "configs"
# open_clip.constants' values (a unit test compares them), so that the module needs no open_clip import
HF_CONFIG_NAME, HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME = (
    "open_clip_config.json", "open_clip_model.safetensors", "open_clip_pytorch_model.bin")
OPENAI_DATASET_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_DATASET_STD = (0.26862954, 0.26130258, 0.27577711)
_OPEN_CLIP = []  # the module, once imported and given the medcl-* configs


def _open_clip():
    """open_clip, imported on first call, with the ``medcl-*`` configs of ``configs/`` registered."""
    if not _OPEN_CLIP:
        import open_clip

        open_clip.add_model_config(CONFIG_DIR)
        _OPEN_CLIP.append(open_clip)
    return _OPEN_CLIP[0]

HF_HUB_PREFIX = "hf-hub:"
DEFAULT = "default"  # ``pretrained: default`` -> the spec's default_pretrained
HUB_WEIGHTS = "hf-hub"  # for hf-hub models: the weights stored in the hub repo itself
WEIGHT_SUFFIXES = (".safetensors",) + TORCH_SUFFIXES


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: the open_clip name it builds and the weights ``default`` means."""

    name: str
    open_clip_name: str
    default_pretrained: str | None = None
    description: str = ""


@dataclass
class ModelBundle:
    """A created model and what feeding it needs.

    ``model(images, tokens)`` returns ``(image_features, text_features, logit_scale.exp())``
    with both feature sets L2-normalised; ``tokenizer(texts)`` returns a LongTensor
    (N, context_length); images are (N, 3, image_size, image_size) floats normalised with
    ``mean``/``std`` after scaling to [0, 1].
    """

    model: torch.nn.Module
    tokenizer: Callable[[list[str]], torch.Tensor]
    name: str
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    pretrained: str | None


@dataclass(frozen=True)
class _Weights:
    """Resolved ``pretrained``: kind is 'none' (random), 'file', 'tag' (open_clip) or 'hub'."""

    kind: str
    value: str | None = None


MODELS: Registry[ModelSpec] = Registry("model")


def register_spec(spec: ModelSpec) -> ModelSpec:
    return MODELS.register(spec.name)(spec)


for _spec in (
    ModelSpec("medcl-tiny", "medcl-tiny", None, "ResNet-CLIP 32px (width 8) + 2-layer text; quickstart and tests"),
    ModelSpec("medcl-tiny-vit", "medcl-tiny-vit", None, "ViT 32px/8, width 64, 2+2 layers; LoRA smoke runs"),
    ModelSpec("medcl-tiny-vit-p4", "medcl-tiny-vit-p4", None,
              "ViT 32px/4 (64 tokens), width 64, 3 layers, mean-pooled; LayerNorm like BiomedCLIP; the demo's model"),
    ModelSpec("medcl-small", "medcl-small", None, "ResNet-CLIP 64px (width 16) + 3-layer text; CPU experiments"),
    ModelSpec("biomedclip", HF_HUB_PREFIX + "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224",
              HUB_WEIGHTS, "BiomedCLIP ViT-B/16 + PubMedBERT (PMC-15M), 224px"),
    ModelSpec("ViT-B-16", "ViT-B-16", "openai", "OpenAI CLIP ViT-B/16, 224px"),
    ModelSpec("ViT-B-32", "ViT-B-32", "openai", "OpenAI CLIP ViT-B/32, 224px"),
    ModelSpec("RN50", "RN50", "openai", "OpenAI CLIP ResNet-50, 224px"),
):
    register_spec(_spec)


class UnknownModelError(UnknownNameError):
    """A model name that is neither registered, an open_clip architecture, nor ``hf-hub:``."""

    def __str__(self) -> str:
        candidates = self.known + _open_clip().list_models()
        same_but_case = [c for c in candidates if c.lower() == str(self.name).lower()]
        hint = f" (did you mean {same_but_case[0]!r}?)" if same_but_case else close_match_hint(self.name, candidates)
        return (f"unknown model {self.name!r}{hint}; registered: {', '.join(self.known)}; "
                f"or any open_clip architecture (medcl.models.list_models()) or an 'hf-hub:org/repo' tag")


def list_models() -> list[str]:
    """Registered names first, then every other architecture open_clip knows."""
    registered = MODELS.names()
    return registered + [m for m in _open_clip().list_models() if m not in MODELS]


def resolve_spec(name: str) -> ModelSpec:
    """The registered spec, or an ad-hoc one for an open_clip / ``hf-hub:`` name."""
    if name in MODELS:
        return MODELS.get(name)
    if name.startswith(HF_HUB_PREFIX) or name in _open_clip().list_models():
        return ModelSpec(name, name, None, "open_clip model")
    raise UnknownModelError("model", name, MODELS.names())


def create_model(name: str, *, pretrained: str | None = None, image_size: int | None = None,
                 device: str | torch.device = "cpu", precision: str = "fp32") -> ModelBundle:
    """Build model ``name`` (in eval mode) with its tokenizer and preprocessing constants.

    ``pretrained``: ``None`` -> random init; ``"default"`` -> the spec's ``default_pretrained``
    (random init when it has none); a path ending in .safetensors/.pt/.pth/.bin -> loaded
    strictly after building the architecture; an open_clip tag (``openai``,
    ``laion2b_s34b_b88k``, ...) -> open_clip's download; for ``hf-hub:`` models ``"hf-hub"``
    (or the hub name itself) -> the repo's own weights. ``image_size`` overrides the config's
    (positional embeddings of a loaded file are interpolated). Raises :class:`ModelLoadError`
    for missing files, mismatched checkpoints and unavailable downloads.
    """
    spec = resolve_spec(name)
    weights = _resolve_weights(spec, pretrained)
    cache_dir = hf_cache_dir()
    needed = _hub_requirements(spec.open_clip_name, weights, cache_dir)
    if needed and hub_offline():
        _raise_if_not_cached(spec, needed, cache_dir)
    with _download_errors(spec, needed):
        model = _build(spec, weights, image_size, device, precision, cache_dir)
        with _quiet_random_init():
            tokenizer = _open_clip().get_tokenizer(spec.open_clip_name, cache_dir=cache_dir)
    if weights.kind == "file":
        _load_file(model, weights.value)
    model.eval()
    return _bundle(spec, model, tokenizer, weights, image_size)


def _remote_weights(spec: ModelSpec, uri: str, fetch: bool) -> _Weights:
    from medcl import storage

    try:
        if not fetch:
            if not storage.is_file(uri):
                raise storage.StorageError(f"{uri}: no such object")
            return _Weights("file", uri)
        return _Weights("file", str(storage.cached_file(uri)))
    except storage.StorageError as exc:
        raise ModelLoadError(f"pretrained weights file not found: {exc} (model {spec.name!r}); upload it there "
                             f"or set model.pretrained to a file every node has, or to null for random init") from None


def check_model_source(name: str, pretrained: str | None = None) -> None:
    """Raise what :func:`create_model` would raise about the name and the weights' source (unknown
    name, missing file, unknown tag, weights not cached while offline) without building anything,
    so a run fails before Ray starts rather than inside every worker."""
    spec = resolve_spec(name)
    weights = _resolve_weights(spec, pretrained, fetch=False)
    if hub_offline():
        cache_dir = hf_cache_dir()
        _raise_if_not_cached(spec, _hub_requirements(spec.open_clip_name, weights, cache_dir), cache_dir)


def _resolve_weights(spec: ModelSpec, pretrained: str | None, *, fetch: bool = True) -> _Weights:
    """``fetch``: an object-store weights file (``s3://``, ``gs://``) is downloaded into the node's
    cache (:func:`medcl.storage.cached_file`); without it only its existence is checked."""
    if pretrained == DEFAULT:
        pretrained = spec.default_pretrained
    if pretrained is None:
        return _Weights("none")
    if is_uri(pretrained) and not pretrained.startswith("file://"):
        return _remote_weights(spec, pretrained, fetch)
    is_hub = spec.open_clip_name.startswith(HF_HUB_PREFIX)
    if is_hub and pretrained in (HUB_WEIGHTS, spec.open_clip_name):
        return _Weights("hub", spec.open_clip_name)
    path = Path(pretrained).expanduser()
    looks_like_a_path = path.suffix in WEIGHT_SUFFIXES or os.sep in pretrained  # no open_clip tag does
    if not is_hub and not looks_like_a_path and _open_clip().get_pretrained_cfg(spec.open_clip_name, pretrained):
        return _Weights("tag", pretrained)
    if path.is_file():
        return _Weights("file", str(path))
    if looks_like_a_path:
        raise ModelLoadError(f"pretrained weights file not found: {path} (model {spec.name!r}); create it first "
                             f"(a `medcl pretrain FILE.yaml` run writes <output_dir>/<name>/model.safetensors) "
                             f"or set model.pretrained to null for random init")
    choices = [HUB_WEIGHTS] if is_hub else _open_clip().list_pretrained_tags_by_model(spec.open_clip_name)
    raise ModelLoadError(
        f"pretrained {pretrained!r} for model {spec.name!r} is neither a weights file nor a known tag "
        f"(tags: {', '.join(choices) or 'none'}; or 'default', or null for random init)")


def _build(spec: ModelSpec, weights: _Weights, image_size: int | None, device, precision: str,
           cache_dir: str) -> torch.nn.Module:
    kwargs = dict(precision=precision, device=device, force_image_size=image_size, cache_dir=cache_dir,
                  pretrained_text=False, output_dict=False)
    if weights.kind == "tag":
        tag_cfg = _open_clip().get_pretrained_cfg(spec.open_clip_name, weights.value)
        kwargs.update(pretrained=weights.value, force_quick_gelu=bool(tag_cfg.get("quick_gelu", False)))
    if spec.open_clip_name.startswith(HF_HUB_PREFIX) and weights.kind != "hub":
        kwargs["load_weights"] = False
    with _quiet_random_init():
        return _open_clip().create_model(spec.open_clip_name, **kwargs)


class _DropRandomInitWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING and "initialized randomly" not in record.getMessage()


@contextlib.contextmanager
def _quiet_random_init() -> Iterator[None]:
    """Silence open_clip's root-logger progress lines and its warning about random init (here it
    is asked for, or a local file is loaded right after)."""
    quiet = _DropRandomInitWarning()
    logging.getLogger().addFilter(quiet)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(quiet)


def _load_file(model: torch.nn.Module, path: str) -> None:
    state = read_state_dict(path)
    with contextlib.suppress(Exception):
        # A checkpoint of another image size is adapted; anything stranger is reported below.
        from open_clip.model import resize_pos_embed

        resize_pos_embed(state, model)
    load_state_into(model, state, strict=True, source=f"weights file {path}")


def _bundle(spec: ModelSpec, model: torch.nn.Module, tokenizer, weights: _Weights,
            image_size: int | None) -> ModelBundle:
    preprocess = getattr(model.visual, "preprocess_cfg", None) or {}
    size = image_size or preprocess.get("size") or model.visual.image_size
    size = int(size[0] if isinstance(size, (tuple, list)) else size)
    return ModelBundle(
        model=model, tokenizer=tokenizer, name=spec.name, image_size=size,
        mean=tuple(float(v) for v in preprocess.get("mean", OPENAI_DATASET_MEAN)),
        std=tuple(float(v) for v in preprocess.get("std", OPENAI_DATASET_STD)),
        pretrained=weights.value,
    )


# --- Hugging Face Hub availability ------------------------------------------------------------

@dataclass(frozen=True)
class _HubFile:
    """A file that must be downloaded: any one of ``filenames`` in ``repo_id`` (or ``url``)."""

    repo_id: str
    filenames: tuple[str, ...]
    url: str = ""

    def cached(self, cache_dir: str) -> bool:
        if self.url:
            return os.path.isfile(os.path.join(cache_dir, os.path.basename(self.url)))
        return any(_cached_path(self.repo_id, f, cache_dir) for f in self.filenames)

    def __str__(self) -> str:
        return self.url or f"{self.repo_id} ({' or '.join(self.filenames)})"


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set in the environment or in huggingface_hub's constants."""
    env = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return env in {"1", "ON", "YES", "TRUE"} or bool(getattr(hf_constants, "HF_HUB_OFFLINE", False))


def hf_cache_dir() -> str:
    """The Hugging Face hub cache, read from the environment now (``HF_HUB_CACHE``, ``HF_HOME``)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return str(hf_constants.HF_HUB_CACHE)


def _cached_path(repo_id: str, filename: str, cache_dir: str) -> str | None:
    found = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir)
    return found if isinstance(found, str) else None


def _hub_requirements(open_clip_name: str, weights: _Weights, cache_dir: str) -> list[_HubFile]:
    """Every download building ``open_clip_name`` with ``weights`` needs (empty: fully local)."""
    needed: list[_HubFile] = []
    if open_clip_name.startswith(HF_HUB_PREFIX):
        repo = open_clip_name[len(HF_HUB_PREFIX):]
        needed.append(_HubFile(repo, (HF_CONFIG_NAME,)))
        if weights.kind == "hub":
            needed.append(_HubFile(repo, (HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME)))
        config_path = _cached_path(repo, HF_CONFIG_NAME, cache_dir)
        model_cfg = json.loads(Path(config_path).read_text()).get("model_cfg", {}) if config_path else {}
    else:
        if weights.kind == "tag":
            needed.extend(_tag_files(open_clip_name, weights.value))
        model_cfg = _model_config(open_clip_name)
    text_cfg = model_cfg.get("text_cfg", {})
    if text_cfg.get("hf_model_name"):
        needed.append(_HubFile(text_cfg["hf_model_name"], ("config.json",)))
    if text_cfg.get("hf_tokenizer_name"):
        needed.append(_HubFile(text_cfg["hf_tokenizer_name"], ("tokenizer_config.json",)))
    return needed


def _model_config(open_clip_name: str) -> dict:
    """open_clip's config of an architecture; one shipped in ``configs/`` is read from there, which
    spares the driver of an offline run (``HF_HUB_OFFLINE``) the open_clip import."""
    shipped = CONFIG_DIR / f"{open_clip_name}.json"
    if shipped.is_file():
        return json.loads(shipped.read_text())
    return _open_clip().get_model_config(open_clip_name) or {}


def _tag_files(open_clip_name: str, tag: str) -> list[_HubFile]:
    """The checkpoint file of an open_clip tag, as open_clip would fetch it (hub preferred)."""
    cfg = _open_clip().get_pretrained_cfg(open_clip_name, tag)
    hub, url = cfg.get("hf_hub", ""), cfg.get("url", "")
    if not hub:
        return [_HubFile("", (), url=url)] if url else []
    repo, filename = os.path.split(hub)  # 'org/name/' means the repo's default weights file
    filename = filename or HF_WEIGHTS_NAME
    if filename == HF_WEIGHTS_NAME:
        return [_HubFile(repo, (HF_SAFE_WEIGHTS_NAME, filename))]
    stem, suffix = os.path.splitext(filename)
    safe = (stem + ".safetensors",) if suffix in (".bin", ".pth") else ()
    return [_HubFile(repo, safe + (filename,))]


def _advice(spec: ModelSpec, needed: list[_HubFile]) -> str:
    repos = sorted({f.repo_id for f in needed if f.repo_id})
    steps = [f"`hf download {r}`" for r in repos] + [f"download {f.url}" for f in needed if f.url]
    advice = (f"On a machine with network access run {' and '.join(steps)} into the same Hugging Face "
              f"cache (HF_HOME / HF_HUB_CACHE), or set `pretrained:` to a local .safetensors file of "
              f"architecture {spec.open_clip_name!r} (e.g. written by medcl.models.save_weights)")
    if spec.open_clip_name.startswith(HF_HUB_PREFIX):
        advice += ("; an hf-hub model still needs its open_clip_config.json and the text model and "
                   "tokenizer repos it names in the cache")
    return advice + "."


def _raise_if_not_cached(spec: ModelSpec, needed: list[_HubFile], cache_dir: str) -> None:
    missing = [f for f in needed if not f.cached(cache_dir)]
    if missing:
        raise ModelLoadError(
            f"cannot create model {spec.name!r} offline: HF_HUB_OFFLINE is set and the Hugging Face "
            f"cache {cache_dir} lacks {'; '.join(map(str, missing))}. {_advice(spec, needed)}")


@contextlib.contextmanager
def _download_errors(spec: ModelSpec, needed: list[_HubFile]) -> Iterator[None]:
    """Re-raise failures of a build that downloads as :class:`ModelLoadError` with advice."""
    try:
        yield
    except ModelLoadError:
        raise
    except Exception as exc:
        if not needed:
            raise
        raise ModelLoadError(f"could not download model {spec.name!r}: {exc}. {_advice(spec, needed)}") from exc
