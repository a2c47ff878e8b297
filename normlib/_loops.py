"""The loops of :mod:`normlib.kernels`, compiled by Numba (imported only where Numba is installed).

Each function is one loop over statistics (``prange``: the statistics are split among the
threads). Its body reads one statistic's values from memory, sums them, and writes the
output, the values staying in the processor's cache in between. Sums are float64 (Python
floats) whatever the arrays' dtype. gamma and beta always come as arrays: ones and zeros
where the layer has none (multiplying by 1 and adding 0 change no value).
"""

import math

import numba
from numba import prange

# 'reassoc' lets LLVM split the sums into vector lanes; NaN and infinity keep their IEEE
# meaning (no 'nnan'/'ninf'), so a NaN in x still gives NaN, as in PyTorch. cache=True keeps
# the machine code in __pycache__ for the next process.
_jit = numba.njit(parallel=True, fastmath={"reassoc", "contract", "nsz"}, cache=True, nogil=True)


@_jit
def rows_forward(x, w, b, eps, center, y, mean, var):
    """LayerNorm (``center``) or RMSNorm: one statistic per row of the (n, d) array x; w, b: (d,)."""
    n, d = x.shape
    for i in prange(n):
        m = 0.0
        if center:
            for j in range(d):
                m += x[i, j]
            m /= d
        q = 0.0
        for j in range(d):
            t = x[i, j] - m
            q += t * t
        v = q / d
        r = 1.0 / math.sqrt(v + eps)
        for j in range(d):
            y[i, j] = (x[i, j] - m) * r * w[j] + b[j]
        mean[i] = m
        var[i] = v


@_jit
def rows_backward(dy, x, w, mean, var, eps, center, blocks, want_w, want_b, dx, part_w, part_b):
    """dx of :func:`rows_forward`, the rows split into ``blocks`` blocks (the threads' shares),
    and gamma's and beta's gradients in parts: part_w and part_b, (blocks, d) float64 zeros
    where wanted, get in their row k the sums over the k-th block of rows."""
    n, d = x.shape
    step = (n + blocks - 1) // blocks
    for k in prange(blocks):
        for i in range(k * step, min(n, (k + 1) * step)):
            m = mean[i]
            r = 1.0 / math.sqrt(var[i] + eps)
            sum_g = 0.0
            sum_gx = 0.0  # sum of g * x_hat, g = dy * gamma
            for j in range(d):
                x_hat = (x[i, j] - m) * r
                g = dy[i, j] * w[j]
                sum_g += g
                sum_gx += g * x_hat
                if want_w:
                    part_w[k, j] += dy[i, j] * x_hat
                if want_b:
                    part_b[k, j] += dy[i, j]
            a = sum_g / d if center else 0.0
            c = sum_gx / d
            for j in range(d):
                dx[i, j] = (dy[i, j] * w[j] - a - (x[i, j] - m) * r * c) * r


@_jit
def groups_forward(x, w, b, groups, eps, center, y, mean, var):
    """GroupNorm / InstanceNorm: statistic i over the K channels of S values of x[i], x of shape
    (R, K, S), R = samples * groups. w, b: (groups or 1, K); statistic i uses row i % groups.
    Without ``center`` (RMSNorm over such groups) the mean is taken to be 0."""
    R, K, S = x.shape
    count = K * S
    for i in prange(R):
        m = 0.0
        if center:
            for k in range(K):
                for s in range(S):
                    m += x[i, k, s]
            m /= count
        q = 0.0
        for k in range(K):
            for s in range(S):
                t = x[i, k, s] - m
                q += t * t
        v = q / count
        r = 1.0 / math.sqrt(v + eps)
        row = i % groups if w.shape[0] > 1 else 0
        for k in range(K):
            scale = r * w[row, k]
            shift = b[row, k]
            for s in range(S):
                y[i, k, s] = (x[i, k, s] - m) * scale + shift
        mean[i] = m
        var[i] = v


@_jit
def groups_backward(dy, x, w, groups, mean, var, eps, center, dx, dots, dy_sums):
    """dx of :func:`groups_forward`, and per (statistic, channel), float64: dots = the sum over S
    of dy * (x - mean), dy_sums = the sum of dy (gamma's and beta's gradients follow)."""
    R, K, S = x.shape
    count = K * S
    for i in prange(R):
        m = mean[i]
        r = 1.0 / math.sqrt(var[i] + eps)
        row = i % groups if w.shape[0] > 1 else 0
        sum_g = 0.0
        sum_gx = 0.0  # sum of g * (x - mean), g = dy * gamma
        for k in range(K):
            p = 0.0
            q = 0.0
            for s in range(S):
                p += dy[i, k, s] * (x[i, k, s] - m)
                q += dy[i, k, s]
            dots[i, k] = p
            dy_sums[i, k] = q
            sum_gx += w[row, k] * p
            sum_g += w[row, k] * q
        coef = -sum_gx * r * r * r / count  # multiplies x - mean
        shift = -sum_g * r / count if center else 0.0
        for k in range(K):
            scale = r * w[row, k]  # multiplies dy
            for s in range(S):
                dx[i, k, s] = (x[i, k, s] - m) * coef + dy[i, k, s] * scale + shift
