"""Where a PC inference step's time goes on the CPU: the kernels of one step of the
PCX benchmark network (784-128-128-128-10, batch 128), timed one by one.

    taskset -c 0 python benchmarks/kernel_times.py

One step of the fast path runs, per hidden layer, a forward GEMM ``x W^T + b`` and an
adjoint GEMM ``g W``, plus one fused elementwise kernel (activation and its derivative,
errors, the value update). The forward reads a row-major copy of ``W^T`` made once per
cycle (``DenseMap.frozen``); the rows with ``W^T`` read through a transposed view show
what that saves. Prints microseconds per call (1 thread; the best of 7 windows, since a
shared machine only ever adds time) so the sum of the GEMMs can be set against the
measured time per step of the whole engine.
"""

from __future__ import annotations

import json
import time

import torch


def per_call_us(fn, n=500, windows=7):
    for _ in range(50):
        fn()
    best = float("inf")
    for _ in range(windows):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - start) / n * 1e6)
    return best


def main() -> int:
    torch.set_num_threads(1)
    B, H = 128, 128
    x, w, b = torch.randn(B, H), torch.randn(H, H), torch.randn(H)
    out = torch.empty(B, H)
    w10, g10, o10 = torch.randn(10, H), torch.randn(B, 10), torch.empty(B, 10)
    x784, w784 = torch.randn(B, 784), torch.randn(H, 784)
    a = torch.randn(B, H)
    wt, w10t = w.t().contiguous(), w10.t().contiguous()
    rows = {
        "adjoint g W, 128x128x128": per_call_us(lambda: torch.mm(x, w, out=out)),
        "forward x W^T + b, W^T row-major, 128x128x128": per_call_us(
            lambda: torch.addmm(b, x, wt, out=out)),
        "forward x W^T + b, W^T as a transposed view, 128x128x128": per_call_us(
            lambda: torch.addmm(b, x, w.t(), out=out)),
        "forward to the 10 outputs, W^T row-major, 128x128x10": per_call_us(
            lambda: torch.addmm(b[:10], x, w10t, out=o10)),
        "forward to the 10 outputs, transposed view, 128x128x10": per_call_us(
            lambda: torch.addmm(b[:10], x, w10.t(), out=o10)),
        "adjoint from the 10 outputs, 128x10x128": per_call_us(lambda: torch.mm(g10, w10, out=out)),
        "W_1 x_0 (once per batch), 128x784x128": per_call_us(
            lambda: torch.addmm(b, x784, w784.t(), out=out), 200),
        "copy W^T row-major, 128x128 (once per cycle)": per_call_us(
            lambda: wt.copy_(w.t())),
        "tanh, 16384 elements": per_call_us(lambda: torch.tanh(a, out=out)),
        "sigmoid, 16384 elements": per_call_us(lambda: torch.sigmoid(a, out=out)),
        "add, 16384 elements": per_call_us(lambda: torch.add(a, a, out=out)),
    }
    step_gemms = (2 * rows["adjoint g W, 128x128x128"]
                  + 2 * rows["forward x W^T + b, W^T row-major, 128x128x128"]
                  + rows["forward to the 10 outputs, W^T row-major, 128x128x10"]
                  + rows["adjoint from the 10 outputs, 128x10x128"])
    rows["sum of one full inference step's GEMMs"] = step_gemms
    for name, us in rows.items():
        print(f"{us:8.1f} us  {name}")
    print(json.dumps({k: round(v, 1) for k, v in rows.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
