"""PRIMED's training objectives (docs/methods.md#5-primed), on a batch of B retrieved image-caption pairs.

With M^i the current model's (B, B) image-text cosine matrix (row r: image r against every
caption), M^{i-1} the previous-task teacher's, and logits Z = M / tau:

    L_CKT = sum over rows r of KL( softmax(Z^{i-1}_r) || softmax(Z^i_r) )
          + sum over columns c of KL( softmax(Z^{i-1}_{:,c}) || softmax(Z^i_{:,c}) )
    L_CMC = CE(Z^i, I) + CE(Z^i^T, I)                CLIP InfoNCE against the identity, both directions
                                                      summed as the paper writes it (each CE a mean over rows)
    L_train = L_CE + alpha * L_CKT + beta * L_CMC     (alpha = 1, beta = 0.25)

Dynamic Fisher guard, per step, over the trainable parameters theta_j:

    W_j   = ( d(L_train - L_CE) / d theta_j )^2           detached (no second-order gradient)
    L_DFG = sum_j W_j * (theta_j - theta_j^{prev task})^2

L_DFG itself is ``medcl.strategies.l2.l2_penalty(model, anchor, W)``.

Reduction of L_CKT (``reduction``), a choice the paper leaves open (it writes a sum and gives no tau):

    sum   the formula as written: both sums over the B rows / B columns, so L_CKT grows with B
    mean  each sum divided by B (the mean KL per row plus the mean KL per column), so the distillation
          term does not grow with the reference batch; the paper's Table 4c (alpha 0.5 to 1.5 changes
          little) is what one expects when CKT does not swamp the task loss

The strategy's default is chosen by the ablation in docs/findings.md.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def cosine_matrix(image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """(B, B) cosine similarities M[r, c] = cos(image r, caption c) (inputs need not be normalised)."""
    return F.normalize(image_features.float(), dim=-1) @ F.normalize(text_features.float(), dim=-1).t()


def pair_cosines(model: torch.nn.Module, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """M for a batch of pairs through ``model``'s two towers."""
    return cosine_matrix(model.encode_image(images, normalize=True), model.encode_text(tokens, normalize=True))


CKT_REDUCTIONS = ("sum", "mean")


def _kl_rows(teacher_logits: torch.Tensor, student_logits: torch.Tensor, reduction: str) -> torch.Tensor:
    """KL(softmax(teacher_row) || softmax(student_row)) summed over rows ("sum") or averaged ("mean")."""
    return F.kl_div(F.log_softmax(student_logits, dim=-1), F.log_softmax(teacher_logits, dim=-1),
                    log_target=True, reduction="sum" if reduction == "sum" else "batchmean")


def ckt_loss(teacher_cos: torch.Tensor, student_cos: torch.Tensor, tau: float, reduction: str = "sum") -> torch.Tensor:
    """L_CKT: row-wise plus column-wise KL of the teacher's to the student's Z = M / tau, each summed
    over rows/columns or averaged (``reduction``, module docstring)."""
    if reduction not in CKT_REDUCTIONS:
        raise ValueError(f"reduction must be one of {CKT_REDUCTIONS}, got {reduction!r}")
    zt, zs = teacher_cos.float().detach() / tau, student_cos.float() / tau
    return _kl_rows(zt, zs, reduction) + _kl_rows(zt.t(), zs.t(), reduction)


def cmc_loss(student_cos: torch.Tensor, tau: float) -> torch.Tensor:
    """L_CMC: CLIP InfoNCE of Z = M / tau against the identity, image-to-text plus text-to-image."""
    z = student_cos.float() / tau
    target = torch.arange(z.shape[0], device=z.device)
    return F.cross_entropy(z, target) + F.cross_entropy(z.t(), target)


def fisher_guard_weights(non_ce_loss: torch.Tensor, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """W_j = (d non_ce_loss / d theta_j)^2, detached; zeros for parameters the loss does not reach.

    The graph is kept (``retain_graph``) so the full loss can still be back-propagated this step.
    """
    names = list(params)
    grads = torch.autograd.grad(non_ce_loss, [params[n] for n in names], retain_graph=True, allow_unused=True)
    return {n: (torch.zeros_like(params[n]) if g is None else g.detach() ** 2) for n, g in zip(names, grads)}

