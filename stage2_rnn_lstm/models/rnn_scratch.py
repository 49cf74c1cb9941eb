"""Recurrent cells written from their equations (docs/stage2_rnn_lstm.md, sections 2-5).

Each cell keeps its parameters under the same names and shapes as one layer of PyTorch's
``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` (``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``, gates
stacked in PyTorch's order), so a test can copy the official weights in and compare outputs and
gradients (``stage2_rnn_lstm/tests/test_models.py``).

Vectorised the way cuDNN does it: the input projection ``x_t W_ih^T + b_ih`` of *every* time
step is one matmul over the whole (B, T) block before the loop (:meth:`input_projection`), and
inside the loop one matmul ``h_{t-1} W_hh^T`` yields all gates for the whole batch at once
(:meth:`step`). Only the recurrence itself is a Python loop over time.

Equations (batch-first, x_t: (B, I), h_t: (B, H)):

- Elman RNN (Elman 1990):  h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)
- LSTM (Hochreiter & Schmidhuber 1997; forget gate: Gers et al. 2000), PyTorch gate order i, f, g, o:
    i = σ(·), f = σ(·), g = tanh(·), o = σ(·)  of  W_ih x_t + b_ih + W_hh h_{t-1} + b_hh
    c_t = f ⊙ c_{t-1} + i ⊙ g ;  h_t = o ⊙ tanh(c_t)
- GRU (Cho et al. 2014), PyTorch gate order r, z, n:
    r = σ(W_ir x + b_ir + W_hr h + b_hr);  z = σ(W_iz x + b_iz + W_hz h + b_hz)
    n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn));  h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn


class _CellBase(nn.Module):
    """Parameters shaped like one layer of the matching ``nn.RNN``/``nn.LSTM``/``nn.GRU``."""

    n_gates = 1

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        g = self.n_gates * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(g, input_size))   # (G*H, I)
        self.weight_hh = nn.Parameter(torch.empty(g, hidden_size))  # (G*H, H)
        self.bias_ih = nn.Parameter(torch.empty(g))                 # (G*H,)
        self.bias_hh = nn.Parameter(torch.empty(g))                 # (G*H,)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # PyTorch's init for recurrent layers: U(-1/sqrt(H), 1/sqrt(H)) for every parameter.
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def input_projection(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, I) -> (B, T, G*H); the time-independent half of every gate, in one matmul."""
        return x @ self.weight_ih.T + self.bias_ih

    def init_state(self, batch_size: int, like: torch.Tensor):
        return like.new_zeros(batch_size, self.hidden_size)


class RNNCellScratch(_CellBase):
    """Elman RNN cell: h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)."""

    n_gates = 1

    def step(self, gx: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """gx: (B, H) input projection at time t; h: (B, H) -> h_t (B, H)."""
        return torch.tanh(gx + h @ self.weight_hh.T + self.bias_hh)


class LSTMCellScratch(_CellBase):
    """LSTM cell (gate order i, f, g, o as in ``nn.LSTM``). State is the pair (h, c).

    Set ``record_gates = True`` to keep each step's gates in ``self.gates`` (a list of (B, 4, H)
    tensors); ``visualize.ipynb`` plots them as a heatmap.
    """

    n_gates = 4

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__(input_size, hidden_size)
        self.record_gates = False
        self.gates: list[torch.Tensor] = []

    def init_state(self, batch_size: int, like: torch.Tensor):
        z = like.new_zeros(batch_size, self.hidden_size)
        return z, z

    def step(self, gx: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]):
        h, c = state                                            # (B, H), (B, H)
        gates = gx + h @ self.weight_hh.T + self.bias_hh        # (B, 4H): all four gates, one matmul
        i, f, g, o = gates.chunk(4, dim=1)                      # 4 x (B, H)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c = f * c + i * g                                       # the additive memory path
        h = o * torch.tanh(c)
        if self.record_gates:
            self.gates.append(torch.stack([i, f, g, o], dim=1).detach())  # (B, 4, H)
        return h, c


class GRUCellScratch(_CellBase):
    """GRU cell (gate order r, z, n as in ``nn.GRU``; the reset gate multiplies W_hn h + b_hn)."""

    n_gates = 3

    def step(self, gx: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        gh = h @ self.weight_hh.T + self.bias_hh                # (B, 3H)
        x_r, x_z, x_n = gx.chunk(3, dim=1)
        h_r, h_z, h_n = gh.chunk(3, dim=1)
        r = torch.sigmoid(x_r + h_r)
        z = torch.sigmoid(x_z + h_z)
        n = torch.tanh(x_n + r * h_n)
        return (1 - z) * n + z * h


CELLS = {"rnn": RNNCellScratch, "lstm": LSTMCellScratch, "gru": GRUCellScratch}


class RecurrentScratch(nn.Module):
    """A stack of ``num_layers`` cells with dropout between layers; same call as ``nn.LSTM``.

    ``forward(x, state=None) -> (output, state)`` with ``batch_first`` tensors:
    x: (B, T, I); output: (B, T, H) (the top layer's h_t for every t);
    state: h of shape (L, B, H) for rnn/gru, the pair (h, c) each (L, B, H) for lstm.
    Dropout is applied to each layer's output except the last, like ``nn.LSTM(dropout=p)``.
    """

    def __init__(self, cell_type: str, input_size: int, hidden_size: int, num_layers: int = 1, dropout: float = 0.0):
        super().__init__()
        if cell_type not in CELLS:
            raise ValueError(f"unknown cell type {cell_type!r}; choose {', '.join(CELLS)}")
        self.cell_type, self.hidden_size, self.num_layers = cell_type, hidden_size, num_layers
        self.layers = nn.ModuleList(
            CELLS[cell_type](input_size if k == 0 else hidden_size, hidden_size) for k in range(num_layers))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, state=None):
        B, T, _ = x.shape
        is_lstm = self.cell_type == "lstm"
        final_h, final_c = [], []
        for k, cell in enumerate(self.layers):
            if state is None:
                s = cell.init_state(B, x)
            elif is_lstm:
                s = (state[0][k], state[1][k])
            else:
                s = state[k]
            gx = cell.input_projection(x)                       # (B, T, G*H): one matmul for all t
            outs = []
            for t in range(T):
                s = cell.step(gx[:, t], s)
                outs.append(s[0] if is_lstm else s)             # (B, H)
            x = torch.stack(outs, dim=1)                        # (B, T, H)
            if k < self.num_layers - 1:
                x = self.dropout(x)
            final_h.append(s[0] if is_lstm else s)
            if is_lstm:
                final_c.append(s[1])
        h = torch.stack(final_h)                                # (L, B, H)
        return x, ((h, torch.stack(final_c)) if is_lstm else h)
