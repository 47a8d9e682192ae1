"""Facts about the twelve 2D MedMNIST v2/v3 data sets (Yang et al., Sci Data 2023; CC BY 4.0).

Class names, task types, channel counts, split sizes and the 28-px files' MD5 sums are those of the
``medmnist`` package's ``INFO`` table (v2.1/v3.0), written out here so that medcl does not depend on
that package. Files: ``{flag}.npz`` (28 px) or ``{flag}_{size}.npz`` (64, 128, 224 px; MedMNIST+,
v3), on Zenodo record 10519652. ``modality`` uses medcl's vocabulary (``xray``, ``ct``,
``ultrasound``, ``pathology``, ``dermatology``, ``fundus``, ``oct``, ``microscopy``).
"""
from __future__ import annotations

from dataclasses import dataclass

SIZES = (28, 64, 128, 224)
ZENODO_URL = "https://zenodo.org/records/10519652/files/{file}?download=1"
HOMEPAGE = "https://medmnist.com"
# The 3D sets share the file format but hold volumes; medcl tasks are 2D images.
THREE_D = ("organmnist3d", "nodulemnist3d", "adrenalmnist3d", "fracturemnist3d", "vesselmnist3d", "synapsemnist3d")


@dataclass(frozen=True)
class MedMNISTInfo:
    """One 2D MedMNIST data set. ``unsupported`` is the reason medcl refuses it, or ``""``."""

    flag: str
    title: str
    modality: str
    task: str
    classes: tuple[str, ...]
    channels: int
    n_samples: tuple[int, int, int]  # train, val, test
    md5_28: str
    source: str
    unsupported: str = ""

    def file_name(self, size: int) -> str:
        return f"{self.flag}.npz" if size == 28 else f"{self.flag}_{size}.npz"

    def url(self, size: int) -> str:
        return ZENODO_URL.format(file=self.file_name(size))


_ORGANS = ("bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver", "lung-left",
           "lung-right", "pancreas", "spleen")
_MULTI_LABEL = ("multi-label: an image carries any number of its 14 findings at once, while a medcl task is "
                "single-label top-1 classification (MTIL protocol); turn it into one binary task per finding "
                "(e.g. pneumonia vs not) and load that with the parquet adapter")

INFO: dict[str, MedMNISTInfo] = {i.flag: i for i in (
    MedMNISTInfo("pathmnist", "PathMNIST", "pathology", "multi-class",
                 ("adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle", "normal colon mucosa",
                  "cancer-associated stroma", "colorectal adenocarcinoma epithelium"),
                 3, (89996, 10004, 7180), "a8b06965200029087d5bd730944a56c1",
                 "NCT-CRC-HE-100K / CRC-VAL-HE-7K colorectal cancer H&E patches"),
    MedMNISTInfo("chestmnist", "ChestMNIST", "xray", "multi-label, binary-class",
                 ("atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule", "pneumonia",
                  "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis", "pleural", "hernia"),
                 1, (78468, 11219, 22433), "02c8a6516a18b556561a56cbdd36c4a8",
                 "NIH ChestX-ray14 frontal chest X-rays", unsupported=_MULTI_LABEL),
    MedMNISTInfo("dermamnist", "DermaMNIST", "dermatology", "multi-class",
                 ("actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma",
                  "benign keratosis-like lesions", "dermatofibroma", "melanoma", "melanocytic nevi",
                  "vascular lesions"),
                 3, (7007, 1003, 2005), "0744692d530f8e62ec473284d019b0c7",
                 "HAM10000 dermatoscopic images of pigmented skin lesions"),
    MedMNISTInfo("octmnist", "OCTMNIST", "oct", "multi-class",
                 ("choroidal neovascularization", "diabetic macular edema", "drusen", "normal"),
                 1, (97477, 10832, 1000), "c68d92d5b585d8d81f7112f81e2d0842",
                 "retinal optical coherence tomography scans"),
    MedMNISTInfo("pneumoniamnist", "PneumoniaMNIST", "xray", "binary-class", ("normal", "pneumonia"),
                 1, (4708, 524, 624), "28209eda62fecd6e6a2d98b1501bb15f", "pediatric chest X-rays"),
    MedMNISTInfo("retinamnist", "RetinaMNIST", "fundus", "ordinal-regression", ("0", "1", "2", "3", "4"),
                 3, (1080, 120, 400), "bd4c0672f1bba3e3a89f0e4e876791e4",
                 "DeepDRiD fundus photographs, diabetic retinopathy grade 0-4"),
    MedMNISTInfo("breastmnist", "BreastMNIST", "ultrasound", "binary-class", ("malignant", "normal, benign"),
                 1, (546, 78, 156), "750601b1f35ba3300ea97c75c52ff8f6", "breast ultrasound images"),
    MedMNISTInfo("bloodmnist", "BloodMNIST", "microscopy", "multi-class",
                 ("basophil", "eosinophil", "erythroblast",
                  "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)", "lymphocyte", "monocyte",
                  "neutrophil", "platelet"),
                 3, (11959, 1712, 3421), "7053d0359d879ad8a5505303e11de1dc", "peripheral blood smear cells"),
    MedMNISTInfo("tissuemnist", "TissueMNIST", "microscopy", "multi-class",
                 ("Collecting Duct, Connecting Tubule", "Distal Convoluted Tubule", "Glomerular endothelial cells",
                  "Interstitial endothelial cells", "Leukocytes", "Podocytes", "Proximal Tubule Segments",
                  "Thick Ascending Limb"),
                 1, (165466, 23640, 47280), "ebe78ee8b05294063de985d821c1c34b",
                 "BBBC051 human kidney cortex cells (fluorescence microscopy)"),
    MedMNISTInfo("organamnist", "OrganAMNIST", "ct", "multi-class", _ORGANS,
                 1, (34581, 6491, 17778), "866b832ed4eeba67bfb9edee1d5544e6", "LiTS abdominal CT, axial view"),
    MedMNISTInfo("organcmnist", "OrganCMNIST", "ct", "multi-class", _ORGANS,
                 1, (13000, 2392, 8268), "0afa5834fb105f7705a7d93372119a21", "LiTS abdominal CT, coronal view"),
    MedMNISTInfo("organsmnist", "OrganSMNIST", "ct", "multi-class", _ORGANS,
                 1, (13940, 2452, 8829), "e5c39f1af030238290b9557d9503af9d", "LiTS abdominal CT, sagittal view"),
)}

# How each task type is scored on this platform (docs/benchmarks.md).
SCORING = {
    "binary-class": "top-1 accuracy over the 2 classes",
    "multi-class": "top-1 accuracy over the task's classes",
    "ordinal-regression": "top-1 accuracy over the 5 grades treated as nominal classes (no credit for a "
                          "neighbouring grade; MedMNIST's own benchmark also reports ACC)",
    "multi-label, binary-class": "refused (multi-label)",
}
