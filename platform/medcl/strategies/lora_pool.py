"""What the LoRA strategies share: a frozen model with one LoRA adapter per task (medcl.models.lora).

    training task t:    active adapters S_train(t), only adapter t trainable, the base frozen
    evaluating task k:  active adapters S_eval(k) = the trained ones among S_train(k)

Incremental pools (``mslora_cr``, ``lora_incremental``) use S_train(t) = {1..t}, so task k is
evaluated with adapters 1..k (docs/methods.md#4-mslora-cr); ``lora_separate`` uses S_train(t) = {t}.
A task not trained yet (the matrix's upper triangle, Transfer) is evaluated with the adapters
trained so far among its set: for an incremental pool that is 1..t at time t (the model as it
stands, the natural zero-shot reading; adapter k > t has B = 0 and would add nothing anyway), for
separate adapters the base model, like ``specialist``'s starting model.

All T adapters are created in :meth:`setup` (A from ``seed + k``, B = 0), so a restarted worker
builds the same pool before the checkpoint is restored. A checkpoint keeps each trained adapter as
``adapter-<k>.safetensors`` and the frozen base once, as ``base.safetensors`` of the first task's
checkpoint; the base is otherwise rebuilt by the engine from ``model`` and the seed, and its
fingerprint (sha256, :func:`medcl.models.state_fingerprint`) is kept in the strategy state and
checked on restore, so a changed ``model.pretrained`` cannot silently mix with trained adapters.
"""
from __future__ import annotations

import contextlib
import re
from typing import ClassVar

import torch
from pydantic import Field, field_validator

from medcl.models import state_fingerprint
from medcl.models.lora import DEFAULT_TARGETS, LoraPool
from medcl.strategies.base import Strategy, StrategyParams
from medcl.strategies.common import check_base_fingerprint

BASE_FILE = "base.safetensors"


class LoraParams(StrategyParams):
    rank: int = Field(64, ge=1, description="r: rank of every LoRA pair (paper: 64)")
    lora_alpha: float = Field(64.0, gt=0, description="LoRA scaling numerator: B A x is scaled by lora_alpha / r (paper: 64)")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the LoRA input of linear layers (paper: 0)")
    targets: str = Field(DEFAULT_TARGETS, description="regex full-matched against module names: the layers that get LoRA")

    @field_validator("targets")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression ({exc})") from exc
        return value


def adapter_file(index: int) -> str:
    """Checkpoint file of task ``index``'s adapter (0-based index, 1-based name like ``task-<t>``)."""
    return f"adapter-{index + 1}.safetensors"


class LoraPoolStrategy(Strategy):
    """One LoRA adapter per task on a frozen model; subclasses choose :attr:`separate` and the loss."""

    Params = LoraParams
    separate: ClassVar[bool] = False

    def __init__(self, params=None):
        super().__init__(params)
        self.pool: LoraPool | None = None
        self.trained: list[int] = []
        self.base_fingerprint: str | None = None

    def adapters_for(self, task_index: int) -> list[int]:
        """S_train(task_index): the adapters active while that task trains."""
        return [task_index] if self.separate else list(range(task_index + 1))

    def setup(self, ctx) -> None:
        p = self.params
        self.pool = LoraPool(ctx.model, len(ctx.tasks), rank=p.rank, lora_alpha=p.lora_alpha, dropout=p.dropout,
                             targets=p.targets, seed=ctx.seed)
        ctx.model.to(ctx.device)
        self.base_fingerprint = state_fingerprint(self.pool.base_state())

    def before_stage(self, ctx) -> None:
        self.pool.set_active(self.adapters_for(ctx.task_index), trainable=ctx.task_index)

    def trainable_parameters(self, ctx) -> list[torch.nn.Parameter]:
        return list(self.pool.adapter_parameters(ctx.task_index).values())

    def after_stage(self, ctx) -> None:
        self.trained = sorted(set(self.trained) | set(ctx.stage.train_tasks))
        self.pool.set_active(self.pool.active)  # nothing trainable between stages

    @contextlib.contextmanager
    def eval_model(self, ctx, task_index: int):
        """The model with S_eval(task_index) active; the training state is restored afterwards."""
        previous = (self.pool.active, self.pool.trainable)
        self.pool.set_active([k for k in self.adapters_for(task_index) if k in self.trained])
        try:
            yield ctx.model
        finally:
            self.pool.set_active(*previous)

    def extra_metrics(self, ctx) -> dict[str, float]:
        """``adapters`` trained so far and the ``adapter_parameters`` they hold (what is stored besides the base)."""
        stored = sum(p.numel() for k in self.trained for p in self.pool.adapter_parameters(k).values())
        return {"adapters": len(self.trained), "adapter_parameters": stored}

    def model_files(self, ctx) -> dict[str, dict[str, torch.Tensor]]:
        """Each trained adapter as its own file; the frozen base only in the first task's checkpoint."""
        files = {adapter_file(k): self.pool.adapter_state(k) for k in self.trained}
        if ctx.stage_index == 0:
            files[BASE_FILE] = {name: t.detach().to("cpu", copy=True) for name, t in self.pool.base_state().items()}
        return files

    def state_dict(self) -> dict:
        return {"trained": list(self.trained), "base_fingerprint": self.base_fingerprint}

    def load_state_dict(self, state: dict) -> None:
        self.trained = [int(k) for k in state.get("trained", [])]
        check_base_fingerprint(state.get("base_fingerprint"), self.base_fingerprint, "LoRA adapters")

    def adapter_tensors(self, index: int) -> list[torch.Tensor]:
        """P_index: A and B of every LoRA module of adapter ``index``, in module order."""
        return [tensor for pair in self.pool.lora_pairs(index) for tensor in pair]
