"""Zero-shot row of an experiment file, against chance, without training (no Ray, one process).

    .venv/bin/python experiments/benchmarks/zeroshot_real.py experiments/medical_realzs.yaml
    .venv/bin/python experiments/benchmarks/zeroshot_real.py experiments/medical_realzs.yaml \
        --set model.pretrained=runs/pretrain-medpix-32px/model.safetensors model.image_size=32

Builds the file's tasks as ``medcl run`` does (``medcl.engine.runner.build_tasks``), loads the model
it starts from, and scores every task's test split with the evaluation's own functions
(``to_model_input`` at the model's size, ``encode_class_prompts``, ``clip_logits``, arg-max over the
task's classes: ``medcl.engine.evaluate``), i.e. row 0 (``zero_shot``) of the accuracy matrix a run
records before training. Prints JSON: per task the accuracy (%), chance (100 / classes), the
majority-class rate of the split, and accuracy / chance; and the mean of accuracy / chance.
``--split val`` scores the validation split instead: choose prompts and tasks there, report test.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "platform"))


@torch.no_grad()
def task_accuracy(bundle, task, *, split: str = "test", batch_size: int = 256) -> float:
    """Accuracy (%) of ``bundle``'s model on ``task``'s ``split``, as ``medcl.engine.evaluate``."""
    from medcl.engine.preprocess import to_model_input
    from medcl.models import clip_logits, encode_class_prompts

    model, data = bundle.model, task.split(split)
    embeddings = encode_class_prompts(model, bundle.tokenizer, task.class_prompts, "cpu")
    scale = model.logit_scale.exp()
    right = 0
    for start in range(0, len(data), batch_size):
        images = to_model_input(data.images[start:start + batch_size], bundle.image_size, bundle.mean, bundle.std)
        features = model.encode_image(images, normalize=True)
        predicted = clip_logits(features, embeddings, scale).argmax(dim=1).numpy()
        right += int((predicted == data.labels[start:start + batch_size]).sum())
    return 100.0 * right / len(data)


def zero_shot_row(config, split: str = "test") -> dict:
    """The zero-shot row of an :class:`~medcl.config.ExperimentConfig` with chance levels (module docstring)."""
    from medcl.engine.runner import build_tasks
    from medcl.models import create_model

    tasks = build_tasks(config)
    bundle = create_model(config.model.name, pretrained=config.model.pretrained, image_size=config.model.image_size)
    rows = []
    for task in tasks:
        labels = task.split(split).labels
        accuracy, chance = task_accuracy(bundle, task, split=split), 100.0 / len(task.classes)
        rows.append({"task": task.name, "classes": list(task.classes), split: int(len(labels)),
                     "accuracy": round(accuracy, 2), "chance": round(chance, 2),
                     "majority": round(100.0 * np.bincount(labels).max() / len(labels), 2),
                     "ratio": round(accuracy / chance, 3)})
    return {"experiment": config.name, "split": split, "model": config.model.name,
            "pretrained": str(config.model.pretrained),
            "image_size": bundle.image_size, "tasks": rows,
            "mean_accuracy": round(float(np.mean([r["accuracy"] for r in rows])), 2),
            "mean_chance": round(float(np.mean([r["chance"] for r in rows])), 2),
            "mean_ratio": round(float(np.mean([r["ratio"] for r in rows])), 3)}


def _dumps(result: dict) -> str:
    """JSON with one line per task."""
    head = {k: v for k, v in result.items() if k != "tasks"}
    rows = ",\n".join("  " + json.dumps(row) for row in result["tasks"])
    return json.dumps(head, indent=1)[:-2] + ',\n "tasks": [\n' + rows + "\n ]\n}"


def main(argv: list[str] | None = None) -> int:
    from medcl.config import load_experiment

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", type=Path)
    parser.add_argument("--set", nargs="*", default=[], dest="overrides", help="a.b=c overrides, as medcl run --set")
    parser.add_argument("--split", default="test", choices=("test", "val"),
                        help="val: choose prompts or tasks on validation images, report test")
    parser.add_argument("--init-seed", type=int, default=0,
                        help="torch seed before the model is built: the weights of a random-init model "
                             "(model.pretrained=null); several give the spread of an untrained model's row")
    parser.add_argument("--write", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("MEDCL_THREADS", "1")))
    torch.manual_seed(args.init_seed)
    started = time.perf_counter()
    result = zero_shot_row(load_experiment(args.experiment, args.overrides), args.split)
    result["wall_s"] = round(time.perf_counter() - started, 1)
    result["load_average"] = round(os.getloadavg()[0], 2)
    text = _dumps(result)
    if args.write:
        args.write.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
