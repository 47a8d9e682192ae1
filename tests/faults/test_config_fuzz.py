"""Config fuzzing: any invalid experiment yields a ConfigError naming the field, never a deep traceback.

Hypothesis (derandomized, a few hundred examples, about a second each group) mutates a valid tiny
experiment: a random value in a known field (top-level, ``train``, ``model``, the benchmark's
options, a strategy's parameters), an unknown field at any depth, random YAML documents, random
``--set`` overrides, and the same files through the CLI (exit status 2, one ``medcl: error:``
message, no traceback). A mutation that validates must also be usable downstream: a seed numpy
and torch accept, finite floats, a run directory strictly inside ``output_dir``.
"""
from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from medcl.cli import main
from medcl.config import (ConfigError, ExperimentConfig, TrainSection, apply_overrides, benchmark_options,
                          load_experiment, strategy_params, validate_experiment)
from medcl.data import BENCHMARKS
from medcl.strategies import STRATEGIES, build_strategy

FUZZ = settings(max_examples=100, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def base() -> dict:
    return {"name": "fuzz", "seed": 0, "output_dir": "runs",
            "benchmark": {"name": "synthmed", "num_tasks": 2, "train_per_class": 4, "val_per_class": 1,
                          "test_per_class": 2},
            "model": {"name": "medcl-tiny"}, "strategy": {"name": "finetune"},
            "train": {"workers": 1, "batch_size": 8, "steps_per_task": 5}}


SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(),
                    st.text(max_size=12), st.sampled_from(["", ".", "..", "-1", "1e400", "nan", "inf", "a/b"]))
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=3), st.dictionaries(st.text(max_size=6), SCALARS, max_size=2))
KNOWN_PATHS = ([("name",), ("seed",), ("output_dir",), ("benchmark",), ("model",), ("strategy",), ("train",),
                ("benchmark", "name"), ("benchmark", "order"), ("model", "name"), ("model", "pretrained"),
                ("model", "image_size"), ("strategy", "name")]
               + [("train", f) for f in TrainSection.model_fields]
               + [("benchmark", f) for f in BENCHMARKS.get("synthmed").Options.model_fields])


def _set(raw: dict, path: tuple[str, ...], value) -> dict:
    node = raw
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value
    return raw


def check(raw, mutated: tuple[str, ...] | None = None) -> ExperimentConfig | None:
    """Validate ``raw``: a ConfigError naming fields (within the mutated section), or a usable config."""
    try:
        config = validate_experiment(raw, source="fuzz.yaml")
    except ConfigError as exc:
        assert exc.problems, "a ConfigError must list its problems"
        for field, message in exc.problems:
            assert field and message and "Traceback" not in message
            if mutated is not None:
                assert field.split(".")[0] == mutated[0], f"{mutated} named {field!r}: {message}"
        return None
    usable(config)
    return config


def usable(config: ExperimentConfig) -> None:
    """What the engine does with a validated config must not fail with a non-user error."""
    np.random.default_rng(config.seed)
    torch.Generator().manual_seed(config.seed * 1_000_003 + 99 * 1_009 + 7)
    for section in (config.train, config.model):
        for name, value in section.model_dump().items():
            assert not (isinstance(value, float) and not math.isfinite(value)), f"{name}={value} accepted"
    output = Path(config.output_dir).resolve()
    assert "\0" not in config.output_dir
    assert output in config.run_dir.resolve().parents, f"run dir {config.run_dir} escapes {output}"
    benchmark_options(config)
    build_strategy(config.strategy.name, strategy_params(config).model_dump())


@FUZZ
@given(path=st.sampled_from(KNOWN_PATHS), value=VALUES)
# what the fuzzer found (fixed in config.py): a run directory on output_dir or its parent (which
# --fresh deletes), seeds numpy/torch refuse, infinite floats, a NUL byte in a path
@example(path=("name",), value="..")
@example(path=("name",), value=".")
@example(path=("seed",), value=-1)
@example(path=("seed",), value=2**70)
@example(path=("train", "lr"), value=float("inf"))
@example(path=("train", "cpus_per_worker"), value=float("inf"))
@example(path=("output_dir",), value="a\0b")
def test_random_value_in_a_known_field(path, value):
    check(_set(base(), path, value), mutated=path)


@FUZZ
@given(name=st.sampled_from(STRATEGIES.names()), data=st.data())
def test_random_strategy_parameters(name, data):
    fields = sorted(STRATEGIES.get(name).Params.model_fields) or ["lam"]
    params = data.draw(st.dictionaries(st.sampled_from(fields + ["nonsense"]), VALUES, max_size=3))
    check(_set(base(), ("strategy",), {"name": name, **params}), mutated=("strategy",))


SECTIONS = [(), ("train",), ("model",), ("benchmark",), ("strategy",), ("strategy", "reference")]


@FUZZ
@given(section=st.sampled_from(SECTIONS), key=st.text(alphabet="abcxyz_", min_size=1, max_size=8))
def test_unknown_field_at_any_depth_is_named(section, key):
    raw = base()
    if section[-1:] == ("reference",):
        raw["strategy"] = {"name": "zscl", "reference": {"name": "synthmed"}}
    node = raw
    for part in section:
        node = node[part]
    if key in node or (not section and key in ExperimentConfig.model_fields):
        return
    node[key] = 1
    with pytest.raises(ConfigError) as excinfo:
        validate_experiment(raw, source="fuzz.yaml")
    dotted = ".".join(section + (key,))
    # a nested strategy option is reported on its option, with the unknown key in the message
    assert any(field == dotted or (field == ".".join(section) and key in message)
               for field, message in excinfo.value.problems), excinfo.value.problems


YAML_DOCS = st.one_of(
    st.text(max_size=60),
    st.recursive(SCALARS, lambda children: st.one_of(st.lists(children, max_size=3),
                                                     st.dictionaries(st.text(max_size=8), children, max_size=3)),
                 max_leaves=8).map(lambda doc: yaml.safe_dump(doc)),
    st.sampled_from(["&a [*a]", "a: &x {b: *x}", "!!python/object:os.system {}", "train: {lr: !!binary AAA}",
                     "- a\n b: c", "name: x\ntrain: {steps_per_task: 5}\ntrain: {}", "\t", "{" * 200]),
)


@FUZZ
@given(text=YAML_DOCS)
def test_random_yaml_documents(text):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            config = load_experiment(path)
        except ConfigError as exc:
            assert exc.problems and all(field for field, _ in exc.problems)
        else:
            usable(config)


OVERRIDE = st.one_of(
    st.text(max_size=20),
    st.builds(lambda p, v: f"{p}={v}", st.sampled_from([".".join(p) for p in KNOWN_PATHS] + ["train.lr.x", "a..b", ""]),
              st.text(max_size=10)))


@FUZZ
@given(overrides=st.lists(OVERRIDE, max_size=3))
def test_random_overrides(overrides):
    try:
        raw = apply_overrides(base(), overrides)
    except ConfigError as exc:
        assert exc.problems
        return
    check(raw)


@settings(max_examples=15, deadline=None, derandomize=True, database=None)
@given(path=st.sampled_from(KNOWN_PATHS), value=VALUES)
def test_cli_exits_2_with_one_message(path, value):
    raw = _set(base(), path, value)
    with tempfile.TemporaryDirectory() as tmp:
        experiment = Path(tmp) / "fuzz.yaml"
        experiment.write_text(yaml.safe_dump(raw))
        try:
            load_experiment(experiment)
        except ConfigError:
            pass
        else:
            return  # a valid experiment would start a run
        import contextlib
        import io

        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = main(["run", str(experiment), "--no-dashboard"])
        text = err.getvalue()
        assert code == 2 and text.startswith("medcl: error: ") and "Traceback" not in text
        assert f"  {path[0]}" in text or f"{experiment}: invalid" in text
