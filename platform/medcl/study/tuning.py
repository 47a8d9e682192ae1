"""Equal-budget tuning: one sweep per method with a space (:func:`medcl.study.plan.tuning_sweep`),
exactly ``tuning.trials`` trials each, scored on validation data; the best COMPLETE trial's
parameters are the method's chosen configuration.

A resumed study resumes the sweep (``run_sweep(resume=True)``): finished trials are kept, an
interrupted one continues in its run directory, and only the missing trials run.
"""
from __future__ import annotations

from pathlib import Path

from medcl.study.config import Method, StudyConfig
from medcl.study.costs import aggregate_costs, read_metrics, run_costs
from medcl.study.plan import tuning_sweep
from medcl.sweep.space import decode_choice
from medcl.sweep.study import run_name


class TuningError(RuntimeError):
    """No tuning trial of a method completed: there is no configuration to evaluate."""


def tune_method(study: StudyConfig, method: Method) -> dict:
    """Run (or resume) the method's tuning sweep; return :func:`tuning_summary`."""
    from medcl.sweep.driver import run_sweep

    sweep = tuning_sweep(study, method)
    result = run_sweep(sweep, resume=True)
    return tuning_summary(sweep, result.study, method)


def tuning_summary(sweep, optuna_study, method: Method) -> dict:
    """``{"trials", "complete", "failed", "objective", "mode", "best_value", "chosen", "trial_runs", "cost"}``;
    ``chosen`` maps each dimension to the best trial's value (choices decoded to their YAML values)."""
    trials = optuna_study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    if not complete:
        raise TuningError(f"method {method.label!r}: none of its {len(trials)} tuning trial(s) completed; "
                          f"see {sweep.sweep_dir}")
    objective = sweep.objective[0]
    pick = max if objective.mode == "max" else min
    best = pick(complete, key=lambda t: t.values[0])
    runs = [Path(sweep.sweep_dir) / "trials" / (t.user_attrs.get("run_name") or run_name(t.number, t.params))
            for t in trials]
    costs = [run_costs(r, read_metrics(r)) for r in runs if read_metrics(r) is not None]
    chosen = {k: decode_choice(v) if method.space[k].choice else v for k, v in best.params.items()}
    return {"trials": len(trials), "complete": len(complete), "failed": sum(t.state.name == "FAIL" for t in trials),
            "objective": objective.metric, "mode": objective.mode, "best_trial": best.number,
            "best_value": best.values[0], "chosen": chosen, "sweep_dir": str(sweep.sweep_dir),
            "trial_runs": [str(r) for r in runs], "cost": aggregate_costs(costs)}
