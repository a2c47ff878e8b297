"""Swap the normalization layers of any model between ``torch.nn`` and normlib.

``model = normlib.convert(model)`` replaces every ``torch.nn`` BatchNorm1d/2d/3d,
InstanceNorm1d/2d/3d, LayerNorm, GroupNorm and RMSNorm inside ``model`` by normlib's layer of
the same class name; ``normlib.to_torch(model)`` does the reverse, for deployment where normlib
is not installed. The new layer takes over the old one's *own* parameter and buffer tensors
(no copy), so

* ``state_dict`` keys and values, ``requires_grad``, device and dtype stay as they were, and an
  optimizer built before the conversion still updates the model's parameters;
* the training mode (``model.training`` of each layer) is kept;
* hooks registered on a layer (forward, forward-pre, backward, state-dict) move with it, and
  their handles still remove them.

The walk follows ``named_children``; a layer used in two places (shared weights) becomes one
normlib layer used in the same two places. A subclass of a torch norm layer may carry code of
its own, and a lazy layer has no shapes yet: both raise a :class:`TypeError` that names the
module, rather than being converted into something that behaves differently.
"""

from __future__ import annotations

from typing import Callable, Dict, Tuple, Type

from torch import nn
from torch.nn.modules.module import _WrappedHook

from .batchnorm import BatchNorm1d, BatchNorm2d, BatchNorm3d, InstanceNorm1d, InstanceNorm2d, InstanceNorm3d
from .normalization import GroupNorm, LayerNorm, RMSNorm
from .syncbatchnorm import SyncBatchNorm

__all__ = ["convert", "convert_sync", "to_torch", "CONVERSIONS"]


def _bias_kwarg(m, affine: bool) -> dict:
    # ``bias=False`` (a gamma without a beta) only when it applies: older torch has no such argument.
    return {"bias": False} if affine and m.bias is None else {}


def _norm_base_args(m) -> Tuple[tuple, dict]:
    return (m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats), _bias_kwarg(m, m.affine)


def _layer_norm_args(m) -> Tuple[tuple, dict]:
    return (m.normalized_shape, m.eps, m.elementwise_affine), _bias_kwarg(m, m.elementwise_affine)


def _group_norm_args(m) -> Tuple[tuple, dict]:
    return (m.num_groups, m.num_channels, m.eps, m.affine), _bias_kwarg(m, m.affine)


def _rms_norm_args(m) -> Tuple[tuple, dict]:
    return (m.normalized_shape, m.eps, m.elementwise_affine), {}


# (torch class, normlib class, constructor arguments read off a layer of either class)
_PAIRS = [
    (nn.BatchNorm1d, BatchNorm1d, _norm_base_args),
    (nn.BatchNorm2d, BatchNorm2d, _norm_base_args),
    (nn.BatchNorm3d, BatchNorm3d, _norm_base_args),
    (nn.InstanceNorm1d, InstanceNorm1d, _norm_base_args),
    (nn.InstanceNorm2d, InstanceNorm2d, _norm_base_args),
    (nn.InstanceNorm3d, InstanceNorm3d, _norm_base_args),
    (nn.LayerNorm, LayerNorm, _layer_norm_args),
    (nn.GroupNorm, GroupNorm, _group_norm_args),
]
if hasattr(nn, "RMSNorm"):  # torch >= 2.4
    _PAIRS.append((nn.RMSNorm, RMSNorm, _rms_norm_args))

#: torch.nn class -> normlib class, the layers :func:`~normlib.convert` replaces.
#:
#: :meta hide-value:
CONVERSIONS: Dict[Type[nn.Module], Type[nn.Module]] = {t: n for t, n, _ in _PAIRS}
_ARGS: Dict[Type[nn.Module], Callable] = {}
for _t, _n, _a in _PAIRS:
    _ARGS[_t] = _ARGS[_n] = _a
_TO_TORCH: Dict[Type[nn.Module], Type[nn.Module]] = {n: t for t, n, _ in _PAIRS}

# convert(model, sync=True) and SyncBatchNorm.convert_sync_batchnorm: every BatchNorm1d/2d/3d,
# torch's or normlib's, and every SyncBatchNorm, torch's or normlib's, becomes normlib's SyncBatchNorm.
_SYNC_SOURCES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
_SYNC_SOURCES += (BatchNorm1d, BatchNorm2d, BatchNorm3d, SyncBatchNorm)
_TO_SYNC: Dict[Type[nn.Module], Type[nn.Module]] = {c: SyncBatchNorm for c in _SYNC_SOURCES}
for _c in _SYNC_SOURCES:
    _ARGS[_c] = _norm_base_args

# Roots of the class trees a subclass of which we refuse (it may override forward).
_TORCH_ROOTS = tuple(t for t, _, _ in _PAIRS) + (nn.modules.batchnorm._NormBase,)
_NORMLIB_ROOTS = tuple(n for _, n, _ in _PAIRS)

_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
)


def _swap(old: nn.Module, new_cls: Type[nn.Module]) -> nn.Module:
    """A ``new_cls`` layer with ``old``'s configuration, tensors, mode and hooks."""
    args, kwargs = _ARGS[type(old)](old)
    # Built on the meta device (no memory), then handed old's own tensors.
    new = new_cls(*args, **kwargs, device="meta")
    old_tensors = dict(old.named_parameters(recurse=False)) | dict(old.named_buffers(recurse=False))
    new_tensors = dict(new.named_parameters(recurse=False)) | dict(new.named_buffers(recurse=False))
    if old_tensors.keys() != new_tensors.keys():  # a configuration we do not read: never half-convert
        raise TypeError(
            f"cannot convert {old!r}: its tensors {sorted(old_tensors)} differ from those of "
            f"{new_cls.__module__}.{new_cls.__name__} built with the same arguments ({sorted(new_tensors)})"
        )
    for name in old._parameters:
        new._parameters[name] = old._parameters[name]
    for name in old._buffers:
        new._buffers[name] = old._buffers[name]
    new._non_persistent_buffers_set = set(old._non_persistent_buffers_set)
    for attr in _HOOK_DICTS:
        if hasattr(old, attr):
            setattr(new, attr, getattr(old, attr))
    # Which kind of backward hooks _backward_hooks holds (full or legacy); without it (None)
    # torch runs none of them.
    new._is_full_backward_hook = getattr(old, "_is_full_backward_hook", None)
    # register_load_state_dict_pre_hook binds its hook to the module by a weak reference:
    # rebind those of old to new, or they would get old, and fail once old is collected.
    hooks = getattr(new, "_load_state_dict_pre_hooks", {})
    for key, hook in list(hooks.items()):
        if isinstance(hook, _WrappedHook) and hook.with_module and hook.module() is old:
            hooks[key] = _WrappedHook(hook.hook, new)
    new.train(old.training)
    return new


def _check_convertible(module: nn.Module, roots: tuple, table: dict, direction: str) -> None:
    if isinstance(module, nn.modules.lazy.LazyModuleMixin) and isinstance(module, roots):
        raise TypeError(
            f"{direction}: {type(module).__name__} is a lazy layer whose shapes are not known yet; "
            "run one forward pass first (it then becomes an ordinary layer) and convert after"
        )
    if type(module) not in table and isinstance(module, roots):
        parents = [c.__name__ for c in type(module).__mro__ if c in table]
        raise TypeError(
            f"{direction}: cannot map {type(module).__module__}.{type(module).__name__}, a subclass of "
            f"{parents[0] if parents else 'a norm layer'} that may change its behaviour; "
            f"the layers it maps are exactly: {', '.join(c.__name__ for c in table)}"
        )


def _walk(
    module: nn.Module, table: dict, roots: tuple, direction: str, memo: Dict[int, nn.Module], configure=None
) -> nn.Module:
    if id(module) in memo:
        return memo[id(module)]
    if type(module) in table:
        out = _swap(module, table[type(module)])
        if configure is not None:
            configure(module, out)
    else:
        out = module
        # _modules, not named_children(): that lists a child used twice in one container once.
        for name, child in list(module._modules.items()):
            if child is None:
                continue
            new_child = _walk(child, table, roots, direction, memo, configure)
            if new_child is not child:
                setattr(module, name, new_child)
    memo[id(module)] = out
    return out


def _convert_all(module: nn.Module, table: dict, roots: tuple, direction: str, configure=None) -> nn.Module:
    if not isinstance(module, nn.Module):
        raise TypeError(f"{direction}: expected a torch.nn.Module, got {type(module).__name__}")
    for m in module.modules():  # refuse before swapping anything: never leave a model half-converted
        _check_convertible(m, roots, table, direction)
    return _walk(module, table, roots, direction, {}, configure)


def convert_sync(module: nn.Module, process_group=None, only_batch_norm: bool = False) -> nn.Module:
    """``convert(module, sync=True)``: BatchNorm1d/2d/3d and SyncBatchNorm layers, torch's and
    normlib's, become :class:`~normlib.SyncBatchNorm` over ``process_group`` (``None``: the
    default group, or the group an old SyncBatchNorm had); with ``only_batch_norm`` nothing
    else changes (``SyncBatchNorm.convert_sync_batchnorm``), else the other torch norm layers
    become normlib's as in :func:`convert`. Tensors, mode and hooks are kept."""
    if only_batch_norm:
        table, roots = _TO_SYNC, _SYNC_SOURCES
        direction = "normlib.SyncBatchNorm.convert_sync_batchnorm"
    else:
        table, roots, direction = {**CONVERSIONS, **_TO_SYNC}, _TORCH_ROOTS + _SYNC_SOURCES, "normlib.convert"

    def configure(old: nn.Module, new: nn.Module) -> None:
        new.process_group = process_group if process_group is not None else getattr(old, "process_group", None)

    return _convert_all(module, table, roots, direction, configure)


def convert(module: nn.Module, sync: bool = False, process_group=None) -> nn.Module:
    """Replace every torch.nn norm layer in ``module`` by normlib's, in place; return the model.

    Converted: ``torch.nn`` BatchNorm1d/2d/3d, InstanceNorm1d/2d/3d, LayerNorm, GroupNorm and
    RMSNorm (exact classes; see the module docstring for what is kept). Use the return value:
    when ``module`` itself is a norm layer, the normlib layer that replaces it is returned.

    With ``sync=True`` every BatchNorm1d/2d/3d, torch's or normlib's (and torch's
    ``SyncBatchNorm``), becomes a :class:`~normlib.SyncBatchNorm` over ``process_group``
    (default ``None``: the whole world), for data-parallel training; the other layers are
    converted as without it. Default: ``sync=False``.

    >>> model = nn.Sequential(
    ...     nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(inplace=True)
    ... )
    >>> model = convert(model)
    >>> type(model[1]).__module__
    'normlib.batchnorm'

    Raises :class:`TypeError` for a subclass of one of these classes (it may override
    ``forward``) and for a lazy layer not yet initialized.
    """
    if sync:
        return convert_sync(module, process_group)
    if process_group is not None:
        raise ValueError("normlib.convert: process_group applies only with sync=True")
    return _convert_all(module, CONVERSIONS, _TORCH_ROOTS, "normlib.convert")


def to_torch(module: nn.Module) -> nn.Module:
    """The reverse of :func:`convert`: every normlib norm layer in ``module`` becomes the torch.nn
    layer of the same name, with the same tensors, mode and hooks; returns the model.

    For deployment where normlib is not installed. Layers that exist only in normlib (IBNorm,
    the LayerNorm LSTM/GRU cells, TimeStepBatchNorm) stay, with their norm layers inside
    converted.
    """
    return _convert_all(module, _TO_TORCH, _NORMLIB_ROOTS, "normlib.to_torch")
