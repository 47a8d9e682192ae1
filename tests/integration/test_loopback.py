"""A local Ray started by medcl (or its tests) listens on loopback only."""
from __future__ import annotations

import os

import psutil
import pytest

pytestmark = pytest.mark.ray

LOOPBACK = ("127.", "::1", "::ffff:127.")


def _ray_process_ids() -> set[int]:
    me = psutil.Process(os.getpid())
    pids = {me.pid} | {child.pid for child in me.children(recursive=True)}
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if "ray" in cmdline and ("session_latest" in cmdline or "gcs_server" in cmdline or "raylet" in cmdline):
            pids.add(proc.info["pid"])
    return pids


def test_ray_listens_on_loopback_only(ray_session):
    @ray_session.remote
    def ping():
        return "pong"

    assert ray_session.get(ping.remote()) == "pong"
    pids = _ray_process_ids()
    listening = [c for c in psutil.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN and c.pid in pids]
    assert listening, "found no Ray listener at all: the check itself is broken"
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
