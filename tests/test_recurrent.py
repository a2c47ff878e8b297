"""normlib.recurrent: LayerNorm LSTM/GRU cells and sequence wrappers, TimeStepBatchNorm.

With layer_norm=False the cells and wrappers must be torch.nn.LSTMCell/GRUCell/LSTM/GRU
(same weights -> same outputs and gradients). With layer_norm=True they must compute Ba et
al.'s LN-LSTM, checked against an independent formula written with torch's own layer_norm.
"""

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as TF
from conftest import assert_close, make_gen, randn, skip_unsupported
from torch.autograd import gradcheck
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import normlib
from normlib.recurrent import lengths_mask

CELLS = [
    pytest.param(normlib.LayerNormLSTMCell, nn.LSTMCell, id="lstm"),
    pytest.param(normlib.LayerNormGRUCell, nn.GRUCell, id="gru"),
]
WRAPPERS = [
    pytest.param(normlib.LayerNormLSTM, nn.LSTM, id="lstm"),
    pytest.param(normlib.LayerNormGRU, nn.GRU, id="gru"),
]
DTYPES = [pytest.param(torch.float64, id="f64"), pytest.param(torch.float32, id="f32")]


def is_lstm(cls):
    return cls in (normlib.LayerNormLSTMCell, normlib.LayerNormLSTM, nn.LSTMCell, nn.LSTM)


def randomize(module, gen, scale=0.5):
    """Non-default values for every parameter (LayerNorm gains around 1, shifts around 0)."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float64) * scale
            p.copy_((noise + (1.0 if name.startswith("norm") and name.endswith("weight") else 0.0)).to(p.dtype))
    return module


def state_for(cls, shape, gen, dtype=torch.float64, device="cpu"):
    """A random (h, c) for LSTM classes, h for GRU classes."""
    h = randn(shape, gen, dtype, device, scale=0.5, shift=0.0)
    return (h, randn(shape, gen, dtype, device, scale=0.5, shift=0.0)) if is_lstm(cls) else h


def as_tuple(out):
    return out if isinstance(out, tuple) else (out,)


def leaves(state):
    return tuple(s.detach().clone().requires_grad_(True) for s in as_tuple(state))


# --------------------------------------------------------------------------- cells: parity with torch


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("ours_cls, torch_cls", CELLS)
def test_cell_without_layer_norm_is_the_torch_cell(ours_cls, torch_cls, batched, bias, dtype, device):
    skip_unsupported(device, dtype)
    gen = make_gen(700)
    ref = randomize(torch_cls(5, 7, bias=bias).double(), gen).to(device=device, dtype=dtype)
    got = ours_cls.from_torch(ref, layer_norm=False)
    assert got.weight_ih.dtype == dtype and got.weight_ih.device.type == torch.device(device).type
    shape = (4, 5) if batched else (5,)
    state_shape = (4, 7) if batched else (7,)
    for with_state in (False, True):
        x = randn(shape, gen, dtype, device).requires_grad_(True)
        xr = x.detach().clone().requires_grad_(True)
        state = leaves(state_for(ours_cls, state_shape, gen, dtype, device)) if with_state else None
        state_r = leaves(state) if with_state else None
        call = (lambda m, x, s: m(x, s if is_lstm(ours_cls) else s[0])) if with_state else (lambda m, x, s: m(x))
        y, yr = as_tuple(call(got, x, state)), as_tuple(call(ref, xr, state_r))
        assert len(y) == len(yr)
        for a, b in zip(y, yr):
            assert a.shape == b.shape and a.dtype == b.dtype == dtype
            assert_close(a, b, msg=f"output (state given: {with_state})")
        grads = [torch.randn(a.shape, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype) for a in y]
        torch.autograd.backward(y, grads)
        torch.autograd.backward(yr, grads)
        assert_close(x.grad, xr.grad, tol=(1e-9, 1e-9) if dtype == torch.float64 else (1e-5, 1e-4), msg="grad input")
        if with_state:
            for s, sr in zip(state, state_r):
                assert_close(
                    s.grad, sr.grad, tol=(1e-9, 1e-9) if dtype == torch.float64 else (1e-5, 1e-4), msg="grad state"
                )
        for (name, p), (name_r, pr) in zip(got.named_parameters(), ref.named_parameters()):
            assert name == name_r
            assert_close(
                p.grad, pr.grad, tol=(1e-9, 1e-9) if dtype == torch.float64 else (1e-5, 1e-4), msg=f"grad {name}"
            )
        got.zero_grad()
        ref.zero_grad()


@pytest.mark.parametrize("ours_cls, torch_cls", CELLS)
def test_cell_parameters_and_initialization_match_torch(ours_cls, torch_cls):
    ref_names = [(n, tuple(p.shape)) for n, p in torch_cls(3, 5).named_parameters()]
    plain = ours_cls(3, 5, layer_norm=False)
    assert [(n, tuple(p.shape)) for n, p in plain.named_parameters()] == ref_names
    assert list(plain.state_dict()) == list(torch_cls(3, 5).state_dict())
    normed = ours_cls(3, 5)
    names = [n for n, _ in normed.named_parameters()]
    assert names[:4] == [n for n, _ in ref_names]  # torch's four, first and in torch's order
    gates = 4 * 5 if is_lstm(ours_cls) else 3 * 5
    assert normed.norm_ih.weight.shape == normed.norm_hh.weight.shape == (gates,)
    assert normed.norm_ih.bias is None and normed.norm_hh.bias is None  # the gates' shift is bias_ih + bias_hh
    assert isinstance(normed.norm_ih, normlib.LayerNorm) and isinstance(normed.norm_hh, normlib.LayerNorm)
    if is_lstm(ours_cls):
        assert isinstance(normed.norm_cell, normlib.LayerNorm) and normed.norm_cell.bias.shape == (5,)
        assert len(names) == 8
    else:
        assert len(names) == 6
    # Same seed, same weights as torch (initialization drawn in the same order), LN or not.
    for layer_norm in (False, True):
        torch.manual_seed(3)
        ref = torch_cls(3, 5)
        torch.manual_seed(3)
        got = ours_cls(3, 5, layer_norm=layer_norm)
        for name, p in ref.named_parameters():
            assert torch.equal(getattr(got, name), p), name
    assert repr(ours_cls(3, 5, bias=False)).startswith(f"{ours_cls.__name__}(\n  3, 5, bias=False, layer_norm=True")
    # Weights from torch load into an LN cell (the LN parameters keep their fresh values).
    ref = torch_cls(3, 5)
    got = ours_cls.from_torch(ref, layer_norm=True)
    for name, p in ref.named_parameters():
        assert torch.equal(getattr(got, name), p)
    assert torch.equal(got.norm_ih.weight, torch.ones(gates))


# --------------------------------------------------------------------------- cells: the LN formula


def lstm_reference(x, h, c, cell, eps):
    """Ba et al.'s LN-LSTM written out with torch's layer_norm (the reference, not normlib's)."""
    gates = (
        TF.layer_norm(x @ cell.weight_ih.T, cell.weight_ih.shape[:1], cell.norm_ih.weight, None, eps)
        + TF.layer_norm(h @ cell.weight_hh.T, cell.weight_hh.shape[:1], cell.norm_hh.weight, None, eps)
        + cell.bias_ih
        + cell.bias_hh
    )
    i, f, g, o = gates.chunk(4, -1)
    c1 = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h1 = torch.sigmoid(o) * torch.tanh(
        TF.layer_norm(c1, c1.shape[-1:], cell.norm_cell.weight, cell.norm_cell.bias, eps)
    )
    return h1, c1


def gru_reference(x, h, cell, eps):
    gi = TF.layer_norm(x @ cell.weight_ih.T, cell.weight_ih.shape[:1], cell.norm_ih.weight, None, eps) + cell.bias_ih
    gh = TF.layer_norm(h @ cell.weight_hh.T, cell.weight_hh.shape[:1], cell.norm_hh.weight, None, eps) + cell.bias_hh
    r = torch.sigmoid(gi[..., :5] + gh[..., :5])
    z = torch.sigmoid(gi[..., 5:10] + gh[..., 5:10])
    n = torch.tanh(gi[..., 10:] + r * gh[..., 10:])
    return (1 - z) * n + z * h


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("ours_cls, torch_cls", CELLS)
def test_cell_with_layer_norm_is_ba_et_al_formula(ours_cls, torch_cls, batched):
    gen = make_gen(701)
    eps = 1e-3
    cell = randomize(ours_cls(4, 5, eps=eps).double(), gen)
    shape, state_shape = ((3, 4), (3, 5)) if batched else ((4,), (5,))
    x = randn(shape, gen)
    state = state_for(ours_cls, state_shape, gen)
    with torch.no_grad():
        if is_lstm(ours_cls):
            got = cell(x, state)
            expected = lstm_reference(x, *state, cell, eps)
            for a, b in zip(got, expected):
                assert_close(a, b)
            # the normalized cell state feeds tanh, the returned c is the raw one
            assert not torch.allclose(got[1], TF.layer_norm(got[1], (5,)))
        else:
            assert_close(cell(x, state), gru_reference(x, state, cell, eps))


@pytest.mark.parametrize("ours_cls, torch_cls", CELLS)
def test_cell_with_layer_norm_sees_one_sample_at_a_time(ours_cls, torch_cls):
    """Per-sample statistics: a sample's output does not depend on the rest of the batch,
    and scaling the input by a positive number changes nothing (LN(W x) is scale invariant)."""
    gen = make_gen(702)
    cell = randomize(ours_cls(4, 6, eps=0.0).double(), gen)
    x = randn((5, 4), gen)
    state = state_for(ours_cls, (5, 6), gen)
    with torch.no_grad():
        batch_out = as_tuple(cell(x, state))
        for n in range(5):
            one = as_tuple(cell(x[n], tuple(s[n] for s in state) if is_lstm(ours_cls) else state[n]))
            for a, b in zip(one, batch_out):
                assert_close(a, b[n])
        scaled = as_tuple(cell(7.5 * x, state))
        for a, b in zip(scaled, batch_out):
            assert_close(a, b, tol=(1e-12, 1e-12))
        plain = ours_cls.from_torch(torch_cls(4, 6).double(), layer_norm=False)
        plain.load_state_dict(cell.state_dict(), strict=False)
        assert not torch.allclose(as_tuple(plain(7.5 * x, state))[0], as_tuple(plain(x, state))[0])


@pytest.mark.parametrize("ours_cls, torch_cls", CELLS)
def test_gradcheck_cells(ours_cls, torch_cls):
    gen = make_gen(703)
    cell = randomize(ours_cls(3, 4).double(), gen)
    x = randn((2, 3), gen).requires_grad_(True)
    state = leaves(state_for(ours_cls, (2, 4), gen))
    params = tuple(cell.parameters())

    def run(x, *tensors):
        states, weights = tensors[: len(state)], tensors[len(state) :]
        replaced = torch.func.functional_call(
            cell,
            {name: w for (name, _), w in zip(cell.named_parameters(), weights)},
            (x, states if is_lstm(ours_cls) else states[0]),
        )
        return as_tuple(replaced)

    assert gradcheck(run, (x, *state, *params))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=["f64", "f32", "bf16"])
@pytest.mark.parametrize("ours_cls, torch_cls", CELLS)
def test_cell_dtype_and_device(ours_cls, torch_cls, dtype, device):
    skip_unsupported(device, dtype)
    gen = make_gen(704)
    cell64 = randomize(ours_cls(3, 4).double(), gen)
    cell = copy.deepcopy(cell64).to(device=device, dtype=dtype)
    x = randn((2, 3), gen)
    out = as_tuple(cell(x.to(device=device, dtype=dtype)))
    expected = as_tuple(cell64(x))
    for a, b in zip(out, expected):
        assert a.dtype == dtype and a.device.type == torch.device(device).type
        tol = {torch.float64: (1e-12, 1e-12), torch.float32: (1e-5, 1e-5), torch.bfloat16: (3e-2, 3e-2)}[dtype]
        assert_close(a, b, tol=tol, msg=str(dtype))
    for p in cell.parameters():
        assert p.dtype == dtype


@pytest.mark.parametrize("ours_cls, torch_cls", CELLS)
def test_cell_errors_name_the_problem(ours_cls, torch_cls):
    cell = ours_cls(3, 4)
    with pytest.raises(ValueError, match="Expected input to be 1D or 2D, got 3D"):
        cell(torch.randn(2, 2, 3))
    with pytest.raises(RuntimeError, match="inconsistent input_size: got 5 expected 3"):
        cell(torch.randn(2, 5))
    state = (torch.randn(3, 4), torch.randn(3, 4)) if is_lstm(ours_cls) else torch.randn(3, 4)
    with pytest.raises(RuntimeError, match="Input batch size 2 doesn't match"):
        cell(torch.randn(2, 3), state)
    state = (torch.randn(2, 5), torch.randn(2, 5)) if is_lstm(ours_cls) else torch.randn(2, 5)
    with pytest.raises(RuntimeError, match="inconsistent hidden_size: got 5, expected 4"):
        cell(torch.randn(2, 3), state)
    state = (torch.randn(1, 4), torch.randn(1, 4)) if is_lstm(ours_cls) else torch.randn(1, 4)
    with pytest.raises(RuntimeError, match="unbatched one"):
        cell(torch.randn(3), state)
    with pytest.raises(TypeError, match="expects a torch.nn"):
        ours_cls.from_torch(nn.Linear(3, 4))
    if is_lstm(ours_cls):
        with pytest.raises(ValueError, match="pair"):
            cell(torch.randn(2, 3), (torch.randn(2, 4),))


# --------------------------------------------------------------------------- sequence wrappers


def torch_run(ref, x, hx, lengths, batch_first):
    if lengths is None:
        return ref(x, hx)
    packed = pack_padded_sequence(x, torch.as_tensor(lengths), batch_first=batch_first, enforce_sorted=False)
    out, state = ref(packed, hx)
    out, _ = pad_packed_sequence(out, batch_first=batch_first, total_length=x.shape[1 if batch_first else 0])
    return out, state


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lengths", [None, [6, 2, 5]], ids=["full", "padded"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["TNI", "NTI"])
@pytest.mark.parametrize("ours_cls, torch_cls", WRAPPERS)
def test_wrapper_without_layer_norm_is_torch_rnn(ours_cls, torch_cls, batch_first, lengths, dtype, device):
    skip_unsupported(device, dtype)
    gen = make_gen(710)
    ref = randomize(torch_cls(3, 4, num_layers=2, batch_first=batch_first).double(), gen).to(device=device, dtype=dtype)
    got = ours_cls.from_torch(ref, layer_norm=False)
    shape = (3, 6, 3) if batch_first else (6, 3, 3)
    x = randn(shape, gen, dtype, device)
    hx = state_for(ours_cls, (2, 3, 4), gen, dtype, device)
    tol = (1e-10, 1e-10) if dtype == torch.float64 else (1e-5, 1e-5)
    for state in (None, hx):
        xg, xr = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        out, final = got(xg, state, lengths=lengths)
        out_r, final_r = torch_run(ref, xr, state, lengths, batch_first)
        assert out.shape == out_r.shape
        assert_close(out, out_r, tol=tol, msg="output")
        for a, b in zip(as_tuple(final), as_tuple(final_r)):
            assert a.shape == b.shape
            assert_close(a, b, tol=tol, msg="final state")
        g = torch.randn(out.shape, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
        (out * g).sum().backward()
        (out_r * g).sum().backward()
        assert_close(xg.grad, xr.grad, tol=(1e-9, 1e-9) if dtype == torch.float64 else (1e-5, 1e-4), msg="grad input")
        for k, cell in enumerate(got.cells):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                expected = getattr(ref, f"{name}_l{k}").grad
                assert_close(
                    getattr(cell, name).grad, expected, tol=(1e-9, 1e-9) if dtype == torch.float64 else (1e-5, 1e-4)
                )
        got.zero_grad()
        ref.zero_grad()


@pytest.mark.parametrize("ours_cls, torch_cls", WRAPPERS)
def test_wrapper_unbatched_is_torch_rnn(ours_cls, torch_cls):
    gen = make_gen(711)
    ref = randomize(torch_cls(3, 4, num_layers=2).double(), gen)
    got = ours_cls.from_torch(ref, layer_norm=False)
    x = randn((5, 3), gen)
    hx = state_for(ours_cls, (2, 4), gen)
    with torch.no_grad():
        for state in (None, hx):
            out, final = got(x, state)
            out_r, final_r = ref(x, state)
            assert out.shape == (5, 4)
            assert_close(out, out_r)
            for a, b in zip(as_tuple(final), as_tuple(final_r)):
                assert a.shape == b.shape == (2, 4)
                assert_close(a, b)


@pytest.mark.parametrize("ours_cls, torch_cls", WRAPPERS)
def test_wrapper_with_layer_norm_is_the_cell_in_a_loop(ours_cls, torch_cls):
    """Input gates precomputed for all steps at once must equal calling the cell step by step,
    and a padded sequence must give what the same sequence gives alone, unpadded."""
    gen = make_gen(712)
    rnn = randomize(ours_cls(3, 4, num_layers=2, batch_first=True).double(), gen)
    x = randn((3, 6, 3), gen)
    with torch.no_grad():
        out, final = rnn(x)
        layer_in = x
        finals = []
        for cell in rnn.cells:
            state, outs = None, []
            for t in range(6):
                state = cell(layer_in[:, t], state)
                outs.append(as_tuple(state)[0])
            layer_in = torch.stack(outs, 1)
            finals.append(state)
        assert_close(out, layer_in)
        for k, state in enumerate(finals):
            for a, b in zip(as_tuple(state), as_tuple(final)):
                assert_close(a, b[k])
        # Padding: garbage after each sequence's end changes nothing, and gives the unpadded result.
        lengths = [6, 2, 4]
        padded = x.clone()
        for n, length in enumerate(lengths):
            padded[n, length:] = 1e3 * torch.randn(6 - length, 3, generator=gen, dtype=torch.float64)
        out_p, final_p = rnn(padded, lengths=lengths)
        for n, length in enumerate(lengths):
            alone, final_alone = rnn(x[n : n + 1, :length])
            assert_close(out_p[n, :length], alone[0])
            assert torch.all(out_p[n, length:] == 0)
            for a, b in zip(as_tuple(final_p), as_tuple(final_alone)):
                assert_close(a[:, n], b[:, 0])


def test_gradcheck_wrapper_with_lengths():
    gen = make_gen(713)
    lstm = randomize(normlib.LayerNormLSTM(2, 3, num_layers=2).double(), gen)
    x = randn((4, 2, 2), gen).requires_grad_(True)
    names = [n for n, _ in lstm.named_parameters()]

    def run(x, *weights):
        out, (h, c) = torch.func.functional_call(lstm, dict(zip(names, weights)), (x,), {"lengths": [4, 2]})
        return out, h, c

    assert gradcheck(run, (x, *lstm.parameters()))


def test_wrapper_errors_name_the_problem():
    lstm = normlib.LayerNormLSTM(3, 4, num_layers=2)
    with pytest.raises(ValueError, match="2D \\(unbatched\\) or 3D"):
        lstm(torch.randn(3))
    with pytest.raises(RuntimeError, match="input_size. Expected 3, got 5"):
        lstm(torch.randn(5, 2, 5))
    with pytest.raises(RuntimeError, match=r"Expected hidden\[0\] size \(2, 2, 4\), got \(1, 2, 4\)"):
        lstm(torch.randn(5, 2, 3), (torch.zeros(1, 2, 4), torch.zeros(1, 2, 4)))
    with pytest.raises(ValueError, match="between 0 and the number of time steps 5"):
        lstm(torch.randn(5, 2, 3), lengths=[6, 2])
    with pytest.raises(ValueError, match="got 3 lengths for a batch of 2"):
        lstm(torch.randn(5, 2, 3), lengths=[5, 2, 1])
    with pytest.raises(ValueError, match="1-D sequence of integers"):
        lstm(torch.randn(5, 2, 3), lengths=[1.5, 2.0])
    with pytest.raises(ValueError, match="num_layers"):
        normlib.LayerNormGRU(3, 4, num_layers=0)
    with pytest.raises(ValueError, match="bidirectional"):
        normlib.LayerNormLSTM.from_torch(nn.LSTM(3, 4, bidirectional=True))
    with pytest.raises(TypeError, match="torch.nn.GRU"):
        normlib.LayerNormGRU.from_torch(nn.LSTM(3, 4))


def test_lengths_mask():
    mask = lengths_mask([3, 0, 1], 4)
    expected = torch.tensor([[1, 0, 1], [1, 0, 0], [1, 0, 0], [0, 0, 0]], dtype=torch.bool)
    assert torch.equal(mask, expected)
    with pytest.raises(ValueError, match="between 0 and"):
        lengths_mask([-1], 4)


# --------------------------------------------------------------------------- TimeStepBatchNorm


def test_time_step_batchnorm_uses_statistics_of_each_step():
    gen = make_gen(720)
    T, N, D = 4, 5, 3
    # Each step has its own mean and spread, so shared statistics would be wrong.
    x = torch.stack([randn((N, D), gen, scale=1 + t, shift=3.0 * t) for t in range(T)])
    norm = normlib.TimeStepBatchNorm(D, max_steps=T).double()
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.5, 0.5, 2.0]))
        norm.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    refs = [nn.BatchNorm1d(D, affine=False).double() for _ in range(T)]
    y = norm(x)
    for t in range(T):
        assert_close(y[t], refs[t](x[t]) * norm.weight + norm.bias)
        assert_close(norm.steps[t].running_mean, refs[t].running_mean)
        assert_close(norm.steps[t].running_var, refs[t].running_var)
    assert not torch.allclose(norm.steps[0].running_mean, norm.steps[3].running_mean)
    # eval: each step's running statistics
    norm.eval()
    for r in refs:
        r.eval()
    y = norm(x)
    for t in range(T):
        assert_close(y[t], refs[t](x[t]) * norm.weight + norm.bias)
    # BatchNorm1d over all (N, T) positions at once mixes the steps' statistics.
    shared = nn.BatchNorm1d(D, affine=False).double()(x.permute(1, 2, 0)).permute(2, 0, 1)
    assert not torch.allclose(shared, normlib.TimeStepBatchNorm(D, T, affine=False).double()(x))


def test_time_step_batchnorm_with_lengths_ignores_padding_and_fails_on_one_sequence():
    gen = make_gen(721)
    T, N, D = 5, 4, 3
    x = randn((T, N, D), gen)
    lengths = [5, 3, 3, 2]  # step 3 and 4: one sequence left
    masked = normlib.TimeStepBatchNorm(D, max_steps=T, affine=False).double()
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        masked(x, lengths=lengths)
    lengths = [5, 5, 3, 2]
    garbage = x.clone()
    mask = lengths_mask(lengths, T)
    garbage[~mask] = 1e3
    y = normlib.TimeStepBatchNorm(D, max_steps=T, affine=False).double()(garbage, lengths=lengths)
    for t in range(T):
        running = mask[t]
        assert_close(y[t][running], TF.batch_norm(x[t][running], None, None, training=True))
        assert torch.all(y[t][~running] == 0)
    # With gamma/beta, padded positions stay zero (beta is not added to them).
    affine = normlib.TimeStepBatchNorm(D, max_steps=T).double()
    with torch.no_grad():
        affine.bias.fill_(0.7)
    y_affine = affine(garbage, lengths=lengths)
    assert torch.all(y_affine[~mask] == 0)
    assert_close(y_affine[mask], y[mask] + 0.7)
    # Without lengths the padding is data: the statistics, hence the real positions, change.
    unmasked = normlib.TimeStepBatchNorm(D, max_steps=T, affine=False).double()(garbage)
    assert not torch.allclose(unmasked[2][mask[2]], y[2][mask[2]])


def test_time_step_batchnorm_beyond_max_steps_and_batch_of_one():
    gen = make_gen(722)
    norm = normlib.TimeStepBatchNorm(3, max_steps=4).double()
    norm(randn((4, 6, 3), gen))  # training: running statistics for steps 0..3
    norm.eval()
    with pytest.raises(IndexError, match="statistics for 4 time steps, but the sequence has a step 4"):
        norm(randn((6, 1, 3), gen))
    long = randn((6, 1, 3), gen)
    reuse = normlib.TimeStepBatchNorm(3, max_steps=4, beyond_max="last").double()
    reuse.load_state_dict(norm.state_dict())
    reuse.eval()
    y = reuse(long)
    assert_close(y[5], reuse.steps[3](long[5]) * reuse.weight + reuse.bias)
    # A batch of one is fine in eval (running statistics) and an error in training.
    norm.train()
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        norm(randn((2, 1, 3), gen))
    with pytest.raises(ValueError, match="expected input of shape"):
        norm(torch.randn(4, 3))
    with pytest.raises(ValueError, match="beyond_max"):
        normlib.TimeStepBatchNorm(3, 4, beyond_max="wrap")
    assert list(norm.state_dict())[:3] == ["weight", "bias", "steps.0.running_mean"]
