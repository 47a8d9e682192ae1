"""medcl.primed.retriever.use_service: where PRIMED's planning reaches the corpus by default."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import ray

from medcl.primed.retriever import use_service


def _params(service, index_dir="/index"):
    return SimpleNamespace(service=service, index_dir=index_dir)


@pytest.mark.parametrize("service", [True, False])
def test_an_explicit_choice_is_kept(service, monkeypatch):
    monkeypatch.setattr(ray, "nodes", lambda: pytest.fail("an explicit choice needs no cluster lookup"))
    assert use_service(_params(service)) is service


@pytest.mark.parametrize("alive,expected", [([True], False), ([True, True], True), ([True, False], False)])
def test_by_default_the_service_on_a_multi_node_cluster(alive, expected, monkeypatch):
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": a} for a in alive])
    assert use_service(_params(None)) is expected


def test_by_default_in_process_without_ray_or_without_an_index(monkeypatch):
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    assert use_service(_params(None)) is False
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True}, {"Alive": True}])
    assert use_service(_params(None, index_dir=None)) is False
