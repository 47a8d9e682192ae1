"""medcl.engine.midtask.prune_midtask: what a resume can still pick is kept, the rest is deleted."""
from __future__ import annotations

import json

from medcl.engine.midtask import latest_midtask, prune_midtask


def _checkpoint(root, name: str, ranks=(0,)) -> None:
    """A checkpoint folder with an (empty) manifest per rank in ``ranks``: complete for those ranks."""
    folder = root / name
    folder.mkdir(parents=True)
    for rank in ranks:
        (folder / f"manifest-rank{rank}.json").write_text(json.dumps({}))


def _names(root) -> list[str]:
    return sorted(p.name for p in root.iterdir())


def test_older_steps_of_the_stage_in_progress_go_and_the_newest_complete_one_stays(tmp_path):
    for name in ("task-0", "task-1", "task-1-step-3", "task-1-step-6"):
        _checkpoint(tmp_path, name)
    assert prune_midtask(tmp_path, stages_done=1) == ["task-1-step-3"]
    assert _names(tmp_path) == ["task-0", "task-1", "task-1-step-6"]
    assert latest_midtask(tmp_path, 1).name == "task-1-step-6"


def test_a_finished_stage_loses_all_its_mid_task_checkpoints(tmp_path):
    for name in ("task-0", "task-0-step-3", "task-0-step-6", "task-1"):
        _checkpoint(tmp_path, name)
    assert prune_midtask(tmp_path, stages_done=1) == ["task-0-step-3", "task-0-step-6"]
    assert _names(tmp_path) == ["task-0", "task-1"]


def test_an_incomplete_newer_checkpoint_does_not_cost_the_complete_older_one(tmp_path):
    """Rank 1's files of step 6 have not arrived: step 3 is still the one a resume picks."""
    _checkpoint(tmp_path, "task-1-step-3", ranks=(0, 1))
    _checkpoint(tmp_path, "task-1-step-6", ranks=(0,))
    assert prune_midtask(tmp_path, stages_done=1, ranks=2) == []
    assert latest_midtask(tmp_path, 1, ranks=2).name == "task-1-step-3"
    assert _names(tmp_path) == ["task-1-step-3", "task-1-step-6"]
