"""medcl.telemetry: metric names, kinds and tags as recorded; the off switches; ProgressLog wiring."""
from __future__ import annotations

import pytest
import torch

from medcl import telemetry
from medcl.engine.checkpoint import SequenceState
from medcl.engine.progress import ProgressLog
from medcl.rundir import RunDir


class Recorder:
    """Stands in for ``ray.util.metrics``: records every call as (name, method, value, tags)."""

    def __init__(self):
        self.calls: list[tuple[str, str, float, dict]] = []
        self.created: list[tuple[str, str, tuple]] = []

    def __call__(self, name, spec):
        self.created.append((name, spec.kind, spec.tags))
        recorder = self

        class _Metric:
            def _log(self, method, value, tags):
                assert set(tags) == set(spec.tags), f"{name}: tags {sorted(tags)} != {spec.tags}"
                recorder.calls.append((name, method, value, dict(tags)))

            def set(self, value, tags):
                assert spec.kind == "gauge"
                self._log("set", value, tags)

            def inc(self, value, tags):
                assert spec.kind == "counter"
                self._log("inc", value, tags)

            def observe(self, value, tags):
                assert spec.kind == "histogram"
                self._log("observe", value, tags)

        return _Metric()

    def values(self, name):
        return [(value, tags) for n, _, value, tags in self.calls if n == name]


@pytest.fixture
def recorder(monkeypatch):
    rec = Recorder()
    monkeypatch.setattr(telemetry, "factory", rec)
    monkeypatch.delenv(telemetry.ENV_SWITCH, raising=False)
    telemetry.reset()
    yield rec
    telemetry.reset()


def test_every_metric_name_is_valid_for_ray_and_documented():
    doc = telemetry.__doc__
    for name, spec in telemetry.METRICS.items():
        assert name.startswith("medcl_") and name.replace("_", "").isalnum()
        assert spec.kind in ("counter", "gauge", "histogram")
        assert f"``{name}``" in doc, f"{name} missing from the module's table"


def test_metrics_are_created_lazily_once(recorder):
    assert recorder.created == []
    telemetry.record_retrieval(4, 0.5, service="s")
    telemetry.record_retrieval(2, 0.5, service="s")
    names = [name for name, _, _ in recorder.created]
    assert sorted(names) == ["medcl_retrieval_latency_seconds", "medcl_retrieval_queries_per_s",
                             "medcl_retrieval_queries_total"]


def test_step_records_step_loss_terms_and_throughput(recorder):
    telemetry.record_step("quick", "xray", 40, {"loss": 1.5, "ce": 1.25}, samples=640, samples_per_s=800.0)
    assert recorder.values("medcl_train_step") == [(40, {"run": "quick", "task": "xray"})]
    assert sorted(recorder.values("medcl_train_loss"), key=lambda v: v[1]["term"]) == [
        (1.25, {"run": "quick", "task": "xray", "term": "ce"}),
        (1.5, {"run": "quick", "task": "xray", "term": "loss"})]
    assert recorder.values("medcl_train_samples_per_s") == [(800.0, {"run": "quick", "task": "xray"})]
    assert recorder.values("medcl_train_samples_total") == [(640, {"run": "quick", "task": "xray"})]


def test_eval_records_one_gauge_per_evaluated_task(recorder):
    telemetry.record_eval("quick", "ultrasound", {"xray": 41.0, "ultrasound": 88.5})
    assert sorted(recorder.values("medcl_eval_accuracy"), key=lambda v: v[1]["evaluated"]) == [
        (88.5, {"run": "quick", "task": "ultrasound", "evaluated": "ultrasound"}),
        (41.0, {"run": "quick", "task": "ultrasound", "evaluated": "xray"})]


def test_retrieval_rate_and_latency(recorder):
    telemetry.record_retrieval(64, 0.25, service="roco")
    assert recorder.values("medcl_retrieval_queries_total") == [(64, {"service": "roco"})]
    assert recorder.values("medcl_retrieval_queries_per_s") == [(256.0, {"service": "roco"})]
    assert recorder.values("medcl_retrieval_latency_seconds") == [(0.25, {"service": "roco"})]


def test_trials_running_goes_down_when_trials_end(recorder):
    for status in ("running", "running", "running", "pruned", "finished"):
        telemetry.record_trial("lr-sweep", status)
    gauge = recorder.values("medcl_sweep_trials")
    running = [v for v, tags in gauge if tags["status"] == "running"]
    assert running == [1, 2, 3, 2, 1]
    assert (1, {"sweep": "lr-sweep", "status": "pruned"}) in gauge
    assert (1, {"sweep": "lr-sweep", "status": "finished"}) in gauge
    assert len(recorder.values("medcl_sweep_trials_total")) == 5
    with pytest.raises(ValueError, match="expected one of running, pruned, finished, failed"):
        telemetry.record_trial("lr-sweep", "paused")


@pytest.mark.parametrize("value", ["0", "false", "OFF", "no"])
def test_environment_switch_turns_everything_off(recorder, monkeypatch, value):
    monkeypatch.setenv(telemetry.ENV_SWITCH, value)
    telemetry.record_stage("r", "xray", 0, 2)
    telemetry.record_step("r", "xray", 1, {"loss": 1.0}, samples=8, samples_per_s=8.0)
    telemetry.record_eval("r", "xray", {"xray": 50.0})
    telemetry.record_retrieval(1, 0.1, service="s")
    telemetry.record_trial("sw", "running")
    assert recorder.calls == [] and recorder.created == []


def _run_progress(tmp_path, *, telemetry_on: bool, enabled: bool = True):
    run = RunDir(tmp_path / "myrun")
    run.path.mkdir(parents=True)
    log = ProgressLog(run, enabled=enabled, log_every=2, telemetry=telemetry_on)
    log.start_stage("xray", 0, 2, 4)
    for step in range(1, 5):
        log.step(step, {"loss": torch.tensor(0.5 * step)}, samples=16)
    state = SequenceState(task_names=["xray", "fundus"], stage_names=["xray", "fundus"], zero_shot=[20.0, 20.0],
                          rows=[[75.0, 30.0]], auc_zero_shot=[50.0, 50.0], auc_rows=[[90.0, 55.0]])
    log.row("xray", state)


def test_progress_log_sends_stages_steps_and_rows(recorder, tmp_path):
    _run_progress(tmp_path, telemetry_on=True)
    assert recorder.values("medcl_train_task_index") == [(1, {"run": "myrun", "task": "xray"})]
    assert recorder.values("medcl_train_tasks") == [(2, {"run": "myrun"})]
    assert [v for v, _ in recorder.values("medcl_train_step")] == [0, 2, 4]
    assert [v for v, _ in recorder.values("medcl_train_loss")] == [1.0, 2.0]
    assert sum(v for v, _ in recorder.values("medcl_train_samples_total")) == 64
    assert (75.0, {"run": "myrun", "task": "xray", "evaluated": "xray"}) in recorder.values("medcl_eval_accuracy")


@pytest.mark.parametrize("telemetry_on,enabled", [(False, True), (True, False)])
def test_progress_log_records_nothing_when_off_or_not_rank_zero(recorder, tmp_path, telemetry_on, enabled):
    _run_progress(tmp_path, telemetry_on=telemetry_on, enabled=enabled)
    assert recorder.calls == []


def test_experiment_switch_defaults_on_and_parses():
    from medcl.config import ExperimentConfig

    assert ExperimentConfig.model_validate({"name": "x"}).telemetry is True
    assert ExperimentConfig.model_validate({"name": "x", "telemetry": False}).telemetry is False


def test_real_ray_metrics_accept_every_spec():
    """The real factory builds each metric with its tags (no Ray needed to construct them)."""
    for name, spec in telemetry.METRICS.items():
        created = telemetry._ray_metric(name, spec)
        assert created.info["name"] == name and tuple(created.info["tag_keys"]) == spec.tags
