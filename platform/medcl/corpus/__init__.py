"""The image-caption corpus: sources to one schema, embedding on Ray Data, FAISS shards, retrieval.

    corpus records  (schema.CORPUS_SCHEMA)     id, image (encoded bytes or null), caption, source,
                                               modality, license
    embedding shards (shards.py)               id, caption, modality, source, has_image,
                                               image_embedding, text_embedding (L2-normalised)
                                               + manifest.json (model, dim, rows and sha256 per file)
"""
