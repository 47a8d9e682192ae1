"""Studies: the comparison a paper needs as one command (``medcl study STUDY.yaml``; docs/studies.md).

Modules, one job each: :mod:`.config` (the file's models), :mod:`.loading` (reading and checking),
:mod:`.plan` (methods to sweeps), :mod:`.tuning` (equal-budget tuning on validation data),
:mod:`.grid` (seed x order runs), :mod:`.costs`, :mod:`.statistics` (via :mod:`medcl.stats`),
:mod:`.tables`, :mod:`.plots`, :mod:`.board` (``index.html`` from ``medcl/templates``) and
:mod:`.runner` (all of it, resumable).
"""
from medcl.study.config import StudyConfig, StudyConfigError
from medcl.study.loading import load_study, validate_study

__all__ = ["StudyConfig", "StudyConfigError", "load_study", "validate_study"]
