"""Keep a local Ray, and Ray Train's process group, on loopback only.

Two things would otherwise listen on every interface of a laptop or test machine:

* Ray itself: ``ray.init`` rewrites ``_node_ip_address="127.0.0.1"`` to the machine's address
  unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` is set before ``import ray`` (Ray 2.60,
  ``services.resolve_ip_for_localhost``); :func:`prepare_local_environment` sets it (and
  ``GLOO_SOCKET_IFNAME=lo``) unless ``RAY_ADDRESS`` points at a real cluster.
* torch's TCPStore, which Ray Train's ``env://`` rendezvous starts on rank 0 and which binds to
  all interfaces whatever ``MASTER_ADDR`` says. :func:`local_torch_config` returns a
  ``TorchConfig`` whose workers meet through a ``file://`` store instead (single node only).
  It builds on two private helpers of ``ray.train.torch.config``; if they move, it returns None
  and Ray's default rendezvous is used.
"""
from __future__ import annotations

import os
import sys
import tempfile
import uuid


def prepare_local_environment() -> None:
    """Call before ``import ray`` (medcl's package ``__init__`` does).

    Not inside a Ray worker process (``RAY_RAYLET_PID`` set): a local Ray's workers inherit these
    variables from the driver that started it, and on a multi-node cluster gloo must not be
    pinned to ``lo``. Also asks for token authentication explicitly (``RAY_AUTH_MODE=token``,
    what Ray enables by default for a new local Ray, minus its warning that it did so), unless
    the mode is set or Ray is already imported (Ray reads the mode when it is imported)."""
    if not os.environ.get("RAY_ADDRESS") and "RAY_RAYLET_PID" not in os.environ:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        if os.path.exists("/sys/class/net/lo"):
            os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
        if "ray" not in sys.modules:
            os.environ.setdefault("RAY_AUTH_MODE", "token")


def local_torch_config(use_gpu: bool):
    """A ``TorchConfig`` with a file-based rendezvous, or None when Ray's internals differ."""
    import ray
    from ray.train.torch import TorchConfig
    from ray.train.torch import config as torch_config

    setup = getattr(torch_config, "_setup_torch_process_group", None)
    set_env = getattr(torch_config, "_set_torch_distributed_env_vars", None)
    base = getattr(torch_config, "_TorchBackend", None)
    if setup is None or set_env is None or base is None:
        return None

    class _FileStoreBackend(base):
        def on_start(self, worker_group, backend_config):
            store = os.path.join(tempfile.gettempdir(), f"medcl-pg-{uuid.uuid4().hex}")
            worker_group.execute(set_env)
            ray.get([worker_group.execute_single_async(
                rank, setup, backend=backend_config.backend, world_rank=rank, world_size=len(worker_group),
                init_method=f"file://{store}", timeout_s=backend_config.timeout_s)
                for rank in range(len(worker_group))])

    class _FileStoreTorchConfig(TorchConfig):
        @property
        def backend_cls(self):
            return _FileStoreBackend

    return _FileStoreTorchConfig(backend="nccl" if use_gpu else "gloo")
