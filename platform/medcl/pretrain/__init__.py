"""CLIP contrastive pretraining on image-caption pairs with Ray Train (``medcl pretrain``).

``config`` (the YAML file), ``data`` (synthmed or corpus pairs, sharded batches), ``loss``
(global-batch InfoNCE), ``retrieval`` (held-out recall), ``checkpoint`` (step checkpoints),
``loop`` (the Ray Train worker), ``runner`` (the driver). Import the submodules directly; this
package imports nothing heavy.
"""
