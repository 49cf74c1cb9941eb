"""The NumPy MLP against torch autograd and finite differences; the optimizers against torch.optim."""
import numpy as np
import pytest
import torch

from stage1_mlp.datasets.vectorizer import SparseRows
from stage1_mlp.models.mlp_numpy import AdamWNumpy, NumpyMLP, cross_entropy, sparse_matmul
from stage1_mlp.models.mlp_torch import LazyAdam, MLPOptimizer, TorchMLP, load_numpy_params, numpy_params

V, C = 40, 3


def random_batch(seed=0, lens=(3, 0, 5, 1, 4, 2), dtype=np.float32):
    """A sparse batch with an empty row (a document with no known n-gram) in the middle."""
    rng = np.random.default_rng(seed)
    indptr = np.r_[0, np.cumsum(lens)].astype(np.int64)
    idx = np.concatenate([np.sort(rng.choice(V, n, replace=False)) for n in lens]).astype(np.int64)
    x = SparseRows(indptr, idx, rng.random(len(idx)).astype(dtype) + 0.1, V)
    return x, rng.integers(0, C, len(lens))


def torch_grads(model):
    """Gradients of a TorchMLP in NumpyMLP's layout."""
    out = {"W1": model.embed.weight.grad.to_dense().numpy(), "b1": model.b1.grad.numpy()}
    for k, layer in enumerate(model.layers, start=2):
        out[f"W{k}"] = layer.weight.grad.numpy().T
        out[f"b{k}"] = layer.bias.grad.numpy()
    return out


def test_sparse_rows_match_dense():
    x, _ = random_batch()
    W = np.random.default_rng(1).normal(size=(V, 5)).astype(np.float32)
    np.testing.assert_allclose(sparse_matmul(x, W), x.to_dense() @ W, rtol=1e-5, atol=1e-6)
    sub = x.take(np.array([4, 1, 0]))
    np.testing.assert_array_equal(sub.to_dense(), x.to_dense()[[4, 1, 0]])


@pytest.mark.parametrize("hidden", [(8, 7), (8,), ()])
def test_numpy_matches_torch_outputs_and_gradients(hidden):
    x, y = random_batch()
    torch.manual_seed(0)
    tm = TorchMLP(V, hidden, C, dropout=0.0)
    nm = NumpyMLP(V, hidden, C, dropout=0.0)
    nm.load_state_dict(numpy_params(tm))
    logits_t, loss_t = tm(x, torch.from_numpy(y))
    loss_t.backward()
    logits_n, loss_n = nm.forward(x, y)
    nm.backward()
    np.testing.assert_allclose(logits_n, logits_t.detach().numpy(), rtol=1e-5, atol=1e-6)
    assert loss_n == pytest.approx(loss_t.item(), rel=1e-5)
    tg = torch_grads(tm)
    assert set(tg) == set(nm.params)
    for name, g in tg.items():
        np.testing.assert_allclose(nm.dense_grad(name), g, rtol=1e-4, atol=1e-7, err_msg=name)
    # and the copy back: numpy weights → torch gives the numpy logits
    tm2 = TorchMLP(V, hidden, C)
    load_numpy_params(tm2, nm.params)
    np.testing.assert_allclose(tm2(x)[0].detach().numpy(), logits_n, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_numpy_gradients_match_finite_differences(dropout):
    """Central differences in float64; dropout masks are kept fixed by re-seeding before each forward."""
    x, y = random_batch(dtype=np.float64)
    nm = NumpyMLP(V, (6, 5), C, dropout=dropout, seed=3)
    nm.params = {k: v.astype(np.float64) for k, v in nm.params.items()}

    def loss_at():
        np.random.seed(123)  # dropout masks come from NumPy's global RNG
        return nm.forward(x, y)[1]

    loss_at()
    nm.backward()
    rng = np.random.default_rng(0)
    eps = 1e-6
    for name, p in nm.params.items():
        g = nm.dense_grad(name)
        flat = [tuple(i) for i in np.argwhere(np.ones_like(p, dtype=bool))]
        if name == "W1":  # rows of n-grams present in the batch (the others have zero gradient)
            flat = [(r, c) for r in np.unique(x.indices)[:4] for c in range(p.shape[1])]
            assert not g[np.setdiff1d(np.arange(V), x.indices)].any()
        for i in [flat[j] for j in rng.choice(len(flat), min(12, len(flat)), replace=False)]:
            old = p[i]
            p[i] = old + eps
            up = loss_at()
            p[i] = old - eps
            down = loss_at()
            p[i] = old
            assert (up - down) / (2 * eps) == pytest.approx(g[i], rel=1e-4, abs=1e-8), (name, i)


def test_softmax_cross_entropy_gradient_formula():
    z = np.array([[2.0, -1.0, 0.5], [1000.0, 0.0, -1000.0]])  # huge logits must not overflow
    y = np.array([2, 0])
    loss, grad = cross_entropy(z, y)
    zt = torch.tensor(z, requires_grad=True)
    lt = torch.nn.functional.cross_entropy(zt, torch.tensor(y))
    lt.backward()
    assert loss == pytest.approx(lt.item())
    np.testing.assert_allclose(grad, zt.grad.numpy(), atol=1e-12)


def test_lazy_adam_equals_torch_sparse_adam():
    torch.manual_seed(0)
    a, b = TorchMLP(V, (8,), C), TorchMLP(V, (8,), C)
    b.load_state_dict(a.state_dict())
    oa, ob = LazyAdam([a.embed.weight], lr=1e-2), torch.optim.SparseAdam([b.embed.weight], lr=1e-2)
    for seed in range(4):
        x, y = random_batch(seed)
        for m, o in ((a, oa), (b, ob)):
            o.zero_grad()
            m(x, torch.from_numpy(y))[1].backward()
            o.step()
    torch.testing.assert_close(a.embed.weight, b.embed.weight, rtol=1e-5, atol=1e-7)
    assert not torch.equal(a.embed.weight, TorchMLP(V, (8,), C).embed.weight)


def test_numpy_optimizer_matches_torch_training():
    """Five AdamW/lazy-Adam steps by hand equal five steps of MLPOptimizer (weight decay on)."""
    torch.manual_seed(1)
    tm = TorchMLP(V, (8,), C)
    nm = NumpyMLP(V, (8,), C)
    nm.load_state_dict(numpy_params(tm))
    topt, nopt = MLPOptimizer(tm, lr=1e-2, weight_decay=0.1), AdamWNumpy(nm.params, nm.grads, lr=1e-2, weight_decay=0.1)
    for seed in range(5):
        x, y = random_batch(seed)
        for model, opt in ((tm, topt), (nm, nopt)):  # the same four lines for both implementations
            opt.zero_grad()
            model(x, y)[1].backward()
            opt.step()
    for name, p in numpy_params(tm).items():
        np.testing.assert_allclose(nm.params[name], p, rtol=1e-4, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("max_norm", [0.05, 1e6])
def test_grad_clip_numpy_equals_torch_and_bounds_the_norm(max_norm):
    """Global-norm clipping by hand (NumPy) and on a sparse + dense torch model give the same gradients;
    a norm below the limit leaves them untouched."""
    torch.manual_seed(2)
    tm = TorchMLP(V, (8,), C)
    nm = NumpyMLP(V, (8,), C)
    nm.load_state_dict(numpy_params(tm))
    x, y = random_batch(3, lens=(3, 3, 5, 1, 4, 2))
    x.indices[1] = x.indices[0]  # a repeated n-gram id within a row: its sparse gradient rows must be summed
    topt, nopt = MLPOptimizer(tm, lr=1e-2), AdamWNumpy(nm.params, nm.grads, lr=1e-2)
    tm(x, y)[1].backward()
    nm(x, y)[1].backward()
    before = {k: nm.dense_grad(k).copy() for k in nm.params}
    n_numpy, n_torch = nopt.clip_grad_norm(max_norm), topt.clip_grad_norm(max_norm)
    assert n_numpy == pytest.approx(n_torch, rel=1e-5)
    assert n_numpy == pytest.approx(np.sqrt(sum((g.astype(np.float64) ** 2).sum() for g in before.values())), rel=1e-6)
    after = {k: nm.dense_grad(k) for k in nm.params}
    total = np.sqrt(sum((g.astype(np.float64) ** 2).sum() for g in after.values()))
    if max_norm < n_numpy:
        assert total == pytest.approx(max_norm, rel=1e-4)
    else:
        assert all(np.array_equal(after[k], before[k]) for k in before)
    for name, g in torch_grads(tm).items():
        np.testing.assert_allclose(after[name], g, rtol=1e-4, atol=1e-8, err_msg=name)


def test_numpy_model_and_optimizer_follow_the_torch_contract():
    """parameters(), state_dict()/load_state_dict() with tensors (checkpoint-ready), train()/eval(),
    forward(x, labels) -> (logits, loss) with loss.item()/loss.backward(), optimizer state round trip."""
    x, y = random_batch()
    nm = NumpyMLP(V, (6,), C, dropout=0.5, seed=1)
    opt = AdamWNumpy(nm.params, nm.grads, lr=1e-2)
    assert sum(p.size for p in nm.parameters()) == sum(p.numel() for p in TorchMLP(V, (6,), C).parameters())
    logits, loss = nm(x, y)
    assert logits.shape == (len(y), C) and isinstance(loss.item(), float)
    opt.zero_grad()
    loss.backward()
    opt.step()
    state, ostate = nm.state_dict(), opt.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert all(isinstance(v, torch.Tensor) for k in ("m", "v") for v in ostate[k].values())
    other = NumpyMLP(V, (6,), C, seed=99)
    other.load_state_dict(state)
    other_opt = AdamWNumpy(other.params, other.grads, lr=1.0)
    other_opt.load_state_dict(ostate)
    assert other_opt.t == 1 and other_opt.lr == 1e-2
    nm.eval(), other.eval()
    np.testing.assert_array_equal(nm(x)[0], other(x)[0])  # eval mode: no dropout, same weights, same logits
    opt.zero_grad()
    assert not nm.grads


@pytest.mark.parametrize("impl", ["numpy", "torch"])
def test_overfits_a_tiny_batch(impl):
    x, y = random_batch(7, lens=(4, 5, 3, 6, 2, 5, 4, 3))
    if impl == "numpy":
        m = NumpyMLP(V, (16,), C, dropout=0.0, seed=0)
        opt = AdamWNumpy(m.params, m.grads, lr=0.05, weight_decay=0.0)
        for _ in range(150):
            opt.zero_grad()
            _, loss = m(x, y)
            loss.backward()
            opt.step()
    else:
        torch.manual_seed(0)
        m = TorchMLP(V, (16,), C)
        opt = MLPOptimizer(m, lr=0.05)
        for _ in range(150):
            opt.zero_grad()
            _, loss_t = m(x, torch.from_numpy(y))
            loss_t.backward()
            opt.step()
        loss = loss_t.item()
    assert loss < 0.02
