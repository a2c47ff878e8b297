"""normlib.kernels: the one-pass CPU loops (Numba) that LayerNorm, RMSNorm, GroupNorm and
InstanceNorm run in eager mode, against PyTorch's layers, the PyTorch-operations path they
replace, and a float64 truth.

Also: which inputs they take (and which go to PyTorch operations), the switches that turn
them off, results that do not depend on the thread count, NaN propagation, a fork()ed child
and concurrent threads (which Numba's OpenMP and workqueue layers do not survive unguarded).
"""

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import torch
from conftest import make_gen, randn
from torch import nn

import normlib
from normlib import functional as NF
from normlib import kernels

pytest.importorskip("numba")  # requirements.txt pins it; without it the layers run PyTorch operations

ROOT = Path(__file__).resolve().parent.parent

# (name, torch layer, normlib layer, input shape); gamma and beta randomized below
LAYERS = [
    ("LayerNorm", lambda: nn.LayerNorm(24), lambda: normlib.LayerNorm(24), (5, 7, 24)),
    ("LayerNorm 2 axes", lambda: nn.LayerNorm((3, 8)), lambda: normlib.LayerNorm((3, 8)), (6, 3, 8)),
    (
        "LayerNorm no affine",
        lambda: nn.LayerNorm(16, elementwise_affine=False),
        lambda: normlib.LayerNorm(16, elementwise_affine=False),
        (9, 16),
    ),
    ("LayerNorm no bias", lambda: nn.LayerNorm(16, bias=False), lambda: normlib.LayerNorm(16, bias=False), (9, 16)),
    ("RMSNorm", lambda: nn.RMSNorm(24), lambda: normlib.RMSNorm(24), (5, 7, 24)),
    ("GroupNorm", lambda: nn.GroupNorm(4, 12), lambda: normlib.GroupNorm(4, 12), (3, 12, 5, 4)),
    ("GroupNorm G=1", lambda: nn.GroupNorm(1, 6), lambda: normlib.GroupNorm(1, 6), (4, 6, 7)),
    ("GroupNorm G=C", lambda: nn.GroupNorm(6, 6), lambda: normlib.GroupNorm(6, 6), (2, 6, 3, 3)),
    (
        "GroupNorm no affine",
        lambda: nn.GroupNorm(2, 6, affine=False),
        lambda: normlib.GroupNorm(2, 6, affine=False),
        (3, 6, 10),
    ),
    (
        "InstanceNorm2d affine",
        lambda: nn.InstanceNorm2d(5, affine=True),
        lambda: normlib.InstanceNorm2d(5, affine=True),
        (3, 5, 6, 4),
    ),
    ("InstanceNorm1d", lambda: nn.InstanceNorm1d(5), lambda: normlib.InstanceNorm1d(5), (3, 5, 9)),
]
IDS = [case[0] for case in LAYERS]


def _pair(make_ref, make_got, dtype, gen):
    ref = make_ref().to(torch.float64)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(randn(p.shape, gen, scale=0.5, shift=1.0))
    got = make_got().to(torch.float64)
    got.load_state_dict(ref.state_dict())
    return ref.to(dtype), got.to(dtype)


def _run(layer, x, dy):
    """Output and gradients (input, then parameters by name) of one training step."""
    x = x.detach().clone().requires_grad_(True)
    layer.zero_grad(set_to_none=True)
    y = layer(x)
    y.backward(dy)
    return y.detach(), {"input": x.grad, **{k: p.grad for k, p in layer.named_parameters()}}


def _spy(monkeypatch):
    """Count the calls of each kernel wrapper."""
    calls = {}
    for name in ("rows_forward", "rows_backward", "groups_forward", "groups_backward"):
        original = getattr(kernels, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            calls[_name] = calls.get(_name, 0) + 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(kernels, name, counted)
    return calls


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", LAYERS, ids=IDS)
def test_kernels_match_torch_and_are_no_less_accurate(case, dtype, monkeypatch):
    """Training step, output and every gradient: close to torch.nn's, and no farther from the
    float64 truth than torch.nn's own float32 results (the loops sum in float64)."""
    name, make_ref, make_got, shape = case
    gen = make_gen(11)
    ref, got = _pair(make_ref, make_got, dtype, gen)
    x = randn(shape, gen).to(dtype)
    dy = randn(shape, gen, shift=0.0).to(dtype)
    calls = _spy(monkeypatch)
    y, grads = _run(got, x, dy)
    assert calls, f"{name}: the kernels did not run"
    y_ref, grads_ref = _run(ref, x, dy)
    y_true, grads_true = _run(ref.to(torch.float64), x.double(), dy.double())
    tol = {torch.float32: (2e-5, 2e-5), torch.float64: (1e-10, 1e-10)}[dtype]
    torch.testing.assert_close(y, y_ref, atol=tol[0], rtol=tol[1], msg=lambda m: f"{name} output: {m}")
    assert set(grads) == set(grads_ref)
    for key in grads:
        g, r, t = (d[key].double() for d in (grads, grads_ref, grads_true))
        scale = max(1.0, float(r.abs().max()))
        torch.testing.assert_close(g, r, atol=tol[0] * scale, rtol=tol[1], msg=lambda m: f"{name} d{key}: {m}")
        if dtype == torch.float32:
            err, err_torch = float((g - t).abs().max()), float((r - t).abs().max())
            assert err <= max(2 * err_torch, 1e-6 * scale), f"{name} d{key}: error {err:.2g} vs torch {err_torch:.2g}"
    assert float((y.double() - y_true).abs().max()) <= max(float((y_ref.double() - y_true).abs().max()), 1e-6)


@pytest.mark.parametrize("case", LAYERS, ids=IDS)
def test_kernels_and_torch_operations_agree(case):
    """The two eager paths (kernels on and off) give the same numbers up to rounding."""
    name, make_ref, make_got, shape = case
    gen = make_gen(12)
    _, got = _pair(make_ref, make_got, torch.float64, gen)
    x, dy = randn(shape, gen), randn(shape, gen, shift=0.0)
    with kernels.use(True):
        y1, g1 = _run(got, x, dy)
    with kernels.use(False):
        y0, g0 = _run(got, x, dy)
    torch.testing.assert_close(y1, y0, atol=1e-12, rtol=1e-12)
    for key in g0:
        torch.testing.assert_close(g1[key], g0[key], atol=1e-11, rtol=1e-11, msg=lambda m: f"{name} d{key}: {m}")


def test_which_inputs_the_kernels_take(monkeypatch):
    gen = make_gen(13)
    x = randn((8, 16), gen).float()
    calls = _spy(monkeypatch)
    ln, gn, bn = normlib.LayerNorm(16), normlib.GroupNorm(4, 16), normlib.BatchNorm1d(16)
    ln(x), gn(x)
    assert calls == {"rows_forward": 1, "groups_forward": 1}
    calls.clear()
    bn(x)  # BatchNorm's statistics over the batch: PyTorch operations (already faster than native)
    ln.half()(x.half())  # half precision: PyTorch operations
    with kernels.use(False):
        ln.float()(x)
    assert calls == {}
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        normlib.LayerNorm(16)(x[:1])  # one statistic, two threads: PyTorch operations
        assert calls == {}
        assert not kernels.usable(x[:1], 1) and kernels.usable(x, 8)
    finally:
        torch.set_num_threads(before)
    assert not kernels.usable(x.to(torch.bfloat16), 8)
    assert not kernels.usable(x.to(torch.complex64), 8)


def test_the_layers_still_return_a_tensor_that_is_not_a_view():
    """In-place ops after the layer (ReLU(inplace=True), +=) work with the kernels too."""
    gen = make_gen(14)
    for layer, x in ((normlib.LayerNorm(8), randn((4, 8), gen)), (normlib.GroupNorm(2, 4), randn((3, 4, 5), gen))):
        x = x.float().requires_grad_(True)
        y = layer(x)
        assert y._base is None
        y += 1.0
        nn.functional.relu(y, inplace=True).sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()


def test_results_do_not_depend_on_the_thread_count():
    """Bit for bit: each statistic is one thread's work, gamma's and beta's column sums go
    over a number of row blocks fixed by the shape (not one per thread). In a subprocess
    with NUMBA_NUM_THREADS=2, so that two threads run even on a one-core machine."""
    out = _python(
        """
        import torch, normlib

        def step(layer, shape, frozen):
            torch.manual_seed(0)  # float64: float32 would hide a change in the sums' order
            x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
            layer = layer.double().requires_grad_(not frozen)
            layer(x).backward(torch.randn(shape, dtype=torch.float64))
            return [x.grad] + [p.grad for p in layer.parameters() if p.grad is not None]

        runs = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            runs.append([
                step(normlib.LayerNorm(64), (300, 64), False),
                step(normlib.LayerNorm(64), (300, 64), True),
                step(normlib.GroupNorm(4, 8), (16, 8, 6, 6), False),
            ])
        same = all(
            torch.equal(a, b) for r1, r2 in zip(*runs) for a, b in zip(r1, r2)
        )
        print(same, [len(r) for r in runs[0]])
        """,
        NUMBA_NUM_THREADS="2",
    )
    assert out.split("\n")[0] == "True [3, 1, 3]", out


def test_a_frozen_gamma_keeps_the_backward_split_among_threads(monkeypatch):
    """The row blocks are the threads' shares of the backward, also when gamma's and beta's
    gradients are not wanted (a frozen layer, or only the input's gradient)."""
    launched = []
    original = kernels._launch
    monkeypatch.setattr(kernels, "_launch", lambda kernel, *args: launched.append(args) or original(kernel, *args))
    layer = normlib.LayerNorm(64).requires_grad_(False)
    x = torch.randn(512, 64, requires_grad=True)
    layer(x).sum().backward()
    blocks = launched[-1][7]  # rows_backward(dy, x, w, mean, var, eps, center, blocks, ...)
    assert blocks == kernels._blocks(512, 64) == 64, launched[-1][7:10]
    assert launched[-1][8:10] == (False, False)  # want_w, want_b


def test_nan_stays_in_its_own_statistic():
    x = torch.randn(4, 3, 10)
    x[1, 2, 5] = float("nan")
    y_ln = normlib.LayerNorm(10)(x)
    assert torch.isnan(y_ln[1, 2]).all() and not torch.isnan(y_ln[[0, 2, 3]]).any()
    assert not torch.isnan(y_ln[1, :2]).any()
    y_gn = normlib.GroupNorm(3, 3)(x)
    assert torch.isnan(y_gn[1, 2]).all() and not torch.isnan(y_gn[1, :2]).any()
    ref = nn.GroupNorm(3, 3)(x)
    assert torch.equal(torch.isnan(y_gn), torch.isnan(ref))


def _python(code: str, timeout: float = 300, **env):
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_the_first_launch_leaves_torch_s_thread_count_alone():
    """Numba's first parallel launch sets OpenMP's thread count to Numba's maximum, which
    PyTorch reads too where both load the same OpenMP library."""
    out = _python(
        """
        import torch, normlib
        torch.set_num_threads(1)
        normlib.LayerNorm(8)(torch.randn(4, 8))
        print(torch.get_num_threads())
        """,
        NUMBA_NUM_THREADS="2",
    )
    assert out.strip() == "1"


def test_the_environment_variable_turns_the_kernels_off():
    out = _python(
        """
        import torch, normlib
        from normlib import kernels
        y = normlib.LayerNorm(8)(torch.randn(4, 8))
        print(kernels.available(), kernels.enabled())
        """,
        NORMLIB_NUMBA="0",
    )
    assert out.split() == ["True", "False"]


def test_without_numba_the_layers_run_pytorch_operations():
    out = _python(
        """
        import sys
        sys.modules["numba"] = None  # import numba now raises ImportError
        import torch, normlib
        from normlib import kernels
        x = torch.randn(6, 8, 5)
        for a, b in ((normlib.LayerNorm(5), torch.nn.LayerNorm(5)), (normlib.GroupNorm(2, 8), torch.nn.GroupNorm(2, 8))):
            torch.testing.assert_close(a(x), b(x))
        print(kernels.available(), kernels.enabled())
        """
    )
    assert out.split() == ["False", "False"]


def test_loops_that_cannot_be_set_up_give_a_warning_and_pytorch_operations():
    """Numba raises when a cached function has nowhere to write its cache (a read-only
    install and home); the layers then warn and run PyTorch operations."""
    out = _python(
        """
        import warnings
        import numba.core.dispatcher

        def no_cache(self):
            raise RuntimeError("cannot cache function: no locator available")

        numba.core.dispatcher.Dispatcher.enable_caching = no_cache
        import torch, normlib
        from normlib import kernels
        x = torch.randn(4, 8)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            y = normlib.LayerNorm(8)(x)
        torch.testing.assert_close(y, torch.nn.LayerNorm(8)(x))
        print(kernels.enabled(), any("could not be set up" in str(w.message) for w in caught))
        """
    )
    assert out.split() == ["False", "True"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() on this platform")
def test_a_forked_child_runs_pytorch_operations_on_one_thread():
    """After the parent ran a loop, Numba aborts a fork()ed child that launches one ('Terminating:
    fork() called from a process already using GNU OpenMP'), and PyTorch's next parallel
    operation in the child waits forever for OpenMP threads that did not survive the fork.
    The child gets PyTorch operations on one thread; its large operations finish."""
    out = _python(
        """
        import os, torch, normlib
        from normlib import kernels
        torch.set_num_threads(2)
        layer, x = normlib.LayerNorm(32), torch.randn(64, 32)
        expected = torch.nn.LayerNorm(32)(x)
        torch.testing.assert_close(layer(x), expected)  # the loops run in the parent
        pid = os.fork()
        if pid == 0:
            ok = not kernels.enabled() and torch.get_num_threads() == 1
            torch.testing.assert_close(layer(x), expected)
            big = torch.randn(4096, 256)  # large enough for a parallel region
            torch.nn.functional.layer_norm(big, (256,))
            normlib.LayerNorm(256)(big)
            os._exit(0 if ok else 3)
        print(os.waitpid(pid, 0)[1])
        """,
        timeout=120,
    )
    assert out.strip() == "0"


def test_threads_may_call_the_layers_at_once():
    layer = normlib.LayerNorm(64)
    x = torch.randn(256, 64)
    expected = layer(x)
    errors = []

    def work():
        try:
            for _ in range(20):
                torch.testing.assert_close(layer(x), expected, atol=0, rtol=0)
        except Exception as error:  # noqa: BLE001 (reported below)
            errors.append(error)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_the_layer_functions_use_them_too(monkeypatch):
    calls = _spy(monkeypatch)
    x = torch.randn(4, 6, 5)
    NF.layer_norm(x, (5,)), NF.rms_norm(x, (5,)), NF.group_norm(x, 3), NF.instance_norm(x)
    assert calls == {"rows_forward": 2, "groups_forward": 2}
