"""normlib.lab.transformer: post-LN/pre-LN blocks against torch.nn.TransformerEncoderLayer."""

import math

import pytest
import torch
import torch.nn as nn
from conftest import assert_close, make_gen, randn, skip_unsupported

import normlib
from normlib.lab.transformer import TinyTransformer, TransformerBlock, ffn_gradient_norms


def randomize(module, gen):
    with torch.no_grad():
        for name, p in module.named_parameters():
            base = 1.0 if name.startswith("norm") and name.endswith("weight") else 0.0
            p.copy_((base + 0.3 * torch.randn(p.shape, generator=gen, dtype=torch.float64)).to(p.dtype))
    return module


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("position", ["post", "pre"])
def test_block_is_torch_encoder_layer(position, causal, dtype, device):
    skip_unsupported(device, dtype)
    gen = make_gen(800)
    ref = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True, norm_first=position == "pre")
    ref = randomize(ref.double(), gen).to(device=device, dtype=dtype)
    got = TransformerBlock(8, 2, 16, norm="ln", position=position, device=device, dtype=dtype)
    got.load_state_dict(ref.state_dict())  # same parameter names
    assert isinstance(got.norm1, normlib.LayerNorm) and isinstance(got.norm2, normlib.LayerNorm)
    assert got.norm1.weight.dtype == dtype
    x = randn((3, 5, 8), gen, dtype, device)
    mask = nn.Transformer.generate_square_subsequent_mask(5, device=device, dtype=dtype) if causal else None
    xg, xr = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    y = got(xg, is_causal=causal)
    yr = ref(xr, src_mask=mask, is_causal=causal)
    tol = (1e-10, 1e-10) if dtype == torch.float64 else (1e-5, 1e-5)
    assert_close(y, yr, tol=tol, msg="output")
    g = torch.randn(y.shape, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
    (y * g).sum().backward()
    (yr * g).sum().backward()
    gtol = (1e-9, 1e-9) if dtype == torch.float64 else (1e-4, 1e-4)
    assert_close(xg.grad, xr.grad, tol=gtol, msg="grad input")
    ref_params = dict(ref.named_parameters())
    for name, p in got.named_parameters():
        assert_close(p.grad, ref_params[name].grad, tol=gtol, msg=f"grad {name}")


def test_pre_and_post_differ_and_rms_swaps_in():
    gen = make_gen(801)
    x = randn((2, 4, 8), gen)
    post = randomize(TransformerBlock(8, 2, 16, position="post").double(), gen)
    pre = TransformerBlock(8, 2, 16, position="pre").double()
    pre.load_state_dict(post.state_dict())
    with torch.no_grad():
        y_post, y_pre = post(x), pre(x)
        assert not torch.allclose(y_post, y_pre)
        # post-LN ends with a norm: every token has mean beta and (with gain 1) unit variance
        plain = TransformerBlock(8, 2, 16, position="post").double()
        y = plain(x)
        assert_close(y.mean(-1), torch.zeros(2, 4, dtype=torch.float64), tol=(1e-10, 0))
        # pre-LN leaves the residual path alone: with both sublayers outputting zero, y == x
        for p in (pre.self_attn.out_proj.weight, pre.self_attn.out_proj.bias, pre.linear2.weight, pre.linear2.bias):
            p.zero_()
        assert_close(pre(x), x)
    rms = TransformerBlock(8, 2, 16, norm="rms")
    assert isinstance(rms.norm1, normlib.RMSNorm) and rms.norm1.eps == 1e-5
    assert isinstance(TransformerBlock(8, 2, 16, norm="none").norm1, nn.Identity)
    custom = TransformerBlock(8, 2, 16, norm=lambda d: nn.LayerNorm(d))
    assert isinstance(custom.norm2, nn.LayerNorm)
    with pytest.raises(ValueError, match="normalizes each token over its features"):
        TransformerBlock(8, 2, 16, norm="bn")
    with pytest.raises(ValueError, match="'pre' or 'post'"):
        TransformerBlock(8, 2, 16, position="middle")
    with pytest.raises(ValueError, match=r"\(N, T, d_model\)"):
        post(torch.randn(4, 8, dtype=torch.float64))


@pytest.mark.parametrize("position", ["post", "pre"])
def test_tiny_transformer_structure_and_residual_norms(position):
    torch.manual_seed(0)
    model = TinyTransformer(11, 5, max_len=6, depth=3, d_model=16, num_heads=4, dim_feedforward=32, position=position)
    tokens = torch.randint(0, 11, (4, 6))
    assert model(tokens).shape == (4, 6, 5)
    assert len(model.blocks) == 3
    if position == "pre":
        assert isinstance(model.final_norm, normlib.LayerNorm)
    else:
        assert isinstance(model.final_norm, nn.Identity)
    for module in model.modules():
        if isinstance(module, nn.Linear):
            assert torch.all(module.bias == 0)  # Xavier init: zero biases
            bound = math.sqrt(6 / sum(module.weight.shape))
            assert module.weight.abs().max() <= bound
    norms = model.residual_norms(tokens)
    assert len(norms) == 4
    if position == "post":  # a token leaves every post-LN block as a LayerNorm output: norm sqrt(d)
        assert all(abs(n - 4.0) < 1e-3 for n in norms[1:])
    else:  # pre-LN adds to the stream: it grows
        assert norms[-1] > norms[0]
    with pytest.raises(ValueError, match="T <= 6"):
        model(torch.randint(0, 11, (2, 7)))
    with pytest.raises(ValueError, match="init"):
        TinyTransformer(11, 5, 6, init="kaiming")
    default = TinyTransformer(11, 5, 6, init="torch")
    assert any(torch.any(m.bias != 0) for m in default.modules() if isinstance(m, nn.Linear))


def test_causal_model_does_not_look_ahead():
    torch.manual_seed(1)
    model = TinyTransformer(7, 7, max_len=5, depth=2, d_model=8, num_heads=2, dim_feedforward=16, causal=True).double()
    tokens = torch.randint(0, 7, (2, 5))
    changed = tokens.clone()
    changed[:, 3:] = (changed[:, 3:] + 1) % 7
    with torch.no_grad():
        assert_close(model(tokens)[:, :3], model(changed)[:, :3])
        assert not torch.allclose(model(tokens)[:, 3:], model(changed)[:, 3:])


def test_ffn_gradient_norms_are_the_gradients_of_linear2():
    torch.manual_seed(2)
    model = TinyTransformer(9, 9, max_len=4, depth=3, d_model=8, num_heads=2, dim_feedforward=16).double()
    tokens = torch.randint(0, 9, (3, 4))
    targets = torch.randint(0, 9, (3, 4))
    norms = ffn_gradient_norms(model, tokens, targets)
    assert all(p.grad is None for p in model.parameters())  # .grad left untouched
    logits = model(tokens)
    nn.functional.cross_entropy(logits.reshape(-1, 9), targets.reshape(-1)).backward()
    expected = [float(block.linear2.weight.grad.norm()) for block in model.blocks]
    assert len(norms) == 3
    assert norms == pytest.approx(expected, rel=1e-12)
