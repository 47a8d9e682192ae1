"""What a command says when Ctrl-C stops it: what was kept, the exact command that resumes, exit 130.

130 is the shell's status for a process ended by SIGINT (128 + 2), so scripts and CI see an
interrupted command as failed, never as finished.
"""
from __future__ import annotations

import contextlib
import shlex
import signal
import socket
import sys
import threading

INTERRUPTED_EXIT = 130


def shell_line(words: list) -> str:
    """``words`` as one line to paste into a shell, each quoted where needed."""
    return " ".join(shlex.quote(str(w)) for w in words)


def set_options(overrides: list[str]) -> list[str]:
    """``--set KEY=VALUE`` for each override, as the user gave them."""
    return [word for override in overrides for word in ("--set", override)]


def report_interrupted(kept: str, resume: list) -> int:
    """Print ``interrupted: <kept>; resume with: <command>`` to stderr; return :data:`INTERRUPTED_EXIT`."""
    print(f"\ninterrupted: {kept}; resume with: {shell_line(resume)}", file=sys.stderr, flush=True)
    return INTERRUPTED_EXIT


@contextlib.contextmanager
def sigint_watch():
    """Yields ``interrupted()``: True once SIGINT has reached this process inside the block, whichever
    Python handler ran for it. Needed because Ray Train's ``fit`` installs its own SIGINT handler
    (it aborts the run, then ``sys.exit(0)``, which Ray's ``ray.get`` turns into ``SystemExit(1)``), so
    a Ctrl-C reaches ``medcl run`` as a ``SystemExit``, not a ``KeyboardInterrupt``. The signal is
    seen through :func:`signal.set_wakeup_fd` (the interpreter writes each signal's number there
    before any handler runs); outside the main thread ``interrupted()`` is always False."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    reader, writer = socket.socketpair()
    reader.setblocking(False)
    writer.setblocking(False)
    previous = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    seen = bytearray()

    def interrupted() -> bool:
        with contextlib.suppress(BlockingIOError):
            seen.extend(reader.recv(4096))
        return signal.SIGINT in seen

    try:
        yield interrupted
    finally:
        signal.set_wakeup_fd(previous)
        reader.close()
        writer.close()


def report_run_interrupted(config, args) -> int:
    """``medcl run`` stopped by Ctrl-C: the run directory and its last valid task checkpoint (the
    next run of the same command resumes after it), and that command (without ``--fresh``, which
    would delete them)."""
    command = ["medcl", "run", args.experiment, *set_options(args.overrides)]
    if args.output_dir:
        command += ["--output-dir", args.output_dir]
    if not args.dashboard:
        command.append("--no-dashboard")
    return report_interrupted(_run_kept(config.run_dir), command)


def _run_kept(run_dir) -> str:
    """``run directory D kept, tasks done up to checkpoints/task-K`` (or ``no task finished``)."""
    from pathlib import Path

    from medcl.engine.checkpoint import latest_checkpoint

    if not isinstance(run_dir, Path):  # an object-store run directory: its checkpoints are listed on resume
        return f"run directory {run_dir} kept (the run resumes after its last finished task)"
    if not run_dir.exists():
        return f"nothing written yet ({run_dir} does not exist)"
    try:
        last = latest_checkpoint(run_dir / "checkpoints")
    except (OSError, ValueError):  # a checkpoint being written: say what is known
        last = None
    if last is None:
        return f"run directory {run_dir} kept, no task finished yet (the run restarts from the beginning)"
    return f"run directory {run_dir} kept, finished tasks up to checkpoints/{last.name} (the run resumes after it)"
