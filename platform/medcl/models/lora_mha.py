"""peft's MultiheadAttention LoRA layer with an exact forward (medcl.models.lora's module docstring);
its own module because it subclasses a peft class, and peft is imported only where LoRA is used."""
from __future__ import annotations

import torch.nn.functional as F
from peft.tuners.lora.layer import MultiheadAttention as PeftLoraMHA


class ExactLoraMHA(PeftLoraMHA):
    """peft's MultiheadAttention LoRA with a forward that never writes the frozen weights:
    attention with in_proj = W_in + sum_k dW_in,k and out_proj = W_out + sum_k dW_out,k."""

    def forward(self, query, key=None, value=None, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        base = self.get_base_layer()
        key = query if key is None else key
        value = key if value is None else value
        active = [a for a in self.active_adapters if a in self.lora_A]
        if self.disable_adapters or self.merged or not active:
            return base(query, key, value, key_padding_mask=key_padding_mask, need_weights=need_weights,
                        attn_mask=attn_mask, average_attn_weights=average_attn_weights, is_causal=is_causal)
        out_lora = base.out_proj
        w_in = base.in_proj_weight + sum(self.get_delta_weight(a) for a in active)
        w_out = out_lora.get_base_layer().weight + sum(out_lora.get_delta_weight(a) for a in active)
        if base.batch_first:
            query, key, value = (x.transpose(0, 1) for x in (query, key, value))
        out, weights = F.multi_head_attention_forward(
            query, key, value, base.embed_dim, base.num_heads, w_in, base.in_proj_bias, base.bias_k, base.bias_v,
            base.add_zero_attn, base.dropout, w_out, out_lora.get_base_layer().bias, training=self.training,
            key_padding_mask=key_padding_mask, need_weights=need_weights, attn_mask=attn_mask,
            average_attn_weights=average_attn_weights, is_causal=is_causal)
        return (out.transpose(0, 1) if base.batch_first else out), weights
