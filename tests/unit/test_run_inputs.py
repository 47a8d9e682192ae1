"""Issue 32, walkthrough item 3: a run's inputs are checked before Ray starts, each problem naming its
dotted field, and a run directory that trained nothing pins no experiment."""
from __future__ import annotations

import json

import pytest

from medcl.config import validate_experiment
from medcl.engine.inputs import check_inputs
from medcl.engine.runner import RunError, prepare_run_dir, run_experiment, trained_anything
from medcl.errors import ConfigError


def _primed(tmp_path, **strategy):
    return validate_experiment({
        "name": "primed_tiny", "output_dir": str(tmp_path / "runs"),
        "benchmark": {"name": "synthmed", "order": ["xray", "ultrasound"], "image_size": 16,
                      "train_per_class": 8, "test_per_class": 4},
        "model": {"name": "medcl-tiny"}, "strategy": {"name": "primed", **strategy},
        "train": {"batch_size": 8, "steps_per_task": 2}})


def test_missing_index_dir_is_named_before_ray_and_pins_nothing(tmp_path, monkeypatch):
    import medcl.engine.runner as runner

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started before the inputs were checked")

    monkeypatch.setattr(runner, "connect_checked", no_ray)  # where medcl run joins or starts Ray
    config = _primed(tmp_path, index_dir=str(tmp_path / "no-such-index"))
    with pytest.raises(ConfigError) as caught:
        run_experiment(config)
    assert [field for field, _ in caught.value.problems] == ["strategy.index_dir"]
    assert "no-such-index: no such file or folder" in str(caught.value)
    assert not (tmp_path / "runs").exists(), "a run refused before training must leave no run directory"


def test_a_folder_that_is_not_an_index_is_named(tmp_path):
    (tmp_path / "empty-index").mkdir()
    with pytest.raises(ConfigError, match=r"strategy\.index_dir: .*no index\.json"):
        check_inputs(_primed(tmp_path, index_dir=str(tmp_path / "empty-index")))


def test_every_missing_input_is_named_and_outputs_are_not_inputs(tmp_path):
    config = _primed(tmp_path, questions=str(tmp_path / "pool.yaml"), corpus_dir=str(tmp_path / "corpus"),
                     plan_dir=str(tmp_path / "plan-not-made-yet"))
    with pytest.raises(ConfigError) as caught:
        check_inputs(config)
    assert sorted(field for field, _ in caught.value.problems) == ["strategy.corpus_dir", "strategy.questions"]
    (tmp_path / "pool.yaml").write_text("general: [a question]\n")
    (tmp_path / "corpus").mkdir()
    check_inputs(config)  # plan_dir is written by the run: its absence is no problem


def test_an_index_whose_recorded_corpus_is_gone_is_named(tmp_path):
    index = tmp_path / "index"
    index.mkdir()
    (index / "index.json").write_text(json.dumps({
        "kind": "medcl-index", "format": 2, "dim": 4, "model": {}, "embeddings": str(tmp_path / "emb"),
        "corpus": str(tmp_path / "gone-corpus"), "factory": "flat", "spaces": ["image"], "shards": [],
        "files": {}}))
    with pytest.raises(ConfigError, match=r"strategy\.index_dir: the corpus .*gone-corpus does not exist"):
        check_inputs(_primed(tmp_path, index_dir=str(index)))


def test_a_run_dir_that_trained_nothing_does_not_refuse_the_corrected_command(tmp_path, capsys):
    failed = _primed(tmp_path, index_dir=str(tmp_path / "typo"))
    run = prepare_run_dir(failed, fresh=False)  # what a run failing before its first checkpoint leaves
    (run.path / "primed").mkdir()
    corrected = _primed(tmp_path)
    assert not trained_anything(run)
    assert prepare_run_dir(corrected, fresh=False, started=trained_anything).path == run.path
    assert "trained nothing" in capsys.readouterr().out
    assert "typo" not in run.config.read_text(), "the corrected experiment's config.yaml replaces the old one"


@pytest.mark.parametrize("checkpoint", ["task-0", "task-1-step-5", "task-1.torn-20261207T120000Z"])
def test_a_run_dir_with_any_checkpoint_stays_pinned(tmp_path, checkpoint):
    run = prepare_run_dir(_primed(tmp_path, index_dir=str(tmp_path / "typo")), fresh=False)
    (run.checkpoints / checkpoint).mkdir(parents=True)
    assert trained_anything(run)
    with pytest.raises(RunError, match="changed: strategy.index_dir"):
        prepare_run_dir(_primed(tmp_path), fresh=False, started=trained_anything)
