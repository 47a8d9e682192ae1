"""Events in an object store (moto S3 on 127.0.0.1): one new object per write under
``events.jsonl.d/``, read back in writing order after a plain ``events.jsonl`` an older medcl wrote;
a transient PUT error is retried, a persistent one never ends the run (the lines are carried by the
next write); local files keep a plain append."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from s3server import BUCKET, s3  # noqa: E402,F401  (s3: the moto server fixture)

from medcl import appends, rundir, storage  # noqa: E402
from medcl.rundir import RunDir, append_event, read_events  # noqa: E402
from medcl.storage import Location  # noqa: E402


@pytest.fixture
def s3_run(s3):
    return RunDir(Location(f"s3://{BUCKET}/events-{os.urandom(4).hex()}/run"))


class FlakyPuts:
    """``storage.write_bytes`` whose first ``failures`` writes of event parts raise as a dropped
    connection does in pyarrow (OSError); every other write goes to the store."""

    def __init__(self, monkeypatch, failures: int):
        self.failures, self.calls, self.real = failures, 0, storage.write_bytes
        monkeypatch.setattr(storage, "write_bytes", self)
        monkeypatch.setattr(appends, "APPEND_BACKOFF_S", (0.0, 0.0))  # two retries, no waiting in a test

    def __call__(self, value, data):
        if appends.PARTS_SUFFIX + "/" in str(value):
            self.calls += 1
            if self.calls <= self.failures:
                raise OSError("AWS Error NETWORK_CONNECTION during PutObject operation: curlCode: 56")
        return self.real(value, data)


def test_each_write_is_a_new_part_read_back_in_order_after_an_old_plain_file(s3_run):
    storage.write_text(s3_run.events, '{"kind": "legacy"}\n')  # what medcl wrote before parts
    for step in range(12):
        append_event(s3_run.events, {"kind": "step", "step": step})
    parts = appends.parts_of(s3_run.events)
    names = storage.listdir(parts)
    assert len(names) == 12 and names == sorted(names)
    first = storage.read_text(parts / names[0])
    append_event(s3_run.events, {"kind": "row"})
    assert storage.read_text(parts / names[0]) == first  # nothing written is rewritten
    assert [e.get("step", e["kind"]) for e in read_events(s3_run.events)] == ["legacy", *range(12), "row"]
    assert appends.appended_exists(s3_run.events)


def test_a_transient_error_is_retried(s3_run, monkeypatch):
    flaky = FlakyPuts(monkeypatch, failures=2)
    append_event(s3_run.events, {"kind": "step", "step": 1})
    assert flaky.calls == 3 and [e["step"] for e in read_events(s3_run.events)] == [1]


def test_a_persistent_error_is_not_fatal_and_the_lines_go_with_the_next_write(s3_run, monkeypatch, capsys):
    flaky = FlakyPuts(monkeypatch, failures=3)  # all three tries of the first write fail
    append_event(s3_run.events, {"kind": "step", "step": 1})  # no exception
    assert "could not write 1 event(s)" in capsys.readouterr().err and read_events(s3_run.events) == []
    append_event(s3_run.events, {"kind": "step", "step": 2})
    assert flaky.calls == 4 and [e["step"] for e in read_events(s3_run.events)] == [1, 2]
    assert not rundir._unwritten_events


def test_a_local_events_file_is_a_plain_append(tmp_path):
    run = RunDir(tmp_path)
    append_event(run.events, {"kind": "step", "step": 1})
    append_event(run.events, {"kind": "step", "step": 2})
    assert run.events.read_text().count("\n") == 2 and not appends.parts_of(run.events).exists()
    assert [e["step"] for e in read_events(run.events)] == [1, 2]
    assert read_events(tmp_path / "none.jsonl") == []
