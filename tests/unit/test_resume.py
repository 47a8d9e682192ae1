"""medcl.engine.resume.restore_newest: the newer of Ray Train's checkpoint and the run directory's wins."""
from __future__ import annotations

import pytest
import ray.train

from medcl.engine.resume import restore_newest


def _dirs(tmp_path, **progress):
    """Checkpoint folders named by key, each holding its progress number in a file."""
    out = {}
    for name, value in progress.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / "progress").write_text("mid" if value is None else str(value))
        out[name] = folder
    return out


def _progress(directory):
    text = (directory / "progress").read_text()
    return None if text == "mid" else int(text)


def _restored(directory):
    return directory.name


@pytest.mark.parametrize("ray_progress,disk_progress,expected", [
    (3, 2, "ray"),          # Ray's record is ahead of the files: Ray's
    (2, 3, "disk"),          # killed after writing task 3 but before Ray recorded it: the files
    (3, 3, "ray"),          # a tie: Ray's (the same progress)
    (None, 2, "disk"),       # Ray's newest is a checkpoint this rule must not pick (mid-task): the files
    (4, None, "ray"),       # nothing in the run directory: Ray's
])
def test_the_newer_record_is_restored(tmp_path, monkeypatch, ray_progress, disk_progress, expected):
    dirs = _dirs(tmp_path, ray=ray_progress, **({"disk": disk_progress} if disk_progress is not None else {}))
    monkeypatch.setattr(ray.train, "get_checkpoint", lambda: ray.train.Checkpoint.from_directory(str(dirs["ray"])))
    assert restore_newest(dirs.get("disk"), _progress, _restored) == expected


def test_without_ray_record_the_files_or_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(ray.train, "get_checkpoint", lambda: None)
    dirs = _dirs(tmp_path, disk=5)
    assert restore_newest(dirs["disk"], _progress, _restored) == "disk"
    assert restore_newest(None, _progress, _restored) is None
