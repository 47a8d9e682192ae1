"""``medcl data prepare``: a publisher's download -> one Parquet manifest medcl's ``parquet`` adapter reads.

A data set is a :class:`DatasetSpec` (``specs.py``: classes, modality, the files its layout must
have, one reader); a reader (``readers.py``) yields one :class:`Record` per image: the image file,
its class name(s), its patient (or video) and the publisher's split when there is one.

Output ``OUT/<name>.parquet`` (columns ``path`` or ``image``, ``label``, ``split``, ``task``,
``modality``, ``patient``) and ``OUT/<name>.json`` (counts per split and class, rows skipped and
why, the split policy, the seed, seconds and bytes written).

Rows skipped and counted (``--strict`` makes the first one an error): an image file that is not
there, a label that is not one of the data set's classes, a row without a usable label, and an
image path that does not resolve inside the download folder (``image path outside the download
folder``: an absolute path, ``../`` leading out, a link leading out; the publisher's CSV/JSON never
decides which files are read). With ``--embed`` only images that decode within the pixel and bytes
budgets (:func:`medcl.data.images.open_image`) are stored; the others are skipped and counted by
reason (``image refused (too_many_pixels)``...).

Multi-label images (``--multi-label``): ``first``, the first of its labels in the class order;
``rarest``, the label with the fewest rows over the whole download (its count among all records'
labels; ties go to the earlier class), so a class that always comes with a more common one still
gets rows; ``explode``, one row per label; ``single``, only images with exactly one label. Classes
that end with no row are listed in the JSON's ``empty_classes``.

Split, when the publisher gives none (or gives train/test without val): the patients are ordered by
``sha256(f"{seed}:{patient}")`` and cut in that order into test (``round(0.2 n)``, at least 1),
val (``round(0.1 n)``, at least 1) and train (the rest; with fewer than 3 patients all are train
and test is empty), so no patient is in two splits and the split does not depend on file order.
A publisher's train/test split is kept (``--split publisher``, the default); val is then cut from its
train patients the same way (``round(0.125 n_train)``). ``--split patient-seeded`` ignores the
publisher's split and cuts the seeded patient-level split above; the JSON records which was used
(``split_option``, ``split``). Without patient identifiers each image is its own patient (named by
its path under the download folder, so the split does not depend on where the download was extracted).
"""
from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable

from medcl.data.spec import DataError
from medcl.paths import OutsideRoot, inside_root

TEST_FRACTION, VAL_FRACTION, VAL_OF_TRAIN = 0.2, 0.1, 0.125
MULTI_LABEL = ("first", "rarest", "explode", "single")
SPLITS = ("publisher", "patient-seeded")


@dataclass(frozen=True)
class Record:
    """One image: ``labels`` holds one class name, or several for a multi-label source."""

    image: Path
    labels: tuple[str, ...]
    patient: str | None = None
    split: str | None = None  # "train", "val" or "test" when the publisher says


@dataclass(frozen=True)
class DatasetSpec:
    """One data set: what ``medcl data prepare NAME`` reads and writes.

    ``expected``: paths under the download folder that must exist, each a tuple of accepted
    alternatives (the first is the publisher's name); ``layout``: the expected tree, shown when one
    is missing; ``reader(root, spec, options) -> Iterable[Record]``; ``classes``: the class names in
    label order, or ``None`` for a list taken from the data (sorted).
    """

    name: str
    title: str
    modality: str
    classes: tuple[str, ...] | None
    expected: tuple[tuple[str, ...], ...]
    layout: str
    reader: Callable[..., Iterable[Record]]
    split_note: str
    source: str = ""
    multi_label: str = "first"
    options: dict = field(default_factory=dict)
    note: str = ""  # what a user should know about the download's counts (in the JSON and printed)


@dataclass
class Tally:
    """Rows kept and skipped (reason -> count, plus the first examples)."""

    kept: int = 0
    skipped: dict = field(default_factory=dict)
    examples: list = field(default_factory=list)

    def skip(self, reason: str, example: str, strict: bool, where: str) -> None:
        if strict:
            raise DataError(where, f"{reason}: {example} (--strict; leave it out to skip and count such rows)")
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        if len(self.examples) < 10:
            self.examples.append(f"{reason}: {example}")


def find(root: Path, alternatives: tuple[str, ...]) -> Path | None:
    """The first of ``alternatives`` (paths relative to ``root``, globs allowed) that exists."""
    for candidate in alternatives:
        if any(ch in candidate for ch in "*?["):
            hits = sorted(root.glob(candidate))
            if hits:
                return hits[0]
        elif (root / candidate).exists():
            return root / candidate
    return None


def check_layout(root: Path, spec: DatasetSpec) -> None:
    """:class:`DataError` naming the first expected file or folder that is missing, with the layout."""
    where = f"data prepare {spec.name} --from"
    if not root.is_dir():
        raise DataError(where, f"{root} is not a folder; expected the {spec.title} download:\n{spec.layout}")
    for alternatives in spec.expected:
        if find(root, alternatives) is None:
            present = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())[:20]
            names = " or ".join(alternatives)
            raise DataError(where, f"{root}: {names} is missing (renamed or not extracted?); expected the "
                                   f"{spec.title} layout:\n{spec.layout}\nfound: {present}")


def resolve_labels(record: Record, spec: DatasetSpec, policy: str,
                   totals: dict[str, int] | None = None) -> list[tuple[str, ...]]:
    """The single-label rows of a record under ``policy`` (``first``: the first of its labels in the
    class order; ``rarest``: the one with the fewest rows in ``totals``, ties to the earlier class;
    ``explode``: one row per label; ``single``: only records with exactly one label)."""
    if len(record.labels) <= 1 or policy == "explode":
        return [(label,) for label in record.labels]
    if policy == "single":
        return []
    order = {c: i for i, c in enumerate(spec.classes or sorted(record.labels))}
    if policy == "rarest":
        return [(min(record.labels, key=lambda c: ((totals or {}).get(c, 0), order.get(c, len(order)))),)]
    return [(min(record.labels, key=lambda c: order.get(c, len(order))),)]


def patient_split(patients: Iterable[str], seed: int, *, test: float = TEST_FRACTION,
                  val: float = VAL_FRACTION) -> dict[str, str]:
    """Patient -> split, cut in ``sha256(seed:patient)`` order (module docstring)."""
    unique = sorted(set(patients), key=lambda p: hashlib.sha256(f"{seed}:{p}".encode()).hexdigest())
    n = len(unique)
    if n < 3:
        return dict.fromkeys(unique, "train")
    n_test = max(1, round(test * n)) if test else 0
    n_val = max(1, round(val * n)) if val else 0
    return {p: "test" if i < n_test else "val" if i < n_test + n_val else "train" for i, p in enumerate(unique)}


def assign_splits(rows: list[dict], seed: int) -> str:
    """Fill ``split`` of every row in place; return the policy used, in words."""
    given = {r["split"] for r in rows if r["split"]}
    if not given:
        table = patient_split((r["patient"] for r in rows), seed)
        for r in rows:
            r["split"] = table[r["patient"]]
        if len(table) == len(rows):  # no two images share a patient id (none given: the image path)
            return f"seeded split 70/10/20 per image (seed {seed}; no two images share a patient id)"
        return f"seeded patient-level split 70/10/20 (seed {seed})"
    if "val" not in given:
        train_patients = {r["patient"] for r in rows if r["split"] == "train"}
        table = patient_split(train_patients, seed, test=VAL_OF_TRAIN, val=0)
        for r in rows:
            if r["split"] == "train" and table.get(r["patient"]) == "test":
                r["split"] = "val"
        return f"publisher's train/test split; val = 1/8 of the train patients (seed {seed})"
    return "publisher's train/val/test split"


def collect(root: Path, spec: DatasetSpec, *, policy: str, strict: bool, options: dict,
            embed: bool = False) -> tuple[list[dict], Tally]:
    """Read every record, keep the valid single-label rows (patient defaults to the image path);
    images must resolve inside ``root`` and, with ``embed``, decode within the budgets."""
    where = f"data prepare {spec.name}"
    classes = set(spec.classes or ())
    tally, rows, kept = Tally(), [], []
    for record in spec.reader(root, spec, {**spec.options, **options}):
        if not record.labels:
            tally.skip("no usable label", str(record.image), strict, where)
            continue
        unknown = [c for c in record.labels if classes and c not in classes]
        if unknown:
            tally.skip(f"label not one of the {len(classes)} classes", f"{record.image}: {unknown}", strict, where)
            continue
        image, problem = checked_image(root, record.image, embed)
        if problem:
            tally.skip(problem, str(record.image), strict, where)
            continue
        kept.append(replace(record, image=image))
    totals = Counter(label for record in kept for label in record.labels)
    for record in kept:
        for (label,) in resolve_labels(record, spec, policy, totals):
            rows.append({"image": record.image, "label": label, "patient": record.patient or _relative(record.image, root),
                         "split": record.split})
        if len(record.labels) > 1 and policy == "single":
            tally.skip("several labels (--multi-label single)", str(record.image), False, where)
    tally.kept = len(rows)
    if not rows:
        raise DataError(f"{where} --from", f"{root}: no usable image rows; expected the layout:\n{spec.layout}")
    return rows, tally


def checked_image(root: Path, image: Path, embed: bool) -> tuple[Path | None, str]:
    """``(resolved image, "")`` when ``image`` resolves inside ``root`` and is a file (and, with
    ``embed``, decodes within the budgets), else ``(None, the skip reason)``."""
    from medcl.data.images import ImageRefused, check_image

    try:
        resolved = inside_root(root, image)
    except OutsideRoot:
        return None, "image path outside the download folder"
    if not resolved.is_file():
        return None, "image file missing"
    if embed:
        try:
            check_image(resolved)
        except ImageRefused as exc:
            return None, f"image refused ({exc.reason})"
    return resolved, ""


def _relative(image: Path, root: Path) -> str:
    """The image's path under the download folder: the patient of an image-level split, so the split
    does not depend on where the download was extracted."""
    try:
        return image.relative_to(root).as_posix()
    except ValueError:
        return image.as_posix()


def prepare(spec: DatasetSpec, source: Path, out: Path, *, seed: int = 0, strict: bool = False,
            policy: str | None = None, embed: bool = False, max_side: int | None = None,
            options: dict | None = None, split: str = "publisher") -> dict:
    """Check the layout, read, split and write ``out/<name>.parquet`` and ``out/<name>.json``; return the summary.

    ``split``: ``publisher`` keeps the publisher's split where there is one; ``patient-seeded`` cuts
    the seeded patient-level split whatever the publisher gives (readers see it as the option
    ``split_policy``: a reader that needs a publisher's split file may fail without it)."""
    from medcl.data.prepare.writer import write_manifest

    started = time.perf_counter()
    policy = policy or spec.multi_label
    if policy not in MULTI_LABEL:
        raise DataError("data prepare --multi-label", f"{policy!r} is not one of {', '.join(MULTI_LABEL)}")
    if split not in SPLITS:
        raise DataError("data prepare --split", f"{split!r} is not one of {', '.join(SPLITS)}")
    source = Path(source).resolve()
    check_layout(source, spec)
    rows, tally = collect(source, spec, policy=policy, strict=strict, options={**(options or {}), "split_policy": split}, embed=embed)
    if split == "patient-seeded":
        for r in rows:
            r["split"] = None
    split_policy = assign_splits(rows, seed)
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / f"{spec.name}.parquet"
    written = write_manifest(rows, manifest, spec, embed=embed, max_side=max_side, images_root=source)
    counts = {s: {} for s in ("train", "val", "test")}
    for r in rows:
        counts[r["split"]][r["label"]] = counts[r["split"]].get(r["label"], 0) + 1
    classes = list(spec.classes or sorted({r["label"] for r in rows}))
    filled = {r["label"] for r in rows}
    summary = {"dataset": spec.name, "title": spec.title, "source": str(source), "manifest": str(manifest),
               "rows": len(rows), "classes": classes, "empty_classes": [c for c in classes if c not in filled],
               "counts": counts, "skipped": tally.skipped, "skipped_examples": tally.examples,
               "split": split_policy, "split_option": split, "split_note": spec.split_note, "note": spec.note,
               "multi_label": policy, "seed": seed,
               "images": "embedded" + (f" (longest side <= {max_side} px)" if max_side else "") if embed else "paths",
               "bytes": written, "seconds": round(time.perf_counter() - started, 3)}
    (out / f"{spec.name}.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
