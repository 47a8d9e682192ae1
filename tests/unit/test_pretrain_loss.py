"""Global-batch InfoNCE: two gloo ranks, each with half the batch, give the single-process loss and,
after the engine's gradient averaging, the single-process gradients on the same global batch."""
from __future__ import annotations

import multiprocessing
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medcl.engine.optim import sync_gradients
from medcl.pretrain.loss import contrastive_loss, global_clip_loss

GLOBAL_BATCH = 8


class ToyClip(torch.nn.Module):
    """Two linear towers and a learnable logit scale, returning what a medcl CLIP model returns."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.image, self.text = torch.nn.Linear(6, 4), torch.nn.Linear(5, 4)
        self.logit_scale = torch.nn.Parameter(torch.tensor(1.5))

    def forward(self, images, tokens):
        return (F.normalize(self.image(images), dim=-1), F.normalize(self.text(tokens), dim=-1),
                self.logit_scale.exp())


def _batch():
    generator = torch.Generator().manual_seed(1)
    return torch.randn(GLOBAL_BATCH, 6, generator=generator), torch.randn(GLOBAL_BATCH, 5, generator=generator)


def _loss_and_grads(model, images, tokens, rank=0, world=1):
    loss = contrastive_loss(model, global_clip_loss(rank, world), images, tokens)
    loss.backward()
    params = list(model.parameters())
    sync_gradients(params, world)
    return float(loss.detach()), [p.grad.detach().numpy().copy() for p in params]  # numpy: picklable across processes


def _rank(rank: int, world: int, store: str, queue) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    images, tokens = _batch()
    # the pretraining sampler's split: rank r takes rows r::w of the global batch
    queue.put((rank, _loss_and_grads(ToyClip(), images[rank::world], tokens[rank::world], rank, world)))
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_two_ranks_equal_one_process_on_the_global_batch(tmp_path):
    single_loss, single_grads = _loss_and_grads(ToyClip(), *_batch())
    half_loss = float(contrastive_loss(ToyClip(), global_clip_loss(), *(t[::2] for t in _batch())).detach())
    assert abs(half_loss - single_loss) > 1e-3  # a rank's own 4 pairs alone give another loss

    context = multiprocessing.get_context("fork")  # the parent's imports are reused: no 8 s open_clip import
    queue = context.Queue()
    store = str(tmp_path / "pg-store")
    procs = [context.Process(target=_rank, args=(r, 2, store, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    for rank in (0, 1):
        loss, grads = results[rank]
        assert loss == pytest.approx(single_loss, abs=1e-5)
        for got, want in zip(grads, single_grads):
            np.testing.assert_allclose(got, want, atol=1e-6, rtol=1e-5)


def test_world_size_one_is_plain_clip_loss():
    images, tokens = _batch()
    model = ToyClip()
    fi, ft, scale = model(images, tokens)
    logits = scale * fi @ ft.t()
    labels = torch.arange(GLOBAL_BATCH)
    want = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
    assert float(contrastive_loss(model, global_clip_loss(), images, tokens).detach()) == pytest.approx(float(want.detach()), abs=1e-6)
