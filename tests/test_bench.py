"""normlib.bench: the memory-traffic counter, the measurement's bookkeeping, the stored results.

Timings themselves are never asserted (they depend on the machine and its load); what is
asserted is the structure of a run, the traffic counts (deterministic), and that the stored
full run the chapter shows is complete.
"""

import json
import time
from pathlib import Path

import pytest
import torch
from torch import nn

import normlib
from normlib import bench, kernels
from normlib import functional as NF

N = 4096  # elements of a "full-size" tensor in these tests


def test_traffic_counts_tensor_sized_passes():
    x = torch.randn(8, N // 8)
    t = bench.traffic(lambda: x.clone(), N)
    assert (t.reads, t.writes) == (1, 1)
    t = bench.traffic(lambda: x.view(-1).reshape(N // 8, 8).t(), N)
    assert t.ops == []  # views move nothing
    y = torch.randn(8, N // 8)
    t = bench.traffic(lambda: y.mul_(2.0), N)
    assert (t.reads, t.writes) == (1, 1)  # in place: read and written
    out = torch.empty(8, N // 8)
    t = bench.traffic(lambda: torch.mul(x, y, out=out), N)
    assert (t.reads, t.writes) == (2, 1)  # out= is only written
    t = bench.traffic(lambda: x.sum(dim=1), N)
    assert (t.reads, t.writes) == (1, 0)  # the (8,) result is too small to count
    t = bench.traffic(lambda: x + torch.ones(1, 1).expand(8, N // 8), N)
    assert (t.reads, t.writes) == (1, 1)  # an expanded tensor occupies one element
    assert bench.traffic(lambda: torch.cat([x, x]), N).writes == 2


def test_traffic_of_layer_norm_native_fused_and_composed():
    x = torch.randn(16, N // 16, requires_grad=True)
    w = torch.ones(N // 16, requires_grad=True)
    b = torch.zeros(N // 16, requires_grad=True)
    dy = torch.randn_like(x)

    def passes(fn, backward):
        run = (lambda: torch.autograd.grad(fn(), (x, w, b), dy)) if backward else fn
        return bench.traffic(run, N).passes

    native = lambda: torch.nn.functional.layer_norm(x, (N // 16,), w, b)  # noqa: E731
    fused = lambda: NF.layer_norm(x, (N // 16,), w, b)  # noqa: E731
    composed = lambda: NF.normalize(x, (1,), weight=w, bias=b)[0]  # noqa: E731
    # A fused native kernel reads x and writes y; backward reads x and dy and writes dx.
    assert passes(native, False) == 2 and passes(native, True) == 5
    # normlib's fused forward as PyTorch operations: mean, x - mean, its norm, two in-place
    # passes (steps 3 and 4).
    with kernels.use(False):
        assert passes(fused, False) == 8
        assert passes(fused, False) < passes(composed, False)
        assert passes(fused, True) < passes(composed, True) / 1.5
    if kernels.enabled():
        # A Numba loop dispatches no PyTorch operation on the data: Traffic cannot see it.
        assert passes(fused, False) == 0 and passes(fused, True) == 0


def _tiny_cases():
    return [
        bench.Case(
            "BatchNorm2d (train)", "bn", lambda: nn.BatchNorm2d(4), lambda: normlib.BatchNorm2d(4), (4, 4, 5, 5)
        ),
        bench.Case("LayerNorm(16)", "ln", lambda: nn.LayerNorm(16), lambda: normlib.LayerNorm(16), (4, 3, 16)),
    ]


def test_measure_returns_every_case_pass_and_column():
    run = bench.measure(_tiny_cases(), "cpu", compile=False, rounds=2, min_run_time=0.001)
    json.dumps(run)  # the --json / --save-stored output
    assert [(r["layer"], r["pass"]) for r in run["results"]] == [
        ("BatchNorm2d (train)", "forward"),
        ("BatchNorm2d (train)", "fwd+bwd"),
        ("LayerNorm(16)", "forward"),
        ("LayerNorm(16)", "fwd+bwd"),
    ]
    for row in run["results"]:
        assert row["native_ms"] > 0 and row["eager_ms"] > 0 and row["copy_GBps"] > 0
        best, low, high = row["eager_ratio"]
        assert low <= high and best == pytest.approx(row["eager_ms"] / row["native_ms"])
        assert "compiled_ms" not in row
    table = bench.format_table(run)
    assert table.count("\n") == 1 + len(run["results"]) and "compiled" not in table
    assert "cpu" in bench.describe(run)


def test_measure_refuses_an_implementation_that_disagrees(monkeypatch):
    wrong = bench.Case("LayerNorm(16)", "ln", lambda: nn.LayerNorm(16), lambda: normlib.RMSNorm(16), (4, 3, 16))
    with pytest.raises(AssertionError, match="eager differs"):
        bench.measure([wrong], "cpu", compile=False, rounds=1, min_run_time=0.001)


def test_stored_results_are_a_complete_full_run():
    run = bench.stored_results()
    assert run["device"] == "cpu" and run["scale"] == 1.0
    assert [(r["layer"], r["pass"]) for r in run["results"]] == [(c.name, p) for c in bench.CASES for p in bench.PASSES]
    for row, case in zip(run["results"][::2], bench.CASES):
        assert tuple(row["shape"]) == case.shape
    assert all("compiled_ratio" in r for r in run["results"])
    assert [c["layer"] for c in run["compile_times"]] == [c.name for c in bench.CASES]
    table = bench.format_table(run)
    assert "compiled / native" in table and bench.format_compile_table(run).count("\n") == 1 + len(bench.CASES)


def test_keep_freed_memory_is_reported_and_optional(monkeypatch):
    """The command keeps freed memory by default and says so in its one-line description;
    --allocator-defaults leaves malloc alone and says that instead."""
    calls = []
    monkeypatch.setattr(bench, "keep_freed_memory", lambda: calls.append(1) or True)
    monkeypatch.setattr(bench, "measure", lambda *a, **k: {**bench.stored_results(), "compile_times": []})
    run = bench.main(["--no-compile", "--layers", "ln"])
    assert calls == [1] and "freed memory kept" in bench.describe(run)
    run = bench.main(["--no-compile", "--layers", "ln", "--allocator-defaults"])
    assert calls == [1] and "allocator defaults" in bench.describe(run)


def test_no_kernels_runs_the_eager_layers_as_pytorch_operations(monkeypatch):
    """--no-kernels measures with normlib.kernels off, and the run says which path ran."""
    seen = []

    def fake_measure(*args, **kwargs):
        seen.append(kernels.enabled())
        return {**bench.stored_results(), "compile_times": [], "eager_path": bench.eager_path("cpu")}

    monkeypatch.setattr(bench, "measure", fake_measure)
    run = bench.main(["--no-compile", "--layers", "ln", "--no-kernels"])
    assert seen == [False] and "eager LN, RMSNorm, GN, IN: PyTorch operations" in bench.describe(run)
    run = bench.main(["--no-compile", "--layers", "ln"])
    assert seen == [False, kernels.enabled()]
    assert ("Numba loops" in bench.describe(run)) == kernels.enabled()
    assert bench.eager_path("meta") == "PyTorch operations"


def test_run_records_its_wall_time_and_the_compile_cache_state(tmp_path, monkeypatch):
    """wall_s covers the whole call; compile_cache_empty says whether compile times are
    cold-start times: None without compiling, True/False from the cache folder's content."""
    case = bench.Case("LayerNorm(16)", "ln", lambda: nn.LayerNorm(16), lambda: normlib.LayerNorm(16), (4, 3, 16))
    started = time.perf_counter()
    run = bench.measure([case], "cpu", compile=False, rounds=1, min_run_time=0.001)
    assert 0 < run["wall_s"] <= time.perf_counter() - started
    assert run["compile_cache_empty"] is None
    # Importing TorchInductor for the first time creates its cache folder: import it before
    # pointing the folder at tmp_path (run alone, this test would otherwise find it made).
    bench._compile_cache_empty()
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "cache"))
    assert bench._compile_cache_empty() is True
    (tmp_path / "cache").mkdir()
    assert bench._compile_cache_empty() is True
    (tmp_path / "cache" / "kernel.so").write_bytes(b"")
    assert bench._compile_cache_empty() is False


def test_stored_run_compiled_from_an_empty_cache():
    """Chapter 11 calls the stored compile times cold-start times and quotes the run's length."""
    run = bench.stored_results()
    assert run["compile_cache_empty"] is True
    total = sum(c["forward_s"] + c["backward_s"] for c in run["compile_times"])
    assert 0 < total < run["wall_s"]


def stored_ratios(column: str = "eager_ratio") -> dict:
    """{(layer key, pass): best ratio to native} of the stored run, for eager or compiled."""
    return {(r["key"], r["pass"]): r[column][0] for r in bench.stored_results()["results"]}


def shown_range(ratios: dict, keys, passes=bench.PASSES) -> tuple:
    """The (lowest, highest) ratio of those layers and passes, rounded as the text rounds them."""
    values = [ratios[key, p] for key in keys for p in passes]
    return round(min(values), 1), round(max(values), 1)


def test_package_docstring_states_the_stored_run():
    """normlib's docstring ("Two speeds") quotes the stored run's eager and compiled ratios."""
    doc = " ".join(normlib.__doc__.split())
    eager, compiled = stored_ratios("eager_ratio"), stored_ratios("compiled_ratio")
    fast, fused = ("bn", "in", "rms"), ("ln", "gn")
    low, high = shown_range(eager, fast)
    assert f"BatchNorm, InstanceNorm and RMSNorm take {low}x to {high}x the native time" in doc
    low, high = shown_range(eager, fused, ["forward"])
    low2, high2 = shown_range(eager, fused, ["fwd+bwd"])
    assert f"LayerNorm and GroupNorm {low}x to {high}x forward and {low2}x to {high2}x forward and backward" in doc
    low, high = shown_range(compiled, fast)
    assert f"These take {low}x to {high}x the native time for BatchNorm, InstanceNorm and RMSNorm" in doc
    assert f"about {round(compiled['ln', 'forward'], 1)}x for LayerNorm's forward" in doc
    slow = [compiled["gn", p] for p in bench.PASSES] + [compiled["ln", "fwd+bwd"]]
    assert f"but {round(min(slow), 1)}x to {round(max(slow), 1)}x for GroupNorm and for LayerNorm's forward" in doc
    assert min(slow) > 1.2 and "native-speed" not in doc  # compiled is not native speed everywhere
    assert "In the stored run (Numba loops)" in doc and bench.stored_results()["eager_path"].startswith("Numba loops")


def test_readme_states_what_the_stored_run_shows():
    """README: in the stored run (Numba loops) eager LayerNorm and GroupNorm take 1.1 to 1.3 times
    PyTorch's time, forward and forward plus backward; eager BatchNorm, InstanceNorm and RMSNorm
    are faster than PyTorch."""
    readme = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text().split())
    assert "eager LayerNorm and GroupNorm take 1.1 to 1.3 times PyTorch's time, forward and forward plus backward" in (
        readme
    )
    assert bench.stored_results()["eager_path"].startswith("Numba loops")
    ratio = stored_ratios()
    assert all(1.05 <= ratio[key, p] < 1.35 for key in ("ln", "gn") for p in bench.PASSES), ratio
    assert all(ratio[key, p] < 1 for key in ("bn", "in", "rms") for p in bench.PASSES), ratio
