"""PRIMED's online mode (``retrieval: online``): Train workers retrieve reference sets during training.

No set is planned before training. In every stage of task i, rank 0 retrieves task i's reference
set at steps 0, N, 2N, ... (N = ``refresh_every``) through :class:`~.planner.TaskPlanner`, the code
the driver's plan runs, and broadcasts the chosen pairs (id, caption, encoded image) to the other
ranks (``torch.distributed.broadcast_object_list``), so every rank holds the same set and draws its
rows from it exactly as in planned mode (:func:`.stream.reference_rows`).

The cross-modal re-rank's scorer (``online_scorer``):

* ``starting``: the starting model, copied in ``setup`` (built from the seed before any checkpoint
  is restored) and kept in eval mode, as the driver's :class:`~.scorer.StartingModelScorer` is.
  The set is then the planned set and a run equals the planned mode step for step (tested);
  rankings and image embeddings are cached, so only a stage's first refresh retrieves.
* ``current``: the model being trained, in eval mode under ``no_grad`` (its train mode restored
  afterwards, so BatchNorm statistics never move), with nothing cached: the re-rank follows the
  model as it changes, PRIMED's "real-time, on-demand" retrieval.

``batch_queries``: each refresh also asks the class prompts of the labels in rank 0's current batch
(level ``batch``, ``a`` pairs per query) after the siphon's queries.

Only rank 0 opens a retriever (:func:`.retriever.open_retriever`): the named retrieval service when
``service`` says so (:meth:`medcl.strategies.primed.Primed.services` starts it on the driver for the
run; its calls feed the ``medcl_retrieval_*`` metrics on the dashboard), the index in process (then
this module records each refresh in the same metrics, service tag ``primed-online``), or the built-in
corpus. Per refresh: seconds and pairs, summed in ``metrics.json`` (``primed_refreshes``,
``primed_refresh_s``). A mid-task checkpoint keeps the current set's ids; a resumed stage fetches them
again, so it continues with the same pairs.
"""
from __future__ import annotations

import contextlib
import copy
import time

import numpy as np
import torch

from medcl import telemetry
from medcl.data.pairs import ImageCaptions
from medcl.data.reference import _decode
from medcl.primed.planner import TaskPlanner, fetch_rows
from medcl.primed.questions import Question
from medcl.primed.scorer import StartingModelScorer
from medcl.primed.siphon import SiphonQuery

SCORERS = ("starting", "current")


@contextlib.contextmanager
def evaluating(model: torch.nn.Module):
    """``model`` in eval mode under ``no_grad``; every module's own mode restored afterwards."""
    modes = {name: m.training for name, m in model.named_modules()}
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        for name, module in model.named_modules():
            module.training = modes[name]


def batch_questions(tasks: list, labels, task_ids, take: int) -> tuple[SiphonQuery, ...]:
    """One ``batch`` query per distinct (task, label) of a batch: the class's first prompt."""
    pairs = sorted({(int(t), int(c)) for t, c in zip(task_ids.tolist(), labels.tolist())})
    return tuple(SiphonQuery(Question(text=tasks[t].class_prompts[c][0], domain=tasks[t].modality, site="",
                                      disease=tasks[t].classes[c], task=tasks[t].name), "batch", take)
                 for t, c in pairs)


class OnlineReferences:
    """Rank 0 retrieves, every rank receives: see the module docstring."""

    def __init__(self, params, ctx, *, mode: str, image_size: int, retriever=None):
        """``retriever``: used instead of opening one from ``params`` (tests)."""
        from medcl.primed.retriever import open_retriever

        self.params, self.mode, self.image_size = params, mode, image_size
        self.tasks, self.seed, self.rank, self.world = ctx.tasks, ctx.seed, ctx.rank, ctx.world_size
        self.tokenizer, self.preprocess, self.device = ctx.tokenizer, ctx.preprocess, ctx.device
        self.refreshes, self.seconds, self._close = 0, 0.0, None
        if self.rank == 0:
            start = copy.deepcopy(ctx.model).eval().requires_grad_(False)
            self.starting = StartingModelScorer(start, ctx.tokenizer, ctx.preprocess, image_size)
            self.retriever, self._close = (retriever, None) if retriever is not None else \
                open_retriever(params, self.starting, ctx.tasks)
            self.cached = TaskPlanner(self.retriever, self.starting, params, mode=mode, seed=self.seed)

    def refresh(self, task_index: int, model: torch.nn.Module, extra: tuple = ()) -> tuple[list[str], ImageCaptions]:
        """Task ``task_index``'s set now (collective: every rank calls it at the same step)."""
        payload = self._retrieve(task_index, model, extra) if self.rank == 0 else None
        return self._pairs(self._broadcast(payload))

    def restore(self, ids: list[str]) -> tuple[list[str], ImageCaptions]:
        """The set with these ids, fetched again (a mid-task resume; collective)."""
        payload = None
        if self.rank == 0:
            payload = [(row["id"], row["caption"], row["image"]) for row in self.retriever.fetch(list(ids))]
        return self._pairs(self._broadcast(payload))

    def _retrieve(self, task_index: int, model: torch.nn.Module, extra: tuple) -> list[tuple]:
        started = time.perf_counter()
        if self.params.online_scorer == "starting":
            rows, _ = self.cached.rows(self.tasks, task_index, extra)
        else:
            with evaluating(model):
                live = StartingModelScorer(model, self.tokenizer, self.preprocess, self.image_size)
                planner = TaskPlanner(self.retriever, live, self.params, mode=self.mode, seed=self.seed,
                                      keyword_index=self.cached.keyword_index)
                rows, _ = planner.rows(self.tasks, task_index, extra)
                self.cached.keyword_index = planner.keyword_index
        payload = [(row["id"], row["caption"], fetched["image"]) for row, fetched in zip(rows, fetch_rows(self.retriever, rows))]
        seconds = time.perf_counter() - started
        self.refreshes, self.seconds = self.refreshes + 1, self.seconds + seconds
        if not hasattr(self.retriever, "submit"):  # the service records its own calls
            telemetry.record_retrieval(len(rows), seconds, service="primed-online")
        return payload

    def _broadcast(self, payload):
        if self.world == 1:
            return payload
        import torch.distributed as dist

        box = [payload]
        dist.broadcast_object_list(box, src=0, device=self.device if self.device.type == "cuda" else None)
        return box[0]

    def _pairs(self, payload: list[tuple]) -> tuple[list[str], ImageCaptions]:
        images = [_decode(image, self.image_size) for _, _, image in payload]
        stacked = np.stack(images) if images else np.zeros((0, self.image_size, self.image_size, 3), np.uint8)
        return [i for i, _, _ in payload], ImageCaptions(stacked, tuple(c for _, c, _ in payload))

    def close(self) -> None:
        if self._close is not None:
            self._close()
            self._close = None
