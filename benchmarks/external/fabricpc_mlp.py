"""External reference: FabricPC (JAX) training throughput and accuracy on PCX's Fashion-MNIST MLP benchmark.

    taskset -c 0 $PCSIM_FABRICPC_PYTHON benchmarks/external/fabricpc_mlp.py --threads 1 \\
        --widths 784,128,128,128,10 --activation gelu --T 5 --batch 128 --epochs 0 \\
        --measure-batches 200 --warmup-batches 5 --data-root $PCSIM_DATA --json out.json

The network is built the FabricPC way: one ``fabricpc.nodes.Linear`` node per layer (the input
node is the clamped source; hidden nodes ``GeluActivation()``, output node identity), chained by
``Edge``s, ``graph(..., task_map=TaskMap(x=input, y=output), inference=...)`` with the default
``FeedforwardStateInit`` and ``GaussianEnergy`` (0.5 * ||z - mu||^2 per node),
``initialize_params`` with the library's default initialisers (Kaiming-normal weights, zero
biases). The train step is the one ``fabricpc.training.train`` jits internally
(``trainer._make_step(..., algorithm="pc", donate=True)``: clamp x and one-hot y, feedforward
state init, ``run_inference`` (a ``lax.fori_loop`` over T steps), local weight gradients
averaged over the batch, optax update); if that private helper is missing, the public
``make_train_step`` is used. Evaluation is the step ``fabricpc.training.evaluate`` jits
(inputs clamped, output free, feedforward init, ``run_inference``, argmax of the output's
``z_mu``; from the feedforward state inference leaves every latent unchanged, so this is the
feedforward prediction), jitted once here because ``evaluate`` re-jits on every call.

Value optimiser (``--value-optimizer``): FabricPC ships only plain SGD inference
(``InferenceSGD``: z -= eta * dE/dz). PCX's config uses SGD with momentum 0.1, reset every
batch; ``sgd-momentum`` (default) is a small ``InferenceBase`` subclass doing exactly that
(v = m v + g; z -= eta v, optax.sgd's rule), ``sgd`` is the built-in ``InferenceSGD``.

Energy scaling: FabricPC sums the per-sample energies over the batch, so dE/dz is per-sample
(same as PCX 0.6 with psum); weight gradients are divided by the batch size.
``--value-grad-scale batch`` divides eta by the batch size, which reproduces the older pcax
``pmean`` script.

Threads: ``--threads 1`` sets XLA_FLAGS="--xla_cpu_multi_thread_eigen=false
intra_op_parallelism_threads=1" (appended to any existing XLA_FLAGS) before jax is imported;
other values leave XLA_FLAGS alone. Pin cores from outside (``taskset -c 0`` / ``-c 0,1``).
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
    p.add_argument("--activation", default="gelu", choices=("gelu", "relu", "tanh", "sigmoid", "identity"))
    harness.add_measure_args(p)
    p.add_argument("--lr-x", type=float, default=0.026070879231635192)
    p.add_argument("--momentum-x", type=float, default=0.1)
    p.add_argument("--value-optimizer", choices=("sgd-momentum", "sgd"), default="sgd-momentum")
    p.add_argument("--value-grad-scale", choices=("sample", "batch"), default="sample",
                   help="sample: eta on per-sample dE/dz (FabricPC, PCX 0.6 psum); batch: eta / batch (pcax pmean)")
    p.add_argument("--lr-w", type=float, default=0.0002972210629627541)
    p.add_argument("--wd-w", type=float, default=0.0018383293983087593)
    p.add_argument("--schedule-epochs", type=int, default=25,
                   help="epochs the warmup-cosine schedule spans when --epochs is 0 (only the throughput run)")
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

    from fabricpc.nodes import Linear
    from fabricpc.core.topology import Edge
    from fabricpc.core import activations as acts
    from fabricpc.core.inference import InferenceBase, InferenceSGD
    from fabricpc.core.state_ops import update_node_in_state
    from fabricpc.graph_assembly import TaskMap, graph
    from fabricpc.graph_initialization import initialize_params
    from fabricpc.core.inference import run_inference
    from fabricpc.graph_initialization.state_initializer import initialize_graph_state
    from fabricpc.training import trainer as fpc_trainer

    class InferenceSGDMomentum(InferenceBase):
        """optax.sgd(eta, momentum) on the latents, velocity zeroed at the start of every batch."""

        def __init__(self, eta_infer=0.1, momentum=0.0, infer_steps=20):
            super().__init__(eta_infer=eta_infer, momentum=momentum, infer_steps=infer_steps)

        @staticmethod
        def compute_new_latent(node_name, node_state, config):  # momentum-free fallback (unused below)
            return node_state.z_latent - config["eta_infer"] * node_state.latent_grad

        def run_inference(self, params, initial_state, clamps, structure):
            cls, config = type(self), self.config
            eta, mom = config["eta_infer"], config["momentum"]
            free = [n for n in structure.nodes if n not in clamps]
            state = cls.begin_segment(params, initial_state, clamps, structure)
            vel0 = {n: jnp.zeros_like(state.nodes[n].z_latent) for n in free}

            def body(_, carry):
                state, vel = carry
                state = cls.zero_grads(params, state, clamps, structure)
                state = cls.forward_value_and_grad(params, state, clamps, structure)
                new_vel = {}
                for n in free:
                    v = mom * vel[n] + state.nodes[n].latent_grad
                    new_vel[n] = v
                    state = update_node_in_state(state, n, z_latent=state.nodes[n].z_latent - eta * v)
                return state, new_vel

            state, _ = jax.lax.fori_loop(0, config["infer_steps"], body, (state, vel0))
            return cls.finalize_state(params, state, clamps, structure)

    widths = [int(w) for w in args.widths.split(",")]
    B, T = args.batch, args.T
    act = {"gelu": acts.GeluActivation, "relu": acts.ReLUActivation, "tanh": acts.TanhActivation,
           "sigmoid": acts.SigmoidActivation, "identity": acts.IdentityActivation}[args.activation]
    eta = args.lr_x / B if args.value_grad_scale == "batch" else args.lr_x
    if args.value_optimizer == "sgd":
        inference = InferenceSGD(eta_infer=eta, infer_steps=T)
    else:
        inference = InferenceSGDMomentum(eta_infer=eta, momentum=args.momentum_x, infer_steps=T)

    nodes = [Linear(shape=(widths[0],), name="input")]
    nodes += [Linear(shape=(w,), activation=act(), name=f"h{i}") for i, w in enumerate(widths[1:-1], 1)]
    nodes += [Linear(shape=(widths[-1],), name="output")]
    edges = [Edge(source=a, target=b.slot("in")) for a, b in zip(nodes[:-1], nodes[1:])]
    structure = graph(nodes=nodes, edges=edges, task_map=TaskMap(x=nodes[0], y=nodes[-1]), inference=inference)

    data = load(args.data_root)
    x_tr, y_tr, oh_tr = data["train"]
    x_te, y_te, _ = data["test"]
    n_batches = x_tr.shape[0] // B  # drop_last, as PCX's dataloader

    steps = n_batches * (args.epochs or args.schedule_epochs)

    def make_optimizer():
        schedule = optax.warmup_cosine_decay_schedule(
            init_value=args.lr_w, peak_value=1.1 * args.lr_w, warmup_steps=0.1 * steps,
            decay_steps=steps, end_value=0.1 * args.lr_w, exponent=1.0)
        return optax.adamw(schedule, weight_decay=args.wd_w)

    optimizer = make_optimizer()
    if hasattr(fpc_trainer, "_make_step"):
        step_fn = fpc_trainer._make_step(structure, optimizer, algorithm="pc", with_state=False, donate=True)
        step_kind = "fabricpc.training.trainer._make_step(donate=True), as train() uses"
    else:
        _s = fpc_trainer.make_train_step(structure, optimizer, algorithm="pc")
        step_fn = lambda p, o, b, k: _s(p, o, b, k)[:3]  # noqa: E731
        step_kind = "fabricpc.training.make_train_step"

    # Same flow as pcx_mlp.py: one parameter set; the first training step is the timed compiling
    # call; with --epochs > 0 the epochs follow (accuracy recorded after each), then the
    # throughput windows run on the trained parameters.
    rng = np.random.default_rng(args.seed)
    base_key = jax.random.PRNGKey(args.seed)
    params = initialize_params(structure, jax.random.PRNGKey(args.seed))
    opt_state = optimizer.init(params)
    order = rng.permutation(x_tr.shape[0])

    def batch_of(idx):
        return {"x": jnp.asarray(x_tr[idx]), "y": jnp.asarray(oh_tr[idx])}

    t0 = time.perf_counter()
    params, opt_state, metrics = step_fn(params, opt_state, batch_of(order[:B]), jax.random.fold_in(base_key, 0))
    jax.block_until_ready(params)
    compile_s = time.perf_counter() - t0

    def sync():
        jax.block_until_ready(params)

    extra = {}
    if args.epochs > 0:
        # fabricpc.training.evaluate builds a new jax.jit on every call (a recompile per epoch, ~7 s
        # here), so the same eval step (inputs clamped, output free, FeedforwardStateInit, then
        # run_inference, argmax of the output z_mu) is jitted once; the last batch is padded to B.
        out_name = structure.task_map["y"]

        @jax.jit
        def eval_step(p, x, y, key):
            clamps = fpc_trainer.build_clamps({"x": x}, structure, clamp_target=False)
            state = initialize_graph_state(structure, x.shape[0], key, clamps=clamps, params=p)
            state = run_inference(p, state, clamps, structure)
            return jnp.argmax(state.nodes[out_name].z_mu, axis=-1) == y

        evaluate = harness.make_evaluator(
            lambda s, x, y: eval_step(params, jnp.asarray(x), jnp.asarray(y), jax.random.fold_in(base_key, s)),
            x_te, y_te, B)
        epoch_key = None

        def on_epoch(e):
            nonlocal epoch_key
            epoch_key = jax.random.fold_in(base_key, e)  # keys as train(): fold_in(epoch), fold_in(batch)

        def train_batch(e, b, idx):
            nonlocal params, opt_state
            params, opt_state, _ = step_fn(params, opt_state, batch_of(idx), jax.random.fold_in(epoch_key, b))

        extra = harness.train_epochs(
            train_batch, sync, evaluate, rng=rng, order=order, n_train=x_tr.shape[0], n_batches=n_batches,
            batch_size=B, epochs=args.epochs, on_epoch=on_epoch)

    # ---- throughput: pre-staged device batches, cycled ----
    perm = harness.stage_indices(rng, x_tr.shape[0], n_batches, args.measure_batches, args.warmup_batches, B)
    staged = [{"x": jnp.asarray(x_tr[i]), "y": jnp.asarray(oh_tr[i])} for i in perm]
    jax.block_until_ready(staged)
    keys = [jax.random.fold_in(base_key, 10_000 + i) for i in range(len(staged))]

    def run_batch(i):
        nonlocal params, opt_state
        params, opt_state, _ = step_fn(params, opt_state, staged[i], keys[i])

    rates, cpu_rates = harness.throughput(
        run_batch, staged, warmup_batches=args.warmup_batches, measure_batches=args.measure_batches,
        repeats=args.repeats, batch_size=B, sync=sync)

    config = {
        "widths": widths, "activation": args.activation, "T": T, "batch": B, "epochs": args.epochs,
        "energy": "GaussianEnergy (0.5*||z-mu||^2), output clamped to one-hot",
        "init": "FeedforwardStateInit", "weight_init": "library default (Kaiming normal W, zero b)",
        "value_optimizer": (f"InferenceSGDMomentum(eta={eta}, momentum={args.momentum_x}) (local subclass), "
                            "velocity reset every batch") if args.value_optimizer == "sgd-momentum"
                           else f"InferenceSGD(eta_infer={eta})",
        "value_grad_scale": args.value_grad_scale,
        "weight_optimizer": f"optax.adamw(warmup_cosine_decay(init={args.lr_w}, peak=1.1x, warmup=10%, end=0.1x), "
                            f"weight_decay={args.wd_w}), schedule over {steps} steps; weight grads = batch mean",
        "train_step": step_kind,
        "measure_batches": args.measure_batches, "warmup_batches": args.warmup_batches,
        "repeats": args.repeats, "seed": args.seed, "threads_flag": args.threads,
        "data_normalisation": "(x/255 - 0.5)/0.5",
    }
    harness.emit(harness.build_result("fabricpc", pkg_version("fabricpc"), config, compile_s, rates, cpu_rates,
                                      extra, jax), args.json)


if __name__ == "__main__":
    main()
