"""Prompts: every class of every known data set has clinically worded prompts; overrides; the listing."""
from __future__ import annotations

import pytest

from medcl.data.catalog import known_datasets
from medcl.data.medmnist_info import INFO
from medcl.data.prompts import check_templates, class_prompts, modality_templates, prompt_sets, readable

KNOWN = known_datasets()


@pytest.mark.parametrize("dataset", KNOWN, ids=[d.name for d in KNOWN])
def test_every_class_of_every_known_data_set_has_prompts(dataset):
    entry = prompt_sets()[dataset.name]
    assert sorted(entry.classes) == sorted(dataset.classes), "prompt file and facts table name the same classes"
    prompts = class_prompts(dataset.classes, dataset=dataset.name, modality=dataset.modality)
    assert len(prompts) == len(dataset.classes)
    for name, items in zip(dataset.classes, prompts):
        assert items and all(p and "{" not in p for p in items), name
        assert all(p not in other for other in prompts if other is not items for p in items), \
            f"{dataset.name}/{name}: a prompt is shared with another class"


def test_known_data_sets_are_medmnist_and_mednist_with_modalities():
    names = {d.name: d for d in KNOWN}
    assert set(INFO) <= set(names) and names["mednist"].adapter == "imagefolder"
    assert all(d.modality in modality_templates() for d in KNOWN), "every modality has default templates"


def test_clinical_wording():
    pneumonia = class_prompts(("normal", "pneumonia"), dataset="pneumoniamnist")[1]
    assert "a chest X-ray showing pneumonia" in pneumonia
    malignant = class_prompts(("malignant", "normal, benign"), dataset="breastmnist")[0]
    assert "a breast ultrasound of a malignant lesion" in malignant
    assert class_prompts(("CXR",), dataset="mednist")[0][0] == "a chest X-ray"


def test_templates_fall_back_by_modality_then_default():
    assert class_prompts(("ground_glass",), modality="ct")[0] == ("a CT scan showing ground glass",
                                                                   "a computed tomography image of ground glass")
    assert class_prompts(("x",), modality="thermography")[0][0] == "a medical image of x"
    assert readable("kidney-left_upper") == "kidney left upper"


def test_overrides_replace_templates_or_whole_classes():
    out = class_prompts(("normal", "pneumonia"), dataset="pneumoniamnist", templates=["a radiograph with {}"],
                        overrides={"normal": ["a normal chest film", "a normal chest film"]})
    assert out[0] == ("a normal chest film",), "duplicates are dropped"
    assert out[1] == ("a radiograph with pneumonia", "a radiograph with lung opacities consistent with pneumonia")
    with pytest.raises(ValueError, match=r"exactly one '\{\}'"):
        check_templates(["a chest X-ray"], "templates")


def test_medcl_list_benchmarks_shows_adapters_and_data_sets(capsys):
    import argparse

    from medcl.cli import _list  # the handler itself: main() would import torch and Ray first (10 s here)

    assert _list(argparse.Namespace(what="benchmarks")) == 0
    out = capsys.readouterr().out
    for name in ("medmnist", "imagefolder", "parquet", "sequence", "synthmed"):
        assert f"\n{name} " in f"\n{out}"
    for d in KNOWN:
        assert d.name in out and d.modality in out
    assert "pneumonia" in out and "HeadCT" in out and "refused: multi-label" in out
