"""The sweep's own error (a :class:`medcl.engine.runner.RunError`: the CLI prints it and exits 2)."""
from __future__ import annotations

from medcl.engine.runner import RunError


class SweepError(RunError):
    """A sweep that cannot start or continue; the message says what to do."""
