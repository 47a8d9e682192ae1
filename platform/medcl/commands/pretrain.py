"""``medcl pretrain PRETRAIN.yaml [--set KEY=VALUE ...] [--fresh] [--output-dir DIR]``: CLIP
contrastive pretraining with Ray Train (see ``medcl.pretrain``); writes ``<run>/model.safetensors``
for an experiment's ``model.pretrained``."""
from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    pretrain = subparsers.add_parser("pretrain", help="CLIP contrastive pretraining on image-caption pairs (Ray Train)")
    pretrain.add_argument("pretrain_file", type=Path)
    pretrain.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                          help="override a field by its dotted path, e.g. --set train.steps=50 (repeatable)")
    pretrain.add_argument("--fresh", action="store_true", help="delete the run directory and start over")
    pretrain.add_argument("--output-dir", default=None, help="parent of the run directory (default: the file's output_dir)")
    pretrain.add_argument("--dashboard", action="store_true",
                          help="serve the Ray dashboard on 127.0.0.1 (a free port, printed) while a local Ray runs")
    pretrain.set_defaults(handler=_pretrain)


def _pretrain(args) -> int:
    from medcl.pretrain.config import load_pretrain
    from medcl.pretrain.runner import run_pretrain

    config = load_pretrain(args.pretrain_file, args.overrides, output_dir=args.output_dir)
    result = run_pretrain(config, fresh=args.fresh, dashboard=args.dashboard)
    if result.already_done:
        print(f"medcl: pretraining {config.name!r} is already finished (--fresh redoes it)")
    else:
        print("\n" + format_summary(result.metrics))
    print(f"Weights: {result.weights}\nUse them in an experiment with  model: {{name: {config.model.name}, "
          f"pretrained: {result.weights}}}")
    return 0


def format_summary(metrics: dict) -> str:
    """Held-out retrieval before -> after, as a few aligned lines."""
    before, after = metrics.get("heldout_before") or {}, metrics.get("heldout_after") or {}
    lines = [f"Held-out pairs: {after.get('pairs')} ({after.get('distinct_captions')} distinct captions); "
             f"{metrics['steps']} steps of {metrics['global_batch_size']} on {metrics['workers']} worker(s)",
             f"{'':22s}{'before':>8s}{'after':>8s}"]
    for key, label in (("i2t_r1", "image->text R@1 %"), ("i2t_r5", "image->text R@5 %"),
                       ("t2i_r1", "text->image R@1 %"), ("loss", "InfoNCE")):
        if key in after:
            lines.append(f"{label:22s}{before.get(key, float('nan')):8.2f}{after[key]:8.2f}")
    if "chance_i2t_r1" in after:
        lines.append(f"(chance image->text R@1: {after['chance_i2t_r1']:.2f} %)")
    return "\n".join(lines)
