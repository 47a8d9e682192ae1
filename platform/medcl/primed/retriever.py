"""How PRIMED reaches the corpus: LocalRetriever, the named RetrievalService, or the built-in corpus.

``index_dir`` set, ``service: false`` (default): ``LocalRetriever(index_dir, corpus_dir=...)`` in
this process. ``service: true``: connect to the running service ``service_name``; if none runs,
start one on ``index_dir`` for the duration of the planning and stop it afterwards. Neither set:
the built-in synthmed corpus (:mod:`medcl.primed.builtin`), embedded by the starting model.
"""
from __future__ import annotations


def open_retriever(params, scorer):
    """(retriever, close) where ``close`` is a callable to run when done, or None."""
    if not params.index_dir and not params.service:
        from medcl.primed.builtin import InMemoryRetriever, synthmed_rows

        rows = synthmed_rows(per_class=params.builtin_per_class, seed=params.builtin_seed)
        return InMemoryRetriever(rows, scorer.texts), None
    if not params.service:
        from medcl.corpus.retrieval import LocalRetriever

        return LocalRetriever(params.index_dir, corpus_dir=params.corpus_dir), None
    from medcl.corpus.service import RetrievalService

    try:
        return RetrievalService.connect(params.service_name), None
    except Exception:  # noqa: BLE001 - no such service: start one below
        if not params.index_dir:
            raise ValueError(f"strategy.service: no retrieval service named {params.service_name!r} is running "
                             "and strategy.index_dir is not set to start one") from None
    service = RetrievalService.start(params.index_dir, name=params.service_name, corpus_dir=params.corpus_dir)
    return service, service.stop
