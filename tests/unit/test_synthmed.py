"""The ``synthmed`` benchmark: determinism, balance, shapes, captions, prompts, options, learnability."""
from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from medcl.data import BENCHMARKS
from medcl.data.synthmed import DOMAIN_NAMES, DOMAINS, FINDINGS, SynthMed, captioned_pairs, location, render

SMALL = dict(train_per_class=3, val_per_class=2, test_per_class=4)
CHANNELS = {"xray": 1, "ultrasound": 1, "ct": 1, "fundus": 3, "histology": 3, "dermoscopy": 3}
MODALITY = {"xray": "xray", "ultrasound": "ultrasound", "fundus": "fundus", "histology": "pathology",
            "ct": "ct", "dermoscopy": "dermatology"}
LOCATIONS = ("upper left", "upper centre", "upper right", "middle left", "centre", "middle right",
             "lower left", "lower centre", "lower right")


def build(seed: int = 0, **options):
    return SynthMed().build(SynthMed.Options(**{**SMALL, **options}), seed)


@pytest.fixture(scope="module")
def all_domains():
    return build(seed=3, num_tasks=6, image_size=24)


def test_registered_under_its_name():
    assert BENCHMARKS.get("synthmed") is SynthMed
    assert SynthMed.description
    assert DOMAIN_NAMES == ("xray", "ultrasound", "fundus", "histology", "ct", "dermoscopy")


def test_default_options_build_four_tasks_in_domain_order():
    options = SynthMed.Options()
    assert (options.num_tasks, options.image_size, options.train_per_class) == (4, 32, 120)
    tasks = build()
    assert [t.name for t in tasks] == ["xray", "ultrasound", "fundus", "histology"]
    assert all(t.classes == FINDINGS for t in tasks)


def test_same_seed_is_bit_identical_and_other_seed_differs():
    a, b, c = build(seed=7, num_tasks=3), build(seed=7, num_tasks=3), build(seed=8, num_tasks=3)
    for ta, tb, tc in zip(a, b, c):
        for split in ("train", "val", "test"):
            sa, sb, sc = ta.split(split), tb.split(split), tc.split(split)
            np.testing.assert_array_equal(sa.images, sb.images)
            np.testing.assert_array_equal(sa.labels, sb.labels)
            assert sa.captions == sb.captions
            assert not np.array_equal(sa.images, sc.images)


def test_splits_are_exactly_class_balanced_and_shuffled():
    tasks = build(num_tasks=2, classes=["cyst", "normal", "fracture"], train_per_class=7)
    for task in tasks:
        assert task.classes == ("cyst", "normal", "fracture")
        for split, n in (("train", 7), ("val", 2), ("test", 4)):
            labels = task.split(split).labels
            assert labels.dtype == np.int64
            assert np.bincount(labels, minlength=3).tolist() == [n, n, n]
        assert not np.array_equal(task.split("train").labels, np.sort(task.split("train").labels))


def test_shapes_dtypes_channels_and_modality_per_domain(all_domains):
    assert [t.name for t in all_domains] == list(DOMAIN_NAMES)
    for task in all_domains:
        assert task.modality == MODALITY[task.name]
        assert task.domain == DOMAINS[task.name].label
        assert task.metadata["synthetic"] is True and task.metadata["site"] == 1
        for split in ("train", "val", "test"):
            images = task.split(split).images
            assert images.dtype == np.uint8
            assert images.shape == (5 * SMALL[f"{split}_per_class"], 24, 24, CHANNELS[task.name])
            assert images.std() > 5  # not blank


def _lesion_difference(domain: str, finding: int, n: int = 30) -> np.ndarray:
    """Signed ``int (n, S, S, C)`` difference between images with ``finding`` and the same images
    (same background and noise draws) with none: the random stream does not depend on the labels."""
    base, _ = render(DOMAINS[domain], np.random.default_rng(0), np.zeros(n, int), 32)
    with_lesion, _ = render(DOMAINS[domain], np.random.default_rng(0), np.full(n, finding), 32)
    return with_lesion.astype(int) - base.astype(int)


@pytest.mark.parametrize("domain", DOMAIN_NAMES)
def test_every_finding_is_visible_in_every_domain(domain):
    assert not _lesion_difference(domain, 0).any()
    for finding in range(1, 5):
        peak = np.abs(_lesion_difference(domain, finding)).max(axis=(1, 2, 3))
        assert (peak >= 30).mean() >= 0.95, (domain, FINDINGS[finding], np.sort(peak)[:5])
        changed = (np.abs(_lesion_difference(domain, finding)) > 10).any(-1).mean(axis=(1, 2))
        assert changed.max() < 0.5, "a lesion is local: it changes well under half of the image"


@pytest.mark.parametrize("domain, finding, sign", [
    ("xray", "nodule", 1), ("ct", "nodule", 1), ("fundus", "nodule", 1),
    ("ultrasound", "nodule", -1), ("histology", "nodule", -1), ("dermoscopy", "nodule", -1),
    ("xray", "cyst", 1), ("ct", "cyst", -1), ("xray", "fracture", 1), ("ct", "fracture", -1),
])
def test_lesion_polarity_is_domain_specific(domain, finding, sign):
    grey = _lesion_difference(domain, FINDINGS.index(finding)).mean(-1)
    per_image = [g[np.abs(g) > 10].mean() for g in grey if (np.abs(g) > 10).any()]
    assert len(per_image) >= 28 and np.mean(np.sign(per_image) == sign) >= 0.9


def test_every_image_has_a_caption_naming_finding_domain_and_location(all_domains):
    for task in all_domains:
        label = DOMAINS[task.name].label
        for split in ("train", "val", "test"):
            part = task.split(split)
            assert part.captions is not None and len(part.captions) == len(part)
            for text, y in zip(part.captions, part.labels):
                finding = task.classes[y]
                assert label in text
                if finding == "normal":
                    assert "no finding" in text
                else:
                    assert finding in text and "no finding" not in text
                    assert any(f"in the {loc}" in text for loc in LOCATIONS), text


def test_location_grid():
    assert location(-0.9, -0.9) == "upper left"
    assert location(0.0, 0.0) == "centre"
    assert location(0.5, 0.0) == "lower centre"
    assert location(0.0, 0.9) == "middle right"


def test_class_prompts_are_clinical_and_domain_specific(all_domains):
    for task in all_domains:
        assert len(task.class_prompts) == len(task.classes)
        for finding, prompts in zip(task.classes, task.class_prompts):
            assert 2 <= len(prompts) <= 3 and len(set(prompts)) == len(prompts)
            assert DOMAINS[task.name].label in prompts[0]
            assert ("no finding" if finding == "normal" else finding) in prompts[0]
    xray, ultrasound = all_domains[0], all_domains[1]
    assert "pulmonary nodule" in " ".join(xray.class_prompts[1])
    assert set(xray.class_prompts[1]).isdisjoint(ultrasound.class_prompts[1])


@pytest.mark.parametrize("bad, fragment", [
    (dict(domains=["xray", "mri"]), "ultrasound"),  # the error lists the known domains
    (dict(domains=["ct", "ct"]), "duplicate"),
    (dict(domains=[]), "empty"),
    (dict(num_tasks=7), "num_tasks"),
    (dict(num_tasks=3, domains=["ct"], tasks_per_domain=2), "num_tasks"),
    (dict(num_tasks=0), "num_tasks"),
    (dict(classes=["nodule"]), "at least 2"),
    (dict(classes=["nodule", "tumour"]), "calcification"),
    (dict(image_size=8), "image_size"),
    (dict(image_size=512), "image_size"),
    (dict(train_per_class=0), "train_per_class"),
    (dict(tasks_per_domain=0), "tasks_per_domain"),
    (dict(colour="red"), "colour"),  # unknown option field
])
def test_invalid_options_raise(bad, fragment):
    with pytest.raises(ValidationError, match=fragment):
        SynthMed.Options(**bad)


def test_explicit_domains_keep_their_order_and_default_to_all_of_them():
    options = SynthMed.Options(domains=["ct", "dermoscopy", "xray"])
    assert options.num_tasks == 3
    assert SynthMed.Options(num_tasks=12, tasks_per_domain=2).num_tasks == 12
    tasks = build(domains=["ct", "dermoscopy", "xray"], num_tasks=2)
    assert [t.name for t in tasks] == ["ct", "dermoscopy"]


def test_build_accepts_a_plain_dict():
    a = SynthMed().build({**SMALL, "num_tasks": 1}, 5)
    b = build(seed=5, num_tasks=1)
    np.testing.assert_array_equal(a[0].split("test").images, b[0].split("test").images)


def test_a_domain_is_the_same_task_whatever_else_is_selected():
    alone = build(seed=2, domains=["fundus"])[0]
    among = build(seed=2, num_tasks=3)[2]
    assert alone.name == among.name == "fundus"
    np.testing.assert_array_equal(alone.split("train").images, among.split("train").images)


def test_tasks_per_domain_gives_distinct_sites_of_one_modality():
    tasks = build(domains=["ultrasound", "ct"], tasks_per_domain=2)
    assert [t.name for t in tasks] == ["ultrasound-1", "ct-1", "ultrasound-2", "ct-2"]
    us1, us2 = tasks[0], tasks[2]
    assert us1.modality == us2.modality == "ultrasound" and us1.domain == us2.domain
    assert (us1.metadata["site"], us2.metadata["site"]) == (1, 2)
    assert not np.array_equal(us1.split("train").images, us2.split("train").images)
    assert len({t.name for t in tasks}) == 4


def test_captioned_pairs_yield_unique_ids_and_valid_records():
    tasks = build(num_tasks=3)
    pairs = list(captioned_pairs(tasks, "val"))
    assert len(pairs) == sum(len(t.split("val")) for t in tasks)
    assert len({p["id"] for p in pairs}) == len(pairs)
    assert pairs[0]["id"] == "synthmed/xray/val/0"
    for p, task_name in zip(pairs, [t.name for t in tasks for _ in range(10)]):
        assert p["id"].startswith(f"synthmed/{task_name}/val/")
        assert p["image"].dtype == np.uint8 and p["image"].ndim == 3 and p["image"].shape[-1] in (1, 3)
        assert p["caption"] and p["source"] == "synthmed" and p["license"] == "CC0-1.0"
        assert p["modality"] == MODALITY[task_name]


def test_captioned_pairs_reject_tasks_without_captions():
    from dataclasses import replace

    from medcl.data.task import Split

    task = build(num_tasks=1)[0]
    bare = replace(task, splits={s: Split(p.images, p.labels) for s, p in task.splits.items()})
    with pytest.raises(ValueError, match="no captions"):
        list(captioned_pairs([bare]))


# -- learnability and domain shift, without torch -----------------------------------------------


def _spectrum(images: np.ndarray) -> np.ndarray:
    """Translation-invariant features: log magnitude spectrum of the grey image (lesions lie anywhere)."""
    grey = images.astype(np.float32).mean(-1) / 255.0
    grey -= grey.mean(axis=(1, 2), keepdims=True)
    return np.log1p(np.abs(np.fft.rfft2(grey))).reshape(len(images), -1)


def _nearest_class_mean_accuracy(train, test) -> float:
    feats, labels = _spectrum(train.images), train.labels
    means = np.stack([feats[labels == c].mean(0) for c in range(labels.max() + 1)])
    pred = np.argmin(((_spectrum(test.images)[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    return float((pred == test.labels).mean())


@pytest.fixture(scope="module")
def shift_tasks():
    options = dict(train_per_class=40, val_per_class=1, test_per_class=30)
    tasks = SynthMed().build(SynthMed.Options(num_tasks=6, **options), 0)
    sites = SynthMed().build(SynthMed.Options(domains=["xray"], tasks_per_domain=2, **options), 0)
    return {t.name: t for t in tasks + sites}


@pytest.mark.parametrize("source, others", [("xray", ("ct", "ultrasound")), ("histology", ("dermoscopy", "fundus"))])
def test_classes_are_learnable_in_domain_and_shift_across_domains(shift_tasks, source, others):
    train = shift_tasks[source].split("train")
    own = _nearest_class_mean_accuracy(train, shift_tasks[source].split("test"))
    assert own >= 0.6, f"{source}: in-domain accuracy {own:.2f} (chance 0.2)"
    for other in others:
        cross = _nearest_class_mean_accuracy(train, shift_tasks[other].split("test"))
        assert cross <= own - 0.3, f"{source} -> {other}: {cross:.2f} vs in-domain {own:.2f}"


def test_a_second_site_shifts_less_than_another_domain(shift_tasks):
    train = shift_tasks["xray-1"].split("train")
    same_site = _nearest_class_mean_accuracy(train, shift_tasks["xray-1"].split("test"))
    other_site = _nearest_class_mean_accuracy(train, shift_tasks["xray-2"].split("test"))
    other_domain = _nearest_class_mean_accuracy(train, shift_tasks["ct"].split("test"))
    assert same_site >= other_site > other_domain + 0.1
