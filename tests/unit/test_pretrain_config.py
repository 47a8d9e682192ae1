"""Pretraining files: the shipped one is valid, errors name their field, batches are deterministic."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medcl.config import ConfigError
from medcl.pretrain.config import load_pretrain, validate_pretrain
from medcl.data.pairs import ImageCaptions
from medcl.pretrain.data import PairSampler

REPO = Path(__file__).resolve().parents[2]


def test_shipped_file_is_valid_and_the_quickstart_starts_from_it():
    from medcl.config import load_experiment

    config = load_pretrain(REPO / "experiments" / "pretrain_synthmed.yaml")
    assert config.data.source == "synthmed" and config.train.batch_size % config.train.workers == 0
    quickstart = load_experiment(REPO / "experiments" / "quickstart.yaml")
    assert quickstart.model.pretrained == str(config.run_dir / "model.safetensors")
    assert quickstart.seed != config.data.seed  # other draws than the images the quickstart is scored on


@pytest.mark.parametrize("raw, field, words", [
    ({"data": {"per_clas": 3}}, "data.per_clas", "did you mean 'per_class'"),
    ({"data": {"source": "corpse"}}, "data", "'synthmed', 'corpus'"),
    ({"data": {"source": "corpus"}}, "data.path", "Field required"),
    ({"data": {"domains": ["xray", "lung"]}}, "data.domains", "['lung']"),
    ({"train": {"workers": 3, "batch_size": 128, "steps": 5}}, "train.batch_size", "multiple of workers (3)"),
    ({"train": {"steps": 5, "epochs": 1}}, "train", "exactly one of steps and epochs"),
    ({"train": {"steps": 5, "lr": -1}}, "train.lr", "greater than 0"),
    ({"model": {"name": "medcl-tny"}}, "model.name", "did you mean 'medcl-tiny'"),
])
def test_errors_name_the_field(raw, field, words):
    with pytest.raises(ConfigError) as info:
        validate_pretrain({"name": "x", **raw})
    fields = dict(info.value.problems)
    assert field in fields and words in fields[field], info.value.problems
    assert "invalid pretraining config" in str(info.value)


def test_set_overrides_and_missing_file(tmp_path):
    config = load_pretrain(REPO / "experiments" / "pretrain_synthmed.yaml", ["train.steps=7", "data.per_class=3"])
    assert (config.train.steps, config.data.per_class) == (7, 3)
    with pytest.raises(ConfigError, match="no such file"):
        load_pretrain(tmp_path / "absent.yaml")


def test_sampler_splits_each_global_batch_over_ranks_and_replays_it():
    pairs = ImageCaptions(np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1).repeat(3, -1), tuple(map(str, range(10))))
    whole = PairSampler(pairs, batch_size=4, seed=3)
    ranks = [PairSampler(pairs, batch_size=4, seed=3, rank=r, world_size=2) for r in range(2)]
    for step in range(6):  # crosses epoch boundaries (10 pairs, 4 per step)
        merged = sorted(np.concatenate([r.indices(step) for r in ranks]).tolist())
        assert merged == sorted(whole.indices(step).tolist())
    first_epoch = np.concatenate([whole.indices(s) for s in range(2)] + [whole.indices(2)[:2]])
    assert sorted(first_epoch.tolist()) == list(range(10))  # an epoch is a permutation
    resumed = list(whole.batches(5, start_step=3))
    assert [c for _, c in resumed] == [[str(i) for i in whole.indices(s)] for s in (3, 4)]
