"""``medcl data prepare``: every MGTIL converter on a tiny copy of its publisher's layout."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from medcl.data.prepare import DATASETS, HIERA_MED_TRANSFER, MEDXTREME, patient_split, prepare
from medcl.data.spec import DataError

from mgtil_fixtures import make_download


def test_the_fifteen_data_sets_with_the_papers_class_counts():
    assert len(HIERA_MED_TRANSFER) == 9 and len(MEDXTREME) == 6 and set(DATASETS) == {*HIERA_MED_TRANSFER, *MEDXTREME}
    counts = {"ranzcr": 11, "chexchonet": 4, "pd_cxr": 3, "breakhis": 2, "chaoyang": 4, "gashissdb": 2, "eyepacs": 5,
              "airogs": 2, "farfum_rop": 3, "aod": 8, "bmc": 21, "nct_crc": 9, "nih_cxr14": 15, "pitvis": 15}
    assert {n: len(DATASETS[n].classes) for n in counts} == counts
    assert DATASETS["isic2024"].classes is None  # 33 in the paper: taken from the data's iddx_3


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_prepare_reads_the_publishers_layout(name, tmp_path):
    expected = make_download(name, tmp_path / "download")
    summary = prepare(DATASETS[name], tmp_path / "download", tmp_path / "out", seed=3)
    table = pq.read_table(tmp_path / "out" / f"{name}.parquet").to_pydict()
    assert summary["rows"] == len(table["path"]) == expected
    assert set(table["split"]) == {"train", "val", "test"}, table["split"]
    assert set(table["task"]) == {name} and set(table["modality"]) == {DATASETS[name].modality}
    if DATASETS[name].classes:
        assert set(table["label"]) <= set(DATASETS[name].classes)
    splits_of = {}
    for patient, split in zip(table["patient"], table["split"]):
        splits_of.setdefault(patient, set()).add(split)
    assert all(len(s) == 1 for s in splits_of.values()), "a patient is in two splits"
    assert all((tmp_path / "download") in Path(p).parents for p in table["path"])
    saved = json.loads((tmp_path / "out" / f"{name}.json").read_text())
    assert saved["rows"] == expected and saved["bytes"] == (tmp_path / "out" / f"{name}.parquet").stat().st_size
    assert summary == saved


def test_publisher_splits_multi_label_and_skipped_rows(tmp_path):
    make_download("nih_cxr14", tmp_path / "nih")
    summary = prepare(DATASETS["nih_cxr14"], tmp_path / "nih", tmp_path / "out")
    rows = pq.read_table(tmp_path / "out" / "nih_cxr14.parquet").to_pydict()
    test_images = set((tmp_path / "nih" / "test_list.txt").read_text().split())
    assert {p.rsplit("/", 1)[1] for p, s in zip(rows["path"], rows["split"]) if s == "test"} == test_images
    assert "Atelectasis" in rows["label"] and "Effusion" not in rows["label"]  # "Effusion|Atelectasis": first in class order
    assert summary["split"].startswith("publisher's")
    exploded = prepare(DATASETS["nih_cxr14"], tmp_path / "nih", tmp_path / "out2", policy="explode")
    assert exploded["rows"] == summary["rows"] + 3  # the three two-label images give two rows each
    make_download("isic2024", tmp_path / "isic")
    assert prepare(DATASETS["isic2024"], tmp_path / "isic", tmp_path / "out")["skipped"] == {"no usable label": 1}
    with pytest.raises(DataError, match="no usable label.*--strict"):
        prepare(DATASETS["isic2024"], tmp_path / "isic", tmp_path / "out", strict=True)


def test_missing_images_are_counted_and_a_missing_file_names_the_layout(tmp_path):
    make_download("eyepacs", tmp_path / "eyepacs")
    (tmp_path / "eyepacs" / "train" / "10_right.jpeg").unlink()
    summary = prepare(DATASETS["eyepacs"], tmp_path / "eyepacs", tmp_path / "out")
    assert summary["skipped"] == {"image file missing": 1} and "10_right.jpeg" in summary["skipped_examples"][0]
    (tmp_path / "eyepacs" / "trainLabels.csv").rename(tmp_path / "eyepacs" / "labels.csv")
    with pytest.raises(DataError, match=r"(?s)trainLabels.csv is missing.*level 0-4.*found: .*labels.csv"):
        prepare(DATASETS["eyepacs"], tmp_path / "eyepacs", tmp_path / "out")
    make_download("breakhis", tmp_path / "bh")
    shutil.rmtree(tmp_path / "bh" / "BreaKHis_v1")
    with pytest.raises(DataError, match="BreaKHis_v1/histology_slides/breast or histology_slides/breast is missing.*\n.*SOB_B_A-14"):
        prepare(DATASETS["breakhis"], tmp_path / "bh", tmp_path / "out")


def test_patient_split_is_seeded_disjoint_and_independent_of_order():
    patients = [f"p{i}" for i in range(50)]
    a, b = patient_split(patients, 0), patient_split(list(reversed(patients)), 0)
    assert a == b and a != patient_split(patients, 1)
    assert [list(a.values()).count(s) for s in ("train", "val", "test")] == [35, 5, 10]
    assert set(patient_split(["x", "y"], 0).values()) == {"train"}


def test_split_does_not_depend_on_where_the_download_lies(tmp_path):
    make_download("gashissdb", tmp_path / "a" / "download")
    shutil.copytree(tmp_path / "a" / "download", tmp_path / "b" / "elsewhere")
    splits = []
    for folder in (tmp_path / "a" / "download", tmp_path / "b" / "elsewhere"):
        prepare(DATASETS["gashissdb"], folder, folder.parent / "out", seed=5)
        splits.append(pq.read_table(folder.parent / "out" / "gashissdb.parquet", columns=["patient", "split"]).to_pydict())
    assert splits[0] == splits[1] and splits[0]["patient"][0].startswith("160/")


def test_embedded_manifest_is_read_by_the_parquet_adapter(tmp_path):
    from medcl.data.parquet import ParquetTask, load_task

    make_download("chaoyang", tmp_path / "cy")
    summary = prepare(DATASETS["chaoyang"], tmp_path / "cy", tmp_path / "out", embed=True, max_side=8)
    assert summary["split"].startswith("publisher's train/test")
    task = load_task(ParquetTask(path=str(tmp_path / "out" / "chaoyang.parquet"), dataset="chaoyang", image_size=8),
                     where="benchmark.tasks.0")
    assert task.classes == ("adenocarcinoma", "adenoma", "normal", "serrated") and task.modality == "pathology"
    assert len(task.split("test")) == 4 and task.split("train").images.shape[1:3] == (8, 8)
    assert all(np.asarray(p).size for p in task.class_prompts)
