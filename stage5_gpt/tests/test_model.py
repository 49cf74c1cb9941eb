"""Proofs for the stage-5 GPT: each test names, in its docstring, the wrong implementation it would catch.

Equivalence tests run in float64 with dropout 0, so "equal" means equal to ~1e-10, not "close enough".
"""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from stage5_gpt.models import (
    GPT,
    MLP,
    PRESETS,
    Dropout,
    GPTConfig,
    RMSNorm,
    apply_repetition_penalty,
    apply_rope,
    fast_keep_mask,
    preset_config,
    rope_tables,
    sample_next,
    swiglu_hidden,
)

TOL = dict(rtol=1e-9, atol=1e-10)
VARIANTS = [dict(), dict(pos="rope"), dict(norm="rmsnorm", mlp="swiglu", bias=False, tie_weights=False)]
VARIANT_IDS = ["gpt2", "rope", "rmsnorm-swiglu-untied"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: thread start-up costs more than the arithmetic on the shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(seed=0, double=True, **kw):
    base = dict(vocab_size=23, block_size=16, n_layer=2, n_head=2, n_embd=16, dropout=0.0)
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**{**base, **kw}))
    return model.double() if double else model


def ids(B=2, T=12, V=23, seed=1):
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


# ----- attention ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kw", VARIANTS, ids=VARIANT_IDS)
def test_manual_attention_equals_sdpa_outputs_and_every_gradient(kw):
    """Catches a manual path that scales by 1/hs instead of 1/sqrt(hs), masks the wrong triangle, or a fast path
    that is not given the causal mask: logits, loss and the gradient of every parameter must agree."""
    fast = tiny(**kw, attn_impl="sdpa")
    slow = tiny(**kw, attn_impl="manual")
    slow.load_state_dict(fast.state_dict())
    x, y = ids(), ids(seed=2)
    out = {}
    for name, m in (("sdpa", fast), ("manual", slow)):
        logits, loss = m(x, y)
        loss.backward()
        out[name] = logits, loss, {n: p.grad for n, p in m.named_parameters()}
    torch.testing.assert_close(out["manual"][0], out["sdpa"][0], **TOL)
    torch.testing.assert_close(out["manual"][1], out["sdpa"][1], **TOL)
    grads_m, grads_s = out["manual"][2], out["sdpa"][2]
    assert grads_m.keys() == grads_s.keys() and len(grads_s) == len(list(fast.parameters()))
    for n in grads_s:
        assert grads_s[n] is not None and grads_s[n].abs().sum() > 0, n
        torch.testing.assert_close(grads_m[n], grads_s[n], **TOL, msg=lambda m: f"{n}: {m}")


@pytest.mark.parametrize("impl", ["sdpa", "manual"])
@pytest.mark.parametrize("kw", VARIANTS[:2], ids=VARIANT_IDS[:2])
def test_changing_future_tokens_leaves_earlier_logits_unchanged(impl, kw):
    """Catches a causal mask that leaks the future (e.g. is_causal dropped, triu instead of tril): the logits at
    positions < t may not depend on tokens at positions >= t; the logits at t itself must."""
    m = tiny(**kw, attn_impl=impl)
    x = ids(B=1, T=12)
    t = 7
    x2 = x.clone()
    x2[0, t:] = (x2[0, t:] + 5) % 23
    a, _ = m(x)
    b, _ = m(x2)
    torch.testing.assert_close(a[:, :t], b[:, :t], rtol=0, atol=0)
    assert (a[:, t] - b[:, t]).abs().max() > 1e-6


def test_attention_maps_are_causal_distributions_and_the_manual_weights():
    """Catches maps taken before the softmax or before the mask: every row sums to 1, nothing above the diagonal,
    one (B, nh, T, T) tensor per layer, and the output of a forward pass is unchanged by asking for them."""
    m = tiny()
    x = ids(T=9)
    maps = m.attention_maps(x)
    assert len(maps) == 2 and maps[0].shape == (2, 2, 9, 9)
    for w in maps:
        torch.testing.assert_close(w.sum(-1), torch.ones(2, 2, 9, dtype=w.dtype))
        assert w.triu(1).abs().max() == 0
    q, k, _ = m.transformer.h[0].attn.c_attn(m.transformer.h[0].ln_1(
        m.transformer.wte(x) + m.transformer.wpe(torch.arange(9)))).split(16, dim=2)
    q = q.view(2, 9, 2, 8).transpose(1, 2)
    k = k.view(2, 9, 2, 8).transpose(1, 2)
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(8)
    scores = scores.masked_fill(torch.ones(9, 9, dtype=torch.bool).triu(1), float("-inf"))
    torch.testing.assert_close(maps[0], scores.softmax(-1), **TOL)
    assert all(not b.attn.keep_weights and b.attn.weights is None for b in m.transformer.h)


# ----- the key/value cache -----------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", ["sdpa", "manual"])
@pytest.mark.parametrize("kw", VARIANTS, ids=VARIANT_IDS)
def test_cached_logits_equal_full_recomputation(kw, impl):
    """Catches a cache that forgets the position offset (learned rows or rotary angles of position 0 for every new
    token), a chunk after a cached prefix attending to its own future, or a cache that is not advanced: a prefix
    of 5, a chunk of 3 and single tokens give the logits of one full forward pass."""
    m = tiny(**kw, attn_impl=impl, double=False).eval()
    x = ids(T=14)
    full, _ = m(x)  # (B, 14, V)
    cache = m.new_cache()
    parts = [m(x[:, :5], kv_cache=cache)[0], m(x[:, 5:8], kv_cache=cache)[0]]
    parts += [m(x[:, t:t + 1], kv_cache=cache)[0] for t in range(8, 14)]
    assert cache.pos == 14
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kw", VARIANTS[:2], ids=VARIANT_IDS[:2])
def test_cached_greedy_tokens_equal_uncached_also_past_the_context(kw):
    """Catches a cache that overflows or slides wrongly once prompt + new tokens exceed block_size (16 here):
    40 greedy tokens from a 10-token prompt are the same with and without the cache."""
    m = tiny(**kw, double=False).eval()
    x = ids(T=10)
    cached = m.generate(x, 40, temperature=0, use_cache=True)
    plain = m.generate(x, 40, temperature=0, use_cache=False)
    assert cached.shape == (2, 50)
    assert torch.equal(cached, plain)
    assert torch.equal(cached[:, :10], x)


def test_prompt_longer_than_the_context_is_cropped():
    """Catches a prompt that is fed whole (position table overflow): 30 tokens, block_size 16, gives the tokens a
    16-token prompt (its last 16) gives."""
    m = tiny(double=False).eval()
    x = ids(T=30)
    long = m.generate(x, 5, temperature=0)
    short = m.generate(x[:, -16:], 5, temperature=0)
    assert long.shape == (2, 35) and torch.equal(long[:, 30:], short[:, 16:])
    with pytest.raises(ValueError, match="longer than block_size=16"):
        m(x)


# ----- the pieces against hand formulas ---------------------------------------------------------------------


def test_rmsnorm_equals_torch_and_the_formula():
    """Catches a norm that subtracts the mean (LayerNorm), divides by the std, or puts eps outside the root."""
    x = torch.randn(3, 5, 16, dtype=torch.float64)
    ours = RMSNorm(16).double()
    ref = nn.RMSNorm(16, eps=1e-5).double()
    with torch.no_grad():
        ours.weight.copy_(torch.linspace(0.5, 2.0, 16))
        ref.weight.copy_(ours.weight)
    torch.testing.assert_close(ours(x), ref(x), **TOL)
    hand = x / torch.sqrt((x ** 2).mean(-1, keepdim=True) + 1e-5) * ours.weight
    torch.testing.assert_close(ours(x), hand, **TOL)
    assert isinstance(tiny(norm="rmsnorm").transformer.h[0].ln_1, RMSNorm)
    assert tiny(bias=False).transformer.ln_f.bias is None


def test_swiglu_and_gelu_mlps_equal_their_formulas():
    """Catches SiLU on the wrong branch, plain (erf) GELU where GPT-2 uses the tanh approximation, or a hidden
    size that does not keep the parameters of 4C near those of GPT-2's MLP."""
    torch.manual_seed(0)
    cfg = GPTConfig(n_embd=24, n_head=2, mlp="swiglu")
    mlp = MLP(cfg).double()
    x = torch.randn(2, 3, 24, dtype=torch.float64)
    silu = lambda u: u * torch.sigmoid(u)  # noqa: E731
    hand = (silu(x @ mlp.c_gate.weight.T + mlp.c_gate.bias) * (x @ mlp.c_fc.weight.T + mlp.c_fc.bias)) \
        @ mlp.c_proj.weight.T + mlp.c_proj.bias
    torch.testing.assert_close(mlp(x), hand, **TOL)
    assert swiglu_hidden(24) == 64 and swiglu_hidden(128) == 344 and swiglu_hidden(384) == 1024
    gelu = MLP(GPTConfig(n_embd=24, n_head=2)).double()
    u = x @ gelu.c_fc.weight.T + gelu.c_fc.bias
    gelu_new = 0.5 * u * (1 + torch.tanh(math.sqrt(2 / math.pi) * (u + 0.044715 * u ** 3)))  # GPT-2's gelu
    torch.testing.assert_close(gelu(x), gelu_new @ gelu.c_proj.weight.T + gelu.c_proj.bias, **TOL)
    assert (gelu(x) - gelu.c_proj(F.gelu(u))).abs().max() > 1e-8  # the erf GELU is a different function


def test_rope_is_a_rotation_by_position_and_depends_on_relative_offsets_only():
    """Catches angles with the wrong frequencies (theta_j = 10000^(-2j/hs)), rotation in the wrong direction, or
    positions that are not applied: RoPE equals multiplying the complex numbers x_j + i x_{j+hs/2} by
    exp(i m theta_j), and q_m . k_n is unchanged when both positions shift by the same amount."""
    hs, T = 8, 10
    cos, sin = rope_tables(T + 5, hs)
    x = torch.randn(1, 1, T, hs, dtype=torch.float64)
    rotated = apply_rope(x, cos[:T].double(), sin[:T].double())
    theta = 10000.0 ** (-torch.arange(0, hs, 2, dtype=torch.float64) / hs)
    angle = torch.arange(T, dtype=torch.float64)[:, None] * theta  # (T, hs/2)
    z = torch.complex(x[..., : hs // 2], x[..., hs // 2:]) * torch.polar(torch.ones_like(angle), angle)
    torch.testing.assert_close(rotated, torch.cat([z.real, z.imag], dim=-1), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(rotated[..., 0, :], x[..., 0, :])  # position 0 is not rotated
    q, k = torch.randn(hs, dtype=torch.float64), torch.randn(hs, dtype=torch.float64)

    def score(m, n):
        qm = apply_rope(q.view(1, 1, 1, hs), cos[m:m + 1].double(), sin[m:m + 1].double())
        kn = apply_rope(k.view(1, 1, 1, hs), cos[n:n + 1].double(), sin[n:n + 1].double())
        return (qm * kn).sum()

    torch.testing.assert_close(score(7, 3), score(11, 7), rtol=1e-6, atol=1e-6)
    assert (score(7, 3) - score(7, 6)).abs() > 1e-3
    assert "wpe" not in tiny(pos="rope").transformer


# ----- initialisation, sizes, optimizer ------------------------------------------------------------------------


def test_gpt2_initialisation_scales_the_residual_projections():
    """Catches the residual projections left at std 0.02 (GPT-2 scales them by 1/sqrt(2 L)), non-zero biases, or
    an output layer that is not the (tied) embedding matrix."""
    torch.manual_seed(0)
    L = 8
    m = GPT(GPTConfig(vocab_size=300, block_size=32, n_layer=L, n_head=4, n_embd=128))
    stds = {n: p.std().item() for n, p in m.named_parameters() if n.endswith("weight") and p.dim() == 2}
    for n, s in stds.items():
        want = 0.02 / math.sqrt(2 * L) if n.endswith("c_proj.weight") else 0.02
        assert abs(s - want) / want < 0.05, (n, s, want)
    assert all(p.abs().max() == 0 for n, p in m.named_parameters() if n.endswith("bias"))
    assert m.lm_head.weight is m.transformer.wte.weight
    assert GPT(GPTConfig(tie_weights=False, n_layer=1)).lm_head.weight is not None


def test_parameter_counts_with_and_without_embeddings_and_flops():
    """Catches a tied matrix counted twice, the position table counted as compute, or a FLOPs formula that is
    not 6N + 12 L nh hs T."""
    V, bs, L, C = 23, 16, 2, 16
    m = tiny(double=False)
    per_block = 2 * 2 * C + (3 * C * C + 3 * C) + (C * C + C) + (4 * C * C + 4 * C) + (4 * C * C + C)
    total = V * C + bs * C + L * per_block + 2 * C
    assert m.num_params(non_embedding=False) == total == sum(p.numel() for p in set(m.parameters()))
    assert m.num_params() == total - bs * C
    untied = tiny(double=False, tie_weights=False)
    assert untied.num_params(non_embedding=False) == total + V * C
    assert untied.num_params() == total - bs * C  # the token lookup left out, the separate lm_head counted
    assert m.flops_per_token() == 6 * (total - bs * C) + 12 * L * 2 * 8 * bs
    assert m.flops_per_token(seq_len=4) == 6 * (total - bs * C) + 12 * L * 2 * 8 * 4


def test_optimizer_decays_matrices_only():
    """Catches weight decay on biases / norm gains, a tied matrix given twice, or parameters left out."""
    m = tiny(double=False)
    opt = m.configure_optimizer(weight_decay=0.1, lr=1e-3, betas=(0.9, 0.95))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0 and decay["lr"] == 1e-3
    names = {id(p): n for n, p in m.named_parameters()}
    assert {names[id(p)] for p in decay["params"]} == {n for n, p in m.named_parameters() if p.dim() == 2}
    assert all(names[id(p)].endswith(("bias", "ln_1.weight", "ln_2.weight", "ln_f.weight"))
               for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(m.parameters()))
    assert opt.defaults["betas"] == (0.9, 0.95)


def test_overfits_a_tiny_batch_and_ignores_minus_one_targets():
    """Catches a model or loss wired wrong (targets not shifted, no gradient to some block): 2 x 12 tokens are
    learned to a loss near 0 in 150 steps; targets of -1 are left out of the mean."""
    m = tiny(double=False)
    x = ids(T=13)
    inp, tgt = x[:, :-1], x[:, 1:]
    opt = m.configure_optimizer(weight_decay=0.0, lr=1e-2)
    for _ in range(150):
        _, loss = m(inp, tgt)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05
    masked = tgt.clone()
    masked[:, 6:] = -1
    logits, loss = m(inp, masked)
    want = F.cross_entropy(logits[:, :6].reshape(-1, 23), tgt[:, :6].reshape(-1))
    torch.testing.assert_close(loss, want)


# ----- configs ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kw, message", [
    (dict(n_embd=130, n_head=4), "n_embd=130 is not divisible by n_head=4"),
    (dict(dropout=1.5), r"dropout must be in \[0, 1\), got 1.5"),
    (dict(attn_dropout=1.0), r"attn_dropout must be -1 \(= dropout\) or in \[0, 1\), got 1.0"),
    (dict(attn_dropout=-0.5), r"attn_dropout must be -1 \(= dropout\) or in \[0, 1\), got -0.5"),
    (dict(pos="alibi"), "pos must be one of learned, rope; got 'alibi'"),
    (dict(norm="batchnorm"), "norm must be one of layernorm, rmsnorm; got 'batchnorm'"),
    (dict(mlp="relu"), "mlp must be one of gelu, swiglu; got 'relu'"),
    (dict(attn_impl="flash"), "attn_impl must be one of sdpa, manual; got 'flash'"),
    (dict(n_layer=0), "n_layer must be a positive integer, got 0"),
    (dict(pos="rope", n_embd=12, n_head=4), "even head size"),
])
def test_bad_configs_are_one_line_value_errors(kw, message):
    with pytest.raises(ValueError, match=message) as e:
        GPTConfig(**kw)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("dropout_impl", ["torch", "fast"])
@pytest.mark.parametrize("attn_impl", ["sdpa", "manual"])
def test_attn_dropout_acts_on_the_attention_weights_alone(attn_impl, dropout_impl):
    """Catches --attn_dropout being ignored (the weights still dropped at --dropout's rate), or applied to the
    residual branch instead: in training mode, with the residual dropout taken out, attention is deterministic
    (equal to eval mode) exactly when attn_dropout is 0, on both kernels and both kinds of mask; the default -1
    means --dropout."""
    x = torch.randn(2, 12, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = {}
    for name, extra in (("off", dict(attn_dropout=0.0)), ("default", dict()), ("own", dict(attn_dropout=0.5))):
        attn = tiny(dropout=0.3, attn_impl=attn_impl, dropout_impl=dropout_impl, **extra).transformer.h[0].attn
        assert attn.resid_dropout.p == 0.3  # the residual branch keeps --dropout
        attn.resid_dropout = nn.Identity()
        with torch.no_grad():
            out[name] = (attn.train()(x), attn.eval()(x))
    assert torch.equal(*out["off"])
    assert not torch.allclose(*out["default"]) and not torch.allclose(*out["own"])
    assert GPTConfig(dropout=0.3).attn_p == 0.3 and GPTConfig(dropout=0.3, attn_dropout=0.1).attn_p == 0.1


@pytest.mark.parametrize("p", [0.05, 0.3])
def test_fast_dropout_mask_drops_p_in_every_lane_and_keeps_the_mean(p):
    """Catches a fast mask that keeps p instead of 1 - p, scales by 1/p or 1/(1 - p) with the unrounded p, or takes
    its 16-bit lanes from a random integer that is not uniform over all 64 bits (``random_()`` on int64 leaves the
    top bit 0, so every fourth element would never be dropped): each of the four lanes drops ~p (within 5 standard
    deviations), survivors are scaled so that the mean is exactly preserved in expectation."""
    torch.manual_seed(0)
    x = torch.ones(400_000)
    keep, scale = fast_keep_mask(x, p)
    p_rounded = round(p * 2 ** 16) / 2 ** 16
    assert keep.shape == x.shape and keep.dtype == torch.bool
    assert scale == pytest.approx(1 / (1 - p_rounded), rel=1e-12) and abs(p_rounded - p) <= 2 ** -17
    sd = math.sqrt(p * (1 - p) / (x.numel() / 4))
    for lane in range(4):
        assert abs(1 - keep[lane::4].float().mean().item() - p) < 5 * sd, lane
    y = Dropout(p, fast=True).train()(x)
    assert torch.equal(y, torch.where(y == 0, 0.0, torch.tensor(scale, dtype=x.dtype)))  # only 0 and the scale
    assert abs(y.mean().item() - 1) < 5 * math.sqrt(p / (1 - p) / x.numel())


def test_fast_dropout_gradient_eval_mode_and_the_torch_mask():
    """Catches a fast dropout whose gradient is not the mask times the scale (e.g. computed without autograd), that
    drops in eval mode, or a ``fast=False`` path that differs from ``nn.Dropout`` (the default must reproduce the
    published runs); the fast mask also repeats under the same seed (exact --resume)."""
    x = torch.randn(3, 5, 64, dtype=torch.float64, requires_grad=True)
    drop = Dropout(0.25, fast=True).train()
    torch.manual_seed(7)
    y = drop(x)
    y.backward(torch.ones_like(y))
    torch.manual_seed(7)
    keep, scale = fast_keep_mask(x, 0.25)
    torch.testing.assert_close(y, torch.where(keep, x * scale, 0.0), rtol=0, atol=0)
    torch.testing.assert_close(x.grad, keep.double() * scale, rtol=0, atol=0)
    assert torch.equal(drop.eval()(x), x)
    torch.manual_seed(3)
    ours = Dropout(0.25).train()(x)
    torch.manual_seed(3)
    assert torch.equal(ours, nn.Dropout(0.25).train()(x))
    model = tiny(dropout=0.2, dropout_impl="fast")
    assert all(m.fast for m in model.modules() if isinstance(m, Dropout)) and \
        sum(isinstance(m, Dropout) for m in model.modules()) == 1 + 3 * model.config.n_layer


def test_presets():
    assert PRESETS["nano"] == dict(n_layer=4, n_head=4, n_embd=128, block_size=64)  # nanoGPT's CPU recipe
    cfg = preset_config("mini", vocab_size=65, dropout=0.2)
    assert (cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.block_size, cfg.vocab_size) == (6, 6, 384, 256, 65)
    with pytest.raises(ValueError, match="unknown preset 'huge'; choose one of nano, micro, mini"):
        preset_config("huge")


# ----- sampling ---------------------------------------------------------------------------------------------


def test_greedy_top_k_top_p_and_the_generator():
    """Catches temperature 0 dividing by zero, top-k keeping k+1 tokens, a nucleus that drops the token that
    crosses top_p (or keeps one past it), and sampling that ignores the generator."""
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert sample_next(logits, temperature=0).tolist() == [0]
    g = torch.Generator().manual_seed(0)
    draws = lambda **kw: {sample_next(logits, generator=g, **kw).item() for _ in range(300)}  # noqa: E731
    assert draws(top_k=2) == {0, 1}
    assert draws(top_p=0.7) == {0, 1}  # 0.5 < 0.7 <= 0.5 + 0.3: the second token completes the nucleus
    assert draws(top_p=0.5) == {0}
    assert draws(top_p=0.81) == {0, 1, 2}
    assert draws() == {0, 1, 2, 3}
    a = sample_next(logits.expand(50, 4), generator=torch.Generator().manual_seed(3))
    b = sample_next(logits.expand(50, 4), generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    m = tiny(double=False).eval()
    x = ids(T=4)
    run = lambda s: m.generate(x, 12, temperature=0.9, top_k=5, generator=torch.Generator().manual_seed(s))  # noqa
    assert torch.equal(run(7), run(7)) and not torch.equal(run(7), run(8))


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits():
    """Catches a penalty that divides a negative logit (which would make the token *more* likely)."""
    logits = torch.tensor([[2.0, -2.0, 1.0]])
    seen = torch.tensor([[True, True, False]])
    assert apply_repetition_penalty(logits, seen, 2.0).tolist() == [[1.0, -4.0, 1.0]]
    m = tiny(double=False).eval()
    x = ids(B=1, T=3)
    plain = m.generate(x, 30, temperature=0)
    strong = m.generate(x, 30, temperature=0, repetition_penalty=1e4)
    assert len(set(strong[0, 3:].tolist())) > len(set(plain[0, 3:].tolist()))
    assert len(set(strong[0, 3:16].tolist())) == 13  # 23 tokens, 3 in the prompt: 13 new tokens all differ


def test_generation_stops_at_eot_and_streams_the_same_tokens():
    """Catches generation that runs on after <|endoftext|>, or a stream that differs from generate()."""
    m = tiny(double=False).eval()
    x = ids(B=1, T=4)
    free = m.generate(x, 20, temperature=0)
    eot = free[0, 4 + 5].item()  # the 6th new token plays <|endoftext|>
    first = (free[0, 4:] == eot).nonzero()[0].item()
    stopped = m.generate(x, 20, temperature=0, eot_id=eot)
    assert stopped.shape[1] == 4 + first + 1 and stopped[0, -1].item() == eot
    streamed = [t.item() for t in m.generate_stream(x, 20, temperature=0)]
    assert streamed == free[0, 4:].tolist()
    two = m.generate(torch.cat([x, ids(B=1, T=4, seed=9)]), 20, temperature=0, eot_id=eot)
    row0 = two[0, 4:].tolist()
    assert row0[: first + 1] == free[0, 4:5 + first].tolist() and set(row0[first:]) == {eot}


@pytest.mark.parametrize("kw, message", [
    (dict(max_new_tokens=0), "max_new_tokens must be >= 1, got 0"),
    (dict(temperature=-1.0), r"temperature must be >= 0 \(0 = greedy\), got -1.0"),
    (dict(top_p=1.5), r"top_p must be in \(0, 1\] \(1 = off\), got 1.5"),
    (dict(top_k=-3), r"top_k must be >= 0"),
    (dict(repetition_penalty=0.0), "repetition_penalty must be > 0"),
])
def test_bad_sampling_settings_are_value_errors(kw, message):
    m = tiny(double=False).eval()
    args = {"max_new_tokens": 3, **kw}
    with pytest.raises(ValueError, match=message):
        m.generate(ids(T=3), **args)
