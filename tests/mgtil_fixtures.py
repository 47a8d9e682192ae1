"""Tiny copies of the fifteen MGTIL downloads' layouts (a few 16 px images each), made in the test.

``make_download(name, root)`` writes ``root`` as the publisher ships it, with ``PATIENTS`` patients
and images of ``CLASSES_USED`` classes per data set, and returns the number of image rows expected.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image

from medcl.data.prepare.specs import BMC_CLASSES, CHEXCHONET, NCT_CLASSES, NIH_CLASSES, PITVIS_STEPS, RANZCR_COLUMNS

PATIENTS = 6  # patients (or images, where the data set has no patient) per data set: enough for 3 splits


def image(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, size=(16, 16, 3), dtype=np.uint8)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".png": "PNG"}[path.suffix.lower()]
    Image.fromarray(pixels).save(path, format=fmt)
    return path


def table(path: Path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def _ranzcr(root):
    rows = []
    for i in range(PATIENTS * 2):
        flags = [0] * 11
        flags[i % 3 * 4 % 11] = 1
        flags[10] = int(i % 4 == 0)  # some images have two labels: the first in class order is kept
        rows.append([f"1.2.{i}", *flags, f"p{i // 2}"])
        image(root / "train" / f"1.2.{i}.jpg", i)
    table(root / "train.csv", ["StudyInstanceUID", *RANZCR_COLUMNS, "PatientID"], rows)
    return len(rows)


def _chexchonet(root):  # the PhysioNet release: every JPEG under cxrs/, cxr_path relative to the download
    combos = list(CHEXCHONET)
    rows = [[f"p{i // 2}", f"cxr{i}", f"cxrs/cxr{i}.jpg", *combos[i % 4], 60] for i in range(PATIENTS * 2)]
    for i, row in enumerate(rows):
        image(root / row[2], i)
    table(root / "metadata.csv", ["patient_id", "cxr_filename", "cxr_path", "slvh", "dlv", "age"], rows)
    return len(rows)


def _folders(root, names, per=2, suffix=".png", nest=""):
    count = 0
    for c, name in enumerate(names):
        for i in range(per):
            image(root / name / nest / f"{name}_{i}{suffix}", c * 100 + i)
            count += 1
    return count


def _breakhis(root):
    base = root / "BreaKHis_v1" / "histology_slides" / "breast"
    for i in range(12):
        kind, tumour, code = ("benign", "A", "B") if i % 2 else ("malignant", "DC", "M")
        slide = f"SOB_{code}_{tumour}_14-{1000 + i}AB"
        for mag in ("40", "100"):
            image(base / kind / "SOB" / tumour / slide / f"{mag}X" / f"SOB_{code}_{tumour}-14-{1000 + i}AB-{mag}-001.png", i)
    return 24


def _chaoyang(root):
    for split, n in (("train", 8), ("test", 4)):
        items = [{"name": f"{split}/{i}.JPG", "label": i % 4} for i in range(n)]
        for i, item in enumerate(items):
            image(root / item["name"], i)
        (root / f"{split}.json").write_text(json.dumps(items))
    return 12


def _eyepacs(root):
    rows = [[f"{10 + i // 2}_{'left' if i % 2 else 'right'}", i % 5] for i in range(PATIENTS * 2)]
    for i, (name, _) in enumerate(rows):
        image(root / "train" / f"{name}.jpeg", i)
    table(root / "trainLabels.csv", ["image", "level"], rows)
    return len(rows)


def _airogs(root):
    rows = [[f"TRAIN{i:06d}", "RG" if i % 3 == 0 else "NRG"] for i in range(PATIENTS * 2)]
    for i, (name, _) in enumerate(rows):
        image(root / str(i % 2) / f"{name}.jpg", i)
    table(root / "train_labels.csv", ["challenge_id", "class"], rows)
    return len(rows)


def _farfum(root):
    for c, name in enumerate(("Normal", "Pre-Plus", "Plus")):
        for patient in range(4):
            image(root / name / f"P{c}{patient}" / "img1.jpg", c * 10 + patient)
    return 12


def _aod(root):
    codes = "NDGCAHMO"
    rows = [[i // 2, f"{i // 2}_{'left' if i % 2 else 'right'}.jpg", str([codes[i % 8]])] for i in range(PATIENTS * 2)]
    for i, row in enumerate(rows):
        image(root / "preprocessed_images" / row[1], i)
    table(root / "full_df.csv", ["ID", "filename", "labels"], rows)
    return len(rows)


def _isic(root):
    diagnoses = ["Nevus", "Basal cell carcinoma", "Melanoma, NOS"]
    rows = [[f"ISIC_{i:07d}", f"IP_{i // 2}", diagnoses[i % 3] if i != 5 else ""] for i in range(PATIENTS * 2)]
    for i, row in enumerate(rows):
        image(root / "train-image" / "image" / f"{row[0]}.jpg", i)
    table(root / "train-metadata.csv", ["isic_id", "patient_id", "iddx_3"], rows)
    return len(rows) - 1  # the row without iddx_3 is skipped and counted


def _nct(root):
    return _folders(root / "NCT-CRC-HE-100K", NCT_CLASSES[:4], 2, ".tif") + \
        _folders(root / "CRC-VAL-HE-7K", NCT_CLASSES[:4], 1, ".tif")


def _nih(root):
    findings = ["No Finding", "Effusion|Atelectasis", "Cardiomegaly", "Nodule"]
    rows = [[f"{i:08d}_000.png", findings[i % 4], i // 2] for i in range(PATIENTS * 2)]
    for i, row in enumerate(rows):
        image(root / f"images_{1 + i % 2:03d}" / "images" / row[0], i)
    table(root / "Data_Entry_2017_v2020.csv", ["Image Index", "Finding Labels", "Patient ID"], rows)
    (root / "test_list.txt").write_text("\n".join(r[0] for r in rows[-4:]) + "\n")
    (root / "train_val_list.txt").write_text("\n".join(r[0] for r in rows[:-4]) + "\n")
    return len(rows)


def _pitvis(root):
    table(root / "map_steps.csv", ["int", "str"], [[i, s] for i, s in enumerate(PITVIS_STEPS)])
    for video in ("01", "02", "03"):
        table(root / "annotations" / f"annotations_{video}.csv", ["int_time", "int_step", "int_instrument1"],
              [[t, (t + int(video)) % 4, 0] for t in range(4)])
        for t in range(4):
            image(root / "frames" / f"video_{video}" / f"{t:05d}.png", t)
    return 12


MAKERS = {
    "ranzcr": _ranzcr, "chexchonet": _chexchonet, "breakhis": _breakhis, "chaoyang": _chaoyang,
    "pd_cxr": lambda r: _folders(r, ("COVID", "normal", "pneumonia"), 4, ".jpg"),
    "gashissdb": lambda r: _folders(r / "160", ("Abnormal", "Normal"), 5),
    "eyepacs": _eyepacs, "airogs": _airogs, "farfum_rop": _farfum, "aod": _aod,
    "bmc": lambda r: _folders(r / "bone_marrow_cell_dataset", BMC_CLASSES[:3], 4, ".jpg", nest="0001-1000"),
    "isic2024": _isic, "nct_crc": _nct, "nih_cxr14": _nih, "pitvis": _pitvis,
}
assert NIH_CLASSES  # the NIH labels above are among its classes


def make_download(name: str, root: Path) -> int:
    """Write the tiny download of data set ``name`` into ``root``; return the rows it should give."""
    root.mkdir(parents=True, exist_ok=True)
    return MAKERS[name](root)
