"""MedPix captions with metadata (``caption_metadata: true``): "CT, axial, head: <caption>"."""
from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from medcl.corpus.build import build_corpus
from medcl.corpus.sources.medpix import metadata_caption
from medcl.corpus.spec import CorpusSpecError, validate_spec
from medcl.corpus.store import CorpusStore


def _record(image, caption, **fields):
    return {"image": image, "Type": fields.get("Type"), "Location Category": fields.get("category"),
            "Description": {"Caption": caption, "Plane": fields.get("plane"), "Modality": "CT - noncontrast"}}


def test_metadata_come_first_lower_cased_and_missing_ones_are_left_out():
    full = _record("a", " Large left frontal mass. ", Type="CT", plane="Axial", category="Head")
    assert metadata_caption(full, full["Description"]["Caption"]) == "CT, axial, head: Large left frontal mass."
    partial = _record("b", "Mass.", Type="MR", plane="  ", category="Spine and Muscles")
    assert metadata_caption(partial, "Mass.") == "MR, spine and muscles: Mass."
    assert metadata_caption({"image": "c"}, "Mass.") == "Mass."


def _medpix_folder(root):
    (root / "images").mkdir(parents=True)
    records = [_record("p1", "CT of the chest shows a mass.", Type="CT", plane="Axial", category="Thorax"),
               _record("p2", "Sagittal T1 of the spine.", Type="MR", plane="Sagittal", category="Spine and Muscles")]
    for record in records:
        buffer = io.BytesIO()
        Image.new("L", (12, 12), 128).save(buffer, format="PNG")
        (root / "images" / f"{record['image']}.png").write_bytes(buffer.getvalue())
    (root / "Descriptions.json").write_text(json.dumps(records))
    return root


@pytest.mark.parametrize("metadata, expected", [
    (True, {"medpix:p1": "CT, axial, thorax: CT of the chest shows a mass.",
            "medpix:p2": "MR, sagittal, spine and muscles: Sagittal T1 of the spine."}),
    (False, {"medpix:p1": "CT of the chest shows a mass.", "medpix:p2": "Sagittal T1 of the spine."}),
])
def test_the_source_option_switches_the_corpus_captions(tmp_path, metadata, expected):
    root = _medpix_folder(tmp_path / "MedPix-2-0")
    spec = validate_spec({"sources": [{"type": "medpix", "path": str(root), "caption_metadata": metadata}]})
    build_corpus(spec, tmp_path / "corpus", use_ray=False)
    rows = CorpusStore(tmp_path / "corpus").read_all(["id", "caption"]).to_pylist()
    assert {row["id"]: row["caption"] for row in rows} == expected


def test_a_wrong_option_names_the_field():
    with pytest.raises(CorpusSpecError) as info:
        validate_spec({"sources": [{"type": "medpix", "path": "x", "caption_metadata": "maybe"}]})
    assert any("caption_metadata" in field for field, _ in info.value.problems)
