"""Two Ray nodes on one machine that do not share a node-local disk, for tests.

    with TwoNodeCluster(env=s3.env) as cluster:       # head on 127.0.0.2, worker on 127.0.0.3
        cluster.submit("job-1", ["medcl", "run", "tiny.yaml"], working_dir=wd)
        cluster.wait("job-1")                         # -> "SUCCEEDED"

Each node's processes (``ray start --block`` and everything it starts: raylet, workers, the job
entrypoints of the head) live in their own mount namespace, where ``cluster.node_local`` (one path)
is a bind mount of that node's private directory (``cluster.disks["head"]`` / ``["worker"]``), so a
file one node writes there is absent on the other, as on two cloud VMs. Nodes are started with
``unshare --mount`` (plus ``--map-root-user`` when not root); :func:`namespace_error` says why a
machine cannot do this (tests skip with that text). Token auth, a short private temp dir, free
ports per node; :meth:`stop` ends only the two ``ray start`` processes this object started and
their descendants, by PID.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).parent))
from local_ray_cluster import LocalRayCluster, free_ports  # noqa: E402

HEAD_IP, WORKER_IP = "127.0.0.2", "127.0.0.3"
NODE_PORTS = ("node-manager-port", "object-manager-port", "metrics-export-port", "dashboard-agent-listen-port",
              "dashboard-agent-grpc-port", "runtime-env-agent-port")


def unshare_prefix() -> list[str]:
    return ["unshare", "--mount", "--propagation", "private"] + ([] if os.geteuid() == 0 else ["--map-root-user"])


def namespace_error() -> str | None:
    """None when this machine can give a process a private bind mount, else the exact error."""
    if shutil.which("unshare") is None:
        return "unshare(1) not found"
    with tempfile.TemporaryDirectory(prefix="m2n-probe-") as tmp:
        source, target = Path(tmp, "a"), Path(tmp, "b")
        source.mkdir(), target.mkdir()
        (source / "seen").touch()
        proc = subprocess.run([*unshare_prefix(), "sh", "-c", f"mount --bind {source} {target} && test -e {target}/seen"],
                              capture_output=True, text=True, timeout=60)
        if proc.returncode:
            return f"{' '.join(unshare_prefix())} + mount --bind: exit {proc.returncode}: {proc.stderr.strip()}"
        if (target / "seen").exists():
            return "the bind mount leaked out of the mount namespace"
    return None


class TwoNodeCluster(LocalRayCluster):
    """A head (127.0.0.2, ``head_cpus``) and one worker node (127.0.0.3, ``worker_cpus``)."""

    def __init__(self, *, head_cpus: int = 1, worker_cpus: int = 1, env: dict[str, str] | None = None):
        # RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1: Ray's guard against a multi-node cluster on loopback.
        super().__init__(num_cpus=head_cpus, env={"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1", **(env or {})})
        self.worker_cpus = worker_cpus
        self.worker_ports = dict(zip(NODE_PORTS, free_ports(len(NODE_PORTS))))
        self.node_local = Path(self.temp_dir) / "nodelocal"
        self.disks = {"head": Path(self.temp_dir) / "disk-head", "worker": Path(self.temp_dir) / "disk-worker"}
        for path in (self.node_local, *self.disks.values()):
            path.mkdir()
        self.nodes: dict[str, subprocess.Popen] = {}

    @property
    def dashboard_url(self) -> str:
        return f"http://{HEAD_IP}:{self.ports['dashboard-port']}"

    @property
    def address(self) -> str:
        return f"{HEAD_IP}:{self.ports['port']}"

    def _node(self, name: str, ray_args: list[str]) -> subprocess.Popen:
        mount = f"mount --bind {self.disks[name]} {self.node_local}"
        log = open(Path(self.temp_dir) / f"{name}.log", "w")
        command = f"{mount} && exec {' '.join(ray_args)}"
        return subprocess.Popen([*unshare_prefix(), "sh", "-c", command], env=self.env, stdout=log,
                                stderr=subprocess.STDOUT)

    def start(self, timeout: float = 240) -> "TwoNodeCluster":
        common = [self.ray, "start", "--block", "--disable-usage-stats", "--temp-dir", self.temp_dir]
        self.nodes["head"] = self._node("head", [
            *common, "--head", "--node-ip-address", HEAD_IP, "--dashboard-host", HEAD_IP,
            "--num-cpus", str(self.num_cpus), *[f"--{name}={port}" for name, port in self.ports.items()]])
        try:
            self._wait_for_gcs(timeout)  # the worker node joins as soon as the head's GCS listens
            self.nodes["worker"] = self._node("worker", [
                *common, "--address", self.address, "--node-ip-address", WORKER_IP,
                "--num-cpus", str(self.worker_cpus), *[f"--{n}={p}" for n, p in self.worker_ports.items()]])
            self._wait_for_dashboard(timeout)
            self._wait_for_nodes(2, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def kill_worker_node(self) -> list[int]:
        """SIGKILL the worker node's ``ray start`` and everything under it (raylet, its Ray workers),
        by PID, as a lost VM; returns the PIDs killed."""
        root = psutil.Process(self.nodes["worker"].pid)
        victims = [root, *root.children(recursive=True)]
        for proc in victims:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(victims, timeout=30)
        self.nodes["worker"].wait(timeout=30)
        return [p.pid for p in victims]

    def replace_worker_node(self, timeout: float = 240) -> str:
        """A new worker node at 127.0.0.3 (new ports, the same private disk), as an autoscaler
        replaces a lost VM; returns its node id once it is alive."""
        before = {n["node_id"] for n in self.alive_nodes()}
        self.worker_ports = dict(zip(NODE_PORTS, free_ports(len(NODE_PORTS))))
        self.nodes["worker"] = self._node("worker", [
            self.ray, "start", "--block", "--disable-usage-stats", "--temp-dir", self.temp_dir, "--address",
            self.address, "--node-ip-address", WORKER_IP, "--num-cpus", str(self.worker_cpus),
            *[f"--{n}={p}" for n, p in self.worker_ports.items()]])
        deadline = time.monotonic() + timeout
        while True:
            new = [n["node_id"] for n in self.alive_nodes() if n["node_ip"] == WORKER_IP and n["node_id"] not in before]
            if new:
                return new[0]
            if self.nodes["worker"].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the new worker node did not join; logs:\n{self.node_logs()}")
            time.sleep(1)

    def _wait_for_gcs(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection((HEAD_IP, self.ports["port"]), timeout=2).close()
                return
            except OSError:
                if self.nodes["head"].poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the head's GCS is not listening; logs:\n{self.node_logs()}") from None
                time.sleep(0.5)

    def _wait_for_nodes(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.alive_nodes()) < count:
            dead = [name for name, proc in self.nodes.items() if proc.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"{count} nodes not up (exited: {dead}); logs:\n{self.node_logs()}")
            time.sleep(1)

    def alive_nodes(self) -> list[dict]:
        """The alive nodes, from the dashboard's state API (address, CPUs)."""
        nodes = self.api("/api/v0/nodes?limit=100&detail=true")["data"]["result"]["result"]
        return [n for n in nodes if n["state"] == "ALIVE"]

    def node_logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in Path(self.temp_dir).glob("*.log"))

    def processes(self) -> list[psutil.Process]:
        found: dict[int, psutil.Process] = {}
        for proc in self.nodes.values():
            try:
                root = psutil.Process(proc.pid)
                found.update({p.pid: p for p in [root, *root.children(recursive=True)]})
            except psutil.NoSuchProcess:
                continue
        return list(found.values())

    def stop(self, grace: float = 3) -> None:
        """SIGTERM, then SIGKILL after ``grace`` s (a test cluster keeps nothing), by PID."""
        super().stop(grace)
        for proc in self.nodes.values():
            if proc.poll() is None:
                proc.wait(timeout=grace)
