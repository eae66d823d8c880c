"""Test-set evaluation of a trained network, through the Trainer protocol only."""

from __future__ import annotations

import torch

from pcsim.data import Dataset, iterate_batches
from pcsim.model.equations import layer_energy

__all__ = ["evaluate", "describe"]


@torch.no_grad()
def evaluate(trainer, data: Dataset, batch_size: int = 1000, recorder=None,
             target: str = "label", progress=None) -> dict:
    """Test-set metrics of the trained network.

    ``target="label"``: the feedforward read-out's accuracy and mean output energy.
    ``target="image"``: the reconstruction's mean squared error per pixel (``test_mse``)
    and its energy; a PC decoder encodes by inference and decodes feedforward from the
    inferred latent. The energy is the top layer's SPEC energy
    ``0.5 prec_L ||ref - y||^2 - 0.5 n_L ln prec_L`` per sample
    (:func:`pcsim.model.equations.layer_energy`), with a learned ``prec_L`` at its
    current value (per layer, neuron or channel).

    With a ``recorder``, the trainer counts the ops of the read-out (in event mode: the
    events of the sigma-delta feedforward pass). ``progress``, if given, is called with
    the number of samples of each batch done (a tqdm bar's ``update``)."""
    correct, energy, sq, n = 0, 0.0, 0.0, data.test_x.shape[0]
    top = trainer.network.layers[-1]
    prec = _top_precision(trainer)
    trainer.recorder = recorder
    if recorder is not None:
        recorder.add_samples(n)
    try:
        for idx in iterate_batches(n, batch_size, shuffle=False):
            x = data.test_x[idx]
            if target == "image":
                y, ref = trainer.reconstruct(x), x
            else:
                y, ref = trainer.predict(x), data.one_hot(data.test_y[idx], x.dtype)
                correct += int((y.argmax(1) == data.test_y[idx]).sum())
            y = y.reshape(y.shape[0], -1)  # a shaped top layer, read flat like the data
            energy += float(layer_energy(ref, y, prec, top.size).sum())
            sq += float(((ref - y) ** 2).sum())
            if progress is not None:
                progress(len(idx))
    finally:
        trainer.recorder = None
    if target == "image":
        return {"test_mse": sq / (n * top.size), "test_energy": energy / n}
    return {"test_accuracy": correct / n, "test_energy": energy / n}


def _top_precision(trainer):
    """The top layer's precision as the read-out's energy uses it: its fixed number, or
    the learned value now (SPEC 2.4), broadcast over the layer and read flat like the
    data."""
    layer, learned = trainer.network.layers[-1], trainer.precisions[-1]
    if learned is None:
        return layer.prec
    value = learned.value().detach().to(trainer.device, trainer.dtype)
    return value if value.ndim == 0 else learned.per_neuron(value)


def describe(record: dict) -> str:
    """One line for a metrics record: accuracy, or reconstruction MSE."""
    if "test_accuracy" in record:
        return f"test accuracy {100 * record['test_accuracy']:.2f}%"
    return f"test reconstruction MSE {record['test_mse']:.5f}"
