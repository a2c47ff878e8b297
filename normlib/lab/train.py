"""A small, seeded training loop for the course's experiments.

:func:`fit` trains a classifier on a :class:`normlib.lab.data.Dataset` with mini-batch SGD (or
Adam) and returns a :class:`History`: the loss of every update, test loss and accuracy at
regular evaluation points, optional probes, and whether training diverged. It is
deliberately plain -- shuffle, forward, loss, backward, step -- so that what an experiment
changes (the normalization layer, the learning rate, the batch size) is the only
difference between its runs.

* Reproducible: ``fit(..., seed=s)`` seeds Python, NumPy and torch and draws the batch
  order from its own generator, so the same model state and seed give the same records.
* Safe: a non-finite loss stops training and marks the run ``diverged`` instead of raising.
* Visible: a ``tqdm.auto`` progress bar in a live notebook. It is off when the environment
  variable ``NORMLIB_PROGRESS`` is ``0`` (the Makefile sets it, so the built book has no
  progress widgets); ``progress=True/False`` overrides.

:func:`evaluate`, :func:`capture` and :func:`activation_stats` run a model without
changing the training/eval mode of any of its modules.
"""

from __future__ import annotations

import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..bn_tools import _empty_defaults_signature
from .data import Dataset, batches

__all__ = [
    "History",
    "fit",
    "run",
    "compare",
    "evaluate",
    "capture",
    "activation_stats",
    "preserve_modes",
    "sandbox",
    "progress_enabled",
]

Probe = Callable[[nn.Module], Mapping[str, float]]


@dataclass
class History:
    """What one training run recorded.

    ``train_loss`` has the mini-batch loss of every update. ``steps`` lists the evaluation
    points (number of updates done, starting at 0), and ``test_loss``, ``test_accuracy``
    (and, with ``eval_train=True``, ``train_accuracy``) one value per evaluation point, as
    do the lists in ``probes``. ``epoch_loss`` is the mean training loss of each completed
    epoch. Accuracies are fractions in [0, 1].
    """

    train_loss: List[float] = field(default_factory=list)
    steps: List[int] = field(default_factory=list)
    test_loss: List[float] = field(default_factory=list)
    test_accuracy: List[float] = field(default_factory=list)
    train_accuracy: List[float] = field(default_factory=list)
    epoch_loss: List[float] = field(default_factory=list)
    probes: Dict[str, List[float]] = field(default_factory=dict)
    diverged: bool = False
    diverged_at: Optional[int] = None
    seconds: float = 0.0
    config: Dict[str, object] = field(default_factory=dict)

    @property
    def final_accuracy(self) -> float:
        """Test accuracy at the last evaluation point (NaN if there was none)."""
        return self.test_accuracy[-1] if self.test_accuracy else math.nan

    @property
    def best_accuracy(self) -> float:
        return max(self.test_accuracy) if self.test_accuracy else math.nan

    def steps_to(self, accuracy: float) -> Optional[int]:
        """The first evaluation point whose test accuracy reaches ``accuracy`` (None if never)."""
        return next((s for s, a in zip(self.steps, self.test_accuracy) if a >= accuracy), None)

    def summary(self) -> str:
        if self.diverged:
            return f"diverged at step {self.diverged_at} (non-finite loss)"
        return (
            f"{len(self.train_loss)} steps in {self.seconds:.1f} s: final test accuracy "
            f"{100 * self.final_accuracy:.1f} %, test loss {self.test_loss[-1]:.3f}"
            if self.test_loss
            else f"{len(self.train_loss)} steps in {self.seconds:.1f} s"
        )

    def __repr__(self) -> str:
        return f"History({self.summary()})"


# --------------------------------------------------------------------------- modes and hooks


History.__signature__ = _empty_defaults_signature(History)


@contextmanager
def preserve_modes(model: nn.Module):
    """Restore the ``training`` flag of every submodule on exit.

    ``model.train()`` / ``model.eval()`` set the flag of *every* submodule, so undoing one
    with the other would lose, e.g., a BatchNorm layer deliberately kept in eval mode.
    """
    modes = [(module, module.training) for module in model.modules()]
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


@contextmanager
def sandbox(model: nn.Module):
    """Experiment on ``model`` freely; on exit it is exactly as it was.

    Restores every parameter and persistent buffer (whatever ``state_dict`` holds: running
    statistics, ``num_batches_tracked``), every parameter's ``.grad``, every submodule's
    ``training`` flag, and torch's random number generator state (the CPU generator, and the
    generator of each accelerator device the model uses). A probe that runs inside a sandbox --
    a training-mode forward pass, a trial SGD step, noise drawn by a layer -- leaves no trace:
    training with the probe gives the same records as training without it.
    """
    saved = {name: tensor.detach().clone() for name, tensor in model.state_dict(keep_vars=True).items()}
    grads = [(p, None if p.grad is None else p.grad.detach().clone()) for p in model.parameters()]
    # The CPU generator is always forked; also fork the generators of the accelerator (if
    # any) that holds the model, so that noise drawn there is restored too.
    accelerators = {t.device for t in saved.values() if t.device.type not in ("cpu", "meta")}
    device_type = next(iter(accelerators)).type if accelerators else None
    indices = sorted({d.index or 0 for d in accelerators})
    with preserve_modes(model), torch.random.fork_rng(devices=indices, device_type=device_type):
        try:
            yield model
        finally:
            with torch.no_grad():
                current = model.state_dict(keep_vars=True)
                for name, value in saved.items():
                    current[name].copy_(value)
            for p, grad in grads:
                p.grad = grad


def _chunks(x: Tensor, y: Tensor, batch_size: Optional[int]):
    if batch_size is None:
        yield x, y
        return
    for start in range(0, x.shape[0], batch_size):
        yield x[start : start + batch_size], y[start : start + batch_size]


def evaluate(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    batch_size: Optional[int] = None,
    loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
    mode: str = "eval",
):
    """Mean loss and accuracy of ``model`` on ``(x, y)``, without gradients.

    ``mode="eval"`` (the default) evaluates as at inference; ``mode="train"`` evaluates in
    training mode (BatchNorm then uses each chunk's own statistics and updates its running
    statistics: this is how the "forgot eval()" bug behaves); ``mode="keep"`` leaves every
    module as it is. The modes of all submodules are restored afterwards. ``batch_size``
    evaluates in chunks (all at once by default). Returns ``(loss, accuracy)`` as floats.

    Targets may have more than one label per sample: with ``y`` of shape ``(N, T)`` (e.g. the
    next character at every position) and logits of shape ``(N, classes, T)``, as
    ``F.cross_entropy`` takes them, the accuracy is the fraction of the ``N * T`` labels
    predicted.
    """
    if mode not in ("eval", "train", "keep"):
        raise ValueError(f"mode must be 'eval', 'train' or 'keep', got {mode!r}")
    if x.shape[0] == 0:
        raise ValueError("evaluate: no samples")
    total_loss, correct = 0.0, 0
    with preserve_modes(model), torch.no_grad():
        if mode != "keep":
            model.train(mode == "train")
        for xb, yb in _chunks(x, y, batch_size):
            logits = model(xb)
            total_loss += float(loss_fn(logits, yb)) * xb.shape[0]
            correct += int((logits.argmax(dim=1) == yb).sum())
    return total_loss / x.shape[0], correct / y.numel()


@contextmanager
def _hooks(model: nn.Module, names: Sequence[str], where: str):
    modules = dict(model.named_modules())
    missing = [name for name in names if name not in modules]
    if missing:
        raise KeyError(f"no module named {missing} in the model; it has {[n for n in modules if n]}")
    if where not in ("input", "output"):
        raise ValueError(f"where must be 'input' or 'output', got {where!r}")
    captured: Dict[str, Tensor] = {}

    def hook_for(name):
        def hook(module, inputs, output):
            value = inputs[0] if where == "input" else output
            captured[name] = value.detach()

        return hook

    handles = [modules[name].register_forward_hook(hook_for(name)) for name in names]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def capture(model: nn.Module, x: Tensor, names: Sequence[str], *, where: str = "output") -> Dict[str, Tensor]:
    """Run ``model(x)`` once (no gradients, modes unchanged) and return the ``output`` (or
    ``input``) tensor of each named submodule, e.g. ``capture(net, x, ["norm1", "act1"])``."""
    with _hooks(model, list(names), where) as captured, torch.no_grad():
        model(x)
    return {name: captured[name] for name in names}


def _activation_names(model: nn.Module) -> List[str]:
    activations = (nn.ReLU, nn.Sigmoid, nn.Tanh, nn.GELU, nn.SiLU, nn.LeakyReLU, nn.ELU)
    return [name for name, module in model.named_modules() if isinstance(module, activations)]


def activation_stats(
    model: nn.Module,
    x: Tensor,
    modules: Optional[Sequence[str]] = None,
    *,
    where: str = "output",
) -> Dict[str, Dict[str, float]]:
    """Mean and standard deviation of each named module's output over a batch ``x``.

    ``modules`` defaults to every activation module (ReLU, sigmoid, tanh, ...), in order.
    One forward pass, no gradients, the model's modes unchanged. Returns
    ``{name: {"mean": ..., "std": ...}}``; the standard deviation is over all values.
    """
    names = list(modules) if modules is not None else _activation_names(model)
    if not names:
        raise ValueError("activation_stats: the model has no activation modules; pass `modules` by name")
    tensors = capture(model, x, names, where=where)
    return {
        name: {"mean": float(t.float().mean()), "std": float(t.float().std(correction=0))}
        for name, t in tensors.items()
    }


# --------------------------------------------------------------------------- training


def progress_enabled(progress: Optional[bool] = None) -> bool:
    """Whether :func:`fit` shows a progress bar: ``progress`` if given, else the
    environment (``NORMLIB_PROGRESS=0``, ``off``, ``false`` or ``no`` turns it off)."""
    if progress is not None:
        return bool(progress)
    return os.environ.get("NORMLIB_PROGRESS", "1").strip().lower() not in ("0", "off", "false", "no")


def _make_optimizer(optimizer, params, lr, momentum, weight_decay):
    if callable(optimizer):
        return optimizer(params)
    if optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be 'sgd', 'adam' or a callable params -> Optimizer, got {optimizer!r}")


def fit(
    model: nn.Module,
    data: Dataset,
    *,
    steps: Optional[int] = None,
    epochs: Optional[int] = None,
    batch_size: int = 64,
    lr: float = 0.1,
    optimizer: Union[str, Callable] = "sgd",
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    eval_every: Optional[int] = None,
    eval_train: bool = False,
    probe: Optional[Probe] = None,
    seed: int = 0,
    loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
    progress: Optional[bool] = None,
    desc: Optional[str] = None,
    sampler: Optional[Callable[..., Iterable]] = None,
) -> History:
    """Train ``model`` on ``data`` with mini-batches and return its :class:`History`.

    Give exactly one of ``steps`` (number of updates) and ``epochs``. Batches of exactly
    ``batch_size`` samples are drawn without replacement in an order set by ``seed``; an
    epoch is ``len(x_train) // batch_size`` updates. The model is moved to the data's device
    and put in training mode (``model.train()``) before the first step.

    The test split is evaluated (in ``eval()`` mode, then every module's mode is restored)
    at step 0, every ``eval_every`` updates (default: once per epoch) and after the last
    update; ``eval_train=True`` also records the accuracy on the whole training split.
    ``probe(model)`` returns a dict of numbers recorded at the same points (called without
    gradients, in whatever mode the model is in during training).

    ``optimizer``: ``"sgd"`` (with ``momentum``, ``weight_decay``), ``"adam"``, or a callable
    ``params -> torch.optim.Optimizer``. If a loss is not finite, training stops and the
    history says ``diverged`` (at which step); no exception is raised.

    ``sampler`` replaces :func:`normlib.lab.data.batches` as the source of the mini-batches:
    a function called as ``sampler(x_train, y_train, batch_size, generator=...)`` for every
    epoch, returning an iterable of ``(x, y)`` batches (e.g.
    :func:`normlib.lab.data.non_iid_batches`). ``epochs=`` still counts
    ``len(x_train) // batch_size`` updates as an epoch; ``epoch_loss`` records the sampler's
    own epochs.
    """
    if (steps is None) == (epochs is None):
        raise ValueError("fit: give exactly one of steps= and epochs=")
    num_train = data.x_train.shape[0]
    if batch_size < 1 or batch_size > num_train:
        raise ValueError(f"fit: batch_size must be between 1 and the {num_train} training samples, got {batch_size}")
    steps_per_epoch = num_train // batch_size
    total = steps if steps is not None else epochs * steps_per_epoch
    if total < 1:
        raise ValueError(f"fit: nothing to do ({total} steps)")
    eval_every = eval_every or steps_per_epoch
    if eval_every < 1:
        raise ValueError(f"fit: eval_every must be positive, got {eval_every}")

    from ..runtime import seed as seed_everything

    seed_everything(seed)
    generator = torch.Generator().manual_seed(seed)
    model.to(data.device)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = _make_optimizer(optimizer, params, lr, momentum, weight_decay)
    history = History(
        config=dict(
            steps=total,
            batch_size=batch_size,
            lr=lr,
            optimizer=optimizer if isinstance(optimizer, str) else "custom",
            momentum=momentum,
            weight_decay=weight_decay,
            seed=seed,
        )
    )

    def record(step):
        loss, accuracy = evaluate(model, data.x_test, data.y_test, loss_fn=loss_fn)
        history.steps.append(step)
        history.test_loss.append(loss)
        history.test_accuracy.append(accuracy)
        if eval_train:
            history.train_accuracy.append(evaluate(model, data.x_train, data.y_train, loss_fn=loss_fn)[1])
        if probe is not None:
            with torch.no_grad():
                values = probe(model)
            for key, value in values.items():
                history.probes.setdefault(key, []).append(float(value))
        return accuracy

    from tqdm.auto import tqdm

    start_time = time.perf_counter()
    accuracy = record(0)
    step = 0
    with tqdm(total=total, desc=desc, disable=not progress_enabled(progress), leave=True) as bar:
        while step < total and not history.diverged:
            epoch_losses, completed = [], False
            for xb, yb in (sampler or batches)(data.x_train, data.y_train, batch_size, generator=generator):
                loss = loss_fn(model(xb), yb)
                if not torch.isfinite(loss):
                    history.diverged, history.diverged_at = True, step
                    break
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                history.train_loss.append(loss.item())
                epoch_losses.append(history.train_loss[-1])
                if step % eval_every == 0 or step == total:
                    accuracy = record(step)
                bar.update(1)
                bar.set_postfix(loss=f"{history.train_loss[-1]:.3f}", test_acc=f"{accuracy:.3f}", refresh=False)
                if step == total:
                    break
            else:
                completed = True
            if not epoch_losses and not history.diverged:
                raise ValueError("fit: the sampler gave no batch for an epoch")
            if completed or (sampler is None and len(epoch_losses) == steps_per_epoch):
                history.epoch_loss.append(sum(epoch_losses) / len(epoch_losses))
        if history.diverged:
            bar.set_postfix_str(f"diverged at step {history.diverged_at}")
    history.seconds = time.perf_counter() - start_time
    return history


def run(build: Callable[[], nn.Module], data: Dataset, *, seed: int = 0, **fit_kwargs) -> History:
    """Seed, build a fresh model with ``build()``, and :func:`fit` it with the same seed."""
    from ..runtime import seed as seed_everything

    seed_everything(seed)
    return fit(build(), data, seed=seed, **fit_kwargs)


def compare(
    builders: Mapping[str, Callable[[], nn.Module]],
    data: Dataset,
    *,
    seeds: Iterable[int] = (0,),
    **fit_kwargs,
) -> Dict[str, List[History]]:
    """Train one fresh model per builder and seed: ``{name: [History for each seed]}``.

    With the same seed, every builder's model sees the same batch order. Builders that differ
    only in layers which draw no random numbers at construction (normlib's and torch's norm
    layers start at gamma = 1, beta = 0) also start from the same weights, so the
    normalization is then the only difference between the runs.
    """
    seeds = list(seeds)
    prefix = fit_kwargs.pop("desc", None)
    return {
        name: [run(build, data, seed=s, desc=f"{prefix or name}, seed {s}", **fit_kwargs) for s in seeds]
        for name, build in builders.items()
    }
