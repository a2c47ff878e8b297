"""normlib.convert on models of the Hugging Face ``transformers`` library.

Small models are built from configs with random weights (nothing is downloaded: no weights,
no hub access), converted with ``normlib.convert``, and run next to the unconverted torch.nn
original: outputs, the gradient of every parameter (by name) and of the float inputs for a
fixed random output gradient, and every buffer (running statistics, ``num_batches_tracked``)
must agree, in training mode and in eval mode, in float64 and float32. Dropout, LayerDrop and
SpecAugment masking are switched off in the configs, so that training mode is deterministic.

Models and their norm layers (transformers 5.25):

* ResNet: BatchNorm2d (and a residual ``hidden_state += residual`` right after a BatchNorm);
* BERT, GPT-2: LayerNorm;
* Wav2Vec2 (``feat_extract_norm="group"``): GroupNorm with one group per channel, and LayerNorm;
* MobileViT: BatchNorm2d and LayerNorm.

ConvNeXt uses ``ConvNextLayerNorm``, a subclass of ``nn.LayerNorm`` with a forward of its own:
``normlib.convert`` refuses it by design, and the last test checks that it says so.
"""

import copy
import os
import socket
from collections import Counter

import pytest
import torch
from conftest import TOL, assert_close, assert_grad_close, make_gen, randn, randomize_params
from torch import nn

import normlib
from normlib.convert import CONVERSIONS

pytestmark = pytest.mark.usefixtures("eager_path")  # loops on and off (conftest)

# Never reach the network: no hub look-ups at import, no advisory warnings.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_NO_ADVISORY_WARNINGS"] = "1"
transformers = pytest.importorskip("transformers")

TORCH_NORMS = tuple(CONVERSIONS)  # the exact torch.nn classes that convert maps
NORMLIB_NORMS = tuple(CONVERSIONS.values())


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Building and running the models must not open a connection (weights, configs, hub)."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)


# --------------------------------------------------------------------------- the models

NO_DROPOUT_BERT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def _resnet():
    config = transformers.ResNetConfig(
        num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic"
    )
    return transformers.ResNetModel(config)


def _bert():
    config = transformers.BertConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        **NO_DROPOUT_BERT,
    )
    return transformers.BertModel(config)


def _gpt2():
    config = transformers.GPT2Config(
        vocab_size=64,
        n_embd=16,
        n_layer=2,
        n_head=2,
        n_positions=32,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,  # the defaults (50256) lie outside this tiny vocabulary
        eos_token_id=0,
    )
    return transformers.GPT2Model(config)


def _wav2vec2():
    config = transformers.Wav2Vec2Config(
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(8, 8),
        conv_stride=(5, 2),
        conv_kernel=(10, 3),
        feat_extract_norm="group",  # GroupNorm(8, 8) after the first convolution
        num_conv_pos_embeddings=4,
        num_conv_pos_embedding_groups=2,
        hidden_dropout=0.0,
        activation_dropout=0.0,
        attention_dropout=0.0,
        feat_proj_dropout=0.0,
        final_dropout=0.0,
        layerdrop=0.0,
        apply_spec_augment=False,
        mask_time_prob=0.0,
        mask_feature_prob=0.0,
    )
    return transformers.Wav2Vec2Model(config)


def _mobilevit():
    config = transformers.MobileViTConfig(
        image_size=32,
        hidden_sizes=[16, 16, 16],
        neck_hidden_sizes=[8, 8, 16, 16, 16, 16, 32],
        num_attention_heads=2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return transformers.MobileViTModel(config)


def _images(gen, dtype):
    return {"pixel_values": randn((3, 3, 32, 32), gen, dtype, scale=1.0, shift=0.5).requires_grad_(True)}


def _tokens(gen, dtype, token_types=True):
    ids = torch.randint(0, 64, (3, 7), generator=gen)
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[1, 5:] = 0  # padding in one sequence
    mask[2, 3:] = 0
    inputs = {"input_ids": ids, "attention_mask": mask}
    if token_types:
        inputs["token_type_ids"] = (torch.arange(7) >= 4).long().expand(3, 7)
    return inputs


def _audio(gen, dtype):
    # no input gradient: in training mode Wav2Vec2's feature encoder sets requires_grad on a view
    # of its input, which torch allows only when the input does not require grad already
    return {"input_values": randn((2, 400), gen, dtype, scale=1.0, shift=0.1)}


# name: (builder, inputs(gen, dtype), extra forward kwargs, outputs compared, norm layers expected)
MODELS = {
    "resnet": (_resnet, _images, {}, ["last_hidden_state", "pooler_output"], {"BatchNorm2d": 6}),
    "bert": (_bert, _tokens, {}, ["last_hidden_state", "pooler_output"], {"LayerNorm": 5}),
    "gpt2": (
        _gpt2,
        lambda gen, dtype: _tokens(gen, dtype, token_types=False),
        {"use_cache": False},
        ["last_hidden_state"],
        {"LayerNorm": 5},
    ),
    "wav2vec2": (
        _wav2vec2,
        _audio,
        {},
        ["last_hidden_state", "extract_features"],
        {"GroupNorm": 1, "LayerNorm": 6},
    ),
    "mobilevit": (
        _mobilevit,
        _images,
        {},
        ["last_hidden_state", "pooler_output"],
        {"BatchNorm2d": 32, "LayerNorm": 21},
    ),
}


def build(name, dtype, seed=0):
    """The torch.nn model (seeded init, norm layers given random non-default parameters and
    running statistics) and its normlib-converted deep copy."""
    builder = MODELS[name][0]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        ref = builder()
    gen = make_gen(seed + 1)
    for m in ref.modules():
        if isinstance(m, TORCH_NORMS):
            randomize_params(m, gen)
    ref = ref.to(dtype)
    got = normlib.convert(copy.deepcopy(ref))
    return ref, got


def norm_counts(model, classes):
    return Counter(type(m).__name__ for m in model.modules() if isinstance(m, classes))


# --------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("name", list(MODELS))
def test_convert_replaces_every_norm_layer(name):
    ref, got = build(name, torch.float32)
    expected = MODELS[name][4]
    assert norm_counts(ref, TORCH_NORMS) == expected, "the model's torch norm layers changed (transformers version?)"
    # every torch layer became normlib's layer of the same class name; none is left
    assert norm_counts(got, NORMLIB_NORMS) == expected
    assert sum(expected.values()) > 0
    leftover = [n for n, m in got.named_modules() if isinstance(m, TORCH_NORMS)]
    assert not leftover, f"torch norm layers left after convert: {leftover}"
    assert all(type(m).__module__.startswith("normlib.") for m in got.modules() if isinstance(m, NORMLIB_NORMS))
    # same state_dict keys, values and dtypes: a Hugging Face checkpoint loads as before
    sd_ref, sd_got = ref.state_dict(), got.state_dict()
    assert list(sd_got) == list(sd_ref)
    for k in sd_ref:
        assert sd_got[k].dtype == sd_ref[k].dtype, k
        assert torch.equal(sd_got[k], sd_ref[k]), k


def assert_output_close(got, ref, truth, dtype, msg):
    """Close to torch's output within TOL, or, when a float64 truth is given, at most 4x torch's
    own error against it (plus TOL's atol as a rounding floor): the same rule as conftest's
    assert_grad_close applies to gradients. Needed for MobileViT in float32 training mode: its
    last BatchNorm sees 3 values per channel (batch 3, 1x1 spatial), so its output is
    ill-conditioned and torch's own float32 output is ~4e-5 off the float64 one (measured),
    normlib's equally far, in the other direction."""
    __tracebackhide__ = True
    atol, rtol = TOL[dtype]
    g, r = got.detach().double(), ref.detach().double()
    if truth is None or torch.allclose(g, r, atol=atol, rtol=rtol):
        assert_close(got, ref, dtype=dtype, msg=msg)
        return
    t = truth.detach().double()
    err_got, err_ref = float((g - t).abs().max()), float((r - t).abs().max())
    assert err_got <= max(4 * err_ref, atol), (
        f"{msg}: normlib's error vs float64 {err_got:.3g} exceeds 4x torch's {err_ref:.3g}"
    )


def _forward(model, inputs, kwargs, keys, training):
    model.train(training)
    out = model(**inputs, **kwargs)
    return {k: out[k] for k in keys}


def _backward(ys, grads):
    sum((y * grads[k].to(y.dtype)).sum() for k, y in ys.items()).backward()


def _clone_inputs(inputs, dtype):
    return {
        k: v.detach().to(dtype).requires_grad_(v.requires_grad) if v.is_floating_point() else v.clone()
        for k, v in inputs.items()
    }


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name", list(MODELS))
def test_converted_model_matches_torch(name, dtype):
    """Outputs, gradients (every parameter, float inputs) and buffers of the converted model equal
    torch's, over two training steps and one eval step."""
    ref, got = build(name, dtype)
    _, make_inputs, kwargs, keys, _ = MODELS[name]
    # float32: also run a float64 copy of the torch model, the "truth" that assert_grad_close
    # falls back on when torch's and normlib's float32 rounding differ (see conftest).
    truth = copy.deepcopy(ref).double() if dtype != torch.float64 else None
    gen = make_gen(100)
    training_steps = 0
    for step, training in enumerate([True, True, False]):
        where = f"{name} {dtype} step {step} ({'train' if training else 'eval'})"
        training_steps += training
        inputs = make_inputs(gen, dtype)
        xr, xg = _clone_inputs(inputs, dtype), _clone_inputs(inputs, dtype)
        yr = _forward(ref, xr, kwargs, keys, training)
        yg = _forward(got, xg, kwargs, keys, training)
        if truth is not None:
            xt = _clone_inputs(inputs, torch.float64)
            yt = _forward(truth, xt, kwargs, keys, training)
        for k in keys:
            assert yg[k].dtype == dtype and yg[k].shape == yr[k].shape, f"{where}: {k}"
            assert_output_close(yg[k], yr[k], yt[k] if truth is not None else None, dtype, msg=f"{where}: output {k}")

        # one fixed random gradient per output, in eval mode too
        out_grads = {k: torch.randn(yr[k].shape, generator=gen, dtype=torch.float64) for k in keys}
        _backward(yr, out_grads)
        _backward(yg, out_grads)
        truth_grads = {}
        if truth is not None:
            _backward(yt, out_grads)
            truth_grads = {f"input {k}": v.grad for k, v in xt.items() if v.requires_grad}
            truth_grads |= {k: p.grad for k, p in truth.named_parameters()}
        pairs = [(f"input {k}", xg[k].grad, xr[k].grad) for k in xr if xr[k].requires_grad]
        pg, pr = dict(got.named_parameters()), dict(ref.named_parameters())
        assert list(pg) == list(pr), f"{where}: parameter names differ"
        pairs += [(k, pg[k].grad, pr[k].grad) for k in pr]
        assert sum(r is not None for _, _, r in pairs) > len(pairs) // 2, f"{where}: most gradients are None"
        for k, a, r in pairs:
            assert_grad_close(a, r, truth_grads.get(k), dtype, msg=f"{where}: grad of {k}")

        sg, sr = got.state_dict(), ref.state_dict()
        assert list(sg) == list(sr), f"{where}: state_dict keys differ"
        for k in sr:
            if k.endswith("num_batches_tracked"):
                assert int(sg[k]) == int(sr[k]) == training_steps, f"{where}: {k} {int(sg[k])} vs {int(sr[k])}"
            elif sr[k].is_floating_point():
                assert_close(sg[k], sr[k], dtype=dtype, msg=f"{where}: buffer/param {k}")
            else:
                assert torch.equal(sg[k], sr[k]), f"{where}: {k}"
        for model in (ref, got) + ((truth,) if truth is not None else ()):
            model.zero_grad(set_to_none=True)


def test_convnext_layer_norm_subclass_is_refused():
    """ConvNextLayerNorm subclasses nn.LayerNorm (channels-first data_format, its own forward):
    convert must refuse it with a message that names the class and its torch parent."""
    config = transformers.ConvNextConfig(num_channels=3, hidden_sizes=[8, 16], depths=[1, 1], num_stages=2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = transformers.ConvNextModel(config)
    subclass = transformers.models.convnext.modeling_convnext.ConvNextLayerNorm
    assert issubclass(subclass, nn.LayerNorm) and subclass is not nn.LayerNorm
    assert any(type(m) is subclass for m in model.modules())
    with pytest.raises(TypeError) as err:
        normlib.convert(model)
    message = str(err.value)
    assert "normlib.convert: cannot map transformers.models.convnext.modeling_convnext.ConvNextLayerNorm" in message
    assert "a subclass of LayerNorm that may change its behaviour" in message
