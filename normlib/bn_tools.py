"""Tools for BatchNorm in practice: fold it away, recompute its statistics, find its bugs.

* :func:`~normlib.fold_bn` -- an inference copy of a model with every foldable conv/linear + BN pair
  merged into one layer (BN folding), and a report of the BN layers it had to leave.
* :func:`~normlib.recompute_bn_stats` -- "precise BN": replace the running statistics by the exact
  statistics of the layers' inputs over the batches given (Wu & Johnson, 2021).
* :func:`~normlib.diagnose` -- the BatchNorm "doctor": one forward pass over a batch, and a report
  of the classic BatchNorm bugs it finds, each with its fix in one line.

All three work on any ``torch.nn.Module`` and recognise both ``torch.nn.BatchNorm1d/2d/3d``
(and ``SyncBatchNorm``) and ``normlib.BatchNorm1d/2d/3d``. Which layer feeds which BN is
read from a ``torch.fx`` trace of the model when it can be traced (the reliable way), and
otherwise from the order of the children of each container (exact for ``nn.Sequential``).
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from . import batchnorm as _normlib_batchnorm

__all__ = [
    "is_batchnorm",
    "batchnorm_layers",
    "conv_bn_pairs",
    "fold_bn",
    "FoldReport",
    "recompute_bn_stats",
    "diagnose",
    "Diagnosis",
    "Finding",
]

_BATCHNORM_TYPES = (nn.modules.batchnorm._BatchNorm, _normlib_batchnorm._BatchNorm)
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_TRANSPOSED_CONVS = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_FOLDABLE = _CONVS + _TRANSPOSED_CONVS + (nn.Linear,)


def is_batchnorm(module: nn.Module) -> bool:
    """True for torch's and normlib's BatchNorm layers (not InstanceNorm, not GroupNorm)."""
    return isinstance(module, _BATCHNORM_TYPES)


def batchnorm_layers(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """``(qualified name, module)`` of every BatchNorm layer in ``model``, in order."""
    return [(name, m) for name, m in model.named_modules() if is_batchnorm(m)]


def _has_running_stats(bn: nn.Module) -> bool:
    return getattr(bn, "running_mean", None) is not None and getattr(bn, "running_var", None) is not None


def _out_channels(layer: nn.Module) -> int:
    return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels


def _wrap(text: str, first: str, width: int = 79) -> List[str]:
    """``text`` wrapped to ``width`` columns after the prefix ``first`` (plain-text reports)."""
    import textwrap

    return textwrap.wrap(text, width, initial_indent=first, subsequent_indent=" " * len(first)) or [first]


def _describe(module: nn.Module) -> str:
    return type(module).__name__


# --------------------------------------------------------------------------- which layer feeds which BN


class _LeafTracer(torch.fx.Tracer):
    """Stops at layers (modules without children) and at norm layers, traces through containers."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        if is_batchnorm(module) or isinstance(module, _FOLDABLE):
            return True
        if not any(True for _ in module.children()):
            return True
        return super().is_leaf_module(module, qualified_name)


def _pairs_from_graph(model: nn.Module, graph) -> Tuple[List[Tuple[str, str]], Dict[str, str]]:
    modules = dict(model.named_modules())
    calls = Counter(node.target for node in graph.nodes if node.op == "call_module")
    pairs: List[Tuple[str, str]] = []
    unpaired: Dict[str, str] = {}
    for node in graph.nodes:
        if node.op != "call_module" or not is_batchnorm(modules[node.target]):
            continue
        bn_name = node.target
        if calls[bn_name] > 1:
            unpaired[bn_name] = f"it is called {calls[bn_name]} times in forward()"
            continue
        source = node.args[0] if len(node.args) == 1 and not node.kwargs else None
        if not isinstance(source, torch.fx.Node):
            unpaired[bn_name] = "its input is not the output of a single layer"
            continue
        if source.op == "placeholder":
            unpaired[bn_name] = "it normalizes the model's input (no layer before it)"
            continue
        if source.op != "call_module":
            what = getattr(source.target, "__name__", str(source.target))
            unpaired[bn_name] = f"its input comes from {what}(), not from a conv or linear layer"
            continue
        producer = modules[source.target]
        if not isinstance(producer, _FOLDABLE):
            unpaired[bn_name] = (
                f"its input comes from {source.target} ({_describe(producer)}), not from a conv or linear layer"
            )
            continue
        if calls[source.target] > 1:
            unpaired[bn_name] = f"{source.target} is called {calls[source.target]} times in forward()"
            continue
        if len(source.users) > 1:
            unpaired[bn_name] = f"the output of {source.target} is also used elsewhere"
            continue
        pairs.append((source.target, bn_name))
    for name, _ in batchnorm_layers(model):
        if calls[name] == 0:
            unpaired[name] = "it is not called in forward()"
    return pairs, unpaired


def _pairs_from_children(model: nn.Module) -> Tuple[List[Tuple[str, str]], Dict[str, str]]:
    pairs: List[Tuple[str, str]] = []
    unpaired: Dict[str, str] = {}
    for parent_name, parent in model.named_modules():
        previous = None
        for child_name, child in parent.named_children():
            name = f"{parent_name}.{child_name}" if parent_name else child_name
            if is_batchnorm(child):
                if previous is None:
                    unpaired[name] = "no layer comes before it in its container"
                elif isinstance(previous[1], _FOLDABLE):
                    pairs.append((previous[0], name))
                else:
                    unpaired[name] = f"it follows {previous[0]} ({_describe(previous[1])}), not a conv or linear layer"
            previous = (name, child)
    return pairs, unpaired


def conv_bn_pairs(model: nn.Module) -> Tuple[List[Tuple[str, str]], Dict[str, str], bool]:
    """Which conv/linear layer feeds which BatchNorm layer directly.

    Returns ``(pairs, unpaired, traced)``: ``pairs`` lists ``(layer name, bn name)`` where
    the BN's only input is the output of that layer and nothing else uses that output;
    ``unpaired`` maps every other BN layer to the reason; ``traced`` says whether the data
    flow was read from a ``torch.fx`` trace (True) or, when the model cannot be traced,
    guessed from the order of the children of each container (False; exact for
    ``nn.Sequential``, an assumption for custom modules).
    """
    try:
        graph = _LeafTracer().trace(model)
    except Exception:  # noqa: BLE001 - any untraceable forward falls back to the module tree
        pairs, unpaired = _pairs_from_children(model)
        return pairs, unpaired, False
    pairs, unpaired = _pairs_from_graph(model, graph)
    return pairs, unpaired, True


# --------------------------------------------------------------------------- fold_bn


@dataclass
class FoldReport:
    """What :func:`~normlib.fold_bn` did: the pairs it merged and the BN layers it left, with why."""

    folded: List[Tuple[str, str]] = field(default_factory=list)
    skipped: List[Tuple[str, str]] = field(default_factory=list)
    traced: bool = True

    def __str__(self) -> str:
        lines = [f"fold_bn: folded {len(self.folded)} BatchNorm layer(s), left {len(self.skipped)}"]
        lines += [f"  folded {bn} into {layer}" for layer, bn in self.folded]
        for bn, reason in self.skipped:
            lines += _wrap(f"{bn}: {reason}", "  left ")
        if not self.traced:
            lines += _wrap("(model not traceable by torch.fx: pairs read from the order of children)", "  ")
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        rows = [f"| {bn} | folded into `{layer}` |" for layer, bn in self.folded]
        rows += [f"| {bn} | **left**: {reason} |" for bn, reason in self.skipped]
        table = "| BatchNorm layer | result |\n|:--|:--|\n" + "\n".join(rows) if rows else "No BatchNorm layers."
        note = "" if self.traced else "\n\nThe model could not be traced: pairs were read from the order of children."
        return table + note


def _empty_defaults_signature(cls: type) -> inspect.Signature:
    """The signature of dataclass ``cls`` with each ``default_factory`` field's default shown as
    the factory's value (``[]``, ``{}``) instead of ``<factory>``: help() and the API reference
    read it from ``cls.__signature__``."""
    factories = {
        f.name: f.default_factory for f in dataclasses.fields(cls) if f.default_factory is not dataclasses.MISSING
    }
    signature = inspect.signature(cls)
    return signature.replace(
        parameters=[
            p.replace(default=factories[p.name]()) if p.name in factories else p for p in signature.parameters.values()
        ]
    )


FoldReport.__signature__ = _empty_defaults_signature(FoldReport)


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _cpu64(t: Tensor) -> Tensor:
    """A float64 copy on the CPU (move first: MPS has no float64)."""
    return t.detach().to("cpu").to(torch.float64)


@torch.no_grad()
def _fold_pair(layer: nn.Module, bn: nn.Module) -> None:
    """Merge ``bn`` (eval mode) into ``layer``'s weight and bias, in float64."""
    weight = layer.weight
    inv_std = torch.rsqrt(_cpu64(bn.running_var) + bn.eps)
    ones, zeros = torch.ones_like(inv_std), torch.zeros_like(inv_std)
    gamma = ones if bn.weight is None else _cpu64(bn.weight)
    beta = zeros if bn.bias is None else _cpu64(bn.bias)
    scale = gamma * inv_std  # s: one factor per output channel
    bias = zeros if layer.bias is None else _cpu64(layer.bias)
    new_bias = (bias - _cpu64(bn.running_mean)) * scale + beta

    w = _cpu64(weight)
    if isinstance(layer, _TRANSPOSED_CONVS):
        # weight (in, out/groups, *k): output channel g*(out/groups) + j
        # is column j of the rows of group g
        groups = layer.groups
        grouped = w.reshape(groups, w.shape[0] // groups, *w.shape[1:])
        factor = scale.reshape(groups, 1, w.shape[1], *[1] * (w.dim() - 2))
        w = (grouped * factor).reshape(w.shape)
    else:  # conv (out, in/groups, *k), linear (out, in): outputs on dim 0
        w = w * scale.reshape(-1, *[1] * (w.dim() - 1))
    weight.copy_(w.to(weight.device, weight.dtype))
    if layer.bias is not None:
        layer.bias.copy_(new_bias.to(layer.bias.device, layer.bias.dtype))
    else:
        new_bias = new_bias.to(weight.device, weight.dtype)
        layer.bias = nn.Parameter(new_bias, requires_grad=weight.requires_grad)


def _bn_input_ranks(model: nn.Module, example_input) -> Dict[str, int]:
    ranks: Dict[str, int] = {}

    def record(module, args, name):  # a pre-hook must return None, or it replaces the input
        ranks.setdefault(name, args[0].dim())

    hooks = [
        bn.register_forward_pre_hook(lambda m, args, name=name: record(m, args, name))
        for name, bn in batchnorm_layers(model)
    ]
    try:
        with torch.no_grad():
            model(example_input)
    finally:
        for hook in hooks:
            hook.remove()
    return ranks


def fold_bn(
    model: nn.Module, example_input: Optional[Tensor] = None, *, atol: float = 1e-4, rtol: float = 1e-4
) -> nn.Module:
    """An inference copy of ``model`` with every foldable conv/linear + BatchNorm pair merged.

    In ``eval()`` mode a BatchNorm layer is an affine map per channel,
    ``y = gamma * (z - running_mean) / sqrt(running_var + eps) + beta``; when ``z`` is the
    output of a conv or linear layer, that map can be folded into the layer's weight and
    bias (``W' = W * s``, ``b' = (b - running_mean) * s + beta`` with
    ``s = gamma / sqrt(running_var + eps)``), and the BN layer becomes ``nn.Identity``.

    Folded: ``Conv1d/2d/3d`` (any ``groups``), ``ConvTranspose1d/2d/3d`` and ``Linear``
    whose output goes only into the BN (torch's or normlib's BatchNorm1d/2d/3d). Left, and
    reported with the reason: BN without running statistics (``track_running_stats=False``
    uses batch statistics even in eval), BN after an activation, pooling or any other
    operation, BN on the model's input, layers called more than once, a layer whose output
    is also used elsewhere, a parametrized layer (e.g. ``weight_norm``) and channel counts
    that disagree.

    The input ``model`` is not modified. The copy is returned in ``eval()`` mode (folding
    uses the running statistics: the copy computes what ``model.eval()`` computes) and
    carries the report as ``folded.fold_report`` (a :class:`~normlib.bn_tools.FoldReport`).

    ``Linear`` + ``BatchNorm1d`` is folded on the assumption that the BN sees (N, features)
    input. Give ``example_input`` to check: then pairs whose BN sees another rank are left,
    and the outputs of the original (in eval mode) and the folded copy are compared on it
    (``RuntimeError`` if they differ by more than ``atol``/``rtol``).
    """
    folded = copy.deepcopy(model).eval()
    pairs, unpaired, traced = conv_bn_pairs(folded)
    ranks = _bn_input_ranks(folded, example_input) if example_input is not None else {}
    report = FoldReport(traced=traced)
    for layer_name, bn_name in pairs:
        layer, bn = folded.get_submodule(layer_name), folded.get_submodule(bn_name)
        if not _has_running_stats(bn):
            unpaired[bn_name] = "it has no running statistics (track_running_stats=False): it uses batch statistics"
        elif _out_channels(layer) != bn.num_features:
            unpaired[bn_name] = (
                f"{layer_name} has {_out_channels(layer)} output channels, the BN {bn.num_features} features"
            )
        elif parametrize.is_parametrized(layer):
            # Removing a parametrization from a deep copy would also change the original's
            # (the parametrized class is shared), so the user removes it first.
            unpaired[bn_name] = (
                f"{layer_name} is parametrized (e.g. weight_norm): remove that first with "
                "torch.nn.utils.parametrize.remove_parametrizations"
            )
        elif isinstance(layer, nn.Linear) and bn_name in ranks and ranks[bn_name] != 2:
            unpaired[bn_name] = f"it sees {ranks[bn_name]}-D input, so it does not normalize the Linear's features"
        else:
            _fold_pair(layer, bn)
            _set_submodule(folded, bn_name, nn.Identity())
            report.folded.append((layer_name, bn_name))
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    report.skipped = sorted(unpaired.items(), key=lambda item: order.get(item[0], -1))
    folded.fold_report = report
    if example_input is not None:
        reference = copy.deepcopy(model).eval()
        with torch.no_grad():
            expected, got = reference(example_input), folded(example_input)
        if not torch.allclose(got, expected, atol=atol, rtol=rtol):
            raise RuntimeError(
                "fold_bn: the folded model's output differs from the original's in eval mode by up to "
                f"{(got - expected).abs().max().item():.3g}; {report}"
            )
    return folded


# --------------------------------------------------------------------------- recompute_bn_stats


class _ChannelMoments:
    """Count, mean and sum of squared deviations per channel, merged batch by batch (float64).

    Merging uses the pairwise update of Chan et al., so the result equals the statistics of
    all values at once, without the cancellation of sum(x^2) - n * mean^2.
    """

    def __init__(self) -> None:
        self.count = 0
        self.mean: Optional[Tensor] = None
        self.m2: Optional[Tensor] = None

    def add(self, x: Tensor) -> None:
        n = x.numel() // x.shape[1]
        if n == 0:
            return
        mean, m2 = _batch_moments(x)
        mean, m2 = _cpu64(mean), _cpu64(m2)
        if self.count == 0:
            self.count, self.mean, self.m2 = n, mean, m2
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta**2 * (self.count * n / total)
        self.count = total

    def unbiased_var(self) -> Tensor:
        return self.m2 / max(self.count - 1, 1)

    def biased_var(self) -> Tensor:
        return self.m2 / self.count


def _batch_moments(x: Tensor) -> Tuple[Tensor, Tensor]:
    """Per-channel mean and sum of squared deviations of one batch, on its device.

    Two passes, in at least float32 (float64 stays float64: MPS has none, so it is not
    forced); the batches are then merged in float64 on the CPU.
    """
    dims = [0] + list(range(2, x.dim()))
    values = x.detach().to(torch.promote_types(x.dtype, torch.float32))
    mean = values.mean(dim=dims, keepdim=True)
    m2 = ((values - mean) ** 2).sum(dim=dims)
    return mean.flatten(), m2


def _first_tensor(batch):
    if isinstance(batch, (tuple, list)):
        return batch[0]
    return batch


def _model_device(model: nn.Module) -> Optional[torch.device]:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return None


@torch.no_grad()
def recompute_bn_stats(model: nn.Module, batches: Iterable, *, max_batches: Optional[int] = None) -> nn.Module:
    """Precise BN: set every BatchNorm layer's running statistics to the exact statistics of
    its inputs over ``batches`` (Wu & Johnson, 2021, "Rethinking 'Batch' in BatchNorm").

    During training, ``running_mean``/``running_var`` are an exponential moving average of
    batch statistics taken while the weights were still changing, so they lag behind the
    final weights. This runs the model over ``batches`` with its weights fixed, in training
    mode (each BN normalizes with the batch's statistics, as in training) and collects, per
    channel, the mean and the unbiased variance of *all* the values each BN layer receives
    (merged exactly across batches, not averaged per batch). Those become the running
    statistics; nothing else changes: ``momentum``, ``num_batches_tracked``, the parameters
    and every module's train/eval mode are as before. Modules such as Dropout run in
    training mode during the pass, as they did while the statistics were first collected.

    ``batches`` yields input tensors or ``(input, target, ...)`` tuples (a DataLoader
    works); inputs are moved to the model's device. ``max_batches`` limits how many are
    used. BN layers without running statistics, or never reached, are left as they are.
    Returns ``model`` (changed in place).
    """
    layers = [(name, bn) for name, bn in batchnorm_layers(model) if _has_running_stats(bn)]
    moments = {name: _ChannelMoments() for name, _ in layers}
    saved = {
        name: (bn.momentum, None if bn.num_batches_tracked is None else bn.num_batches_tracked.clone())
        for name, bn in layers
    }
    modes = {module: module.training for module in model.modules()}
    hooks = [
        bn.register_forward_pre_hook(lambda module, args, name=name: moments[name].add(args[0])) for name, bn in layers
    ]
    device = _model_device(model)
    used = 0
    try:
        model.train()
        for batch in batches:
            if max_batches is not None and used >= max_batches:
                break
            x = _first_tensor(batch)
            model(x.to(device) if device is not None and isinstance(x, Tensor) else x)
            used += 1
    finally:
        for hook in hooks:
            hook.remove()
        for module, training in modes.items():
            module.training = training
    if used == 0:
        raise ValueError("recompute_bn_stats: no batches were given")
    for name, bn in layers:
        momentum, tracked = saved[name]
        bn.momentum = momentum
        if tracked is not None:
            bn.num_batches_tracked.copy_(tracked)
        stats = moments[name]
        if stats.count == 0:
            continue
        bn.running_mean.copy_(stats.mean.to(bn.running_mean.device, bn.running_mean.dtype))
        bn.running_var.copy_(stats.unbiased_var().to(bn.running_var.device, bn.running_var.dtype))
    return model


# --------------------------------------------------------------------------- diagnose


@dataclass(frozen=True)
class Finding:
    """One problem :func:`~normlib.diagnose` found: which check, which layers, what is wrong, the fix."""

    check: str
    layers: Tuple[str, ...]
    problem: str
    fix: str
    severity: str  # "error": wrong outputs; "warning": unreliable; "info": wasted parameters


CHECKS = {
    "train-mode": (
        "error",
        "in training mode during evaluation: each output depends on the rest of the batch, "
        "and every forward pass overwrites the running statistics",
        "call model.eval() before evaluating (and model.train() before training again)",
    ),
    "no-running-stats": (
        "error",
        "no running statistics (track_running_stats=False): normalizes with the batch's statistics even in eval()",
        "build the layer with track_running_stats=True and fill the statistics with normlib.recompute_bn_stats",
    ),
    "batch-of-one": (
        "error",
        "normalizes a batch of one example with that example's own statistics (in training "
        "this raises when each channel holds one value)",
        "evaluate in eval() mode; in training use batches of 2 or more (drop_last=True drops a last batch of one)",
    ),
    "small-batch": (
        "warning",
        "too few values per statistic, or too few examples, for reliable batch statistics "
        "(positions of one image can be correlated, so a statistic can be worth far fewer than "
        "its m values)",
        "use larger batches, or a normalizer whose statistics stay inside each sample (GroupNorm, LayerNorm)",
    ),
    "stale-stats": (
        "error",
        "running statistics disagree with the statistics of this batch",
        "recompute them on training data with normlib.recompute_bn_stats (or check that the "
        "input is preprocessed as in training)",
    ),
    "frozen-stats-move": (
        "warning",
        "gamma/beta are frozen (requires_grad=False) but the layer is in training mode, so its "
        "running statistics still change at every forward pass",
        "put the layer in eval mode too (bn.eval()), again after every model.train()",
    ),
    "bias-before-bn": (
        "info",
        "the conv/linear layer before it has a bias, which BatchNorm's mean subtraction "
        "cancels (parameters that never matter)",
        "build that layer with bias=False (BN's beta is the shift)",
    ),
}

PHASE_CHECKS = {
    "eval": ("train-mode", "no-running-stats", "batch-of-one", "small-batch", "stale-stats", "bias-before-bn"),
    "train": ("batch-of-one", "small-batch", "frozen-stats-move", "bias-before-bn"),
}


class Diagnosis(Sequence):
    """The findings of :func:`~normlib.diagnose`; empty and falsy when nothing was found.

    ``print(report)`` gives plain text (nothing at all for a healthy model); in a notebook
    the report shows as a table. ``report.checks`` is the set of check names that fired.
    """

    def __init__(self, findings: List[Finding], phase: str, num_layers: int, notes: List[str]) -> None:
        self.findings = findings
        self.phase = phase
        self.num_layers = num_layers
        self.notes = notes

    def __len__(self) -> int:
        return len(self.findings)

    def __getitem__(self, index):
        return self.findings[index]

    @property
    def checks(self) -> set:
        return {finding.check for finding in self.findings}

    def __str__(self) -> str:
        if not self.findings:
            return ""
        lines = [
            f"BatchNorm doctor ({self.phase}): {len(self.findings)} problem(s) in {self.num_layers} BatchNorm layer(s)"
        ]
        for finding in self.findings:
            lines += _wrap(f"[{finding.severity}] {finding.check}: {', '.join(finding.layers)}", "")
            lines += _wrap(finding.problem, "    problem: ")
            lines += _wrap(finding.fix, "    fix:     ")
        for note in self.notes:
            lines += _wrap(note, "note: ")
        return "\n".join(lines)

    def __repr__(self) -> str:
        if not self.findings:
            return f"<Diagnosis ({self.phase}): no problems found in {self.num_layers} BatchNorm layer(s)>"
        return f"<Diagnosis ({self.phase}): {', '.join(sorted(self.checks))}>"

    def _repr_markdown_(self) -> str:
        if not self.findings:
            return f"BatchNorm doctor ({self.phase}): no problems found in {self.num_layers} BatchNorm layer(s)."
        escape = lambda text: text.replace("|", "\\|")  # noqa: E731
        rows = [
            f"| {f.severity} | `{f.check}` | {escape(', '.join(f.layers))} | {escape(f.problem)} | {escape(f.fix)} |"
            for f in self.findings
        ]
        table = "| severity | check | layers | problem | fix |\n|:--|:--|:--|:--|:--|\n" + "\n".join(rows)
        return table + "".join(f"\n\n{note}" for note in self.notes)


@dataclass
class _Seen:
    shape: Tuple[int, ...]
    batch_stats: bool
    mean: Tensor
    var: Tensor


def _values_per_statistic(shape: Tuple[int, ...]) -> int:
    return shape[0] * math.prod(shape[2:]) if len(shape) >= 2 else shape[0]


@torch.no_grad()
def diagnose(
    model: nn.Module,
    batch,
    *,
    phase: str = "eval",
    min_values: int = 16,
    min_batch: int = 8,
    mean_tolerance: float = 0.5,
    variance_ratio: float = 2.0,
) -> Diagnosis:
    """The BatchNorm doctor: run ``model`` on ``batch`` once and report BatchNorm bugs.

    ``phase`` says what you are about to do with the model: ``"eval"`` (evaluate or
    deploy; the default) or ``"train"``. The model is used as it is (its modes are not
    changed); its running statistics and the random number generator are restored after
    the pass, so diagnosing changes nothing. ``batch`` is an input tensor or an
    ``(input, target, ...)`` tuple.

    Checks, with their names (``report.checks``) and phases:

    * ``train-mode`` (eval): BN layers in training mode.
    * ``no-running-stats`` (eval): BN layers with ``track_running_stats=False``.
    * ``batch-of-one`` (both): a BN normalizing a batch of one example with batch statistics.
    * ``small-batch`` (both): a BN normalizing with batch statistics that cover fewer than
      ``min_values`` values per channel (N·H·W for images, N for features), or fewer than
      ``min_batch`` examples (N) however many positions each has: the positions of one
      image are correlated, so N·H·W values are worth far fewer independent ones (Wu & He,
      2018: a ResNet-50's BatchNorm degraded at 2 and 4 images per GPU).
    * ``stale-stats`` (eval): running statistics that disagree with the statistics of the
      layer's input on this batch: over the channels, the median of
      ``|batch mean - running_mean| / sqrt(running_var + eps)`` above ``mean_tolerance``, or
      the median variance ratio (batch/running, either way round) above ``variance_ratio``.
      Checked only where the batch gives at least ``min_values`` values per statistic; show
      it data preprocessed as in training.
    * ``frozen-stats-move`` (train): gamma/beta with ``requires_grad=False`` in a BN whose
      running statistics changed during the pass (training mode).
    * ``bias-before-bn`` (both): a conv/linear layer with a bias feeding a BN directly.

    Returns a :class:`~normlib.bn_tools.Diagnosis`: empty and falsy when nothing was found.
    """
    if phase not in PHASE_CHECKS:
        raise ValueError(f"diagnose: phase must be 'eval' or 'train', got {phase!r}")
    if min_values < 2:
        raise ValueError(f"diagnose: min_values must be at least 2, got {min_values}")
    if min_batch < 2:
        raise ValueError(f"diagnose: min_batch must be at least 2, got {min_batch}")
    enabled = PHASE_CHECKS[phase]
    layers = batchnorm_layers(model)
    seen: Dict[str, _Seen] = {}
    moved: Dict[str, bool] = {}
    notes: List[str] = []

    def record(module, args, name):
        x = args[0]
        batch_stats = module.training or not _has_running_stats(module)
        if x.numel() > 0 and x.dim() >= 2:
            mean, m2 = _batch_moments(x)
            n = x.numel() // x.shape[1]
            mean, var = _cpu64(mean), _cpu64(m2) / n
        else:
            mean = var = torch.zeros(0, dtype=torch.float64)
        seen.setdefault(name, _Seen(tuple(x.shape), batch_stats, mean, var))

    saved = {name: {k: b.clone() for k, b in bn.named_buffers(recurse=False)} for name, bn in layers}
    hooks = [bn.register_forward_pre_hook(lambda m, a, name=name: record(m, a, name)) for name, bn in layers]
    x = _first_tensor(batch)
    on_accelerator = isinstance(x, Tensor) and x.device.type != "cpu"
    # Dropout in training mode draws random numbers: fork the generators so the user's stay put.
    fork = dict(devices=[x.device], device_type=x.device.type) if on_accelerator else dict(devices=[])
    try:
        with torch.random.fork_rng(**fork):
            model(x)
    except Exception as error:  # noqa: BLE001
        # The classic crash of a batch of one in training is a finding, not a failure.
        one = [n for n, s in seen.items() if s.batch_stats and _values_per_statistic(s.shape) <= 1]
        if not one:
            raise
        notes.append(f"the forward pass raised {type(error).__name__}: {error}")
    finally:
        for hook in hooks:
            hook.remove()
        for name, bn in layers:
            for key, before in saved[name].items():
                buffer = getattr(bn, key)
                if key in ("running_mean", "running_var") and not torch.equal(buffer, before):
                    moved[name] = True
                buffer.copy_(before)

    findings: List[Finding] = []

    def add(check: str, names: List[str], detail: str = "") -> None:
        if names and check in enabled:
            severity, problem, fix = CHECKS[check]
            findings.append(Finding(check, tuple(names), problem + detail, fix, severity))

    add("train-mode", [n for n, bn in layers if bn.training])
    add("no-running-stats", [n for n, bn in layers if not _has_running_stats(bn)])

    batch_stat_layers = [(n, s) for n, s in seen.items() if s.batch_stats]
    ones = [n for n, s in batch_stat_layers if s.shape[0] == 1]
    add("batch-of-one", ones)
    small = [(n, _values_per_statistic(s.shape), s.shape[0]) for n, s in batch_stat_layers if n not in ones]
    small = [(n, v, b) for n, v, b in small if v < min_values or b < min_batch]
    if small:
        details = []
        fewest = min(v for _, v, _ in small)
        if fewest < min_values:
            details.append(f"as few as {fewest} values; fewer than {min_values}")
        examples = min(b for _, _, b in small)
        if examples < min_batch:
            details.append(f"{examples} examples per batch; fewer than {min_batch}")
        add("small-batch", [n for n, _, _ in small], f" ({'; '.join(details)})")

    stale, worst = [], (0.0, 1.0)
    for name, bn in layers:
        s = seen.get(name)
        if (
            s is None
            or not _has_running_stats(bn)
            or s.mean.numel() == 0
            or _values_per_statistic(s.shape) < min_values
        ):
            continue
        running_mean = _cpu64(saved[name]["running_mean"])
        running_var = _cpu64(saved[name]["running_var"])
        shift = ((s.mean - running_mean).abs() / torch.sqrt(running_var + bn.eps)).median().item()
        log_ratio = torch.log((s.var + bn.eps) / (running_var + bn.eps)).abs().median().item()
        if shift > mean_tolerance or log_ratio > math.log(variance_ratio):
            stale.append(name)
            worst = max(worst[0], shift), max(worst[1], math.exp(log_ratio))
    add(
        "stale-stats", stale, f" (median shift up to {worst[0]:.2f} running std, variance off by up to {worst[1]:.2f}x)"
    )

    frozen = []
    for name, bn in layers:
        params = [p for p in (bn.weight, bn.bias) if p is not None]
        if params and not any(p.requires_grad for p in params) and bn.training and moved.get(name, False):
            frozen.append(name)
    add("frozen-stats-move", frozen)

    pairs, _, _ = conv_bn_pairs(model)
    biased = [(layer, bn) for layer, bn in pairs if model.get_submodule(layer).bias is not None]
    add(
        "bias-before-bn",
        [bn for _, bn in biased],
        "" if not biased else f" (bias in: {', '.join(l for l, _ in biased)})",
    )

    return Diagnosis(findings, phase, len(layers), notes)
