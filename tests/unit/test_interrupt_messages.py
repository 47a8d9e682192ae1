"""Ctrl-C: the line a command prints (what was kept, the command that resumes) and Tune's lines about it."""
from __future__ import annotations

import logging
from argparse import Namespace
from pathlib import Path

from medcl.interrupt import INTERRUPTED_EXIT, report_run_interrupted, shell_line


class _Config:
    def __init__(self, run_dir):
        self.run_dir = run_dir


def _run_args(**fields):
    return Namespace(**{"experiment": Path("exp.yaml"), "overrides": [], "output_dir": None, "dashboard": True,
                        "fresh": True, **fields})


def test_run_interrupted_names_the_last_checkpoint_and_the_command_without_fresh(tmp_path, capsys):
    (tmp_path / "run" / "checkpoints" / "task-1").mkdir(parents=True)
    args = _run_args(overrides=["train.lr=1e-4", "name=my run"], dashboard=False)
    assert report_run_interrupted(_Config(tmp_path / "run"), args) == INTERRUPTED_EXIT == 130
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"interrupted: run directory {tmp_path / 'run'} kept")
    assert err.endswith("resume with: medcl run exp.yaml --set train.lr=1e-4 --set 'name=my run' --no-dashboard")
    assert "--fresh" not in err


def test_run_interrupted_before_anything_was_written(tmp_path, capsys):
    report_run_interrupted(_Config(tmp_path / "absent"), _run_args(output_dir="out"))
    err = capsys.readouterr().err
    assert "nothing written yet" in err and err.strip().endswith("medcl run exp.yaml --output-dir out")


def test_shell_line_quotes_what_a_shell_would_split():
    assert shell_line(["medcl", "sweep", Path("a b.yaml"), "--resume"]) == "medcl sweep 'a b.yaml' --resume"


class _Kept(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append(record)


def test_tunes_interrupt_lines_are_replaced_and_others_pass(capsys):
    from medcl.sweep.driver import _TuneInterruptLines

    logger, kept = logging.getLogger(_TuneInterruptLines.LOGGER), _Kept()  # Ray's loggers do not propagate
    logger.addHandler(kept)
    with _TuneInterruptLines.installed():
        logger.warning("Stop signal received (e.g. via SIGINT/Ctrl+C), ending Ray Tune run. ...")
        logger.error("Trials did not complete: %s", ["t1"])
        logger.warning("Experiment has been interrupted, but the most recent state was saved.\n"
                       "Resume experiment with: Tuner.restore(path=\"/x\", trainable=...)")
        logger.warning("some other Tune warning")
    logger.removeHandler(kept)
    shown = [r.getMessage() for r in kept.records]
    assert shown == ["some other Tune warning"]
    err = capsys.readouterr().err
    assert err.startswith(_TuneInterruptLines.STOPPING + "\n") and "Stop signal" not in err and "Tuner.restore" not in err
    assert not logger.filters  # removed after the block


def test_sigint_is_seen_whichever_handler_runs_for_it():
    """Ray Train's fit replaces the SIGINT handler (and ends with SystemExit): the watch still sees it."""
    import os
    import signal

    from medcl.interrupt import sigint_watch

    calls = []
    previous = signal.signal(signal.SIGINT, lambda *_: calls.append("other handler"))
    try:
        with sigint_watch() as interrupted:
            assert not interrupted()
            os.kill(os.getpid(), signal.SIGINT)  # the handler runs before os.kill returns to this frame
            assert calls == ["other handler"] and interrupted()
        with sigint_watch() as interrupted:
            assert not interrupted()  # a new watch starts clean
    finally:
        signal.signal(signal.SIGINT, previous)
