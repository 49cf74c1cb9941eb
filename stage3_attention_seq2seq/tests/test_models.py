"""Model tests: masking, shapes, attention formulas, overfitting, greedy/beam consistency."""
import gzip
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from stage3_attention_seq2seq.models.attention import (BahdanauAttention, LuongDotAttention,
                                                       LuongGeneralAttention, masked_softmax)
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
    logits, loss, attn = model(src, src_len, tgt_in, tgt_out, return_attn=True)
    assert logits.shape == (6, 7, 50) and loss.ndim == 0
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
