"""Incremental LoRA: MSLoRA-CR's pool without its regularisers (alpha = beta = 0;
docs/methods.md#4-mslora-cr, the "unconstrained incremental LoRA fine-tuning" baseline).

    L = L_task;  training task t: adapters 1..t active (summed), only adapter t trainable;
    evaluating task k: adapters 1..k active.
"""
from medcl.strategies.base import register_strategy
from medcl.strategies.lora_pool import LoraPoolStrategy


@register_strategy("lora_incremental")
class LoraIncremental(LoraPoolStrategy):
    description = "frozen model + one LoRA per task, adapters 1..t active (MSLoRA-CR with alpha = beta = 0)"
