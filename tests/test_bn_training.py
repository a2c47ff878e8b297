"""Chapter 4's lab helpers (normlib.lab.bn_training) and figures (normlib.lab.viz.bn_training)."""

import inspect
import math

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import normlib  # noqa: E402
from normlib.lab import bn_training, data, models  # noqa: E402
from normlib.lab.viz import bn_training as bn_figures  # noqa: E402
from normlib.lab.viz import shades  # noqa: E402


def autograd_backward(x, gamma, grad_y, eps=1e-5):
    """A correct 'graph' gradient (autograd through the four steps), for the tests."""
    x, gamma = x.clone().requires_grad_(), gamma.clone().requires_grad_()
    beta = torch.zeros_like(gamma, requires_grad=True)
    dims = (0, *range(2, x.dim()))
    shape = [1, -1] + [1] * (x.dim() - 2)
    mean = x.mean(dim=dims, keepdim=True)
    var = x.var(dim=dims, keepdim=True, correction=0)
    y = gamma.reshape(shape) * (x - mean) / torch.sqrt(var + eps) + beta.reshape(shape)
    y.backward(grad_y)
    return x.grad, gamma.grad, beta.grad


def elementwise_backward(x, gamma, grad_y, eps=1e-5):
    """The wrong gradient that ignores the statistics."""
    dims = (0, *range(2, x.dim()))
    shape = [1, -1] + [1] * (x.dim() - 2)
    var = x.var(dim=dims, keepdim=True, correction=0)
    grad_x = gamma.reshape(shape) * grad_y / torch.sqrt(var + eps)
    return grad_x, torch.zeros_like(gamma), grad_y.sum(dim=dims)


@pytest.mark.parametrize("shape", [(5, 3), (4, 2, 3, 3)])
def test_four_gradients_agree_with_autograd(shape):
    gen = torch.Generator().manual_seed(0)
    x = 3 * torch.randn(shape, generator=gen) + 2
    gamma, beta = torch.rand(shape[1], generator=gen) + 0.5, torch.randn(shape[1], generator=gen)
    grad_y = torch.randn(shape, generator=gen)
    results = bn_training.four_gradients(x, gamma, beta, grad_y, autograd_backward)
    assert list(results) == ["graph", "closed form", "torch autograd", "BatchNormFunction"]
    for result in results.values():
        assert all(t.dtype == torch.float64 for t in result)
    assert bn_training.largest_difference(results) < 1e-10
    # dbeta is the channel sum of grad_y, and dx sums to zero over each channel.
    dims = (0, *range(2, len(shape)))
    dx, _, dbeta = results["torch autograd"]
    torch.testing.assert_close(dbeta, grad_y.double().sum(dim=dims))
    torch.testing.assert_close(dx.sum(dim=dims), torch.zeros(shape[1], dtype=torch.float64))


def test_four_gradients_exposes_a_wrong_graph():
    gen = torch.Generator().manual_seed(1)
    x, grad_y = torch.randn(6, 3, generator=gen), torch.randn(6, 3, generator=gen)
    results = bn_training.four_gradients(x, torch.ones(3), torch.zeros(3), grad_y, elementwise_backward)
    assert bn_training.largest_difference(results) > 0.01


def test_four_gradients_source_fits_the_page():
    # The chapter shows it with viz.show_source: code boxes show 79 characters.
    assert max(len(line) for line in inspect.getsource(bn_training.four_gradients).splitlines()) <= 79


def test_deep_mlp_scales_only_the_layers_that_feed_the_norm():
    normlib.seed(0)
    scaled = bn_training.deep_mlp("bn", init=1.0, scale_head=False)()
    hidden = [scaled.get_submodule(f"linear{i}") for i in range(1, 6)]
    assert all(0.9 < layer.weight.std() < 1.1 for layer in hidden)
    assert all(layer.bias is None for layer in hidden)
    bound = 1 / math.sqrt(64)  # PyTorch's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert scaled.head.weight.abs().max() <= bound and scaled.head.weight.std() > 0.5 * bound / math.sqrt(3)
    normlib.seed(0)
    everything = bn_training.deep_mlp("bn", init=1.0)()
    assert everything.head.weight.std() > 0.9
    plain = bn_training.deep_mlp("none")()
    assert plain.linear1.bias is not None and isinstance(plain.norm1, torch.nn.Identity)


def test_deep_mlp_eps_reaches_every_norm_layer_and_needs_one():
    model = bn_training.deep_mlp("bn", eps=1e-12)()
    assert [m.eps for n, m in model.named_children() if n.startswith("norm")] == [1e-12] * 5
    assert bn_training.deep_mlp("bn")().norm3.eps == 1e-5
    with pytest.raises(ValueError, match="eps needs a normalization layer"):
        bn_training.deep_mlp("none", eps=1e-12)


def test_sgd_by_role_gives_each_kind_of_parameter_its_rate():
    model = bn_training.deep_mlp("bn", depth=3)()
    opt = bn_training.sgd_by_role(31.0, 0.5, 0.1)([p for p in model.parameters()])
    rate = {id(p): group["lr"] for group in opt.param_groups for p in group["params"]}
    assert len(rate) == len(list(model.parameters()))
    for name, p in model.named_parameters():
        expected = 31.0 if name.startswith("linear") else 0.5 if name.startswith("norm") else 0.1
        assert rate[id(p)] == expected, name
    # One plain SGD step moves each parameter by its own rate times its gradient.
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    opt.step()
    for name, p in model.named_parameters():
        assert torch.allclose(before[name] - p.detach(), torch.full_like(p, rate[id(p)])), name


def test_sgd_by_role_refuses_parameters_it_cannot_place():
    plain = bn_training.deep_mlp("none", depth=2)()  # hidden biases: weight, bias, ...
    with pytest.raises(ValueError, match="expects the parameters of deep_mlp"):
        bn_training.sgd_by_role(1.0, 1.0, 1.0)(list(plain.parameters()))
    ln = bn_training.deep_mlp("ln", depth=2)()  # LayerNorm(64): gamma/beta of size 64 too
    bn_training.sgd_by_role(1.0, 1.0, 1.0)(list(ln.parameters()))
    with pytest.raises(ValueError, match="expects the parameters"):
        bn_training.sgd_by_role(1.0, 1.0, 1.0)(list(ln.parameters())[:-1])


def test_scaled_init_is_a_scaled_learning_rate_for_weights_that_feed_batchnorm():
    """Chapter 4's identity: weights c*W at rate lr train like W at lr / c^2 (gamma, beta and
    head at lr), exactly up to BatchNorm's eps; a tiny eps makes the losses agree."""
    digits = tiny_data()
    c2 = 0.01**2 / (2 / 64)
    runs = bn_training.sweep(
        {
            "small": (bn_training.deep_mlp("bn", init=0.01, scale_head=False, eps=1e-12), {}),
            "he": (
                bn_training.deep_mlp("bn", init="he", scale_head=False, eps=1e-12),
                {"optimizer": bn_training.sgd_by_role(0.1 / c2, 0.1, 0.1)},
            ),
            "he, same rate": (bn_training.deep_mlp("bn", init="he", scale_head=False, eps=1e-12), {}),
        },
        digits,
        seeds=(0,),
        steps=8,
        batch_size=64,
        lr=0.1,
        progress=False,
    )
    small, he, same = (runs[k][0].train_loss for k in ("small", "he", "he, same rate"))
    assert max(abs(a - b) for a, b in zip(small, he)) < 1e-4
    assert max(abs(a - b) for a, b in zip(small, same)) > 1e-2  # the rate matters


def tiny_data():
    digits = data.digits(standardize=True)
    return digits


def test_sweep_runs_every_key_and_seed_with_its_settings():
    digits = tiny_data()
    runs = bn_training.sweep(
        {
            "slow": (bn_training.deep_mlp("none", depth=1), {"lr": 0.0}),
            "fast": (bn_training.deep_mlp("bn", depth=1), {}),
        },
        digits,
        seeds=(0, 1),
        steps=5,
        batch_size=16,
        lr=0.1,
        eval_every=5,
        progress=False,
    )
    assert set(runs) == {"slow", "fast"} and all(len(v) == 2 for v in runs.values())
    assert [h.config["lr"] for h in runs["slow"]] == [0.0, 0.0]
    assert [h.config["seed"] for h in runs["fast"]] == [0, 1]
    # lr 0 (and no running statistics): the test loss never moves; the same seed gives the same run.
    assert runs["slow"][0].test_loss[0] == runs["slow"][0].test_loss[-1]
    again = bn_training.sweep(
        {"fast": (bn_training.deep_mlp("bn", depth=1), {})},
        digits,
        seeds=(0,),
        steps=5,
        batch_size=16,
        lr=0.1,
        eval_every=5,
        progress=False,
    )
    assert again["fast"][0].train_loss == runs["fast"][0].train_loss


def test_trained_and_small_batch_accuracies():
    digits = tiny_data()
    model, history = bn_training.trained(
        bn_training.deep_mlp("bn", depth=1), digits, seed=0, steps=20, batch_size=32, lr=0.1, progress=False
    )
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = bn_training.small_batch_accuracies(model, digits, batch_size=2)
    assert set(result) == {"eval, running statistics", "training mode, batches of N", "eval, precise BN"}
    assert result["eval, running statistics"] == pytest.approx(history.final_accuracy)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the model is unchanged
    # Without any normalization the three ways agree.
    plain, _ = bn_training.trained(
        bn_training.deep_mlp("none", depth=1), digits, seed=0, steps=20, batch_size=32, lr=0.1, progress=False
    )
    values = set(bn_training.small_batch_accuracies(plain, digits, batch_size=2).values())
    assert len(values) == 1


def test_small_batch_accuracies_precise_bn_repairs_broken_running_stats():
    digits = tiny_data()
    model, _ = bn_training.trained(
        bn_training.deep_mlp("bn", depth=2), digits, seed=0, steps=60, batch_size=32, lr=0.1, progress=False
    )
    for layer in models.norm_layers(model).values():
        layer.running_mean.add_(3.0)  # stale statistics
    result = bn_training.small_batch_accuracies(model, digits, batch_size=32)
    assert result["eval, precise BN"] > result["eval, running statistics"] + 0.2
    assert result["training mode, batches of N"] > result["eval, running statistics"] + 0.2


def test_batch_mean_noise_independent_and_correlated_positions():
    gen = torch.Generator().manual_seed(0)
    independent = torch.randn(400, 3, 8, 8, generator=gen)
    noise = bn_training.batch_mean_noise(independent, 4, trials=3000, generator=gen)
    for key in ("measured", "between images"):
        ratio = noise[key] / noise["independent"]
        assert torch.all((ratio > 0.8) & (ratio < 1.25)), (key, ratio)
    # One offset per image, shared by all 64 positions: the batch mean is as noisy as
    # N values, about 64 times noisier than 4 * 64 independent values would be.
    shared = independent + 2 * torch.randn(400, 3, 1, 1, generator=gen)
    noise = bn_training.batch_mean_noise(shared, 4, trials=3000, generator=gen)
    ratio = noise["measured"] / noise["independent"]
    assert torch.all(ratio > 30), ratio
    torch.testing.assert_close(noise["measured"], noise["between images"], rtol=0.15, atol=0)


def test_bias_drift_sgd_versus_adam():
    sgd, adam = bn_training.bias_drift("sgd", steps=50), bn_training.bias_drift("adam", steps=50)
    assert sgd["bias drift"] < 1e-6 < 0.005 < adam["bias drift"]
    assert sgd["weight drift"] > 1e-3 and adam["weight drift"] > 1e-3
    assert max(sgd["output change"], adam["output change"]) < 1e-5


def test_jacobian_heatmap_range_comes_from_the_data():
    fig, ax = plt.subplots()
    jacobian = torch.tensor([[0.3, -0.1], [-0.1, 0.25]])
    image = bn_figures.jacobian_heatmap(ax, jacobian)
    assert image.get_clim() == pytest.approx((-0.3, 0.3))
    assert len(fig.axes) == 2  # the colourbar
    plt.close(fig)


def test_plot_over_seeds_draws_means_and_every_seed():
    fig, ax = plt.subplots()
    bn_figures.plot_over_seeds(ax, [1, 2], {"bn": [[1.0, 3.0], [2.0, 4.0]], "none": [[0.0, 0.0], [1.0, 1.0]]})
    mean_lines = [line for line in ax.get_lines() if line.get_label().endswith("(mean)")]
    assert [list(line.get_ydata()) for line in mean_lines] == [[2.0, 3.0], [0.0, 1.0]]
    seeds = [line for line in ax.get_lines() if line not in mean_lines]
    assert sum(len(line.get_ydata()) for line in seeds) == 8
    assert {line.get_color() for line in ax.get_lines()} == {normlib.lab.viz.color("bn"), normlib.lab.viz.color("none")}
    plt.close(fig)


def test_plot_batch_noise_uses_shades_of_bn_and_keeps_points_visible():
    fig, ax = plt.subplots(figsize=(6, 3))
    sizes = [2, 4, 8, 16]
    bn_figures.plot_batch_noise(ax, sizes, {0.0: [0.9, 0.5, 0.35, 0.25], 1.5: [0.5, 0.6, 0.4, 0.3]})
    assert {line.get_color() for line in ax.get_lines()} == set(shades("bn", 2))
    assert bn_figures.points_under_legend(ax) == 0
    plt.close(fig)


def test_points_under_legend_counts_hidden_points():
    fig, ax = plt.subplots()
    ax.plot([0.0, 1.0], [0.0, 1.0], "o", label="a point in each corner")
    ax.plot([0.0], [1.0], "o", label="top left")
    ax.legend(loc="upper left")
    assert bn_figures.points_under_legend(ax) >= 1
    ax.legend(loc="center")
    assert bn_figures.points_under_legend(ax) == 0
    plt.close(fig)
