"""An S3-compatible object store on loopback for tests: ``moto_server`` in a subprocess.

    with MotoS3() as s3:
        s3.create_bucket("medcl-test")
        env = {**os.environ, **s3.env}        # AWS_ENDPOINT_URL, keys, region for any process

The server is this object's own subprocess on 127.0.0.1 and a free port; :meth:`stop` ends that
process by its PID and nothing else. Credentials are moto's dummy ones; nothing leaves the machine.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

BUCKET = "medcl-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MotoS3:
    def __init__(self):
        self.port = _free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """Environment that points pyarrow, boto3 and Ray at this server (and nowhere else)."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}

    def start(self, timeout: float = 60) -> "MotoS3":
        server = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
        self.proc = subprocess.Popen([server, "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:  # readiness, not timing: poll until the server answers or the process died
            try:
                urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=5).close()
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"moto_server did not start on {self.endpoint}")
                time.sleep(0.2)

    def create_bucket(self, name: str) -> str:
        """Create ``name``; return ``s3://name``."""
        import boto3

        boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                     region_name="us-east-1").create_bucket(Bucket=name)
        return f"s3://{name}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> "MotoS3":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def apply_env(env: dict[str, str]) -> dict[str, str | None]:
    """Set ``env`` in this process; return what to restore with :func:`restore_env`."""
    previous = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    return previous


def restore_env(previous: dict[str, str | None]) -> None:
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def s3_session():
    """One moto S3 server for the whole test session, with bucket :data:`BUCKET`. This process's
    environment points at it from its first use to the end of the session, and the session's Ray
    (``ray_session`` in tests/conftest.py) is started after it: Ray's worker processes (Ray Data
    tasks, Tune trials, Train workers) inherit the environment and reach the bucket, as every node of
    a cluster has its own credentials. So Ray is started once per session, never restarted for S3."""
    with MotoS3() as server:
        previous = apply_env(server.env)
        try:
            server.create_bucket(BUCKET)
            yield server
        finally:
            restore_env(previous)


@pytest.fixture(scope="module")
def s3(s3_session):
    """The session's moto server (import the fixture into a test module to use it). Tests share the
    bucket: each writes under its own prefix."""
    return s3_session


@pytest.fixture(scope="module")
def ray_in_s3_env(s3, ray_session):
    """The session's Ray, whose workers read and write the session's bucket."""
    return ray_session
