"""Proofs for the stage-4 models: each test names, in its docstring, the wrong implementation it would catch.

Equivalence tests run in float64 with dropout 0, so "equal" means equal to ~1e-12, not "close enough".
"""
import itertools
import math

import pytest
import torch
import torch.nn as nn

from scripts.cli import UserError
from stage4_transformer.models import (
    ClassifierConfig,
    DecoderLayer,
    EncoderLayer,
    LayerNorm,
    MultiHeadAttention,
    SequenceTooLong,
    SinusoidalPositionalEncoding,
    Transformer,
    TransformerClassifier,
    TransformerConfig,
    causal_mask,
    copy_weights,
    padding_mask,
    scaled_dot_product_attention,
    sinusoid_table,
    to_torch_names,
)
from stage4_transformer.models.layers import PositionwiseFeedForward

TOL = dict(rtol=1e-10, atol=1e-12)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: thread start-up costs more than the arithmetic on the shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
PAD, BOS, EOS = 0, 2, 3


def tiny_cfg(**kw):
    base = dict(vocab_size=24, d_model=16, n_heads=2, enc_layers=2, dec_layers=2, d_ff=32, dropout=0.0, max_len=32,
                label_smoothing=0.0)
    return TransformerConfig(**{**base, **kw})


def make_model(seed=0, **kw):
    torch.manual_seed(seed)
    return Transformer(tiny_cfg(**kw)).double()


def batch(seed=1, B=3, S=7, T=6, V=24):
    """Source and target ids with ragged lengths (padding at the end), targets starting with <bos>."""
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, V, (B, S), generator=g)
    tgt = torch.randint(4, V, (B, T + 1), generator=g)
    for b, (s_len, t_len) in enumerate(zip([S, S - 2, 3], [T, T - 3, 2])):
        src[b, s_len:] = PAD
        tgt[b, t_len:] = PAD
        tgt[b, t_len - 1] = EOS
    tgt[:, 0] = BOS
    return src, src != PAD, tgt[:, :-1], tgt[:, 1:]


def grads(module):
    return {n: p.grad for n, p in module.named_parameters()}


def assert_same_grads(ours, theirs, prefixes=None):
    mine, ref = to_torch_names(grads(ours), prefixes), grads(theirs)
    assert mine.keys() == ref.keys()
    for name in ref:
        torch.testing.assert_close(mine[name], ref[name], **TOL, msg=lambda m: f"{name}: {m}")


# ----- attention -------------------------------------------------------------------------------------------

def test_attention_by_hand():
    """softmax(Q K^T / sqrt(d_k)) V on 2x2 numbers worked out by hand. Catches: no 1/sqrt(d_k) scaling, softmax over
    the query axis instead of the key axis, V weighted by K, a blocked key that keeps some weight."""
    q = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]], dtype=torch.float64)  # (1, T=2, d_k=2)
    k = torch.tensor([[[1.0, 1.0], [0.0, 1.0], [3.0, 0.0]]], dtype=torch.float64)  # (1, S=3, 2)
    v = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]], dtype=torch.float64)  # (1, S=3, 2)
    r = math.sqrt(2.0)
    # row 0: q0.k = (1, 0, 3) / sqrt2; row 1: q1.k = (2, 2, 0) / sqrt2
    e0 = [math.exp(1 / r), math.exp(0.0), math.exp(3 / r)]
    e1 = [math.exp(2 / r), math.exp(2 / r), math.exp(0.0)]
    w_ref = torch.tensor([[x / sum(e0) for x in e0], [x / sum(e1) for x in e1]], dtype=torch.float64)[None]
    out_ref = w_ref @ v
    out, w = scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(w, w_ref, **TOL)
    torch.testing.assert_close(out, out_ref, **TOL)
    # keep mask: key 2 blocked for query 0 -> weights over keys 0, 1 only
    mask = torch.tensor([[[True, True, False], [True, True, True]]])
    out, w = scaled_dot_product_attention(q, k, v, mask)
    assert w[0, 0, 2] == 0.0
    torch.testing.assert_close(w[0, 0, :2], torch.tensor([e0[0], e0[1]], dtype=torch.float64) / (e0[0] + e0[1]))
    torch.testing.assert_close(out[0, 1], out_ref[0, 1], **TOL)


def _torch_masks(kind, B, T, S):
    """Our keep mask (broadcastable to (B, h, T, S)) and nn.MultiheadAttention's (key_padding_mask, attn_mask)."""
    if kind == "padding":
        keep = torch.ones(B, S, dtype=torch.bool)
        keep[0, S - 2:] = False
        keep[2, 3:] = False
        return padding_mask(keep), dict(key_padding_mask=~keep)
    causal = causal_mask(T)  # self-attention: T == S
    return causal, dict(attn_mask=~causal[0, 0])


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("kind", ["padding", "causal"])
def test_mha_matches_torch(fused, kind):
    """Our MHA vs nn.MultiheadAttention with copied weights: outputs, per-head and head-averaged weights, every
    parameter and input gradient. Catches: heads split along the wrong axis (view without transpose), Q/K/V rows
    swapped in the copy, a missing W^O, an ignored or inverted mask, d_model instead of d_k in the scaling."""
    torch.manual_seed(0)
    B, T, S, C, h = 3, 5, 6, 16, 4
    ours = MultiHeadAttention(C, h, fused_qkv=fused).double()
    theirs = nn.MultiheadAttention(C, h, batch_first=True).double()
    copy_weights(ours, theirs)
    if kind == "causal":
        S = T
    x = torch.randn(B, T, C, dtype=torch.float64, requires_grad=True)
    mem = x if kind == "causal" else torch.randn(B, S, C, dtype=torch.float64, requires_grad=True)
    mask, torch_mask = _torch_masks(kind, B, T, S)
    out, w = ours(x, mem, mem, mask)
    ref, w_ref = theirs(x, mem, mem, need_weights=True, average_attn_weights=False, **torch_mask)
    torch.testing.assert_close(out, ref, **TOL)
    torch.testing.assert_close(w, w_ref, **TOL)  # (B, h, T, S) per head
    _, w_avg = theirs(x, mem, mem, need_weights=True, average_attn_weights=True, **torch_mask)
    torch.testing.assert_close(w.mean(1), w_avg, **TOL)
    g = torch.randn_like(out)
    gx_ours = torch.autograd.grad(out, [x, mem] if mem is not x else [x], g, retain_graph=True)
    (out * g).sum().backward()
    gx_ref = torch.autograd.grad(ref, [x, mem] if mem is not x else [x], g, retain_graph=True)
    (ref * g).sum().backward()
    for a, b in zip(gx_ours, gx_ref):
        torch.testing.assert_close(a, b, **TOL)
    assert_same_grads(ours, theirs)


@pytest.mark.parametrize("fused", [False, True])
def test_manual_attention_equals_sdpa(fused):
    """attn_impl="manual" (our eq. 1) and "sdpa" (F.scaled_dot_product_attention) with the same weights and a mask,
    for one MHA and for the whole model (loss and every gradient). Catches: the SDPA path given an inverted
    (True = blocked) mask, or the manual path scaling differently from PyTorch's kernel."""
    torch.manual_seed(0)
    manual = MultiHeadAttention(16, 4, fused_qkv=fused).double()
    fast = MultiHeadAttention(16, 4, fused_qkv=fused, attn_impl="sdpa").double()
    fast.load_state_dict(manual.state_dict())
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    mask = causal_mask(5) & padding_mask(torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool))
    out_m, w_m = manual(x, mask=mask)
    out_f, w_f = fast(x, mask=mask)
    assert w_f is None and w_m.shape == (2, 4, 5, 5)
    torch.testing.assert_close(out_f[0], out_m[0], **TOL)
    torch.testing.assert_close(out_f[1, :3], out_m[1, :3], **TOL)  # rows of real queries
    src, keep, tgt_in, tgt_out = batch()
    m1, m2 = make_model(fused_qkv=fused), make_model(fused_qkv=fused, attn_impl="sdpa")
    m2.load_state_dict(m1.state_dict())
    l1, loss1 = m1(src, keep, tgt_in, tgt_out)
    l2, loss2 = m2(src, keep, tgt_in, tgt_out)
    torch.testing.assert_close(loss1, loss2, **TOL)
    loss1.backward()
    loss2.backward()
    g1, g2 = grads(m1), grads(m2)
    for name in g1:
        torch.testing.assert_close(g2[name], g1[name], **TOL, msg=lambda m: f"{name}: {m}")


# ----- LayerNorm, positional encoding ----------------------------------------------------------------------

def test_layernorm_matches_torch():
    """Our LayerNorm vs nn.LayerNorm (non-trivial gamma/beta): output and gradients of input, gamma, beta. Catches:
    the unbiased variance (divide by C-1), eps outside the square root, normalising over the batch axis."""
    torch.manual_seed(0)
    ours, theirs = LayerNorm(8).double(), nn.LayerNorm(8).double()
    with torch.no_grad():
        ours.weight.normal_()
        ours.bias.normal_()
    copy_weights(ours, theirs)
    x = (torch.randn(2, 3, 8, dtype=torch.float64) * 3 + 1).requires_grad_()
    y_ours, y_ref = ours(x), theirs(x)
    torch.testing.assert_close(y_ours, y_ref, **TOL)
    g = torch.randn_like(y_ref)
    gx = torch.autograd.grad(y_ours, x, g, retain_graph=True)[0]
    (y_ours * g).sum().backward()
    torch.testing.assert_close(gx, torch.autograd.grad(y_ref, x, g, retain_graph=True)[0], **TOL)
    (y_ref * g).sum().backward()
    assert_same_grads(ours, theirs)


def test_sinusoid_table_matches_paper_formula():
    """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d)) at a few positions, computed with
    math.sin/cos. Catches: exponent i/d instead of 2i/d, sin and cos swapped, pos and i swapped."""
    d = 10
    table = sinusoid_table(60, d)
    for pos in (0, 1, 7, 59):
        for i in range(d // 2):
            angle = pos / 10000 ** (2 * i / d)
            assert table[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-12)
            assert table[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-12)
    module = SinusoidalPositionalEncoding(60, d)
    torch.testing.assert_close(module(3, offset=5), table[5:8].float())  # an offset (incremental decoding)


# ----- layers vs PyTorch's ------------------------------------------------------------------------------

@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_layer_matches_torch(norm_first):
    """Our EncoderLayer vs nn.TransformerEncoderLayer (post-LN and pre-LN) with a key-padding mask: outputs and every
    gradient. Catches: LayerNorm on the wrong side of the residual, a missing residual, norm1/norm2 swapped, the
    FFN without ReLU, padding keys that still receive attention."""
    torch.manual_seed(0)
    ours = EncoderLayer(16, 4, 32, 0.0, norm_first).double()
    theirs = nn.TransformerEncoderLayer(16, 4, 32, 0.0, batch_first=True, norm_first=norm_first).double()
    with torch.no_grad():  # non-trivial LayerNorm parameters, so swapping norm1/norm2 shows
        for n, p in ours.named_parameters():
            if "norm" in n:
                p.normal_()
    copy_weights(ours, theirs)
    x = torch.randn(3, 6, 16, dtype=torch.float64, requires_grad=True)
    keep = torch.ones(3, 6, dtype=torch.bool)
    keep[1, 4:] = False
    y = ours(x, padding_mask(keep))
    ref = theirs(x, src_key_padding_mask=~keep)
    torch.testing.assert_close(y, ref, **TOL)
    g = torch.randn_like(y)
    gx = torch.autograd.grad(y, x, g, retain_graph=True)[0]
    torch.testing.assert_close(gx, torch.autograd.grad(ref, x, g, retain_graph=True)[0], **TOL)
    (y * g).sum().backward()
    (ref * g).sum().backward()
    assert_same_grads(ours, theirs)


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_layer_matches_torch(norm_first):
    """Our DecoderLayer vs nn.TransformerDecoderLayer (both norm_first) with causal + target padding + memory padding
    masks: outputs, every parameter gradient, and the gradients of target input and memory. Catches: cross-attention
    keys taken from the target instead of the memory, self- and cross-attention swapped, no causal mask, norm2/norm3
    swapped."""
    torch.manual_seed(0)
    ours = DecoderLayer(16, 4, 32, 0.0, norm_first).double()
    theirs = nn.TransformerDecoderLayer(16, 4, 32, 0.0, batch_first=True, norm_first=norm_first).double()
    with torch.no_grad():
        for n, p in ours.named_parameters():
            if "norm" in n:
                p.normal_()
    copy_weights(ours, theirs)
    x = torch.randn(3, 5, 16, dtype=torch.float64, requires_grad=True)
    mem = torch.randn(3, 7, 16, dtype=torch.float64, requires_grad=True)
    tgt_keep = torch.ones(3, 5, dtype=torch.bool)
    tgt_keep[2, 3:] = False
    mem_keep = torch.ones(3, 7, dtype=torch.bool)
    mem_keep[0, 5:] = False
    y = ours(x, mem, causal_mask(5) & padding_mask(tgt_keep), padding_mask(mem_keep))
    ref = theirs(x, mem, tgt_mask=~causal_mask(5)[0, 0], tgt_key_padding_mask=~tgt_keep,
                 memory_key_padding_mask=~mem_keep)
    torch.testing.assert_close(y, ref, **TOL)
    g = torch.randn_like(y)
    for a, b in zip(torch.autograd.grad(y, [x, mem], g, retain_graph=True),
                    torch.autograd.grad(ref, [x, mem], g, retain_graph=True)):
        torch.testing.assert_close(a, b, **TOL)
    (y * g).sum().backward()
    (ref * g).sum().backward()
    assert_same_grads(ours, theirs)


# ----- whole models -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("norm_first,pos,fused", [(False, "sinusoidal", False), (True, "learned", True)])
def test_whole_model_scratch_equals_torch(norm_first, pos, fused):
    """impl="scratch" vs impl="torch" (nn.Transformer) with weights copied scratch -> torch: logits, label-smoothed
    loss, every gradient; then copied back torch -> scratch: the same state. Catches: a missing final LayerNorm of a
    pre-LN stack, masks not passed to nn.Transformer, a weight the copy leaves at its initial value."""
    src, keep, tgt_in, tgt_out = batch()
    ours = make_model(norm_first=norm_first, pos=pos, fused_qkv=fused, label_smoothing=0.1)
    theirs = make_model(seed=5, norm_first=norm_first, pos=pos, impl="torch", label_smoothing=0.1)
    copy_weights(ours, theirs)
    logits, loss = ours(src, keep, tgt_in, tgt_out)
    ref_logits, ref_loss = theirs(src, keep, tgt_in, tgt_out)
    real = tgt_in != PAD
    torch.testing.assert_close(logits[real], ref_logits[real], **TOL)
    torch.testing.assert_close(loss, ref_loss, **TOL)
    loss.backward()
    ref_loss.backward()
    assert_same_grads(ours, theirs, Transformer.TORCH_PREFIXES)
    back = make_model(seed=9, norm_first=norm_first, pos=pos, fused_qkv=not fused)
    copy_weights(theirs, back)
    torch.testing.assert_close(back(src, keep, tgt_in)[0], logits, **TOL)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_classifier_scratch_equals_torch_and_ignores_padding(pooling):
    """Classifier: scratch vs nn.TransformerEncoder with copied weights (logits, loss, gradients), and extra padding
    changes nothing. Catches: mean pooling that divides by the padded length, a [CLS] that is not at position 0 of
    the keep mask (so it is masked out), the torch path without the padding mask."""
    torch.manual_seed(0)
    cfg = dict(vocab_size=24, n_classes=3, d_model=16, n_heads=2, n_layers=2, d_ff=32, dropout=0.0, max_len=16,
               pooling=pooling)
    ours = TransformerClassifier(ClassifierConfig(**cfg)).double()
    theirs = TransformerClassifier(ClassifierConfig(**cfg, impl="torch")).double()
    copy_weights(ours, theirs)
    x, keep, _, _ = batch(S=8)
    labels = torch.tensor([0, 2, 1])
    logits, loss = ours(x, keep, labels)
    ref, ref_loss = theirs(x, keep, labels)
    torch.testing.assert_close(logits, ref, **TOL)
    loss.backward()
    ref_loss.backward()
    assert_same_grads(ours, theirs, TransformerClassifier.TORCH_PREFIXES)
    padded = torch.cat([x, torch.full((3, 4), PAD)], dim=1)  # 4 more <pad> columns
    torch.testing.assert_close(ours(padded)[0], logits, **TOL)


# ----- masks: the future and the padding -----------------------------------------------------------------

@pytest.mark.parametrize("attn_impl", ["manual", "sdpa"])
def test_causal_mask_does_not_leak(attn_impl):
    """Changing target tokens after position t leaves the logits at positions <= t unchanged, and does change the
    later ones (so the test has teeth). Catches: a missing or transposed causal mask (triu instead of tril)."""
    src, keep, tgt_in, _ = batch()
    model = make_model(attn_impl=attn_impl)
    logits = model(src, keep, tgt_in)[0]
    t = 2
    changed = tgt_in.clone()
    changed[:, t + 1:] = torch.randint(4, 24, changed[:, t + 1:].shape)
    new = model(src, keep, changed)[0]
    torch.testing.assert_close(new[:, :t + 1], logits[:, :t + 1], **TOL)
    assert (new[0, t + 1:] - logits[0, t + 1:]).abs().max() > 1e-3


def test_padding_invariance():
    """Appending <pad> columns to source and target (and their masks) changes nothing at the real positions.
    Catches: source padding not masked in encoder self-attention or in cross-attention, the positional encoding
    applied to the wrong positions."""
    src, keep, tgt_in, tgt_out = batch()
    for norm_first in (False, True):
        model = make_model(norm_first=norm_first)
        logits, loss = model(src, keep, tgt_in, tgt_out)
        pad = torch.full((3, 5), PAD)
        src2, tgt_in2, tgt_out2 = (torch.cat([a, pad], 1) for a in (src, tgt_in, tgt_out))
        logits2, loss2 = model(src2, None, tgt_in2, tgt_out2)
        real = tgt_in != PAD
        torch.testing.assert_close(logits2[:, :tgt_in.size(1)][real], logits[real], **TOL)
        torch.testing.assert_close(loss2, loss, **TOL)
        memory = model.encode(src, keep)
        memory2 = model.encode(src2)
        torch.testing.assert_close(memory2[:, :src.size(1)][keep], memory[keep], **TOL)


# ----- incremental decoding --------------------------------------------------------------------------------

def test_cached_decode_step_equals_full_recomputation():
    """Teacher-forced decode_step (cached keys/values) gives the full decoder's logits at every position (float32,
    1e-5), and the memory's cross-attention keys/values are computed once per layer, not once per step. Catches:
    a wrong positional offset for the new token, the cache not appended, cross-attention recomputed every step."""
    torch.manual_seed(0)
    model = Transformer(tiny_cfg(norm_first=True)).eval()
    src, keep, tgt_in, _ = batch()
    tgt_in = tgt_in.clone()
    tgt_in[tgt_in == PAD] = 5  # decoding never pads a live hypothesis
    calls = []
    for layer in model.decoder.layers:
        original = layer.cross_attn.project_kv
        layer.cross_attn.project_kv = (lambda f: lambda *a: calls.append(1) or f(*a))(original)
    with torch.no_grad():
        memory = model.encode(src, keep)
        full = model.decode(tgt_in, memory, keep)  # (B, T, V)
        calls.clear()
        cache = model.new_cache()
        steps = torch.stack([model.decode_step(tgt_in[:, t], memory, keep, cache) for t in range(tgt_in.size(1))], 1)
    torch.testing.assert_close(steps, full, rtol=1e-5, atol=1e-5)
    assert len(calls) == model.cfg.dec_layers  # once per sentence batch and layer
    assert cache["layers"][0]["self_k"].shape == (3, 2, tgt_in.size(1), 8)


@pytest.mark.parametrize("norm_first", [False, True])
def test_cached_search_equals_uncached(norm_first):
    """Greedy and beam search give identical outputs (ids and scores) with the cache and with full recomputation,
    and beam_size=1 is greedy. Catches: beam reordering that forgets the cache (rows of other hypotheses), a cache
    that survives between sentences, EOS handling that differs between the two paths."""
    model = make_model(seed=3, norm_first=norm_first)
    with torch.no_grad():
        model.embed.weight.mul_(4)  # a peakier random model: varied, non-degenerate outputs
    src, keep, _, _ = batch()
    for k in (1, 4):
        cached = model.translate(src, keep, beam_size=k, max_len=12)
        full = model.translate(src, keep, beam_size=k, max_len=12, use_cache=False)
        assert [c["ids"] for c in cached] == [f["ids"] for f in full]
        for c, f in zip(cached, full):
            assert c["score"] == pytest.approx(f["score"], abs=1e-9)
    assert model.beam_search(src, keep, beam_size=1, max_len=12) == model.greedy_decode(src, keep, max_len=12)


@pytest.mark.parametrize("len_alpha", [0.0, 1.0])
def test_beam_search_is_exact_with_a_wide_beam(len_alpha):
    """With a beam wider than the number of hypotheses, batched beam search must return, for every sentence, the
    exhaustive best output of length <= 3 under the length-normalised score (len counts <eos>). The model is chosen
    so that some best outputs end early with <eos>, some run to the cap, and some differ from greedy (asserted).
    Catches: wrong length normalisation, a finished hypothesis whose length keeps growing or that is extended,
    parent/token index arithmetic (idx // V, idx % V) mixed up, the first step filled with k copies of <bos>,
    sentences of a batch mixed up."""
    torch.manual_seed(0)
    cfg = tiny_cfg(vocab_size=16, norm_first=True, tie_embeddings=False)
    model = Transformer(cfg).double().eval()
    with torch.no_grad():  # a peakier random model whose <eos> logit gets a push: outputs of every length
        model.embed.weight.mul_(2)
        model.out.weight.mul_(2)
        model.decoder.norm.bias.normal_()
        model.out.weight[EOS] += 0.3 * model.decoder.norm.bias
    src = torch.randint(4, 16, (6, 5))
    keep = src != PAD
    outputs = [t for t in range(16) if t not in (PAD, BOS)]
    expected, scores = [], []
    with torch.no_grad():
        memory = model.encode(src, keep)  # (B, S, C)
        for b in range(src.size(0)):
            best, best_score = None, -math.inf
            for n in (1, 2, 3):
                seqs = [s for s in itertools.product(outputs, repeat=n) if EOS not in s[:-1]]  # nothing after <eos>
                if n < 3:
                    seqs = [s for s in seqs if s[-1] == EOS]  # shorter than the cap: must have ended
                ys = torch.tensor(seqs)  # (N, n)
                N = len(seqs)
                hist = torch.cat([torch.full((N, 1), BOS), ys[:, :-1]], 1)  # (N, n) decoder inputs
                logits = model.decode(hist, memory[b:b + 1].expand(N, -1, -1), keep[b:b + 1].expand(N, -1))
                lp = logits.index_fill(-1, torch.tensor([PAD, BOS]), float("-inf")).log_softmax(-1)  # (N, n, V)
                logp = lp.gather(-1, ys[..., None])[..., 0].sum(1)  # (N,)
                norm = logp / n ** len_alpha
                i = int(norm.argmax())
                if norm[i] > best_score:
                    best, best_score = list(seqs[i]), float(norm[i])
            expected.append(best)
            scores.append(best_score * len(best) ** len_alpha)
    found = model.beam_search(src, keep, beam_size=200, max_len=3, len_alpha=len_alpha)
    greedy = model.greedy_decode(src, keep, max_len=3)
    ids = [e[:-1] if e[-1] == EOS else e for e in expected]
    assert any(e[-1] == EOS and len(e) < 3 for e in expected) and any(len(e) == 3 for e in expected)
    assert any(g["ids"] != i for g, i in zip(greedy, ids)), "no sentence where beam search matters"
    assert [f["ids"] for f in found] == ids
    assert [f["score"] for f in found] == pytest.approx(scores, abs=1e-9)


def test_beam_ranks_finished_hypotheses_by_normalised_score(monkeypatch):
    """A hand-made next-token table where a short finished hypothesis ([<eos>], -1.0) beats the live ones on the raw
    sum but not per token: with k=2 and len_alpha=1 the search must keep both live extensions of "a" and end with
    "a b <eos>" (-1.26 / 3); with len_alpha=0 the raw best, the empty output, wins. Catches: ranking the beam by raw
    sums during the search (the finished hypothesis then evicts "a b" and the answer is empty)."""
    model = make_model(vocab_size=16).eval()
    A, B_ = 4, 5
    table = {(): {EOS: -1.0, A: -1.1, B_: -1.2}, (A,): {A: -0.1, B_: -0.15, EOS: -5.0},
             (A, A): {EOS: -3.0}, (A, B_): {EOS: -0.01}}

    def fake(hist, memory, src_mask, cache):
        out = torch.full((hist.size(0), 16), float("-inf"), dtype=memory.dtype)
        for r, h in enumerate(hist[:, 1:].tolist()):
            for tok, lp in table.get(tuple(h), {EOS: -50.0}).items():
                out[r, tok] = lp
        return out

    monkeypatch.setattr(model, "_next_log_probs", fake)
    src = torch.tensor([[5, 6, 7]])
    found = model.beam_search(src, beam_size=2, max_len=3, len_alpha=1.0, use_cache=False)[0]
    assert found["ids"] == [A, B_] and found["score"] == pytest.approx(-1.26)
    assert model.beam_search(src, beam_size=2, max_len=3, len_alpha=0.0, use_cache=False)[0]["ids"] == []


def test_embedding_is_scaled_and_positioned():
    """Decoder/encoder inputs are sqrt(d_model) * E[ids] + PE[offset + t] (§3.4, §3.5). Catches: a missing sqrt(d_model)
    scale (the tied embedding matrix then drowns in the positional signal), PE not added, a wrong offset."""
    model = make_model().eval()
    ids = torch.tensor([[5, 6, 7]])
    x = model.embed_tokens(ids, offset=4)
    ref = model.embed.weight[ids] * math.sqrt(16) + model.pos.table[4:7]
    torch.testing.assert_close(x, ref, **TOL)


# ----- weight tying, training ------------------------------------------------------------------------------

def test_tied_embeddings_share_storage():
    """With tie_embeddings the output projection IS the embedding (one tensor, one gradient, one optimizer update,
    counted once); without it they are separate. Catches: a copy instead of a tie (weights drift apart after a step),
    a tie lost when a checkpoint's state_dict is loaded."""
    tied, untied = make_model(), make_model(tie_embeddings=False)
    assert tied.out.weight is tied.embed.weight
    assert tied.out.weight.data_ptr() == tied.embed.weight.data_ptr()
    assert untied.out.weight.data_ptr() != untied.embed.weight.data_ptr()
    assert untied.num_params() - tied.num_params() == 24 * 16
    src, keep, tgt_in, tgt_out = batch()
    opt = torch.optim.SGD(tied.parameters(), lr=0.5)
    tied(src, keep, tgt_in, tgt_out)[1].backward()
    opt.step()
    assert torch.equal(tied.out.weight, tied.embed.weight)
    fresh = make_model(seed=7)
    fresh.load_state_dict(tied.state_dict())
    assert fresh.out.weight is fresh.embed.weight and torch.equal(fresh.embed.weight, tied.embed.weight)


@pytest.mark.parametrize("impl", ["scratch", "torch"])
def test_overfits_a_tiny_batch(impl):
    """A tiny model memorises 4 sentence pairs: loss < 0.05 within 200 Adam steps, and greedy decoding then returns
    the targets. Catches: gradients that do not flow (detached sub-layer, frozen tie), a loss on shifted targets,
    a decoder that cannot see the source."""
    torch.manual_seed(0)
    model = Transformer(tiny_cfg(d_model=32, n_heads=4, enc_layers=1, dec_layers=1, d_ff=64, norm_first=True,
                                 impl=impl))
    src, keep, tgt_in, tgt_out = batch(seed=4, B=3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(200):
        loss = model(src, keep, tgt_in, tgt_out)[1]
        if loss.item() < 0.05:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05, f"loss {loss.item():.3f} after {step} steps"
    out = model.translate(src, keep, max_len=8)
    for b, hyp in enumerate(out):
        ref = tgt_out[b].tolist()
        assert hyp["ids"] == ref[:ref.index(EOS)]


# ----- bad input ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad,needle", [
    (dict(d_model=30, n_heads=4), "not divisible by n_heads"),
    (dict(dropout=1.5), "dropout must be in [0, 1)"),
    (dict(dropout=-0.1), "dropout must be in [0, 1)"),
    (dict(attn_dropout=1.5), "attn_dropout must be in [0, 1) or -1"),
    (dict(act_dropout=-0.5), "act_dropout must be in [0, 1) or -1"),
    (dict(vocab_size=10), "vocab_size=10 is too small"),
    (dict(label_smoothing=1.0), "label_smoothing"),
    (dict(enc_layers=0), "enc_layers must be a positive integer"),
    (dict(pos="rope"), "pos must be one of"),
    (dict(bos_id=0), "distinct"),
])
def test_impossible_config_is_a_one_line_user_error(bad, needle):
    """Impossible configs raise scripts.cli.UserError with one line naming the problem. Catches: a ZeroDivision or
    view() shape error deep inside the model, an accepted dropout of 1.5, a traceback instead of a message."""
    with pytest.raises(UserError) as e:
        TransformerConfig(**bad)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_classifier_impossible_config():
    """ClassifierConfig shares the checks and adds its own (pooling, n_classes), each a one-line UserError.
    Catches: a classifier config that skips the shared checks, a 1-class head, an unknown pooling that silently
    falls back to mean pooling."""
    for bad in (dict(pooling="max"), dict(n_classes=1), dict(d_model=10, n_heads=4), dict(dropout=1.0)):
        with pytest.raises(UserError) as e:
            ClassifierConfig(**bad)
        assert "\n" not in str(e.value)


@pytest.mark.parametrize("pos", ["sinusoidal", "learned"])
def test_longer_than_max_len_is_a_clear_error(pos):
    """A source, a target, a decoding length or a classifier input beyond max_len raises SequenceTooLong (a one-line
    UserError and a ValueError) naming max_len. Catches: an IndexError from the learned table, a silent shape
    mismatch from slicing past the sinusoid table, decoding running off the table."""
    model = make_model(pos=pos)  # max_len 32
    ok = torch.full((1, 32), 5)
    model(ok, None, ok)
    too_long = torch.full((1, 33), 5)
    for call in (lambda: model(too_long, None, ok), lambda: model(ok, None, too_long),
                 lambda: model.translate(ok[:, :4], max_len=40)):
        with pytest.raises(SequenceTooLong, match="longer than max_len=32") as e:
            call()
        assert isinstance(e.value, UserError) and isinstance(e.value, ValueError) and "\n" not in str(e.value)
    clf = TransformerClassifier(ClassifierConfig(vocab_size=24, d_model=16, n_heads=2, max_len=8, pos=pos))
    clf(torch.full((1, 7), 5))  # 7 tokens + [CLS] = 8
    with pytest.raises(SequenceTooLong):
        clf(torch.full((1, 8), 5))


def test_attention_maps():
    """attention_maps returns every layer's and head's weights: rows sum to 1, padding keys and future positions get
    exactly 0, and the cross-attention of a decoded output equals what the cached decoder computed at each step.
    Catches: weights kept from the SDPA path (None), maps of the wrong module, weights that leak padding."""
    model = make_model(attn_impl="sdpa").eval()  # maps take the manual path even when sdpa is the fast path
    src, keep, tgt_in, _ = batch()
    maps = model.attention_maps(src, keep, tgt_in)
    assert [len(maps[k]) for k in ("encoder", "decoder", "cross")] == [2, 2, 2]
    B, S, T = src.size(0), src.size(1), tgt_in.size(1)
    assert maps["encoder"][0].shape == (B, 2, S, S) and maps["cross"][1].shape == (B, 2, T, S)
    for w in maps["encoder"] + maps["decoder"] + maps["cross"]:
        torch.testing.assert_close(w.sum(-1), torch.ones_like(w.sum(-1)), **TOL)
    assert (maps["cross"][0][~keep[:, None, None, :].expand(-1, 2, T, -1)] == 0).all()
    assert (maps["decoder"][1][0].triu(1) == 0).all()
    assert all(m.weights is None and not m.keep_weights for m in model.modules() if isinstance(m, MultiHeadAttention))
    # the cross-attention of the last layer seen step by step through the cache
    layer = model.decoder.layers[-1].cross_attn
    layer.keep_weights = True
    steps = []
    with torch.no_grad():
        memory, cache = model.encode(src, keep), model.new_cache()
        for t in range(T):
            model.decode_step(tgt_in[:, t], memory, keep, cache)
            steps.append(layer.weights[:, :, 0])  # (B, h, S)
    layer.keep_weights = False
    real = tgt_in[0] != PAD
    torch.testing.assert_close(torch.stack(steps, 2)[0][:, real], maps["cross"][-1][0][:, real], **TOL)


@pytest.mark.parametrize("norm_first", [False, True])
def test_scratch_and_torch_train_identically(norm_first):
    """Five Adam steps from the same weights give the same loss curve for impl=scratch and impl=torch (float64).
    Catches: a parameter that trains in one implementation and not the other (a tie lost, a LayerNorm not
    registered), gradients that agree once but drift (e.g. a weight shared by mistake)."""
    src, keep, tgt_in, tgt_out = batch()
    ours = make_model(norm_first=norm_first, label_smoothing=0.1)
    theirs = make_model(seed=5, norm_first=norm_first, impl="torch", label_smoothing=0.1)
    copy_weights(ours, theirs)
    curves = []
    for model in (ours, theirs):
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        curve = []
        for _ in range(5):
            loss = model(src, keep, tgt_in, tgt_out)[1]
            opt.zero_grad()
            loss.backward()
            opt.step()
            curve.append(loss.item())
        curves.append(curve)
    assert curves[0] == pytest.approx(curves[1], abs=1e-9)
    assert curves[0][-1] < curves[0][0] - 0.1


def test_batched_search_equals_one_sentence_at_a_time():
    """Greedy and beam search of a padded batch give each sentence the output it gets alone (no padding). Catches:
    beams of one sentence reading another's rows, source padding visible to cross-attention during decoding,
    a finished sentence that stops the others."""
    model = make_model(seed=3)
    with torch.no_grad():
        model.embed.weight.mul_(4)
    src, keep, _, _ = batch()
    for k in (1, 3):
        together = model.translate(src, keep, beam_size=k, max_len=10)
        for b in range(src.size(0)):
            alone = model.translate(src[b:b + 1, :int(keep[b].sum())], beam_size=k, max_len=10)[0]
            assert alone["ids"] == together[b]["ids"]
            assert alone["score"] == pytest.approx(together[b]["score"], abs=1e-9)


def test_empty_input_is_a_clear_error():
    """An all-padding source (or a text with mean pooling) is a one-line EmptyInput error naming the row, not a NaN
    translation. Catches: decoding that silently returns garbage from NaN attention."""
    from stage4_transformer.models import EmptyInput
    model = make_model()
    src = torch.tensor([[5, 6, 0], [0, 0, 0]])
    with pytest.raises(EmptyInput, match=r"row\(s\) \[1\]"):
        model.translate(src)
    clf = TransformerClassifier(ClassifierConfig(vocab_size=24, d_model=16, n_heads=2, pooling="mean"))
    with pytest.raises(UserError, match="empty text"):
        clf(src)
    assert not TransformerClassifier(ClassifierConfig(vocab_size=24, d_model=16, n_heads=2))(src)[0].isnan().any()


def test_checkpoint_round_trip(tmp_path):
    """state_dict + asdict(config) saved with torch.save and loaded with weights_only=True rebuild the same model
    (same logits, tie intact; the sinusoid table is recomputed, not stored). Catches: a config that is not plain data,
    a buffer that must be saved but is not (or a table that bloats every checkpoint), the tie lost on load."""
    from dataclasses import asdict

    from scripts.config import config_from_dict
    model = make_model(norm_first=True)
    path = tmp_path / "m.pt"
    torch.save({"model": model.state_dict(), "config": asdict(model.cfg)}, path)
    saved = torch.load(path, weights_only=True)
    assert not any("table" in k for k in saved["model"])
    again = Transformer(config_from_dict(TransformerConfig, saved["config"])).double()
    again.load_state_dict(saved["model"])
    src, keep, tgt_in, _ = batch()
    torch.testing.assert_close(again(src, keep, tgt_in)[0], model(src, keep, tgt_in)[0], **TOL)
    assert again.out.weight is again.embed.weight


@pytest.mark.parametrize("impl", ["scratch", "torch"])
def test_attention_and_activation_dropout_rates_reach_their_own_modules(impl):
    """--attn_dropout / --act_dropout (-1 = --dropout): each rate alone makes training-mode forwards random, all
    zero makes them repeat, and the rates sit on the right modules in both implementations (ours: every attention's
    ``dropout`` and the FFN's ``drop``; PyTorch's: ``nn.MultiheadAttention.dropout`` and the layer's ``dropout``).
    Catches: a flag that never reaches the layers (a rate alone would change nothing), the two rates swapped, the
    torch implementation keeping its single rate, -1 not meaning "the same as --dropout"."""
    src, keep, tgt_in, _ = batch()

    def random_in_training(**rates):
        model = make_model(impl=impl, **rates)
        model.train()
        return not torch.equal(model(src, keep, tgt_in)[0], model(src, keep, tgt_in)[0])

    assert random_in_training(dropout=0.0, attn_dropout=0.5)
    assert random_in_training(dropout=0.0, act_dropout=0.5)
    assert random_in_training(dropout=0.5, attn_dropout=0.0, act_dropout=0.0)  # embeddings and residual branches
    assert not random_in_training(dropout=0.0, attn_dropout=0.0, act_dropout=0.0)

    model = make_model(impl=impl, dropout=0.1, attn_dropout=0.2, act_dropout=0.3)
    attn = [m.dropout for m in model.modules() if isinstance(m, (MultiHeadAttention, nn.MultiheadAttention))]
    if impl == "scratch":
        act = [m.drop.p for m in model.modules() if isinstance(m, PositionwiseFeedForward)]
    else:
        act = [layer.dropout.p for stack in (model.core.encoder, model.core.decoder) for layer in stack.layers]
    assert attn == [0.2] * 6 and act == [0.3] * 4  # 2 encoder self, 2 x (decoder self + cross); 4 FFNs
    same = tiny_cfg(dropout=0.25)
    assert (same.attn_p, same.act_p) == (0.25, 0.25)


def test_dropout_on_in_training_off_in_translate():
    """With dropout 0.3, two training-mode forwards differ, while translate() is deterministic and restores the
    training mode. Catches: dropout modules never registered (always off), translate() decoding with dropout on,
    translate() leaving the model in eval mode."""
    model = make_model(dropout=0.3)
    model.train()
    src, keep, tgt_in, _ = batch()
    assert not torch.equal(model(src, keep, tgt_in)[0], model(src, keep, tgt_in)[0])
    first = model.translate(src, keep, beam_size=2, max_len=6)
    assert model.training
    assert model.translate(src, keep, beam_size=2, max_len=6) == first
    model.eval()
    assert model.translate(src, keep, beam_size=2, max_len=6) == first
