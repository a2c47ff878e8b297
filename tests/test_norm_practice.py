"""normlib.lab.norm_practice and transformer.first_adam_step: the tools chapter 6 uses to
check how current Transformers use their norms."""

import math

import pytest
import torch
import torch.nn.functional as F

import normlib
from normlib.lab import norm_practice
from normlib.lab.transformer import TinyTransformer, first_adam_step


def test_dispatched_ops_tells_a_fused_kernel_from_composed_operations():
    x = torch.randn(4, 32)
    assert norm_practice.dispatched_ops(lambda z: F.layer_norm(z, (32,)), x) == ["native_layer_norm"]
    assert norm_practice.kernel_kind(lambda z: F.layer_norm(z, (32,)), x) == "fused"
    with normlib.kernels.use(False):  # normlib's layers as PyTorch operations
        composed = norm_practice.dispatched_ops(normlib.RMSNorm(32), x)
        assert len(composed) > 1 and "rsqrt" in composed
        assert norm_practice.kernel_kind(normlib.LayerNorm(32), x) == "composed"


def test_dispatched_ops_runs_without_autograd_and_returns_the_order():
    x = torch.randn(3, requires_grad=True)
    assert norm_practice.dispatched_ops(lambda z: (z * 2).exp(), x) == ["mul", "exp"]
    assert x.grad is None


def test_seconds_per_call_times_forward_and_backward():
    calls = []

    def fn(z):
        calls.append(1)
        return z * 2

    x = torch.randn(5, requires_grad=True)
    seconds = norm_practice.seconds_per_call(fn, x, calls=3, repeats=2)
    assert len(calls) == 6 and seconds > 0
    torch.testing.assert_close(x.grad, torch.full((5,), 12.0))  # 6 backward passes of d(2z)/dz
    with pytest.raises(ValueError):
        norm_practice.seconds_per_call(fn, x, calls=0)


def test_attention_logits_match_scaled_dot_products():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 8, generator=g)
    w_q, w_k = torch.randn(8, 8, generator=g), torch.randn(8, 8, generator=g)
    logits = norm_practice.attention_logits(x, w_q, w_k, num_heads=2)
    assert logits.shape == (2, 2, 5, 5)
    q, k = x @ w_q.T, x @ w_k.T
    head1 = q[..., 4:] @ k[..., 4:].transpose(-2, -1) / 2.0  # sqrt(d_head = 4)
    torch.testing.assert_close(logits[:, 1], head1)
    with pytest.raises(ValueError):
        norm_practice.attention_logits(x, w_q, w_k, num_heads=3)


def test_qk_norm_bounds_the_logits_whatever_the_weight_scale():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 6, 16, generator=g)
    w_q, w_k = torch.randn(16, 16, generator=g), torch.randn(16, 16, generator=g)
    plain = [norm_practice.attention_logits(x, s * w_q, s * w_k, 4).abs().max() for s in (1, 10)]
    normed = [norm_practice.attention_logits(x, s * w_q, s * w_k, 4, qk_norm=True) for s in (1, 10)]
    torch.testing.assert_close(plain[1], 100 * plain[0])
    assert all(n.abs().max() <= math.sqrt(4) for n in normed)
    torch.testing.assert_close(normed[0], normed[1], atol=1e-4, rtol=1e-4)


def test_dynamic_tanh_is_the_elementwise_formula():
    dyt = norm_practice.DynamicTanh(6, alpha_init=0.7)
    assert dyt.alpha.item() == pytest.approx(0.7)
    assert sorted(n for n, _ in dyt.named_parameters()) == ["alpha", "bias", "weight"]
    with torch.no_grad():
        dyt.weight.uniform_(0.5, 1.5)
        dyt.bias.normal_()
    x = torch.randn(3, 6)
    torch.testing.assert_close(dyt(x), dyt.weight * torch.tanh(0.7 * x) + dyt.bias)
    changed = x.clone()
    changed[:, 0] += 5.0  # another feature of the same token: outputs 1.. do not move
    torch.testing.assert_close(dyt(changed)[:, 1:], dyt(x)[:, 1:])
    assert "alpha=0.7" in repr(dyt)
    assert norm_practice.DynamicTanh((2, 3)).weight.shape == (2, 3)


def test_weight_decay_groups_spare_norm_parameters_of_any_shape():
    import normlib

    for norm in (torch.nn.LayerNorm([3, 4, 4]), normlib.LayerNorm([3, 4, 4]), torch.nn.GroupNorm(1, 3)):
        model = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 1), norm)
        decay, no_decay = norm_practice.weight_decay_groups(model, weight_decay=0.1)
        assert [p.shape for p in decay["params"]] == [torch.Size([3, 2, 1, 1])]
        assert {id(p) for p in no_decay["params"]} == {id(model[0].bias)} | {id(p) for p in norm.parameters()}


def test_weight_decay_groups_spare_norms_and_biases():
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2, bias=False))
    model[0].bias.requires_grad_(False)
    decay, no_decay = norm_practice.weight_decay_groups(model, weight_decay=0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert [p.shape for p in decay["params"]] == [torch.Size([8, 4]), torch.Size([2, 8])]
    assert [p.shape for p in no_decay["params"]] == [torch.Size([8]), torch.Size([8])]  # gamma, beta
    optimizer = torch.optim.AdamW([decay, no_decay], lr=0.1)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    gamma = model[1].weight.detach().clone()
    optimizer.step()  # zero gradients: only the decay moves anything
    torch.testing.assert_close(model[1].weight.detach(), gamma)
    assert (model[2].weight.abs() < 1.0).all()


@pytest.mark.parametrize("position", ["post", "pre"])
def test_first_adam_step_moves_each_weight_by_about_lr(position):
    torch.manual_seed(0)
    model = TinyTransformer(11, 11, 8, depth=3, d_model=8, num_heads=2, dim_feedforward=16, position=position)
    tokens = torch.randint(11, (4, 8))
    before = [b.linear2.weight.detach().clone() for b in model.blocks]
    with torch.no_grad():
        logits = model(tokens)
    step = first_adam_step(model, tokens, tokens, lr=1e-3)
    deltas = [(b.linear2.weight - w).detach() for b, w in zip(model.blocks, before)]
    assert step["update_norms"] == pytest.approx([float(d.norm()) for d in deltas])
    for delta in deltas:  # Adam's first step: lr * g / (|g| + eps), so at most lr
        assert (delta.abs() <= 1e-3 * (1 + 1e-4)).all()
        assert (delta.abs() > 0.9e-3).float().mean() > 0.5
    with torch.no_grad():
        change = float((model(tokens) - logits).norm() / logits.norm())
    assert step["output_change"] == pytest.approx(change) and change > 0
