"""The real-data recipe: experiments/pretrain_medpix.yaml, its corpus spec, and the sequence that starts from it."""
from __future__ import annotations

from pathlib import Path

import yaml

from medcl.config import load_experiment
from medcl.corpus.spec import load_spec
from medcl.pretrain.config import load_pretrain

REPO = Path(__file__).resolve().parents[2]


def test_recipe_corpus_and_sequence_fit_together():
    recipe = load_pretrain(REPO / "experiments" / "pretrain_medpix.yaml")
    assert recipe.data.source == "corpus" and recipe.data.augment is not None
    assert recipe.data.image_size == recipe.model.image_size == 64
    spec = load_spec(REPO / "experiments" / "corpus" / "medpix_meta.yaml")
    assert [(s.type, s.caption_metadata) for s in spec.sources] == [("medpix", True)]
    header = (REPO / "experiments" / "pretrain_medpix.yaml").read_text()
    assert "--out runs/corpora/medpix_meta" in header
    assert Path(recipe.data.path).parts[-2:] == ("corpora", "medpix_meta")
    sequence = load_experiment(REPO / "experiments" / "medical_realzs.yaml")
    assert sequence.model.pretrained == str(recipe.run_dir / "model.safetensors")
    assert (sequence.model.name, sequence.model.image_size) == (recipe.model.name, recipe.model.image_size)
    raw = yaml.safe_load((REPO / "experiments" / "medical_realzs.yaml").read_text())
    assert all(len(task.get("classes") or range(6)) > 2 for task in raw["benchmark"]["tasks"])  # 2x chance reachable
