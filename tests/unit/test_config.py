"""Experiment files: validation errors name the field, the value and what is allowed."""
from __future__ import annotations

from pathlib import Path

import pytest

from medcl.config import ConfigError, apply_overrides, load_experiment, validate_experiment

REPO = Path(__file__).resolve().parents[2]


def _raw(**sections):
    raw = {"name": "t", "benchmark": {"name": "synthmed"}, "model": {"name": "medcl-tiny"},
           "strategy": {"name": "finetune"}, "train": {"steps_per_task": 5}}
    for key, value in sections.items():
        raw[key] = value
    return raw


def _fields(excinfo) -> dict[str, str]:
    return dict(excinfo.value.problems)


def test_quickstart_file_is_valid():
    config = load_experiment(REPO / "experiments" / "quickstart.yaml")
    assert config.strategy.name == "finetune"
    assert config.train.workers == 2 and config.train.label_smoothing == 0.2
    assert config.benchmark.options()["num_tasks"] == 4


def test_calibration_file_is_the_documented_recipe():
    """experiments/calibration_medmnist.yaml is what docs/benchmarks.md and its header describe."""
    config = load_experiment(REPO / "experiments" / "calibration_medmnist.yaml")
    train = config.train
    assert (config.strategy.name, config.model.name, config.model.pretrained) == ("specialist", "medcl-tiny", None)
    assert config.benchmark.order == ["pneumoniamnist", "breastmnist"]
    assert (train.steps_per_task, train.batch_size, train.lr, train.schedule) == (600, 64, 0.002, "cosine")
    assert (train.warmup_steps, train.weight_decay, train.label_smoothing, train.workers) == (30, 0.05, 0.2, 1)


def test_unknown_top_level_key_suggests_close_match():
    raw = _raw()
    raw["trian"] = {}
    with pytest.raises(ConfigError) as excinfo:
        validate_experiment(raw)
    message = _fields(excinfo)["trian"]
    assert "did you mean 'train'" in message and "allowed:" in message


def test_unknown_train_field_lists_allowed_fields():
    with pytest.raises(ConfigError) as excinfo:
        validate_experiment(_raw(train={"steps_per_task": 5, "learning_rate": 0.1}))
    message = _fields(excinfo)["train.learning_rate"]
    assert "lr" in message and "batch_size" in message


def test_bad_value_names_field_value_and_constraint():
    with pytest.raises(ConfigError) as excinfo:
        validate_experiment(_raw(train={"steps_per_task": 5, "lr": -1}))
    message = _fields(excinfo)["train.lr"]
    assert "greater than 0" in message and "-1" in message


def test_literal_field_lists_allowed_values():
    with pytest.raises(ConfigError) as excinfo:
        validate_experiment(_raw(train={"steps_per_task": 5, "precision": "fp8"}))
    message = _fields(excinfo)["train.precision"]
    assert "'fp32'" in message and "'bf16'" in message and "fp8" in message


def test_steps_and_epochs_are_exclusive():
    with pytest.raises(ConfigError, match="exactly one of steps_per_task and epochs_per_task"):
        validate_experiment(_raw(train={"steps_per_task": 5, "epochs_per_task": 1}))


def test_fp16_on_cpu_is_refused():
    with pytest.raises(ConfigError, match="fp16"):
        validate_experiment(_raw(train={"steps_per_task": 5, "precision": "fp16"}))


def test_unknown_strategy_lists_registered_names():
    with pytest.raises(ConfigError) as excinfo:
        validate_experiment(_raw(strategy={"name": "finetunne"}))
    message = _fields(excinfo)["strategy.name"]
    assert "did you mean 'finetune'" in message and "registered: " in message


def test_unknown_strategy_parameter_is_an_error():
    with pytest.raises(ConfigError) as excinfo:
        validate_experiment(_raw(strategy={"name": "finetune", "buffer_size": 10}))
    assert "strategy.buffer_size" in _fields(excinfo)


def test_unknown_benchmark_and_model_are_named():
    with pytest.raises(ConfigError) as excinfo:
        validate_experiment(_raw(benchmark={"name": "nope"}, model={"name": "medcl-tinyy"}))
    fields = _fields(excinfo)
    assert "synthmed" in fields["benchmark.name"]
    assert "medcl-tiny" in fields["model.name"]


def test_benchmark_option_is_validated_by_the_benchmark():
    with pytest.raises(ConfigError) as excinfo:
        validate_experiment(_raw(benchmark={"name": "synthmed", "num_taks": 3}))
    assert "benchmark.num_taks" in _fields(excinfo)


def test_duplicate_tasks_in_order():
    with pytest.raises(ConfigError) as excinfo:
        validate_experiment(_raw(benchmark={"name": "synthmed", "order": ["xray", "xray"]}))
    assert "duplicate" in _fields(excinfo)["benchmark.order"]


def test_overrides_convert_types():
    raw = apply_overrides(_raw(), ["train.lr=1e-4", "train.workers=2", "train.use_gpu=false",
                                   "benchmark.order=[xray, fundus]", "model.pretrained=null", "seed=7"])
    config = validate_experiment(raw)
    assert config.train.lr == pytest.approx(1e-4) and isinstance(config.train.lr, float)
    assert config.train.workers == 2 and config.train.use_gpu is False and config.seed == 7
    assert config.benchmark.order == ["xray", "fundus"] and config.model.pretrained is None


def test_override_without_equals_sign():
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        apply_overrides(_raw(), ["train.lr"])


def test_override_into_a_value_is_an_error():
    with pytest.raises(ConfigError, match="not a section"):
        apply_overrides(_raw(), ["name.x=1"])


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\ntrain:\n  lr: [1, 2\n")
    with pytest.raises(ConfigError) as excinfo:
        load_experiment(path)
    assert str(path) in str(excinfo.value) and "line" in str(excinfo.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_experiment(tmp_path / "absent.yaml")


def test_cli_prints_one_clear_error(tmp_path, capsys):
    from medcl.cli import main

    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nstrategy: {name: rehersal}\ntrain: {steps_per_task: 1}\n")
    assert main(["run", str(path), "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "strategy.name" in err and "Traceback" not in err


def test_missing_pretrained_file_fails_before_ray_starts(tmp_path, capsys):
    from medcl.cli import main

    path = tmp_path / "exp.yaml"
    path.write_text(f"name: x\nmodel: {{name: medcl-tiny, pretrained: {tmp_path}/absent.safetensors}}\n"
                    "train: {steps_per_task: 1}\n")
    assert main(["run", str(path), "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "model.pretrained" in err and "absent.safetensors" in err
    assert not (tmp_path / "x").exists(), "nothing may be created for a run that cannot start"


def test_unknown_task_in_order_names_the_field(tmp_path, capsys):
    from medcl.cli import main

    path = tmp_path / "exp.yaml"
    path.write_text("name: x\nbenchmark: {name: synthmed, order: [xray, mri]}\ntrain: {steps_per_task: 1}\n")
    assert main(["run", str(path), "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "benchmark.order" in err and "'mri'" in err and "xray" in err
