"""Paths in experiment, pretraining, corpus and sweep files are made absolute when the file is loaded,
against the directory the command runs in (``medcl.paths``): workers and trials run elsewhere."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from medcl.config import ConfigError, ExperimentConfig, load_experiment
from medcl.paths import cli_path, is_weights_file, resolve_path, resolve_paths, resolve_weights

URIS = ["s3://bucket/runs", "gs://b/x.safetensors", "file:///tmp/x", "sqlite:///study.db", "hf://org/repo"]


@pytest.fixture
def cwd(tmp_path, monkeypatch) -> Path:
    """A working directory other than the files' folder (the files live in ``cwd/conf``)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "conf").mkdir()
    return tmp_path


def write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_relative_is_made_absolute_against_the_working_directory(cwd):
    assert resolve_path("runs/x") == str(cwd / "runs" / "x")
    assert resolve_path("./a/../b") == str(cwd / "b")
    assert resolve_path("x", base="/data") == "/data/x"
    assert cli_path("out") == cwd / "out"


def test_absolute_paths_uris_and_empty_strings_are_untouched(cwd):
    assert resolve_path("/abs/x/../y") == "/abs/x/../y"
    for uri in URIS:
        assert resolve_path(uri) == uri
    assert resolve_path("") == ""


def test_home_and_variables_are_expanded(cwd, monkeypatch):
    monkeypatch.setenv("HOME", "/home/someone")
    monkeypatch.setenv("MEDCL_TEST_DATA", "/mnt/data")
    assert resolve_path("~/w") == "/home/someone/w"
    assert resolve_path("$MEDCL_TEST_DATA/medmnist") == "/mnt/data/medmnist"


def test_resolution_is_idempotent(cwd):
    once = resolve_path("runs/a")
    assert resolve_path(once) == once
    raw = {"name": "x", "output_dir": "runs", "model": {"pretrained": "w.safetensors"}}
    assert resolve_paths(resolve_paths(raw, ExperimentConfig), ExperimentConfig) == resolve_paths(raw, ExperimentConfig)


@pytest.mark.parametrize("tag", ["openai", "default", "hf-hub", "laion2b_s34b_b88k",
                                 "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"])
def test_pretrained_tags_are_untouched(cwd, tag):
    assert not is_weights_file(tag) and resolve_weights(tag) == tag
    raw = resolve_paths({"name": "x", "model": {"name": "ViT-B-16", "pretrained": tag}}, ExperimentConfig)
    assert raw["model"]["pretrained"] == tag


@pytest.mark.parametrize("value", ["runs/p/model.safetensors", "model.safetensors", "w.pt", "./w", "~/w.bin"])
def test_pretrained_files_are_resolved(cwd, value):
    assert is_weights_file(value) and os.path.isabs(resolve_weights(value))
    assert resolve_weights(None) is None and resolve_weights("s3://b/w.safetensors") == "s3://b/w.safetensors"


def test_experiment_paths_are_taken_from_the_working_directory_not_the_file(cwd):
    path = write(cwd / "conf" / "exp.yaml", {
        "name": "e", "output_dir": "runs", "model": {"name": "medcl-tiny", "pretrained": "runs/p/model.safetensors"},
        "train": {"steps_per_task": 1}})
    config = load_experiment(path)
    assert config.output_dir == str(cwd / "runs")
    assert config.model.pretrained == str(cwd / "runs" / "p" / "model.safetensors")
    assert load_experiment(path, output_dir="elsewhere").output_dir == str(cwd / "elsewhere")
    assert load_experiment(path, ["output_dir=s3://bucket/runs"]).output_dir == "s3://bucket/runs"


def test_set_values_are_resolved_too(cwd):
    path = write(cwd / "exp.yaml", {"name": "e", "train": {"steps_per_task": 1}})
    config = load_experiment(path, ["model.pretrained=w/model.safetensors", "model.name=medcl-tiny"])
    assert config.model.pretrained == str(cwd / "w" / "model.safetensors")


def test_benchmark_data_roots_and_task_roots(cwd):
    raw = {"name": "e", "benchmark": {"name": "sequence", "data_root": "../shared", "tasks": [
        {"adapter": "medmnist", "dataset": "breastmnist", "root": "medmnist"},
        {"adapter": "imagefolder", "root": "/abs/mednist"},
        {"adapter": "parquet", "path": "derm.parquet", "name": "derm"}]}}
    out = resolve_paths(raw, ExperimentConfig)["benchmark"]
    shared = str(cwd.parent / "shared")
    assert out["data_root"] == shared
    assert [t.get("root", t.get("path")) for t in out["tasks"]] == [f"{shared}/medmnist", "/abs/mednist",
                                                                     f"{shared}/derm.parquet"]
    no_root = resolve_paths({"benchmark": {"name": "imagefolder", "tasks": [{"root": "mednist"}]}}, ExperimentConfig)
    assert no_root["benchmark"]["tasks"][0]["root"] == str(cwd / "mednist")
    medmnist = resolve_paths({"benchmark": {"name": "medmnist", "root": "npz", "datasets": ["x"]}}, ExperimentConfig)
    assert medmnist["benchmark"]["root"] == str(cwd / "npz")


def test_strategy_params_and_reference_sources(cwd):
    zscl = resolve_paths({"strategy": {"name": "zscl", "reference": {"name": "parquet", "path": "ref"}}},
                         ExperimentConfig)
    assert zscl["strategy"]["reference"]["path"] == str(cwd / "ref")
    primed = resolve_paths({"strategy": {"name": "primed", "index_dir": "idx", "corpus_dir": "gs://c/corpus",
                                         "k": 4}}, ExperimentConfig)["strategy"]
    assert primed == {"name": "primed", "index_dir": str(cwd / "idx"), "corpus_dir": "gs://c/corpus", "k": 4}


def test_values_that_do_not_fit_are_left_for_validation(cwd):
    odd = {"benchmark": 5, "model": ["x"], "strategy": {"name": ["not", "a", "name"], "index_dir": 3},
           "output_dir": None, 7: "seven"}
    assert resolve_paths(odd, ExperimentConfig) == odd
    with pytest.raises(ConfigError):
        load_experiment(write(cwd / "bad.yaml", {"name": "e", "output_dir": ["x"]}))


def test_a_missing_weights_file_is_named_with_its_absolute_path_before_ray_starts(cwd, capsys):
    from medcl.cli import main

    path = write(cwd / "conf" / "exp.yaml", {"name": "e", "model": {"name": "medcl-tiny",
                                                                   "pretrained": "runs/absent.safetensors"},
                                              "train": {"steps_per_task": 1}})
    assert main(["run", str(path), "--no-dashboard"]) == 2
    err = capsys.readouterr().err
    assert "model.pretrained" in err and str(cwd / "runs" / "absent.safetensors") in err


def test_pretrain_paths(cwd):
    from medcl.pretrain.config import load_pretrain

    path = write(cwd / "conf" / "p.yaml", {"name": "p", "data": {"source": "corpus", "path": "corpora/c"},
                                           "train": {"steps": 1}})
    config = load_pretrain(path)
    assert config.output_dir == str(cwd / "runs")
    assert config.data.path == str(cwd / "corpora" / "c")


def test_corpus_spec_paths(cwd):
    from medcl.corpus.spec import load_spec

    path = write(cwd / "conf" / "spec.yaml", {"data_root": "data", "sources": [
        {"type": "jsonl", "path": "pmc.jsonl", "images": "pmc/images"},
        {"type": "webdataset", "path": "shards/*.tar"}, {"type": "parquet", "path": "/abs/p.parquet"}]})
    spec = load_spec(path)
    data = str(cwd / "data")
    assert spec.data_root == data
    assert [s.path for s in spec.sources] == [f"{data}/pmc.jsonl", f"{data}/shards/*.tar", "/abs/p.parquet"]
    assert spec.sources[0].images == f"{data}/pmc/images"


def test_sweep_paths(cwd):
    from medcl.sweep import load_sweep

    write(cwd / "conf" / "exp.yaml", {"name": "base", "model": {"name": "medcl-tiny", "pretrained": "w/a.safetensors"},
                                      "benchmark": {"name": "synthmed", "num_tasks": 2},
                                      "train": {"steps_per_task": 1}})
    sweep = load_sweep(write(cwd / "conf" / "sweep.yaml", {
        "name": "s", "experiment": "exp.yaml", "num_samples": 2,
        "space": {"train.lr": {"loguniform": [1e-4, 1e-2]},
                  "model.pretrained": {"choice": ["w/a.safetensors", "w/b.safetensors", None]},
                  "strategy.name": {"choice": ["finetune", "l2"]}}}))
    assert sweep.output_dir == str(cwd / "sweeps") and sweep.sweep_dir == cwd / "sweeps" / "s"
    assert sweep.experiment["model"]["pretrained"] == str(cwd / "w" / "a.safetensors")
    assert sweep.space["model.pretrained"].choice == [str(cwd / "w" / "a.safetensors"),
                                                      str(cwd / "w" / "b.safetensors"), None]
    assert sweep.space["strategy.name"].choice == ["finetune", "l2"]


def test_resuming_a_run_saved_with_relative_paths_compares_equal(cwd):
    from medcl.engine.runner import prepare_run_dir

    path = write(cwd / "exp.yaml", {"name": "e", "model": {"name": "medcl-tiny", "pretrained": "w/m.safetensors"},
                                    "train": {"steps_per_task": 1}})
    config = load_experiment(path)
    run = prepare_run_dir(config, fresh=False)
    saved = yaml.safe_load(run.config.read_text())
    assert saved["model"]["pretrained"] == str(cwd / "w" / "m.safetensors")
    saved.update(output_dir="runs", model={**saved["model"], "pretrained": "w/m.safetensors"})  # as older medcl wrote it
    run.config.write_text(yaml.safe_dump(saved))
    prepare_run_dir(load_experiment(path), fresh=False)  # same command, same directory: resumable


def test_help_names_the_path_base(capsys):
    from medcl.cli import main

    for command in (["run", "--help"], ["pretrain", "--help"], ["sweep", "--help"], ["corpus", "build", "--help"]):
        with pytest.raises(SystemExit):
            main(command)
        assert "directory the command runs in" in capsys.readouterr().out.replace("\n", " ")
