"""Sweeps over whole task sequences: Ray Tune runs each trial (one sequence run), Optuna proposes
(TPE by default), ASHA stops poor trials task by task, and task orders can be a dimension.

    medcl sweep experiments/sweeps/tiny_synthmed.yaml [--resume | --fresh] [--set num_samples=8]

Modules: ``config`` (the sweep file's models), ``loading`` (reading and checking it), ``space`` (dimensions, orders, a trial's experiment),
``running`` (per-task metrics), ``searcher`` (Tune searcher over an Optuna study), ``study``
(storage, resume), ``trainable`` (one trial), ``gate`` (trial <-> workers, task by task),
``capacity`` (cluster files, packing trials onto nodes), ``placement`` (concurrency, time-outs,
rendezvous, retries), ``driver`` (the whole sweep), ``outputs``, ``plots``.
"""
from medcl.sweep.config import SweepConfig, SweepConfigError
from medcl.sweep.loading import load_sweep, validate_sweep

__all__ = ["SweepConfig", "SweepConfigError", "load_sweep", "validate_sweep"]
