"""External reference: PCX (JAX) training throughput and accuracy on pcsim's CIFAR-10 conv net.

    taskset -c 0 $PCSIM_PCX_PYTHON benchmarks/external/pcx_conv.py --threads 1 \\
        --channels 32,64,128 --pool avg --activation gelu --T 5 --batch 128 --epochs 0 \\
        --measure-batches 20 --warmup-batches 2 --data-root $PCSIM_DATA --json out.json

Mirrors pcsim's networks/cifar10_pc.yaml, written against the PCX 0.6.x API as
pcx_mlp.py (and PCX's examples/PC_SE.py, whose conv examples use the same
``vode(pool(act(conv(x))))`` blocks):

* input 3x32x32 (a flat CHW row reshaped to (C, H, W): equinox's Conv2d takes one
  channels-first sample, the batch is ``pxf.vmap``'d), then per channel count (32, 64, 128)
  one block ``pxnn.Conv2d(3x3, stride 1, padding 1) -> act -> pxnn.AvgPool2d(2, stride 2)``
  (``--pool max``: MaxPool2d) feeding a ``pxc.Vode`` (squared-error energy), shapes
  32x16x16, 64x8x8, 128x4x4; then flatten (a reshape, 2048) -> ``pxnn.Linear`` -> 10 into
  the output vode (no activation), its ``h`` frozen and set to the one-hot label;
* a training step as pcx_mlp.py: forward initialisation (``STATUS.INIT``), T inference steps
  (``value_and_grad`` of the energy w.r.t. the free vodes, optax ``sgd(lr_x, momentum)``,
  re-initialised every batch), one weight step (``value_and_grad`` w.r.t. the
  ``pxnn.LayerParam``s, ``adamw``), under ``pxf.jit`` with the T loop unrolled;
* evaluation = feedforward pass with the output free, argmax, over all test images.

How it matches pcsim (docs/spec.md sections 1, 2.3):

* Where the vode sits. pcsim's value ``x_l`` has the layer's (pooled) shape and its
  prediction is ``mu_l = P(f(W x_{l-1} + b))`` (SPEC 1: pooling after the activation); a
  vode's ``h`` is ``x_l`` and its ``u`` is ``mu_l``, so the vode takes ``pool(act(conv(h)))``
  and the next conv reads the vode's ``h``. Max pooling takes the max over ``f(a)`` in both.
  GELU is the tanh form in both (``jax.nn.gelu`` default, pcsim's ``gelu``).
* Energy. pcsim: ``E = sum_l 0.5 prec_l ||x_l - mu_l||^2`` per sample (plus the constant
  ``-0.5 n_l ln prec_l``, which no gradient sees), hidden ``prec`` 1, output ``prec`` 0.01
  (``--prec-out``): the output vode's energy function is ``prec_out * se_energy``.
* Inference. pcsim: ``x_l <- x_l - (dt/tau_x) dE/dx_l`` per sample, dt/tau_x = 0.1, T = 5:
  PCX ``psum`` of the per-sample energy over the vmapped batch (value gradients per sample,
  ``--energy-reduction sum``) and ``optax.sgd(0.1)`` without momentum (``--lr-x``,
  ``--momentum-x 0``).
* Learning. pcsim: batch-mean local gradients into torch ``AdamW(lr 1e-3, weight_decay
  1e-4)``, the decay decoupled and on every stepped tensor (biases too): weight gradients of
  the psum scaled by 1/batch, ``optax.adamw(..., weight_decay=1e-4)`` (default mask: all
  parameters; same betas and eps). ``lr_schedule: cosine`` in pcsim is torch's
  ``CosineAnnealingLR(T_max=epochs)`` stepped once per epoch, eta_min 0: epoch e (from 0)
  runs at ``lr (1 + cos(pi e / epochs)) / 2``. ``--lr-schedule epoch-cosine`` (default) is
  that, as an optax schedule of the step count (``e = step // n_batches``);
  ``--lr-schedule cosine`` is ``optax.cosine_decay_schedule`` to 0 over epochs * n_batches
  steps (per step); ``constant`` is a constant lr.
* Data. cifar_numpy.py: pcsim's normalisation (per-channel standardisation by the full
  training set's mean and unbiased std), first ``--limit-train`` / ``--limit-test`` images
  as pcsim's ``load_dataset``; batch 128.

Where it differs from a pcsim run of cifar10_pc.yaml: no augmentation (the yaml has random
crop with padding 4 and horizontal flips); the epoch drops its last partial batch (390 of
128, as PCX's dataloader; pcsim also trains on the last 80 images); the shuffle order is
numpy's, not torch's; weight init is PCX's default (equinox: uniform +-1/sqrt(fan_in) for
kernels and biases, fan_in = C_in k^2), not pcsim's kaiming_uniform with zero biases.

Threads: ``--threads 1`` sets XLA_FLAGS="--xla_cpu_multi_thread_eigen=false
intra_op_parallelism_threads=1" (appended to any existing XLA_FLAGS) before jax is imported;
other values leave XLA_FLAGS alone. Pin cores from outside (``taskset -c 0`` / ``-c 0,1``).

PCX 0.6.x needs jax<0.5 (it pins jax>=0.4.33,<0.5, equinox 0.11): use its own venv,
``pip install pcx==0.6.3`` (see README.md).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402  (numpy only at import time; jax is imported after the XLA flags are set)
from cifar_numpy import SHAPE, load  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--channels", default="32,64,128", help="output channels of the conv blocks")
    p.add_argument("--pool", choices=("avg", "max"), default="avg", help="2x2 pooling, stride 2, after the activation")
    p.add_argument("--activation", default="gelu",
                   help="name of a jax.nn function (gelu = tanh form, relu, tanh, ...) or identity")
    harness.add_measure_args(p)
    p.add_argument("--lr-x", type=float, default=0.1, help="value step (pcsim: dt / tau_x)")
    p.add_argument("--momentum-x", type=float, default=0.0)
    p.add_argument("--prec-out", type=float, default=0.01, help="output precision (pcsim's prec of the last layer)")
    p.add_argument("--lr-w", type=float, default=1e-3)
    p.add_argument("--wd-w", type=float, default=1e-4)
    p.add_argument("--lr-schedule", choices=("epoch-cosine", "cosine", "constant"), default="epoch-cosine",
                   help="epoch-cosine: pcsim's lr_schedule: cosine (CosineAnnealingLR stepped per epoch); "
                        "cosine: optax.cosine_decay_schedule per step; constant")
    p.add_argument("--schedule-epochs", type=int, default=30,
                   help="epochs the schedule spans when --epochs is 0 (only the throughput run)")
    p.add_argument("--energy-reduction", choices=("sum", "mean"), default="sum",
                   help="sum: psum over the batch + weight grads scaled by 1/B (pcsim's per-sample "
                        "inference; PCX 0.6 examples); mean: pmean (value gradients divided by B)")
    p.add_argument("--limit-train", type=int, default=None, help="train on the first N training images")
    p.add_argument("--limit-test", type=int, default=None, help="evaluate on the first N test images")
    harness.add_run_args(p)
    return p.parse_args(argv)


def build(args, n_batches):
    """The PCX model, its jitted steps and optimisers for ``args`` (jax imported here, so call
    ``harness.configure_threads`` first). ``n_batches``: training batches per epoch (schedule)."""
    import jax
    import jax.numpy as jnp
    import optax

    try:
        import pcx as px
        import pcx.predictive_coding as pxc
        import pcx.nn as pxnn
        import pcx.utils as pxu
        import pcx.functional as pxf
    except ImportError as e:  # the PyPI placeholder pcx 0.0.1 has none of these
        from importlib.metadata import version as pkg_version
        sys.exit(f"pcx_conv: this environment has pcx {pkg_version('pcx')}, not the PCX library "
                 f"(need pcx>=0.6 with jax<0.5, e.g. <pcx-venv>): {e}")

    channels = [int(c) for c in args.channels.split(",")]
    act_fn = (lambda a: a) if args.activation == "identity" else getattr(jax.nn, args.activation)
    Pool = pxnn.AvgPool2d if args.pool == "avg" else pxnn.MaxPool2d
    B = args.batch
    reduce = jax.lax.psum if args.energy_reduction == "sum" else jax.lax.pmean
    prec_out = float(args.prec_out)
    px.RKG.seed(args.seed)

    def output_energy(vode, rkg=px.RKG):
        """pcsim's output layer: 0.5 * prec * (h - u)^2 elementwise (summed by the vode)."""
        return prec_out * pxc.se_energy(vode, rkg)

    class ConvNet(pxc.EnergyModule):
        def __init__(self, in_shape, channels, n_out, act_fn):
            super().__init__()
            self.in_shape = px.static(tuple(in_shape))
            self.act_fn = px.static(act_fn)
            c, h, w = in_shape
            self.convs, self.pools = [], []
            for c_out in channels:
                self.convs.append(pxnn.Conv2d(c, c_out, kernel_size=(3, 3), stride=(1, 1), padding=((1, 1), (1, 1))))
                self.pools.append(Pool(kernel_size=2, stride=2))
                c, h, w = c_out, h // 2, w // 2  # conv keeps H, W; pool 2x2 stride 2 (floor)
            self.head = pxnn.Linear(c * h * w, n_out)
            self.vodes = [pxc.Vode() for _ in channels] + [pxc.Vode(output_energy)]
            self.vodes[-1].h.frozen = True

        def __call__(self, x, y):
            x = x.reshape(self.in_shape.get())  # one flat CHW row -> (C, H, W)
            for conv, pool, v in zip(self.convs, self.pools, self.vodes[:-1]):
                x = v(pool(self.act_fn(conv(x))))  # x_l's prediction mu_l = P(f(W x_{l-1} + b))
            self.vodes[-1](self.head(x.reshape(-1)))
            if y is not None:
                self.vodes[-1].set("h", y)  # clamped to the one-hot label
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

    epochs = args.epochs or args.schedule_epochs
    steps = n_batches * epochs
    if args.lr_schedule == "epoch-cosine":
        lr0 = args.lr_w

        def schedule(count):  # CosineAnnealingLR(T_max=epochs), stepped after every epoch
            e = jnp.minimum(count // n_batches, epochs)
            return lr0 * 0.5 * (1.0 + jnp.cos(jnp.pi * e / epochs))
        schedule_desc = f"per-epoch cosine lr*(1+cos(pi*e/{epochs}))/2, e = step // {n_batches}"
    elif args.lr_schedule == "cosine":
        schedule = optax.cosine_decay_schedule(args.lr_w, decay_steps=steps, alpha=0.0)
        schedule_desc = f"optax.cosine_decay_schedule({args.lr_w}, {steps} steps, to 0)"
    else:
        schedule = args.lr_w
        schedule_desc = f"constant {args.lr_w}"

    model = ConvNet(SHAPE, channels, 10, act_fn)
    with pxu.step(model, pxc.STATUS.INIT, clear_params=pxc.VodeParam.Cache):
        forward(jnp.zeros((B, int(SHAPE[0] * SHAPE[1] * SHAPE[2]))), None, model=model)
    optim_h = pxu.Optim(lambda: optax.sgd(args.lr_x, momentum=args.momentum_x or None))
    optim_w = pxu.Optim(lambda: optax.adamw(schedule, weight_decay=args.wd_w), pxu.M(pxnn.LayerParam)(model))
    return SimpleNamespace(
        model=model, forward=forward, energy=energy, train_on_batch=train_on_batch, eval_on_batch=eval_on_batch,
        optim_w=optim_w, optim_h=optim_h, channels=channels, steps=steps, schedule=schedule,
        schedule_desc=schedule_desc, w_scale=w_scale, px=px, pxc=pxc, pxnn=pxnn, pxu=pxu, pxf=pxf)


def main(argv=None):
    args = parse_args(argv)
    harness.configure_threads(args.threads)  # before jax is imported

    import numpy as np
    import jax
    import jax.numpy as jnp
    from importlib.metadata import version as pkg_version

    B, T = args.batch, args.T
    data = load(args.data_root, limit_train=args.limit_train, limit_test=args.limit_test)
    x_tr, y_tr, oh_tr = data["train"]
    x_te, y_te, _ = data["test"]
    n_batches = x_tr.shape[0] // B  # drop_last, as the PCX dataloader
    if n_batches < 1:
        sys.exit(f"pcx_conv: {x_tr.shape[0]} training images make no batch of {B}")

    # One model for the whole run: PCX retraces (and recompiles) the jitted step for every new
    # model/optimiser instance (see pcx_mlp.py).
    pc = build(args, n_batches)
    model = pc.model

    def step(x, y):
        pc.train_on_batch(T, x, y, model=model, optim_w=pc.optim_w, optim_h=pc.optim_h)

    def sync():
        jax.block_until_ready([c.nn.weight.get() for c in model.convs] + [model.head.nn.weight.get()])

    rng = np.random.default_rng(args.seed)
    order = rng.permutation(x_tr.shape[0])
    x0, y0 = jnp.asarray(x_tr[order[:B]]), jnp.asarray(oh_tr[order[:B]])
    t0 = time.perf_counter()
    step(x0, y0)
    sync()
    compile_s = time.perf_counter() - t0

    extra = {}
    if args.epochs > 0:
        # All test images in batches of B; the last batch is zero-padded to B because the
        # vodes keep their (B, ...) value arrays between calls (vmap needs one batch size).
        evaluate = harness.make_evaluator(
            lambda s, x, y: pc.eval_on_batch(jnp.asarray(x), jnp.asarray(y), model=model), x_te, y_te, B)
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

    shapes, (c, h, w) = [], SHAPE
    for c_out in pc.channels:
        c, h, w = c_out, h // 2, w // 2
        shapes.append([c, h, w])
    config = {
        "network": "pcsim networks/cifar10_pc.yaml",
        "input_shape": list(SHAPE), "channels": pc.channels, "layer_shapes": [list(SHAPE), *shapes, [10]],
        "block": f"conv2d 3x3 stride 1 padding 1 -> {args.activation} -> {args.pool}-pool 2x2 stride 2 -> vode",
        "head": f"flatten {c * h * w} -> Linear -> 10 (identity) -> output vode",
        "activation": args.activation, "pool": args.pool, "T": T, "batch": B, "epochs": args.epochs,
        "n_train": int(x_tr.shape[0]), "n_test": int(x_te.shape[0]), "batches_per_epoch": n_batches,
        "energy": f"squared error per vode (pxc.se_energy); output x {args.prec_out} (prec_out), "
                  "output h clamped to one-hot",
        "prec_out": args.prec_out, "init": "feedforward (STATUS.INIT)",
        "value_optimizer": f"optax.sgd({args.lr_x}, momentum={args.momentum_x or None}), reset every batch",
        "weight_optimizer": f"optax.adamw({pc.schedule_desc}, weight_decay={args.wd_w}), "
                            f"schedule over {pc.steps} steps",
        "lr_schedule": args.lr_schedule,
        "energy_reduction": args.energy_reduction,
        "weight_grad_scale": "1/batch" if pc.w_scale else "none (pmean already averages)",
        "weight_init": "PCX default (equinox Conv2d/Linear: uniform +-1/sqrt(fan_in), weights and biases)",
        "measure_batches": args.measure_batches, "warmup_batches": args.warmup_batches,
        "repeats": args.repeats, "seed": args.seed, "threads_flag": args.threads,
        "data_normalisation": "x/255, per-channel (x - mean_c)/std_c, full training set, unbiased std "
                              "(pcsim's channel_stats)",
        "data_mean": data["mean"].tolist(), "data_std": data["std"].tolist(),
        "augmentation": "none",
    }
    harness.emit(harness.build_result("pcx", pkg_version("pcx"), config, compile_s, rates, cpu_rates, extra, jax),
                 args.json)


if __name__ == "__main__":
    main()
