"""A local Ray started by medcl (or its tests) listens on loopback only.

Only this test session's own Ray is checked: ``ray.init`` starts the GCS, the raylet and the rest
as children of the test process (the raylet starts the workers), so its processes are this
process's descendants. Another user's (or another test run's) Ray on the same machine is none of
them and is neither counted nor blamed.
"""
from __future__ import annotations

import os

import psutil
import pytest

pytestmark = pytest.mark.ray

LOOPBACK = ("127.", "::1", "::ffff:127.")


def _own_process_ids() -> set[int]:
    """This process and every process it started (directly or not), by PID."""
    me = psutil.Process(os.getpid())
    return {me.pid} | {child.pid for child in me.children(recursive=True)}


def test_ray_listens_on_loopback_only(ray_session):
    @ray_session.remote
    def ping():
        return os.getpid()

    worker = ray_session.get(ping.remote())
    pids = _own_process_ids()
    assert worker in pids, "a worker of the session's Ray is not among this process's descendants"
    gcs_port = int(ray_session.get_runtime_context().gcs_address.rsplit(":", 1)[1])
    listening = [c for c in psutil.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN and c.pid in pids]
    assert gcs_port in {c.laddr.port for c in listening}, \
        "the session's GCS is not among the listeners found: the check itself is broken"
    exposed = [(c.laddr.ip, c.laddr.port, psutil.Process(c.pid).name()) for c in listening
               if not c.laddr.ip.startswith(LOOPBACK)]
    assert not exposed, f"Ray listens beyond loopback: {exposed}"


def test_train_rendezvous_uses_a_file_store():
    from medcl.engine.loopback import local_torch_config

    config = local_torch_config(use_gpu=False)
    assert config is not None, "Ray's private torch helpers moved: the TCPStore would listen on all interfaces"
    assert config.backend == "gloo" and config.backend_cls.__name__ == "_FileStoreBackend"


def test_one_launch_path_meets_by_file_on_one_machine(ray_session):
    from medcl.engine.launch import Workers, make_trainer, rendezvous

    assert rendezvous() == "file"  # every node of the test session's Ray is on 127.0.0.1
    trainer = make_trainer(lambda config: None, {}, "/tmp/medcl-unused", Workers(2))
    assert type(trainer.backend_config).__name__ == "_FileStoreTorchConfig"
    tcp = make_trainer(lambda config: None, {}, "/tmp/medcl-unused", Workers(2), meet="tcp")
    assert type(tcp.backend_config).__name__ == "TorchConfig"
    assert make_trainer(lambda config: None, {}, "/tmp/medcl-unused", Workers.local()).scaling_config.num_workers == 0
