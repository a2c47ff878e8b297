"""normlib.lab.speed and normlib.lab.viz.speed: chapter 11's measuring tools and figures."""

import platform
import shutil

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import normlib  # noqa: E402
from normlib import bench  # noqa: E402
from normlib.lab import speed, viz  # noqa: E402
from normlib.lab.viz import speed as speed_figures  # noqa: E402

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    "text, size", [("32768K", 32 * 2**20), ("1 MiB", 2**20), ("512", 512), ("48k\n", 48 * 1024), ("2G", 2**31)]
)
def test_parse_cache_size(text, size):
    assert bench.parse_cache_size(text) == size


@pytest.mark.parametrize("text", ["", "abc", "12 parsecs", "-3K"])
def test_parse_cache_size_rejects_what_is_not_a_size(text):
    with pytest.raises(ValueError):
        bench.parse_cache_size(text)


def _cache_tree(root, entries):
    for i, (level, kind, size) in enumerate(entries):
        index = root / f"index{i}"
        index.mkdir(parents=True)
        (index / "level").write_text(f"{level}\n")
        (index / "type").write_text(f"{kind}\n")
        (index / "size").write_text(f"{size}\n")


def test_last_level_cache_takes_the_highest_data_or_unified_level(tmp_path):
    _cache_tree(
        tmp_path,
        [(1, "Data", "48K"), (1, "Instruction", "32K"), (2, "Unified", "1024K"), (3, "Unified", "32768K")],
    )
    size, source = bench.last_level_cache(CPU, root=str(tmp_path))
    assert size == 32 * 2**20 and source.startswith("L3")
    # An instruction cache is never the last level for data.
    other = tmp_path / "other"
    _cache_tree(other, [(1, "Data", "32K"), (2, "Unified", "512K"), (3, "Instruction", "8M")])
    assert bench.last_level_cache(CPU, root=str(other)) == (512 * 1024, f"L2, from {other}")


def test_last_level_cache_falls_back_where_sysfs_is_missing(tmp_path):
    size, source = bench.last_level_cache(CPU, root=str(tmp_path / "absent"))
    assert size > 0 and "sysfs" not in source
    assert "sysconf" in source or "assumed" in source


def test_yardstick_rows_cover_the_multiple_of_the_cache_and_no_more():
    for cache in (3 * 2**20, 32 * 2**20, 1000):
        rows = speed.yardstick_rows(cache, multiple=4)
        assert rows * 512 * 4 >= 4 * cache > (rows - 1) * 512 * 4


def test_balances_and_intensity():
    assert speed.peak_flops(16, 2, 2.5e9) == 160e9
    core = speed.SERVER_CORE
    share = core["channels"] * core["channel_bytes_per_s"] / core["cores"]
    assert share == pytest.approx(4.8e9)
    assert speed.balance(160e9, share) == pytest.approx(33.3, abs=0.1)
    assert {name: round(speed.balance(*spec)) for name, spec in speed.SPEC_SHEETS.items()} == {
        "NVIDIA A100 80GB SXM": 10,
        "NVIDIA H100 SXM": 20,
    }
    assert sum(speed.LAYER_NORM_FLOPS.values()) == 8
    assert speed.intensity(8, 2, 4) == 1.0 and speed.intensity(8, 2, 2) == 2.0


@pytest.mark.parametrize("flags, lanes", [("fpu sse2 avx512f avx2", 16), ("fpu avx avx2 fma", 8), ("fp asimd", 4)])
def test_cpu_vector_lanes(flags, lanes):
    assert speed.cpu_vector_lanes(flags) == lanes


def test_best_seconds_uses_one_thread_on_the_cpu_and_restores_the_count():
    threads = torch.get_num_threads()
    seen = []
    times = speed.best_seconds({"a": lambda: seen.append(torch.get_num_threads())}, CPU, rounds=2, min_run_time=0.001)
    assert set(times) == {"a"} and times["a"] > 0
    assert set(seen) == {1}
    assert torch.get_num_threads() == threads
    with speed.one_thread(CPU) as clock:
        assert clock == "cpu" and torch.get_num_threads() == 1
    assert torch.get_num_threads() == threads


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="heap_reuse acts on glibc's malloc only")
def test_heap_reuse_turns_off_fresh_pages_and_restores_them(monkeypatch):
    assert bench.keep_freed_memory()  # as chapter 11's set-up cell does
    x = torch.ones(64 * 2**20 // 4)  # 64 MiB, above glibc's largest mmap threshold
    outside = speed.page_faults(x.clone)  # 16,384 pages of 4 KiB (fewer with huge pages)
    y = torch.empty_like(x)
    into_y = speed.page_faults(lambda: torch.add(x, 0.0, out=y))  # an output allocated once
    assert into_y < 20 < outside, (outside, into_y)
    # What heap_reuse asks of malloc, recorded by a stand-in C library: mmap off inside,
    # back on (and the heap trimmed) on exit. Whether a freed block is then reused depends
    # on what small allocations sit beside it, so that is not asserted.
    calls = []

    class FakeLibc:
        def mallopt(self, option, value):
            calls.append((option, value))
            return 1

        def malloc_trim(self, pad):
            calls.append(("trim", pad))

    monkeypatch.setattr(speed, "_libc", lambda: FakeLibc())
    with speed.heap_reuse() as active:
        assert active and (speed._M_MMAP_MAX, 0) in calls
        inside = list(calls)
    assert calls[len(inside) :] == [(speed._M_MMAP_MAX, speed._DEFAULT_MMAP_MAX), ("trim", 0)]


def test_page_faults_counts_the_first_touch_of_new_memory():
    pages = speed.page_faults(lambda: torch.ones(16 * 2**20 // 4).sum(), calls=3, warmup=0)
    assert pages is not None and pages >= 0
    assert speed.page_faults(lambda: None) < 50


def test_huge_pages_reads_the_selected_mode(tmp_path):
    setting = tmp_path / "enabled"
    setting.write_text("always [madvise] never\n")
    assert speed.huge_pages(str(setting)) == "madvise"
    assert speed.huge_pages(str(tmp_path / "absent")) is None


def test_forward_and_backward_gives_each_direction():
    x = torch.randn(4, 8, requires_grad=True)
    dy = torch.randn(4, 8)
    calls = speed.forward_and_backward({"square": lambda: x * x}, (x,), dy)
    assert set(calls) == {("square", "forward"), ("square", "fwd+bwd")}
    torch.testing.assert_close(calls["square", "forward"](), x * x)
    (grad,) = calls["square", "fwd+bwd"]()
    torch.testing.assert_close(grad, 2 * x * dy)
    assert x.grad is None


def test_without_loops_turns_the_kernels_off_for_the_whole_call():
    seen = []

    def call(value):
        seen.append(normlib.kernels.enabled())
        return value

    assert speed.without_loops(call)(3) == 3 and seen == [False]
    assert normlib.kernels.enabled() == normlib.kernels.available()  # restored afterwards


def test_module_inputs_records_the_input_of_each_module_of_a_kind():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    x = torch.randn(5, 3)
    seen = speed.module_inputs(model, x, torch.nn.Linear)
    assert list(seen) == ["0", "2"]
    torch.testing.assert_close(seen["0"], x)
    torch.testing.assert_close(seen["2"], torch.relu(model[0](x)))
    assert not model[0]._forward_hooks  # the hooks are removed


def test_size_sweep_returns_one_bandwidth_per_size_and_curve():
    curves = speed.size_sweep([2**10, 2**12], CPU, rounds=1, min_run_time=0.001)
    assert list(curves) == ["clone (fresh)", "copy_ (reused)", "PyTorch LN", "normlib LN"]
    assert all(len(values) == 2 and min(values) > 0 for values in curves.values())


def test_live_table_has_one_row_per_result():
    row = {"layer": "L", "pass": "forward", "native_ms": 1.234, "eager_ratio": (1.5, 1, 2)}
    row.update(native_bw=(0.5, 0, 1), eager_bw=(0.25, 0, 1))
    lines = speed.live_table({"results": [row, dict(row, **{"pass": "fwd+bwd"})]}).splitlines()
    assert len(lines) == 4
    assert lines[2] == "| L | forward | 1.23 | 1.50 | 50, 25 |"


@pytest.mark.skipif(
    not any(shutil.which(c) for c in ("c++", "g++", "clang++")), reason="torch.compile on the CPU needs a C++ compiler"
)
def test_fused_kernels_names_one_kernel_for_an_add_and_a_layer_norm():
    def add_norm(a, b):
        return torch.nn.functional.layer_norm(a + b, (16,))

    a, b = torch.randn(8, 16), torch.randn(8, 16)
    out, kernels = speed.fused_kernels(add_norm, a, b)
    torch.testing.assert_close(out, add_norm(a, b), atol=1e-5, rtol=1e-5)
    assert len(kernels) == 1 and "fused" in kernels[0], kernels


@pytest.mark.parametrize(
    "nbytes, label", [(16 * 1024, "16 KiB"), (1536 * 1024, "1.5 MiB"), (128 * 2**20, "128 MiB"), (512, "0.5 KiB")]
)
def test_size_label(nbytes, label):
    assert speed_figures.size_label(nbytes) == label


def test_cache_relation():
    assert speed_figures.cache_relation(4 * 2**20, 32 * 2**20) == "fits in the 32 MiB last-level cache"
    assert speed_figures.cache_relation(128 * 2**20, 32 * 2**20) == "4× the 32 MiB last-level cache"


def test_variance_figure_draws_algorithms_in_neutral_styles():
    errors = {"one pass": [1e-7, 1e-3], "Welford": [1e-7, 1e-5], "two passes": [1e-8, 1e-8]}
    fig = speed_figures.variance_errors([1.0, 100.0], errors, 6e-8)
    lines = fig.axes[0].get_lines()
    assert len(lines) == 5
    method_colours = {c.lower() for c in viz.METHOD_COLORS.values()}
    assert not {matplotlib.colors.to_hex(line.get_color()) for line in lines} & method_colours
    plt.close(fig)


def test_bandwidth_frame_scales_the_bars_to_their_frame():
    sizes = [2**14, 2**27]
    curves = {"copy": [100.0, 5.0], "LN": [80.0, 4.0]}
    fig = speed_figures.bandwidth_frame(sizes, curves, 1, 32 * 2**20)
    right = fig.axes[1]
    assert right.get_xlim()[1] == pytest.approx(1.3 * 5.0)
    assert "4× the 32 MiB" in fig._suptitle.get_text()
    method_colours = {c.lower() for c in viz.METHOD_COLORS.values()}
    assert not {matplotlib.colors.to_hex(p.get_facecolor()) for p in right.patches} & method_colours
    plt.close(fig)


def test_an_accelerator_reports_its_l2_cache(monkeypatch):
    from types import SimpleNamespace

    fake = SimpleNamespace(L2_cache_size=50 * 2**20, name="Fake GPU")
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: fake)
    size, source = bench.last_level_cache(torch.device("cuda"))
    assert size == 50 * 2**20 and "Fake GPU" in source
    fake.L2_cache_size = 0  # nothing reported: fall back to the CPU's numbers
    size, source = bench.last_level_cache(torch.device("cuda"), root="/nonexistent")
    assert size > 0 and "Fake GPU" not in source
