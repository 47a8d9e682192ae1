"""PRIMED: retrieval-guided continual learning (Chen et al., "Forging a Dynamic Memory"; docs/methods.md#5-primed).

    L = CE_ls + alpha * L_CKT + beta * L_CMC + dfg * L_DFG            (alpha = 1, beta = 0.25)

on the task batch and a batch of ``reference_batch_size`` retrieved image-caption pairs (global,
split over workers) from the task's *reference set* (formulas in :mod:`medcl.primed.losses`).
The teacher of L_CKT is the previous-task model: a frozen copy taken in ``before_stage`` (for the
first task, the starting model), :func:`medcl.models.norm.teacher_copy` (``requires_grad=False``,
BatchNorm normalising as the student's without updating statistics), outside the gradient
all-reduce; the student's reference pass keeps its running statistics
(:func:`medcl.models.norm.running_statistics_kept`). L_DFG's anchor is the same previous-task model's weights.

Reference sets are planned on the driver before the TorchTrainer starts (``retrieval: planned``,
the default; :meth:`Primed.prepare`,
:mod:`medcl.primed.planner`): question pool M^i -> dynamic siphon -> three-stage retrieval through
the retriever (``index_dir`` in process, or the ``service``) -> ``<plan dir>/reference-<i>.parquet``
(``plan_dir``, default ``<run dir>/primed``; a local path or an object store, :mod:`medcl.storage`);
the plan's directory reaches the workers as ``ctx.prepared``. Workers read their task's file in
``before_stage``; a restart re-runs ``before_stage`` after the engine restored the previous task's
weights, so no state is saved.

With ``retrieval: online`` the workers retrieve instead, during training: rank 0 every
``refresh_every`` steps, through the same planner, re-ranked by the starting or the current model
(``online_scorer``), the pairs broadcast to every rank (:mod:`medcl.primed.online`); with the
starting model as scorer a run equals the planned one. :meth:`Primed.services` keeps the retrieval
service running on the driver for the whole run when the workers use it.

Ablations (:mod:`medcl.primed.uniform`): ``primed_uniform`` (:class:`PrimedUniform`, the paper's
PRIMED_uni) distils on ``size`` pairs (ZSCL's reference-set size) from ``keywords`` (30) uniformly
drawn keywords, the same for every task; ``primed_bm25`` (:class:`PrimedBM25`) on a set of PRIMED's
own size chosen by BM25 keyword retrieval from M^i.

    medcl run experiments/primed_synthmed.yaml
"""
from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field, field_validator

from medcl.data.reference import check_synthmed_domains
from medcl.models.norm import running_statistics_kept, teacher_copy
from medcl.paths import PathStr
from medcl.primed.losses import ckt_loss, cmc_loss, fisher_guard_weights, pair_cosines
from medcl.primed.planner import plan_reference_sets
from medcl.primed.scorer import StartingModelScorer
from medcl.primed.online import OnlineReferences, batch_questions
from medcl.primed.stream import read_reference_set, reference_rows
from medcl.primed.uniform import ZSCL_DEFAULT_REFERENCE_SIZE
from medcl.storage import place, staged_dir
from medcl.strategies.base import Strategy, StrategyParams, register_strategy
from medcl.strategies.common import l2_penalty, snapshot

PLAN_DIR = "primed"


class PrimedParams(StrategyParams):
    output_paths = ("plan_dir",)  # written, not read (medcl.engine.inputs)
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
    ckt_reduction: Literal["sum", "mean"] = Field("sum", description="L_CKT over the B rows and columns: summed as "
                                                   "the paper writes it, or averaged (medcl.primed.losses)")
    dfg: float = Field(100.0, ge=0, description="weight of the dynamic Fisher guard (0: off)")
    builtin_per_class: int = Field(20, ge=1, description="no index: synthmed pairs per finding and domain in the built-in "
                                   "corpus (20: ZSCL's default reference set, medcl.data.reference)")
    builtin_domains: list[str] | None = Field(None, description="no index: synthmed domains of the built-in corpus; "
                                              "default: those none of the sequence's tasks uses (held out)")
    builtin_seed: int = Field(1, description="no index: seed of the built-in corpus (keep it apart from the experiment's)")
    plan_dir: PathStr | None = Field(None, description="where reference sets are planned/reused; default <run dir>/primed")
    retrieval: Literal["planned", "online"] = Field("planned", description="planned on the driver before training, "
                                                    "or retrieved by the workers during training")
    refresh_every: int = Field(100, ge=1, description="online: steps between two retrievals of the set (the first at step 0)")
    online_scorer: Literal["starting", "current"] = Field("current", description="online: the re-rank's scorer, the "
                                                          "starting model (= planned mode) or the model being trained")
    batch_queries: bool = Field(False, description="online: also query the class prompts of the current batch")

    _known_domains = field_validator("builtin_domains")(classmethod(lambda cls, value: check_synthmed_domains(value)))


@register_strategy("primed")
class Primed(Strategy):
    description = "retrieved reference pairs: CKT + CMC distillation to the previous model + dynamic Fisher guard"
    Params = PrimedParams
    plan_mode = "dynamic"

    def input_problems(self) -> list[tuple[str, str]]:
        """``strategy.index_dir`` must hold an index (its ``index.json``), and the corpus it records
        (or ``strategy.corpus_dir``) must exist: checked on the driver before Ray starts."""
        if not self.params.index_dir:
            return []
        from medcl.corpus.index import read_index_manifest
        from medcl.corpus.retrieval import corpus_dir_of
        from medcl.errors import MedclError
        from medcl.storage import exists

        try:
            read_index_manifest(self.params.index_dir)
            corpus = corpus_dir_of(self.params.index_dir, self.params.corpus_dir)
        except (OSError, ValueError, MedclError) as exc:
            return [("strategy.index_dir", f"{exc} (build one: medcl index build EMBEDDINGS --out DIR)")]
        if corpus is not None and not exists(corpus):
            field = "strategy.corpus_dir" if self.params.corpus_dir else "strategy.index_dir"
            return [(field, f"the corpus {corpus} does not exist; set strategy.corpus_dir to the corpus folder")]
        return []

    def prepare(self, config, tasks: list, run_dir: Path) -> str | None:
        """On the driver: plan every task's reference set into ``plan_dir`` (default
        ``<run dir>/primed``); returns the plan's resolved directory (``ctx.prepared``). Online: None."""
        if self.params.retrieval == "online":
            return None
        plan_dir = place(self.params.plan_dir) if self.params.plan_dir else place(run_dir) / PLAN_DIR
        with staged_dir(plan_dir) as local:  # an object-store plan is planned locally, then uploaded
            plan_reference_sets(tasks, local, self.params, seed=config.seed, model=config.model.model_dump(mode="json"),
                                threads=config.train.torch_threads, mode=self.plan_mode)
        return str(plan_dir.resolve())

    @contextlib.contextmanager
    def services(self, config, run_dir: Path):
        """On the driver, around training: online retrieval through the service starts the service
        (unless one of that name runs) and stops it when training ends."""
        from medcl.primed.retriever import use_service

        if self.params.retrieval != "online" or not self.params.index_dir or not use_service(self.params):
            yield
            return
        from medcl.corpus.service import RetrievalService, ServiceError

        try:
            RetrievalService.connect(self.params.service_name)
            yield  # somebody else's service: used, not stopped
            return
        except ServiceError:
            pass
        service = RetrievalService.start(self.params.index_dir, name=self.params.service_name,
                                         corpus_dir=self.params.corpus_dir)
        try:
            yield
        finally:
            service.stop()

    def setup(self, ctx) -> None:
        self.image_size = int(ctx.preprocess(np.zeros((1, 1, 1, 3), np.uint8)).shape[-1])
        self.online, self.reference_ids = None, None
        if self.params.retrieval == "online":
            self.online = OnlineReferences(self.params, ctx, mode=self.plan_mode, image_size=self.image_size)
            return
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
        if self.online is not None:  # retrieved in loss(), at the stage's first step
            self.reference, self.reference_ids, self.tokens = None, None, None
            return
        self._use(ctx, read_reference_set(self.plan_dir, ctx.task_index, self.image_size))

    def _use(self, ctx, reference, ids=None) -> None:
        self.reference, self.reference_ids = reference, ids
        self.tokens = ctx.tokenizer(reference.captions) if len(reference) >= 2 else None

    def _refresh_online(self, ctx, batch) -> None:
        if ctx.step % self.params.refresh_every == 0:
            extra = batch_questions(ctx.tasks, batch.labels, batch.task_ids, self.params.a) \
                if self.params.batch_queries else ()
            ids, reference = self.online.refresh(ctx.task_index, ctx.model, extra)
            self._use(ctx, reference, ids)
        elif self.reference is None and self.reference_ids is not None:  # resumed inside a stage
            ids, reference = self.online.restore(self.reference_ids)
            self._use(ctx, reference, ids)

    def loss(self, ctx, batch) -> dict[str, torch.Tensor]:
        ce = ctx.task_loss(batch)
        if self.online is not None:
            self._refresh_online(ctx, batch)
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
        ckt, cmc = ckt_loss(teacher, student, tau, p.ckt_reduction), cmc_loss(student, tau)
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

    def stage_state_dict(self) -> dict:
        """Online: the ids of the set in use (a resumed stage fetches them again)."""
        return {"reference_ids": list(self.reference_ids)} if self.online is not None and self.reference_ids else {}

    def load_stage_state_dict(self, state: dict) -> None:
        if state:
            self.reference_ids, self.reference, self.tokens = list(state["reference_ids"]), None, None

    def extra_metrics(self, ctx) -> dict[str, float]:
        if self.online is None or ctx.rank != 0:
            return {}
        return {"primed_refreshes": float(self.online.refreshes), "primed_refresh_s": round(self.online.seconds, 4)}


class PrimedUniformParams(PrimedParams):
    keywords: int = Field(30, ge=1, description="uniformly drawn keywords (distinct diseases of the question pool)")
    size: int = Field(ZSCL_DEFAULT_REFERENCE_SIZE, ge=2, description="pairs per task's set (default: the size of "
                      "ZSCL's default reference set)")


@register_strategy("primed_uniform")
class PrimedUniform(Primed):
    description = "PRIMED_uni (the paper's ablation): a ZSCL-sized set from 30 uniform keywords, PRIMED's losses"
    Params = PrimedUniformParams
    plan_mode = "uniform"


@register_strategy("primed_bm25")
class PrimedBM25(Primed):
    description = "PRIMED's losses on a set of PRIMED's size from BM25 keyword retrieval over M^i"
    plan_mode = "bm25"
