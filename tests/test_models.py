"""normlib.lab.models: builders whose normalization is chosen by name."""

import copy

import pytest
import torch
from conftest import TOL, assert_close, assert_grad_close, compare_modules, make_gen
from torch import nn

import normlib
from normlib.lab import models


@pytest.mark.parametrize(
    "norm, layer_type",
    [
        ("none", nn.Identity),
        ("bn", normlib.BatchNorm1d),
        ("ln", normlib.LayerNorm),
        ("gn", normlib.GroupNorm),
        ("rms", normlib.RMSNorm),
    ],
)
def test_mlp_layers_names_and_output(norm, layer_type):
    net = models.mlp(64, 10, hidden=(32, 16), norm=norm, activation="tanh")
    names = [name for name, _ in net.named_children()]
    assert names == ["linear1", "norm1", "act1", "linear2", "norm2", "act2", "head"]
    assert isinstance(net.norm1, layer_type) and isinstance(net.act1, nn.Tanh)
    assert net(torch.randn(5, 64)).shape == (5, 10)
    assert len(models.norm_layers(net)) == (0 if norm == "none" else 2)


def test_mlp_norm_after_activation_bias_and_custom_norm():
    net = models.mlp(8, 3, hidden=(4,), norm="bn", norm_position="after", bias=False)
    assert [n for n, _ in net.named_children()] == ["linear1", "act1", "norm1", "head"]
    assert net.linear1.bias is None and net.head.bias is not None
    custom = models.mlp(8, 3, hidden=(4, 6), norm=lambda width: nn.LayerNorm(width, elementwise_affine=False))
    assert isinstance(custom.norm2, nn.LayerNorm) and custom.norm2.normalized_shape == (6,)
    assert list(models.norm_layers(custom)) == ["norm1", "norm2"]  # torch's layers are found too


@torch.no_grad()
def test_mlp_init_options():
    torch.manual_seed(0)
    net = models.mlp(400, 10, hidden=(400,), init=0.05)
    assert abs(float(net.linear1.weight.std()) - 0.05) < 0.002 and float(net.linear1.bias.abs().max()) == 0
    he = models.mlp(400, 10, hidden=(400,), init="he")
    assert abs(float(he.linear1.weight.std()) - (2 / 400) ** 0.5) < 0.003
    xavier = models.mlp(400, 10, hidden=(400,), activation="tanh", init="xavier")
    expected = 5 / 3 * (2 / 800) ** 0.5  # tanh gain 5/3, fan_in + fan_out = 800
    assert abs(float(xavier.linear1.weight.std()) - expected) < 0.003
    for bad in ("uniform", -1.0, True):
        with pytest.raises(ValueError, match="init must be"):
            models.mlp(4, 2, hidden=(3,), init=bad)


def test_mlp_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown activation"):
        models.mlp(4, 2, activation="swish")
    with pytest.raises(ValueError, match="norm_position"):
        models.mlp(4, 2, norm_position="inside")
    with pytest.raises(ValueError, match="unknown normalization"):
        models.mlp(4, 2, norm="batchnorm2")
    with pytest.raises(ValueError, match="'in' needs spatial dims"):
        models.mlp(4, 2, norm="in")
    with pytest.raises(ValueError, match="at least one hidden layer"):
        models.mlp(4, 2, hidden=())


@pytest.mark.parametrize(
    "norm, layer_type",
    [
        ("none", nn.Identity),
        ("bn", normlib.BatchNorm2d),
        ("ln", normlib.GroupNorm),
        ("gn", normlib.GroupNorm),
        ("in", normlib.InstanceNorm2d),
    ],
)
def test_cnn_layers_and_output(norm, layer_type):
    net = models.cnn(1, 10, channels=(8, 16), norm=norm)
    assert isinstance(net.norm1, layer_type) and isinstance(net.norm2, layer_type)
    assert net(torch.randn(3, 1, 8, 8)).shape == (3, 10)
    if norm == "ln":
        assert net.norm1.num_groups == 1
    if norm == "in":
        assert net.norm1.affine  # learned gamma/beta, unlike PyTorch's default
    names = [n for n, _ in net.named_children()]
    assert names == ["conv1", "norm1", "act1", "pool1", "conv2", "norm2", "act2", "pool2", "gap", "flatten", "head"]


def test_cnn_feature_map_sizes_and_groups():
    net = models.cnn(1, 4, channels=(8, 8, 8), norm="gn", num_groups=4)
    assert net.norm3.num_groups == 4
    sizes = {}
    hooks = [
        getattr(net, f"norm{i}").register_forward_hook(lambda m, i, o, k=i: sizes.__setitem__(k, tuple(o.shape[2:])))
        for i in (1, 2, 3)
    ]
    net(torch.randn(2, 1, 8, 8))
    for h in hooks:
        h.remove()
    assert sizes == {1: (8, 8), 2: (4, 4), 3: (2, 2)}  # each stage is pooled after its norm
    unpooled = models.cnn(1, 4, channels=(8,), pool=False, bias=False)
    assert "pool1" not in dict(unpooled.named_children()) and unpooled.conv1.bias is None


def test_same_seed_same_weights_whatever_the_norm():
    """Norm layers draw no random numbers, so seeded builders differ only in their norms."""
    nets = {}
    for norm in ("none", "bn", "ln", "gn"):
        normlib.seed(0)
        nets[norm] = models.mlp(16, 4, hidden=(8, 8), norm=norm)
    for norm in ("bn", "ln", "gn"):
        for name in ("linear1", "linear2", "head"):
            assert torch.equal(getattr(nets[norm], name).weight, getattr(nets["none"], name).weight)


# --------------------------------------------------------------------------- a real architecture (chapter 5)


def _resnet_norms(model):
    return list(models.norm_layers(model).values())


def test_tiny_resnet_shapes_names_and_torch_layers_only():
    normlib.seed(0)
    net = models.tiny_resnet()
    assert net(torch.randn(5, 1, 8, 8)).shape == (5, 10)  # the digits' images
    stages = [n for n, _ in net.named_children()]
    assert stages == ["conv1", "bn1", "relu", "layer1", "layer2", "avgpool", "fc"]
    assert net.layer1[0].downsample is None  # same channels, same resolution
    down = net.layer2[0].downsample
    assert isinstance(down[0], nn.Conv2d) and down[0].kernel_size == (1, 1) and down[0].stride == (2, 2)
    norms = _resnet_norms(net)
    assert len(norms) == 6 and all(type(m) is nn.BatchNorm2d for m in norms)  # torch's, not normlib's
    containers = (models.TinyResNet, models.BasicBlock)
    assert all(type(m).__module__.startswith("torch.nn") for m in net.modules() if not isinstance(m, containers))
    # widths and resolutions per stage; more blocks per stage
    sizes = {}
    deep = models.tiny_resnet(3, 4, width=4, blocks=(2, 1, 1))
    for name in ("layer1", "layer2", "layer3"):
        getattr(deep, name).register_forward_hook(lambda m, i, o, k=name: sizes.__setitem__(k, tuple(o.shape[1:])))
    assert deep(torch.randn(2, 3, 8, 8)).shape == (2, 4)
    assert sizes == {"layer1": (4, 8, 8), "layer2": (8, 4, 4), "layer3": (16, 2, 2)}
    assert len(deep.layer1) == 2 and len(_resnet_norms(deep)) == 1 + 4 + 3 + 3
    for bad in ((), (1, 0)):
        with pytest.raises(ValueError, match="blocks"):
            models.tiny_resnet(blocks=bad)


def test_tiny_resnet_seeded_and_initialized_like_torchvision():
    normlib.seed(3)
    a = models.tiny_resnet()
    normlib.seed(3)
    b = models.tiny_resnet()
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    w = a.layer2[0].conv2.weight.detach()  # He normal, fan_out = 16 * 3 * 3
    assert abs(float(w.std()) - (2 / (16 * 9)) ** 0.5) < 0.02
    assert all(torch.equal(m.weight, torch.ones_like(m.weight)) for m in _resnet_norms(a))


def test_tiny_resnet_runs_in_place_ops_on_batchnorm_outputs():
    """What makes it a real test of convert: ReLU(inplace=True) and ``out += identity`` write into
    a BatchNorm layer's output tensor (its version counter moves, the block returns its storage)."""
    normlib.seed(0)
    net = models.tiny_resnet()
    blocks = [m for m in net.modules() if isinstance(m, models.BasicBlock)]
    assert len(blocks) == 2
    assert all(isinstance(b.relu, nn.ReLU) and b.relu.inplace for b in blocks) and net.relu.inplace
    for model in (net, normlib.convert(copy.deepcopy(net))):
        outputs = {}
        for name, m in model.named_modules():
            if name.endswith(("bn1", "bn2")):
                m.register_forward_hook(lambda m, i, o, k=name: outputs.__setitem__(k, (o, o._version)))
        block_out = {}
        for name, m in model.named_modules():
            if isinstance(m, models.BasicBlock):
                m.register_forward_hook(lambda m, i, o, k=name: block_out.__setitem__(k, o))
        model(torch.randn(4, 1, 8, 8)).sum().backward()
        assert len(outputs) == 5 and len(block_out) == 2
        for name, (out, version) in outputs.items():
            assert out._version > version, f"{name}: nothing wrote into the BatchNorm output in place"
        for name, out in block_out.items():  # relu_(bn2(...) += identity) returns bn2's own tensor
            assert out.data_ptr() == outputs[f"{name}.bn2"][0].data_ptr()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_tiny_resnet_convert_matches_torch_in_train_and_eval(dtype):
    normlib.seed(0)
    ref = models.tiny_resnet().to(dtype)
    ours = normlib.convert(copy.deepcopy(ref))
    norms = _resnet_norms(ours)
    assert len(norms) == 6 and all(type(m) is normlib.BatchNorm2d for m in norms)
    assert not any(type(m) is nn.BatchNorm2d for m in ours.modules())
    gen = make_gen(0)
    opts = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (ref, ours)]
    for step in range(3):  # training mode: batch statistics, running averages, gradients
        x = torch.randn(16, 1, 8, 8, generator=gen, dtype=torch.float64).to(dtype) * 2 + 0.5
        y = torch.randint(0, 10, (16,), generator=gen)
        results = []
        for model, opt in zip((ref, ours), opts):
            opt.zero_grad()
            out = model(x)
            nn.functional.cross_entropy(out, y).backward()
            results.append((out, {k: p.grad.clone() for k, p in model.named_parameters()}))
            opt.step()
        (out_ref, g_ref), (out, g) = results
        assert_close(out, out_ref, tol=TOL[dtype] if dtype == torch.float64 else (1e-4, 1e-4), msg=f"step {step}")
        for k in g_ref:
            assert_grad_close(g[k], g_ref[k], None, dtype, msg=f"step {step}: {k}.grad")
    compare_modules(ours, ref, dtype=dtype, msg="after training")
    ref.eval(), ours.eval()
    x = torch.randn(8, 1, 8, 8, generator=gen, dtype=torch.float64).to(dtype)
    with torch.no_grad():
        assert_close(ours(x), ref(x), tol=TOL[dtype] if dtype == torch.float64 else (1e-4, 1e-4), msg="eval()")
    back = normlib.to_torch(ours)
    assert all(type(m) is nn.BatchNorm2d for m in _resnet_norms(back))
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), ours.state_dict().values()))


# --------------------------------------------------------------------------- sequences (chapter 6)


def test_char_lstm_shapes_layer_norm_switch_and_generation():
    normlib.seed(0)
    with_ln = models.char_lstm(11, 8, embedding_dim=5)
    normlib.seed(0)
    without = models.char_lstm(11, 8, embedding_dim=5, layer_norm=False)
    assert isinstance(with_ln.rnn, normlib.LayerNormLSTM) and with_ln.rnn.batch_first
    assert with_ln.rnn.cells[0].norm_ih is not None and without.rnn.cells[0].norm_ih is None
    # same seed: the same weights apart from the LayerNorm gains and shifts
    shared = {k: v for k, v in with_ln.state_dict().items() if ".norm_" not in k}
    assert shared.keys() == without.state_dict().keys()
    assert all(torch.equal(v, without.state_dict()[k]) for k, v in shared.items())
    tokens = torch.randint(0, 11, (3, 7))
    logits = with_ln(tokens)
    assert logits.shape == (3, 11, 7)  # classes in dim 1, as cross_entropy takes them
    step_logits, (h, c) = with_ln.logits_and_state(tokens)
    assert torch.equal(step_logits.transpose(1, 2), logits) and h.shape == c.shape == (1, 3, 8)
    # generation: a batch of one, step by step, equals running the whole sequence at once
    g = torch.Generator().manual_seed(0)
    ids = with_ln.generate(torch.tensor([1, 2, 3]), 6, generator=g)
    assert ids.shape == (9,) and ids[:3].tolist() == [1, 2, 3]
    greedy = with_ln.generate(torch.tensor([4]), 5, temperature=0)
    with torch.no_grad():
        full = with_ln(greedy[None])[0].argmax(0)
    assert torch.equal(full[:-1], greedy[1:])
    with pytest.raises(ValueError, match=r"\(N, T\)"):
        with_ln(torch.randint(0, 11, (7,)))
    with pytest.raises(ValueError, match="prompt"):
        with_ln.generate(torch.tensor([], dtype=torch.int64), 3)
