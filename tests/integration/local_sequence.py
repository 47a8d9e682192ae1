"""The tests' name for :func:`medcl.engine.local.run_local` (a sequence in this process, Ray Train local mode)."""
from medcl.engine.local import run_local

__all__ = ["run_local"]
