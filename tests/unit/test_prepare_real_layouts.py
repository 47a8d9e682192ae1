"""``medcl data prepare`` on tiny copies of the publishers' *real* files, as found in the releases
(issue 32): CheXchoNet's ``cxrs/`` + ``metadata.csv`` with ``cxr_path``, RANZCR's ``train.csv``
where Swan Ganz always comes with an earlier label, PitVis's ``map_steps.csv`` with spaced names and
three names for step -1, ODIR's ``full_df.csv`` without its columns, NIH without ``test_list.txt``."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from medcl.data.prepare import DATASETS, prepare
from medcl.data.prepare.specs import PITVIS_STEPS, RANZCR_COLUMNS
from medcl.data.spec import DataError

from mgtil_fixtures import make_download


def _image(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, size=(8, 8, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG" if path.suffix == ".jpg" else "PNG")


def _csv(path: Path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def _labels(out: Path, name: str) -> list[str]:
    return pq.read_table(out / f"{name}.parquet", columns=["label"]).column("label").to_pylist()


# CheXchoNet's metadata.csv as its data dictionary lists the columns (sbhave77/CheXchoNet, data_exploration.ipynb)
CHEXCHONET_HEADER = ["patient_id", "cxr_filename", "cxr_time_offset", "cxr_year", "cxr_path", "cxr_pixel_spacing_x",
                     "cxr_pixel_spacing_y", "age", "sex", "ivsd", "lvpwd", "lvidd", "slvh", "dlv",
                     "composite_slvh_dlv", "heart_transplant", "lung_transplant", "pacemaker_or_icd"]


def make_chexchonet(root: Path) -> int:
    """Every JPEG under ``cxrs/``, ``cxr_path`` the path relative to the download, flags as pandas writes them."""
    flags = [("0.0", "0.0"), ("1.0", "0.0"), ("0.0", "1.0"), ("1.0", "1.0")]
    rows = []
    for i in range(12):
        patient = f"{i // 2:032x}"
        name = f"{patient}_{i:08x}"
        slvh, dlv = flags[i % 4]
        composite = "1.0" if "1.0" in (slvh, dlv) else "0.0"
        rows.append([patient, name, i * 30, 2015, f"cxrs/{name}.jpg", 0.14, 0.14, 60, "F", 1.1, 1.0, 5.0, slvh, dlv,
                     composite, 0, 0, 0])
        _image(root / "cxrs" / f"{name}.jpg", i)
    _csv(root / "metadata.csv", CHEXCHONET_HEADER, rows)
    return len(rows)


def test_chexchonet_reads_the_publishers_cxrs_folder_and_cxr_path(tmp_path):
    expected = make_chexchonet(tmp_path / "dl")
    summary = prepare(DATASETS["chexchonet"], tmp_path / "dl", tmp_path / "out", seed=1)
    assert summary["rows"] == expected and summary["skipped"] == {}
    assert set(_labels(tmp_path / "out", "chexchonet")) == set(DATASETS["chexchonet"].classes)  # all 4 filled
    table = pq.read_table(tmp_path / "out" / "chexchonet.parquet").to_pydict()
    assert all(Path(p).parent.name == "cxrs" for p in table["path"])
    assert len(set(table["patient"])) == 6  # patient_id, not the image


def make_ranzcr(root: Path) -> dict:
    """train.csv with the real column names; every Swan Ganz image also has a CVC label (as in the real
    file: all 830 of its rows carry an earlier label)."""
    layout = [("CVC - Normal",), ("CVC - Normal", "Swan Ganz Catheter Present"), ("ETT - Normal", "CVC - Normal"),
              ("ETT - Abnormal",), ("ETT - Borderline", "NGT - Normal"), ("NGT - Abnormal", "CVC - Borderline"),
              ("NGT - Borderline",), ("NGT - Incompletely Imaged", "CVC - Normal"), ("CVC - Abnormal",),
              ("CVC - Borderline", "Swan Ganz Catheter Present"), ("ETT - Normal",), ("NGT - Normal",),
              ("CVC - Normal", "CVC - Borderline", "ETT - Normal"), ("CVC - Borderline",), ("ETT - Normal",)]
    rows = []
    for i, labels in enumerate(layout):
        uid = f"1.2.826.0.1.3680043.8.498.{10000 + i}"
        rows.append([uid, *(int(c in labels) for c in RANZCR_COLUMNS), f"ec{i // 2:07x}"])
        _image(root / "train" / f"{uid}.jpg", i)
    _csv(root / "train.csv", ["StudyInstanceUID", *RANZCR_COLUMNS, "PatientID"], rows)
    return {"images": len(layout), "labels": sum(len(x) for x in layout),
            "single": sum(len(x) == 1 for x in layout)}


def test_ranzcr_default_rule_gives_every_one_of_the_11_classes_rows(tmp_path):
    counts = make_ranzcr(tmp_path / "dl")
    spec = DATASETS["ranzcr"]
    summary = prepare(spec, tmp_path / "dl", tmp_path / "out")
    assert summary["multi_label"] == "rarest" and summary["rows"] == counts["images"]
    labels = _labels(tmp_path / "out", "ranzcr")
    assert set(labels) == set(spec.classes) and summary["empty_classes"] == []
    assert labels.count("Swan Ganz Catheter Present") == 2
    first = prepare(spec, tmp_path / "dl", tmp_path / "first", policy="first")
    assert first["empty_classes"] == ["Swan Ganz Catheter Present"]  # the fault the rule fixes, still reported
    assert prepare(spec, tmp_path / "dl", tmp_path / "x", policy="explode")["rows"] == counts["labels"]
    assert prepare(spec, tmp_path / "dl", tmp_path / "s", policy="single")["rows"] == counts["single"]


def test_rarest_picks_the_label_with_fewest_rows_ties_in_class_order(tmp_path):
    make_ranzcr(tmp_path / "dl")
    prepare(DATASETS["ranzcr"], tmp_path / "dl", tmp_path / "out", policy="rarest")
    table = pq.read_table(tmp_path / "out" / "ranzcr.parquet").to_pydict()
    by_uid = {Path(p).stem.rsplit(".", 1)[1]: label for p, label in zip(table["path"], table["label"])}
    # label totals: CVC - Normal 5, CVC - Borderline 4, ETT - Normal 4, Swan Ganz 2, NGT - Normal 2, the rest 1
    assert by_uid["10002"] == "ETT - Normal" and by_uid["10005"] == "NGT - Abnormal"
    assert by_uid["10012"] == "ETT - Normal"  # ETT - Normal and CVC - Borderline tie at 4: the earlier class


# PitVis map_steps.csv as released: names with spaces (one with a trailing space), one with underscores,
# and three names for step -1.
PITVIS_MAP = [(-1, "operation_ended"), (-1, "operation_not_started"), (-1, "out_of_patient"),
              (0, "nasal corridor creation "), (1, "anterior sphenoidotomy"), (2, "septum displacement"),
              (3, "sphenoid sinus clearance"), (4, "sellotomy"), (5, "haemostasis"), (6, "synthetic graft placement"),
              (7, "durotomy"), (8, "tumour excision"), (9, "fat graft placement"), (10, "gasket seal construct"),
              (11, "dural sealant"), (12, "nasal packing"), (13, "debris_clearance")]


def make_pitvis(root: Path) -> int:
    _csv(root / "map_steps.csv", ["int", "str"], [list(r) for r in PITVIS_MAP])
    rows = 0
    for video in ("01", "02", "03"):
        steps = list(range(-1, 14))
        _csv(root / "annotations" / f"annotations_{video}.csv", ["int_time", "int_step", "int_instrument1"],
             [[t, s, 0] for t, s in enumerate(steps)])
        for t in range(len(steps)):
            _image(root / "frames" / f"video_{video}" / f"{t:05d}.png", t)
        rows += len(steps)
    return rows


def test_pitvis_normalises_step_names_and_maps_step_minus_one_to_the_background_class(tmp_path):
    expected = make_pitvis(tmp_path / "dl")
    summary = prepare(DATASETS["pitvis"], tmp_path / "dl", tmp_path / "out")
    assert summary["rows"] == expected and summary["skipped"] == {}
    labels = _labels(tmp_path / "out", "pitvis")
    assert set(labels) == set(PITVIS_STEPS) and summary["empty_classes"] == []  # all 15 filled
    assert labels.count(PITVIS_STEPS[0]) == 3  # step -1, one frame per video
    assert labels.count("nasal_corridor_creation") == 3 and labels.count("debris_clearance") == 3


def test_a_csv_without_the_needed_columns_names_them_and_the_columns_found(tmp_path):
    make_download("aod", tmp_path / "aod")
    path = tmp_path / "aod" / "full_df.csv"
    rows = list(csv.reader(path.open()))
    _csv(path, ["ID", "Left-Fundus", "target"], [[r[0], r[1], "[1, 0, 0, 0, 0, 0, 0, 0]"] for r in rows[1:]])
    with pytest.raises(DataError, match=r"full_df.csv.*(filename.*labels|labels.*filename).*"
                                        r"found.*ID.*Left-Fundus.*target") as raised:
        prepare(DATASETS["aod"], tmp_path / "aod", tmp_path / "out")
    assert "no usable image rows" not in str(raised.value)
    make_chexchonet(tmp_path / "cx")
    path = tmp_path / "cx" / "metadata.csv"
    rows = list(csv.DictReader(path.open()))
    _csv(path, ["patient_id", "cxr_path", "slvh"], [[r["patient_id"], r["cxr_path"], r["slvh"]] for r in rows])
    with pytest.raises(DataError, match=r"metadata.csv.* dlv.*found.*patient_id"):
        prepare(DATASETS["chexchonet"], tmp_path / "cx", tmp_path / "out")


def test_odir_says_which_release_has_the_papers_10000_images(tmp_path):
    make_download("aod", tmp_path / "aod")
    summary = prepare(DATASETS["aod"], tmp_path / "aod", tmp_path / "out")
    note = summary["note"]
    assert "6,392" in note and "10,000" in note and "7,000" in note
    assert json.loads((tmp_path / "out" / "aod.json").read_text())["note"] == note
    assert "10,000" in DATASETS["aod"].note


def test_nih_without_test_list_names_the_file_and_offers_a_seeded_patient_split(tmp_path):
    make_download("nih_cxr14", tmp_path / "nih")
    (tmp_path / "nih" / "test_list.txt").unlink()
    with pytest.raises(DataError, match=r"(?s)test_list.txt.*--split patient-seeded"):
        prepare(DATASETS["nih_cxr14"], tmp_path / "nih", tmp_path / "out")
    summary = prepare(DATASETS["nih_cxr14"], tmp_path / "nih", tmp_path / "out", split="patient-seeded")
    assert summary["split"].startswith("seeded patient-level split") and summary["split_option"] == "patient-seeded"
    saved = json.loads((tmp_path / "out" / "nih_cxr14.json").read_text())
    assert saved["split"] == summary["split"] and saved["split_option"] == "patient-seeded"
    table = pq.read_table(tmp_path / "out" / "nih_cxr14.parquet").to_pydict()
    splits_of = {}
    for patient, split in zip(table["patient"], table["split"]):
        splits_of.setdefault(patient, set()).add(split)
    assert all(len(s) == 1 for s in splits_of.values()) and set(table["split"]) == {"train", "val", "test"}


def test_cli_prepare_prints_the_split_used_and_the_note(tmp_path, capsys):
    from medcl.cli import main

    make_download("nih_cxr14", tmp_path / "nih")
    (tmp_path / "nih" / "test_list.txt").unlink()
    assert main(["data", "prepare", "nih_cxr14", "--from", str(tmp_path / "nih"), "--out", str(tmp_path / "out"),
                 "--split", "patient-seeded"]) == 0
    assert "split: seeded patient-level split" in capsys.readouterr().out
    make_download("aod", tmp_path / "aod")
    assert main(["data", "prepare", "aod", "--from", str(tmp_path / "aod"), "--out", str(tmp_path / "out")]) == 0
    assert "10,000" in capsys.readouterr().out
