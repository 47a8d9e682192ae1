"""The shipped MGTIL experiments end to end on tiny copies of the fifteen downloads: prepare every
data set, build all four experiment files' task sequences, run both benchmarks' order I with a tiny
model (2 steps per task, Ray Train local mode) and check the matrices, AUC and metrics."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medcl.config import load_experiment
from medcl.data.prepare import DATASETS, HIERA_MED_TRANSFER, MEDXTREME, prepare
from medcl.engine.runner import build_tasks
from medcl.rundir import read_matrix_csv

from local_sequence import run_local
from mgtil_fixtures import make_download

pytestmark = [pytest.mark.ray, pytest.mark.slow]
MGTIL = Path(__file__).resolve().parents[2] / "experiments" / "mgtil"
ORDERS = {
    "hieramedtransfer.yaml": list(HIERA_MED_TRANSFER),
    "hieramedtransfer_order2.yaml": ["airogs", "breakhis", "chaoyang", "chexchonet", "eyepacs", "farfum_rop",
                                     "gashissdb", "pd_cxr", "ranzcr"],
    "medxtreme.yaml": list(MEDXTREME),
    "medxtreme_order2.yaml": ["aod", "nct_crc", "pitvis", "isic2024", "nih_cxr14", "bmc"],
}


@pytest.fixture(scope="module")
def mgtil_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mgtil")
    for name in DATASETS:
        make_download(name, root / "downloads" / name)
        prepare(DATASETS[name], root / "downloads" / name, root / "prepared", seed=0)
    return root


def _tiny(file: str, root: Path):
    return load_experiment(MGTIL / file, [f"benchmark.data_root={root / 'prepared'}", "benchmark.image_size=32",
                                          "model.name=medcl-tiny", "train.use_gpu=false", "train.cpus_per_worker=1",
                                          "train.steps_per_task=2", "train.batch_size=8", "train.precision=fp32",
                                          "train.eval_batch_size=64"], output_dir=str(root / "runs"))


def test_shipped_protocol_and_orders(mgtil_root):
    for file, order in ORDERS.items():
        raw = load_experiment(MGTIL / file, [f"benchmark.data_root={mgtil_root / 'prepared'}"])
        assert raw.benchmark.order == order and raw.model.name == "biomedclip" and raw.seed == 42
        assert (raw.train.steps_per_task, raw.train.batch_size, raw.train.lr, raw.train.label_smoothing) == \
            (1000, 64, 1e-5, 0.2)
        tasks = build_tasks(_tiny(file, mgtil_root))
        assert [t.name for t in tasks] == order
        for task in tasks:  # every class of every task has its own prompts, with the data set's wording
            assert len(task.class_prompts) == len(task.classes) and all(task.class_prompts)
            known = DATASETS[task.name].classes
            assert known is None or set(task.classes) <= set(known)
            assert task.modality == DATASETS[task.name].modality


# Left out of the sweeps, as their headers say: a reference corpus/index first (zscl, primed*), or no
# continual metrics (joint trains one stage on every task).
NOT_SWEPT = {"zscl", "primed", "primed_uniform", "primed_bm25", "joint"}


def test_sweep_files_cover_every_method_in_both_orders(mgtil_root):
    from medcl.strategies import STRATEGIES
    from medcl.sweep import load_sweep

    for bench, order_file in (("hieramedtransfer", "hieramedtransfer_order2.yaml"), ("medxtreme", "medxtreme_order2.yaml")):
        sweep = load_sweep(MGTIL / f"sweep_{bench}.yaml", [f"experiment.benchmark.data_root={mgtil_root / 'prepared'}"])
        methods = sweep.space["strategy.name"].choice
        assert set(methods) == set(STRATEGIES.names()) - NOT_SWEPT
        assert [list(o) for o in sweep.order] == [ORDERS[f"{bench}.yaml"], ORDERS[order_file]]
        pairs = {(p["strategy.name"], tuple(p["order"])) for p in sweep.enqueue}
        assert pairs == {(m, tuple(o)) for m in methods for o in sweep.order} and sweep.num_samples == len(pairs)
    assert "auc_last" in [o.metric for o in load_sweep(MGTIL / "sweep_medxtreme.yaml").objective]


@pytest.mark.parametrize("file", ["hieramedtransfer.yaml", "medxtreme.yaml"])
def test_order_one_runs_end_to_end_with_a_tiny_model(file, mgtil_root, ray_session):
    config = _tiny(file, mgtil_root)
    result = run_local(config)
    order = ORDERS[file]
    labels, tasks, values = read_matrix_csv(result.run.matrix)
    assert tasks == order and labels == ["zero_shot", *order] and np.isfinite(values).all()
    _, _, auc = read_matrix_csv(result.run.auc)
    assert auc.shape == values.shape
    # AUC is defined exactly for the tasks whose (tiny) test split holds two classes or more
    two_classes = [len(np.unique(t.split("test").labels)) >= 2 for t in build_tasks(config)]
    assert [bool(np.isfinite(auc[:, j]).all()) for j in range(len(order))] == two_classes
    assert ((auc[np.isfinite(auc)] >= 0) & (auc[np.isfinite(auc)] <= 100)).all()
    metrics = json.loads(result.run.metrics.read_text())
    assert metrics["complete"] and metrics["last"] == pytest.approx(values[-1].mean()) and metrics["bwt"] is not None
    if all(two_classes):
        assert metrics["auc_last"] == pytest.approx(auc[-1].mean())
    else:
        assert metrics["auc_last"] is None and "AUC undefined" in metrics["auc_note"]
