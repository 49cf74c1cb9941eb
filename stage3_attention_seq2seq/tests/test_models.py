"""Model tests: masking, shapes, attention formulas, overfitting, greedy/beam consistency."""
import gzip
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from stage3_attention_seq2seq.models.attention import (
    BahdanauAttention,
    LuongDotAttention,
    LuongGeneralAttention,
    masked_softmax,
)
from stage3_attention_seq2seq.models.seq2seq import ATTENTION_TYPES, ModelConfig, Seq2Seq
from stage3_attention_seq2seq.utils.tokenizer import SPACE, UNK_ID, Vocab, detokenize, normalize, tokenize

DATA = Path(__file__).resolve().parent.parent / "data" / "multi30k"


def tiny(attention_type="bahdanau", **kw):
    cfg = ModelConfig(attention_type=attention_type, emb_dim=16, enc_hidden=16, dec_hidden=32, attn_dim=16,
                      dropout=0.0, label_smoothing=0.0, **kw)
    return Seq2Seq(cfg, 40, 50)


def toy_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    src_len = torch.tensor([7, 5, 3, 7, 2, 6])
    src = torch.randint(4, 40, (6, 7), generator=g)
    src[torch.arange(7)[None] >= src_len[:, None]] = 0  # padding
    tgt = torch.randint(4, 50, (6, 6), generator=g)
    tgt_in = torch.cat([torch.full((6, 1), 1), tgt], 1)  # <bos> y
    tgt_out = torch.cat([tgt, torch.full((6, 1), 2)], 1)  # y <eos>
    return src, src_len, tgt_in, tgt_out, tgt


def test_masked_softmax_zero_on_padding():
    scores = torch.randn(2, 5)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    w = masked_softmax(scores, mask)
    assert torch.all(w[0, 3:] == 0)
    assert torch.allclose(w.sum(-1), torch.ones(2))
    assert torch.allclose(w[0, :3], torch.softmax(scores[0, :3], -1))


def test_luong_dot_matches_torch_sdpa():
    """Our masked dot attention == F.scaled_dot_product_attention with scale 1 and the same mask."""
    q, k = torch.randn(3, 8), torch.randn(3, 5, 8)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 1, 0]], dtype=torch.bool)
    att = LuongDotAttention(8, 8)
    ctx, w = att(q, k, att.precompute(k), mask)
    ref = F.scaled_dot_product_attention(q[:, None, :], k, k, attn_mask=mask[:, None, :], scale=1.0)[:, 0]
    assert torch.allclose(ctx, ref, atol=1e-5)


def test_bahdanau_and_general_match_their_equations():
    q, k = torch.randn(2, 6), torch.randn(2, 4, 10)
    mask = torch.ones(2, 4, dtype=torch.bool)
    b = BahdanauAttention(6, 10, 7)
    _, w = b(q, k, b.precompute(k), mask)
    e = torch.stack([torch.stack([b.v.weight[0] @ torch.tanh(b.W.weight @ q[i] + b.U.weight @ k[i, j] + b.U.bias)
                                  for j in range(4)]) for i in range(2)])  # v^T tanh(W s + U h_j)
    assert torch.allclose(w, torch.softmax(e, -1), atol=1e-5)
    g = LuongGeneralAttention(6, 10)
    _, w = g(q, k, g.precompute(k), mask)
    e = torch.einsum("bd,de,bje->bj", q, g.W.weight, k)  # h_t^T W_a h_j
    assert torch.allclose(w, torch.softmax(e, -1), atol=1e-5)


@pytest.mark.parametrize("attention_type,enc_rnn", [(a, "gru") for a in ATTENTION_TYPES] + [("bahdanau", "lstm")])
def test_shapes_and_padding_invariance(attention_type, enc_rnn):
    torch.manual_seed(0)
    model = tiny(attention_type, enc_rnn=enc_rnn, enc_layers=2).eval()
    assert isinstance(model.encoder.rnn, torch.nn.LSTM if enc_rnn == "lstm" else torch.nn.GRU)
    src, src_len, tgt_in, tgt_out, _ = toy_batch()
    out = model(src, src_len, tgt_in, tgt_out)
    assert isinstance(out, tuple) and len(out) == 2  # one return type: (logits, loss), whatever the flags
    logits, loss = out
    assert logits.shape == (6, 7, 50) and loss.ndim == 0
    assert len(model(src, src_len, tgt_in)) == 2 and model(src, src_len, tgt_in)[1] is None
    attn = model.attention_weights(src, src_len, tgt_in)
    if attention_type == "none":
        assert attn is None
    else:
        assert attn.shape == (6, 7, 7)
        assert torch.allclose(attn.sum(-1), torch.ones(6, 7), atol=1e-5)
        assert torch.all(attn[1, :, 5:] == 0)  # sentence 1 has 5 real tokens
    # a padded batch gives the same outputs as each sentence alone (packing + masking)
    for i in (1, 4):
        alone, _ = model(src[i:i + 1, :src_len[i]], src_len[i:i + 1], tgt_in[i:i + 1])
        assert torch.allclose(alone[0], logits[i], atol=1e-5)


@pytest.mark.parametrize("attention_type,enc_rnn", [(a, "gru") for a in ATTENTION_TYPES] + [("bahdanau", "lstm")])
def test_overfit_tiny_batch_then_decoders_agree(attention_type, enc_rnn):
    torch.manual_seed(0)
    model = tiny(attention_type, enc_rnn=enc_rnn)
    src, src_len, tgt_in, tgt_out, tgt = toy_batch()
    opt = torch.optim.Adam(model.parameters(), lr=1.5e-2)
    for _ in range(100):
        _, loss = model(src, src_len, tgt_in, tgt_out)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1
    greedy = model.translate(src, src_len, beam_size=1)
    assert [o["ids"] for o in greedy] == tgt.tolist()
    beam = model.translate(src, src_len, beam_size=4)
    assert [o["ids"] for o in beam] == tgt.tolist()
    # batched beam search == one sentence at a time
    for i in range(6):
        single = model.translate(src[i:i + 1, :src_len[i]], src_len[i:i + 1], beam_size=4, max_len=24)[0]
        assert single["ids"] == beam[i]["ids"]
        assert abs(single["score"] - beam[i]["score"]) < 1e-4


def test_greedy_equals_beam_size_one_untrained():
    """On an untrained model (many near-ties) the beam code with k=1 still equals greedy search."""
    torch.manual_seed(1)
    model = tiny("luong_general")
    src, src_len, *_ = toy_batch(1)
    with torch.no_grad():
        beam_one = model._beam(src, src_len, 1, 12, 1.0)
    greedy = model.translate(src, src_len, beam_size=1, max_len=12)
    assert [o["ids"] for o in beam_one] == [o["ids"] for o in greedy]
    for b, g in zip(beam_one, greedy):
        assert abs(b["score"] - g["score"]) < 1e-4
        if g["attn"] is not None:
            assert torch.allclose(b["attn"], g["attn"], atol=1e-6)


def test_teacher_forcing_ratio_changes_inputs():
    torch.manual_seed(0)
    model = tiny("bahdanau")
    src, src_len, tgt_in, tgt_out, _ = toy_batch()
    torch.manual_seed(5)
    full, _ = model(src, src_len, tgt_in, tgt_out, teacher_forcing=1.0)
    torch.manual_seed(5)
    none, _ = model(src, src_len, tgt_in, tgt_out, teacher_forcing=0.0)
    assert torch.allclose(full[:, 0], none[:, 0])  # step 0 always sees <bos>
    assert not torch.allclose(full[:, 1:], none[:, 1:])


def test_tokenizer_is_reversible_on_real_data():
    with gzip.open(DATA / "train.fr.gz", "rt", encoding="utf-8") as f:
        lines = [next(f).rstrip("\n") for _ in range(2000)]
    assert all(detokenize(tokenize(s)) == normalize(s) for s in lines)
    assert tokenize("Un homme, l'air fatigué.") == [SPACE + "Un", SPACE + "homme", ",", SPACE + "l'", "air",
                                                     SPACE + "fatigué", "."]


def test_vocab_build_and_unknown():
    v = Vocab.build([["▁a", "▁b"], ["▁a"]], min_freq=2)
    assert v.itos[4:] == ["▁a"]
    assert v.encode(["▁a", "▁zzz"]) == [4, UNK_ID]
    assert v.decode([1, 4, 2, 4]) == ["▁a"]


# ----- one decoder step against the paper's equations, computed by hand -----------------------------

def gru_by_hand(x, h, cell):
    """torch.nn.GRUCell written out (gates r, z, n in PyTorch's order)."""
    w_r, w_z, w_n = cell.weight_ih.chunk(3, 0)
    u_r, u_z, u_n = cell.weight_hh.chunk(3, 0)
    b_r, b_z, b_n = cell.bias_ih.chunk(3)
    c_r, c_z, c_n = cell.bias_hh.chunk(3)
    r = torch.sigmoid(x @ w_r.T + b_r + h @ u_r.T + c_r)
    z = torch.sigmoid(x @ w_z.T + b_z + h @ u_z.T + c_z)
    n = torch.tanh(x @ w_n.T + b_n + r * (h @ u_n.T + c_n))
    return (1 - z) * n + z * h


def one_step_inputs(attention_type, seed=0):
    torch.manual_seed(seed)
    model = tiny(attention_type).eval()
    src, src_len, *_ = toy_batch(seed)
    enc, (h_prev, feed) = model.encode(src, src_len)
    feed = torch.randn_like(feed)  # a non-zero o_{t-1}, as at any step after the first
    y = torch.randn(src.size(0), model.cfg.emb_dim)  # embedding of y_{t-1}
    return model, enc, h_prev, feed, y


@torch.no_grad()
def test_bahdanau_step_attends_with_the_previous_state_and_feeds_y_to_the_output():
    """Bahdanau et al. 2015 eqs. 4-6 and the deep output: c_t = attn(s_{t-1}, H); s_t = GRU([y_{t-1}; c_t], s_{t-1});
    o_t = tanh(W_o [s_t; c_t; y_{t-1}]). Catches attending with s_t (after the GRU) and an output without y_{t-1}."""
    model, enc, s_prev, feed, y = one_step_inputs("bahdanau")
    att, H, mask = model.attention, enc["keys"], enc["mask"]
    e = (torch.tanh((s_prev @ att.W.weight.T)[:, None, :] + H @ att.U.weight.T + att.U.bias) @ att.v.weight.T)[..., 0]
    a = torch.softmax(e.masked_fill(~mask, float("-inf")), dim=-1)  # (B, S), from s_{t-1}
    c = (a[:, :, None] * H).sum(1)
    s_t = gru_by_hand(torch.cat([y, c], -1), s_prev, model.rnn)
    Hd, He2, E = model.cfg.dec_hidden, H.size(-1), model.cfg.emb_dim
    W = model.combine.weight
    assert W.shape == (E, Hd + He2 + E)  # [s_t; c_t; y_{t-1}]
    o = torch.tanh(s_t @ W[:, :Hd].T + c @ W[:, Hd:Hd + He2].T + y @ W[:, Hd + He2:].T + model.combine.bias)
    o_model, (h_model, feed_model), w_model = model.step(y, (s_prev, feed), enc)
    assert torch.allclose(w_model, a, atol=1e-6)
    assert torch.allclose(h_model, s_t, atol=1e-6)
    assert torch.allclose(o_model, o, atol=1e-6)
    assert torch.equal(feed_model, o_model)


@torch.no_grad()
def test_luong_step_attends_with_the_new_state_and_feeds_the_output_back():
    """Luong et al. 2015 eqs. 5, 8 with input feeding: h_t = GRU([y_{t-1}; o_{t-1}], h_{t-1}); c_t = attn(h_t, H);
    o_t = tanh(W_c [c_t; h_t])."""
    model, enc, h_prev, feed, y = one_step_inputs("luong_general")
    H, mask = enc["keys"], enc["mask"]
    h_t = gru_by_hand(torch.cat([y, feed], -1), h_prev, model.rnn)
    e = torch.einsum("bd,de,bse->bs", h_t, model.attention.W.weight, H)  # h_t^T W_a h_j
    a = torch.softmax(e.masked_fill(~mask, float("-inf")), dim=-1)
    c = (a[:, :, None] * H).sum(1)
    o = torch.tanh(torch.cat([c, h_t], -1) @ model.combine.weight.T + model.combine.bias)
    o_model, (h_model, _), w_model = model.step(y, (h_prev, feed), enc)
    assert torch.allclose(w_model, a, atol=1e-6)
    assert torch.allclose(h_model, h_t, atol=1e-6)
    assert torch.allclose(o_model, o, atol=1e-6)


# ----- beam search: length normalisation decides -------------------------------------------------------

A, B = 4, 5  # two target words; PAD 0, BOS 1, EOS 2, UNK 3
SCRIPT = {1: {2: 0.4, A: 0.6}, A: {B: 0.7, 2: 0.3}, B: {2: 0.8, A: 0.2}}  # P(next | previous token)


class ScriptedModel(Seq2Seq):
    """A decoder whose next-token distribution is a fixed table of the previous token (no network)."""

    def encode(self, src, src_len):
        mask = torch.ones(src.size(0), 1, dtype=torch.bool)
        return {"keys": torch.zeros(src.size(0), 1, 1), "mask": mask}, (torch.zeros(src.size(0), 1),)

    def _log_probs(self, y, state, enc):
        p = torch.full((y.size(0), 6), 1e-6)
        for row, prev in enumerate(y.tolist()):
            for tok, prob in SCRIPT.get(prev, {}).items():
                p[row, tok] = prob
        return p.log(), state, None


def test_beam_search_ranks_finished_hypotheses_by_length_normalised_score():
    """log p: [<eos>] -0.92, [a b <eos>] -1.09, [a <eos>] -1.71. Raw log-probability picks the empty output;
    divided by the length (1, 3, 2 tokens incl. <eos>) the best is "a b" (-0.36). A beam that ignores the length
    normalisation returns []."""
    model = ScriptedModel(ModelConfig(attention_type="none", emb_dim=4, enc_hidden=2, dec_hidden=4), 6, 6)
    src, src_len = torch.tensor([[4]]), torch.tensor([1])
    normalised = model.translate(src, src_len, beam_size=3, len_alpha=1.0, max_len=6)[0]
    raw = model.translate(src, src_len, beam_size=3, len_alpha=0.0, max_len=6)[0]
    assert normalised["ids"] == [A, B]
    assert abs(normalised["score"] - math.log(0.6 * 0.7 * 0.8)) < 1e-5
    assert raw["ids"] == [] and abs(raw["score"] - math.log(0.4)) < 1e-5
