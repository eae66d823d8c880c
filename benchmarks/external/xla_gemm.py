"""XLA's float32 GEMM rate on this machine: the best of 8 timed rounds of four 2048^3
products, jitted, blocked on the result (one of the implementations whose best is the
"GEMM peak" of ``benchmarks/throughput.py``).

    taskset -c 0 $PCSIM_PCX_PYTHON benchmarks/external/xla_gemm.py --threads 1 --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=2048)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    harness.configure_threads(args.threads)  # before jax is imported
    import jax
    import jax.numpy as jnp

    n = args.n
    ka, kb = jax.random.split(jax.random.PRNGKey(0))
    a = jax.random.normal(ka, (n, n), jnp.float32)
    b = jax.random.normal(kb, (n, n), jnp.float32)
    mm = jax.jit(lambda a, b: a @ b)
    mm(a, b).block_until_ready()
    best = 0.0
    for _ in range(8):
        start = time.perf_counter()
        for _ in range(4):
            out = mm(a, b)
        out.block_until_ready()
        best = max(best, 4 * 2 * n ** 3 / (time.perf_counter() - start) / 1e9)
    rec = {"kind": "gemm", "implementation": f"XLA (jax {jax.__version__})", "gflops": best}
    print(json.dumps(rec))
    if args.json:
        Path(args.json).write_text(json.dumps(rec))


if __name__ == "__main__":
    main()
