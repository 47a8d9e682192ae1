"""The sweep's own error (a :class:`medcl.engine.runner.RunError`: the CLI prints it and exits 2)."""
from __future__ import annotations

from medcl.engine.runner import RunError


class SweepError(RunError):
    """A sweep that cannot start or continue; the message says what to do."""


class SweepInterrupted(Exception):
    """Ctrl-C (SIGINT) stopped the sweep before its trials were done; not an error of the input, so
    not a :class:`SweepError`. ``states`` counts the study's trials by state at that moment: the
    finished ones (COMPLETE, PRUNED, FAIL) are kept, RUNNING ones are re-run first by ``--resume``
    under their own number and run directory (which resumes after its last finished task)."""

    def __init__(self, sweep_dir, states: dict[str, int] | None = None):
        self.sweep_dir, self.states = sweep_dir, states
        super().__init__(f"sweep interrupted; kept in {sweep_dir}")
