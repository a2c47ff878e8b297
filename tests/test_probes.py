"""normlib.lab.probes and train.sandbox: measurements that leave the model untouched."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import normlib
from normlib.lab import data, models, probes, train


def _bn_net(seed=0):
    normlib.seed(seed)
    return models.mlp(6, 3, hidden=(8, 8), norm="bn")


def _snapshot(model):
    return (
        {k: v.detach().clone() for k, v in model.state_dict().items()},
        [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        [m.training for m in model.modules()],
    )


def _same(model, snapshot):
    state, grads, modes = snapshot
    now = model.state_dict()
    assert all(torch.equal(now[k], v) for k, v in state.items())
    for p, g in zip(model.parameters(), grads):
        assert (p.grad is None) == (g is None) and (g is None or torch.equal(p.grad, g))
    assert [m.training for m in model.modules()] == modes


# --------------------------------------------------------------------------- sandbox


def test_sandbox_restores_parameters_buffers_grads_modes_and_rng():
    net = _bn_net()
    x = torch.randn(16, 6)
    net(x).sum().backward()  # some .grad to keep, running stats moved once
    net.norm2.eval()
    snapshot = _snapshot(net)
    torch.manual_seed(3)
    expected_draw = torch.rand(4)
    torch.manual_seed(3)
    with train.sandbox(net):
        net.train()
        for _ in range(3):  # forward passes in training mode update the running stats ...
            loss = net(x + torch.randn(16, 6)).pow(2).mean()  # ... and consume random numbers
            loss.backward()
            with torch.no_grad():
                for p in net.parameters():
                    p -= 0.1 * p.grad
        assert not torch.equal(net.norm1.running_mean, snapshot[0]["norm1.running_mean"])
    _same(net, snapshot)
    assert torch.equal(torch.rand(4), expected_draw)  # the global stream continues as if untouched


def test_sandbox_restores_even_after_an_exception():
    net = _bn_net()
    snapshot = _snapshot(net)
    with pytest.raises(RuntimeError, match="inside"):
        with train.sandbox(net):
            with torch.no_grad():
                net.linear1.weight.add_(1.0)
            raise RuntimeError("inside")
    _same(net, snapshot)


def test_sandbox_probe_does_not_change_the_training_run():
    ds = data.digits(device="cpu")
    build = lambda: models.mlp(64, 10, hidden=(16,), norm=lambda w: models.NoisyNorm(normlib.BatchNorm1d(w)))
    kwargs = dict(steps=20, batch_size=32, lr=0.1, eval_every=5, progress=False)

    def probe(model):  # draws noise, updates running stats, takes a step: all inside the sandbox
        shift = probes.layer_input_shift(model, ds.x_test[:50], (ds.x_train[:32], ds.y_train[:32]), ["act1"], 0.1)
        return {"shift": shift["act1"]}

    plain = train.run(build, ds, seed=1, **kwargs)
    probed = train.run(build, ds, seed=1, probe=probe, **kwargs)
    assert probed.train_loss == plain.train_loss and probed.test_accuracy == plain.test_accuracy
    assert len(probed.probes["shift"]) == len(probed.steps) and all(v > 0 for v in probed.probes["shift"])

    def leaky_probe(model):  # the same probe without the sandbox changes the run
        model(ds.x_test[:50])
        return {}

    leaky = train.run(build, ds, seed=1, probe=leaky_probe, **kwargs)
    assert leaky.train_loss != plain.train_loss


# --------------------------------------------------------------------------- distribution_shift


def test_distribution_shift_values():
    torch.manual_seed(0)
    before = torch.randn(500, 4) * torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert probes.distribution_shift(before, before) == 0
    # A shift by c moves every unit by c: W1 = c, so D = 4c / sum of stds.
    stds = before.std(dim=0, correction=0).sum()
    assert probes.distribution_shift(before, before + 0.5) == pytest.approx(float(4 * 0.5 / stds), rel=1e-6)
    # Scale-free: rescaling both sides together changes nothing.
    after = before * 1.3 - 0.2
    assert probes.distribution_shift(3 * before, 3 * after) == pytest.approx(probes.distribution_shift(before, after))
    # It compares distributions, not samples: shuffling the rows of `after` changes nothing.
    assert probes.distribution_shift(before, after[torch.randperm(500)]) == pytest.approx(
        probes.distribution_shift(before, after)
    )
    # W1 of a rescaling about the mean: |k - 1| * mean |x - mean| per unit.
    centred = before - before.mean(0)
    expected = float((0.5 * centred.abs().mean(0)).sum() / stds)
    assert probes.distribution_shift(centred, 1.5 * centred) == pytest.approx(expected, rel=1e-6)


def test_distribution_shift_per_channel_and_errors():
    torch.manual_seed(0)
    maps = torch.randn(8, 3, 4, 4)
    flat = maps.transpose(0, 1).reshape(3, -1).T  # (values, channels)
    assert probes.distribution_shift(maps, maps + 1) == pytest.approx(probes.distribution_shift(flat, flat + 1))
    with pytest.raises(ValueError, match="shapes differ"):
        probes.distribution_shift(torch.zeros(4, 2), torch.zeros(5, 2))
    constant = torch.ones(10, 2)
    assert probes.distribution_shift(constant, constant) == 0
    assert probes.distribution_shift(constant, constant + 1) == math.inf


# --------------------------------------------------------------------------- layer_input_shift


def test_layer_input_shift_sees_the_step_and_the_noise():
    torch.manual_seed(0)
    x, batch = torch.randn(64, 6), (torch.randn(32, 6), torch.randint(0, 3, (32,)))
    net = _bn_net()
    snapshot = _snapshot(net)
    assert probes.layer_input_shift(net, x, batch, ["act1", "act2"], lr=0.0) == {"act1": 0.0, "act2": 0.0}
    small = probes.layer_input_shift(net, x, batch, ["act2"], lr=0.01)["act2"]
    large = probes.layer_input_shift(net, x, batch, ["act2"], lr=1.0)["act2"]
    assert 0 < small < large
    _same(net, snapshot)
    normlib.seed(0)
    noisy = models.mlp(6, 3, hidden=(8, 8), norm=lambda w: models.NoisyNorm(normlib.BatchNorm1d(w)))
    # Even without a step (lr = 0) the noise redrawn between the two captures moves the inputs.
    assert probes.layer_input_shift(noisy, x, batch, ["act1"], lr=0.0)["act1"] > 0.1


# --------------------------------------------------------------------------- gradient_ics


def test_gradient_ics_matches_a_manual_computation():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    x, y = torch.randn(20, 5), torch.randint(0, 3, (20,))
    lr = 0.5
    snapshot = _snapshot(net)
    ics = probes.gradient_ics(net, (x, y), lr)
    _same(net, snapshot)
    assert list(ics) == ["0", "2"]
    assert ics["0"] == (0.0, pytest.approx(1.0))  # nothing before the first layer
    # By hand: step the first layer (weight and bias), then the second layer's gradient.
    moved = copy.deepcopy(net)
    loss = F.cross_entropy(net(x), y)
    g_w0, g_b0, g_w2 = torch.autograd.grad(loss, [net[0].weight, net[0].bias, net[2].weight])
    with torch.no_grad():
        moved[0].weight -= lr * g_w0
        moved[0].bias -= lr * g_b0
    g_w2_after = torch.autograd.grad(F.cross_entropy(moved(x), y), moved[2].weight)[0]
    assert ics["2"][0] == pytest.approx(float((g_w2 - g_w2_after).norm()), rel=1e-5)
    assert ics["2"][1] == pytest.approx(
        float(F.cosine_similarity(g_w2.flatten(), g_w2_after.flatten(), dim=0)), rel=1e-5
    )
    assert ics["2"][0] > 0
    assert probes.gradient_ics(net, (x, y), 0.0)["2"] == (0.0, pytest.approx(1.0))
    with pytest.raises(KeyError, match="no Linear/Conv layer"):
        probes.gradient_ics(net, (x, y), lr, layers=["1"])


# --------------------------------------------------------------------------- along_gradient


def test_along_gradient_on_a_quadratic_is_exact():
    # Least squares: L(w) = mean((Xw - y)^2) / 2 has gradient H w - b and Hessian H = X^T X / n.
    torch.manual_seed(0)
    X = torch.randn(50, 3, dtype=torch.float64) * torch.tensor([1.0, 2.0, 5.0], dtype=torch.float64)
    target = torch.randn(50, dtype=torch.float64)
    model = nn.Linear(3, 1, bias=False).double()
    loss_fn = lambda out, t: 0.5 * (out.squeeze(1) - t).pow(2).mean()
    w = model.weight.detach().flatten().clone()
    H = X.T @ X / 50
    g = H @ w - X.T @ target / 50
    loss = lambda v: 0.5 * float((X @ v - target).pow(2).mean())
    etas = [0.01, 0.05, 0.1]
    result = probes.along_gradient(model, X, target, etas, loss_fn=loss_fn)
    assert torch.equal(model.weight.detach().flatten(), w)
    assert result["loss"] == pytest.approx(loss(w)) and result["grad_norm"] == pytest.approx(float(g.norm()))
    assert result["losses"] == pytest.approx([loss(w - eta * g) for eta in etas])
    # The gradient changes by eta * H g, so beta = ||H g|| / ||g|| <= largest eigenvalue of H.
    assert result["grad_changes"] == pytest.approx([eta * float((H @ g).norm()) for eta in etas])
    beta = float((H @ g).norm() / g.norm())
    assert result["beta"] == pytest.approx(beta) and beta <= float(torch.linalg.eigvalsh(H).max())
    assert result["loss_range"] == pytest.approx(max(result["losses"]) - min(result["losses"]))
    with pytest.raises(ValueError, match="positive"):
        probes.along_gradient(model, X, target, [0.0, 0.1], loss_fn=loss_fn)


def test_along_gradient_keeps_batchnorm_state_and_works_under_no_grad():
    net = _bn_net()
    x, y = torch.randn(32, 6), torch.randint(0, 3, (32,))
    snapshot = _snapshot(net)
    with torch.no_grad():  # as fit() calls its probes
        result = probes.along_gradient(net, x, y, [0.1, 1.0])
    _same(net, snapshot)
    assert result["grad_norm"] > 0 and len(result["losses"]) == 2 and result["beta"] > 0


# --------------------------------------------------------------------------- gradient_norms


def test_gradient_norms_match_autograd_and_leave_grads():
    net = _bn_net()
    x, y = torch.randn(32, 6), torch.randint(0, 3, (32,))
    net(x).sum().backward()
    snapshot = _snapshot(net)
    with torch.no_grad():
        norms = probes.gradient_norms(net, x, y)
    _same(net, snapshot)
    assert list(norms) == ["linear1", "linear2", "head"]
    reference = copy.deepcopy(net)
    reference.zero_grad()
    F.cross_entropy(reference(x), y).backward()
    for name in norms:
        assert norms[name] == pytest.approx(float(getattr(reference, name).weight.grad.norm()), rel=1e-6)
    assert list(probes.gradient_norms(net, x, y, layers=["head"])) == ["head"]
    with pytest.raises(KeyError, match="no Linear/Conv layer"):
        probes.gradient_norms(net, x, y, layers=["norm1"])
