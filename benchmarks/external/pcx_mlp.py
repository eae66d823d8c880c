"""External reference: PCX (JAX) training throughput and accuracy on PCX's own Fashion-MNIST MLP benchmark.

    taskset -c 0 $PCSIM_PCX_PYTHON benchmarks/external/pcx_mlp.py --threads 1 \\
        --widths 784,128,128,128,10 --activation gelu --T 5 --batch 128 --epochs 0 \\
        --measure-batches 200 --warmup-batches 5 --data-root $PCSIM_DATA --json out.json

Mirrors PCX's benchmark script examples/discriminative_experiments/MLP/fmnist/PC_SE.py with
L_PC_SE_fmnist.yaml (github.com/liukidar/pcx), written against the PCX 0.6.x API as in PCX's
examples/PC_SE.py:

* one ``pxnn.Linear`` + one ``pxc.Vode`` (squared-error energy) per layer; hidden vodes take
  ``act(W h + b)``, the output vode takes ``W h + b`` (no activation), its ``h`` is frozen and set
  to the one-hot label (beta = 1);
* a training step = forward initialisation (``STATUS.INIT``: every ``h`` <- its prediction ``u``),
  then T inference steps, each ``value_and_grad`` of the energy w.r.t. the free vodes followed by
  an optax ``sgd(lr_x, momentum)`` step (the value optimiser is re-initialised every batch, so
  momentum starts at 0 per batch), then one weight step: ``value_and_grad`` of the energy
  w.r.t. the ``pxnn.LayerParam``s and ``adamw(warmup_cosine_decay_schedule(...), wd)``;
  all under ``pxf.jit`` with T static (the T loop is unrolled in Python, as in the example);
* evaluation = feedforward pass with the output free, argmax, as ``eval_on_batch`` does.

Energy scaling (``--energy-reduction``): PCX 0.6's examples return ``psum`` of the per-sample
energy over the vmapped batch (value gradients are then per-sample ``dE_i/dh_i``) and scale
the weight gradient by ``1/batch`` (``Optim.step(scale_by=1/B)``): that is ``sum``, the
default, and it reproduces the published accuracy (89.5% after 25 epochs). The older pcax
script returns ``pmean``; under pcx 0.6.3 that also divides the value gradients by the batch
size (effective value lr 0.026/128) and reaches only ~81%: ``mean``. Throughput does not
depend on this choice.

Threads: ``--threads 1`` sets XLA_FLAGS="--xla_cpu_multi_thread_eigen=false
intra_op_parallelism_threads=1" (appended to any existing XLA_FLAGS) before jax is imported;
other values leave XLA_FLAGS alone. Pin cores from outside (``taskset -c 0`` / ``-c 0,1``).

PCX 0.6.x needs jax<0.5 (it pins jax>=0.4.33,<0.5, equinox 0.11), FabricPC needs jax>=0.7, so
the two cannot share one environment; on PyPI, plain ``pip install pcx`` next to fabricpc
resolves to the placeholder pcx 0.0.1. Use a separate venv: ``pip install pcx==0.6.3``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402  (numpy only at import time; jax is imported after the XLA flags are set)
from fmnist_numpy import load  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--widths", default="784,128,128,128,10")
    p.add_argument("--activation", default="gelu", help="name of a jax.nn function (gelu, relu, tanh, ...)")
    harness.add_measure_args(p)
    p.add_argument("--lr-x", type=float, default=0.026070879231635192)
    p.add_argument("--momentum-x", type=float, default=0.1)
    p.add_argument("--lr-w", type=float, default=0.0002972210629627541)
    p.add_argument("--wd-w", type=float, default=0.0018383293983087593)
    p.add_argument("--schedule-epochs", type=int, default=25,
                   help="epochs the warmup-cosine schedule spans when --epochs is 0 (only the throughput run)")
    p.add_argument("--energy-reduction", choices=("sum", "mean"), default="sum",
                   help="sum: psum over the batch + weight grads scaled by 1/B (PCX 0.6 examples); "
                        "mean: pmean over the batch (the older published pcax script)")
    harness.add_run_args(p)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    harness.configure_threads(args.threads)  # before jax is imported

    import numpy as np
    import jax
    import jax.numpy as jnp
    import optax
    from importlib.metadata import version as pkg_version

    try:
        import pcx as px
        import pcx.predictive_coding as pxc
        import pcx.nn as pxnn
        import pcx.utils as pxu
        import pcx.functional as pxf
    except ImportError as e:  # the PyPI placeholder pcx 0.0.1 has none of these
        sys.exit(f"pcx_mlp: this environment has pcx {pkg_version('pcx')}, not the PCX library "
                 f"(need pcx>=0.6 with jax<0.5, e.g. <pcx-venv>): {e}")

    widths = [int(w) for w in args.widths.split(",")]
    act_fn = getattr(jax.nn, args.activation)
    B, T = args.batch, args.T
    reduce = jax.lax.psum if args.energy_reduction == "sum" else jax.lax.pmean
    px.RKG.seed(args.seed)

    class MLP(pxc.EnergyModule):
        def __init__(self, widths, act_fn):
            super().__init__()
            self.act_fn = px.static(act_fn)
            self.layers = [pxnn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:])]
            self.vodes = [pxc.Vode() for _ in widths[1:-1]] + [pxc.Vode(pxc.se_energy)]
            self.vodes[-1].h.frozen = True

        def __call__(self, x, y):
            for v, l in zip(self.vodes[:-1], self.layers[:-1]):
                x = v(self.act_fn(l(x)))
            self.vodes[-1](self.layers[-1](x))
            if y is not None:
                self.vodes[-1].set("h", y)  # beta = 1 nudging: u - 1 * (u - y) == y
            return self.vodes[-1].get("u")

    @pxf.vmap(pxu.M(pxc.VodeParam | pxc.VodeParam.Cache).to((None, 0)), in_axes=(0, 0), out_axes=0, axis_name="batch")
    def forward(x, y, *, model):
        return model(x, y)

    @pxf.vmap(pxu.M(pxc.VodeParam | pxc.VodeParam.Cache).to((None, 0)), in_axes=(0,), out_axes=(None, 0), axis_name="batch")
    def energy(x, *, model):
        y_ = model(x, None)
        return reduce(model.energy(), "batch"), y_

    w_scale = 1.0 / B if args.energy_reduction == "sum" else None

    @pxf.jit(static_argnums=0)
    def train_on_batch(T, x, y, *, model, optim_w, optim_h):
        model.train()
        with pxu.step(model, (pxc.STATUS.INIT, None), clear_params=pxc.VodeParam.Cache):
            forward(x, y, model=model)
        optim_h.init(pxu.M_hasnot(pxc.VodeParam, frozen=True)(model))
        for _ in range(T):
            with pxu.step(model, clear_params=pxc.VodeParam.Cache):
                _, g = pxf.value_and_grad(pxu.M_hasnot(pxc.VodeParam, frozen=True).to([False, True]), has_aux=True)(
                    energy)(x, model=model)
            optim_h.step(model, g["model"])
        optim_h.clear()
        with pxu.step(model, clear_params=pxc.VodeParam.Cache):
            _, g = pxf.value_and_grad(pxu.M(pxnn.LayerParam).to([False, True]), has_aux=True)(energy)(x, model=model)
        optim_w.step(model, g["model"], scale_by=w_scale)

    @pxf.jit()
    def eval_on_batch(x, y, *, model):
        model.eval()
        with pxu.step(model, pxc.STATUS.INIT, clear_params=pxc.VodeParam.Cache):
            y_ = forward(x, None, model=model).argmax(axis=-1)
        return y_ == y

    data = load(args.data_root)
    x_tr, y_tr, oh_tr = data["train"]
    x_te, y_te, _ = data["test"]
    n_batches = x_tr.shape[0] // B  # drop_last, as the PCX dataloader

    # One model for the whole run: PCX retraces (and recompiles) the jitted step for every new
    # model/optimiser instance, so a second fresh model would pay the compile again. With
    # --epochs > 0 the first training step is the timed compiling call, the epochs follow, and
    # the throughput windows run afterwards on the trained model (accuracy is already recorded).
    steps = n_batches * (args.epochs or args.schedule_epochs)
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=args.lr_w, peak_value=1.1 * args.lr_w, warmup_steps=0.1 * steps,
        decay_steps=steps, end_value=0.1 * args.lr_w, exponent=1.0)
    model = MLP(widths, act_fn)
    with pxu.step(model, pxc.STATUS.INIT, clear_params=pxc.VodeParam.Cache):
        forward(jnp.zeros((B, widths[0])), None, model=model)
    optim_h = pxu.Optim(lambda: optax.sgd(args.lr_x, momentum=args.momentum_x))
    optim_w = pxu.Optim(lambda: optax.adamw(schedule, weight_decay=args.wd_w), pxu.M(pxnn.LayerParam)(model))

    def step(x, y):
        train_on_batch(T, x, y, model=model, optim_w=optim_w, optim_h=optim_h)

    def sync():
        jax.block_until_ready([l.nn.weight.get() for l in model.layers])

    rng = np.random.default_rng(args.seed)
    order = rng.permutation(x_tr.shape[0])
    x0, y0 = jnp.asarray(x_tr[order[:B]]), jnp.asarray(oh_tr[order[:B]])
    t0 = time.perf_counter()
    step(x0, y0)
    sync()
    compile_s = time.perf_counter() - t0

    extra = {}
    if args.epochs > 0:
        # All 10,000 test images in batches of B; the last batch is zero-padded to B because the
        # vodes keep their (B, ...) value arrays between calls (vmap needs one batch size).
        evaluate = harness.make_evaluator(
            lambda s, x, y: eval_on_batch(jnp.asarray(x), jnp.asarray(y), model=model), x_te, y_te, B)
        extra = harness.train_epochs(
            lambda e, b, idx: step(jnp.asarray(x_tr[idx]), jnp.asarray(oh_tr[idx])), sync, evaluate,
            rng=rng, order=order, n_train=x_tr.shape[0], n_batches=n_batches, batch_size=B, epochs=args.epochs)

    # ---- throughput: pre-staged device batches, cycled ----
    perm = harness.stage_indices(rng, x_tr.shape[0], n_batches, args.measure_batches, args.warmup_batches, B)
    staged = [(jnp.asarray(x_tr[i]), jnp.asarray(oh_tr[i])) for i in perm]
    jax.block_until_ready(staged)
    rates, cpu_rates = harness.throughput(
        lambda i: step(*staged[i]), staged, warmup_batches=args.warmup_batches,
        measure_batches=args.measure_batches, repeats=args.repeats, batch_size=B, sync=sync)

    config = {
        "widths": widths, "activation": args.activation, "T": T, "batch": B, "epochs": args.epochs,
        "energy": "squared error (pxc.se_energy), output h clamped to one-hot", "init": "feedforward (STATUS.INIT)",
        "value_optimizer": f"optax.sgd({args.lr_x}, momentum={args.momentum_x}), reset every batch",
        "weight_optimizer": f"optax.adamw(warmup_cosine_decay(init={args.lr_w}, peak=1.1x, warmup=10%, end=0.1x), "
                            f"weight_decay={args.wd_w}), schedule over {steps} steps",
        "energy_reduction": args.energy_reduction,
        "weight_grad_scale": "1/batch" if w_scale else "none (pmean already averages)",
        "weight_init": "equinox Linear default (uniform +-1/sqrt(fan_in), W and b)",
        "measure_batches": args.measure_batches, "warmup_batches": args.warmup_batches,
        "repeats": args.repeats, "seed": args.seed, "threads_flag": args.threads,
        "data_normalisation": "(x/255 - 0.5)/0.5",
    }
    harness.emit(harness.build_result("pcx", pkg_version("pcx"), config, compile_s, rates, cpu_rates, extra, jax),
                 args.json)


if __name__ == "__main__":
    main()
