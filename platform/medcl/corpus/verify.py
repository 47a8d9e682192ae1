"""Checking a staged corpus, embedding or index output against its manifest before it is published
(:func:`medcl.publish.publishing` calls the ``verify`` a build passes it)."""
from __future__ import annotations

from medcl.corpus.schema import verify_listed_files


def verify_listing(stage, listed: dict[str, str], manifest: str, *, use_ray: bool = False) -> None:
    """Check every file of ``listed`` (name -> sha256) under ``stage``: in parallel Ray tasks when
    ``use_ray`` (the corpus checks of :mod:`medcl.corpus.embed_ray`), else here.
    CorruptArtifactError names the first bad file."""
    if use_ray:
        from medcl.corpus.embed_ray import raise_if_corrupt, start_corpus_check  # Ray only when asked

        raise_if_corrupt(start_corpus_check(stage, listed, manifest))
        return
    verify_listed_files(stage, listed, manifest)
