"""One separate LoRA adapter per task (docs/methods.md#4-mslora-cr, the "separate LoRA per task" baseline).

    L = L_task;  training task t: only adapter t active and trainable;
    evaluating task k: only adapter k (the base model while task k is not trained yet).

Nothing is forgotten (BWT = 0 by construction) and nothing is shared between tasks; like
``specialist`` but each task stores rank-r factors instead of a whole model.
"""
from medcl.strategies.base import register_strategy
from medcl.strategies.lora_pool import LoraPoolStrategy


@register_strategy("lora_separate")
class LoraSeparate(LoraPoolStrategy):
    description = "frozen model + one LoRA per task, only its own adapter active in training and evaluation"
    separate = True
