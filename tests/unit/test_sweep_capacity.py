"""Sweep capacity and plan without Ray: cluster files, bundle packing, concurrency, time-outs,
rendezvous, and the shipped cloud sweeps sized to the shipped clusters."""
from __future__ import annotations

from pathlib import Path

import pytest

from medcl.engine.cluster import ResourceError
from medcl.sweep import load_sweep, validate_sweep
from medcl.sweep.capacity import ClusterSpec, NodeType, largest_fit, read_cluster_file, trial_bundles, trials_that_fit
from medcl.sweep.placement import LOCAL_START_TIMEOUT_S, Node, plan_sweep

REPO = Path(__file__).resolve().parents[2]
SHIPPED_CLUSTERS = ["cluster/aws.yaml", "cluster/gcp.yaml", "cluster/kuberay/raycluster.yaml"]
CLOUD_SWEEPS = sorted((REPO / "experiments" / "sweeps").glob("cloud_*.yaml"))
BASE = {"benchmark": {"name": "synthmed", "num_tasks": 2}, "train": {"steps_per_task": 5}}
LOCAL = [Node({"CPU": 2.0, "GPU": 0.0}, loopback=True)]


def sweep(tmp_path, **fields):
    return validate_sweep({"name": "s", "experiment": BASE, "output_dir": str(tmp_path), **fields})


def test_cluster_files_give_node_types_and_limits():
    aws = read_cluster_file(REPO / "cluster/aws.yaml")
    assert aws.head == {"CPU": 0.0, "GPU": 0.0} and aws.max_workers == 8 and aws.can_grow
    assert {t.name: (t.resources["GPU"], t.max_count) for t in aws.types} == {"gpu_1x": (1.0, 8), "gpu_4x": (4.0, 2)}
    kuberay = read_cluster_file(REPO / "cluster/kuberay/raycluster.yaml")
    assert kuberay.head["CPU"] == 0.0  # rayStartParams num-cpus "0" wins over the pod's 4 CPUs
    assert [(t.resources, t.max_count) for t in kuberay.types] == [({"CPU": 8.0, "GPU": 1.0}, 8)]


def test_bundles_pack_whole_trials_onto_nodes():
    one_worker = trial_bundles(1, 1, 1, 0)
    assert trials_that_fit([{"CPU": 2}], one_worker, limit=8) == 1
    assert trials_that_fit([{"CPU": 2}], trial_bundles(0.5, 1, 0.5, 0), limit=8) == 2
    assert trials_that_fit([{"CPU": 2}], trial_bundles(0.5, 1, 0.5, 0), limit=1) == 1
    eight = {"CPU": 8, "GPU": 1}
    assert trials_that_fit([eight, eight], trial_bundles(0.5, 1, 8, 1), limit=8) == 1  # the trial needs a 2nd node
    assert trials_that_fit([eight, eight], trial_bundles(0.5, 1, 7, 1), limit=8) == 2
    assert trials_that_fit([{"CPU": 0}, eight], trial_bundles(0.25, 2, 1, 1), limit=8) == 0  # 2 GPUs wanted


def test_largest_fit_tries_every_mix_within_max_workers():
    spec = ClusterSpec("c.yaml", {"CPU": 0, "GPU": 0},
                       (NodeType("small", {"CPU": 8, "GPU": 1}, 0, 8), NodeType("big", {"CPU": 48, "GPU": 4}, 0, 2)), 3)
    fit, nodes = largest_fit(spec, trial_bundles(0.5, 1, 6, 1), limit=100)
    assert fit == 9 and sum(n["GPU"] for n in nodes) == 9  # 2 big + 1 small: 3 nodes at most


def test_plan_on_a_local_ray_caps_concurrency_and_refuses_what_never_fits(tmp_path):
    fits = sweep(tmp_path, max_concurrent_trials=4, resources={"trial_cpus": 0.25, "train_workers": 1, "worker_cpus": 0.5})
    plan = plan_sweep(fits, nodes=LOCAL, joined=False, spec=None)
    assert plan.concurrency == 2 and any("at most 2 trial(s)" in n for n in plan.notes)  # 0.75 CPU a trial
    assert plan.trial.rendezvous == "file" and plan.trial.start_timeout_s == LOCAL_START_TIMEOUT_S
    assert plan.trial_retries == 0 and not plan.autoscaling and plan.trial.controller_failure_limit == 1
    big = sweep(tmp_path, resources={"trial_cpus": 0.5, "train_workers": 2, "worker_cpus": 1})
    with pytest.raises(ResourceError, match=r"resources.trial_cpus=0.5 CPU \+ resources.train_workers=2 x "
                                            r"\(resources.worker_cpus=1 CPU\).*the cluster now \(1 node\(s\): 1 x \{CPU 2\}\)"):
        plan_sweep(big, nodes=LOCAL, joined=False, spec=None)
    gpu = sweep(tmp_path, resources={"train_workers": 1, "worker_gpus": 1})
    with pytest.raises(ResourceError, match=r"resources.worker_gpus=1 GPU"):
        plan_sweep(gpu, nodes=LOCAL, joined=False, spec=None)


def test_plan_with_an_autoscaler_waits_for_nodes_and_caps_at_the_largest_layout(tmp_path):
    spec = read_cluster_file(REPO / "cluster/gcp.yaml")
    head_only = [Node({"CPU": 0.0, "GPU": 0.0}, loopback=False)]
    gpu = sweep(tmp_path, max_concurrent_trials=8, resources={"trial_cpus": 0.5, "train_workers": 2, "worker_cpus": 6,
                                                              "worker_gpus": 1, "node_wait_s": 900})
    plan = plan_sweep(gpu, nodes=head_only, joined=True, spec=spec)
    assert plan.concurrency == 4 and plan.autoscaling and plan.trial_retries == 2
    assert plan.trial.rendezvous == "tcp" and plan.trial.start_timeout_s == 900 and plan.trial.controller_failure_limit == 3
    huge = sweep(tmp_path, resources={"trial_cpus": 0.5, "train_workers": 1, "worker_cpus": 16, "worker_gpus": 1})
    with pytest.raises(ResourceError, match=r"resources.worker_cpus=16 CPU.*gcp.yaml \(largest node \{CPU 12, GPU 1\}\)"):
        plan_sweep(huge, nodes=head_only, joined=True, spec=spec)
    unknown = plan_sweep(gpu, nodes=head_only, joined=True, spec=None)  # joined, no cluster file, nothing fits now
    assert unknown.concurrency == 8 and unknown.autoscaling and "resources.cluster" in unknown.notes[0]


@pytest.mark.parametrize("cluster", SHIPPED_CLUSTERS)
@pytest.mark.parametrize("path", CLOUD_SWEEPS, ids=lambda p: p.name)
def test_cloud_sweeps_fit_the_shipped_clusters(path, cluster):
    """Every cloud sweep's max_concurrent_trials is reachable on every shipped cluster at its largest."""
    config = load_sweep(path)
    spec = read_cluster_file(REPO / cluster)
    res = config.resources
    assert res.worker_gpus == 1, "cloud sweeps train on GPU workers"
    fit, nodes = largest_fit(spec, trial_bundles(res.trial_cpus, res.train_workers, res.worker_cpus, res.worker_gpus),
                             limit=config.max_concurrent_trials)
    assert fit == config.max_concurrent_trials, f"{path.name} on {cluster}: only {fit} trial(s) fit"
    assert config.max_concurrent_trials * res.train_workers <= sum(n["GPU"] for n in nodes)
    plan = plan_sweep(config, nodes=[Node(spec.head, loopback=False)], joined=True, spec=spec)
    assert plan.concurrency == config.max_concurrent_trials and not plan.notes
