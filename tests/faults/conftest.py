"""Shared pieces of the fault tests: the uninterrupted run of ``faultkit.fault_experiment``.

The reference runs through Ray Train's local mode (``local_sequence.run_local``, one worker in the
test process, a few seconds); the engine is deterministic and worker-count invariant (global batch
split over ranks, gradients averaged), so a 2-worker run with a fault must reproduce its matrix.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="session")
def reference_run(ray_session, tmp_path_factory):
    """The uninterrupted run of ``fault_experiment`` (1 worker, local mode)."""
    from faultkit import fault_experiment
    from local_sequence import run_local

    from medcl.config import validate_experiment

    return run_local(validate_experiment(fault_experiment(tmp_path_factory.mktemp("reference"), "reference")))
