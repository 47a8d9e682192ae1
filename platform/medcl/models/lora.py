"""A pool of LoRA adapters on an open_clip model, one named peft adapter per task (MSLoRA-CR's pool).

Every targeted layer W gets one pair (A_k, B_k) per adapter k (A Kaiming-uniform, B zero, peft's
init), and with the active set S its forward is

    y = W x + sum over k in S of (lora_alpha / r) * B_k A_k dropout(x)

(peft's ``base_model.set_adapter([...])`` sums every active adapter). The pool is injected in
place: ``pool.model`` is the open_clip model itself (``encode_image``/``encode_text`` unchanged),
its base weights frozen, and :meth:`LoraPool.set_active` also makes exactly one adapter trainable.

Targets are a regex that peft full-matches against module names. The default puts LoRA on the
attention (``nn.MultiheadAttention``: its fused q/k/v projection and its output projection) and
the MLP (``mlp.c_fc``, ``mlp.c_proj``) of every residual block of both towers (``visual.`` is the
image tower, ``transformer.`` the text tower). A ResNet image tower has no such blocks: the pool
then covers the text tower only; a regex that matches nothing is a :class:`ModelLoadError`.

peft's own ``MultiheadAttention`` LoRA adds B A into the frozen weights before every forward and
subtracts it after, so the frozen base drifts by float round-off at every step; ``ExactLoraMHA``
(:mod:`medcl.models.lora_mha`, a module of its own so that peft is imported only when a pool is built)
keeps peft's layer (names, merge, state) but computes attention functionally with W + sum B A,
so the base is never written and stays bit-identical (dropout is not applied to the attention's
LoRA path, as in peft's merge-based forward).

Each adapter is saved on its own (:meth:`LoraPool.adapter_state`, ``save_adapter``/``load_adapter``,
safetensors), keyed by the tensors' names in ``model.state_dict()``.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Sequence

import torch

from medcl.models.weights import ModelLoadError, load_state_into, read_state_dict, save_weights

log = logging.getLogger(__name__)

DEFAULT_TARGETS = r"(visual\.)?transformer\.resblocks\.\d+\.(attn|mlp\.c_fc|mlp\.c_proj)"
TOWERS = {"image": "visual.", "text": "transformer."}


def adapter_name(index: int) -> str:
    """peft adapter name of task ``index`` (0-based): ``task1``, ``task2``, ..."""
    return f"task{index + 1}"


def lora_config(*, rank: int, lora_alpha: float, dropout: float, targets: str):
    """A peft ``LoraConfig`` whose MultiheadAttention layers are :class:`ExactLoraMHA`."""
    from peft import LoraConfig  # peft (~1 s: transformers' modelling code, accelerate) only where LoRA is used

    from medcl.models.lora_mha import ExactLoraMHA

    config = LoraConfig(r=rank, lora_alpha=lora_alpha, lora_dropout=dropout, target_modules=targets, bias="none")
    config._register_custom_module({torch.nn.MultiheadAttention: ExactLoraMHA})
    return config


def matching_modules(model: torch.nn.Module, targets: str) -> list[str]:
    """Names of the modules of ``model`` that ``targets`` full-matches (what peft will wrap)."""
    pattern = re.compile(targets)
    return [name for name, _ in model.named_modules() if name and pattern.fullmatch(name)]


class LoraPool:
    """``num_adapters`` LoRA adapters injected into ``model`` (in place); see the module docstring.

    Adapter ``k``'s initial A is drawn from ``torch.manual_seed(seed + k)`` (B is zero), so every
    worker and every restart builds the same pool. Nothing is active until :meth:`set_active`.
    """

    def __init__(self, model: torch.nn.Module, num_adapters: int, *, rank: int = 8, lora_alpha: float = 16,
                 dropout: float = 0.0, targets: str = DEFAULT_TARGETS, seed: int = 0):
        matched = matching_modules(model, targets)
        if not matched:
            raise ModelLoadError(
                f"LoRA targets {targets!r} match no module of the model; the default targets the "
                "attention and MLP of transformer blocks (a ViT such as medcl-tiny-vit, and every text tower). "
                "Set strategy.targets to a regex over the names printed by model.named_modules().")
        for tower, prefix in TOWERS.items():
            if not any(name.startswith(prefix) for name in matched):
                log.warning("LoRA targets %r match nothing in the %s tower (%s...); it stays frozen without adapters",
                            targets, tower, prefix)
        from peft import get_peft_model
        from peft.tuners.lora.layer import LoraLayer

        config = lora_config(rank=rank, lora_alpha=lora_alpha, dropout=dropout, targets=targets)
        self.model, self.num_adapters, self.targets = model, num_adapters, matched
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.peft = get_peft_model(model, config, adapter_name=adapter_name(0))
            for k in range(1, num_adapters):
                torch.manual_seed(seed + k)
                self.peft.add_adapter(adapter_name(k), config)
        self.layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
        self.active: list[int] = []
        self.trainable: int | None = None
        self.set_active([])

    def set_active(self, indices: Sequence[int], trainable: int | None = None) -> None:
        """Adapters ``indices`` active (summed); only adapter ``trainable`` requires grad (none if
        None); the base stays frozen. An empty list switches every adapter off (the base model)."""
        indices = sorted(set(indices))
        if trainable is not None and trainable not in indices:
            raise ValueError(f"trainable adapter {trainable} must be active ({indices})")
        if indices:
            self.peft.base_model.set_adapter([adapter_name(k) for k in indices])
        for layer in self.layers:
            layer.enable_adapters(bool(indices))
        self.active, self.trainable = indices, trainable
        wanted = adapter_name(trainable) if trainable is not None else None
        for name, p in self.model.named_parameters():
            p.requires_grad_(wanted is not None and self._adapter_of(name) == wanted)

    def adapter_parameters(self, index: int) -> dict[str, torch.nn.Parameter]:
        """Adapter ``index``'s tensors by their name in ``model.named_parameters()`` (A and B of
        every targeted layer, in a fixed order)."""
        wanted = adapter_name(index)
        return {name: p for name, p in self.model.named_parameters() if self._adapter_of(name) == wanted}

    def lora_pairs(self, index: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(A (r, in), B (out, r)) of adapter ``index`` for every LoRA module (an attention layer has two)."""
        wanted = adapter_name(index)
        return [(layer.lora_A[wanted].weight, layer.lora_B[wanted].weight) for layer in self.layers if wanted in layer.lora_A]

    def base_state(self) -> dict[str, torch.Tensor]:
        """The frozen weights: every entry of ``model.state_dict()`` that belongs to no adapter."""
        return {name: t for name, t in self.model.state_dict().items() if self._adapter_of(name) is None}

    def adapter_state(self, index: int) -> dict[str, torch.Tensor]:
        """Adapter ``index``'s entries of ``model.state_dict()`` (detached, CPU copies)."""
        wanted = adapter_name(index)
        return {name: t.detach().to("cpu", copy=True) for name, t in self.model.state_dict().items()
                if self._adapter_of(name) == wanted}

    def save_adapter(self, index: int, path: str | Path) -> Path:
        return save_weights(self.adapter_state(index), path, metadata={"adapter": adapter_name(index)})

    def load_adapter(self, index: int, path: str | Path) -> None:
        """Load a file written by :meth:`save_adapter` for the same adapter index and targets."""
        state = read_state_dict(path)
        expected = set(self.adapter_state(index))
        if set(state) != expected:
            raise ModelLoadError(f"{path} does not hold adapter {adapter_name(index)} of this pool "
                                 f"({len(set(state) ^ expected)} tensor names differ); same targets and index?")
        load_state_into(self.model, state, strict=False, source=f"adapter file {path}")

    @staticmethod
    def _adapter_of(name: str) -> str | None:
        """``task<k>`` for a LoRA tensor name (``...lora_A.task3.weight``), else None."""
        match = re.search(r"\.lora_(?:A|B|embedding_A|embedding_B|magnitude_vector)\.([^.]+)(?:\.|$)", name)
        return match.group(1) if match else None
