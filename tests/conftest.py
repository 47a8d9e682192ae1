"""Shared fixtures: no network, one Ray per test session (small, loopback, no dashboard)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
os.environ.pop("RAY_ADDRESS", None)
from medcl.engine.loopback import prepare_local_environment  # noqa: E402

prepare_local_environment()  # keeps the test Ray on loopback: before ray is imported

sys.path.insert(0, str(Path(__file__).parent))
from s3server import s3_session  # noqa: E402,F401  (the session's moto S3 server: a fixture)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def ray_session(s3_session, tmp_path_factory):
    """Start Ray once for the whole test session with 2 CPUs (as ``medcl run`` starts a local Ray:
    loopback, no dashboard, Ray Train's state queries pinned to this Ray); shut it down at the end.
    The session's S3 server (``s3_session``) is started first, so every Ray worker can reach it, and
    the node cache of downloaded objects (``MEDCL_CACHE``) is the session's temporary folder, so no
    test leaves copies in the user's ~/.cache."""
    import ray

    os.environ["MEDCL_CACHE"] = str(tmp_path_factory.mktemp("medcl-cache"))

    from medcl.engine.localray import init_local_ray

    init_local_ray(2, dashboard=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (only present beside the project checkout)")
    return SHARED_DATA
