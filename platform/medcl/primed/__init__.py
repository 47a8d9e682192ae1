"""PRIMED (docs/methods.md#5-primed): retrieval-guided continual learning, one module per job.

    questions.py   question pool M0 (domain -> site -> disease; default_questions.yaml) and M^i
    siphon.py      dynamic siphon: M_task / M_domain / M_gen queries with a / b / c pairs each
    select.py      per-query stages: dynamic unique-score threshold, cross-modal re-rank,
                   group by caption (k_v), BM25 gate
    scorer.py      the starting model's cross-modal score (query text vs candidate image)
    retriever.py   LocalRetriever, RetrievalService or the built-in corpus (builtin.py)
    planner.py     driver side: every task's reference set -> <run dir>/primed/*.parquet
    uniform.py     primed_uniform's same-size keyword (BM25) reference sets
    stream.py      worker side: a planned set as a sharded, deterministic pair stream
    losses.py      L_CKT, L_CMC, the dynamic Fisher guard's importance
The strategies are ``medcl.strategies.primed`` and ``primed_uniform``.
"""
