"""Progress a person can follow: a few lines per task on the terminal, every step in events.jsonl.

Rank 0 prints ``[task 2/4 ultrasound] step 40/200 loss 1.234 ce 1.234 | 812 samples/s`` at step 1
(a long stage, such as pretraining's, shows it started) and about 5 times per task whatever its length, appends a step event to ``events.jsonl`` about 50 times per
task (both every ``train.log_every`` steps when that is set), appends every evaluated row, and
rewrites ``matrix.csv`` after each row so a running sequence can be inspected. The same step
events and rows also go to Ray metrics (``medcl.telemetry``) unless ``telemetry`` is false.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from medcl import telemetry
from medcl.rundir import ZERO_SHOT_ROW, RunDir, append_event, write_matrix_csv

LINES_PER_STAGE = 5
EVENTS_PER_STAGE = 50


class ProgressLog:
    def __init__(self, run: RunDir, *, enabled: bool, log_every: int | None = None, telemetry: bool = True):
        self.run, self.enabled, self.log_every = run, enabled, log_every
        self.telemetry = enabled and telemetry
        self.stage_name, self.stage_label, self.total, self.every, self.event_every = "", "", 0, 1, 1
        self.window_start, self.window_samples = time.perf_counter(), 0

    def start_stage(self, name: str, index: int, count: int, total_steps: int) -> None:
        self.stage_name, self.stage_label, self.total = name, f"task {index + 1}/{count} {name}", total_steps
        self.every = self.log_every or max(1, total_steps // LINES_PER_STAGE)
        self.event_every = self.log_every or max(1, total_steps // EVENTS_PER_STAGE)
        self.window_start, self.window_samples = time.perf_counter(), 0
        if self.enabled:
            append_event(self.run.events, {"kind": "stage_start", "task": name, "stage": index + 1,
                                           "steps": total_steps, "time": time.time()})
        if self.telemetry:
            telemetry.record_stage(self.run.path.name, name, index, count)

    def step(self, step: int, terms: dict[str, torch.Tensor], samples: int) -> None:
        self.window_samples += samples
        last = step == self.total
        record = not step % self.event_every or last
        if not self.enabled or not (record or step == 1):  # step 1 is printed: the run is alive, its first loss
            return
        elapsed = time.perf_counter() - self.window_start
        rate = self.window_samples / elapsed if elapsed > 0 else float("nan")
        values = {k: float(v.detach()) for k, v in terms.items()}
        if record:
            append_event(self.run.events, {"kind": "step", "task": self.stage_name, "step": step,
                                           "samples_per_s": rate, "time": time.time(), **values})
            if self.telemetry:
                telemetry.record_step(self.run.path.name, self.stage_name, step, values,
                                      samples=self.window_samples, samples_per_s=rate)
        if step % self.every == 0 or last or step == 1:
            shown = " ".join(f"{k} {v:.4f}" for k, v in values.items())
            print(f"[{self.stage_label}] step {step}/{self.total} {shown} | {rate:.0f} samples/s", flush=True)
        if record:
            self.window_start, self.window_samples = time.perf_counter(), 0

    def row(self, label: str, state) -> None:
        """Record an evaluated row and rewrite matrix.csv with every row so far."""
        if not self.enabled:
            return
        row = state.zero_shot if label == ZERO_SHOT_ROW else state.rows[-1]
        shown = "  ".join(f"{n} {a:.1f}" for n, a in zip(state.task_names, row))
        in_step = state.auc_zero_shot is not None and len(state.auc_rows) == state.stages_done
        auc_row = (state.auc_zero_shot if label == ZERO_SHOT_ROW else state.auc_rows[-1] if state.auc_rows else None
                   ) if in_step else None
        print(f"[eval after {label}] accuracy %: {shown}"
              + (f" | mean AUC % {np.nanmean(auc_row):.1f}" if auc_row and np.isfinite(auc_row).any() else ""), flush=True)
        append_event(self.run.events, {"kind": "row", "after": label, "accuracy": row, "auc": auc_row, "time": time.time()})
        if self.telemetry:
            telemetry.record_eval(self.run.path.name, label, dict(zip(state.task_names, row)))
        labels = [ZERO_SHOT_ROW] + state.stage_names[: state.stages_done]
        write_matrix_csv(self.run.matrix, labels, state.task_names, np.array([state.zero_shot] + state.rows))
        if auc_row is not None:
            write_matrix_csv(self.run.auc, labels, state.task_names,
                             np.array([state.auc_zero_shot] + state.auc_rows, dtype=float))
