"""Small models whose normalization is chosen by name, so an experiment can sweep it.

``mlp(64, 10, norm="bn")`` and ``mlp(64, 10, norm="ln")`` differ only in their
normalization layers, which come from :func:`normlib.make_norm`. Every layer has a name
(``linear1``, ``norm1``, ``act1``, ..., ``head``), so hooks and reports can address it.
``norm="none"`` keeps an ``nn.Identity`` in the norm slots, so the names stay the same.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from ..batchnorm import _NormBase
from ..factory import make_norm
from ..normalization import GroupNorm, LayerNorm, RMSNorm
from ..recurrent import LayerNormLSTM

__all__ = [
    "mlp",
    "cnn",
    "norm_layers",
    "make_activation",
    "ACTIVATIONS",
    "NoisyNorm",
    "BasicBlock",
    "TinyResNet",
    "tiny_resnet",
    "CharLSTM",
    "char_lstm",
]

NormSpec = Union[str, Callable[[int], nn.Module]]

#: Activation name -> ``torch.nn`` class, for :func:`make_activation`.
#:
#: :meta hide-value:
ACTIVATIONS = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "identity": nn.Identity,
}

# torch's and normlib's normalization layers (torch's BN and IN share _NormBase, as ours do).
_NORM_TYPES = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.RMSNorm,
    _NormBase,
    LayerNorm,
    GroupNorm,
    RMSNorm,
)


def make_activation(name: str) -> nn.Module:
    """``"relu"``, ``"sigmoid"``, ``"tanh"`` or ``"identity"`` as a module."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; expected one of {', '.join(ACTIVATIONS)}") from None


def _norm(norm: NormSpec, width: int, spatial_dims: int, num_groups: Optional[int]) -> nn.Module:
    if callable(norm):
        return norm(width)
    if not isinstance(norm, str):
        raise TypeError(f"norm must be a name such as 'bn' or a callable width -> module, got {norm!r}")
    return make_norm(norm, width, spatial_dims=spatial_dims, num_groups=num_groups)


def _initialize(model: nn.Module, init, nonlinearity: str) -> None:
    """He / Xavier / N(0, std) weights and zero biases for every Linear and Conv layer."""
    if init is None:
        return
    gain_name = nonlinearity if nonlinearity in ("relu", "tanh", "sigmoid") else "linear"
    for module in model.modules():
        if not isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            continue
        if init == "he":
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        elif init == "xavier":
            nn.init.xavier_normal_(module.weight, gain=nn.init.calculate_gain(gain_name))
        elif isinstance(init, (int, float)) and not isinstance(init, bool) and init > 0:
            nn.init.normal_(module.weight, mean=0.0, std=float(init))
        else:
            raise ValueError(f"init must be None, 'he', 'xavier' or a positive standard deviation, got {init!r}")
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def mlp(
    in_features: int,
    num_classes: int,
    hidden: Sequence[int] = (100, 100, 100),
    *,
    norm: NormSpec = "none",
    activation: str = "relu",
    norm_position: str = "before",
    bias: bool = True,
    init=None,
    num_groups: Optional[int] = None,
) -> nn.Sequential:
    """A multilayer perceptron for (N, in_features) inputs.

    Each hidden layer is ``linear{i} -> norm{i} -> act{i}`` (``norm_position="before"`` the
    activation, as in the BatchNorm paper) or ``linear{i} -> act{i} -> norm{i}``
    (``"after"``), then a ``head`` Linear gives the logits.

    - ``norm``: ``"none"``, ``"bn"``, ``"ln"``, ``"gn"`` (``num_groups``), ``"rms"``, or a
      callable ``width -> nn.Module`` for a custom layer.
    - ``activation``: ``"relu"``, ``"sigmoid"``, ``"tanh"`` or ``"identity"``.
    - ``bias``: whether the hidden Linear layers have a bias (the head always has one).
    - ``init``: ``None`` (PyTorch's default), ``"he"``, ``"xavier"``, or a float: the standard
      deviation of N(0, std) weights. He/Xavier/float also zero every bias.
    """
    if norm_position not in ("before", "after"):
        raise ValueError(f"norm_position must be 'before' or 'after' the activation, got {norm_position!r}")
    if not hidden:
        raise ValueError("mlp needs at least one hidden layer (hidden=() would have nothing to normalize)")
    layers = OrderedDict()
    width_in = in_features
    for i, width in enumerate(hidden, start=1):
        layers[f"linear{i}"] = nn.Linear(width_in, width, bias=bias)
        norm_layer, act = _norm(norm, width, 0, num_groups), make_activation(activation)
        if norm_position == "before":
            layers[f"norm{i}"], layers[f"act{i}"] = norm_layer, act
        else:
            layers[f"act{i}"], layers[f"norm{i}"] = act, norm_layer
        width_in = width
    layers["head"] = nn.Linear(width_in, num_classes)
    model = nn.Sequential(layers)
    _initialize(model, init, activation)
    return model


def cnn(
    in_channels: int,
    num_classes: int,
    channels: Sequence[int] = (16, 32),
    *,
    norm: NormSpec = "bn",
    num_groups: Optional[int] = None,
    activation: str = "relu",
    pool: bool = True,
    bias: bool = True,
    init=None,
) -> nn.Sequential:
    """A small convolutional network for (N, C, H, W) images.

    Each stage is ``conv{i}`` (3 x 3, padding 1) ``-> norm{i} -> act{i}``, followed by a 2 x 2
    max-pool ``pool{i}`` when ``pool`` is true (a 8 x 8 input is 4 x 4 after stage 1, 2 x 2
    after stage 2, 1 x 1 after stage 3). A global average pool and a ``head`` Linear follow.

    ``norm``: ``"none"``, ``"bn"`` (BatchNorm2d), ``"ln"`` (GroupNorm(1, C): LayerNorm over
    (C, H, W) with per-channel gamma/beta, as in the GroupNorm paper), ``"gn"``
    (``num_groups``, default :func:`normlib.default_num_groups`), ``"in"`` (InstanceNorm2d
    with affine gamma/beta), or a callable ``channels -> nn.Module``.
    """
    if not channels:
        raise ValueError("cnn needs at least one convolutional stage")
    layers = OrderedDict()
    width_in = in_channels
    for i, width in enumerate(channels, start=1):
        layers[f"conv{i}"] = nn.Conv2d(width_in, width, kernel_size=3, padding=1, bias=bias)
        layers[f"norm{i}"] = _norm(norm, width, 2, num_groups)
        layers[f"act{i}"] = make_activation(activation)
        if pool:
            layers[f"pool{i}"] = nn.MaxPool2d(2)
        width_in = width
    layers["gap"] = nn.AdaptiveAvgPool2d(1)
    layers["flatten"] = nn.Flatten()
    layers["head"] = nn.Linear(width_in, num_classes)
    model = nn.Sequential(layers)
    _initialize(model, init, activation)
    return model


def norm_layers(model: nn.Module) -> Dict[str, nn.Module]:
    """The normalization layers of ``model`` (torch's or normlib's), by name, in order."""
    return {name: module for name, module in model.named_modules() if isinstance(module, _NORM_TYPES)}


# --------------------------------------------------------------------------- noisy normalization (chapter 3)


class NoisyNorm(nn.Module):
    """A normalization layer whose output, in training mode, is moved by fresh random noise at
    every forward pass: the "noisy BatchNorm" of Santurkar et al. (2018), in one simple form.

    ``NoisyNorm(BatchNorm1d(C))`` computes ``y = norm(x)`` and then, in training mode::

        out[:, c, ...] = a_c * y[:, c, ...] + b_c,
        a_c ~ U(scale),  b_c ~ U(shift),

    drawn anew for every channel at every forward pass (one draw per channel, shared by the
    whole batch). Every unit's distribution therefore gets a new, random mean and spread at
    every step: a large, deliberate "internal covariate shift" placed right after the
    normalization. In eval mode the noise is replaced by its expectation,
    ``out = E[a] * y + E[b]`` (the identity for the default ranges, whose means are 1 and 0),
    so training and inference see the same average.

    ``scale`` and ``shift`` are ``(low, high)`` ranges (``0 <= low <= high`` for the scale);
    ``generator`` is an optional ``torch.Generator`` on the input's device (default: torch's
    global generator, which :func:`normlib.seed` seeds). The last draw is kept in
    ``last_scale`` and ``last_shift`` (None before the first training-mode call).
    """

    def __init__(
        self,
        norm: nn.Module,
        scale: Tuple[float, float] = (0.25, 1.75),
        shift: Tuple[float, float] = (-1.0, 1.0),
        generator: Optional[torch.Generator] = None,
    ) -> None:
        super().__init__()
        scale, shift = tuple(float(v) for v in scale), tuple(float(v) for v in shift)
        if len(scale) != 2 or not 0 <= scale[0] <= scale[1]:
            raise ValueError(f"NoisyNorm: scale must be a range (low, high) with 0 <= low <= high, got {scale}")
        if len(shift) != 2 or not shift[0] <= shift[1]:
            raise ValueError(f"NoisyNorm: shift must be a range (low, high) with low <= high, got {shift}")
        self.norm = norm
        self.scale, self.shift = scale, shift
        self.generator = generator
        self.last_scale: Optional[Tensor] = None
        self.last_shift: Optional[Tensor] = None

    def _uniform(self, bounds, count: int, like: Tensor) -> Tensor:
        low, high = bounds
        device = self.generator.device if self.generator is not None else like.device
        u = torch.rand(count, generator=self.generator, device=device)
        return (low + (high - low) * u).to(device=like.device, dtype=like.dtype)

    def forward(self, input: Tensor) -> Tensor:
        y = self.norm(input)
        if y.dim() < 2:
            raise ValueError(f"NoisyNorm: expected an input of shape (N, C, *), got {y.dim()}D output from the norm")
        shape = (1, -1) + (1,) * (y.dim() - 2)  # broadcast one value per channel (dim 1)
        if self.training:
            channels = y.shape[1]
            self.last_scale = self._uniform(self.scale, channels, y)
            self.last_shift = self._uniform(self.shift, channels, y)
            return y * self.last_scale.reshape(shape) + self.last_shift.reshape(shape)
        mean_scale, mean_shift = sum(self.scale) / 2, sum(self.shift) / 2
        return y * mean_scale + mean_shift

    def extra_repr(self) -> str:
        return f"scale=U{self.scale}, shift=U{self.shift}"


# --------------------------------------------------------------------------- a real architecture (chapter 5)


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """The residual block of ResNet-18/34 (He et al. 2016), in torchvision's layout and names.

    ``conv1`` (3 x 3, ``stride``) ``-> bn1 -> relu -> conv2`` (3 x 3) ``-> bn2``, then
    ``out += identity`` and ``relu`` again. ``identity`` is the input, or ``downsample(input)``
    (a 1 x 1 convolution with ``stride`` and a BatchNorm2d) when the block changes the number
    of channels or the resolution. Built only from ``torch.nn`` layers, with the two in-place
    operations real CNNs use after a BatchNorm: ``ReLU(inplace=True)`` (one module, applied
    twice, as in torchvision) and the in-place residual add on ``bn2``'s output.
    """

    expansion = 1

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample: Optional[nn.Module] = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity  # in place, on bn2's output
        return self.relu(out)


class TinyResNet(nn.Module):
    """A ResNet for small images; see :func:`tiny_resnet`."""

    def __init__(self, in_channels: int, num_classes: int, width: int, blocks: Sequence[int]) -> None:
        super().__init__()
        # Stem: a 3 x 3 convolution with stride 1 and no max-pool (torchvision's 7 x 7, stride 2
        # and max-pool would leave a 2 x 2 map of an 8 x 8 digit).
        self.conv1 = _conv3x3(in_channels, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        channels = width
        for i, count in enumerate(blocks, start=1):
            out_channels, stride = width * 2 ** (i - 1), 1 if i == 1 else 2
            stage = [BasicBlock(channels, out_channels, stride)]
            stage += [BasicBlock(out_channels, out_channels) for _ in range(count - 1)]
            self.add_module(f"layer{i}", nn.Sequential(*stage))
            channels = out_channels
        self.num_stages = len(blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        for i in range(1, self.num_stages + 1):
            x = getattr(self, f"layer{i}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def tiny_resnet(
    in_channels: int = 1, num_classes: int = 10, *, width: int = 8, blocks: Sequence[int] = (1, 1)
) -> TinyResNet:
    """A torchvision-style ResNet with :class:`BasicBlock` stages, built from ``torch.nn`` only.

    ``conv1 -> bn1 -> relu`` (the stem, ``width`` channels, full resolution), then one stage
    ``layer{i}`` per entry of ``blocks`` with that many blocks: stage 1 keeps ``width``
    channels, every later stage doubles the channels and halves the resolution (its first
    block has a ``downsample``). ``avgpool`` (global average) and a ``fc`` Linear give the
    logits. With the defaults an (N, 1, 8, 8) digit gives 8 x 8 maps in ``layer1`` and
    4 x 4 maps with 16 channels in ``layer2``; the model has six BatchNorm2d layers.

    Initialization as in torchvision: He-normal convolution weights (``fan_out``), BatchNorm
    gamma 1 and beta 0, PyTorch's default Linear. The weights are drawn from torch's global
    generator, as in :func:`mlp` and :func:`cnn`: call :func:`normlib.seed` first for a
    reproducible model. The norm layers are ``torch.nn``'s on purpose, so that
    :func:`normlib.convert` has a real architecture to convert, in-place ReLU and residual
    add included.
    """
    if not blocks or any(int(b) < 1 for b in blocks):
        raise ValueError(f"tiny_resnet: blocks must be a non-empty sequence of positive counts, got {blocks!r}")
    model = TinyResNet(in_channels, num_classes, width, [int(b) for b in blocks])
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    return model


# --------------------------------------------------------------------------- sequences (chapter 6)


class CharLSTM(nn.Module):
    """A character-level language model: ``embedding -> rnn -> head``.

    ``rnn`` is a :class:`normlib.LayerNormLSTM` (``batch_first``) with or without LayerNorm,
    so two models that differ only in ``layer_norm`` have the same parameters otherwise.
    ``forward(tokens)`` maps ``(N, T)`` character ids to logits of shape
    ``(N, vocab_size, T)`` -- classes in dim 1, the layout ``F.cross_entropy`` takes for
    targets of shape ``(N, T)`` -- so :func:`normlib.lab.train.fit` trains it on a
    :class:`normlib.lab.data.TextDataset` unchanged. :meth:`generate` samples one sequence,
    one character at a time (a batch of one).
    """

    def __init__(
        self,
        vocab_size: int,
        hidden_size: int = 64,
        embedding_dim: int = 32,
        num_layers: int = 1,
        layer_norm: bool = True,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.rnn = LayerNormLSTM(embedding_dim, hidden_size, num_layers, batch_first=True, layer_norm=layer_norm)
        self.head = nn.Linear(hidden_size, vocab_size)

    def forward(self, tokens, state=None, lengths=None):
        return self.logits_and_state(tokens, state, lengths)[0].transpose(1, 2)

    def logits_and_state(self, tokens, state=None, lengths=None):
        """``(logits (N, T, vocab_size), (h_n, c_n))`` for ``(N, T)`` tokens."""
        if tokens.dim() != 2:
            raise ValueError(f"CharLSTM expects (N, T) character ids, got shape {tuple(tokens.shape)}")
        output, state = self.rnn(self.embedding(tokens), state, lengths=lengths)
        return self.head(output), state

    @torch.no_grad()
    def generate(self, prompt, length: int, temperature: float = 1.0, generator=None):
        """``prompt`` (1-D ids) followed by ``length`` sampled ids, as a 1-D int64 tensor.

        Runs the network on a batch of one sequence: the prompt first, then one character
        per step, each sampled from ``softmax(logits / temperature)`` (``temperature=0``:
        the most likely character). The model's mode is left as it is.
        """
        prompt = torch.as_tensor(prompt, dtype=torch.int64, device=self.head.weight.device)
        if prompt.dim() != 1 or prompt.numel() == 0:
            raise ValueError("generate: the prompt must be a non-empty 1-D sequence of ids")
        logits, state = self.logits_and_state(prompt[None])
        ids = [int(i) for i in prompt]
        for _ in range(length):
            last = logits[0, -1]
            if temperature == 0:
                nxt = int(last.argmax())
            else:
                probs = torch.softmax(last.double() / temperature, dim=-1).cpu()
                nxt = int(torch.multinomial(probs, 1, generator=generator))
            ids.append(nxt)
            logits, state = self.logits_and_state(torch.tensor([[nxt]], device=prompt.device), state)
        return torch.tensor(ids, dtype=torch.int64)


def char_lstm(
    vocab_size: int, hidden_size: int = 64, *, embedding_dim: int = 32, num_layers: int = 1, layer_norm: bool = True
) -> CharLSTM:
    """A :class:`CharLSTM`; ``layer_norm=False`` gives the same network with torch's plain LSTM cell."""
    return CharLSTM(vocab_size, hidden_size, embedding_dim, num_layers, layer_norm)
