"""IBNorm (IBN-Net's half-IN, half-BN layer) and functional.adain (statistics swap).

IBNorm has no torch.nn counterpart; its reference is the authors' layer written with
torch.nn modules (InstanceNorm2d(affine=True) on the first int(C * ratio) channels,
BatchNorm2d on the rest, children named IN and BN), which check_steps compares in
training and eval, outputs, gradients and buffers.
"""
import pytest
import torch
import torch.nn as nn

import normlib
from normlib import functional as NF
from conftest import (
    PARITY_DTYPES,
    TOL,
    assert_close,
    check_steps,
    make_gen,
    randn,
    ref_dtype,
    skip_unsupported,
)


class TorchIBN(nn.Module):
    """The IBN-a layer as IBN-Net's authors write it, with torch.nn's own layers."""

    def __init__(self, planes, ratio=0.5, **bn_kwargs):
        super().__init__()
        self.half = int(planes * ratio)
        self.IN = nn.InstanceNorm2d(self.half, affine=True)
        self.BN = nn.BatchNorm2d(planes - self.half, **bn_kwargs)

    def forward(self, x):
        first, second = torch.split(x, [self.half, x.shape[1] - self.half], 1)
        return torch.cat((self.IN(first.contiguous()), self.BN(second.contiguous())), 1)


def ibn_pair(C, ratio, dtype, device, gen, **bn_kwargs):
    ref = TorchIBN(C, ratio, **bn_kwargs).double()
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(torch.rand(p.shape, generator=gen, dtype=torch.float64) + 0.5)
        if ref.BN.running_mean is not None:
            ref.BN.running_mean.copy_(torch.randn(ref.BN.running_mean.shape, generator=gen, dtype=torch.float64))
            ref.BN.running_var.copy_(torch.rand(ref.BN.running_var.shape, generator=gen, dtype=torch.float64) + 0.5)
    got = normlib.IBNorm(C, ratio, **bn_kwargs).double()
    got.load_state_dict(ref.state_dict())  # strict: same keys as the authors' layer
    return got.to(device=device, dtype=dtype), ref.to(device=device, dtype=ref_dtype(dtype))


# --------------------------------------------------------------------------- IBNorm


@pytest.mark.parametrize("dtype", PARITY_DTYPES)
@pytest.mark.parametrize("C,ratio", [(4, 0.5), (7, 0.5), (6, 0.25), (8, 0.75)])
def test_ibnorm_matches_the_authors_layer_in_train_and_eval(C, ratio, dtype, device):
    skip_unsupported(device, dtype)
    gen = make_gen(200 + C)
    got, ref = ibn_pair(C, ratio, dtype, device, gen)
    steps = [(t, randn((randint_batch(gen), C, 3, 4), gen)) for t in (True, True, False, True, False)]
    check_steps(got, ref, steps, dtype, gen, msg=f"IBNorm({C}, {ratio})", device=device)


def randint_batch(gen):
    return int(torch.randint(2, 5, (1,), generator=gen))


@pytest.mark.parametrize("bn_kwargs", [{"momentum": None}, {"momentum": 0.3}, {"track_running_stats": False}],
                         ids=["momentum_None", "momentum_0.3", "no_running_stats"])
def test_ibnorm_options_reach_the_batchnorm_half(bn_kwargs, device):
    gen = make_gen(210)
    got, ref = ibn_pair(6, 0.5, torch.float64, device, gen, **bn_kwargs)
    steps = [(t, randn((3, 6, 3, 3), gen)) for t in (True, True, True, False)]
    check_steps(got, ref, steps, torch.float64, gen, msg=f"IBNorm {bn_kwargs}", device=device)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_ibnorm_split_is_exact(training, device):
    """The first half equals InstanceNorm2d on those channels, the rest BatchNorm2d on the others."""
    gen = make_gen(220)
    C, k = 10, 5
    ibn = normlib.IBNorm(C).double().to(device)
    with torch.no_grad():
        for p in ibn.parameters():
            p.copy_(torch.rand(p.shape, generator=gen, dtype=torch.float64).to(device) + 0.5)
    instance = nn.InstanceNorm2d(k, affine=True).double().to(device)
    batch = nn.BatchNorm2d(C - k).double().to(device)
    instance.load_state_dict(ibn.IN.state_dict())
    batch.load_state_dict(ibn.BN.state_dict())
    for m in (ibn, instance, batch):
        m.train(training)
    for _ in range(3):
        x = randn((4, C, 5, 5), gen, device=device)
        y = ibn(x)
        assert_close(y[:, :k], instance(x[:, :k]), msg="IN half")
        assert_close(y[:, k:], batch(x[:, k:]), msg="BN half")
    assert ibn.instance_channels == k and ibn.batch_channels == C - k


def test_ibnorm_halves_behave_like_their_methods():
    """IN half: each sample on its own (contrast-invariant, batch-independent); BN half: not."""
    gen = make_gen(230)
    ibn = normlib.IBNorm(8).double()
    x = randn((4, 8, 6, 6), gen)
    y = ibn(x)
    # Changing sample 1's contrast leaves the IN half of every sample unchanged ...
    x2 = x.clone()
    x2[1] = 5.0 * x2[1] + 3.0
    y2 = ibn(x2)
    assert_close(y2[:, :4], y[:, :4], tol=(1e-6, 1e-6))
    # ... while the BN half of the *other* samples moves, because they share batch statistics.
    assert (y2[0, 4:] - y[0, 4:]).abs().max() > 0.1
    # Per (sample, channel) mean 0 in the IN half; per channel over the batch in the BN half.
    assert_close(y[:, :4].mean((2, 3)), torch.zeros(4, 4, dtype=torch.float64), tol=(1e-10, 0))
    assert_close(y[:, 4:].mean((0, 2, 3)), torch.zeros(4, dtype=torch.float64), tol=(1e-10, 0))
    assert y[:, 4:].mean((2, 3)).abs().max() > 0.01


def test_ibnorm_state_dict_keys_and_buffers(device):
    ibn = normlib.IBNorm(6, device=device)
    assert list(ibn.state_dict()) == list(TorchIBN(6).state_dict()) == [
        "IN.weight", "IN.bias", "BN.weight", "BN.bias", "BN.running_mean", "BN.running_var",
        "BN.num_batches_tracked"]
    assert [n for n, _ in ibn.named_buffers()] == ["BN.running_mean", "BN.running_var", "BN.num_batches_tracked"]
    assert all(t.device.type == device.type for t in ibn.state_dict().values())
    no_affine = normlib.IBNorm(6, affine=False, track_running_stats=False)
    assert list(no_affine.state_dict()) == []
    # A torch.nn checkpoint of the authors' layer loads, and back.
    TorchIBN(6).load_state_dict(normlib.IBNorm(6).state_dict())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=["f64", "f32", "bf16"])
def test_ibnorm_device_and_dtype(dtype, device):
    skip_unsupported(device, dtype)
    ibn = normlib.IBNorm(4, device=device, dtype=dtype)
    for name, t in ibn.state_dict().items():
        assert t.device.type == device.type, name
        assert t.dtype == (torch.long if name.endswith("num_batches_tracked") else dtype), name
    x = torch.randn(3, 4, 2, 2, device=device, dtype=dtype)
    y = ibn(x)
    assert y.dtype == dtype and y.device.type == device.type and y.shape == x.shape
    moved = normlib.IBNorm(4).to(device=device, dtype=dtype)
    assert moved.BN.running_mean.device.type == device.type and moved.BN.running_mean.dtype == dtype
    assert moved.BN.num_batches_tracked.dtype == torch.long


def test_ibnorm_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="one half empty"):
        normlib.IBNorm(1)
    with pytest.raises(ValueError, match="one half empty"):
        normlib.IBNorm(8, ratio=0.1)  # int(0.8) = 0 IN channels
    with pytest.raises(ValueError, match="one half empty"):
        normlib.IBNorm(8, ratio=1.0)
    with pytest.raises(ValueError, match="between 0 and 1"):
        normlib.IBNorm(8, ratio=1.5)
    ibn = normlib.IBNorm(4)
    with pytest.raises(ValueError, match="expected 4D input"):
        ibn(torch.randn(2, 4, 3))
    with pytest.raises(ValueError, match="expected 4 channels"):
        ibn(torch.randn(2, 5, 3, 3))
    with pytest.raises(ValueError, match="more than 1 spatial element"):
        ibn(torch.randn(2, 4, 1, 1))  # the IN half has one value per statistic
    assert "ratio=0.5" in repr(ibn) and "InstanceNorm2d" in repr(ibn) and "BatchNorm2d" in repr(ibn)


def test_make_norm_ibn():
    m = normlib.make_norm("ibn", 16)
    assert isinstance(m, normlib.IBNorm) and m.instance_channels == 8
    assert normlib.make_norm("ibn", 16, affine=False).IN.weight is None
    assert normlib.make_norm("ibn", 16, eps=1e-3).BN.eps == 1e-3
    with pytest.raises(ValueError, match="spatial_dims=2"):
        normlib.make_norm("ibn", 16, spatial_dims=0)


# --------------------------------------------------------------------------- adain


def _spatial_stats(x):
    dims = tuple(range(2, x.dim()))
    return x.mean(dims), x.var(dims, correction=0)


def test_adain_formula():
    gen = make_gen(240)
    content, style = randn((3, 4, 5, 6), gen), randn((3, 4, 7, 2), gen, scale=0.5, shift=-1.0)
    eps = 1e-5
    mc, vc = (t[..., None, None] for t in _spatial_stats(content))
    ms, vs = (t[..., None, None] for t in _spatial_stats(style))
    expected = torch.sqrt(vs + eps) * (content - mc) / torch.sqrt(vc + eps) + ms
    assert_close(NF.adain(content, style, eps), expected)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape", [(2, 3, 8), (2, 3, 5, 7), (2, 2, 3, 4, 5)], ids=["1d", "2d", "3d"])
def test_adain_with_itself_is_the_identity(shape, dtype, device):
    skip_unsupported(device, dtype)
    x = randn(shape, make_gen(241), dtype=dtype, device=device)
    assert_close(NF.adain(x, x), x, dtype=dtype)


@pytest.mark.parametrize("shape", [(2, 3, 8), (2, 3, 5, 7), (2, 2, 3, 4, 5)], ids=["1d", "2d", "3d"])
def test_adain_output_has_the_style_statistics(shape, device):
    gen = make_gen(242)
    content = randn(shape, gen, device=device)
    style = randn(shape[:2] + tuple(s + 1 for s in shape[2:]), gen, scale=7.0, shift=-4.0, device=device)
    out = NF.adain(content, style)
    (mo, vo), (ms, vs) = _spatial_stats(out), _spatial_stats(style)
    assert_close(mo, ms, tol=(1e-10, 1e-10))
    assert_close(vo, vs, tol=(1e-5, 1e-5))  # up to the relative eps / var_content
    # ... and it keeps the content's standardized pattern, the "content" of the image
    assert_close(normlib.functional.instance_norm(out), normlib.functional.instance_norm(content), tol=(1e-5, 1e-5))
    # A style with the content's statistics (but another pattern) changes nothing
    dims = tuple(range(2, len(shape)))
    same_stats = (content.mean(dims, keepdim=True)
                  + content.std(dims, correction=0, keepdim=True) * NF.instance_norm(style, eps=0.0))
    assert_close(NF.adain(content, same_stats), content, tol=(1e-6, 1e-6))


def test_adain_one_style_for_a_batch_and_gradients():
    gen = make_gen(243)
    content = randn((4, 3, 5, 5), gen).requires_grad_(True)
    style = randn((1, 3, 6, 6), gen).requires_grad_(True)
    out = NF.adain(content, style)
    for n in range(4):
        assert_close(out[n:n + 1], NF.adain(content[n:n + 1], style))
    torch.autograd.gradcheck(lambda c, s: NF.adain(c, s), (content[:2, :, :3, :3].detach().requires_grad_(True),
                                                          style[:, :, :3, :3].detach().requires_grad_(True)))


def test_adain_half_precision_keeps_dtype():
    x = torch.randn(2, 3, 4, 4) * 3 + 2
    s = torch.randn(2, 3, 4, 4) * 0.5 - 1
    got = NF.adain(x.to(torch.bfloat16), s.to(torch.bfloat16))
    assert got.dtype == torch.bfloat16
    assert_close(got, NF.adain(x.to(torch.bfloat16).float(), s.to(torch.bfloat16).float()).to(torch.bfloat16),
                 dtype=torch.bfloat16, tol=TOL[torch.bfloat16])


def test_adain_errors():
    x = torch.randn(2, 3, 4, 4)
    with pytest.raises(ValueError, match="channels"):
        NF.adain(x, torch.randn(2, 4, 4, 4))
    with pytest.raises(ValueError, match="style batch size"):
        NF.adain(x, torch.randn(3, 3, 4, 4))
    with pytest.raises(ValueError, match="same rank"):
        NF.adain(x, torch.randn(2, 3, 16))
    with pytest.raises(ValueError, match="at least one spatial dim"):
        NF.adain(torch.randn(2, 3), torch.randn(2, 3))
    with pytest.raises(NotImplementedError, match="floating-point"):
        NF.adain(x.long(), x)
