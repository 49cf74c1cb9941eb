"""Scratch cells vs PyTorch's nn.RNN/LSTM/GRU, and the language model's wiring."""
import pytest
import torch
import torch.nn as nn

from stage2_rnn_lstm.models.adaptive import TiedAdaptiveEmbedding
from stage2_rnn_lstm.models.language_model import (
    TORCH_RNNS,
    LMConfig,
    LMOutput,
    RNNLanguageModel,
    copy_torch_to_scratch,
)
from stage2_rnn_lstm.models.rnn_scratch import RecurrentScratch
from stage2_rnn_lstm.utils.engine import sample_next

B, T, IN, H = 3, 7, 5, 6


def _pair(cell_type, num_layers):
    torch.manual_seed(0)
    ref = TORCH_RNNS[cell_type](IN, H, num_layers, batch_first=True).double()
    ours = RecurrentScratch(cell_type, IN, H, num_layers).double()
    copy_torch_to_scratch(ref, ours)
    return ref, ours


def _states(s):
    return list(s) if isinstance(s, tuple) else [s]


@pytest.mark.parametrize("cell_type", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("with_state", [False, True])
def test_scratch_matches_torch_outputs_states_and_gradients(cell_type, num_layers, with_state):
    ref, ours = _pair(cell_type, num_layers)
    x = torch.randn(B, T, IN, dtype=torch.float64)
    x_ref, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
    state = None
    if with_state:
        h0 = torch.randn(num_layers, B, H, dtype=torch.float64)
        state = (h0, torch.randn_like(h0)) if cell_type == "lstm" else h0
    out_ref, s_ref = ref(x_ref, state)
    out_ours, s_ours = ours(x_ours, state)
    assert out_ours.shape == out_ref.shape == (B, T, H)
    torch.testing.assert_close(out_ours, out_ref, atol=1e-10, rtol=1e-10)
    for a, b in zip(_states(s_ours), _states(s_ref)):
        assert a.shape == (num_layers, B, H)
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)
    # a loss touching the outputs and the final states, so every path carries gradient
    w = torch.randn(B, T, H, dtype=torch.float64)
    loss_ref = (out_ref * w).sum() + sum(s.square().sum() for s in _states(s_ref))
    loss_ours = (out_ours * w).sum() + sum(s.square().sum() for s in _states(s_ours))
    loss_ref.backward()
    loss_ours.backward()
    torch.testing.assert_close(x_ours.grad, x_ref.grad, atol=1e-10, rtol=1e-10)
    for k, cell in enumerate(ours.layers):
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            torch.testing.assert_close(getattr(cell, name).grad, getattr(ref, f"{name}_l{k}").grad,
                                       atol=1e-10, rtol=1e-10)


def _torch_name(scratch_name: str) -> str:
    """``rnn.layers.1.weight_hh`` (ours) -> ``rnn.weight_hh_l1`` (nn.LSTM's name for the same tensor)."""
    parts = scratch_name.split(".")
    if parts[0] == "rnn":
        return f"rnn.{parts[3]}_l{parts[2]}"
    return scratch_name


@pytest.mark.parametrize("model_type", ["rnn", "lstm", "gru"])
def test_language_model_scratch_equals_torch_float32(model_type):
    """Whole model, float32, default init path: logits, loss and every parameter's gradient within 1e-5."""
    base = dict(model_type=model_type, vocab_size=11, emb_dim=8, hidden_size=8, num_layers=2, dropout=0.0,
                tie_weights=True)
    torch.manual_seed(1)
    ref = RNNLanguageModel(LMConfig(impl="torch", **base))
    ours = RNNLanguageModel(LMConfig(impl="scratch", **base))
    ours.load_state_dict(ref.state_dict(), strict=False)
    copy_torch_to_scratch(ref.rnn, ours.rnn)
    idx = torch.randint(0, 11, (4, 9))
    tgt = torch.randint(0, 11, (4, 9))
    out_r, out_o = ref(idx, tgt), ours(idx, tgt)
    torch.testing.assert_close(out_o.logits, out_r.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out_o.loss, out_r.loss, atol=1e-6, rtol=1e-6)
    out_r.loss.backward()
    out_o.loss.backward()
    assert ours.head.weight is ours.embedding.weight  # tied
    ref_params = dict(ref.named_parameters())
    ours_params = dict(ours.named_parameters())
    assert {_torch_name(n) for n in ours_params} == set(ref_params)  # every parameter has its counterpart
    for name, p in ours_params.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
        torch.testing.assert_close(p.grad, ref_params[_torch_name(name)].grad, atol=1e-5, rtol=1e-5, msg=name)


def test_carried_state_equals_one_long_sequence():
    """Truncated BPTT's premise: two halves with the state carried = the whole sequence at once."""
    torch.manual_seed(0)
    m = RNNLanguageModel(LMConfig(impl="scratch", vocab_size=10, emb_dim=4, hidden_size=5, num_layers=2,
                                  dropout=0.0)).eval()
    idx = torch.randint(0, 10, (2, 12))
    full = m(idx).logits
    first = m(idx[:, :5])
    second = m(idx[:, 5:], state=m.detach_state(first.state)).logits
    torch.testing.assert_close(torch.cat([first.logits, second], 1), full)


def fit_one_batch(m, idx, tgt, lr, steps):
    """Adam on one batch; returns the first and the last loss."""
    opt = torch.optim.Adam(m.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = m(idx, tgt).loss
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return losses[0], losses[-1]


@pytest.mark.parametrize("impl", ["scratch", "torch"])
def test_overfits_one_batch(impl):
    torch.manual_seed(0)
    m = RNNLanguageModel(LMConfig(impl=impl, vocab_size=20, emb_dim=16, hidden_size=32, num_layers=1, dropout=0.0))
    idx = torch.randint(0, 20, (4, 10))
    tgt = torch.randint(0, 20, (4, 10))
    first, last = fit_one_batch(m, idx, tgt, lr=2e-2, steps=80)
    assert first > 2.5 and last < 0.05


def test_adaptive_softmax_loss_and_log_probs_agree():
    torch.manual_seed(0)
    m = RNNLanguageModel(LMConfig(vocab_size=50, emb_dim=16, hidden_size=16, num_layers=1, dropout=0.0,
                                  adaptive_cutoffs=(10, 30))).eval()
    idx, tgt = torch.randint(0, 50, (2, 6)), torch.randint(0, 50, (2, 6))
    out = m(idx, tgt)
    assert out._logits is None                           # training never pays for the (B, T, V) scores ...
    logp = m(idx).logits                                 # ... which are there when read: log-probabilities
    torch.testing.assert_close(out.logits, logp)
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(2, 6))
    nll = -logp.gather(-1, tgt.unsqueeze(-1)).mean()
    torch.testing.assert_close(nll, out.loss)


@pytest.mark.parametrize("options", [{}, {"tie_weights": True}, {"adaptive_cutoffs": (10, 30)},
                                     {"adaptive_cutoffs": (10, 30), "tie_weights": True}])
def test_forward_returns_one_type_whatever_the_output_layer(options):
    """One return type: logits (B, T, V) always, loss iff targets, the state to carry."""
    torch.manual_seed(0)
    m = RNNLanguageModel(LMConfig(vocab_size=50, emb_dim=16, hidden_size=16, num_layers=1, dropout=0.0, **options))
    idx = torch.randint(0, 50, (2, 5))
    for targets in (None, torch.randint(0, 50, (2, 5))):
        out = m(idx, targets)
        assert isinstance(out, LMOutput) and out.logits.shape == (2, 5, 50)
        assert (out.loss is None) == (targets is None)
        h, c = out.state
        assert h.shape == c.shape == (1, 2, 16)
        if targets is not None:  # the loss is the cross-entropy of the logits, whatever the output layer
            torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits.reshape(10, 50),
                                                                                    targets.reshape(10)))


def test_bad_model_configs():
    with pytest.raises(ValueError, match="emb_dim == hidden_size"):
        RNNLanguageModel(LMConfig(emb_dim=4, hidden_size=8, tie_weights=True))
    with pytest.raises(ValueError, match="unknown cell"):
        RecurrentScratch("transformer", 2, 2)


def test_sampling_filters():
    logits = torch.tensor([5.0, 4.0, 1.0, 0.0, -1.0])
    g = torch.Generator().manual_seed(0)
    assert {sample_next(logits, 1.0, top_k=2, generator=g) for _ in range(200)} == {0, 1}
    # probs ~ [.71, .26, .013, ...]: top_p 0.5 keeps only the first, 0.9 the first two
    assert {sample_next(logits, 1.0, top_p=0.5, generator=g) for _ in range(100)} == {0}
    assert {sample_next(logits, 1.0, top_p=0.9, generator=g) for _ in range(300)} == {0, 1}
    a = [sample_next(logits, 2.0, generator=torch.Generator().manual_seed(3)) for _ in range(5)]
    b = [sample_next(logits, 2.0, generator=torch.Generator().manual_seed(3)) for _ in range(5)]
    assert a == b


def _tied_adaptive_and_torch_copy(div_value):
    torch.manual_seed(0)
    ours = TiedAdaptiveEmbedding(60, 16, (10, 30), div_value).double()
    ref = nn.AdaptiveLogSoftmaxWithLoss(16, 60, [10, 30], div_value=div_value, head_bias=False).double()
    with torch.no_grad():  # the same function: head = [E_0; cluster logits], tail i = P_i^T then E_i
        ref.head.weight.copy_(torch.cat([ours.tables[0].weight, ours.cluster.weight]))
        for i, tail in enumerate(ref.tail, start=1):
            tail[0].weight.copy_(ours.projs[i - 1].weight.t())
            tail[1].weight.copy_(ours.tables[i].weight)
    return ours, ref


@pytest.mark.parametrize("div_value", [1.0, 2.0, 4.0])
def test_tied_adaptive_softmax_matches_torch(div_value):
    ours, ref = _tied_adaptive_and_torch_copy(div_value)
    assert ours.dims == [16, int(16 // div_value), int(16 // div_value ** 2)]
    h = torch.randn(40, 16, dtype=torch.float64, requires_grad=True)
    targets = torch.cat([torch.arange(60), torch.randint(0, 60, (20,))])[torch.randperm(80)][:40]
    targets[:3] = torch.tensor([0, 15, 59])  # every cluster is hit
    loss = ours.loss(h, targets)
    ref_loss = ref(h, targets).loss
    torch.testing.assert_close(loss, ref_loss)
    torch.testing.assert_close(ours.log_prob(h), ref.log_prob(h))
    g, = torch.autograd.grad(loss, h)
    g_ref, = torch.autograd.grad(ref_loss, h)
    torch.testing.assert_close(g, g_ref)


def test_tied_adaptive_embedding_shares_weights_with_the_output():
    ours, _ = _tied_adaptive_and_torch_copy(2.0)
    idx = torch.tensor([[3, 12, 45]])
    e = ours(idx)
    torch.testing.assert_close(e[0, 0], ours.tables[0].weight[3])
    torch.testing.assert_close(e[0, 1], ours.tables[1].weight[2] @ ours.projs[0].weight.t())
    torch.testing.assert_close(e[0, 2], ours.tables[2].weight[15] @ ours.projs[1].weight.t())
    # the output side alone trains the same tables the input side reads
    ours.loss(torch.randn(5, 16, dtype=torch.float64), torch.tensor([45, 46, 12, 3, 59])).backward()
    assert ours.tables[2].weight.grad[15].abs().sum() > 0 and ours.projs[1].weight.grad.abs().sum() > 0


def test_tied_adaptive_language_model_learns_and_scores_consistently():
    torch.manual_seed(0)
    m = RNNLanguageModel(LMConfig(vocab_size=50, emb_dim=16, hidden_size=16, num_layers=1, dropout=0.0,
                                  tie_weights=True, adaptive_cutoffs=(10, 30), adaptive_div=2.0))
    assert m.head is None and m.adaptive is None and isinstance(m.embedding, TiedAdaptiveEmbedding)
    idx, tgt = torch.randint(0, 50, (2, 8)), torch.randint(0, 50, (2, 8))
    m.eval()
    logp = m(idx).logits
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(2, 8))
    torch.testing.assert_close(-logp.gather(-1, tgt.unsqueeze(-1)).mean(), m(idx, tgt).loss)
    m.train()
    first, last = fit_one_batch(m, idx, tgt, lr=3e-2, steps=150)
    assert first > 3.5 and last < 0.1  # memorises the batch through the shared tables
