"""PRIMED's built-in corpus holds out the sequence's own synthmed domains and equals ZSCL's reference set."""
from __future__ import annotations

import pytest

from medcl.data.reference import ReferenceConfig
from medcl.data.synthmed import SynthMed
from medcl.primed.builtin import builtin_domains, synthmed_rows


@pytest.fixture(scope="module")
def sequence():
    return SynthMed().build({"domains": ["xray", "ultrasound", "fundus"], "train_per_class": 2, "val_per_class": 1,
                             "test_per_class": 1}, 0)


def test_the_builtin_corpus_leaves_out_every_domain_of_the_sequence(sequence):
    held_out = builtin_domains(None, sequence)
    assert held_out == ["histology", "ct", "dermoscopy"]
    rows = synthmed_rows(per_class=2, seed=1, domains=held_out)
    task_modalities = {t.modality for t in sequence}
    assert rows and not {r["modality"] for r in rows} & task_modalities
    assert builtin_domains(["ct"], sequence) == ["ct"]  # an explicit choice wins


def test_a_sequence_using_every_domain_needs_an_explicit_choice():
    every = SynthMed().build({"train_per_class": 1, "val_per_class": 1, "test_per_class": 1, "num_tasks": 6}, 0)
    with pytest.raises(ValueError, match="builtin_domains"):
        builtin_domains(None, every)


def test_primed_and_zscl_distil_on_identical_pairs_by_default(sequence):
    held_out = builtin_domains(None, sequence)
    primed = synthmed_rows(per_class=20, seed=1, domains=held_out)
    zscl = ReferenceConfig(name="synthmed", seed=1, domains=held_out, per_class=20).load()
    assert len(primed) == len(zscl) == 300
    assert [r["caption"] for r in primed] == list(zscl.captions)
