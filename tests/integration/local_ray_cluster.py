"""A real Ray cluster started with ``ray start --head`` on loopback, for tests and benchmarks.

    with LocalRayCluster(num_cpus=2) as cluster:
        cluster.submit("sub-1", ["medcl", "run", "exp.yaml"], working_dir=wd)
        cluster.wait("sub-1")                      # -> "SUCCEEDED"
        cluster.metrics_text()                     # the node's Prometheus endpoint

Everything is its own: a short temp dir (Unix socket paths must stay under 108 characters), free
ports for every Ray service, and a random token with ``RAY_AUTH_MODE=token`` (passed as
``RAY_AUTH_TOKEN``, so ``~/.ray/auth_token`` is neither read nor written). Other Ray instances on
the machine are left alone: :meth:`stop` kills only the processes whose command line names this
cluster's temp dir, and their children, by PID (never ``ray stop``).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import psutil

PORT_NAMES = ("port", "dashboard-port", "metrics-export-port", "node-manager-port", "object-manager-port",
              "ray-client-server-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
              "runtime-env-agent-port")
TERMINAL_STATES = ("SUCCEEDED", "FAILED", "STOPPED")
REPO = Path(__file__).resolve().parents[2]


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 right now."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class LocalRayCluster:
    def __init__(self, *, num_cpus: int = 2, env: dict[str, str] | None = None, metrics_interval_ms: int = 1000):
        self.temp_dir = tempfile.mkdtemp(prefix="mcl-", dir="/tmp")
        self.ports = dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES))))
        self.token = uuid.uuid4().hex
        self.num_cpus = num_cpus
        bin_dir = str(Path(sys.executable).parent)
        self.ray = str(Path(bin_dir) / "ray")
        # Not another Ray's address: RAY_API_SERVER_ADDRESS is pinned by a local Ray this process
        # started (medcl.engine.localray), and `ray job submit` would follow it there.
        base = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
        self.env = {**base, "PATH": f"{bin_dir}{os.pathsep}{base.get('PATH', '')}", "RAY_AUTH_MODE": "token",
                    "RAY_AUTH_TOKEN": self.token, "RAY_TMPDIR": self.temp_dir, "GLOO_SOCKET_IFNAME": "lo",
                    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
                    "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1",
                    "RAY_metrics_report_interval_ms": str(metrics_interval_ms), **(env or {})}

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['dashboard-port']}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.ports['port']}"

    def start(self, timeout: float = 240) -> "LocalRayCluster":
        args = [self.ray, "start", "--head", "--temp-dir", self.temp_dir, "--node-ip-address", "127.0.0.1",
                "--dashboard-host", "127.0.0.1", "--num-cpus", str(self.num_cpus), "--disable-usage-stats",
                *[f"--{name}={port}" for name, port in self.ports.items()]]
        try:
            subprocess.run(args, env=self.env, check=True, timeout=timeout, capture_output=True, text=True)
        except subprocess.CalledProcessError as exc:
            self.stop()
            raise RuntimeError(f"ray start failed:\n{exc.stdout}\n{exc.stderr}") from None
        self._wait_for_dashboard(timeout)
        return self

    def _wait_for_dashboard(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.api("/api/jobs/")
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)

    def api(self, path: str):
        """GET a dashboard REST path with the cluster's token; the decoded JSON."""
        request = urllib.request.Request(self.dashboard_url + path, headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def submit(self, submission_id: str, entrypoint: list[str], *, working_dir: Path,
               runtime_env: Path | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess:
        """``ray job submit --no-wait`` with the cluster's token in the environment, from ``cwd`` (the
        repository root by default: ``cluster/runtime_env.yaml``'s ``py_modules`` are relative to it)."""
        args = [self.ray, "job", "submit", "--address", self.dashboard_url, "--submission-id", submission_id,
                "--working-dir", str(working_dir), "--no-wait"]
        if runtime_env is not None:
            args += ["--runtime-env", str(runtime_env)]
        args += ["--", *entrypoint]
        proc = subprocess.run(args, env=self.env, timeout=180, capture_output=True, text=True, cwd=cwd)
        if proc.returncode:  # say why: a bare CalledProcessError hides ray's own message
            raise AssertionError(f"ray job submit exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return proc

    def status(self, submission_id: str) -> str:
        return self.api(f"/api/jobs/{submission_id}")["status"]

    def wait(self, submission_id: str, timeout: float = 600, poll=None) -> str:
        """Poll until the job is in a terminal state; ``poll()`` is called between polls."""
        deadline = time.monotonic() + timeout
        while (status := self.status(submission_id)) not in TERMINAL_STATES:
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {submission_id} still {status} after {timeout:.0f} s")
            if poll is not None:
                poll()
            time.sleep(1)
        return status

    def logs(self, submission_id: str) -> str:
        return self.api(f"/api/jobs/{submission_id}/logs").get("logs", "")

    def metrics_text(self) -> str:
        """The head node's Prometheus exposition text."""
        url = f"http://127.0.0.1:{self.ports['metrics-export-port']}/metrics"
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.read().decode()

    def processes(self) -> list[psutil.Process]:
        """This cluster's processes: those naming its temp dir, and their descendants."""
        roots = []
        for proc in psutil.process_iter(["cmdline"]):
            try:
                if any(self.temp_dir in part for part in proc.info["cmdline"] or ()):
                    roots.append(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        found = {p.pid: p for p in roots}
        for root in roots:
            try:
                found.update({c.pid: c for c in root.children(recursive=True)})
            except psutil.NoSuchProcess:
                continue
        found.pop(os.getpid(), None)
        return list(found.values())

    def stop(self, grace: float = 10) -> None:
        """SIGTERM this cluster's processes, SIGKILL what is left after ``grace`` s; remove the temp dir."""
        procs = self.processes()
        for proc in procs:
            try:
                proc.send_signal(signal.SIGTERM)
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(procs, timeout=grace)
        for proc in alive:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=grace)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> "LocalRayCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
