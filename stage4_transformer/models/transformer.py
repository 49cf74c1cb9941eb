"""The encoder-decoder Transformer (Vaswani et al. 2017, §3, Figure 1) and its decoding.

Read in this order: :class:`TransformerConfig` -> :class:`Encoder` / :class:`Decoder` (stacks of the layers in
layers.py) -> :class:`Transformer` (embeddings, the training contract, incremental decoding, greedy and beam search).

* One embedding matrix is shared by source and target (a joint subword vocabulary) and, with ``tie_embeddings``,
  by the pre-softmax projection too (§3.4); embeddings are multiplied by sqrt(d_model) before the positional
  encoding is added, then dropout (§5.4).
* ``impl="scratch"``: our layers. ``impl="torch"``: the same model with ``nn.Transformer`` (assembled from
  ``nn.TransformerEncoder(Layer)``/``nn.TransformerDecoder(Layer)``) in the middle; embeddings, positional
  encoding and output projection are shared code, so :func:`stage4_transformer.models.convert.copy_weights`
  makes the two compute the same function. ``nn.MultiheadAttention`` always stores a fused in_proj and picks
  its own attention kernel, so ``fused_qkv``/``attn_impl`` only act on the scratch implementation; the torch
  decoder has no key/value cache, so its decoding always recomputes the prefix.
* The contract of stage 3: ``forward(src, src_mask, tgt_in, tgt_out=None) -> (logits, loss)``.
  ``src_mask`` is the (B, S) boolean keep mask of real source tokens (None: ``src != pad_id``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from scripts.cli import UserError
from stage4_transformer.models.attention import ATTN_IMPLS, causal_mask, padding_mask
from stage4_transformer.models.layers import (
    DecoderLayer,
    EncoderLayer,
    LayerNorm,
    check_not_empty,
    init_xavier,
    positional_encoding,
    scaled_embedding,
)

POS_KINDS = ("sinusoidal", "learned")
IMPLS = ("scratch", "torch")
MIN_VOCAB = 16  # special tokens plus a handful of symbols; anything smaller cannot be a real vocabulary


@dataclass
class TransformerConfig:
    vocab_size: int = field(default=8000, metadata={"help": "size of the joint source/target subword vocabulary"})
    d_model: int = field(default=256, metadata={"help": "model width C (embeddings, every sub-layer's output)"})
    n_heads: int = field(default=4, metadata={"help": "attention heads h (d_model must be divisible by it)"})
    enc_layers: int = field(default=3, metadata={"help": "encoder layers N"})
    dec_layers: int = field(default=3, metadata={"help": "decoder layers N"})
    d_ff: int = field(default=1024, metadata={"help": "inner size of the position-wise feed-forward network"})
    dropout: float = field(default=0.1, metadata={"help": "dropout P_drop (residual, attention weights, FFN)"})
    attn_dropout: float = field(default=-1.0, metadata={"help": "dropout on the attention weights only (-1 = "
                                                        "--dropout; 0 lets SDPA take its fused kernel)"})
    act_dropout: float = field(default=-1.0, metadata={"help": "dropout on the FFN's hidden ReLU activations only "
                                                       "(-1 = --dropout)"})
    max_len: int = field(default=256, metadata={"help": "longest sequence (tokens) the positional table covers"})
    norm_first: bool = field(default=False, metadata={"help": "pre-LN (LayerNorm before each sub-layer); "
                                                      "--no-norm_first is the paper's post-LN"})
    tie_embeddings: bool = field(default=True, metadata={"help": "output projection shares the embedding matrix"})
    pos: str = field(default="sinusoidal", metadata={"choices": list(POS_KINDS), "help": "positional encoding"})
    impl: str = field(default="scratch", metadata={"choices": list(IMPLS),
                                                   "help": "our layers, or nn.Transformer with the same weights"})
    attn_impl: str = field(default="manual", metadata={"choices": list(ATTN_IMPLS),
                                                       "help": "attention kernel of the scratch implementation"})
    fused_qkv: bool = field(default=False, metadata={"help": "one 3C x C projection for Q, K, V (scratch impl)"})
    label_smoothing: float = field(default=0.1, metadata={"help": "label smoothing epsilon of the training loss"})
    pad_id: int = field(default=0, metadata={"help": "id of <pad> (ignored by the loss and masked in attention)"})
    bos_id: int = field(default=2, metadata={"help": "id of <bos> (first decoder input)"})
    eos_id: int = field(default=3, metadata={"help": "id of <eos> (ends a hypothesis)"})

    def __post_init__(self):
        validate(self, layers=("enc_layers", "dec_layers"), special=("pad_id", "bos_id", "eos_id"))

    @property
    def attn_p(self) -> float:
        """The attention weights' dropout rate actually used."""
        return self.dropout if self.attn_dropout < 0 else self.attn_dropout

    @property
    def act_p(self) -> float:
        """The FFN hidden activations' dropout rate actually used."""
        return self.dropout if self.act_dropout < 0 else self.act_dropout


def validate(cfg, layers: tuple, special: tuple) -> None:
    """Impossible configurations -> one-line :class:`UserError` (also raised when a checkpoint's config is loaded)."""
    def fail(msg):
        raise UserError(f"impossible model config: {msg}")

    for name in ("d_model", "n_heads", "d_ff", "max_len", *layers):
        if not isinstance(getattr(cfg, name), int) or getattr(cfg, name) < 1:
            fail(f"{name} must be a positive integer, got {getattr(cfg, name)!r}")
    if cfg.d_model % cfg.n_heads:
        fail(f"d_model={cfg.d_model} is not divisible by n_heads={cfg.n_heads} (each head gets d_model/n_heads)")
    if not 0.0 <= cfg.dropout < 1.0:
        fail(f"dropout must be in [0, 1), got {cfg.dropout}")
    for name in ("attn_dropout", "act_dropout"):
        p = getattr(cfg, name, -1.0)
        if p != -1.0 and not 0.0 <= p < 1.0:
            fail(f"{name} must be in [0, 1) or -1 (= dropout), got {p}")
    if not 0.0 <= cfg.label_smoothing < 1.0:
        fail(f"label_smoothing must be in [0, 1), got {cfg.label_smoothing}")
    ids = [getattr(cfg, s) for s in special]
    if cfg.vocab_size < MIN_VOCAB or cfg.vocab_size <= max(ids):
        fail(f"vocab_size={cfg.vocab_size} is too small (at least {max(MIN_VOCAB, max(ids) + 1)})")
    if min(ids) < 0 or len(set(ids)) != len(ids):
        fail(f"special token ids {dict(zip(special, ids))} must be distinct and non-negative")
    for name, allowed in (("pos", POS_KINDS), ("impl", IMPLS), ("attn_impl", ATTN_IMPLS)):
        if getattr(cfg, name) not in allowed:
            fail(f"{name} must be one of {', '.join(allowed)}, got {getattr(cfg, name)!r}")


# ----- the two stacks (scratch implementation) -------------------------------------------------------

class Encoder(nn.Module):
    """N encoder layers (§3.1); pre-LN stacks end with a final LayerNorm (their layers never normalise the output)."""

    def __init__(self, d_model, n_heads, d_ff, n_layers, dropout, norm_first, fused_qkv, attn_impl,
                 attn_dropout=None, act_dropout=None):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(d_model, n_heads, d_ff, dropout, norm_first, fused_qkv, attn_impl,
                                                 attn_dropout, act_dropout) for _ in range(n_layers))
        self.norm = LayerNorm(d_model) if norm_first else None

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, mask)  # (B, S, C)
        return x if self.norm is None else self.norm(x)  # (B, S, C)


class Decoder(nn.Module):
    """N decoder layers (§3.1); ``cache`` is a list with one dict per layer (incremental decoding)."""

    def __init__(self, d_model, n_heads, d_ff, n_layers, dropout, norm_first, fused_qkv, attn_impl,
                 attn_dropout=None, act_dropout=None):
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(d_model, n_heads, d_ff, dropout, norm_first, fused_qkv, attn_impl,
                                                 attn_dropout, act_dropout) for _ in range(n_layers))
        self.norm = LayerNorm(d_model) if norm_first else None

    def forward(self, x, memory, self_mask=None, mem_mask=None, cache: list | None = None) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x, memory, self_mask, mem_mask, None if cache is None else cache[i])  # (B, T, C)
        return x if self.norm is None else self.norm(x)  # (B, T, C)


def _torch_rates(layer: nn.Module, attn_dropout, act_dropout) -> nn.Module:
    """PyTorch's layers take one dropout rate; set the attention weights' (each ``nn.MultiheadAttention``'s
    ``dropout``) and the FFN activations' (the layer's ``dropout`` module) to ours before the stack copies it."""
    if attn_dropout is not None:
        for mha in (m for m in layer.modules() if isinstance(m, nn.MultiheadAttention)):
            mha.dropout = attn_dropout
    if act_dropout is not None:
        layer.dropout.p = act_dropout
    return layer


def torch_encoder(d_model, n_heads, d_ff, n_layers, dropout, norm_first, attn_dropout=None,
                  act_dropout=None) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(d_model, n_heads, d_ff, dropout, batch_first=True, norm_first=norm_first)
    layer = _torch_rates(layer, attn_dropout, act_dropout)
    return nn.TransformerEncoder(layer, n_layers, norm=nn.LayerNorm(d_model) if norm_first else None,
                                 enable_nested_tensor=False)


def torch_decoder(d_model, n_heads, d_ff, n_layers, dropout, norm_first, attn_dropout=None,
                  act_dropout=None) -> nn.TransformerDecoder:
    layer = nn.TransformerDecoderLayer(d_model, n_heads, d_ff, dropout, batch_first=True, norm_first=norm_first)
    layer = _torch_rates(layer, attn_dropout, act_dropout)
    return nn.TransformerDecoder(layer, n_layers, norm=nn.LayerNorm(d_model) if norm_first else None)


# ----- the model ------------------------------------------------------------------------------------------

class Transformer(nn.Module):
    """Encoder-decoder for translation: ``forward(src, src_mask, tgt_in, tgt_out=None) -> (logits, loss)``."""

    # how copy_weights renames our stacks to the torch implementation's (see convert.py)
    TORCH_PREFIXES = {"encoder.": "core.encoder.", "decoder.": "core.decoder."}

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        C = cfg.d_model
        self.embed = nn.Embedding(cfg.vocab_size, C)  # shared by source and target (joint vocabulary)
        self.pos = positional_encoding(cfg.pos, cfg.max_len, C)
        self.drop = nn.Dropout(cfg.dropout)
        stack = (C, cfg.n_heads, cfg.d_ff)
        if cfg.impl == "scratch":
            extra = (cfg.dropout, cfg.norm_first, cfg.fused_qkv, cfg.attn_impl, cfg.attn_p, cfg.act_p)
            self.encoder = Encoder(*stack, cfg.enc_layers, *extra)
            self.decoder = Decoder(*stack, cfg.dec_layers, *extra)
        else:
            rates = (cfg.dropout, cfg.norm_first, cfg.attn_p, cfg.act_p)
            self.core = nn.Transformer(C, cfg.n_heads, cfg.enc_layers, cfg.dec_layers, cfg.d_ff, cfg.dropout,
                                       custom_encoder=torch_encoder(*stack, cfg.enc_layers, *rates),
                                       custom_decoder=torch_decoder(*stack, cfg.dec_layers, *rates),
                                       batch_first=True, norm_first=cfg.norm_first)
        self.out = nn.Linear(C, cfg.vocab_size, bias=False)  # pre-softmax projection
        init_xavier(self, skip=(self.embed, self.pos))
        nn.init.normal_(self.embed.weight, std=C ** -0.5)  # times sqrt(C) -> unit-variance inputs
        if cfg.tie_embeddings:
            self.out.weight = self.embed.weight  # one (V, C) tensor, two uses (§3.4)

    # ----- shared pieces -------------------------------------------------------------------------------

    def embed_tokens(self, ids: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """ids (B, T) at positions offset.. -> Dropout(sqrt(C) * E[ids] + PE) (B, T, C)."""
        x = scaled_embedding(self.embed, ids) + self.pos(ids.size(1), offset)  # (B, T, C)
        return self.drop(x)  # (B, T, C)

    def src_keep(self, src: torch.Tensor, src_mask: torch.Tensor | None) -> torch.Tensor:
        return (src != self.cfg.pad_id) if src_mask is None else src_mask.bool()  # (B, S) True = real token

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor | None = None) -> torch.Tensor:
        """src (B, S) ids -> memory (B, S, C)."""
        keep = self.src_keep(src, src_mask)  # (B, S)
        x = self.embed_tokens(src)  # (B, S, C)
        if self.cfg.impl == "torch":
            return self.core.encoder(x, src_key_padding_mask=~keep)  # (B, S, C) torch: True = blocked
        return self.encoder(x, padding_mask(keep))  # (B, S, C)

    def decode(self, tgt_in: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        """Teacher-forced decoder over the whole target prefix: tgt_in (B, T), memory (B, S, C),
        src_mask (B, S) keep -> logits (B, T, V). Position t sees tgt_in[:, :t+1] only (causal mask)."""
        T, src_mask = tgt_in.size(1), src_mask.bool()
        tgt_keep = tgt_in != self.cfg.pad_id  # (B, T)
        x = self.embed_tokens(tgt_in)  # (B, T, C)
        if self.cfg.impl == "torch":
            h = self.core.decoder(x, memory, tgt_mask=~causal_mask(T, x.device)[0, 0],  # (T, T) True = blocked
                                  tgt_key_padding_mask=~tgt_keep, memory_key_padding_mask=~src_mask)  # (B, T, C)
        else:
            self_mask = causal_mask(T, x.device) & padding_mask(tgt_keep)  # (B, 1, T, T)
            h = self.decoder(x, memory, self_mask, padding_mask(src_mask))  # (B, T, C)
        return self.out(h)  # (B, T, V)

    # ----- the training contract -------------------------------------------------------------------------

    def forward(self, src, src_mask, tgt_in, tgt_out=None):
        """src (B, S), src_mask (B, S) keep or None, tgt_in (B, T) = <bos> y_1..y_{T-1}, tgt_out (B, T) = y_1..<eos>.

        Returns ``(logits (B, T, V), loss)``; loss = label-smoothed cross-entropy (§5.4) averaged over the
        non-padding target tokens, or None without ``tgt_out``.
        """
        keep = self.src_keep(src, src_mask)  # (B, S)
        logits = self.decode(tgt_in, self.encode(src, keep), keep)  # (B, T, V)
        loss = None
        if tgt_out is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), tgt_out.reshape(-1),
                                   ignore_index=self.cfg.pad_id, label_smoothing=self.cfg.label_smoothing)
        return logits, loss

    @torch.no_grad()
    def attention_maps(self, src, src_mask, tgt_in) -> dict:
        """Attention weights of every layer and head for one teacher-forced pass (scratch implementation):
        ``{"encoder": [(B, h, S, S)] * enc_layers, "decoder": [(B, h, T, T)] * dec_layers,
        "cross": [(B, h, T, S)] * dec_layers}``. With ``tgt_in = [<bos>] + a decoded output`` these are exactly
        the weights the search used (position t sees only tokens <= t), so decoding need not record them."""
        if self.cfg.impl != "scratch":
            raise ValueError("attention_maps needs impl='scratch' (our modules keep their weights)")
        was_training = self.training
        self.eval()  # no dropout on the weights
        groups = {"encoder": [la.self_attn for la in self.encoder.layers],
                  "decoder": [la.self_attn for la in self.decoder.layers],
                  "cross": [la.cross_attn for la in self.decoder.layers]}
        mods = [m for ms in groups.values() for m in ms]
        for m in mods:
            m.keep_weights = True
        try:
            self.forward(src, src_mask, tgt_in)
            return {name: [m.weights for m in ms] for name, ms in groups.items()}
        finally:
            self.train(was_training)
            for m in mods:
                m.keep_weights, m.weights = False, None

    # ----- incremental decoding ----------------------------------------------------------------------------

    def new_cache(self) -> dict:
        """An empty cache: the next position to decode and one dict of keys/values per decoder layer."""
        return {"pos": 0, "layers": [{} for _ in range(self.cfg.dec_layers)]}

    def decode_step(self, y: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor, cache: dict) -> torch.Tensor:
        """One decoder position: y (B,) the newest token -> next-token logits (B, V); ``cache`` is updated in place.

        Step t projects one position and attends over t cached keys: O(t*C + C^2) per layer, where re-running the
        prefix costs O(t^2*C + t*C^2); cross-attention keys/values of ``memory`` are computed on the first step only.
        Scratch implementation only.
        """
        if self.cfg.impl != "scratch":
            raise ValueError("decode_step needs impl='scratch' (nn.TransformerDecoder has no key/value cache)")
        x = self.embed_tokens(y[:, None], offset=cache["pos"])  # (B, 1, C)
        h = self.decoder(x, memory, None, padding_mask(src_mask.bool()), cache["layers"])  # (B, 1, C)
        cache["pos"] += 1
        return self.out(h[:, 0])  # (B, V)

    @staticmethod
    def reorder_cache(cache: dict, rows: torch.Tensor, cross_rows: torch.Tensor | None = None) -> None:
        """Beam search: row r of the cache becomes old row ``rows[r]``. Self-attention keys/values only, unless
        ``cross_rows`` is given: a reorder keeps rows within their own sentence, whose cross-attention keys/values
        are the same for every beam; ``cross_rows`` drops the rows of finished sentences from them too."""
        for c in cache["layers"]:
            c["self_k"], c["self_v"] = c["self_k"][rows], c["self_v"][rows]  # (B*k, h, t, d_k)
            if cross_rows is not None:
                c["cross_k"], c["cross_v"] = c["cross_k"][cross_rows], c["cross_v"][cross_rows]  # (B*k, h, S, d_k)

    def _next_log_probs(self, hist, memory, src_mask, cache):
        """log p(next | hist) (N, V): from the cache (one step), or recomputing the whole prefix ``hist`` (N, t).
        <pad> and <bos> are never generated (they are not outputs of a translation)."""
        if cache is not None:
            logits = self.decode_step(hist[:, -1], memory, src_mask, cache)  # (N, V)
        else:
            logits = self.decode(hist, memory, src_mask)[:, -1]  # (N, V)
        logits[:, [self.cfg.pad_id, self.cfg.bos_id]] = float("-inf")  # (N, V) in place: a fresh tensor, no grad
        return F.log_softmax(logits, dim=-1)  # (N, V)

    def _max_out(self, src_mask, max_len):
        """Output length cap: default 2 * longest source + 10, never beyond the positional table."""
        default = min(int(src_mask.sum(1).max()) * 2 + 10, self.cfg.max_len)
        return default if max_len is None else max_len

    def _finish(self, ids: list, score: float) -> dict:
        n = ids.index(self.cfg.eos_id) if self.cfg.eos_id in ids else len(ids)
        return {"ids": ids[:n], "score": score}  # ids without <bos>/<eos>

    @torch.no_grad()
    def greedy_decode(self, src, src_mask=None, max_len: int | None = None, use_cache: bool = True) -> list[dict]:
        """Batched greedy search: one ``{"ids": [...], "score": sum log p}`` per sentence. A sentence that has
        produced <eos> leaves the batch (its rows of the memory, the cache and the history are dropped)."""
        keep = self.src_keep(src, src_mask)  # (B, S)
        memory = self.encode(src, keep)  # (B, S, C)
        B, dev = src.size(0), src.device
        cache = self.new_cache() if use_cache and self.cfg.impl == "scratch" else None
        hist = torch.full((B, 1), self.cfg.bos_id, dtype=torch.long, device=dev)  # (Ba, t) Ba sentences left
        score = torch.zeros(B, dtype=torch.float64, device=dev)  # (Ba,)
        alive = torch.arange(B, device=dev)  # (Ba,) which input sentence each row is
        results: list = [None] * B
        for _ in range(self._max_out(keep, max_len)):
            lp, y = self._next_log_probs(hist, memory, keep, cache).max(-1)  # (Ba,), (Ba,)
            score += lp.double()
            hist = torch.cat([hist, y[:, None]], dim=1)  # (Ba, t+1)
            done = y == self.cfg.eos_id  # (Ba,)
            if done.any():
                for i, b in zip(done.nonzero().squeeze(1).tolist(), alive[done].tolist()):
                    results[b] = self._finish(hist[i, 1:].tolist(), float(score[i]))
                live = (~done).nonzero().squeeze(1)  # (Ba',)
                if live.numel() == 0:
                    break
                alive, score, hist, memory, keep = alive[live], score[live], hist[live], memory[live], keep[live]
                if cache is not None:
                    self.reorder_cache(cache, live, cross_rows=live)
        for i, b in enumerate(alive.tolist()):  # max_len reached
            if results[b] is None:
                results[b] = self._finish(hist[i, 1:].tolist(), float(score[i]))
        return results

    @torch.no_grad()
    def beam_search(self, src, src_mask=None, beam_size: int = 5, max_len: int | None = None,
                    len_alpha: float = 1.0, use_cache: bool = True) -> list[dict]:
        """Batched beam search, k = ``beam_size`` hypotheses per sentence in one (B*k) batch.

        Ranking uses the length-normalised score ``sum log p / len^len_alpha`` (len counts <eos>; 0 = raw sum).
        A hypothesis that produced <eos> stays in the beam with a frozen score and length (it can only be extended
        by <pad>, at no cost), competing with the live ones; a sentence is done when all k of its hypotheses have
        finished (or after ``max_len`` tokens). Done sentences leave the batch (their rows of the memory, the cache
        and the history are dropped), so the last steps of a batch only compute its longest translations.
        Returns the best hypothesis per sentence: ``{"ids": [...], "score": sum log p}``.
        """
        if beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {beam_size}")
        k, cfg = beam_size, self.cfg
        keep = self.src_keep(src, src_mask)  # (B, S)
        B, dev = src.size(0), src.device
        memory = self.encode(src, keep).repeat_interleave(k, dim=0)  # (B*k, S, C) rows b*k..b*k+k-1 = sentence b
        keep = keep.repeat_interleave(k, dim=0)  # (B*k, S)
        cache = self.new_cache() if use_cache and cfg.impl == "scratch" else None
        hist = torch.full((B * k, 1), cfg.bos_id, dtype=torch.long, device=dev)  # (B*k, 1)
        dtype = memory.dtype
        scores = torch.full((B, k), float("-inf"), dtype=dtype, device=dev)  # (B, k) sum log p
        scores[:, 0] = 0.0  # one live hypothesis at the start, not k copies of it
        lengths = torch.zeros(B * k, dtype=dtype, device=dev)  # (B*k,)
        finished = torch.zeros(B * k, dtype=torch.bool, device=dev)  # (B*k,)
        alive = torch.arange(B, device=dev)  # (Ba,) which input sentence each row-group of k rows belongs to
        results: list = [None] * B
        for _ in range(self._max_out(keep, max_len)):
            Ba = alive.numel()
            base = torch.arange(Ba, device=dev)[:, None] * k  # (Ba, 1) first row of each sentence
            logp = self._next_log_probs(hist, memory, keep, cache)  # (Ba*k, V)
            kk = min(k, logp.size(-1))
            top_lp, top_y = logp.topk(kk, dim=-1)  # (Ba*k, kk) only a row's kk best tokens can survive
            # a finished hypothesis has exactly one continuation: <pad>, at no cost
            pad_only = torch.full((kk,), float("-inf"), dtype=dtype, device=dev)  # (kk,)
            pad_only[0] = 0.0
            top_lp = torch.where(finished[:, None], pad_only, top_lp)  # (Ba*k, kk)
            top_y = top_y.masked_fill(finished[:, None], cfg.pad_id)  # (Ba*k, kk)
            cand = scores.view(-1, 1) + top_lp  # (Ba*k, kk) candidate sums
            cand_len = lengths + (~finished).to(dtype)  # (Ba*k,) length after this step
            norm = cand / cand_len.clamp(min=1).pow(len_alpha)[:, None]  # (Ba*k, kk) normalised
            _, idx = norm.view(Ba, k * kk).topk(k, dim=-1)  # (Ba, k) best candidates of each sentence
            rows = (base + idx // kk).view(-1)  # (Ba*k,) parent rows
            y = top_y.view(Ba, k * kk).gather(1, idx).view(-1)  # (Ba*k,) new tokens
            scores = cand.view(Ba, k * kk).gather(1, idx)  # (Ba, k)
            lengths, finished = cand_len[rows], finished[rows] | (y == cfg.eos_id)  # (Ba*k,)
            hist = torch.cat([hist[rows], y[:, None]], dim=1)  # (Ba*k, t+1)
            done = finished.view(Ba, k).all(dim=1)  # (Ba,) every hypothesis of the sentence has ended
            if done.any():
                self._collect(results, alive[done], hist.view(Ba, k, -1)[done], scores[done],
                              lengths.view(Ba, k)[done], len_alpha)
                if done.all():
                    break
                live = (~done).nonzero().squeeze(1)  # (Ba',) sentences still searching
                live_rows = (live[:, None] * k + torch.arange(k, device=dev)).view(-1)  # (Ba'*k,)
                alive, scores = alive[live], scores[live]
                hist, lengths, finished = hist[live_rows], lengths[live_rows], finished[live_rows]
                memory, keep = memory[live_rows], keep[live_rows]
                if cache is not None:
                    self.reorder_cache(cache, rows[live_rows], cross_rows=live_rows)
            elif cache is not None:
                self.reorder_cache(cache, rows)
        else:  # max_len reached: the sentences still searching keep their best hypothesis so far
            Ba = alive.numel()
            self._collect(results, alive, hist.view(Ba, k, -1), scores, lengths.view(Ba, k), len_alpha)
        return results

    def _collect(self, results: list, sentences, hist, scores, lengths, len_alpha: float) -> None:
        """Store the best of each done sentence's k hypotheses: hist (n, k, t), scores/lengths (n, k)."""
        best = (scores / lengths.clamp(min=1).pow(len_alpha)).argmax(-1)  # (n,)
        for i, b in enumerate(sentences.tolist()):
            j = int(best[i])
            results[b] = self._finish(hist[i, j, 1:].tolist(), float(scores[i, j]))

    def translate(self, src, src_mask=None, beam_size: int = 1, max_len: int | None = None,
                  len_alpha: float = 1.0, use_cache: bool = True) -> list[dict]:
        """Greedy (``beam_size=1``) or beam search, in eval mode (dropout off), restoring the mode after.
        An empty source sentence is an :class:`EmptyInput` error (one line), not a NaN translation."""
        check_not_empty(self.src_keep(src, src_mask), "source sentence")
        was_training = self.training
        self.eval()
        try:
            if beam_size <= 1:
                return self.greedy_decode(src, src_mask, max_len, use_cache)
            return self.beam_search(src, src_mask, beam_size, max_len, len_alpha, use_cache)
        finally:
            self.train(was_training)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

