"""normlib.lab.ics and normlib.lab.viz.ics: chapter 3's probes and figures."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import normlib  # noqa: E402
from normlib.lab import ics, models, probes, train  # noqa: E402
from normlib.lab.viz import ics as ics_plots  # noqa: E402


def _data(n=48, features=6, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return x, y


def _net(norm="bn", seed=0):
    normlib.seed(seed)
    return models.mlp(6, 3, hidden=(8, 8), norm=norm)


def _noisy(width):
    return models.NoisyNorm(normlib.BatchNorm1d(width))


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------- percentile_probe


def test_percentile_probe_reports_the_unit_percentiles_in_eval_mode_and_the_shifts():
    x, y = _data()
    model = _net("bn")
    model(x)  # one training-mode pass: running statistics differ from the batch's
    probe = ics.percentile_probe(x, "act2", x, (x, y), {"shift": "act1"}, lr=0.1, unit=3)
    before, rng = _state(model), torch.get_rng_state()
    found = probe(model)
    with train.preserve_modes(model):
        model.eval()
        unit = train.capture(model, x, ["act2"], where="input")["act2"][:, 3].double()
    expected = torch.quantile(unit, torch.tensor([0.15, 0.5, 0.85], dtype=torch.float64))
    assert [found[k] for k in ("p15", "p50", "p85")] == pytest.approx(expected.tolist(), rel=1e-6)
    assert found["shift"] == pytest.approx(probes.layer_input_shift(model, x, (x, y), ["act1"], 0.1)["act1"])
    assert found["shift"] > 0
    # No trace: parameters, running statistics, mode and random stream unchanged.
    assert model.training and torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_percentile_probe_in_training_mode_would_differ():
    """The probe must use evaluation mode: in training mode BatchNorm's batch statistics make
    the percentiles different (so the test above can fail)."""
    x, y = _data()
    model = _net("bn")
    for _ in range(3):
        model(3 * x + 1)  # running statistics far from x's
    found = ics.percentile_probe(x, "act2", x, (x, y), {}, lr=0.1)(model)
    unit = train.capture(model, x, ["act2"], where="input")["act2"][:, 0].double()
    assert found["p50"] != pytest.approx(float(torch.quantile(unit, 0.5)), rel=1e-3)


# --------------------------------------------------------------------------- Recorder


def _record(norm, *, every=2, shift_every=4, steps=8, floor=True, levels=(), keep_unit=None):
    x, y = _data()
    rec = ics.Recorder(
        every,
        (x, y),
        (x[:16], y[:16]),
        0.1,
        {"s2": "act1"},
        {"g2": "linear2"},
        shift_every=shift_every,
        floor=floor,
        levels=levels,
        step_sizes=[0.05, 0.1],
        keep_unit=keep_unit,
    )
    model = _net(norm)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(steps + 1):
        if step % every == 0:
            with torch.no_grad():
                rec(model)
        if step < steps:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[:16]), y[:16]).backward()
            opt.step()
    return rec, model


def test_recorder_measures_every_shift_every_steps_with_a_zero_floor_without_noise():
    rec, _ = _record("bn")
    assert [s for s, _ in rec.periodic] == [0, 4, 8]
    for _, m in rec.periodic:
        assert m["s2"] > 0 and m["s2_floor"] == 0
        assert len(m["g2"]) == 2 and -1 <= m["g2"][1] <= 1


def test_recorder_floor_of_a_noisy_network_is_the_noise():
    rec, _ = _record(_noisy)
    for _, m in rec.periodic:
        assert m["s2_floor"] > 0.1  # fresh noise in each pass, with no update at all
        assert m["s2_floor"] == pytest.approx(m["s2"], rel=0.5)


def test_recorder_floor_is_optional_and_unit_values_are_kept():
    rec, _ = _record("bn", floor=False, keep_unit="act2")
    assert all("s2_floor" not in m for _, m in rec.periodic)
    assert [s for s, _ in rec.unit_values] == [0, 4, 8]
    assert all(v.shape == (48,) for _, v in rec.unit_values)


def test_recorder_matches_each_level_once_at_the_closer_state():
    x, y = _data()
    rec = ics.Recorder(
        1, (x, y), (x, y), 0.1, {}, {"g2": "linear2"}, shift_every=1, levels=(10.0, 0.5), step_sizes=[0.1]
    )
    model = _net("bn")
    first = rec(model)["loss"]
    assert set(rec.matched) == {10.0}  # the loss starts below 10, above 0.5
    step, land = rec.matched[10.0]
    assert step == 0 and land["loss"] == pytest.approx(first, rel=1e-6)
    assert set(land) == {"loss", "loss_range", "max_grad_change", "beta", "g2"}
    # The previous state is loaded when its loss is closer to the level.
    level = first - 0.01
    rec2 = ics.Recorder(1, (x, y), (x, y), 0.1, {}, {}, shift_every=1, levels=(level,), step_sizes=[0.1])
    rec2(model)  # loss = first, just above the level: nothing matched yet
    assert not rec2.matched
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(100):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    now = train.evaluate(model, x, y, mode="keep")[0]
    assert now < level - 0.2  # far below: the first state is closer
    rec2(model)
    step, land = rec2.matched[level]
    assert step == 0 and land["loss"] == pytest.approx(first, rel=1e-5)
    assert train.evaluate(model, x, y, mode="keep")[0] == pytest.approx(now)  # model untouched


def test_recorder_rejects_inconsistent_settings():
    x, y = _data()
    with pytest.raises(ValueError, match="multiple"):
        ics.Recorder(3, (x, y), (x, y), 0.1, {}, {}, shift_every=50)
    with pytest.raises(ValueError, match="step_sizes"):
        ics.Recorder(2, (x, y), (x, y), 0.1, {}, {}, levels=(1.0,))


def test_periodic_stacks_seeds_and_matched_filters():
    a, _ = _record("bn")
    b, _ = _record("bn", steps=8)
    steps, values = ics.periodic([a, b], "s2")
    assert list(steps) == [0, 4, 8] and values.shape == (2, 3)
    assert values[0, 1] == a.periodic[1][1]["s2"]
    steps, pairs = ics.periodic([a, b], "g2")
    assert pairs.shape == (2, 3, 2)
    c, _ = _record("bn", steps=4)
    with pytest.raises(ValueError, match="different steps"):
        ics.periodic([a, c], "s2")
    a.matched[1.0] = (6, {"loss": 1.0})
    assert ics.matched([a, b], 1.0) == [(6, {"loss": 1.0})]


def test_landscape_combines_along_gradient_and_gradient_ics():
    x, y = _data()
    model = _net("bn")
    land = ics.landscape(model, (x, y), (x[:16], y[:16]), 0.1, [0.05, 0.1], {"g": "linear2"})
    along = probes.along_gradient(model, x, y, [0.05, 0.1])
    assert land["beta"] == pytest.approx(along["beta"])
    assert land["g"] == pytest.approx(probes.gradient_ics(model, (x[:16], y[:16]), 0.1, layers=["linear2"])["linear2"])


# --------------------------------------------------------------------------- figures


class _H:
    def __init__(self, steps, **probes):
        self.steps, self.probes = steps, probes


def test_plot_percentiles_draws_the_mean_and_the_range():
    histories = [_H([0, 1], p15=[0, 1], p50=[1, 2], p85=[2, 3]), _H([0, 1], p15=[2, 3], p50=[3, 4], p85=[4, 9])]
    fig, ax = plt.subplots()
    ics_plots.plot_percentiles(ax, histories, "#0072B2")
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"85th percentile", "50th percentile", "15th percentile"}
    assert list(lines["85th percentile"].get_ydata()) == [3, 6]
    assert len(ax.collections) == 3  # one band per percentile
    plt.close(fig)


def test_plot_median_band_draws_the_median():
    fig, ax = plt.subplots()
    ics_plots.plot_median_band(ax, [1, 2], [[1, 10], [2, 20], [9, 90]], color="k", label="x")
    assert list(ax.get_lines()[0].get_ydata()) == [2, 20]
    assert len(ax.collections) == 1
    plt.close(fig)


def test_unit_histograms_keep_their_axes_over_frames():
    rng = np.random.default_rng(0)
    values = {"a": {0: rng.normal(0, 1, 100), 5: rng.normal(4, 2, 100)}, "b": {0: torch.zeros(10), 5: torch.ones(10)}}
    frame = ics_plots.unit_histograms(
        values, [0, 5], colors={"a": "k", "b": "r"}, labels={"a": "A", "b": "B"}, xlabel="v", title="step {step}"
    )
    figs = [frame(0), frame(1)]
    for fig in figs:
        assert len(fig.axes) == 2
    assert figs[0].axes[0].get_xlim() == figs[1].axes[0].get_xlim()
    assert figs[0].axes[0].get_ylim() == figs[1].axes[0].get_ylim()
    assert figs[1]._suptitle.get_text() == "step 5"
    lo, hi = frame.ranges["a"]
    assert lo == pytest.approx(min(v.min() for v in values["a"].values()))
    assert hi == pytest.approx(max(v.max() for v in values["a"].values()))
    for fig in figs:
        plt.close(fig)
