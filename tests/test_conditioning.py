"""normlib.lab.conditioning and normlib.lab.viz.conditioning: chapter 2's experiments and figures."""

import inspect
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from normlib.lab import conditioning, train  # noqa: E402
from normlib.lab import viz as book_viz  # noqa: E402
from normlib.lab.viz import conditioning as figures  # noqa: E402


def two_features(seed=0, n=200):
    rng = np.random.default_rng(seed)
    second = rng.uniform(1, 15, n)
    first = 15_000 * second * rng.lognormal(0.0, 0.35, n)
    y = 30 - 1.2 * second - 0.05 * first / 1000 + rng.normal(0, 1.5, n)
    return first, second, y


# --------------------------------------------------------------------------- least squares


def test_hessian_is_autograds_and_independent_of_w():
    first, second, y = two_features()
    X = conditioning.design(first / 1000, second)
    X_t, y_t = torch.tensor(X), torch.tensor(y)

    def loss(w):
        return 0.5 * ((X_t @ w - y_t) ** 2).mean()

    for w in (torch.zeros(3, dtype=torch.float64), torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)):
        torch.testing.assert_close(torch.autograd.functional.hessian(loss, w), torch.tensor(conditioning.hessian(X)))
    eigenvalues = np.linalg.eigvalsh(conditioning.hessian(X))
    assert conditioning.condition_number(X) == pytest.approx(eigenvalues[-1] / eigenvalues[0])


def test_design_appends_a_column_of_ones():
    X = conditioning.design(np.arange(4.0), np.arange(4.0) ** 2)
    assert X.shape == (4, 3)
    np.testing.assert_array_equal(X[:, 2], np.ones(4))
    np.testing.assert_array_equal(X[:, 1], [0, 1, 4, 9])


def test_scaling_alone_leaves_the_means_in_the_curvature():
    first, second, _ = two_features()
    variants = conditioning.input_variants(first, second)
    assert list(variants) == ["raw (km, years)", "mileage in 1000 km", "centred only", "scaled only", "standardized"]
    features = np.column_stack([first, second])
    mu, sigma = features.mean(0), features.std(0)
    scaled = np.diag(conditioning.hessian(variants["scaled only"]))[:2]
    np.testing.assert_allclose(scaled, 1 + mu**2 / sigma**2, rtol=1e-9)
    assert scaled.max() > 1.2 * scaled.min()
    np.testing.assert_allclose(np.diag(conditioning.hessian(variants["standardized"])), np.ones(3), rtol=1e-9)
    z = conditioning.standardize(first)
    assert abs(z.mean()) < 1e-12 and z.std() == pytest.approx(1.0)


def test_standardized_condition_number_comes_from_the_correlation():
    first, second, _ = two_features(seed=3)
    rho = abs(np.corrcoef(first, second)[0, 1])
    X = conditioning.input_variants(first, second)["standardized"]
    assert conditioning.condition_number(X) == pytest.approx((1 + rho) / (1 - rho), rel=1e-9)


def quadratic(eigenvalues, seed=0, n=400):
    """A design matrix whose Hessian has exactly ``eigenvalues`` (no intercept column)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(n, len(eigenvalues))))
    rotation, _ = np.linalg.qr(rng.normal(size=(len(eigenvalues),) * 2))
    X = math.sqrt(n) * q @ np.diag(np.sqrt(eigenvalues)) @ rotation.T
    return X, rng.normal(size=n)


def test_quadratic_helper_has_the_eigenvalues_asked_for():
    X, _ = quadratic([0.5, 2.0, 8.0])
    np.testing.assert_allclose(np.linalg.eigvalsh(conditioning.hessian(X)), [0.5, 2.0, 8.0])


@pytest.mark.parametrize("eigenvalues", [[1.0, 4.0], [0.1, 1.0, 10.0]])
def test_gradient_descent_converges_below_two_over_lambda_max_and_diverges_above(eigenvalues):
    X, y = quadratic(eigenvalues)
    limit = 2 / max(eigenvalues)
    below = conditioning.gradient_descent(X, y, 0.97 * limit, max_steps=5000)
    above = conditioning.gradient_descent(X, y, 1.03 * limit, max_steps=500)
    assert below[-1] <= 1e-6 and len(below) - 1 < 5000
    assert above[-1] > 1e3 and len(above) - 1 == 500
    assert np.all(np.diff(above[50:]) > 0)
    assert below[0] == above[0] == 1.0


def test_best_learning_rate_meets_the_predicted_bound():
    for eigenvalues in ([1.0, 3.0], [0.2, 1.0, 20.0], [1.0, 1.0]):
        X, y = quadratic(eigenvalues, seed=1)
        kappa = max(eigenvalues) / min(eigenvalues)
        lr = conditioning.best_learning_rate(X)
        assert lr == pytest.approx(2 / (max(eigenvalues) + min(eigenvalues)))
        curve = conditioning.gradient_descent(X, y, lr)
        assert curve[-1] <= 1e-6
        assert len(curve) - 1 <= math.ceil(conditioning.predicted_steps(kappa))
    assert conditioning.predicted_steps(1e8) == pytest.approx(1e8 / 4 * math.log(1e6), rel=1e-6)
    assert conditioning.predicted_steps(1.0) == 1


def test_gradient_descent_weights_follow_the_update_rule():
    X, y = quadratic([0.5, 2.0], seed=2)
    lr = 0.3
    excess, weights = conditioning.gradient_descent(X, y, lr, max_steps=40, weights=True)
    assert weights.shape == (len(excess), 2)
    np.testing.assert_allclose(weights[0], np.zeros(2), atol=1e-12)
    gradient = X.T @ (X @ weights[5] - y) / len(X)
    np.testing.assert_allclose(weights[6], weights[5] - lr * gradient, atol=1e-10)
    w_star = np.linalg.lstsq(X, y, rcond=None)[0]
    H = conditioning.hessian(X)
    e0, e9 = weights[0] - w_star, weights[9] - w_star
    assert excess[9] == pytest.approx((e9 @ H @ e9) / (e0 @ H @ e0))


def test_shown_sources_fit_the_page():
    """Chapter 2 shows these with viz.show_source: 79 columns at most."""
    for function in (conditioning.design, conditioning.hessian, conditioning.condition_number, conditioning.init_gain_):
        assert max(len(line) for line in inspect.getsource(function).splitlines()) <= 79, function.__name__


# --------------------------------------------------------------------------- deep networks


@pytest.fixture(scope="module")
def batch():
    generator = torch.Generator().manual_seed(0)
    return torch.randn(128, 64, generator=generator), torch.randint(0, 10, (128,), generator=generator)


def test_init_gain_draws_the_asked_scale_and_zero_biases():
    net = conditioning.deep_mlp("none", gain=2.0, depth=3, width=400)
    for name in ("linear2", "linear3"):
        layer = getattr(net, name)
        assert float(layer.weight.detach().std()) == pytest.approx(2.0 / math.sqrt(400), rel=0.02)
        assert torch.count_nonzero(layer.bias) == 0


def test_deep_mlp_shape_seed_and_shared_weights():
    net = conditioning.deep_mlp("bn", "relu", depth=4, width=16)
    assert [n for n, _ in net.named_children() if n.startswith("linear")] == [f"linear{i}" for i in range(1, 5)]
    plain = conditioning.deep_mlp("none", "relu", depth=4, width=16)
    torch.testing.assert_close(plain.linear3.weight, net.linear3.weight)
    other = conditioning.deep_mlp("none", "relu", depth=4, width=16, seed=1)
    assert not torch.equal(other.linear3.weight, plain.linear3.weight)
    assert conditioning.deep_mlp("none").linear10.in_features == 100  # the chapter's 10 x 100


def test_saturated():
    values = torch.tensor([-1.0, -0.995, 0.0, 0.5, 0.995])
    assert conditioning.saturated(torch.tanh(torch.tensor([-5.0, 0.0, 5.0])), "tanh").tolist() == [True, False, True]
    assert conditioning.saturated(values, "tanh").tolist() == [True, True, False, False, True]
    assert conditioning.saturated(torch.tensor([0.001, 0.5, 0.999]), "sigmoid").tolist() == [True, False, True]
    assert not conditioning.saturated(torch.tensor([0.0, 1e6]), "relu").any()
    with pytest.raises(ValueError):
        conditioning.saturated(values, "gelu")


def test_layer_report_small_gain_vanishes_and_batchnorm_holds(batch):
    x, y = batch
    plain = conditioning.layer_report(conditioning.deep_mlp("none", gain=0.5, depth=6), x, y)
    bn = conditioning.layer_report(conditioning.deep_mlp("bn", gain=0.5, depth=6), x, y)
    for report in (plain, bn):
        assert set(report) == {"mean", "std", "saturated", "gradient"}
        assert all(len(v) == 6 for v in report.values())
    assert plain["std"][-1] < 0.1 * plain["std"][0]
    assert np.all((bn["std"] > 0.5) & (bn["std"] < 0.8))
    large = conditioning.layer_report(conditioning.deep_mlp("none", gain=4.0, depth=6), x, y)
    assert large["saturated"].min() > 0.3 > plain["saturated"].max()


def test_layer_report_leaves_the_model_as_it_was(batch):
    x, y = batch
    net = conditioning.deep_mlp("bn", depth=3)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    conditioning.layer_report(net, x, y)
    for key, value in net.state_dict().items():
        torch.testing.assert_close(value, before[key])
    assert all(p.grad is None for p in net.parameters())


def test_scale_probe_and_per_layer_read_back_what_training_recorded(batch):
    x, _ = batch
    net = conditioning.deep_mlp("bn", depth=3, width=32)
    data = _tiny_dataset()
    history = train.fit(
        net, data, steps=6, batch_size=16, lr=0.05, eval_every=3, probe=conditioning.scale_probe(x, 3), progress=False
    )
    assert history.steps == [0, 3, 6]
    stds = conditioning.per_layer(history, "act", 6)
    means = conditioning.per_layer(history, "linear", 0, "mean")
    assert stds.shape == means.shape == (3,)
    with train.sandbox(net):
        stats = train.activation_stats(net, x, ["act2"])
    assert stds[1] == pytest.approx(stats["act2"]["std"])
    with pytest.raises(KeyError):
        conditioning.per_layer(history, "norm", 0)


def _tiny_dataset():
    from normlib.lab.data import Dataset

    generator = torch.Generator().manual_seed(1)
    x = torch.randn(96, 64, generator=generator)
    y = torch.randint(0, 10, (96,), generator=generator)
    return Dataset("tiny", x[:64], y[:64], x[64:], y[64:], 10)


# --------------------------------------------------------------------------- figures


def test_stretch_frame_reports_honest_steps():
    X, y = quadratic([1.0, 50.0], seed=4)
    fig, steps = figures.stretch_frame(X, y, stretch=7)
    assert steps <= math.ceil(conditioning.predicted_steps(50.0))
    assert f"{steps} steps to 1e-6" in fig.axes[0].get_title()
    plt.close(fig)
    fig, steps = figures.stretch_frame(X, y, stretch=7, max_steps=10)
    assert steps == 10 and "not at 1e-6" in fig.axes[0].get_title()
    plt.close(fig)


def _reports():
    rng = np.random.default_rng(0)
    reports = {}
    for gain, scale in ((0.25, 1e-7), (1.0, 1.0)):
        for norm in ("none", "bn"):
            size = 1.0 if norm == "bn" else scale
            reports[gain, norm] = {
                "mean": np.zeros(5),
                "std": size * rng.uniform(0.5, 1.0, 5),
                "saturated": np.zeros(5),
                "gradient": size * rng.uniform(0.5, 1.0, 5),
            }
    return reports


def test_gain_frames_hold_every_value_of_every_frame_and_both_networks():
    reports = _reports()
    for gain in (0.25, 1.0):
        fig = figures.gain_frame(reports, gain)
        assert fig.get_suptitle()
        for ax in fig.axes:
            lines = {line.get_label(): line for line in ax.get_lines()}
            assert set(lines) == {"no normalization", "BatchNorm"}
            assert lines["BatchNorm"].get_linewidth() > lines["no normalization"].get_linewidth()
            low, high = ax.get_ylim()
            key = {label: key for key, label, _ in figures.GAIN_PANELS}[ax.get_ylabel()]
            everything = np.concatenate([r[key] for r in reports.values()])
            assert low <= everything.min() and everything.max() <= high, ax.get_ylabel()
        plt.close(fig)


class _History:
    def __init__(self, steps, scale):
        self.steps = steps
        self.probes = {}
        for i in range(1, 4):
            for kind in ("act", "linear"):
                self.probes[f"std {kind}{i}"] = [scale * (1 + s) for s in range(len(steps))]
                self.probes[f"mean {kind}{i}"] = [0.0] * len(steps)


def test_drift_figure_last_step_is_darkest_and_every_panel_has_a_legend():
    histories = {"none": _History([0, 10, 20, 30], 0.1), "bn": _History([0, 10, 20, 30], 0.6)}
    fig = figures.drift_figure(histories, title="a finding")
    assert fig.get_suptitle() == "a finding"
    for ax, (norm, _, _) in zip(fig.axes, figures.DRIFT_PANELS):
        assert ax.get_legend() is not None
        colours = [line.get_color() for line in ax.get_lines()]
        assert colours == book_viz.shades(norm, 4)
        lightness = [sum(matplotlib.colors.to_rgb(c)) for c in colours]
        assert lightness == sorted(lightness, reverse=True)  # the last step darkest
        assert ax.get_lines()[-1].get_linewidth() > ax.get_lines()[0].get_linewidth()
    plt.close(fig)


def test_loss_curves_use_no_method_colour():
    fig = figures.loss_curves({"a": np.geomspace(1, 1e-6, 10), "b": np.ones(30)}, title="t")
    method_colours = {c.lower() for c in book_viz.METHOD_COLORS.values()}
    for line in fig.axes[0].get_lines():
        assert matplotlib.colors.to_hex(line.get_color()) not in method_colours
    assert fig.axes[0].get_legend() is not None
    plt.close(fig)


def test_loss_curves_draw_step_t_at_x_t():
    """curve[t] is the excess after t steps: it is drawn at x = t (t >= 1 on the log axis)."""
    curve = np.geomspace(1, 1e-6, 10)
    fig = figures.loss_curves({"a": curve}, title="t")
    (line,) = fig.axes[0].get_lines()
    np.testing.assert_array_equal(line.get_xdata(), np.arange(1, 10))
    np.testing.assert_array_equal(line.get_ydata(), curve[1:])
    assert fig.axes[0].get_xlabel().startswith("gradient-descent step")
    plt.close(fig)
