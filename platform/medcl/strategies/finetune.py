"""Continual fine-tuning: train on each task in turn with nothing to protect earlier ones.

L = CE_ls(logit_scale * f(x) . g(prompts_c) , y) with label smoothing (``train.label_smoothing``,
0.2 by default), over the current task's classes (docs/methods.md#3-baselines, "Continual FT").
The lower bound every continual method is compared against.
"""
from medcl.strategies.base import Strategy, register_strategy


@register_strategy("finetune")
class Finetune(Strategy):
    description = "sequential full fine-tuning (lower bound)"
