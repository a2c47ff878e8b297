"""The experiments on internal covariate shift (chapter 3), as probes for :func:`normlib.lab.train.fit`.

* :func:`percentile_probe` -- the BatchNorm paper's Figure 1: percentiles of one unit's input
  (in evaluation mode) and the per-step distribution shift of chosen layer inputs.
* :class:`Recorder` -- the noisy-BatchNorm experiment's probe: the loss on a probe batch at
  every call; every ``shift_every`` steps the distribution shift (after one SGD step, and
  optionally its floor with a step of size 0), the gradient ICS and one unit's values; the
  loss landscape the first time the loss reaches each of some levels ("matched loss").
* :func:`landscape` -- smoothness along the gradient and gradient ICS at the current state.
* :func:`periodic`, :func:`matched` -- the recorders' measurements of several seeds, stacked.
* :func:`by_seed`, :func:`times_largest`, :func:`count_above` -- the matched-loss landscape
  seed by seed, and each seed against the largest value of a reference's seeds.

Every measurement runs inside :func:`normlib.lab.train.sandbox` (through
:mod:`normlib.lab.probes`), so a probe leaves the training run exactly as it was.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from . import probes, train

__all__ = [
    "percentile_probe",
    "landscape",
    "Recorder",
    "periodic",
    "matched",
    "by_seed",
    "times_largest",
    "count_above",
]

Batch = Tuple[Tensor, Tensor]


def percentile_probe(
    x_eval: Tensor,
    unit_input: str,
    probe_x: Tensor,
    batch: Batch,
    shifts: Mapping[str, str],
    lr: float,
    *,
    unit: int = 0,
    quantiles: Sequence[float] = (0.15, 0.50, 0.85),
):
    """A probe for the BatchNorm paper's Figure 1.

    At each call it returns ``{"p15": ..., "p50": ..., "p85": ...}``: the percentiles of the
    input of module ``unit_input`` (e.g. ``"act3"``, the sigmoid), unit ``unit``, over
    ``x_eval`` in evaluation mode (BatchNorm uses its running statistics); and, for each
    ``key: module`` of ``shifts``, the distribution shift of that module's input over one SGD
    step of size ``lr`` on ``batch`` (:func:`normlib.lab.probes.layer_input_shift`, on ``probe_x``).
    """
    q = torch.tensor([float(v) for v in quantiles])
    names = [f"p{round(100 * float(v))}" for v in q]

    def probe(model: nn.Module) -> Dict[str, float]:
        with train.preserve_modes(model):
            model.eval()
            seen = train.capture(model, x_eval, [unit_input], where="input")
        values = torch.quantile(seen[unit_input][:, unit].double(), q.double())
        result = {name: float(v) for name, v in zip(names, values)}
        shift = probes.layer_input_shift(model, probe_x, batch, list(shifts.values()), lr)
        result.update({key: shift[module] for key, module in shifts.items()})
        return result

    return probe


def landscape(
    model: nn.Module,
    probe: Batch,
    batch: Batch,
    lr: float,
    step_sizes: Sequence[float],
    ics_layers: Mapping[str, str],
) -> Dict[str, object]:
    """Smoothness along the gradient on ``probe`` (:func:`normlib.lab.probes.along_gradient`: ``loss``,
    ``loss_range``, ``max_grad_change``, ``beta``) and, for each ``key: layer`` of
    ``ics_layers``, the gradient ICS ``(||G - G'||, cos)`` of that layer on ``batch``."""
    profile = probes.along_gradient(model, probe[0], probe[1], step_sizes)
    ics = probes.gradient_ics(model, batch, lr, layers=list(ics_layers.values()))
    result = {key: profile[key] for key in ("loss", "loss_range", "max_grad_change", "beta")}
    result.update({key: ics[layer] for key, layer in ics_layers.items()})
    return result


class Recorder:
    """The probe of the noisy-BatchNorm experiment, called by ``fit`` every ``every`` steps.

    * every call: ``{"loss": loss on probe}`` (returned, so ``History.probes["loss"]`` has it);
    * every ``shift_every`` steps, appended to ``self.periodic`` as ``(step, {...})``: for each
      ``key: module`` of ``shifts`` the distribution shift of the module's output over one SGD
      step of size ``lr`` on ``batch`` (``key``) and, with ``floor=True``, over a step of size
      0 (``key + "_floor"``: what the measurement reports when nothing is updated, e.g. a
      noisy layer's fresh draw); the gradient ICS of ``ics_layers``; and with ``keep_unit``
      (a module name) the values of unit 0 of that module's input, in training mode, in
      ``self.unit_values`` as ``(step, values)``;
    * with ``levels``, the first time the loss falls to each level: :func:`landscape` at the
      state (this call's or the previous call's) whose loss is closer to the level, in
      ``self.matched`` as ``{level: (step, landscape)}``.
    """

    def __init__(
        self,
        every: int,
        probe: Batch,
        batch: Batch,
        lr: float,
        shifts: Mapping[str, str],
        ics_layers: Mapping[str, str],
        *,
        shift_every: int = 50,
        floor: bool = False,
        levels: Sequence[float] = (),
        step_sizes: Sequence[float] = (),
        keep_unit: Optional[str] = None,
    ):
        if shift_every % every:
            raise ValueError(f"Recorder: shift_every={shift_every} is not a multiple of every={every}")
        if levels and not step_sizes:
            raise ValueError("Recorder: matching the loss at levels needs step_sizes for the landscape")
        self.every, self.shift_every = every, shift_every
        self.probe, self.batch, self.lr = probe, batch, lr
        self.shifts, self.ics_layers = dict(shifts), dict(ics_layers)
        self.floor, self.levels, self.step_sizes = floor, tuple(levels), list(step_sizes)
        self.keep_unit = keep_unit
        self.calls = 0
        self.periodic: List[Tuple[int, dict]] = []
        self.matched: Dict[float, Tuple[int, dict]] = {}
        self.unit_values: List[Tuple[int, Tensor]] = []
        self._previous = None  # (step, loss, state) of the last call

    def __call__(self, model: nn.Module) -> Dict[str, float]:
        step = self.every * self.calls
        with train.sandbox(model):
            loss = train.evaluate(model, *self.probe, mode="keep")[0]
        if step % self.shift_every == 0:
            self.periodic.append((step, self._measure(model, step)))
        if self.levels:
            self._match(model, step, loss)
        self.calls += 1
        return {"loss": loss}

    def _measure(self, model: nn.Module, step: int) -> dict:
        modules = list(self.shifts.values())
        found = {}
        for suffix, lr in [("", self.lr)] + ([("_floor", 0.0)] if self.floor else []):
            shift = probes.layer_input_shift(model, self.probe[0], self.batch, modules, lr)
            found.update({key + suffix: shift[m] for key, m in self.shifts.items()})
        ics = probes.gradient_ics(model, self.batch, self.lr, layers=list(self.ics_layers.values()))
        found.update({key: ics[layer] for key, layer in self.ics_layers.items()})
        if self.keep_unit is not None:
            with train.sandbox(model):  # training mode: a noisy layer draws its noise
                seen = train.capture(model, self.probe[0], [self.keep_unit], where="input")
            self.unit_values.append((step, seen[self.keep_unit][:, 0].clone()))
        return found

    def _match(self, model: nn.Module, step: int, loss: float) -> None:
        for level in self.levels:
            if level in self.matched or loss > level:
                continue
            previous = self._previous
            use_previous = previous is not None and abs(previous[1] - level) < abs(loss - level)
            with train.sandbox(model):
                if use_previous:
                    model.load_state_dict(previous[2])
                at = previous[0] if use_previous else step
                self.matched[level] = (
                    at,
                    landscape(model, self.probe, self.batch, self.lr, self.step_sizes, self.ics_layers),
                )
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self._previous = (step, loss, state)


def periodic(recorders: Sequence[Recorder], key: str) -> Tuple[np.ndarray, np.ndarray]:
    """``(steps, values)`` of a periodic measurement over seeds: ``values[seed, time]`` (with a
    trailing axis for pairs such as the gradient ICS). The recorders must share their steps."""
    steps = [s for s, _ in recorders[0].periodic]
    for r in recorders[1:]:
        if [s for s, _ in r.periodic] != steps:
            raise ValueError("periodic: the recorders measured at different steps")
    values = np.array([[np.asarray(m[key], dtype=float) for _, m in r.periodic] for r in recorders])
    return np.array(steps), values


def matched(recorders: Sequence[Recorder], level: float) -> List[Tuple[int, dict]]:
    """The ``(step, landscape)`` of every recorder (seed) whose loss reached ``level``."""
    return [r.matched[level] for r in recorders if level in r.matched]


def by_seed(recorders: Sequence[Recorder], level: float, key: str) -> List[Optional[float]]:
    """Per recorder (seed): ``key`` of its landscape at loss ``level`` (``"step"``: the step),
    or None where that seed's loss never reached ``level``."""
    found = [r.matched.get(level) for r in recorders]
    return [None if f is None else (f[0] if key == "step" else f[1][key]) for f in found]


def times_largest(
    recorders: Sequence[Recorder], reference: Sequence[Recorder], level: float, key: str
) -> List[Optional[float]]:
    """Per seed of ``recorders``: its ``key`` at ``level`` divided by the largest value of
    ``reference``'s seeds there (None where the seed never reached ``level``)."""
    reached = [v for v in by_seed(reference, level, key) if v is not None]
    if not reached:
        raise ValueError(f"times_largest: no reference seed reached the loss level {level}")
    largest = max(reached)
    return [None if v is None else v / largest for v in by_seed(recorders, level, key)]


def count_above(
    recorders: Sequence[Recorder], reference: Sequence[Recorder], levels: Sequence[float], key: str
) -> Tuple[int, int]:
    """Over ``levels`` and the seeds of ``recorders`` that reached them: (how many have a larger
    ``key`` than every seed of ``reference`` at the same level, how many reached a level)."""
    times = [t for level in levels for t in times_largest(recorders, reference, level, key)]
    times = [t for t in times if t is not None]
    return sum(t > 1 for t in times), len(times)
