"""How closely PC's weight updates follow backprop's gradients, layer by layer.

    python benchmarks/bp_alignment.py networks/cifar10_pc.yaml --data-root $PCSIM_DATA \\
        --warmup-batches 150 --prec-out 1 0.1 0.01 --out results/cifar10/alignment.md

Trains the config's network by backprop for ``--warmup-batches`` batches (AdamW at the
config's learning rate, so the weights are those of a net in early training, not of the
initialisation; the training set is cycled), then, on the first test batch, compares per parameter tensor the PC
update after the config's ``T`` inference steps (``TorchEngine.local_gradients``: the
descent direction the optimizer gets) with BP's negative gradient of the same weights:
the cosine of the two. Rows vary the output precision ``prec_L`` (and, with ``--steps``
and ``--eta-x``, the inference), everything else as in the config. Prints and writes a
Markdown table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import sys
from pathlib import Path

import torch

from pcsim.config import load_config
from pcsim.data import load_dataset, resolve_data_root
from pcsim.engines.torch.backprop import BackpropTrainer
from pcsim.engines.torch.engine import TorchEngine
from pcsim.engines.torch.params import ParamStore
from pcsim.model import Network


def cosines(config_path, overrides, bp, x, y) -> dict:
    """``{tensor name: cosine(PC update, -BP gradient)}`` with ``overrides`` applied."""
    config = load_config(config_path, overrides)
    net = Network.from_config(config.network)
    params = ParamStore(net, {k: t.detach().clone() for k, t in bp.params.items()})
    engine = TorchEngine(net, config.dynamics, params=params)
    for t in bp.parameters():
        t.grad = None
    bp.loss(x, y).backward()
    state = engine.init_state(x, y)
    engine.infer(state, config.dynamics.steps)
    pc = engine.local_gradients(state)
    out = {}
    for name, g in pc.items():
        a, b = g.flatten(), -bp.params[name].grad.flatten()
        out[name] = float(a @ b / (a.norm() * b.norm()).clamp_min(1e-30))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config")
    ap.add_argument("--data-root")
    ap.add_argument("--warmup-batches", type=int, default=150)
    ap.add_argument("--prec-out", type=float, nargs="+", default=[1.0, 0.1, 0.01])
    ap.add_argument("--steps", type=int, nargs="+", default=None, help="T values (default: the config's)")
    ap.add_argument("--eta-x", type=float, nargs="+", default=None,
                    help="dt / tau_x values (default: the config's)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    config = load_config(args.config)
    top = len(config.network.layers) - 1
    data = load_dataset(config.data.dataset, resolve_data_root(config.data.root, args.data_root))
    B = config.learning.batch_size
    bp = BackpropTrainer(Network.from_config(config.network), seed=config.learning.seed,
                         init=config.network.init)
    opt = torch.optim.AdamW(bp.parameters(), lr=config.learning.lr,
                            weight_decay=config.learning.weight_decay)
    order = torch.randperm(data.train_x.shape[0], generator=torch.Generator().manual_seed(0))

    per_epoch = data.train_x.shape[0] // B

    def batch(i):
        idx = order[(i % per_epoch) * B:(i % per_epoch + 1) * B]
        return data.train_x[idx], data.one_hot(data.train_y[idx], torch.float32)

    for i in range(args.warmup_batches):
        bp.train_batch(*batch(i), opt)
    x, y = data.test_x[:B], data.one_hot(data.test_y[:B], torch.float32)  # not trained on
    tau_x = config.dynamics.tau_x
    rows = []
    for T in args.steps or [config.dynamics.steps]:
        for eta in args.eta_x or [config.dynamics.dt / tau_x]:
            for prec in args.prec_out:
                over = {f"network.layers.{top}.prec": prec, "dynamics.n_steps": T,
                        "dynamics.dt": eta * tau_x}
                rows.append((T, eta, prec, cosines(args.config, over, bp, x, y)))
    names = list(rows[0][3])
    lines = [f"`python benchmarks/bp_alignment.py {' '.join(argv or sys.argv[1:])}` on "
             f"{dt.date.today()}, {_cpu()}, torch {torch.__version__}. Cosine between "
             f"the PC update and BP's negative gradient, per tensor, on the first {B} test images "
             f"after {args.warmup_batches} BP batches:", "",
             "| T | eta_x | prec_L | " + " | ".join(names) + " |",
             "|---|---|---|" + "---|" * len(names)]
    for T, eta, prec, cos in rows:
        lines.append(f"| {T} | {eta:g} | {prec:g} | " + " | ".join(f"{cos[n]:.3f}" for n in names)
                     + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    raise SystemExit(main())
