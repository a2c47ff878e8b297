"""normlib.convert on whole models: tiny versions of well-known architectures compute, train,
run under autocast and in channels_last exactly as their torch.nn originals.

The blocks are written here from their published definitions (ResNet, MobileNetV2, pre-LN
Transformer, ConvNeXt, a diffusion U-Net's residual block, an LSTM language model), small
enough that the whole file runs in seconds. Each model is built with a fixed seed, its norm
layers get random gamma/beta and running statistics, and a deep copy is converted; the pair
must then agree on outputs, input and parameter gradients and buffers.
"""

import copy

import pytest
import torch
from conftest import TOL, assert_close, assert_grad_close, make_gen, randn, randomize_params
from torch import nn

import normlib
from normlib.convert import CONVERSIONS

pytestmark = pytest.mark.usefixtures("eager_path")  # loops on and off (conftest)

NORMLIB_CLASSES = set(CONVERSIONS.values())

# --------------------------------------------------------------------------- blocks


class BasicBlock(nn.Module):
    """ResNet basic block (He et al., 2016): two 3x3 conv-BN, identity or 1x1-conv shortcut."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    """ResNet bottleneck: 1x1 reduce, 3x3 (strided), 1x1 expand by 4, each with BN."""

    expansion = 4

    def __init__(self, cin, width, stride=1):
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity
        return self.relu(out)


def resnet_stem(cout):
    return nn.Sequential(nn.Conv2d(3, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class InvertedResidual(nn.Module):
    """MobileNetV2 block (Sandler et al., 2018): 1x1 expand, 3x3 depthwise, 1x1 linear project."""

    def __init__(self, cin, cout, stride, expand_ratio):
        super().__init__()
        hidden = cin * expand_ratio
        self.use_residual = stride == 1 and cin == cout
        self.block = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x):
        return x + self.block(x) if self.use_residual else self.block(x)


class PreLNTransformerBlock(nn.Module):
    """Pre-LN Transformer encoder block (Xiong et al., 2020) on (N, T, D)."""

    def __init__(self, d, heads, mlp_ratio=4):
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, dropout=0.0, batch_first=True)
        self.ln2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, mlp_ratio * d), nn.GELU(), nn.Linear(mlp_ratio * d, d))

    def forward(self, x):
        h = self.ln1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class ConvNeXtBlock(nn.Module):
    """ConvNeXt block (Liu et al., 2022): depthwise 7x7, LayerNorm over channels in (N, H, W, C)
    layout, inverted MLP, layer scale, residual."""

    def __init__(self, dim, layer_scale=0.5):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        # The paper starts at 1e-6; 0.5 makes the branch count in the comparison.
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x):
        h = self.dwconv(x).permute(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)
        h = self.pwconv2(self.act(self.pwconv1(self.norm(h))))
        return x + (self.gamma * h).permute(0, 3, 1, 2)


class ChannelsFirstLayerNorm(nn.Module):
    """ConvNeXt's downsampling LayerNorm over C of (N, C, H, W), by permuting around nn.LayerNorm."""

    def __init__(self, dim):
        super().__init__()
        self.ln = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x):
        return self.ln(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class UNetResBlock(nn.Module):
    """A diffusion U-Net residual block (Ho et al., 2020): norm -> SiLU -> conv, plus the time
    embedding, norm -> SiLU -> conv, and a 1x1 conv shortcut when the channel count changes."""

    def __init__(self, cin, cout, temb_dim, norm):
        super().__init__()
        self.norm1 = norm(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.temb_proj = nn.Sequential(nn.SiLU(), nn.Linear(temb_dim, cout))
        self.norm2 = norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.act = nn.SiLU()
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, temb):
        h = self.conv1(self.act(self.norm1(x)))
        h = h + self.temb_proj(temb)[:, :, None, None]
        h = self.conv2(self.act(self.norm2(h)))
        return self.skip(x) + h


class UNetBlocks(nn.Module):
    def __init__(self, blocks, cin, temb_dim):
        super().__init__()
        self.conv_in = nn.Conv2d(3, cin, 3, padding=1)
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x, temb):
        h = self.conv_in(x)
        for block in self.blocks:
            h = block(h, temb)
        return h


class LSTMLanguageModel(nn.Module):
    """Embedding -> LSTM -> LayerNorm -> Linear to the vocabulary."""

    def __init__(self, vocab, emb, hidden):
        super().__init__()
        self.embed = nn.Embedding(vocab, emb)
        self.lstm = nn.LSTM(emb, hidden, batch_first=True)
        self.norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, tokens):
        return self.head(self.norm(self.lstm(self.embed(tokens))[0]))


class Residual(nn.Module):
    def __init__(self, body):
        super().__init__()
        self.body = body

    def forward(self, x):
        out = self.body(x)
        out += x
        return out


# --------------------------------------------------------------------------- the zoo

VOCAB = 13
TEMB = 6


def _img(shape):
    return lambda gen: (randn(shape, gen, scale=1.0, shift=0.5),)


# name -> (builder, inputs from a generator (float64 on the CPU; integer tokens stay integer))
ZOO = {
    "resnet_basic": (
        lambda: nn.Sequential(resnet_stem(6), BasicBlock(6, 6), BasicBlock(6, 8, stride=2)),
        _img((4, 3, 6, 6)),
    ),
    "resnet_bottleneck": (
        lambda: nn.Sequential(resnet_stem(8), Bottleneck(8, 2), Bottleneck(8, 3, stride=2)),
        _img((3, 3, 6, 6)),
    ),
    "mobilenet_v2": (
        lambda: nn.Sequential(
            nn.Conv2d(3, 6, 3, 1, 1, bias=False),
            nn.BatchNorm2d(6),
            nn.ReLU6(inplace=True),
            InvertedResidual(6, 6, 1, 3),
            InvertedResidual(6, 8, 2, 2),
        ),
        _img((4, 3, 6, 6)),
    ),
    "transformer_pre_ln": (
        lambda: nn.Sequential(PreLNTransformerBlock(8, 2), PreLNTransformerBlock(8, 2), nn.LayerNorm(8)),
        lambda gen: (randn((3, 5, 8), gen, scale=1.0, shift=0.5),),
    ),
    "convnext": (
        lambda: nn.Sequential(
            nn.Conv2d(3, 6, 2, stride=2), ChannelsFirstLayerNorm(6), ConvNeXtBlock(6), ConvNeXtBlock(6)
        ),
        _img((2, 3, 8, 8)),
    ),
    "unet_groupnorm": (
        lambda: UNetBlocks(
            [
                UNetResBlock(4, 4, TEMB, lambda c: nn.GroupNorm(2, c)),
                UNetResBlock(4, 6, TEMB, lambda c: nn.GroupNorm(2, c)),
            ],
            4,
            TEMB,
        ),
        lambda gen: (randn((2, 3, 5, 5), gen, scale=1.0, shift=0.5), randn((2, TEMB), gen, scale=1.0, shift=0.0)),
    ),
    "unet_instancenorm": (
        lambda: UNetBlocks([UNetResBlock(4, 6, TEMB, lambda c: nn.InstanceNorm2d(c, affine=True))], 4, TEMB),
        lambda gen: (randn((2, 3, 5, 5), gen, scale=1.0, shift=0.5), randn((2, TEMB), gen, scale=1.0, shift=0.0)),
    ),
    "lstm_lm": (
        lambda: LSTMLanguageModel(VOCAB, 6, 8),
        lambda gen: (torch.randint(0, VOCAB, (3, 5), generator=gen),),
    ),
    "mlp_bn_rms": (
        lambda: nn.Sequential(
            nn.Linear(5, 8),
            nn.BatchNorm1d(8),
            nn.ReLU(inplace=True),
            nn.Linear(8, 8),
            nn.RMSNorm(8, eps=1e-6),
            nn.GELU(),
            nn.Linear(8, 3),
            nn.RMSNorm(3),
        ),
        lambda gen: (randn((6, 5), gen, scale=1.0, shift=0.5),),
    ),
    "conv3d": (
        lambda: nn.Sequential(
            nn.Conv3d(2, 4, 3, padding=1, bias=False),
            nn.BatchNorm3d(4),
            nn.ReLU(inplace=True),
            Residual(
                nn.Sequential(
                    nn.Conv3d(4, 4, 3, padding=1), nn.InstanceNorm3d(4, affine=True, track_running_stats=True)
                )
            ),
            nn.ReLU(inplace=True),
        ),
        _img((2, 2, 3, 4, 4)),
    ),
    "conv1d": (
        lambda: nn.Sequential(
            nn.Conv1d(3, 5, 3, padding=1),
            nn.InstanceNorm1d(5),
            nn.ReLU(inplace=True),
            Residual(nn.Sequential(nn.Conv1d(5, 5, 3, padding=1, bias=False), nn.BatchNorm1d(5, momentum=None))),
            nn.ReLU(inplace=True),
        ),
        lambda gen: (randn((3, 3, 7), gen, scale=1.0, shift=0.5),),
    ),
}
if not hasattr(nn, "RMSNorm"):  # torch < 2.4
    del ZOO["mlp_bn_rms"]

CONV_MODELS = [name for name in ZOO if ZOO[name][1](make_gen(0))[0].dim() in (4, 5)]
DTYPES = [pytest.param(torch.float64, id="f64"), pytest.param(torch.float32, id="f32")]
MODES = [pytest.param(True, id="train"), pytest.param(False, id="eval")]


def build(name, dtype=torch.float64, seed=0):
    """The torch model: fixed seed, random gamma/beta and running stats in its norm layers."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ZOO[name][0]()
    gen = make_gen(seed + 1)
    for m in model.modules():
        if type(m) in CONVERSIONS:
            randomize_params(m, gen)
    return model.to(dtype)


def converted_copy(ref):
    """normlib.convert on a deep copy, checked to hold normlib layers exactly where ref has torch's."""
    got = normlib.convert(copy.deepcopy(ref))
    want = [(n, CONVERSIONS[type(m)]) for n, m in ref.named_modules() if type(m) in CONVERSIONS]
    have = [(n, type(m)) for n, m in got.named_modules() if type(m) in NORMLIB_CLASSES]
    assert want, "the model has no norm layer"
    assert have == want
    assert not any(type(m) in CONVERSIONS for m in got.modules()), "a torch norm layer is left"
    return got


def inputs_for(name, gen, dtype, device="cpu"):
    """The model's inputs in dtype on device, floating ones requiring grad."""
    xs = ZOO[name][1](gen)
    return [x.to(device=device, dtype=dtype).requires_grad_() if x.is_floating_point() else x.to(device) for x in xs]


def clone_inputs(xs):
    return [x.detach().clone().requires_grad_() if x.is_floating_point() else x.clone() for x in xs]


def forward(model, xs):
    """Forward on fresh copies of xs (so each model gets its own input gradients)."""
    xs = clone_inputs(xs)
    return model(*xs), xs


def backward(y, xs, g):
    """Backward of the output gradient g; the floating inputs' gradients."""
    y.backward(g.to(device=y.device, dtype=y.dtype))
    return [x.grad for x in xs if x.is_floating_point()]


def compare_buffers(got, ref, dtype, where):
    bg, br = dict(got.named_buffers()), dict(ref.named_buffers())
    assert list(bg) == list(br), f"{where}: buffer names"
    for k, r in br.items():
        if k.endswith("num_batches_tracked"):
            assert int(bg[k]) == int(r), f"{where}: {k} {int(bg[k])} vs {int(r)}"
        else:
            assert_close(bg[k], r, dtype=dtype, msg=f"{where}: buffer {k}")


def compare_run(got, ref, truth, xs, gen, dtype, where):
    """One forward/backward of both models (and of the float64 truth, if any) and the checks."""
    yg, xg = forward(got, xs)
    yr, xr = forward(ref, xs)
    assert yg.dtype == yr.dtype and yg.shape == yr.shape, f"{where}: {yg.dtype}{tuple(yg.shape)}"
    assert_close(yg, yr, dtype=dtype, msg=f"{where}: output")
    compare_buffers(got, ref, dtype, where)
    g = torch.randn(yr.shape, generator=gen, dtype=torch.float64)
    gg, gr = backward(yg, xg, g), backward(yr, xr, g)
    truths = {}
    if truth is not None:
        yt, xt = forward(truth, [x.to(torch.float64) if x.is_floating_point() else x for x in xs])
        truths = {f"input {i}": t for i, t in enumerate(backward(yt, xt, g))}
        truths.update({k: p.grad for k, p in truth.named_parameters()})
        truth.zero_grad(set_to_none=True)
    for i, (a, r) in enumerate(zip(gg, gr)):
        assert_grad_close(a, r, truths.get(f"input {i}"), dtype, msg=f"{where}: grad of input {i}")
    pg, pr = dict(got.named_parameters()), dict(ref.named_parameters())
    assert list(pg) == list(pr), f"{where}: parameter names"
    for k in pr:
        assert_grad_close(pg[k].grad, pr[k].grad, truths.get(k), dtype, msg=f"{where}: grad of {k}")
    return yg, yr


# --------------------------------------------------------------------------- tests


def test_zoo_covers_every_converted_class():
    """Each class that convert maps appears in at least one model of the zoo."""
    seen = {type(m) for name in ZOO for m in build(name).modules()}
    assert set(CONVERSIONS) <= seen, f"missing: {set(CONVERSIONS) - seen}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("training", MODES)
@pytest.mark.parametrize("name", ZOO)
def test_converted_model_matches_torch(name, training, dtype):
    """Same output, input gradient, parameter gradients (by name) and buffers as torch."""
    gen = make_gen(10)
    ref = build(name, dtype)
    got = converted_copy(ref)
    # Below float64, gradients are also judged against a float64 run (see assert_grad_close).
    truth = build(name, torch.float64) if dtype != torch.float64 else None
    for m in (ref, got, truth):
        if m is not None:
            m.train(training)
    xs = inputs_for(name, gen, dtype)
    where = f"{name} {'train' if training else 'eval'} {dtype}"
    compare_run(got, ref, truth, xs, gen, dtype, where)


def assert_close_or_as_accurate(got, ref, truth, dtype, msg):
    """Close to torch (TOL, atol scaled by the largest value), or, when a float64 truth is given,
    at most 4x torch's own error against it: after a few SGD steps in float32, torch's rounding
    has grown with the trajectory and no fixed tolerance separates a bug from it."""
    __tracebackhide__ = True
    atol, rtol = TOL[dtype]
    g, r = (t.detach().to("cpu", torch.float64) for t in (got, ref))
    scale = max(1.0, float(r.abs().max()))
    if torch.allclose(g, r, atol=atol * scale, rtol=rtol) or truth is None:
        assert_close(g, r, dtype=dtype, msg=msg, scale_atol=True)
        return
    t = truth.detach().to("cpu", torch.float64)
    err_got, err_ref = float((g - t).abs().max()), float((r - t).abs().max())
    assert err_got <= max(4 * err_ref, atol * scale), (
        f"{msg}: normlib's error vs float64 {err_got:.3g} exceeds 4x torch's {err_ref:.3g}"
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ZOO)
def test_sgd_steps_stay_equal(name, dtype):
    """Three SGD steps (momentum, weight decay) in training mode keep parameters, buffers and
    then the eval-mode output equal to torch's (in float32: or as accurate, against a float64
    run of the same steps)."""
    gen = make_gen(20)
    ref = build(name, dtype)
    got = converted_copy(ref)
    truth = build(name, torch.float64) if dtype != torch.float64 else None
    models = [m for m in (got, ref, truth) if m is not None]
    opts = [torch.optim.SGD(m.parameters(), lr=0.02, momentum=0.9, weight_decay=1e-3) for m in models]
    for step in range(3):
        xs = inputs_for(name, gen, torch.float64)
        g = None
        for m, opt in zip(models, opts):
            m.train()
            opt.zero_grad()
            mdtype = next(m.parameters()).dtype
            y, _ = forward(m, [x.to(mdtype) if x.is_floating_point() else x for x in xs])
            if g is None:
                g = torch.randn(y.shape, generator=gen, dtype=torch.float64)
            backward(y, [], g)
            opt.step()
        where = f"{name} {dtype} after step {step + 1}"
        pg, pr = dict(got.named_parameters()), dict(ref.named_parameters())
        pt = dict(truth.named_parameters()) if truth is not None else {}
        assert list(pg) == list(pr), f"{where}: parameter names"
        for k, p in pr.items():
            assert_close_or_as_accurate(pg[k], p, pt.get(k), dtype, f"{where}: {k}")
        bg, br = dict(got.named_buffers()), dict(ref.named_buffers())
        bt = dict(truth.named_buffers()) if truth is not None else {}
        assert list(bg) == list(br), f"{where}: buffer names"
        for k, b in br.items():
            if k.endswith("num_batches_tracked"):
                assert int(bg[k]) == int(b), f"{where}: {k} {int(bg[k])} vs {int(b)}"
                if isinstance(ref.get_submodule(k.rpartition(".")[0]), nn.modules.batchnorm._BatchNorm):
                    assert int(b) == step + 1, f"{where}: {k}"  # (InstanceNorm does not count)
            else:
                assert_close_or_as_accurate(bg[k], b, bt.get(k), dtype, f"{where}: buffer {k}")
    xs = inputs_for(name, gen, torch.float64)
    outs = []
    for m in models:
        m.eval()
        with torch.no_grad():
            outs.append(m(*[x.to(next(m.parameters()).dtype) if x.is_floating_point() else x for x in xs]))
    assert_close_or_as_accurate(
        outs[0], outs[1], outs[2] if truth is not None else None, dtype, f"{name} {dtype}: eval output after training"
    )


# Mixed precision. Under autocast torch's own result differs from the float32 computation by
# rounding (bf16 keeps 8 significant bits, ~0.4% per rounding, compounded over the layers), and
# normlib rounds at other points than torch's kernels, so no fixed tolerance fits every model.
# The scale is err_torch = max |torch_autocast - fp32|, torch's own error against a float32 run
# of the same model. We allow normlib up to twice that error (it sums in another order: a
# gradient that is ~0, such as that of a conv bias before InstanceNorm, is pure rounding noise,
# measured at 1.3x torch's), so by the triangle inequality
#     |normlib - torch| <= |normlib - fp32| + |fp32 - torch| <= 3 * err_torch,
# plus one unit in the last place of the largest value (eps * max|fp32|), so that a tensor that
# torch happens to get exact does not demand bit-equality.
AUTOCAST = [
    pytest.param("cpu", torch.bfloat16, id="cpu-bf16"),
    pytest.param(
        "cuda",
        torch.float16,
        id="cuda-f16",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available"),
    ),
]


def assert_amp_close(got, ref, fp32, amp_dtype, msg):
    __tracebackhide__ = True
    assert (got is None) == (ref is None), f"{msg}: one is None"
    if ref is None:
        return
    got, ref, fp32 = (t.detach().to("cpu", torch.float64) for t in (got, ref, fp32))
    err_torch = float((ref - fp32).abs().max())
    tol = 3 * err_torch + torch.finfo(amp_dtype).eps * float(fp32.abs().max())
    diff = float((got - ref).abs().max())
    assert diff <= tol, f"{msg}: max |normlib - torch| = {diff:.3g} > {tol:.3g} (torch vs float32: {err_torch:.3g})"


# torch's own RMSNorm (the reference) warns that it cannot use its fused kernel for bf16 input
# with float32 weight; that is torch talking about itself.
@pytest.mark.filterwarnings("ignore:Mismatch dtype between input and weight:UserWarning")
@pytest.mark.parametrize("training", MODES)
@pytest.mark.parametrize("device_type, amp_dtype", AUTOCAST)
@pytest.mark.parametrize("name", ZOO)
def test_autocast(name, device_type, amp_dtype, training):
    """Under autocast the output has torch's dtype, and output, input and parameter gradients
    and running stats are as close to torch's as the mixed-precision rounding allows."""
    gen = make_gen(30)
    ref = build(name, torch.float32).to(device_type)
    got = converted_copy(ref)
    fp32 = copy.deepcopy(ref)
    for m in (got, ref, fp32):
        m.train(training)
    xs = inputs_for(name, gen, torch.float32, device_type)
    with torch.autocast(device_type, dtype=amp_dtype):
        yg, xg = forward(got, xs)
        yr, xr = forward(ref, xs)
    yf, xf = forward(fp32, xs)
    where = f"{name} {device_type} {amp_dtype} {'train' if training else 'eval'}"
    assert yg.dtype == yr.dtype, f"{where}: output dtype {yg.dtype}, torch's {yr.dtype}"
    assert yg.device == yr.device
    assert_amp_close(yg, yr, yf, amp_dtype, f"{where}: output")
    g = torch.randn(yr.shape, generator=gen, dtype=torch.float64)
    grads = [backward(y, x, g) for y, x in ((yg, xg), (yr, xr), (yf, xf))]
    for i, (a, r, f) in enumerate(zip(*grads)):
        assert a.dtype == r.dtype, f"{where}: input {i} grad dtype"
        assert_amp_close(a, r, f, amp_dtype, f"{where}: grad of input {i}")
    pg, pr, pf = (dict(m.named_parameters()) for m in (got, ref, fp32))
    for k in pr:
        assert_amp_close(pg[k].grad, pr[k].grad, pf[k].grad, amp_dtype, f"{where}: grad of {k}")
    bg, br, bf = (dict(m.named_buffers()) for m in (got, ref, fp32))
    for k in br:
        assert bg[k].dtype == br[k].dtype, f"{where}: {k} dtype"
        if k.endswith("num_batches_tracked"):
            assert int(bg[k]) == int(br[k]), f"{where}: {k}"
        else:
            assert_amp_close(bg[k], br[k], bf[k], amp_dtype, f"{where}: buffer {k}")


def memory_format_of(x):
    return torch.channels_last if x.dim() == 4 else torch.channels_last_3d


def layout(t):
    """(contiguous?, channels-last contiguous?) of a tensor."""
    return t.is_contiguous(), t.is_contiguous(memory_format=memory_format_of(t)) if t.dim() in (4, 5) else None


def channels_last_pair(name, whole_model, training):
    gen = make_gen(40)
    ref = build(name, torch.float32)
    xs = inputs_for(name, gen, torch.float32)
    mf = memory_format_of(xs[0])
    xs[0] = xs[0].detach().contiguous(memory_format=mf).requires_grad_()
    assert not xs[0].is_contiguous()  # really a different layout
    if whole_model:
        ref = ref.to(memory_format=mf)
    got = converted_copy(ref)
    got.train(training)
    ref.train(training)
    return got, ref, xs, gen


@pytest.mark.parametrize("whole_model", [False, True], ids=["input", "input+model"])
@pytest.mark.parametrize("training", MODES)
@pytest.mark.parametrize("name", CONV_MODELS)
def test_channels_last(name, training, whole_model):
    """A channels_last input (and model) gives an output in torch's memory format, with torch's
    values and gradients."""
    got, ref, xs, gen = channels_last_pair(name, whole_model, training)
    where = f"{name} channels_last {'model+input' if whole_model else 'input'} {'train' if training else 'eval'}"
    yg, yr = compare_run(got, ref, None, xs, gen, torch.float32, where)
    assert layout(yg) == layout(yr), f"{where}: output layout {layout(yg)}, torch's {layout(yr)} (contiguous, cl)"


@pytest.mark.parametrize("whole_model", [False, True], ids=["input", "input+model"])
@pytest.mark.parametrize("name", CONV_MODELS)
def test_channels_last_each_norm_layer(name, whole_model):
    """Inside a channels_last model, every norm layer's output has torch's memory format (a
    different one would change the layout, and the speed, of everything after it)."""
    got, ref, xs, _ = channels_last_pair(name, whole_model, True)
    seen = {}
    for tag, model in (("got", got), ("ref", ref)):
        for n, m in model.named_modules():
            if type(m) in CONVERSIONS or type(m) in NORMLIB_CLASSES:
                m.register_forward_hook(
                    lambda m, args, out, key=(tag, n): seen.__setitem__(key, (layout(args[0]), layout(out)))
                )
        forward(model, xs)
    names = [n for t, n in seen if t == "ref"]
    assert names and names == [n for t, n in seen if t == "got"]
    diffs = [
        f"{n}: input {seen['got', n][0]} -> {seen['got', n][1]}, torch's -> {seen['ref', n][1]}"
        for n in names
        if seen["got", n] != seen["ref", n]
    ]
    assert not diffs, "layouts (contiguous, channels-last) differ from torch's:\n" + "\n".join(diffs)


@pytest.mark.parametrize("name", ZOO)
def test_round_trip_gives_back_the_torch_model(name):
    """to_torch(convert(model)) has exactly the original module classes, an identical
    state_dict, and bit-identical outputs (train and eval) and buffers."""
    orig = build(name)
    model = copy.deepcopy(orig)
    back = normlib.to_torch(normlib.convert(model))
    assert back is model
    assert [(n, type(m)) for n, m in back.named_modules()] == [(n, type(m)) for n, m in orig.named_modules()]
    assert not any(type(m) in NORMLIB_CLASSES for m in back.modules())
    sd_b, sd_o = back.state_dict(), orig.state_dict()
    assert list(sd_b) == list(sd_o)
    for k in sd_o:
        assert sd_b[k].dtype == sd_o[k].dtype and torch.equal(sd_b[k], sd_o[k]), k
    gen = make_gen(50)
    for training in (True, False):
        back.train(training)
        orig.train(training)
        xs = inputs_for(name, gen, torch.float64)
        (yb, _), (yo, _) = forward(back, xs), forward(orig, xs)
        assert torch.equal(yb, yo), f"{name} {'train' if training else 'eval'}: outputs differ"
        for k, t in orig.state_dict().items():
            assert torch.equal(back.state_dict()[k], t), f"{name}: {k} after the forward"
