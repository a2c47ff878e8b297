"""fold_bn, recompute_bn_stats and diagnose: the BatchNorm tools of chapters 4 and 5."""

import copy

import pytest
import torch
from conftest import make_gen, randomize_params
from torch import nn

import normlib
from normlib import bn_tools

LIBRARIES = [pytest.param(nn, id="torch"), pytest.param(normlib, id="normlib")]


def randomized(module, seed=0):
    """Non-default parameters and running statistics (gamma, beta, mean, var all matter)."""
    return randomize_params(module, make_gen(seed))


def states_equal(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


# --------------------------------------------------------------------------- fold_bn

FOLD_CASES = {
    "conv1d": (lambda lib: nn.Sequential(nn.Conv1d(3, 4, 3), lib.BatchNorm1d(4)), (5, 3, 9)),
    "conv2d": (lambda lib: nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), lib.BatchNorm2d(4)), (5, 3, 6, 6)),
    "conv3d": (lambda lib: nn.Sequential(nn.Conv3d(2, 4, 2), lib.BatchNorm3d(4)), (3, 2, 4, 4, 4)),
    "conv2d_no_bias": (lambda lib: nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), lib.BatchNorm2d(4)), (5, 3, 6, 6)),
    "conv2d_groups": (lambda lib: nn.Sequential(nn.Conv2d(4, 6, 3, groups=2), lib.BatchNorm2d(6)), (2, 4, 5, 5)),
    "depthwise": (
        lambda lib: nn.Sequential(nn.Conv2d(4, 4, 3, groups=4, bias=False), lib.BatchNorm2d(4)),
        (2, 4, 5, 5),
    ),
    "linear": (lambda lib: nn.Sequential(nn.Linear(7, 5), lib.BatchNorm1d(5)), (6, 7)),
    "linear_bn_no_affine": (lambda lib: nn.Sequential(nn.Linear(7, 5), lib.BatchNorm1d(5, affine=False)), (6, 7)),
    "conv_transpose2d": (
        lambda lib: nn.Sequential(nn.ConvTranspose2d(3, 4, 2, stride=2), lib.BatchNorm2d(4)),
        (2, 3, 4, 4),
    ),
    "conv_transpose2d_groups": (
        lambda lib: nn.Sequential(nn.ConvTranspose2d(4, 6, 3, groups=2, bias=False), lib.BatchNorm2d(6)),
        (2, 4, 4, 4),
    ),
    "conv_transpose1d": (lambda lib: nn.Sequential(nn.ConvTranspose1d(3, 2, 3), lib.BatchNorm1d(2)), (2, 3, 5)),
}


@pytest.mark.parametrize("lib", LIBRARIES)
@pytest.mark.parametrize("case", sorted(FOLD_CASES))
def test_fold_bn_outputs_equal(case, lib, device):
    build, shape = FOLD_CASES[case]
    model = randomized(build(lib).double()).to(device)
    x = torch.randn(*shape, dtype=torch.float64, generator=make_gen(1)).to(device)
    folded = normlib.fold_bn(model)
    assert [type(m) for m in folded] == [type(model[0]), nn.Identity]
    assert folded.fold_report.folded == [("0", "1")] and folded.fold_report.skipped == []
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model.eval()(x), atol=1e-10, rtol=1e-10)


def test_fold_bn_float32_tolerance_and_device_kept(device):
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3), nn.BatchNorm2d(4))
    model = randomized(model).to(device)
    x = torch.randn(4, 3, 9, 9, generator=make_gen(2)).to(device)
    folded = normlib.fold_bn(model)
    assert all(p.device.type == torch.device(device).type and p.dtype == torch.float32 for p in folded.parameters())
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model.eval()(x), atol=1e-5, rtol=1e-5)
    assert len(folded.fold_report.folded) == 2
    assert not any(bn_tools.is_batchnorm(m) for m in folded.modules())


def test_fold_bn_leaves_the_input_model_untouched():
    model = randomized(nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))).train()
    before = copy.deepcopy(model)
    folded = normlib.fold_bn(model)
    assert model.training and not folded.training
    assert states_equal(model, before)
    assert isinstance(model[1], nn.BatchNorm1d) and isinstance(folded[1], nn.Identity)
    assert "1.running_mean" not in folded.state_dict()


@pytest.mark.parametrize("lib", LIBRARIES)
def test_fold_bn_reports_what_it_cannot_fold(lib):
    model = nn.Sequential(
        lib.BatchNorm1d(6),  # on the model's input
        nn.Linear(6, 5),
        nn.ReLU(),
        lib.BatchNorm1d(5),  # after an activation
        nn.Linear(5, 4),
        lib.BatchNorm1d(4, track_running_stats=False),  # no running stats
        nn.Linear(4, 3),
        lib.BatchNorm1d(3),  # foldable
    )
    model = randomized(model.double())
    folded = normlib.fold_bn(model)
    report = folded.fold_report
    assert report.folded == [("6", "7")]
    reasons = dict(report.skipped)
    assert set(reasons) == {"0", "3", "5"}
    assert "input" in reasons["0"]
    assert "ReLU" in reasons["3"] and "not from a conv or linear" in reasons["3"]
    assert "track_running_stats=False" in reasons["5"]
    x = torch.randn(8, 6, dtype=torch.float64, generator=make_gen(3))
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model.eval()(x))
    text = str(report)
    assert "folded 1 BatchNorm layer(s), left 3" in text and "ReLU" in text
    assert report._repr_markdown_().startswith("| BatchNorm layer | result |")


class Residual(nn.Module):
    """conv -> bn, but the conv's output also feeds the skip connection: not foldable."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x):
        z = self.conv(x)
        return self.bn(z) + z


class RegisteredOutOfOrder(nn.Module):
    """Children registered conv, bn, relu but called conv -> relu -> bn: the trace knows better."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.bn(self.relu(self.conv(x)))


class Untraceable(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it; the children's order is used."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())

    def forward(self, x):
        y = self.body(x)
        return y if y.sum() > 0 else -y


class SharedBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2, self.bn = nn.Conv2d(3, 3, 1), nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)

    def forward(self, x):
        return self.bn(self.conv1(x)) + self.bn(self.conv2(x))


@pytest.mark.parametrize(
    "module_class,reason",
    [
        (Residual, "also used elsewhere"),
        (RegisteredOutOfOrder, "relu (ReLU)"),
        (SharedBN, "called 2 times"),
    ],
)
def test_fold_bn_follows_the_data_flow(module_class, reason):
    model = randomized(module_class().double())
    folded = normlib.fold_bn(model)
    assert folded.fold_report.folded == []
    ((name, why),) = folded.fold_report.skipped
    assert name == "bn" and reason in why, why
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64, generator=make_gen(4))
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model.eval()(x))


def test_fold_bn_falls_back_to_children_order_when_untraceable():
    model = randomized(Untraceable().double())
    folded = normlib.fold_bn(model)
    assert folded.fold_report.traced is False
    assert folded.fold_report.folded == [("body.0", "body.1")]
    assert "order of children" in str(folded.fold_report)
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64, generator=make_gen(5))
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model.eval()(x))


def test_fold_bn_with_example_input_checks_ranks_and_outputs():
    # Linear on (N, L, D) followed by BatchNorm1d(D) with L == D: BN normalizes axis 1 (L),
    # not the Linear's features. Only an example input reveals it.
    model = randomized(nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)).double())
    x = torch.randn(3, 4, 4, dtype=torch.float64, generator=make_gen(6))
    folded = normlib.fold_bn(model, example_input=x)
    assert folded.fold_report.folded == [] and "3-D" in folded.fold_report.skipped[0][1]
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model.eval()(x))
    # Without the example it is folded on the (N, features) assumption, and is wrong here,
    # which the example_input check turns into an error.
    wrong = normlib.fold_bn(model)
    with torch.no_grad():
        assert not torch.allclose(wrong(x), model.eval()(x))


def test_fold_bn_example_input_raises_when_outputs_differ(monkeypatch):
    model = randomized(nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)).double())
    monkeypatch.setattr(bn_tools, "_fold_pair", lambda layer, bn: layer.weight.data.mul_(2))
    with pytest.raises(RuntimeError, match="differs from the original"):
        normlib.fold_bn(model, example_input=torch.randn(5, 4, dtype=torch.float64))


def test_fold_bn_leaves_parametrized_layers_and_the_original_works():
    conv = normlib.weight_norm(nn.Conv2d(3, 4, 3))
    model = randomized(nn.Sequential(conv, nn.BatchNorm2d(4)).double())
    folded = normlib.fold_bn(model)
    assert folded.fold_report.folded == []
    assert "remove_parametrizations" in folded.fold_report.skipped[0][1]
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64, generator=make_gen(7))
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model.eval()(x))


def test_conv_bn_pairs_on_a_nested_model():
    block = lambda: nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())  # noqa: E731
    model = nn.Sequential(block(), nn.Sequential(block(), block()), nn.BatchNorm2d(4))
    pairs, unpaired, traced = bn_tools.conv_bn_pairs(model)
    assert traced
    assert pairs == [("0.0", "0.1"), ("1.0.0", "1.0.1"), ("1.1.0", "1.1.1")]
    assert list(unpaired) == ["2"]


# --------------------------------------------------------------------------- recompute_bn_stats


def test_recompute_matches_the_statistics_of_all_values():
    # Unequal batch sizes: averaging per-batch statistics would not give these numbers.
    gen = make_gen(10)
    batches = [torch.randn(n, 3, dtype=torch.float64, generator=gen) * 3 + 2 for n in (5, 17, 2, 40)]
    bn = nn.BatchNorm1d(3).double()
    normlib.recompute_bn_stats(nn.Sequential(bn), batches)
    everything = torch.cat(batches)
    torch.testing.assert_close(bn.running_mean, everything.mean(0))
    torch.testing.assert_close(bn.running_var, everything.var(0, correction=1))  # unbiased, as torch


@pytest.mark.parametrize("lib", LIBRARIES)
def test_recompute_on_feature_maps_and_deeper_layers(lib):
    gen = make_gen(11)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), lib.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 4, 1), lib.BatchNorm2d(4))
    model = model.double()
    batches = [(torch.randn(4, 2, 6, 6, dtype=torch.float64, generator=gen), torch.zeros(4)) for _ in range(3)]
    # Expected: inputs of each BN as they are in training mode, batch by batch, pooled over N, H, W.
    reference = copy.deepcopy(model).train()
    seen = {1: [], 4: []}
    with torch.no_grad():
        for x, _ in batches:
            z = reference[0](x)
            seen[1].append(z)
            seen[4].append(reference[3](reference[2](reference[1](z))))
    normlib.recompute_bn_stats(model, batches)
    for index, values in seen.items():
        pooled = torch.cat(values).transpose(0, 1).flatten(1)  # (C, N*H*W)
        torch.testing.assert_close(model[index].running_mean, pooled.mean(1))
        torch.testing.assert_close(model[index].running_var, pooled.var(1, correction=1))


def test_recompute_restores_modes_momentum_and_counts():
    model = nn.Sequential(
        nn.Linear(3, 4),
        nn.BatchNorm1d(4, momentum=None),
        nn.Dropout(0.5),
        nn.Linear(4, 2),
        normlib.BatchNorm1d(2, momentum=0.3),
    )
    model.eval()
    model[4].train()
    with torch.no_grad():
        model[1].num_batches_tracked.fill_(7)
    params = {k: v.clone() for k, v in model.named_parameters()}
    normlib.recompute_bn_stats(model, [torch.randn(8, 3) for _ in range(4)], max_batches=2)
    assert [m.training for m in model] == [False, False, False, False, True]
    assert model[1].momentum is None and model[4].momentum == 0.3
    assert int(model[1].num_batches_tracked) == 7 and int(model[4].num_batches_tracked) == 0
    assert all(torch.equal(v, params[k]) for k, v in model.named_parameters())


def test_recompute_uses_max_batches_and_refuses_no_batches():
    bn = nn.BatchNorm1d(2).double()
    batches = [torch.full((4, 2), float(i), dtype=torch.float64) + torch.arange(4.0)[:, None] for i in range(3)]
    normlib.recompute_bn_stats(nn.Sequential(bn), batches, max_batches=1)
    torch.testing.assert_close(bn.running_mean, batches[0].mean(0))
    with pytest.raises(ValueError, match="no batches"):
        normlib.recompute_bn_stats(nn.Sequential(bn), [])


def test_recompute_skips_layers_without_running_stats():
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3, track_running_stats=False))
    normlib.recompute_bn_stats(model, [torch.randn(5, 3)])
    assert model[1].running_mean is None


# --------------------------------------------------------------------------- diagnose

IN_FEATURES = 8


def data(n, seed=20):
    # Far from mean 0 / variance 1, so that untouched running statistics (0, 1) are stale.
    gen = make_gen(seed)
    return torch.randn(n, IN_FEATURES, generator=gen) * 4 + 3


def mlp(lib, bias=False):
    return nn.Sequential(
        nn.Linear(IN_FEATURES, 16, bias=bias),
        lib.BatchNorm1d(16),
        nn.ReLU(),
        nn.Linear(16, 16, bias=bias),
        lib.BatchNorm1d(16),
        nn.ReLU(),
        nn.Linear(16, 3),
    )


def cnn(lib):
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=False),
        lib.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    )


def calibrated(model, batches):
    """Running statistics that match the data (what a well-trained model has)."""
    return normlib.recompute_bn_stats(model, batches).eval()


def healthy_mlp(lib, bias=False):
    normlib.seed(0)
    return calibrated(mlp(lib, bias), [data(256, seed) for seed in range(4)])


def healthy_cnn(lib):
    normlib.seed(0)
    images = [torch.randn(16, 1, 8, 8, generator=make_gen(s)) * 2 + 1 for s in range(3)]
    return calibrated(cnn(lib), images)


@pytest.mark.parametrize("lib", LIBRARIES)
def test_diagnose_is_silent_on_healthy_models(lib):
    model = healthy_mlp(lib)
    for phase, batch in [("eval", data(64, 99)), ("eval", data(1, 99)), ("train", data(64, 99))]:
        model.train(phase == "train")
        report = normlib.diagnose(model, batch, phase=phase)
        assert not report and len(report) == 0 and str(report) == "", str(report)
        assert "no problems found in 2 BatchNorm layer(s)" in report._repr_markdown_()
    model = healthy_cnn(lib)
    assert not normlib.diagnose(model, torch.randn(2, 1, 8, 8) * 2 + 1)
    assert not normlib.diagnose(model.train(), torch.randn(16, 1, 8, 8) * 2 + 1, phase="train")


def broken(problem, lib):
    """(model, batch, phase) with exactly one problem."""
    if problem == "train-mode":
        return healthy_mlp(lib).train(), data(64, 99), "eval"
    if problem == "no-running-stats":
        model = nn.Sequential(nn.Linear(IN_FEATURES, 4, bias=False), lib.BatchNorm1d(4, track_running_stats=False))
        return model.eval(), data(64, 99), "eval"
    if problem == "small-batch":
        return healthy_mlp(lib).train(), data(4, 99), "train"
    if problem == "batch-of-one":  # raises inside the forward pass: the doctor reports it
        return healthy_mlp(lib).train(), data(1, 99), "train"
    if problem == "batch-of-one-cnn":  # does not raise (64 values per channel) but is still wrong
        return healthy_cnn(lib).train(), torch.randn(1, 1, 8, 8), "train"
    if problem == "stale-stats":
        model = healthy_mlp(lib)
        for module in model.modules():
            if bn_tools.is_batchnorm(module):
                module.reset_running_stats()
        return model, data(64, 99), "eval"
    if problem == "frozen-stats-move":
        model = healthy_mlp(lib).train()
        for module in model.modules():
            if bn_tools.is_batchnorm(module):
                module.requires_grad_(False)
        return model, data(64, 99), "train"
    if problem == "bias-before-bn":
        return healthy_mlp(lib, bias=True), data(64, 99), "eval"
    raise ValueError(problem)


PROBLEMS = [
    "train-mode",
    "no-running-stats",
    "small-batch",
    "batch-of-one",
    "batch-of-one-cnn",
    "stale-stats",
    "frozen-stats-move",
    "bias-before-bn",
]


@pytest.mark.parametrize("lib", LIBRARIES)
@pytest.mark.parametrize("problem", PROBLEMS)
def test_diagnose_finds_exactly_the_one_problem(problem, lib):
    model, batch, phase = broken(problem, lib)
    before = copy.deepcopy(model.state_dict())
    rng = torch.get_rng_state()
    report = normlib.diagnose(model, batch, phase=phase)
    expected = problem.replace("-cnn", "")
    assert report.checks == {expected}, str(report)
    (finding,) = report
    assert finding.fix and finding.problem and finding.layers
    text = str(report)
    assert f"{expected}:" in text and "fix:" in text
    assert "| severity | check | layers | problem | fix |" in report._repr_markdown_()
    # Diagnosing changes nothing: buffers (even after training-mode passes) and the RNG.
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(torch.get_rng_state(), rng)


def test_diagnose_names_the_layers_and_the_numbers():
    model, batch, phase = broken("small-batch", nn)
    (finding,) = normlib.diagnose(model, batch, phase=phase)
    assert finding.layers == ("1", "4") and "as few as 4" in finding.problem
    model, batch, phase = broken("bias-before-bn", nn)
    (finding,) = normlib.diagnose(model, batch, phase=phase)
    assert finding.layers == ("1", "4") and "(bias in: 0, 3)" in finding.problem
    model, batch, phase = broken("batch-of-one", nn)
    report = normlib.diagnose(model, batch, phase=phase)
    assert report[0].layers == ("1",) and "Expected more than 1 value per channel" in report.notes[0]


@pytest.mark.parametrize("lib", LIBRARIES)
def test_diagnose_flags_few_examples_even_with_many_values(lib):
    # Two 8 x 8 images give 128 values per statistic, far above min_values, but only two
    # examples: the pixels of one image can be correlated, so BN's statistics can still be poor.
    model = healthy_cnn(lib).train()
    images = torch.randn(2, 1, 8, 8, generator=make_gen(5)) * 2 + 1
    report = normlib.diagnose(model, images, phase="train")
    assert report.checks == {"small-batch"}, str(report)
    # The message says "can": correlation is possible, not certain (chapter 4 measures
    # digits at N = 2 worth about as many values as m).
    assert "can be worth far fewer than its m values" in report[0].problem
    (finding,) = report
    assert finding.layers == ("1",)
    assert "2 examples per batch; fewer than 8" in finding.problem
    assert "values;" not in finding.problem  # 128 values are enough
    # The threshold is a parameter; 8 examples pass, and eval mode is not concerned.
    assert not normlib.diagnose(model, images, phase="train", min_batch=2)
    eight = torch.randn(8, 1, 8, 8, generator=make_gen(6)) * 2 + 1
    assert not normlib.diagnose(model, eight, phase="train")
    assert not normlib.diagnose(model.eval(), images)
    with pytest.raises(ValueError, match="min_batch"):
        normlib.diagnose(model, images, min_batch=1)


def test_diagnose_frozen_layer_in_eval_mode_is_fine():
    model, batch, phase = broken("frozen-stats-move", normlib)
    for module in model.modules():
        if bn_tools.is_batchnorm(module):
            module.eval()  # the fix
    assert not normlib.diagnose(model, batch, phase=phase)


def test_diagnose_threshold_and_errors():
    model, batch, phase = broken("small-batch", nn)
    assert not normlib.diagnose(model, batch, phase=phase, min_values=4, min_batch=4)
    with pytest.raises(ValueError, match="phase"):
        normlib.diagnose(model, batch, phase="test")
    with pytest.raises(RuntimeError):  # a wrong input is the caller's error, not a finding
        normlib.diagnose(model, torch.randn(8, IN_FEATURES + 1))


def test_diagnose_accepts_input_target_tuples():
    model, batch, phase = broken("train-mode", nn)
    assert normlib.diagnose(model, (batch, torch.zeros(len(batch))), phase=phase).checks == {"train-mode"}
