"""normlib.lab.invariance: Ba et al.'s invariance table, computed, and the pieces it is made of."""

import pytest
import torch
import torch.nn.functional as TF
from conftest import assert_close, make_gen

from normlib.lab.invariance import (
    BA2016_TABLE,
    INVARIANCE_METHODS,
    TRANSFORMATIONS,
    invariance_table,
    normalized_summed_inputs,
)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_computed_table_is_the_papers(seed):
    table = invariance_table(seed=seed)
    assert list(table) == list(BA2016_TABLE)
    for transformation, row in table.items():
        for method, change in row.items():
            if BA2016_TABLE[transformation][method]:
                assert change < 1e-12, (transformation, method, change)
            else:  # a cross is a clear change, not rounding
                assert change > 1e-2, (transformation, method, change)


def test_eps_breaks_rescaling_a_little_and_centering_not_at_all():
    exact = invariance_table(eps=0.0)
    with_eps = invariance_table(eps=1e-5)
    for method in ("bn", "ln"):
        change = with_eps["dataset re-scaling"][method]
        assert exact["dataset re-scaling"][method] < 1e-12 < change < 1e-4
    assert with_eps["weight matrix re-centering"]["ln"] < 1e-12
    assert with_eps["dataset re-centering"]["bn"] < 1e-12


def test_normalized_summed_inputs_match_torch():
    gen = make_gen(900)
    W = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    x = torch.randn(5, 4, generator=gen, dtype=torch.float64) + 1
    a = x @ W.T
    assert_close(normalized_summed_inputs("bn", W, x, eps=1e-5), TF.batch_norm(a, None, None, training=True, eps=1e-5))
    assert_close(normalized_summed_inputs("ln", W, x, eps=1e-5), TF.layer_norm(a, (6,), eps=1e-5))
    assert_close(normalized_summed_inputs("rms", W, x, eps=1e-5), TF.rms_norm(a, (6,), eps=1e-5))
    linear = torch.nn.Linear(4, 6, bias=False).double()
    with torch.no_grad():
        linear.weight.copy_(W)
    linear = torch.nn.utils.parametrizations.weight_norm(linear)
    with torch.no_grad():
        linear.parametrizations.weight.original0.fill_(1.0)  # gain g = 1
    assert_close(normalized_summed_inputs("wn", W, x), linear(x))
    with pytest.raises(ValueError, match="unknown method"):
        normalized_summed_inputs("gn", W, x)
    assert INVARIANCE_METHODS == ("bn", "wn", "ln", "rms")


def test_transformations_do_what_their_names_say():
    gen = make_gen(901)
    W = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    x = torch.randn(5, 4, generator=gen, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    W2, x2 = TRANSFORMATIONS["weight matrix re-scaling"](W, x, g)
    ratio = W2 / W
    assert torch.allclose(ratio, ratio[0, 0]) and not torch.allclose(ratio, torch.ones_like(ratio)) and x2 is x
    W2, _ = TRANSFORMATIONS["weight matrix re-centering"](W, x, g)
    shift = W2 - W
    assert torch.allclose(shift, shift[:1].expand_as(shift)) and shift.abs().max() > 0.1  # same vector in every row
    W2, _ = TRANSFORMATIONS["weight vector re-scaling"](W, x, g)
    ratio = W2 / W
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio)) and ratio[:, 0].unique().numel() == 6
    _, x2 = TRANSFORMATIONS["dataset re-scaling"](W, x, g)
    assert torch.allclose(x2 / x, (x2 / x)[0, 0].expand_as(x))
    _, x2 = TRANSFORMATIONS["dataset re-centering"](W, x, g)
    assert torch.allclose(x2 - x, (x2 - x)[:1].expand_as(x))
    _, x2 = TRANSFORMATIONS["single training case re-scaling"](W, x, g)
    assert torch.equal(x2[1:], x[1:]) and not torch.allclose(x2[0], x[0])
    assert torch.allclose(x2[0] / x[0], (x2[0] / x[0])[0].expand(4))
