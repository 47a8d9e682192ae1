"""MSLoRA-CR: modality-specific LoRA pools with contrastive regularisation (Zhang et al., ACM MM 2025;
docs/methods.md#4-mslora-cr).

Frozen CLIP, one LoRA adapter per task (:mod:`.lora_pool`); while task t trains, adapters 1..t are
active (summed) and only adapter t is trainable; task k is evaluated with adapters 1..k.

    L = L_task + alpha * L_CR + beta * L_ortho                      (alpha 0.1, beta 0.01)

(alpha and beta: the authors' ``scripts/finetune_mslora_cr_ortho.sh``, line 77, ``--alpha 0.1 --beta
0.01``; sim as their ``get_sim_score`` in ``llava/model/language_model/llava_mistral.py``.)

    sim(t, k) = mean over tensors p of exp(-|| P_t[p] - stopgrad(P_k[p]) ||_F)
    L_CR      = sum over k < t of (1 - sim(t, k))  if modality(k) == modality(t)   (pulled together)
                                   sim(t, k)       otherwise                        (pushed apart)
    L_ortho   = mean over the LoRA modules of adapters 1..t of ||A A^T - I_r||_F^2 + ||B^T B - I_r||_F^2
                (0 on the first task)

P_k is the list of adapter k's LoRA tensors (A and B of every targeted layer; an attention layer
holds two pairs, its q/k/v and output projections). modality(k) is ``Task.modality``. As in the
authors' code (VentusAislant/MSLoRA_CR), L_ortho averages over every adapter trained so far and the
current one, and is skipped on the first task; only adapter t receives its gradient (the frozen
adapters' terms are constants that set the mean's scale). Launch:

    medcl run experiments/mslora_synthmed.yaml
    python experiments/compare_lora.py            # mslora_cr vs lora_incremental vs lora_separate
"""
from __future__ import annotations

from typing import Sequence

import torch
from pydantic import Field

from medcl.strategies.base import register_strategy
from medcl.strategies.lora_pool import LoraParams, LoraPoolStrategy


def adapter_similarity(current: Sequence[torch.Tensor], peer: Sequence[torch.Tensor]) -> torch.Tensor:
    """sim = mean over p of exp(-||current[p] - stopgrad(peer[p])||_F)."""
    norms = [torch.linalg.vector_norm(c.float() - q.detach().float()) for c, q in zip(current, peer)]
    return torch.exp(-torch.stack(norms)).mean()


def contrastive_regularisation(current: Sequence[torch.Tensor],
                               peers: Sequence[tuple[Sequence[torch.Tensor], bool]]) -> torch.Tensor:
    """L_CR over ``peers`` = [(P_k, same_modality_k)]: sum of 1 - sim (same) or sim (different)."""
    total = current[0].new_zeros((), dtype=torch.float32)
    for tensors, same_modality in peers:
        sim = adapter_similarity(current, tensors)
        total = total + (1.0 - sim if same_modality else sim)
    return total


def orthogonality(pairs: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """L_ortho = mean over (A (r, in), B (out, r)) of ||A A^T - I_r||_F^2 + ||B^T B - I_r||_F^2."""
    terms = []
    for a, b in pairs:
        a, b = a.float(), b.float()
        eye = torch.eye(a.shape[0], device=a.device)
        terms.append(((a @ a.T - eye) ** 2).sum() + ((b.T @ b - eye) ** 2).sum())
    return torch.stack(terms).mean()


@register_strategy("mslora_cr")
class MSLoRACR(LoraPoolStrategy):
    description = "frozen model + LoRA per task (1..t active) + alpha L_CR (modality contrast) + beta L_ortho"

    class Params(LoraParams):
        alpha: float = Field(0.1, ge=0, description="weight of the contrastive regularisation L_CR")
        beta: float = Field(0.01, ge=0, description="weight of the orthogonality term L_ortho")

    def loss(self, ctx, batch) -> dict[str, torch.Tensor]:
        ce = ctx.task_loss(batch)
        t = ctx.task_index
        current = self.adapter_tensors(t)
        modality = ctx.tasks[t].modality
        peers = [(self.adapter_tensors(k), ctx.tasks[k].modality == modality) for k in range(t)]
        cr = contrastive_regularisation(current, peers)
        ortho = (orthogonality([pair for k in range(t + 1) for pair in self.pool.lora_pairs(k)])
                 if t > 0 else ce.new_zeros(()))
        return {"loss": ce + self.params.alpha * cr + self.params.beta * ortho, "ce": ce, "cr": cr, "ortho": ortho}
