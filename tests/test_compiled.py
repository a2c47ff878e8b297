"""The compiled path: normlib's layers and its functional core under torch.compile(fullgraph=True).

Compiling on the CPU runs a C++ compiler and takes tens of seconds, so one module holds every
layer (BatchNorm in training and in eval mode, GroupNorm, InstanceNorm, LayerNorm, RMSNorm and
`normalize` itself) and is compiled once: one forward graph and one backward graph. Each
layer's output, each parameter's gradient, the input's gradient and the running statistics
are then compared with torch.nn in float64 (the compiled kernels only reorder float64 sums,
so the comparison has no flaky margin).
"""
import shutil

import pytest
import torch
from torch import nn

import normlib
from normlib import functional as NF
from conftest import assert_close, make_gen, randn, randomize_params

C = 4

# Inductor imports torch.jit helpers that warn about their own deprecation: not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")


class EveryLayer(nn.Module):
    """Every normalization layer of `lib` in a chain; forward returns each layer's output."""

    def __init__(self, lib):
        super().__init__()
        self.lib = lib
        self.bn = lib.BatchNorm2d(C)
        self.bn_eval = lib.BatchNorm2d(C).eval()  # inference path inside the same graph
        self.gn = lib.GroupNorm(2, C)
        self.inorm = lib.InstanceNorm2d(C, affine=True)
        self.ln = lib.LayerNorm(3)
        self.rms = lib.RMSNorm(3)
        self.gamma = nn.Parameter(torch.ones(1, C, 1, 1))  # for normalize's own scale

    def forward(self, x):
        outs = [self.bn(x)]
        for layer in (self.bn_eval, self.gn, self.inorm, self.ln, self.rms):
            outs.append(layer(outs[-1]))
        last = outs[-1]
        if self.lib is normlib:  # the functional core, over BatchNorm's axes
            outs.append(NF.normalize(last, (0, 2, 3), weight=self.gamma)[0])
        else:
            mean = last.mean((0, 2, 3), keepdim=True)
            var = last.var((0, 2, 3), correction=0, keepdim=True)
            outs.append((last - mean) / torch.sqrt(var + 1e-5) * self.gamma)
        return tuple(outs)


@pytest.mark.skipif(not any(shutil.which(c) for c in ("c++", "g++", "clang++")),
                    reason="torch.compile on the CPU needs a C++ compiler")
def test_every_layer_compiles_to_one_graph_and_matches_torch():
    gen = make_gen(900)
    ref = randomize_params(EveryLayer(nn).double(), gen)
    got = EveryLayer(normlib).double()
    got.load_state_dict(ref.state_dict())
    x = randn((2, C, 3, 3), gen)
    weights = [torch.randn(x.shape, generator=gen, dtype=torch.float64) for _ in range(7)]

    # One compile worker: a pool of subprocesses costs more than it saves for one small graph.
    with torch._inductor.config.patch(compile_threads=1):
        compiled = normlib.compiled(got)  # fullgraph=True: a graph break would raise here
        x_got = x.clone().requires_grad_(True)
        outs = compiled(x_got)
        sum((o * w).sum() for o, w in zip(outs, weights)).backward()

    x_ref = x.clone().requires_grad_(True)
    ref_outs = ref(x_ref)
    sum((o * w).sum() for o, w in zip(ref_outs, weights)).backward()

    names = ["BatchNorm2d (train)", "BatchNorm2d (eval)", "GroupNorm", "InstanceNorm2d", "LayerNorm", "RMSNorm",
             "normalize"]
    assert len(outs) == len(ref_outs) == len(names)
    for name, a, b in zip(names, outs, ref_outs):
        assert_close(a, b, msg=f"compiled {name} output")
    assert_close(x_got.grad, x_ref.grad, msg="compiled input gradient")
    ref_params = dict(ref.named_parameters())
    for key, p in got.named_parameters():
        assert p.grad is not None, f"compiled: no gradient for {key}"
        assert_close(p.grad, ref_params[key].grad, msg=f"compiled gradient of {key}")
    ref_buffers = dict(ref.named_buffers())
    for key, b in got.named_buffers():
        if b.dtype == torch.int64:  # num_batches_tracked
            assert torch.equal(b, ref_buffers[key]), f"compiled buffer {key}: {b} vs {ref_buffers[key]}"
        else:
            assert_close(b, ref_buffers[key], msg=f"compiled buffer {key} after one training step")


def test_compiled_is_torch_compile_with_the_whole_graph(monkeypatch):
    seen = {}

    def fake_compile(obj, **kwargs):
        seen.update(kwargs, obj=obj)
        return obj

    monkeypatch.setattr(torch, "compile", fake_compile)
    layer = normlib.LayerNorm(3)
    assert normlib.compiled(layer) is layer
    assert seen == {"obj": layer, "fullgraph": True, "dynamic": False}
    normlib.compiled(NF.layer_norm, mode="max-autotune", dynamic=True)
    assert seen["mode"] == "max-autotune" and seen["dynamic"] is True and seen["fullgraph"] is True
