"""Issue 32, walkthrough item 4: inputs a loader skipped are recorded per file and reason in the run:
metrics.json ``skipped_inputs``, one events.jsonl event and one terminal line per task, report.html."""
from __future__ import annotations

import json
import os

import pytest
from PIL import Image

from medcl.data import BENCHMARKS
from medcl.data.skips import LISTED_FILES, parse_skip, skip_lines, skip_record, skipped_inputs
from medcl.engine.checkpoint import SequenceState
from medcl.engine.outputs import write_outputs
from medcl.engine.runner import report_skips
from medcl.report import write_report
from medcl.rundir import RunDir, read_events


def _tree_with_three_bad_files(tmp_path):
    root = tmp_path / "us"
    for c, name in enumerate(("benign", "malignant")):
        (root / name).mkdir(parents=True)
        for i in range(6):
            Image.new("L", (20, 20), c * 100 + i * 7).save(root / name / f"{i:03d}.png")
    (root / "benign" / "broken-a.png").write_bytes(b"\x89PNG not really")
    (root / "malignant" / "broken-b.jpg").write_bytes(b"\xff\xd8 truncated")
    outside = tmp_path / "elsewhere.png"
    Image.new("L", (20, 20), 9).save(outside)
    os.symlink(outside, root / "benign" / "link-out.png")  # a link leading out of root: never opened
    return root


@pytest.fixture
def skipped_task(tmp_path):
    root = _tree_with_three_bad_files(tmp_path)
    with pytest.warns(UserWarning, match="skipped 3"):
        (task,) = BENCHMARKS.get("imagefolder")().build({"tasks": [{"root": str(root), "name": "us",
                                                                    "modality": "ultrasound"}]}, seed=0)
    return task


def test_the_task_lists_every_skipped_file_with_its_reason(skipped_task):
    summary = skipped_inputs([skipped_task])
    files = {os.path.basename(f["file"]): f["reason"] for f in summary["us"]["files"]}
    assert files == {"broken-a.png": "undecodable_image", "broken-b.jpg": "undecodable_image",
                     "link-out.png": "outside_root"}
    assert summary["us"]["count"] == 3 and summary["us"]["files_not_listed"] == 0
    assert summary["us"]["reasons"] == {"undecodable_image": 2, "outside_root": 1}
    assert skip_lines(summary) == ["task us: skipped 3 images (undecodable_image: 2, outside_root: 1); "
                                   "listed in metrics.json"]


def test_the_run_records_them_in_metrics_events_report_and_one_line(skipped_task, tmp_path, capsys):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    summary = skipped_inputs([skipped_task])
    report_skips(run, summary)
    printed = [line for line in capsys.readouterr().out.splitlines() if "skipped" in line]
    assert printed == ["medcl: task us: skipped 3 images (undecodable_image: 2, outside_root: 1); listed in metrics.json"]
    (event,) = [e for e in read_events(run.events) if e.get("kind") == "skipped_inputs"]
    assert event["task"] == "us" and event["count"] == 3 and len(event["files"]) == 3
    state = SequenceState(task_names=["us"], stage_names=["us"], zero_shot=[50.0], rows=[[70.0]],
                          wall_time_s=[1.0], steps=[2])
    write_outputs(run, state, strategy="finetune", model="medcl-tiny", benchmark="imagefolder",
                  extra={"skipped_inputs": summary})
    recorded = json.loads(run.metrics.read_text())["skipped_inputs"]["us"]
    page = write_report(run.path).read_text()
    for name in ("broken-a.png", "broken-b.jpg", "link-out.png"):
        assert any(f["file"].endswith(name) for f in recorded["files"])
        assert name in page
    assert "Skipped inputs" in page and "outside_root" in page


def test_long_lists_are_capped_with_a_count_of_the_rest():
    errors = [f"/data/x/{i}.png: not a readable image (undecodable_image: bad)" for i in range(LISTED_FILES + 25)]
    errors[3] = "/data/x/huge.png: too_many_pixels: 10000x10000 = 100000000 pixels > 89478485"
    record = skip_record(errors)
    assert record["count"] == LISTED_FILES + 25 and len(record["files"]) == LISTED_FILES
    assert record["files_not_listed"] == 25
    assert record["files"][3] == {"file": "/data/x/huge.png", "reason": "too_many_pixels",
                                  "detail": "too_many_pixels: 10000x10000 = 100000000 pixels > 89478485"}
    assert record["reasons"] == {"undecodable_image": LISTED_FILES + 24, "too_many_pixels": 1}


def test_a_file_name_with_a_colon_is_kept_whole():
    assert parse_skip("/d/a: b.png: outside_root: resolves to /x, outside /d")["file"] == "/d/a: b.png"
    assert parse_skip("/d/z.png: no such file") == {"file": "/d/z.png", "reason": "undecodable_image",
                                                    "detail": "no such file"}
