"""How PRIMED reaches the corpus: LocalRetriever, the named RetrievalService, or the built-in corpus.

``index_dir`` set, ``service: false``: ``LocalRetriever(index_dir, corpus_dir=...)`` in this
process. ``service: true``: connect to the running service ``service_name``; if none runs, start
one on ``index_dir`` for the duration of the planning and stop it afterwards (its actors declare
their memory and spread over the nodes, so the index is not loaded into the planning process).
``service: null`` (the default): the service when this process is part of a Ray cluster with more
than one alive node, in process otherwise. Neither ``index_dir`` nor ``service`` set: the built-in
synthmed corpus (:mod:`medcl.primed.builtin`), embedded by the starting model, drawn from the synthmed
domains none of the sequence's tasks uses (``builtin_domains``), so the reference data never holds the
benchmark's own task distributions.
"""
from __future__ import annotations


def use_service(params) -> bool:
    """``params.service``, or for ``None``: an index is set and Ray runs on more than one node."""
    if params.service is not None:
        return params.service
    if not params.index_dir:
        return False
    import ray

    return ray.is_initialized() and sum(1 for node in ray.nodes() if node["Alive"]) > 1


def open_retriever(params, scorer, tasks: list = ()):
    """(retriever, close) where ``close`` is a callable to run when done, or None. ``tasks``: the
    sequence, whose synthmed domains the built-in corpus leaves out."""
    via_service = use_service(params)
    if not params.index_dir and not via_service:
        from medcl.primed.builtin import InMemoryRetriever, builtin_domains, synthmed_rows

        domains = builtin_domains(params.builtin_domains, tasks)
        rows = synthmed_rows(per_class=params.builtin_per_class, seed=params.builtin_seed, domains=domains)
        return InMemoryRetriever(rows, scorer.texts), None
    if not via_service:
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
