"""CLIP models for medcl: a registry of named open_clip models, weights I/O, zero-shot heads.

The ``medcl-*`` JSON configs are registered with open_clip when the factory first uses it
(open_clip is imported then, not by importing this package: :mod:`medcl.models.factory`).
"""
from medcl.models.factory import (
    MODELS,
    ModelBundle,
    ModelSpec,
    UnknownModelError,
    check_model_source,
    create_model,
    list_models,
    register_spec,
)
from medcl.models.weights import ModelLoadError, load_weights, save_weights, state_fingerprint
from medcl.models.zeroshot import ZeroShotClassifier, clip_logits, encode_class_prompts

__all__ = [
    "MODELS",
    "ModelBundle",
    "ModelLoadError",
    "ModelSpec",
    "UnknownModelError",
    "ZeroShotClassifier",
    "check_model_source",
    "clip_logits",
    "create_model",
    "encode_class_prompts",
    "list_models",
    "load_weights",
    "register_spec",
    "save_weights",
    "state_fingerprint",
]
