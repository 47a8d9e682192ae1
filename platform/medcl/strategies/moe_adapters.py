"""MoE-Adapters (Yu et al., CVPR 2024; docs/methods.md#3-baselines, "MoE-Adapters"): frozen CLIP,
mixture-of-experts adapters beside the MLP of every transformer block of both towers
(:mod:`medcl.models.moe_adapter`: E bottleneck experts per block, one noisy top-k router per task).

    training task t:   router t active; trainable: router t and every expert not frozen; loss CE_ls
    after task t:      in every block, the ``freeze_per_task`` experts router t chose most often
                       while training (counts summed over workers) are frozen for good
    evaluating task k: router k if task k was trained, else the frozen pre-trained model

Defaults follow the authors' MTIL scripts (22 experts, top-2, bottleneck 64, expert dropout 0.1 and
scale 0.1, noise epsilon 0.01, the two most chosen experts per block and tower frozen after each
task). Deviations from the authors' code (JiazuoYu/MoE-Adapters4CL, ``mtil``):

* No DDAS (the distribution-discriminative auto-selector, per-task autoencoders on image features
  that pick the router at test time or send an image to the zero-shot model): medcl's MTIL protocol
  gives the task identity at test time, so task k is evaluated with router k. A task not trained
  yet is evaluated with the experts off, the frozen pre-trained model, which is what DDAS's
  out-of-distribution branch does, so Transfer is the zero-shot reading.
* The authors compute a load-balancing term (cv^2 of importance and load, times 0.01) but never add
  it to the loss; it is left out here too.
* The authors keep all 11 routers in the optimiser (the earlier ones get no gradient); here only
  router t is trainable, with the same effect. Frozen experts stay in use by later routers (shared).
* ``freeze_per_task`` 0 freezes every expert router t chose at least once (stricter than the paper).
* Towers without transformer blocks (ResNet image tower) get no experts (warning at setup, and
  ``moe_blocks_image`` = 0 in metrics.json); the authors' models are ViTs.

metrics.json gets ``trainable_parameters`` (what the last stage trained), ``moe_parameters`` (every
expert and router), ``total_parameters`` (the whole model, base included), ``frozen_experts`` and
the attached blocks per tower. A checkpoint keeps ``moe.safetensors`` (experts and routers) and,
in the first task's only, the frozen base as ``base.safetensors``; the base is otherwise rebuilt
from ``model`` and the seed, and its fingerprint is checked on restore.
"""
from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist
from pydantic import Field, model_validator

from medcl.models import state_fingerprint
from medcl.models.moe_adapter import MoEAdapter, attach, tower_counts
from medcl.strategies.base import Strategy, StrategyParams, register_strategy
from medcl.strategies.common import check_base_fingerprint

MOE_FILE, BASE_FILE = "moe.safetensors", "base.safetensors"


@register_strategy("moe_adapters")
class MoEAdapters(Strategy):
    description = "frozen CLIP + mixture-of-experts adapters (top-k router per task, used experts frozen)"

    class Params(StrategyParams):
        num_experts: int = Field(22, ge=1, description="experts per transformer block (paper: 22)")
        top_k: int = Field(2, ge=1, description="experts each router picks per sample (paper: 2)")
        bottleneck: int = Field(64, ge=1, description="hidden width r of every expert (paper: 64)")
        expert_dropout: float = Field(0.1, ge=0, lt=1, description="dropout inside the experts (paper: 0.1)")
        expert_scale: float = Field(0.1, gt=0, description="s: each expert's output is scaled by s (paper: 0.1)")
        noise_epsilon: float = Field(0.01, gt=0, description="minimum std of the router noise in training")
        freeze_per_task: int = Field(2, ge=0, description="experts per block frozen after each task, the most "
                                     "chosen (paper: 2); 0: every expert the task's router chose")

        @model_validator(mode="after")
        def _k_fits(self):
            if self.top_k > self.num_experts:
                raise ValueError(f"top_k ({self.top_k}) must not exceed num_experts ({self.num_experts})")
            return self

    def __init__(self, params=None):
        super().__init__(params)
        self.adapters: dict[str, MoEAdapter] = {}
        self.frozen: dict[str, set[int]] = {}
        self.trained: list[int] = []
        self.base_fingerprint: str | None = None
        self.trainable_count = 0

    def setup(self, ctx) -> None:
        p = self.params
        ctx.model.requires_grad_(False)
        self.base_fingerprint = state_fingerprint(ctx.model.state_dict())
        self.adapters = attach(ctx.model, num_tasks=len(ctx.tasks), num_experts=p.num_experts, top_k=p.top_k,
                               bottleneck=p.bottleneck, dropout=p.expert_dropout, scale=p.expert_scale,
                               noise_epsilon=p.noise_epsilon, seed=ctx.seed)
        ctx.model.to(ctx.device)
        self.frozen = {name: set() for name in self.adapters}
        self._set_task(None, trainable=False)

    def _set_task(self, task: int | None, trainable: bool) -> None:
        """Router ``task`` in every block (None: experts off); ``trainable``: router ``task`` and the
        unfrozen experts require grad, nothing else does."""
        for name, adapter in self.adapters.items():
            adapter.task = task
            adapter.requires_grad_(False)
            if trainable:
                for p in adapter.router_parameters(task):
                    p.requires_grad_(True)
                for e in range(len(adapter.experts)):
                    if e not in self.frozen[name]:
                        adapter.experts[e].requires_grad_(True)

    def before_stage(self, ctx) -> None:
        self._set_task(ctx.task_index, trainable=True)
        for adapter in self.adapters.values():
            adapter.reset_counts()

    def trainable_parameters(self, ctx) -> list[torch.nn.Parameter]:
        params = [p for adapter in self.adapters.values() for p in adapter.parameters() if p.requires_grad]
        self.trainable_count = sum(p.numel() for p in params)
        return params

    def after_stage(self, ctx) -> None:
        for name, adapter in self.adapters.items():
            counts = adapter.counts.clone().to(ctx.device)
            if ctx.world_size > 1:
                dist.all_reduce(counts, op=dist.ReduceOp.SUM)
            self.frozen[name] |= self.most_chosen(counts.cpu(), self.params.freeze_per_task)
        self.trained = sorted(set(self.trained) | set(ctx.stage.train_tasks))
        self._set_task(None, trainable=False)

    @staticmethod
    def most_chosen(counts: torch.Tensor, n: int) -> set[int]:
        """The ``n`` experts with the highest counts among those chosen at least once (all of them if n = 0)."""
        chosen = (counts > 0).nonzero().flatten()
        if n:
            chosen = chosen[counts[chosen].argsort(descending=True, stable=True)[:n]]
        return {int(e) for e in chosen}

    @contextlib.contextmanager
    def eval_model(self, ctx, task_index: int):
        """Router ``task_index`` if that task was trained, else the experts off (the frozen base);
        what trains (``requires_grad``) is left as it is."""
        previous = next(iter(self.adapters.values())).task
        for adapter in self.adapters.values():
            adapter.task = task_index if task_index in self.trained else None
        try:
            yield ctx.model
        finally:
            for adapter in self.adapters.values():
                adapter.task = previous

    def extra_metrics(self, ctx) -> dict[str, float]:
        moe = sum(p.numel() for adapter in self.adapters.values() for p in adapter.parameters())
        blocks = tower_counts(self.adapters)
        return {"trainable_parameters": self.trainable_count, "moe_parameters": moe,
                "total_parameters": sum(p.numel() for p in ctx.model.parameters()),
                "frozen_experts": sum(len(f) for f in self.frozen.values()),
                "moe_blocks_image": blocks["image"], "moe_blocks_text": blocks["text"]}

    def _moe_state(self, ctx) -> dict[str, torch.Tensor]:
        return {name: t for name, t in ctx.model.state_dict().items() if ".moe_adapter." in name}

    def model_files(self, ctx) -> dict[str, dict[str, torch.Tensor]]:
        """The experts and routers; the frozen base only in the first task's checkpoint."""
        moe = self._moe_state(ctx)
        files = {MOE_FILE: {name: t.detach().to("cpu", copy=True) for name, t in moe.items()}}
        if ctx.stage_index == 0:
            files[BASE_FILE] = {name: t.detach().to("cpu", copy=True) for name, t in ctx.model.state_dict().items()
                                if name not in moe}
        return files

    def state_dict(self) -> dict:
        frozen = torch.zeros(len(self.adapters), self.params.num_experts, dtype=torch.bool)
        for i, name in enumerate(self.adapters):
            frozen[i, sorted(self.frozen[name])] = True
        return {"trained": list(self.trained), "frozen": frozen, "base_fingerprint": self.base_fingerprint}

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        check_base_fingerprint(state.get("base_fingerprint"), self.base_fingerprint, "MoE adapters")
        frozen = state["frozen"]
        if tuple(frozen.shape) != (len(self.adapters), self.params.num_experts):
            raise ValueError(f"the checkpoint's frozen-expert table is {tuple(frozen.shape)}, this model has "
                             f"{len(self.adapters)} blocks of {self.params.num_experts} experts")
        self.trained = [int(k) for k in state["trained"]]
        self.frozen = {name: {int(e) for e in frozen[i].nonzero().flatten()} for i, name in enumerate(self.adapters)}
