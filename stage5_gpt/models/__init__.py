"""Stage 5 models: GPT (Radford et al. 2019) written by hand, and its conversion to/from Hugging Face GPT-2.

Read in this order: gpt.py (config and presets, RMSNorm, dropout, rotary embeddings, causal self-attention,
MLP / SwiGLU, pre-LN block, the model, the key/value cache, sampling) -> convert.py (our weights <->
``GPT2LMHeadModel``).
"""
from stage5_gpt.models.gpt import (
    GPT,
    MLP,
    PRESETS,
    Block,
    CausalSelfAttention,
    Dropout,
    GPTConfig,
    KVCache,
    RMSNorm,
    apply_repetition_penalty,
    apply_rope,
    check_sampling,
    fast_keep_mask,
    preset_config,
    rope_tables,
    sample_next,
    swiglu_hidden,
)

__all__ = ["GPT", "MLP", "PRESETS", "Block", "CausalSelfAttention", "Dropout", "GPTConfig", "KVCache", "RMSNorm",
           "apply_repetition_penalty", "apply_rope", "check_sampling", "fast_keep_mask", "preset_config",
           "rope_tables", "sample_next", "swiglu_hidden"]
