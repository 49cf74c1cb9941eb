"""Encoder-decoder (seq2seq) translation model with pluggable attention.

* Encoder: embedding + bidirectional GRU (or LSTM, ``--enc_rnn lstm``) over packed padded sequences
  (Bahdanau et al. 2015, §3.2).
* Decoder, ``attention_type``:
  - ``bahdanau``: the context is computed from the *previous* state and fed into the GRU
    (Bahdanau et al. 2015, eqs. 4-6):
    ``c_t = attn(s_{t-1}, H);  s_t = GRU([y_{t-1}; c_t], s_{t-1});  o_t = tanh(W_o [s_t; c_t; y_{t-1}])``
  - ``luong_dot|luong_general|luong_concat``: attention *after* the GRU step, with input feeding
    (Luong et al. 2015, eqs. 5 and 8, §3.3):
    ``h_t = GRU([y_{t-1}; o_{t-1}], h_{t-1});  c_t = attn(h_t, H);  o_t = tanh(W_c [c_t; h_t])``
  - ``none``: the baseline without attention (Cho et al. 2014): one fixed vector
    ``c = [h_fwd_last; h_bwd_first]`` summarises the whole source and is fed at every step.
  In all cases ``logits_t = W_v o_t`` (``W_v`` tied to the target embedding by default).

One contract for every stage (docs/CONTRIBUTING.md): ``forward(src, src_len, tgt_in, tgt_out=None) -> (logits, loss)``
(always those two; ``loss`` is ``None`` without ``tgt_out``), ``attention_weights(src, src_len, tgt_in)`` for the
teacher-forced attention matrix, and ``translate(src, src_len, beam_size=...)`` for batched greedy / beam search.
Theory: docs/stage3_attention.md.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from stage3_attention_seq2seq.models.attention import ATTENTIONS
from stage3_attention_seq2seq.utils.tokenizer import BOS_ID, EOS_ID, PAD_ID

ATTENTION_TYPES = ["bahdanau", "luong_dot", "luong_general", "luong_concat", "none"]


@dataclass
class ModelConfig:
    attention_type: str = field(default="bahdanau", metadata={"choices": ATTENTION_TYPES,
                                "help": "attention score, or none for the fixed-vector baseline"})
    emb_dim: int = field(default=256, metadata={"help": "embedding size (also the output layer size o_t)"})
    enc_rnn: str = field(default="gru", metadata={"choices": ["gru", "lstm"], "help": "encoder recurrent cell"})
    enc_hidden: int = field(default=256, metadata={"help": "RNN size per direction of the bidirectional encoder"})
    dec_hidden: int = field(default=512, metadata={"help": "decoder GRU size (luong_dot needs 2*enc_hidden)"})
    attn_dim: int = field(default=256, metadata={"help": "size of the additive attention layer"})
    enc_layers: int = field(default=1, metadata={"help": "encoder RNN layers"})
    dropout: float = field(default=0.3, metadata={"help": "dropout on embeddings and outputs"})
    tie_embeddings: bool = field(default=True, metadata={"help": "share target embedding and output weights"})
    label_smoothing: float = field(default=0.1, metadata={"help": "label smoothing of the training loss"})


class Encoder(nn.Module):
    """Embedding + bidirectional GRU or LSTM. Returns every position's state and a sentence summary."""

    def __init__(self, cfg: ModelConfig, src_vocab_size: int):
        super().__init__()
        self.embed = nn.Embedding(src_vocab_size, cfg.emb_dim, padding_idx=PAD_ID)
        rnn_cls = {"gru": nn.GRU, "lstm": nn.LSTM}[cfg.enc_rnn]
        self.rnn = rnn_cls(cfg.emb_dim, cfg.enc_hidden, num_layers=cfg.enc_layers, batch_first=True,
                           bidirectional=True, dropout=cfg.dropout if cfg.enc_layers > 1 else 0.0)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, src: torch.Tensor, src_len: torch.Tensor):
        # src (B, S) padded with PAD_ID, src_len (B,)
        x = self.drop(self.embed(src))  # (B, S, E)
        # packing makes the RNN skip padding: the backward direction starts at each sentence's real end
        packed = pack_padded_sequence(x, src_len.cpu(), batch_first=True, enforce_sorted=False)
        out, h_n = self.rnn(packed)
        if isinstance(h_n, tuple):  # LSTM: (h_n, c_n); the summary uses the hidden states h_n
            h_n = h_n[0]
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=src.size(1))  # (B, S, 2He)
        summary = torch.cat([h_n[-2], h_n[-1]], dim=-1)  # last layer: fwd at the end, bwd at the start (B, 2He)
        return out, summary


class Seq2Seq(nn.Module):
    """Bidirectional GRU/LSTM encoder + GRU decoder with Bahdanau / Luong / no attention."""

    def __init__(self, cfg: ModelConfig, src_vocab_size: int, tgt_vocab_size: int):
        super().__init__()
        if cfg.attention_type not in ATTENTION_TYPES:
            raise ValueError(f"unknown attention_type {cfg.attention_type!r}")
        self.cfg = cfg
        key_dim = 2 * cfg.enc_hidden
        self.luong = cfg.attention_type.startswith("luong")
        self.encoder = Encoder(cfg, src_vocab_size)
        self.init_state = nn.Linear(key_dim, cfg.dec_hidden)  # s_0 = tanh(W_s summary)
        self.tgt_embed = nn.Embedding(tgt_vocab_size, cfg.emb_dim, padding_idx=PAD_ID)
        self.attention = (ATTENTIONS[cfg.attention_type](cfg.dec_hidden, key_dim, cfg.attn_dim)
                          if cfg.attention_type != "none" else None)
        if self.luong:  # input feeding: previous o_{t-1} goes in with y_{t-1}
            self.rnn = nn.GRUCell(cfg.emb_dim + cfg.emb_dim, cfg.dec_hidden)
            self.combine = nn.Linear(key_dim + cfg.dec_hidden, cfg.emb_dim)  # W_c [c_t; h_t]
        else:  # bahdanau / none: the context goes into the GRU and into the output
            self.rnn = nn.GRUCell(cfg.emb_dim + key_dim, cfg.dec_hidden)
            self.combine = nn.Linear(cfg.dec_hidden + key_dim + cfg.emb_dim, cfg.emb_dim)  # W_o [s_t; c_t; y_{t-1}]
        self.out = nn.Linear(cfg.emb_dim, tgt_vocab_size)
        if cfg.tie_embeddings:
            self.out.weight = self.tgt_embed.weight
        self.drop = nn.Dropout(cfg.dropout)
        # N(0, 1) embeddings would make the tied output layer's first logits huge (loss ~19 instead of ln V)
        for emb in (self.encoder.embed, self.tgt_embed):
            nn.init.normal_(emb.weight, std=cfg.emb_dim ** -0.5)
            with torch.no_grad():
                emb.weight[PAD_ID].zero_()

    # ----- building blocks -------------------------------------------------------------------

    def encode(self, src, src_len):
        """Encoder pass + everything the decoder steps reuse, as a dict of (B, ...) tensors."""
        keys, summary = self.encoder(src, src_len)  # (B, S, 2He), (B, 2He)
        mask = torch.arange(src.size(1), device=src.device)[None, :] < src_len[:, None]  # (B, S) True = real token
        enc = {"keys": keys, "mask": mask, "summary": summary,
               "pre": self.attention.precompute(keys) if self.attention is not None else keys}
        h = torch.tanh(self.init_state(summary))  # (B, Hd)
        feed = keys.new_zeros(src.size(0), self.cfg.emb_dim)  # o_{-1} for input feeding (B, E)
        return enc, (h, feed)

    def step(self, y_emb, state, enc):
        """One decoder step. y_emb (B, E) -> o_t (B, E), new state, attention weights (B, S) or None."""
        h, feed = state
        if self.luong:
            h = self.rnn(torch.cat([y_emb, feed], dim=-1), h)  # (B, Hd)
            ctx, weights = self.attention(h, enc["keys"], enc["pre"], enc["mask"])  # (B, 2He), (B, S)
            o = torch.tanh(self.combine(torch.cat([ctx, h], dim=-1)))  # (B, E)
        else:
            if self.attention is None:
                ctx, weights = enc["summary"], None  # the fixed-vector bottleneck
            else:
                ctx, weights = self.attention(h, enc["keys"], enc["pre"], enc["mask"])  # uses s_{t-1}
            h = self.rnn(torch.cat([y_emb, ctx], dim=-1), h)  # (B, Hd)
            o = torch.tanh(self.combine(torch.cat([h, ctx, y_emb], dim=-1)))  # (B, E)
        return o, (h, o), weights

    @staticmethod
    def reorder(state, enc, index):
        """Select rows ``index`` of the state and encoder tensors (beam search)."""
        state = tuple(s.index_select(0, index) for s in state)
        enc = {k: v.index_select(0, index) for k, v in enc.items()}
        return state, enc

    # ----- the training contract -------------------------------------------------------------

    def forward(self, src, src_len, tgt_in, tgt_out=None, teacher_forcing: float = 1.0):
        """Teacher-forced decoding of ``tgt_in`` (starts with <bos>); loss against ``tgt_out`` (ends with <eos>).

        With ``teacher_forcing < 1`` each step feeds, with probability ``1 - teacher_forcing``, the
        model's own previous prediction instead of the reference token (scheduled sampling).
        Returns ``(logits (B, T, V), loss)``; ``loss`` is ``None`` when ``tgt_out`` is not given.
        """
        logits, _ = self._decode(src, src_len, tgt_in, teacher_forcing, keep_attn=False)
        loss = None
        if tgt_out is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), tgt_out.reshape(-1),
                                   ignore_index=PAD_ID, label_smoothing=self.cfg.label_smoothing)
        return logits, loss

    def attention_weights(self, src, src_len, tgt_in):
        """Attention of teacher-forced decoding: (B, T, S) weights ``a_tj``, or ``None`` for ``attention_type none``."""
        _, attn = self._decode(src, src_len, tgt_in, 1.0, keep_attn=True)
        return attn

    def _decode(self, src, src_len, tgt_in, teacher_forcing: float, keep_attn: bool):
        """``(logits (B, T, V), attention (B, T, S) or None)`` of decoding ``tgt_in`` step by step
        (attention only with ``keep_attn`` and an attention model)."""
        enc, state = self.encode(src, src_len)
        emb = self.drop(self.tgt_embed(tgt_in))  # (B, T, E)
        outs, attns = [], []
        for t in range(tgt_in.size(1)):
            y = emb[:, t]
            if teacher_forcing < 1.0 and t > 0:
                use_model = torch.rand(y.size(0), 1, device=y.device) >= teacher_forcing  # (B, 1)
                pred = self.out(outs[-1]).argmax(-1).detach()  # (B,)
                y = torch.where(use_model, self.drop(self.tgt_embed(pred)), y)
            o, state, w = self.step(y, state, enc)
            outs.append(o)
            if keep_attn and w is not None:
                attns.append(w)
        logits = self.out(self.drop(torch.stack(outs, dim=1)))  # (B, T, V)
        return logits, (torch.stack(attns, dim=1) if attns else None)

    # ----- decoding ----------------------------------------------------------------------------

    def _log_probs(self, y, state, enc):
        o, state, w = self.step(self.tgt_embed(y), state, enc)
        return F.log_softmax(self.out(o), dim=-1), state, w  # (B, V)

    @torch.inference_mode()
    def translate(self, src, src_len, beam_size: int = 1, max_len: int | None = None, len_alpha: float = 1.0):
        """Batched greedy (``beam_size=1``) or beam search.

        Returns a list (one per sentence) of dicts ``{"ids": [...], "attn": (T_out, S_i) tensor or
        None, "score": float}``; ``ids`` exclude <bos>/<eos>. ``max_len`` caps the output length
        (default: 2 * longest source + 10). Beam hypotheses are ranked by ``logp / len**len_alpha``
        (length normalisation; 0 = raw log-probability).
        """
        was_training = self.training
        self.eval()
        try:
            max_len = max_len or int(src_len.max()) * 2 + 10
            if beam_size <= 1:
                return self._greedy(src, src_len, max_len)
            return self._beam(src, src_len, beam_size, max_len, len_alpha)
        finally:
            self.train(was_training)

    def _greedy(self, src, src_len, max_len):
        B = src.size(0)
        enc, state = self.encode(src, src_len)
        y = torch.full((B,), BOS_ID, dtype=torch.long, device=src.device)
        done = torch.zeros(B, dtype=torch.bool, device=src.device)
        ids, attns, score = [], [], torch.zeros(B, device=src.device)
        for _ in range(max_len):
            logp, state, w = self._log_probs(y, state, enc)
            lp, y = logp.max(-1)  # (B,)
            y = y.masked_fill(done, PAD_ID)
            score += lp.masked_fill(done, 0.0)
            ids.append(y)
            attns.append(w)
            done |= y == EOS_ID
            if done.all():
                break
        ids = torch.stack(ids, 1)  # (B, T)
        attn = torch.stack(attns, 1) if attns[0] is not None else None  # (B, T, S)
        return [self._finish(ids[b], None if attn is None else attn[b], int(src_len[b]), float(score[b]))
                for b in range(B)]

    def _beam(self, src, src_len, k, max_len, len_alpha):
        B, dev = src.size(0), src.device
        enc, state = self.encode(src, src_len)
        flat = torch.arange(B, device=dev).repeat_interleave(k)  # (B*k,) beam row -> sentence
        state, enc = self.reorder(state, enc, flat)
        scores = torch.full((B, k), float("-inf"), device=dev)
        scores[:, 0] = 0.0  # only one live hypothesis at the start
        y = torch.full((B * k,), BOS_ID, dtype=torch.long, device=dev)
        finished = torch.zeros(B * k, dtype=torch.bool, device=dev)
        lengths = torch.zeros(B * k, device=dev)
        hist = torch.empty(B * k, 0, dtype=torch.long, device=dev)
        attn_hist = None
        for _ in range(max_len):
            logp, state, w = self._log_probs(y, state, enc)  # (B*k, V)
            V = logp.size(-1)
            # a finished hypothesis can only be extended by <pad>, at no cost
            ended = torch.full_like(logp, float("-inf"))
            ended[:, PAD_ID] = 0.0
            logp = torch.where(finished[:, None], ended, logp)
            cand = (scores.view(-1, 1) + logp).view(B, k * V)  # (B, k*V)
            scores, idx = cand.topk(k, dim=-1)  # (B, k)
            beam, y = idx // V, idx % V  # (B, k)
            rows = (beam + torch.arange(B, device=dev)[:, None] * k).view(-1)  # (B*k,)
            y = y.view(-1)
            state, enc = self.reorder(state, enc, rows)
            finished, lengths, hist = finished[rows], lengths[rows], hist[rows]
            lengths = lengths + (~finished).float()
            hist = torch.cat([hist, y[:, None]], 1)  # (B*k, t)
            if w is not None:
                w = w[rows][:, None]  # (B*k, 1, S)
                attn_hist = w if attn_hist is None else torch.cat([attn_hist[rows], w], 1)
            finished = finished | (y == EOS_ID)
            if finished.all():
                break
        norm = scores.view(-1) / lengths.clamp(min=1).pow(len_alpha)  # length normalisation
        best = norm.view(B, k).argmax(-1) + torch.arange(B, device=dev) * k  # (B,)
        return [self._finish(hist[r], None if attn_hist is None else attn_hist[r], int(src_len[b]),
                             float(scores.view(-1)[r]))
                for b, r in enumerate(best.tolist())]

    @staticmethod
    def _finish(ids, attn, src_len, score):
        ids = ids.tolist()
        n = ids.index(EOS_ID) if EOS_ID in ids else len(ids)  # tokens before <eos>
        a = None if attn is None else attn[:n + 1, :src_len].float().cpu()  # rows: outputs incl. <eos>
        return {"ids": ids[:n], "attn": a, "score": score}

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
