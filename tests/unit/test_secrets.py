"""Passwords in URLs never reach what medcl prints or saves (``medcl.redact``).

The sweep path is the real one that writes ``sweep.yaml`` and the sweep's outputs
(``medcl.sweep.driver._run_trials``) with Tune replaced by one trial told to the study, so no Ray
starts; a study on SQLite carries its secret in a query parameter (SQLite refuses ``user:password@``),
a PostgreSQL URL in the user info.
"""
from __future__ import annotations

import types

import optuna
import pytest
import yaml

from medcl import redact
from medcl.redact import MASK, SecretError, credentials_in_uri, expand_env_refs, mask_secrets, mask_url_password

SECRET = "Hunter2-s3cr3t"
BASE = {"benchmark": {"name": "synthmed", "num_tasks": 2}, "train": {"steps_per_task": 5}}


@pytest.mark.parametrize("url, masked", [
    (f"postgresql://medcl:{SECRET}@db.internal:5432/optuna?sslmode=require",
     "postgresql://medcl:***@db.internal:5432/optuna?sslmode=require"),
    (f"mysql+pymysql://root:{SECRET}@10.0.0.5/optuna", "mysql+pymysql://root:***@10.0.0.5/optuna"),
    ("postgresql://u:pa/ss@word@h/db", "postgresql://u:***@h/db"),  # unescaped "/" and "@" in the password
    (f"s3://AKIAEXAMPLE:{SECRET}@bucket/runs", "s3://AKIAEXAMPLE:***@bucket/runs"),
    (f"https://b.s3.amazonaws.com/k?X-Amz-Credential=AKIA&X-Amz-Signature={SECRET}&X-Amz-Date=1",
     "https://b.s3.amazonaws.com/k?X-Amz-Credential=***&X-Amz-Signature=***&X-Amz-Date=1"),
    (f"sqlite:///file:/tmp/s.db?password={SECRET}&uri=true", "sqlite:///file:/tmp/s.db?password=***&uri=true"),
    ("postgresql://medcl:${MEDCL_DB_PASSWORD}@db/optuna", "postgresql://medcl:${MEDCL_DB_PASSWORD}@db/optuna"),
    ("postgresql://medcl@db/optuna", "postgresql://medcl@db/optuna"),  # no password (PGPASSWORD, ~/.pgpass)
    ("sqlite:////abs/study.db", "sqlite:////abs/study.db"),
    ("s3://bucket/odd:name@key", "s3://bucket/odd:name@key"),  # a key with ':' and '@' is no user info
    (None, None),
])
def test_mask_hides_the_password_and_keeps_the_rest(url, masked):
    assert mask_url_password(url) == masked
    assert SECRET not in str(mask_url_password(url))
    assert redact.has_masked_password(masked) == (MASK in str(masked))


def test_mask_in_free_text_and_trees():
    text = f"could not open postgresql://u:{SECRET}@h/db; tried 'mysql://a:{SECRET}@c/d' twice"
    assert mask_secrets(text) == "could not open postgresql://u:***@h/db; tried 'mysql://a:***@c/d' twice"
    tree = redact.mask_tree({"a": [f"x s3://k:{SECRET}@b/p"], "n": 3, "s": "plain"})
    assert tree == {"a": ["x s3://k:***@b/p"], "n": 3, "s": "plain"}


def test_env_references_are_read_when_used_and_named_when_missing(monkeypatch):
    url = "postgresql://medcl:${MEDCL_TEST_DB_PASSWORD}@db/optuna"
    monkeypatch.setenv("MEDCL_TEST_DB_PASSWORD", SECRET)
    assert expand_env_refs(url, field="storage") == f"postgresql://medcl:{SECRET}@db/optuna"
    assert expand_env_refs("postgresql://u:pa$word@h/db", field="storage") == "postgresql://u:pa$word@h/db"
    monkeypatch.delenv("MEDCL_TEST_DB_PASSWORD")
    with pytest.raises(SecretError, match=r"storage: .*\$\{MEDCL_TEST_DB_PASSWORD\}, which is not set"):
        expand_env_refs(url, field="storage")


def test_object_store_uris_with_credentials_are_refused_without_echoing_them():
    from medcl.storage import StorageError, place

    assert credentials_in_uri("s3://bucket/runs") is None
    for uri in (f"s3://AKIAEXAMPLE:{SECRET}@bucket/runs", f"gs://bucket/runs?token={SECRET}"):
        with pytest.raises(StorageError, match="from the environment") as error:
            place(uri)
        assert SECRET not in str(error.value)


def test_cli_errors_are_masked(capsys, tmp_path):
    from medcl.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "s", "experiment": BASE, "storage": "postgresql://u:***@h/db",
                                   "num_samples": 0}))
    assert main(["sweep", str(bad), "--set", f"output_dir=s3://AKIA:{SECRET}@bucket/x"]) == 2
    err = capsys.readouterr().err
    assert "medcl: error:" in err and SECRET not in err


def _sweep(tmp_path, storage):
    from medcl.sweep import validate_sweep

    return validate_sweep({"name": "secret", "experiment": BASE, "output_dir": str(tmp_path / "sweeps"),
                           "space": {"train.lr": {"loguniform": [1e-4, 1e-2]}}, "num_samples": 1,
                           "storage": storage})


def _run_trials_without_ray(sweep, study, monkeypatch):
    """``_run_trials`` as ``medcl sweep`` calls it; Tune replaced by one COMPLETE trial."""
    from medcl.sweep import driver
    from medcl.sweep.space import optuna_distributions

    distributions = optuna_distributions(sweep, None)

    def one_trial(sweep, study, *args, **kwargs):
        trial = study.ask({k: v for k, v in distributions.items()})
        study.tell(trial, 55.0)
        return True  # as _tune: every trial asked for finished (not interrupted)

    monkeypatch.setattr(driver, "_tune", one_trial)
    return driver._run_trials(sweep, study, 1, distributions, types.SimpleNamespace(concurrency=1), 2, None)


def _saved_text(root) -> str:
    return "\n".join(p.read_bytes().decode("utf-8", "replace") for p in sorted(root.rglob("*")) if p.is_file())


def test_a_database_password_is_in_no_printed_line_and_no_saved_file(tmp_path, monkeypatch, capsys):
    url = f"postgresql://medcl:{SECRET}@db.invalid:5432/optuna"
    sweep = _sweep(tmp_path, url)
    study = optuna.create_study(study_name="secret", storage=f"sqlite:///{tmp_path / 'study.db'}",
                                direction="maximize")  # the database, reachable here
    outputs = _run_trials_without_ray(sweep, study, monkeypatch)
    printed = capsys.readouterr().out
    saved = yaml.safe_load((sweep.sweep_dir / "sweep.yaml").read_text())
    assert "best" in outputs and "study postgresql://medcl:***@db.invalid:5432/optuna" in printed
    assert saved["storage"] == "postgresql://medcl:***@db.invalid:5432/optuna"
    assert SECRET not in printed and SECRET not in _saved_text(sweep.sweep_dir)
    from medcl.sweep.config import SweepConfigError

    with pytest.raises(SweepConfigError, match="storage: the password is masked") as error:
        _sweep(tmp_path, saved["storage"])  # the saved URL given back cannot log in: refused, clearly
    assert error.value.problems[0][0] == "storage"


def test_a_password_given_by_reference_is_saved_as_the_reference_and_resumes(tmp_path, monkeypatch, capsys):
    """``storage: ...${VAR}...`` reaches Optuna expanded; ``sweep.yaml`` keeps ``${VAR}``, so the
    saved copy resumes (here a SQLite URI whose query parameter stands for the secret)."""
    from medcl.sweep.study import open_study

    monkeypatch.setenv("MEDCL_TEST_DB_PASSWORD", SECRET)
    db = tmp_path / "ref.db"
    sweep = _sweep(tmp_path, f"sqlite:///file:{db}?password=${{MEDCL_TEST_DB_PASSWORD}}&uri=true")
    assert sweep.storage_url == f"sqlite:///file:{db}?password={SECRET}&uri=true"
    _run_trials_without_ray(sweep, open_study(sweep, resume=False, fresh=False, enqueue=[]), monkeypatch)
    saved = yaml.safe_load((sweep.sweep_dir / "sweep.yaml").read_text())
    assert saved["storage"] == sweep.storage and SECRET not in _saved_text(sweep.sweep_dir)
    resumed = open_study(_sweep(tmp_path, saved["storage"]), resume=True, fresh=False, enqueue=[])
    assert [t.state.name for t in resumed.trials] == ["COMPLETE"]
    assert SECRET not in capsys.readouterr().out


def test_study_errors_mask_the_url(tmp_path):
    from medcl.sweep.study import SweepError, open_study

    sweep = _sweep(tmp_path, f"sqlite:///file:{tmp_path / 'e.db'}?password={SECRET}&uri=true")
    open_study(sweep, resume=False, fresh=False, enqueue=[]).ask()
    with pytest.raises(SweepError, match=r"already has 1 trial\(s\) in sqlite:///file:.*password=\*\*\*") as error:
        open_study(sweep, resume=False, fresh=False, enqueue=[])
    assert SECRET not in str(error.value)


def test_the_searcher_tune_pickles_into_tuner_pkl_holds_no_password(tmp_path, monkeypatch):
    """Tune writes its search algorithm into ``tune/<stamp>/tuner.pkl``; found by a real sweep."""
    import ray.cloudpickle as pickle

    from medcl.sweep.searcher import StudySearcher
    from medcl.sweep.space import optuna_distributions
    from medcl.sweep.study import open_study

    monkeypatch.setenv("MEDCL_TEST_DB_PASSWORD", SECRET)
    sweep = _sweep(tmp_path, f"sqlite:///file:{tmp_path / 'p.db'}?password=${{MEDCL_TEST_DB_PASSWORD}}&uri=true")
    study = open_study(sweep, resume=False, fresh=False, enqueue=[])
    assert SECRET.encode() in pickle.dumps(study)  # the study itself carries it: the check can fail
    searcher = StudySearcher(study, optuna_distributions(sweep, None), metrics=["avg"], prune_metric="avg")
    assert SECRET.encode() not in pickle.dumps(searcher)
    assert searcher.study is study  # the driver's searcher keeps its study
