"""The image budgets (MEDCL_MAX_IMAGE_PIXELS, MEDCL_MAX_IMAGE_BYTES) reach a cluster's workers: a
driver joining a cluster passes the ones set in its environment in the job's runtime env, leaving
those the job's own runtime env (``ray job submit --runtime-env``) already sets to it."""
from __future__ import annotations

import json

import pytest

from medcl.data.images import BUDGET_VARIABLES, budget_environment
from medcl.engine import cluster


@pytest.fixture
def clean_env(monkeypatch):
    for name in (*BUDGET_VARIABLES, "RAY_JOB_CONFIG_JSON_ENV_VAR", "RAY_AUTH_MODE"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_budgets_set_on_the_driver_are_in_the_job_env_vars(clean_env):
    clean_env.setenv("MEDCL_MAX_IMAGE_PIXELS", "1000000")
    clean_env.setenv("MEDCL_MAX_IMAGE_BYTES", "2048")
    assert cluster.job_runtime_env() == {"env_vars": {"MEDCL_MAX_IMAGE_PIXELS": "1000000",
                                                      "MEDCL_MAX_IMAGE_BYTES": "2048"}}


def test_nothing_is_added_when_no_budget_is_set(clean_env):
    assert budget_environment() == {} and cluster.job_runtime_env() is None


def test_a_budget_the_submitted_job_already_sets_is_left_to_it(clean_env):
    clean_env.setenv("MEDCL_MAX_IMAGE_PIXELS", "5000")
    clean_env.setenv("MEDCL_MAX_IMAGE_BYTES", "4096")
    clean_env.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps(
        {"runtime_env": {"env_vars": {"MEDCL_MAX_IMAGE_PIXELS": "5000", "MEDCL_TELEMETRY": "1"}}}))
    assert cluster.job_runtime_env() == {"env_vars": {"MEDCL_MAX_IMAGE_BYTES": "4096"}}


def test_joining_a_cluster_passes_the_budgets_to_ray_init(clean_env):
    """What ``medcl run/pretrain/sweep/corpus/index`` do with RAY_ADDRESS set: ``ray.init`` receives
    the runtime env (the call is captured, no cluster is reached)."""
    import ray

    clean_env.setenv("MEDCL_MAX_IMAGE_PIXELS", "123456")
    calls = []
    clean_env.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    cluster._join("10.0.0.1:6379")
    assert calls and calls[0]["address"] == "10.0.0.1:6379"
    assert calls[0]["runtime_env"] == {"env_vars": {"MEDCL_MAX_IMAGE_PIXELS": "123456"}}
