"""``medcl.engine.localray``: how a local Ray is started so that only meaningful lines reach the
terminal, and nothing of this Ray asks another Ray's dashboard about its actors."""
from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from medcl.engine import localray


@pytest.fixture
def clean_env(monkeypatch):
    for key in ("MEDCL_DEBUG", "MEDCL_VERBOSE", "RAY_AIR_NEW_OUTPUT", localray.API_SERVER_VARIABLE,
                localray.PREEMPTION_WATCHER_VARIABLE, localray.NO_DASHBOARD_VARIABLE):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(localray, "_api_server_set_here", None)
    return monkeypatch


def test_without_dashboard_state_queries_stay_on_this_ray_and_the_cleaner_warning_is_dropped(clean_env):
    kwargs = localray.local_init_kwargs(2, dashboard=False)
    port = kwargs["dashboard_port"]
    assert os.environ[localray.API_SERVER_VARIABLE] == f"http://127.0.0.1:{port}"
    assert os.environ[localray.PREEMPTION_WATCHER_VARIABLE] == "0"
    assert kwargs["include_dashboard"] is False and kwargs["_node_ip_address"] == "127.0.0.1"
    assert kwargs["logging_level"] == logging.WARNING
    assert kwargs["runtime_env"] == {"worker_process_setup_hook": "medcl.engine.localray.quiet_worker",
                                     "env_vars": {localray.NO_DASHBOARD_VARIABLE: "1"}}
    again = localray.local_init_kwargs(2, dashboard=False)  # a second local Ray: its own port
    assert os.environ[localray.API_SERVER_VARIABLE] == f"http://127.0.0.1:{again['dashboard_port']}"


def test_with_dashboard_or_verbose_nothing_is_filtered(clean_env):
    kwargs = localray.local_init_kwargs(1, dashboard=True)
    assert kwargs["include_dashboard"] is True and kwargs["runtime_env"]["env_vars"] == {
        localray.NO_DASHBOARD_VARIABLE: "0"}  # the cleaner's state queries work: its warnings would mean something
    localray.quiet_tune_output()
    assert os.environ["RAY_AIR_NEW_OUTPUT"] == "0"
    clean_env.delenv("RAY_AIR_NEW_OUTPUT")
    clean_env.setenv("MEDCL_VERBOSE", "1")
    kwargs = localray.local_init_kwargs(1, dashboard=False)
    assert "runtime_env" not in kwargs and kwargs["logging_level"] == logging.INFO
    localray.quiet_tune_output()
    assert "RAY_AIR_NEW_OUTPUT" not in os.environ
    assert localray.train_log_level() == "INFO"
    clean_env.delenv("MEDCL_VERBOSE")
    clean_env.setenv("MEDCL_DEBUG", "1")
    assert localray.verbose() and localray.ray_log_level() == logging.INFO
    clean_env.setenv("MEDCL_DEBUG", "0")
    assert not localray.verbose() and localray.train_log_level() == "WARNING"


def test_a_user_set_state_api_address_is_kept(clean_env):
    clean_env.setenv(localray.API_SERVER_VARIABLE, "http://10.0.0.1:8265")
    clean_env.setenv(localray.PREEMPTION_WATCHER_VARIABLE, "1")
    localray.local_init_kwargs(1, dashboard=False)
    assert os.environ[localray.API_SERVER_VARIABLE] == "http://10.0.0.1:8265"
    assert os.environ[localray.PREEMPTION_WATCHER_VARIABLE] == "1"


def test_the_worker_hook_keeps_ray_libraries_at_warning_and_drops_only_the_cleaner_unavailable_warning(clean_env):
    logger = logging.getLogger(localray.CLEANER_LOGGER)
    saved = list(logger.filters), {n: logging.getLogger(n).level for n in localray.LIBRARY_LOGGERS}
    try:
        localray.quiet_worker()
        assert logger.filters == saved[0], "with a dashboard the cleaner's warnings mean something"
        assert all(logging.getLogger(n).level == logging.WARNING for n in localray.LIBRARY_LOGGERS)
        clean_env.setenv(localray.NO_DASHBOARD_VARIABLE, "1")
        localray.quiet_worker()
        localray.quiet_worker()  # idempotent
        assert sum(isinstance(f, localray._DropCleanerUnavailable) for f in logger.filters) == 1

        def passes(message: str) -> bool:
            record = logger.makeRecord(logger.name, logging.WARNING, __file__, 1, message, (), None)
            return all(f.filter(record) for f in logger.filters)

        assert not passes("Failed to query Ray Train Controller actor state. State API may be temporarily unavailable.")
        assert passes("Detected that the Ray Train controller actor (x) is dead. Cleaning up placement group")
        assert passes("Failed to clean up placement group: boom")
    finally:
        logger.filters[:] = saved[0]
        for name, level in saved[1].items():
            logging.getLogger(name).setLevel(level)


@pytest.mark.parametrize("ray_first, expected", [(False, "token"), (True, None)])
def test_token_auth_is_asked_for_explicitly_before_ray_is_imported(ray_first, expected):
    code = ("import os, sys\n" + ("import ray\n" if ray_first else "") +
            "from medcl.engine.loopback import prepare_local_environment\n"
            "prepare_local_environment()\nprint(os.environ.get('RAY_AUTH_MODE'))")
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS", "RAY_RAYLET_PID")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(expected)
