"""ZSCL keeps more zero-shot Transfer than plain fine-tuning (Zheng et al., ICCV 2023), from a CLIP
pretrained in the test: the finding every comparison on this platform rests on, kept from silently
regressing (it was inverted while BatchNorm statistics moved during fine-tuning).

The pretraining (medcl-tiny, a BatchNorm ResNet, so the normalisation policy is exercised: frozen
statistics by default from pretrained weights) and both sequences run in Ray Train's local mode
with fixed seeds; experiments/benchmarks/method_findings.py measures the same over seeds and
strategies.
"""
from __future__ import annotations

import pytest

from local_sequence import run_local
from medcl.config import validate_experiment
from medcl.pretrain.config import validate_pretrain
from medcl.pretrain.runner import run_pretrain

pytestmark = [pytest.mark.ray, pytest.mark.slow]
ORDER = ["xray", "ultrasound", "fundus"]


@pytest.fixture(scope="module")
def pretrained_weights(ray_session, tmp_path_factory):
    raw = {"name": "pt", "seed": 0, "output_dir": str(tmp_path_factory.mktemp("pretrain")),
           "data": {"source": "synthmed", "seed": 1000, "per_class": 100, "heldout_per_class": 4},
           "model": {"name": "medcl-tiny"},
           "train": {"workers": 1, "batch_size": 128, "lr": 0.002, "weight_decay": 0.1, "warmup_steps": 20,
                     "schedule": "cosine", "steps": 200}}
    return run_pretrain(validate_pretrain(raw), local=True).weights


def _metrics(weights, strategy: dict, output_dir) -> dict:
    return run_local(validate_experiment({
        "name": strategy["name"], "seed": 0, "output_dir": str(output_dir), "telemetry": False,
        "benchmark": {"name": "synthmed", "order": ORDER, "train_per_class": 120, "val_per_class": 1,
                      "test_per_class": 50},
        "model": {"name": "medcl-tiny", "pretrained": str(weights)},
        "strategy": strategy,
        "train": {"workers": 1, "batch_size": 64, "lr": 3e-4, "steps_per_task": 100},
    })).metrics


def test_zscl_keeps_more_transfer_than_finetune(pretrained_weights, tmp_path):
    finetune = _metrics(pretrained_weights, {"name": "finetune"}, tmp_path)
    zscl = _metrics(pretrained_weights, {"name": "zscl", "reference": {
        "name": "synthmed", "seed": 1, "domains": ["histology", "ct", "dermoscopy"], "per_class": 20}}, tmp_path)
    assert max(finetune["zero_shot"]) > 30, "the pretraining should give a real zero-shot start (chance: 20 %)"
    assert zscl["transfer"] > finetune["transfer"] + 1.0, (zscl["transfer"], finetune["transfer"])
