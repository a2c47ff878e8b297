"""Recurrent cells with LayerNorm, and BatchNorm with per-time-step statistics.

Layer normalization (Ba et al., 2016) computes its statistics inside one sample at one
time step, so a recurrent cell can normalize at every step without looking at the rest
of the batch or at other time steps. :class:`LayerNormLSTMCell` follows the paper's
LN-LSTM: the two gate pre-activations ``W_ih x`` and ``W_hh h`` are normalized
*separately* (each over all ``4 * hidden_size`` gate units), the biases are added after
the normalization, and the new cell state is normalized before its ``tanh``::

    gates = LN_ih(x W_ih^T) + LN_hh(h W_hh^T) + b_ih + b_hh   (i, f, g, o)
    c'    = sigmoid(f) * c + sigmoid(i) * tanh(g)
    h'    = sigmoid(o) * tanh(LN_cell(c'))

The gate norms learn a gain only: a shift there would duplicate ``b_ih + b_hh``. The cell
state norm learns a gain and a shift. Every LayerNorm is :class:`normlib.LayerNorm`, the
course's one recipe.

The cells take the same arguments, accept the same inputs (``(N, I)`` or unbatched
``(I,)``, optional state) and hold the same parameters (``weight_ih``, ``weight_hh``,
``bias_ih``, ``bias_hh``, same shapes, same initialization) as ``torch.nn.LSTMCell`` and
``torch.nn.GRUCell``. With ``layer_norm=False`` they have no other parameters and compute
exactly what the torch cells compute. :class:`LayerNormLSTM` and :class:`LayerNormGRU` run
a stack of cells over a whole sequence, like ``torch.nn.LSTM``/``GRU``, and take the
length of each sequence so that padding never enters the computation.

:class:`TimeStepBatchNorm` is the BatchNorm a recurrent network would need instead: one
set of batch statistics (and running statistics) per time step, as in recurrent batch
normalization (Cooijmans et al., 2016). Chapter 6 uses it to show what goes wrong.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn
from torch.nn import functional as TF

from .batchnorm import BatchNorm1d
from .normalization import LayerNorm

__all__ = [
    "LayerNormLSTMCell",
    "LayerNormGRUCell",
    "LayerNormLSTM",
    "LayerNormGRU",
    "TimeStepBatchNorm",
    "lengths_mask",
]

Lengths = Union[Tensor, Sequence[int]]


# --------------------------------------------------------------------------- cells


class _LayerNormCellBase(nn.Module):
    """Parameters and checks shared by the LSTM and GRU cells (torch's ``RNNCellBase``)."""

    num_gates: int  # 4 for the LSTM (i, f, g, o), 3 for the GRU (r, z, n)
    _name: str

    __constants__ = ["input_size", "hidden_size", "bias", "layer_norm"]

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        layer_norm: bool = True,
        eps: float = 1e-5,
        device=None,
        dtype=None,
    ) -> None:
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        self.layer_norm = layer_norm
        gates = self.num_gates * hidden_size
        # Same names, shapes and registration order as torch.nn.LSTMCell/GRUCell.
        self.weight_ih = nn.Parameter(torch.empty(gates, input_size, **factory_kwargs))
        self.weight_hh = nn.Parameter(torch.empty(gates, hidden_size, **factory_kwargs))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(gates, **factory_kwargs))
            self.bias_hh = nn.Parameter(torch.empty(gates, **factory_kwargs))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        if layer_norm:
            # Gain only: the shift of the gates is bias_ih + bias_hh, added after the norm.
            self.norm_ih = LayerNorm(gates, eps=eps, bias=False, **factory_kwargs)
            self.norm_hh = LayerNorm(gates, eps=eps, bias=False, **factory_kwargs)
        else:
            # No extra parameters at all: the state dict is torch's, key for key.
            self.register_module("norm_ih", None)
            self.register_module("norm_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # torch's initialization, drawn in torch's order: with the same seed a cell starts
        # from the same weights as torch.nn.LSTMCell/GRUCell. LayerNorm starts as gain 1, shift 0.
        stdv = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
        for weight in (self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh):
            if weight is not None:
                nn.init.uniform_(weight, -stdv, stdv)
        for module in self.children():
            module.reset_parameters()

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            text += ", bias=False"
        return text + f", layer_norm={self.layer_norm}"

    # -- the two halves of a step: the sequence wrappers call them separately

    def input_gates(self, input: Tensor) -> Tensor:
        """``LN_ih(x W_ih^T) + b_ih`` for inputs of any leading shape ``(..., input_size)``.

        It does not depend on the state, so a sequence wrapper computes it for every time
        step at once.
        """
        gates = TF.linear(input, self.weight_ih)
        if self.norm_ih is not None:
            gates = self.norm_ih(gates)
        return gates if self.bias_ih is None else gates + self.bias_ih

    def hidden_gates(self, hidden: Tensor) -> Tensor:
        """``LN_hh(h W_hh^T) + b_hh``."""
        gates = TF.linear(hidden, self.weight_hh)
        if self.norm_hh is not None:
            gates = self.norm_hh(gates)
        return gates if self.bias_hh is None else gates + self.bias_hh

    # -- input checks, with torch's exception types

    def _check_input(self, input: Tensor) -> bool:
        """Rank and size checks; returns whether the input is batched."""
        if input.dim() not in (1, 2):
            raise ValueError(f"{self._name}: Expected input to be 1D or 2D, got {input.dim()}D instead")
        if input.shape[-1] != self.input_size:
            raise RuntimeError(
                f"{self._name}: input has inconsistent input_size: got {input.shape[-1]} expected {self.input_size}"
            )
        return input.dim() == 2

    def _check_state(self, state: Tensor, what: str, input: Tensor) -> None:
        if state.dim() not in (1, 2):
            raise ValueError(f"{self._name}: Expected {what} to be 1D or 2D, got {state.dim()}D instead")
        if state.dim() != input.dim():
            raise RuntimeError(
                f"{self._name}: {what} is {state.dim()}D but the input is {input.dim()}D: "
                "a batched input needs a batched state (N, hidden_size), an unbatched one (hidden_size,)"
            )
        if state.shape[-1] != self.hidden_size:
            raise RuntimeError(
                f"{self._name}: {what} has inconsistent hidden_size: got {state.shape[-1]}, expected {self.hidden_size}"
            )
        if input.dim() == 2 and state.shape[0] != input.shape[0]:
            raise RuntimeError(
                f"{self._name}: Input batch size {input.shape[0]} doesn't match {what} batch size {state.shape[0]}"
            )

    def _zeros(self, input: Tensor) -> Tensor:
        return torch.zeros(*input.shape[:-1], self.hidden_size, dtype=input.dtype, device=input.device)

    @classmethod
    def from_torch(cls, cell: nn.Module, layer_norm: bool = True, eps: float = 1e-5):
        """A cell holding a copy of ``cell``'s weights (a ``torch.nn.LSTMCell``/``GRUCell``).

        With ``layer_norm=True`` the LayerNorms start as the identity map's neighbours:
        gain 1, shift 0 (what a fresh LayerNorm holds).
        """
        torch_class = nn.LSTMCell if cls.num_gates == 4 else nn.GRUCell
        if not isinstance(cell, torch_class):
            raise TypeError(
                f"{cls.__name__}.from_torch expects a torch.nn.{torch_class.__name__}, got {type(cell).__name__}"
            )
        weight = cell.weight_ih
        new = cls(
            cell.input_size, cell.hidden_size, cell.bias, layer_norm, eps, device=weight.device, dtype=weight.dtype
        )
        new.load_state_dict(cell.state_dict(), strict=not layer_norm)
        return new


class LayerNormLSTMCell(_LayerNormCellBase):
    """An LSTM cell with LayerNorm on its gates and cell state (Ba et al., 2016).

    Same constructor arguments, inputs, outputs and parameters as ``torch.nn.LSTMCell``,
    plus ``layer_norm`` (default ``True``) and ``eps`` for the LayerNorms. Call it as
    ``h1, c1 = cell(x)`` or ``cell(x, (h0, c0))`` with ``x`` of shape ``(N, input_size)``
    or ``(input_size,)`` and states of shape ``(N, hidden_size)`` or ``(hidden_size,)``;
    a missing state is zeros.

    With ``layer_norm=True`` the cell also holds ``norm_ih`` and ``norm_hh`` (gains over
    the ``4 * hidden_size`` gate units) and ``norm_cell`` (gain and shift over the
    ``hidden_size`` cell units). With ``layer_norm=False`` it is ``torch.nn.LSTMCell``.
    """

    num_gates = 4
    _name = "LSTMCell"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        layer_norm: bool = True,
        eps: float = 1e-5,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__(input_size, hidden_size, bias, layer_norm, eps, device, dtype)
        if layer_norm:
            self.norm_cell = LayerNorm(hidden_size, eps=eps, device=device, dtype=dtype)
        else:
            self.register_module("norm_cell", None)

    def step(self, input_gates: Tensor, state: Tuple[Tensor, Tensor]) -> Tuple[Tensor, Tensor]:
        """One step from precomputed :meth:`input_gates`; ``state`` is ``(h, c)``."""
        h, c = state
        gates = input_gates + self.hidden_gates(h)
        i, f, g, o = gates.chunk(4, dim=-1)  # torch's gate order
        c_next = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        cell_out = c_next if self.norm_cell is None else self.norm_cell(c_next)
        h_next = torch.sigmoid(o) * torch.tanh(cell_out)
        return h_next, c_next

    def forward(self, input: Tensor, hx: Optional[Tuple[Tensor, Tensor]] = None) -> Tuple[Tensor, Tensor]:
        self._check_input(input)
        if hx is None:
            zeros = self._zeros(input)
            hx = (zeros, zeros)
        else:
            if len(hx) != 2:
                raise ValueError(f"LSTMCell: Expected hx to be a pair (h, c), got {len(hx)} tensors")
            for index, state in enumerate(hx):
                self._check_state(state, f"hx[{index}]", input)
        return self.step(self.input_gates(input), hx)


class LayerNormGRUCell(_LayerNormCellBase):
    """A GRU cell with LayerNorm on ``W_ih x`` and ``W_hh h`` (each over the 3 gates).

    Same constructor arguments, inputs, outputs and parameters as ``torch.nn.GRUCell``,
    plus ``layer_norm`` and ``eps``. As in torch, the reset gate multiplies the hidden
    part of the candidate after its bias: ``n = tanh(gi_n + r * gh_n)`` with
    ``gi = LN_ih(x W_ih^T) + b_ih`` and ``gh = LN_hh(h W_hh^T) + b_hh``. The GRU has no
    separate cell state, so there is no third norm. With ``layer_norm=False`` it is
    ``torch.nn.GRUCell``.
    """

    num_gates = 3
    _name = "GRUCell"

    def step(self, input_gates: Tensor, hidden: Tensor) -> Tensor:
        """One step from precomputed :meth:`input_gates`."""
        gi_r, gi_z, gi_n = input_gates.chunk(3, dim=-1)  # torch's gate order
        gh_r, gh_z, gh_n = self.hidden_gates(hidden).chunk(3, dim=-1)
        reset = torch.sigmoid(gi_r + gh_r)
        update = torch.sigmoid(gi_z + gh_z)
        candidate = torch.tanh(gi_n + reset * gh_n)
        return (1 - update) * candidate + update * hidden

    def forward(self, input: Tensor, hx: Optional[Tensor] = None) -> Tensor:
        self._check_input(input)
        if hx is None:
            hx = self._zeros(input)
        else:
            self._check_state(hx, "hidden", input)
        return self.step(self.input_gates(input), hx)


# --------------------------------------------------------------------------- sequences


def lengths_mask(lengths: Lengths, steps: int, device=None) -> Tensor:
    """Boolean ``(steps, N)`` mask: ``mask[t, n]`` is true while ``t < lengths[n]``.

    ``lengths`` holds one integer per sequence, each between 0 and ``steps``.
    """
    lengths = torch.as_tensor(lengths, device=device)
    if lengths.dim() != 1 or lengths.is_floating_point() or lengths.is_complex():
        raise ValueError(
            f"lengths must be a 1-D sequence of integers, got shape {tuple(lengths.shape)} of {lengths.dtype}"
        )
    if lengths.numel() and (int(lengths.min()) < 0 or int(lengths.max()) > steps):
        raise ValueError(
            f"lengths must lie between 0 and the number of time steps {steps}, "
            f"got min {int(lengths.min())} and max {int(lengths.max())}"
        )
    return torch.arange(steps, device=lengths.device)[:, None] < lengths[None, :]


class _LayerNormRecurrentBase(nn.Module):
    """A stack of cells run over a sequence, with torch.nn.LSTM/GRU's shapes and conventions."""

    cell_class: type
    _name: str

    __constants__ = ["input_size", "hidden_size", "num_layers", "bias", "batch_first", "layer_norm"]

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        layer_norm: bool = True,
        eps: float = 1e-5,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.layer_norm = layer_norm
        self.cells = nn.ModuleList(
            self.cell_class(
                input_size if layer == 0 else hidden_size,
                hidden_size,
                bias,
                layer_norm,
                eps,
                device=device,
                dtype=dtype,
            )
            for layer in range(num_layers)
        )

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, batch_first={self.batch_first}"

    def _prepare(self, input: Tensor, lengths: Optional[Lengths]):
        """(T, N, I) view of the input, whether it was batched, and the (T, N, 1) mask or None."""
        if input.dim() not in (2, 3):
            raise ValueError(f"{self._name}: Expected input to be 2D (unbatched) or 3D, got {input.dim()}D instead")
        if input.shape[-1] != self.input_size:
            raise RuntimeError(
                f"{self._name}: input.size(-1) must be equal to input_size. Expected {self.input_size}, got {input.shape[-1]}"
            )
        batched = input.dim() == 3
        x = input.unsqueeze(1) if not batched else (input.transpose(0, 1) if self.batch_first else input)
        mask = None
        if lengths is not None:
            mask = lengths_mask(lengths, x.shape[0], device=x.device)
            if mask.shape[1] != x.shape[1]:
                raise ValueError(f"{self._name}: got {mask.shape[1]} lengths for a batch of {x.shape[1]} sequences")
            mask = mask.unsqueeze(-1)
        return x, batched, mask

    def _check_state(self, state: Tensor, what: str, batch: int, batched: bool) -> Tensor:
        expected = (self.num_layers, batch, self.hidden_size) if batched else (self.num_layers, self.hidden_size)
        if tuple(state.shape) != expected:
            raise RuntimeError(f"{self._name}: Expected {what} size {expected}, got {tuple(state.shape)}")
        return state if batched else state.unsqueeze(1)

    def _output(self, output: Tensor, batched: bool) -> Tensor:
        if not batched:
            return output.squeeze(1)
        return output.transpose(0, 1) if self.batch_first else output

    def _run(self, x: Tensor, states: Sequence, mask: Optional[Tensor]):
        """Run every layer over the (T, N, I) input; ``states[layer]`` is that layer's initial state."""
        finals = []
        for cell, state in zip(self.cells, states):
            gates = cell.input_gates(x)  # every time step at once: it does not depend on the state
            outputs = []
            for t in range(x.shape[0]):
                new = cell.step(gates[t], state)
                if mask is None:
                    state = new
                    outputs.append(new[0] if isinstance(new, tuple) else new)
                else:
                    # Past a sequence's end its state stays as it was and its output is zero.
                    keep = mask[t]
                    if isinstance(new, tuple):
                        state = tuple(torch.where(keep, n, s) for n, s in zip(new, state))
                        outputs.append(new[0] * keep)
                    else:
                        state = torch.where(keep, new, state)
                        outputs.append(new * keep)
            x = torch.stack(outputs) if outputs else x.new_zeros(0, x.shape[1], self.hidden_size)
            finals.append(state)
        return x, finals

    @classmethod
    def from_torch(cls, module: nn.Module, layer_norm: bool = True, eps: float = 1e-5):
        """A copy of a ``torch.nn.LSTM``/``GRU`` (unidirectional, no projection, no dropout)."""
        torch_class = nn.LSTM if cls.cell_class is LayerNormLSTMCell else nn.GRU
        if not isinstance(module, torch_class):
            raise TypeError(
                f"{cls.__name__}.from_torch expects a torch.nn.{torch_class.__name__}, got {type(module).__name__}"
            )
        if module.bidirectional or getattr(module, "proj_size", 0) or module.dropout:
            raise ValueError(f"{cls.__name__}.from_torch: bidirectional, proj_size and dropout are not supported")
        weight = module.weight_ih_l0
        new = cls(
            module.input_size,
            module.hidden_size,
            module.num_layers,
            module.bias,
            module.batch_first,
            layer_norm,
            eps,
            device=weight.device,
            dtype=weight.dtype,
        )
        with torch.no_grad():
            for layer, cell in enumerate(new.cells):
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    if getattr(cell, name) is not None:
                        getattr(cell, name).copy_(getattr(module, f"{name}_l{layer}"))
        return new


class LayerNormLSTM(_LayerNormRecurrentBase):
    """A stack of :class:`LayerNormLSTMCell` run over sequences, like ``torch.nn.LSTM``.

    ``output, (h_n, c_n) = lstm(x, hx=None, lengths=None)`` with ``x`` of shape
    ``(T, N, input_size)`` (``(N, T, input_size)`` with ``batch_first=True``) or unbatched
    ``(T, input_size)``; ``hx = (h_0, c_0)``, each ``(num_layers, N, hidden_size)``
    (``(num_layers, hidden_size)`` unbatched), zeros when missing. ``output`` holds the
    last layer's ``h`` at every step; ``h_n`` and ``c_n`` the state after each layer's
    last step.

    ``lengths`` (one integer per sequence) handles padded batches the way a
    ``PackedSequence`` does in torch: a sequence's state stops changing after its last
    real step, so ``h_n``/``c_n`` are the states at that step, and ``output`` is zero at
    padded positions. Padding never enters a LayerNorm (its statistics are per sample and
    per step anyway). ``cells[k]`` is layer ``k``'s cell.
    """

    cell_class = LayerNormLSTMCell
    _name = "LSTM"

    def forward(
        self, input: Tensor, hx: Optional[Tuple[Tensor, Tensor]] = None, lengths: Optional[Lengths] = None
    ) -> Tuple[Tensor, Tuple[Tensor, Tensor]]:
        x, batched, mask = self._prepare(input, lengths)
        if hx is None:
            zeros = x.new_zeros(self.num_layers, x.shape[1], self.hidden_size)
            h0, c0 = zeros, zeros
        else:
            if len(hx) != 2:
                raise ValueError(f"LSTM: Expected hx to be a pair (h_0, c_0), got {len(hx)} tensors")
            h0 = self._check_state(hx[0], "hidden[0]", x.shape[1], batched)
            c0 = self._check_state(hx[1], "hidden[1]", x.shape[1], batched)
        output, finals = self._run(x, [(h0[k], c0[k]) for k in range(self.num_layers)], mask)
        h_n = torch.stack([h for h, _ in finals])
        c_n = torch.stack([c for _, c in finals])
        if not batched:
            h_n, c_n = h_n.squeeze(1), c_n.squeeze(1)
        return self._output(output, batched), (h_n, c_n)


class LayerNormGRU(_LayerNormRecurrentBase):
    """A stack of :class:`LayerNormGRUCell` run over sequences, like ``torch.nn.GRU``.

    ``output, h_n = gru(x, hx=None, lengths=None)``; shapes and ``lengths`` as in
    :class:`LayerNormLSTM`.
    """

    cell_class = LayerNormGRUCell
    _name = "GRU"

    def forward(
        self, input: Tensor, hx: Optional[Tensor] = None, lengths: Optional[Lengths] = None
    ) -> Tuple[Tensor, Tensor]:
        x, batched, mask = self._prepare(input, lengths)
        if hx is None:
            h0 = x.new_zeros(self.num_layers, x.shape[1], self.hidden_size)
        else:
            h0 = self._check_state(hx, "hidden", x.shape[1], batched)
        output, finals = self._run(x, [h0[k] for k in range(self.num_layers)], mask)
        h_n = torch.stack(finals)
        if not batched:
            h_n = h_n.squeeze(1)
        return self._output(output, batched), h_n


# --------------------------------------------------------------------------- BatchNorm over time


class TimeStepBatchNorm(nn.Module):
    """BatchNorm for sequences with separate statistics at every time step.

    The BatchNorm a recurrent network needs, because the distribution of its activations
    changes with the time step (recurrent batch normalization, Cooijmans et al., 2016):
    step ``t`` is normalized over the batch with its own statistics, and keeps its own
    running statistics (``steps[t]``, a :class:`normlib.BatchNorm1d` without affine
    parameters). ``weight``/``bias`` (gamma/beta) are shared by all steps.

    ``forward(x, lengths=None)`` takes ``(T, N, num_features)``. With ``lengths``, step
    ``t`` computes its statistics from the sequences still running at ``t`` only, and
    padded positions are returned as zeros; without it, padding counts as data. What goes
    wrong, on purpose, as with any BatchNorm:

    * in training, a step at which only one sequence is still running has one value per
      feature, and raises the ``ValueError`` of a batch of one;
    * a sequence longer than ``max_steps`` has steps without statistics: that raises an
      ``IndexError`` unless ``beyond_max="last"``, which reuses the statistics of the last
      step (Cooijmans et al.'s choice at test time).
    """

    def __init__(
        self,
        num_features: int,
        max_steps: int,
        eps: float = 1e-5,
        momentum: Optional[float] = 0.1,
        affine: bool = True,
        beyond_max: str = "error",
        device=None,
        dtype=None,
    ) -> None:
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__()
        if max_steps < 1:
            raise ValueError(f"max_steps must be at least 1, got {max_steps}")
        if beyond_max not in ("error", "last"):
            raise ValueError(f"beyond_max must be 'error' or 'last', got {beyond_max!r}")
        self.num_features = num_features
        self.max_steps = max_steps
        self.beyond_max = beyond_max
        self.steps = nn.ModuleList(
            BatchNorm1d(num_features, eps=eps, momentum=momentum, affine=False, **factory_kwargs)
            for _ in range(max_steps)
        )
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features, **factory_kwargs))
            self.bias = nn.Parameter(torch.zeros(num_features, **factory_kwargs))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def extra_repr(self) -> str:
        return f"{self.num_features}, max_steps={self.max_steps}, beyond_max={self.beyond_max!r}"

    def norm_at(self, t: int) -> BatchNorm1d:
        """The BatchNorm (statistics) used at time step ``t``."""
        if t < self.max_steps:
            return self.steps[t]
        if self.beyond_max == "last":
            return self.steps[-1]
        raise IndexError(
            f"TimeStepBatchNorm has statistics for {self.max_steps} time steps, but the sequence has a step {t}: "
            "no batch of training sequences was that long (pass beyond_max='last' to reuse the last step's statistics)"
        )

    def forward(self, input: Tensor, lengths: Optional[Lengths] = None) -> Tensor:
        if input.dim() != 3 or input.shape[-1] != self.num_features:
            raise ValueError(
                f"TimeStepBatchNorm: expected input of shape (T, N, {self.num_features}), got {tuple(input.shape)}"
            )
        mask = None if lengths is None else lengths_mask(lengths, input.shape[0], device=input.device)
        if mask is not None and mask.shape[1] != input.shape[1]:
            raise ValueError(
                f"TimeStepBatchNorm: got {mask.shape[1]} lengths for a batch of {input.shape[1]} sequences"
            )
        outputs = []
        for t in range(input.shape[0]):
            norm = self.norm_at(t)
            if mask is None:
                y = norm(input[t])
            else:
                y = input.new_zeros(input[t].shape)
                running = mask[t]
                if bool(running.any()):
                    y = y.index_put((running.nonzero().squeeze(1),), norm(input[t][running]))
            outputs.append(y)
        y = torch.stack(outputs)
        if self.weight is not None:
            y = y * self.weight + self.bias
            if mask is not None:
                y = y * mask.unsqueeze(-1)
        return y
