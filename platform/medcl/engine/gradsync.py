"""Gradient averaging over workers that overlaps with ``backward``.

A :class:`GradSync` puts a ``register_post_accumulate_grad_hook`` on each trainable parameter of a
stage. The parameters are cut into buckets of about ``bucket_bytes`` (one dtype per bucket) in
*reverse* order of the list (the order ``backward`` usually produces their gradients). Between
:meth:`GradSync.arm` and :meth:`GradSync.finish` (one optimiser step), a parameter's hook counts its
gradient in; a bucket whose parameters have all arrived is flattened and all-reduced
asynchronously (``dist.all_reduce(async_op=True)``) while ``backward`` goes on. :meth:`finish`
launches the buckets still waiting, waits for every handle and writes the mean back:

    grad_p  <-  (sum over ranks r of grad_p^(r)) / world_size        (grad_p^(r) = 0 if it never arrived)

the arithmetic of :func:`medcl.engine.optim.sync_gradients` (sum, then division by the world size;
exactly equal in fp32 for two workers, and up to the collective's summation order for more).

Contracts:

- **Order.** Buckets are launched strictly in index order on every rank: a complete bucket waits
  until all buckets before it are launched. Ranks whose gradients arrive in a different order, or
  never (a parameter unused on one rank: a task-specific head, a routed expert), therefore issue
  the same collectives in the same order; the missing ones are launched by :meth:`finish` with
  zeros in place of the absent gradients. The first step's buckets follow the reverse parameter
  order; after it, as DDP does, they are rebuilt in the order rank 0's gradients arrived (rank
  0's order is broadcast, so every rank cuts the same buckets).
- **Own process group.** The collectives run on a process group of their own (created once per
  process, collectively, on the first :class:`GradSync` of more than one worker), so that a
  collective a strategy runs inside its loss or ``backward`` cannot interleave with them.
- **Backward passes.** ``arm(backwards=k)`` announces ``k`` backward passes before the next
  ``finish`` (gradient accumulation); a bucket launches when each of its parameters arrived ``k``
  times. More arrivals than announced is an error (RuntimeError), not a silently wrong mean.
  Outside ``arm``..``finish`` the hooks do nothing (EWC's Fisher estimate and other backward
  passes of a strategy's own are not averaged by them).
- **Compression.** ``dtype=torch.bfloat16`` all-reduces a bf16 copy of each bucket (half the
  bytes) and writes the mean back in the gradients' dtype. Each rank's gradient and the sum are
  rounded to bf16 (relative error <= 2**-9 each), so ``|mean_bf16 - mean| <= 2**-7 * mean_r |g_r|``
  per element (a test checks it).
- **Memory.** While a step's buckets are in flight, their flat copies exist beside the gradients
  (as DDP's bucket buffers do); ``finish`` makes each gradient a view of its bucket's buffer (no
  copy back) and the original gradients are freed.

With one worker nothing is hooked and ``arm``/``finish`` do nothing.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

BUCKET_BYTES = 32 << 20
_GROUPS: dict[int, tuple[object, object]] = {}  # world size -> (the default group it was made in, group)


def sync_group(world_size: int):
    """This process's gradient-averaging process group over all ``world_size`` ranks (created on
    first use, and again if the default group was re-initialised: every rank must call it at the
    same point, as :class:`GradSync` does)."""
    world, group = _GROUPS.get(world_size, (None, None))
    if world is not dist.group.WORLD:
        group = dist.new_group(ranks=list(range(world_size)))
        _GROUPS[world_size] = (dist.group.WORLD, group)
    return group


def make_buckets(params: list[torch.nn.Parameter], bucket_bytes: int = BUCKET_BYTES,
                 order: list[int] | None = None) -> list[list[int]]:
    """Indices into ``params`` grouped into buckets in ``order`` (default: reverse order), a new
    bucket when the dtype changes or the bucket reached ``bucket_bytes``."""
    buckets, size = [], 0
    for i in reversed(range(len(params))) if order is None else order:
        p = params[i]
        if not buckets or size >= bucket_bytes or params[buckets[-1][0]].dtype != p.dtype:
            buckets.append([])
            size = 0
        buckets[-1].append(i)
        size += p.numel() * p.element_size()
    return buckets


class GradSync:
    """Overlapped mean of the gradients of ``params`` over ``world_size`` workers (module docstring).

    Use once per optimiser step: ``arm()``, ``loss.backward()``, ``finish()``; ``close()`` removes
    the hooks (at the end of the stage, whose parameter list it was built for)."""

    def __init__(self, params, world_size: int, dtype: torch.dtype | None = None, bucket_bytes: int = BUCKET_BYTES,
                 reorder: bool = True):
        self.params = list({id(p): p for p in params}.values())  # each parameter once
        self.world_size = world_size
        self.dtype = dtype
        self.bucket_bytes = bucket_bytes
        self._set_buckets(make_buckets(self.params, bucket_bytes))
        self._arrivals: list[int] | None = [] if reorder else None  # first step's arrival order
        self._handles = []
        self._armed = False
        if world_size > 1:
            self._group = sync_group(world_size)
            self._handles = [p.register_post_accumulate_grad_hook(self._hook(i))
                             for i, p in enumerate(self.params) if p.requires_grad]

    def arm(self, backwards: int = 1) -> None:
        """Start a step of ``backwards`` backward passes (gradients must be unset or zero before:
        ``optimizer.zero_grad``)."""
        if self.world_size == 1:
            return
        if self._armed:
            raise RuntimeError("GradSync.arm called twice without finish")
        self._armed, self._backwards = True, backwards
        self._arrived = [0] * len(self.params)
        self._missing = [len(bucket) * backwards for bucket in self.buckets]
        self._next = 0  # the next bucket to launch
        self._flight: list[tuple[object, torch.Tensor]] = []

    def finish(self) -> None:
        """Launch the buckets still waiting (absent gradients as zeros), wait for all, write the means."""
        if self.world_size == 1:
            return
        if not self._armed:
            raise RuntimeError("GradSync.finish called without arm")
        while self._next < len(self.buckets):
            self._launch(self._next)
            self._next += 1
        for (work, flat), bucket in zip(self._flight, self.buckets):
            work.wait()
            self._write_mean(bucket, flat)
        self._armed, self._flight = False, []
        if self._arrivals is not None:
            self._rebuild_buckets(self._arrivals)
            self._arrivals = None

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _set_buckets(self, buckets: list[list[int]]) -> None:
        self.buckets = buckets
        self._bucket_of = {i: b for b, bucket in enumerate(buckets) for i in bucket}

    def _rebuild_buckets(self, arrivals: list[int]) -> None:
        """After the first step, as DDP does: buckets in the order rank 0's gradients arrived
        (then those that never did, in reverse order), broadcast so that every rank cuts the same
        buckets. Only which gradients share a bucket and when it launches change, not the mean."""
        arrived = set(arrivals)
        order = arrivals + [i for i in reversed(range(len(self.params))) if i not in arrived]
        device = self.params[0].device if self.params else torch.device("cpu")
        order_tensor = torch.tensor(order, dtype=torch.int64, device=device)
        dist.broadcast(order_tensor, src=0, group=self._group)
        self._set_buckets(make_buckets(self.params, self.bucket_bytes, order_tensor.tolist()))

    def _hook(self, index: int):
        def on_gradient(param: torch.Tensor) -> None:
            if not self._armed:
                return
            bucket = self._bucket_of[index]
            if bucket < self._next or self._arrived[index] == self._backwards:
                raise RuntimeError(f"a gradient arrived more often than GradSync.arm(backwards={self._backwards}) "
                                   f"announced (its bucket may already be all-reduced)")
            if self._arrivals is not None and not self._arrived[index]:
                self._arrivals.append(index)
            self._arrived[index] += 1
            self._missing[bucket] -= 1
            while self._next < len(self.buckets) and self._missing[self._next] == 0:
                self._launch(self._next)
                self._next += 1
        return on_gradient

    def _launch(self, b: int) -> None:
        grads = []
        for i in self.buckets[b]:
            p = self.params[i]
            grads.append((p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1))
        flat = torch.cat(grads)
        if self.dtype is not None and flat.dtype != self.dtype:
            flat = flat.to(self.dtype)
        self._flight.append((dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=self._group, async_op=True), flat))

    def _write_mean(self, bucket: list[int], flat: torch.Tensor) -> None:
        """``p.grad = (flat / world_size)[slice of p]`` for each parameter, in the parameter's dtype."""
        first = self.params[bucket[0]]
        flat = flat.to(first.dtype) if flat.dtype != first.dtype else flat
        flat /= self.world_size
        offset = 0
        for i in bucket:
            p = self.params[i]
            p.grad = flat[offset : offset + p.numel()].view_as(p)
            offset += p.numel()
