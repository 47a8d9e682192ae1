"""The fifteen MGTIL data sets (PRIMED, Tables 5 and 6): one :class:`DatasetSpec` each.

The paper gives each data set's class count, not the names: the class lists below are the
publishers' labels, chosen to give those counts (``docs/mgtil.md`` says how each maps). Layouts are
the publishers' downloads as documented on their pages; ``layout`` is what an error shows.

Checked against the publishers' real files (issue 32):

* CheXchoNet (PhysioNet, doi 10.13026/kp08-ws25): ``metadata.csv`` at the top, every JPEG under
  ``cxrs/``, ``cxr_path`` the image's path relative to the download (the publisher's loader joins it
  to the root: sbhave77/CheXchoNet ``src/train/datasets.py``). 71,589 X-rays of 24,689 patients. The
  4 classes are the 2 x 2 combinations of the two echocardiography labels ``slvh`` (severe LV
  hypertrophy) and ``dlv`` (dilated LV); ``composite_slvh_dlv`` (= slvh OR dlv) is not used.
* RANZCR CLiP ``train.csv``: 30,083 images, 11 label columns, several per image. Under ``first``
  "Swan Ganz Catheter Present" (the last column) never wins: all 830 of its images carry an
  earlier label, so 10 of 11 classes get rows. ``rarest`` (the default here; one row per image)
  gives a class rows wherever one of its images carries no rarer label: Swan Ganz (830) is rarer than
  all but ETT - Abnormal (79), NGT - Abnormal (279) and NGT - Borderline (529); not run on the real
  file here (no copy), ``empty_classes`` in the JSON says if a class still ends empty. PRIMED's
  33,665 is reproduced by no rule: one row per image gives at most 30,083; ``explode`` 50,619 (the
  column sums); ``single`` 18,760. 33,665 lies between, so PRIMED's rule (or its copy of the file)
  is not one of these.
* PitVis ``map_steps.csv`` names are written with spaces (one with a trailing space), one with
  underscores, and step -1 has three names (operation_not_started, out_of_patient,
  operation_ended): names are compared without case, outer spaces or space/underscore differences,
  and every name of step -1 is the background class ``operation_not_started``.
* ODIR: see :data:`ODIR_NOTE`.
* NIH ChestX-ray14 copies without ``test_list.txt`` (academictorrents): ``--split patient-seeded``.
"""
from __future__ import annotations

import ast
from pathlib import Path

from medcl.data.prepare import readers
from medcl.data.prepare.core import DatasetSpec

RANZCR_COLUMNS = ("ETT - Abnormal", "ETT - Borderline", "ETT - Normal", "NGT - Abnormal", "NGT - Borderline",
                  "NGT - Incompletely Imaged", "NGT - Normal", "CVC - Abnormal", "CVC - Borderline", "CVC - Normal",
                  "Swan Ganz Catheter Present")
NIH_CLASSES = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
               "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
               "No Finding")
BMC_CLASSES = ("ABE", "ART", "BAS", "BLA", "EBO", "EOS", "FGC", "HAC", "KSC", "LYI", "LYT", "MMZ", "MON", "MYB",
               "NGB", "NGS", "NIF", "OTH", "PEB", "PLM", "PMO")
NCT_CLASSES = ("ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM")
ODIR_CODES = {"N": "normal", "D": "diabetic retinopathy", "G": "glaucoma", "C": "cataract",
              "A": "age-related macular degeneration", "H": "hypertensive retinopathy", "M": "pathological myopia",
              "O": "other abnormality"}
PITVIS_STEPS = ("operation_not_started", "nasal_corridor_creation", "anterior_sphenoidotomy", "septum_displacement",
                "sphenoid_sinus_clearance", "sellotomy", "haemostasis", "synthetic_graft_placement", "durotomy",
                "tumour_excision", "fat_graft_placement", "gasket_seal_construct", "dural_sealant", "nasal_packing",
                "debris_clearance")
ODIR_NOTE = ("PRIMED's AOD has 10,000 images: ODIR-5K's 5,000 patients x 2 eyes (the publishers' count, "
             "nkicsl/OIA-ODIR README). The grand-challenge release has 7,000 training images (3,500 patients, "
             "labels per patient in 'ODIR-5K_Training_Annotations(Updated)_V2.xlsx') and 1,000 test images; "
             "Kaggle's full_df.csv (read here) has 6,392 rows. No release labelling all 10,000 was found to "
             "check: expect at most 6,392 rows here.")
EYEPACS_LEVELS = ("no DR", "mild DR", "moderate DR", "severe DR", "proliferative DR")
CHEXCHONET = {("0", "0"): "no SLVH or DLV", ("1", "0"): "SLVH", ("0", "1"): "DLV", ("1", "1"): "SLVH and DLV"}


def _flag(value: str) -> str:
    return {"1.0": "1", "0.0": "0"}.get(value, value)


def _same(names) -> dict:
    return {n.lower(): n for n in names}


def _odir_labels(row: dict) -> tuple[str, ...]:
    try:
        codes = ast.literal_eval(row.get("labels", ""))
    except (ValueError, SyntaxError):
        return ()
    return tuple(ODIR_CODES[c] for c in codes if c in ODIR_CODES) if isinstance(codes, list) else ()


def _nih_split(root: Path, spec, choice: str):
    """The publisher's ``test_list.txt`` (test) against the rest (train); with ``--split
    patient-seeded`` none (the seeded patient split is cut instead); missing without it: an error
    naming the file and the fallback."""
    from medcl.data.prepare.core import find
    from medcl.data.spec import DataError

    if choice == "patient-seeded":
        return lambda row, _: None
    listing = find(root, ("test_list.txt",))
    if listing is None:
        present = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())[:20]
        raise DataError(f"data prepare {spec.name} --from",
                        f"{root}: test_list.txt is missing: the official split file (with train_val_list.txt) "
                        f"of the NIH release (https://nihcc.app.box.com/v/ChestXray-NIHCC; some copies, e.g. "
                        f"academictorrents', leave it out). Put it there for the publisher's test split, or add "
                        f"--split patient-seeded for a seeded patient-level split 70/10/20 (recorded in "
                        f"{spec.name}.json); found: {present}")
    test = set(listing.read_text().split())
    return lambda row, _: "test" if row["Image Index"] in test else "train"


def _nih_reader(root, spec, options):
    split = _nih_split(root, spec, options.get("split_policy", "publisher"))
    yield from readers.table(root, spec, {**options, "split": split})


def _chexchonet_image(row: dict, root: Path) -> Path:
    """``cxr_path`` (relative to the download, e.g. ``cxrs/<file>.jpg``; read also relative to ``cxrs/``),
    else ``cxrs/<cxr_filename>``."""
    relative = row.get("cxr_path", "")
    if relative:
        return root / relative if (root / relative).is_file() or not (root / "cxrs" / relative).is_file() \
            else root / "cxrs" / relative
    return root / "cxrs" / row.get("cxr_filename", "")


def _chexchonet_label(row: dict) -> tuple[str, ...]:
    pair = (_flag(row.get("slvh", "")), _flag(row.get("dlv", "")))
    return (CHEXCHONET[pair],) if pair in CHEXCHONET else ()


def _breakhis_patient(path: Path) -> str:
    parts = path.stem.split("-")  # SOB_B_A-14-22549AB-40-001: tumour, year, slide, magnification, index
    return "-".join(parts[1:3]) if len(parts) >= 5 else path.parent.parent.name


SPECS = [
    DatasetSpec(
        "ranzcr", "RANZCR CLiP (catheter and line position)", "xray", RANZCR_COLUMNS,
        expected=(("train.csv",), ("train",)),
        layout="train.csv  (StudyInstanceUID, the 11 label columns, PatientID)\ntrain/<StudyInstanceUID>.jpg",
        reader=readers.table, multi_label="rarest",
        split_note="test.csv has no labels: seeded split by PatientID",
        source="https://www.kaggle.com/competitions/ranzcr-clip-catheter-line-classification/data",
        note=("multi-label: each image gets its rarest label by default (under 'first' Swan Ganz never wins); "
              "PRIMED's 33,665 images are matched by no rule (the real train.csv: 30,083 images, so at most "
              "30,083 rows with one per image; explode 50,619, single 18,760)"),
        options={"csv": ("train.csv",), "columns": (("StudyInstanceUID",), *((c,) for c in RANZCR_COLUMNS),
                                                    ("PatientID",)),
                 "image": lambda r, root: root / "train" / f"{r['StudyInstanceUID']}.jpg",
                 "label": lambda r: tuple(c for c in RANZCR_COLUMNS if _flag(r.get(c, "")) == "1"),
                 "patient": lambda r: r.get("PatientID") or None}),
    DatasetSpec(
        "chexchonet", "CheXchoNet (left ventricular abnormalities)", "xray", tuple(CHEXCHONET.values()),
        expected=(("metadata.csv",), ("cxrs",)),
        layout=("metadata.csv  (patient_id, cxr_filename, cxr_time_offset, cxr_year, cxr_path, ..., slvh, dlv, "
                "composite_slvh_dlv, ...)\ncxrs/<file>.jpg  (cxr_path: the path relative to the download)"),
        reader=readers.table, split_note="no official split: seeded split by patient_id",
        source="https://physionet.org/content/chexchonet/",
        note=("4 classes: slvh x dlv (no SLVH or DLV, SLVH, DLV, SLVH and DLV); publisher: 71,589 X-rays, "
              "24,689 patients"),
        options={"csv": ("metadata.csv",),
                 "columns": (("cxr_path", "cxr_filename"), ("slvh",), ("dlv",), ("patient_id",)),
                 "image": _chexchonet_image, "label": _chexchonet_label,
                 "patient": lambda r: r.get("patient_id") or None}),
    DatasetSpec(
        "pd_cxr", "COVID-19, pneumonia and normal chest X-ray PA (Asraf & Islam)", "xray",
        ("covid", "normal", "pneumonia"),
        expected=(("covid", "COVID"), ("normal", "NORMAL"), ("pneumonia", "PNEUMONIA")),
        layout="covid/*.jpg  normal/*.jpg  pneumonia/*.jpg  (class folders, any case)",
        reader=readers.folders, split_note="no patient identifiers: seeded split per image",
        source="https://data.mendeley.com/datasets/jctsfj2sfn/1",
        options={"bases": {None: (".",)}, "names": _same(("covid", "normal", "pneumonia"))}),
    DatasetSpec(
        "breakhis", "BreakHis (breast tumour histology)", "pathology", ("benign", "malignant"),
        expected=(("BreaKHis_v1/histology_slides/breast", "histology_slides/breast"),),
        layout=("BreaKHis_v1/histology_slides/breast/{benign,malignant}/SOB/<tumour type>/<slide>/<40X|100X|200X|"
                "400X>/SOB_B_A-14-22549AB-40-001.png"),
        reader=readers.tree, split_note="no official split: seeded split by patient (slide id in the file name)",
        source="https://web.inf.ufpr.br/vri/databases/breast-cancer-histopathological-database-breakhis/",
        options={"base": ("BreaKHis_v1/histology_slides/breast", "histology_slides/breast"),
                 "label": lambda p: tuple(c for c in ("benign", "malignant") if c in p.parts[-7:]),
                 "patient": _breakhis_patient}),
    DatasetSpec(
        "chaoyang", "Chaoyang (colon histology)", "pathology", ("normal", "serrated", "adenocarcinoma", "adenoma"),
        expected=(("train.json", "json/train.json"), ("test.json", "json/test.json")),
        layout="train.json, test.json  ([{\"name\": \"train/<file>.JPG\", \"label\": 0-3}, ...])\ntrain/  test/",
        reader=readers.json_list, split_note="publisher's train/test; val = 1/8 of train images (no patient ids)",
        source="https://bupt-ai-cz.github.io/HSA-NRL/",
        options={"files": {"train": ("train.json", "json/train.json"), "test": ("test.json", "json/test.json")}}),
    DatasetSpec(
        "gashissdb", "GasHisSDB (gastric histology; PRIMED's 'NuCLS' column)", "pathology", ("abnormal", "normal"),
        expected=(("160", "GasHisSDB/160"),),
        layout="160/{Abnormal,Normal}/*.png  (the 160x160 sub-database; 120/ and 80/ are not used)",
        reader=readers.folders, split_note="no patient identifiers: seeded split per image",
        source="https://doi.org/10.6084/m9.figshare.15066147",
        options={"bases": {None: ("160", "GasHisSDB/160")}, "names": _same(("abnormal", "normal"))}),
    DatasetSpec(
        "eyepacs", "EyePACS (diabetic retinopathy grade)", "fundus", EYEPACS_LEVELS,
        expected=(("trainLabels.csv",), ("train",)),
        layout="trainLabels.csv  (image, level 0-4)\ntrain/<image>.jpeg  (image = <patient>_left|right)",
        reader=readers.table, split_note="the 35,126 labelled training images: seeded split by patient",
        source="https://www.kaggle.com/competitions/diabetic-retinopathy-detection/data",
        options={"csv": ("trainLabels.csv",), "columns": (("image",), ("level",)),
                 "image": lambda r, root: root / "train" / f"{r['image']}.jpeg",
                 "label": lambda r: (EYEPACS_LEVELS[int(r["level"])],) if r.get("level", "") in "01234" and
                 r.get("level") else (), "patient": lambda r: r["image"].split("_")[0]}),
    DatasetSpec(
        "airogs", "AIROGS (referable glaucoma)", "fundus", ("no referable glaucoma", "referable glaucoma"),
        expected=(("train_labels.csv",),),
        layout="train_labels.csv  (challenge_id, class NRG|RG)\n0/ 1/ 2/ 3/ 4/ 5/  TRAIN000000.jpg ...",
        reader=readers.table, split_note="no patient identifiers: seeded split per image",
        source="https://zenodo.org/records/5793241",
        options={"csv": ("train_labels.csv",), "columns": (("challenge_id",), ("class",)), "images": (".",),
                 "image_key": lambda r: r["challenge_id"],
                 "label": lambda r: {"NRG": ("no referable glaucoma",), "RG": ("referable glaucoma",)}
                 .get(r.get("class", ""), ())}),
    DatasetSpec(
        "farfum_rop", "FARFUM-RoP (retinopathy of prematurity, plus disease)", "fundus", ("normal", "pre-plus", "plus"),
        expected=(("Normal", "normal"), ("Pre-Plus", "pre-plus", "PrePlus"), ("Plus", "plus")),
        layout="Normal/  Pre-Plus/  Plus/  (class folders; a <patient>/ folder level inside is read as the patient)",
        reader=readers.folders, split_note="seeded split by patient folder when present, else per image",
        source="https://doi.org/10.6084/m9.figshare.c.7192330 (Akbari et al., Sci Data 11:1176, 2024)",
        options={"bases": {None: (".",)}, "names": {"normal": "normal", "pre-plus": "pre-plus", "preplus": "pre-plus",
                                                      "plus": "plus"},
                 "patient": lambda p: p.parent.name if p.parent.name.lower() not in ("normal", "pre-plus", "preplus",
                                                                                     "plus") else None}),
    DatasetSpec(
        "aod", "AOD: ODIR-5K ocular disease recognition (8 classes)", "fundus", tuple(ODIR_CODES.values()),
        expected=(("full_df.csv",), ("preprocessed_images", "ODIR-5K/Training Images")),
        layout="full_df.csv  (ID, filename, labels e.g. \"['N']\")\npreprocessed_images/<filename>",
        reader=readers.table, split_note="no official labelled test set: seeded split by patient ID",
        source="https://odir2019.grand-challenge.org/ (Kaggle: andrewmvd/ocular-disease-recognition-odir5k)",
        note=ODIR_NOTE,
        options={"csv": ("full_df.csv",), "columns": (("ID",), ("filename",), ("labels",)),
                 "images": ("preprocessed_images", "ODIR-5K/Training Images"),
                 "image_key": lambda r: r.get("filename", ""), "label": _odir_labels,
                 "patient": lambda r: r.get("ID") or None}),
    DatasetSpec(
        "bmc", "Bone marrow cytomorphology (Matek et al.)", "microscopy", BMC_CLASSES,
        expected=(("bone_marrow_cell_dataset", "."),),
        layout="bone_marrow_cell_dataset/<ABE|ART|...|PMO>/<0001-1000>/<CLASS>_00001.jpg",
        reader=readers.folders, split_note="no patient identifiers in the release: seeded split per image",
        source="https://www.cancerimagingarchive.net/collection/bone-marrow-cytomorphology_mll_helmholtz_fraunhofer/",
        options={"bases": {None: ("bone_marrow_cell_dataset", ".")}, "names": _same(BMC_CLASSES)}),
    DatasetSpec(
        "isic2024", "ISIC 2024 (SLICE-3D) diagnoses", "dermatology", None,
        expected=(("train-metadata.csv",), ("train-image/image", "train-image")),
        layout="train-metadata.csv  (isic_id, patient_id, iddx_3, ...)\ntrain-image/image/<isic_id>.jpg",
        reader=readers.table, split_note="test metadata has no diagnoses: seeded split by patient_id; class = iddx_3",
        source="https://www.kaggle.com/competitions/isic-2024-challenge/data",
        options={"csv": ("train-metadata.csv",), "columns": (("isic_id",), ("iddx_3",), ("patient_id",)),
                 "images": ("train-image/image", "train-image"),
                 "image_key": lambda r: r.get("isic_id", ""),
                 "label": lambda r: (r["iddx_3"],) if r.get("iddx_3") else (),
                 "patient": lambda r: r.get("patient_id") or None}),
    DatasetSpec(
        "nct_crc", "NCT-CRC-HE-100K (colorectal tissue classes)", "pathology", NCT_CLASSES,
        expected=(("NCT-CRC-HE-100K",),),
        layout="NCT-CRC-HE-100K/<ADI|BACK|DEB|LYM|MUC|MUS|NORM|STR|TUM>/*.tif\nCRC-VAL-HE-7K/<class>/*.tif  (optional)",
        reader=readers.folders, split_note="train = NCT-CRC-HE-100K, test = CRC-VAL-HE-7K (other patients) when "
                                           "present, else a seeded split per image",
        source="https://zenodo.org/records/1214456",
        options={"bases": {"train": ("NCT-CRC-HE-100K",), "test": ("CRC-VAL-HE-7K",)}, "names": _same(NCT_CLASSES)}),
    DatasetSpec(
        "nih_cxr14", "NIH ChestX-ray14 (14 findings + no finding)", "xray", NIH_CLASSES,
        expected=(("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv"), ("images_*", "images")),
        layout=("Data_Entry_2017_v2020.csv  (Image Index, Finding Labels 'A|B', Patient ID, ...)\n"
                "train_val_list.txt  test_list.txt  (without them: --split patient-seeded)\n"
                "images_001/images/*.png ... images_012/images/*.png"),
        reader=_nih_reader, multi_label="first",
        split_note=("publisher's test_list.txt; val = 1/8 of the train_val patients (--split patient-seeded: "
                    "seeded by Patient ID)"),
        source="https://nihcc.app.box.com/v/ChestXray-NIHCC",
        options={"csv": ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv"),
                 "columns": (("Image Index",), ("Finding Labels",), ("Patient ID",)), "images": (".",),
                 "image_key": lambda r: r.get("Image Index", ""),
                 "label": lambda r: tuple(x.strip() for x in r.get("Finding Labels", "").split("|") if x.strip()),
                 "patient": lambda r: r.get("Patient ID") or None}),
    DatasetSpec(
        "pitvis", "PitVis 2023 (endoscopic pituitary surgery steps)", "endoscopy", PITVIS_STEPS,
        expected=(("map_steps.csv",), ("annotations", "."), ("frames",)),
        layout=("map_steps.csv  (int, str)\nannotations/annotations_<NN>.csv  (int_time, int_step, ...)\n"
                "frames/video_<NN>/<int_time:05d>.png  (extract at 1 fps: ffmpeg -i videos/video_<NN>.mp4 -vf fps=1 "
                "-start_number 0 frames/video_<NN>/%05d.png)"),
        reader=readers.video_frames, split_note="no official labelled test: seeded split by video",
        source="https://doi.org/10.5522/04/26531686",
        note=("step names compared without case, outer spaces or space/underscore; every name of step -1 is "
              "operation_not_started"),
        options={"map": ("map_steps.csv",), "annotations": ("annotations", "."),
                 "background": ("-1", "operation_not_started")}),
]
DATASETS = {spec.name: spec for spec in SPECS}
HIERA_MED_TRANSFER = ("ranzcr", "chexchonet", "pd_cxr", "breakhis", "chaoyang", "gashissdb", "eyepacs", "airogs",
                      "farfum_rop")
MEDXTREME = ("aod", "bmc", "isic2024", "nct_crc", "nih_cxr14", "pitvis")
