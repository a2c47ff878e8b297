"""normlib.lab.viz.conditioning.stretch_frame: the axes hold every drawn step and the
minimizer, also when the first steps of gradient descent overshoot the minimizer."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from normlib.lab import conditioning as lab  # noqa: E402
from normlib.lab.viz import conditioning as figures  # noqa: E402


def _correlated_problem():
    rng = np.random.default_rng(0)
    first = rng.standard_normal(200)
    second = 0.8 * first + 0.6 * rng.standard_normal(200)
    X = np.column_stack([first, second])
    X = (X - X.mean(0)) / X.std(0)
    y = X @ np.array([-4.4, -5.0]) + 0.1 * rng.standard_normal(200)
    return X, y - y.mean()


def test_the_drawn_path_and_the_minimizer_are_inside_the_axes():
    X, y = _correlated_problem()
    _, path = lab.gradient_descent(X, y, lab.best_learning_rate(X), max_steps=200, weights=True)
    w_star = np.linalg.solve(lab.hessian(X), X.T @ y / len(X))
    # the case the limits must cover: the path overshoots 1.2 * the minimizer's extent
    assert np.abs(path[:31]).max() > 1.2 * np.abs(w_star).max()
    fig, _ = figures.stretch_frame(X, y, stretch=1)
    ax = fig.axes[0]
    (low_x, high_x), (low_y, high_y) = ax.get_xlim(), ax.get_ylim()
    for line in ax.get_lines():
        xs, ys = np.asarray(line.get_xdata()), np.asarray(line.get_ydata())
        assert np.all((low_x <= xs) & (xs <= high_x)) and np.all((low_y <= ys) & (ys <= high_y))
    plt.close(fig)
