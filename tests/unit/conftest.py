"""Unit tests run with one torch thread, as the Ray workers do: on 2 shared cores, 2 threads per
process thrash (seconds per test)."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
