"""GPT: a decoder-only Transformer language model, written out (GPT-2: Radford et al. 2019, "Language Models are
Unsupervised Multitask Learners"; the block is Vaswani et al. 2017's decoder without cross-attention).

The causal language-modelling objective: for a text x_1..x_T, maximise  sum_t log p(x_t | x_<t), i.e. minimise the
mean cross-entropy of the next token at every position (:meth:`GPT.forward`). The network, for token ids (B, T):

    h_0 = W_e[x] + W_p[0..T-1]                                   token + learned position embeddings (GPT-2)
    h_l = h'_l + MLP(LN_2(h'_l)),  h'_l = h_{l-1} + Attn(LN_1(h_{l-1}))   pre-LN residual blocks, l = 1..L
    logits = LN_f(h_L) W_e^T                                     the output layer shares W_e (weight tying)

    Attn(x) = Concat_i softmax(Q_i K_i^T / sqrt(d) + M) V_i  W_O,  M[t, s] = -inf for s > t  (causal mask)
    MLP(x)  = GELU(x W_1 + b_1) W_2 + b_2,   GELU(u) ~ 0.5 u (1 + tanh(sqrt(2/pi) (u + 0.044715 u^3)))

GPT-2 changes from GPT-1: LayerNorm moved to the *input* of each sub-layer (pre-LN) plus a final LN_f, and the
residual projections initialised with std 0.02 / sqrt(2 L) (each block adds two residual branches, so the
residual stream's variance stays O(1) with depth). GPT-2 uses the tanh approximation of GELU ("gelu_new" in
Hugging Face ``transformers``); :class:`MLP` uses it too, so an exported model computes exactly GPT-2's function.

What LLaMA-style models changed (Touvron et al. 2023), each one option of :class:`GPTConfig`:
  * ``pos="rope"``: rotary position embeddings (Su et al. 2021, RoFormer) instead of a learned table: q and k of
    position m are rotated by angles m * theta_j, so q_m . k_n depends on m - n only (:func:`apply_rope`).
  * ``norm="rmsnorm"``: RMSNorm (Zhang & Sennrich 2019), x / sqrt(mean(x^2) + eps) * g: no mean, no bias.
  * ``mlp="swiglu"``: the SwiGLU feed-forward (Shazeer 2020), W_2 (SiLU(x W_g) * (x W_1)), hidden 8C/3 so the
    three matrices cost about what GPT-2's two 4C matrices cost.

Generation (:meth:`GPT.generate`) keeps each layer's keys and values in a :class:`KVCache`: the step for token t
projects one position and attends over t cached keys instead of re-running the whole prefix.

Shapes: B batch, T positions, C = n_embd, nh = n_head, hs = C / nh (head size), V = vocab_size.
Read in this order: GPTConfig -> RMSNorm / make_norm -> Dropout -> rope -> CausalSelfAttention -> MLP -> Block -> GPT.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

POS_KINDS = ("learned", "rope")
NORM_KINDS = ("layernorm", "rmsnorm")
MLP_KINDS = ("gelu", "swiglu")
ATTN_IMPLS = ("sdpa", "manual")
DROPOUT_IMPLS = ("torch", "fast")
NORM_EPS = 1e-5  # GPT-2's layer_norm_epsilon (and nn.LayerNorm's default); RMSNorm uses the same
ROPE_BASE = 10000.0


@dataclass
class GPTConfig:
    vocab_size: int = field(default=65, metadata={"help": "tokens in the vocabulary V (set from the tokenizer)"})
    block_size: int = field(default=256, metadata={"help": "context length: the most positions the model sees"})
    n_layer: int = field(default=4, metadata={"help": "Transformer blocks L"})
    n_head: int = field(default=4, metadata={"help": "attention heads (n_embd must be divisible by it)"})
    n_embd: int = field(default=128, metadata={"help": "model width C"})
    dropout: float = field(default=0.0, metadata={"help": "dropout on embeddings, attention weights and residual "
                                                          "branches (0 = off)"})
    attn_dropout: float = field(default=-1.0, metadata={
        "help": "dropout on the attention weights alone (-1 = the same as --dropout). 0 lets SDPA take its fused "
                "kernel on CPU, which has no dropout: faster, the residual dropout still regularises"})
    bias: bool = field(default=True, metadata={"help": "biases in the linear layers and LayerNorms (GPT-2: yes)"})
    pos: str = field(default="learned", metadata={"choices": list(POS_KINDS),
                                                  "help": "position information: a learned table (GPT-2) or rotary "
                                                          "embeddings (LLaMA)"})
    norm: str = field(default="layernorm", metadata={"choices": list(NORM_KINDS),
                                                     "help": "normalisation: LayerNorm (GPT-2) or RMSNorm (LLaMA)"})
    mlp: str = field(default="gelu", metadata={"choices": list(MLP_KINDS),
                                               "help": "feed-forward: GELU 4C (GPT-2) or SwiGLU 8C/3 (LLaMA)"})
    attn_impl: str = field(default="sdpa", metadata={"choices": list(ATTN_IMPLS),
                                                     "help": "attention kernel: F.scaled_dot_product_attention, or "
                                                             "the written-out softmax (keeps the weights)"})
    tie_weights: bool = field(default=True, metadata={"help": "the output layer shares the token embedding matrix"})
    dropout_impl: str = field(default="torch", metadata={
        "choices": list(DROPOUT_IMPLS),
        "help": "how dropout masks are drawn on CPU: torch (nn.Dropout, one random number per element) or fast "
                "(four mask elements per 64-bit random integer; attention weights then take the manual path). The "
                "same distribution, a different random stream"})

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}; choose n_embd as a "
                             f"multiple of n_head")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.attn_dropout != -1.0 and not 0.0 <= self.attn_dropout < 1.0:
            raise ValueError(f"attn_dropout must be -1 (= dropout) or in [0, 1), got {self.attn_dropout}")
        for name, choices in (("pos", POS_KINDS), ("norm", NORM_KINDS), ("mlp", MLP_KINDS),
                              ("attn_impl", ATTN_IMPLS), ("dropout_impl", DROPOUT_IMPLS)):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {', '.join(choices)}; got {getattr(self, name)!r}")
        if self.pos == "rope" and self.head_size % 2:
            raise ValueError(f"pos='rope' needs an even head size, but n_embd/n_head = {self.head_size}")

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    @property
    def attn_p(self) -> float:
        """The dropout probability on the attention weights."""
        return self.dropout if self.attn_dropout == -1.0 else self.attn_dropout


# Sizes of the --preset flag. nano is nanoGPT's CPU recipe for tiny Shakespeare (4 layers, 4 heads, 128-d,
# context 64); mini is nanoGPT's GPU character config (6 layers, 6 heads, 384-d, context 256).
PRESETS = {
    "nano": dict(n_layer=4, n_head=4, n_embd=128, block_size=64),
    "micro": dict(n_layer=6, n_head=6, n_embd=192, block_size=128),
    "mini": dict(n_layer=6, n_head=6, n_embd=384, block_size=256),
}


def preset_config(name: str, **overrides) -> GPTConfig:
    """The :class:`GPTConfig` of preset ``name`` with ``overrides`` (e.g. ``vocab_size=65``) applied."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return GPTConfig(**{**PRESETS[name], **overrides})


# ----- normalisation -----------------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    """RMSNorm (Zhang & Sennrich 2019): ``y = x / sqrt(mean(x^2) + eps) * g``. Unlike LayerNorm it does not
    subtract the mean and has no bias: one reduction instead of two, and it trains as well (LLaMA uses it)."""

    def __init__(self, dim: int, eps: float = NORM_EPS):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))  # g

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight  # (..., C)


def make_norm(config: GPTConfig) -> nn.Module:
    if config.norm == "rmsnorm":
        return RMSNorm(config.n_embd)
    return nn.LayerNorm(config.n_embd, eps=NORM_EPS, bias=config.bias)


# ----- dropout ----------------------------------------------------------------------------------------------

MASK_BITS = 16  # the fast mask compares 16-bit random integers with a threshold: p is rounded to a multiple of 2^-16


def fast_keep_mask(x: torch.Tensor, p: float) -> tuple[torch.Tensor, float]:
    """A keep-mask for dropout at rate ~p, shaped like x, and the survivors' scale 1 / P(keep).

    Every 64-bit random integer is cut into four 16-bit integers u, uniform on [-2^15, 2^15); an element is kept
    when u >= -2^15 + round(p * 2^16), i.e. with probability 1 - p' for p' = round(p * 2^16) / 2^16 (within
    2^-17 of p). That is one random draw per four elements, where ``bernoulli_`` makes one per element: on this
    project's CPUs (AMD EPYC) the draws of ``nn.Dropout`` were, after the matrix products, the largest item of a
    char20 training step in ``torch.profiler`` (``benchmark.py dropout`` measures what this saves)."""
    n = x.numel()
    draws = torch.randint(-2 ** 63, 2 ** 63 - 1, ((n + 3) // 4,), dtype=torch.int64, device=x.device)  # (n/4,)
    u = draws.view(torch.int16)[:n].view(x.shape)  # four 16-bit uniforms per draw, shaped like x
    cut = round(p * 2 ** MASK_BITS)  # how many of the 2^16 values of u are dropped
    return u >= cut - 2 ** (MASK_BITS - 1), 2 ** MASK_BITS / (2 ** MASK_BITS - cut)


class Dropout(nn.Dropout):
    """Inverted dropout (Srivastava et al. 2014): in training each element is zeroed with probability p and the
    survivors are multiplied by 1 / (1 - p), so the expected output is the input; in eval mode the identity.

    ``fast=False`` is exactly ``nn.Dropout``. ``fast=True`` draws the mask with :func:`fast_keep_mask` on a CPU
    (on a GPU ``F.dropout`` is already one fused kernel, so it is used there): the same distribution (p rounded
    to 2^-16), other random numbers, so a run with it does not repeat a run without it step for step."""

    def __init__(self, p: float = 0.5, fast: bool = False):
        super().__init__(p)
        self.fast = fast

    def draws_fast(self, x: torch.Tensor) -> bool:
        """Whether a call on x draws a fast mask (training, p > 0, fast, on a CPU)."""
        return self.fast and self.training and self.p > 0 and x.device.type == "cpu"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.draws_fast(x):
            return super().forward(x)
        keep, scale = fast_keep_mask(x, self.p)
        return torch.where(keep, x * scale, 0.0)  # the gradient flows through the kept elements, times scale

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, fast={self.fast}"


# ----- rotary position embeddings ----------------------------------------------------------------------------


def rope_tables(block_size: int, head_size: int, base: float = ROPE_BASE) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the angles m * theta_j, theta_j = base^(-2j/hs), j < hs/2, for positions m < block_size.

    Returns two (block_size, hs/2) tables (RoFormer eq. 15; the pairs are (j, j + hs/2), as in GPT-NeoX/LLaMA
    in Hugging Face, rather than adjacent channels: the same rotation on a permutation of the channels)."""
    theta = base ** (-torch.arange(0, head_size, 2, dtype=torch.float64) / head_size)  # (hs/2,)
    angles = torch.arange(block_size, dtype=torch.float64)[:, None] * theta[None, :]  # (block_size, hs/2)
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair (x_j, x_{j+hs/2}) of x (B, nh, T, hs) by the angle of its position.

    ``cos``/``sin`` are the (T, hs/2) rows of :func:`rope_tables` for the positions of x (absolute positions,
    also when x is one new token decoded against a cache). Because a rotation by m and one by n leave the
    dot product depending only on m - n, attention scores see relative positions."""
    x1, x2 = x.chunk(2, dim=-1)  # 2 x (B, nh, T, hs/2)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)  # (T, hs/2), broadcast over B and nh
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)  # (B, nh, T, hs)


# ----- the key/value cache -----------------------------------------------------------------------------------


class KVCache:
    """Keys and values of the positions seen so far, one preallocated buffer pair per layer.

    ``k[l]``/``v[l]`` are (B, nh, block_size, hs) buffers (allocated on first use, in the dtype of the keys, so
    autocast works); ``pos`` positions are filled. A forward pass of T new tokens writes them at
    ``pos..pos+T-1`` of every layer and then advances ``pos`` (:meth:`GPT.forward`). Writing into a buffer
    instead of ``torch.cat`` of the whole cache keeps a decoding step O(1) in memory traffic for the write.
    Memory: 2 * L * B * block_size * C numbers.
    """

    def __init__(self, n_layer: int, max_len: int):
        self.max_len = max_len
        self.pos = 0
        self.k: list[torch.Tensor | None] = [None] * n_layer
        self.v: list[torch.Tensor | None] = [None] * n_layer

    def reset(self) -> None:
        self.pos = 0

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, nh, T, hs) of the new positions; return the keys/values of all positions so far."""
        B, nh, T, hs = k.shape
        end = self.pos + T
        if end > self.max_len:
            raise ValueError(f"the cache holds {self.max_len} positions; cannot add {T} to {self.pos}")
        buf_k = self.k[layer]
        if buf_k is None or buf_k.shape[0] != B or buf_k.dtype != k.dtype or buf_k.device != k.device:
            self.k[layer] = k.new_empty(B, nh, self.max_len, hs)  # (B, nh, block_size, hs)
            self.v[layer] = v.new_empty(B, nh, self.max_len, hs)
        self.k[layer][:, :, self.pos:end] = k
        self.v[layer][:, :, self.pos:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]  # 2 x (B, nh, pos+T, hs), views

    def reorder(self, index: torch.Tensor) -> None:
        """Keep (and repeat) the rows ``index`` (B',) of every layer's buffers: beam search moves each surviving
        hypothesis onto its parent's keys and values."""
        self.k = [None if k is None else k.index_select(0, index) for k in self.k]
        self.v = [None if v is None else v.index_select(0, index) for v in self.v]


# ----- the block -------------------------------------------------------------------------------------------


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention: ``softmax(Q K^T / sqrt(hs) + M) V`` per head, then W_O.

    ``c_attn`` holds [W_Q; W_K; W_V] for all heads (one matrix product), ``c_proj`` is W_O (GPT-2's names).
    ``attn_impl="sdpa"`` calls ``F.scaled_dot_product_attention`` (a fused kernel); ``"manual"`` writes the
    softmax out. Set ``keep_weights = True`` to take the manual path and keep the last attention weights
    (B, nh, T, S) in ``self.weights`` (attention maps); the output is the same either way.
    """

    def __init__(self, config: GPTConfig, layer_idx: int):
        super().__init__()
        C = config.n_embd
        self.layer_idx, self.n_head, self.head_size = layer_idx, config.n_head, config.head_size
        self.attn_impl = config.attn_impl
        self.c_attn = nn.Linear(C, 3 * C, bias=config.bias)  # x -> q, k, v of every head
        self.c_proj = nn.Linear(C, C, bias=config.bias)  # W_O, a residual projection
        fast = config.dropout_impl == "fast"
        self.attn_dropout = Dropout(config.attn_p, fast)
        self.resid_dropout = Dropout(config.dropout, fast)
        # keep[t, s]: query t may look at key s <= t (on and below the diagonal)
        self.register_buffer("causal", torch.ones(config.block_size, config.block_size, dtype=torch.bool).tril(),
                             persistent=False)  # (block_size, block_size)
        self.keep_weights = False
        self.weights: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, rope: tuple | None = None, kv_cache: KVCache | None = None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)  # 3 x (B, T, C)
        q = q.view(B, T, self.n_head, self.head_size).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, self.head_size).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, self.head_size).transpose(1, 2)  # (B, nh, T, hs)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)  # rotated by their absolute positions
        start = 0
        if kv_cache is not None:
            start = kv_cache.pos
            k, v = kv_cache.update(self.layer_idx, k, v)  # 2 x (B, nh, S, hs), S = start + T
        S = k.size(2)
        # SDPA drops attention weights with bernoulli_ inside the kernel: a fast mask needs the written-out path
        if self.attn_impl == "manual" or self.keep_weights or self.attn_dropout.draws_fast(x):
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_size))  # (B, nh, T, S)
            att = att.masked_fill(~self.causal[start:start + T, :S], float("-inf"))  # no peeking at the future
            att = F.softmax(att, dim=-1)  # (B, nh, T, S), each row sums to 1
            if self.keep_weights:
                self.weights = att.detach()
            y = self.attn_dropout(att) @ v  # (B, nh, T, S) @ (B, nh, S, hs) -> (B, nh, T, hs)
        else:
            p = self.attn_dropout.p if self.training else 0.0  # SDPA drops the weights inside the kernel
            if start == 0:  # the whole (prefix of the) sequence: the plain causal mask
                y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)  # (B, nh, T, hs)
            elif T == 1:  # one new token: it may see every cached position, no mask needed
                y = F.scaled_dot_product_attention(q, k, v, dropout_p=p)  # (B, nh, 1, hs)
            else:  # several new tokens after a cached prefix: query t sees keys 0..start+t
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=self.causal[start:start + T, :S],
                                                   dropout_p=p)  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C), heads side by side = Concat(heads)
        return self.resid_dropout(self.c_proj(y))  # (B, T, C)


def swiglu_hidden(n_embd: int) -> int:
    """SwiGLU's hidden size: 2/3 of 4C (three matrices instead of two, same parameters), rounded up to 8."""
    return 8 * math.ceil(8 * n_embd / 3 / 8)


class MLP(nn.Module):
    """The position-wise feed-forward network.

    ``mlp="gelu"`` (GPT-2): ``c_proj(GELU(c_fc(x)))`` with hidden size 4C and GELU's tanh approximation.
    ``mlp="swiglu"`` (LLaMA): ``c_proj(SiLU(c_gate(x)) * c_fc(x))``, hidden :func:`swiglu_hidden`: the gate
    decides, per hidden unit, how much of the linear path passes (a gated linear unit with SiLU, Shazeer 2020).
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        C = config.n_embd
        self.kind = config.mlp
        hidden = 4 * C if config.mlp == "gelu" else swiglu_hidden(C)
        self.c_fc = nn.Linear(C, hidden, bias=config.bias)
        if config.mlp == "swiglu":
            self.c_gate = nn.Linear(C, hidden, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh")  # GPT-2's "gelu_new"
        self.c_proj = nn.Linear(hidden, C, bias=config.bias)  # a residual projection
        self.dropout = Dropout(config.dropout, config.dropout_impl == "fast")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "swiglu":
            h = F.silu(self.c_gate(x)) * self.c_fc(x)  # (B, T, hidden)
        else:
            h = self.gelu(self.c_fc(x))  # (B, T, 4C)
        return self.dropout(self.c_proj(h))  # (B, T, C)


class Block(nn.Module):
    """One pre-LN Transformer block: ``x = x + Attn(LN_1(x)); x = x + MLP(LN_2(x))``.

    Normalising the input of each branch (not its output, as in the 2017 post-LN Transformer) leaves a clean
    residual path from the embeddings to the last layer, so deep stacks train without a careful warm-up."""

    def __init__(self, config: GPTConfig, layer_idx: int):
        super().__init__()
        self.ln_1 = make_norm(config)
        self.attn = CausalSelfAttention(config, layer_idx)
        self.ln_2 = make_norm(config)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, rope: tuple | None = None, kv_cache: KVCache | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), rope, kv_cache)  # (B, T, C)
        return x + self.mlp(self.ln_2(x))  # (B, T, C)


# ----- the model -------------------------------------------------------------------------------------------


class GPT(nn.Module):
    """The decoder-only language model. Contract: ``forward(idx, targets=None) -> (logits, loss)``."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),  # W_e, token embeddings
            drop=Dropout(config.dropout, config.dropout_impl == "fast"),
            h=nn.ModuleList([Block(config, i) for i in range(config.n_layer)]),
            ln_f=make_norm(config),
        ))
        if config.pos == "learned":
            self.transformer["wpe"] = nn.Embedding(config.block_size, config.n_embd)  # W_p, one row per position
        else:
            cos, sin = rope_tables(config.block_size, config.head_size)
            self.register_buffer("rope_cos", cos, persistent=False)  # (block_size, hs/2)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_weights:
            # Press & Wolf 2017: the output layer scores token v by h . e_v with the embedding e_v itself
            self.lm_head.weight = self.transformer.wte.weight
        self.apply(self._init_weights)
        # GPT-2 §2.3: "scale the weights of residual layers at initialization by a factor of 1/sqrt(N)",
        # N = 2 L residual branches (one attention and one MLP per block)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    # ----- sizes -------------------------------------------------------------------------------------------

    def num_params(self, non_embedding: bool = True) -> int:
        """Number of parameters (a tied matrix counts once). ``non_embedding=True`` leaves out the embedding
        *lookup* tables: the position table and, when untied, the token table (a lookup costs no FLOPs). A tied
        token matrix stays in: the output layer multiplies by it (what nanoGPT and the 6N rule count)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            if "wpe" in self.transformer:
                n -= self.transformer.wpe.weight.numel()
            if not self.config.tie_weights:
                n -= self.transformer.wte.weight.numel()
        return n

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token, forward + backward: ``6 N + 12 L nh hs T`` (PaLM, Chowdhery et al. 2022,
        appendix B): 2N multiply-adds forward and 4N backward for the weights, plus the attention scores and the
        weighted sum (2 matrix products of T x hs per head and layer, times 3 for forward + backward, times 2
        FLOPs per multiply-add). MFU = achieved (flops_per_token * tokens/s) / the machine's peak FLOP/s."""
        cfg = self.config
        T = seq_len or cfg.block_size
        return 6.0 * self.num_params(non_embedding=True) + 12.0 * cfg.n_layer * cfg.n_head * cfg.head_size * T

    def configure_optimizer(self, weight_decay: float, lr: float, betas: tuple = (0.9, 0.95),
                            fused: bool = False) -> torch.optim.AdamW:
        """AdamW with two groups: weight decay on every matrix (linear weights, embeddings: ``dim >= 2``), none on
        biases and norm gains (``dim < 2``): decaying a gain towards 0 would just fight the normalisation."""
        params = [p for p in self.parameters() if p.requires_grad]  # parameters() yields a tied matrix once
        groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        extra = {"fused": True} if fused else {}
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), **extra)

    # ----- the forward pass --------------------------------------------------------------------------------

    def new_cache(self) -> KVCache:
        return KVCache(self.config.n_layer, self.config.block_size)

    def hidden_states(self, idx: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        """idx (B, T) token ids -> LN_f(h_L) (B, T, C). With ``kv_cache``, idx are the positions after the cached
        ones (their absolute positions start at ``kv_cache.pos``) and the cache is advanced by T."""
        B, T = idx.shape
        start = kv_cache.pos if kv_cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(f"sequence of {start + T} positions is longer than block_size="
                             f"{self.config.block_size}; crop it to the last {self.config.block_size} tokens")
        x = self.transformer.wte(idx)  # (B, T, C)
        rope = None
        if self.config.pos == "learned":
            pos = torch.arange(start, start + T, dtype=torch.long, device=idx.device)  # (T,)
            x = x + self.transformer.wpe(pos)  # (B, T, C) + (T, C)
        else:
            rope = self.rope_cos[start:start + T], self.rope_sin[start:start + T]  # 2 x (T, hs/2)
        x = self.transformer.drop(x)
        for block in self.transformer.h:
            x = block(x, rope, kv_cache)  # (B, T, C)
        if kv_cache is not None:
            kv_cache.pos += T
        return self.transformer.ln_f(x)  # (B, T, C)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                kv_cache: KVCache | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx (B, T) -> ``(logits (B, T, V), loss)``; loss = mean next-token cross-entropy over the positions
        whose target is not -1 (``targets`` (B, T) = idx shifted left by one), None without targets."""
        logits = self.lm_head(self.hidden_states(idx, kv_cache))  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    @torch.no_grad()
    def attention_maps(self, idx: torch.Tensor) -> list[torch.Tensor]:
        """The attention weights of every layer for idx (B, T): a list of L tensors (B, nh, T, T) (manual path)."""
        attns = [block.attn for block in self.transformer.h]
        for a in attns:
            a.keep_weights = True
        try:
            self.hidden_states(idx[:, -self.config.block_size:])
            return [a.weights for a in attns]
        finally:
            for a in attns:
                a.keep_weights, a.weights = False, None

    # ----- generation --------------------------------------------------------------------------------------

    def _next_logits(self, seq: torch.Tensor, kv_cache: KVCache | None) -> torch.Tensor:
        """Logits (B, V) of the token after seq (B, t), conditioned on its last block_size tokens.

        Without a cache every call re-runs the whole window. With one, the first call fills the cache (prefill)
        and later calls feed only the newest token. Once the window is full the cache cannot slide: learned
        position rows are tied to absolute positions, and even with RoPE the cached keys of a layer > 0 were
        computed from tokens that have left the window. So the cache is refilled with the last block_size
        tokens, which gives exactly the uncached result (at the uncached cost for every step past the context).
        """
        bs = self.config.block_size
        if kv_cache is None:
            h = self.hidden_states(seq[:, -bs:])  # (B, t, C)
        elif kv_cache.pos == 0 or kv_cache.pos >= bs:  # prefill, or refill the slid window
            kv_cache.reset()
            h = self.hidden_states(seq[:, -bs:], kv_cache)  # (B, min(t, bs), C)
        else:
            h = self.hidden_states(seq[:, -1:], kv_cache)  # (B, 1, C): one position against the cache
        return self.lm_head(h[:, -1]).float()  # (B, V)

    @torch.no_grad()
    def generate_stream(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int = 0,
                        top_p: float = 1.0, repetition_penalty: float = 1.0, use_cache: bool = True,
                        eot_id: int | None = None, generator: torch.Generator | None = None
                        ) -> Iterator[torch.Tensor]:
        """Yield the next token of every row (B,) one step at a time (for streaming to a terminal).

        A row that produced ``eot_id`` keeps producing ``eot_id``; the stream ends when every row has (or after
        ``max_new_tokens``). Sampling: see :func:`sample_next`; ``generator`` makes it reproducible. A prompt
        longer than block_size is conditioned on its last block_size tokens only."""
        check_sampling(max_new_tokens, temperature, top_k, top_p, repetition_penalty)
        if idx.dim() != 2 or idx.size(1) == 0:
            raise ValueError(f"idx must be (B, T) token ids with T >= 1, got shape {tuple(idx.shape)}")
        B = idx.size(0)
        cache = self.new_cache() if use_cache else None
        seen = None
        if repetition_penalty != 1.0:  # which tokens appeared so far (prompt included), per row
            seen = torch.zeros(B, self.config.vocab_size, dtype=torch.bool, device=idx.device)
            seen.scatter_(1, idx, True)
        finished = torch.zeros(B, dtype=torch.bool, device=idx.device)
        seq = idx[:, -self.config.block_size:]
        for _ in range(max_new_tokens):
            logits = self._next_logits(seq, cache)  # (B, V)
            if seen is not None:
                logits = apply_repetition_penalty(logits, seen, repetition_penalty)
            tok = sample_next(logits, temperature, top_k, top_p, generator)  # (B,)
            if eot_id is not None:
                tok = tok.masked_fill(finished, eot_id)
                finished |= tok == eot_id
            if seen is not None:
                seen.scatter_(1, tok[:, None], True)
            yield tok
            if eot_id is not None and bool(finished.all()):
                return
            seq = torch.cat([seq, tok[:, None]], dim=1)[:, -self.config.block_size:]  # (B, <= block_size)

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int = 0,
                 top_p: float = 1.0, repetition_penalty: float = 1.0, use_cache: bool = True,
                 eot_id: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """idx (B, T) -> (B, T + n) with n <= max_new_tokens new tokens (fewer when every row reached eot)."""
        new = list(self.generate_stream(idx, max_new_tokens, temperature, top_k, top_p, repetition_penalty,
                                        use_cache, eot_id, generator))
        return torch.cat([idx, torch.stack(new, dim=1)], dim=1) if new else idx  # (B, T + n)


# ----- sampling --------------------------------------------------------------------------------------------


def check_sampling(max_new_tokens: int, temperature: float, top_k: int, top_p: float,
                   repetition_penalty: float) -> None:
    """One-sentence ValueError for impossible sampling settings (generate.py turns it into a UserError)."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if not temperature >= 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 = off), got {top_k}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] (1 = off), got {top_p}")
    if not repetition_penalty > 0:
        raise ValueError(f"repetition_penalty must be > 0 (1 = off), got {repetition_penalty}")


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's repetition penalty (Keskar et al. 2019), as Hugging Face applies it: the logit of every token
    already in the text is divided by ``penalty`` when positive and multiplied by it when negative (both make
    it less likely for penalty > 1). logits (B, V) float, seen (B, V) bool."""
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)  # (B, V)
    return torch.where(seen, penalised, logits)


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Pick one token per row from logits (B, V) -> (B,).

    temperature 0: greedy (argmax, no division). Otherwise p = softmax(logits / temperature) restricted to the
    ``top_k`` most likely tokens (0 = all) and then to the nucleus (Holtzman et al. 2020): the smallest set of
    most likely tokens whose probability reaches ``top_p`` (1 = all); renormalised and sampled."""
    if temperature == 0:
        return logits.argmax(dim=-1)  # (B,)
    logits = logits / temperature  # (B, V)
    if top_k and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1) the k-th largest logit
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)  # (B, V)
        probs = sorted_logits.softmax(dim=-1)
        drop = probs.cumsum(dim=-1) - probs >= top_p  # the mass before this token already reaches top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))  # the most likely token always stays
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)  # (B, V)
    probs = logits.softmax(dim=-1)  # (B, V)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)  # (B,)
