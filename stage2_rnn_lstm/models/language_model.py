"""A recurrent language model: embedding -> RNN/LSTM/GRU stack -> softmax over the vocabulary.

One class for every variant (docs/stage2_rnn_lstm.md, section 6): ``model_type`` picks the cell,
``impl`` picks our cells from :mod:`stage2_rnn_lstm.models.rnn_scratch` or PyTorch's
``nn.RNN``/``nn.LSTM``/``nn.GRU`` (cuDNN-style fused kernels). Both take and return the same
tensors, so training, evaluation and generation are written once.

Model contract (makemore-style, plus the recurrent state that truncated BPTT carries)::

    logits, loss, state = model(idx, targets=None, state=None)
    # idx, targets: (B, T) token ids; logits: (B, T, V); loss: mean cross-entropy in nats/token

Options: weight tying (Press & Wolf 2017; Inan et al. 2017) shares the embedding matrix with the
output layer (needs ``emb_dim == hidden_size``); an adaptive softmax (Grave et al. 2017,
``nn.AdaptiveLogSoftmaxWithLoss``) makes a 33k-word output layer cheap on CPU; with both, the
input embeddings become adaptive too and share the softmax's weights
(:mod:`stage2_rnn_lstm.models.adaptive`). With an adaptive softmax and ``targets`` given,
``logits`` is ``None`` (only the loss is computed); without targets it holds log-probabilities.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from stage2_rnn_lstm.models.adaptive import TiedAdaptiveEmbedding
from stage2_rnn_lstm.models.rnn_scratch import RecurrentScratch

TORCH_RNNS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


@dataclass
class LMConfig:
    """Everything needed to rebuild the model; saved in every checkpoint."""

    model_type: str = field(default="lstm", metadata={"help": "recurrent cell", "choices": ["rnn", "lstm", "gru"]})
    impl: str = field(default="torch", metadata={"help": "scratch = our cells; torch = nn.RNN/LSTM/GRU",
                                                  "choices": ["scratch", "torch"]})
    vocab_size: int = field(default=65, metadata={"help": "set from the data; not a flag to tune"})
    emb_dim: int = field(default=128, metadata={"help": "embedding size"})
    hidden_size: int = field(default=512, metadata={"help": "hidden units per recurrent layer"})
    num_layers: int = field(default=2, metadata={"help": "stacked recurrent layers"})
    dropout: float = field(default=0.2, metadata={"help": "dropout on embeddings, between layers and before the output"})
    tie_weights: bool = field(default=False, metadata={"help": "share embedding and output weights (emb_dim must equal hidden_size)"})
    adaptive_cutoffs: tuple[int, ...] = field(default=(), metadata={
        "help": "adaptive softmax with these cutoffs (e.g. 2000 10000), for big vocabularies; with --tie_weights the "
                "input embeddings are adaptive too and share its weights"})
    adaptive_div: float = field(default=4.0, metadata={
        "help": "adaptive softmax: each cluster after the first has div times fewer dimensions than the one before"})


class RNNLanguageModel(nn.Module):
    def __init__(self, config: LMConfig):
        super().__init__()
        if config.tie_weights and config.emb_dim != config.hidden_size:
            raise ValueError(f"--tie_weights needs emb_dim == hidden_size (got {config.emb_dim} and {config.hidden_size})")
        if config.adaptive_cutoffs and not (0 < min(config.adaptive_cutoffs) and max(config.adaptive_cutoffs) < config.vocab_size):
            raise ValueError(f"--adaptive_cutoffs must lie between 0 and the vocabulary size {config.vocab_size}")
        self.config = config
        if config.adaptive_cutoffs and config.tie_weights:  # one module embeds the input and scores the output
            self.embedding = TiedAdaptiveEmbedding(config.vocab_size, config.emb_dim, config.adaptive_cutoffs,
                                                   config.adaptive_div)
        else:
            self.embedding = nn.Embedding(config.vocab_size, config.emb_dim)
        self.drop = nn.Dropout(config.dropout)
        between = config.dropout if config.num_layers > 1 else 0.0
        if config.impl == "torch":
            self.rnn = TORCH_RNNS[config.model_type](config.emb_dim, config.hidden_size, config.num_layers,
                                                     batch_first=True, dropout=between)
        else:
            self.rnn = RecurrentScratch(config.model_type, config.emb_dim, config.hidden_size, config.num_layers, between)
        self.head = self.adaptive = None
        if config.adaptive_cutoffs and not config.tie_weights:
            self.adaptive = nn.AdaptiveLogSoftmaxWithLoss(config.hidden_size, config.vocab_size,
                                                          list(config.adaptive_cutoffs), div_value=config.adaptive_div)
        elif not config.adaptive_cutoffs:
            self.head = nn.Linear(config.hidden_size, config.vocab_size)
            if config.tie_weights:
                self.head.weight = self.embedding.weight
        if isinstance(self.embedding, nn.Embedding):
            nn.init.uniform_(self.embedding.weight, -0.1, 0.1)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, state=None):
        x = self.drop(self.embedding(idx))           # (B, T, E)
        return self.forward_embeddings(x, targets, state)

    def forward_embeddings(self, x: torch.Tensor, targets: torch.Tensor | None = None, state=None):
        """The model from embedded inputs x: (B, T, E) on; the notebook takes gradients w.r.t. x."""
        out, state = self.rnn(x, state)              # (B, T, H), state: (L, B, H) or a pair of them
        out = self.drop(out)
        B, T, H = out.shape
        if self.head is None:  # adaptive softmax, tied (our module) or not (nn.AdaptiveLogSoftmaxWithLoss)
            flat = out.reshape(B * T, H)
            if targets is not None:
                if self.adaptive is not None:
                    return None, self.adaptive(flat, targets.reshape(B * T)).loss, state
                return None, self.embedding.loss(flat, targets.reshape(B * T)), state
            scorer = self.adaptive if self.adaptive is not None else self.embedding
            return scorer.log_prob(flat).view(B, T, -1), None, state
        logits = self.head(out)                      # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(B * T, -1), targets.reshape(B * T))
        return logits, loss, state

    @staticmethod
    def detach_state(state):
        """Cut the graph between BPTT segments while keeping the values (truncated BPTT)."""
        if state is None:
            return None
        if isinstance(state, tuple):
            return tuple(s.detach() for s in state)
        return state.detach()

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


@torch.no_grad()
def copy_torch_to_scratch(torch_rnn: nn.Module, scratch: RecurrentScratch) -> None:
    """Copy ``nn.RNN/LSTM/GRU`` weights (``weight_ih_l{k}`` ...) into a :class:`RecurrentScratch`."""
    for k, cell in enumerate(scratch.layers):
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, name).copy_(getattr(torch_rnn, f"{name}_l{k}"))
