"""A recurrent language model: embedding -> RNN/LSTM/GRU stack -> softmax over the vocabulary.

One class for every variant (docs/stage2_rnn_lstm.md, section 6): ``model_type`` picks the cell,
``impl`` picks our cells from :mod:`stage2_rnn_lstm.models.rnn_scratch` or PyTorch's
``nn.RNN``/``nn.LSTM``/``nn.GRU`` (cuDNN-style fused kernels). Both take and return the same
tensors, so training, evaluation and generation are written once.

Model contract (makemore-style, plus the recurrent state that truncated BPTT carries)::

    out = model(idx, targets=None, state=None)     # always an LMOutput, whatever the flags
    out.logits   # (B, T, V) next-token scores (log_softmax gives the distribution)
    out.loss     # mean cross-entropy in nats/token; None when no targets were given
    out.state    # the recurrent state to carry into the next segment (truncated BPTT)

Options: weight tying (Press & Wolf 2017; Inan et al. 2017) shares the embedding matrix with the
output layer (needs ``emb_dim == hidden_size``); an adaptive softmax (Grave et al. 2017,
``nn.AdaptiveLogSoftmaxWithLoss``) makes a 33k-word output layer cheap on CPU; with both, the
input embeddings become adaptive too and share the softmax's weights
(:mod:`stage2_rnn_lstm.models.adaptive`). An adaptive softmax computes the loss without scoring
the whole vocabulary; its ``out.logits`` are log-probabilities, computed only when first read.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

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
    dropout: float = field(default=0.2, metadata={
        "help": "dropout on embeddings, between layers and before the output"})
    tie_weights: bool = field(default=False, metadata={
        "help": "share embedding and output weights (emb_dim must equal hidden_size)"})
    adaptive_cutoffs: tuple[int, ...] = field(default=(), metadata={
        "help": "adaptive softmax with these cutoffs (e.g. 2000 10000), for big vocabularies; with --tie_weights the "
                "input embeddings are adaptive too and share its weights"})
    adaptive_div: float = field(default=4.0, metadata={
        "help": "adaptive softmax: each cluster after the first has div times fewer dimensions than the one before"})


@dataclass
class LMOutput:
    """What :meth:`RNNLanguageModel.forward` returns, for every output layer.

    ``logits`` are computed on first access from ``hidden``: the adaptive softmax's training loss
    never needs the (B, T, V) scores, so a training step does not pay for them.
    """

    loss: torch.Tensor | None          # mean cross-entropy (nats/token); None without targets
    state: object                      # (L, B, H), or an (h, c) pair for the LSTM
    hidden: torch.Tensor               # (B, T, H): the top layer's outputs after dropout
    score: Callable[[torch.Tensor], torch.Tensor] = field(repr=False)  # hidden -> (B, T, V) logits
    _logits: torch.Tensor | None = field(default=None, repr=False)

    @property
    def logits(self) -> torch.Tensor:
        if self._logits is None:
            self._logits = self.score(self.hidden)
        return self._logits


class RNNLanguageModel(nn.Module):
    def __init__(self, config: LMConfig):
        super().__init__()
        if config.tie_weights and config.emb_dim != config.hidden_size:
            raise ValueError(f"--tie_weights needs emb_dim == hidden_size "
                             f"(got {config.emb_dim} and {config.hidden_size})")
        cutoffs = config.adaptive_cutoffs
        if cutoffs and not (0 < min(cutoffs) and max(cutoffs) < config.vocab_size):
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
            self.rnn = RecurrentScratch(config.model_type, config.emb_dim, config.hidden_size, config.num_layers,
                                        between)
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

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, state=None) -> LMOutput:
        x = self.drop(self.embedding(idx))           # (B, T, E)
        return self.forward_embeddings(x, targets, state)

    def forward_embeddings(self, x: torch.Tensor, targets: torch.Tensor | None = None, state=None) -> LMOutput:
        """The model from embedded inputs x: (B, T, E) on; the notebook takes gradients w.r.t. x."""
        out, state = self.rnn(x, state)              # (B, T, H), state: (L, B, H) or a pair of them
        out = self.drop(out)
        B, T, H = out.shape
        if self.head is not None:
            logits = self.head(out)                  # (B, T, V)
            loss = None if targets is None else F.cross_entropy(logits.reshape(B * T, -1), targets.reshape(B * T))
            return LMOutput(loss, state, out, self.head, logits)
        # adaptive softmax, tied (our module) or not (nn.AdaptiveLogSoftmaxWithLoss): the loss without full scores
        loss = None
        if targets is not None:
            flat, flat_targets = out.reshape(B * T, H), targets.reshape(B * T)
            if self.adaptive is not None:
                loss = self.adaptive(flat, flat_targets).loss
            else:
                loss = self.embedding.loss(flat, flat_targets)
        return LMOutput(loss, state, out, self._adaptive_log_probs)

    def _adaptive_log_probs(self, out: torch.Tensor) -> torch.Tensor:
        """(B, T, H) -> (B, T, V) log-probabilities of every word under the adaptive softmax."""
        B, T, H = out.shape
        scorer = self.adaptive if self.adaptive is not None else self.embedding
        return scorer.log_prob(out.reshape(B * T, H)).view(B, T, -1)

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
