"""Names that become folders are checked once (medcl.names), and deletes stay strictly below a
command's output folder (medcl.confine.rmtree_below), checked on the resolved path."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from medcl import storage
from medcl.config import ConfigError, validate_experiment
from medcl.engine.runner import prepare_run_dir
from medcl.names import FOLDER_NAME_PATTERN, check_folder_name
from medcl.pretrain.config import PretrainConfig
from medcl.confine import rmtree_below
from medcl.storage import Location, StorageError
from medcl.sweep.config import SweepConfig

BAD_NAMES = [".", "..", "...", "a/b", "../x", "a\\b", "a\x00b", "-rf", ".hidden", "", "with space", "x" * 129]


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_check_folder_name_refuses_names_that_are_not_one_folder(bad):
    with pytest.raises(ValueError, match=r"^run\.name: .* is not a folder name; allowed: .*pattern"):
        check_folder_name(bad, "run.name")


@pytest.mark.parametrize("good", ["quickstart", "tiny_synthmed", "pretrain-synthmed", "v1.2", "_x", "9"])
def test_check_folder_name_keeps_ordinary_names(good):
    assert check_folder_name(good) == good


@pytest.mark.parametrize("bad", [".", "..", "...", "a/b", "-x", "a\x00"])
def test_every_config_refuses_dot_only_and_path_names_naming_the_field(bad):
    with pytest.raises(ConfigError) as raised:
        validate_experiment({"name": bad})
    assert "name" in str(raised.value) and FOLDER_NAME_PATTERN in str(raised.value)
    for model, extra in ((PretrainConfig, {}), (SweepConfig, {"experiment": {}})):
        with pytest.raises(ValueError) as raised:
            model.model_validate({"name": bad, **extra})
        errors = raised.value.errors()
        assert [e["loc"] for e in errors] == [("name",)] and FOLDER_NAME_PATTERN in errors[0]["msg"]


def _tree(root: Path) -> Path:
    (root / "runs" / "keep").mkdir(parents=True)
    (root / "runs" / "keep" / "file.txt").write_text("precious")
    (root / "outside").mkdir()
    (root / "outside" / "secret.txt").write_text("precious")
    return root / "runs"


def test_rmtree_below_deletes_only_strictly_below_its_root(tmp_path):
    runs = _tree(tmp_path)
    (runs / "old").mkdir()
    (runs / "old" / "x").write_text("x")
    rmtree_below(runs / "old", runs)
    assert not (runs / "old").exists()
    rmtree_below(runs / "missing", runs)  # nothing there: no error
    for target in (runs, runs / "..", runs / "keep" / ".." / "..", tmp_path / "outside", Path("/"), Path.home()):
        with pytest.raises(StorageError, match="refusing to delete"):
            rmtree_below(target, runs)
    assert (runs / "keep" / "file.txt").read_text() == "precious"
    assert (tmp_path / "outside" / "secret.txt").read_text() == "precious"


def test_rmtree_below_follows_links_before_deciding(tmp_path):
    runs = _tree(tmp_path)
    (runs / "escape").symlink_to(tmp_path / "outside", target_is_directory=True)
    with pytest.raises(StorageError, match="strictly below"):
        rmtree_below(runs / "escape", runs)
    assert (tmp_path / "outside" / "secret.txt").exists()
    (runs / "inner").symlink_to(runs / "keep", target_is_directory=True)
    rmtree_below(runs / "inner", runs)  # a link that stays inside: the link goes, never its target's files
    assert not (runs / "inner").is_symlink() and (runs / "keep" / "file.txt").exists()


def test_rmtree_below_refuses_the_working_directory_and_its_parents(tmp_path, monkeypatch):
    work = tmp_path / "work" / "repo"
    work.mkdir(parents=True)
    (work / "code.py").write_text("precious")
    monkeypatch.chdir(work)
    for target in (work, work.parent):
        with pytest.raises(StorageError, match="working directory"):
            rmtree_below(target, tmp_path)
    assert (work / "code.py").exists()


def test_rmtree_below_on_object_store_keys():
    root = Location("s3://bucket/runs")
    for target in ("s3://bucket/runs", "s3://bucket/runs/..", "s3://bucket/runs/a/../..", "s3://bucket/other/x",
                   "s3://bucket/runsx/y", "s3://other/runs/x"):
        with pytest.raises(StorageError, match="refusing to delete"):
            rmtree_below(target, root)
    with pytest.raises(StorageError, match="same store"):
        rmtree_below("/tmp/x", root)


def test_fresh_with_name_dot_dot_deletes_nothing(tmp_path, monkeypatch):
    """The issue's reproduction, on a temporary copy: ``--set name=.. --fresh`` used to delete the
    checkout holding output_dir; now the name is refused, and a run_dir that escapes anyway (a
    config built without validation) is refused by the guarded delete."""
    checkout = tmp_path / "checkout"
    (checkout / "runs").mkdir(parents=True)
    (checkout / "pyproject.toml").write_text("precious")
    monkeypatch.chdir(checkout)
    for model, extra in ((PretrainConfig, {}), (SweepConfig, {"experiment": {}})):
        with pytest.raises(ValueError, match="not a folder name"):
            model.model_validate({"name": "..", "output_dir": str(checkout / "runs"), **extra})
    forged = PretrainConfig.model_construct(name="..", output_dir=str(checkout / "runs"))
    with pytest.raises(StorageError, match="refusing to delete"):
        prepare_run_dir(forged, fresh=True)
    assert (checkout / "pyproject.toml").read_text() == "precious"
    assert os.path.isdir(checkout / "runs")


def test_storage_still_deletes_a_run_below_output_dir(tmp_path):
    config = validate_experiment({"name": "again", "output_dir": str(tmp_path / "runs")})
    old = storage.place(config.run_dir)
    old.mkdir(parents=True)
    (old / "stale.txt").write_text("old")
    run = prepare_run_dir(config, fresh=True)
    assert not (run.path / "stale.txt").exists() and run.config.exists()
