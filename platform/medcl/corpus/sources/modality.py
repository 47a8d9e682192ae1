"""Free-text modality descriptions to short names: ct, mr, xray, ultrasound, pet, ...

``normalise_modality("MR - T1W w/Gadolinium") == "mr"``; ``caption_modality(caption, default)``
guesses from caption keywords. A rule matches when the lower-cased text has one of its whole
``words``, a word starting with one of its ``stems``, or one of its ``phrases`` as a substring; the
first matching rule in RULES order wins (so "CT angiography" is ct), else ``default``. Word sets
and ``str.startswith`` keep this at a few microseconds per caption (a regex alternation over the
same keywords cost ~0.6 ms per ROCO caption).
"""
from __future__ import annotations

import re

RULES: list[tuple[str, frozenset, tuple, tuple]] = [
    ("ct", frozenset({"ct", "cta", "hrct", "cbct", "mdct"}), (), ("computed tomograph", "cat scan", "virtual colonoscopy")),
    ("mr", frozenset({"mr", "mri", "mra", "mrs", "mrv", "flair", "dwi", "t1w", "t2w", "swi"}), (),
     ("magnetic resonance", "t1-weighted", "t2-weighted", "t1 weighted", "t2 weighted")),
    ("pet", frozenset({"pet", "spect"}), ("scintigra",), ("positron emission",)),
    ("ultrasound", frozenset({"eus"}), ("ultraso", "sonograph", "sonogra", "echocardiogra", "doppler"), ()),
    ("xray", frozenset({"xray", "cxr"}), ("radiograph", "mammogra", "fluorosc"), ("x-ray", "x ray")),
    ("angiography", frozenset(), ("angiogra",), ()),
    ("pathology", frozenset({"h&e"}), ("histolog", "histopatholog", "hematoxylin", "stain", "micrograph", "microscop",
                                      "biops"), ()),
    ("endoscopy", frozenset(), ("endoscop", "colonoscop", "bronchoscop", "laparoscop", "gastroscop"), ()),
    ("fundus", frozenset({"fundus", "oct"}), ("fundoscop",), ("retinal photo", "optical coherence")),
    ("dermatology", frozenset(), ("dermoscop", "dermatoscop"), ("skin lesion",)),
    ("illustration", frozenset(), ("drawing", "diagram", "schematic", "illustration"), ()),
]
_WORD = re.compile(r"[a-z0-9&]+")
GUESS = "?"  # raw-record modality "?<fallback>": guess from the caption in the normaliser


def normalise_modality(text: str | None, default: str = "unknown") -> str:
    """The first rule of RULES matching ``text``, else ``default``."""
    if not text:
        return default
    lowered = text.lower()
    words = set(_WORD.findall(lowered))
    for name, whole, stems, phrases in RULES:
        if (words & whole or (stems and any(w.startswith(stems) for w in words))
                or any(p in lowered for p in phrases)):
            return name
    return default


caption_modality = normalise_modality
