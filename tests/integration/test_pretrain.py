"""``medcl pretrain`` end to end in Ray Train's local mode (one worker, in process; the multi-worker
arithmetic is tested in tests/unit/test_pretrain_loss.py): the loss falls and held-out recall rises
over the random-init model, the weights load through ``model.pretrained`` into an experiment and
classify zero-shot above chance, a corpus directory works, a finished run is a no-op, and a killed
run resumes to the weights of an uninterrupted one."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from medcl.config import load_experiment
from medcl.pretrain.config import validate_pretrain
from medcl.pretrain.runner import run_pretrain

pytestmark = pytest.mark.ray
REPO = Path(__file__).resolve().parents[2]
DOMAINS = ["xray"]


def _config(tmp: Path, **data) -> "PretrainConfig":  # noqa: F821
    raw = {"name": "pt", "seed": 0, "output_dir": str(tmp),
           "data": {"source": "synthmed", "seed": 1000, "domains": DOMAINS, "per_class": 100,
                    "heldout_per_class": 8, **data},
           "model": {"name": "medcl-tiny"},
           "train": {"workers": 1, "batch_size": 32, "lr": 0.003, "warmup_steps": 5, "steps": 75}}
    return validate_pretrain(raw)


@pytest.fixture(scope="module")
def pretrained(ray_session, tmp_path_factory):
    config = _config(tmp_path_factory.mktemp("pretrain"))
    return config, run_pretrain(config, local=True)


def test_pretraining_lowers_the_loss_and_raises_heldout_recall(pretrained):
    config, result = pretrained
    before, after = result.metrics["heldout_before"], result.metrics["heldout_after"]
    assert after["loss"] < before["loss"] - 0.2
    assert after["i2t_r5"] > before["i2t_r5"] + 5
    losses = [loss for _, loss in result.metrics["train_loss"]]
    assert losses[-1] < losses[0] - 0.5
    events = [json.loads(line) for line in result.run.events.read_text().splitlines()]
    steps = [e for e in events if e["kind"] == "step"]
    assert steps[-1]["step"] == 75 and all("loss" in e and e["samples_per_s"] > 0 for e in steps)
    assert (result.run.path / "config.yaml").exists() and result.weights == result.run.path / "model.safetensors"


def test_weights_load_into_an_experiment_and_classify_zero_shot(pretrained):
    from medcl.engine.context import TrainContext
    from medcl.engine.evaluate import evaluate_all
    from medcl.models import create_model
    from medcl.strategies import build_strategy

    _, result = pretrained
    overrides = [f"model.pretrained={result.weights}", "model.name=medcl-tiny", "benchmark.num_tasks=1", "benchmark.test_per_class=40",
                 "benchmark.train_per_class=1", "train.workers=1"]
    experiment = load_experiment(REPO / "experiments" / "quickstart.yaml", overrides)
    from medcl.engine.runner import build_tasks

    tasks = build_tasks(experiment)
    assert [t.name for t in tasks] == DOMAINS

    def zero_shot(pretrained_path):
        bundle = create_model(experiment.model.name, pretrained=pretrained_path)
        ctx = TrainContext(model=bundle.model, tokenizer=bundle.tokenizer, tasks=tasks, stages=[], device="cpu")
        return evaluate_all(ctx, build_strategy("finetune", {}), image_size=bundle.image_size, mean=bundle.mean,
                            std=bundle.std, batch_size=256)[0]

    chance = 100 / tasks[0].num_classes
    assert zero_shot(None) == pytest.approx(chance, abs=5)  # random init: one class for everything
    assert zero_shot(experiment.model.pretrained) > chance + 20


def test_finished_pretraining_is_a_no_op(pretrained):
    config, result = pretrained
    mtime = result.weights.stat().st_mtime_ns
    again = run_pretrain(config, local=True)
    assert again.already_done and again.weights == result.weights and result.weights.stat().st_mtime_ns == mtime


def _corpus_rows(count: int, size: int = 12) -> list[dict]:
    """Solid-colour images captioned with their colour (learnable in a few steps)."""
    from PIL import Image

    colours = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "white": (240, 240, 240)}
    rows = []
    for i in range(count):
        name = list(colours)[i % len(colours)]
        buffer = __import__("io").BytesIO()
        Image.new("RGB", (size, size), colours[name]).save(buffer, format="PNG")
        rows.append({"id": f"t:{i}", "image": buffer.getvalue(), "caption": f"a {name} scan", "source": "t",
                     "modality": "ct", "license": "CC0"})
    return rows


def test_corpus_directory_source_streams_through_ray_data_and_resumes(ray_session, tmp_path, monkeypatch):
    """The corpus goes to the trainer as a Ray Data stream (the driver passes no images), caption-only
    and undecodable rows are skipped and counted, the loss falls, and a run killed at step 5 resumes
    from its step-4 checkpoint (step count, optimiser and schedule restored) to the end."""
    import ray.data

    from medcl.corpus.schema import CORPUS_SCHEMA
    from medcl.engine import launch
    from medcl.engine.runner import RunError
    from medcl.pretrain import loop

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    rows = _corpus_rows(62)
    extra = {"source": "t", "modality": "ct", "license": "CC0"}
    rows += [{"id": "t:text", "image": None, "caption": "caption only", **extra},
             {"id": "t:bad", "image": b"not an image", "caption": "broken", **extra}]
    pq.write_table(pa.Table.from_pylist(rows, schema=CORPUS_SCHEMA), corpus / "part-00000.parquet", row_group_size=16)
    from medcl.corpus.store import CorpusShard, write_corpus_manifest
    from medcl.hashing import sha256_file

    write_corpus_manifest(corpus, [CorpusShard("part-00000.parquet", len(rows), sha256_file(corpus / "part-00000.parquet"))],
                          {"t": len(rows)})  # pretraining reads the shards the manifest lists, sha256-checked
    trainers, fired = [], []
    make_trainer = launch.make_trainer
    monkeypatch.setattr(launch, "make_trainer", lambda *a, **k: trainers.append((a[1], k)) or make_trainer(*a, **k))

    def fail_once(point, step, **where):
        if step == 5 and not fired:
            fired.append(step)
            raise RuntimeError("injected fault at step 5")

    monkeypatch.setattr(loop, "maybe_fail", fail_once)
    config = validate_pretrain({"name": "pt-corpus", "output_dir": str(tmp_path / "runs"),
                                "data": {"source": "corpus", "path": str(corpus), "heldout": 8, "image_size": 16},
                                "train": {"workers": 1, "batch_size": 8, "lr": 0.005, "steps": 10, "warmup_steps": 0,
                                          "checkpoint_every": 2}})
    with pytest.raises(RunError):
        run_pretrain(config, local=True)
    result = run_pretrain(config, local=True)
    loop_config, ingest = trainers[-1]
    assert isinstance(ingest["datasets"]["train"], ray.data.Dataset) and "data" not in loop_config
    assert len(loop_config["heldout"]) == 8 and loop_config["total_steps"] == 10
    data = result.metrics["data"]
    assert (data["rows"], data["train"], data["heldout"], data["ingest"]) == (64, 54, 8, "ray_data_stream")
    assert data["skipped"] == {"caption_only": 1, "undecodable_image": 1}
    assert result.metrics["heldout_after"]["pairs"] == 8 and result.weights.exists()
    events = [json.loads(line) for line in result.run.events.read_text().splitlines()]
    second = max(i for i, e in enumerate(events) if e["kind"] == "stage_start")
    resumed_steps = [e["step"] for e in events[second:] if e["kind"] == "step"]
    assert fired == [5] and sum(e["kind"] == "stage_start" for e in events) == 2
    assert resumed_steps and min(resumed_steps) > 4 and max(resumed_steps) == 10  # from step 4's checkpoint
    losses = dict((int(step), loss) for step, loss in result.metrics["train_loss"])
    assert result.metrics["steps"] == 10 and losses[10] < losses[1]


def test_killed_run_resumes_from_its_checkpoint_and_ends_where_an_uninterrupted_one_does(ray_session, tmp_path,
                                                                                           monkeypatch):
    from medcl.engine.runner import RunError
    from medcl.models.weights import read_state_dict
    from medcl.pretrain import loop

    def tiny(name: str):
        return validate_pretrain({"name": name, "output_dir": str(tmp_path), "data": {"domains": DOMAINS, "per_class": 4,
                                  "heldout_per_class": 2}, "train": {"workers": 1, "batch_size": 8, "steps": 6,
                                  "warmup_steps": 0, "checkpoint_every": 2}})

    fired = []

    def fail_once(point, step, **where):
        if step == 5 and not fired:
            fired.append(step)
            raise RuntimeError("injected fault at step 5")

    monkeypatch.setattr(loop, "maybe_fail", fail_once)
    try:
        resumed = run_pretrain(tiny("killed"), local=True)
    except RunError:  # local mode does not retry: the same command again resumes
        resumed = run_pretrain(tiny("killed"), local=True)
    whole = run_pretrain(tiny("whole"), local=True)
    assert fired == [5]
    starts = [json.loads(line) for line in resumed.run.events.read_text().splitlines()]
    assert sum(e["kind"] == "stage_start" for e in starts) == 2  # a second attempt, from step 4's checkpoint
    got, want = read_state_dict(resumed.weights), read_state_dict(whole.weights)
    assert all(np.array_equal(got[k].numpy(), want[k].numpy()) for k in want)
