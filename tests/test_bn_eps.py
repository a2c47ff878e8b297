"""eps as torch 2.13 checks it: positive in training, non-negative at inference.

torch.nn.functional.batch_norm raises ValueError("batch_norm eps must be positive during
training, but got ...") and ValueError("batch_norm eps must be non-negative, but got ...");
the constructors accept any eps, the forward pass checks it. Each case runs torch first and
asserts normlib raises the same type with the same message (or, where torch accepts,
returns the same output).
"""

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close, make_gen, randn

import normlib
from normlib import functional as NF


def outcome(fn):
    """('ok', output) or (exception type, message)."""
    try:
        return "ok", fn()
    except Exception as error:  # noqa: BLE001 - we compare whatever is raised
        return type(error), str(error)


def assert_same_outcome(torch_fn, normlib_fn):
    __tracebackhide__ = True
    expected, got = outcome(torch_fn), outcome(normlib_fn)
    assert got[0] is expected[0], f"normlib: {got}; torch: {expected}"
    if expected[0] == "ok":
        assert_close(got[1], expected[1], dtype=torch.float64)
    else:
        # normlib may add an explanation after torch's message, never change it.
        assert got[1].startswith(expected[1]), f"normlib: {got[1]!r}; torch: {expected[1]!r}"


EPS_VALUES = [0.0, -1e-5, -1.0, 1e-5]


@pytest.mark.parametrize("eps", EPS_VALUES)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("with_stats", [True, False], ids=["stats", "nostats"])
def test_functional_eps_matches_torch(eps, training, with_stats):
    x = randn((5, 3, 2), make_gen(1))

    def call(f):
        stats = (torch.zeros(3, dtype=x.dtype), torch.ones(3, dtype=x.dtype)) if with_stats else (None, None)
        return lambda: f.batch_norm(x, *stats, training=training, eps=eps)

    assert_same_outcome(call(F), call(NF))


def test_eps_messages_are_torchs():
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"^batch_norm eps must be positive during training, but got 0\.0$"):
        NF.batch_norm(x, None, None, training=True, eps=0.0)
    with pytest.raises(ValueError, match=r"^batch_norm eps must be non-negative, but got -0\.001$"):
        NF.batch_norm(x, torch.zeros(3), torch.ones(3), training=False, eps=-1e-3)


def test_batch_of_one_is_reported_before_eps_as_in_torch():
    x = torch.randn(1, 3)
    assert_same_outcome(
        lambda: F.batch_norm(x, None, None, training=True, eps=0.0),
        lambda: NF.batch_norm(x, None, None, training=True, eps=0.0),
    )
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        NF.batch_norm(x, None, None, training=True, eps=0.0)


def test_eps_is_checked_before_the_dtype_as_in_torch():
    x = torch.ones(4, 3, dtype=torch.long)
    assert_same_outcome(
        lambda: F.batch_norm(x, None, None, training=True, eps=0.0),
        lambda: NF.batch_norm(x, None, None, training=True, eps=0.0),
    )


@pytest.mark.parametrize(
    "name,shape",
    [
        ("BatchNorm1d", (4, 3)),
        ("BatchNorm1d", (4, 3, 5)),
        ("BatchNorm2d", (4, 3, 2, 2)),
        ("BatchNorm3d", (2, 3, 2, 2, 2)),
    ],
)
@pytest.mark.parametrize("eps", [0.0, -1e-3])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_module_eps_matches_torch(name, shape, eps, training, device):
    x = randn(shape, make_gen(2), device=device)
    ref = getattr(torch.nn, name)(3, eps=eps).to(device=device, dtype=torch.float64).train(training)
    got = getattr(normlib, name)(3, eps=eps).to(device=device, dtype=torch.float64).train(training)
    assert_same_outcome(lambda: ref(x), lambda: got(x))
    # Same bookkeeping as torch: its module counts the batch before F.batch_norm checks eps.
    assert int(got.num_batches_tracked) == int(ref.num_batches_tracked)
    assert torch.equal(got.running_mean.cpu(), ref.running_mean.cpu())


def test_eps_zero_at_inference_is_allowed_and_exact():
    # eps = 0 is legal in eval: the running variance, not a batch's, is in the denominator.
    x = randn((6, 4), make_gen(3))
    bn_torch = torch.nn.BatchNorm1d(4, eps=0.0).double().eval()
    bn_ours = normlib.BatchNorm1d(4, eps=0.0).double().eval()
    with torch.no_grad():
        bn_torch.running_var.fill_(4.0)
        bn_ours.running_var.fill_(4.0)
    torch.testing.assert_close(bn_ours(x), bn_torch(x))
    torch.testing.assert_close(bn_ours(x), x / 2)


def test_track_running_stats_false_checks_eps_in_eval_like_training():
    # Without running stats, eval uses batch statistics, so torch calls F.batch_norm with
    # training=True: eps = 0 is refused there too.
    x = torch.randn(4, 3)
    ref = torch.nn.BatchNorm1d(3, eps=0.0, track_running_stats=False).eval()
    got = normlib.BatchNorm1d(3, eps=0.0, track_running_stats=False).eval()
    assert_same_outcome(lambda: ref(x), lambda: got(x))
    with pytest.raises(ValueError, match="positive during training"):
        got(x)
