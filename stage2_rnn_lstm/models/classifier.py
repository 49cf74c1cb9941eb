"""An LSTM text classifier (IMDb, AG News): ``forward(x, labels=None) -> (logits, loss)``.

word ids (B, T), padded with ``pad_id`` at the end -> embedding -> dropout -> (bi)LSTM that reads only the real
tokens of every text -> one vector per text (``pool``) -> dropout -> linear -> class logits (B, K).

Padding must change nothing: a review of 80 words gives the same logits alone or in a batch padded to 400.
* ``impl="torch"``: ``nn.LSTM`` on a *packed* sequence (``pack_padded_sequence``): the kernel runs each text
  for its own length, so the forward state never sees a pad and the backward direction starts at the last
  real word, not at the padding.
* ``impl="scratch"``: :class:`MaskedLSTMScratch`, the stage's own ``LSTMCellScratch`` stepped over time with a
  mask: past a text's end its (h, c) are carried unchanged; the backward direction reads every text reversed
  *within its length*. Same parameters (names and shapes) as ``nn.LSTM``: :func:`copy_torch_lstm_to_scratch`.

``pool``: ``last`` = the final states (forward: after the last real word; backward: after the first word),
``mean`` = the average of the outputs over the real words, ``max`` = their element-wise maximum.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from scripts.cli import UserError
from stage2_rnn_lstm.models.rnn_scratch import LSTMCellScratch

POOLS = ("last", "mean", "max")
IMPLS = ("scratch", "torch")


@dataclass
class ClassifierConfig:
    """Everything needed to rebuild the model; saved in every checkpoint."""

    vocab_size: int = field(default=30000, metadata={"help": "word vocabulary size (set from the data)"})
    n_classes: int = field(default=2, metadata={"help": "number of labels"})
    emb_dim: int = field(default=128, metadata={"help": "embedding size"})
    hidden_size: int = field(default=128, metadata={"help": "LSTM units per direction"})
    num_layers: int = field(default=1, metadata={"help": "stacked LSTM layers"})
    bidirectional: bool = field(default=True, metadata={"help": "a second LSTM reads every text backwards"})
    pool: str = field(default="max", metadata={"choices": list(POOLS), "help": "how the states become one vector"})
    dropout: float = field(default=0.3, metadata={"help": "dropout on embeddings, between layers, before the head"})
    impl: str = field(default="torch", metadata={"choices": list(IMPLS),
                                                 "help": "scratch = our masked LSTM cells; torch = nn.LSTM (packed)"})
    pad_id: int = field(default=0, metadata={"help": "id of <pad>"})

    def __post_init__(self):
        for name in ("vocab_size", "emb_dim", "hidden_size", "num_layers"):
            if getattr(self, name) < 1:
                raise UserError(f"impossible model config: {name} must be >= 1, got {getattr(self, name)}")
        if self.n_classes < 2:
            raise UserError(f"impossible model config: n_classes must be >= 2, got {self.n_classes}")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"impossible model config: dropout must be in [0, 1), got {self.dropout}")
        if self.pool not in POOLS:
            raise UserError(f"impossible model config: pool must be one of {', '.join(POOLS)}, got {self.pool!r}")
        if self.impl not in IMPLS:
            raise UserError(f"impossible model config: impl must be one of {', '.join(IMPLS)}, got {self.impl!r}")
        if not 0 <= self.pad_id < self.vocab_size:
            raise UserError(f"impossible model config: pad_id {self.pad_id} outside the vocabulary")


def reverse_within_length(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, T, ...) with each row's first ``lengths[b]`` entries reversed, the padding left in place.

    Its own inverse. ``[a, b, c, pad, pad]`` -> ``[c, b, a, pad, pad]``: the backward LSTM starts at the
    last real word."""
    B, T = x.shape[:2]
    t = torch.arange(T, device=x.device).expand(B, T)
    idx = torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)  # (B, T)
    return x.gather(1, idx.view(B, T, *([1] * (x.dim() - 2))).expand_as(x))


class MaskedLSTMScratch(nn.Module):
    """A (bi)LSTM stack from :class:`LSTMCellScratch` over padded batches; the same call as a packed ``nn.LSTM``.

    ``forward(x, lengths) -> (out, h_n)``: x (B, T, I); lengths (B,) real tokens per row (>= 1);
    out (B, T, D*H), zero at padded positions (what ``pad_packed_sequence`` gives); h_n (L*D, B, H), each
    direction's state after its last real step, ordered like ``nn.LSTM``'s (layer 0 forward, layer 0
    backward, layer 1 forward, ...). Dropout between layers, like ``nn.LSTM(dropout=p)``.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bidirectional: bool = False,
                 dropout: float = 0.0):
        super().__init__()
        self.hidden_size, self.num_layers = hidden_size, num_layers
        self.num_directions = 2 if bidirectional else 1
        D = self.num_directions
        self.cells = nn.ModuleList(LSTMCellScratch(input_size if k == 0 else D * hidden_size, hidden_size)
                                   for k in range(num_layers) for _ in range(D))  # index k * D + d
        self.dropout = nn.Dropout(dropout)

    @staticmethod
    def run_direction(cell: LSTMCellScratch, x: torch.Tensor, mask: torch.Tensor):
        """One direction over (B, T, I) with a (B, T) mask of real steps -> (out (B, T, H), h after the last real
        step (B, H)). A masked step keeps (h, c): padding never enters the state."""
        B, T, _ = x.shape
        h, c = cell.init_state(B, x)
        gx = cell.input_projection(x)                       # (B, T, 4H): one matmul for every t
        outs = []
        for t in range(T):
            h_new, c_new = cell.step(gx[:, t], (h, c))
            m = mask[:, t, None]                            # (B, 1)
            h, c = torch.where(m, h_new, h), torch.where(m, c_new, c)
            outs.append(h_new * m)                          # zero output at padding
        return torch.stack(outs, dim=1), h

    def forward(self, x: torch.Tensor, lengths: torch.Tensor):
        B, T, _ = x.shape
        mask = torch.arange(T, device=x.device)[None, :] < lengths[:, None]  # (B, T)
        finals = []
        for k in range(self.num_layers):
            outs = []
            for d in range(self.num_directions):
                cell = self.cells[k * self.num_directions + d]
                if d == 0:
                    out, h = self.run_direction(cell, x, mask)
                else:  # read each text reversed within its length, then put the outputs back in order
                    out, h = self.run_direction(cell, reverse_within_length(x, lengths), mask)
                    out = reverse_within_length(out, lengths)
                outs.append(out)
                finals.append(h)
            x = torch.cat(outs, dim=-1)                     # (B, T, D*H)
            if k < self.num_layers - 1:
                x = self.dropout(x)
        return x, torch.stack(finals)                       # (B, T, D*H), (L*D, B, H)


class LSTMClassifier(nn.Module):
    def __init__(self, cfg: ClassifierConfig):
        super().__init__()
        self.cfg = cfg
        between = cfg.dropout if cfg.num_layers > 1 else 0.0
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.emb_dim, padding_idx=cfg.pad_id)
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        with torch.no_grad():
            self.embedding.weight[cfg.pad_id].zero_()
        if cfg.impl == "torch":
            self.lstm = nn.LSTM(cfg.emb_dim, cfg.hidden_size, cfg.num_layers, batch_first=True,
                                bidirectional=cfg.bidirectional, dropout=between)
        else:
            self.lstm = MaskedLSTMScratch(cfg.emb_dim, cfg.hidden_size, cfg.num_layers, cfg.bidirectional, between)
        self.drop = nn.Dropout(cfg.dropout)
        D = 2 if cfg.bidirectional else 1
        self.head = nn.Linear(D * cfg.hidden_size, cfg.n_classes)

    def encode(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(outputs (B, T, D*H) zero at padding, top layer's final states (B, D*H)) of the real tokens."""
        B, T = x.shape
        emb = self.drop(self.embedding(x))                  # (B, T, E)
        if self.cfg.impl == "torch":
            packed = pack_padded_sequence(emb, lengths.cpu(), batch_first=True, enforce_sorted=False)
            out, (h_n, _) = self.lstm(packed)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)
        else:
            out, h_n = self.lstm(emb, lengths)
        D = 2 if self.cfg.bidirectional else 1
        last = h_n[-D:].transpose(0, 1).reshape(B, -1)     # top layer: [forward, backward]
        return out, last

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None):
        """x: (B, T) word ids, ``pad_id`` only after each text's last word (every row holds >= 1 real word)."""
        keep = x != self.cfg.pad_id                         # (B, T)
        lengths = keep.sum(1)
        if bool((lengths == 0).any()):
            raise ValueError("every text needs at least one token (an empty text is encoded as one <unk>)")
        out, last = self.encode(x, lengths)
        if self.cfg.pool == "last":
            z = last
        elif self.cfg.pool == "mean":
            z = out.sum(1) / lengths[:, None].to(out.dtype)  # padded outputs are zero
        else:
            z = out.masked_fill(~keep[:, :, None], float("-inf")).amax(1)
        logits = self.head(self.drop(z))                    # (B, K)
        loss = None if labels is None else F.cross_entropy(logits, labels)
        return logits, loss

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


@torch.no_grad()
def copy_torch_lstm_to_scratch(torch_lstm: nn.LSTM, scratch: MaskedLSTMScratch) -> None:
    """Copy ``nn.LSTM`` weights (``weight_ih_l{k}[_reverse]`` ...) into a :class:`MaskedLSTMScratch`."""
    D = scratch.num_directions
    for k in range(scratch.num_layers):
        for d in range(D):
            cell = scratch.cells[k * D + d]
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(cell, name).copy_(getattr(torch_lstm, f"{name}_l{k}" + ("_reverse" if d else "")))
