"""medcl.engine.gradsync: the overlapped all-reduce gives the same mean as the bucketed all-reduce
after backward (medcl.engine.optim.sync_gradients) and as one process computing the mean loss of
both ranks, with a parameter that only one rank uses, one that no rank uses and a frozen one.

Two processes with gloo (torch.multiprocessing.spawn, a file store) run every scenario once; the
tests compare what they saved.
"""
from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from medcl.engine.gradsync import GradSync, make_buckets
from medcl.engine.optim import sync_gradients

WORLD = 2


class Head(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.randn(4))


class Net(torch.nn.Module):
    """``head`` is used by rank 0 only, ``unused`` by no rank, ``frozen`` does not require grad.
    Parameter order: frozen, unused, a, b, head: in reverse, ``head.bias`` is the first bucket."""

    def __init__(self):
        super().__init__()
        self.frozen = torch.nn.Parameter(torch.randn(4), requires_grad=False)
        self.unused = torch.nn.Parameter(torch.randn(3))
        self.a = torch.nn.Linear(8, 16)
        self.b = torch.nn.Linear(16, 4)
        self.head = Head()

    def forward(self, x, use_head: bool):
        h = self.b(torch.relu(self.a(x)))
        return self.head.bias + h if use_head else h


def make_net() -> Net:
    torch.manual_seed(0)
    return Net()


def data(rank: int, micro: int = 0) -> torch.Tensor:
    return torch.randn(6, 8, generator=torch.Generator().manual_seed(100 * micro + rank))


def loss_of(net: Net, rank: int, micro: int = 0) -> torch.Tensor:
    return (net(data(rank, micro), use_head=rank == 0) ** 2).mean()


def grads(net: Net) -> dict[str, torch.Tensor | None]:
    return {n: None if p.grad is None else p.grad.clone() for n, p in net.named_parameters()}


def overlapped(rank: int, backwards: int, **kw) -> tuple[dict, int]:
    """Gradients after GradSync (and how many buckets had launched when backward returned)."""
    net = make_net()
    sync = GradSync(list(net.parameters()), WORLD, **kw)
    sync.arm(backwards=backwards)
    for micro in range(backwards):
        loss_of(net, rank, micro).backward()
    launched = sync._next
    sync.finish()
    sync.close()
    return grads(net), launched


def after_backward(rank: int, backwards: int) -> dict:
    net = make_net()
    for micro in range(backwards):
        loss_of(net, rank, micro).backward()
    sync_gradients(list(net.parameters()), WORLD)
    return grads(net)


def two_steps(rank: int, overlap: bool) -> tuple[list[dict], list[list[int]] | None]:
    """Gradients of two steps (other data each), and GradSync's buckets after the first."""
    net = make_net()
    sync = GradSync(list(net.parameters()), WORLD, bucket_bytes=1) if overlap else None
    out, buckets = [], None
    for step in range(2):
        net.zero_grad(set_to_none=True)
        if sync:
            sync.arm()
        loss_of(net, rank, micro=step).backward()
        if sync:
            sync.finish()
            buckets = buckets or [list(b) for b in sync.buckets]
        else:
            sync_gradients(list(net.parameters()), WORLD)
        out.append(grads(net))
    if sync:
        sync.close()
    return out, buckets


def late_arrival_fails(rank: int) -> bool:
    net = make_net()
    sync = GradSync(list(net.parameters()), WORLD, bucket_bytes=1)
    sync.arm(backwards=1)
    same_on_both = lambda: (net(data(rank), use_head=True) ** 2).mean()  # noqa: E731 - both ranks launch alike
    same_on_both().backward()
    try:
        same_on_both().backward()  # a second pass that arm did not announce
    except RuntimeError as exc:
        failed = "more often than GradSync.arm(backwards=1)" in str(exc)
    else:
        failed = False
    for work, _ in sync._flight:  # both ranks launched the same buckets: let them complete
        work.wait()
    return failed


def hooks_idle_outside_arm(rank: int) -> bool:
    net = make_net()
    sync = GradSync(list(net.parameters()), WORLD, bucket_bytes=1)
    loss_of(net, rank).backward()
    local = grads(net)
    reference = make_net()
    loss_of(reference, rank).backward()
    sync.close()
    return all(torch.equal(local[n], g) for n, g in grads(reference).items() if g is not None)


def worker(rank: int, store: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    results = {"old": after_backward(rank, 1), "old2": after_backward(rank, 2)}
    results["new_small"], results["launched_small"] = overlapped(rank, 1, bucket_bytes=1)
    results["new_one_bucket"], _ = overlapped(rank, 1)
    results["new2"], _ = overlapped(rank, 2, bucket_bytes=64)
    results["bf16"], _ = overlapped(rank, 1, bucket_bytes=64, dtype=torch.bfloat16)
    results["two_steps"], results["rebuilt_buckets"] = two_steps(rank, overlap=True)
    results["two_steps_old"], _ = two_steps(rank, overlap=False)
    results["late_arrival_fails"] = late_arrival_fails(rank)
    results["idle_outside_arm"] = hooks_idle_outside_arm(rank)
    dist.barrier()
    dist.destroy_process_group()
    torch.save(results, f"{out}/rank{rank}.pt")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gradsync")
    mp.spawn(worker, args=(str(tmp / "store"), str(tmp)), nprocs=WORLD)
    return [torch.load(tmp / f"rank{r}.pt") for r in range(WORLD)]


def single_process_mean(backwards: int) -> dict:
    """The gradient of (1/W) * sum over ranks of each rank's loss (absent gradients: zeros)."""
    net = make_net()
    total = sum(loss_of(net, r, micro) for r in range(WORLD) for micro in range(backwards)) / WORLD
    total.backward()
    return {n: torch.zeros_like(p) if p.grad is None else p.grad for n, p in net.named_parameters()}


def test_overlapped_mean_equals_the_bucketed_all_reduce_exactly(ranks):
    for rank in ranks:
        for key in ("new_small", "new_one_bucket"):
            assert rank[key].keys() == rank["old"].keys()
            for name, g in rank["old"].items():
                assert torch.equal(rank[key][name], g), (key, name)
        for name, g in rank["old2"].items():
            assert torch.equal(rank["new2"][name], g), ("accumulation", name)


def test_overlapped_mean_equals_one_process_over_both_batches(ranks):
    for backwards, key in ((1, "new_small"), (2, "new2")):
        expected = single_process_mean(backwards)
        for rank in ranks:
            for name, g in expected.items():
                torch.testing.assert_close(rank[key][name], g, rtol=1e-6, atol=1e-7)
    assert torch.equal(ranks[0]["new_small"]["unused"], torch.zeros(3))
    assert torch.equal(ranks[0]["new_small"]["frozen"], torch.zeros(4))


def test_bf16_compression_is_within_its_precision(ranks):
    """Each rank's gradient and the sum are rounded to bf16 (8 significant bits, relative error
    <= 2**-9 each), so |mean_bf16 - mean| <= 2**-7 * mean over ranks of |g_r| (cancelling
    gradients can make the error large relative to the mean itself)."""
    local = []
    for r in range(WORLD):
        net = make_net()
        loss_of(net, r).backward()
        local.append({n: torch.zeros_like(p) if p.grad is None else p.grad for n, p in net.named_parameters()})
    for rank in ranks:
        for name, g in rank["old"].items():
            scale = sum(grads_r[name].abs() for grads_r in local) / WORLD
            assert bool(((rank["bf16"][name] - g).abs() <= 2**-7 * scale + 1e-12).all()), name
            assert rank["bf16"][name].dtype == torch.float32


def test_buckets_launch_during_backward_in_order_despite_a_gradient_one_rank_lacks(ranks):
    """bucket 0 is ``head.bias``: rank 0 launches it and the next four during backward, rank 1
    (which never gets its gradient) none until finish; both means agree, so the collectives matched."""
    assert ranks[0]["launched_small"] == 5 and ranks[1]["launched_small"] == 0
    for name, g in ranks[0]["new_small"].items():
        assert torch.equal(ranks[1]["new_small"][name], g)


def test_buckets_rebuilt_after_the_first_step_are_the_same_on_every_rank_and_the_mean_is_unchanged(ranks):
    """After step 1 the buckets follow rank 0's arrival order (broadcast): one order on both ranks,
    every parameter once; step 2's gradients still equal the all-reduce after backward."""
    assert ranks[0]["rebuilt_buckets"] == ranks[1]["rebuilt_buckets"]
    assert sorted(i for bucket in ranks[0]["rebuilt_buckets"] for i in bucket) == list(range(7))
    for rank in ranks:
        for new, old in zip(rank["two_steps"], rank["two_steps_old"]):
            assert all(torch.equal(new[name], g) for name, g in old.items())


def test_an_unannounced_backward_pass_is_an_error_and_hooks_are_idle_outside_arm(ranks):
    assert all(rank["late_arrival_fails"] for rank in ranks)
    assert all(rank["idle_outside_arm"] for rank in ranks)


def test_buckets_are_in_reverse_order_split_by_size_and_dtype():
    params = [torch.nn.Parameter(torch.zeros(n, dtype=dtype))
              for n, dtype in ((4, torch.float32), (4, torch.float32), (4, torch.float64), (2, torch.float32))]
    assert make_buckets(params, bucket_bytes=1 << 20) == [[3], [2], [1, 0]]
    assert make_buckets(params, bucket_bytes=16) == [[3], [2], [1], [0]]


def test_one_worker_hooks_nothing():
    net = make_net()
    sync = GradSync(list(net.parameters()), 1)
    sync.arm()
    loss_of(net, 0).backward()
    sync.finish()
    assert sync._handles == [] and net.unused.grad is None
    reference = make_net()
    loss_of(reference, 0).backward()
    assert torch.equal(net.a.weight.grad, reference.a.weight.grad)


def test_every_grad_sync_dtype_of_the_config_has_a_dtype_in_the_loop():
    from typing import get_args

    from medcl.config import TrainSection
    from medcl.engine.loop import GRAD_SYNC_DTYPES

    assert set(GRAD_SYNC_DTYPES) == set(get_args(TrainSection.model_fields["grad_sync_dtype"].annotation))
    assert TrainSection(steps_per_task=1).grad_sync_dtype == "fp32"
