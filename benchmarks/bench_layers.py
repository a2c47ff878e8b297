"""normlib's layers against torch.nn's native kernels: time ratios, printed in one run.

    .venv/bin/python benchmarks/bench_layers.py [--device cpu|cuda|mps] [--small]

normlib composes ordinary tensor ops (a mean, a squared deviation, a multiply-add), so it
moves the data several times where a fused native kernel moves it once or twice. The
ratio normlib / torch is the price of readable code; Chapter 11 explains where it comes
from. Both sides run in the same process, on the same inputs, with torch.utils.benchmark.
"""

import argparse

import torch
from torch import nn
from torch.utils import benchmark

import normlib

CASES = [
    # name, torch module, normlib module, input shape
    ("BatchNorm2d (train)", lambda: nn.BatchNorm2d(64), lambda: normlib.BatchNorm2d(64), (32, 64, 28, 28)),
    ("LayerNorm(512)", lambda: nn.LayerNorm(512), lambda: normlib.LayerNorm(512), (32, 128, 512)),
    ("GroupNorm(32, 64)", lambda: nn.GroupNorm(32, 64), lambda: normlib.GroupNorm(32, 64), (32, 64, 28, 28)),
    ("InstanceNorm2d(64)", lambda: nn.InstanceNorm2d(64), lambda: normlib.InstanceNorm2d(64), (32, 64, 28, 28)),
    ("RMSNorm(512)", lambda: nn.RMSNorm(512), lambda: normlib.RMSNorm(512), (32, 128, 512)),
]


def _time(module, x, backward: bool, min_run_time: float) -> float:
    def step():
        y = module(x)
        if backward:
            y.sum().backward()

    for _ in range(5):  # warm up the allocator and thread pool before timing
        step()
    timer = benchmark.Timer(stmt="step()", globals={"step": step})
    return timer.blocked_autorange(min_run_time=min_run_time).median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=str(normlib.device()))
    parser.add_argument("--small", action="store_true", help="quarter-size inputs, shorter runs")
    args = parser.parse_args()
    device = torch.device(args.device)
    min_run_time = 0.2 if args.small else 0.5
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'layer':<22}{'shape':<20}{'pass':<10}{'torch ms':>10}{'normlib ms':>12}{'ratio':>8}")
    for name, make_torch, make_normlib, shape in CASES:
        if args.small:
            shape = (shape[0] // 4,) + tuple(shape[1:])
        x = torch.randn(shape, device=device, requires_grad=True)
        reference, ours = make_torch().to(device), make_normlib().to(device)
        for backward in (False, True):
            t_ref = _time(reference, x, backward, min_run_time)
            t_ours = _time(ours, x, backward, min_run_time)
            label = "fwd+bwd" if backward else "forward"
            print(
                f"{name:<22}{str(tuple(shape)):<20}{label:<10}{t_ref * 1e3:>10.3f}{t_ours * 1e3:>12.3f}{t_ours / t_ref:>8.2f}"
            )


if __name__ == "__main__":
    main()
