"""Mixture-of-experts adapters beside the MLP of transformer blocks (Yu et al., "Boosting Continual
Learning of Vision-Language Models via Mixture-of-Experts Adapters", CVPR 2024; the authors' code
JiazuoYu/MoE-Adapters4CL, ``mtil/clip/model.py`` and ``adapter.py``).

In every attached block, with x the residual stream after attention (the MLP's input before its
LayerNorm), the block's MLP output becomes

    mlp(ln_2(x)) + sum over e of G_t(x)[e] * s * up_e(dropout(relu(down_e(x))))

with E experts (down_e: D -> r, up_e: r -> D, s = 0.1, dropout 0.1; LoRA-style init: down Kaiming
uniform, up and both biases zero, so a fresh adapter adds nothing) and one router per task t:
noisy top-k gating (Shazeer et al. 2017) on h = x's first token (the class token of a ViT, the
start-of-text token of a text tower), one routing per sample for all its tokens:

    logits = h W_gate,t + (training only) eps * (softplus(h W_noise,t) + 0.01),  eps ~ N(0, 1)
    G_t(x) = softmax over the top-k logits, zero elsewhere      (W_gate,t = W_noise,t = 0 at start)

An attached block keeps its own names; the experts and routers live in ``<block>.moe_adapter``
(``experts.<e>.down``/``.up``, ``w_gate.<t>``, ``w_noise.<t>``). The output is added by a forward
hook on ``<block>.mlp`` (x is taken by a pre-hook on the block's second LayerNorm), so it passes
through the block's layer scale ``ls_2`` with the MLP's (identity in CLIP and BiomedCLIP).

Attached blocks: every module with an ``mlp`` child and a second LayerNorm ``ln_2`` (open_clip's
residual blocks, both towers of a ViT CLIP) or ``norm2`` (timm ViT blocks, BiomedCLIP's image
tower). A tower without such blocks (a ResNet image tower such as ``medcl-tiny``'s, a Hugging Face
BERT text tower) gets no experts: :func:`attach` logs a warning naming it, and the counts per tower
are reported; a model with no such block at all is a :class:`ModelLoadError`.
"""
from __future__ import annotations

import logging
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from medcl.models.weights import ModelLoadError

log = logging.getLogger(__name__)
TOWERS = {"image": "visual.", "text": ""}


class Expert(nn.Module):
    """The authors' ``Adapter`` (init_option lora, adapter_scalar 0.1, no LayerNorm): s * up(drop(relu(down(x))))."""

    def __init__(self, dim: int, bottleneck: int, dropout: float, scale: float):
        super().__init__()
        self.down, self.up = nn.Linear(dim, bottleneck), nn.Linear(bottleneck, dim)
        self.dropout, self.scale = dropout, scale
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        for tensor in (self.down.bias, self.up.weight, self.up.bias):
            nn.init.zeros_(tensor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.up(F.dropout(F.relu(self.down(x)), self.dropout, self.training))


class MoEAdapter(nn.Module):
    """E experts and one noisy top-k router per task for one block; ``task`` selects the router
    (None: switched off, the block is the original one). ``counts[e]``: samples routed to expert e
    by forwards in training mode since the last :meth:`reset_counts` (the authors' ``choose_map``)."""

    def __init__(self, dim: int, *, num_experts: int, num_tasks: int, top_k: int, bottleneck: int,
                 dropout: float, scale: float, noise_epsilon: float, batch_first: bool):
        super().__init__()
        self.experts = nn.ModuleList(Expert(dim, bottleneck, dropout, scale) for _ in range(num_experts))
        self.w_gate = nn.ParameterList(nn.Parameter(torch.zeros(dim, num_experts)) for _ in range(num_tasks))
        self.w_noise = nn.ParameterList(nn.Parameter(torch.zeros(dim, num_experts)) for _ in range(num_tasks))
        self.top_k, self.noise_epsilon, self.batch_first = top_k, noise_epsilon, batch_first
        self.register_buffer("counts", torch.zeros(num_experts, dtype=torch.int64), persistent=False)
        self.task: int | None = None
        self._x: torch.Tensor | None = None

    def reset_counts(self) -> None:
        self.counts.zero_()

    def gates(self, h: torch.Tensor) -> torch.Tensor:
        """(N, E) gates of the current task's router for first tokens ``h`` (N, D)."""
        logits = h @ self.w_gate[self.task].to(h.dtype)
        if self.training:
            std = F.softplus(h @ self.w_noise[self.task].to(h.dtype)) + self.noise_epsilon
            logits = logits + torch.randn_like(logits) * std
        top_logits, top_indices = logits.topk(self.top_k, dim=1)
        return torch.zeros_like(logits).scatter(1, top_indices, top_logits.softmax(dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """sum_e G(x)[:, e] * expert_e(x), computing each expert on the samples routed to it only."""
        xb = x if self.batch_first else x.transpose(0, 1)  # (N, L, D)
        gates = self.gates(xb[:, 0])
        if self.training:
            self.counts += (gates > 0).sum(dim=0).to(self.counts.device)
        out = torch.zeros_like(xb)
        for e in (gates > 0).any(dim=0).nonzero().flatten().tolist():
            rows = (gates[:, e] > 0).nonzero().flatten()
            out = out.index_add(0, rows, gates[rows, e, None, None].to(xb.dtype) * self.experts[e](xb[rows]))
        return out if self.batch_first else out.transpose(0, 1)

    def _take_input(self, module: nn.Module, args: tuple) -> None:
        self._x = args[0] if self.task is not None else None

    def _add_output(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        if self.task is None or self._x is None:
            return output
        x, self._x = self._x, None
        return output + self(x)

    def expert_parameters(self, e: int) -> list[nn.Parameter]:
        return list(self.experts[e].parameters())

    def router_parameters(self, task: int) -> list[nn.Parameter]:
        return [self.w_gate[task], self.w_noise[task]]


def _blocks(model: nn.Module) -> list[tuple[str, nn.Module, bool]]:
    """(name, block, batch_first) of every block with an ``mlp`` and an ``ln_2``/``norm2`` child."""
    found, batch_first = [], {}
    for name, module in model.named_modules():
        if hasattr(module, "batch_first") and isinstance(getattr(module, "batch_first"), bool):
            batch_first[name] = module.batch_first
        children = dict(module.named_children())
        if "mlp" in children and ("ln_2" in children or "norm2" in children):
            parents = [p for p in batch_first if p == "" or name.startswith(p + ".")]
            found.append((name, module, batch_first[max(parents, key=len)] if parents else True))
    return found


def attach(model: nn.Module, *, num_tasks: int, num_experts: int = 22, top_k: int = 2, bottleneck: int = 64,
           dropout: float = 0.1, scale: float = 0.1, noise_epsilon: float = 1e-2, seed: int = 0) -> dict[str, MoEAdapter]:
    """Add a :class:`MoEAdapter` to every transformer block of ``model`` (in place, experts drawn from
    ``torch.manual_seed(seed)`` so every worker and restart builds the same); block name -> adapter.
    Every adapter starts switched off (``task = None``)."""
    blocks = _blocks(model)
    if not blocks:
        raise ModelLoadError("MoE adapters need transformer blocks (a module with an `mlp` and an `ln_2` or `norm2`), "
                             "and this model has none in either tower: use a ViT model such as medcl-tiny-vit-p4")
    for tower, prefix in TOWERS.items():
        if not any(_tower(name) == tower for name, _, _ in blocks):
            log.warning("the %s tower has no transformer block: it gets no MoE adapters and stays the frozen "
                        "pre-trained tower (a ResNet or Hugging Face tower)", tower)
    adapters = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name, block, batch_first in blocks:
            norm = block.ln_2 if hasattr(block, "ln_2") else block.norm2
            dim = norm.normalized_shape[-1]
            adapter = MoEAdapter(dim, num_experts=num_experts, num_tasks=num_tasks, top_k=top_k, bottleneck=bottleneck,
                                 dropout=dropout, scale=scale, noise_epsilon=noise_epsilon, batch_first=batch_first)
            block.moe_adapter = adapter
            norm.register_forward_pre_hook(adapter._take_input)
            block.mlp.register_forward_hook(adapter._add_output)
            adapters[name] = adapter
    return adapters


def _tower(block_name: str) -> str:
    return "image" if block_name.startswith(TOWERS["image"]) else "text"


def tower_counts(adapters: dict[str, MoEAdapter]) -> dict[str, int]:
    """Attached blocks per tower."""
    return {tower: sum(_tower(name) == tower for name in adapters) for tower in TOWERS}
