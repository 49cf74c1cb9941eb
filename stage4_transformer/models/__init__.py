"""Stage 4 models: the Transformer of "Attention Is All You Need" (Vaswani et al. 2017), written by hand.

Read in this order: attention.py (eq. 1, multi-head attention, masks) -> layers.py (LayerNorm, positional
encodings, FFN eq. 2, residual sub-layers, encoder/decoder layers) -> transformer.py (config, stacks, the
encoder-decoder, incremental decoding, greedy/beam search) -> classifier.py (encoder-only classifier) ->
convert.py (copy weights to/from PyTorch's nn.Transformer modules).
"""
from stage4_transformer.models.attention import (
    MultiHeadAttention,
    causal_mask,
    padding_mask,
    scaled_dot_product_attention,
)
from stage4_transformer.models.classifier import ClassifierConfig, TransformerClassifier
from stage4_transformer.models.convert import copy_weights, to_scratch_names, to_torch_names
from stage4_transformer.models.layers import (
    DecoderLayer,
    EmptyInput,
    EncoderLayer,
    LayerNorm,
    LearnedPositionalEncoding,
    PositionwiseFeedForward,
    Residual,
    SequenceTooLong,
    SinusoidalPositionalEncoding,
    sinusoid_table,
)
from stage4_transformer.models.transformer import Decoder, Encoder, Transformer, TransformerConfig

__all__ = ["MultiHeadAttention", "causal_mask", "padding_mask", "scaled_dot_product_attention", "ClassifierConfig",
           "TransformerClassifier", "copy_weights", "to_scratch_names", "to_torch_names", "DecoderLayer",
           "EmptyInput", "EncoderLayer", "LayerNorm", "LearnedPositionalEncoding", "PositionwiseFeedForward",
           "Residual", "SequenceTooLong", "SinusoidalPositionalEncoding", "sinusoid_table", "Decoder", "Encoder",
           "Transformer", "TransformerConfig"]
