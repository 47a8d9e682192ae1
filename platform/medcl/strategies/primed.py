"""PRIMED: retrieval-guided continual learning (Chen et al., "Forging a Dynamic Memory"; docs/methods.md#5-primed).

    L = CE_ls + alpha * L_CKT + beta * L_CMC + dfg * L_DFG            (alpha = 1, beta = 0.25)

on the task batch and a batch of ``reference_batch_size`` retrieved image-caption pairs (global,
split over workers) from the task's *reference set* (formulas in :mod:`medcl.primed.losses`).
The teacher of L_CKT is the previous-task model: a frozen copy taken in ``before_stage`` (for the
first task, the starting model), :func:`medcl.models.norm.teacher_copy` (``requires_grad=False``,
BatchNorm normalising as the student's without updating statistics), outside the gradient
all-reduce; the student's reference pass keeps its running statistics
(:func:`medcl.models.norm.running_statistics_kept`). L_DFG's anchor is the same previous-task model's weights.

Reference sets are planned on the driver before the TorchTrainer starts (:meth:`Primed.prepare`,
:mod:`medcl.primed.planner`): question pool M^i -> dynamic siphon -> three-stage retrieval through
the retriever (``index_dir`` in process, or the ``service``) -> ``<plan dir>/reference-<i>.parquet``
(``plan_dir``, default ``<run dir>/primed``; a local path or an object store, :mod:`medcl.storage`);
the plan's directory reaches the workers as ``ctx.prepared``. Workers read their task's file in
``before_stage``; a restart re-runs ``before_stage`` after the engine restored the previous task's
weights, so no state is saved.

``primed_uniform`` (:class:`PrimedUniform`, the ablation of the question hierarchy and dynamic
siphon) is PRIMED with each task's reference set of the same size chosen by BM25 keyword retrieval
(:mod:`medcl.primed.uniform`).

    medcl run experiments/primed_synthmed.yaml
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from pydantic import Field

from medcl.models.norm import running_statistics_kept, teacher_copy
from medcl.paths import PathStr
from medcl.primed.losses import ckt_loss, cmc_loss, fisher_guard_weights, pair_cosines
from medcl.primed.planner import plan_reference_sets
from medcl.primed.scorer import StartingModelScorer
from medcl.primed.stream import read_reference_set, reference_rows
from medcl.storage import place, staged_dir
from medcl.strategies.base import Strategy, StrategyParams, register_strategy
from medcl.strategies.common import l2_penalty, snapshot

PLAN_DIR = "primed"


class PrimedParams(StrategyParams):
    index_dir: PathStr | None = Field(None, description="retrieval index (medcl index build); relative to the cwd")
    corpus_dir: PathStr | None = Field(None, description="corpus (medcl corpus build); default: the one the index records")
    service: bool | None = Field(None, description="retrieve through the named RetrievalService (true), in process "
                                 "(false), or null: the service when Ray has several nodes and index_dir is set")
    service_name: str = Field("medcl-retrieval", min_length=1, description="name of the retrieval service")
    questions: PathStr | None = Field(None, description="question pool file (YAML/JSON); default: the shipped pool")
    k: int = Field(16, ge=1, description="neighbours kept per query (dynamic unique-score threshold, BM25 gate)")
    k_v: int = Field(2, ge=1, description="images kept per distinct caption")
    over_fetch: int = Field(4, ge=1, description="the retriever is asked for k * over_fetch neighbours to see ties")
    tie_decimals: int = Field(6, ge=0, le=9, description="decimals scores are rounded to before counting unique ones")
    a: int = Field(8, ge=0, description="pairs per M_task query (earlier tasks' class labels)")
    b: int = Field(4, ge=0, description="pairs per M_domain query (pool questions of earlier tasks' domains)")
    c: int = Field(2, ge=0, description="pairs per M_gen query")
    n: int = Field(24, ge=0, description="general questions sampled per task (M_gen)")
    reference_batch_size: int = Field(32, ge=2, description="reference pairs per step (global, split over workers)")
    alpha: float = Field(1.0, ge=0, description="weight of L_CKT")
    beta: float = Field(0.25, ge=0, description="weight of L_CMC")
    tau: float | None = Field(None, gt=0, description="temperature: logits Z = cosine / tau; "
                              "null: the model's own CLIP temperature, 1 / logit_scale.exp()")
    dfg: float = Field(100.0, ge=0, description="weight of the dynamic Fisher guard (0: off)")
    builtin_per_class: int = Field(10, ge=1, description="no index: synthmed pairs per finding and domain in the built-in corpus")
    builtin_seed: int = Field(1, description="no index: seed of the built-in corpus (keep it apart from the experiment's)")
    plan_dir: PathStr | None = Field(None, description="where reference sets are planned/reused; default <run dir>/primed")


@register_strategy("primed")
class Primed(Strategy):
    description = "retrieved reference pairs: CKT + CMC distillation to the previous model + dynamic Fisher guard"
    Params = PrimedParams
    plan_mode = "dynamic"

    def prepare(self, config, tasks: list, run_dir: Path) -> str:
        """On the driver: plan every task's reference set into ``plan_dir`` (default
        ``<run dir>/primed``); returns the plan's resolved directory (``ctx.prepared``)."""
        plan_dir = place(self.params.plan_dir) if self.params.plan_dir else place(run_dir) / PLAN_DIR
        with staged_dir(plan_dir) as local:  # an object-store plan is planned locally, then uploaded
            plan_reference_sets(tasks, local, self.params, seed=config.seed, model=config.model.model_dump(mode="json"),
                                threads=config.train.torch_threads, mode=self.plan_mode)
        return str(plan_dir.resolve())

    def setup(self, ctx) -> None:
        self.image_size = int(ctx.preprocess(np.zeros((1, 1, 1, 3), np.uint8)).shape[-1])
        # without the driver's plan (a harness calling the worker loop directly): a given plan_dir, or plan here
        self.plan_dir = ctx.prepared or self.params.plan_dir or self._plan_here(ctx)

    def _plan_here(self, ctx) -> str:
        """Plan in this worker, from its (still starting) model, into a temporary directory; every
        rank computes the same plan."""
        self._tmp = tempfile.TemporaryDirectory(prefix="medcl-primed-")
        scorer = StartingModelScorer(teacher_copy(ctx.model), ctx.tokenizer, ctx.preprocess, self.image_size)
        plan_reference_sets(ctx.tasks, Path(self._tmp.name), self.params, seed=ctx.seed, model={"worker": True},
                            threads=ctx.train.torch_threads, scorer=scorer, mode=self.plan_mode,
                            log=print if ctx.rank == 0 else (lambda message: None))
        return self._tmp.name

    def before_stage(self, ctx) -> None:
        self.teacher = teacher_copy(ctx.model)
        self.anchor = snapshot(ctx.model) if self.params.dfg else {}
        self.reference = read_reference_set(self.plan_dir, ctx.task_index, self.image_size)
        self.tokens = ctx.tokenizer(self.reference.captions) if len(self.reference) >= 2 else None

    def loss(self, ctx, batch) -> dict[str, torch.Tensor]:
        ce = ctx.task_loss(batch)
        if self.tokens is None:
            return {"loss": ce, "ce": ce}
        p = self.params
        size = min(p.reference_batch_size, len(self.reference))
        rows = reference_rows(ctx.step, size, len(self.reference), lambda n: ctx.rng("reference", n, shared=True),
                              rank=ctx.rank, world=ctx.world_size)
        images, tokens = ctx.preprocess(self.reference.images[rows]), self.tokens[rows].to(ctx.device)
        with running_statistics_kept(ctx.model):
            student = pair_cosines(ctx.model, images, tokens)
        with torch.no_grad():
            teacher = pair_cosines(self.teacher, images, tokens)
        tau = p.tau if p.tau is not None else float(1.0 / ctx.model.logit_scale.detach().exp())
        ckt, cmc = ckt_loss(teacher, student, tau), cmc_loss(student, tau)
        non_ce = p.alpha * ckt + p.beta * cmc
        terms = {"ce": ce, "ckt": ckt, "cmc": cmc}
        loss = ce + non_ce
        if p.dfg:
            params = {n: q for n, q in ctx.model.named_parameters() if q.requires_grad}
            terms["dfg"] = l2_penalty(ctx.model, self.anchor, fisher_guard_weights(non_ce, params))
            loss = loss + p.dfg * terms["dfg"]
        return {"loss": loss, **terms}

    def after_stage(self, ctx) -> None:
        self.teacher, self.anchor, self.reference, self.tokens = None, {}, None, None


@register_strategy("primed_uniform")
class PrimedUniform(Primed):
    description = "PRIMED's losses on a same-size reference set from uniform keyword (BM25) retrieval"
    plan_mode = "uniform"
